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
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from sleeplm.measure.features import heart_rate_per_second
from sleeplm.measure.quality import artefact_segments, bad_seconds
from sleeplm.io.recording import EPOCH_SEC, POSITION_CODES, Recording
from sleeplm.measure.respiratory import CANDIDATE_COLUMNS, detect_desaturations, respiratory_candidates, spo2_per_second
from sleeplm.measure.rules import AROUSAL_RATIO, CONFIDENCE_SCALES, DEFAULT_RULE, resolve_rule, score_candidates
from sleeplm.errors import MeasurementError
from sleeplm.measure.signals import bandpass, get_signal, per_second, position_codes, sleep_mask_seconds
from sleeplm.terms import BRADY_BPM, EVENT_KINDS, HR_SUSTAINED_S, SLEEP_STAGES, TACHY_BPM, runs, value_runs

__all__ = ["EVENT_COLUMNS", "EVENT_KINDS", "EventScoring", "detect_events", "score_events", "rescore_events",
           "stacked", "detect_arousals", "event_table"]

logger = logging.getLogger(__name__)

EVENT_COLUMNS = ["kind", "subtype", "start_s", "end_s", "clock_start", "clock_end", "epoch_start", "epoch_end", "evidence",
                 "event_id", "confidence"]

# Arousal: alpha + beta (>16 Hz, spindle band excluded) power 2x its preceding 30-s median for 3-15 s (gaps of <= 2 s bridged,
# >= 3 of its seconds above), after >= 10 s of sleep; in REM chin EMG must rise too (2x its preceding median).
AROUSAL_BANDS = ((8.0, 12.0), (16.0, 30.0))
AROUSAL_POWER_RATIO = AROUSAL_RATIO
# Seconds above the ratio separated by up to 2 quieter seconds form one arousal: a real arousal's
# alpha/beta power swings from one second to the next (on the expert-scored DREAMS excerpt single
# seconds reach 4-17x between quieter ones), so it seldom stays high for 3 s in a row. The shift must still
# last 3 s (AASM): at least `AROUSAL_S[0]` of a run's seconds are above the ratio, so two chance-high seconds
# (or a spindle's second and a chance one) with quiet seconds between them are no arousal.
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

    As the AASM scores them: the frequency shift lasts >= 3 s (>= 3 seconds above the power ratio), it
    follows >= 10 s of sleep (the hypnogram's), and in REM the chin EMG rises too.

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
    above = np.nan_to_num(ratio) > AROUSAL_POWER_RATIO
    high = ndimage.binary_closing(above, structure=np.ones(AROUSAL_GAP_S + 1))
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
        if above[start:end].sum() < AROUSAL_S[0]:
            continue  # the bridged quiet seconds are not the shift: it lasts >= 3 s
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
                               "event_id": f"H{len(events) + 1:03d}",
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
                           "event_id": f"P{len(events) + 1:03d}",
                           "evidence": {"from": POSITION_CODES[old], "to": POSITION_CODES[new]}})
    return events


def _in_sleep(events: list[dict], hypnogram: np.ndarray | None) -> list[dict]:
    """Keep events that begin in a sleep epoch (respiratory events and desaturations count in sleep only;
    a desaturation may run on into the awakening that ends its event)."""
    if hypnogram is None:
        return events
    asleep = np.isin(np.asarray(hypnogram), SLEEP_STAGES)
    return [e for e in events if asleep[min(int(e["start_s"] // EPOCH_SEC), len(asleep) - 1)]]


@dataclass
class EventScoring:
    """A night's events under one rule, and what re-scoring it under another needs.

    Attributes
    ----------
    events : the scored events (`EVENT_COLUMNS`).
    near_misses : breathing reductions that failed a criterion of the rule (`EVENT_COLUMNS`, kind
        "near_miss", subtype the kind they were a candidate for, ``evidence["criteria"]["failed"]``).
    candidates : every breathing reduction's rule-independent measurements
        (`sleeplm.measure.respiratory.CANDIDATE_COLUMNS`), in sleep only when stages were given.
    rule : the rule's name (`sleeplm.measure.rules.RULES`).
    """

    events: pd.DataFrame
    near_misses: pd.DataFrame
    candidates: pd.DataFrame
    rule: str


def stacked(*tables: pd.DataFrame | None) -> pd.DataFrame:
    """Event tables one after the other (the scored events, then the near-misses: events.csv's rows).

    Examples
    --------
    >>> a = pd.DataFrame({"kind": ["apnea"], "start_s": [10.0]})
    >>> stacked(a, a.iloc[:0], None)["kind"].tolist()
    ['apnea']
    """
    present = [t for t in tables if t is not None and len(t)]
    if not present:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    return pd.concat(present, ignore_index=True) if len(present) > 1 else present[0].reset_index(drop=True)


def _criterion(name: str, measured: float, threshold: float, scale: float) -> dict:
    margin = round(float(measured) - threshold, 1)
    return {"criterion": name, "measured": round(float(measured), 1), "threshold": threshold, "margin": margin,
            "passed": margin >= 0, "group": "all", "confidence": round(float(np.clip(0.5 + 0.5 * margin / scale, 0, 1)), 2)}


def _desaturation_event(d, index: int) -> dict:
    """A desaturation with its criteria (fall >= 3 % lasting >= 10 s; ODI4 counts those >= 4 %)."""
    tests = [_criterion("desaturation_pct", d.drop_pct, 3.0, CONFIDENCE_SCALES["desaturation_pct"]),
             _criterion("duration_s", d.end_s - d.start_s, 10.0, CONFIDENCE_SCALES["duration_s"])]
    return {"kind": "desaturation", "subtype": "4%" if d.drop_pct >= 4 else "3%", "start_s": d.start_s, "end_s": d.end_s,
            "event_id": f"D{index:03d}", "confidence": min(t["confidence"] for t in tests),
            "evidence": {"baseline_pct": d.baseline_pct, "nadir_pct": d.nadir_pct, "drop_pct": d.drop_pct,
                         "nadir_s": d.nadir_s,
                         "criteria": {"rule": "AASM desaturation (>= 3 % from the preceding baseline, >= 10 s)",
                                      "tests": tests, "type_path": f"fell {d.drop_pct:g} %: counted in ODI3"
                                      + (" and ODI4" if d.drop_pct >= 4 else " (under 4 %: not in ODI4)"),
                                      "signal_quality": {"spo2": 1.0}}}}


def _arousal_event(a, index: int) -> dict:
    """An arousal with its criteria (alpha/beta power >= 2x the preceding 30 s, for 3-15 s, after >= 10 s of sleep)."""
    tests = [_criterion("arousal_power_ratio", a.power_ratio, AROUSAL_POWER_RATIO, CONFIDENCE_SCALES["arousal_power_ratio"]),
             _criterion("duration_s", a.end_s - a.start_s, AROUSAL_S[0], CONFIDENCE_SCALES["duration_s"])]
    return {"kind": "arousal", "subtype": "", "start_s": a.start_s, "end_s": a.end_s, "event_id": f"A{index:03d}",
            "confidence": min(t["confidence"] for t in tests),
            "evidence": {"power_ratio": a.power_ratio,
                         "criteria": {"rule": "AASM arousal (EEG frequency shift >= 3 s after >= 10 s of sleep)",
                                      "tests": tests, "type_path": f"after >= {STABLE_SLEEP_S} s of sleep",
                                      "signal_quality": {"eeg": 1.0}}}}


def score_events(rec: Recording, hypnogram: np.ndarray | None = None, rule: str = DEFAULT_RULE,
                 artefacts: pd.DataFrame | None = None) -> EventScoring:
    """Score the night's events under `rule`, keeping near-misses and the per-candidate measurements.

    Parameters
    ----------
    rec : the night.
    hypnogram : per-epoch stages; when given, respiratory events, arousals and heart-rate
        episodes are kept in sleep only. Without it, the whole recording counts (monitoring time).
    rule : a scoring rule's name or alias (`sleeplm.measure.rules.RULES`; "1A" AASM 2012
        recommended, "1B" the 4 % rule...).
    artefacts : `sleeplm.measure.quality.artefact_segments(rec)` if already computed.

    Returns
    -------
    `EventScoring`; its ``events`` are `detect_events`' table.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> scoring = score_events(rec, hypnogram=rec.reference.stages)
    >>> scoring.rule, bool(len(scoring.candidates) >= scoring.events["kind"].isin(["apnea", "hypopnea"]).sum())
    ('1A', True)
    >>> criteria = scoring.events[scoring.events.kind == "apnea"].iloc[0]["evidence"]["criteria"]
    >>> [t["criterion"] for t in criteria["tests"]], criteria["type_path"] is not None
    (['flow_reduction_pct', 'duration_s'], True)
    """
    name = resolve_rule(rule).name
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
    bad = {name: bad_seconds(artefacts, (name,), n_seconds) for name in ("AF", "Pressure")}
    candidates = respiratory_candidates(rec, bad, desats, arousals, spo2)
    candidates = pd.DataFrame(_in_sleep(candidates.to_dict("records"), hypnogram), columns=CANDIDATE_COLUMNS)

    events = _in_sleep([_desaturation_event(d, i + 1) for i, d in enumerate(desats.itertuples(index=False))], hypnogram)
    events += [_arousal_event(a, i + 1) for i, a in enumerate(arousals.itertuples(index=False))]
    events += _heart_rate_events(rec, hypnogram) + _position_events(rec)
    others = event_table(rec, events)
    scored = rescore_events(rec, EventScoring(others, others.iloc[:0], candidates, name), name)
    logger.info("events scored (rule %s): %s; %d near-misses", name, scored.events["kind"].value_counts().to_dict(),
                len(scored.near_misses))
    return scored


def rescore_events(rec: Recording, scoring: EventScoring, rule: str) -> EventScoring:
    """`scoring` under another rule: its candidates scored again, every other event kept (no signal is read again).

    Examples
    --------
    >>> rec = tiny_recording()
    >>> scoring = score_events(rec, hypnogram=rec.reference.stages)
    >>> strict = rescore_events(rec, scoring, "4%")
    >>> strict.rule, bool((strict.events.kind == "hypopnea").sum() <= (scoring.events.kind == "hypopnea").sum())
    ('1B', True)
    >>> list(strict.events[strict.events.kind == "desaturation"].event_id) == list(scoring.events[scoring.events.kind == "desaturation"].event_id)
    True
    """
    name = resolve_rule(rule).name
    respiratory, near = score_candidates(scoring.candidates, name)
    kept = scoring.events[~scoring.events["kind"].isin(("apnea", "hypopnea"))]
    events = stacked(kept, event_table(rec, respiratory)).sort_values("start_s", kind="stable", ignore_index=True)
    return EventScoring(events=events, near_misses=event_table(rec, near), candidates=scoring.candidates, rule=name)


def detect_events(rec: Recording, hypnogram: np.ndarray | None = None, hypopnea_rule: str = DEFAULT_RULE,
                  artefacts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Score the night's events (`score_events(...).events`).

    Parameters
    ----------
    rec : the night.
    hypnogram : per-epoch stages; when given, respiratory events, arousals and heart-rate
        episodes are kept in sleep only. Without it, the whole recording counts (monitoring time).
    hypopnea_rule : a scoring rule (`sleeplm.measure.rules.RULES`): ``"1A"`` (>= 30 % flow drop with
        >= 3 % desaturation or an arousal, AASM recommended), ``"1B"`` (with >= 4 % desaturation), ...
    artefacts : `sleeplm.measure.quality.artefact_segments(rec)` if already computed.

    Returns
    -------
    DataFrame with columns `EVENT_COLUMNS`, sorted by start: kind (`EVENT_KINDS`), subtype
    (obstructive/central/mixed/unclassified for apneas, "3%"/"4%" for desaturations, "from to"
    for position changes), start_s/end_s (s from start), clock_start/clock_end, inclusive
    epoch_start/epoch_end, evidence (dict of the numbers behind the event; for apneas, hypopneas,
    desaturations and arousals also ``criteria``: each criterion's measured value, threshold,
    margin and confidence, the path that set the type, the signal quality), event_id ("R012"
    respiratory, "D003" desaturation, "A007" arousal, "H001" heart rate, "P002" position) and
    confidence (0-1, `sleeplm.measure.rules`; None for heart-rate and position events).

    Examples
    --------
    >>> rec = tiny_recording()
    >>> events = detect_events(rec, hypnogram=rec.reference.stages)
    >>> list(events.columns[:4]), set(events["kind"]) >= {"apnea", "hypopnea", "arousal", "desaturation"}
    (['kind', 'subtype', 'start_s', 'end_s'], True)
    >>> first = events.iloc[0]                   # clock and epoch citations beside the seconds
    >>> first["clock_start"] == rec.clock_at(first["start_s"]), bool(first["epoch_start"] == rec.epoch_of(first["start_s"]))
    (True, True)
    >>> detect_events(rec, hypopnea_rule="3 percent")
    Traceback (most recent call last):
    ...
    sleeplm.errors.MeasurementError: unknown scoring rule '3 percent'; use one of: chicago-1999, aasm-2007-recommended, aasm-2007-alternative, 1A, 1B, shhs, aasm-v3 (aliases: 3%, 4%, cms, current).
    """
    return score_events(rec, hypnogram, hypopnea_rule, artefacts).events


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
                     "epoch_start": cite["epoch_start"], "epoch_end": cite["epoch_end"], "evidence": event["evidence"],
                     "event_id": event.get("event_id"), "confidence": event.get("confidence")})
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)
