"""The per-conversation night the tools run on, and what every tool shares.

Tools never receive a file path from the language model: the loaded night travels in the
agent's runtime context (`ToolRuntime.context`), a `NightContext` built by the session.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import numpy as np
from langchain_core.tools import ToolException
from pydantic import BaseModel, BeforeValidator, Field

from tools.timeparse import TimeRangeError, resolve_range
from sleeplm.errors import SleepLMError
from sleeplm.terms import format_citation
from sleeplm.io.recording import CANONICAL_CHANNELS, Recording

__all__ = [
    "NightContext", "night_tool_errors", "configure", "validation_message", "rounded", "cited",
    "position_per_epoch", "TimeText", "TimeRangeArgs",
]

def _number_as_text(value: Any) -> Any:
    # Small models often send an epoch number as a JSON number; it means "epoch N".
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value))
    return value


# A time expression argument ("02:30", "3h10m", "epoch 120", "first REM period"); numbers are epochs.
TimeText = Annotated[str, BeforeValidator(_number_as_text)]


class TimeRangeArgs(BaseModel):
    """The optional time range of a tool's arguments (read by `tools.timeparse.resolve_range`)."""

    start: TimeText | None = Field(None, description="range start: clock '02:30', elapsed '3h10m', 'epoch 120', 'second half', "
                                   "'REM', 'first REM period'...; empty = start of night")
    end: TimeText | None = Field(None, description="range end, same forms; empty = end of the start phrase, or end of night")

@dataclass
class NightContext:
    """One loaded night and what has been computed on it.

    Attributes
    ----------
    rec : the loaded recording (de-identified by construction).
    analysis : `sleeplm.measure.analysis.NightAnalysis` (features, events, staging, summary), or None
        while it is missing.
    model : a loaded `sleeplm.model.inference.SleepLM`, or None when no weights are available.
    model_status : one sentence on why SleepLM is or is not available.
    embeddings : SleepLM signal embeddings [n_epochs, 512] once the background job is done.
    embedding_progress : fraction 0..1 of the background embedding job.
    sleeplm_jobs : the background SleepLM jobs of this night and their progress, e.g.
        {"embeddings": 1.0, "stage captions": 0.4}; "failed: ..." text for a job that failed.
    captions : SleepLM captions computed for every epoch, by domain (e.g. "stage_event").
    version : incremented whenever a background job changes the analysis (stages, events).
    audience : "clinician" or "patient" (style of the current turn).
    named_periods : the periods the previous answer named, for follow-ups ("show me that period",
        "and in REM?"): {"tool", "args", "periods": [citation dicts with "rank"]}, or None.
    explained_event : id of the event `explain_event` explained last ("was that a real event?"), or None.
    analysis_lock : held while the analysis is replaced from a copy of it (the comparison with the
        technician's scoring, a re-scoring under another rule, SleepLM's re-staging), so that one
        replacement never overwrites another made meanwhile.
    """

    rec: Recording
    analysis: Any = None
    model: Any = None
    model_status: str = "SleepLM weights are not loaded."
    embeddings: np.ndarray | None = None
    embedding_progress: float = 0.0
    sleeplm_jobs: dict = field(default_factory=dict)
    captions: dict = field(default_factory=dict)
    version: int = 0
    audience: str = "clinician"
    named_periods: dict | None = None
    explained_event: str | None = None
    analysis_lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)

    def compare_scorings(self) -> Any:
        """The analysis with the product's own scoring compared with the technician's, computed once
        (YASA and the events in its stages, a few seconds) when the recording came with scoring.

        Raises ToolException when the recording came without scoring or has no analysis.
        """
        from sleeplm.measure.agreement import has_technician_scoring
        from sleeplm.measure.analysis import compare_with_automatic

        self.require_analysis()
        if not has_technician_scoring(self.rec):
            raise ToolException("No scoring came with this recording (no technician's stages or events), so there is "
                                "nothing to compare the automatic scoring with; all results are automatic.")
        with self.analysis_lock:  # the session's background check may be computing it already
            if self.analysis.agreement is None:
                self.analysis = compare_with_automatic(self.rec, self.analysis)
                self.version += 1
        return self.analysis

    @property
    def scoring(self) -> str:
        """Whose scoring the results use: "technician" or "automatic"."""
        return getattr(self.analysis, "scoring", "automatic")

    @property
    def hypnogram(self) -> np.ndarray | None:
        """Stage labels per epoch: the analysis' staging, else the file's own scoring."""
        staging = getattr(self.analysis, "staging", None)
        if staging is not None and getattr(staging, "hypnogram", None) is not None:
            return np.asarray(staging.hypnogram)
        if self.rec.reference is not None and self.rec.reference.stages is not None:
            return np.asarray(self.rec.reference.stages)
        return None

    @property
    def stage_source(self) -> str | None:
        """Where the stages come from: "reference scoring", "sleeplm" or "yasa"."""
        staging = getattr(self.analysis, "staging", None)
        if staging is not None and getattr(staging, "hypnogram", None) is not None:
            return staging.source
        if self.hypnogram is not None:
            return "reference scoring"
        return None

    def require_analysis(self) -> Any:
        if self.analysis is None:
            raise ToolException(
                "The measurements of this night are not available (analysis did not run); "
                "only recording_overview can answer."
            )
        return self.analysis

    def span(self, start: str | int | None, end: str | int | None) -> tuple[int, int]:
        """Inclusive epoch range of a tool's start/end arguments; readable errors for the LLM."""
        try:
            return resolve_range(start, end, self.rec, self.hypnogram)
        except TimeRangeError as exc:
            raise ToolException(str(exc)) from exc

    def cite(self, first: int, last: int) -> dict:
        """Clock, elapsed and epoch citation of an inclusive epoch range."""
        return cited(self.rec.cite_epochs(first, last))

    def where(self, first: int, last: int) -> str:
        """Short prose citation, e.g. ``"02:30:00-02:35:00 (elapsed 3h10m00s-3h15m00s, epochs 380-389)"``."""
        return format_citation(self.cite(first, last))


def cited(citation: dict) -> dict:
    """A `Recording.cite` dict trimmed to what the language model needs to quote."""
    keys = ("clock_start", "clock_end", "elapsed_start", "elapsed_end", "epoch_start", "epoch_end")
    return {key: citation[key] for key in keys if citation.get(key) is not None}


def rounded(value: Any, digits: int = 1) -> Any:
    """JSON-safe rounding: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if not math.isfinite(value) else round(value, digits)
    return value


def position_per_epoch(night: NightContext) -> np.ndarray | None:
    """Body-position code per epoch (median of the POS channel), or None without a position channel."""
    if not night.rec.channel_present[CANONICAL_CHANNELS.index("POS")]:
        return None
    pos = night.rec.epochs[:, CANONICAL_CHANNELS.index("POS"), :]
    return np.round(np.median(pos, axis=1)).astype(int)


def night_tool_errors(func: Callable) -> Callable:
    """Turn a refusal from our own library (`SleepLMError`: bad range, missing channel...) into a
    `ToolException` whose message the agent can read and act on.

    Any other exception is a bug and is not caught here: it reaches the session, which logs it with
    its traceback and answers "internal error" with a reference id.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SleepLMError as exc:
            raise ToolException(str(exc)) from exc

    return wrapper


def validation_message(error: Exception) -> str:
    """Readable message for arguments that do not fit a tool's schema."""
    details = getattr(error, "errors", None)
    if callable(details):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in details()]
        return "Invalid arguments: " + "; ".join(parts) + ". Fix them and call the tool again."
    return f"Invalid arguments: {error}. Fix them and call the tool again."


def configure(tool_obj):
    """Make a tool report its errors (bad arguments, failures) as text instead of raising."""
    tool_obj.handle_tool_error = True
    tool_obj.handle_validation_error = validation_message
    return tool_obj
