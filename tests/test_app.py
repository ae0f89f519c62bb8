"""The Gradio app: handlers as plain generators, then the live server through gradio_client.

The language model is a scripted fake (conftest `ScriptedChatModel`) whose answers quote the
tool results it is shown, so every answer here comes from the real tools on the real night.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import mne
import numpy as np
import pandas as pd
import pytest
from edfio import Edf, EdfSignal
from langchain_core.messages import ToolMessage

import app
from conftest import ScriptedChatModel, call
from sleeplm.report.plots import ClickMap
from test_export import pdf_text


def tool_payload(messages) -> dict:
    return json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)


def quote_first_finding(messages) -> str:
    return f"From the recording: {tool_payload(messages)['findings'][0]}"


def quote_events(messages) -> str:
    """What a careful model writes after `list_events`: the count, then the tool's own citations
    (clock time, elapsed time, epochs) word for word."""
    payload = tool_payload(messages)
    if not payload["count"]:
        return "No abnormal breathing was measured."
    by_type = next(f for f in payload["findings"] if f.startswith("By type: "))[len("By type: "):-1]
    cited = [f.rstrip(".") for f in payload["findings"] if re.match(r"^\w+ at ", f)][:3]
    longest = next(f for f in payload["findings"] if f.startswith("Longest: "))
    return (f"Respiration looked abnormal {payload['count']} times ({by_type}). The first: {'; '.join(cited)}. "
            f"{longest}")


def overview_model() -> ScriptedChatModel:
    return ScriptedChatModel(messages=iter([call("recording_overview"), quote_first_finding]), seen=[], tools_offered=[])


def no_progress(*args, **kwargs) -> None:
    return None


@pytest.fixture(scope="module")
def late_edf(tmp_path_factory) -> Path:
    """A second, different night: 10 min of EEG/ECG starting 01:10:00."""
    rng = np.random.default_rng(9)
    signals = [EdfSignal(rng.normal(0, 20, 600 * 128), 128, label=label, physical_dimension="uV")
               for label in ("EEG C3-A2", "ECG")]
    path = tmp_path_factory.mktemp("late") / "late.edf"
    Edf(signals, starttime=dt.time(1, 10, 0)).write(path)
    return path


def upload_copy(src: Path, folder: Path, name: str = "Doe_John_2024-01-02.edf") -> str:
    """What Gradio hands a handler: a copy of the user's file (here with an identifying name)."""
    folder.mkdir(parents=True, exist_ok=True)
    return str(shutil.copyfile(src, folder / name))


def shown(outputs: list[tuple]) -> list:
    """What the page shows after every yield of a loading handler (`gr.update()` leaves an output as it was)."""
    page = list(outputs[0])
    for step in outputs[1:]:
        page = [before if now == gr.update() else now for before, now in zip(page, step)]
    return page


def load(path: str, root: Path, key: str = "tab1", factory=overview_model, registry=None, progress=no_progress):
    return shown(list(app.load_night(path, None, SimpleNamespace(session_hash=key), progress,
                                     root=root, llm_factory=factory, registry=registry)))


@pytest.fixture
def loaded(small_edf, tmp_path):
    bs = load(upload_copy(small_edf, tmp_path / "upload"), tmp_path / "sessions")[0]
    yield bs
    bs.close()


# ---- handlers -------------------------------------------------------------------------------
def test_load_night_fills_the_panel_and_reports_progress(small_edf, tmp_path):
    steps = []
    upload = upload_copy(small_edf, tmp_path / "upload")
    registry = {}
    bs, night_text, llm_text, preflight, file_channels, overview, viewer, downloads, chat = load(
        upload, tmp_path / "sessions", registry=registry, progress=lambda f, desc=None: steps.append((f, desc))
    )
    assert registry == {"tab1": bs} and bs.workdir == tmp_path / "sessions" / "tab1"
    assert "40 epochs of 30 s" in night_text and "starting 22:45:00" in night_text
    assert "ScriptedChatModel" in llm_text and "SleepLM" in llm_text
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and steps[0][1] == "Reading the recording"
    # Missing channels (airflow, effort, position) make the source column editable.
    assert preflight["interactive"] is True
    assert preflight["value"].set_index("channel").loc["EEG_C3_A2", "source"] == "EEG C3-A2"
    assert "`EEG C3-A2`" in file_channels and "`SpO2`" in file_channels
    assert Path(overview).is_file() and Path(overview).parent == bs.shown == bs.workdir / "shown"
    assert [Path(p).name for p in downloads] == ["night-report.pdf", "night-events.csv", "night-annotations.edf", "tool-trace.json"]
    assert viewer is None and chat == []
    # The upload now lives in the session's folder under a neutral name.
    assert not Path(upload).exists() and bs.recording_path == bs.workdir / "recording.edf"
    assert not any("Doe" in p.name for p in bs.workdir.rglob("*"))


def test_gradios_progress_tracker_is_used_although_it_is_falsy(small_edf, tmp_path):
    """`gr.Progress()` has a length of 0 until it tracks an iterable, so it is falsy: it must still get the updates."""

    class IdleProgress(list):
        def __call__(self, fraction, desc=None):
            self.append((fraction, desc))

    progress = IdleProgress()
    assert not progress and not gr.Progress()
    outputs = list(app.load_night(upload_copy(small_edf, tmp_path / "upload"), None, SimpleNamespace(session_hash="p"),
                                  progress, root=tmp_path / "sessions", llm_factory=overview_model))
    assert progress[0] == (0.02, "Reading the recording") and progress[-1] == (1.0, "Ready")
    # The night is shown first; the downloads follow without touching the chat the user may have started.
    assert outputs[0][8] == [] and outputs[0][7] is None
    assert len(outputs[1][7]) == 4 and all(value == gr.update() for value in outputs[1][1:7] + outputs[1][8:])
    outputs[0][0].close()


def test_a_bdf_upload_loads_and_answers(tmp_path):
    """BDF (24-bit) files are accepted like EDF; the upload keeps its type under a neutral name."""
    info = mne.create_info(["C3-M2", "EKG"], 128.0, ch_types="eeg")
    rng = np.random.default_rng(1)
    path = tmp_path / "upload" / "Doe_John.BDF"
    path.parent.mkdir()
    data = rng.normal(0, 20e-6, (2, 128 * 300))  # volts, 5 min
    mne.export.export_raw(path, mne.io.RawArray(data, info, verbose="error"), fmt="bdf", verbose="error")
    bs, night_text, *_ = load(str(path), tmp_path / "sessions")
    assert night_text.startswith("**Loaded:** BDF") and "10 epochs of 30 s" in night_text
    assert bs.recording_path == bs.workdir / "recording.bdf"
    *_, (history, _, _) = app.ask("how long is the recording?", "clinician", [], bs)
    assert "0h05m00s" in history[-1]["content"]
    bs.close()


@pytest.mark.parametrize("name, size_limit, message", [
    ("night.txt", None, "Files of type '.txt' cannot be read here"),
    ("night.edf", 1000, "over the 0 MB limit"),
])
def test_upload_checks_say_what_to_do(small_edf, tmp_path, monkeypatch, name, size_limit, message):
    if size_limit is not None:
        monkeypatch.setattr(app, "MAX_UPLOAD_BYTES", size_limit)
    with pytest.raises(gr.Error, match=re.escape(message)):
        load(upload_copy(small_edf, tmp_path / "upload", name), tmp_path / "sessions")


def test_a_broken_recording_gets_the_loaders_message(tmp_path):
    bad = tmp_path / "upload" / "broken.edf"
    bad.parent.mkdir()
    bad.write_bytes(b"not an edf at all" * 20)
    with pytest.raises(gr.Error) as info:
        load(str(bad), tmp_path / "sessions")
    assert info.value.title == "This recording cannot be used" and "EDF" in info.value.message


def test_ask_streams_tool_steps_then_the_checked_answer(loaded):
    history_states = list(app.ask("when does the night start?", "clinician", [], loaded))
    first, *_, last = [h for h, _, _ in history_states]
    assert first == [{"role": "user", "content": "when does the night start?"}]
    pending = [h[1] for h, _, _ in history_states if len(h) > 1 and h[1].get("metadata", {}).get("status") == "pending"]
    assert pending and pending[0]["metadata"]["title"] == "🛠️ recording_overview"
    step = last[1]
    assert step["metadata"]["status"] == "done" and step["metadata"]["duration"] >= 0
    assert step["content"].startswith("Arguments: `{}`") and "Result: " in step["content"]
    assert "22:45:00" in step["content"]
    answer = last[-1]
    assert answer["role"] == "assistant" and answer["content"].startswith("From the recording:")
    assert "22:45:00" in answer["content"]
    # The answer streams in word by word after the finished step.
    drafts = [h[-1]["content"] for h, _, _ in history_states
              if len(h) > 2 and h[1]["metadata"]["status"] == "done" and "metadata" not in h[-1]]
    assert len(drafts) > 5 and drafts[0] == "From " and all(len(a) <= len(b) for a, b in zip(drafts, drafts[1:]))
    assert all(box == "" for _, box, _ in history_states)
    assert loaded.turns[0]["question"] == "when does the night start?" and loaded.turns[0]["tool_calls"][0]["name"] == "recording_overview"


def test_agent_figures_appear_in_the_chat_and_the_viewer_follows_citations(small_edf, tmp_path):
    def factory():
        return ScriptedChatModel(messages=iter([call("plot", kind="raw", start="epoch 12", end="epoch 13"),
                                                "Here are epochs 12-13."]), seen=[], tools_offered=[])

    bs = load(upload_copy(small_edf, tmp_path / "upload"), tmp_path / "sessions", factory=factory)[0]
    *_, (history, _, _) = app.ask("show me the raw signals at epoch 12", "clinician", [], bs)
    figure = [m for m in history if isinstance(m["content"], dict)]
    assert len(figure) == 1 and Path(figure[0]["content"]["path"]).is_file()
    assert history.index(figure[0]) == 2  # right after its tool step
    viewer, caption = app.follow_citation(bs)
    assert "epochs 12-13" in caption and "22:51:00-22:52:00" in caption
    assert len(viewer.axes) == 7  # every present channel, physical units
    bs.close()


def test_the_viewer_follows_the_span_the_answer_cites_first(tmp_path):
    """The answer cites the longest event, not the first one listed: the viewer shows that one."""
    from sleeplm import synthetic

    night = synthetic.simulate_night(duration_h=0.5, seed=3, severity="severe", sfreq=128, artefacts=False)
    path = synthetic.write_night(night, tmp_path / "night.edf")

    def cite_longest(messages) -> str:
        return next(f for f in tool_payload(messages)["findings"] if f.startswith("Longest: "))

    def factory():
        return ScriptedChatModel(messages=iter([call("list_events", kind="respiratory"), cite_longest]),
                                 seen=[], tools_offered=[])

    bs = load(upload_copy(path, tmp_path / "upload"), tmp_path / "sessions", factory=factory)[0]
    *_, (history, _, _) = app.ask("which respiratory events did I have?", "clinician", [], bs)
    cited = re.search(r"\(elapsed [^,]+, (epochs? [\d-]+)\)", history[-1]["content"]).group(1)
    listed_first = bs.turns[-1]["tool_calls"][0]["result"]["events"][0]
    assert cited != f"epochs {listed_first['epoch_start']}-{listed_first['epoch_end']}"
    _, caption = app.follow_citation(bs)
    assert cited in caption
    bs.close()


def test_a_closed_session_keeps_nothing_of_its_night(small_edf, tmp_path, monkeypatch):
    """Closing a tab (or its expiry) drops every reference to the night, even from the
    `BrowserSession` that Gradio's state may hold a while longer, and gives the memory back."""
    import weakref

    released = []
    monkeypatch.setattr(app, "release_memory", lambda: released.append(True))
    registry = {}
    bs = load(upload_copy(small_edf, tmp_path / "upload"), tmp_path / "sessions", registry=registry,
              factory=lambda: "none")[0]
    list(app.ask("how long is the recording?", "clinician", [], bs))
    recording, analysis = weakref.ref(bs.night.night.rec), weakref.ref(bs.night.night.analysis)
    assert isinstance(bs.overview, ClickMap) and bs.turns and bs.preflight is not None
    app.end_session(bs, registry)
    assert registry == {} and released == [True] and not bs.workdir.exists() and not bs.shown.exists()
    assert bs.night.night is None and bs.overview is None and bs.preflight is None and bs.turns == []
    bs.night.wait_for_background()
    import gc

    gc.collect()
    assert recording() is None and analysis() is None  # nothing else holds the night
    app.end_session(None, registry)  # a state that never loaded anything


def test_release_memory_returns_freed_pages():
    """`release_memory` gives a freed heap back to the system (glibc's malloc_trim)."""
    from assistant.memory import release_memory

    def rss_mb() -> float:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    release_memory()
    before = rss_mb()
    # 200 MB in blocks under the mmap threshold, all but the last freed: without a trim the heap keeps them.
    blocks = [bytearray(64 * 1024) for _ in range(3200)]
    keep = blocks[-1]
    del blocks
    assert release_memory() is True
    assert rss_mb() - before < 50
    assert len(keep) == 64 * 1024


def test_asking_before_loading_says_what_to_do():
    with pytest.raises(gr.Error, match="Load a recording first"):
        list(app.ask("how did I sleep?", "clinician", [], None))


def test_viewer_from_typed_time_and_from_a_click(loaded):
    viewer, caption = app.show_epochs("22:50", 3, loaded)
    assert "22:50:00-22:51:30" in caption and "epochs 10-12" in caption
    assert viewer.axes[0].get_ylabel() == "ECG\n[uV]"
    with pytest.raises(gr.Error, match="Cannot read the time"):
        app.show_epochs("yesterday-ish", 2, loaded)
    # A click at 15 min into the night, in image pixels of the rendered overview.
    assert isinstance(loaded.overview, ClickMap)  # the session keeps where the axis lies, not the figure
    x_fraction = loaded.overview.x0 + (loaded.overview.x1 - loaded.overview.x0) * 0.75
    assert loaded.overview.seconds_at(x_fraction) == pytest.approx(900.0)
    width_px = loaded.overview.width_in * app.OVERVIEW_DPI
    viewer, caption, where = app.epochs_at_click(loaded, 2, SimpleNamespace(index=[x_fraction * width_px, 100]))
    assert where == "epoch 30" and "epochs 30-31" in caption
    with pytest.raises(gr.Error, match="Click inside the plotted night"):
        app.epochs_at_click(loaded, 2, SimpleNamespace(index=[2, 100]))


def test_a_cited_span_longer_than_the_viewer_is_shown_in_pages(loaded):
    """An answer citing 27 epochs: the viewer shows the first 10 and says so, naming the cited span (never a
    bare "epochs 5-14" beside an answer that says 5-31); Next / Previous page through it, then beyond it."""
    loaded.turns.append({"answer": "Breathing looked abnormal 22:47:30-23:01:00 (elapsed 0h02m30s-0h16m00s, "
                                   "epochs 5-31).", "tool_calls": []})
    viewer, caption = app.follow_citation(loaded)
    assert caption == ("**Raw signals:** 22:47:30-22:52:30, elapsed 0h02m30s-0h07m30s, epochs 5-14: page 1 of 3 of "
                       "the cited epochs 5-31 (22:47:30-23:01:00; the viewer shows 10 epochs at a time). "
                       "**Next** shows epochs 15-24.")
    assert viewer.axes[-1].get_xlim()[1] * 3600 == pytest.approx(15 * 30, abs=1)
    _, caption = app.page_viewer(1, loaded)
    assert "epochs 15-24: page 2 of 3 of the cited epochs 5-31" in caption and "Next** shows epochs 25-31." in caption
    _, caption = app.page_viewer(1, loaded)
    assert "epochs 25-31: page 3 of 3 of the cited epochs 5-31" in caption and "Next" not in caption
    _, caption = app.page_viewer(-1, loaded)
    assert "epochs 15-24: page 2 of 3" in caption
    app.page_viewer(1, loaded)
    _, caption = app.page_viewer(1, loaded)  # past the cited span: the next 7 epochs of the night, as many as shown
    assert caption == "**Raw signals:** 23:01:00-23:04:30, elapsed 0h16m00s-0h19m30s, epochs 32-38"
    _, caption = app.page_viewer(1, loaded)
    assert caption.endswith("epoch 39")
    with pytest.raises(gr.Error, match="The night ends there"):
        app.page_viewer(1, loaded)
    _, caption = app.show_epochs("22:46 to 23:04", 2, loaded)  # a typed span longer than the viewer: pages too
    assert "epochs 2-11: page 1 of 4 of the asked epochs 2-38" in caption


def test_channel_map_reload(loaded):
    table = loaded.preflight.copy()
    with pytest.raises(gr.Error, match="No channel was changed"):
        list(app.reload_with_channel_map(table, loaded, no_progress))
    table.loc[table["channel"] == "AF", "source"] = "EEG C4-A1"
    outputs = shown(list(app.reload_with_channel_map(table, loaded, no_progress)))
    assert outputs[3]["value"].set_index("channel").loc["AF", "source"] == "EEG C4-A1"
    assert loaded.night.night.rec.has("AF")
    table.loc[table["channel"] == "THX", "source"] = "Belt 9"
    with pytest.raises(gr.Error) as info:
        list(app.reload_with_channel_map(table, loaded, no_progress))
    assert info.value.title == "This channel map does not fit the file" and "Belt 9" in info.value.message


def test_downloads_carry_the_conversation(loaded):
    list(app.ask("when does the night start?", "patient", [], loaded))
    report, events_csv, annotations, trace = app.build_downloads(loaded)
    turns = json.loads(Path(trace).read_text())["turns"]
    assert turns[0]["audience"] == "patient" and turns[0]["tool_calls"][0]["name"] == "recording_overview"
    measured = loaded.night.night.analysis.events.sort_values("start_s")
    assert len(measured) > 0
    report_text = pdf_text(Path(report))
    for expected in ("night report", "when does the night start?", "From the recording:",
                     f"Events 1-{len(measured)} of {len(measured)}"):
        assert expected in report_text, expected
    csv = pd.read_csv(events_csv)
    assert csv["start_s"].tolist() == measured["start_s"].tolist() and "clock_start" in csv and "elapsed_start" in csv
    # Scoring tools import the EDF+ annotations: every measured event, and the stages over the whole night.
    read_back = mne.read_annotations(annotations)
    is_stage = np.array([text.startswith("Sleep stage") for text in read_back.description])
    assert sorted(read_back.onset[~is_stage]) == pytest.approx(measured["start_s"].tolist())
    assert read_back.duration[is_stage].sum() == pytest.approx(loaded.night.night.rec.duration_s)


def test_sessions_are_private_and_deleted(small_edf, late_edf, tmp_path):
    registry = {}
    early = load(upload_copy(small_edf, tmp_path / "a"), tmp_path / "sessions", "tab-a", registry=registry)[0]
    late = load(upload_copy(late_edf, tmp_path / "b"), tmp_path / "sessions", "tab-b", registry=registry)[0]
    *_, (early_chat, _, _) = app.ask("when does the night start?", "clinician", [], early)
    *_, (late_chat, _, _) = app.ask("when does the night start?", "clinician", [], late)
    assert "22:45:00" in early_chat[-1]["content"] and "01:10:00" not in early_chat[-1]["content"]
    assert "01:10:00" in late_chat[-1]["content"] and "22:45:00" not in late_chat[-1]["content"]
    assert len(early.turns) == len(late.turns) == 1
    early.close()
    assert not early.workdir.exists() and late.workdir.exists() and late.night.night is not None


# ---- the live server ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server-sessions")
    demo = app.build_app(llm_factory=overview_model, session_root=root)
    _, url, _ = app.launch(demo, port=free_port(), block=False)
    yield SimpleNamespace(url=url, root=root)
    demo.close()


def test_api_ask_endpoint(server, small_edf):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    assert "/ask" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    answer = client.predict(handle_file(str(small_edf)), "when does the night start?", "clinician", api_name="/ask")
    assert answer.startswith("From the recording:") and "22:45:00" in answer
    assert list(server.root.iterdir()) == []  # the API's throw-away session is gone


@pytest.mark.parametrize("question, audience, message", [
    ("how long is the recording?", "doctor", "Unknown audience 'doctor': use 'clinician' or 'patient'."),
    ("   ", "patient", "question"),
])
def test_api_ask_refuses_bad_arguments_clearly(small_edf, tmp_path, question, audience, message):
    with pytest.raises(gr.Error, match=re.escape(message)):
        app.api_ask(upload_copy(small_edf, tmp_path / "upload"), question, audience, root=tmp_path / "sessions",
                    llm_factory=overview_model)
    assert list((tmp_path / "sessions").iterdir()) == []


def test_api_ask_rejects_other_files_clearly(server, tmp_path):
    from gradio_client import Client, handle_file

    note = tmp_path / "notes.txt"
    note.write_text("not a recording")
    with pytest.raises(Exception, match=r"Files of type '\.txt' cannot be read here"):
        Client(server.url, verbose=False).predict(handle_file(str(note)), "hi", "clinician", api_name="/ask")


def test_serve_command_starts_the_app_with_its_ask_endpoint(monkeypatch, tmp_path, small_edf):
    """`sleeplm-assistant serve --host --port` serves the app; /ask answers through gradio_client."""
    from gradio_client import Client, handle_file

    import cli

    started = []
    real_launch = app.launch

    def launch_in_background(demo, host, port, block=True):
        started.append((demo, host, port))
        return real_launch(demo, host, port, block=False)

    monkeypatch.setattr(app, "launch", launch_in_background)
    monkeypatch.setenv("SLEEPLM_LLM", "none")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SLEEPLM_CHECKPOINT", raising=False)
    port = free_port()
    assert cli.main(["serve", "--host", "127.0.0.1", "--port", str(port), "--recording", str(small_edf)]) == 0
    demo, host, served_port = started[0]
    try:
        assert (host, served_port) == ("127.0.0.1", port)
        answer = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(small_edf)), "how long is the recording?", "patient", api_name="/ask")
        assert "tool-only mode" in answer and "22:45:00" in answer
    finally:
        demo.close()


def test_two_concurrent_sessions_get_their_own_answers(small_edf, late_edf, tmp_path):
    """Two users at once: both answers are written at the same time (the queue runs them side by
    side: each waits for the other at a barrier) and each is about its own night."""
    from gradio_client import Client, handle_file

    both_answering = threading.Barrier(2, timeout=60)

    def quote_when_both_answer(messages) -> str:
        both_answering.wait()  # raises BrokenBarrierError if the two turns were queued one after the other
        return quote_first_finding(messages)

    def factory():
        return ScriptedChatModel(messages=iter([call("recording_overview"), quote_when_both_answer]),
                                 seen=[], tools_offered=[])

    demo = app.build_app(llm_factory=factory, session_root=tmp_path)
    _, url, _ = app.launch(demo, port=free_port(), block=False)
    answers = {}

    def ask_about(name: str, path: Path) -> None:
        answers[name] = Client(url, verbose=False).predict(
            handle_file(str(path)), "when does the night start?", "clinician", api_name="/ask")

    threads = [threading.Thread(target=ask_about, args=item) for item in (("early", small_edf), ("late", late_edf))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        demo.close()
    assert not both_answering.broken
    assert answers["early"].startswith("From the recording:") and answers["late"].startswith("From the recording:")
    assert "22:45:00" in answers["early"] and "01:10:00" not in answers["early"]
    assert "01:10:00" in answers["late"] and "22:45:00" not in answers["late"]


def clock_seconds(clock: str, start_clock: str) -> float:
    """Seconds from the recording start of a clock time (the night may cross midnight)."""
    to_s = lambda text: sum(int(part) * unit for part, unit in zip(text.split(":"), (3600, 60, 1)))  # noqa: E731
    return (to_s(clock) - to_s(start_clock)) % 86400


def test_respiration_answer_overlaps_the_simulators_events(tmp_path_factory):
    from gradio_client import Client, handle_file

    from sleeplm import synthetic

    folder = tmp_path_factory.mktemp("simulated")
    night = synthetic.simulate_night(duration_h=0.5, seed=3, severity="severe", sfreq=128, artefacts=False)
    path = synthetic.write_night(night, folder / "night.edf")
    truth = synthetic.load_truth(path)

    def factory():
        return ScriptedChatModel(messages=iter([call("list_events", kind="respiratory"), quote_events]),
                                 seen=[], tools_offered=[])

    demo = app.build_app(llm_factory=factory, session_root=folder / "sessions")
    _, url, _ = app.launch(demo, port=free_port(), block=False)
    try:
        answer = Client(url, verbose=False).predict(
            handle_file(str(path)), "which respiratory events did I have?", "clinician", api_name="/ask")
    finally:
        demo.close()
    spans = re.findall(r"(\d\d:\d\d:\d\d)-(\d\d:\d\d:\d\d) \(elapsed \dh\d\dm\d\ds-\dh\d\dm\d\ds, epochs? \d+", answer)
    assert len(spans) == 4, answer  # three events and the longest, each with clock, elapsed time and epochs
    true_events = truth.events[truth.events["kind"].isin(["apnea", "hypopnea"])]
    for clock_start, clock_end in spans:
        lo, hi = clock_seconds(clock_start, truth.start_clock), clock_seconds(clock_end, truth.start_clock)
        overlaps = (true_events["start_s"] < hi) & (true_events["end_s"] > lo)
        assert overlaps.any(), f"{clock_start}-{clock_end} overlaps no simulated apnea/hypopnea"


@pytest.mark.parametrize("spec, shown", [
    ("none", "**Language model:** none — No language model configured"),
    ("openai:any@http://127.0.0.1:9/v1", "**Language model:** unavailable (openai: No OpenAI-compatible server answers at "
                                         "http://127.0.0.1:9/v1"),
])
def test_configured_llm_status_is_shown(monkeypatch, tmp_path, spec, shown):
    monkeypatch.setenv("SLEEPLM_LLM", spec)
    bs = app.open_session(tmp_path, "tab", app.ConfiguredChatModel())
    try:
        text = app._llm_markdown(bs)
        assert text.startswith(shown)
        assert bs.night.llm is None  # tool-only either way
    finally:
        bs.close()


def test_missing_sleeplm_weights_are_explained_on_the_page(monkeypatch, tmp_path, small_edf):
    """`serve` without weights: the page says why and how to fix it, not just "no weights"."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.delenv("SLEEPLM_CHECKPOINT", raising=False)
    model, why_not = app._load_sleeplm()
    assert model is None and "SLEEPLM_CHECKPOINT=PATH" in why_not and why_not.endswith("Answers use measurements only.")
    outputs = list(app.load_night(upload_copy(small_edf, tmp_path / "upload"), None, SimpleNamespace(session_hash="t"),
                                  no_progress, root=tmp_path / "sessions", llm_factory=overview_model,
                                  sleeplm_note=why_not))
    bs, _, llm_text, *_ = shown(outputs)
    assert f"**SleepLM:** not available — {why_not}" in llm_text and "**Language model:** " in llm_text
    bs.close()


def test_server_refuses_uploads_over_the_size_limit(monkeypatch, tmp_path, small_edf):
    from gradio_client import Client, handle_file

    monkeypatch.setattr(app, "MAX_UPLOAD_BYTES", 1000)
    demo = app.build_app(llm_factory=overview_model, session_root=tmp_path)
    _, url, _ = app.launch(demo, port=free_port(), block=False)
    try:
        assert demo.max_file_size == 1000
        with pytest.raises(ValueError, match="exceeds the maximum file size of 1000 bytes"):
            Client(url, verbose=False).predict(handle_file(str(small_edf)), "q", "clinician", api_name="/ask")
    finally:
        demo.close()
    assert list(tmp_path.iterdir()) == []


def test_clearing_the_chat_starts_a_new_conversation(small_edf, tmp_path):
    from langchain_core.messages import HumanMessage

    def factory():
        replies = [call("recording_overview"), quote_first_finding] * 2
        return ScriptedChatModel(messages=iter(replies), seen=[], tools_offered=[])

    bs = load(upload_copy(small_edf, tmp_path / "upload"), tmp_path / "sessions", factory=factory)[0]
    list(app.ask("when does the night start?", "clinician", [], bs))
    app.new_conversation(bs)
    assert bs.turns == [] and bs.night.night is not None
    list(app.ask("how long is the recording?", "clinician", [], bs))
    asked = [m.content for m in bs.night.llm.seen[-1] if isinstance(m, HumanMessage)]
    assert asked == ["how long is the recording?"]
    bs.close()


@pytest.mark.slow
def test_demo_night_loads_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path / "cache"))
    demo_path = app._demo_path()
    outputs = list(app.load_night(str(demo_path), None, SimpleNamespace(session_hash="demo"), no_progress,
                                  root=tmp_path / "sessions", llm_factory=overview_model, owned=False))
    bs = outputs[-1][0]
    assert demo_path.is_file() and bs.recording_path == demo_path  # read in place, never moved
    assert "starting 23:10:00" in shown(outputs)[1] and bs.night.night.stage_source is not None
    bs.close()
    assert demo_path.is_file()


def test_a_file_with_no_recognised_channel_can_be_mapped_by_hand(tmp_path, unrecognised_edf):
    path = unrecognised_edf
    bs, night_text, _, preflight, file_channels, overview, *_ = load(str(path), tmp_path / "sessions")
    assert night_text.startswith("**Not loaded:**") and "Kanal 1" in night_text
    assert preflight["interactive"] is True and set(preflight["value"]["status"]) == {"missing"}
    assert "`Kanal 1`, `Kanal 2`" in file_channels and overview is None
    with pytest.raises(gr.Error, match="Load a recording first"):
        list(app.ask("how did I sleep?", "clinician", [], bs))
    table = preflight["value"].copy()
    table.loc[table["channel"] == "EEG_C3_A2", "source"] = "Kanal 1"
    outputs = shown(list(app.reload_with_channel_map(table, bs, no_progress)))
    assert "10 epochs of 30 s" in outputs[1] and "starting 23:00:00" in outputs[1]
    assert bs.night.night.rec.has("EEG_C3_A2") and not bs.night.night.rec.has("ECG")
    bs.close()


def test_a_broken_tool_shows_internal_error_with_a_reference(loaded, monkeypatch):
    import tools.overview

    monkeypatch.setattr(tools.overview, "format_elapsed", lambda seconds: 1 / 0)  # a bug inside the tool
    *_, (history, _, _) = app.ask("when does the night start?", "clinician", [], loaded)
    assert re.match(r"Internal error \(reference [0-9a-f]{8}\)", history[-1]["content"])
    assert loaded.turns[-1]["mode"] == "error"


def test_the_scoring_file_is_uploaded_beside_the_recording(loaded, tmp_path):
    def nsrr(n_epochs: int) -> str:
        path = tmp_path / "upload" / "Doe_John-nsrr.xml"
        path.write_text("<PSGAnnotation><ScoredEvents><ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>"
                        f"Stage 2 sleep|2</EventConcept><Start>0</Start><Duration>{n_epochs * 30}</Duration></ScoredEvent>"
                        "</ScoredEvents></PSGAnnotation>")
        return str(path)

    outputs = shown(list(app.load_scoring([nsrr(40)], loaded, no_progress)))
    assert "Stages: reference scoring (NSRR XML file given with the recording)" in outputs[1]
    assert loaded.annotations.parent == loaded.workdir and not any("Doe" in p.name for p in loaded.workdir.rglob("*"))
    with pytest.raises(gr.Error) as refused:  # the scoring of a longer night
        list(app.load_scoring([nsrr(80)], loaded, no_progress))
    assert refused.value.title == "This scoring file cannot be used" and "stages up to" in refused.value.message
    assert list(loaded.night.night.rec.reference.stages) == ["N2"] * 40  # the night keeps the scoring it had
    with pytest.raises(gr.Error, match="Upload the recording first"):
        list(app.load_scoring([nsrr(40)], None, no_progress))


def test_the_scoring_control_switches_whose_scoring_answers(loaded):
    night = loaded.night.night  # small.edf came with one technician-scored apnea
    assert night.scoring == "technician"
    assert app.choose_scoring("automatic", loaded) == "Answers and figures use the automatic scoring (this product's own staging and events)."
    assert night.scoring == "automatic" and night.analysis.agreement is not None
    assert "technician" in app.choose_scoring("technician", loaded) and night.scoring == "technician"
    assert app.choose_scoring("expert", loaded).startswith("Scoring not changed: unknown scoring")
    assert app.choose_scoring("automatic", None) == "Load a recording first."
    # The downloads follow the switch at once: the events CSV holds the scoring now in use.
    def scored_by_technician() -> bool:
        events = pd.read_csv(next(p for p in app.refresh_downloads(loaded) if p.endswith("night-events.csv")))
        return events["evidence"].fillna("").str.contains('"scored_by": "technician"').any()

    assert scored_by_technician()
    app.choose_scoring("automatic", loaded)
    assert not scored_by_technician()
