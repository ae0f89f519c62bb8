"""Answer times with the embedded model (issue 21): the design-card questions and the question battery.

On the demo night (1.5 h) and on a simulated 8-h night, one conversation per night asks every
question of the design card (`DESIGN_CARD_QUESTIONS`) and of the question battery
(`bench.grounding.BATTERY`) in turn, with the embedded Qwen2.5-Coder-1.5B (llama.cpp, 2 threads
unless ``--threads``), as a person would: the session starts (the embedded model's prompt prefixes
are evaluated in the background from then on), the night loads, the questions follow one another.
Per question it prints:

- ttft: seconds from the question to the first word of the answer (the first streamed token);
- total: seconds from the question to the finished answer;
- route and model calls (`assistant.agent.ROUTES`: "router" = tools run without a model call);
- prompt and completion tokens over the turn's model calls, and the prompt tokens reused from the
  llama.cpp prefix cache ("reused"; "hits" = model calls that reused any);
- pass: the battery's check (`bench.llm_battery.battery_checks`: the router's tool, the model's
  answer kept as grounded, clock + elapsed + epochs cited where the tool-only answer cites them).

Then per night and overall: p50 / p95 of ttft and total against the targets (first token <= 10 s,
whole answer <= 30 s p50 and <= 60 s p95), and the battery score (right tool, grounded, cites) of
the battery's first eight questions, the figure ``bench/llm_battery.py --questions 8`` gives.

Run (one timing run at a time on a shared machine)::

    nice .venv/bin/python bench/answers.py [--nights demo 8h] [--threads 2] [--questions N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch's threads stay out of llama.cpp's way
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The questions of the design card (README, the app's examples, issue 21's trials): each has a
# clear tool, so each is answered with one model call (`assistant.agent.sure_route`).
DESIGN_CARD_QUESTIONS = [
    "When did respiration look abnormal?",
    "Was my oxygen ever low during the night?",
    "Give me a summary of my night",
    "give me a patient-friendly summary of this night",
    "How much deep sleep did I get?",
    "Show me the hypnogram with events",
    "show me the REM periods with rapid eye movements",
    "When did my heart rate look abnormal?",
]
TARGET_TTFT_S, TARGET_P50_S, TARGET_P95_S = 10.0, 30.0, 60.0
# The battery's score before issue 21 (README: bench/llm_battery.py --questions 8, 1-h night, quiet machine).
BASELINE_SCORE = {"right_tool": 7, "grounded": 3, "cites": 4}
EIGHT_HOURS = {"duration_h": 8.0, "seed": 0, "severity": "moderate", "sfreq": 128}


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0-1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def night_path(name: str, folder: Path) -> Path:
    """The demo night's EDF, or the simulated 8-h night written into `folder`."""
    from sleeplm.synthetic import simulate_night, write_night
    from sleeplm.synthetic.demo import demo_recording_path

    if name == "demo":
        return demo_recording_path()
    return write_night(simulate_night(**EIGHT_HOURS), folder / "night-8h.edf")


def ask_timed(session, question: str, audience: str) -> tuple[object, float | None, float]:
    """(turn, seconds to the first answer token or None, seconds to the finished answer)."""
    started = time.perf_counter()
    first = None
    turn = None
    for event in session.ask_stream(question, audience=audience):
        if event["type"] == "token" and first is None and event["text"].strip():
            first = time.perf_counter() - started
        elif event["type"] == "final":
            turn = event["turn"]
    return turn, first, time.perf_counter() - started


def run_night(name: str, model, questions: list[str], folder: Path) -> list[dict]:
    """Every question on one night, in one conversation; one row per question."""
    from assistant.session import NightSession
    from bench.grounding import BATTERY
    from bench.llm_battery import battery_checks, expectations

    path = night_path(name, folder)
    started = time.perf_counter()
    session = NightSession(llm=model)  # the prompt prefixes start evaluating now, in the background
    session.load(path, stage_cross_check=False)
    load_s = time.perf_counter() - started
    reference = NightSession(llm="none")
    reference.night = session.night
    expected = expectations(reference, questions)
    print(f"\n{name} night: loaded and analysed in {load_s:.1f} s (the prompt prefixes evaluated meanwhile); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'question':52} {'ttft':>6} {'total':>6} {'route':>12} {'calls':>5} {'prompt':>6} {'reused':>6} {'hits':>4} "
          f"{'compl':>5}  pass", flush=True)
    rows = []
    for question, (tools, cites) in zip(questions, expected):
        audience = "patient" if "patient" in question else "clinician"
        turn, first, total = ask_timed(session, question, audience)
        usage = turn.usage
        checks = battery_checks(turn, tools, cites)
        row = {"night": name, "question": question, "ttft": first, "total": total, "route": turn.route, "mode": turn.mode,
               "battery": question.lower() in {q.lower() for q in BATTERY[:8]}, **usage, **checks}
        rows.append(row)
        why = turn.grounding.get("rejected") or ""
        verdict = "yes" if checks["passed"] else (f"no ({turn.mode}{': ' + why[:90] if why else ''}; called "
                                                  f"{checks['called'] or 'nothing'}, cites {checks['cites']})")
        ttft = f"{first:6.1f}" if first is not None else "     -"
        print(f"{question[:52]:52} {ttft} {total:6.1f} {turn.route:>12} {usage['model_calls']:5d} {usage['input_tokens']:6d} "
              f"{usage['cache_read']:6d} {usage['prefix_hits']:4d} {usage['output_tokens']:5d}  {verdict}", flush=True)
    session.close()
    return rows


def summary(rows: list[dict], label: str) -> str:
    """p50/p95 of first-token and total times against the targets, and the battery score."""
    ttft = [r["ttft"] for r in rows if r["ttft"] is not None]
    totals = [r["total"] for r in rows]
    p50, p95 = percentile(totals, 0.5), percentile(totals, 0.95)
    first50 = percentile(ttft, 0.5) if ttft else float("nan")
    battery = [r for r in rows if r["battery"]]
    score = {k: sum(r[k] for r in battery if k != "cites" or r["cite_expected"]) for k in BASELINE_SCORE}
    cite_n = sum(r["cite_expected"] for r in battery)
    one_call = sum(r["route"] == "router" and r["model_calls"] == 1 for r in rows)
    return (f"{label}: {len(rows)} answers, {one_call} with one model call; first token p50 {first50:.1f} s "
            f"(target <= {TARGET_TTFT_S:g}), whole answer p50 {p50:.1f} s (<= {TARGET_P50_S:g}), p95 {p95:.1f} s "
            f"(<= {TARGET_P95_S:g}); passed {sum(r['passed'] for r in rows)}/{len(rows)}; battery (first 8): right tool "
            f"{score['right_tool']}/{len(battery)}, grounded {score['grounded']}/{len(battery)}, cites {score['cites']}/{cite_n} "
            f"(before issue 21, 1-h night: {BASELINE_SCORE['right_tool']}/8, {BASELINE_SCORE['grounded']}/8, "
            f"{BASELINE_SCORE['cites']}/6)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", nargs="+", choices=["demo", "8h"], default=["demo", "8h"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--questions", type=int, default=None, help="first N questions (default: all)")
    args = parser.parse_args()
    from assistant.local_llm import load_local_chat_model
    from bench.grounding import BATTERY

    seen: set[str] = set()
    # The battery's scored eight first, so that a shortened run (--questions) still gives its score.
    questions = [q for q in BATTERY[:8] + DESIGN_CARD_QUESTIONS + BATTERY if not (q.lower() in seen or seen.add(q.lower()))]
    questions = questions[: args.questions]
    started = time.perf_counter()
    model, _ = load_local_chat_model("1.5b", n_threads=args.threads)
    print(f"embedded model {model.model_name}, {args.threads} threads, loaded in {time.perf_counter() - started:.1f} s; "
          f"{len(questions)} questions per night; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nights:
            night_rows = run_night(name, model, questions, Path(tmp))
            print(summary(night_rows, f"{name} night"), flush=True)
            rows += night_rows
    print(f"\n{summary(rows, 'all nights')}\nload average at the end {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
