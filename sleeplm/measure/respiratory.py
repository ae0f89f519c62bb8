"""Respiratory events (AASM adult rules): apneas, hypopneas and oxygen desaturations.

Airflow is reduced to a per-second amplitude envelope (RMS over about one breath) and compared
with a pre-event baseline (75th percentile of the previous 2 min). Apneas are scored on the
thermistor (``AF``) and hypopneas on the nasal pressure (``Pressure``) when both exist, as the
AASM recommends; otherwise on whatever airflow exists. Seconds with artefacts in the airflow
channel are never part of an event.

All functions take and return seconds from recording start.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage, signal

from sleeplm.measure.features import BREATH_LIMITS_S
from sleeplm.io.recording import EPOCH_SEC, Recording
from sleeplm.measure.signals import bandpass, get_signal, per_second
from sleeplm.terms import runs

__all__ = ["CANDIDATE_COLUMNS", "breath_period_s", "flow_ratio", "detect_desaturations", "respiratory_candidates",
           "spo2_per_second"]

BASELINE_S = 120
BASELINE_QUANTILE = 0.75
MIN_EVENT_S = 10.0
MAX_EVENT_S = 150.0
APNEA_RATIO = 0.10  # >= 90 % drop
HYPOPNEA_RATIO = 0.70  # >= 30 % drop
# Central: effort below 25 % of its baseline; present again above 40 % (mixed apneas).
EFFORT_ABSENT_RATIO = 0.25
EFFORT_PRESENT_RATIO = 0.40
# A desaturation or arousal belongs to a hypopnea when it follows within these windows (s).
DESAT_NADIR_AFTER_S = 45.0
AROUSAL_AFTER_S = 15.0
DESAT_LOOKBACK_S = 120
DESAT_MIN_S = 10.0
# A level held this long (within 0.5 %) in the upper half of a fall is the level it fell from.
DESAT_PLATEAU_S = 5
# Oximeters report whole percent; stored through an EDF's 16-bit scaling they read back a few
# thousandths off (95 as 94.9998): thresholds on SpO2 allow this much.
SPO2_SCALING_TOLERANCE = 0.05


def breath_period_s(x: np.ndarray, sfreq: float) -> float:
    """The night's typical breath period: the Welch spectral peak within 4-40 breaths/min.

    Examples
    --------
    >>> t = np.arange(0, 300, 1 / 32)                   # 5 min at 32 Hz
    >>> round(breath_period_s(np.sin(2 * np.pi * t / 4.0), 32), 1)   # 15 breaths/min
    4.0
    """
    freqs, psd = signal.welch(x, fs=sfreq, nperseg=min(len(x), int(120 * sfreq)))
    band = (freqs >= 1 / BREATH_LIMITS_S[1]) & (freqs <= 1 / BREATH_LIMITS_S[0])
    if not band.any() or not np.isfinite(psd[band]).any():
        return 4.0
    return float(1 / freqs[band][np.argmax(psd[band])])


def _envelope_ratio(data: np.ndarray, sfreq: float, n_seconds: int, bad: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-second RMS amplitude / pre-event baseline, NaN on bad seconds; and the window used (s).

    The RMS window spans about 1.3 breaths of this night (3-8 s) so that a normal breath
    never looks like a pause.
    """
    x = bandpass(data, sfreq, 0.05, 2.0, order=2)
    window_s = float(np.clip(1.3 * breath_period_s(x, sfreq), 3.0, 8.0))
    mean_square = ndimage.uniform_filter1d(x**2, size=max(int(window_s * sfreq), 1), mode="nearest")
    rms = np.sqrt(per_second(mean_square, sfreq))[:n_seconds]
    rms = np.pad(rms, (0, n_seconds - len(rms)), constant_values=np.nan)
    rms[bad] = np.nan
    baseline = pd.Series(rms).shift(1).rolling(BASELINE_S, min_periods=BASELINE_S // 4).quantile(BASELINE_QUANTILE)
    baseline = baseline.bfill().to_numpy()
    return rms / np.where(baseline > 0, baseline, np.nan), window_s


def flow_ratio(rec: Recording, name: str, bad: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Airflow/effort amplitude ratio to baseline per second for signal `name` (None if missing).

    Examples
    --------
    >>> rec = tiny_recording()
    >>> ratio, period_s = flow_ratio(rec, "AF", np.zeros(rec.n_epochs * 30, dtype=bool))
    >>> ratio.size, 2 < period_s < 8, bool(np.nanmedian(ratio) > 0.7)
    (900, True, True)
    >>> flow_ratio(rec, "Light", np.zeros(900, dtype=bool)) is None
    True
    """
    sig = get_signal(rec, name)
    if sig is None:
        return None
    return _envelope_ratio(np.asarray(sig.data, dtype=float), sig.sfreq, rec.n_epochs * EPOCH_SEC, bad)


def _low_runs(ratio: np.ndarray, threshold: float, window_s: float) -> np.ndarray:
    """Runs where the ratio is below `threshold`, widened by the envelope's smearing, lasting >= 10 s.

    The envelope is a sliding (rectangular) RMS of width w. Over a drop to level r, the
    envelope falls below the threshold T once a share f = (1 - T^2) / (1 - r^2) of the window
    lies inside the drop, so the measured run is shorter than the drop by (2f - 1) w; that is
    given back, half on each side. A pause (r = 0) read at T = 0.1 gives back almost w; read
    at T = 0.7 almost nothing (the run already spans it), so a post-sigh pause of 5-7 s is
    not stretched into a 10-s event.
    """
    low = np.nan_to_num(ratio, nan=np.inf) < threshold
    low = ndimage.binary_closing(low, structure=np.ones(3))  # one-second blips do not split events
    found = runs(low)
    spans = found.astype(float)
    levels = np.array([np.nanmedian(ratio[a:b]) if np.isfinite(ratio[a:b]).any() else 0.0 for a, b in found])
    share = (1 - threshold**2) / (1 - np.clip(levels, 0, threshold) ** 2)
    give_back = (2 * share - 1) * window_s / 2
    spans[:, 0] -= give_back
    spans[:, 1] += give_back
    spans = np.clip(spans, 0, len(ratio))
    length = spans[:, 1] - spans[:, 0]
    return spans[(length >= MIN_EVENT_S) & (length <= MAX_EVENT_S)]


def spo2_per_second(rec: Recording, bad: np.ndarray) -> np.ndarray | None:
    """SpO2 (%) per second, NaN where invalid; None without an SpO2 channel.

    Examples
    --------
    >>> spo2 = spo2_per_second(tiny_recording(), np.zeros(900, dtype=bool))
    >>> spo2.size, bool(85 < np.nanmedian(spo2) <= 100)
    (900, True)
    """
    sig = get_signal(rec, "SpO2")
    if sig is None:
        return None
    n_seconds = rec.n_epochs * EPOCH_SEC
    values = per_second(np.asarray(sig.data, dtype=float), sig.sfreq)
    if sig.sfreq < 1:
        values = np.repeat(values, int(round(1 / sig.sfreq)))
    values = np.pad(values[:n_seconds], (0, max(n_seconds - len(values), 0)), constant_values=np.nan)
    values[bad[: len(values)]] = np.nan
    return values


def _descent_onset(smooth: np.ndarray, first: int, nadir: int, drop: float) -> int:
    """Where the final fall into `nadir` begins (walking back no further than `first`).

    Walking back from the nadir over the fall (reversals of up to 0.5 % allowed), the fall begins
    at the end of the first level held for `DESAT_PLATEAU_S` s in its upper half: the level the
    signal sat at just before, even when it had sat higher a minute or two earlier.
    """
    low, i = smooth[nadir], nadir
    while i > first:
        if smooth[i - 1] < smooth[i] - 0.5:
            break  # lower before: the recovery from an earlier dip
        held = smooth[max(i - DESAT_PLATEAU_S, first) : i + 1]
        if smooth[i] >= low + drop / 2 and held.size > DESAT_PLATEAU_S and np.ptp(held) <= 0.5:
            break
        i -= 1
    return i


def detect_desaturations(spo2: np.ndarray, min_drop_pct: float = 3.0) -> pd.DataFrame:
    """Oxygen desaturations: falls of >= `min_drop_pct` from the preceding peak, lasting >= 10 s.

    Parameters
    ----------
    spo2 : SpO2 (%) per second, NaN where invalid.
    min_drop_pct : 3 for ODI3, 4 for ODI4.

    Returns
    -------
    DataFrame with columns ``start_s`` (fall begins), ``end_s`` (recovered two thirds of the
    drop, or the next fall begins), ``nadir_s``, ``baseline_pct``, ``nadir_pct``, ``drop_pct``.
    A desaturation touching invalid SpO2 is not scored.

    Examples
    --------
    >>> spo2 = np.full(120, 96.0)
    >>> spo2[30:50] = np.linspace(96, 90, 20)                 # a 6-point fall over 20 s ...
    >>> spo2[50:60] = np.linspace(90, 96, 10)                 # ... and the recovery
    >>> detect_desaturations(spo2)[["start_s", "end_s", "nadir_s", "baseline_pct", "nadir_pct", "drop_pct"]]
       start_s  end_s  nadir_s  baseline_pct  nadir_pct  drop_pct
    0     31.0   56.0     49.0          96.0       90.0       6.0
    >>> len(detect_desaturations(spo2, min_drop_pct=8))
    0
    >>> spo2[30:60] = np.r_[np.full(20, 93.0007), np.linspace(93.0007, 96, 10)]   # whole-percent fall, EDF-scaled
    >>> detect_desaturations(spo2)["drop_pct"].tolist()
    [3.0]
    >>> spo2 = np.r_[np.full(20, 97.0), np.full(60, 96.0), 95, 95, 94, 94, 93, 92, 92, 91, 91, 91, 92, 93, 94, 95,
    ...              np.full(20, 96.0)]
    >>> detect_desaturations(spo2)[["start_s", "end_s", "nadir_s", "drop_pct"]]   # wandered from 97 to 96, then fell
       start_s  end_s  nadir_s  drop_pct
    0     79.0   93.0     88.0       6.0
    """
    valid = np.isfinite(spo2)
    columns = ["start_s", "end_s", "nadir_s", "baseline_pct", "nadir_pct", "drop_pct"]
    if valid.sum() < 2:
        return pd.DataFrame(columns=columns)
    t = np.arange(len(spo2))
    filled = np.interp(t, t[valid], spo2[valid])
    smooth = ndimage.median_filter(filled, size=3, mode="nearest")
    minima, _ = signal.find_peaks(-smooth, prominence=1.0)
    rows, after = [], 0
    for nadir in minima:
        lo = max(after, nadir - DESAT_LOOKBACK_S)
        if lo >= nadir:
            continue
        peak = lo + int(np.argmax(smooth[lo : nadir + 1]))
        base, low = smooth[peak], smooth[nadir]
        # To the 0.1 % it is reported in: an oximeter's whole percent stored through an EDF's 16-bit
        # scaling reads back as 96.0 and 93.0007, a 3 % fall that must not become 2.9993 %.
        drop = round(float(base - low), 1)
        if drop < min_drop_pct:
            continue
        # The fall starts where the signal last sat within 0.5 % of the pre-event peak, or later, where
        # the final descent leaves the level it sat at just before (SpO2 that wandered down from its peak).
        start = peak + int(np.flatnonzero(smooth[peak : nadir + 1] >= base - 0.5)[-1])
        start = max(start, _descent_onset(smooth, peak, nadir, drop))
        recovered = np.flatnonzero(
            smooth[nadir : nadir + DESAT_LOOKBACK_S] >= low + 2 / 3 * drop - SPO2_SCALING_TOLERANCE)
        end = nadir + (int(recovered[0]) if recovered.size else min(DESAT_LOOKBACK_S, len(spo2) - 1 - nadir))
        if end - start < DESAT_MIN_S or not valid[start : end + 1].all():
            continue
        rows.append((float(start), float(end), float(nadir), round(base, 1), round(low, 1), drop))
        after = nadir
    return pd.DataFrame(rows, columns=columns)


def _core(values: np.ndarray, start: float, end: float, window_s: float) -> np.ndarray:
    """The finite values over an event's core.

    An event's span was widened by half an envelope window on each side, and inside it the
    envelope still ramps for another half window: one full window is trimmed off each edge
    (leaving at least 2 s).
    """
    trim = int(min(window_s, (end - start - 2) / 2))
    core = values[int(start) + trim : int(np.ceil(end)) - trim]
    return core[np.isfinite(core)]


def _core_median(flow: tuple[np.ndarray, float], start: float, end: float) -> float:
    """Median amplitude ratio over an event's core (NaN when it is all artefact)."""
    core = _core(flow[0], start, end, flow[1])
    return float(np.median(core)) if core.size else np.nan



def _effort_subtype(effort: np.ndarray | None, start: float, end: float, window_s: float) -> tuple[str, str]:
    """(obstructive / central / mixed, the path that set it) from the effort ratio over the apnea.

    Central: effort absent over >= 80 % of the apnea's core (see `_core`). Mixed: effort absent
    (in the smeared envelope: at least one second) in the first half, then back (> 40 % of
    baseline) over the last third. Obstructive otherwise; unclassified without a readable belt.
    """
    core = np.array([]) if effort is None else _core(effort, start, end, window_s)
    if core.size == 0:
        return "unclassified", "no readable effort belt over the apnea: type unclassified"
    absent = float((core < EFFORT_ABSENT_RATIO).mean())
    if absent >= 0.8:
        return "central", (f"effort absent (< {EFFORT_ABSENT_RATIO:.0%} of baseline) over {absent:.0%} of the apnea "
                           "(>= 80 % needed): central")
    span = effort[int(start) : int(np.ceil(end))]
    first_half, last_third = span[: len(span) // 2], span[-max(len(span) // 3, 1) :]
    resumed = float(np.nanmedian(last_third)) if np.isfinite(last_third).any() else np.nan
    if (first_half < EFFORT_ABSENT_RATIO).any() and resumed > EFFORT_PRESENT_RATIO:
        return "mixed", (f"effort absent in the first half, then back at {resumed:.2f} of baseline over the last third "
                         f"(> {EFFORT_PRESENT_RATIO:.2f}): mixed")
    return "obstructive", (f"effort continued (median {float(np.median(core)):.2f} of baseline; absent over only "
                           f"{absent:.0%} of the apnea, < 80 %): obstructive")


def _hypopnea_subtype(effort: np.ndarray | None, start: float, end: float, window_s: float) -> tuple[str, str]:
    """(obstructive when breathing effort holds up while flow falls, central when effort falls with it; the path).

    AASM classifies hypopneas as obstructive by snoring, flow flattening or paradox; here the
    effort envelope stands in: an obstructed airway keeps (or raises) effort against the
    narrowing, a central hypopnea lowers effort and flow together.
    """
    core = np.array([]) if effort is None else _core(effort, start, end, window_s)
    if core.size == 0:
        return "", "no readable effort belt: hypopnea type not set"
    level = float(np.median(core))
    if level >= HYPOPNEA_RATIO:
        return "obstructive", f"effort held at {level:.2f} of baseline (>= {HYPOPNEA_RATIO:.2f}) while flow fell: obstructive"
    return "central", f"effort fell with flow to {level:.2f} of baseline (< {HYPOPNEA_RATIO:.2f}): central"


CANDIDATE_COLUMNS = [
    "candidate_id", "start_s", "end_s", "duration_s", "channel", "apnea_channel", "flow_reduction_pct",
    "flow_peak_drop_pct", "desaturation_pct", "arousal", "arousal_power_ratio", "effort_thx", "effort_abd",
    "apnea_subtype", "apnea_path", "hypopnea_subtype", "hypopnea_path", "quality_flow", "quality_spo2",
]


def _linked_fall(falls: pd.DataFrame, start: float, end: float) -> float | None:
    """The deepest fall that begins after the flow reduction does and reaches its nadir within 45 s of its end.

    A desaturation already under way belongs to the event before (circulation delays it by 10-30 s).
    """
    linked = falls[(falls["start_s"] >= start) & (falls["nadir_s"] <= end + DESAT_NADIR_AFTER_S)]
    return float(linked["drop_pct"].max()) if len(linked) else None


def respiratory_candidates(rec: Recording, bad: dict[str, np.ndarray], desats: pd.DataFrame, arousals: pd.DataFrame,
                           spo2: np.ndarray | None = None) -> pd.DataFrame:
    """Every breathing reduction of >= 10 s, measured once, independent of any scoring rule.

    Candidates: runs of the apnea channel's envelope below 10 % of baseline (plus runs below 70 %
    whose core sits at <= 10 %: noise keeps a short apnea's envelope that low only briefly), and
    runs of the hypopnea channel's envelope below 70 % that overlap none of them (including brief
    dips whose sustained reduction stays under 30 %: the near-misses on flow).
    `sleeplm.measure.rules.score_candidates` holds them against a rule.

    Parameters
    ----------
    rec : the night.
    bad : per-second artefact mask of each airflow channel ("AF", "Pressure"), and of "SpO2",
        "THX", "ABD" when known; masked seconds of an airflow channel are never scored on it.
    desats : all >= 3 % desaturations (`detect_desaturations`).
    arousals : arousals (columns start_s, end_s, and power_ratio when measured).
    spo2 : SpO2 per second (`spo2_per_second`), for the falls below 3 % a near-miss reports, and
        the SpO2 quality; None without SpO2.

    Returns
    -------
    DataFrame with `CANDIDATE_COLUMNS`: candidate_id ("R001"...), start_s, end_s, duration_s,
    channel (airflow channel measured), apnea_channel (the channel apneas are scored on),
    flow_reduction_pct (median over the core), flow_peak_drop_pct (deepest second),
    desaturation_pct (linked fall, NaN without SpO2), arousal (within 15 s of the end),
    arousal_power_ratio, effort_thx / effort_abd (belt envelope over the core / baseline),
    apnea_subtype / apnea_path and hypopnea_subtype / hypopnea_path (the type and why), quality_flow /
    quality_spo2 (share of artefact-free seconds over the event).

    Examples
    --------
    >>> from sleeplm.measure.quality import artefact_segments, bad_seconds
    >>> rec = tiny_recording()
    >>> n = rec.n_epochs * 30
    >>> segments = artefact_segments(rec)
    >>> bad = {name: bad_seconds(segments, [name], n) for name in ("AF", "Pressure", "SpO2", "THX", "ABD")}
    >>> spo2 = spo2_per_second(rec, bad["SpO2"])
    >>> candidates = respiratory_candidates(rec, bad, detect_desaturations(spo2), pd.DataFrame(columns=["start_s", "end_s"]), spo2)
    >>> list(candidates.columns) == CANDIDATE_COLUMNS, bool((candidates["duration_s"] >= 10).all())
    (True, True)
    >>> bool((candidates["flow_reduction_pct"] >= 90).any()), candidates["candidate_id"].iloc[0]
    (True, 'R001')
    """
    n_seconds = rec.n_epochs * EPOCH_SEC
    apnea_channel = "AF" if get_signal(rec, "AF") is not None else "Pressure"
    hypopnea_channel = "Pressure" if get_signal(rec, "Pressure") is not None else "AF"
    apnea_flow = flow_ratio(rec, apnea_channel, bad[apnea_channel])
    if apnea_flow is None:
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    hypo_flow = apnea_flow if hypopnea_channel == apnea_channel else flow_ratio(rec, hypopnea_channel, bad[hypopnea_channel])
    clean = np.zeros(n_seconds, dtype=bool)
    belts = {name: r[0] for name in ("THX", "ABD") if (r := flow_ratio(rec, name, clean)) is not None}
    effort = np.fmax(*belts.values()) if len(belts) == 2 else next(iter(belts.values()), None)
    # SpO2 falls under 3 %: what a near-miss reports as the desaturation it lacked.
    small = detect_desaturations(spo2, min_drop_pct=1.0) if spo2 is not None else desats.iloc[:0]
    small = small[small["drop_pct"] < 3.0]
    power = arousals["power_ratio"] if "power_ratio" in arousals else pd.Series(np.nan, index=arousals.index)

    taken = np.zeros(n_seconds, dtype=bool)
    spans = [(start, end, apnea_flow, apnea_channel) for start, end in _low_runs(apnea_flow[0], APNEA_RATIO, apnea_flow[1])]
    for start, end, *_ in spans:
        taken[int(start) : int(np.ceil(end))] = True
    # Noise and the envelope's smear keep a short apnea's envelope near 5-10 % of baseline only
    # briefly: a >= 30 % drop whose core sits at <= 10 % of baseline is an apnea candidate as well.
    for start, end in _low_runs(apnea_flow[0], HYPOPNEA_RATIO, apnea_flow[1]):
        if not taken[int(start) : int(np.ceil(end))].any() and _core_median(apnea_flow, start, end) <= APNEA_RATIO:
            spans.append((start, end, apnea_flow, apnea_channel))
            taken[int(start) : int(np.ceil(end))] = True
    for start, end in _low_runs(hypo_flow[0], HYPOPNEA_RATIO, hypo_flow[1]):
        if not taken[int(start) : int(np.ceil(end))].any():
            spans.append((start, end, hypo_flow, hypopnea_channel))

    rows = []
    for start, end, flow, channel in sorted(spans, key=lambda s: s[0]):
        a, b = int(start), int(np.ceil(end))
        desat = _linked_fall(desats, start, end)
        if desat is None and spo2 is not None:
            desat = _linked_fall(small, start, end) or 0.0
        woke = (arousals["start_s"] >= start) & (arousals["start_s"] <= end + AROUSAL_AFTER_S)
        window = flow[1]
        seen = flow[0][a:b][np.isfinite(flow[0][a:b])]
        apnea_subtype, apnea_path = _effort_subtype(effort, start, end, window)
        hypopnea_subtype, hypopnea_path = _hypopnea_subtype(effort, start, end, window)
        levels = {name: _core(ratio, start, end, window) for name, ratio in belts.items()}
        quality_spo2 = np.nan
        if spo2 is not None:
            quality_spo2 = float(np.isfinite(spo2[a : min(b + int(DESAT_NADIR_AFTER_S), n_seconds)]).mean())
        rows.append({
            "start_s": float(start), "end_s": float(end), "duration_s": round(float(end - start), 1), "channel": channel,
            "apnea_channel": channel == apnea_channel,
            "flow_reduction_pct": round(100 * (1 - _core_median(flow, start, end)), 1),
            "flow_peak_drop_pct": round(100 * (1 - float(seen.min())), 1) if seen.size else np.nan,
            "desaturation_pct": np.nan if desat is None else round(desat, 1),
            "arousal": bool(woke.any()), "arousal_power_ratio": float(power[woke].max()) if woke.any() else np.nan,
            "effort_thx": round(float(np.median(levels["THX"])), 2) if levels.get("THX", np.array([])).size else np.nan,
            "effort_abd": round(float(np.median(levels["ABD"])), 2) if levels.get("ABD", np.array([])).size else np.nan,
            "apnea_subtype": apnea_subtype, "apnea_path": apnea_path,
            "hypopnea_subtype": hypopnea_subtype, "hypopnea_path": hypopnea_path,
            "quality_flow": round(1 - float(bad[channel][a:b].mean()) if b > a else 1.0, 2),
            "quality_spo2": quality_spo2,
        })
    table = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS[1:])
    table.insert(0, "candidate_id", [f"R{i + 1:03d}" for i in range(len(table))])
    return table
