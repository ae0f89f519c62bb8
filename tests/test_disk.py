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


def start_server(tmp_path: Path, recording: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "SLEEPLM_LLM": "none",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SLEEPLM_CACHE": str(tmp_path / "cache")}
    code = f"import app; app.serve(host='127.0.0.1', port={port}, recording={str(recording)!r})"
    server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / f"server-{port}.log", "w"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except OSError:
            assert server.poll() is None, (tmp_path / f"server-{port}.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_sigkill_mid_answer_then_restart_leaves_no_file_of_the_earlier_run(tmp_path, small_edf):
    from gradio_client import Client, handle_file

    server_base = tmp_path / "gradio" / app.SERVER_ROOT_NAME
    first, url = start_server(tmp_path, small_edf)
    try:
        job = Client(url, verbose=False).submit(handle_file(str(small_edf)), "give me a summary of the night",
                                                "clinician", api_name="/ask")
        deadline = time.monotonic() + 120
        while not list(server_base.glob("run-*/api-*/recording.edf")):
            assert time.monotonic() < deadline, "the upload never reached the session folder"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # mid-answer: no handler runs
        first.wait(30)
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
        second.wait(60)
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
