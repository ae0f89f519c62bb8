"""SleepLM works in the background: loading and answers never wait for it; its results arrive later."""

from __future__ import annotations

import shutil
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import app
from assistant.session import NightSession
from sleeplm.model.inference import SleepLM
from tools import parse_result, run_tool


class GatedModel:
    """A tiny SleepLM whose embeddings wait for `release`, and whose stage captions name stage N2."""

    def __init__(self):
        self.inner = SleepLM.from_config("sleeplm_tiny")
        self.checkpoint_id = self.inner.checkpoint_id
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_signals(self, epochs, progress=None, **kwargs):
        if progress:
            progress(0.5, "half")
        assert self.release.wait(60)
        return self.inner.encode_signals(epochs, progress=progress, **kwargs)

    def caption(self, epochs, domain, progress=None, **kwargs):
        assert domain == "stage_event"
        if progress:
            progress(1.0, "done")
        return ["sleep stage N2 with spindles"] * len(epochs)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path / "cache"))


def test_loading_and_the_first_answer_do_not_wait_for_sleeplm(small_edf, cache):
    model = GatedModel()
    session = NightSession(llm="none", model=model)
    session.load(small_edf)  # returns while the embeddings are blocked
    night = session.night
    assert night.stage_source == "yasa" and night.sleeplm_jobs == {"embeddings": 0.5, "stage captions": 0.0} or \
        night.sleeplm_jobs == {"embeddings": 0.0, "stage captions": 0.0}
    turn = session.ask("how long is the recording?")
    assert "tool-only mode" in turn.answer and night.embeddings is None
    overview = parse_result(run_tool("recording_overview", {}, night).content)
    assert "working in the background" in overview["sleeplm"] and "stage captions 0%" in overview["sleeplm"]
    assert set(overview["sleeplm_jobs"]) == {"embeddings", "stage captions"}

    model.release.set()
    assert session.wait_for_background(60)
    assert night.embeddings.shape == (night.rec.n_epochs, 512) and night.sleeplm_jobs == {"embeddings": 1.0,
                                                                                          "stage captions": 1.0}
    # SleepLM's stages replaced YASA's, compared with them; events and summary were measured again.
    assert night.stage_source == "sleeplm" and set(night.hypnogram) == {"N2"} and night.version == 1
    assert night.analysis.staging.agreement["with"] == "yasa" and night.captions["stage_event"][0].startswith("sleep")
    assert night.analysis.summary["tst_min"] == pytest.approx(night.rec.n_epochs * 0.5)
    done = parse_result(run_tool("recording_overview", {}, night).content)
    assert "stages now from SleepLM" in done["sleeplm"] and done["stage_source"] == "sleeplm"
    # The conversation goes on: the earlier question is still in the agent's memory thread.
    assert session.ask("and how long did I sleep?").answer


def by_technician(night) -> int:
    """How many of the events in use are the technician's."""
    return sum(isinstance(e, dict) and e.get("scored_by") == "technician" for e in night.analysis.events["evidence"])


def test_sleeplm_restaging_keeps_the_chosen_scoring(small_edf, cache):
    """A night whose file has the technician's events only (an apnea) is re-staged by SleepLM in the
    background; the user chose the automatic scoring before that: the answers keep using it."""
    model = GatedModel()
    session = NightSession(llm="none", model=model)
    session.load(small_edf, stage_cross_check=False)
    night = session.night
    assert night.scoring == "technician" and night.stage_source == "yasa"
    session.set_scoring("automatic")
    assert night.scoring == "automatic" and by_technician(night) == 0
    chosen = night.version
    model.release.set()
    assert session.wait_for_background(60)
    assert night.stage_source == "sleeplm" and night.version > chosen  # re-staged after the choice
    assert night.scoring == "automatic" and night.analysis.summary["scoring"] == "automatic" and by_technician(night) == 0
    assert night.analysis.agreement is not None  # compared again in the new stages
    session.set_scoring("technician")  # the technician's apnea, in SleepLM's stages
    assert night.scoring == "technician" and night.stage_source == "sleeplm"
    assert by_technician(night) == 1
    session.close()


def test_captions_naming_no_stage_keep_the_automatic_stages(small_edf, cache):
    session = NightSession(llm="none", model=SleepLM.from_config("sleeplm_tiny"))  # random weights: no stage words
    session.load(small_edf)
    assert session.wait_for_background(120)
    night = session.night
    assert night.stage_source == "yasa" and night.sleeplm_jobs["stage captions"] == 1.0
    assert "named a stage for only" in night.analysis.staging.unavailable["sleeplm"]
    assert night.embeddings is not None and night.embeddings.dtype == np.float16


def test_a_file_with_its_own_scoring_is_only_embedded(sim_night_file, cache):
    session = NightSession(llm="none", model=SleepLM.from_config("sleeplm_tiny"))
    session.load(sim_night_file[0], stage_cross_check=False)
    assert session.night.sleeplm_jobs.keys() == {"embeddings"}
    assert session.wait_for_background(120) and session.night.stage_source == "reference scoring"


def test_a_closed_session_stops_its_background_work(small_edf, cache):
    model = GatedModel()
    session = NightSession(llm="none", model=model)
    session.load(small_edf)
    night, (job,) = session.night, session._background
    threading.Timer(0.5, model.release.set).start()  # the embedding batch under way ends; close() waits for it
    session.close()
    assert not job.is_alive()  # joined: no thread is left inside the model
    assert night.embeddings is None  # stopped after the batch under way
    assert night.sleeplm_jobs["stage captions"] == 0.0 and night.version == 0  # staging never started


def test_the_page_shows_progress_and_redraws_the_overview_without_touching_the_chat(small_edf, tmp_path, cache):
    from conftest import ScriptedChatModel, call

    model = GatedModel()

    def factory():
        return ScriptedChatModel(messages=iter([call("recording_overview"), "The recording lasts 0.33 h."]),
                                 seen=[], tools_offered=[])

    upload = tmp_path / "upload" / "night.edf"
    upload.parent.mkdir()
    shutil.copy(small_edf, upload)
    outputs = list(app.load_night(str(upload), None, SimpleNamespace(session_hash="bg"), None,
                                  root=tmp_path / "sessions", llm_factory=factory, sleeplm_model=model))
    bs = outputs[-1][0]
    assert "Stages: yasa" in outputs[0][1]
    history = [m for chunk in app.ask("how long is the recording?", "clinician", [], bs) for m in chunk[0]][-1:]
    assert history and len(bs.turns) == 1
    pending = app.refresh_status(bs)
    assert '<progress max="1"' in pending[3] and "SleepLM embeddings" in pending[3]
    assert "in the background" in pending[1] and pending[2] == app.gr.update()  # nothing to redraw yet
    model.release.set()
    assert bs.night.wait_for_background(60)
    night_text, status, overview, bars = app.refresh_status(bs)
    assert "Stages: sleeplm (agree with yasa" in night_text and overview.endswith(".png") and bars == ""
    assert len(bs.turns) == 1  # the conversation is untouched
    assert app.refresh_status(bs)[2] == app.gr.update()  # drawn once per change
    bs.close()


def test_weights_arriving_after_the_page_opened_start_the_loaded_nights_jobs(small_edf, tmp_path, cache):
    release = threading.Event()
    tiny = SleepLM.from_config("sleeplm_tiny")

    def slow_loader(progress):
        progress(0.25, "downloading model_checkpoint.pt: 1 of 4 MB")
        assert release.wait(60)
        return tiny, None

    weights = app.SleepLMWeights(loader=slow_loader).start()
    upload = tmp_path / "upload" / "night.edf"
    upload.parent.mkdir()
    shutil.copy(small_edf, upload)
    outputs = list(app.load_night(str(upload), None, SimpleNamespace(session_hash="w"), None,
                                  root=tmp_path / "sessions", llm_factory=lambda: "none", sleeplm_model=weights))
    bs = outputs[-1][0]
    assert "downloading model_checkpoint.pt: 1 of 4 MB (25%)" in outputs[0][2]
    assert "SleepLM weights" in app.refresh_status(bs)[3]
    release.set()
    assert weights.wait(30)
    app.refresh_status(bs)  # the timer hands the model over
    assert bs.night.sleeplm is tiny and bs.night.night.model is tiny
    assert bs.night.wait_for_background(120) and bs.night.night.embeddings is not None
    bs.close()


def test_background_work_waits_while_another_upload_loads(small_edf, cache):
    from assistant.sleeplm_jobs import loading, loads_in_progress

    model = GatedModel()
    model.release.set()  # embeddings run as soon as they are allowed to
    calls = []
    encode = model.encode_signals
    model.encode_signals = lambda *a, **k: calls.append(1) or encode(*a, **k)
    session = NightSession(llm="none", model=model)
    with loading():  # another session's upload is still loading
        session.load(small_edf)
        assert loads_in_progress() == 1
        assert not session.wait_for_background(1.0)  # SleepLM waits: nothing started
        assert calls == [] and session.night.sleeplm_jobs["embeddings"] == 0.0
    assert loads_in_progress() == 0
    assert session.wait_for_background(60)
    assert calls == [1] and session.night.sleeplm_jobs == {"embeddings": 1.0, "stage captions": 1.0}


class ContendedLock:
    """A night's `analysis_lock` that says when a second thread had to wait for it (`contended`)."""

    def __init__(self, contended: threading.Event):
        self.lock, self.contended = threading.RLock(), contended

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            self.contended.set()
            self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


@pytest.mark.parametrize("first, then", [("automatic", "technician"), ("technician", "automatic")])
def test_a_scoring_switch_during_sleeplm_restaging_holds(small_edf, cache, monkeypatch, first, then):
    """The user switches whose scoring the answers use while SleepLM's re-staging is being applied (the
    night's `analysis_lock` held): the re-staged analysis must not put the earlier choice back. The switch
    either waits for the re-staging (then applies to the re-staged night) or comes after it."""
    import sleeplm.measure.analysis as analysis_module

    model = GatedModel()
    session = NightSession(llm="none", model=model)
    session.load(small_edf, stage_cross_check=False)  # the technician scored an apnea, no stages: SleepLM re-stages
    night = session.night
    night.compare_scorings()  # both scorings computed: a switch needs no comparison (and so took no lock)
    session.set_scoring(first)
    restaging, release, moved_on = threading.Event(), threading.Event(), threading.Event()
    night.analysis_lock = ContendedLock(moved_on)
    restage = analysis_module.restage

    def held_restage(*args, **kwargs):
        restaging.set()
        assert release.wait(60)
        return restage(*args, **kwargs)

    monkeypatch.setattr(analysis_module, "restage", held_restage)
    model.release.set()
    assert restaging.wait(60)  # the re-staging holds the lock, working from the analysis with `first` in use

    def switch():
        session.set_scoring(then)
        moved_on.set()

    switcher = threading.Thread(target=switch)
    switcher.start()
    assert moved_on.wait(60)  # the switch finished, or waits for the lock: either way it was made during re-staging
    release.set()
    switcher.join(60)
    assert session.wait_for_background(60) and not switcher.is_alive()
    assert night.stage_source == "sleeplm"  # re-staged
    assert night.scoring == then and night.analysis.summary["scoring"] == then  # the user's latest choice holds
    assert by_technician(night) == (1 if then == "technician" else 0)
    session.close()
