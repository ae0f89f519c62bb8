"""One pass over the night: features, stages, events and summary, computed once for every tool.

Examples
--------
>>> from sleeplm.measure.analysis import analyze_night
>>> analysis = analyze_night(tiny_recording(), automatic_staging=False,
...                          progress=lambda f, text: print(f"{f:.0%} {text}"))
0% ...
>>> analysis.summary["tib_min"], analysis.staging.source
(15.0, 'reference scoring')
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import pandas as pd

from sleeplm.measure.agreement import (
    SCORINGS, has_technician_scoring, respiratory_by_technician, scoring_agreement, with_technician_events,
)
from sleeplm.errors import MeasurementError
from sleeplm.measure.events import EventScoring, detect_events, rescore_events, score_events
from sleeplm.measure.features import epoch_features, missing_reasons
from sleeplm.measure.quality import artefact_segments
from sleeplm.io.recording import Recording
from sleeplm.measure.staging import StagingResult, stage_night
from sleeplm.measure.rules import DEFAULT_RULE, resolve_rule
from sleeplm.measure.summary import night_summary

__all__ = ["Scoring", "NightAnalysis", "analyze_night", "restage", "rescore", "compare_with_automatic", "use_scoring",
           "automatic_view"]

logger = logging.getLogger(__name__)


@dataclass
class Scoring:
    """One way of scoring the night: its stages, its events and the night summary they give.

    ``near_misses`` and ``candidates`` are the product's own breathing reductions in these stages
    (`sleeplm.measure.events.EventScoring`): the automatic scoring's accepted apneas and hypopneas
    are rows of its ``candidates`` (same ``event_id``), so explaining an event, listing it and
    re-scoring it under another rule all see the same objects. With the technician's apneas and
    hypopneas in use they are the automatic scoring's own (judged in its stages, the ones
    ``explain_event`` explains and events.csv lists) once `compare_with_automatic` has run; before,
    the reductions the product measured in the technician's stages.
    """

    staging: StagingResult
    events: pd.DataFrame
    summary: dict
    near_misses: pd.DataFrame | None = None
    candidates: pd.DataFrame | None = None


@dataclass
class NightAnalysis:
    """Everything measured about one night.

    Attributes
    ----------
    features : `sleeplm.measure.features.epoch_features` table (one row per epoch).
    missing : `sleeplm.measure.features.missing_reasons`: why feature columns are NaN.
    artefacts : `sleeplm.measure.quality.artefact_segments` (channel, problem, start_s, end_s).
    staging : `sleeplm.measure.staging.StagingResult` (hypnogram, source, agreement).
    events : `sleeplm.measure.events.detect_events` table.
    summary : `sleeplm.measure.summary.night_summary` dict.
    hypopnea_rule : the scoring rule's name (`sleeplm.measure.rules.RULES`).
    timings_s : seconds spent per step (features, staging, events, summary).
    scoring : whose scoring `staging`, `events` and `summary` are: "technician" (the scoring that
        came with the recording: its stages, and its events for the kinds it scored) or "automatic"
        (the product's own staging and events).
    scorings : {"technician": `Scoring`, "automatic": `Scoring`}, the ones computed so far (both once
        the product's own scoring was compared with the technician's; empty without technician scoring).
    agreement : `sleeplm.measure.agreement.scoring_agreement` of the two, or None.
    near_misses : breathing reductions the product measured that failed a criterion of the rule
        (`sleeplm.measure.events.EventScoring`).
    candidates : every breathing reduction's measurements, to re-score under another rule (`rescore`).
    """

    features: pd.DataFrame
    missing: dict
    artefacts: pd.DataFrame
    staging: StagingResult
    events: pd.DataFrame
    summary: dict
    hypopnea_rule: str = "1A"
    timings_s: dict = field(default_factory=dict)
    scoring: str = "automatic"
    scorings: dict = field(default_factory=dict)
    agreement: dict | None = None
    near_misses: pd.DataFrame | None = None
    candidates: pd.DataFrame | None = None


def analyze_night(rec: Recording, model=None, progress: Callable[[float, str], None] | None = None,
                  hypopnea_rule: str = DEFAULT_RULE, automatic_staging: bool = True, scoring: str = "technician") -> NightAnalysis:
    """Measure the whole night once.

    Parameters
    ----------
    rec : the night.
    model : a loaded SleepLM for stage captions (see `sleeplm.measure.staging.stage_night`), or None; used
        only when the file has no scoring of its own.
    progress : called as ``progress(fraction 0-1, step text)`` before each step.
    hypopnea_rule : the scoring rule, a name or alias of `sleeplm.measure.rules.RULES` ("1A" AASM recommended,
        "1B" the 4 % rule, "chicago-1999", "shhs"...).
    automatic_staging : when the recording came with scoring, also score the night automatically
        (YASA's stages, events in them) and compare the two (`compare_with_automatic`).
    scoring : whose scoring the results use when the recording came with scoring: "technician"
        (default) or "automatic" (then the automatic scoring runs whatever `automatic_staging`).
        Without technician scoring the results are automatic.

    Returns
    -------
    `NightAnalysis`.

    Examples
    --------
    >>> steps = []
    >>> analysis = analyze_night(tiny_recording(), automatic_staging=False, progress=lambda f, text: steps.append(f))
    >>> steps == sorted(steps), analysis.staging.source, len(analysis.features), analysis.scoring
    (True, 'reference scoring', 30, 'technician')
    >>> sorted(analysis.timings_s)
    ['artefacts', 'events', 'features', 'staging', 'summary']
    >>> analysis.summary["ahi"] == night_summary(tiny_recording(), analysis.events, analysis.staging)["ahi"]
    True
    """
    if scoring not in SCORINGS:
        raise MeasurementError(f"unknown scoring {scoring!r}; use 'technician' or 'automatic'.")
    hypopnea_rule = resolve_rule(hypopnea_rule).name
    timings: dict[str, float] = {}

    def step(name: str, fraction: float, text: str, compute: Callable):
        if progress is not None:
            progress(fraction, text)
        started = time.perf_counter()
        result = compute()
        timings[name] = round(time.perf_counter() - started, 3)
        return result

    technician = has_technician_scoring(rec)
    compare = technician and (automatic_staging or scoring == "automatic")
    artefacts = step("artefacts", 0.0, "checking signal quality", lambda: artefact_segments(rec))
    features = step("features", 0.05, "measuring each epoch", lambda: epoch_features(rec, artefacts))
    # Captioning every epoch is slow on CPU: SleepLM stages the night only when the file has no scoring.
    # With technician scoring, the automatic stager runs in `compare_with_automatic`.
    has_stages = rec.reference is not None and rec.reference.stages is not None
    staging = step("staging", 0.4, "staging sleep",
                   lambda: stage_night(rec, model=None if has_stages else model,
                                      automatic=automatic_staging and not technician, artefacts=artefacts))
    scored = step("events", 0.55, "scoring events",
                  lambda: score_events(rec, staging.hypnogram, hypopnea_rule, artefacts=artefacts))
    events = scored.events
    if technician:
        events = with_technician_events(rec, events)
    summary = step("summary", 0.65, "night summary",
                   lambda: night_summary(rec, events, staging, features=features, hypopnea_rule=hypopnea_rule,
                                         artefacts=artefacts, respiratory_scored=respiratory_by_technician(rec)))
    summary["scoring"] = "technician" if technician else "automatic"
    analysis = NightAnalysis(features=features, missing=missing_reasons(rec, artefacts), artefacts=artefacts, staging=staging,
                             events=events, summary=summary, hypopnea_rule=hypopnea_rule, timings_s=timings,
                             scoring=summary["scoring"],
                             scorings={"technician": Scoring(staging, events, summary, scored.near_misses,
                                                             scored.candidates)} if technician else {},
                             near_misses=scored.near_misses, candidates=scored.candidates)
    if compare:
        if progress is not None:
            progress(0.7, "scoring automatically, to compare with the technician")
        started = time.perf_counter()
        analysis = compare_with_automatic(rec, analysis)
        timings["automatic"] = round(time.perf_counter() - started, 3)
        if scoring == "automatic":
            analysis = use_scoring(analysis, "automatic")
    if progress is not None:
        progress(1.0, "done")
    logger.info("night analysed in %.1f s (%s)", sum(timings.values()), timings)
    return analysis


def compare_with_automatic(rec: Recording, analysis: NightAnalysis) -> NightAnalysis:
    """`analysis` (of a recording with technician scoring) with the product's own scoring added and
    compared: YASA's stages (unless the technician scored no stages, then the stages in use are
    already automatic), events detected in them, their summary, and `NightAnalysis.agreement`.
    The scoring in use does not change; the technician staging's ``agreement`` gets the kappa.
    When the technician scored apneas or hypopneas, the product's own breathing reductions are judged
    once, in the automatic scoring's stages: the technician's scoring takes the automatic scoring's
    near-misses and candidates (the same objects), so a candidate is accepted or a near-miss alike in
    the downloads (events.csv) and in ``explain_event``, under any rule (`rescore`).

    Examples
    --------
    >>> compared = compare_with_automatic(tiny_recording(), tiny_analysis())   # a few seconds
    >>> compared.scoring, sorted(compared.scorings), compared.agreement["staging"]["automatic_source"]
    ('technician', ['automatic', 'technician'], 'yasa')
    """
    technician = analysis.scorings.get("technician") or Scoring(analysis.staging, analysis.events, analysis.summary,
                                                                analysis.near_misses, analysis.candidates)
    if technician.staging.source == "reference scoring":
        # The stager alone, as on a night without scoring (the recording's arrays are shared, not copied).
        staging = stage_night(replace(rec, reference=None), artefacts=analysis.artefacts)
    else:
        staging = technician.staging
    scored = score_events(rec, staging.hypnogram, analysis.hypopnea_rule, artefacts=analysis.artefacts)
    events = scored.events
    summary = night_summary(rec, events, staging, features=analysis.features, hypopnea_rule=analysis.hypopnea_rule,
                            artefacts=analysis.artefacts)
    summary["scoring"] = "automatic"
    agreement = scoring_agreement(rec, staging.hypnogram, events, summary, automatic_source=staging.source)
    summary["agreement"] = agreement
    tech_staging = technician.staging
    if tech_staging.source == "reference scoring" and agreement["staging"] is not None:
        tech_staging = replace(tech_staging, agreement={"with": staging.source, "accuracy": agreement["staging"]["accuracy"],
                                                        "kappa": agreement["staging"]["kappa"],
                                                        "n_epochs": agreement["staging"]["n_epochs"]})
    elif tech_staging.source == "reference scoring" and staging.unavailable:  # why the stager could not run (no EEG...)
        tech_staging = replace(tech_staging, unavailable={**(tech_staging.unavailable or {}), **staging.unavailable})
    if respiratory_by_technician(rec):  # its own apneas and hypopneas are the technician's: one judgement of ours
        technician = replace(technician, near_misses=scored.near_misses, candidates=scored.candidates)
    scorings = {"technician": replace(technician, staging=tech_staging, summary={**technician.summary, "agreement": agreement}),
                "automatic": Scoring(staging, events, summary, scored.near_misses, scored.candidates)}
    return _in_use(replace(analysis, scorings=scorings, agreement=agreement), analysis.scoring)


def use_scoring(analysis: NightAnalysis, scoring: str) -> NightAnalysis:
    """`analysis` with the results of `scoring` ("technician" or "automatic") in use.

    Raises `sleeplm.errors.MeasurementError` when that scoring is not available (no technician
    scoring with the recording, or the automatic one not computed yet: `compare_with_automatic`).

    Examples
    --------
    >>> analysis = tiny_analysis_compared()              # scored by its "technician" (the simulator), and compared
    >>> automatic = use_scoring(analysis, "automatic")
    >>> automatic.scoring, automatic.staging.source, automatic.summary["scoring"]
    ('automatic', 'yasa', 'automatic')
    >>> use_scoring(tiny_analysis(), "automatic")
    Traceback (most recent call last):
    ...
    sleeplm.errors.MeasurementError: the automatic scoring is not available: the automatic scoring of this night has not been computed yet.
    """
    if scoring not in SCORINGS:
        raise MeasurementError(f"unknown scoring {scoring!r}; use 'technician' or 'automatic'.")
    if scoring == analysis.scoring:
        return analysis
    if scoring not in analysis.scorings:
        why = ("no scoring came with this recording" if scoring == "technician" else
               "the automatic scoring of this night has not been computed yet")
        raise MeasurementError(f"the {scoring} scoring is not available: {why}.")
    return _in_use(analysis, scoring)


def _in_use(analysis: NightAnalysis, scoring: str) -> NightAnalysis:
    """`analysis` with ``analysis.scorings[scoring]``'s stages, events, near-misses, candidates and summary in use."""
    chosen = analysis.scorings[scoring]
    return replace(analysis, staging=chosen.staging, events=chosen.events, summary=chosen.summary, scoring=scoring,
                   near_misses=chosen.near_misses, candidates=chosen.candidates)


def automatic_view(analysis: NightAnalysis) -> NightAnalysis:
    """The product's own scoring of `analysis` alone, as an analysis in use: the automatic scoring
    (`compare_with_automatic` must have run when the recording came with scoring), or `analysis`
    itself when its results are already automatic. The other scorings are left out, so
    `rescore` of the view re-scores the automatic events only (``ahi_under_rules``' per-rule figures).

    Examples
    --------
    >>> view = automatic_view(tiny_analysis_compared())    # the technician's scoring in use
    >>> view.scoring, view.staging.source, view.scorings, view.events is tiny_analysis_compared().scorings["automatic"].events
    ('automatic', 'yasa', {}, True)
    """
    if analysis.scoring != "automatic":
        analysis = use_scoring(analysis, "automatic")
    return replace(analysis, scorings={}, agreement=None)


def restage(rec: Recording, analysis: NightAnalysis, staging: StagingResult) -> NightAnalysis:
    """A copy of `analysis` with other stages, its events and summary measured again with them.

    Used when a slower stager (SleepLM's stage captions) finishes after the night was first
    analysed with a faster one: events (e.g. hypopneas need sleep) and the summary depend on the stages.
    The scoring in use stays the one chosen: on a night whose technician scored events only, an
    analysis using the automatic scoring is compared again (`compare_with_automatic`) and keeps using it.

    Examples
    --------
    >>> import numpy as np
    >>> from sleeplm.measure.staging import StagingResult
    >>> rec, analysis = tiny_recording(), tiny_analysis()
    >>> awake = StagingResult(np.full(rec.n_epochs, "W", dtype=object), "sleeplm")   # a stager that saw no sleep
    >>> again = restage(rec, analysis, awake)
    >>> again.staging.source, again.summary["tst_min"], analysis.summary["tst_min"] > 0
    ('sleeplm', 0.0, True)
    >>> again.features is analysis.features, again.summary["ahi"] is None     # features reused; no sleep, no AHI
    (True, True)
    """
    scored = score_events(rec, staging.hypnogram, analysis.hypopnea_rule, artefacts=analysis.artefacts)
    events = scored.events
    technician = has_technician_scoring(rec)  # events only (with stages, no other stager replaces them)
    if technician:
        events = with_technician_events(rec, events)
    summary = night_summary(rec, events, staging, features=analysis.features, hypopnea_rule=analysis.hypopnea_rule,
                            artefacts=analysis.artefacts, respiratory_scored=respiratory_by_technician(rec))
    summary["scoring"] = "technician" if technician else "automatic"
    # A comparison made with the earlier stages is stale: it is made again when next asked for.
    restaged = replace(analysis, staging=staging, events=events, summary=summary, scoring=summary["scoring"],
                       scorings={"technician": Scoring(staging, events, summary, scored.near_misses, scored.candidates)}
                       if technician else {}, agreement=None, near_misses=scored.near_misses, candidates=scored.candidates)
    if technician and analysis.scoring == "automatic":  # the user's choice stands: compared now, still in use
        restaged = use_scoring(compare_with_automatic(rec, restaged), "automatic")
    return restaged


def rescore(rec: Recording, analysis: NightAnalysis, rule: str) -> NightAnalysis:
    """A copy of `analysis` under another scoring rule, from its cached per-candidate measurements.

    No signal is read again: the breathing reductions measured once (each scoring's ``candidates``)
    are held against the rule's thresholds and the summaries are recomputed (``bench/rescore.py``
    times it on an 8-h night). Every scoring is re-scored: the automatic one (its apneas and
    hypopneas change, and with them its agreement with the technician's), and the one that came
    with the recording, whose apneas and hypopneas stay the technician's when the technician scored
    them (no rule re-scores them: its summary's ``ahi_rule`` stays "technician"); only the product's
    own events of the kinds the technician did not score, and its near-misses, follow the rule.

    Examples
    --------
    >>> from dataclasses import replace
    >>> rec = tiny_recording()
    >>> rec = replace(rec, reference=replace(rec.reference, events=None))    # the file's stages, our events
    >>> analysis = analyze_night(rec, automatic_staging=False)
    >>> strict = rescore(rec, analysis, "1B")
    >>> strict.hypopnea_rule, strict.summary["ahi_rule"], strict.summary["ahi"] <= analysis.summary["ahi"]
    ('1B', '1B', True)
    >>> strict.features is analysis.features, rescore(rec, strict, "1A").summary["ahi"] == analysis.summary["ahi"]
    (True, True)
    >>> compared = tiny_analysis_compared()                # the technician's apneas and hypopneas in use
    >>> strict = rescore(tiny_recording(), compared, "1B")
    >>> strict.hypopnea_rule, strict.summary["ahi_rule"], strict.summary["ahi"] == compared.summary["ahi"]
    ('1B', 'technician', True)
    >>> strict.scorings["automatic"].summary["ahi_rule"], strict.agreement["indices"]["ahi"]["automatic"] == strict.scorings["automatic"].summary["ahi"]
    ('1B', True)
    """
    name = resolve_rule(rule).name
    technician = "technician" in analysis.scorings and respiratory_by_technician(rec)
    in_use = Scoring(analysis.staging, analysis.events, analysis.summary, analysis.near_misses, analysis.candidates)
    scorings = {key: _rescored(rec, analysis, scoring, name, key == "technician", technician)
                for key, scoring in analysis.scorings.items()}
    agreement = analysis.agreement
    automatic = scorings.get("automatic")
    if automatic is not None and agreement is not None:
        agreement = scoring_agreement(rec, automatic.staging.hypnogram, automatic.events, automatic.summary,
                                      automatic_source=agreement["staging"]["automatic_source"] if agreement.get("staging")
                                      else automatic.staging.source)
        for scoring in scorings.values():
            scoring.summary["agreement"] = agreement
    # A night without technician scoring has its one (automatic) scoring in use, and no `scorings`.
    current = scorings.get(analysis.scoring) or _rescored(rec, analysis, in_use, name, False, technician)
    return replace(analysis, staging=current.staging, events=current.events, summary=current.summary,
                   near_misses=current.near_misses, candidates=current.candidates, scorings=scorings,
                   hypopnea_rule=name, agreement=agreement)


def _rescored(rec: Recording, analysis: NightAnalysis, scoring: Scoring, rule: str, is_technician: bool,
              respiratory_scored: bool) -> Scoring:
    """`scoring` under `rule`: its product-own candidates scored again, the technician's events (when
    `is_technician`) kept for the kinds they scored, and its summary recomputed."""
    if scoring.candidates is None:
        raise MeasurementError("this night's events carry no per-candidate measurements (measured by an earlier "
                               "version), so no rule can re-score them; analyse the recording again.")
    scored = rescore_events(rec, EventScoring(scoring.events, scoring.near_misses, scoring.candidates,
                                              analysis.hypopnea_rule), rule)
    events = with_technician_events(rec, scored.events) if is_technician else scored.events
    summary = night_summary(rec, events, scoring.staging, features=analysis.features, hypopnea_rule=rule,
                            artefacts=analysis.artefacts, respiratory_scored=is_technician and respiratory_scored)
    summary["scoring"] = scoring.summary.get("scoring", "technician" if is_technician else "automatic")
    if "agreement" in scoring.summary:
        summary["agreement"] = scoring.summary["agreement"]
    return Scoring(scoring.staging, events, summary, scored.near_misses, scored.candidates)
