"""`analyze_to_dir` / `sleeplm-assistant analyze`: the export contract on a real EDF+ file."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from edfio import Edf, EdfAnnotation, EdfSignal

from physio_night import make_night
from sleeplm.cli import main
from sleeplm.report import analyze_to_dir

STAGES = ["W"] * 2 + ["N2"] * 20 + ["R"] * 6 + ["N2"] * 4
LABELS = {"EEG_C3_A2": "EEG C3-A2", "EEG_C4_A1": "EEG C4-A1", "EOG_Left": "EOG LOC-A2", "EOG_Right": "EOG ROC-A1",
          "EMG_Chin": "EMG Chin", "ECG": "ECG", "AF": "Thermistor", "THX": "Thorax", "ABD": "Abdomen",
          "SpO2": "SpO2", "POS": "Position"}
CONTRACT = ["tib_min", "spt_min", "tst_min", "se_pct", "sol_min", "rem_latency_min", "waso_min",
            "W_min", "N1_min", "N2_min", "N3_min", "R_min", "W_pct", "N1_pct", "N2_pct", "N3_pct", "R_pct",
            "n_awakenings", "ahi", "ahi_rule", "rei", "severity", "ahi_supine", "ahi_nonsupine", "ahi_rem",
            "ahi_nrem", "odi3", "odi4", "t90_min", "spo2_min", "spo2_mean", "hr_mean", "n_apneas", "n_hypopneas"]


@pytest.fixture(scope="module")
def edf_path(tmp_path_factory):
    rec = make_night(STAGES, [("apnea", "obstructive", 300, 20), ("apnea", "central", 500, 20)])
    signals = [EdfSignal(rec.signals[name].data, rec.signals[name].sfreq, label=label,
                         physical_dimension=rec.signals[name].unit) for name, label in LABELS.items()]
    stages = [EdfAnnotation(i * 30, 30, f"Sleep stage {s}") for i, s in enumerate(STAGES)]
    path = tmp_path_factory.mktemp("night") / "patient-smith.edf"
    Edf(signals, starttime=dt.time(23, 10, 0), annotations=stages).write(path)
    return path


def test_analyze_writes_the_contract(edf_path, tmp_path):
    written = analyze_to_dir(edf_path, tmp_path / "out")
    assert [p.name for p in written] == ["summary.json", "events.csv", "hypnogram.csv", "report.md"]
    summary = json.loads(written[0].read_text())
    assert set(CONTRACT) <= set(summary) and "not_assessable" in summary
    assert summary["tst_min"] == 15.0 and summary["n_apneas"] == 2 and summary["stage_source"] == "reference scoring"
    assert summary["ahi"] == pytest.approx(8.0, abs=0.01) and summary["severity"] == "mild"

    events = pd.read_csv(written[1])
    assert list(events.columns) == ["kind", "subtype", "start_s", "end_s", "clock_start", "clock_end",
                                    "epoch_start", "epoch_end", "evidence"]
    apneas = events[events.kind == "apnea"]
    assert list(apneas.subtype) == ["obstructive", "central"] and apneas.iloc[0].clock_start == "23:15:00"
    assert json.loads(apneas.iloc[0].evidence)["flow_drop_pct"] >= 90

    hyp = pd.read_csv(written[2])
    assert list(hyp.columns) == ["epoch", "clock", "stage", "source"]
    assert list(hyp.stage) == STAGES and hyp.clock.iloc[2] == "23:11:00"
    report = written[3].read_text()
    assert "AHI 8/h" in report and "smith" not in report.lower()


def test_cli_analyze(edf_path, tmp_path, capsys):
    assert main(["analyze", str(edf_path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "summary.json").exists() and "summary.json" in capsys.readouterr().out


def test_cli_analyze_bad_file(tmp_path, capsys):
    bad = tmp_path / "notes.edf"
    bad.write_text("not a recording")
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
