"""Event-level agreement between two scorings (ours vs. a reference or a simulator's truth).

Events are matched one-to-one, greedily by overlap: a pair counts when its intersection over
union (IoU) reaches `min_iou`. Precision, recall and F1 follow from the matches.

Examples
--------
>>> import pandas as pd
>>> ours = pd.DataFrame({"start_s": [10.0, 100.0], "end_s": [25.0, 120.0]})
>>> truth = pd.DataFrame({"start_s": [12.0], "end_s": [28.0]})
>>> event_agreement(ours, truth)["f1"]
0.667
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["match_events", "event_agreement", "cited_periods", "period_agreement"]

# Sentences about calm stretches cite ranges without events on purpose: not period claims.
_QUIET_SENTENCE = re.compile(r"\b(quiet|calm|no (such )?events?|none of these|without (any )?events?)\b", re.IGNORECASE)
_EPOCH_RANGE = re.compile(r"\bepochs? (\d+)(?:\s*-\s*(\d+))?")


def match_events(predicted: pd.DataFrame, reference: pd.DataFrame, min_iou: float = 0.2) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(predicted_row, reference_row, iou)`` with IoU >= `min_iou`, best overlaps first.

    Both tables need ``start_s`` and ``end_s`` (seconds); row positions (not index labels) are returned.
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


def event_agreement(predicted: pd.DataFrame, reference: pd.DataFrame, min_iou: float = 0.2) -> dict:
    """Precision, recall, F1 (rounded to 3 decimals) and counts of `predicted` against `reference`."""
    pairs = match_events(predicted, reference, min_iou)
    tp = len(pairs)
    precision = tp / len(predicted) if len(predicted) else (1.0 if len(reference) == 0 else 0.0)
    recall = tp / len(reference) if len(reference) else (1.0 if len(predicted) == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": len(predicted) - tp, "fn": len(reference) - tp,
            "precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def cited_periods(answer: str, n_epochs: int) -> list[tuple[int, int]]:
    """Inclusive epoch ranges an answer names as periods, in the order written.

    Ranges in sentences about quiet stretches, and a range covering the whole night, are left out.
    """
    ranges = []
    for sentence in re.split(r"(?<=[.;!?])\s+|\n", answer):
        if _QUIET_SENTENCE.search(sentence):
            continue
        for first, last in _EPOCH_RANGE.findall(sentence):
            span = (int(first), int(last or first))
            if span != (0, n_epochs - 1) and span not in ranges:
                ranges.append(span)
    return ranges


def period_agreement(answer: str, true_events: pd.DataFrame, n_epochs: int, hypnogram: np.ndarray | None = None,
                     top: int = 5, gap_s: float | None = None) -> dict:
    """How well the periods named in an answer match the densest true event clusters.

    The true clusters are the truth's events grouped and ranked by `sleeplm.measure.periods.event_periods`
    (the same gap); the answer's periods are its first `top` cited ranges (`cited_periods`).

    Returns
    -------
    dict: ``hit`` (true top clusters overlapped by a named period), ``n_true`` (true clusters
    considered, at most `top`), ``named`` (periods named), ``outside`` (named periods overlapping
    no true event), ``outside_share``.
    """
    from sleeplm.measure.periods import DEFAULT_GAP_S, event_periods

    clusters = event_periods(true_events, n_epochs, hypnogram, gap_s=DEFAULT_GAP_S if gap_s is None else gap_s).head(top)
    named = cited_periods(answer, n_epochs)[:top]
    epochs_start = (true_events["start_s"].to_numpy() // 30).astype(int)
    epochs_end = (np.ceil(true_events["end_s"].to_numpy() / 30) - 1).astype(int)

    def overlaps(a: int, b: int, first, last) -> np.ndarray:
        return (np.asarray(first) <= b) & (np.asarray(last) >= a)

    hit = sum(any(overlaps(a, b, [c.first_epoch], [c.last_epoch])[0] for a, b in named) for c in clusters.itertuples())
    outside = sum(not overlaps(a, b, epochs_start, epochs_end).any() for a, b in named)
    return {"hit": int(hit), "n_true": len(clusters), "named": len(named), "outside": int(outside),
            "outside_share": round(outside / len(named), 3) if named else None}
