"""Events over the night: respiratory (see `sleeplm.measure.respiratory`), arousals, heart-rate episodes,
position changes; one tidy table with time citations and the evidence numbers behind each event.

Examples
--------
>>> from sleeplm.measure.events import detect_events
>>> rec = tiny_recording()                          # a 15-min night from 23:00:00 (conftest.py)
>>> events = detect_events(rec, hypnogram=rec.reference.stages)
>>> apneas = events[events.kind == "apnea"]
>>> list(apneas.columns[:2]), bool(apneas["clock_start"].str.startswith("23:").all())
(['kind', 'subtype'], True)
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage

from sleeplm.measure.features import heart_rate_per_second
from sleeplm.measure.quality import artefact_segments, bad_seconds
from sleeplm.io.recording import EPOCH_SEC, POSITION_CODES, Recording
from sleeplm.measure.respiratory import detect_apneas_hypopneas, detect_desaturations, spo2_per_second
from sleeplm.errors import MeasurementError
from sleeplm.measure.signals import bandpass, get_signal, per_second, position_codes, sleep_mask_seconds
from sleeplm.terms import BRADY_BPM, EVENT_KINDS, HR_SUSTAINED_S, SLEEP_STAGES, TACHY_BPM, runs, value_runs

__all__ = ["EVENT_COLUMNS", "EVENT_KINDS", "HYPOPNEA_RULES", "detect_events", "detect_arousals", "event_table"]

logger = logging.getLogger(__name__)

EVENT_COLUMNS = ["kind", "subtype", "start_s", "end_s", "clock_start", "clock_end", "epoch_start", "epoch_end", "evidence"]
HYPOPNEA_RULES = ("1A", "1B")

# Arousal: alpha + beta (>16 Hz, spindle band excluded) power 2x its preceding 30-s median for 3-15 s (gaps of <= 2 s bridged),
# after >= 10 s of sleep; in REM chin EMG must rise too (2x its preceding median).
AROUSAL_BANDS = ((8.0, 12.0), (16.0, 30.0))
AROUSAL_POWER_RATIO = 2.0
# Seconds above the ratio separated by up to 2 quieter seconds form one arousal: a real arousal's
# alpha/beta power swings from one second to the next (on the expert-scored DREAMS excerpt single
# seconds reach 4-17x between quieter ones), so it seldom stays high for 3 s in a row.
AROUSAL_GAP_S = 2
AROUSAL_S = (3, 15)
AROUSAL_BASELINE_S = 30
STABLE_SLEEP_S = 10
REM_EMG_RATIO = 2.0
POSITION_MIN_S = 30


def _preceding_median(x: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(x).shift(1).rolling(window, min_periods=window // 3).median().to_numpy()


def detect_arousals(rec: Recording, hypnogram: np.ndarray | None, bad: np.ndarray) -> pd.DataFrame:
    """EEG arousals (seconds): abrupt alpha/beta bursts of 3-15 s in sleep (rules in the module constants).

    Returns a DataFrame with columns ``start_s, end_s, power_ratio``; empty without EEG.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> arousals = detect_arousals(rec, rec.reference.stages, np.zeros(rec.n_epochs * 30, dtype=bool))
    >>> list(arousals.columns), len(arousals) > 0
    (['start_s', 'end_s', 'power_ratio'], True)
    >>> bool(((arousals["end_s"] - arousals["start_s"]).between(3, 15)).all())
    True
    """
    eeg = get_signal(rec, "EEG_C3_A2") or get_signal(rec, "EEG_C4_A1")
    columns = ["start_s", "end_s", "power_ratio"]
    if eeg is None:
        return pd.DataFrame(columns=columns)
    n_seconds = rec.n_epochs * EPOCH_SEC
    fast = sum(per_second(bandpass(eeg.data, eeg.sfreq, lo, hi) ** 2, eeg.sfreq) for lo, hi in AROUSAL_BANDS
               if lo < eeg.sfreq / 2)[:n_seconds]
    ratio = fast / _preceding_median(fast, AROUSAL_BASELINE_S)
    ratio[bad[: len(ratio)]] = np.nan
    high = ndimage.binary_closing(np.nan_to_num(ratio) > AROUSAL_POWER_RATIO, structure=np.ones(AROUSAL_GAP_S + 1))
    asleep = sleep_mask_seconds(hypnogram, n_seconds)
    rem = None if hypnogram is None else np.repeat(np.asarray(hypnogram) == "R", EPOCH_SEC)[:n_seconds]
    emg = get_signal(rec, "EMG_Chin")
    emg_ratio = None
    if emg is not None:
        emg_power = per_second(bandpass(emg.data, emg.sfreq, 10, None) ** 2, emg.sfreq)[:n_seconds]
        emg_ratio = emg_power / _preceding_median(emg_power, AROUSAL_BASELINE_S)
    rows = []
    for start, end in runs(high):
        if not AROUSAL_S[0] <= end - start <= AROUSAL_S[1] or start < STABLE_SLEEP_S:
            continue
        if asleep is not None and not asleep[start - STABLE_SLEEP_S : start + 1].all():
            continue
        if rem is not None and rem[start]:
            if emg_ratio is None or not np.nanmax(emg_ratio[start:end]) >= REM_EMG_RATIO:
                continue  # a REM arousal needs a chin EMG rise; without EMG it cannot be scored
        rows.append((float(start), float(end), round(float(np.nanmax(ratio[start:end])), 1)))
    return pd.DataFrame(rows, columns=columns)


def _heart_rate_events(rec: Recording, hypnogram: np.ndarray | None) -> list[dict]:
    hr = heart_rate_per_second(rec)
    if hr is None:
        return []
    smooth = ndimage.median_filter(np.nan_to_num(hr, nan=np.nanmedian(hr)), size=5)
    asleep = sleep_mask_seconds(hypnogram, len(hr))
    events = []
    for kind, mask in (("tachycardia", smooth > TACHY_BPM), ("bradycardia", smooth < BRADY_BPM)):
        if asleep is not None:
            mask &= asleep
        for start, end in runs(mask & np.isfinite(hr)):
            if end - start >= HR_SUSTAINED_S:
                part = hr[start:end]
                events.append({"kind": kind, "subtype": "", "start_s": float(start), "end_s": float(end),
                               "evidence": {"hr_mean_bpm": round(float(np.nanmean(part)), 1),
                                            "hr_extreme_bpm": round(float(np.nanmax(part) if kind == "tachycardia" else np.nanmin(part)), 1)}})
    return events


def _position_events(rec: Recording) -> list[dict]:
    positions = position_codes(rec)
    if positions is None:
        return []
    codes, sfreq = positions
    per_s = codes[:: max(int(round(sfreq)), 1)] if sfreq >= 1 else np.repeat(codes, int(round(1 / sfreq)))
    # (code, start, end) runs of one known position held >= 30 s
    stable = [(int(code), start, end) for start, end, code in value_runs(per_s.tolist())
              if code >= 0 and end - start >= POSITION_MIN_S]
    events = []
    for (old, _, old_end), (new, new_start, _) in zip(stable, stable[1:]):
        if old != new:
            events.append({"kind": "position_change",
                           "subtype": f"{POSITION_CODES[old].lower()} to {POSITION_CODES[new].lower()}",
                           "start_s": float(old_end), "end_s": float(max(new_start, old_end + 1)),
                           "evidence": {"from": POSITION_CODES[old], "to": POSITION_CODES[new]}})
    return events


def _in_sleep(events: list[dict], hypnogram: np.ndarray | None) -> list[dict]:
    """Keep events that begin in a sleep epoch (respiratory events and desaturations count in sleep only;
    a desaturation may run on into the awakening that ends its event)."""
    if hypnogram is None:
        return events
    asleep = np.isin(np.asarray(hypnogram), SLEEP_STAGES)
    return [e for e in events if asleep[min(int(e["start_s"] // EPOCH_SEC), len(asleep) - 1)]]


def detect_events(rec: Recording, hypnogram: np.ndarray | None = None, hypopnea_rule: str = "1A",
                  artefacts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Score the night's events.

    Parameters
    ----------
    rec : the night.
    hypnogram : per-epoch stages; when given, respiratory events, arousals and heart-rate
        episodes are kept in sleep only. Without it, the whole recording counts (monitoring time).
    hypopnea_rule : ``"1A"`` (>= 30 % flow drop with >= 3 % desaturation or an arousal, AASM
        recommended) or ``"1B"`` (with >= 4 % desaturation).
    artefacts : `sleeplm.measure.quality.artefact_segments(rec)` if already computed.

    Returns
    -------
    DataFrame with columns `EVENT_COLUMNS`, sorted by start: kind (`EVENT_KINDS`), subtype
    (obstructive/central/mixed/unclassified for apneas, "3%"/"4%" for desaturations, "from to"
    for position changes), start_s/end_s (s from start), clock_start/clock_end, inclusive
    epoch_start/epoch_end, evidence (dict of the numbers behind the event).

    Examples
    --------
    >>> rec = tiny_recording()
    >>> events = detect_events(rec, hypnogram=rec.reference.stages)
    >>> list(events.columns[:4]), set(events["kind"]) >= {"apnea", "hypopnea", "arousal", "desaturation"}
    (['kind', 'subtype', 'start_s', 'end_s'], True)
    >>> first = events.iloc[0]                   # clock and epoch citations beside the seconds
    >>> first["clock_start"] == rec.clock_at(first["start_s"]), bool(first["epoch_start"] == rec.epoch_of(first["start_s"]))
    (True, True)
    """
    if hypopnea_rule not in HYPOPNEA_RULES:
        raise MeasurementError(f"unknown hypopnea rule {hypopnea_rule!r}; use '1A' (3 % or arousal) or '1B' (4 %).")
    if hypnogram is not None and len(hypnogram) != rec.n_epochs:
        raise MeasurementError(
            f"the hypnogram has {len(hypnogram)} epochs but the recording {rec.n_epochs}; pass this night's hypnogram."
        )
    n_seconds = rec.n_epochs * EPOCH_SEC
    artefacts = artefact_segments(rec) if artefacts is None else artefacts
    eeg_bad = bad_seconds(artefacts, ("EEG_C3_A2", "EEG_C4_A1"), n_seconds)
    arousals = detect_arousals(rec, hypnogram, eeg_bad)
    spo2 = spo2_per_second(rec, bad_seconds(artefacts, ("SpO2",), n_seconds))
    desats = detect_desaturations(spo2) if spo2 is not None else detect_desaturations(np.array([]))
    flow_bad = {name: bad_seconds(artefacts, (name,), n_seconds) for name in ("AF", "Pressure")}

    events = _in_sleep(detect_apneas_hypopneas(rec, flow_bad, desats, arousals, hypopnea_rule), hypnogram)
    events += _in_sleep([
        {"kind": "desaturation", "subtype": "4%" if d.drop_pct >= 4 else "3%", "start_s": d.start_s, "end_s": d.end_s,
         "evidence": {"baseline_pct": d.baseline_pct, "nadir_pct": d.nadir_pct, "drop_pct": d.drop_pct, "nadir_s": d.nadir_s}}
        for d in desats.itertuples(index=False)
    ], hypnogram)
    events += [{"kind": "arousal", "subtype": "", "start_s": a.start_s, "end_s": a.end_s,
                "evidence": {"power_ratio": a.power_ratio}} for a in arousals.itertuples(index=False)]
    events += _heart_rate_events(rec, hypnogram) + _position_events(rec)
    table = event_table(rec, events)
    logger.info("events scored (hypopnea rule %s): %s", hypopnea_rule, table["kind"].value_counts().to_dict())
    return table


def event_table(rec: Recording, events: list[dict]) -> pd.DataFrame:
    """Events (dicts with kind, subtype, start_s, end_s, evidence) as a table of `EVENT_COLUMNS`, sorted by
    start, with clock and epoch citations.

    Examples
    --------
    >>> table = event_table(tiny_recording(), [{"kind": "apnea", "subtype": "central", "start_s": 95.0, "end_s": 112.0,
    ...                                         "evidence": {}}])
    >>> table[["kind", "clock_start", "epoch_start", "epoch_end"]].to_dict("records")
    [{'kind': 'apnea', 'clock_start': '23:01:35', 'epoch_start': 3, 'epoch_end': 3}]
    """
    rows = []
    for event in sorted(events, key=lambda e: e["start_s"]):
        start, end = round(float(event["start_s"]), 1), round(float(event["end_s"]), 1)
        cite = rec.cite(start, end)
        rows.append({"kind": event["kind"], "subtype": event["subtype"], "start_s": start, "end_s": end,
                     "clock_start": cite["clock_start"], "clock_end": cite["clock_end"],
                     "epoch_start": cite["epoch_start"], "epoch_end": cite["epoch_end"], "evidence": event["evidence"]})
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)
