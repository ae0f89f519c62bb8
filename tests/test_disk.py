"""Nothing left behind: a server killed mid-answer leaves files that the next start removes; SIGTERM
removes its own; refused uploads are deleted at once; exports are written through a rename."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import app

ROOT = Path(__file__).resolve().parent.parent


# Limits that only catch a hung server: a loaded machine (load 10+ on 2 cores) is slow, never this slow.
# (gradio_client's uploads and posts otherwise use httpx's 5-s default, which a loaded server can miss: the
# upload then fails in the client's thread, and the file waited for never comes.)
START_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 60

# Answers in the server started with `hold_answers`: the session announces the answer (a file), then waits
# for ever, so the test's SIGKILL always lands mid-answer, however slow the machine.
HOLD_ANSWERS = """
import threading
from pathlib import Path

from assistant.session import NightSession


def held(self, *args, **kwargs):
    Path({marker!r}).touch()
    threading.Event().wait()


NightSession.ask = held
"""


def start_server(tmp_path: Path, recording: Path, hold_answers: Path | None = None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "SLEEPLM_LLM": "none",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SLEEPLM_CACHE": str(tmp_path / "cache")}
    code = HOLD_ANSWERS.format(marker=str(hold_answers)) if hold_answers is not None else ""
    code += f"import app; app.serve(host='127.0.0.1', port={port}, recording={str(recording)!r})"
    server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / f"server-{port}.log", "w"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S)
                return server, url
            except OSError:
                assert server.poll() is None, (tmp_path / f"server-{port}.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
    except BaseException:
        server.kill()  # a server that never answered is not left running after the test
        server.wait()
        raise


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_sigkill_mid_answer_then_restart_leaves_no_file_of_the_earlier_run(tmp_path, small_edf):
    import httpx
    from gradio_client import Client, handle_file

    server_base = tmp_path / "gradio" / app.SERVER_ROOT_NAME
    answering = tmp_path / "answering"
    first, url = start_server(tmp_path, small_edf, hold_answers=answering)
    try:
        # Reads without a limit: the answer's event stream stays open while the answer is held.
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=None)
        job = Client(url, verbose=False, httpx_kwargs={"timeout": timeout}).submit(
            handle_file(str(small_edf)), "give me a summary of the night", "clinician", api_name="/ask")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answering.exists():  # the night is loaded from the session folder and the answer has begun
            assert not job.done(), f"the /ask call ended before its answer began: {job.exception()!r}"
            assert time.monotonic() < deadline, "the answer never began"
            time.sleep(0.05)
        assert list(server_base.glob("run-*/api-*/recording.edf"))
        first.send_signal(signal.SIGKILL)  # mid-answer: no handler runs
        first.wait(60)
        del job
    finally:
        if first.poll() is None:
            first.kill()
    earlier = files_under(tmp_path / "gradio")
    assert any(p.name == "recording.edf" for p in earlier)  # the kill did leave files behind

    second, _ = start_server(tmp_path, small_edf)
    try:
        left = sorted(str(p) for p in earlier if p.exists())
        assert left == [], left
        runs = list(server_base.glob("run-*"))
        assert [r.name.split("-")[1] for r in runs] == [str(second.pid)]
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(START_TIMEOUT_S)
        finally:
            if second.poll() is None:
                second.kill()
    assert not list(server_base.glob("run-*")), "SIGTERM left the server's files behind"


def test_refused_upload_is_deleted_at_once(tmp_path, monkeypatch):
    import gradio as gr

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    folder = tmp_path / "gradio" / "abc123"
    folder.mkdir(parents=True)
    refused = folder / "notes.txt"
    refused.write_text("not a recording")
    with pytest.raises(gr.Error):
        list(app.load_night(str(refused), None, root=tmp_path / "root", llm_factory=lambda: "none"))
    assert not refused.exists() and not folder.exists()
    api_refused = tmp_path / "gradio" / "def456" / "empty.edf"
    api_refused.parent.mkdir()
    api_refused.write_bytes(b"")
    with pytest.raises(gr.Error):
        app.api_ask(str(api_refused), "hi", "clinician", root=tmp_path / "root", llm_factory=lambda: "none")
    assert not api_refused.exists()


def test_exports_are_written_through_a_rename(tmp_path):
    target = tmp_path / "night-report.pdf"
    target.write_bytes(b"old complete file")

    def crash_midway(path):
        path.write_bytes(b"half")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        app._atomic(target, crash_midway)
    assert target.read_bytes() == b"old complete file" and list(tmp_path.iterdir()) == [target]
    app._atomic(target, lambda path: path.write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_server_root_removes_runs_of_dead_processes_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"run-{dead.pid}-aaaa").mkdir()
    (tmp_path / f"run-{dead.pid}-aaaa" / "recording.edf").write_bytes(b"x")
    (tmp_path / f"run-{os.getppid()}-bbbb").mkdir()  # a live process's run stays
    mine = app.server_root(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"run-{os.getppid()}-bbbb", mine.name])
