"""LangChain tools over one loaded night (one module per topic, one function per tool).

The night reaches the tools through the agent's runtime context (`tools.context.NightContext`);
`run_tool` calls a tool directly with a context, for the tool-only mode and for tests.
"""

from __future__ import annotations

import json
from typing import Any

from langchain.tools import ToolRuntime
from langchain_core.messages import ToolMessage

from tools.agreement import scoring_agreement
from tools.captions import caption_epochs
from tools.compare import compare_periods
from tools.context import NightContext
from tools.events import list_events
from tools.explain import ahi_under_rules, explain_event
from tools.overview import recording_overview
from tools.periods import abnormal_periods
from tools.plots import plot
from tools.retrieval import find_epochs
from tools.summary import night_summary
from tools.timeline import concept_timeline

__all__ = [
    "ALL_TOOLS", "NightContext", "run_tool", "tool_by_name", "parse_result", "recording_overview", "night_summary",
    "caption_epochs", "find_epochs", "list_events", "abnormal_periods", "compare_periods", "plot", "concept_timeline",
    "scoring_agreement", "explain_event", "ahi_under_rules",
]

ALL_TOOLS = [recording_overview, night_summary, caption_epochs, find_epochs, abnormal_periods, list_events, compare_periods, plot,
             concept_timeline, scoring_agreement, explain_event, ahi_under_rules]


def tool_by_name(name: str, tools=None):
    """The tool called `name` among `tools` (default `ALL_TOOLS`); KeyError listing the known names otherwise."""
    tools = ALL_TOOLS if tools is None else tools
    for candidate in tools:
        if candidate.name == name:
            return candidate
    raise KeyError(f"unknown tool {name!r}; known: {', '.join(t.name for t in tools)}")


def run_tool(name: str, args: dict[str, Any], night: NightContext, call_id: str = "direct", tools=None) -> ToolMessage:
    """Run one tool on `night` outside an agent; refusals (bad arguments, a range outside the night,
    a missing channel) come back as a ToolMessage with status "error", a bug raises.

    `tools` is the set to look `name` up in (default `ALL_TOOLS`; `tools.cohort.COHORT_TOOLS` with
    a `tools.cohort.CohortContext` as `night`).

    Returns
    -------
    ToolMessage whose `content` is the JSON result (or the error text) and `artifact` the
    figure for `plot`.
    """
    runtime = ToolRuntime(state={}, context=night, config={}, stream_writer=lambda _: None, tool_call_id=call_id, store=None)
    return tool_by_name(name, tools).invoke({"type": "tool_call", "name": name, "id": call_id, "args": {**args, "runtime": runtime}})


def parse_result(content: Any) -> Any:
    """A tool message's content as data (JSON decoded when possible)."""
    if isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content
