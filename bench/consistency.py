"""Benchmark: how often SleepLM's captions and the measurements disagree, per domain, over a night.

Simulates a night (`sleeplm.synthetic`, its own scoring included), loads and measures it like an
upload, captions every epoch in each domain with SleepLM and compares each caption with the
measured description of the same epoch (`tools.captions.disagreements`: both texts name a
finding of one category, e.g. breathing, and share none of it). Prints, per domain, the epochs
compared, the epochs with a disagreement and the disagreements by category.

With ``--checkpoint PATH`` the released weights caption; without, a seeded random tiny network
does, and the counts only show that the pipeline runs (random captions rarely name findings).

Run: ``nice .venv/bin/python bench/consistency.py [--hours 8] [--checkpoint PATH] [--domains respiratory cardiac]``
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

DOMAINS = ("brain", "cardiac", "respiratory", "position_muscle", "stage_event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--severity", default="moderate")
    parser.add_argument("--checkpoint", default=None, help="SleepLM weights (default: random tiny network)")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    args = parser.parse_args()

    from sleeplm.io.reader import load_recording
    from sleeplm.measure.analysis import analyze_night
    from sleeplm.model.inference import SleepLM
    from sleeplm.report.describe import describe_epochs
    from sleeplm.synthetic import simulate_night, write_night
    from tools.captions import disagreements

    with tempfile.TemporaryDirectory() as tmp:
        path = write_night(simulate_night(args.hours, seed=args.seed, severity=args.severity, annotations=True),
                           Path(tmp) / "night.edf")
        rec = load_recording(path)
    analysis = analyze_night(rec, automatic_staging=False)
    if args.checkpoint:
        model, weights = SleepLM.from_pretrained(args.checkpoint), "SleepLM weights " + Path(args.checkpoint).name
    else:
        model, weights = SleepLM.from_config("sleeplm_tiny"), "RANDOM tiny network (pipeline check, not a measurement)"
    print(f"{args.hours:g}-h simulated night, {rec.n_epochs} epochs; captions by {weights}")
    print(f"{'domain':<16}{'compared':>9}{'disagree':>9}{'share':>8}  by category  (caption s)")
    for domain in args.domains:
        started = time.perf_counter()
        captions = model.caption(rec.epochs, domain)
        seconds = time.perf_counter() - started
        by_category: collections.Counter = collections.Counter()
        disagreeing = 0
        for epoch, caption in enumerate(captions):
            measured = describe_epochs(rec, domain, epoch, epoch, analysis=analysis).get("text") or ""
            flags = disagreements(caption, measured)
            disagreeing += bool(flags)
            by_category.update(flag.split(":")[0] for flag in flags)
        share = disagreeing / len(captions) if captions else 0.0
        categories = ", ".join(f"{name} {count}" for name, count in by_category.most_common()) or "none"
        print(f"{domain:<16}{len(captions):>9}{disagreeing:>9}{share:>8.1%}  {categories}  ({seconds:.0f})")


if __name__ == "__main__":
    main()
