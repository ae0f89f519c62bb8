"""Benchmark: load + preprocess an 8-h, 10-channel, 256-Hz EDF vs `mne.io.read_raw_edf(preload=True)` alone.

Writes the test night once into a temporary directory (AASM-style labels so every SleepLM channel
maps), then in this one process times mne's plain preload and our `load_recording`, each the best of
`--repeats` runs (page cache warm for both), and prints the ratio (target <= 1.5x) and peak memory.

Run: ``nice .venv/bin/python bench/load.py [--hours 8] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

LABELS = ("ECG", "Abdomen", "Thorax", "Airflow", "E1-M2", "E2-M1", "C3-M2", "C4-M1", "Chin1-Chin2", "Position")


def write_night(path: Path, hours: float, sfreq: int = 256) -> None:
    """Write a `hours`-long 10-channel EDF+ at `sfreq` Hz (noise; position as codes)."""
    import edfio

    rng = np.random.default_rng(0)
    n = int(hours * 3600 * sfreq)
    signals = []
    for label in LABELS:
        if label == "Position":
            data = np.repeat(rng.integers(0, 4, size=n // (600 * sfreq) + 1), 600 * sfreq)[:n].astype(float)
            signals.append(edfio.EdfSignal(data, sfreq, label=label, physical_range=(-1, 4)))
        else:
            data = rng.standard_normal(n) * 30
            signals.append(edfio.EdfSignal(data, sfreq, label=label, physical_dimension="uV",
                                           physical_range=(-500, 500)))
    edfio.Edf(signals, starttime=datetime.time(22, 0, 0)).write(path)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall time (s) over `repeats` runs and the peak traced memory (MB) of the first run."""
    tracemalloc.start()
    fn()
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best, peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mne

    from sleeplm.io import load_recording

    mne.set_log_level("ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "night.edf"
        start = time.perf_counter()
        write_night(path, args.hours)
        print(f"wrote {args.hours:g}-h 10-channel 256 Hz EDF ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - start:.1f} s")
        mne_s, mne_mb = timed(lambda: mne.io.read_raw_edf(path, preload=True), args.repeats)
        ours_s, ours_mb = timed(lambda: load_recording(path), args.repeats)
    print(f"mne.io.read_raw_edf(preload=True): {mne_s:.2f} s, peak {mne_mb:.0f} MB")
    print(f"sleeplm.io.load_recording:         {ours_s:.2f} s, peak {ours_mb:.0f} MB")
    print(f"ratio: {ours_s / mne_s:.2f}x (target <= 1.5x); cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
