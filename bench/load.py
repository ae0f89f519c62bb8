"""Benchmark: load + preprocess an 8-h, 10-channel, 256-Hz EDF vs `mne.io.read_raw_edf(preload=True)` alone.

Writes the test night once into a temporary directory (AASM-style labels so every SleepLM channel
maps), then in this one process times mne's plain preload and our `load_recording`, interleaved,
each the best of `--repeats` runs (page cache warm for both), and prints the wall-time ratio
(target <= 1.5x), the CPU-time ratio (robust to other load on the machine), peak memory, and the
CPU time of each loading stage.

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


def timed(fn) -> tuple[float, float]:
    """Wall time and CPU time (s, all threads of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_mb(fn) -> float:
    """Peak memory (MB) that numpy/Python allocate during one call (tracemalloc)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return peak


def stage_breakdown(path: Path) -> dict[str, float]:
    """CPU seconds of each loading stage, run one after another on one thread."""
    from sleeplm.io import channels, preprocess
    from sleeplm.io import reader as io
    from sleeplm.io.recording import CANONICAL_CHANNELS, ChannelInfo

    stages: dict[str, float] = {}

    def clock(stage, fn, *args):
        start = time.process_time()
        result = fn(*args)
        stages[stage] = stages.get(stage, 0.0) + time.process_time() - start
        return result

    header = clock("header check", io.read_edf_header, path)
    reader = clock("mne open + annotations", io._EdfReader, path, header)  # noqa: SLF001 (the loader's own reader)
    clock("mne open + annotations", reader.annotations)
    sources, _ = channels.map_channels([header.labels[i] for i in header.data_signals])
    for name in CANONICAL_CHANNELS:
        data, sfreq, unit, rails = clock("read samples (float32)", reader.read, sources[name])
        info = ChannelInfo(name, present=True, unit=unit)
        if name == "POS":
            codes = clock("position decode", preprocess.hold_resample, data, sfreq, 64)
            clock("position decode", preprocess.prepare_position, codes, 64.0, "sleeplm", info)
            continue
        bad = clock("artefact mask", preprocess.artefact_mask, data, sfreq, rails)
        rate = min(sfreq, preprocess.SIGNAL_RATE_LIMITS[name])
        kept = clock("anti-aliased resampling", preprocess.resample, data, sfreq, rate)
        at_64 = clock("anti-aliased resampling", preprocess.resample, kept, rate, 64)
        bad_64 = preprocess.hold_resample(bad, sfreq, 64) > 0
        center, scale = clock("robust z-score", preprocess.robust_center_scale, at_64, bad_64)
        clock("robust z-score", preprocess.zscore_night, at_64, bad_64, preprocess.Z_CLIP, (center, scale))
        clock("preflight warnings", preprocess.channel_warnings, name, data, bad, scale, unit, rails)
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mne

    from sleeplm.io.reader import load_recording

    mne.set_log_level("ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "night.edf"
        start = time.perf_counter()
        write_night(path, args.hours)
        print(f"wrote {args.hours:g}-h 10-channel 256 Hz EDF ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - start:.1f} s")
        runs = {"mne": lambda: mne.io.read_raw_edf(path, preload=True), "ours": lambda: load_recording(path)}
        peaks = {name: peak_mb(fn) for name, fn in runs.items()}  # also warms the page cache and imports
        best = {name: (float("inf"), float("inf")) for name in runs}
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            for name, fn in runs.items():
                wall, cpu = timed(fn)
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
        stages = stage_breakdown(path)
    (mne_s, mne_cpu), (ours_s, ours_cpu) = best["mne"], best["ours"]
    print(f"mne.io.read_raw_edf(preload=True): {mne_s:.2f} s wall, {mne_cpu:.2f} s CPU, peak {peaks['mne']:.0f} MB")
    print(f"sleeplm.io.reader.load_recording:         {ours_s:.2f} s wall, {ours_cpu:.2f} s CPU, peak {peaks['ours']:.0f} MB")
    print(f"ratio: {ours_s / mne_s:.2f}x wall (target <= 1.5x), {ours_cpu / mne_cpu:.2f}x CPU; "
          f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print("stages (CPU s, one thread):")
    for stage, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"  {stage:<26} {seconds:6.3f}")


if __name__ == "__main__":
    main()
