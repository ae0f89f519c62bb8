"""The page's state across loads and concurrent events: what one tab shows always belongs to the night it
has loaded, and the user's latest action wins.

`Page` runs the app's own handlers (`build_app`'s event functions, found in ``demo.fns``) and applies each
output to the component it is wired to, as the browser does; background work and concurrent handlers
are held at a point with events, never timed with sleeps.
"""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

import app
from test_app import late_edf, upload_copy  # noqa: F401 (a fixture)


class Page:
    """One browser tab: the value every component shows, updated by the outputs of the handlers it runs."""

    def __init__(self, demo: gr.Blocks, key: str = "tab"):
        self.fns: dict[str, object] = {}
        for fn in demo.fns.values():
            self.fns.setdefault(fn.fn.__name__, fn)
        self.values: dict[str, object] = {}
        self.request = SimpleNamespace(session_hash=key)

    @staticmethod
    def _name(block) -> str:
        return getattr(block, "elem_id", None) or type(block).__name__.lower()

    def call(self, name: str, *inputs) -> list[tuple]:
        """Run handler `name`; its outputs, not yet shown."""
        result = self.fns[name].fn(*inputs)
        return list(result) if inspect.isgenerator(result) else [result]

    def show(self, name: str, outputs: list) -> None:
        """Apply outputs of handler `name` to the page, in order (`gr.update()` leaves a component as it is)."""
        blocks = self.fns[name].outputs
        for values in outputs:
            values = values if isinstance(values, tuple) else (values,)
            assert len(values) == len(blocks), f"{name} gave {len(values)} outputs for {len(blocks)} components"
            for block, value in zip(blocks, values):
                if isinstance(value, dict) and value.get("__type__") == "update":
                    if "value" not in value:
                        continue
                    value = value["value"]
                self.values[self._name(block)] = value

    def run(self, name: str, *inputs) -> list:
        outputs = self.call(name, *inputs)
        self.show(name, outputs)
        return outputs

    def __getitem__(self, component: str):
        return self.values.get(component)


# ---- 1. the raw-signal viewer never describes a night that is no longer loaded -----------------------
@pytest.mark.parametrize("how", ["upload", "demo"])
def test_loading_another_night_clears_the_viewer(small_edf, late_edf, tmp_path, monkeypatch, how):  # noqa: F811
    monkeypatch.setattr(app, "_demo_path", lambda: late_edf)  # the demo button's night: the late one
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions")
    page = Page(demo)
    try:
        page.run("on_upload", upload_copy(small_edf, tmp_path / "a"), None, page.request, None)
        bs = page["state"]
        page.run("show_epochs", "22:50", 2, bs)
        assert "22:50:00" in page["viewer-caption"] and page["viewer"] is not None
        page.run("explain_at", "epoch 10", bs)
        assert page["event-text"]
        page.values["viewer-where"] = "epoch 10"  # what a click on the overview (or the user) wrote there
        if how == "upload":
            page.run("on_upload", upload_copy(late_edf, tmp_path / "b"), bs, page.request, None)
        else:
            page.run("on_demo", bs, page.request, None)
        assert "starting 01:10:00" in page["night-status"]
        # Nothing of the first night's viewer or explained event is left beside the second night.
        assert page["viewer"] is None and not page["viewer-caption"] and not page["viewer-where"]
        assert page["event-plot"] is None and page["event-criteria"] is None and not page["event-text"]
        assert page["scoring"] == "technician" and not page["scoring-status"]
        page.run("show_epochs", "01:12", 2, page["state"])  # the viewer works on the new night
        assert "01:12:00" in page["viewer-caption"]
    finally:
        demo.close_sessions()


def test_a_failed_load_leaves_the_viewer_of_the_night_still_loaded(small_edf, tmp_path):
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions")
    page = Page(demo)
    try:
        page.run("on_upload", upload_copy(small_edf, tmp_path / "a"), None, page.request, None)
        page.run("show_epochs", "22:50", 2, page["state"])
        broken = tmp_path / "b" / "broken.edf"
        broken.parent.mkdir()
        broken.write_bytes(b"not an edf at all" * 20)
        with pytest.raises(gr.Error, match="still the one the chat answers about"):
            page.run("on_upload", str(broken), page["state"], page.request, None)
        assert "22:50:00" in page["viewer-caption"] and "starting 22:45:00" in page["night-status"]
    finally:
        demo.close_sessions()


# ---- 2. the page's opening load never replaces what the user uploaded ---------------------------------
@pytest.fixture
def held_opening(monkeypatch):
    """Hold the load of `held_opening.path` (the opening's night) until `release` is set."""
    held = SimpleNamespace(path=None, reading=threading.Event(), release=threading.Event(), loaded=[])
    gated = app._gated_load

    def gated_load(night, path, **kwargs):
        held.loaded.append(Path(path))
        if held.path is not None and Path(path) == Path(held.path):
            held.reading.set()
            assert held.release.wait(60)
        return gated(night, path, **kwargs)

    monkeypatch.setattr(app, "_gated_load", gated_load)
    yield held
    held.release.set()


def upload_during_opening(page: Page, held, upload: str) -> tuple[list, list]:
    """The tab opens (its opening load held); the user uploads `upload` meanwhile (the page has no state
    yet); then the opening ends. Returns (opening's outputs, upload's outputs); the opening's reach the
    page last. A refused upload's error is kept as its outputs."""
    opening: list = []
    thread = threading.Thread(target=lambda: opening.extend(page.call("on_open", None, page.request, None)))
    thread.start()
    try:
        assert held.reading.wait(60)
        try:
            uploaded = page.run("on_upload", upload, None, page.request, None)
        except gr.Error as exc:
            uploaded = [exc]
    finally:
        held.release.set()
        thread.join(60)
    assert not thread.is_alive()
    page.show("on_open", opening)
    return opening, uploaded


def test_an_upload_during_the_opening_load_wins(small_edf, late_edf, tmp_path, held_opening):  # noqa: F811
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions", preload=small_edf)
    held_opening.path = small_edf
    page = Page(demo)
    try:
        opening, uploaded = upload_during_opening(page, held_opening, upload_copy(late_edf, tmp_path / "u"))
        bs = uploaded[0][0]
        assert "starting 01:10:00" in page["night-status"] and page["state"] is bs
        assert all(outputs[0] is bs for outputs in opening)  # one session per tab, never a second one
        assert bs.night.night.rec.clock_at(0) == "01:10:00" and bs.recording_path == bs.workdir / "recording.edf"
        assert bs.recording_path.is_file()  # the upload is kept
        assert [p.name for p in (tmp_path / "sessions").iterdir()] == ["tab"]
        *_, (history, _, _) = app.ask("how long is the recording?", "clinician", [], bs)
        assert "0h10m00s" in history[-1]["content"]  # the chat answers about the upload
    finally:
        demo.close_sessions()


def test_an_unrecognised_upload_during_the_opening_load_stays_on_the_page(small_edf, unrecognised_edf, tmp_path, held_opening):
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions", preload=small_edf)
    held_opening.path = small_edf
    page = Page(demo)
    try:
        upload_during_opening(page, held_opening, upload_copy(unrecognised_edf, tmp_path / "u"))
        assert page["night-status"].startswith("**Not loaded:**") and page["state"].night.night is None
        assert page["preflight"]["status"].eq("missing").all()
    finally:
        demo.close_sessions()


def test_a_refused_upload_during_the_opening_load_leaves_the_opening_night(small_edf, tmp_path, held_opening):
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions", preload=small_edf)
    held_opening.path = small_edf
    page = Page(demo)
    broken = tmp_path / "u" / "broken.edf"
    broken.parent.mkdir()
    broken.write_bytes(b"not an edf at all" * 20)
    try:
        _, uploaded = upload_during_opening(page, held_opening, str(broken))
        assert isinstance(uploaded[0], gr.Error)
        assert "starting 22:45:00" in page["night-status"]  # nothing usable was uploaded: the opening's night
    finally:
        demo.close_sessions()


@pytest.mark.parametrize("preload", [True, False])
def test_an_opening_that_runs_after_an_upload_leaves_it(small_edf, late_edf, tmp_path, held_opening, preload):  # noqa: F811
    """Under load the opening event may start only after the user's upload has finished: it loads nothing
    and leaves the upload's status (with or without a night to preload)."""
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions",
                         preload=small_edf if preload else None)
    page = Page(demo)
    try:
        bs = page.run("on_upload", upload_copy(late_edf, tmp_path / "u"), None, page.request, None)[0][0]
        page.run("on_open", None, page.request, None)
        assert "starting 01:10:00" in page["night-status"] and page["state"] is bs
        assert held_opening.loaded == [bs.recording_path]  # the opening read nothing
        assert bs.night.night.rec.clock_at(0) == "01:10:00"
    finally:
        demo.close_sessions()


def test_each_tab_opens_its_own_session(small_edf, late_edf, tmp_path, held_opening):  # noqa: F811
    """An upload in one tab during another tab's opening: each tab keeps its own night."""
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions", preload=small_edf)
    held_opening.path = small_edf
    first, second = Page(demo, "first"), Page(demo, "second")
    try:
        opening: list = []
        thread = threading.Thread(target=lambda: opening.extend(first.call("on_open", None, first.request, None)))
        thread.start()
        assert held_opening.reading.wait(60)
        second.run("on_upload", upload_copy(late_edf, tmp_path / "u"), None, second.request, None)
        held_opening.release.set()
        thread.join(60)
        first.show("on_open", opening)
        assert "starting 22:45:00" in first["night-status"] and "starting 01:10:00" in second["night-status"]
        assert first["state"] is not second["state"] and first["state"].workdir != second["state"].workdir
    finally:
        demo.close_sessions()


def test_an_answer_about_the_previous_night_does_not_reach_the_new_one(small_edf, late_edf, tmp_path):  # noqa: F811
    """A question asked about the first night is still being answered when the second night loads: the
    answer is dropped (the new night starts a new conversation), and the viewer does not follow its
    citations onto the new night."""
    from conftest import ScriptedChatModel, call

    def factory():
        return ScriptedChatModel(messages=iter([call("plot", kind="raw", start="epoch 12", end="epoch 13"),
                                                "Here are epochs 12-13."]), seen=[], tools_offered=[])

    demo = app.build_app(llm_factory=factory, session_root=tmp_path / "sessions")
    page = Page(demo)
    try:
        page.run("on_upload", upload_copy(small_edf, tmp_path / "a"), None, page.request, None)
        bs = page["state"]
        answering = app.ask("show me the raw signals at epoch 12", "clinician", [], bs)
        page.show("ask", [next(answering), next(answering)])  # the question, then the tool's step
        page.run("on_upload", upload_copy(late_edf, tmp_path / "b"), bs, page.request, None)
        page.show("ask", list(answering))  # the rest of the answer arrives after the new night is shown
        page.run("follow_citation", bs)
        assert bs.turns == [] and page["chat"] == [] and "starting 01:10:00" in page["night-status"]
        assert page["viewer"] is None and not page["viewer-caption"]
    finally:
        demo.close_sessions()


@pytest.mark.parametrize("action", ["scoring file", "channel map"])
def test_a_scoring_file_or_channel_map_given_while_a_recording_loads_is_refused(
        small_edf, late_edf, tmp_path, held_opening, action):  # noqa: F811
    """They would re-load the night shown, not the one loading, and replace the user's newer upload."""
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions")
    page = Page(demo)
    try:
        bs = page.run("on_upload", upload_copy(small_edf, tmp_path / "a"), None, page.request, None)[0][0]
        held_opening.path = bs.recording_path  # where the next upload is read from
        uploading: list = []
        thread = threading.Thread(target=lambda: uploading.extend(
            page.call("on_upload", upload_copy(late_edf, tmp_path / "b"), bs, page.request, None)))
        thread.start()
        try:
            assert held_opening.reading.wait(60)
            if action == "scoring file":
                scoring = tmp_path / "s" / "night-nsrr.xml"
                scoring.parent.mkdir()
                scoring.write_text("<PSGAnnotation><ScoredEvents></ScoredEvents></PSGAnnotation>")
                with pytest.raises(gr.Error, match="still loading"):
                    page.run("on_scoring", [str(scoring)], bs, None)
                assert not scoring.exists()  # a refused upload is not kept
            else:
                table = page["preflight"].copy()
                table.loc[table["channel"] == "AF", "source"] = "EEG C4-A1"
                with pytest.raises(gr.Error, match="still loading"):
                    page.run("on_remap", table, bs, None)
        finally:
            held_opening.release.set()
            thread.join(60)
        page.show("on_upload", uploading)
        assert "starting 01:10:00" in page["night-status"] and bs.night.night.rec.clock_at(0) == "01:10:00"
    finally:
        demo.close_sessions()


def test_a_rule_picked_while_a_night_is_read_holds(small_edf, late_edf, tmp_path, monkeypatch):  # noqa: F811
    """The rule picker is changed while the next night is being measured under the rule picked before: the
    night is shown scored under the rule the user picked last (re-scored from its measurements)."""
    from assistant.session import NightSession

    measuring, release = threading.Event(), threading.Event()
    analyze = NightSession._analyze

    def held_analyze(self, rec, progress, scoring="technician", rule=None):
        if rec.clock_at(0) == "01:10:00":  # the second night, its rule already chosen
            measuring.set()
            assert release.wait(60)
        return analyze(self, rec, progress, scoring, rule)

    monkeypatch.setattr(NightSession, "_analyze", held_analyze)
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions")
    page = Page(demo)
    try:
        bs = page.run("on_upload", upload_copy(small_edf, tmp_path / "a"), None, page.request, None)[0][0]
        assert bs.night.night.analysis.hypopnea_rule != "1B"
        uploading: list = []
        thread = threading.Thread(target=lambda: uploading.extend(
            page.call("on_upload", upload_copy(late_edf, tmp_path / "b"), bs, page.request, None)))
        thread.start()
        try:
            assert measuring.wait(60)
            page.run("on_rule", "1B", bs)
        finally:
            release.set()
            thread.join(60)
        page.show("on_upload", uploading)
        assert "starting 01:10:00" in page["night-status"]
        assert bs.night.rule == "1B" and bs.night.night.analysis.hypopnea_rule == "1B"
        assert "1B" in page["night-status"]
    finally:
        demo.close_sessions()



def test_the_opening_night_is_scored_under_the_servers_rule(small_edf, tmp_path):
    """`serve --rule`: the opening's night (here a served `--recording`) is scored under it, as uploads are."""
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions", preload=small_edf, rule="shhs")
    page = Page(demo)
    try:
        page.run("on_open", None, page.request, None)
        assert page["state"].night.rule == "shhs" and page["state"].night.night.analysis.hypopnea_rule == "shhs"
        assert "starting 22:45:00" in page["night-status"]
    finally:
        demo.close_sessions()
