"""Event-level agreement between two scorings (ours vs. a reference or a simulator's truth), and
how well the periods an answer names match the true event clusters.

Events are matched one-to-one, greedily by overlap: a pair counts when its intersection over
union (IoU) reaches `min_iou`; the product itself uses that matching to compare its scoring
with a technician's (`sleeplm.measure.agreement`, re-exported here for the benchmarks; its
docstring carries the example).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from sleeplm.measure.agreement import event_agreement, match_events

__all__ = ["match_events", "event_agreement", "cited_periods", "period_agreement"]

# Sentences about calm stretches cite ranges without events on purpose: not period claims.
_QUIET_SENTENCE = re.compile(r"\b(quiet|calm|no (such )?events?|none of these|without (any )?events?)\b", re.IGNORECASE)
_EPOCH_RANGE = re.compile(r"\bepochs? (\d+)(?:\s*-\s*(\d+))?")


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
