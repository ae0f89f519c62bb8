"""Changing the scoring rule of a loaded 8-h night: re-scored from cached per-candidate measurements.

An 8-h severe simulator night (128 Hz) is loaded and analysed once, under rule 1A. Then, for each
published rule (`sleeplm.measure.rules.RULES`), `sleeplm.measure.analysis.rescore` re-scores it
(the cached breathing-reduction measurements held against the rule, and the night summary
recomputed; no signal read again). Printed per rule: seconds, AHI, apneas, hypopneas,
near-misses, and the AHI by confidence; then the worst time against the 2-s target, and the
baseline measured in the same process: scoring the events from the signals again
(`sleeplm.measure.events.score_events` + the summary), what changing the rule cost before.

With ``--technician`` the night carries its scoring (the simulator's, standing for a technician's)
and is compared once with the product's own: a rule change then re-scores both scorings' own
events (the technician's apneas and hypopneas stay) and the agreement; the AHI printed is the
automatic scoring's (the technician's does not change).

Run: ``nice .venv/bin/python bench/rescore.py [--hours 8] [--repeat 3] [--technician]``
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

TARGET_S = 2.0


def main() -> None:
    from sleeplm.io.reader import load_recording
    from sleeplm.measure.analysis import analyze_night, compare_with_automatic, rescore
    from sleeplm.measure.events import score_events
    from sleeplm.measure.rules import RULES
    from sleeplm.measure.summary import night_summary
    from sleeplm.synthetic import simulate_night, write_night

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per rule (the fastest is reported)")
    parser.add_argument("--technician", action="store_true",
                        help="the night carries its own scoring (the technician's), compared with the automatic one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_night(simulate_night(args.hours, seed=7, severity="severe", sfreq=128, annotations=args.technician),
                           Path(tmp) / "night.edf")
        rec = load_recording(path)
        started = time.perf_counter()
        analysis = analyze_night(rec, automatic_staging=False)
        if args.technician:
            analysis = compare_with_automatic(rec, analysis)
        print(f"{args.hours:g}-h night analysed once in {time.perf_counter() - started:.1f} s "
              f"({len(analysis.candidates)} breathing-reduction candidates)")
    worst = 0.0
    print(f"{'rule':24s} {'seconds':>8s} {'AHI':>6s} {'apneas':>7s} {'hypop.':>7s} {'near':>5s}  by confidence")
    for name in RULES:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            scored = rescore(rec, analysis, name)
            times.append(time.perf_counter() - started)
        best = min(times)
        worst = max(worst, best)
        automatic = scored.scorings["automatic"] if args.technician else scored
        s = automatic.summary
        confidence = ", ".join(f"{cut}: {v['events']} ({v['ahi']})" for cut, v in s["ahi_by_confidence"].items())
        print(f"{name:24s} {best:8.2f} {s['ahi']:6.1f} {s['n_apneas']:7d} {s['n_hypopneas']:7d} "
              f"{len(automatic.near_misses):5d}  {confidence}")
    started = time.perf_counter()
    scoring = score_events(rec, analysis.staging.hypnogram, "1B", artefacts=analysis.artefacts)
    night_summary(rec, scoring.events, analysis.staging, features=analysis.features, hypopnea_rule="1B",
                  artefacts=analysis.artefacts)
    baseline = time.perf_counter() - started
    print(f"slowest re-score {worst:.2f} s (target <= {TARGET_S:g} s: {'met' if worst <= TARGET_S else 'NOT met'}); "
          f"scoring the events from the signals again (the baseline) {baseline:.2f} s, {baseline / worst:.1f}x slower")


if __name__ == "__main__":
    main()
