"""Technician vs automatic: how the product's own staging and events agree with the scoring that
came with the recording.

- staging: Cohen's kappa, accuracy and the confusion matrix over the epochs both scored
  (scikit-learn's ``cohen_kappa_score`` and ``confusion_matrix``);
- events: one-to-one matches at intersection over union >= `MIN_IOU` (0.2), precision and recall
  per type (`COMPARED_KINDS`, for the types the technician scored);
- AHI and ODI both ways: the technician's events per hour of the technician's sleep, and the
  product's (`sleeplm.measure.summary.night_summary`) per hour of its own sleep.

Examples
--------
>>> import pandas as pd
>>> ours = pd.DataFrame({"start_s": [10.0, 100.0], "end_s": [25.0, 120.0]})
>>> truth = pd.DataFrame({"start_s": [12.0], "end_s": [28.0]})
>>> event_agreement(ours, truth)["f1"]
0.667
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from sleeplm.io.recording import EPOCH_SEC, STAGES, Recording
from sleeplm.terms import EVENT_GROUPS, EVENT_KINDS, SLEEP_STAGES

__all__ = [
    "MIN_IOU", "SCORINGS", "SCORING_NAMES", "COMPARED_KINDS", "match_events", "event_agreement", "staging_agreement",
    "technician_events", "has_technician_scoring", "respiratory_by_technician", "with_technician_events",
    "unmatched_events", "scoring_agreement",
]

logger = logging.getLogger(__name__)

MIN_IOU = 0.2
# Whose scoring the answers use: the one that came with the recording, or the product's own.
SCORINGS = ("technician", "automatic")
# How each is named wherever results are shown.
SCORING_NAMES = {"technician": "the technician's scoring (came with the recording)",
                 "automatic": "the automatic scoring (this product's own staging and events)"}
# Event types compared: both respiratory kinds together (scorers often disagree on apnea vs hypopnea), then each.
COMPARED_KINDS = ("respiratory", "apnea", "hypopnea", "desaturation", "arousal")
_BASE_COLUMNS = ("onset_s", "duration_s", "kind", "subtype", "label")
# A scored desaturation's baseline: the highest SpO2 in this many seconds before it.
DESAT_BASELINE_S = 120
# Numeric columns of the scoring's events table, under the evidence names the measured events use.
_EVIDENCE_NAMES = {"spo2_nadir": "nadir_pct"}


def match_events(predicted: pd.DataFrame, reference: pd.DataFrame, min_iou: float = MIN_IOU) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(predicted_row, reference_row, iou)`` with IoU >= `min_iou`, best overlaps first.

    Both tables need ``start_s`` and ``end_s`` (seconds); row positions (not index labels) are returned.

    Examples
    --------
    >>> ours = pd.DataFrame({"start_s": [10.0, 11.0], "end_s": [20.0, 21.0]})
    >>> match_events(ours, pd.DataFrame({"start_s": [10.0], "end_s": [20.0]}))   # one match each
    [(0, 0, 1.0)]
    """
    a = predicted[["start_s", "end_s"]].to_numpy(dtype=float)
    b = reference[["start_s", "end_s"]].to_numpy(dtype=float)
    if len(a) == 0 or len(b) == 0:
        return []
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    union = np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 0], b[None, :, 0])
    iou = inter / np.where(union > 0, union, np.inf)
    pairs = []
    used_a, used_b = set(), set()
    for i, j in zip(*np.unravel_index(np.argsort(-iou, axis=None), iou.shape)):
        if iou[i, j] < min_iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((int(i), int(j), float(iou[i, j])))
    return pairs


def event_agreement(predicted: pd.DataFrame, reference: pd.DataFrame, min_iou: float = MIN_IOU) -> dict:
    """Precision, recall, F1 (rounded to 3 decimals) and counts of `predicted` against `reference`.

    Examples
    --------
    >>> ours = pd.DataFrame({"start_s": [10.0, 100.0], "end_s": [25.0, 120.0]})
    >>> event_agreement(ours, pd.DataFrame({"start_s": [12.0], "end_s": [28.0]}))
    {'tp': 1, 'fp': 1, 'fn': 0, 'precision': 0.5, 'recall': 1.0, 'f1': 0.667}
    """
    pairs = match_events(predicted, reference, min_iou)
    tp = len(pairs)
    precision = tp / len(predicted) if len(predicted) else (1.0 if len(reference) == 0 else 0.0)
    recall = tp / len(reference) if len(reference) else (1.0 if len(predicted) == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": len(predicted) - tp, "fn": len(reference) - tp,
            "precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def staging_agreement(technician: np.ndarray, automatic: np.ndarray) -> dict:
    """Kappa, accuracy and confusion matrix (rows: technician, columns: automatic) over the epochs both staged.

    Examples
    --------
    >>> tech = np.array(["W", "N1", "N2", "N2", "R", "?"], dtype=object)
    >>> auto = np.array(["W", "N2", "N2", "N2", "R", "N2"], dtype=object)
    >>> result = staging_agreement(tech, auto)             # the "?" epoch is not compared
    >>> result["kappa"], result["accuracy"], result["n_epochs"], result["stages"]
    (0.706, 0.8, 5, ['W', 'N1', 'N2', 'N3', 'R'])
    >>> result["confusion"][1]                             # the technician's N1 epoch, staged N2
    [0, 0, 1, 0, 0]
    """
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    a, b = np.asarray(technician, dtype=object), np.asarray(automatic, dtype=object)
    both = np.isin(a, STAGES) & np.isin(b, STAGES)
    if not both.any():
        return {"kappa": None, "accuracy": None, "n_epochs": 0, "stages": list(STAGES), "confusion": None}
    x, y = a[both].astype(str), b[both].astype(str)
    with warnings.catch_warnings():  # one stage only on both sides: kappa is undefined, reported as None
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(x, y)
    return {"kappa": None if np.isnan(kappa) else round(float(kappa), 3), "accuracy": round(float((x == y).mean()), 3),
            "n_epochs": int(both.sum()), "stages": list(STAGES),
            "confusion": confusion_matrix(x, y, labels=list(STAGES)).tolist()}


def technician_events(rec: Recording) -> pd.DataFrame:
    """The events the scoring file marks, of the kinds the product also measures, as an events table
    (`sleeplm.measure.events.EVENT_COLUMNS`, evidence ``{"scored_by": "technician", ...}``).

    Numeric extra columns of the scoring's events go into the evidence (a desaturation's
    ``spo2_nadir`` as ``nadir_pct``, as measured desaturations have it). A desaturation's depth
    (``drop_pct``, hence its subtype "3%"/"4%" for ODI 4 %) is read from the SpO2 signal: the
    highest saturation in the 2 min before it minus its nadir; without a valid SpO2 there it stays
    unknown (subtype "").

    Examples
    --------
    >>> table = technician_events(tiny_recording())       # the simulator wrote its scoring into the file
    >>> sorted(set(table["kind"]))[:2], table["evidence"].iloc[0]["scored_by"]
    (['apnea', 'arousal'], 'technician')
    """
    from sleeplm.measure.events import EVENT_COLUMNS, event_table
    from sleeplm.measure.respiratory import spo2_per_second

    reference = rec.reference
    if reference is None or reference.events is None or reference.events.empty:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    scored = reference.events[reference.events["kind"].isin(EVENT_KINDS)]
    extra = [c for c in scored.columns if c not in _BASE_COLUMNS and pd.api.types.is_numeric_dtype(scored[c])]
    desaturations = (scored["kind"] == "desaturation").any()
    spo2 = spo2_per_second(rec, np.zeros(rec.n_epochs * EPOCH_SEC, dtype=bool)) if desaturations else None
    rows = []
    for row in scored.itertuples(index=False):
        evidence = {"scored_by": "technician"}
        evidence.update({_EVIDENCE_NAMES.get(c, c): round(float(getattr(row, c)), 1) for c in extra
                         if np.isfinite(getattr(row, c))})
        subtype = row.subtype if isinstance(row.subtype, str) else ""
        if row.kind == "desaturation":
            if "drop_pct" not in evidence and spo2 is not None:
                evidence.update(_depth(spo2, float(row.onset_s), float(row.onset_s + row.duration_s), evidence.get("nadir_pct")))
            drop = evidence.get("drop_pct")
            subtype = subtype if subtype in ("3%", "4%") else "" if drop is None else "4%" if drop >= 4 else "3%"
        onset = float(row.onset_s)
        rows.append({"kind": row.kind, "subtype": subtype, "start_s": onset,
                     "end_s": onset + max(float(row.duration_s), 0.0), "evidence": evidence})
    return event_table(rec, rows)


def _depth(spo2: np.ndarray, start_s: float, end_s: float, nadir: float | None) -> dict:
    """How deep a scored desaturation was, read from the SpO2 signal: the highest saturation in the
    `DESAT_BASELINE_S` before it (its baseline) minus its nadir (the scoring's, else the lowest
    saturation during it); {} where the signal is invalid there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stretches: no depth
        before = spo2[max(int(start_s) - DESAT_BASELINE_S, 0) : max(int(start_s), 1)]
        baseline = np.nanmax(before) if before.size else np.nan
        during = spo2[int(start_s) : int(np.ceil(end_s)) + 1]
        low = nadir if nadir is not None else (np.nanmin(during) if during.size else np.nan)
    if not (np.isfinite(baseline) and np.isfinite(low)):
        return {}
    return {"baseline_pct": round(float(baseline), 1), "nadir_pct": round(float(low), 1),
            "drop_pct": round(float(baseline - low), 1)}


def _scored_kinds(events: pd.DataFrame) -> set[str]:
    """Event kinds a scoring covers: both respiratory kinds once it has either (none of the other = none happened)."""
    kinds = set(events["kind"])
    if kinds & set(EVENT_GROUPS["respiratory"]):
        kinds |= set(EVENT_GROUPS["respiratory"])
    return kinds


def has_technician_scoring(rec: Recording) -> bool:
    """True when the recording came with scoring: stages, or events of a kind the product measures.

    Examples
    --------
    >>> has_technician_scoring(tiny_recording())             # the simulator wrote its scoring into the file
    True
    """
    reference = rec.reference
    if reference is None:
        return False
    staged = reference.stages is not None and np.isin(reference.stages, STAGES).any()
    return bool(staged or reference.events["kind"].isin(EVENT_KINDS).any())


def respiratory_by_technician(rec: Recording) -> bool:
    """True when the technician scored apneas or hypopneas (then the technician's scoring counts them).

    Examples
    --------
    >>> respiratory_by_technician(tiny_recording())
    True
    """
    return bool(set(EVENT_GROUPS["respiratory"]) & _scored_kinds(technician_events(rec)))


def with_technician_events(rec: Recording, measured: pd.DataFrame) -> pd.DataFrame:
    """`measured` with the kinds the technician scored replaced by the technician's events.

    Kinds the scoring does not cover (e.g. heart-rate episodes, position changes, or every event
    of a stages-only scoring) stay measured.

    Examples
    --------
    >>> measured = pd.DataFrame({"kind": ["apnea", "tachycardia"], "subtype": "", "start_s": [5.0, 60.0],
    ...                          "end_s": [20.0, 120.0], "evidence": [{}, {}]})
    >>> used = with_technician_events(tiny_recording(), measured)
    >>> used[used["kind"] == "tachycardia"]["start_s"].tolist(), sorted({str(e.get("scored_by")) for e in used["evidence"]})
    ([60.0], ['None', 'technician'])
    """
    technician = technician_events(rec)
    if technician.empty:
        return measured
    kept = measured[~measured["kind"].isin(_scored_kinds(technician))]
    return pd.concat([kept, technician], ignore_index=True).sort_values("start_s", kind="stable").reset_index(drop=True)


def _of_kind(events: pd.DataFrame, kind: str) -> pd.DataFrame:
    return events[events["kind"].isin(EVENT_GROUPS.get(kind, (kind,)))].reset_index(drop=True)


def unmatched_events(technician: pd.DataFrame, automatic: pd.DataFrame, kind: str,
                     min_iou: float = MIN_IOU) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(missed, extra)``: the technician's events of `kind` (or its group) no automatic event matches,
    and the automatic events of that kind no technician event matches, in time order.

    Examples
    --------
    >>> technician = pd.DataFrame({"kind": ["apnea", "hypopnea"], "start_s": [10.0, 100.0], "end_s": [25.0, 115.0]})
    >>> automatic = pd.DataFrame({"kind": ["hypopnea", "apnea"], "start_s": [12.0, 300.0], "end_s": [26.0, 315.0]})
    >>> missed, extra = unmatched_events(technician, automatic, "respiratory")
    >>> missed["start_s"].tolist(), extra["start_s"].tolist()
    ([100.0], [300.0])
    """
    tech, auto = _of_kind(technician, kind), _of_kind(automatic, kind)
    pairs = match_events(auto, tech, min_iou)
    matched_auto, matched_tech = {i for i, _, _ in pairs}, {j for _, j, _ in pairs}
    missed = tech.drop(index=list(matched_tech)).sort_values("start_s")
    extra = auto.drop(index=list(matched_auto)).sort_values("start_s")
    return missed, extra


def _per_hour_of_sleep(events: pd.DataFrame, hypnogram: np.ndarray) -> float | None:
    asleep = np.isin(np.asarray(hypnogram, dtype=object), SLEEP_STAGES)
    hours = asleep.sum() * EPOCH_SEC / 3600
    if not hours:
        return None
    first = (events["start_s"].to_numpy(dtype=float) // EPOCH_SEC).astype(int).clip(0, len(asleep) - 1)
    return round(float(asleep[first].sum() / hours), 2)


def _technician_index(events: pd.DataFrame, hypnogram: np.ndarray | None, kinds: tuple[str, ...],
                      what: str) -> tuple[float | None, str | None]:
    """Events of `kinds` per hour of the technician's sleep, or None and why."""
    if hypnogram is None:
        return None, "the technician's scoring has no sleep stages, so no sleep time to divide by"
    if not _scored_kinds(events) & set(kinds):
        return None, f"the technician's scoring has no {what}"
    value = _per_hour_of_sleep(events[events["kind"].isin(kinds)], hypnogram)
    return value, None if value is not None else "the technician scored no sleep"


def scoring_agreement(rec: Recording, automatic_hypnogram: np.ndarray | None, automatic_events: pd.DataFrame,
                      automatic_summary: dict, automatic_source: str = "yasa", min_iou: float = MIN_IOU) -> dict:
    """Agreement of the product's own scoring with the technician's (the scoring with the recording).

    Parameters
    ----------
    rec : the night; its ``reference`` is the technician's scoring.
    automatic_hypnogram : the product's own stages (None when it could not stage the night).
    automatic_events : the product's events (`sleeplm.measure.events.detect_events`) in its own stages.
    automatic_summary : `sleeplm.measure.summary.night_summary` of the product's own scoring.
    automatic_source : the automatic stager's name.
    min_iou : overlap (intersection over union) two events need to be one.

    Returns
    -------
    dict (JSON-ready): ``technician_scoring`` (where the scoring came from, as the preflight names it);
    ``staging`` (`staging_agreement` plus ``automatic_source``) or None;
    ``events`` {kind: n_technician, n_automatic, tp, fp, fn, precision, recall, f1} for the kinds the
    technician scored; ``indices`` {"ahi"/"odi": {"technician", "automatic"}} (the technician's ODI
    counts their desaturations, the product's is its ODI 3 %); ``min_iou``; ``not_compared`` {what: why}.

    Examples
    --------
    >>> rec, analysis = tiny_recording(), tiny_analysis()
    >>> result = scoring_agreement(rec, rec.reference.stages, analysis.events, analysis.summary)
    >>> result["staging"]["kappa"], sorted(result["events"])[:2]
    (1.0, ['apnea', 'arousal'])
    >>> set(result["indices"]["ahi"]) == {"technician", "automatic"}
    True
    """
    from sleeplm.measure.events import EVENT_COLUMNS

    reference = rec.reference
    tech_stages = None
    if reference is not None and reference.stages is not None and np.isin(reference.stages, STAGES).any():
        tech_stages = np.asarray(reference.stages, dtype=object)
    not_compared: dict[str, str] = {}
    staging = None
    if tech_stages is None:
        not_compared["staging"] = "the technician's scoring has no sleep stages"
    elif automatic_hypnogram is None:
        not_compared["staging"] = "the product could not stage this night (no usable EEG)"
    else:
        staging = {**staging_agreement(tech_stages, automatic_hypnogram), "automatic_source": automatic_source}
    tech_events = technician_events(rec)
    automatic_events = automatic_events if len(automatic_events) else pd.DataFrame(columns=EVENT_COLUMNS)
    events = {}
    scored = _scored_kinds(tech_events)
    missing = automatic_summary.get("not_assessable") or {}
    unmeasured = {"apnea": "n_apneas", "hypopnea": "n_hypopneas", "respiratory": "n_apneas", "desaturation": "odi3"}
    for kind in COMPARED_KINDS:
        if not scored & set(EVENT_GROUPS.get(kind, (kind,))):
            not_compared[kind] = f"the technician's scoring has no {kind} events"
            continue
        if unmeasured.get(kind) in missing:
            not_compared[kind] = f"the product could not measure them: {missing[unmeasured[kind]]}"
            continue
        tech, auto = _of_kind(tech_events, kind), _of_kind(automatic_events, kind)
        events[kind] = {"n_technician": len(tech), "n_automatic": len(auto), **event_agreement(auto, tech, min_iou)}
    indices = {}
    for key, kinds, what, ours in (("ahi", EVENT_GROUPS["respiratory"], "apneas or hypopneas", "ahi"),
                                   ("odi", ("desaturation",), "desaturations", "odi3")):
        value, why = _technician_index(tech_events, tech_stages, kinds, what)
        indices[key] = {"technician": value, "automatic": automatic_summary.get(ours)}
        if why:
            not_compared[f"{key}_technician"] = why
        if automatic_summary.get(ours) is None and ours in missing:
            not_compared[f"{key}_automatic"] = missing[ours]
    logger.info("technician vs automatic: kappa %s, events %s", (staging or {}).get("kappa"),
                {k: v["f1"] for k, v in events.items()})
    return {"technician_scoring": getattr(reference, "source", None), "staging": staging, "events": events,
            "indices": indices, "min_iou": min_iou, "not_compared": not_compared}
