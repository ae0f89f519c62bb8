"""The measured fallback of `find_epochs`: plain-words queries answered from the night's measurements.

Used when SleepLM's retrieval cannot run (no weights, or embeddings still being computed). A
query is read for criteria, each a per-epoch mask over one measurement:

- measured per-epoch features (`sleeplm.measure.features.epoch_features`): "rapid eye movements" (EOG
  power 0.6-5 Hz), "low oxygen" (SpO2 minimum), "fast/slow heart rate" (mean HR), "flow
  limitation" (inspiratory flow flattening), "restless" / "muscle twitches" (chin EMG bursts), and
  "snoring" (loudness of the snore channel; flow flattening when there is no snore channel);
- detected events (apneas, hypopneas, desaturations, arousals, tachycardia, bradycardia);
- sleep stages and body positions.

Several criteria in one query must all hold (an event or feature may sit one epoch away from the
others: a desaturation follows its apnea). Matching epochs less than a minute apart form one
episode; episodes are ranked by the first feature criterion's strength, else by length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sleeplm.io.recording import EPOCH_SEC, POSITION_CODES
from sleeplm.measure.signals import epoch_matrix, get_signal
from sleeplm.terms import BRADY_BPM, TACHY_BPM, runs_of
from tools.context import NightContext, position_per_epoch, rounded

__all__ = ["Criterion", "FEATURE_CRITERIA", "EPISODE_GAP_EPOCHS", "query_criteria", "measured_search", "snore_loudness"]

# Matching epochs less than a minute apart are one episode (clusters of apneas are one finding).
EPISODE_GAP_EPOCHS = 2
# Snore loudness is not an epoch feature: measured here from the snore channel, per epoch.
SNORE_COLUMN = "snore_rms_uv"
FLATTENING_COLUMN = "resp_flow_flattening"
# Relative criteria keep the night's top tenth: "more than usual for this night".
TOP_FRACTION = 0.10


@dataclass(frozen=True)
class FeatureRule:
    """A query pattern answered by one feature column, above or below a threshold.

    `threshold` is absolute (in the column's unit); None means the night's top `TOP_FRACTION`
    (highest or lowest values, following `direction`).
    """

    pattern: str
    column: str
    direction: str  # "high" or "low"
    threshold: float | None
    label: str
    unit: str


FEATURE_CRITERIA = [
    FeatureRule(r"rapid eye|eye movement|\beyes? mov", "brain_eog_rapid_power_uv2", "high", None,
                "EOG power in the rapid eye-movement band (0.6-5 Hz)", "uV^2"),
    FeatureRule(r"low oxygen|oxygen\b.*\blow|hypox|low (spo2|saturation)|\b(spo2|saturation)\b.*\blow",
                "cardiac_spo2_min_pct", "low", 90.0, "SpO2 minimum", "%"),
    # AASM adult sinus tachycardia / bradycardia during sleep.
    FeatureRule(r"fast heart|rapid heart|racing|high heart rate|heart rate\b.*\b(high|fast)", "cardiac_hr_mean_bpm",
                "high", TACHY_BPM, "mean heart rate", "bpm"),
    FeatureRule(r"slow heart|low heart rate|heart rate\b.*\b(low|slow)", "cardiac_hr_mean_bpm", "low", BRADY_BPM,
                "mean heart rate", "bpm"),
    FeatureRule(r"snor", SNORE_COLUMN, "high", None, "snore-channel loudness (RMS)", "uV"),
    # A flattened (plateau) inspiratory flow is flow limitation; 0.6 is where the measured
    # captions call flow flattened (a sinusoid gives about 0.4).
    FeatureRule(r"flow limit|flatten", FLATTENING_COLUMN, "high", 0.6, "inspiratory flow flattening (flow limitation)",
                "fraction 0-1"),
    FeatureRule(r"restless|twitch|muscle|leg move|body move|(?<!eye )movements?\b", "posmus_emg_burst_count", "high",
                None, "chin EMG bursts per epoch", "count"),
]

_EVENT_WORDS = [
    (r"apn(o)?ea|pause|stopp?ed breathing|not breathing", ("apnea",)),
    (r"hypopn(o)?ea|shallow", ("hypopnea",)),
    (r"respirat|breath", ("apnea", "hypopnea")),
    (r"desat", ("desaturation",)),
    (r"arousal", ("arousal",)),
    (r"tachycard", ("tachycardia",)),
    (r"bradycard", ("bradycardia",)),
]
_STAGE_WORDS = [(r"\brem\b|dream", "R"), (r"deep|\bn3\b|slow[- ]wave", "N3"), (r"\bn2\b|spindle", "N2"),
                (r"\bn1\b", "N1"), (r"\bwake\b|awake", "W")]
_POSITION_WORDS = {name.lower(): code for code, name in POSITION_CODES.items() if code >= 0}
UNDERSTOOD = ("rapid eye movements, low oxygen, fast or slow heart rate, snoring/flow limitation, restless/muscle "
              "activity, apneas, hypopneas, breathing events, desaturations, arousals, tachycardia, bradycardia, "
              "sleep stages (REM, deep/N3, N2, N1, wake) and body positions")


@dataclass
class Criterion:
    """One measured condition per epoch.

    Attributes
    ----------
    label : what was searched, with its threshold, e.g. "SpO2 minimum < 90 %".
    mask : epochs meeting it (None when it cannot be measured on this night).
    strength : per-epoch value oriented so that higher is stronger (feature criteria only).
    unit : unit of the quoted values.
    tolerant : an event/feature criterion may sit one epoch away from the others.
    missing : why it cannot be measured (None when it can).
    """

    label: str
    mask: np.ndarray | None
    strength: np.ndarray | None = None
    unit: str = ""
    tolerant: bool = True
    missing: str | None = None


def snore_loudness(night: NightContext) -> np.ndarray | None:
    """RMS of the snore channel per epoch (uV), or None without a usable snore channel."""
    snore = get_signal(night.rec, "Snore")
    if snore is None:
        return None
    matrix = epoch_matrix(snore.data - np.nanmedian(snore.data), snore.sfreq, night.rec.n_epochs)
    return np.sqrt(np.nanmean(matrix**2, axis=1))


def _feature_criterion(night: NightContext, rule: FeatureRule) -> Criterion:
    if rule.column == SNORE_COLUMN:
        values = snore_loudness(night)
        if values is None:  # without a microphone, flow limitation is the airflow sign of snoring
            return _feature_criterion(night, next(r for r in FEATURE_CRITERIA if r.column == FLATTENING_COLUMN))
    else:
        features = getattr(night.analysis, "features", None)
        values = None if features is None or rule.column not in features else features[rule.column].to_numpy(dtype=float)
    if values is None or not np.isfinite(values).any():
        reason = (getattr(night.analysis, "missing", None) or {}).get(rule.column) or "not measured on this night"
        return Criterion(rule.label, None, missing=f"{rule.label} cannot be searched: {reason}")
    strength = values if rule.direction == "high" else -values
    finite = np.isfinite(strength)
    if rule.threshold is None:
        cut = np.nanquantile(strength, 1 - TOP_FRACTION)
        # A night-relative criterion needs some activity: zero counts are never "high".
        mask = finite & (strength >= cut) & (values > 0)
        shown = rounded(abs(cut), 2)
        label = f"{rule.label} in the night's top {TOP_FRACTION:.0%} ({'>=' if rule.direction == 'high' else '<='} {shown} {rule.unit})"
    else:
        mask = finite & ((values > rule.threshold) if rule.direction == "high" else (values < rule.threshold))
        label = f"{rule.label} {'>' if rule.direction == 'high' else '<'} {rule.threshold:g} {rule.unit}"
    return Criterion(label, mask, np.where(finite, strength, -np.inf), rule.unit)


def _event_criterion(night: NightContext, kinds: tuple[str, ...]) -> Criterion:
    events = night.require_analysis().events
    events = events[events["kind"].isin(kinds)]
    mask = np.zeros(night.rec.n_epochs, dtype=bool)
    for start_s, end_s in zip(events["start_s"], events["end_s"]):
        mask[int(start_s // EPOCH_SEC) : int(np.ceil(end_s / EPOCH_SEC))] = True
    return Criterion(f"measured {' and '.join(kinds)} events", mask)


def query_criteria(night: NightContext, query: str) -> list[Criterion]:
    """The measured criteria a plain-words query names (empty when it names none)."""
    q = query.lower()
    criteria = [_feature_criterion(night, rule) for rule in FEATURE_CRITERIA if re.search(rule.pattern, q)]
    # Event words: the first (most specific) match only, so "stopped breathing" means apneas.
    for pattern, kinds in _EVENT_WORDS:
        if re.search(pattern, q):
            criteria.append(_event_criterion(night, kinds))
            break
    for pattern, stage in _STAGE_WORDS:
        if re.search(pattern, q):
            hypnogram = night.hypnogram
            label = f"stage {stage} epochs ({night.stage_source})"
            criteria.append(Criterion(label, None if hypnogram is None else hypnogram == stage, tolerant=False,
                                      missing=None if hypnogram is not None else "sleep stages are not available"))
            break
    for word, code in _POSITION_WORDS.items():
        if re.search(rf"\b{word}\b", q):
            positions = position_per_epoch(night)
            criteria.append(Criterion(f"{word} position epochs", None if positions is None else positions == code,
                                      tolerant=False, missing=None if positions is not None else "there is no position channel"))
            break
    return criteria


def _combined(criteria: list[Criterion], n_epochs: int) -> np.ndarray:
    """Epochs meeting every criterion: stages and positions exactly; events and features within
    one epoch of each other, the epoch itself meeting at least one of them exactly."""
    mask = np.ones(n_epochs, dtype=bool)
    for criterion in criteria:
        if not criterion.tolerant:
            mask &= criterion.mask
    tolerant = [c.mask for c in criteria if c.tolerant]
    if len(tolerant) == 1:
        mask &= tolerant[0]
    elif tolerant:
        mask &= np.logical_and.reduce([ndimage.binary_dilation(m) for m in tolerant]) & np.logical_or.reduce(tolerant)
    return mask


def measured_search(night: NightContext, query: str, top_k: int) -> dict:
    """Episodes answering `query` from the measurements, best first.

    Returns
    -------
    {"searched": text naming every criterion used, "criteria": [labels], "missing": [why a
    criterion could not be measured], "episodes": [{"first", "last", "values"}]} where
    ``values`` gives the first feature criterion's mean/extreme over the episode.
    """
    criteria = query_criteria(night, query)
    if not criteria:
        return {"searched": f"nothing: the measured search understands {UNDERSTOOD}", "criteria": [], "missing": [],
                "episodes": []}
    usable = [c for c in criteria if c.mask is not None]
    missing = [c.missing for c in criteria if c.mask is None]
    searched = " and ".join(c.label for c in usable) if usable else "nothing measurable"
    if not usable or missing:
        # A criterion that cannot be measured cannot be met: say so rather than drop it.
        return {"searched": searched, "criteria": [c.label for c in usable], "missing": missing, "episodes": []}
    runs = runs_of(_combined(usable, night.rec.n_epochs), max_gap=EPISODE_GAP_EPOCHS)
    ranking = next((c for c in usable if c.strength is not None), None)
    episodes = []
    for first, last in runs:
        item = {"first": first, "last": last}
        if ranking is not None:
            part = ranking.strength[first : last + 1]
            part = part[np.isfinite(part)]
            peak = float(part.max()) if part.size else float("nan")
            item["rank"] = peak
            item["values"] = {"criterion": ranking.label, "extreme": rounded(abs(peak), 2), "unit": ranking.unit}
        else:
            item["rank"] = float(last - first)
        episodes.append(item)
    episodes.sort(key=lambda e: -e["rank"])
    for item in episodes:
        del item["rank"]
    return {"searched": searched, "criteria": [c.label for c in usable], "missing": [], "episodes": episodes[:top_k]}
