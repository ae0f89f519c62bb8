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

import numpy as np
import pandas as pd

__all__ = ["match_events", "event_agreement"]


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
