"""Benchmark: features + events + summary on a simulated 8-h night (target <= 20 s on 2 cores).

Simulates a night (`sleeplm.synthetic`), writes it as EDF+ and loads it like an upload, then
runs the product's `analyze_night` once and prints the seconds of each step it records
(`NightAnalysis.timings_s`); YASA staging is reported separately (it is not part of the target).

Run: ``nice .venv/bin/python bench/measure.py [--hours 8] [--severity moderate] [--montage aasm]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--severity", default="moderate")
    parser.add_argument("--montage", default="aasm")
    args = parser.parse_args()

    from sleeplm.io.reader import load_recording
    from sleeplm.measure.analysis import analyze_night
    from sleeplm.synthetic import simulate_night, write_night

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = write_night(simulate_night(args.hours, seed=args.seed, severity=args.severity, montage=args.montage),
                           Path(tmp) / "night.edf")
        print(f"simulate + write {args.hours:g}-h night: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        rec = load_recording(path)
        print(f"load_recording: {time.perf_counter() - started:.1f} s ({rec.n_epochs} epochs)")

    # automatic_staging: YASA stages the night even beside the simulator's own scoring, as it would an upload.
    analysis = analyze_night(rec, automatic_staging=True)
    timings = {("staging (YASA, separate)" if name == "staging" else name): s for name, s in analysis.timings_s.items()}
    for name, seconds in timings.items():
        print(f"{name:>26}: {seconds:6.2f} s")
    measured = sum(s for name, s in timings.items() if "YASA" not in name)
    print(f"{'features+events+summary':>26}: {measured:6.2f} s (target <= 20 s) -> {'OK' if measured <= 20 else 'TOO SLOW'}")
    summary = analysis.summary
    print(f"events: {analysis.events['kind'].value_counts().to_dict()}; AHI {summary['ahi']}, severity {summary['severity']}")


if __name__ == "__main__":
    main()
