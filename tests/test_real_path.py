"""`bench/real.py PATH`: a scored night run as found (scoring beside the recording), agreement table printed."""

import datetime as dt
import sys
from pathlib import Path

import edfio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import real  # noqa: E402

RK = {"W": "Sleep stage W", "N1": "Sleep stage 1", "N2": "Sleep stage 2", "N3": "Sleep stage 3", "R": "Sleep stage R"}


def test_a_sleep_edf_layout_night_prints_the_agreement_table(tmp_path, capsys):
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    night = simulate_night(duration_h=0.25, seed=3, severity="severe", montage="aasm", sfreq=128,
                           annotations=False, start_clock="23:00:00")
    psg = write_night(night, tmp_path / "SC4001E0-PSG.edf")  # Sleep-EDF names: the hypnogram is found beside it
    stages = load_truth(psg).hypnogram
    edfio.Edf([], starttime=dt.time(23, 0, 0),
              annotations=[edfio.EdfAnnotation(30.0 * i, 30.0, RK[s]) for i, s in enumerate(stages)]
              ).write(tmp_path / "SC4001EC-Hypnogram.edf")
    (tmp_path / "empty.edf").write_bytes(b"")                      # not a recording at all
    (tmp_path / "plain.edf").write_bytes(psg.read_bytes())         # the same night, nothing scored beside it
    sys.argv = ["real.py", str(psg), str(tmp_path / "empty.edf"), str(tmp_path / "plain.edf")]
    real.main()
    out = capsys.readouterr().out
    assert "== SC4001E0-PSG.edf: ok" in out and "Technician's scoring: Sleep-EDF hypnogram file found beside the recording." in out
    assert f"Staging, {stages.size} epochs staged by both: Cohen's kappa " in out
    assert "| technician \\ automatic | W | N1 | N2 | N3 | R |" in out
    # A stages-only scoring: events and AHI are the product's alone, and the table says so.
    assert "not compared: respiratory (the technician's scoring has no respiratory events)" in out
    assert "== empty.edf: not loaded: " in out
    assert "== plain.edf: no scoring found with the recording or beside it" in out
    kappa = float(out.split("Cohen's kappa ")[1].split(",")[0])
    assert -1.0 <= kappa <= 1.0 and np.isfinite(kappa)
