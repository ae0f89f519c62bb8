"""Per-epoch measurements in SleepLM's caption domains: brain, cardiac, respiratory, position/muscle.

One tidy table per night (`epoch_features`): one row per 30-s epoch, columns prefixed by domain
(``brain_``, ``cardiac_``, ``resp_``, ``posmus_``) with units in their names. A column whose
channel is missing is NaN and `missing_reasons` says why; it is never filled with zeros.

Examples
--------
>>> from sleeplm.measure.features import epoch_features, missing_reasons
>>> table = epoch_features(tiny_recording())        # tiny_recording(): a 15-min night (conftest.py)
>>> table.shape[0], missing_reasons(tiny_recording())
(30, {})
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd
from scipy import ndimage, signal

from sleeplm.measure.quality import artefact_segments, bad_seconds
from sleeplm.io.recording import EPOCH_SEC, POSITION_CODES, Recording
from sleeplm.measure.signals import bandpass, epoch_matrix, get_signal, per_second, position_codes, unusable_reason
from sleeplm.terms import runs

__all__ = ["EEG_BANDS", "epoch_features", "missing_reasons", "epoch_positions", "heart_beats", "readable_beat_epochs", "heart_rate_per_second", "breaths"]

# AASM/YASA conventional EEG bands (Hz); relative power is over 0.5-30 Hz.
EEG_BANDS = {"delta": (0.5, 4), "theta": (4, 8), "alpha": (8, 12), "sigma": (12, 16), "beta": (16, 30)}
EEG_TOTAL = (0.5, 30)
# Eye movements: slow rolling movements below 0.6 Hz, rapid saccades in 0.6-5 Hz.
EOG_SLOW = (0.1, 0.6)
EOG_RAPID = (0.6, 5)
SPINDLE_BAND = (11, 16)
SPINDLE_S = (0.5, 2.0)
KCOMPLEX_UV = 75.0  # AASM: K-complex amplitude is conventionally >= 75 uV peak to peak
KCOMPLEX_RISE_S = 0.8
KCOMPLEX_ISOLATION_S = 3.0
# Plausible beat-to-beat intervals (30-200 bpm) and breath intervals (4-40 breaths/min).
RR_LIMITS_S = (0.3, 2.0)
BREATH_LIMITS_S = (1.5, 15.0)
# Beat-template consistency (after Orphanidou et al. 2015, IEEE JBHI 19:832): in each 30-s epoch the
# beats' +-0.25 s band-passed waveforms are correlated with their mean (the epoch's beat template).
# Heartbeats repeat one QRS shape (median correlation ~0.99 on clean ECG); peaks picked from noise
# do not (~0.5). An epoch whose median correlation is below the threshold has no readable beats.
BEAT_TEMPLATE_HALF_S = 0.25
BEAT_TEMPLATE_MIN_CORR = 0.7
# Seconds farther than this from a readable beat get no interpolated heart rate.
HR_MAX_GAP_S = 5.0
ECG_UNREADABLE = ("the ECG shows no consistent heartbeat (beat-template correlation below "
                  f"{BEAT_TEMPLATE_MIN_CORR:g}: noise or a disconnected lead)")
# Airflow amplitude baseline: median of the previous 5 min of epochs.
FLOW_BASELINE_EPOCHS = 10
EMG_BURST_WINDOW_S = 0.25
EMG_BURST_FACTOR = 4.0

DOMAIN_COLUMNS = {
    "brain": [f"brain_{ch}_{band}_rel" for ch in ("c3", "c4") for band in EEG_BANDS]
    + ["brain_eeg_power_uv2", "brain_spindle_count", "brain_kcomplex_count", "brain_eog_slow_power_uv2",
       "brain_eog_rapid_power_uv2", "brain_eog_rapid_ratio"],
    "cardiac": ["cardiac_hr_mean_bpm", "cardiac_hr_min_bpm", "cardiac_hr_max_bpm", "cardiac_rmssd_ms",
                "cardiac_hr_slope_bpm_per_min", "cardiac_spo2_mean_pct", "cardiac_spo2_min_pct"],
    "resp": ["resp_thx_rate_per_min", "resp_abd_rate_per_min", "resp_breath_interval_cv",
             "resp_flow_amplitude_ratio", "resp_flow_flattening", "resp_thx_abd_phase_deg"],
    "posmus": ["posmus_emg_median_freq_hz", "posmus_emg_rms_uv", "posmus_emg_burst_count",
               "posmus_position_code", "posmus_position"],
}


# ---- brain ---------------------------------------------------------------------------------
def _band_power(matrix: np.ndarray, sfreq: float, bands: dict, nperseg_s: float) -> dict[str, np.ndarray]:
    """Absolute power (uV^2) per epoch in each band, from Welch spectra of the rows of `matrix`."""
    freqs, psd = signal.welch(matrix, fs=sfreq, nperseg=int(nperseg_s * sfreq), axis=-1)
    df = freqs[1] - freqs[0]
    return {name: psd[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) * df for name, (lo, hi) in bands.items()}


def _spindle_count(data: np.ndarray, sfreq: float, n_epochs: int) -> np.ndarray:
    """Sigma-band bursts of 0.5-2 s above 3x the night's median sigma envelope, counted per epoch."""
    envelope = np.abs(signal.hilbert(bandpass(data, sfreq, *SPINDLE_BAND)))
    smooth = np.convolve(envelope, np.ones(int(0.2 * sfreq)) / int(0.2 * sfreq), mode="same")
    above = runs(smooth > 3 * np.median(smooth))
    length_s = (above[:, 1] - above[:, 0]) / sfreq
    keep = above[(length_s >= SPINDLE_S[0]) & (length_s <= SPINDLE_S[1]), 0]
    epochs = (keep / sfreq // EPOCH_SEC).astype(int)
    return np.bincount(epochs[epochs < n_epochs], minlength=n_epochs).astype(float)


def _kcomplex_count(data: np.ndarray, sfreq: float, n_epochs: int) -> np.ndarray:
    """Isolated large biphasic waves per epoch: a 0.5-2.5 Hz trough followed within 0.8 s by a
    peak >= 75 uV higher, with no other such wave within 3 s (which sets K-complexes apart from
    the trains of slow waves of N3)."""
    x = bandpass(data, sfreq, 0.5, 2.5, order=2)
    troughs, _ = signal.find_peaks(-x, prominence=KCOMPLEX_UV / 2, distance=int(0.5 * sfreq))
    troughs = troughs[troughs + int(KCOMPLEX_RISE_S * sfreq) < len(x)]
    after = troughs[:, None] + np.arange(1, int(KCOMPLEX_RISE_S * sfreq) + 1)
    waves = troughs[x[after].max(axis=1) - x[troughs] >= KCOMPLEX_UV]
    gaps = np.diff(waves) / sfreq
    isolated = np.ones(len(waves), dtype=bool)
    if len(waves) > 1:
        isolated[1:] &= gaps >= KCOMPLEX_ISOLATION_S
        isolated[:-1] &= gaps >= KCOMPLEX_ISOLATION_S
    epochs = (waves[isolated] / sfreq // EPOCH_SEC).astype(int)
    return np.bincount(epochs[epochs < n_epochs], minlength=n_epochs).astype(float)


def _first_finite(rows: list[np.ndarray]) -> np.ndarray:
    """Per position, the first non-NaN value among `rows` (NaN when all are)."""
    result = rows[0].copy()
    for row in rows[1:]:
        result = np.where(np.isnan(result), row, result)
    return result


def _brain(rec: Recording, n: int, dead: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    powers, spindles, kcomplexes = [], [], []
    for ch, name in (("c3", "EEG_C3_A2"), ("c4", "EEG_C4_A1")):
        sig = get_signal(rec, name)
        if sig is None:
            continue
        matrix = epoch_matrix(sig.data, sig.sfreq, n)
        bands = _band_power(np.nan_to_num(matrix), sig.sfreq, {**EEG_BANDS, "total": EEG_TOTAL}, 4.0)
        total = np.where(bands["total"] > 0, bands["total"], np.nan)
        for band in EEG_BANDS:
            out[f"brain_{ch}_{band}_rel"] = bands[band] / total
        alive = ~dead.get(name, np.zeros(n, dtype=bool))
        powers.append(np.where(alive, bands["total"], np.nan))
        spindles.append(np.where(alive, _spindle_count(sig.data, sig.sfreq, n), np.nan))
        kcomplexes.append(np.where(alive, _kcomplex_count(sig.data, sig.sfreq, n), np.nan))
    if powers:
        with _quiet():
            out["brain_eeg_power_uv2"] = np.nanmean(powers, axis=0)
        # One working central derivation is enough for graphoelement counts: the first, epoch by epoch.
        out["brain_spindle_count"] = _first_finite(spindles)
        out["brain_kcomplex_count"] = _first_finite(kcomplexes)
    left, right = get_signal(rec, "EOG_Left"), get_signal(rec, "EOG_Right")
    if left is not None or right is not None:
        # Eye movements are anti-phase in the two EOG leads; their difference cancels shared EEG.
        if left is not None and right is not None and left.sfreq == right.sfreq:
            eog, sfreq = left.data - right.data, left.sfreq
        else:
            eog, sfreq = (left.data, left.sfreq) if left is not None else (right.data, right.sfreq)
        bands = _band_power(np.nan_to_num(epoch_matrix(eog, sfreq, n)), sfreq, {"slow": EOG_SLOW, "rapid": EOG_RAPID}, 10.0)
        out["brain_eog_slow_power_uv2"] = bands["slow"]
        out["brain_eog_rapid_power_uv2"] = bands["rapid"]
        both = bands["slow"] + bands["rapid"]
        out["brain_eog_rapid_ratio"] = bands["rapid"] / np.where(both > 0, both, np.nan)
    return out


# ---- cardiac -------------------------------------------------------------------------------
def heart_beats(rec: Recording) -> tuple[np.ndarray, np.ndarray] | None:
    """R-peak times (s) and the RR interval (s) ending at each, from the ECG; None without ECG.

    The ECG is band-passed 5-25 Hz, its dominant polarity chosen, and peaks taller than 40% of
    the local (10-s) maximum found with `scipy.signal.find_peaks`. Intervals outside 0.3-2 s or
    more than 30% off the running median (missed or extra beats) are dropped (NaN), and so are all
    intervals in 30-s epochs whose beats do not repeat one waveform (`readable_beat_epochs`):
    peaks picked from noise give no heart rate.

    Examples
    --------
    >>> peaks_s, rr_s = heart_beats(tiny_recording())
    >>> peaks_s.size == rr_s.size, bool(np.all(np.diff(peaks_s) > 0))
    (True, True)
    >>> bpm = 60 / float(np.nanmedian(rr_s))
    >>> 50 < bpm < 90
    True
    """
    sig = get_signal(rec, "ECG")
    if sig is None:
        return None
    fs = sig.sfreq
    x = bandpass(sig.data, fs, 5, 25)
    if np.percentile(-x, 99.5) > np.percentile(x, 99.5):
        x = -x
    window = int(10 * fs)
    n_win = max(len(x) // window, 1)
    local_max = np.maximum.reduceat(x, np.arange(0, n_win * window, window))
    height = np.repeat(0.4 * local_max, window)
    height = np.concatenate([height, np.full(max(len(x) - len(height), 0), height[-1])])[: len(x)]
    peaks, _ = signal.find_peaks(x, height=height, distance=int(RR_LIMITS_S[0] * fs))
    times = peaks / fs
    rr = np.diff(times, prepend=np.nan)
    running = pd.Series(rr).rolling(9, center=True, min_periods=3).median().to_numpy()
    bad = (rr < RR_LIMITS_S[0]) | (rr > RR_LIMITS_S[1]) | (np.abs(rr - running) > 0.3 * running)
    readable = readable_beat_epochs(x, peaks, fs)
    rr[bad | ~readable[(times // EPOCH_SEC).astype(int)]] = np.nan
    return times, rr


def readable_beat_epochs(x: np.ndarray, peaks: np.ndarray, sfreq: float) -> np.ndarray:
    """Per 30-s epoch of `x`: whether the detected `peaks` are heartbeats (one repeated waveform).

    Each beat's +-`BEAT_TEMPLATE_HALF_S` waveform is correlated with the epoch's mean beat; the
    epoch is readable when the median correlation reaches `BEAT_TEMPLATE_MIN_CORR` (3 beats at least).

    Examples
    --------
    >>> fs, rng = 100.0, np.random.default_rng(0)
    >>> beat = np.exp(-0.5 * ((np.arange(-25, 26) / fs) / 0.01) ** 2)        # a narrow QRS-like peak
    >>> x = rng.normal(0, 0.05, 6000)
    >>> peaks = np.arange(50, 3000, 90)                                       # 30 s of beats, then noise
    >>> for p in peaks:
    ...     x[p - 25: p + 26] += beat
    >>> noise_peaks = signal.find_peaks(x[3000:], distance=30)[0] + 3000
    >>> readable_beat_epochs(x, np.concatenate([peaks, noise_peaks]), fs).tolist()
    [True, False]
    """
    n_epochs = max(int(np.ceil(len(x) / (sfreq * EPOCH_SEC))), 1)
    half = int(round(BEAT_TEMPLATE_HALF_S * sfreq))
    peaks = peaks[(peaks >= half) & (peaks < len(x) - half)]
    readable = np.zeros(n_epochs, dtype=bool)
    if peaks.size == 0:
        return readable
    beats = x[peaks[:, None] + np.arange(-half, half + 1)]
    beats = beats - beats.mean(axis=1, keepdims=True)
    epoch = (peaks / sfreq // EPOCH_SEC).astype(int)
    for e in np.unique(epoch):
        group = beats[epoch == e]
        if len(group) < 3:
            continue
        template = group.mean(axis=0)
        template = template - template.mean()
        norm = np.linalg.norm(group, axis=1) * np.linalg.norm(template)
        corr = group @ template / np.where(norm > 0, norm, np.inf)
        readable[e] = np.median(corr) >= BEAT_TEMPLATE_MIN_CORR
    return readable


def heart_rate_per_second(rec: Recording) -> np.ndarray | None:
    """Heart rate (bpm) for every second of the night: from R-peaks, else the HR channel; None without either.

    Examples
    --------
    >>> hr = heart_rate_per_second(tiny_recording())
    >>> hr.size, bool(50 < np.nanmedian(hr) < 90)         # one value per second of the 15-min night
    (900, True)
    """
    n_seconds = rec.n_epochs * EPOCH_SEC
    beats = heart_beats(rec)
    if beats is not None:
        times, rr = beats
        ok = np.isfinite(rr)
        if ok.sum() >= 2:
            seconds = np.arange(n_seconds) + 0.5
            hr = np.interp(seconds, times[ok], 60.0 / rr[ok], left=np.nan, right=np.nan)
            # no heart rate is made up across a stretch without readable beats (noise, lead off)
            beat_times = times[ok]
            right = np.clip(np.searchsorted(beat_times, seconds), 1, beat_times.size - 1)
            nearest = np.minimum(np.abs(beat_times[right] - seconds), np.abs(beat_times[right - 1] - seconds))
            return np.where(nearest <= HR_MAX_GAP_S, hr, np.nan)
    hr = get_signal(rec, "HR")
    if hr is not None:
        values = per_second(hr.data, hr.sfreq)
        values = np.where((values >= 20) & (values <= 250), values, np.nan)
        return np.pad(values[:n_seconds], (0, max(n_seconds - len(values), 0)), constant_values=np.nan)
    return None


def _cardiac(rec: Recording, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    beats = heart_beats(rec)
    if beats is not None and np.isfinite(beats[1]).any():  # else no readable beat: the HR channel, if any
        times, rr = beats
        table = pd.DataFrame({"epoch": (times // EPOCH_SEC).astype(int), "hr": 60.0 / rr, "rr_ms": rr * 1000,
                              "t_min": times / 60})
        table["succ"] = table["rr_ms"].diff() ** 2
        table = table[table["epoch"] < n]
        grouped = table.dropna(subset=["hr"]).groupby("epoch")
        index = pd.RangeIndex(n)
        out["cardiac_hr_mean_bpm"] = grouped["hr"].mean().reindex(index).to_numpy()
        out["cardiac_hr_min_bpm"] = grouped["hr"].min().reindex(index).to_numpy()
        out["cardiac_hr_max_bpm"] = grouped["hr"].max().reindex(index).to_numpy()
        out["cardiac_rmssd_ms"] = np.sqrt(table.dropna(subset=["succ"]).groupby("epoch")["succ"].mean()).reindex(index).to_numpy()
        slope = grouped.apply(lambda g: np.polyfit(g["t_min"], g["hr"], 1)[0] if len(g) >= 5 else np.nan)
        out["cardiac_hr_slope_bpm_per_min"] = slope.reindex(index).to_numpy(dtype=float)
    else:
        hr = heart_rate_per_second(rec)
        if hr is not None:
            matrix = epoch_matrix(hr, 1.0, n)
            with _quiet():
                out["cardiac_hr_mean_bpm"] = np.nanmean(matrix, axis=1)
                out["cardiac_hr_min_bpm"] = np.nanmin(matrix, axis=1)
                out["cardiac_hr_max_bpm"] = np.nanmax(matrix, axis=1)
    spo2 = get_signal(rec, "SpO2")
    if spo2 is not None:
        matrix = epoch_matrix(spo2.data, spo2.sfreq, n)
        matrix = np.where((matrix >= 50) & (matrix <= 100), matrix, np.nan)  # dropouts are not saturations
        with _quiet():
            out["cardiac_spo2_mean_pct"] = np.nanmean(matrix, axis=1)
            out["cardiac_spo2_min_pct"] = np.nanmin(matrix, axis=1)
    return out


# ---- respiratory ---------------------------------------------------------------------------
def breaths(data: np.ndarray, sfreq: float) -> np.ndarray:
    """Sample indices of breath peaks in an effort or flow signal (band-pass 0.1-1 Hz, find_peaks).

    Examples
    --------
    >>> t = np.arange(0, 60, 1 / 32)                        # one minute of effort at 32 Hz
    >>> len(breaths(np.sin(2 * np.pi * t / 4.0), 32))       # a breath every 4 s
    15
    """
    x = bandpass(data, sfreq, 0.1, 1.0, order=2)
    # A breath rises at least 0.4 x the local (1-min) RMS: a sinusoid's peak-to-trough is 2.8 x its RMS.
    rms = np.sqrt(ndimage.uniform_filter1d(x**2, int(60 * sfreq), mode="nearest"))
    peaks, _ = signal.find_peaks(x, distance=int(BREATH_LIMITS_S[0] * sfreq), prominence=0.4 * rms)
    return peaks


def _breath_stats(data: np.ndarray, sfreq: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Breathing rate (/min, from the median breath interval) and breath-interval CV per epoch."""
    peaks = breaths(data, sfreq)
    intervals = np.diff(peaks) / sfreq
    ok = (intervals >= BREATH_LIMITS_S[0]) & (intervals <= BREATH_LIMITS_S[1])
    table = pd.DataFrame({"epoch": (peaks[1:][ok] / sfreq // EPOCH_SEC).astype(int), "interval": intervals[ok]})
    grouped = table[table["epoch"] < n].groupby("epoch")["interval"]
    index = pd.RangeIndex(n)
    rate = (60.0 / grouped.median()).reindex(index).to_numpy()
    cv = (grouped.std() / grouped.mean()).reindex(index).to_numpy()
    return rate, cv


def _resp(rec: Recording, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    cvs = []
    effort = {}
    for short, name in (("thx", "THX"), ("abd", "ABD")):
        sig = get_signal(rec, name)
        if sig is None:
            continue
        out[f"resp_{short}_rate_per_min"], cv = _breath_stats(sig.data, sig.sfreq, n)
        cvs.append(cv)
        effort[short] = sig
    if cvs:
        with _quiet():
            out["resp_breath_interval_cv"] = np.nanmean(cvs, axis=0)
    flow = get_signal(rec, "Pressure") or get_signal(rec, "AF")
    if flow is not None:
        x = epoch_matrix(bandpass(flow.data, flow.sfreq, 0.05, 2.0, order=2), flow.sfreq, n)
        amplitude = np.percentile(x, 95, axis=1) - np.percentile(x, 5, axis=1)
        baseline = pd.Series(amplitude).shift(1).rolling(FLOW_BASELINE_EPOCHS, min_periods=1).median().bfill().to_numpy()
        out["resp_flow_amplitude_ratio"] = amplitude / np.where(baseline > 0, baseline, np.nan)
        # Flattening: share of the positive half-waves spent above 80% of the epoch's peak flow
        # (a sinusoid gives ~0.4, a flow-limited plateau approaches 1).
        top = np.percentile(x, 98, axis=1, keepdims=True)
        positive = (x > 0).sum(axis=1)
        out["resp_flow_flattening"] = (x > 0.8 * top).sum(axis=1) / np.where(positive > 0, positive, np.nan)
    if len(effort) == 2 and effort["thx"].sfreq == effort["abd"].sfreq:
        fs = effort["thx"].sfreq
        a = signal.hilbert(bandpass(effort["thx"].data, fs, 0.1, 1.0, order=2))
        b = signal.hilbert(bandpass(effort["abd"].data, fs, 0.1, 1.0, order=2))
        unit = epoch_matrix(a * np.conj(b) / np.maximum(np.abs(a * b), 1e-12), fs, n)
        out["resp_thx_abd_phase_deg"] = np.degrees(np.abs(np.angle(np.nanmean(unit, axis=1))))
    return out


# ---- position and muscle -------------------------------------------------------------------
def _posmus(rec: Recording, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    emg = get_signal(rec, "EMG_Chin")
    if emg is not None:
        fs = emg.sfreq
        x = bandpass(emg.data, fs, 10, None)
        freqs, psd = signal.welch(np.nan_to_num(epoch_matrix(x, fs, n)), fs=fs, nperseg=int(2 * fs), axis=-1)
        band = freqs >= 10
        cumulative = np.cumsum(psd[:, band], axis=1)
        half = cumulative[:, -1:] / 2
        out["posmus_emg_median_freq_hz"] = freqs[band][np.argmax(cumulative >= half, axis=1)]
        out["posmus_emg_rms_uv"] = np.sqrt(np.nanmean(epoch_matrix(x, fs, n) ** 2, axis=1))
        win = int(EMG_BURST_WINDOW_S * fs)
        window_rms = np.sqrt(np.mean(x[: len(x) // win * win].reshape(-1, win) ** 2, axis=1))
        bursts = runs(window_rms > EMG_BURST_FACTOR * np.median(window_rms))[:, 0]
        epochs = (bursts * EMG_BURST_WINDOW_S // EPOCH_SEC).astype(int)
        out["posmus_emg_burst_count"] = np.bincount(epochs[epochs < n], minlength=n).astype(float)
    mode = epoch_positions(rec)
    if mode is not None:
        out["posmus_position_code"] = mode.astype(float)
        out["posmus_position"] = np.array([POSITION_CODES[int(c)] for c in mode], dtype=object)
    return out


def epoch_positions(rec: Recording) -> np.ndarray | None:
    """Majority body-position code (SleepLM codes, -1 unknown) of each epoch; None without a position channel.

    Examples
    --------
    >>> positions = epoch_positions(tiny_recording())
    >>> positions.size, int(positions[0])                   # SleepLM code 2 = supine
    (30, 2)
    """
    positions = position_codes(rec)
    if positions is None:
        return None
    codes, fs = positions
    matrix = epoch_matrix(codes, fs, rec.n_epochs)
    known = sorted(POSITION_CODES)
    counts = np.stack([(matrix == c).sum(axis=1) for c in known], axis=1)
    return np.array(known)[np.argmax(counts, axis=1)]


@contextmanager
def _quiet():
    """Silence numpy's all-NaN warnings where an all-NaN epoch legitimately gives NaN."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def epoch_features(rec: Recording, artefacts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Measure every epoch of the night in the four signal domains.

    Parameters
    ----------
    rec : a loaded `Recording` (physical-unit `rec.signals` are used, not the z-scored epochs).
    artefacts : `sleeplm.measure.quality.artefact_segments` of the night (computed when None): an epoch
        where every channel a column rests on is flat or clipped for over half its length is NaN
        in that column (a sensor that fell off measures nothing, not zero spindles or 0 % alpha).

    Returns
    -------
    DataFrame indexed by epoch (0..N-1), one column per measure (see `DOMAIN_COLUMNS`):
    ``brain_*`` (relative band power 0-1, EEG power uV^2, spindle and K-complex counts, EOG slow/rapid
    eye-movement power uV^2), ``cardiac_*`` (HR bpm, RMSSD ms, HR slope bpm/min, SpO2 %),
    ``resp_*`` (breathing rate /min, breath-interval CV, flow amplitude / 5-min baseline,
    flattening 0-1, thoracic-abdominal phase degrees: 0 in phase, 180 paradoxical),
    ``posmus_*`` (EMG median frequency Hz, RMS uV, burst count, majority body position).
    Columns of missing channels are NaN; `missing_reasons` explains them.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> table = epoch_features(rec)
    >>> len(table), all(c in table.columns for columns in DOMAIN_COLUMNS.values() for c in columns)
    (30, True)
    >>> bool(table["cardiac_hr_mean_bpm"].between(40, 120).all()), bool(table["brain_c3_delta_rel"].between(0, 1).all())
    (True, True)
    """
    n = rec.n_epochs
    dead = _dead_epochs(rec, artefacts)
    values = _brain(rec, n, dead)
    for part in (_cardiac, _resp, _posmus):
        values.update(part(rec, n))
    columns = [c for cols in DOMAIN_COLUMNS.values() for c in cols]
    table = pd.DataFrame(index=pd.RangeIndex(n, name="epoch"), columns=columns, dtype=float)
    table["posmus_position"] = table["posmus_position"].astype(object)
    for name, column in values.items():
        table[name] = column
    for column in columns:
        sources = [name for name in _sources(column) if get_signal(rec, name) is not None]
        if sources and all(name in dead for name in sources):
            table.loc[np.logical_and.reduce([dead[name] for name in sources]), column] = np.nan
    return table


_NEEDS = {
    "brain_c3_": ("EEG_C3_A2",), "brain_c4_": ("EEG_C4_A1",), "brain_eeg_": ("EEG_C3_A2", "EEG_C4_A1"),
    "brain_spindle": ("EEG_C3_A2", "EEG_C4_A1"), "brain_kcomplex": ("EEG_C3_A2", "EEG_C4_A1"),
    "brain_eog": ("EOG_Left", "EOG_Right"),
    "cardiac_hr_mean": ("ECG", "HR"), "cardiac_hr_min": ("ECG", "HR"), "cardiac_hr_max": ("ECG", "HR"),
    "cardiac_rmssd": ("ECG",), "cardiac_hr_slope": ("ECG",), "cardiac_spo2": ("SpO2",),
    "resp_thx": ("THX",), "resp_abd_": ("ABD",), "resp_breath": ("THX", "ABD"), "resp_flow": ("AF", "Pressure"),
    "resp_thx_abd": ("THX+ABD",), "posmus_emg": ("EMG_Chin",), "posmus_position": ("POS",),
}
# An epoch whose channel is flat or clipped for over half its length is not measured on it.
DEAD_EPOCH_SHARE = 0.5


def _needs(column: str) -> tuple[str, ...]:
    """The channels a feature column is measured from (any one suffices; "A+B" needs both)."""
    return next(v for k, v in sorted(_NEEDS.items(), key=lambda kv: -len(kv[0])) if column.startswith(k))


def _sources(column: str) -> list[str]:
    return [name for need in _needs(column) for name in need.split("+")]


def _dead_epochs(rec: Recording, artefacts: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """Per waveform channel: epochs flat or clipped for over half their length (only channels with any)."""
    if artefacts is None:
        artefacts = artefact_segments(rec)
    dead_signal = artefacts[artefacts["problem"].isin(["flat", "clipped"])]
    n = rec.n_epochs
    dead = {}
    for name in set(dead_signal["channel"]):
        share = bad_seconds(dead_signal, (name,), n * EPOCH_SEC).reshape(n, EPOCH_SEC).mean(axis=1)
        dead[name] = share > DEAD_EPOCH_SHARE
    return dead


def missing_reasons(rec: Recording, artefacts: pd.DataFrame | None = None) -> dict[str, str]:
    """Why each feature column that cannot be measured is NaN, e.g. ``{"cardiac_rmssd_ms": "no ECG channel ..."}``.

    A column is listed when its channels are missing, or (given `artefacts`) flat or clipped
    in more than half the epochs; columns that can be measured are absent from the dict.

    Examples
    --------
    >>> missing_reasons(tiny_recording())                   # every channel is there
    {}
    >>> from dataclasses import replace
    >>> rec = tiny_recording()
    >>> no_ecg = replace(rec, signals={k: v for k, v in rec.signals.items() if k not in ("ECG", "HR")})
    >>> missing = missing_reasons(no_ecg)
    >>> missing["cardiac_rmssd_ms"], missing["cardiac_hr_mean_bpm"]
    ('no ECG signal in this recording', 'no ECG signal in this recording; no HR signal in this recording')
    """
    def has(name: str) -> bool:
        if name == "THX+ABD":
            return get_signal(rec, "THX") is not None and get_signal(rec, "ABD") is not None
        if name == "POS":
            return position_codes(rec) is not None
        return get_signal(rec, name) is not None

    dead = {} if artefacts is None else _dead_epochs(rec, artefacts)
    reasons = {}
    for column in (c for cols in DOMAIN_COLUMNS.values() for c in cols):
        needs = _needs(column)
        if not any(has(name) for name in needs):
            names = [n for name in needs for n in name.split("+")]
            reasons[column] = "; ".join(unusable_reason(rec, n) for n in names if not has(n))
            continue
        present = [name for name in _sources(column) if get_signal(rec, name) is not None]
        if present and all(name in dead and dead[name].mean() > DEAD_EPOCH_SHARE for name in present):
            share = np.logical_and.reduce([dead[name] for name in present]).mean()
            reasons[column] = (f"{' and '.join(present)} flat or clipped in {share:.0%} of the epochs "
                               "(sensor off?); those epochs are not measured")
    return reasons
