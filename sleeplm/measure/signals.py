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
    sampled below `MIN_SFREQ` (see `unusable_reason`)."""
    sig = rec.signals.get(name)
    if sig is None or len(sig.data) == 0 or sig.sfreq < MIN_SFREQ.get(name, 0.0):
        return None
    return sig


def unusable_reason(rec: Recording, name: str) -> str:
    """Why `get_signal(rec, name)` is None, in words."""
    sig = rec.signals.get(name)
    if sig is None or len(sig.data) == 0:
        return f"no {name} signal in this recording"
    return f"{name} is sampled at {sig.sfreq:g} Hz, too slow to measure (needs >= {MIN_SFREQ[name]:g} Hz)"


def epoch_matrix(data: np.ndarray, sfreq: float, n_epochs: int) -> np.ndarray:
    """Reshape a night-long signal into ``[n_epochs, samples_per_epoch]`` (padding the tail with NaN)."""
    per_epoch = int(round(sfreq * EPOCH_SEC))
    needed = n_epochs * per_epoch
    data = np.asarray(data)
    data = data.astype(np.result_type(data.dtype, float), copy=False)  # complex (analytic) signals stay complex
    if len(data) < needed:
        data = np.concatenate([data, np.full(needed - len(data), np.nan)])
    return data[:needed].reshape(n_epochs, per_epoch)


def bandpass(data: np.ndarray, sfreq: float, low: float | None, high: float | None, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass (or low/high-pass when one edge is None), along the last axis."""
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
    """Reduce a signal to one value per whole second (``mean``, ``max``, ``min``); rates below 1 Hz are held."""
    per = int(round(sfreq))
    if per <= 1:
        return np.asarray(data, dtype=float)
    n = len(data) // per
    blocks = np.asarray(data[: n * per], dtype=float).reshape(n, per)
    return {"mean": np.nanmean, "max": np.nanmax, "min": np.nanmin}[how](blocks, axis=1)


def position_codes(rec: Recording) -> tuple[np.ndarray, float] | None:
    """Body-position codes (SleepLM codes, -1 unknown) and their rate, or None without a position channel."""
    sig = get_signal(rec, "POS")
    if sig is not None:
        return np.asarray(sig.data, dtype=float), sig.sfreq
    if rec.channel_present[POS_INDEX]:
        return rec.epochs[:, POS_INDEX].reshape(-1).astype(float), float(SFREQ)
    return None


def sleep_mask_seconds(hypnogram: np.ndarray | None, n_seconds: int) -> np.ndarray | None:
    """Per-second True where the hypnogram says sleep (N1, N2, N3, R); None without a hypnogram."""
    if hypnogram is None:
        return None
    asleep = np.isin(np.asarray(hypnogram), SLEEP_STAGES)
    mask = np.repeat(asleep, EPOCH_SEC)
    if len(mask) < n_seconds:
        mask = np.concatenate([mask, np.zeros(n_seconds - len(mask), dtype=bool)])
    return mask[:n_seconds]
