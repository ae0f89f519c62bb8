"""The answer check: share of figures in answers verified, and share of planted wrong figures caught.

On simulated nights, every question of the battery (`BATTERY`) is
answered in tool-only mode for both audiences; the tools' write-up is the answer a faithful model
gives. Its figures are checked (share verified). Then, one figure at a time, a wrong figure is
planted and the check must flag it:

- ``value``: the number changed (x1.25 + 1 at the same precision; clock times moved by 37 min);
- ``unit``: minutes written as hours and hours as minutes;
- ``borrowed``: a count, rate, percentage or duration replaced by a number the tool results hold
  with another meaning (an epoch index, an event's duration...), the way "67 apneas" borrowed epoch 67.

Baseline, same process: a meaning-blind check that accepts a figure found anywhere in the results
(the check before issue 14).

Run: ``nice .venv/bin/python bench/grounding.py [--hours 2] [--seeds 0 1] [--severities moderate severe]``
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The question battery (tests/test_grounding_meaning.py and tests/test_style.py use it too).
BATTERY = [
    "give me a patient-friendly summary of my night", "how much deep sleep did I get?", "show me REM with rapid eye movements",
    "was my oxygen ever low?", "when did respiration look abnormal?", "when did my oxygen look abnormal?",
    "when did my heart rate look abnormal?", "when was my sleep most disturbed?", "what is my AHI?",
    "compare supine versus non-supine", "what channels are in the recording?", "list the arousals",
]


def _blind_match(figure, facts) -> bool:
    """The meaning-blind check: the value anywhere in the results, at the written precision."""
    return any(abs(figure.value - fact.value) <= figure.step / 2 + 1e-9 for fact in facts
               if (fact.quantity == "clock") == (figure.quantity == "clock"))


def _replace_nth(text: str, old: str, new: str, n: int) -> str:
    starts = [m.start() for m in re.finditer(re.escape(old), text)]
    if n >= len(starts):
        return text
    return text[: starts[n]] + new + text[starts[n] + len(old):]


def _plants(answer: str, facts) -> list[tuple[str, str, str]]:
    """(kind, planted text, corrupted answer) for each figure of `answer`."""
    from assistant.grounding import extract_figures

    plants, seen = [], {}
    for figure in extract_figures(answer):
        n = seen.get(figure.text, 0)
        seen[figure.text] = n + 1
        if figure.quantity == "severity" or not re.fullmatch(r"\d+(?:\.\d+)?|\d{1,2}:\d{2}(?::\d{2})?", figure.text):
            continue
        if figure.quantity == "clock":
            h, m = (int(x) for x in figure.text.split(":")[:2])
            moved = (h * 60 + m + 37) % 1440
            wrong = f"{moved // 60:02d}:{moved % 60:02d}" + (":00" if figure.text.count(":") == 2 else "")
        else:
            decimals = len(figure.text.split(".")[1]) if "." in figure.text else 0
            wrong = f"{figure.value * 1.25 + 1:.{decimals}f}"
        plants.append(("value", wrong, _replace_nth(answer, figure.text, wrong, n)))
        if figure.quantity == "duration":
            for unit, other in ((" min", " h"), (" h", " min")):
                if _replace_nth(answer, figure.text + unit, "\0", n) != answer:
                    plants.append(("unit", figure.text, _replace_nth(answer, figure.text + unit, figure.text + other, n)))
                    break
        if figure.quantity in ("count", "rate", "percent", "duration"):
            borrowed = [f for f in facts if f.quantity in ("epoch", "duration", "count", "number") and f.quantity != figure.quantity
                        and float(f.value).is_integer() and 1 < f.value < 1000 and f.value != figure.value]
            if borrowed:
                wrong = str(int(borrowed[len(plants) % len(borrowed)].value))
                plants.append(("borrowed", wrong, _replace_nth(answer, figure.text, wrong, n)))
    return plants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--severities", nargs="+", default=["moderate", "severe"])
    args = parser.parse_args()
    from assistant.grounding import check_grounding, collect_tool_figures, extract_figures
    from assistant.session import NightSession
    from sleeplm.synthetic import simulate_night, write_night

    verified = total = 0
    caught: dict[str, list[int]] = {}  # kind -> [caught, caught by the blind check, planted]
    for severity in args.severities:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                path = write_night(simulate_night(args.hours, seed=seed, severity=severity, sfreq=128), Path(tmp) / "night.edf")
                session = NightSession(llm="none")
                session.load(path, stage_cross_check=False)
            for audience in ("clinician", "patient"):
                for question in BATTERY:
                    turn = session.ask(question, audience=audience)
                    answer = turn.answer.split("\n", 1)[-1]  # the write-up without its mode label
                    sources = [c["result"] for c in turn.tool_calls] + [question]
                    report = check_grounding(answer, sources)
                    verified += len(report.matched)
                    total += len(report.matched) + len(report.unmatched)
                    facts = collect_tool_figures(sources)
                    for kind, wrong, planted in _plants(answer, facts):
                        figures = [f for f in extract_figures(planted) if f.text == wrong]
                        if not figures or planted == answer:
                            continue
                        flagged = wrong in check_grounding(planted, sources).unmatched
                        blind = not all(_blind_match(f, facts) for f in figures)
                        row = caught.setdefault(kind, [0, 0, 0])
                        row[0] += flagged
                        row[1] += blind
                        row[2] += 1
            session.close()
            print(f"night {severity} seed {seed}: {verified}/{total} figures verified so far", flush=True)
    print(f"\nfigures in the battery's answers verified: {verified}/{total} = {verified / max(total, 1):.3f}")
    all_caught = sum(r[0] for r in caught.values())
    all_blind = sum(r[1] for r in caught.values())
    planted = sum(r[2] for r in caught.values())
    for kind, (hit, blind, n) in sorted(caught.items()):
        print(f"planted wrong figures caught ({kind:8}): {hit}/{n} = {hit / n:.3f}   meaning-blind baseline: {blind}/{n} = {blind / n:.3f}")
    print(f"planted wrong figures caught (all):      {all_caught}/{planted} = {all_caught / max(planted, 1):.3f}   "
          f"meaning-blind baseline: {all_blind / max(planted, 1):.3f}   ratio {all_caught / max(all_blind, 1):.2f}x")


if __name__ == "__main__":
    main()
