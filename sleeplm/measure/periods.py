"""Events grouped into periods: when the night was disturbed, ranked, and the quiet stretches between.

A period is a run of events in which each event begins less than `gap_s` after the previous one
ended. Periods are ranked by how disturbed they are: most events first, then the higher rate per
hour of sleep. Each period carries its epoch range, the stage and position mix of its epochs and
the lowest SpO2 inside it, so an answer can say "01:10-02:40, in REM and supine, 48 events/h,
SpO2 down to 81 %" instead of listing single events.

Examples
--------
>>> import pandas as pd
>>> events = pd.DataFrame({"kind": ["apnea", "apnea", "hypopnea"], "start_s": [100.0, 160.0, 5000.0],
...                        "end_s": [120.0, 180.0, 5020.0]})
>>> table = event_periods(events, n_epochs=240, gap_s=120)
>>> table[["rank", "first_epoch", "last_epoch", "n_events"]].values.tolist()
[[1, 3, 5, 2], [2, 166, 167, 1]]
>>> quiet_stretches(events, n_epochs=240, min_s=1800)[["first_epoch", "last_epoch"]].values.tolist()
[[6, 165], [168, 239]]
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sleeplm.io.recording import EPOCH_SEC, POSITION_CODES
from sleeplm.terms import SLEEP_STAGES

__all__ = ["PERIOD_COLUMNS", "QUIET_COLUMNS", "DEFAULT_GAP_S", "event_periods", "quiet_stretches"]

logger = logging.getLogger(__name__)

# Events less than 5 min apart belong to one disturbed period (a sleep-cycle-scale cluster).
DEFAULT_GAP_S = 300.0
PERIOD_COLUMNS = [
    "rank", "start_s", "end_s", "first_epoch", "last_epoch", "n_events", "sleep_min", "events_per_h_sleep",
    "kinds", "stage_min", "position_min", "spo2_min_pct",
]
QUIET_COLUMNS = ["start_s", "end_s", "first_epoch", "last_epoch", "minutes", "sleep_min"]


def _minutes_by(labels: np.ndarray) -> dict:
    values, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(values[i]): round(float(counts[i]) * EPOCH_SEC / 60, 1) for i in order}


def event_periods(
    events: pd.DataFrame, n_epochs: int, hypnogram: np.ndarray | None = None, positions: np.ndarray | None = None,
    spo2: np.ndarray | None = None, gap_s: float = DEFAULT_GAP_S,
) -> pd.DataFrame:
    """Group events into periods and rank them by how disturbed they are.

    Parameters
    ----------
    events : table with ``kind``, ``start_s`` and ``end_s`` (seconds from recording start), e.g. a
        selection of `sleeplm.measure.events.detect_events`.
    n_epochs : number of 30-s epochs in the night.
    hypnogram : stage per epoch (`STAGES` labels), or None; without it rates are per hour of the period.
    positions : body-position code per epoch (`POSITION_CODES`), or None.
    spo2 : SpO2 (%) per second, NaN where invalid, or None.
    gap_s : an event starting less than this many seconds after the previous event's end joins its period.

    Returns
    -------
    DataFrame with columns `PERIOD_COLUMNS`, best rank first. ``first_epoch``/``last_epoch`` are the
    inclusive epochs from the first event's start to the last event's end; ``sleep_min`` the sleep
    inside them; ``events_per_h_sleep`` events per hour of that sleep (per hour of the period when
    there is no hypnogram or no sleep); ``kinds`` counts per event kind; ``stage_min`` and
    ``position_min`` minutes per stage and position label, largest first; ``spo2_min_pct`` the lowest
    valid SpO2 (None without SpO2). Rank 1 has the most events; ties go to the higher rate.

    Examples
    --------
    >>> events = pd.DataFrame({"kind": ["apnea", "apnea", "hypopnea", "apnea"],
    ...                        "start_s": [600.0, 660.0, 720.0, 3000.0], "end_s": [620.0, 680.0, 745.0, 3020.0]})
    >>> hypnogram = np.array(["N2"] * 120)                          # one hour of N2
    >>> periods = event_periods(events, 120, hypnogram)
    >>> periods[["rank", "first_epoch", "last_epoch", "n_events"]].to_dict("records")
    [{'rank': 1, 'first_epoch': 20, 'last_epoch': 24, 'n_events': 3}, {'rank': 2, 'first_epoch': 100, 'last_epoch': 100, 'n_events': 1}]
    >>> periods.loc[0, "kinds"]
    {'apnea': 2, 'hypopnea': 1}
    """
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0 seconds, got {gap_s}")
    if events.empty:
        return pd.DataFrame(columns=PERIOD_COLUMNS)
    ordered = events.sort_values("start_s")
    groups: list[list[int]] = []
    reach = -np.inf
    for position, (start, end) in enumerate(zip(ordered["start_s"], ordered["end_s"])):
        if groups and start - reach < gap_s:
            groups[-1].append(position)
        else:
            groups.append([position])
        reach = max(reach, end) if len(groups[-1]) > 1 else end
    rows = []
    for members in groups:
        part = ordered.iloc[members]
        start_s, end_s = float(part["start_s"].min()), float(part["end_s"].max())
        first = min(int(start_s // EPOCH_SEC), n_epochs - 1)
        last = min(max(int(np.ceil(end_s / EPOCH_SEC)) - 1, first), n_epochs - 1)
        row = {"start_s": start_s, "end_s": end_s, "first_epoch": first, "last_epoch": last, "n_events": len(part),
               "kinds": {str(k): int(n) for k, n in part["kind"].value_counts().items()},
               "stage_min": {}, "position_min": {}, "spo2_min_pct": None}
        hours = (last - first + 1) * EPOCH_SEC / 3600
        row["sleep_min"] = None
        if hypnogram is not None:
            stages = np.asarray(hypnogram)[first : last + 1]
            row["stage_min"] = _minutes_by(stages)
            sleep_h = float(np.isin(stages, SLEEP_STAGES).sum()) * EPOCH_SEC / 3600
            row["sleep_min"] = round(sleep_h * 60, 1)
            hours = sleep_h or hours
        if positions is not None:
            codes = np.asarray(positions)[first : last + 1]
            row["position_min"] = _minutes_by(np.array([POSITION_CODES.get(int(c), "Unknown") for c in codes]))
        if spo2 is not None:
            values = np.asarray(spo2, dtype=float)[int(start_s) : int(np.ceil(end_s)) + 1]
            values = values[np.isfinite(values) & (values > 0)]
            row["spo2_min_pct"] = round(float(values.min()), 1) if values.size else None
        row["events_per_h_sleep"] = round(len(part) / hours, 1)
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.sort_values(["n_events", "events_per_h_sleep", "start_s"], ascending=[False, False, True])
    table["rank"] = np.arange(1, len(table) + 1)
    return table.reset_index(drop=True)[PERIOD_COLUMNS]


def quiet_stretches(events: pd.DataFrame, n_epochs: int, hypnogram: np.ndarray | None = None,
                    min_s: float = 1800.0) -> pd.DataFrame:
    """Stretches of whole epochs with no event at all, at least `min_s` long, longest first.

    Parameters
    ----------
    events : table with ``start_s`` and ``end_s``.
    n_epochs : number of 30-s epochs in the night.
    hypnogram : stage per epoch, or None; with it, stretches are trimmed to start and end in sleep
        and ``sleep_min`` counts their sleep.
    min_s : shortest stretch reported (seconds).

    Returns
    -------
    DataFrame with columns `QUIET_COLUMNS` (inclusive epochs; ``sleep_min`` None without a hypnogram).

    Examples
    --------
    >>> events = pd.DataFrame({"start_s": [600.0, 3000.0], "end_s": [620.0, 3020.0]})
    >>> quiet = quiet_stretches(events, 120, min_s=1200)             # one hour, stretches of 20 min or more
    >>> quiet[["first_epoch", "last_epoch", "minutes"]].to_dict("records")
    [{'first_epoch': 21, 'last_epoch': 99, 'minutes': 39.5}]
    """
    busy = np.zeros(n_epochs, dtype=bool)
    for start, end in zip(events.get("start_s", []), events.get("end_s", [])):
        first = min(int(start // EPOCH_SEC), n_epochs - 1)
        busy[first : max(int(np.ceil(end / EPOCH_SEC)), first + 1)] = True
    asleep = None if hypnogram is None else np.isin(np.asarray(hypnogram), SLEEP_STAGES)
    rows = []
    edges = np.flatnonzero(np.diff(np.r_[1, busy.astype(int), 1]))
    for first, stop in zip(edges[::2], edges[1::2]):
        last = stop - 1
        if asleep is not None:
            inside = np.flatnonzero(asleep[first:stop])
            if not inside.size:
                continue
            first, last = first + int(inside[0]), first + int(inside[-1])
        if (last - first + 1) * EPOCH_SEC < min_s:
            continue
        rows.append({"start_s": float(first * EPOCH_SEC), "end_s": float((last + 1) * EPOCH_SEC),
                     "first_epoch": int(first), "last_epoch": int(last),
                     "minutes": round((last - first + 1) * EPOCH_SEC / 60, 1),
                     "sleep_min": None if asleep is None else round(float(asleep[first : last + 1].sum()) * EPOCH_SEC / 60, 1)})
    table = pd.DataFrame(rows, columns=QUIET_COLUMNS)
    return table.sort_values(["minutes", "start_s"], ascending=[False, True]).reset_index(drop=True)

