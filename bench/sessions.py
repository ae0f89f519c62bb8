"""Benchmark: server memory of open 8-h sessions, and memory given back when they close.

In this one process, through the app's own handlers (`app.load_night` as an upload does: the file
moved into the session's folder, loaded, measured, overview drawn, exports written; then one
question through `app.ask`, `app.follow_citation` and `app.build_downloads`, as the page chains
them), opens `--sessions` sessions on simulated 8-h nights (alternately with and without the
file's own scoring, so both the YASA-staged and the reference-scored paths are held), keeps them
all open, then closes them as a closed tab or an expired session does (`app.end_session`).

Prints RSS before (after one warm-up session opened and closed: imports, YASA's model and
matplotlib's caches are the server's, not a session's), with all sessions open, the peak, after
closing, the cost per open session ((open - before) / sessions, target <= 300 MB) and after/before
(target <= 1.10). ``--sleeplm tiny`` gives the sessions the tiny random SleepLM network, so its
background jobs (embeddings, stage captions) run and are stopped by the close.

Run: ``nice .venv/bin/python bench/sessions.py [--hours 8] [--sessions 8]``
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_PER_SESSION_MB = 300.0
TARGET_AFTER_RATIO = 1.10
QUESTION = "Give me a summary of my night"


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Start VmHWM (peak RSS) again from the current RSS (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def open_session(app, night: Path, key: str, page: dict) -> object:
    """One tab: upload `night` (a copy, which the app moves into the session), ask one question."""
    upload = page["uploads"] / f"{key}{night.suffix}"
    shutil.copy(night, upload)
    request = SimpleNamespace(session_hash=key)
    *_, last = app.load_night(str(upload), None, request, None, root=page["root"], llm_factory=lambda: "none",
                              sleeplm_model=page["model"], registry=page["registry"], shown_root=page["shown"])
    bs = last[0]
    *_, (history, _, _) = app.ask(QUESTION, "clinician", [], bs)
    assert bs.turns and history, "the question got no answer"
    app.follow_citation(bs)
    app.build_downloads(bs)
    return bs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--sleeplm", choices=("none", "tiny"), default="none",
                        help="tiny: the tiny random SleepLM network, so the background jobs run")
    parser.add_argument("--no-release", action="store_true", help="closing does not call malloc_trim (to measure it)")
    parser.add_argument("--no-bound-heap", action="store_true", help="glibc's dynamic mmap threshold (to measure it)")
    args = parser.parse_args()

    import app

    if not args.no_bound_heap:
        app.bound_heap()  # as `app.serve` does at start-up
    if args.no_release:
        app.release_memory = lambda: None
    from sleeplm.synthetic import simulate_night, write_night

    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        tmp = Path(tmp)
        os.environ["SLEEPLM_CACHE"] = str(tmp / "cache")  # embeddings computed, not read from an earlier run
        nights = [write_night(simulate_night(args.hours, seed=1, severity="moderate", annotations=scored),
                              tmp / f"night-{'scored' if scored else 'unscored'}.edf") for scored in (True, False)]
        print(f"{args.hours:g}-h simulated nights: {', '.join(f'{p.name} {p.stat().st_size / 1e6:.0f} MB' for p in nights)}")
        model = None
        if args.sleeplm == "tiny":
            from sleeplm.model.inference import SleepLM

            model = SleepLM.from_config("sleeplm_tiny")
        page = {"root": tmp / "sessions", "shown": tmp / "shown", "uploads": tmp / "uploads", "registry": {},
                "model": model}
        for folder in ("root", "shown", "uploads"):
            page[folder].mkdir()

        started = time.perf_counter()
        for night in nights:  # warm-up: one session of each kind, opened and closed
            bs = open_session(app, night, "warm-up", page)
            bs.night.wait_for_background()
            app.end_session(bs, page["registry"])
        del bs
        gc.collect()
        warm_s = time.perf_counter() - started
        before = status_mb("VmRSS")
        reset_peak()

        started = time.perf_counter()
        keys = []
        for i in range(args.sessions):
            keys.append(open_session(app, nights[i % 2], f"session-{i}", page).workdir.name)
        opened_s = time.perf_counter() - started
        gc.collect()
        open_rss = status_mb("VmRSS")
        for key in keys:
            app.end_session(page["registry"].get(key), page["registry"])
        gc.collect()
        time.sleep(1.0)
        after = status_mb("VmRSS")
        peak = status_mb("VmHWM")

    per_session = (open_rss - before) / args.sessions
    print(f"warm-up (2 sessions opened and closed): {warm_s:.0f} s; {args.sessions} sessions opened in {opened_s:.0f} s "
          f"({opened_s / args.sessions:.1f} s each)")
    print(f"RSS before {before:.0f} MB, with {args.sessions} sessions open {open_rss:.0f} MB, peak {peak:.0f} MB, "
          f"after closing {after:.0f} MB")
    print(f"per open {args.hours:g}-h session: {per_session:.0f} MB (target <= {TARGET_PER_SESSION_MB:.0f} MB: "
          f"{'met' if per_session <= TARGET_PER_SESSION_MB else 'NOT met'})")
    print(f"after / before: {after / before:.3f} (target <= {TARGET_AFTER_RATIO:.2f}: "
          f"{'met' if after / before <= TARGET_AFTER_RATIO else 'NOT met'})")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
