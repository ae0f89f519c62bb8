"""Benchmark: sleep statistics and per-epoch brain features vs YASA (`Hypnogram.sleep_statistics`,
`bandpower`, `spindles_detect`, `sw_detect`).

`sleeplm.measure.summary.sleep_statistics` equals YASA's figures (tests/test_library_choices.py);
this prints the time of both on the night's hypnogram (mean of 20 calls).

`sleeplm.measure.features` measures band power (Welch, 4-s windows), counts spindles (sigma
envelope bursts) and isolated K-complexes per 30-s epoch with a few lines of scipy. YASA offers
the same three as library functions. On one simulated night (known stages; the simulator draws
12-14 Hz spindles and K-complexes in N2, slow-wave trains in N3) this script times both, in this
one process, and prints how close they are: the largest difference of relative band power, and
the mean count per epoch by true stage for the two spindle and the two slow-wave/K-complex
detectors (a detector that follows the stages counts many in N2/N3, few in W and REM).

Run: ``nice .venv/bin/python bench/yasa_detectors.py [--hours 2]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from sleeplm import load_recording
from sleeplm.measure import features
from sleeplm.measure.summary import sleep_statistics
from sleeplm.measure.signals import epoch_matrix, get_signal
from sleeplm.synthetic import load_truth, simulate_night, write_night

STAGE_CODES = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}


def timed(fn, *args, **kwargs):
    started = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - started


def per_epoch(starts_s: np.ndarray, n_epochs: int) -> np.ndarray:
    epochs = (np.asarray(starts_s) // 30).astype(int)
    return np.bincount(epochs[epochs < n_epochs], minlength=n_epochs).astype(float)


def yasa_per_epoch(detect, data: np.ndarray, sf: float, n_epochs: int) -> tuple[np.ndarray, float]:
    """Detections per epoch of a YASA detector run without a hypnogram, and its CPU seconds."""
    found, seconds = timed(detect, data, sf, verbose=False)
    return (per_epoch(found.summary()["Start"].to_numpy(), n_epochs) if found is not None else np.zeros(n_epochs)), seconds


def by_stage(counts: np.ndarray, stages: np.ndarray) -> str:
    return ", ".join(f"{s} {counts[stages == s].mean():.2f}" for s in STAGE_CODES if (stages == s).any())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    args = parser.parse_args()
    import yasa

    logging.getLogger("yasa").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as folder:
        path = write_night(simulate_night(duration_h=args.hours, seed=1, severity="mild", artefacts=False),
                           Path(folder) / "night.edf")
        rec, truth = load_recording(path), load_truth(path)
    stages = np.asarray(truth.hypnogram)
    eeg = get_signal(rec, "EEG_C3_A2")
    sf, n = eeg.sfreq, rec.n_epochs
    data = np.asarray(eeg.data, dtype=float)[: n * 30 * int(sf)]
    print(f"{args.hours:g}-h simulated night, C3 at {sf:g} Hz, {n} epochs; planted per epoch: spindles N2 2.0, "
          f"N3 0.5, K-complexes N2 0.75, others 0 (sleeplm/synthetic/physiology.py: 4, 1 and 1.5 per minute)")

    labels = {"W": "WAKE", "N1": "N1", "N2": "N2", "N3": "N3", "R": "REM"}
    _, t_ours = timed(lambda: [sleep_statistics(stages) for _ in range(20)])
    _, t_yasa = timed(lambda: [yasa.Hypnogram([labels[s] for s in stages], freq="30s").sleep_statistics()
                               for _ in range(20)])
    print(f"sleep statistics: ours {t_ours / 20 * 1e3:.2f} ms CPU, yasa.Hypnogram(...).sleep_statistics() "
          f"{t_yasa / 20 * 1e3:.2f} ms CPU ({t_yasa / t_ours:.1f}x)")

    matrix = epoch_matrix(data, sf, n)
    bands = {**features.EEG_BANDS, "total": features.EEG_TOTAL}
    ours, t_ours = timed(features._band_power, matrix, sf, bands, 4.0)
    yasa_bands = [(lo, hi, name) for name, (lo, hi) in features.EEG_BANDS.items()]
    theirs, t_yasa = timed(yasa.bandpower, matrix, sf, win_sec=4, relative=True, bands=yasa_bands)
    ours_rel = np.column_stack([ours[b] / ours["total"] for b in features.EEG_BANDS])
    theirs_rel = theirs[[name for _, _, name in yasa_bands]].to_numpy()
    print(f"band power: ours {t_ours:.3f} s CPU, yasa.bandpower {t_yasa:.3f} s CPU ({t_yasa / t_ours:.1f}x); "
          f"|relative power difference| median {np.median(np.abs(ours_rel - theirs_rel)):.4f}, "
          f"largest {np.max(np.abs(ours_rel - theirs_rel)):.4f} "
          f"(ours: share of 0.5-30 Hz; yasa: share of the sum of the five bands, median Welch average)")

    ours_sp, t_ours = timed(features._spindle_count, data, sf, n)
    # Without a hypnogram, as the features are measured before staging (a hypnogram would hide
    # detections in W and REM by construction).
    yasa_sp, t_yasa = yasa_per_epoch(yasa.spindles_detect, data, sf, n)
    print(f"spindles: ours {t_ours:.3f} s CPU, yasa.spindles_detect {t_yasa:.3f} s CPU ({t_yasa / t_ours:.1f}x); "
          f"per epoch by stage: ours [{by_stage(ours_sp, stages)}], yasa [{by_stage(yasa_sp, stages)}]; "
          f"correlation {np.corrcoef(ours_sp, yasa_sp)[0, 1]:.2f}")

    ours_kc, t_ours = timed(features._kcomplex_count, data, sf, n)
    yasa_sw, t_yasa = yasa_per_epoch(yasa.sw_detect, data, sf, n)
    print(f"K-complexes / slow waves: ours {t_ours:.3f} s CPU, yasa.sw_detect {t_yasa:.3f} s CPU "
          f"({t_yasa / t_ours:.1f}x); per epoch by stage: ours (isolated K-complexes) [{by_stage(ours_kc, stages)}], "
          f"yasa (every slow wave) [{by_stage(yasa_sw, stages)}]")


if __name__ == "__main__":
    main()
