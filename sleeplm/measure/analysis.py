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

from sleeplm.measure.events import detect_events
from sleeplm.measure.features import epoch_features, missing_reasons
from sleeplm.measure.quality import artefact_segments
from sleeplm.io.recording import Recording
from sleeplm.measure.staging import StagingResult, stage_night
from sleeplm.measure.summary import night_summary

__all__ = ["NightAnalysis", "analyze_night", "restage"]

logger = logging.getLogger(__name__)


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
    hypopnea_rule : "1A" or "1B".
    timings_s : seconds spent per step (features, staging, events, summary).
    """

    features: pd.DataFrame
    missing: dict
    artefacts: pd.DataFrame
    staging: StagingResult
    events: pd.DataFrame
    summary: dict
    hypopnea_rule: str = "1A"
    timings_s: dict = field(default_factory=dict)


def analyze_night(rec: Recording, model=None, progress: Callable[[float, str], None] | None = None,
                  hypopnea_rule: str = "1A", automatic_staging: bool = True) -> NightAnalysis:
    """Measure the whole night once.

    Parameters
    ----------
    rec : the night.
    model : a loaded SleepLM for stage captions (see `sleeplm.measure.staging.stage_night`), or None; used
        only when the file has no scoring of its own.
    progress : called as ``progress(fraction 0-1, step text)`` before each step.
    hypopnea_rule : "1A" (AASM recommended) or "1B".
    automatic_staging : run YASA even when the file has its own scoring (to report agreement).

    Returns
    -------
    `NightAnalysis`.

    Examples
    --------
    >>> steps = []
    >>> analysis = analyze_night(tiny_recording(), automatic_staging=False, progress=lambda f, text: steps.append(f))
    >>> steps == sorted(steps), analysis.staging.source, len(analysis.features)
    (True, 'reference scoring', 30)
    >>> sorted(analysis.timings_s)
    ['artefacts', 'events', 'features', 'staging', 'summary']
    >>> analysis.summary["ahi"] == night_summary(tiny_recording(), analysis.events, analysis.staging)["ahi"]
    True
    """
    timings: dict[str, float] = {}

    def step(name: str, fraction: float, text: str, compute: Callable):
        if progress is not None:
            progress(fraction, text)
        started = time.perf_counter()
        result = compute()
        timings[name] = round(time.perf_counter() - started, 3)
        return result

    artefacts = step("artefacts", 0.0, "checking signal quality", lambda: artefact_segments(rec))
    features = step("features", 0.05, "measuring each epoch", lambda: epoch_features(rec, artefacts))
    # Captioning every epoch is slow on CPU: SleepLM stages the night only when the file has no scoring.
    has_scoring = rec.reference is not None and rec.reference.stages is not None
    staging = step("staging", 0.45, "staging sleep",
                   lambda: stage_night(rec, model=None if has_scoring else model, automatic=automatic_staging,
                                      artefacts=artefacts))
    events = step("events", 0.7, "scoring events",
                  lambda: detect_events(rec, staging.hypnogram, hypopnea_rule, artefacts=artefacts))
    summary = step("summary", 0.95, "night summary",
                   lambda: night_summary(rec, events, staging, features=features, hypopnea_rule=hypopnea_rule,
                                                artefacts=artefacts))
    if progress is not None:
        progress(1.0, "done")
    logger.info("night analysed in %.1f s (%s)", sum(timings.values()), timings)
    return NightAnalysis(features=features, missing=missing_reasons(rec, artefacts), artefacts=artefacts, staging=staging,
                         events=events, summary=summary, hypopnea_rule=hypopnea_rule, timings_s=timings)


def restage(rec: Recording, analysis: NightAnalysis, staging: StagingResult) -> NightAnalysis:
    """A copy of `analysis` with other stages, its events and summary measured again with them.

    Used when a slower stager (SleepLM's stage captions) finishes after the night was first
    analysed with a faster one: events (e.g. hypopneas need sleep) and the summary depend on the stages.

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
    events = detect_events(rec, staging.hypnogram, analysis.hypopnea_rule, artefacts=analysis.artefacts)
    summary = night_summary(rec, events, staging, features=analysis.features, hypopnea_rule=analysis.hypopnea_rule,
                            artefacts=analysis.artefacts)
    return replace(analysis, staging=staging, events=events, summary=summary)
