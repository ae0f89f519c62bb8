"""Tool `abnormal_periods`: when breathing, oxygen or heart rate looked abnormal, as ranked periods.

Events closer than a stated gap are grouped into periods (`sleeplm.measure.periods.event_periods`);
the periods come ranked by how disturbed they are, with the quiet stretches between them, and the
same grouping is drawn as a timeline figure for the chat.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from langchain.tools import ToolRuntime, tool
from pydantic import Field

from sleeplm.io.recording import EPOCH_SEC
from sleeplm.measure.periods import DEFAULT_GAP_S, event_periods, quiet_stretches
from sleeplm.measure.quality import bad_seconds
from sleeplm.measure.respiratory import spo2_per_second
from sleeplm.report.plots import plot_periods
from sleeplm.terms import EVENT_GROUPS, format_citation
from tools.compare import period_mask
from tools.context import NightContext, TimeRangeArgs, configure, night_tool_errors, position_per_epoch
from tools.events import counted, not_measured, not_measured_findings, select_events

PeriodKind = Literal["respiratory", "apnea", "hypopnea", "desaturation", "arousal", "heart_rate", "tachycardia",
                     "bradycardia", "disturbed"]
# "When was my sleep most disturbed": everything that breaks sleep or breathing.
DISTURBED = ("apnea", "hypopnea", "desaturation", "arousal")
MAX_PERIODS = 5
MAX_QUIET = 2
QUIET_MIN_S = 1800.0

TOPIC_WORDS = {  # what the question is about, per kind
    "respiratory": ("respiratory events (apneas and hypopneas)", "breathing problems"),
    "desaturation": ("oxygen desaturations", "oxygen drops"),
    "heart_rate": ("heart-rate episodes (tachycardia or bradycardia)", "heart rate problems"),
    "disturbed": ("events (apneas, hypopneas, desaturations, arousals)", "disturbances"),
}
PATIENT_STAGES = {"W": "awake", "N1": "light sleep", "N2": "light sleep", "N3": "deep sleep", "R": "dream sleep (REM)"}
PATIENT_POSITIONS = {"Supine": "on your back", "Left": "on your left side", "Right": "on your right side",
                     "Prone": "on your stomach", "Upright": "sitting up"}


class PeriodArgs(TimeRangeArgs):
    kind: PeriodKind = Field(
        "respiratory",
        description="which events: 'respiratory' (apneas+hypopneas, breathing), 'desaturation' (oxygen drops), "
        "'heart_rate' (tachy+brady), 'arousal', 'disturbed' (all events that disturb sleep), or one kind",
    )
    within: str | None = Field(None, description="only events in this part of the night: 'REM', 'NREM', 'supine', 'non-supine', 'deep sleep'; empty = all")
    gap_min: float = Field(DEFAULT_GAP_S / 60, ge=0.5, le=60, description="events less than this many minutes apart join one period")


def _events(n: int) -> str:
    return f"{n} event{'' if n == 1 else 's'}"


def _mix(minutes: dict, names: dict | None = None) -> str:
    """'REM 40.0 min, N2 12.0 min' (top two), or patient words ('dream sleep (REM)')."""
    parts = list(minutes.items())[:2]
    if names is None:
        return ", ".join(f"{label} {value} min" for label, value in parts)
    merged: dict[str, float] = {}
    for label, value in parts:
        merged[names.get(label, label.lower())] = merged.get(names.get(label, label.lower()), 0) + value
    return " and ".join(merged)


def _period_line(night: NightContext, row, patient: bool) -> str:
    where = format_citation(night.cite(row.first_epoch, row.last_epoch))
    kinds = (" and " if patient else ", ").join(counted(k, n, patient) for k, n in row.kinds.items())
    if patient:
        return (f"#{row.rank}: {where}. {_events(row.n_events)}: {kinds}. That is about {row.events_per_h_sleep} per hour of sleep."
                + (f" It was mostly in {_mix(row.stage_min, PATIENT_STAGES)}" if row.stage_min else "")
                + (f", lying {_mix(row.position_min, PATIENT_POSITIONS)}" if row.position_min else "")
                + ("." if row.stage_min or row.position_min else "")
                + (f" Your oxygen level went down to {row.spo2_min_pct}%." if row.spo2_min_pct is not None else ""))
    return (f"#{row.rank}: {where}: {_events(row.n_events)} ({kinds}), {row.events_per_h_sleep} events/h of sleep"
            + (f"; stages {_mix(row.stage_min)}" if row.stage_min else "")
            + (f"; position {_mix(row.position_min)}" if row.position_min else "")
            + (f"; lowest SpO2 {row.spo2_min_pct}%" if row.spo2_min_pct is not None else "") + ".")


def _spo2(night: NightContext) -> np.ndarray | None:
    artefacts = getattr(night.analysis, "artefacts", None)
    n_seconds = night.rec.n_epochs * EPOCH_SEC
    bad = np.zeros(n_seconds, dtype=bool) if artefacts is None else bad_seconds(artefacts, ("SpO2",), n_seconds)
    return spo2_per_second(night.rec, bad)


def _period_record(night: NightContext, row) -> dict:
    return {
        "rank": int(row.rank), **night.cite(row.first_epoch, row.last_epoch), "n_events": int(row.n_events),
        "events_per_h_sleep": row.events_per_h_sleep, "sleep_min": row.sleep_min, "kinds": row.kinds,
        "stage_min": row.stage_min, "position_min": row.position_min, "spo2_min_pct": row.spo2_min_pct,
    }


@tool("abnormal_periods", args_schema=PeriodArgs, response_format="content_and_artifact")
@night_tool_errors
def abnormal_periods(kind: str = "respiratory", start: str | None = None, end: str | None = None,
                     within: str | None = None, gap_min: float = DEFAULT_GAP_S / 60, *, runtime: ToolRuntime[NightContext]):
    """When breathing, oxygen or heart rate looked abnormal, or when sleep was most disturbed:
    events grouped into periods (events less than gap_min apart join), ranked most disturbed
    first, each with clock time, elapsed time and epoch range, event count, events per hour of
    sleep, event types, sleep stages, body position and lowest SpO2, plus the quiet stretches
    with no such event. Shows a timeline figure to the user.
    Use for 'when did breathing/oxygen/heart rate look abnormal', 'when was my sleep most disturbed',
    'worst part of the night'; with `within` for 'and in REM?' or 'when supine?'."""
    night = runtime.context
    analysis = night.require_analysis()
    first, last = night.span(start, end)
    kinds = DISTURBED if kind == "disturbed" else EVENT_GROUPS.get(kind, (kind,))
    selected = select_events(analysis.events[analysis.events["kind"].isin(kinds)], "all", first, last)
    if within:
        mask = period_mask(night, within)
        epoch_of = (selected["start_s"] // EPOCH_SEC).astype(int).clip(0, night.rec.n_epochs - 1).to_numpy()
        selected = selected[mask[epoch_of]]
    hypnogram = night.hypnogram
    periods = event_periods(selected, night.rec.n_epochs, hypnogram, position_per_epoch(night), _spo2(night),
                            gap_s=gap_min * 60)
    quiet = quiet_stretches(selected, night.rec.n_epochs, hypnogram, min_s=QUIET_MIN_S)
    quiet = quiet[(quiet["first_epoch"] >= first) & (quiet["last_epoch"] <= last)]
    patient = night.audience == "patient"
    topic = TOPIC_WORDS.get(kind, (f"{kind.replace('_', ' ')} events",) * 2)[patient]
    whole = first == 0 and last == night.rec.n_epochs - 1
    where = ("the whole night" if whole else format_citation(night.cite(first, last))) + (f", {within} only" if within else "")
    gap = f"{gap_min:g} min"
    missing = not_measured(night, kinds)
    unmeasured = set(missing) == set(kinds) and periods.empty  # not measurable: never "none were measured"
    if unmeasured:
        findings = not_measured_findings(missing, patient)
    elif periods.empty:
        findings = [f"No {topic} were measured in {where}."]
    else:
        head = (f"{_events(len(selected))} ({topic}) in {where}, grouped into {len(periods)} period(s) "
                f"(events less than {gap} apart are one period). Most disturbed first:") if not patient else (
            f"We counted {len(selected)} {topic} in {where}. Events less than {gap} apart count as one period. "
            f"There were {len(periods)} periods. The worst come first.")
        findings = [head] + [_period_line(night, row, patient) for row in periods.head(MAX_PERIODS).itertuples()]
    if not quiet.empty and not within and not unmeasured:  # quiet stretches of a stage set would include the other stages
        findings.append("Quiet stretches with none of these events: " + "; ".join(
            f"{format_citation(night.cite(q.first_epoch, q.last_epoch))}, {q.minutes} min" for q in quiet.head(MAX_QUIET).itertuples()) + ".")
    if missing and not unmeasured:
        findings += not_measured_findings(missing, patient)
    content = {
        "tool": "abnormal_periods",
        "source": f"measured (stages from {night.stage_source})" if night.stage_source else "measured",
        "kind": kind,
        "within": within,
        "gap_min": gap_min,
        "range": night.cite(first, last),
        "findings": findings,
        "n_events": None if unmeasured else int(len(selected)),
        "n_periods": int(len(periods)),
        "periods": [_period_record(night, row) for row in periods.head(MAX_PERIODS).itertuples()],
        "quiet": [{**night.cite(q.first_epoch, q.last_epoch), "minutes": q.minutes} for q in quiet.head(MAX_QUIET).itertuples()],
    }
    figure = plot_periods(night.rec, periods.head(MAX_PERIODS), hypnogram, selected, night.stage_source, first, last)
    figure.suptitle(f"{topic}: ranked periods, {where}", fontsize=9)
    return content, figure


configure(abnormal_periods)
