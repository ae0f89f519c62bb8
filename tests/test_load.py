"""Load held: 16 parallel sessions against the real server on 127.0.0.1 (slow).

The server is started as a user starts it (``sleeplm-assistant serve``, i.e. ``cli.py serve``) in
tool-only mode (``--llm none``: answers come from the keyword router's tools, deterministic).
Sixteen clients call the ``/ask`` API at once: twelve with short simulated nights of different
severities, montages, seeds and start times, four with hostile files (a truncated EDF, a header
memory bomb, a file of the wrong type, a night whose every channel is flat). The test asserts that
the server survives, every hostile file gets its clear error (or, for the flat night, a clear
"not assessable"), and every answer is about its own night: it equals, word for word, the answer
this process computes for the same file. It prints latency p50/p95, the server's peak RSS and the
error count.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from test_budgets import edf_bomb

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "give me a summary of my night"
SEVERITIES = ("none", "mild", "moderate", "severe")
MONTAGES = ("aasm", "shhs", "mesa")
SERVER_START_S = 180
ALL_ANSWERED_S = 600  # 2 cores: ~1-3 s per night once YASA is loaded, two answers at a time


def simulated_nights(folder: Path) -> list[Path]:
    """Twelve short nights, each its own severity/montage/seed/start time (so its own figures)."""
    from sleeplm.synthetic import simulate_night, write_night

    nights = []
    for i in range(12):
        night = simulate_night(duration_h=0.25 + 0.05 * (i % 3), seed=10 + i, severity=SEVERITIES[i % 4],
                               montage=MONTAGES[i % 3], sfreq=128, start_clock=f"{21 + i % 3}:{5 * i:02d}:00")
        nights.append(write_night(night, folder / f"night-{i}.edf"))
    return nights


def hostile_files(folder: Path, a_night: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, pattern its error or answer must match)."""
    from edfio import Edf, EdfSignal

    truncated = folder / "truncated.edf"
    data = a_night.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    wrong_type = folder / "notes.txt"
    wrong_type.write_text("Patient notes, not a recording.\n")
    flat = folder / "flat.edf"
    signals = [EdfSignal(np.zeros(1200 * 128), 128, label=label, physical_dimension="uV", physical_range=(-500, 500))
               for label in ("EEG C3-A2", "EOG LOC-A2", "ECG")]
    Edf(signals, starttime=dt.time(23, 0, 0)).write(flat)
    return {
        "truncated": (truncated, r"truncated"),
        "memory bomb": (edf_bomb(folder / "bomb.edf", 1, 3_000_000), r"number of data records.*over the 48-h limit"),
        "wrong type": (wrong_type, r"Files of type '\.txt' cannot be read"),
        "flat channels": (flat, r"Not assessable: tst_min"),
    }


def expected_answer(path: Path) -> str:
    """The tool-only answer this process gives for `path` (the server runs the same code)."""
    from assistant.session import NightSession

    session = NightSession(llm="none")
    try:
        session.load(path)
        return session.ask(QUESTION).answer
    finally:
        session.close()


def start_server(folder: Path, preload: Path) -> tuple[subprocess.Popen, str, Path]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_TEMP_DIR": str(folder / "gradio"), "SLEEPLM_LLM": "none",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SLEEPLM_CACHE": str(folder / "cache")}
    log = folder / "server.log"
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--recording", str(preload), "--llm", "none"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=open(log, "w"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url, log
        except OSError:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)


def status_mb(pid: int, field: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0]) / 1024


@pytest.mark.slow
def test_sixteen_parallel_sessions_with_hostile_files(tmp_path, capsys):
    from gradio_client import Client, handle_file

    nights = simulated_nights(tmp_path)
    hostile = hostile_files(tmp_path, nights[0])
    expected = {path: expected_answer(path) for path in nights}
    assert len(set(expected.values())) == len(nights), "two nights would give the same answer"
    server, url, log = start_server(tmp_path, nights[0])

    def ask(path: Path) -> tuple[float, str | None, str | None]:
        """(seconds, answer, error text) of one /ask call from its own client (its own session)."""
        started = time.perf_counter()
        try:
            answer = Client(url, verbose=False).predict(handle_file(str(path)), QUESTION, "clinician", api_name="/ask")
            return time.perf_counter() - started, answer, None
        except Exception as exc:  # the server's gr.Error arrives as the client's AppError
            return time.perf_counter() - started, None, str(exc)

    try:
        warm_s, warm_answer, warm_error = ask(nights[0])  # imports and YASA's model, once per server
        assert warm_error is None and warm_answer == expected[nights[0]], warm_error or warm_answer
        rss_before = status_mb(server.pid, "VmRSS")
        jobs = [*nights, *(path for path, _ in hostile.values())]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = dict(zip(jobs, pool.map(ask, jobs, timeout=ALL_ANSWERED_S)))
        wall_s = time.perf_counter() - started
        assert server.poll() is None, log.read_text()[-3000:]
        time.sleep(2.0)  # the last sessions' clean-up runs after their answer is sent
        peak_mb, rss_after = status_mb(server.pid, "VmHWM"), status_mb(server.pid, "VmRSS")
        page = urllib.request.urlopen(url, timeout=10).status  # still serving
    finally:
        server.terminate()
        server.wait(60)

    latencies = sorted(seconds for seconds, _, _ in results.values())
    wrong = [path.name for path in nights if results[path][1] != expected[path]]
    failed = [path.name for path in nights if results[path][2] is not None]
    unclear = [name for name, (path, pattern) in hostile.items()
               if not re.search(pattern, results[path][1] or results[path][2] or "")]
    errors = sum(error is not None for _, _, error in results.values())
    with capsys.disabled():
        print(f"\n/ask load test: {len(jobs)} parallel sessions ({len(nights)} nights, {len(hostile)} hostile files) "
              f"in {wall_s:.1f} s; latency p50 {np.percentile(latencies, 50):.1f} s, p95 {np.percentile(latencies, 95):.1f} s "
              f"(warm-up call {warm_s:.1f} s); server peak RSS {peak_mb:.0f} MB (RSS {rss_before:.0f} MB before the "
              f"burst, {rss_after:.0f} MB after); errors {errors} (expected {len(hostile) - 1}: the hostile files but "
              f"the flat night); load average {os.getloadavg()[0]:.2f}")
    assert page == 200
    assert failed == [] and wrong == [], (failed, wrong)
    assert unclear == [], {name: results[hostile[name][0]] for name in unclear}
    assert errors == len(hostile) - 1  # the flat night loads and says what cannot be assessed
    assert "Internal error" not in " ".join(str(r) for r in results.values())
