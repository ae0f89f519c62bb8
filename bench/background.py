"""Benchmark: two uploads at once each get their first answer within a single upload's time + 20 %.

Simulates a night without its own staging (so SleepLM stages it in the background), then times
upload-to-first-answer (load, measure, YASA staging, one question in tool-only mode) for one
session alone and for two sessions started together, each with SleepLM loaded (its embeddings and
stage captions run in the background, one night at a time, at a lower CPU priority). The first
answer never waits for SleepLM; the ratio says how much the two uploads slow each other down.

Run: ``nice .venv/bin/python bench/background.py [--hours 8] [--checkpoint PATH]`` (default: the tiny
packaged network with random weights, which takes the same path as the released one).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

TARGET_RATIO = 1.2


def first_answer_seconds(path: Path, model) -> tuple[float, object]:
    from assistant.session import NightSession

    started = time.perf_counter()
    session = NightSession(llm="none", model=model)
    session.load(path)
    session.ask("how long is the recording?")
    return time.perf_counter() - started, session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--checkpoint", default=None, help="SleepLM weights (default: random tiny network)")
    args = parser.parse_args()

    from sleeplm.model.inference import SleepLM
    from sleeplm.synthetic import simulate_night, write_night

    model = SleepLM.from_pretrained(args.checkpoint) if args.checkpoint else SleepLM.from_config("sleeplm_tiny")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SLEEPLM_CACHE"] = str(Path(tmp) / "cache")  # embeddings are computed, not read from a cache
        path = write_night(simulate_night(args.hours, seed=1, severity="moderate"), Path(tmp) / "night.edf")
        warm, session = first_answer_seconds(path, model)  # imports, YASA model load
        session.wait_for_background()
        single, session = first_answer_seconds(path, model)
        pending = dict(session.night.sleeplm_jobs)
        session.wait_for_background()
        times: list[float] = []

        def upload() -> None:
            seconds, other = first_answer_seconds(path, model)
            times.append(seconds)
            other.wait_for_background()

        workers = [threading.Thread(target=upload) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    worst = max(times)
    print(f"{args.hours:g}-h night, SleepLM {'weights ' + args.checkpoint if args.checkpoint else 'tiny random network'}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  one upload alone: first answer after {single:.1f} s (warm-up run {warm:.1f} s); SleepLM jobs at that "
          f"moment: {pending}")
    print(f"  two uploads together: first answers after {', '.join(f'{t:.1f}' for t in sorted(times))} s -> "
          f"worst {worst / single:.2f}x the single upload (target <= {TARGET_RATIO}x: "
          f"{'met' if worst / single <= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
