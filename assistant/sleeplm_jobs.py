"""SleepLM's work on a loaded night, done in the background while the conversation goes on.

Loading a night returns once the measurements are done (stages from the file's scoring, else
YASA). Then, one night at a time in the process (sessions queue for the model, the thread runs
at a lower CPU priority, and it pauses between batches while any recording is loading: loads and
answers of other sessions come first):

1. the night's signal embeddings (retrieval, concept timelines), cached on disk;
2. for a night without its own scoring: SleepLM's stage_event caption of every epoch, from
   which the night is re-staged (source "sleeplm", compared with YASA's stages) and its events
   and summary measured again.

Progress is kept in ``night.sleeplm_jobs`` (what the overview tool and the page show) and
``night.version`` is incremented when the analysis changes, so the page can redraw.

Every background thread of the assistant is started with `start_background`: at process exit
(`stop_background_jobs`, an ``atexit`` hook) the SleepLM jobs stop at their next batch and every
such thread is joined, so no thread is still inside torch when the interpreter tears down (a
daemon thread that is aborts the process: "terminate called without an active exception").
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from typing import Any, Callable

from tools import NightContext

__all__ = ["EMBEDDINGS", "STAGE_CAPTIONS", "loading", "loads_in_progress", "plan_sleeplm_jobs", "run_sleeplm_jobs",
           "jobs_pending", "start_background", "stop_background_jobs"]

logger = logging.getLogger(__name__)

EMBEDDINGS = "embeddings"
STAGE_CAPTIONS = "stage captions"
BACKGROUND_NICENESS = 10
MIN_NAMED_SHARE = 0.5  # SleepLM stages replace YASA's only when captions name a stage for at least this share
# One SleepLM job at a time in the process: two nights encoded at once would both take twice as long.
_MODEL_TURN = threading.Lock()
# Recordings being loaded in the process: background SleepLM work waits for them between batches.
_LOADS = threading.Condition()
_loads_in_progress = 0
_LOAD_POLL_S = 0.5  # how often a paused job looks whether its session moved on


@contextlib.contextmanager
def loading():
    """Mark a recording load in progress: SleepLM background jobs pause between batches until no load is left.

    On 2 cores a background job (both cores, minutes) would otherwise slow every other upload
    down; loads are short, so they go first.

    Examples
    --------
    >>> with loading():
    ...     loads_in_progress()
    1
    >>> loads_in_progress()
    0
    """
    global _loads_in_progress
    with _LOADS:
        _loads_in_progress += 1
    try:
        yield
    finally:
        with _LOADS:
            _loads_in_progress -= 1
            _LOADS.notify_all()


def loads_in_progress() -> int:
    """How many recordings are being loaded in this process now."""
    return _loads_in_progress


def _wait_for_loads(current: Callable[[], bool]) -> None:
    with _LOADS:
        while _loads_in_progress and current() and not _EXITING.is_set():
            _LOADS.wait(_LOAD_POLL_S)


# Set once, at process exit: the SleepLM jobs stop at their next batch.
_EXITING = threading.Event()
_RUNNING: set[threading.Thread] = set()
_RUNNING_LOCK = threading.Lock()


def start_background(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    """Run ``target(*args)`` in a daemon thread that `stop_background_jobs` joins at process exit.

    Examples
    --------
    >>> done = []
    >>> start_background(done.append, 1, name="example").join()
    >>> done
    [1]
    """
    def run() -> None:
        try:
            target(*args)
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(thread)

    thread = threading.Thread(target=run, daemon=True, name=name)
    with _RUNNING_LOCK:
        _RUNNING.add(thread)
    thread.start()
    return thread


def stop_background_jobs() -> None:
    """Stop the SleepLM jobs at their next batch and join every `start_background` thread.

    Registered with ``atexit`` (it runs before the interpreter stops daemon threads); a YASA
    cross-check or a weights load cannot be interrupted and is waited for.
    """
    _EXITING.set()
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for thread in running:
        thread.join()


atexit.register(stop_background_jobs)


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: a thread id is a process id for setpriority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError, PermissionError) as exc:  # other systems: normal priority
        logger.debug("background priority unchanged (%s)", exc)


def needs_sleeplm_staging(night: NightContext) -> bool:
    """True when the file has no usable scoring of its own (so SleepLM's stages replace YASA's)."""
    staging = getattr(night.analysis, "staging", None)
    return staging is not None and staging.source != "reference scoring"


def plan_sleeplm_jobs(night: NightContext) -> None:
    """List the jobs `run_sleeplm_jobs` will do in ``night.sleeplm_jobs`` (all at 0 %)."""
    night.sleeplm_jobs = {EMBEDDINGS: 0.0, **({STAGE_CAPTIONS: 0.0} if needs_sleeplm_staging(night) else {})}


def run_sleeplm_jobs(night: NightContext, model: Any, current: Callable[[], bool] = lambda: True) -> None:
    """Embed `night`, then stage it from SleepLM captions when it has no scoring; never raises.

    `current()` is asked before each job and after every batch: False (the session loaded another
    night or closed) stops, as does the process exiting.
    """
    _lower_priority()
    if not night.sleeplm_jobs:
        plan_sleeplm_jobs(night)
    with _MODEL_TURN:
        try:
            _wait_for_loads(current)
            _check(current)
            _embed(night, model, current)
            if STAGE_CAPTIONS in night.sleeplm_jobs:
                _wait_for_loads(current)
                _check(current)
                _stage(night, model, current)
        except _Stopped:
            logger.info("background SleepLM work stopped: the session moved on or the process is exiting")


class _Stopped(Exception):
    """Raised from a progress callback when the night is no longer the session's."""


def _check(current: Callable[[], bool]) -> None:
    if _EXITING.is_set() or not current():
        raise _Stopped


def _reporter(night: NightContext, job: str, current: Callable[[], bool]) -> Callable[..., None]:
    def report(done: float, *_: Any) -> None:
        _wait_for_loads(current)
        _check(current)
        night.sleeplm_jobs[job] = float(done)
        if job == EMBEDDINGS:
            night.embedding_progress = float(done)

    return report


def _embed(night: NightContext, model: Any, current: Callable[[], bool]) -> None:
    from sleeplm.model.embedding_cache import night_embeddings

    try:
        night.embeddings = night_embeddings(model, night.rec, progress=_reporter(night, EMBEDDINGS, current))
        night.embedding_progress = night.sleeplm_jobs[EMBEDDINGS] = 1.0
    except _Stopped:
        raise
    except Exception as exc:  # the fallback search keeps working; the overview reports the status
        logger.exception("SleepLM embedding failed")
        night.sleeplm_jobs[EMBEDDINGS] = f"failed ({type(exc).__name__})"
        night.model_status = "SleepLM embedding failed; retrieval uses measurements"


def _stage(night: NightContext, model: Any, current: Callable[[], bool]) -> None:
    import numpy as np

    from sleeplm.measure.analysis import restage
    from sleeplm.measure.staging import StagingResult, agreement, stage_from_caption

    try:
        captions = model.caption(night.rec.epochs, domain="stage_event",
                                 progress=_reporter(night, STAGE_CAPTIONS, current))
    except _Stopped:
        raise
    except Exception as exc:
        logger.exception("SleepLM stage captions failed")
        night.sleeplm_jobs[STAGE_CAPTIONS] = f"failed ({type(exc).__name__})"
        return
    night.captions["stage_event"] = list(captions)
    stages = np.array([stage_from_caption(text) for text in captions], dtype=object)
    before = night.analysis.staging
    named = float(np.mean(stages != "?")) if len(stages) else 0.0
    if named < MIN_NAMED_SHARE:  # captions that mostly name no stage do not replace a full hypnogram
        night.sleeplm_jobs[STAGE_CAPTIONS] = 1.0
        before.unavailable = {**(before.unavailable or {}), "sleeplm": (
            f"SleepLM's stage captions named a stage for only {named:.0%} of epochs; the {before.source} stages are kept")}
        night.version += 1
        return
    compared = agreement(stages, before.hypnogram, before.source) if before.hypnogram is not None else None
    staging = StagingResult(stages, "sleeplm", compared, before.unavailable)
    try:
        with night.analysis_lock:  # a rule change meanwhile is re-staged, not lost
            night.analysis = restage(night.rec, night.analysis, staging)
    except Exception as exc:  # the YASA-staged analysis stays in force
        logger.exception("re-measuring the night with SleepLM stages failed")
        night.sleeplm_jobs[STAGE_CAPTIONS] = f"failed ({type(exc).__name__})"
        return
    night.sleeplm_jobs[STAGE_CAPTIONS] = 1.0
    night.version += 1


def jobs_pending(night: NightContext | None) -> bool:
    """True while a background SleepLM job of `night` is not finished."""
    return night is not None and any(isinstance(v, float) and v < 1.0 for v in night.sleeplm_jobs.values())
