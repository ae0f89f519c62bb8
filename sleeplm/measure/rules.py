"""Published adult scoring rules for apneas and hypopneas, and scoring candidates against one of them.

The detector (`sleeplm.measure.respiratory.respiratory_candidates`) measures every breathing
reduction once (flow reduction, duration, linked desaturation and arousal, effort on each belt,
signal quality); `score_candidates` holds those measurements against a rule's thresholds. Each
candidate gets its criteria (measured value, threshold, margin, passed), the path that set its
type, and a confidence; candidates that fail a criterion are kept as near-misses with the
criterion they failed. Re-scoring a night under another rule re-runs only this step.

Rules (`RULES`, by name; `resolve_rule` also accepts the aliases in `ALIASES`):

============================  =======  ==========  ===========================================
name                          apnea    hypopnea    hypopnea qualifies with
============================  =======  ==========  ===========================================
chicago-1999                  >= 90 %  >= 30 %     >= 3 % desaturation or arousal, or a >= 50 %
                                                   reduction alone
aasm-2007-recommended         >= 90 %  >= 30 %     >= 4 % desaturation
aasm-2007-alternative         >= 90 %  >= 50 %     >= 3 % desaturation or arousal
1A (AASM 2012 rule 1A)        >= 90 %  >= 30 %     >= 3 % desaturation or arousal
1B (AASM 2013 rule 1B, CMS)   >= 90 %  >= 30 %     >= 4 % desaturation
shhs                          >= 75 %  >= 30 %     >= 4 % desaturation (apneas need it too)
aasm-v3 (current manual)      >= 90 %  >= 30 %     >= 3 % desaturation or arousal
============================  =======  ==========  ===========================================

Every rule asks >= 10 s. Simplifications, stated once: Chicago's "> 3 %" desaturation is read as
>= 3 % (oximeters report whole percent, as the 3 % rules do); AASM 2007's "the reduction lasts
>= 90 % of the event" is not tested separately (the reduction is measured as the median over the
event's core); SHHS scored reductions of airflow *or* thoraco-abdominal effort, here airflow only.

Which breathing reductions are candidates, hence which near-misses exist (checked against every
rule above): the detector keeps each run of >= 10 s (after undoing the envelope's smear) where the
airflow envelope is below 70 % of its baseline, i.e. reduced by >= 30 %, plus the runs below 10 %
on the apnea channel. Every rule asks >= 10 s and at least a 30 % reduction (its hypopnea; SHHS's
apnea 75 %, the others' 90 %; AASM 2007 alternative's hypopnea 50 %), so whatever any rule scores
is a candidate and re-scoring never needs the signals. Near-misses are therefore, under every
rule: reductions whose sustained (median) drop fell short of the rule's flow threshold (brief dips
under 30 %; 30-50 % under AASM 2007 alternative; 75-90 % drops scored as hypopneas, not apneas,
outside SHHS), and reductions without the desaturation or arousal the rule asks (SHHS apneas
included). Not kept, under any rule: reductions shorter than 10 s (so no near-miss ever fails on
duration alone: the duration criterion is shown, with its margin, but is always met), and drops
whose envelope never stays 30 % below baseline for 10 s; they would be near-misses of no rule's
flow or duration threshold by a margin this detector can measure reliably (the envelope smears
a few seconds), and keeping them would flood events.csv with ordinary breathing variability.

Confidence (0-1) of a candidate is ``quality x min over its criteria of c``, where for each
criterion ``c = clip(0.5 + 0.5 x margin / scale, 0, 1)`` (`CONFIDENCE_SCALES`: 10 %-points of flow
reduction, 5 s of duration, 2 %-points of desaturation, 2 of arousal power ratio); of criteria
that are alternatives (a desaturation *or* an arousal) the best one counts; ``quality`` is the
lowest share of artefact-free seconds over the event in the channels the criteria used. A scored
event is >= 0.5 x quality; 1.0 means every criterion passed by at least one scale.

Examples
--------
>>> from sleeplm.measure.rules import RULES, resolve_rule
>>> resolve_rule("4%").name, resolve_rule("current").name, len(RULES)
('1B', 'aasm-v3', 7)
>>> RULES["aasm-2007-alternative"].hypopnea_drop_pct
50.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from sleeplm.errors import MeasurementError

__all__ = ["ScoringRule", "RULES", "ALIASES", "DEFAULT_RULE", "CONFIDENCE_SCALES", "CONFIDENCE_CUTOFFS",
           "resolve_rule", "score_candidates", "criterion_confidence"]


@dataclass(frozen=True)
class ScoringRule:
    """One published adult definition of apnea and hypopnea.

    Attributes
    ----------
    name : short name used by ``--rule``.
    title : how an answer names it.
    citation : the publication.
    apnea_drop_pct : airflow reduction (% of baseline) that makes an apnea.
    hypopnea_drop_pct : airflow reduction that a hypopnea needs.
    min_duration_s : both need this long.
    hypopnea_desat_pct : desaturation (% points) that qualifies a hypopnea (None: none does).
    hypopnea_arousal : an associated arousal qualifies a hypopnea.
    hypopnea_alone_drop_pct : a reduction this deep qualifies without desaturation or arousal (Chicago).
    apnea_desat_pct : desaturation an apnea needs too (SHHS), else None.
    """

    name: str
    title: str
    citation: str
    apnea_drop_pct: float = 90.0
    hypopnea_drop_pct: float = 30.0
    min_duration_s: float = 10.0
    hypopnea_desat_pct: float | None = 3.0
    hypopnea_arousal: bool = True
    hypopnea_alone_drop_pct: float | None = None
    apnea_desat_pct: float | None = None

    def describe(self) -> dict:
        """name, title, citation and the thresholds as ``parameters`` (for summary.json and the tools).

        Examples
        --------
        >>> RULES["shhs"].describe()["parameters"]["apnea_desat_pct"]
        4.0
        """
        parameters = {k: v for k, v in asdict(self).items() if k not in ("name", "title", "citation")}
        return {"name": self.name, "title": self.title, "citation": self.citation, "parameters": parameters}

    def hypopnea_text(self) -> str:
        """One sentence: what a hypopnea and an apnea need under this rule.

        Examples
        --------
        >>> RULES["1B"].hypopnea_text()
        'AASM rule 1B (CMS): hypopnea = airflow drop >= 30 % for >= 10 s with >= 4 % desaturation; apnea = airflow drop >= 90 % for >= 10 s'
        """
        options = []
        if self.hypopnea_desat_pct is not None:
            options.append(f">= {self.hypopnea_desat_pct:g} % desaturation")
        if self.hypopnea_arousal:
            options.append("an arousal")
        text = (f"hypopnea = airflow drop >= {self.hypopnea_drop_pct:g} % for >= {self.min_duration_s:g} s with "
                + " or ".join(options))
        if self.hypopnea_alone_drop_pct is not None:
            text += f", or a drop >= {self.hypopnea_alone_drop_pct:g} % alone"
        apnea = f"apnea = airflow drop >= {self.apnea_drop_pct:g} % for >= {self.min_duration_s:g} s"
        if self.apnea_desat_pct is not None:
            apnea += f" with >= {self.apnea_desat_pct:g} % desaturation"
        return f"{self.title}: {text}; {apnea}"


_RULES = (
    ScoringRule("chicago-1999", "Chicago criteria (AASM Task Force 1999)",
                "AASM Task Force. Sleep-related breathing disorders in adults: recommendations for syndrome definition "
                "and measurement techniques in clinical research. Sleep 1999;22(5):667-689.",
                hypopnea_alone_drop_pct=50.0),
    ScoringRule("aasm-2007-recommended", "AASM 2007 recommended hypopnea rule",
                "Iber C, Ancoli-Israel S, Chesson A, Quan SF. The AASM Manual for the Scoring of Sleep and Associated "
                "Events, 1st ed. Westchester, IL: AASM; 2007 (hypopnea rule 4A).",
                hypopnea_desat_pct=4.0, hypopnea_arousal=False),
    ScoringRule("aasm-2007-alternative", "AASM 2007 alternative hypopnea rule",
                "Iber C et al. The AASM Manual for the Scoring of Sleep and Associated Events, 1st ed. AASM; 2007 "
                "(hypopnea rule 4B).", hypopnea_drop_pct=50.0),
    ScoringRule("1A", "AASM rule 1A",
                "Berry RB, Budhiraja R, Gottlieb DJ et al. Rules for scoring respiratory events in sleep: update of the "
                "2007 AASM Manual. J Clin Sleep Med 2012;8(5):597-619 (hypopnea rule 1A)."),
    ScoringRule("1B", "AASM rule 1B (CMS)",
                "Berry RB et al. The AASM Manual for the Scoring of Sleep and Associated Events, v2.0.2 (2013), "
                "hypopnea rule 1B, the definition Medicare (CMS NCD 240.4) requires.",
                hypopnea_desat_pct=4.0, hypopnea_arousal=False),
    ScoringRule("shhs", "Sleep Heart Health Study (AHI 4 %)",
                "Redline S, Sanders MH, Lind BK et al. Methods for obtaining and analyzing unattended polysomnography "
                "data for a multicenter study. Sleep 1998;21(7):759-767.",
                apnea_drop_pct=75.0, hypopnea_desat_pct=4.0, hypopnea_arousal=False, apnea_desat_pct=4.0),
    ScoringRule("aasm-v3", "AASM Scoring Manual version 3 (current, recommended hypopnea rule)",
                "Troester MM, Quan SF, Berry RB et al. The AASM Manual for the Scoring of Sleep and Associated Events, "
                "version 3. Darien, IL: AASM; 2023."),
)
RULES: dict[str, ScoringRule] = {rule.name: rule for rule in _RULES}
ALIASES = {
    "chicago": "chicago-1999", "aasm-2007": "aasm-2007-recommended", "aasm-2012-1a": "1A", "aasm-2013-1b": "1B",
    "cms": "1B", "medicare": "1B", "4%": "1B", "3%": "1A", "current": "aasm-v3", "aasm-current": "aasm-v3",
}
DEFAULT_RULE = "1A"
# Margin that makes a criterion certain (confidence 1): flow %-points, seconds, SpO2 %-points, power ratio.
CONFIDENCE_SCALES = {"flow_reduction_pct": 10.0, "duration_s": 5.0, "desaturation_pct": 2.0, "arousal_power_ratio": 2.0}
CONFIDENCE_CUTOFFS = (0.75, 0.9)
# An arousal is detected at 2x its preceding power (`sleeplm.measure.events.AROUSAL_POWER_RATIO`).
AROUSAL_RATIO = 2.0


def resolve_rule(name: str | ScoringRule) -> ScoringRule:
    """The rule called `name` (a name of `RULES` or an alias, case and spaces ignored).

    Examples
    --------
    >>> resolve_rule("AASM-2013-1b").name
    '1B'
    >>> resolve_rule("2C")
    Traceback (most recent call last):
    ...
    sleeplm.errors.MeasurementError: unknown scoring rule '2C'; use one of: chicago-1999, aasm-2007-recommended, aasm-2007-alternative, 1A, 1B, shhs, aasm-v3 (aliases: 3%, 4%, cms, current).
    """
    if isinstance(name, ScoringRule):
        return name
    key = str(name).strip().replace(" ", "")
    for candidate in (key, key.lower(), key.upper()):
        if candidate in RULES:
            return RULES[candidate]
        if candidate in ALIASES:
            return RULES[ALIASES[candidate]]
    raise MeasurementError(f"unknown scoring rule {str(name)[:40]!r}; use one of: {', '.join(RULES)} "
                           "(aliases: 3%, 4%, cms, current).")


def criterion_confidence(name: str, margin: float | None) -> float:
    """``clip(0.5 + 0.5 x margin / scale, 0, 1)`` for criterion `name` (0 without a measurement).

    Examples
    --------
    >>> criterion_confidence("desaturation_pct", 1.0), criterion_confidence("desaturation_pct", -1.0)
    (0.75, 0.25)
    """
    if margin is None or not np.isfinite(margin):
        return 0.0
    return float(np.clip(0.5 + 0.5 * margin / CONFIDENCE_SCALES[name], 0.0, 1.0))


def _test(name: str, measured: float | None, threshold: float, group: str = "all") -> dict:
    """One criterion: measured >= threshold, its margin and confidence; ``group`` "any" for alternatives."""
    margin = None if measured is None or not np.isfinite(measured) else round(float(measured) - threshold, 1)
    return {"criterion": name, "measured": None if margin is None else round(float(measured), 1), "threshold": threshold,
            "margin": margin, "passed": margin is not None and margin >= 0, "group": group,
            "confidence": round(criterion_confidence(name, margin), 2)}


def _arousal_test(cand) -> dict:
    """The associated-arousal criterion: an arousal within 15 s of the end; its margin is the arousal's
    EEG power over the 2x that detects it (confidence 0.5 for an arousal of unknown power, e.g. from a file)."""
    ratio = _none(cand.arousal_power_ratio) if cand.arousal else None
    test = _test("arousal_power_ratio", ratio, AROUSAL_RATIO, group="any")
    confidence = test["confidence"] if ratio is not None else (0.5 if cand.arousal else 0.0)
    return {**test, "criterion": "associated_arousal", "measured": bool(cand.arousal), "threshold": True,
            "passed": bool(cand.arousal), "arousal_power_ratio": test["measured"], "confidence": confidence}


def _none(value):
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else value


def _criteria(cand, rule: ScoringRule) -> tuple[str, list[dict], str, str]:
    """(kind, criteria, subtype, type path) of one candidate under `rule`."""
    flow, desat = float(cand.flow_reduction_pct), _none(cand.desaturation_pct)
    duration = _test("duration_s", cand.duration_s, rule.min_duration_s)
    if flow >= rule.apnea_drop_pct:
        tests = [_test("flow_reduction_pct", flow, rule.apnea_drop_pct), duration]
        if rule.apnea_desat_pct is not None:
            tests.append(_test("desaturation_pct", desat, rule.apnea_desat_pct))
        return "apnea", tests, cand.apnea_subtype, cand.apnea_path
    tests = [_test("flow_reduction_pct", flow, rule.hypopnea_drop_pct), duration]
    if rule.hypopnea_desat_pct is not None:
        tests.append({**_test("desaturation_pct", desat, rule.hypopnea_desat_pct), "group": "any"})
    if rule.hypopnea_arousal:
        tests.append(_arousal_test(cand))
    if rule.hypopnea_alone_drop_pct is not None:
        tests.append({**_test("flow_reduction_pct", flow, rule.hypopnea_alone_drop_pct), "group": "any"})
    return "hypopnea", tests, cand.hypopnea_subtype, cand.hypopnea_path


def _verdict(tests: list[dict], quality: float) -> tuple[bool, list[dict], float]:
    """(passed, failed criteria, confidence) of a candidate's criteria."""
    required = [t for t in tests if t["group"] == "all"]
    options = [t for t in tests if t["group"] == "any"]
    failed = [t for t in required if not t["passed"]]
    if options and not any(t["passed"] for t in options):
        failed += options
    scores = [t["confidence"] for t in required] + ([max(t["confidence"] for t in options)] if options else [])
    return not failed, failed, round(float(quality * min(scores)), 2)


def score_candidates(candidates: pd.DataFrame, rule: str | ScoringRule) -> tuple[list[dict], list[dict]]:
    """Apneas/hypopneas and near-misses among `candidates` under `rule`.

    Parameters
    ----------
    candidates : `sleeplm.measure.respiratory.respiratory_candidates` output (one row per breathing
        reduction, rule-independent measurements).
    rule : a `ScoringRule` or its name / alias.

    Returns
    -------
    (events, near_misses): dicts with kind, subtype, start_s, end_s, event_id, confidence and
    evidence. ``evidence`` holds the measured values and ``criteria``: the rule's name, each
    criterion tested (measured, threshold, margin, passed, group "all"/"any", confidence), the
    path that set the type, and the signal quality of the channels used; near-misses carry the
    kind they were a candidate for as ``subtype`` (their kind is "near_miss") and ``failed``.

    Examples
    --------
    >>> cand = pd.DataFrame([dict(candidate_id="R001", start_s=100.0, end_s=118.0, duration_s=18.0, channel="Pressure",
    ...     flow_reduction_pct=45.0, flow_peak_drop_pct=60.0, desaturation_pct=3.0, arousal=False,
    ...     arousal_power_ratio=np.nan, effort_thx=0.9, effort_abd=0.8, apnea_subtype="obstructive", apnea_path="",
    ...     hypopnea_subtype="obstructive", hypopnea_path="effort kept up", quality_flow=1.0, quality_spo2=1.0)])
    >>> events, near = score_candidates(cand, "1A")
    >>> events[0]["kind"], events[0]["confidence"], near
    ('hypopnea', 0.5, [])
    >>> events, near = score_candidates(cand, "1B")           # 3 % is not enough under the 4 % rule
    >>> events, near[0]["subtype"], [(f["criterion"], f["measured"], f["threshold"]) for f in near[0]["evidence"]["criteria"]["failed"]]
    ([], 'hypopnea', [('desaturation_pct', 3.0, 4.0)])
    """
    rule = resolve_rule(rule)
    events, near = [], []
    for cand in candidates.itertuples(index=False):
        kind, tests, subtype, path = _criteria(cand, rule)
        uses_spo2 = any(t["criterion"] == "desaturation_pct" and t["passed"] for t in tests)
        quality = {"flow": round(float(cand.quality_flow), 2)}
        if _none(cand.quality_spo2) is not None:
            quality["spo2"] = round(float(cand.quality_spo2), 2)
        used = min(quality["flow"], quality["spo2"]) if uses_spo2 and "spo2" in quality else quality["flow"]
        passed, failed, confidence = _verdict(tests, used)
        evidence = {
            "flow_reduction_pct": round(float(cand.flow_reduction_pct), 1),
            "flow_drop_pct": round(float(cand.flow_peak_drop_pct if kind == "apnea" else cand.flow_reduction_pct), 1),
            "channel": cand.channel, "duration_s": round(float(cand.duration_s), 1),
            "desaturation_pct": _none(cand.desaturation_pct), "arousal": bool(cand.arousal),
            "effort_thx": _none(cand.effort_thx), "effort_abd": _none(cand.effort_abd),
            "effort_ratio": _effort_ratio(cand), "rule": rule.name,
            "criteria": {"rule": rule.name, "tests": tests, "type_path": path or None, "signal_quality": quality},
        }
        row = {"kind": kind, "subtype": subtype, "start_s": float(cand.start_s), "end_s": float(cand.end_s),
               "event_id": cand.candidate_id, "confidence": confidence, "evidence": evidence}
        if passed:
            events.append(row)
        else:
            evidence["criteria"]["failed"] = [{k: t[k] for k in ("criterion", "measured", "threshold", "margin")}
                                              for t in failed]
            near.append({**row, "kind": "near_miss", "subtype": kind})
    return events, near


def _effort_ratio(cand) -> float | None:
    """The stronger belt's effort ratio (the figure the evidence has carried since issue 5)."""
    levels = [v for v in (_none(cand.effort_thx), _none(cand.effort_abd)) if v is not None]
    return round(max(levels), 2) if levels else None
