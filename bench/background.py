"""Benchmark: two uploads at once each get their first answer within a single upload's time + 20 %.

Simulates a night without its own staging (so SleepLM stages it in the background), then times
upload-to-first-answer (load, measure, YASA staging, one question in tool-only mode) for one
session alone and for two sessions started together, each with SleepLM loaded: when the first
upload is answered its SleepLM jobs (embeddings, then stage captions of every epoch) start in
the background while the second upload is still loading. The product runs that work one night
at a time, at a lower CPU priority, and pauses it between batches while any upload is loading
(`assistant.sleeplm_jobs.loading`); the ratio says how much the two uploads slow each other down.

``--full-model`` uses the full-size network with random weights (the released model's size and
cost, the product's automatic encoder precision), so that the background job really competes
for the 2 cores; the default tiny network only checks the path. Background jobs are stopped
(sessions closed) once the answers are timed: a full-size night's captions take hours on a CPU.

Run: ``nice .venv/bin/python bench/background.py [--hours 8] [--full-model | --checkpoint PATH]``
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


def stop(session) -> None:
    """End a timed session: its background SleepLM work stops after the batch in progress."""
    session.close()
    session.wait_for_background()


def full_random_model():
    """The released network's size with random weights, encoder precision chosen as the product does (auto)."""
    from sleeplm.model.config import DEFAULT_MODEL, RELEASED_OVERRIDES
    from sleeplm.model.inference import SleepLM

    return SleepLM.from_config(DEFAULT_MODEL, **RELEASED_OVERRIDES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", default=None, help="SleepLM weights (default: random tiny network)")
    weights.add_argument("--full-model", action="store_true", help="full-size network with random weights")
    args = parser.parse_args()

    from sleeplm.model.inference import SleepLM
    from sleeplm.synthetic import simulate_night, write_night

    if args.checkpoint:
        model, name = SleepLM.from_pretrained(args.checkpoint), f"weights {args.checkpoint}"
    elif args.full_model:
        model, name = full_random_model(), "full-size network, random weights"
    else:
        model, name = SleepLM.from_config("sleeplm_tiny"), "tiny random network (path check: it hardly competes)"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SLEEPLM_CACHE"] = str(Path(tmp) / "cache")  # embeddings are computed, not read from a cache
        path = write_night(simulate_night(args.hours, seed=1, severity="moderate"), Path(tmp) / "night.edf")
        warm, session = first_answer_seconds(path, model)  # imports, YASA model load
        stop(session)
        load_before = os.getloadavg()[0]
        single, session = first_answer_seconds(path, model)
        pending = dict(session.night.sleeplm_jobs)
        stop(session)
        times: list[float] = []
        sessions: list = []

        def upload() -> None:
            seconds, other = first_answer_seconds(path, model)
            times.append(seconds)
            sessions.append(other)

        workers = [threading.Thread(target=upload) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        background = [dict(other.night.sleeplm_jobs) for other in sessions]
        for other in sessions:
            stop(other)
    worst = max(times)
    print(f"{args.hours:g}-h night, SleepLM {name}, encoder "
          f"{model.precision.reason}; load average {load_before:.1f} before the single upload, "
          f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores")
    print(f"  one upload alone: first answer after {single:.1f} s (warm-up run {warm:.1f} s); its SleepLM jobs at that "
          f"moment: {pending}")
    print(f"  two uploads together: first answers after {', '.join(f'{t:.1f}' for t in sorted(times))} s "
          f"(SleepLM jobs then: {background}) -> worst {worst / single:.2f}x the single upload "
          f"(target <= {TARGET_RATIO}x: {'met' if worst / single <= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
