"""Benchmark: how often SleepLM's captions and the measurements disagree, per domain, over a night.

Takes the built-in demo night (``--demo``, 1.5 h) or simulates one (`sleeplm.synthetic`, its own
scoring included, ``--hours``), loads and measures it like an upload (the measurement side is the
product's: `analyze_night` + `describe_epochs`, with the file's stages and the product's own events), captions every epoch in each domain with SleepLM
and compares each caption with the measured description of the same epoch
(`tools.captions.disagreements`: both texts name a finding of one category, e.g. breathing, and
share none of it). Prints, per domain, the epochs compared, the epochs with a disagreement and the
disagreements by category.

With ``--checkpoint PATH`` the released weights caption. Without, a seeded random tiny network
does: its captions are meaningless text, so the counts only check the plumbing (captioning,
measuring, comparing, counting); they are not a quality figure, and the output says so.

Run: ``nice .venv/bin/python bench/consistency.py [--demo | --hours 8] [--checkpoint PATH] [--domains respiratory cardiac]``
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

DOMAINS = ("brain", "cardiac", "respiratory", "position_muscle", "stage_event")
RANDOM_WEIGHTS_NOTE = ("RANDOM tiny network: its captions are meaningless, so these counts are a plumbing check "
                       "(captioning, measuring, comparing, counting work end to end), NOT a quality figure; "
                       "pass --checkpoint with the released weights for a measurement")


def count_disagreements(rec, analysis, domain: str, captions: Sequence[str]) -> tuple[int, collections.Counter]:
    """Epochs whose caption disagrees with the measured description of the same epoch, and the flags by category.

    `captions[i]` is epoch i's caption in `domain`; the measured side is `describe_epochs` of that epoch.
    """
    from sleeplm.report.describe import describe_epochs
    from tools.captions import disagreements

    by_category: collections.Counter = collections.Counter()
    disagreeing = 0
    for epoch, caption in enumerate(captions):
        measured = describe_epochs(rec, domain, epoch, epoch, analysis=analysis).get("text") or ""
        flags = disagreements(caption, measured)
        disagreeing += bool(flags)
        by_category.update(flag.split(":")[0] for flag in flags)
    return disagreeing, by_category


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    night_choice = parser.add_mutually_exclusive_group()
    night_choice.add_argument("--demo", action="store_true", help="the built-in 1.5-h demo night")
    night_choice.add_argument("--hours", type=float, default=8.0, help="length of a simulated night")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--severity", default="moderate")
    parser.add_argument("--checkpoint", default=None, help="SleepLM weights (default: random tiny network)")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    args = parser.parse_args()

    from sleeplm.io.reader import load_recording
    from sleeplm.measure.analysis import analyze_night
    from sleeplm.model.inference import SleepLM
    from sleeplm.synthetic import simulate_night, write_night
    from sleeplm.synthetic.demo import demo_recording_path

    if args.demo:
        rec, night = load_recording(demo_recording_path()), "the demo night (simulated, 1.5 h)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_night(simulate_night(args.hours, seed=args.seed, severity=args.severity, annotations=True),
                               Path(tmp) / "night.edf")
            rec = load_recording(path)
        night = f"a {args.hours:g}-h simulated night"
    if rec.reference is not None and rec.reference.events is not None:
        # The file's scored events are the simulator's truth: in use, the captions would be compared with
        # the answer key rather than with what the product measures. Its stages stay in use.
        rec = replace(rec, reference=replace(rec.reference, events=None))
    analysis = analyze_night(rec, automatic_staging=False)
    if args.checkpoint:
        model, weights = SleepLM.from_pretrained(args.checkpoint), "SleepLM weights " + Path(args.checkpoint).name
    else:
        model, weights = SleepLM.from_config("sleeplm_tiny"), "a RANDOM tiny network"
    print(f"{night}, {rec.n_epochs} epochs, measured by the product's analysis; captions by {weights}")
    if not args.checkpoint:
        print(f"NOTE: {RANDOM_WEIGHTS_NOTE}")
    print(f"{'domain':<16}{'compared':>9}{'disagree':>9}{'share':>8}  by category  (caption s)")
    for domain in args.domains:
        started = time.perf_counter()
        captions = model.caption(rec.epochs, domain)
        seconds = time.perf_counter() - started
        disagreeing, by_category = count_disagreements(rec, analysis, domain, captions)
        share = disagreeing / len(captions) if captions else 0.0
        categories = ", ".join(f"{name} {count}" for name, count in by_category.most_common()) or "none"
        print(f"{domain:<16}{len(captions):>9}{disagreeing:>9}{share:>8.1%}  {categories}  ({seconds:.0f})")
    if not args.checkpoint:
        print("(random weights: a plumbing check, not a quality figure)")


if __name__ == "__main__":
    main()
