"""Tool `plot`: a figure for the UI (hypnogram, events over the night, or raw epochs).

The figures are `sleeplm.report.plots`' own (the app's overview and epoch viewer), drawn over the
range the agent asks for.
"""

from __future__ import annotations

from typing import Literal

from langchain.tools import ToolRuntime, tool
from langchain_core.tools import ToolException
from pydantic import Field

from sleeplm.report.plots import MAX_VIEW_EPOCHS, plot_epochs, plot_hypnogram, plot_night
from sleeplm.terms import format_citation
from tools.context import NightContext, TimeRangeArgs, configure, night_tool_errors

PlotKind = Literal["hypnogram", "events", "raw"]


class PlotArgs(TimeRangeArgs):
    kind: PlotKind = Field(description=f"'hypnogram' (sleep stages), 'events' (stages with measured events and SpO2), 'raw' (signals of up to {MAX_VIEW_EPOCHS} epochs, physical units)")


@tool("plot", args_schema=PlotArgs, response_format="content_and_artifact")
@night_tool_errors
def plot(kind: str, start: str | None = None, end: str | None = None, *, runtime: ToolRuntime[NightContext]):
    """Draw a figure for the user: the hypnogram (sleep stages over time), the events view
    (stages plus measured apneas, hypopneas, desaturations, arousals and SpO2), or raw signals of
    up to 10 epochs. The figure is shown to the user; you get a short description of it.
    Use when the user asks to see, show, plot or visualise something."""
    night = runtime.context
    first, last = night.span(start, end)
    where = format_citation(night.cite(first, last))
    if kind == "raw":
        fig = plot_epochs(night.rec, first, last)
        source = "measured"
    elif kind == "hypnogram":
        if night.hypnogram is None:
            raise ToolException("No sleep stages are available for this night, so there is no hypnogram to plot.")
        fig = plot_hypnogram(night.rec, night.hypnogram, night.stage_source, first, last)
        source = night.stage_source
    else:
        events = night.require_analysis().events
        fig = plot_night(night.rec, night.hypnogram, events, night.stage_source, first=first, last=last)
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
