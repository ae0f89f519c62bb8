"""Tools `explain_event` (why an event was scored, or why a breathing reduction was not) and
`ahi_under_rules` (the night re-scored under the published rules, and how many events are clear-cut).

Both read the criteria the measurement layer attached to each event (`sleeplm.measure.rules`):
measured values, the rule's thresholds, margins, the path that set the type, signal quality and
the confidence; `ahi_under_rules` re-scores the night's cached candidates under each rule
(`sleeplm.measure.analysis.rescore`), without reading a signal again.

When the answers use the technician's scoring (it came with the recording), its events carry no
criteria (a scoring file gives a label, a duration, perhaps a nadir): both tools then answer from
the product's own automatic scoring, which is measured on such nights too, and say whose figures
are whose: `explain_event` gives the technician's event at the time asked and the automatic
candidate(s) overlapping it (accepted or near-miss, with their criteria), or says that the product
found none there; `ahi_under_rules` gives the automatic AHI under each rule and the technician's
AHI as a reference row ("technician (scoring file)"). When the technician scored no apneas or
hypopneas (a healthy night's file: stages, arousals, desaturations), the apneas, hypopneas and
near-misses in use are the product's own, judged in the technician's stages: both tools explain and
re-score those (`criteria_analysis`), so they agree with events.csv and the AHI in use.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Literal

import pandas as pd
from langchain.tools import ToolRuntime, tool
from langchain_core.tools import ToolException
from pydantic import BaseModel, Field

from sleeplm.io.recording import EPOCH_SEC
from sleeplm.measure.agreement import respiratory_by_technician
from sleeplm.measure.analysis import automatic_view, rescore
from sleeplm.measure.events import stacked
from sleeplm.measure.rules import CONFIDENCE_CUTOFFS, RULES, resolve_rule
from sleeplm.measure.summary import TECHNICIAN_SCORED
from sleeplm.terms import format_citation
from tools.context import NightContext, TimeText, configure, night_tool_errors, rounded

__all__ = ["explain_event", "ahi_under_rules", "EVENT_ID", "confidence_word", "criteria_analysis", "technician_in_use",
           "find_event", "explanation", "explain", "criteria_table"]

# Event ids as the events table writes them: R respiratory, D desaturation, A arousal, H heart rate, P position.
EVENT_ID = re.compile(r"^\s*(?:event\s*)?#?\s*([RDAHP])\s*-?\s*(\d{1,4})\s*$", re.IGNORECASE)
EXPLAINED_KINDS = ("apnea", "hypopnea", "desaturation", "arousal")
# How far (s) from the time asked an event may start and still be the one meant.
NEAR_S = 60.0
CRITERION_WORDS = {
    "flow_reduction_pct": ("airflow reduction", "%"), "duration_s": ("duration", " s"),
    "desaturation_pct": ("SpO2 fall", " %"), "associated_arousal": ("associated arousal", ""),
    "arousal_power_ratio": ("EEG alpha/beta power ratio", "x"),
}


def confidence_word(confidence: float | None) -> str:
    """'clear-cut' (>= 0.75), 'borderline' (0.5-0.75) or 'failed the rule' (< 0.5, a near-miss).

    Examples
    --------
    >>> confidence_word(0.92), confidence_word(0.6), confidence_word(0.3)
    ('clear-cut', 'borderline', 'failed the rule')
    """
    if confidence is None:
        return "not rated"
    if confidence >= CONFIDENCE_CUTOFFS[0]:
        return "clear-cut"
    return "borderline" if confidence >= 0.5 else "failed the rule"


class ExplainArgs(BaseModel):
    event: TimeText | None = Field(
        None, description="the event: its id ('R012'), a clock time ('02:14'), an elapsed time ('3h10m') or 'epoch 120'; "
        "empty = the event explained last in this conversation ('was that a real event?')",
        max_length=60,
    )
    kind: Literal["any", "apnea", "hypopnea", "respiratory", "desaturation", "arousal"] = Field(
        "any", description="the kind of event meant, when the question names one ('apnea at 02:14': 'apnea')",
    )


def technician_in_use(night: NightContext) -> bool:
    """True when the answers use the technician's scoring and it has events of a kind `explain_event`
    explains (they carry no criteria: the product's own scoring explains the same moments)."""
    analysis = night.require_analysis()
    return getattr(analysis, "scoring", "automatic") == "technician" and not _technician_events(analysis.events).empty


def criteria_analysis(night: NightContext):
    """The product's own scoring of the night, whose events carry their criteria: the analysis in use,
    or, when the technician's events are in use (`technician_in_use`), the automatic scoring
    (`sleeplm.measure.analysis.automatic_view`; computed now if the comparison has not run yet).
    When the technician scored no apneas or hypopneas, the ones in use are the product's own, judged
    in the technician's stages: the analysis in use then, with the automatic scoring's events of the
    kinds the technician scored (arousals, desaturations: the technician's carry no criteria) in place
    of the technician's. ToolException for a night measured without per-candidate measurements."""
    analysis = night.require_analysis()
    if technician_in_use(night):
        automatic = automatic_view(night.compare_scorings())
        analysis = automatic if respiratory_by_technician(night.rec) else _own_respiratory(night, automatic)
    if getattr(analysis, "candidates", None) is None:
        raise ToolException("This night's events carry no scoring criteria (they were not measured by this version); "
                            "list_events gives their times and measured values.")
    return analysis


def _own_respiratory(night: NightContext, automatic):
    """The analysis in use (its stages, apneas, hypopneas, near-misses, candidates and summary: the
    product's own, judged in the technician's stages) with the automatic scoring's events (`automatic`)
    of the kinds the technician scored in place of the technician's, and no other scoring (so that
    `rescore` re-scores the events in use only)."""
    in_use = night.require_analysis()
    technician = _technician_events(in_use.events)
    own = in_use.events[~in_use.events.index.isin(technician.index)]
    theirs = automatic.events[automatic.events["kind"].isin(set(technician["kind"]))]
    events = stacked(own, theirs).sort_values("start_s", kind="stable", ignore_index=True)
    return replace(in_use, events=events, scorings={}, agreement=None)


def find_event(night: NightContext, analysis, event: str | None, kind: str) -> tuple[pd.Series, str]:
    """The event meant (a row of the events or near-miss table) and 'scored' / 'near-miss'."""
    table = stacked(analysis.events, analysis.near_misses)
    table = table[table["kind"].isin((*EXPLAINED_KINDS, "near_miss"))]
    if not event:
        if not night.explained_event:
            raise ToolException("No event has been explained yet: name one by its time ('02:14', '3h10m', 'epoch 120') "
                                "or its id ('R012').")
        event = night.explained_event
    match = EVENT_ID.match(event)
    if match:
        wanted = f"{match.group(1).upper()}{int(match.group(2)):03d}"
        found = table[table["event_id"] == wanted]
        if found.empty:
            raise ToolException(f"There is no event {wanted} under the rule in force ({analysis.hypopnea_rule}); ids run "
                                f"{', '.join(table['event_id'].dropna().head(5))}...")
        row = found.iloc[0]
        return row, "near-miss" if row["kind"] == "near_miss" else "scored"
    first, last = night.span(event, None)
    lo, hi = first * EPOCH_SEC - NEAR_S, (last + 1) * EPOCH_SEC + NEAR_S
    kinds = {"any": (*EXPLAINED_KINDS,), "respiratory": ("apnea", "hypopnea")}.get(kind, (kind,))
    scored = table[table["kind"].isin(kinds)]
    near = table[(table["kind"] == "near_miss") & table["subtype"].isin(kinds)]
    middle = (first + last + 1) * EPOCH_SEC / 2
    for candidates, status in ((scored, "scored"), (near, "near-miss")):
        inside = candidates[(candidates["end_s"] >= lo) & (candidates["start_s"] <= hi)]
        if len(inside):
            # The respiratory event before its desaturation; then the one closest to the time asked.
            order = inside.assign(_far=(inside["start_s"] - middle).abs(), _resp=~inside["kind"].isin(("apnea", "hypopnea")))
            return order.sort_values(["_resp", "_far"]).iloc[0], status
    where = format_citation(night.cite(first, last))
    raise ToolException(f"No {'event' if kind == 'any' else kind} was scored or considered within {NEAR_S:g} s of {where} "
                        f"under the rule in force ({analysis.hypopnea_rule}); list_events lists the events of a time range.")


def _criterion_line(test: dict) -> str:
    words, unit = CRITERION_WORDS.get(test["criterion"], (test["criterion"], ""))
    if test["criterion"] == "associated_arousal":
        seen = "an arousal followed" if test["measured"] else "no arousal followed"
        ratio = f" (EEG power {test['arousal_power_ratio']}x its baseline)" if test.get("arousal_power_ratio") else ""
        return f"{seen}{ratio}"
    if test["measured"] is None:
        return f"{words} not measurable (rule needs >= {test['threshold']:g}{unit})"
    verdict = "passes" if test["passed"] else "fails"
    return f"{words} {test['measured']:g}{unit} (rule needs >= {test['threshold']:g}{unit}, margin {test['margin']:g}: {verdict})"


def explanation(night: NightContext, analysis, row: pd.Series, status: str, technician: bool = False) -> dict:
    """`row` (an event or near-miss of `analysis`) explained: criteria, failed ones, type path,
    quality, confidence, and findings; `technician`: the answers use the technician's scoring, so
    the findings say the event is the product's automatic scoring's."""
    evidence = row["evidence"] if isinstance(row["evidence"], dict) else {}
    criteria = evidence.get("criteria") or {}
    kind = row["subtype"] if status == "near-miss" else row["kind"]
    subtype = "" if status == "near-miss" else (row["subtype"] or "")
    citation = night.rec.cite(row["start_s"], row["end_s"])
    where = format_citation(citation)
    confidence = rounded(row.get("confidence"), 2)
    rule_name = criteria.get("rule", analysis.hypopnea_rule)
    title = RULES[rule_name].title if rule_name in RULES else rule_name
    tests = criteria.get("tests") or []
    required = [t for t in tests if t.get("group") == "all"]
    options = [t for t in tests if t.get("group") == "any"]
    who = "the product's automatic scoring" if technician else ""
    verdict = (f"{'accepted by ' + who if technician else 'scored'} under {title}." if status == "scored" else
               f"NOT scored{' by ' + who if technician else ''} under {title} (a near-miss).")
    findings = [f"{kind.capitalize()}{' (' + subtype + ')' if subtype else ''} {row['event_id']} at {where}: {verdict}"]
    findings.append("Criteria: " + "; ".join(_criterion_line(t) for t in required) + ".")
    if status == "near-miss":
        findings.append("Failed: " + "; ".join(_criterion_line(t) for t in _failed_tests(tests, criteria)) + ".")
    elif options:
        findings.append("Needs one of: " + "; or ".join(_criterion_line(t) for t in options) + ".")
    effort = [f"{name} {evidence[key]:g}" for name, key in (("thoracic", "effort_thx"), ("abdominal", "effort_abd"))
              if isinstance(evidence.get(key), (int, float))]
    if criteria.get("type_path") and kind in ("apnea", "hypopnea"):
        findings.append(f"Type: {criteria['type_path']}" + (f" (effort over the event, ratio to baseline: {', '.join(effort)})"
                                                            if effort else "") + ".")
    quality = criteria.get("signal_quality") or {}
    clean = ", ".join(f"{channel} {rounded(100 * share)} % artefact-free" for channel, share in quality.items())
    if confidence is not None:
        findings.append(f"Confidence {confidence} of 1 ({confidence_word(confidence)}: the smallest margin to the "
                        f"rule's thresholds, times the signal quality){'; signal quality over the event: ' + clean if clean else ''}.")
    night.explained_event = row["event_id"]
    return {
        "event_id": row["event_id"], "kind": kind, "subtype": subtype or None, "status": status,
        "duration_s": rounded(row["end_s"] - row["start_s"]), "confidence": confidence,
        "confidence_word": confidence_word(confidence),
        **{k: citation[k] for k in ("clock_start", "clock_end", "elapsed_start", "epoch_start", "epoch_end")
           if citation.get(k) is not None},
        "rule": rule_name, "rule_title": title, "criteria": tests, "failed": _failed_tests(tests, criteria) or None,
        "type_path": criteria.get("type_path"), "signal_quality": quality,
        "measured": {k: rounded(v) for k, v in evidence.items() if k != "criteria" and not isinstance(v, dict)},
        "findings": findings,
    }


def criteria_table(explained: dict) -> pd.DataFrame:
    """An `explanation`'s criteria as a table: criterion, measured, threshold, margin, passes (the app's view;
    empty when only the technician scored the moment explained)."""
    rows = [{"criterion": CRITERION_WORDS.get(t["criterion"], (t["criterion"], ""))[0]
             + (" (one of)" if t.get("group") == "any" else ""),
             "measured": t["measured"], "threshold": t["threshold"], "margin": t["margin"], "passes": t["passed"]}
            for t in explained.get("criteria") or []]
    return pd.DataFrame(rows, columns=["criterion", "measured", "threshold", "margin", "passes"])


def _failed_tests(tests: list[dict], criteria: dict) -> list[dict]:
    """The tests a near-miss failed (those named in ``criteria["failed"]``)."""
    failed = {(f["criterion"], f["threshold"]) for f in criteria.get("failed") or []}
    names = {"associated_arousal"} if any(c == "associated_arousal" for c, _ in failed) else set()
    return [t for t in tests if (t["criterion"], t["threshold"]) in failed or t["criterion"] in names]


def _nearby(night: NightContext, analysis, row: pd.Series) -> list[dict]:
    """The other events and near-misses of `analysis` within `NEAR_S` of `row`."""
    start, end = float(row["start_s"]), float(row["end_s"])
    nearby = stacked(analysis.events, analysis.near_misses)
    nearby = nearby[(nearby["start_s"] < end + NEAR_S) & (nearby["end_s"] > start - NEAR_S)
                    & (nearby["event_id"] != row["event_id"]) & nearby["kind"].isin((*EXPLAINED_KINDS, "near_miss"))]
    return [{"event_id": r.event_id, "kind": r.kind if r.kind != "near_miss" else f"near-miss ({r.subtype})",
             "clock_start": night.rec.cite(r.start_s, r.end_s).get("clock_start"), "confidence": rounded(r.confidence, 2)}
            for r in nearby.head(6).itertuples()]


# The product's events that can stand for a technician's event of each kind ("near_miss" rows by their subtype).
SAME_KIND = {"apnea": ("apnea", "hypopnea"), "hypopnea": ("apnea", "hypopnea"), "desaturation": ("desaturation",),
             "arousal": ("arousal",)}


def _technician_events(events: pd.DataFrame) -> pd.DataFrame:
    """The technician's events among `events` (those in use) of the kinds `explain_event` explains."""
    if events.empty:
        return events
    scored = events["evidence"].map(lambda e: isinstance(e, dict) and e.get("scored_by") == "technician")
    return events[scored & events["kind"].isin(EXPLAINED_KINDS)]


def _overlapping(table: pd.DataFrame, start: float, end: float, kinds: tuple[str, ...]) -> pd.DataFrame:
    """Rows of `table` (events, then near-misses by their subtype) of `kinds` overlapping [start, end], most overlap first."""
    of_kind = table["kind"].isin(kinds) | ((table["kind"] == "near_miss") & table["subtype"].isin(kinds))
    found = table[of_kind & (table["end_s"] > start) & (table["start_s"] < end)]
    overlap = found["end_s"].clip(upper=end) - found["start_s"].clip(lower=start)
    return found.assign(_overlap=overlap, _near=found["kind"] == "near_miss").sort_values(
        ["_near", "_overlap"], ascending=[True, False]).drop(columns=["_overlap", "_near"])


def _technician_item(night: NightContext, row: pd.Series) -> dict:
    citation = night.rec.cite(row["start_s"], max(row["end_s"], row["start_s"] + 1))
    evidence = row["evidence"] if isinstance(row["evidence"], dict) else {}
    item = {"scored_by": "technician", "kind": row["kind"], "subtype": row["subtype"] or None,
            "duration_s": rounded(row["end_s"] - row["start_s"]),
            **{k: citation[k] for k in ("clock_start", "clock_end", "elapsed_start", "epoch_start", "epoch_end")
               if citation.get(k) is not None},
            "criteria": None}
    if evidence.get("nadir_pct") is not None:
        item["spo2_nadir_pct"] = rounded(evidence["nadir_pct"])
    return item


def _technician_line(night: NightContext, item: dict, row: pd.Series) -> str:
    kind = f"{item['subtype']} {item['kind']}" if item["subtype"] else item["kind"]
    nadir = f", SpO2 nadir {item['spo2_nadir_pct']:g} %" if item.get("spo2_nadir_pct") is not None else ""
    where = format_citation(night.rec.cite(row["start_s"], max(row["end_s"], row["start_s"] + 1)))
    return (f"The technician scored a {kind} at {where}, lasting {item['duration_s']:g} s{nadir}: this is the scoring "
            "that came with the recording, which the answers use. The scoring file gives only its label, duration"
            f"{' and nadir' if nadir else ''}, no criteria; the product's own automatic scoring of the same moment follows.")


def _explain_with_technician(night: NightContext, analysis, event: str | None, kind: str) -> tuple[dict, pd.Series | None]:
    """`explain_event` when the answers use the technician's events: the technician's event at the time
    asked (label, duration, nadir: a scoring file carries no criteria) and the product's automatic
    candidate(s) overlapping it (accepted or near-miss, with their criteria), or the product's own
    event asked for by id (and the technician's event overlapping it, if any). When the technician
    scored no apneas or hypopneas, the product's own in use (`analysis`: `criteria_analysis`) are
    explained as counted or not in the answers, and an apnea or hypopnea in use at the time asked
    comes before the technician's arousal or desaturation there (as `find_event` puts it first)."""
    technician = _technician_events(night.require_analysis().events)
    own = not respiratory_by_technician(night.rec)  # the apneas and hypopneas in use are the product's
    table = stacked(analysis.events, analysis.near_misses)
    table = table[table["kind"].isin((*EXPLAINED_KINDS, "near_miss"))]
    tech_row = None
    event = event or night.explained_event
    if not event:
        raise ToolException("No event has been explained yet: name one by its time ('02:14', '3h10m', 'epoch 120') "
                            "or its id ('R012').")
    if EVENT_ID.match(event):
        row, status = find_event(night, analysis, event, kind)
        kinds = SAME_KIND[row["subtype"] if row["kind"] == "near_miss" else row["kind"]]
        matches = technician[technician["kind"].isin(kinds) & (technician["end_s"] > row["start_s"])
                             & (technician["start_s"] < row["end_s"])]
        tech_row = matches.iloc[0] if len(matches) else None
        product = [row]
    else:
        first, last = night.span(event, None)
        lo, hi = first * EPOCH_SEC - NEAR_S, (last + 1) * EPOCH_SEC + NEAR_S
        wanted = {"any": EXPLAINED_KINDS, "respiratory": ("apnea", "hypopnea")}.get(kind, (kind,))
        inside = technician[technician["kind"].isin(wanted) & (technician["end_s"] >= lo) & (technician["start_s"] <= hi)]
        counted = _scored_respiratory(night, analysis, event) if own and kind == "any" else None
        if counted is not None:
            product = [counted]
        elif len(inside):
            middle = (first + last + 1) * EPOCH_SEC / 2
            order = inside.assign(_far=(inside["start_s"] - middle).abs(),
                                  _resp=~inside["kind"].isin(("apnea", "hypopnea")))
            tech_row = order.sort_values(["_resp", "_far"]).iloc[0]
            found = _overlapping(table, tech_row["start_s"], tech_row["end_s"], SAME_KIND[tech_row["kind"]])
            product = [found.iloc[i] for i in range(len(found))]
        else:
            try:
                product = [find_event(night, analysis, event, kind)[0]]
            except ToolException as exc:
                where = format_citation(night.cite(first, last))
                raise ToolException(f"Neither the technician's scoring (used in the answers) nor the product's automatic "
                                    f"scoring has {'an event' if kind == 'any' else 'a ' + kind} within {NEAR_S:g} s of "
                                    f"{where}; list_events lists the events of a time range.") from exc
    findings: list[str] = []
    item = None
    if tech_row is not None:
        item = _technician_item(night, tech_row)
        findings.append(_technician_line(night, item, tech_row))
    explained: dict = {}
    if product:
        row = product[0]
        status = "near-miss" if row["kind"] == "near_miss" else "scored"
        in_use = own and (row["subtype"] if row["kind"] == "near_miss" else row["kind"]) in ("apnea", "hypopnea")
        explained = explanation(night, analysis, row, status, technician=not in_use)
        findings += explained.pop("findings")
        if in_use:
            findings.append("The technician scored no apneas or hypopneas on this night: the answers count the product's "
                            "own, judged in the technician's stages, and "
                            + ("count this one." if status == "scored" else "this near-miss is not counted in them."))
        elif tech_row is None:
            asked = "that event" if EVENT_ID.match(event) else "there"
            findings.append(f"The technician scored no {'event' if kind == 'any' else kind} overlapping {asked}; the "
                            "answers use the technician's scoring, so this automatic event is not counted in them.")
    else:
        night.explained_event = item["clock_start"] if item and item.get("clock_start") else event
        findings.append("The product's automatic scoring found no breathing reduction, desaturation or arousal of "
                        "this kind overlapping the technician's event (no candidate, accepted or near-miss): it did not "
                        "see this event in the signals.")
    return {
        "tool": "explain_event",
        "source": "technician's scoring (no criteria in the file) and the product's automatic scoring (measured)",
        "scoring_in_use": "technician",
        "technician_event": item,
        **explained,
        "automatic_overlapping": [{"event_id": r["event_id"], "status": "near-miss" if r["kind"] == "near_miss" else "accepted",
                                   "kind": r["subtype"] if r["kind"] == "near_miss" else r["kind"],
                                   "confidence": rounded(r["confidence"], 2)} for r in product[:6]],
        "findings": findings,
        "nearby": _nearby(night, analysis, product[0]) if product else [],
    }, (product[0] if product else None)


def _scored_respiratory(night: NightContext, analysis, event: str) -> pd.Series | None:
    """The apnea or hypopnea of `analysis` scored within `NEAR_S` of the time `event` (`find_event`), or None."""
    try:
        row, status = find_event(night, analysis, event, "respiratory")
    except ToolException:
        return None
    return row if status == "scored" else None


def explain(night: NightContext, event: str | None, kind: str = "any") -> tuple[dict, pd.Series | None, object]:
    """`explain_event`'s result for `event`, the product's event or near-miss it explains (None when
    the product has none there: only the technician scored that moment) and the analysis that row
    belongs to (the automatic scoring when the technician's is in use), for the app's event view."""
    analysis = criteria_analysis(night)
    if technician_in_use(night):
        result, row = _explain_with_technician(night, analysis, event, kind)
        return result, row, analysis
    row, status = find_event(night, analysis, event, kind)
    result = {"tool": "explain_event", "source": "measured", **explanation(night, analysis, row, status),
              "nearby": _nearby(night, analysis, row)}
    return result, row, analysis


@tool("explain_event", args_schema=ExplainArgs)
@night_tool_errors
def explain_event(event: str | None = None, kind: str = "any", *, runtime: ToolRuntime[NightContext]) -> dict:
    """Explain why an apnea, hypopnea, oxygen desaturation or arousal was scored (or why a breathing
    reduction was NOT): each criterion of the scoring rule with the measured value, the threshold and
    the margin, the path that set its type (obstructive/central/mixed), the signal quality of the
    channels used, and its confidence (clear-cut, borderline). With the technician's scoring in use,
    the technician's event there and the product's own automatic scoring of the same moment. Use for
    'why do you say I had an apnea at 02:14?', 'was that a real event or an artefact?', 'explain event R012'."""
    return explain(runtime.context, event, kind)[0]


class RulesArgs(BaseModel):
    rules: list[str] | None = Field(
        None, description="scoring rules to compare, e.g. ['1B'] for the 4 % rule, ['chicago-1999', 'shhs']; "
        f"empty = all of: {', '.join(RULES)}", max_length=len(RULES),
    )


def _rule_row(summary: dict, rule) -> dict:
    index = "ahi" if summary.get("ahi") is not None else "rei"
    return {
        "rule": rule.name, "title": rule.title, "definition": rule.hypopnea_text(), "citation": rule.citation,
        "index": index.upper(), index: summary.get(index), "n_apneas": summary.get("n_apneas"),
        "n_hypopneas": summary.get("n_hypopneas"), "severity": summary.get("severity"),
        "by_confidence": summary.get("ahi_by_confidence"),
    }


@tool("ahi_under_rules", args_schema=RulesArgs)
@night_tool_errors
def ahi_under_rules(rules: list[str] | None = None, *, runtime: ToolRuntime[NightContext]) -> dict:
    """The AHI (apneas + hypopneas per hour of sleep) of this night re-scored under published scoring
    rules (Chicago 1999, AASM 2007 recommended/alternative, AASM rule 1A, rule 1B = the 4 % rule (CMS),
    SHHS, the current AASM manual), each with its apnea and hypopnea counts; and how many events are
    clear-cut: the AHI counting only events of confidence >= 0.75 and >= 0.9. Use for 'what would my
    AHI be under the 4 % rule?', 'which rule was used?', 'how many of these events are clear-cut?'.
    With the technician's apneas and hypopneas in use, the per-rule figures are the product's own
    automatic scoring's, and the technician's AHI is given beside them as a reference row."""
    night = runtime.context
    in_use = night.require_analysis().summary
    analysis = criteria_analysis(night)
    technician = in_use.get("ahi_rule") == TECHNICIAN_SCORED and night.scoring == "technician"
    wanted = [resolve_rule(name) for name in rules] if rules else list(RULES.values())
    in_force = resolve_rule(analysis.hypopnea_rule)
    rows = []
    for rule in dict.fromkeys([in_force, *wanted]):
        summary = analysis.summary if rule.name == analysis.hypopnea_rule else rescore(night.rec, analysis, rule.name).summary
        rows.append(_rule_row(summary, rule))
    current = rows[0]
    index = current["index"]

    def figures(row: dict) -> str:
        return f"{index} {row[index.lower()]}/h ({row['n_apneas']} apneas, {row['n_hypopneas']} hypopneas)"

    # Short findings (the model reads a compact view): the rules asked about first, with what they ask.
    findings = []
    if technician:
        tech_index = "ahi" if in_use.get("ahi") is not None else "rei"
        rows.append({"rule": "technician", "title": "technician (scoring file)", "scored_by": "technician",
                     "definition": "the technician's scoring that came with the recording (the file states no rule)",
                     "citation": None, "index": tech_index.upper(), tech_index: in_use.get(tech_index),
                     "n_apneas": in_use.get("n_apneas"), "n_hypopneas": in_use.get("n_hypopneas"),
                     "severity": in_use.get("severity"), "by_confidence": None})
        findings.append(f"The answers use the technician's scoring (came with the recording): technician (scoring file) "
                        f"{tech_index.upper()} {in_use.get(tech_index)}/h ({in_use.get('n_apneas')} apneas, "
                        f"{in_use.get('n_hypopneas')} hypopneas); the file states no rule, so no rule re-scores it. The "
                        "figures per rule are the product's own automatic scoring (its staging and events), re-scored.")
    for row in rows:
        row.setdefault("scored_by", "automatic")
    rule_rows = [row for row in rows if row["scored_by"] == "automatic"]
    asked = [row for row in rule_rows[1:] if rules]
    who = "The product's automatic scoring" if technician else "The events were scored"
    findings += [f"{'Automatic scoring under' if technician else 'Under'} {RULES[row['rule']].hypopnea_text()}: "
                 f"{figures(row)}." for row in asked]
    findings.append(f"{who} under {in_force.title} (rule {in_force.name}): {figures(current)}.")
    by_confidence = current.get("by_confidence") or {}
    if by_confidence:
        findings.append(f"Clear-cut or not (confidence from the margins to the rule's thresholds): all {by_confidence['all']['events']} "
                        f"events, {index} {by_confidence['all']['ahi']}/h; " + "; ".join(
                            f"confidence {cut}: {v['events']} events, {index} {v['ahi']}/h"
                            for cut, v in by_confidence.items() if cut != "all") + ".")
    if not rules:
        findings.append("Under the other rules: " + "; ".join(f"{row['title']} (rule {row['rule']}) {index} "
                                                              f"{row[index.lower()]}/h" for row in rule_rows[1:]) + ".")
    if night.scoring == "technician" and not technician:
        stages = "the technician's" if analysis.staging.source == "reference scoring" else "the automatic"
        findings.append(f"The answers use the technician's scoring (came with the recording), which has no apneas or "
                        f"hypopneas: the figures are the product's own apneas and hypopneas, in {stages} stages in use.")
    return {
        "tool": "ahi_under_rules",
        "source": "measured (the night's breathing reductions re-scored under each rule; no signal read again)"
                  + ("; the technician's row is the scoring that came with the recording" if technician else ""),
        "scoring_in_use": night.scoring,
        "rule_in_force": in_force.name,
        "rules": rows,
        "findings": findings,
        "citation": night.cite(0, night.rec.n_epochs - 1),
    }


configure(explain_event)
configure(ahi_under_rules)
