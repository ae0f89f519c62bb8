"""What happens during a simulated night: body position, respiratory events, desaturations,
arousals, heart-rate episodes and artefacts, each with exact times (the ground truth).

The signal generators (`sleeplm.synthetic.physiology`) render these rows into waveforms, so the
truth is not inferred from the signals but the signals are built from it.

Placement rules (so that scoring the night is well posed):

- respiratory events lie in sleep (with 10 s of sleep either side) and never overlap; at least
  20 s of normal breathing separate two events, which also keeps their desaturations apart;
- events are more frequent supine (x2.5) and in REM (x2), rarer in N3 (x0.4);
- artefacts, position changes and heart-rate episodes are kept away from respiratory events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from sleeplm.io.recording import EPOCH_SEC, POSITION_CODES
from sleeplm.terms import NREM_STAGES

__all__ = ["SEVERITIES", "EVENT_COLUMNS", "Scenario", "plan_night"]

# Target AHI (events per hour of sleep), share of apneas among respiratory events, sleep
# fragmentation (see `simulate_hypnogram`) and spontaneous arousals per hour of sleep.
SEVERITIES = {
    "none": {"ahi": 2.0, "apnea_share": 0.3, "fragmentation": 0.0, "arousals_per_h": 8.0},
    "mild": {"ahi": 10.0, "apnea_share": 0.35, "fragmentation": 0.2, "arousals_per_h": 8.0},
    "moderate": {"ahi": 22.0, "apnea_share": 0.4, "fragmentation": 0.5, "arousals_per_h": 6.0},
    "severe": {"ahi": 42.0, "apnea_share": 0.5, "fragmentation": 0.9, "arousals_per_h": 4.0},
}
_AHI_BANDS = {"none": (0, 5), "mild": (5, 15), "moderate": (15, 30), "severe": (30, np.inf)}

EVENT_COLUMNS = [
    "kind", "subtype", "start_s", "end_s", "channel", "stage", "position",
    "flow_drop_pct", "desat_pct", "nadir_s", "criterion",
]
_GAP_S = 20  # normal breathing between respiratory events
_SUPINE = 2


@dataclass
class Scenario:
    """The planned night (all times in seconds from recording start)."""

    hypnogram: np.ndarray  # stage per 30-s epoch
    position_s: np.ndarray  # SleepLM position code per second
    events: pd.DataFrame  # EVENT_COLUMNS, sorted by start_s
    spo2_baseline: float  # % outside desaturations
    sighs_s: np.ndarray  # start of each sigh: one deep breath, then a 4-7 s pause (normal, never scored)

    @property
    def stage_s(self) -> np.ndarray:
        """Stage per second."""
        return np.repeat(self.hypnogram, EPOCH_SEC)


def _interval_free(mask: np.ndarray, start: float, end: float) -> bool:
    """True when `mask` is True over every second of [start, end) (and it lies inside the night)."""
    lo, hi = int(np.floor(start)), int(np.ceil(end))
    return lo >= 0 and hi <= mask.size and bool(mask[lo:hi].all())


def _mark(mask: np.ndarray, start: float, end: float, value: bool) -> None:
    mask[max(int(np.floor(start)), 0) : max(int(np.ceil(end)), 0)] = value


def _draw_second(rng: np.random.Generator, weights: np.ndarray) -> int:
    """A second drawn with probability proportional to `weights`."""
    cumulative = np.cumsum(weights)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


def _plan_positions(n_s: int, rng: np.random.Generator, stage_s: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Position code per second and the seconds at which it changes (a few times a night, mostly in wake)."""
    night_h = n_s / 3600
    position = np.full(n_s, _SUPINE if rng.random() < 0.65 else int(rng.choice([0, 1])), dtype=np.int8)
    n_changes = int(rng.poisson(0.8 * night_h)) if night_h >= 0.75 else 0
    if night_h >= 1.0:
        n_changes = max(n_changes, 1)
    changes: list[int] = []
    awake = np.flatnonzero(stage_s == "W")
    for _ in range(n_changes):
        t = int(rng.uniform(0.1, 0.9) * n_s)
        near_wake = awake[np.abs(awake - t) < 600]
        if near_wake.size and rng.random() < 0.7:  # people mostly turn over while awake
            t = int(rng.choice(near_wake))
        if any(abs(t - c) < 900 for c in changes) or not 60 < t < n_s - 60:
            continue
        changes.append(t)
    for t in sorted(changes):
        current = int(position[t])
        choices = [code for code in (0, 1, 2, 3) if code != current]
        weights = np.array([0.3, 0.3, 0.45, 0.05])[choices]
        position[t:] = rng.choice(choices, p=weights / weights.sum())
    return position, sorted(changes)


def plan_night(
    hypnogram: np.ndarray,
    rng: np.random.Generator,
    severity: str,
    artefacts: bool = True,
    tachycardia: bool = True,
    bradycardia: bool = False,
) -> Scenario:
    """Plan every event of a night on top of its hypnogram.

    Parameters
    ----------
    hypnogram : stage per 30-s epoch.
    rng : seeded random generator.
    severity : key of `SEVERITIES`.
    artefacts : add flat, electrode-pop, clipped and movement artefacts (kind ``"artefact"``).
    tachycardia : add one sinus tachycardia episode during sleep (nights of an hour or more).
    bradycardia : add one sinus bradycardia episode during sleep (nights of an hour or more).

    Returns
    -------
    Scenario whose `events` holds one row per event; see `sleeplm.synthetic.Truth` for columns.

    Examples
    --------
    >>> import numpy as np
    >>> from sleeplm.synthetic.hypnogram import simulate_hypnogram
    >>> rng = np.random.default_rng(0)
    >>> hypnogram = simulate_hypnogram(240, rng)    # two hours
    >>> scenario = plan_night(hypnogram, rng, "severe")
    >>> scenario.hypnogram is hypnogram, scenario.position_s.size == 240 * 30
    (True, True)
    >>> list(scenario.events.columns[:4])
    ['kind', 'subtype', 'start_s', 'end_s']
    >>> bool(scenario.events["start_s"].is_monotonic_increasing)
    True
    >>> respiratory = scenario.events["kind"].isin(["apnea", "hypopnea"]).sum()
    >>> bool(respiratory >= 30)        # "severe": >= 30 events per hour of sleep
    True
    """
    params = SEVERITIES[severity]
    n_s = hypnogram.size * EPOCH_SEC
    stage_s = np.repeat(hypnogram, EPOCH_SEC)
    asleep = stage_s != "W"
    position, changes = _plan_positions(n_s, rng, stage_s)
    rows: list[dict] = []

    def add(kind, subtype, start, end, **extra):
        second = int(min(max(start, 0), n_s - 1))
        rows.append({"kind": kind, "subtype": subtype, "start_s": round(float(start), 2), "end_s": round(float(end), 2),
                     "stage": str(stage_s[second]), "position": POSITION_CODES[int(position[second])], **extra})

    free = asleep.copy()  # seconds still available to respiratory events
    for t in changes:
        new = POSITION_CODES[int(position[t])]
        add("position_change", f"{POSITION_CODES[int(position[t - 1])]}->{new}", t, t)
        if asleep[t - 15 : t].all():  # turning over in sleep comes with an arousal
            add("arousal", "movement", t - 3, t + 7)
        _mark(free, t - 30, t + 30, False)

    if artefacts:
        _plan_artefacts(rng, n_s, changes, free, add)
    for kind, wanted in (("tachycardia", tachycardia), ("bradycardia", bradycardia)):
        if wanted and n_s >= 3600:
            _plan_heart_rate_episode(rng, free, add, kind)

    spo2_baseline = float(rng.uniform(95.0, 97.5))
    occupied = np.zeros(n_s, dtype=bool)  # cores of respiratory events
    _plan_respiratory(rng, params, severity, stage_s, position, free, occupied, add)
    _plan_isolated_desaturations(rng, free, occupied, rows, add)
    _plan_spontaneous_arousals(rng, params, asleep, occupied, rows, add)

    sighs = _plan_sighs(rng, stage_s, free, occupied)

    events = pd.DataFrame(rows).reindex(columns=EVENT_COLUMNS)
    for text_column in ("channel", "criterion"):
        events[text_column] = events[text_column].astype(object).fillna("").astype(str)
    events = events.sort_values(["start_s", "kind"], kind="stable").reset_index(drop=True)
    return Scenario(hypnogram=hypnogram, position_s=position, events=events, spo2_baseline=spo2_baseline,
                    sighs_s=sighs)


def _plan_artefacts(rng, n_s, changes, free, add) -> None:
    """Movement at each position change, one flat EEG and one flat airflow stretch, pops, a clipped stretch."""
    body = "EEG_C3_A2,EEG_C4_A1,EOG_Left,EOG_Right,EMG_Chin,THX,ABD"
    for t in changes:
        add("artefact", "movement", t - 4, t + 6, channel=body)
    placements = [("flat", "EEG_C4_A1", 60.0), ("flat", "AF", 45.0), ("clipping", "EEG_C3_A2", 20.0)]
    placements += [("electrode_pop", "EEG_C3_A2", 0.4)] * 4
    unused = np.ones(n_s, dtype=bool)
    for t in changes:
        _mark(unused, t - 20, t + 20, False)
    for subtype, channel, duration in placements:
        # The flat airflow lies in sleep on purpose: a scorer must not call a dead sensor an apnea.
        allowed = unused & free if channel == "AF" else unused
        candidates = np.flatnonzero(allowed)
        for _ in range(50):
            if candidates.size == 0:
                break
            start = float(rng.choice(candidates)) + rng.uniform(0, 0.9)
            # Breathing events keep well clear of a dead airflow sensor (its baseline must be
            # clean on both sides), and just clear of EEG artefacts (arousals need clean EEG).
            margin = 40.0 if channel == "AF" else 15.0
            if _interval_free(allowed, start - margin, start + duration + margin):
                add("artefact", subtype, start, start + duration, channel=channel)
                _mark(free, start - margin, start + duration + margin, False)
                _mark(unused, start - 10, start + duration + 10, False)
                break


def _plan_heart_rate_episode(rng, free, add, kind: str) -> None:
    """One sinus tachycardia (HR > 90 bpm) or bradycardia (< 40 bpm) episode, 1.5-2.5 min, in a quiet stretch of sleep."""
    duration = float(rng.uniform(90, 150))
    candidates = np.flatnonzero(free)
    for _ in range(100 if candidates.size else 0):
        start = float(rng.choice(candidates))
        if _interval_free(free, start - 60, start + duration + 60):
            add(kind, "sinus", start, start + duration)
            _mark(free, start - 60, start + duration + 60, False)
            return


def _respiratory_kind(rng, params) -> tuple[str, str]:
    if rng.random() >= params["apnea_share"]:
        return "hypopnea", "obstructive"
    return "apnea", str(rng.choice(["obstructive", "central", "mixed"], p=[0.7, 0.2, 0.1]))


def _plan_respiratory(rng, params, severity, stage_s, position, free, occupied, add) -> None:
    """Apneas and hypopneas with their desaturations and terminal arousals, count set by the severity band."""
    tst_h = float((stage_s != "W").sum()) / 3600
    n_target = int(round(params["ahi"] * tst_h))
    low, high = _AHI_BANDS[severity]
    n_target = int(np.clip(n_target, np.ceil(low * tst_h), np.ceil(high * tst_h) - 1 if np.isfinite(high) else n_target))
    weights = np.ones(stage_s.size)
    weights[position == _SUPINE] *= 2.5
    weights[stage_s == "R"] *= 2.0
    weights[stage_s == "N3"] *= 0.4
    placed = 0
    for _ in range(n_target * 60):
        if placed == n_target:
            break
        kind, subtype = _respiratory_kind(rng, params)
        duration = float(rng.uniform(12, 25 if subtype == "central" else 35))
        start = _draw_second(rng, weights * free) + rng.uniform(0, 0.9)
        end = start + duration
        if not (_interval_free(free, start - 10, end + 10) and _interval_free(~occupied, start - _GAP_S, end + _GAP_S)):
            continue
        _mark(occupied, start, end, True)
        placed += 1
        if kind == "apnea":
            flow_drop = rng.uniform(92, 98)
            depth = min(3.5 + 0.2 * (duration - 10) + rng.uniform(0, 2), 15.0) * (0.8 if subtype == "central" else 1)
            aroused = rng.random() < (0.5 if subtype == "central" else 0.85)
            criterion = ""
        else:
            flow_drop = rng.uniform(40, 60)
            criterion = str(rng.choice(["desaturation", "arousal", "desaturation+arousal"], p=[0.45, 0.25, 0.3]))
            aroused = "arousal" in criterion
            # Without the desaturation criterion the dip stays well under 3%.
            depth = rng.uniform(3.5, 6.0) if "desaturation" in criterion else rng.uniform(0.5, 1.8)
        lag = rng.uniform(20, 28)  # finger oximetry sees the fall ~20-30 s late
        nadir = end + lag
        add(kind, subtype, start, end, flow_drop_pct=round(flow_drop, 1), desat_pct=round(depth, 2),
            nadir_s=round(nadir, 2), criterion=criterion)
        if depth >= 3:
            add("desaturation", "associated", start + lag, nadir, desat_pct=round(depth, 2), nadir_s=round(nadir, 2))
        if aroused:
            arousal_start = end + rng.uniform(-1, 2)
            add("arousal", "respiratory", arousal_start, arousal_start + rng.uniform(4, 12))


def _busy_mask(rows: list[dict], n_s: int, kinds: tuple[str, ...], margin: float, recovery: float = 0.0) -> np.ndarray:
    busy = np.zeros(n_s, dtype=bool)
    for row in rows:
        if row["kind"] in kinds:
            _mark(busy, row["start_s"] - margin, row["end_s"] + recovery + margin, True)
    return busy


def _plan_isolated_desaturations(rng, free, occupied, rows, add) -> None:
    """1-2 desaturations per hour not caused by a scored respiratory event (3.2-4.5 %)."""
    n_s = free.size
    busy = occupied | _busy_mask(rows, n_s, ("desaturation",), margin=30, recovery=12)
    n = int(rng.poisson(1.5 * n_s / 3600))
    candidates = np.flatnonzero(free & ~busy)
    for _ in range(n * 20):
        if n == 0 or candidates.size == 0:
            break
        fall = float(rng.uniform(15, 25))
        onset = float(rng.choice(candidates)) + rng.uniform(0, 0.9)
        if not (_interval_free(free & ~busy, onset - 30, onset + fall + 40)):
            continue
        depth = rng.uniform(3.2, 4.5)
        add("desaturation", "isolated", onset, onset + fall, desat_pct=round(depth, 2), nadir_s=round(onset + fall, 2))
        _mark(busy, onset - 30, onset + fall + 40, True)
        n -= 1


def _plan_spontaneous_arousals(rng, params, asleep, occupied, rows, add) -> None:
    """Spontaneous EEG arousals (3.5-12 s) in sleep preceded by >= 10 s of sleep, away from other events."""
    n_s = asleep.size
    busy = occupied | _busy_mask(rows, n_s, ("arousal", "artefact", "tachycardia", "bradycardia", "desaturation"), margin=25)
    n = int(rng.poisson(params["arousals_per_h"] * asleep.sum() / 3600))
    candidates = np.flatnonzero(asleep & ~busy)
    for _ in range(n * 20):
        if n == 0 or candidates.size == 0:
            break
        start = float(rng.choice(candidates)) + rng.uniform(0, 0.9)
        duration = float(rng.uniform(3.5, 12))
        if not _interval_free(asleep & ~busy, start - 15, start + duration + 10):
            continue
        add("arousal", "spontaneous", start, start + duration)
        _mark(busy, start - 25, start + duration + 25, True)
        n -= 1


def _plan_sighs(rng, stage_s, free, occupied) -> np.ndarray:
    """About three sighs per hour of NREM sleep, at least a minute away from respiratory events.

    A sigh and its post-sigh pause (< 10 s) are normal breathing that a scorer must not count.
    """
    nrem = np.isin(stage_s, NREM_STAGES)
    near_event = ndimage.binary_dilation(occupied, structure=np.ones(121, dtype=bool))
    allowed = nrem & free & ~near_event
    n = int(rng.poisson(3.0 * nrem.sum() / 3600))
    candidates = np.flatnonzero(allowed)
    times: list[float] = []
    for _ in range(n * 20):
        if len(times) == n or candidates.size == 0:
            break
        t = float(rng.choice(candidates))
        if _interval_free(allowed, t - 30, t + 30) and all(abs(t - other) > 120 for other in times):
            times.append(t)
    return np.sort(np.array(times))
