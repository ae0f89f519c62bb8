"""One pass over the night: features, stages, events and summary, computed once for every tool.

Examples
--------
>>> from sleeplm import load_recording
>>> from sleeplm.analysis import analyze_night
>>> analysis = analyze_night(load_recording("night.edf"), progress=lambda f, text: print(f"{f:.0%} {text}"))  # doctest: +SKIP
>>> analysis.summary["ahi"], analysis.timings_s  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from sleeplm.events import detect_events
from sleeplm.features import epoch_features, missing_reasons
from sleeplm.quality import artefact_segments
from sleeplm.recording import Recording
from sleeplm.staging import StagingResult, stage_night
from sleeplm.summary import night_summary

__all__ = ["NightAnalysis", "analyze_night"]

logger = logging.getLogger(__name__)


@dataclass
class NightAnalysis:
    """Everything measured about one night.

    Attributes
    ----------
    features : `sleeplm.features.epoch_features` table (one row per epoch).
    missing : `sleeplm.features.missing_reasons`: why feature columns are NaN.
    artefacts : `sleeplm.quality.artefact_segments` (channel, problem, start_s, end_s).
    staging : `sleeplm.staging.StagingResult` (hypnogram, source, agreement).
    events : `sleeplm.events.detect_events` table.
    summary : `sleeplm.summary.night_summary` dict.
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
    model : a loaded SleepLM for stage captions (see `sleeplm.staging.stage_night`), or None.
    progress : called as ``progress(fraction 0-1, step text)`` before each step.
    hypopnea_rule : "1A" (AASM recommended) or "1B".
    automatic_staging : run YASA even when the file has its own scoring (to report agreement).

    Returns
    -------
    `NightAnalysis`.
    """
    timings: dict[str, float] = {}
    steps = [("artefacts", 0.0, "checking signal quality"), ("features", 0.05, "measuring each epoch"),
             ("staging", 0.45, "staging sleep"), ("events", 0.7, "scoring events"), ("summary", 0.95, "night summary")]
    results: dict = {}
    for name, fraction, text in steps:
        if progress is not None:
            progress(fraction, text)
        started = time.perf_counter()
        if name == "artefacts":
            results[name] = artefact_segments(rec)
        elif name == "features":
            results[name] = epoch_features(rec)
        elif name == "staging":
            results[name] = stage_night(rec, model=model, automatic=automatic_staging)
        elif name == "events":
            results[name] = detect_events(rec, results["staging"].hypnogram, hypopnea_rule, artefacts=results["artefacts"])
        else:
            results[name] = night_summary(rec, results["events"], results["staging"], features=results["features"],
                                          hypopnea_rule=hypopnea_rule)
        timings[name] = round(time.perf_counter() - started, 3)
    if progress is not None:
        progress(1.0, "done")
    logger.info("night analysed in %.1f s (%s)", sum(timings.values()), timings)
    return NightAnalysis(features=results["features"], missing=missing_reasons(rec), artefacts=results["artefacts"],
                         staging=results["staging"], events=results["events"], summary=results["summary"],
                         hypopnea_rule=hypopnea_rule, timings_s=timings)
