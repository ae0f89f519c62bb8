"""Small signal helpers shared by the measurements: epoch matrices, filters, rolling windows.

Everything works on whole nights at once (numpy/scipy, vectorised across epochs) so that an
8-h night measures in seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from sleeplm.errors import MeasurementError
from sleeplm.io.recording import EPOCH_SEC, POS_INDEX, SFREQ, Recording, Signal
from sleeplm.terms import SLEEP_STAGES

__all__ = ["MeasurementError", "MIN_SFREQ", "get_signal", "unusable_reason", "epoch_matrix", "bandpass", "per_second", "position_codes", "sleep_mask_seconds"]


# Slowest rate at which each signal still carries what is measured from it: EEG up to 25 Hz
# (a 50-Hz EEG is staged after resampling, see `sleeplm.measure.staging`), chin EMG above 10 Hz,
# the QRS complex at 5-25 Hz, breaths below 0.5 Hz (airflow and effort at any rate >= 1 Hz).
# Some files store envelopes instead (e.g. a 1-Hz EMG RMS): those are not measured as raw signals.
MIN_SFREQ = {"EEG_C3_A2": 50.0, "EEG_C4_A1": 50.0, "EOG_Left": 10.0, "EOG_Right": 10.0, "EMG_Chin": 50.0,
             "ECG": 50.0, "AF": 1.0, "Pressure": 1.0, "THX": 1.0, "ABD": 1.0}


def get_signal(rec: Recording, name: str) -> Signal | None:
    """The physical-unit signal `name`, or None when the recording lacks it, it is empty, or it is
    sampled below `MIN_SFREQ` (see `unusable_reason`).

    Examples
    --------
    >>> rec = tiny_recording()
    >>> eeg = get_signal(rec, "EEG_C3_A2")
    >>> eeg.sfreq, eeg.unit, eeg.source, eeg.data.size == rec.n_epochs * 30 * 128
    (128.0, 'uV', 'C3-M2', True)
    >>> get_signal(rec, "Light") is None          # this night has no light sensor
    True
    """
    sig = rec.signals.get(name)
    if sig is None or len(sig.data) == 0 or sig.sfreq < MIN_SFREQ.get(name, 0.0):
        return None
    return sig


def unusable_reason(rec: Recording, name: str) -> str:
    """Why `get_signal(rec, name)` is None, in words (and that it is usable, when it is not None).

    Examples
    --------
    >>> rec = tiny_recording()
    >>> unusable_reason(rec, "Light")
    'no Light signal in this recording'
    >>> unusable_reason(rec, "EEG_C3_A2")
    'the EEG_C3_A2 signal is usable (128 Hz)'
    """
    sig = rec.signals.get(name)
    flagged = [info for info in (*rec.channels, *rec.extra_channels) if info.canonical == name and info.source and not info.present]
    if sig is None and flagged:
        return f"the {name} channel failed the preflight ({'; '.join(flagged[0].warnings) or 'unusable'})"
    if sig is None or len(sig.data) == 0:
        return f"no {name} signal in this recording"
    if sig.sfreq >= MIN_SFREQ.get(name, 0.0):
        return f"the {name} signal is usable ({sig.sfreq:g} Hz)"
    return f"{name} is sampled at {sig.sfreq:g} Hz, too slow to measure (needs >= {MIN_SFREQ[name]:g} Hz)"


def epoch_matrix(data: np.ndarray, sfreq: float, n_epochs: int) -> np.ndarray:
    """Reshape a night-long signal into ``[n_epochs, samples_per_epoch]`` (padding the tail with NaN).

    Examples
    --------
    >>> m = epoch_matrix(np.arange(70.0), sfreq=1.0, n_epochs=3)    # 70 s: the last epoch is padded
    >>> m.shape, m[1, 0], int(np.isnan(m[2]).sum())
    ((3, 30), np.float64(30.0), 20)
    """
    per_epoch = int(round(sfreq * EPOCH_SEC))
    needed = n_epochs * per_epoch
    data = np.asarray(data)
    data = data.astype(np.result_type(data.dtype, float), copy=False)  # complex (analytic) signals stay complex
    if len(data) < needed:
        data = np.concatenate([data, np.full(needed - len(data), np.nan)])
    return data[:needed].reshape(n_epochs, per_epoch)


def bandpass(data: np.ndarray, sfreq: float, low: float | None, high: float | None, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass (or low/high-pass when one edge is None), along the last axis.

    Examples
    --------
    >>> t = np.arange(0, 20, 1 / 128)
    >>> x = np.sin(2 * np.pi * 1 * t) + np.sin(2 * np.pi * 13 * t)    # 1 Hz + 13 Hz
    >>> sigma = bandpass(x, 128, 11, 16)                               # keeps the 13 Hz part
    >>> round(float(np.std(sigma[256:-256]) * np.sqrt(2)), 2)
    1.0
    >>> slow = bandpass(x, 128, None, 4)                                # low-pass only
    >>> round(float(np.corrcoef(slow, np.sin(2 * np.pi * t))[0, 1]), 3)
    1.0
    """
    nyquist = sfreq / 2
    if high is not None and high >= nyquist:
        high = None
    if low is not None and high is not None:
        sos = signal.butter(order, [low, high], btype="bandpass", fs=sfreq, output="sos")
    elif low is not None:
        sos = signal.butter(order, low, btype="highpass", fs=sfreq, output="sos")
    elif high is not None:
        sos = signal.butter(order, high, btype="lowpass", fs=sfreq, output="sos")
    else:
        return np.asarray(data, dtype=float)
    return signal.sosfiltfilt(sos, data, axis=-1)


def per_second(data: np.ndarray, sfreq: float, how: str = "mean") -> np.ndarray:
    """Reduce a signal to one value per whole second (``mean``, ``max``, ``min``); below 1.5 Hz each
    second holds the sample taken at or before its start (sample-and-hold), so the result always
    has one value per second of the recording.

    Examples
    --------
    >>> x = np.array([1.0, 3.0, 5.0, 7.0, 9.0])          # 2 Hz: two whole seconds
    >>> per_second(x, 2).tolist(), per_second(x, 2, "max").tolist()
    ([2.0, 6.0], [3.0, 7.0])
    >>> per_second(np.array([95.0, 91.0, 93.0]), 1).tolist()   # 1 Hz: already one value per second
    [95.0, 91.0, 93.0]
    >>> per_second(np.array([95.0, 91.0, 93.0]), 0.5).tolist() # 0.5 Hz: each value held for 2 s
    [95.0, 95.0, 91.0, 91.0, 93.0, 93.0]
    """
    per = int(round(sfreq))
    if per <= 1:
        data = np.asarray(data, dtype=float)
        if sfreq == 1:
            return data
        held = np.minimum((np.arange(int(len(data) / sfreq)) * sfreq).astype(np.int64), len(data) - 1)
        return data[held]
    n = len(data) // per
    blocks = np.asarray(data[: n * per], dtype=float).reshape(n, per)
    return {"mean": np.nanmean, "max": np.nanmax, "min": np.nanmin}[how](blocks, axis=1)


def position_codes(rec: Recording) -> tuple[np.ndarray, float] | None:
    """Body-position codes (SleepLM codes, -1 unknown) and their rate, or None without a position channel.

    Examples
    --------
    >>> codes, sfreq = position_codes(tiny_recording())
    >>> sfreq, codes.size, sorted(set(codes.tolist()) - {-1.0}) != []
    (1.0, 900, True)
    """
    sig = get_signal(rec, "POS")
    if sig is not None:
        return np.asarray(sig.data, dtype=float), sig.sfreq
    if rec.channel_present[POS_INDEX]:
        return rec.epochs[:, POS_INDEX].reshape(-1).astype(float), float(SFREQ)
    return None


def sleep_mask_seconds(hypnogram: np.ndarray | None, n_seconds: int) -> np.ndarray | None:
    """Per-second True where the hypnogram says sleep (N1, N2, N3, R); None without a hypnogram.

    Examples
    --------
    >>> sleep_mask_seconds(np.array(["W", "N2"]), 60)[[0, 29, 30, 59]].tolist()
    [False, False, True, True]
    >>> sleep_mask_seconds(None, 60) is None
    True
    """
    if hypnogram is None:
        return None
    asleep = np.isin(np.asarray(hypnogram), SLEEP_STAGES)
    mask = np.repeat(asleep, EPOCH_SEC)
    if len(mask) < n_seconds:
        mask = np.concatenate([mask, np.zeros(n_seconds - len(mask), dtype=bool)])
    return mask[:n_seconds]
