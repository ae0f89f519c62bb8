"""Tool `night_summary`: whole-night AASM statistics and headline findings."""

from __future__ import annotations

from langchain.tools import ToolRuntime, tool
from pydantic import BaseModel, Field

from sleeplm.measure.agreement import SCORING_NAMES
from sleeplm.errors import SleepLMError
from sleeplm.measure.rules import resolve_rule
from sleeplm.measure.summary import TECHNICIAN_SCORED
from sleeplm.terms import SLEEP_STAGES, SEVERITY_NOTE, Audience, format_elapsed
from tools.context import NightContext, configure, night_tool_errors, rounded

# Keys of the summary contract worth showing, in reading order.
CLINICIAN_KEYS = (
    "tib_min", "spt_min", "tst_min", "se_pct", "sol_min", "rem_latency_min", "waso_min",
    "W_min", "N1_min", "N2_min", "N3_min", "R_min", "W_pct", "N1_pct", "N2_pct", "N3_pct", "R_pct",
    "n_awakenings", "ahi", "ahi_rule", "rei", "severity", "ahi_supine", "ahi_nonsupine", "ahi_rem",
    "ahi_nrem", "odi3", "odi4", "t90_min", "spo2_min", "spo2_mean", "hr_mean", "n_apneas", "n_hypopneas",
)


class SummaryArgs(BaseModel):
    audience: Audience = Field(
        "clinician", description="who reads the answer: 'clinician' (full statistics) or 'patient' (plain words)"
    )


def _hours_minutes(minutes: float | None) -> str | None:
    if minutes is None:
        return None
    return format_elapsed(minutes * 60).rsplit("m", 1)[0].replace("h", " h ") + " min"


def rule_text(name) -> str:
    """The scoring rule behind the AHI as an answer names it (`sleeplm.measure.rules.RULES`), e.g.
    "AASM 2012 rule 1A (recommended): apnea = airflow drop >= 90 % ...; hypopnea = ...", or who
    scored the events when the technician did (a scoring file states no rule)."""
    if name == TECHNICIAN_SCORED:
        return "apneas and hypopneas scored by the technician, in the scoring file that came with the recording"
    try:
        return resolve_rule(name).hypopnea_text()
    except SleepLMError:
        return f"rule {name}"


def _shown(value, unit: str = "") -> str:
    """A figure with its unit, or "not assessable" (never the word None; the reason is listed below it)."""
    return "not assessable" if value is None else f"{value}{unit}"


def _counted(value, noun: str) -> str:
    return f"{noun} not assessable" if value is None else f"{value} {noun}"


def _clinician_findings(s: dict) -> list[str]:
    """AASM figures first (AHI with its scoring rule, oxygen), then sleep architecture."""
    lines = []
    if s.get("ahi") is not None:
        lines.append(
            f"AHI {s['ahi']} events/h ({rule_text(s.get('ahi_rule'))}): "
            f"{_counted(s.get('n_apneas'), 'apneas')}, {_counted(s.get('n_hypopneas'), 'hypopneas')}; band: {_shown(s.get('severity'))}. "
            f"Supine AHI {_shown(s.get('ahi_supine'))}, non-supine {_shown(s.get('ahi_nonsupine'))}, "
            f"REM {_shown(s.get('ahi_rem'))}, NREM {_shown(s.get('ahi_nrem'))}."
        )
    elif s.get("rei") is not None:
        lines.append(f"REI {s['rei']} events/h of monitoring time (no sleep staging, so no AHI); band: {_shown(s.get('severity'))}.")
    if s.get("spo2_min") is not None:
        lines.append(
            f"SpO2 mean {_shown(s.get('spo2_mean'), '%')}, minimum {s['spo2_min']}%, T90 {_shown(s.get('t90_min'), ' min')}, "
            f"ODI3 {_shown(s.get('odi3'), '/h')}, ODI4 {_shown(s.get('odi4'), '/h')}."
        )
    if s.get("tst_min") is not None:
        lines.append(
            f"TIB {_shown(s.get('tib_min'), ' min')}, TST {s['tst_min']} min, sleep efficiency {_shown(s.get('se_pct'), '%')}, "
            f"sleep onset latency {_shown(s.get('sol_min'), ' min')}, REM latency {_shown(s.get('rem_latency_min'), ' min')}, "
            f"WASO {_shown(s.get('waso_min'), ' min')}."
        )
        lines.append(
            "Stages: " + ", ".join(f"{st} {_shown(s.get(f'{st}_min'), ' min')} ({_shown(s.get(f'{st}_pct'), '% of TST')})"
                                   for st in SLEEP_STAGES)
            + f"; wake {_shown(s.get('W_min'), ' min')}; {_shown(s.get('n_awakenings'))} awakenings."
        )
    if s.get("hr_mean") is not None:
        lines.append(f"Mean heart rate {s['hr_mean']} bpm.")
    return lines


# Below this AHI (events/h) or this SpO2 (%), breathing or oxygen is a finding worth leading with.
AHI_FINDING, SPO2_FINDING = 5.0, 90.0


def _patient_findings(s: dict) -> list[str]:
    """Plain words, short sentences: the findings that matter first, terms explained, what to ask a doctor."""
    lead, rest, discuss = [], [], []
    ahi, low = s.get("ahi"), s.get("spo2_min")
    if ahi is not None:
        line = (f"Breathing pauses and shallow breathing: {ahi} per hour of sleep (the '{s.get('severity')}' band). "
                "Doctors call this number the AHI; " + ("it was counted by the technician who scored the recording."
                                                        if s.get("ahi_rule") == TECHNICIAN_SCORED else
                                                        f"it was counted under the scoring rule {s.get('ahi_rule')}."))
        (lead if ahi >= AHI_FINDING else rest).append(line)
        if ahi >= AHI_FINDING:
            discuss.append("the breathing pauses")
    if low is not None:
        line = (f"Your oxygen level averaged {s['spo2_mean']}%. " if s.get("spo2_mean") is not None else "") + f"Its lowest value was {low}%."
        if low < SPO2_FINDING:
            lead.append(line + f" Below {SPO2_FINDING:g}% is low.")
            discuss.append("the low oxygen")
        else:
            rest.append(line)
    if s.get("tst_min") is not None:
        rest.append(
            f"You slept {_hours_minutes(s['tst_min'])} ({s['tst_min']} min). You were in bed for {_hours_minutes(s.get('tib_min'))}. "
            + (f"So you were asleep {s['se_pct']}% of the time in bed (sleep efficiency). " if s.get("se_pct") is not None else "")
            + (f"It took you {s['sol_min']} min to fall asleep." if s.get("sol_min") is not None else "You did not fall asleep.")
        )
        rest.append(
            f"Deep sleep (N3): {s.get('N3_min')} min. Dream sleep (REM): {s.get('R_min')} min. "
            f"Light sleep (N1+N2): {rounded((s.get('N1_min') or 0) + (s.get('N2_min') or 0))} min. "
            + (f"You woke up {s['n_awakenings']} times." if s.get("n_awakenings") is not None else "")
        )
    ask = f"Please talk with your doctor about these results{', mainly ' + ' and '.join(discuss) if discuss else ''}."
    return lead + rest + [ask, "This is a screening test, not a diagnosis."]


@tool("night_summary", args_schema=SummaryArgs)
@night_tool_errors
def night_summary(audience: str = "clinician", *, runtime: ToolRuntime[NightContext]) -> dict:
    """Whole-night statistics: time in bed, total sleep time, sleep efficiency, sleep latency,
    WASO, minutes and percent of each stage, awakenings, AHI with its rule and AASM severity band,
    oxygen (minimum, mean, T90, ODI) and heart rate, plus what could not be assessed and why.
    Use for summaries, 'how much deep/REM sleep', 'how did I sleep', 'what is my AHI'."""
    night = runtime.context
    summary = dict(night.require_analysis().summary)
    stats = {key: rounded(summary[key], 2) for key in CLINICIAN_KEYS if summary.get(key) is not None}
    if summary.get("position_min"):
        stats["position_min"] = {pos: rounded(v) for pos, v in summary["position_min"].items()}
    findings = _patient_findings(stats) if audience == "patient" else _clinician_findings(stats)
    not_assessable = dict(summary.get("not_assessable") or {})
    findings += [f"Not assessable: {key} ({reason})." for key, reason in not_assessable.items()]
    return {
        "tool": "night_summary",
        # Whose figures these are, when the recording came with scoring (the technician's by default).
        "scoring": SCORING_NAMES[night.scoring] if getattr(night.analysis, "scorings", None) else None,
        "source": (f"{'technician' if night.scoring == 'technician' else 'measured'} "
                   f"(sleep stages from {night.stage_source})" if night.stage_source else "measured"),
        "audience": audience,
        "findings": findings,
        "statistics": stats,
        "not_assessable": not_assessable,
        "citation": night.cite(0, night.rec.n_epochs - 1),
        "screening_note": SEVERITY_NOTE,
    }


configure(night_summary)
