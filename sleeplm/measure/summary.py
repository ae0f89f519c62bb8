"""Night statistics: sleep architecture from the hypnogram (as YASA defines them) and the
AASM respiratory, oxygen, heart-rate and position figures, in the export contract's keys.

Figures that cannot be assessed (no EEG so no sleep time, no airflow, no SpO2...) are None,
and ``not_assessable[key]`` says why.

Examples
--------
>>> from sleeplm.measure.summary import night_summary
>>> analysis = tiny_analysis()                      # a 15-min "severe" simulated night (conftest.py)
>>> summary = night_summary(tiny_recording(), events=analysis.events, staging=analysis.staging)
>>> summary["tib_min"], summary["severity"]
(15.0, 'severe')
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from sleeplm.measure.features import ECG_UNREADABLE, epoch_positions, heart_rate_per_second
from sleeplm.measure.quality import artefact_segments, bad_seconds
from sleeplm.io.recording import EPOCH_SEC, POSITION_CODES, STAGES, Recording
from sleeplm.terms import NREM_STAGES, SLEEP_STAGES, severity_band
from sleeplm.measure.respiratory import spo2_per_second
from sleeplm.measure.rules import CONFIDENCE_CUTOFFS, resolve_rule
from sleeplm.measure.signals import epoch_matrix, get_signal, unusable_reason

__all__ = ["APNEAS_ONLY", "TECHNICIAN_SCORED", "EXPORT_KEYS", "SUMMARY_KEYS", "sleep_statistics", "severity_band", "night_summary"]

SUPINE = 2
EPOCH_MIN = EPOCH_SEC / 60
# Sleep architecture: needs a hypnogram (no EEG and no scoring: not assessable).
SLEEP_KEYS = (
    "spt_min", "tst_min", "se_pct", "sol_min", "rem_latency_min", "waso_min",
    *(f"{s}_min" for s in STAGES), *(f"{s}_pct" for s in STAGES), "n_awakenings",
)
# The export contract of summary.json (issue 5), in this order.
EXPORT_KEYS = (
    "tib_min", *SLEEP_KEYS,
    "ahi", "ahi_rule", "rei", "severity", "ahi_supine", "ahi_nonsupine", "ahi_rem", "ahi_nrem",
    "odi3", "odi4", "t90_min", "spo2_min", "spo2_mean", "hr_mean", "n_apneas", "n_hypopneas",
)
SUMMARY_KEYS = (*EXPORT_KEYS, "position_min", "rule", "ahi_by_confidence")
RESPIRATORY_KEYS = ("ahi", "rei", "severity", "ahi_supine", "ahi_nonsupine", "ahi_rem", "ahi_nrem", "n_apneas", "n_hypopneas")
# Below this share of usable signal over the time an index divides by, the index would mostly
# count missing data as normal breathing or saturation: it is not assessable.
MIN_USABLE_SHARE = 0.5
# `ahi_rule` when hypopneas cannot be scored (no SpO2 and no arousal evidence).
APNEAS_ONLY = "apneas only"
# `ahi_rule` when the apneas and hypopneas counted are the technician's (a scoring file states no rule).
TECHNICIAN_SCORED = "technician"


def _r(x, digits: int = 2):
    return None if x is None else round(float(x), digits)


def sleep_statistics(hypnogram: np.ndarray) -> dict:
    """Sleep architecture of a hypnogram, in minutes and percent.

    Definitions follow YASA's ``sleep_statistics`` (AASM): TIB is the whole hypnogram, SPT
    first to last sleep epoch, WASO wake inside SPT, TST sleep epochs (unscored "?" epochs
    excluded), SE = TST/TIB, SOL from the first epoch, REM latency from sleep onset (AASM,
    = YASA's Lat_REM - SOL), stage % of TST (W_pct: % of TIB), awakenings = runs of W inside
    SPT of at least one epoch.

    Returns a dict with tib_min, spt_min, tst_min, se_pct, sol_min, rem_latency_min, waso_min,
    <stage>_min, <stage>_pct, n_awakenings; latencies are None when the stage never occurs.
    Values are not rounded, so they equal YASA's to floating-point precision.

    Examples
    --------
    >>> hyp = np.array(["W"] * 4 + ["N1"] * 2 + ["N2"] * 10 + ["W"] * 2 + ["N3"] * 6 + ["R"] * 4 + ["W"] * 2)
    >>> stats = sleep_statistics(hyp)                        # 30 epochs = 15 min
    >>> {k: stats[k] for k in ("tib_min", "spt_min", "tst_min", "sol_min", "waso_min", "rem_latency_min")}
    {'tib_min': 15.0, 'spt_min': 12.0, 'tst_min': 11.0, 'sol_min': 2.0, 'waso_min': 1.0, 'rem_latency_min': 10.0}
    >>> round(stats["se_pct"], 1), round(stats["N2_pct"], 1), stats["n_awakenings"]
    (73.3, 45.5, 1)
    """
    hyp = np.asarray(hypnogram, dtype=object)
    asleep = np.flatnonzero(np.isin(hyp, SLEEP_STAGES))
    tib = len(hyp) * EPOCH_MIN
    stats = {"tib_min": tib}
    period = hyp[asleep[0] : asleep[-1] + 1] if asleep.size else hyp[:0]
    tst = float(np.isin(period, SLEEP_STAGES).sum() * EPOCH_MIN)
    stats["spt_min"] = len(period) * EPOCH_MIN
    stats["tst_min"] = tst
    stats["se_pct"] = 100 * tst / tib if tib else None
    stats["sol_min"] = float(asleep[0] * EPOCH_MIN) if asleep.size else None
    rem = np.flatnonzero(hyp == "R")
    stats["rem_latency_min"] = float((rem[0] - asleep[0]) * EPOCH_MIN) if rem.size else None
    stats["waso_min"] = float((period == "W").sum() * EPOCH_MIN) if asleep.size else None
    for stage in STAGES:
        stats[f"{stage}_min"] = float((hyp == stage).sum() * EPOCH_MIN)
    for stage in SLEEP_STAGES:
        stats[f"{stage}_pct"] = 100 * stats[f"{stage}_min"] / tst if tst else None
    stats["W_pct"] = 100 * stats["W_min"] / tib if tib else None
    wake = np.concatenate([[False], period == "W", [False]]).astype(np.int8)
    stats["n_awakenings"] = int((np.diff(wake) == 1).sum())
    return stats


def _per_hour(count: int, minutes: float | None) -> float | None:
    return None if not minutes else _r(count / (minutes / 60))


def _why_apneas_only(rec: Recording, hypopnea_rule: str, asleep_s: np.ndarray | None) -> str | None:
    """Why hypopneas cannot be scored (no usable SpO2 for a desaturation, and for a rule that accepts
    arousals (1A) no EEG for an arousal), or None when they can."""
    rule = resolve_rule(hypopnea_rule)
    spo2 = spo2_per_second(rec, np.zeros(rec.n_epochs * EPOCH_SEC, dtype=bool))
    if spo2 is not None:
        valid = np.isfinite(spo2) & (spo2 >= 50) & (spo2 <= 100)
        if _usable_share(valid, asleep_s) >= MIN_USABLE_SHARE:
            return None
    eeg = get_signal(rec, "EEG_C3_A2") is not None or get_signal(rec, "EEG_C4_A1") is not None
    if rule.hypopnea_arousal and eeg:
        return None
    arousal = (" and no EEG for arousals" if rule.hypopnea_arousal else
               f" (rule {rule.name} needs a >= {rule.hypopnea_desat_pct:g} % desaturation)")
    return f"hypopneas cannot be scored: no usable SpO2{arousal}"


def _usable_share(usable_s: np.ndarray, window_s: np.ndarray | None) -> float:
    """Share (0-1) of the seconds in `window_s` (all seconds when None or empty) where the signal is usable."""
    if window_s is not None and window_s.any():
        usable_s = usable_s[window_s[: len(usable_s)]]
    return float(usable_s.mean()) if usable_s.size else 0.0


def night_summary(rec: Recording, events: pd.DataFrame | None = None, staging=None,
                  features: pd.DataFrame | None = None, hypopnea_rule: str = "1A",
                  artefacts: pd.DataFrame | None = None, respiratory_scored: bool = False) -> dict:
    """Whole-night figures of the export contract (`SUMMARY_KEYS`) plus ``not_assessable``.

    Parameters
    ----------
    rec : the night.
    events : `sleeplm.measure.events.detect_events` output (computed when None).
    staging : `sleeplm.measure.staging.StagingResult` (computed when None).
    features : `sleeplm.measure.features.epoch_features` output; used for the sleeping heart rate
        when given (else heart rate is measured from the ECG/HR channel).
    hypopnea_rule : the rule `events` were scored with (`sleeplm.measure.rules.RULES`), reported as
        ``ahi_rule`` (its name) and ``rule`` (name, title, citation, parameters).
    artefacts : `sleeplm.measure.quality.artefact_segments(rec)` (computed when None). Where the airflow
        (or SpO2) is usable for less than half the sleep time (recording time without stages),
        AHI/REI (ODI/T90) are not assessable: a dead sensor must not read as a normal night.
    respiratory_scored : the apneas and hypopneas in `events` are a technician's scoring, not measured
        here: AHI counts them whatever the airflow and SpO2 signals allow the product to measure, and
        ``ahi_rule`` is `TECHNICIAN_SCORED` (``rule`` stays the rule the product's own events follow).

    Returns
    -------
    dict: minutes (``*_min``), percent (``*_pct``), events per hour (``ahi*`` and ``odi*``
    per hour of sleep, ``rei`` per hour of recording; without stages ``odi*`` are per hour of
    recording too), SpO2 in %, HR in bpm (over sleep; over the recording without stages),
    ``position_min`` {position: minutes}, ``stage_source``, ``severity_basis`` ("ahi" or "rei"),
    ``airflow_usable_pct``, ``spo2_usable_pct`` (share of that time with a usable signal),
    ``staging_note`` (how the automatic stager ran, e.g. on a resampled 50-Hz EEG, else None),
    ``ahi_rule`` the hypopnea rule, ``"technician"`` when the apneas and hypopneas are the technician's,
    or ``"apneas only"`` when hypopneas cannot be scored (no
    usable SpO2 and no EEG for arousals): then ``n_hypopneas`` and ``severity`` are None with
    their reason, as no AASM band may rest on an index that leaves hypopneas out,
    ``ahi_by_confidence`` {"all" / ">= 0.75" / ">= 0.9": {"events", "ahi"}}: the respiratory events
    (in sleep) whose confidence reaches each cut-off and the index they give (REI without sleep time;
    None for a technician's events, which carry no confidence),
    ``not_assessable`` {key: reason}: every `EXPORT_KEYS` figure that is None has its reason.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> analysis = tiny_analysis()
    >>> summary = night_summary(rec, events=analysis.events, staging=analysis.staging)
    >>> summary["tib_min"], summary["stage_source"], summary["ahi_rule"], summary["severity_basis"]
    (15.0, 'reference scoring', '1A', 'ahi')
    >>> summary["severity"] == severity_band(summary["ahi"]), summary["n_apneas"] + summary["n_hypopneas"] > 0
    (True, True)
    >>> all(summary[key] is None for key in summary["not_assessable"])
    True
    """
    from sleeplm.measure.events import detect_events
    from sleeplm.measure.staging import stage_night

    staging = stage_night(rec) if staging is None else staging
    hyp = staging.hypnogram
    events = detect_events(rec, hypnogram=hyp, hypopnea_rule=hypopnea_rule) if events is None else events
    missing: dict[str, str] = {}
    summary: dict = {key: None for key in SUMMARY_KEYS}
    summary["tib_min"] = rec.n_epochs * EPOCH_MIN
    if hyp is not None:
        summary.update(sleep_statistics(hyp))
    else:
        reason = (staging.unavailable or {}).get("yasa", "no sleep stages") + "; sleep time is not assessable"
        missing.update(dict.fromkeys(SLEEP_KEYS, reason))
    for key in SLEEP_KEYS:
        if hyp is not None and summary[key] is None:
            missing[key] = "no REM sleep scored" if key == "rem_latency_min" else "no sleep scored"
    summary["stage_source"] = staging.source
    summary["staging_note"] = staging.note

    stage_of = None if hyp is None else np.asarray(hyp, dtype=object)
    positions = epoch_positions(rec)
    kinds = events["kind"].to_numpy() if len(events) else np.array([])
    first_epoch = (events["start_s"].to_numpy(dtype=float) // EPOCH_SEC).astype(int).clip(0, rec.n_epochs - 1) if len(events) else np.array([], int)
    respiratory = np.isin(kinds, ("apnea", "hypopnea"))
    summary["n_apneas"] = int((kinds == "apnea").sum())
    summary["n_hypopneas"] = int((kinds == "hypopnea").sum())
    rule = resolve_rule(hypopnea_rule)
    summary["ahi_rule"] = TECHNICIAN_SCORED if respiratory_scored else rule.name
    summary["rule"] = rule.describe()
    has_flow = get_signal(rec, "AF") is not None or get_signal(rec, "Pressure") is not None
    tst = summary["tst_min"] if hyp is not None else None
    n_seconds = rec.n_epochs * EPOCH_SEC
    asleep_s = None if hyp is None else np.repeat(np.isin(stage_of, SLEEP_STAGES), EPOCH_SEC)
    artefacts = artefact_segments(rec) if artefacts is None else artefacts
    time_named = "sleep" if asleep_s is not None and asleep_s.any() else "recording"
    if has_flow:
        # Either airflow channel being usable is enough: apneas and hypopneas fall back on the other.
        usable = np.zeros(n_seconds, dtype=bool)
        for name in ("AF", "Pressure"):
            if get_signal(rec, name) is not None:
                usable |= ~bad_seconds(artefacts, (name,), n_seconds)
        share = _usable_share(usable, asleep_s)
        summary["airflow_usable_pct"] = round(100 * share, 1)
        has_flow = share >= MIN_USABLE_SHARE
        flow_reason = (f"the airflow signal is usable (not flat or artefact) for only {share:.0%} of the {time_named} "
                       "time, so breathing events cannot be counted")
    else:
        flow_reason = (f"no usable airflow ({unusable_reason(rec, 'AF')}; {unusable_reason(rec, 'Pressure')}), "
                       "so breathing events cannot be scored")

    def rate(mask_events: np.ndarray, epochs_mask: np.ndarray | None) -> float | None:
        if epochs_mask is None:
            return None
        minutes = epochs_mask.sum() * EPOCH_MIN
        return _per_hour(int((mask_events & epochs_mask[first_epoch]).sum()), minutes)

    has_flow = has_flow or respiratory_scored
    if not has_flow:
        missing.update(dict.fromkeys(RESPIRATORY_KEYS, flow_reason))
        summary.update(dict.fromkeys(RESPIRATORY_KEYS))
    else:
        summary["rei"] = _per_hour(int(respiratory.sum()), summary["tib_min"])
        if hyp is None:
            reason = "no sleep stages (no usable EEG): AHI needs sleep time; REI over recording time is given"
            missing.update(dict.fromkeys(("ahi", "ahi_supine", "ahi_nonsupine", "ahi_rem", "ahi_nrem"), reason))
        elif tst:
            asleep = np.isin(stage_of, SLEEP_STAGES)
            summary["ahi"] = rate(respiratory, asleep)
            summary["ahi_rem"] = rate(respiratory, stage_of == "R")
            summary["ahi_nrem"] = rate(respiratory, np.isin(stage_of, NREM_STAGES))
            if positions is not None:
                summary["ahi_supine"] = rate(respiratory, asleep & (positions == SUPINE))
                summary["ahi_nonsupine"] = rate(respiratory, asleep & (positions >= 0) & (positions != SUPINE))
        else:
            reason = "no sleep scored, so AHI has no sleep time to divide by; REI over recording time is given"
            missing.update(dict.fromkeys(("ahi", "ahi_supine", "ahi_nonsupine", "ahi_rem", "ahi_nrem"), reason))
        summary["severity_basis"] = "ahi" if summary["ahi"] is not None else "rei"
        # A technician's events carry no confidence: no cut-offs for them.
        summary["ahi_by_confidence"] = (None if respiratory_scored else
                                        _by_confidence(events, respiratory, first_epoch, stage_of, summary))
        apneas_only = None if respiratory_scored else _why_apneas_only(rec, hypopnea_rule, asleep_s)
        if apneas_only:
            # The index counts apneas only: an AASM band built on it would understate the night.
            summary["ahi_rule"] = APNEAS_ONLY
            summary["n_hypopneas"] = None
            missing["n_hypopneas"] = apneas_only
            missing["severity"] = (f"{apneas_only}; the index above counts apneas only, so no AASM severity band "
                                   "is given")
        else:
            summary["severity"] = severity_band(summary["ahi"] if summary["ahi"] is not None else summary["rei"])
        for key, reason in (("ahi_rem", "no REM sleep"), ("ahi_nrem", "no NREM sleep"),
                            ("ahi_supine", "no supine sleep" if positions is not None else "no body-position channel"),
                            ("ahi_nonsupine", "no non-supine sleep" if positions is not None else "no body-position channel")):
            if summary[key] is None and "ahi" not in missing:
                missing[key] = reason

    spo2 = spo2_per_second(rec, np.zeros(n_seconds, dtype=bool))
    if spo2 is None:
        for key in ("odi3", "odi4", "t90_min", "spo2_min", "spo2_mean"):
            missing[key] = unusable_reason(rec, "SpO2")
    else:
        spo2 = np.where((spo2 >= 50) & (spo2 <= 100), spo2, np.nan)
        spo2_share = _usable_share(np.isfinite(spo2), asleep_s)
        summary["spo2_usable_pct"] = round(100 * spo2_share, 1)
        window = spo2[asleep_s] if asleep_s is not None and asleep_s.any() else spo2
        window = window[np.isfinite(window)]
        desat = kinds == "desaturation"
        minutes = tst if hyp is not None else summary["tib_min"]
        summary["odi3"] = _per_hour(int(desat.sum()), minutes)
        subtypes = events["subtype"].to_numpy() if len(events) else np.array([])
        summary["odi4"] = _per_hour(int((desat & (subtypes == "4%")).sum()), minutes)
        if (desat & ~np.isin(subtypes, ("3%", "4%"))).any():  # a scoring file's desaturations of unknown depth
            summary["odi4"] = None
            missing["odi4"] = ("the scored oxygen drops (desaturations) do not say how deep they were, so those of 4 % or more "
                               "cannot be counted")
        if not minutes:
            missing.update(dict.fromkeys(("odi3", "odi4"), "no sleep scored, so ODI has no sleep time to divide by"))
        elif spo2_share < MIN_USABLE_SHARE:
            reason = (f"SpO2 is valid (50-100 %) for only {spo2_share:.0%} of the {time_named} time, "
                      "so desaturations and time below 90 % cannot be counted")
            missing.update(dict.fromkeys(("odi3", "odi4", "t90_min"), reason))
            summary.update(dict.fromkeys(("odi3", "odi4")))
        if window.size:
            summary["t90_min"] = None if "t90_min" in missing else _r((window < 90).sum() / 60)
            summary["spo2_min"] = _r(window.min(), 1)
            summary["spo2_mean"] = _r(window.mean(), 1)
        else:
            for key in ("t90_min", "spo2_min", "spo2_mean"):
                missing[key] = "no valid SpO2 samples"
    summary["hr_mean"] = _sleeping_hr(rec, stage_of, features)
    if summary["hr_mean"] is None:
        missing["hr_mean"] = ("heart rate not measurable: " + ECG_UNREADABLE if get_signal(rec, "ECG") is not None else
                              f"no ECG or heart-rate channel with detectable beats ({unusable_reason(rec, 'HR')})")
    if positions is None:
        missing["position_min"] = "no body-position channel"
    else:
        summary["position_min"] = {POSITION_CODES[c]: round(float((positions == c).sum() * EPOCH_MIN), 1)
                                   for c in sorted(POSITION_CODES) if (positions == c).any()}
    summary["not_assessable"] = missing
    return summary


def _by_confidence(events: pd.DataFrame, respiratory: np.ndarray, first_epoch: np.ndarray, stage_of: np.ndarray | None,
                   summary: dict) -> dict:
    """Respiratory events and their index at each confidence cut-off (`CONFIDENCE_CUTOFFS`), over the
    time the AHI (else the REI) divides by."""
    if summary["ahi"] is not None:
        counted = respiratory & np.isin(stage_of, SLEEP_STAGES)[first_epoch]
        minutes = summary["tst_min"]
    else:
        counted, minutes = respiratory, summary["tib_min"]
    confidence = (events["confidence"].to_numpy(dtype=float) if "confidence" in events and len(events)
                  else np.full(len(events), np.nan))
    out = {"all": {"events": int(counted.sum()), "ahi": _per_hour(int(counted.sum()), minutes)}}
    for cutoff in CONFIDENCE_CUTOFFS:
        n = int((counted & (np.nan_to_num(confidence, nan=-1.0) >= cutoff)).sum())
        out[f">= {cutoff:g}"] = {"events": n, "ahi": _per_hour(n, minutes)}
    return out


def _sleeping_hr(rec: Recording, stage_of: np.ndarray | None, features: pd.DataFrame | None) -> float | None:
    """Mean heart rate (bpm) over sleep epochs (the whole night when no stages)."""
    if features is not None and "cardiac_hr_mean_bpm" in features:
        per_epoch = features["cardiac_hr_mean_bpm"].to_numpy(dtype=float)
    else:
        hr = heart_rate_per_second(rec)
        if hr is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # epochs without beats are NaN, not an error
            per_epoch = np.nanmean(epoch_matrix(hr, 1.0, rec.n_epochs), axis=1)
    if stage_of is not None and np.isin(stage_of, SLEEP_STAGES).any():
        per_epoch = per_epoch[np.isin(stage_of, SLEEP_STAGES)]
    per_epoch = per_epoch[np.isfinite(per_epoch)]
    return _r(per_epoch.mean(), 1) if per_epoch.size else None
