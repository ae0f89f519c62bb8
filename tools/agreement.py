"""Tool `scoring_agreement`: how the product's own scoring compares with the technician's."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from langchain.tools import ToolRuntime, tool
from pydantic import Field

from sleeplm.measure.agreement import COMPARED_KINDS, SCORING_NAMES, unmatched_events
from sleeplm.measure.agreement import technician_events as scored_by_technician
from sleeplm.terms import format_citation
from tools.context import NightContext, TimeRangeArgs, configure, night_tool_errors, rounded
from tools.events import MAX_LISTED, select_events

# Which events to list besides the agreement figures.
Listed = Literal["none", "missed", "extra"]


class AgreementArgs(TimeRangeArgs):
    kind: Literal[("all", *COMPARED_KINDS)] = Field(
        "all", description="event type the listed events are of: 'respiratory' (apneas+hypopneas), 'apnea', 'hypopnea', "
        "'desaturation', 'arousal', or 'all'")
    show_events: Listed = Field(
        "none", description="'missed' = the technician's events the automatic scoring did not find ('which events did you "
        "miss?'), 'extra' = automatic events the technician did not score, 'none' = the agreement figures only")


def _staging_findings(staging: dict | None) -> list[str]:
    if staging is None:
        return []
    lines = [f"Staging: Cohen's kappa {staging['kappa']}, accuracy {round(100 * staging['accuracy'], 1)}% over "
             f"{staging['n_epochs']} epochs staged by both (automatic stages from {staging['automatic_source']})."]
    confusions = sorted(((n, tech, auto) for tech, row in zip(staging["stages"], staging["confusion"])
                         for auto, n in zip(staging["stages"], row) if tech != auto and n), reverse=True)[:3]
    if confusions:
        lines.append("Most frequent disagreements (technician -> automatic): "
                     + ", ".join(f"{tech} -> {auto} in {n} epochs" for n, tech, auto in confusions) + ".")
    return lines


@tool("scoring_agreement", args_schema=AgreementArgs)
@night_tool_errors
def scoring_agreement(kind: str = "all", show_events: str = "none", start: str | None = None, end: str | None = None, *,
                      runtime: ToolRuntime[NightContext]) -> dict:
    """Compare this product's own scoring with the technician's scoring that came with the recording:
    staging agreement (Cohen's kappa, confusion matrix), event precision and recall per type (matched
    at overlap IoU >= 0.2), AHI and ODI both ways, and optionally the events the automatic scoring
    missed or added, each with clock time, elapsed time and epochs.
    Use for 'how does your scoring compare with the technician's?', 'which events did you miss?',
    'do you agree with the sleep lab?', 'what did you score that the technician did not?'."""
    night = runtime.context
    analysis = night.compare_scorings()
    agreement = analysis.agreement
    first, last = night.span(start, end)
    per_type = agreement["events"]
    # Most telling first (the model may read only the first few): staging, breathing events, the indices.
    staging = agreement["staging"]
    findings = [f"Compared with the technician's scoring (answers use {SCORING_NAMES[analysis.scoring]}): "
                + (f"staging Cohen's kappa {staging['kappa']}, accuracy {round(100 * staging['accuracy'], 1)}% over "
                   f"{staging['n_epochs']} epochs staged by both (automatic stages from {staging['automatic_source']})."
                   if staging is not None and staging["accuracy"] is not None else
                   f"staging not compared ({agreement['not_compared'].get('staging', 'nothing staged by both')}).")]
    indices = agreement["indices"]

    def shown(value) -> str:
        return "not available" if value is None else f"{value}/h"

    findings.append(f"AHI: technician {shown(indices['ahi']['technician'])}, automatic {shown(indices['ahi']['automatic'])}; "
                    f"ODI: technician {shown(indices['odi']['technician'])}, automatic {shown(indices['odi']['automatic'])} "
                    "(each per hour of its own sleep).")
    type_lines = [f"{name.capitalize()} events: the technician scored {e['n_technician']}, the automatic scoring found "
                  f"{e['n_automatic']}; {e['tp']} matched (precision {e['precision']}, recall {e['recall']}), "
                  f"{e['fn']} missed, {e['fp']} extra." for name, e in per_type.items()]
    rest = type_lines + _staging_findings(staging)[1:] + [f"Not compared: {what} ({why})."
                                                          for what, why in agreement["not_compared"].items()]
    listed, rows = None, []
    if show_events != "none":
        kinds = [k for k in (COMPARED_KINDS[1:] if kind == "all" else [kind]) if k in per_type]
        technician = scored_by_technician(night.rec)
        automatic = analysis.scorings["automatic"].events
        chosen = []
        for name in kinds:
            missed, extra = unmatched_events(technician, automatic, name)
            chosen.append(select_events(missed if show_events == "missed" else extra, "all", first, last))
        found = pd.concat(chosen, ignore_index=True).sort_values("start_s", kind="stable") if chosen else technician.iloc[:0]
        for row in found.itertuples():
            citation = night.rec.cite(row.start_s, max(row.end_s, row.start_s + 1))
            rows.append({"kind": row.kind, "subtype": row.subtype or None, "duration_s": rounded(row.end_s - row.start_s),
                         **{k: citation[k] for k in ("clock_start", "clock_end", "elapsed_start", "elapsed_end",
                                                     "epoch_start", "epoch_end") if citation.get(k) is not None}})
        who = "the automatic scoring missed (scored by the technician)" if show_events == "missed" else \
            "the automatic scoring added (not scored by the technician)"
        where = format_citation(night.cite(first, last))
        # The events asked for lead; the agreement figures follow.
        findings = ([f"{len(rows)} {'' if kind == 'all' else kind + ' '}event(s) {who} in {where}."]
                    + [f"{row['kind']} at {format_citation(row)}." for row in rows[:4]] + findings)
        listed = show_events
    findings += rest
    return {
        "tool": "scoring_agreement",
        "source": "technician vs automatic",
        "scoring_in_use": analysis.scoring,
        "findings": findings,
        "staging": agreement["staging"],
        "events": per_type,
        "indices": agreement["indices"],
        "min_iou": agreement["min_iou"],
        "not_compared": agreement["not_compared"],
        "listed": listed,
        "listed_events": rows[:MAX_LISTED],
        "n_listed": len(rows),
    }


configure(scoring_agreement)
