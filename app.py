"""SleepLM Assistant web app: upload a night, chat with it, see the evidence (Gradio 6 Blocks).

Run ``sleeplm-assistant serve`` (or ``python app.py``) and open http://127.0.0.1:7860.

Layout: the recording panel (upload or demo night, then optionally its scoring file: NSRR or
Profusion XML, UCDDB text, Noxturnal CSV, EDF+ hypnogram; progress, preflight channel table), the
chat (each tool call a collapsible step with its arguments, result and duration; the answer
streams in after it; figures the agent draws appear in the chat), and beside it the night
overview (stages, events, SpO2: click it to see the raw signals there), the raw-epoch viewer in
physical units (a span longer than 10 epochs in pages: Previous / Next), and the downloads (PDF
report, events CSV, EDF+ annotations, tool trace JSON).

Sessions: every browser tab gets its own `BrowserSession` (a `NightSession` with its own agent
memory, a private folder under the app's session root holding the uploaded file, and a folder
of the files the page shows: figures and exports, written straight into Gradio's cache so that
Gradio serves them in place and keeps no copy). It is closed, and both folders deleted, when
the tab closes (``demo.unload``) or after `SESSION_TTL_S` without activity (``gr.State``
time-to-live). The ``/ask`` API endpoint (`gr.api`: no page components; recording, question,
audience, optional scoring rule -> answer) runs each call in a throw-away session.

Cohorts: ``sleeplm-assistant serve --cohort DIR`` serves a cohort folder (written by
``sleeplm-assistant cohort``) instead of one night, and ``serve --nights A.edf B.edf`` measures two
nights of one person first (on local Ray) and serves them as a two-night cohort. Each tab then
talks to an `assistant.cohort.CohortSession`: the cohort tools answer ("which nights have AHI
over 30?", "did AHI improve between night 1 and night 2?") citing salted night ids and values,
their comparison figures appear in the chat, and the overview shows the cohort's distributions.
Nothing identifying reaches the language model: the cohort tables hold no file names or header
fields. The ``/ask_cohort`` API endpoint (question, audience -> answer) answers in a throw-away
session over the served cohort.

Handlers are plain functions and generators (`load_night`, `ask`, `show_epochs`, ...) so they
can be tested without a browser; `build_app` wires them to components.
"""

from __future__ import annotations

import os

# Before gradio is imported: it reads this at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import atexit
import functools
import json
import logging
import shutil
import signal
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
import pandas as pd

from assistant.agent import MAX_ANSWER_CHARS
from assistant.cohort import CohortSession, is_cohort_folder
from assistant.markup import inert_markdown
from assistant.memory import bound_heap, release_memory
from assistant.errors import SessionError
from assistant.session import NightSession
from assistant.sleeplm_jobs import jobs_pending, start_background
from tools.timeparse import parse_span
from sleeplm.terms import AUDIENCES, parse_citations
from sleeplm.errors import ChannelMappingError, CohortInputError, NotARecordingError, RecordingError, SleepLMError
from assistant.trace import trace_metadata, write_trace_json
from sleeplm.cohort.report import REPORT, distribution_figure
from sleeplm.measure.events import stacked
from sleeplm.measure.rules import DEFAULT_RULE, RULES, resolve_rule
from sleeplm.measure.summary import TECHNICIAN_SCORED
from sleeplm.report.export import ExportError, write_annotations_edf, write_events_csv, write_report_pdf
from sleeplm.measure.agreement import SCORING_NAMES, SCORINGS
from sleeplm.report.plots import MAX_VIEW_EPOCHS, click_map, plot_epochs, plot_event_criteria, plot_night, reference_events

__all__ = [
    "MAX_UPLOAD_BYTES", "UPLOAD_SUFFIXES", "SESSION_TTL_S", "LOAD_MEMORY_BYTES", "server_root", "MemoryGate", "LOAD_GATE", "BrowserSession",
    "ConfiguredChatModel", "SleepLMWeights", "check_upload", "refresh_status",
    "open_session", "load_night", "load_scoring", "reload_with_channel_map", "ask", "new_conversation", "show_epochs",
    "epochs_at_click", "page_viewer", "follow_citation", "build_downloads", "refresh_downloads", "api_ask", "api_ask_cohort",
    "open_cohort", "end_session", "build_app", "launch", "serve",
]

logger = logging.getLogger(__name__)

UPLOAD_SUFFIXES = (".edf", ".bdf")
MAX_UPLOAD_BYTES = 1024**3  # an 8-h, 30-channel, 256 Hz EDF is ~450 MB
SESSION_TTL_S = 4 * 3600
STATUS_REFRESH_S = 2.0  # how often the page asks for the SleepLM download / background progress
# Loads running at once may together allocate at most this much (each load's peak is estimated
# from its header by `sleeplm.io.reader.estimate_load_bytes`); later loads wait for room.
LOAD_MEMORY_BYTES = int(float(os.environ.get("SLEEPLM_LOAD_MEMORY_MB", 2048)) * 1024**2)
LOAD_WAIT_S = 300.0
OVERVIEW_DPI = 100
EXAMPLE_QUESTIONS = [
    "Give me a summary of my night",
    "When did respiration look abnormal?",
    "How much deep sleep did I get?",
    "Show me the hypnogram with events",
]
COHORT_EXAMPLE_QUESTIONS = [
    "Summarise the cohort",
    "Which nights have AHI over 30?",
    "Which nights have sleep efficiency below 80?",
    "Did AHI improve between night 1 and night 2?",
]

Progress = Callable[..., Any]


@dataclass
class BrowserSession:
    """One browser tab's night: the conversation, its private folder and what was shown.

    Attributes
    ----------
    night : the `NightSession` (recording, analysis, agent memory).
    workdir : private folder (uploaded recording, agent files), deleted by `close`.
    shown : folder of the files the page shows (overview, chat figures, downloads), deleted by `close`.
    turns : every answered question: {"question", "audience", **TurnResult.to_dict()}.
    recording_path : the uploaded recording, moved into `workdir` under a neutral name.
    channel_map, position_map : the maps the recording was loaded with (``serve --channel-map`` /
        ``--position-map``); the channels the user types into the preflight table add to them.
    annotations : the technician's scoring file the recording was loaded with (``serve
        --annotations`` or an upload beside the recording, kept in `workdir`), or None.
    preflight : the preflight table as last shown (to see which channel the user edited).
    overview : where the time axis of the overview as last rendered lies (a `ClickMap`: maps clicks
        to times); the figure itself is not kept.
    llm_note : why the configured language model is not in use, when it is not.
    sleeplm_note : why the app has no SleepLM weights, when it has none.
    weights : the app's `SleepLMWeights` while they are being fetched (None when given loaded or absent).
    shown_version : ``night.version`` of the overview last drawn (a background job may change it).
    view : the raw-signal viewer's range as (first, last, asked first, asked last, "cited"/"asked"): the
        epochs shown and the span they are a page of (None before the viewer first shows something).
    loads_started : how many loads the tab has started (`loading`): each load's ticket is its number.
    loads_pending : the tickets of the loads under way.
    shown_load : the ticket of the load whose night (or unmapped file) the tab shows; a load that
        finishes after one started later was shown is not shown (the user's latest action wins).
    lock : held while a finished load becomes the tab's night (the night, its file and maps, the viewer).
    """

    night: NightSession
    workdir: Path
    shown: Path
    turns: list[dict] = field(default_factory=list)
    recording_path: Path | None = None
    channel_map: dict | None = None
    position_map: str | dict | None = None
    annotations: Path | None = None
    preflight: pd.DataFrame | None = None
    overview: Any = None
    llm_note: str | None = None
    sleeplm_note: str | None = None
    weights: Any = None
    shown_version: int = 0
    view: tuple[int, int, int, int, str] | None = None
    loads_started: int = 0
    loads_pending: set[int] = field(default_factory=set)
    shown_load: int = 0
    lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextmanager
    def loading(self, opening: bool = False) -> Iterator[int | None]:
        """A ticket for a load about to start in this tab, pending for the duration of the block.

        `opening`: the page's opening load (the demo night, or ``serve --recording``), which the user
        may have overtaken: its ticket is None (load nothing) when the tab shows a night or an
        unmapped file, or is loading one, already.
        """
        with self.lock:
            if opening and (self.loads_pending or self.night.night is not None or self.recording_path is not None):
                ticket = None
            else:
                self.loads_started += 1
                ticket = self.loads_started
                self.loads_pending.add(ticket)
        try:
            yield ticket
        finally:
            with self.lock:
                self.loads_pending.discard(ticket)

    def overtaken(self, ticket: int) -> bool:
        """True when a load started after load `ticket` is shown already (call with `lock` held)."""
        return ticket < self.shown_load

    def close(self) -> None:
        """Delete the folders and drop everything the night holds: Gradio may keep this object in
        its session state for a while after the tab closed, so it must not keep the night alive."""
        self.night.close()
        self.turns.clear()
        self.preflight = self.overview = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.shown, ignore_errors=True)


class MemoryGate:
    """Admits work while the bytes it reserves fit `capacity`; the rest waits (up to `timeout_s`).

    The server caps concurrent loads by memory, not only by count: two 8-h nights load side by
    side, a third waits until one has finished.
    """

    def __init__(self, capacity: int, timeout_s: float = LOAD_WAIT_S) -> None:
        self.capacity = int(capacity)
        self.timeout_s = timeout_s
        self.in_use = 0
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, n_bytes: int):
        """Hold `n_bytes` (at most the whole capacity) for the duration of the block."""
        n_bytes = min(int(n_bytes), self.capacity)
        with self._room:
            if not self._room.wait_for(lambda: self.in_use + n_bytes <= self.capacity, self.timeout_s):
                raise RecordingError(
                    "The server is busy loading other recordings and has no memory free for this one; try again shortly."
                )
            self.in_use += n_bytes
        try:
            yield
        finally:
            with self._room:
                self.in_use -= n_bytes
                self._room.notify_all()


LOAD_GATE = MemoryGate(LOAD_MEMORY_BYTES)


def _gated_load(night: NightSession, path: Path, **kwargs: Any) -> Any:
    """`NightSession.read_night` once the load's estimated peak memory fits `LOAD_GATE` (bombs fail
    before waiting): the night read, for `NightSession.use_night`."""
    from sleeplm.io.reader import estimate_load_bytes

    with LOAD_GATE.reserve(estimate_load_bytes(path, kwargs.get("channel_map"))):
        return night.read_night(path, **kwargs)


# ---- files: one server-owned root, atomic writes -------------------------------------------
SERVER_ROOT_NAME = "sleeplm-server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def server_root(base: str | Path | None = None) -> Path:
    """A fresh folder for this server run under the server-owned root, after deleting the folders
    of earlier runs whose process has ended (a server killed with SIGKILL leaves its files there).

    The root (`base`, default ``<Gradio's upload folder>/sleeplm-server``) holds one
    ``run-<pid>-<id>`` folder per running server: uploads, figures and exports all live in it, so
    Gradio serves them in place (no copy) and nothing of a run survives the next start.
    """
    base = Path(base) if base is not None else Path(get_upload_folder()) / SERVER_ROOT_NAME
    base.mkdir(parents=True, exist_ok=True)
    for run in base.glob("run-*"):
        parts = run.name.split("-")
        pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
        if pid is None or not _alive(pid):
            logger.info("removing the files of an earlier server run: %s", run.name)
            shutil.rmtree(run, ignore_errors=True)
    run = base / f"run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    run.mkdir()
    return run


def _atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write `path` through a temporary file beside it and a rename: readers (and a crash) never see a partial file."""
    partial = path.with_name(f".partial-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _take_upload(source: Path, target: Path) -> Path:
    """Move an upload into a session folder atomically (a temporary name, then a rename)."""
    partial = target.with_name(f".partial-{target.name}")
    shutil.move(source, partial)
    os.replace(partial, target)
    _remove_upload_folder(source)
    return target


def _remove_upload_folder(path: Path) -> None:
    """Delete Gradio's now-empty per-upload folder of `path` (only when it is inside the upload folder)."""
    folder = Path(path).parent
    upload_root = Path(get_upload_folder())
    if folder != upload_root and upload_root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (another file), or already gone
            pass


def _discard_upload(path: Any) -> None:
    """Delete a refused upload at once (the file Gradio stored), not hours later."""
    if path is None:
        return
    path = Path(path)
    path.unlink(missing_ok=True)
    _remove_upload_folder(path)


class ConfiguredChatModel:
    """Default `llm_factory`: the backend `spec` (None: the configured one), resolved once and shared
    by every session (chat models keep no conversation state). When it cannot be used, sessions
    run tool-only and `note` says why."""

    def __init__(self, spec: str | None = None) -> None:
        self._spec = spec
        self._resolved: tuple[Any, str | None] | None = None

    def __call__(self) -> Any:
        if self._resolved is None:
            from assistant.llm import get_chat_model

            model, status = get_chat_model(self._spec)
            usable = status.available or status.backend == "none"  # "none" is a choice, not a failure
            self._resolved = (model if status.available else "none", None if usable else f"{status.backend}: {status.detail}")
        return self._resolved[0]

    @property
    def note(self) -> str | None:
        return None if self._resolved is None else self._resolved[1]

    def warm_up(self) -> threading.Thread:
        """Resolve the model and let it evaluate the night conversations' common prompt starts
        (`assistant.agent.prompt_prefixes`), in a background thread: at server start-up, before the
        first question (a cohort session starts its own when it opens)."""
        def run() -> None:
            from assistant.agent import prompt_prefixes

            warm = getattr(self(), "warm_prompt_prefixes", None)
            if callable(warm):
                warm(prompt_prefixes())

        thread = threading.Thread(target=run, name="llm-warm-up-start", daemon=True)
        thread.start()
        return thread


class SleepLMWeights:
    """The app's SleepLM weights, fetched (from the hub on first run) and loaded in a background
    thread: the page opens at once and shows the download's progress; sessions get the model
    as soon as it is there (`SleepLMWeights.attach`).

    Attributes
    ----------
    model : the loaded `SleepLM`, once ready (None before, or when it cannot be had).
    note : why there is no model, once that is known.
    fraction, text : progress of the download/load, for the page.
    """

    def __init__(self, loader: Callable[..., tuple[Any, str | None]] | None = None) -> None:
        self.model: Any = None
        self.note: str | None = None
        self.fraction, self.text = 0.0, "looking for SleepLM weights"
        self._loader = loader or _load_sleeplm
        self._thread: threading.Thread | None = None

    def start(self) -> SleepLMWeights:
        """Load in the background (a thread joined at process exit: it may be inside torch)."""
        self._thread = start_background(self._load, name="sleeplm-weights")
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the weights are loaded or known to be unavailable; True when settled."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def pending(self) -> bool:
        return self.model is None and self.note is None

    def _report(self, fraction: float, text: str) -> None:
        self.fraction, self.text = float(fraction), text

    def _load(self) -> None:
        try:
            model, note = self._loader(progress=self._report)
        except Exception as exc:  # a broken file or an internal fault: the app runs on measurements
            logger.exception("loading the SleepLM weights failed")
            model, note = None, f"loading the SleepLM weights failed ({type(exc).__name__}: {exc}). Answers use measurements only."
        if note:
            logger.warning("%s", note)
        self.model, self.note, self.fraction = model, note, 1.0

    def attach(self, bs: BrowserSession) -> None:
        """Give `bs` the model once it is loaded (starting the loaded night's SleepLM jobs), or the reason there is none."""
        if self.model is not None and bs.night.sleeplm is None:
            bs.night.attach_sleeplm(self.model)
            bs.sleeplm_note = None
        elif self.note is not None and bs.night.sleeplm is None:
            bs.sleeplm_note = self.note


def open_session(root: Path, key: str, llm_factory: Callable[[], Any], sleeplm_model: Any = None,
                 sleeplm_note: str | None = None, shown_root: Path | None = None,
                 cohort: str | Path | None = None, rule: str = DEFAULT_RULE) -> BrowserSession:
    """A fresh `BrowserSession` whose private folder is ``root/key``.

    `sleeplm_model` is a loaded `SleepLM`, the app's `SleepLMWeights` (still loading, perhaps)
    or None; `sleeplm_note` says why there is no model; the shown files go to a folder of random name
    under `shown_root` (the app passes Gradio's cache), by default to ``root/key/shown``. With
    `cohort` (a cohort folder), the session is a `CohortSession` over it (SleepLM is not used:
    the cohort table answers). `rule` is the scoring rule the session's nights are loaded with until
    the user picks another (``serve --rule``).
    """
    workdir = Path(root) / key
    workdir.mkdir(parents=True, exist_ok=True)
    shown = workdir / "shown" if shown_root is None else Path(shown_root) / f"sleeplm-{uuid.uuid4().hex}"
    shown.mkdir(parents=True, exist_ok=True)
    if cohort is not None:
        night = CohortSession(llm=llm_factory(), workdir=workdir / "session")
        try:
            night.load(cohort)
        except SleepLMError:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(shown, ignore_errors=True)
            raise
        return BrowserSession(night=night, workdir=workdir, shown=shown, llm_note=getattr(llm_factory, "note", None))
    weights = sleeplm_model if isinstance(sleeplm_model, SleepLMWeights) else None
    night = NightSession(llm=llm_factory(), model=None if weights else sleeplm_model, workdir=workdir / "session",
                         rule=rule)
    bs = BrowserSession(night=night, workdir=workdir, shown=shown, llm_note=getattr(llm_factory, "note", None),
                        sleeplm_note=None if sleeplm_model is not None else sleeplm_note, weights=weights)
    if weights is not None:
        weights.attach(bs)
    return bs


def end_session(bs: BrowserSession | None, registry: dict) -> None:
    """Close `bs` (its tab closed or its state expired), forget it in `registry` and give its
    memory back to the system (`assistant.memory.release_memory`)."""
    if bs is None:
        return
    registry.pop(bs.workdir.name, None)
    bs.close()
    release_memory()


def check_upload(path: str | Path | None) -> Path:
    """The uploaded file, if it can be a recording; a clear `RecordingError` otherwise."""
    if path is None:
        raise NotARecordingError("No file was uploaded: choose an EDF/EDF+ (.edf) or BDF (.bdf) recording.")
    path = Path(path)
    if path.suffix.lower() not in UPLOAD_SUFFIXES:
        raise NotARecordingError(
            f"Files of type '{path.suffix or '(none)'}' cannot be read here: upload the night as EDF/EDF+ (.edf) "
            "or BDF (.bdf), as exported by the recording software."
        )
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise NotARecordingError(
            f"The file is {size / 1024**2:.0f} MB, over the {MAX_UPLOAD_BYTES / 1024**2:.0f} MB limit: "
            "export only the night's sleep channels, or run `sleeplm-assistant ask` locally."
        )
    return path


def is_cohort(bs: BrowserSession | None) -> bool:
    """True when the tab talks to a cohort (`CohortSession`), not to one night."""
    return bs is not None and isinstance(bs.night, CohortSession)


def _one_night(state: BrowserSession | None, action: str = "Load a recording first.") -> BrowserSession:
    """The tab's session when it holds one loaded night; a clear `gr.Error` otherwise."""
    if is_cohort(state):
        raise gr.Error("This page serves a cohort: ask about its nights in the chat. The raw-signal viewer shows "
                       "one night (`sleeplm-assistant serve --recording FILE`).")
    if state is None or state.night.night is None:
        raise gr.Error(action)
    return state


# ---- status text ------------------------------------------------------------------------
def _llm_markdown(bs: BrowserSession) -> str:
    info = bs.night.llm_info
    if bs.llm_note:
        llm = f"unavailable ({bs.llm_note}); answers come from the tools alone (tool-only mode)"
    else:
        model = f" · {info['model']}" if info.get("model") else ""
        detail = f" — {info['detail']}" if info.get("detail") else ""
        llm = f"{info.get('backend') or 'none'}{model}{detail}"
    from tools.overview import sleeplm_jobs_text

    if is_cohort(bs):
        sleeplm = "not used here: cohort questions are answered from the cohort table (measured per night)"
    elif bs.sleeplm_note:
        sleeplm = f"not available — {bs.sleeplm_note}"
    elif bs.weights is not None and bs.weights.pending:
        sleeplm = f"{bs.weights.text} ({bs.weights.fraction:.0%}); answers use measurements until it is loaded"
    elif bs.night.night is not None:
        sleeplm = bs.night.night.model_status  # says so when embedding this night failed
        jobs = sleeplm_jobs_text(bs.night.night)
        sleeplm += f" — in the background: {jobs} (the chat does not wait)" if jobs_pending(bs.night.night) else ""
    else:
        sleeplm = bs.night.sleeplm_status
    return f"**Language model:** {llm}  \n**SleepLM:** {sleeplm}"


def _progress_html(bs: BrowserSession | None) -> str:
    """Progress bars of the SleepLM download and of the loaded night's background jobs ("" when none)."""
    if bs is None or is_cohort(bs):
        return ""
    bars = []
    if bs.weights is not None and bs.weights.pending:
        bars.append(("SleepLM weights", bs.weights.fraction))
    night = bs.night.night
    if night is not None and jobs_pending(night):
        bars += [(f"SleepLM {name}", value) for name, value in night.sleeplm_jobs.items() if isinstance(value, float)]
    # Only fixed job names and numbers go into this markup.
    return "".join(f'<div class="sleeplm-job">{name}: <progress max="1" value="{value:.3f}"></progress> {value:.0%}</div>'
                   for name, value in bars)


def _night_markdown(bs: BrowserSession) -> str:
    night = bs.night.night
    rec = night.rec
    start = rec.clock_at(0) or "unknown start time"
    stages = night.stage_source or "not available"
    agreement = getattr(getattr(night.analysis, "staging", None), "agreement", None)
    if night.stage_source == "sleeplm" and agreement and agreement.get("accuracy") is not None:
        stages += f" (agree with {agreement['with']} on {agreement['accuracy']:.0%} of epochs)"
    if night.stage_source == "reference scoring" and rec.reference is not None:
        stages += f" ({rec.reference.source})"
    text = (
        f"**Loaded:** {rec.source_format}, {rec.n_epochs} epochs of 30 s ({rec.epoch_elapsed(rec.n_epochs)}), "
        f"starting {start}. Stages: {stages}."
    )
    if night.analysis is None:
        text += "  \nMeasurements are not available in this installation; only the recording overview can answer."
    elif night.analysis.summary.get("ahi_rule"):
        summary = night.analysis.summary
        index = "AHI" if summary.get("ahi") is not None else "REI"
        value = summary.get("ahi") if summary.get("ahi") is not None else summary.get("rei")
        if summary["ahi_rule"] == TECHNICIAN_SCORED:  # the rule applies to the product's own (automatic) events
            text += (f"  \n{index} {value}/h from the technician's scoring (no rule re-scores it). Scoring rule of the "
                     f"automatic events: {summary['rule']['name']} ({summary['rule']['title']}).")
        else:
            text += f"  \nScoring rule: {summary['ahi_rule']} ({summary['rule']['title']}); {index} {value}/h."
    return text + "".join(f"  \n⚠️ {w}" for w in rec.warnings)


# ---- loading ----------------------------------------------------------------------------
def _progress_reporter(progress: Progress, start: float, span: float, default: str) -> Callable[..., None]:
    """Map a library's progress callback (fraction, optional text) onto a slice of the bar."""

    def report(fraction: float = 0.0, *rest: Any, **_: Any) -> None:
        desc = next((r for r in rest if isinstance(r, str)), default)
        progress(start + span * min(max(float(fraction), 0.0), 1.0), desc=desc)

    return report


def _render_overview(bs: BrowserSession) -> str:
    night = bs.night.night
    events = getattr(night.analysis, "events", None)
    if events is None:
        events = reference_events(night.rec)
    # With the technician's scoring and the product's own both computed, both are drawn.
    compared = getattr(night.analysis, "agreement", None) is not None
    figure = plot_night(night.rec, hypnogram=night.hypnogram, events=events, stage_source=night.stage_source,
                        comparison=night.analysis.scorings if compared else None)
    path = bs.shown / f"overview-{uuid.uuid4().hex[:8]}.png"
    figure.savefig(path, dpi=OVERVIEW_DPI)
    bs.overview = click_map(figure)  # clicks need the axis' place, not the figure
    return str(path)


def _preflight_update(bs: BrowserSession) -> dict:
    from sleeplm.io.reader import preflight_table

    bs.preflight = preflight_table(bs.night.night.rec)
    # Only the "source" column is editable, and only when a channel was not recognised.
    editable = bool((bs.preflight["status"] == "missing").any())
    return gr.update(value=bs.preflight, interactive=editable)


def _file_channels_markdown(path: Path) -> str:
    from sleeplm.io.reader import read_edf_header

    header = read_edf_header(path)
    labels = ", ".join(f"`{header.labels[i]}`" for i in header.data_signals)
    return (
        f"**Channels in the file:** {labels}  \nA channel marked *missing* can be mapped: type a file label (or "
        "`A-B` for a derivation) in its *source* cell, then press *Re-load with my channel map*."
    )


def _no_progress(*_: Any, **__: Any) -> None:
    return None


def _unchanged(bs: BrowserSession) -> tuple:
    """Panel outputs that leave the page as it is (a load the user overtook)."""
    return (bs, *[gr.update()] * 8)


def _load_into(bs: BrowserSession, path: Path, progress: Progress, channel_map: dict | None,
               position_map: str | dict | None = None, rule: str | None = None,
               annotations: Path | None = None, *, ticket: int) -> Iterator[tuple]:
    """Load `path` (with the scoring file `annotations`) into the session (under `rule`, else the session's
    scoring rule) as the tab's load `ticket`; yields the panel's outputs as each stage finishes. When a
    load the tab started later is shown first, this one is dropped and the page left as it is."""
    if progress is None:  # not `progress or ...`: an idle gr.Progress is falsy (it has a length of 0)
        progress = _no_progress
    progress(0.02, desc="Reading the recording")
    if bs.weights is not None:
        bs.weights.attach(bs)
    report = _progress_reporter(progress, 0.05, 0.85, "Measuring the night")
    night = _gated_load(bs.night, path, progress=report, channel_map=channel_map, position_map=position_map,
                        annotations=annotations, rule=rule)
    with bs.lock:
        overtaken = bs.overtaken(ticket)
        if not overtaken:
            bs.shown_load = ticket
            bs.night.use_night(night)
            if night.analysis is not None and night.analysis.hypopnea_rule != bs.night.rule:
                bs.night.set_rule(bs.night.rule)  # the rule picked while the night was read (no signal read again)
            bs.recording_path, bs.channel_map, bs.position_map = path, channel_map, position_map
            bs.annotations = annotations
            bs.shown_version = night.version
            bs.turns.clear()
            bs.view = None
    if overtaken:
        logger.info("a load the tab started later is shown: this one is dropped")
        yield _unchanged(bs)
        return
    progress(0.92, desc="Drawing the night")
    yield (bs, _night_markdown(bs), _llm_markdown(bs), _preflight_update(bs), _file_channels_markdown(path),
           _render_overview(bs), None, None, [])
    # The report takes a moment to render: the night is shown (and the chat usable) before it.
    # The later updates leave every other output as it is: the user may be chatting already.
    progress(0.96, desc="Writing the report and exports")
    yield (bs, *[gr.update()] * 6, build_downloads(bs), gr.update())
    # SleepLM works in the background (embeddings, stage captions): `refresh_status` shows its
    # progress and redraws the overview when it changes the stages; the chat works meanwhile.
    progress(1.0, desc="Ready")


def explain_at(where: str, state: BrowserSession | None) -> tuple:
    """Handler of "Explain an event": the event at a time or id (`tools.explain.explain`) as its rule saw it;
    with the technician's scoring in use, the technician's event there and the product's automatic one.

    Returns (figure: `sleeplm.report.plots.plot_event_criteria`, or None when only the technician
    scored that moment; criteria table; findings text).
    """
    from langchain_core.tools import ToolException

    from tools.explain import criteria_table, explain

    night = getattr(getattr(state, "night", None), "night", None)
    if night is None or is_cohort(state):
        raise gr.Error("Load a night first.")
    try:
        explained, row, analysis = explain(night, (where or "").strip() or None)
        figure = None if row is None else plot_event_criteria(night.rec, row, analysis.near_misses)
    except (ToolException, SleepLMError) as exc:
        raise gr.Error(str(exc)) from exc
    return figure, criteria_table(explained), "\n".join(f"- {line}" for line in explained["findings"])


def change_rule(name: str, state: BrowserSession | None) -> tuple:
    """Handler of the rule picker: re-score the loaded night under rule `name` (from its measurements,
    no reload); returns (night text, overview image, downloads: the report, events CSV and annotations
    written again under the new rule). Nothing loaded: the rule applies to the next night."""
    if state is None or not isinstance(state.night, NightSession):
        return gr.update(), gr.update(), gr.update()
    try:
        state.night.set_rule(name)
    except SleepLMError as exc:
        raise gr.Error(str(exc)) from exc
    if state.night.night is None or state.night.night.analysis is None:
        return gr.update(), gr.update(), gr.update()
    state.shown_version = state.night.night.version
    return _night_markdown(state), _render_overview(state), build_downloads(state)


def refresh_status(state: BrowserSession | None) -> tuple:
    """Handler of the page's status timer: (night text, LLM/SleepLM text, overview, progress bars).

    Gives the session the SleepLM weights once they are loaded; when a background job changed
    the night's analysis (SleepLM stages replacing YASA's), redraws the overview and the night
    text. The chat is not among the outputs: a conversation is never reset by this.
    """
    if state is None:
        return gr.update(), gr.update(), gr.update(), ""
    if state.weights is not None:
        state.weights.attach(state)
    night = state.night.night
    night_text, overview = gr.update(), gr.update()
    if night is not None and not is_cohort(state) and night.version != state.shown_version:
        state.shown_version = night.version
        night_text, overview = _night_markdown(state), _render_overview(state)
    return night_text, _llm_markdown(state), overview, _progress_html(state)


_SESSIONS_LOCK = threading.Lock()  # one tab's concurrent first events open one session between them


def _session(state: BrowserSession | None, request: Any, root: Path, llm_factory, sleeplm_model, registry: dict,
             sleeplm_note: str | None = None, shown_root: Path | None = None,
             cohort: str | Path | None = None, server_rule: str = DEFAULT_RULE) -> BrowserSession:
    """The tab's session: `state`, else the one its other events opened already (the page's opening
    load and an early upload both start before the page holds a state), else a new one."""
    if state is not None:
        return state
    key = getattr(request, "session_hash", None)
    with _SESSIONS_LOCK:
        bs = registry.get(key) if key is not None else None
        if bs is None:
            key = key or uuid.uuid4().hex
            bs = open_session(root, key, llm_factory, sleeplm_model, sleeplm_note, shown_root, cohort, rule=server_rule)
            registry[key] = bs
    return bs


def load_night(path, state: BrowserSession | None, request: Any = None, progress: Progress = None, *,
               root: Path, llm_factory, sleeplm_model=None, registry: dict | None = None,
               owned: bool = True, sleeplm_note: str | None = None, shown_root: Path | None = None,
               channel_map: dict | None = None, position_map: str | dict | None = None,
               annotations: str | Path | None = None, rule: str | None = None,
               server_rule: str = DEFAULT_RULE, opening: bool = False) -> Iterator[tuple]:
    """Handler: load a recording into this tab's session (with `channel_map`/`position_map` and the
    scoring file `annotations`, if given; an upload's scoring comes afterwards, see `load_scoring`;
    under `rule`, else the session's scoring rule: the one last picked, at first `server_rule`).

    Yields (state, night text, LLM text, preflight table, file channels text, overview image path,
    epoch viewer figure, downloads, chat history). An upload (`owned`) is moved into the session's
    private folder under a neutral name, so it is deleted with the session and no file name
    travels further; the demo night or a served ``--recording`` is read in place.

    Of the loads a tab started, the latest to start that succeeds is the one shown: a load that
    finishes after it leaves the page as it is. `opening` (the page's opening load) loads nothing
    when the tab shows or is loading a night already (the user's upload came first).
    """
    bs = _session(state, request, root, llm_factory, sleeplm_model, registry if registry is not None else {},
                  sleeplm_note, shown_root, server_rule=server_rule)
    with bs.loading(opening) as ticket:
        if ticket is None:
            yield (bs, gr.update(), _llm_markdown(bs), *[gr.update()] * 6)
            return
        yield from _load_ticket(bs, ticket, path, progress, owned, channel_map, position_map, annotations, rule)


def _load_ticket(bs: BrowserSession, ticket: int, path, progress: Progress, owned: bool, channel_map: dict | None,
                 position_map: str | dict | None, annotations: str | Path | None, rule: str | None) -> Iterator[tuple]:
    """`load_night` once the tab gave the load its ticket."""
    # A new upload replaces the tab's night only once it has loaded: until then the previous
    # upload is set aside (same neutral name), and it comes back if the new file cannot be used.
    before, night_before = bs.recording_path, bs.night.night
    source = previous = None
    try:
        try:
            source = check_upload(path)
        except SleepLMError:
            if owned:
                _discard_upload(path)
            raise
        if owned:
            if before is not None and before.parent == bs.workdir and before.exists():
                previous = before.rename(bs.workdir / f".previous{before.suffix}")
            source = _take_upload(source, bs.workdir / f"recording{source.suffix.lower()}")
        yield from _load_into(bs, source, progress, channel_map, position_map, rule,
                              None if annotations is None else Path(annotations), ticket=ticket)
    except ChannelMappingError as exc:
        # No channel recognised: keep the file and let the user name its channels in the table.
        yield _unmapped(bs, source, exc, ticket, channel_map, position_map)
    except SleepLMError as exc:
        note = ""
        if bs.night.night is night_before:  # the new file did not load: the tab keeps what it had
            if owned and source is not None:
                source.unlink(missing_ok=True)  # a refused upload is not kept
                if previous is not None:
                    os.replace(previous, before)
                    previous = None
            if bs.night.night is not None:
                note = " The night loaded before is still the one the chat answers about."
        raise gr.Error(str(exc) + note, title="This recording cannot be used") from exc
    finally:
        if previous is not None:
            previous.unlink(missing_ok=True)


def load_scoring(paths, state: BrowserSession | None, progress: Progress = None) -> Iterator[tuple]:
    """Handler: re-load this tab's recording with the technician's scoring file(s) uploaded beside it.

    The files are moved into the session's folder under neutral names that keep their kind's
    ending (``scoring-nsrr.xml``, ``scoring_respevt.txt`` + ``scoring_stage.txt``...). A file that
    cannot be read, or that belongs to another recording, is refused and the night stays as it was.
    """
    from sleeplm.io.scoring import SCORING_SUFFIXES

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths or [])]
    refusal = None
    if state is None or state.recording_path is None or state.night.night is None or is_cohort(state):
        refusal = "Upload the recording first, then its scoring file."
    elif state.loads_pending:  # it would go to the night shown, not to the one loading
        refusal = "A recording is still loading in this tab: upload its scoring file once its night is shown."
    if refusal is not None:
        for path in paths:
            _discard_upload(path)
        raise gr.Error(refusal)
    tag, taken = uuid.uuid4().hex[:8], []  # one name per upload: a UCDDB pair stays a pair
    for path in paths:
        name = path.name.lower()
        ending = next((end for end in SCORING_SUFFIXES if name.endswith(end)), path.suffix.lower())
        taken.append(_take_upload(path, state.workdir / f"scoring{tag}{ending}"))
    try:
        with state.loading() as ticket:
            yield from _load_into(state, state.recording_path, progress, state.channel_map, state.position_map,
                                  annotations=taken[0] if taken else None, ticket=ticket)
    except SleepLMError as exc:
        for path in taken:
            path.unlink(missing_ok=True)  # a refused scoring file is not kept
        raise gr.Error(str(exc) + " The night keeps the scoring it had.", title="This scoring file cannot be used") from exc


def _cohort_markdown(bs: BrowserSession) -> str:
    tables = bs.night.night.tables
    done = tables.done
    subjects = int(done["subject_id"].nunique())
    labels = sorted({label for label in done["night_label"] if isinstance(label, str) and label})
    text = (f"**Cohort:** {len(done)} nights measured, {len(tables.failed)} failed"
            + (f", {subjects} subjects" if subjects else "")
            + (f" (night labels: {', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})" if labels else "")
            + ". Nights are named by salted ids; ask e.g. *which nights have AHI over 30?*")
    return text


def open_cohort(cohort: str | Path, state: BrowserSession | None, request: Any = None, *, root: Path, llm_factory,
                registry: dict | None = None, shown_root: Path | None = None, **_: Any) -> tuple:
    """Handler: this tab talks to the cohort folder `cohort` (a `CohortSession`; see the module docstring).

    Returns the panel's outputs: (state, cohort text, LLM text, preflight (emptied), file channels
    text (empty), distributions figure path, epoch viewer (none), downloads, chat history (empty)).
    """
    try:
        bs = _session(state, request, root, llm_factory, None, registry if registry is not None else {},
                      shown_root=shown_root, cohort=cohort)
    except SleepLMError as exc:
        raise gr.Error(str(exc), title="This cohort folder cannot be opened") from exc
    figure = distribution_figure(bs.night.night.tables.done)
    overview = bs.shown / f"cohort-{uuid.uuid4().hex[:8]}.png"
    figure.savefig(overview, dpi=OVERVIEW_DPI)
    bs.overview = None  # not a night: clicks on it show no raw signals
    return (bs, _cohort_markdown(bs), _llm_markdown(bs), gr.update(value=None), "", str(overview), None,
            build_downloads(bs), [])


def _unmapped(bs: BrowserSession, path: Path, error: ChannelMappingError, ticket: int, channel_map: dict | None,
              position_map: str | dict | None) -> tuple:
    """Panel outputs for a file (the tab's load `ticket`) none of whose channels was recognised: an
    all-missing, editable table (the page as it is when a load started later is shown already)."""
    from sleeplm.io.recording import CANONICAL_CHANNELS

    with bs.lock:
        if bs.overtaken(ticket):
            return _unchanged(bs)
        bs.shown_load = ticket
        bs.night.use_night(None)  # the previous night, if any, must not answer for this file
        bs.turns.clear()
        bs.recording_path, bs.channel_map, bs.position_map, bs.annotations = path, channel_map, position_map, None
        bs.overview = bs.view = None
        bs.preflight = pd.DataFrame({"channel": CANONICAL_CHANNELS, "status": "missing", "source": "",
                                     "original_sfreq_hz": np.nan, "unit": "", "warnings": ""})
    text = f"**Not loaded:** {error}  \nOpen *Channels (preflight)* and name the file's channels."
    return (bs, text, _llm_markdown(bs), gr.update(value=bs.preflight, interactive=True),
            _file_channels_markdown(path), None, None, None, [])


def reload_with_channel_map(table: pd.DataFrame, state: BrowserSession | None, progress: Progress = None) -> Iterator[tuple]:
    """Handler: re-load the recording with the channels the user typed into the preflight table."""
    if state is None or state.recording_path is None or state.preflight is None:
        raise gr.Error("Load a recording first; then map its missing channels in the preflight table.")
    if state.loads_pending:  # the table is the night's shown, not the one loading
        raise gr.Error("A recording is still loading in this tab: map its channels once it is shown.")
    before = dict(zip(state.preflight["channel"], state.preflight["source"].fillna("")))
    edits = {
        str(row.channel): str(row.source).strip()
        for row in pd.DataFrame(table).itertuples(index=False)
        if str(row.source or "").strip() and str(row.source).strip() != before.get(row.channel, "")
    }
    if not edits:
        raise gr.Error("No channel was changed: type a file label into the 'source' cell of a missing channel.")
    try:
        with state.loading() as ticket:
            yield from _load_into(state, state.recording_path, progress, {**(state.channel_map or {}), **edits},
                                  state.position_map, annotations=state.annotations, ticket=ticket)
    except SleepLMError as exc:
        raise gr.Error(str(exc), title="This channel map does not fit the file") from exc


# ---- chat -------------------------------------------------------------------------------
def _save_figure(bs: BrowserSession, figure: Any) -> str:
    path = bs.shown / f"figure-{uuid.uuid4().hex[:8]}.png"
    figure.savefig(path, dpi=OVERVIEW_DPI)
    return str(path)


def _step_message(event: dict) -> dict:
    arguments = inert_markdown(json.dumps(event["args"], ensure_ascii=False)).replace("`", "'")
    return {
        "role": "assistant",
        "content": f"Arguments: `{arguments}`",
        # The tool name is the model's: a name no tool has (markup, a URL) is shown inert like any text of its.
        "metadata": {"title": f"🛠️ {inert_markdown(str(event['name']))}", "status": "pending", "id": event["id"]},
    }


def ask(question: str, audience: str, history: list | None, state: BrowserSession | None) -> Iterator[tuple]:
    """Handler: stream one answer into the chat.

    Yields (chat history, question box text, state). Each tool call is a step message (title,
    pending -> done, duration, arguments and a one-line result); figures follow their step; the
    answer streams in and is finally replaced by the checked answer of the turn. When another night
    is loaded meanwhile, the answer stops there and is dropped: the new night's chat starts empty.
    """
    if state is None or state.night.night is None:
        raise gr.Error("Load a recording first (upload an EDF/BDF file or press 'Load demo night').")
    night = state.night.night
    history = list(history or []) + [{"role": "user", "content": question}]
    steps: dict[str, dict] = {}
    answer: dict | None = None
    draft = ""  # the streamed answer as written; shown only after `inert_markdown`
    yield _copy(history), "", state
    try:
        for event in state.night.ask_stream(question, audience):
            if state.night.night is not night:
                logger.info("another night was loaded while answering: the answer is dropped")
                return
            if event["type"] == "tool_start":
                steps[event["id"]] = _step_message(event)
                history.append(steps[event["id"]])
            elif event["type"] == "tool_end":
                step = steps.get(event["id"]) or _step_message({**event, "args": {}})
                if event["id"] not in steps:
                    history.append(step)
                step["content"] += f"\n\nResult: {inert_markdown(event['summary'])}"
                step["metadata"] = {**step["metadata"], "status": "done", "duration": event["duration_s"]}
                if event["artifact"] is not None:
                    history.append({"role": "assistant", "content": {"path": _save_figure(state, event["artifact"])}})
            elif event["type"] == "token":
                if answer is None:
                    answer = {"role": "assistant", "content": ""}
                    history.append(answer)
                draft += event["text"]
                if len(draft) <= MAX_ANSWER_CHARS:  # a runaway reply stops growing on the page (and fails the check)
                    answer["content"] = inert_markdown(draft)
            elif event["type"] == "final":
                turn = event["turn"]
                # The checked answer replaces the streamed draft and goes after every step.
                if answer is not None:
                    history.remove(answer)
                history.append({"role": "assistant", "content": turn.answer})
                state.turns.append({"question": question, "audience": audience, **turn.to_dict()})
            yield _copy(history), "", state
    except SleepLMError as exc:
        raise gr.Error(str(exc)) from exc


def new_conversation(state: BrowserSession | None) -> None:
    """Handler of the chat's clear button: the agent forgets the conversation (the night stays loaded)."""
    if state is not None:
        state.night.reset()
        state.turns.clear()


def choose_scoring(scoring: str, state: BrowserSession | None) -> str:
    """Handler of the "Scoring used in answers" control: the technician's scoring that came with the
    recording, or the product's own (computed now if not yet). Returns the status line under it."""
    night = getattr(getattr(state, "night", None), "night", None)
    if night is None:
        return "Load a recording first."
    try:
        state.night.set_scoring(scoring)
    except SessionError as exc:
        return f"Scoring not changed: {exc}"
    return f"Answers and figures use {SCORING_NAMES[scoring]}."


def refresh_downloads(state: BrowserSession | None) -> Any:
    """The downloads written again, once the scoring used in answers changed (unchanged without a night)."""
    if state is None or is_cohort(state) or state.night.night is None:
        return gr.update()
    return build_downloads(state)


def _copy(history: list) -> list:
    """A copy per yield: Gradio diffs successive values, so messages changed in place must be new objects."""
    return [{**message, "metadata": dict(message["metadata"])} if "metadata" in message else dict(message)
            for message in history]


def _cited_spans(value: Any) -> Iterator[tuple[int, int]]:
    """Every (epoch_start, epoch_end) cited anywhere in a tool result, in order."""
    if isinstance(value, dict):
        if isinstance(value.get("epoch_start"), int) and isinstance(value.get("epoch_end"), int):
            yield value["epoch_start"], value["epoch_end"]
        for item in value.values():
            yield from _cited_spans(item)
    elif isinstance(value, list):
        for item in value:
            yield from _cited_spans(item)


# ---- epoch viewer -----------------------------------------------------------------------
def _span_text(rec: Any, first: int, last: int) -> str:
    """An epoch span as cited everywhere: clock time (when the recording has one), elapsed time, epochs."""
    citation = rec.cite_epochs(first, last)
    clock = f"{citation['clock_start']}-{citation['clock_end']}, " if citation["clock_start"] else ""
    where = f"epochs {first}-{last}" if last > first else f"epoch {first}"
    return f"{clock}elapsed {citation['elapsed_start']}-{citation['elapsed_end']}, {where}"


def _viewer(bs: BrowserSession, first: int, last: int, asked: str = "asked") -> tuple[Any, str]:
    """The raw signals of epochs `first`..`last` (`asked`: "cited" by an answer, or "asked" for by the
    user). A span longer than the viewer's `MAX_VIEW_EPOCHS` is shown in pages: the first one now, and
    the caption says which page of the span it is and what "Next" shows (`page_viewer`)."""
    last = min(last, bs.night.night.rec.n_epochs - 1)
    return _show_page(bs, first, first, last, asked)


def _show_page(bs: BrowserSession, first: int, span_first: int, span_last: int, asked: str) -> tuple[Any, str]:
    rec = bs.night.night.rec
    last = min(first + MAX_VIEW_EPOCHS - 1, span_last)
    bs.view = (first, last, span_first, span_last, asked)
    caption = f"**Raw signals:** {_span_text(rec, first, last)}"
    if (first, last) != (span_first, span_last):
        pages = -(-(span_last - span_first + 1) // MAX_VIEW_EPOCHS)
        page = (first - span_first) // MAX_VIEW_EPOCHS + 1
        citation = rec.cite_epochs(span_first, span_last)
        when = (f"{citation['clock_start']}-{citation['clock_end']}" if citation["clock_start"] else
                f"elapsed {citation['elapsed_start']}-{citation['elapsed_end']}")
        caption += (f": page {page} of {pages} of the {asked} epochs {span_first}-{span_last} ({when}; the viewer "
                    f"shows {MAX_VIEW_EPOCHS} epochs at a time).")
        if last < span_last:
            following = min(last + MAX_VIEW_EPOCHS, span_last)
            caption += f" **Next** shows epoch{f's {last + 1}-' if following > last + 1 else ' '}{following}."
    return plot_epochs(rec, first, last), caption


def page_viewer(step: int, state: BrowserSession | None) -> tuple[Any, str]:
    """Handler of the viewer's Previous (`step` -1) and Next (+1) buttons: the neighbouring page of a long
    span the viewer is paging through; beyond it (or for a short span), the epochs just before or after
    the ones shown, as many of them."""
    bs = _one_night(state)
    if bs.view is None:
        raise gr.Error("Nothing is shown yet: type a time above, or click the night overview.")
    n_epochs = bs.night.night.rec.n_epochs
    first, last, span_first, span_last, asked = bs.view
    if step > 0 and last < span_last:
        return _show_page(bs, last + 1, span_first, span_last, asked)
    if step < 0 and first > span_first:
        return _show_page(bs, max(span_first, first - MAX_VIEW_EPOCHS), span_first, span_last, asked)
    length = last - first + 1
    if (step > 0 and last >= n_epochs - 1) or (step < 0 and first <= 0):
        raise gr.Error(f"The night {'ends' if step > 0 else 'starts'} there (epochs 0-{n_epochs - 1}).")
    first = last + 1 if step > 0 else max(0, first - length)
    return _viewer(bs, first, min(first + length - 1, n_epochs - 1))


def show_epochs(where: str, n_epochs: float, state: BrowserSession | None) -> tuple[Any, str]:
    """Handler: raw signals at a typed time ("02:30", "3h10m", "epoch 120", "first REM period", "01:00 to 01:03")."""
    _one_night(state)
    try:
        first, last = parse_span(where, state.night.night.rec, state.night.night.hypnogram)
    except SleepLMError as exc:
        raise gr.Error(str(exc)) from exc
    if first == last:
        last = first + int(n_epochs) - 1
    return _viewer(state, first, last)


def epochs_at_click(state: BrowserSession | None, n_epochs: float, evt: Any) -> tuple[Any, str, str]:
    """Handler: raw signals where the night overview was clicked (`evt.index` = [x, y] in image pixels)."""
    if _one_night(state).overview is None:
        raise gr.Error("Load a recording first.")
    seconds = state.overview.seconds_at(evt.index[0] / (state.overview.width_in * OVERVIEW_DPI))
    if seconds is None:
        raise gr.Error("Click inside the plotted night (right of the axis labels) to see its raw signals.")
    rec = state.night.night.rec
    # Centre the window on the click.
    first = max(0, min(rec.epoch_of(seconds) - (int(n_epochs) - 1) // 2, rec.n_epochs - int(n_epochs)))
    figure, caption = _viewer(state, first, first + int(n_epochs) - 1)
    return figure, caption, f"epoch {first}"


def follow_citation(state: BrowserSession | None) -> tuple[Any, Any]:
    """Handler after an answer: show the raw signals of the first short span the answer cites,
    else the first one the tools cited."""
    if state is None or not state.turns or is_cohort(state):
        return gr.update(), gr.update()
    n_epochs = state.night.night.rec.n_epochs
    turn = state.turns[-1]
    in_answer = [(c["epoch_start"], c["epoch_end"]) for c in parse_citations(turn.get("answer") or "")]
    calls = turn.get("tool_calls") or []
    for first, last in [*in_answer, *_cited_spans([call.get("result") for call in calls])]:
        if 0 <= first <= last < n_epochs and last - first + 1 < n_epochs:
            return _viewer(state, first, last, asked="cited")
    return gr.update(), gr.update()


# ---- downloads --------------------------------------------------------------------------
def build_downloads(bs: BrowserSession) -> list[str]:
    """Write the session's exports: PDF report, events CSV, EDF+ annotations, tool trace JSON (for a
    cohort: its ``cohort_report.html`` and the tool trace)."""
    night = bs.night.night
    out = bs.shown / "downloads"
    out.mkdir(exist_ok=True)

    def trace(path: Path) -> Path:  # with the SleepLM precision the answers were computed in
        return write_trace_json(bs.turns, path, trace_metadata(bs.night.sleeplm))

    if is_cohort(bs):
        report = night.tables.folder / REPORT
        files = [_atomic(out / REPORT, lambda path: shutil.copyfile(report, path))] if report.is_file() else []
        files.append(_atomic(out / "tool-trace.json", trace))
        return [str(path) for path in files]
    analysis = night.analysis
    events = getattr(analysis, "events", None)
    if events is None:
        events = reference_events(night.rec)
    answers = [(turn["question"], turn["answer"]) for turn in bs.turns]
    # Each file is written under a temporary name and renamed: a download (or a kill) never meets half a file.
    files = [
        _atomic(out / "night-report.pdf", lambda path: write_report_pdf(
            night.rec, path, summary=getattr(analysis, "summary", None), hypnogram=night.hypnogram, events=events,
            answers=answers, stage_source=night.stage_source, scorings=getattr(analysis, "scorings", None),
            agreement=getattr(analysis, "agreement", None))),
        _atomic(out / "night-events.csv", lambda path: write_events_csv(
            night.rec, stacked(events, getattr(analysis, "near_misses", None)), path)),
    ]
    try:
        files.append(_atomic(out / "night-annotations.edf",
                             lambda path: write_annotations_edf(night.rec, events, path, hypnogram=night.hypnogram)))
    except ExportError as exc:  # nothing scored or detected: the CSV (header only) says as much
        logger.info("no EDF+ annotations file: %s", exc)
    files.append(_atomic(out / "tool-trace.json", trace))
    return [str(path) for path in files]


# ---- API --------------------------------------------------------------------------------
def api_ask(recording: str, question: str, audience: str, *, root: Path, llm_factory, sleeplm_model=None,
            channel_map: dict | None = None, position_map: str | dict | None = None, rule: str | None = None,
            server_rule: str = DEFAULT_RULE) -> str:
    """The ``/ask`` endpoint: load `recording` in a throw-away session, answer `question`, delete everything.

    `rule` (a name or alias of `sleeplm.measure.rules.RULES`; empty: `server_rule`, the one ``serve
    --rule`` named) is the scoring rule the night is scored under; an unknown one is refused before
    anything is loaded.
    """
    try:
        chosen = resolve_rule(rule).name if rule else resolve_rule(server_rule).name
    except SleepLMError as exc:
        _discard_upload(recording)
        raise gr.Error(str(exc)) from exc
    bs = open_session(root, f"api-{uuid.uuid4().hex}", llm_factory, sleeplm_model, rule=chosen)
    try:
        try:
            source = check_upload(recording)
        except SleepLMError:
            _discard_upload(recording)
            raise
        target = _take_upload(source, bs.workdir / f"recording{source.suffix.lower()}")
        bs.night.use_night(_gated_load(bs.night, target, channel_map=channel_map, position_map=position_map))
        return bs.night.ask(question, audience or "clinician").answer
    except SleepLMError as exc:
        raise gr.Error(str(exc)) from exc
    finally:
        bs.close()
        release_memory()


def api_ask_cohort(question: str, audience: str, *, root: Path, llm_factory, cohort: str | Path) -> str:
    """The ``/ask_cohort`` endpoint: answer `question` about the served cohort in a throw-away session."""
    bs = None
    try:
        bs = open_session(root, f"api-{uuid.uuid4().hex}", llm_factory, cohort=cohort)
        return bs.night.ask(question, audience or "clinician").answer
    except SleepLMError as exc:
        raise gr.Error(str(exc)) from exc
    finally:
        if bs is not None:
            bs.close()


# ---- the app ----------------------------------------------------------------------------
def _demo_path() -> Path:
    from sleeplm.synthetic.demo import demo_recording_path  # the simulator loads only when the demo is opened

    return demo_recording_path()


def _load_sleeplm(progress: Callable[[float, str], Any] | None = None, checkpoint: str | Path | None = None,
                  precision: str = "auto") -> tuple[Any, str | None]:
    """SleepLM weights for every session, loaded once from `checkpoint` (None: ``$SLEEPLM_CHECKPOINT``, else
    the hub, downloaded on first run, reporting `progress(fraction, text)`) in `precision` ("auto" reads
    ``$SLEEPLM_PRECISION``); (None, why) when they cannot be had."""
    from sleeplm.model.inference import SleepLM  # torch loads only when the app starts

    try:
        return SleepLM.from_pretrained(None if checkpoint is None else str(checkpoint), progress=progress,
                                       precision=precision), None
    except SleepLMError as exc:
        return None, f"{exc} Answers use measurements only."


def _with_viewer(outputs: Iterable[tuple]) -> Iterator[tuple]:
    """A loading handler's panel outputs, each followed by the viewer's caption and "Raw signals at"
    box, the explained event (figure, criteria, text) and the "Scoring used in answers" control with
    its status line. Whenever the panel clears the viewer's figure (a night newly shown, or none)
    these are cleared too, and a new night answers with the technician's scoring first (when it came
    with one); otherwise they stay as they are. So the page never describes a night no longer loaded.
    """
    for values in outputs:
        viewer_cleared = values[6] is None  # the panel's viewer figure
        yield (*values, *(("", "", None, None, "", "technician", "") if viewer_cleared else [gr.update()] * 7))


def _check_cohort(cohort: str | Path | None) -> None:
    if cohort is not None and not is_cohort_folder(cohort):
        raise CohortInputError(f"{cohort} is not a cohort folder (no nights.parquet); "
                               "run `sleeplm-assistant cohort INPUT --out DIR` first.")


def build_app(llm_factory: Callable[[], Any] | None = None, session_root: str | Path | None = None,
              sleeplm_model: Any = None, preload: str | Path | None = None,
              sleeplm_note: str | None = None, channel_map: dict | None = None,
              position_map: str | dict | None = None, preload_is_demo: bool = False,
              cohort: str | Path | None = None, annotations: str | Path | None = None,
              rule: str = DEFAULT_RULE) -> gr.Blocks:
    """The Gradio Blocks app.

    Parameters
    ----------
    llm_factory : called once per session for its chat model (a LangChain chat model or a backend
        spec string); default: the configured backend, resolved once and shared.
    session_root : folder holding one private sub-folder per session; a fresh temporary folder by default.
    sleeplm_model : a loaded `SleepLM` shared by the sessions, a `SleepLMWeights` still loading
        (sessions get the model when it is ready), or None (measurements only).
    preload : recording every new tab starts with (the demo night in `serve`), read in place.
    sleeplm_note : why there is no `sleeplm_model` (shown on the page as the SleepLM status).
    channel_map, position_map : maps for the recordings users bring (``serve --channel-map`` /
        ``--position-map``): applied to uploads, to the ``/ask`` API and to `preload` unless
        `preload_is_demo` (the built-in demo night is always read with its own labels).
    cohort : a cohort folder (``sleeplm-assistant cohort``): every tab talks to it (the cohort
        tools, salted night ids), the page shows its distributions instead of one night's panels,
        and the ``/ask_cohort`` endpoint answers questions about it. `preload` is then not used.
    annotations : the technician's scoring file of `preload` (``serve --annotations FILE``); an
        uploaded recording's scoring is uploaded beside it on the page.
    rule : the scoring rule (`sleeplm.measure.rules.RULES`, ``serve --rule``) every night is scored
        under until the tab's user picks another: `preload`, uploads and the demo night, and the
        ``/ask`` endpoint's nights unless a call names its own rule; the rule picker starts on it.
        Picking another re-scores the loaded night at once (and the downloads with it).
    """
    _check_cohort(cohort)
    # Files inside Gradio's cache are served in place: no copy of them outlives the session. The
    # server's own root (`server_root`) lies inside it; a given `session_root` keeps the shown
    # files directly in Gradio's cache.
    owned_root = not session_root
    root = server_root() if owned_root else Path(session_root)
    root.mkdir(parents=True, exist_ok=True)
    llm_factory = llm_factory or ConfiguredChatModel()
    registry: dict[str, BrowserSession] = {}
    common = {"root": root, "llm_factory": llm_factory, "sleeplm_model": sleeplm_model, "registry": registry,
              "sleeplm_note": sleeplm_note, "shown_root": root / "shown" if owned_root else Path(get_upload_folder()),
              "server_rule": resolve_rule(rule).name}
    maps = {"channel_map": channel_map, "position_map": position_map}

    def close_sessions() -> None:
        """Close every open session (their folders go with them), and remove the server's own root."""
        for key in list(registry):
            bs = registry.pop(key, None)
            if bs is not None:
                bs.close()
        if owned_root:
            shutil.rmtree(root, ignore_errors=True)

    def on_open(state, request: gr.Request, progress=gr.Progress()):
        # The page's opening event may run after the user's first upload (under load): it never replaces it.
        if cohort is not None:
            yield from _with_viewer([open_cohort(cohort, state, request, **common)])
            return
        if preload is not None:
            # Under the tab's rule: the server's (`common`), or one the user picked before this event ran.
            yield from _with_viewer(load_night(str(preload), state, request, progress, owned=False, opening=True,
                                               **common,
                                               **({} if preload_is_demo else {**maps, "annotations": annotations})))
            return
        bs = _session(state, request, **common)
        with bs.lock:
            shows_nothing = not bs.loads_pending and bs.night.night is None and bs.recording_path is None
        if shows_nothing:
            intro = "Upload a night (EDF/EDF+/BDF) or press **Load demo night**."
            yield from _with_viewer([(bs, intro, _llm_markdown(bs), gr.update(), gr.update(), None, None, None, [])])
        else:
            yield from _with_viewer([(bs, gr.update(), _llm_markdown(bs), *[gr.update()] * 6)])

    def on_upload(path, state, request: gr.Request, progress=gr.Progress()):
        yield from _with_viewer(load_night(path, state, request, progress, **common, **maps))

    def on_demo(state, request: gr.Request, progress=gr.Progress()):
        try:
            path = _demo_path()
        except SleepLMError as exc:
            raise gr.Error(str(exc)) from exc
        yield from _with_viewer(load_night(str(path), state, request, progress, owned=False, **common))

    def on_scoring(paths, state, progress=gr.Progress()):
        yield from _with_viewer(load_scoring(paths, state, progress))

    def on_remap(table, state, progress=gr.Progress()):
        yield from _with_viewer(reload_with_channel_map(table, state, progress))

    def on_rule(name, state):
        return change_rule(name, state)

    def on_click(state, n_epochs, evt: gr.SelectData):
        return epochs_at_click(state, n_epochs, evt)

    def on_previous(state):
        return page_viewer(-1, state)

    def on_next(state):
        return page_viewer(1, state)

    def on_api_ask(recording: gr.FileData, question: str, audience: str = "clinician", rule: str = "") -> str:
        # gr.api hands an uploaded file over as FileData's dict form; its "path" is in Gradio's upload folder.
        path = recording.get("path") if isinstance(recording, dict) else recording
        return api_ask(path, question, audience, root=root, llm_factory=llm_factory, sleeplm_model=sleeplm_model,
                       rule=rule or None, server_rule=common["server_rule"], **maps)

    def on_api_ask_cohort(question: str, audience: str = "clinician") -> str:
        return api_ask_cohort(question, audience, root=root, llm_factory=llm_factory, cohort=cohort)

    def on_unload(request: gr.Request):
        end_session(registry.get(request.session_hash), registry)

    def on_state_expired(bs: BrowserSession | None):
        end_session(bs, registry)

    with gr.Blocks(title="SleepLM Assistant", delete_cache=(1800, SESSION_TTL_S)) as demo:
        state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=on_state_expired)
        single = cohort is None  # a cohort page has no upload, preflight or raw-signal viewer
        gr.Markdown("## SleepLM Assistant — chat with " + ("a night of polysomnography" if single else "a cohort of nights"))
        with gr.Row():
            with gr.Column(scale=5):
                with gr.Row(visible=single):
                    upload = gr.File(label="Recording (EDF/EDF+/BDF)", file_types=list(UPLOAD_SUFFIXES),
                                     type="filepath", elem_id="upload", scale=3, height=100)
                    scoring_upload = gr.File(label="Its scoring (optional): NSRR/Profusion XML, UCDDB text, Noxturnal "
                                                   "CSV, EDF+ hypnogram", file_count="multiple", type="filepath",
                                             elem_id="scoring-upload", scale=2, height=100)
                    demo_button = gr.Button("Load demo night", elem_id="demo-button", scale=1)
                night_text = gr.Markdown(elem_id="night-status")
                llm_text = gr.Markdown(elem_id="llm-status")
                sleeplm_progress = gr.HTML(elem_id="sleeplm-progress")
                audience = gr.Radio(list(AUDIENCES), value="clinician", label="Answer for", elem_id="audience")
                with gr.Row(visible=single):
                    scoring = gr.Radio(list(SCORINGS), value="technician", elem_id="scoring", scale=2,
                                       label="Scoring used in answers (when the recording came with scoring)")
                    scoring_text = gr.Markdown(elem_id="scoring-status")
                rule_picker = gr.Dropdown([(f"{r.name}: {r.title}", r.name) for r in RULES.values()],
                                          value=resolve_rule(rule).name, label="Scoring rule (apneas and hypopneas)",
                                          elem_id="rule-picker", visible=single)
                chatbot = gr.Chatbot(label="Chat", height=560, elem_id="chat", buttons=["copy"], sanitize_html=True)
                question = gr.Textbox(placeholder="Ask about the night, e.g. when did respiration look abnormal?" if single
                                      else "Ask about the nights, e.g. which nights have AHI over 30?",
                                      show_label=False, submit_btn=True, elem_id="question")
                gr.Examples(EXAMPLE_QUESTIONS if single else COHORT_EXAMPLE_QUESTIONS, inputs=question, label="Try")
                with gr.Accordion("Channels (preflight)", open=False, elem_id="preflight-panel", visible=single):
                    preflight = gr.Dataframe(static_columns=[0, 1, 3, 4, 5], interactive=False, elem_id="preflight")
                    file_channels = gr.Markdown()
                    remap_button = gr.Button("Re-load with my channel map", size="sm")
            with gr.Column(scale=5):
                gr.Markdown("**Night overview**: stages, events and SpO2. Click it to see the raw signals there." if single
                            else "**Cohort overview**: AHI, total sleep time, sleep efficiency, SpO2 nadir and stage "
                                 "shares over the measured nights.")
                overview = gr.Image(show_label=False, type="filepath", interactive=False, elem_id="overview",
                                    buttons=["download"])
                with gr.Row(visible=single):
                    where = gr.Textbox(label="Raw signals at", placeholder="02:30, 3h10m, epoch 120, first REM period",
                                       elem_id="viewer-where", scale=3)
                    n_epochs = gr.Slider(1, MAX_VIEW_EPOCHS, value=2, step=1, label="Epochs", scale=2)
                    show_button = gr.Button("Show signals", elem_id="viewer-button", scale=1)
                with gr.Row(visible=single):
                    previous_button = gr.Button("◀ Previous", elem_id="viewer-previous", size="sm")
                    next_button = gr.Button("Next ▶", elem_id="viewer-next", size="sm")
                viewer_caption = gr.Markdown(elem_id="viewer-caption", visible=single)
                viewer = gr.Plot(show_label=False, elem_id="viewer", format="png", visible=single)
                with gr.Accordion("Explain an event (criteria of the scoring rule)", open=False, elem_id="explain-panel",
                                  visible=single):
                    with gr.Row():
                        explain_where = gr.Textbox(label="Event", placeholder="event id R012, or a time: 02:14, 3h10m, epoch 120",
                                                   elem_id="explain-where", scale=3)
                        explain_button = gr.Button("Explain", elem_id="explain-button", scale=1)
                    event_plot = gr.Plot(show_label=False, elem_id="event-plot", format="png")
                    criteria = gr.Dataframe(interactive=False, elem_id="event-criteria")
                    event_text = gr.Markdown(elem_id="event-text")
                downloads = gr.File(label="Downloads: report, events, annotations, tool trace", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        # The loading handlers' outputs: the panel, then what goes with the viewer (`_with_viewer`).
        panel = [state, night_text, llm_text, preflight, file_channels, overview, viewer, downloads, chatbot,
                 viewer_caption, where, event_plot, criteria, event_text, scoring, scoring_text]
        private = {"api_visibility": "private", "concurrency_id": "load", "concurrency_limit": 2}
        demo.load(on_open, [state], panel, **private)
        upload.upload(on_upload, [upload, state], panel, **private)
        scoring_upload.upload(on_scoring, [scoring_upload, state], panel, **private)
        demo_button.click(on_demo, [state], panel, **private)
        remap_button.click(on_remap, [preflight, state], panel, **private)
        scoring.input(choose_scoring, [scoring, state], [scoring_text], **private).then(
            refresh_downloads, [state], [downloads], api_visibility="private")
        rule_picker.change(on_rule, [rule_picker, state], [night_text, overview, downloads], **private)
        # Chat and API calls share the language model: two at a time keep the app responsive.
        chat = {"concurrency_id": "chat", "concurrency_limit": 2}
        question.submit(ask, [question, audience, chatbot, state], [chatbot, question, state],
                        api_name="chat_turn", api_visibility="private", **chat).then(
            follow_citation, [state], [viewer, viewer_caption], api_visibility="private").then(
            build_downloads, [state], [downloads], api_visibility="private")
        chatbot.clear(new_conversation, [state], None, api_visibility="private")
        view = {"api_visibility": "private", "concurrency_id": "view", "concurrency_limit": 4}
        show_button.click(show_epochs, [where, n_epochs, state], [viewer, viewer_caption], **view)
        where.submit(show_epochs, [where, n_epochs, state], [viewer, viewer_caption], **view)
        overview.select(on_click, [state, n_epochs], [viewer, viewer_caption, where], **view)
        previous_button.click(on_previous, [state], [viewer, viewer_caption], **view)
        next_button.click(on_next, [state], [viewer, viewer_caption], **view)
        explain_button.click(explain_at, [explain_where, state], [event_plot, criteria, event_text], **view)
        explain_where.submit(explain_at, [explain_where, state], [event_plot, criteria, event_text], **view)
        # The /ask API endpoint: no page components, the parameters come from on_api_ask's type hints.
        gr.api(on_api_ask, api_name="ask", api_description="Answer one question about an EDF/BDF recording.", **chat)
        if cohort is not None:
            gr.api(on_api_ask_cohort, api_name="ask_cohort",
                   api_description="Answer one question about the served cohort (nights named by salted ids).", **chat)
        status_timer = gr.Timer(STATUS_REFRESH_S)
        status_timer.tick(refresh_status, [state], [night_text, llm_text, overview, sleeplm_progress],
                          api_visibility="private", show_progress="hidden", concurrency_id="status",
                          concurrency_limit=4)
        demo.unload(on_unload)
    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.close_sessions = close_sessions  # for `serve`'s shutdown (SIGTERM, Ctrl+C, exit)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Start the server: local only, no share link, no SSR, upload size limit. Returns (app, local_url, share_url)."""
    return demo.launch(
        server_name=host, server_port=port, share=False, ssr_mode=False, max_file_size=MAX_UPLOAD_BYTES,
        enable_monitoring=False, prevent_thread_lock=not block, quiet=not block, footer_links=["api"],
        theme=gr.themes.Soft(),
    )


def serve(host: str = "127.0.0.1", port: int = 7860, recording: str | Path | None = None,
          channel_map: dict | None = None, position_map: str | dict | None = None,
          cohort: str | Path | None = None, nights: list | None = None, llm: str | None = None,
          annotations: str | Path | None = None, rule: str = DEFAULT_RULE, checkpoint: str | Path | None = None,
          precision: str = "auto") -> None:
    """Run the app until interrupted; every new tab starts on `recording`, or on the demo night.

    `channel_map` and `position_map` (``serve --channel-map/--position-map``) are used to load
    `recording` and every uploaded night (see `build_app`). With `cohort` (``serve --cohort DIR``)
    every tab talks to that cohort folder; with `nights` (``serve --nights A.edf B.edf``) the
    nights of one person are measured first (local Ray, "night 1", "night 2", ...) into this run's
    folder and served as a cohort (deleted with the run). `llm` (``serve --llm``) is the language
    model spec; the embedded model is chosen (and on first run downloaded) before the page opens,
    and the terminal says which and why. `annotations` (``serve --annotations FILE``) is the
    technician's scoring of `recording`. `rule` (``serve --rule``) is the scoring rule the night is
    loaded with and the app's rule picker starts on. `checkpoint` and `precision` (the global
    ``--checkpoint`` and ``serve --precision``) are the SleepLM weights and their encoder precision
    (defaults: ``$SLEEPLM_CHECKPOINT``, else the hub; auto, which reads ``$SLEEPLM_PRECISION``).
    """
    bound_heap()  # freed arrays go back to the system at once (assistant.memory)
    if cohort is not None and nights:
        raise CohortInputError("serve takes a cohort folder (--cohort) or the nights of one person (--nights), not both.")
    _check_cohort(cohort)
    from assistant.llm import prepare_backend

    llm, llm_line = prepare_backend(llm)
    print(llm_line, flush=True)
    preload_is_demo = recording is None
    if recording is None and cohort is None and not nights:
        try:
            recording = _demo_path()
        except SleepLMError as exc:
            logger.warning("%s", exc)
    # One server-owned root for everything this run writes, Gradio's own upload cache included
    # (an upload in flight when the server is killed is a temporary file there).
    run = server_root()
    if nights:
        from assistant.cohort import measure_nights

        logger.info("measuring %d nights on Ray before serving them", len(nights))
        try:
            cohort = measure_nights(nights, run / "nights" / "cohort", channel_map=channel_map)
        except BaseException:
            shutil.rmtree(run, ignore_errors=True)
            raise
    # The page opens at once; the weights (downloaded on first run) arrive in the background. A
    # cohort page answers from the cohort table and loads no weights.
    loader = functools.partial(_load_sleeplm, checkpoint=checkpoint, precision=precision)
    weights = SleepLMWeights(loader).start() if cohort is None else None
    # Gradio reads its upload folder when the app and its server are created: the variable is set
    # for that time only, so nothing else in this process inherits it.
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(run / "gradio")
    try:
        llm_factory = ConfiguredChatModel(llm)
        if cohort is None:
            llm_factory.warm_up()
        demo = build_app(llm_factory=llm_factory, sleeplm_model=weights, preload=recording,
                         channel_map=channel_map, position_map=position_map, preload_is_demo=preload_is_demo,
                         session_root=run, cohort=cohort, annotations=annotations, rule=rule)

        def shutdown() -> None:
            demo.close_sessions()
            shutil.rmtree(run, ignore_errors=True)

        def on_sigterm(signum: int, frame: Any) -> None:
            logger.info("SIGTERM: closing the sessions and removing their files")
            shutdown()
            raise KeyboardInterrupt  # Gradio's server loop then shuts down

        signal.signal(signal.SIGTERM, on_sigterm)
        atexit.register(shutdown)
        launch(demo, host, port)
    finally:
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
    if not getattr(demo, "is_running", False):  # the server loop has ended (Ctrl+C): remove this run's files
        shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    serve()
