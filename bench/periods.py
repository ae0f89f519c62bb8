"""Ranked abnormal periods against simulator truth on 8-hour nights.

For each night (severities x seeds) the night is simulated, written as EDF+, loaded like an upload
and asked "when did breathing look abnormal?" in tool-only mode (and with the embedded LLM when it
is installed). The periods the answer names (its first five cited epoch ranges, quiet stretches
left out) are compared with the densest true clusters: the truth's apneas and hypopneas grouped by
the same gap and ranked (`bench.evaluation.period_agreement`). Baseline, same process: the event
list answer (`list_events`, first events in time order) that the periods replace.

Targets (issue 14): >= 4 of the 5 densest true clusters overlapped; <= 1 in 5 named ranges outside any event.

Run: ``nice .venv/bin/python bench/periods.py [--hours 8] [--seeds 0 1] [--severities mild moderate severe] [--llm local]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTION = "when did breathing look abnormal?"


def evaluate(path: Path, truth, llm: str) -> dict:
    """Period agreement of the answer (and of the event-list baseline) on one night."""
    from assistant.session import NightSession
    from bench.evaluation import period_agreement
    from tools import parse_result, run_tool

    true = truth.events[truth.events["kind"].isin(["apnea", "hypopnea"])]
    session = NightSession(llm=llm)
    try:
        session.load(path, stage_cross_check=False)
        turn = session.ask(QUESTION)
        listed = parse_result(run_tool("list_events", {"kind": "respiratory"}, session.night).content)
        baseline = " ".join(listed["findings"])
    finally:
        session.close()
    n = len(truth.hypnogram)
    return {"mode": turn.mode, "periods": period_agreement(turn.answer, true, n, truth.hypnogram),
            "baseline": period_agreement(baseline, true, n, truth.hypnogram)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--severities", nargs="+", default=["mild", "moderate", "severe"])
    parser.add_argument("--llm", default="none", help="'none' (tool-only) or a backend spec such as 'local'")
    args = parser.parse_args()
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    totals = {"periods": [0, 0, 0, 0], "baseline": [0, 0, 0, 0]}  # hit, n_true, outside, named
    print(f"{'severity':9} {'seed':>4} {'mode':10} {'hit/true':>8} {'outside/named':>13} | baseline {'hit/true':>8} {'outside/named':>13}")
    for severity in args.severities:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                path = write_night(simulate_night(args.hours, seed=seed, severity=severity, sfreq=128, annotations=True),
                                   Path(tmp) / "night.edf")
                row = evaluate(path, load_truth(path), args.llm)
            for name in totals:
                agreement = row[name]
                for i, key in enumerate(("hit", "n_true", "outside", "named")):
                    totals[name][i] += agreement[key]
            p, b = row["periods"], row["baseline"]
            print(f"{severity:9} {seed:>4} {row['mode']:10} {p['hit']:>4}/{p['n_true']:<3} {p['outside']:>6}/{p['named']:<6} |"
                  f"          {b['hit']:>4}/{b['n_true']:<3} {b['outside']:>6}/{b['named']:<6}", flush=True)
    for name, (hit, n_true, outside, named) in totals.items():
        print(f"{name}: true clusters overlapped {hit}/{n_true} = {hit / max(n_true, 1):.2f} (target >= 0.8); "
              f"named ranges outside any event {outside}/{named} = {outside / max(named, 1):.2f} (target <= 0.2)")
    p, b = totals["periods"], totals["baseline"]
    print(f"ratio periods/baseline, clusters overlapped: {(p[0] / max(p[1], 1)) / max(b[0] / max(b[1], 1), 1e-9):.2f}x")


if __name__ == "__main__":
    main()
