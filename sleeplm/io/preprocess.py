"""Signal preparation for SleepLM: anti-aliased resampling, z-scoring over the usable night, epoching.

All functions work on one channel at a time in float32 so that an 8-hour night never needs a
float64 copy of every channel at once.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy.signal import firwin, kaiserord, resample_poly

from sleeplm.io.channels import decode_position
from sleeplm.io.recording import CANONICAL_CHANNELS, EPOCH_SAMPLES, EPOCH_SEC, SFREQ, Signal
from sleeplm.terms import runs

__all__ = [
    "NORMALIZATIONS",
    "antialias_fir",
    "resample",
    "decimate",
    "hold_resample",
    "FLAT_MIN_S",
    "flat_seconds",
    "artefact_mask",
    "robust_center_scale",
    "usable_mean_sd",
    "zscore_night",
    "zscore_per_epoch",
    "to_epochs",
    "channel_warnings",
    "SIGNAL_RATE_LIMITS",
    "PLAUSIBLE_RANGES",
    "dead_sensor",
    "TREND_SIGNALS",
    "prepare_signal",
    "prepare_position",
    "STAGER_MIN_SFREQ",
    "STAGER_SFREQ",
    "stager_rate_note",
    "interpolate",
]

logger = logging.getLogger(__name__)

# "night_zscore" (default, as the SleepLM README asks): mean and SD of the night's usable samples;
# "night_robust": median and IQR / 1.349 of them; "per_epoch": each 30-s epoch on its own.
NORMALIZATIONS = ("night_zscore", "night_robust", "per_epoch")
# Physical-unit rate (Hz) kept for each signal: enough for the measurements, no more.
SIGNAL_RATE_LIMITS = {
    "ECG": 256, "EEG_C3_A2": 128, "EEG_C4_A1": 128, "EOG_Left": 128, "EOG_Right": 128, "EMG_Chin": 128,
    "Snore": 128, "AF": 32, "ABD": 32, "THX": 32, "Pressure": 32, "SpO2": 4, "HR": 4, "POS": 4, "Light": 4,
}
_MIN_SIGNAL_RATE = 1.0
# Slow trend signals: a value may hold for minutes and sit at its range limit (SpO2 100%), so
# they get no flat-run or clipping checks, and a constant one is kept (lights stay off all night).
TREND_SIGNALS = ("SpO2", "HR", "Light")
# |z| above this is clipped: beyond it a sample is artefact, and unbounded values would dominate attention.
# The same bound excludes such samples (pops, movement bursts) from the mean and SD.
Z_CLIP = 10.0
# R-peaks are the ECG itself, however tall: no outlier exclusion from its statistics.
SPIKY_SIGNALS = ("ECG",)
# Flat (disconnected lead, saturated amplifier): for at least FLAT_MIN_S seconds the signal moves
# by no more than FLAT_FRACTION of its working range (the FLAT_RANGE_PERCENTILE-th percentile of
# its 30-s ranges). Relative, so a channel whose real variation is tiny everywhere is not flat;
# a lead that fell off shows a constant or only quantisation noise (or, after filtering, a faint
# ringing), far below it. An apnea keeps several % of the breathing amplitude (noise, cardiac
# oscillation), far above it. The working range is a high percentile, not the median, so a lead
# disconnected for most of the night is still measured against the part where it worked.
FLAT_MIN_S = 5
FLAT_FRACTION = 0.001
FLAT_RANGE_PERCENTILE = 90.0
# Robust statistics on about this many samples (an evenly strided subset): the median of 200 000
# samples spread over the night is within ~0.3 % of a standard deviation of the whole night's
# (1.25 / sqrt(n)), and sorting 10x fewer samples is 10x faster.
_MAX_STAT_SAMPLES = 200_000
# Anti-aliasing FIR: flat to PASSBAND x the output Nyquist, >= STOPBAND_DB down from
# (2 - PASSBAND) x it. Between the two the band may alias, but only onto itself (above the
# passband), so the passband stays clean with a filter half as long as scipy's default.
PASSBAND = 0.8
STOPBAND_DB = 50.0
# The automatic stager (YASA) refuses EEG sampled at 80 Hz or less and works at 100 Hz.
STAGER_MIN_SFREQ = 80.0
STAGER_SFREQ = 100.0
_EEG_CHANNELS = ("EEG_C3_A2", "EEG_C4_A1")


def stager_rate_note(sfreq: float) -> str | None:
    """Why and how an EEG sampled at 80 Hz or less is resampled for the stager, and what is lost (None above).

    Examples
    --------
    >>> stager_rate_note(128.0) is None
    True
    >>> print(stager_rate_note(64.0))
    EEG sampled at 64 Hz, below the more than 80 Hz YASA's stager needs: resampled to 100 Hz for staging. Nothing above 32 Hz was recorded, ...
    """
    if sfreq > STAGER_MIN_SFREQ:
        return None
    return (f"EEG sampled at {sfreq:g} Hz, below the more than {STAGER_MIN_SFREQ:g} Hz YASA's stager needs: "
            f"resampled to {STAGER_SFREQ:g} Hz for staging. Nothing above {sfreq / 2:g} Hz was recorded, so the "
            "stager's high-frequency (beta) features carry no information: expect lower agreement with a "
            "human scorer than on a full-rate EEG (on simulated nights Cohen's kappa moved by less than 0.05)")


@lru_cache(maxsize=32)
def antialias_fir(up: int, down: int) -> np.ndarray:
    """Kaiser-window low-pass FIR (float32, odd length) for resampling by ``up / down``.

    The filter runs at ``up`` times the input rate; its band edges are `PASSBAND` and
    ``2 - PASSBAND`` times the Nyquist of the lower of the two rates, with `STOPBAND_DB` of
    attenuation. For 256 -> 64 Hz: flat to 25.6 Hz, >= 50 dB down from 38.4 Hz, 61 taps.

    Examples
    --------
    >>> taps = antialias_fir(1, 4)                  # 256 -> 64 Hz
    >>> len(taps), taps.dtype, round(float(taps.sum()), 3)   # unit gain at 0 Hz
    (61, dtype('float32'), 1.0)
    """
    nyquist = 1.0 / max(up, down)  # the lower rate's Nyquist, relative to the filter rate's
    numtaps, beta = kaiserord(STOPBAND_DB, width=2 * (1 - PASSBAND) * nyquist)
    taps = firwin(numtaps | 1, nyquist, window=("kaiser", beta)).astype(np.float32)
    taps.setflags(write=False)  # shared by every caller through the cache
    return taps


def resample(data: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Resample a 1-D signal with a polyphase anti-aliasing FIR (`antialias_fir`, scipy ``resample_poly``).

    Parameters
    ----------
    data : 1-D array at `sfreq_in` Hz.
    sfreq_in, sfreq_out : rates in Hz.

    Returns
    -------
    float32 array of ``round(len(data) * sfreq_out / sfreq_in)`` samples, computed in float32.

    Examples
    --------
    >>> t = np.arange(10 * 256) / 256
    >>> out = resample(np.sin(2 * np.pi * 5 * t), 256, 64)        # 5 Hz passes
    >>> len(out), out.dtype, round(float(np.abs(out[64:-64]).max()), 2)
    (640, dtype('float32'), 1.0)
    >>> high = resample(np.sin(2 * np.pi * 45 * t), 256, 64)      # 45 Hz is above 32 Hz: removed
    >>> bool(np.abs(high[64:-64]).max() < 0.01)
    True
    >>> len(resample(np.ones(300), 100, 64))                      # non-integer ratio 16/25
    192
    """
    data = np.asarray(data, dtype=np.float32)
    n_out = int(round(len(data) * sfreq_out / sfreq_in))
    if sfreq_in == sfreq_out:
        return data
    if len(data) == 0:
        return np.zeros(n_out, dtype=np.float32)
    ratio = Fraction(sfreq_out / sfreq_in).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    # The filter reaches past both ends, where resample_poly and `decimate` assume zeros: a signal
    # with an offset (SpO2 at 95 %) would fall towards 0 in its first and last seconds. The end
    # values are held there instead, a whole number of output samples long so the output aligns.
    reach = -(-(len(antialias_fir(up, down)) // 2) // up)
    pad = -(-reach // down) * down
    padded = np.concatenate([np.full(pad, data[0], dtype=np.float32), data, np.full(pad, data[-1], dtype=np.float32)])
    if up == 1:
        out = decimate(padded, down)
    else:
        out = resample_poly(padded, up, down, window=antialias_fir(up, down))
    skip = pad * up // down
    return _fit_length(out[skip : skip + n_out].astype(np.float32, copy=False), n_out)


def interpolate(data: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Resample a slow trend signal (SpO2, heart rate) by linear interpolation: never a value outside its neighbours.

    An anti-aliasing filter rings past a step (an oximeter's 1-% steps, a 0.1-Hz oximeter's
    readings) and so invents values below the lowest reading: a desaturation that never was.
    A trend is already smooth; between two readings it is drawn straight, and held beyond the last.

    Examples
    --------
    >>> interpolate(np.array([95.0, 93.0, 95.0]), 0.5, 1.0).tolist()
    [95.0, 94.0, 93.0, 94.0, 95.0, 95.0]
    """
    data = np.asarray(data, dtype=np.float32)
    n_out = int(round(len(data) * sfreq_out / sfreq_in))
    if len(data) == 0:
        return np.zeros(n_out, dtype=np.float32)
    return np.interp(np.arange(n_out) / sfreq_out, np.arange(len(data)) / sfreq_in, data).astype(np.float32)


# Multiply-adds per matrix product: below this OpenBLAS runs single-threaded. Its threads
# spin-wait, so on a busy 2-core machine (channels already run in parallel) a threaded product
# measured 50x slower than a sequence of small ones.
_BLAS_SINGLE_THREAD_MACS = 262_144


def decimate(data: np.ndarray, factor: int) -> np.ndarray:
    """Low-pass (`antialias_fir`) and keep every `factor`-th sample; equals
    ``resample_poly(data, 1, factor, window=antialias_fir(1, factor))`` (zero-phase, zeros beyond the ends).

    Computed with float32 matrix products (`_strided_fir`) instead of scipy's scalar ``upfirdn``
    loop, which dominated loading a night. For ``factor == 2`` the filter is half-band (every
    other tap is zero), so only the centre tap touches the even samples and the odd samples
    go through a filter of half the length.

    Examples
    --------
    >>> from scipy.signal import resample_poly
    >>> x = np.random.default_rng(0).normal(size=2048).astype(np.float32)
    >>> y = decimate(x, 4)
    >>> reference = resample_poly(x, 1, 4, window=antialias_fir(1, 4))
    >>> y.shape, bool(np.allclose(y, reference, atol=1e-5))
    ((512,), True)
    """
    data = np.asarray(data, dtype=np.float32)
    taps = antialias_fir(1, factor)
    half = (len(taps) - 1) // 2
    n_out = -(-len(data) // factor)
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)
    if factor != 2:
        return _strided_fir(data, taps[::-1], factor, half, n_out)
    # y[k] = h[c] x[2k] + sum_a g[a] (x[2k + 2a + 1] + x[2k - 2a - 1]),  g[a] = h[c + 2a + 1]
    side = taps[half + 1 :: 2]
    out = _strided_fir(data[1::2], np.concatenate([side[::-1], side]), 1, len(side), n_out)
    out += taps[half] * data[::2]
    return out


def _strided_fir(data: np.ndarray, kernel: np.ndarray, step: int, left_zeros: int, n_out: int) -> np.ndarray:
    """``out[k] = sum_i kernel[i] * padded[k * step + i]`` for k < n_out, `padded` being `data`
    after `left_zeros` zeros (and zeros past its end), as float32 matrix products.

    The padded signal is viewed (no copy) as rows of ``per_row * step`` samples; output row ``r``
    (``per_row`` outputs) is ``rows[r] @ head + rows[r + 1][:spill] @ tail``, where ``head`` and
    ``tail`` (the two parts of a banded matrix) hold the kernel at each output's offset.
    """
    spill = len(kernel) - step  # samples an output row needs from the next row
    per_row = max(16, -(-spill // step))
    width = per_row * step
    # Rows go through BLAS in stacked blocks small enough to stay single-threaded (see above).
    block_rows = max(1, _BLAS_SINGLE_THREAD_MACS // ((width + spill) * per_row))
    n_blocks = -(-n_out // (per_row * block_rows))
    n_rows = n_blocks * block_rows
    padded = np.zeros((n_rows + 1) * width, dtype=np.float32)
    stored = min(len(data), len(padded) - left_zeros)
    padded[left_zeros : left_zeros + stored] = data[:stored]
    rows = padded.reshape(n_rows + 1, width)
    banded = np.zeros((width + spill, per_row), dtype=np.float32)
    for k in range(per_row):
        banded[k * step : k * step + len(kernel), k] = kernel
    out = np.matmul(rows[:-1].reshape(n_blocks, block_rows, width), banded[:width])
    out += np.matmul(rows[1:, :spill].reshape(n_blocks, block_rows, spill), banded[width:])
    return out.reshape(-1)[:n_out]


def hold_resample(codes: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Resample a coded signal (body position) by sample-and-hold: codes are never interpolated.

    Examples
    --------
    >>> hold_resample(np.array([2, 2, 1, 1]), 1, 4).tolist()       # 1 Hz -> 4 Hz: each code held
    [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    >>> hold_resample(np.array([0, 1, 2, 3, 4, 4]), 2, 1).tolist()  # never a code in between
    [0.0, 2.0, 4.0]
    """
    codes = np.asarray(codes)
    n_out = int(round(len(codes) * sfreq_out / sfreq_in))
    step = sfreq_in / sfreq_out
    if step == int(step):  # the common case, as a view: no index array over the night
        return codes[:: int(step)][:n_out].astype(np.float32)
    index = np.minimum((np.arange(n_out) * step).astype(np.int64), len(codes) - 1)
    return codes[index].astype(np.float32)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.full(n - len(x), x[-1] if len(x) else 0, dtype=x.dtype)])


def flat_seconds(data: np.ndarray, sfreq: float, min_s: int = FLAT_MIN_S, fraction: float = FLAT_FRACTION) -> np.ndarray:
    """Per whole second of `data`: True inside flat stretches (disconnected lead, saturation).

    The one definition of a flat signal, used by the loader (`artefact_mask`: the z-score's
    usable samples, the preflight's "flat" warning) and by the detectors' quality segments
    (`sleeplm.measure.quality.artefact_segments`). A second is flat when some `min_s`-second
    window holding it has a range (max - min) of at most `fraction` of the channel's working
    range (the `FLAT_RANGE_PERCENTILE`-th percentile of its 30-s ranges; the whole range when
    shorter than 30 s). Computed on 1-s maxima and minima: one pass over the samples.

    Parameters
    ----------
    data : 1-D signal (NaN samples never make a second flat).
    sfreq : rate in Hz (seconds hold ``round(sfreq)`` samples, at least one).
    min_s : shortest flat stretch, whole seconds.
    fraction : largest range of a flat window, as a fraction of the working range.

    Returns
    -------
    bool array of ``len(data) // round(sfreq)`` seconds.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(0, 20, 128 * 60)        # 1 min of EEG at 128 Hz, uV
    >>> x[128 * 20 : 128 * 30] = 3.0                                # 10 s at a constant: lead off
    >>> np.flatnonzero(flat_seconds(x, 128)).tolist()
    [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
    >>> x[128 * 20 : 128 * 30] += np.random.default_rng(1).integers(0, 2, 1280) * 0.01   # quantisation noise
    >>> int(flat_seconds(x, 128).sum())
    10
    >>> int(flat_seconds(x * 1e-6, 128).sum()), int(flat_seconds(x[: 128 * 4], 128).sum())   # scale-free; >= 5 s
    (10, 0)
    """
    per = max(int(round(sfreq)), 1)
    n = len(data) // per
    seconds = np.asarray(data[: n * per]).reshape(n, per)
    top, bottom = seconds.max(axis=1), seconds.min(axis=1)
    if n < min_s:
        return np.zeros(n, dtype=bool)
    epochs = n // EPOCH_SEC
    if epochs:
        whole = epochs * EPOCH_SEC
        ranges = top[:whole].reshape(epochs, EPOCH_SEC).max(1) - bottom[:whole].reshape(epochs, EPOCH_SEC).min(1)
    else:
        ranges = np.array([top.max() - bottom.min()])
    ranges = ranges[np.isfinite(ranges)]
    working = float(np.percentile(ranges, FLAT_RANGE_PERCENTILE)) if ranges.size else 0.0
    # Windows of `min_s` seconds (window j holds seconds j .. j + min_s - 1); a quiet one marks them all.
    window_top = np.lib.stride_tricks.sliding_window_view(top, min_s).max(axis=1)
    window_bottom = np.lib.stride_tricks.sliding_window_view(bottom, min_s).min(axis=1)
    quiet = (window_top - window_bottom <= fraction * working).astype(np.int8)  # NaN: not quiet
    return np.convolve(quiet, np.ones(min_s, dtype=np.int8)) > 0


def artefact_mask(data: np.ndarray, sfreq: float, rails: tuple[float, float] | None = None,
                  flat: bool = True) -> np.ndarray:
    """Boolean mask of samples unfit for statistics: non-finite, flat (`flat_seconds`), or at the amplifier rails.

    Parameters
    ----------
    data : 1-D signal.
    sfreq : rate in Hz.
    rails : (low, high) physical limits of the recording channel; samples at or beyond them are clipped.
    flat : check for flat stretches; False for slow trend signals such as SpO2, whose value
        legitimately holds for minutes.

    Returns
    -------
    mask : True where the sample is artefact.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(0, 20, 1280)            # 10 s at 128 Hz
    >>> x[128:896] = 0.0                                           # 6 s flat: seconds 1-6
    >>> x[1000] = np.nan
    >>> x[1100:1110] = 500.0                                       # at the amplifier's rail
    >>> mask = artefact_mask(x, 128, rails=(-500.0, 500.0))
    >>> int(mask[128:896].sum()), bool(mask[1000]), int(mask[1100:1110].sum()), int(mask.sum())
    (768, True, 10, 779)
    """
    data = np.asarray(data)
    if rails is not None:
        low, high = rails
        tol = 1e-6 * max(abs(high - low), 1e-12)
        bad = np.greater(data, low + tol)  # NaN compares False, so it is flagged too
        bad &= data < high - tol
        np.logical_not(bad, out=bad)
    else:
        bad = ~np.isfinite(data)
    if flat:
        per = max(int(round(sfreq)), 1)
        for start, end in runs(flat_seconds(data, sfreq)):  # few: each spans >= FLAT_MIN_S
            bad[start * per : end * per] = True
    return bad


def robust_center_scale(data: np.ndarray, bad: np.ndarray | None = None) -> tuple[float, float]:
    """Median and robust standard deviation (IQR / 1.349, else MAD * 1.4826) of the good samples.

    Returns ``(nan, 0.0)`` when no good sample exists; scale 0 means the channel is flat.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, 100_000)
    >>> x[:1000] = 1e6                                              # a burst that must not matter
    >>> bad = np.zeros(x.size, dtype=bool)
    >>> bad[:1000] = True
    >>> [round(float(v), 1) for v in robust_center_scale(x, bad)]
    [5.0, 2.0]
    >>> robust_center_scale(np.ones(10))                           # flat: scale 0
    (1.0, 0.0)
    """
    data = np.asarray(data)
    step = max(1, len(data) // _MAX_STAT_SAMPLES)
    good = data[::step] if bad is None else data[::step][~np.asarray(bad)[::step]]
    good = good[np.isfinite(good)]
    if good.size == 0:
        return float("nan"), 0.0
    # Sorted once (numpy's vectorised sort), then read off with np.percentile's default linear
    # interpolation: np.percentile itself partitions around several points at once, which took
    # 5x as long (numpy 2.4) and was the costliest step of loading a night.
    good = np.sort(good)
    q25, median, q75 = np.interp(np.array([0.25, 0.5, 0.75]) * (good.size - 1), np.arange(good.size), good)
    scale = (q75 - q25) / 1.349
    if scale <= 0:
        scale = float(np.median(np.abs(good - median))) * 1.4826
    if scale <= 0:
        scale = float(np.std(good))
    if scale <= 1e-6 * max(abs(median), 1.0):  # float rounding of a constant signal, not variation
        scale = 0.0
    return float(median), float(scale)


def usable_mean_sd(data: np.ndarray, bad: np.ndarray | None = None, clip: float | None = Z_CLIP) -> tuple[float, float]:
    """Mean and standard deviation of the usable samples of a whole-night signal.

    Samples in `bad` (flat, clipped, disconnected, non-finite: `artefact_mask`) are left out.
    With `clip`, samples further than ``clip`` SDs from the mean (pops, movement bursts: beyond
    the bound every z-score is clipped at) are left out too, and the two moments recomputed once.
    Computed on about `_MAX_STAT_SAMPLES` evenly strided samples, in float64.

    Returns ``(nan, 0.0)`` when no usable sample exists; SD 0 means the channel is flat.

    Examples
    --------
    >>> x = np.r_[np.tile([-1.0, 1.0], 5000), np.full(3, 1e6)]  # a few huge pops
    >>> usable_mean_sd(x)
    (0.0, 1.0)
    """
    data = np.asarray(data)
    step = max(1, len(data) // _MAX_STAT_SAMPLES)
    good = data[::step] if bad is None else data[::step][~np.asarray(bad)[::step]]
    good = good[np.isfinite(good)].astype(np.float64)
    if good.size == 0:
        return float("nan"), 0.0
    mean, sd = float(good.mean()), float(good.std())
    if clip is not None and sd > 0:
        inside = np.abs(good - mean) <= clip * sd
        if inside.any() and not inside.all():  # all inside: the moments stand as they are
            good = good[inside]
            mean, sd = float(good.mean()), float(good.std())
    if sd <= 1e-6 * max(abs(mean), 1.0):  # float rounding of a constant signal, not variation
        sd = 0.0
    return mean, sd


def zscore_night(data: np.ndarray, bad: np.ndarray | None = None, clip: float = Z_CLIP,
                 center_scale: tuple[float, float] | None = None) -> np.ndarray:
    """Z-score a whole-night signal with a centre and scale computed on its usable samples.

    By default these are `usable_mean_sd` (SleepLM's z-score); pass `center_scale` to use
    others (e.g. `robust_center_scale`) or ones already computed. Values are clipped to
    ``±clip``; non-finite samples become 0. A channel with no usable variation returns zeros
    (the SleepLM convention for a missing channel).

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(50.0, 10.0, 10_000)
    >>> z = zscore_night(x)
    >>> round(float(np.median(z)), 1), round(float(np.percentile(z, 75) - np.percentile(z, 25)), 1)  # IQR 1.349
    (0.0, 1.3)
    >>> zscore_night(np.full(100, 7.0)).any()                      # flat channel: zeros, like a missing one
    np.False_
    """
    center, scale = center_scale if center_scale is not None else usable_mean_sd(data, bad, clip)
    if not scale > 0:
        return np.zeros(len(data), dtype=np.float32)
    z = np.subtract(data, np.float32(center), dtype=np.float32)  # one new array, then in place
    z /= np.float32(scale)
    np.nan_to_num(z, copy=False, nan=0.0)
    np.clip(z, -clip, clip, out=z)
    return z


def zscore_per_epoch(epochs: np.ndarray, clip: float = Z_CLIP) -> np.ndarray:
    """Z-score each 30-s epoch on its own (mean / standard deviation); flat epochs become zeros.

    Parameters
    ----------
    epochs : float array [n_epochs, n_samples] of one channel.

    Examples
    --------
    >>> epochs = np.stack([np.random.default_rng(0).normal(3.0, 9.0, 1920), np.zeros(1920)])
    >>> z = zscore_per_epoch(epochs)
    >>> round(float(z[0].mean()), 3), round(float(z[0].std()), 3), z[1].any()   # flat epoch: zeros
    (0.0, 1.0, np.False_)
    """
    epochs = np.nan_to_num(np.asarray(epochs, dtype=np.float32))
    mean = epochs.mean(axis=1, keepdims=True)
    std = epochs.std(axis=1, keepdims=True)
    flat = std <= 1e-6 * np.maximum(np.abs(mean), 1.0)
    z = np.where(flat, 0.0, (epochs - mean) / np.where(flat, 1.0, std)).astype(np.float32)
    return np.clip(z, -clip, clip, out=z)


def to_epochs(data: np.ndarray, n_epochs: int) -> np.ndarray:
    """Cut a 64-Hz signal into ``[n_epochs, 1920]`` 30-s epochs (trailing partial epoch dropped).

    Examples
    --------
    >>> to_epochs(np.arange(2 * 1920 + 100, dtype=np.float32), 2).shape   # partial epoch dropped
    (2, 1920)
    """
    need = n_epochs * EPOCH_SAMPLES
    if len(data) < need:
        raise ValueError(f"signal holds {len(data)} samples, {need} needed for {n_epochs} epochs of {EPOCH_SEC} s")
    return np.asarray(data[:need], dtype=np.float32).reshape(n_epochs, EPOCH_SAMPLES)


# Plausible robust SD (physical unit) per channel: outside it the unit or gain is probably wrong.
_PLAUSIBLE_SCALE_UV = {
    "EEG_C3_A2": (0.5, 500.0), "EEG_C4_A1": (0.5, 500.0), "EOG_Left": (1.0, 1000.0),
    "EOG_Right": (1.0, 1000.0), "EMG_Chin": (0.1, 500.0), "ECG": (2.0, 5000.0),
}
_PLAUSIBLE_MEDIAN = {"SpO2": (50.0, 100.5, "%"), "HR": (20.0, 250.0, "bpm")}


def channel_warnings(name: str, data: np.ndarray, bad: np.ndarray, scale: float, unit: str | None,
                     rails: tuple[float, float] | None = None) -> list[str]:
    """Preflight warnings for one channel: NaN, clipping, flat stretches, implausible units/amplitude.

    Parameters
    ----------
    name : canonical or extra signal name (sets the plausibility check).
    data : the signal in `unit`; bad : its `artefact_mask` (computed with the same `rails`);
    scale : its robust SD.
    rails : physical limits of the recording channel, for the clipping share.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(0, 20e-6, 128 * 60)   # EEG in volts, labelled uV
    >>> bad = artefact_mask(x, 128)
    >>> channel_warnings("EEG_C3_A2", x, bad, scale=robust_center_scale(x, bad)[1], unit="uV")
    ["implausible amplitude (robust SD 2.01e-05 uV, expected 0.5-500); check the channel's unit/gain in the file"]
    >>> x = np.random.default_rng(0).normal(0, 20, 128 * 60)
    >>> x[:1280] = 500.0                                          # 10 s on the rail
    >>> bad = artefact_mask(x, 128, rails=(-500.0, 500.0))
    >>> channel_warnings("EEG_C3_A2", x, bad, robust_center_scale(x, bad)[1], "uV", rails=(-500.0, 500.0))
    ['clipped: 17% of samples at the amplifier limits']
    """
    out = []
    n = max(len(data), 1)
    # NaN, clipped and flat samples all lie in `bad`: count them there, not over the whole night.
    flagged = np.asarray(data)[bad]
    nonfinite = ~np.isfinite(flagged)
    nan_share = np.count_nonzero(nonfinite) / n
    if nan_share > 0.5:
        out.append(f"mostly NaN ({nan_share:.0%} of samples)")
    elif nan_share > 0:
        out.append(f"{nan_share:.1%} NaN samples")
    flat = ~nonfinite
    if rails is not None:
        low, high = rails
        tol = 1e-6 * max(abs(high - low), 1e-12)
        clipped = (flagged <= low + tol) | (flagged >= high - tol)  # False for NaN
        clipped_share = np.count_nonzero(clipped) / n
        if clipped_share > 0.01:
            out.append(f"clipped: {clipped_share:.0%} of samples at the amplifier limits")
        flat &= ~clipped
    flat_share = np.count_nonzero(flat) / n
    if 0.05 < flat_share <= 0.95:
        out.append(f"flat for {flat_share:.0%} of the recording")
    if name in _PLAUSIBLE_SCALE_UV and scale > 0:
        if unit != "uV":
            out.append(f"unit {unit!r} is not a voltage; amplitudes cannot be checked")
        else:
            low, high = _PLAUSIBLE_SCALE_UV[name]
            if not low <= scale <= high:
                out.append(f"implausible amplitude (robust SD {scale:.3g} uV, expected {low:g}-{high:g}); "
                           "check the channel's unit/gain in the file")
    if name in _PLAUSIBLE_MEDIAN and nan_share < 1:
        low, high, expected_unit = _PLAUSIBLE_MEDIAN[name]
        median = float(np.nanmedian(data))
        if not low <= median <= high:
            out.append(f"implausible values (median {median:.3g} {unit or ''}, expected {low:g}-{high:g} "
                       f"{expected_unit}); check the channel's unit")
    return out


ZERO_PHYSICAL_RANGE = "zero physical range (header), the channel cannot be read"


def prepare_signal(name, data, sfreq, rails, info, normalization):
    """Check one channel of the night and prepare it for the measurements and for SleepLM.

    Parameters
    ----------
    name : canonical channel or extra signal name.
    data : the whole night in physical units at `sfreq` Hz (not modified).
    rails : physical limits of the recording channel (for clipping).
    info : the channel's ChannelInfo; warnings are appended and `present` cleared if unusable.
    normalization : one of `NORMALIZATIONS`.

    Returns
    -------
    signal : `Signal` at ``min(sfreq, SIGNAL_RATE_LIMITS[name])`` Hz, or None when unusable.
    row : z-scored float32 ``[n_epochs, 1920]`` at 64 Hz for SleepLM channels, else None.

    Notes
    -----
    Each needed rate is resampled from the lowest-rate version already made that is still at or
    above it (already band-limited, so cheaper and just as clean as starting from the file rate).

    Examples
    --------
    >>> from sleeplm.io.recording import ChannelInfo
    >>> eeg = np.random.default_rng(0).normal(0, 20, 256 * 120)    # 2 min at 256 Hz, uV
    >>> info = ChannelInfo(canonical="EEG_C3_A2", present=True, original_sfreq=256.0, unit="uV")
    >>> signal, row = prepare_signal("EEG_C3_A2", eeg, 256.0, (-500.0, 500.0), info, "night_robust")
    >>> signal.sfreq, row.shape, row.dtype, info.warnings
    (..., (4, 1920), dtype('float32'), [])
    """
    if rails is not None and rails[0] == rails[1]:
        # physical minimum == maximum: every sample scales to the same value, whatever was recorded
        info.present = False
        info.warnings.append(ZERO_PHYSICAL_RANGE)
        return None, None
    trend = name in TREND_SIGNALS
    if trend:
        rails = None
    bad = artefact_mask(data, sfreq, rails, flat=not trend)
    rate = float(max(min(sfreq, SIGNAL_RATE_LIMITS.get(name, sfreq)), _MIN_SIGNAL_RATE))
    versions = {sfreq: data}
    for target in sorted({rate, float(SFREQ)} if name in CANONICAL_CHANNELS else {rate}, reverse=True):
        src_rate = min((r for r in versions if r >= target), default=sfreq)
        versions[target] = (interpolate if trend else resample)(versions[src_rate], src_rate, target)
    stats_rate = float(SFREQ) if name in CANONICAL_CHANNELS else rate
    stats_bad = hold_resample(bad, sfreq, stats_rate) > 0
    center, scale = robust_center_scale(versions[stats_rate], stats_bad)
    info.warnings += channel_warnings(name, data, bad, scale, info.unit, rails)
    if name in _EEG_CHANNELS and stager_rate_note(sfreq):
        info.warnings.append(stager_rate_note(sfreq))
    dead = dead_sensor(name, versions[rate], scale, center, info.unit) if trend else None
    if dead is not None:
        # A dead oximeter or pulse sensor is not data: no statistic may use it.
        info.present = False
        info.warnings.append(f"{dead}: excluded from every statistic")
        return None, None
    if not trend and (not scale > 0 or stats_bad.mean() > 0.95):
        info.present = False
        info.warnings.append("flat or unusable: treated as missing")
        return None, None
    signal = Signal(versions[rate], rate, info.unit or "", info.source)
    if name not in CANONICAL_CHANNELS:
        return signal, None
    at_64 = versions[float(SFREQ)]
    n_epochs = len(at_64) // EPOCH_SAMPLES
    if normalization == "per_epoch":
        return signal, zscore_per_epoch(to_epochs(at_64, n_epochs))
    if normalization == "night_zscore":
        center, scale = usable_mean_sd(at_64, stats_bad, clip=None if name in SPIKY_SIGNALS else Z_CLIP)
    z = zscore_night(at_64, stats_bad, center_scale=(center, scale))
    return signal, to_epochs(z, n_epochs)


# Values a working sensor reports; a trend signal outside them for most of the night is implausible.
PLAUSIBLE_RANGES = {"SpO2": (50.0, 100.0), "HR": (20.0, 250.0)}
MIN_PLAUSIBLE_SHARE = 0.5


def dead_sensor(name: str, data: np.ndarray, scale: float, center: float, unit: str | None) -> str | None:
    """Why a trend signal (SpO2, HR) is not data: flat, disconnected or implausible; None when usable.

    Examples
    --------
    >>> dead_sensor("SpO2", np.full(100, 50.0, dtype=np.float32), 0.0, 50.0, "%")
    'constant at 50 % for the whole recording (sensor off or disconnected)'
    >>> dead_sensor("SpO2", np.linspace(90, 98, 100, dtype=np.float32), 2.0, 94.0, "%") is None
    True
    """
    if name not in PLAUSIBLE_RANGES:
        return None
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return "no finite samples (sensor disconnected)"
    if not scale > 0 or float(finite.max() - finite.min()) == 0.0:
        return f"constant at {center:g} {unit or ''} for the whole recording (sensor off or disconnected)".replace("  ", " ")
    low, high = PLAUSIBLE_RANGES[name]
    share = float(((finite >= low) & (finite <= high)).mean()) * finite.size / data.size
    if share < MIN_PLAUSIBLE_SHARE:
        return (f"implausible: only {share:.0%} of samples within {low:g}-{high:g} {unit or ''} "
                "(sensor off, disconnected or wrong channel)").replace("  ", " ")
    return None


def prepare_position(data, sfreq, position_map, info):
    """Decode positions; return (Signal of codes, epoch row of codes at 64 Hz by sample-and-hold).

    Examples
    --------
    >>> from sleeplm.io.recording import ChannelInfo
    >>> info = ChannelInfo(canonical="POS", present=True, original_sfreq=1.0)
    >>> codes = np.repeat([1.0, 2.0], 30)                         # MESA codes: supine, then left
    >>> signal, row = prepare_position(codes, 1.0, "mesa", info)
    >>> signal.data[[0, 59]].tolist(), row.shape, row[:, 0].tolist()
    ([2.0, 1.0], (2, 1920), [2.0, 1.0])
    """
    codes, unknown = decode_position(data, position_map)
    map_name = position_map if isinstance(position_map, str) else "custom"
    info.unit = "code"
    info.warnings.append(f"decoded with the '{map_name}' position map")
    if unknown > 0:
        info.warnings.append(
            f"{unknown:.0%} of position samples have codes the '{map_name}' map does not know (set to -1 unknown); "
            "pass position_map= if the vendor differs"
        )
    rate = float(max(min(sfreq, SIGNAL_RATE_LIMITS["POS"]), _MIN_SIGNAL_RATE))
    signal = Signal(hold_resample(codes, sfreq, rate), rate, "code", info.source)
    at_64 = hold_resample(codes, sfreq, SFREQ)
    return signal, to_epochs(at_64, len(at_64) // EPOCH_SAMPLES)
