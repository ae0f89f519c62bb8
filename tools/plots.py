"""Tool `plot`: a figure for the UI (hypnogram, events over the night, or raw epochs)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from langchain.tools import ToolRuntime, tool
from langchain_core.tools import ToolException
# Figure objects, not pyplot: tools run in worker threads, and pyplot's global figure
# registry would keep every figure of a long conversation alive.
from matplotlib.figure import Figure
from pydantic import BaseModel, Field

from sleeplm.recording import CANONICAL_CHANNELS, EPOCH_SEC, SFREQ
from tools.context import NightContext, TimeText, configure, night_tool_errors, phrase_citation

PlotKind = Literal["hypnogram", "events", "raw"]
# Ten channels of raw signal stay readable up to about five minutes.
MAX_RAW_EPOCHS = 10
STAGE_LEVELS = {"W": 4, "R": 3, "N1": 2, "N2": 1, "N3": 0}
EVENT_ROWS = ("apnea", "hypopnea", "desaturation", "arousal", "tachycardia", "bradycardia")


class PlotArgs(BaseModel):
    kind: PlotKind = Field(description="'hypnogram' (sleep stages), 'events' (stages with measured events and SpO2), 'raw' (signals of a few epochs)")
    start: TimeText | None = Field(None, description="range start: clock '02:30', elapsed '3h10m', 'epoch 120', 'first REM period'...; empty = start of night")
    end: TimeText | None = Field(None, description="range end, same forms; empty = end of the start phrase, or end of night")


def _hours_axis(ax, night: NightContext, first: int, last: int) -> None:
    ticks = np.linspace(first, last + 1, 7)
    ax.set_xticks(ticks * EPOCH_SEC / 3600)
    ax.set_xticklabels([night.rec.epoch_clock(int(min(t, night.rec.n_epochs - 1))) or night.rec.epoch_elapsed(int(t)) for t in ticks], fontsize=8)
    ax.set_xlim(first * EPOCH_SEC / 3600, (last + 1) * EPOCH_SEC / 3600)


def _stage_axis(ax, night: NightContext, first: int, last: int) -> None:
    hypnogram = night.hypnogram
    if hypnogram is None:
        raise ToolException("No sleep stages are available for this night, so there is no hypnogram to plot.")
    levels = np.array([STAGE_LEVELS.get(s, np.nan) for s in hypnogram[first : last + 1]], dtype=float)
    hours = np.arange(first, last + 2) * EPOCH_SEC / 3600
    ax.stairs(levels, hours, color="k", baseline=None)
    rem = np.where(levels == STAGE_LEVELS["R"], levels, np.nan)
    ax.stairs(rem, hours, color="tab:red", linewidth=3, baseline=None)
    ax.set_yticks(list(STAGE_LEVELS.values()), list(STAGE_LEVELS.keys()))
    ax.set_ylabel(f"stage ({night.stage_source})", fontsize=8)


def _events_axis(ax, night: NightContext, first: int, last: int) -> None:
    events = night.require_analysis().events
    lo, hi = first * EPOCH_SEC, (last + 1) * EPOCH_SEC
    for row, kind in enumerate(EVENT_ROWS):
        sel = events[(events["kind"] == kind) & (events["end_s"] > lo) & (events["start_s"] < hi)]
        spans = [(s / 3600, (e - s) / 3600) for s, e in zip(sel["start_s"], sel["end_s"])]
        ax.broken_barh(spans, (row - 0.4, 0.8), color=f"C{row}")
    ax.set_yticks(range(len(EVENT_ROWS)), EVENT_ROWS, fontsize=8)


def _raw_figure(night: NightContext, first: int, last: int):
    present = [i for i, on in enumerate(night.rec.channel_present) if on]
    if not present:
        raise ToolException("This recording has none of the SleepLM channels, so there are no raw signals to plot.")
    fig = Figure(figsize=(11, 0.9 * len(present) + 1))
    axes = fig.subplots(len(present), 1, sharex=True, squeeze=False)
    seconds = np.arange((last - first + 1) * EPOCH_SEC * SFREQ) / SFREQ + first * EPOCH_SEC
    for ax, channel in zip(axes[:, 0], present):
        data = night.rec.epochs[first : last + 1, channel, :].reshape(-1)
        ax.plot(seconds, data, linewidth=0.5, color="k")
        ax.set_ylabel(CANONICAL_CHANNELS[channel], rotation=0, ha="right", fontsize=8)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("seconds from recording start (signals z-scored, 64 Hz)")
    return fig


@tool("plot", args_schema=PlotArgs, response_format="content_and_artifact")
@night_tool_errors
def plot(kind: str, start: str | None = None, end: str | None = None, *, runtime: ToolRuntime[NightContext]):
    """Draw a figure for the user: the hypnogram (sleep stages over time), the events view
    (stages plus measured apneas, hypopneas, desaturations, arousals and SpO2), or raw signals of
    up to 10 epochs. The figure is shown to the user; you get a short description of it.
    Use when the user asks to see, show, plot or visualise something."""
    night = runtime.context
    first, last = night.span(start, end)
    where = phrase_citation(night.cite(first, last))
    if kind == "raw":
        if last - first + 1 > MAX_RAW_EPOCHS:
            raise ToolException(f"Raw signals can be shown for at most {MAX_RAW_EPOCHS} epochs (5 min); pick a shorter range.")
        fig = _raw_figure(night, first, last)
        source = "measured"
    elif kind == "hypnogram":
        fig = Figure(figsize=(11, 2.8))
        ax = fig.subplots()
        _stage_axis(ax, night, first, last)
        _hours_axis(ax, night, first, last)
        source = night.stage_source
    else:
        fig = Figure(figsize=(11, 5))
        ax_stage, ax_events = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
        _stage_axis(ax_stage, night, first, last)
        _events_axis(ax_events, night, first, last)
        _hours_axis(ax_events, night, first, last)
        source = "measured"
    fig.suptitle(f"{kind}: {where}", fontsize=9)
    fig.tight_layout()
    content = {
        "tool": "plot",
        "source": source,
        "kind": kind,
        "range": night.cite(first, last),
        "findings": [f"A {kind} figure of {where} is shown to the user."],
    }
    return content, fig


configure(plot)
