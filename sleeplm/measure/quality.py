"""Signal-quality segments: flat lines, pops (spikes) and clipping, found before any event is scored.

Respiratory events are only scored where the signals they rest on are usable, so a sensor that
fell off (a flat line) is never counted as an apnea, and a pop never as an arousal.

Examples
--------
>>> from sleeplm.measure.quality import artefact_segments
>>> segments = artefact_segments(tiny_recording())
>>> list(segments.columns)
['channel', 'problem', 'start_s', 'end_s']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from sleeplm.io.preprocess import flat_seconds
from sleeplm.io.recording import EPOCH_SEC, Recording
from sleeplm.measure.signals import get_signal
from sleeplm.terms import runs

__all__ = ["QUALITY_CHANNELS", "artefact_segments", "bad_seconds"]

# Channels whose artefacts would fake or hide events, or void the epoch features measured on them.
QUALITY_CHANNELS = ("AF", "Pressure", "THX", "ABD", "EEG_C3_A2", "EEG_C4_A1", "EOG_Left", "EOG_Right", "EMG_Chin",
                    "ECG", "SpO2")
# Spikes are the signal itself on these (R-peaks, muscle twitches): no pop test.
SPIKY_CHANNELS = ("ECG", "EMG_Chin")
# A pop: a sample more than 12 robust standard deviations from the night's median.
POP_SIGMAS = 12.0
POP_MARGIN_S = 2.0
CLIP_MIN_S = 1.0
SPO2_VALID = (50.0, 100.0)
# SpO2 cannot physiologically move more than ~4 %/s: bigger jumps are probe artefacts.
SPO2_MAX_STEP_PCT = 4.0


def _segments(mask: np.ndarray, sfreq: float, min_s: float = 0.0) -> list[tuple[float, float]]:
    spans = runs(mask)
    keep = (spans[:, 1] - spans[:, 0]) / sfreq >= min_s
    return [(a / sfreq, b / sfreq) for a, b in spans[keep]]


def _grow(mask: np.ndarray, samples: int) -> np.ndarray:
    """Widen every True stretch by `samples` on each side (a sliding maximum, linear time)."""
    if samples < 1 or not mask.any():
        return mask
    return ndimage.maximum_filter1d(mask.astype(np.uint8), 2 * samples + 1).astype(bool)


def _channel_artefacts(name: str, data: np.ndarray, sfreq: float) -> list[tuple[str, float, float]]:
    found: list[tuple[str, float, float]] = []
    if name == "SpO2":
        invalid = ~((data >= SPO2_VALID[0]) & (data <= SPO2_VALID[1]))
        jump = np.abs(np.diff(data, prepend=data[:1])) > SPO2_MAX_STEP_PCT * max(1.0, 1.0 / sfreq)
        found += [("invalid", a, b) for a, b in _segments(invalid, sfreq)]
        found += [("jump", max(a - 5, 0), b + 5) for a, b in _segments(jump, sfreq)]
        return found
    finite = data[np.isfinite(data)]  # a copy: the medians below partition it in place
    if finite.size == 0:
        return [("flat", 0.0, len(data) / sfreq)]
    found += [("flat", a, b) for a, b in _segments(flat_seconds(data, sfreq), 1.0)]
    top, bottom = finite.max(), finite.min()
    median = np.median(finite, overwrite_input=True)
    np.abs(np.subtract(finite, median, out=finite), out=finite)
    sigma = 1.4826 * np.median(finite, overwrite_input=True)
    if sigma > 0 and name not in SPIKY_CHANNELS:
        pops = _grow(np.abs(data - median) > POP_SIGMAS * sigma, int(POP_MARGIN_S * sfreq))
        found += [("pop", a, b) for a, b in _segments(pops, sfreq)]
    if top > bottom:
        railed = (data >= top) | (data <= bottom)
        found += [("clipped", a, b) for a, b in _segments(railed, sfreq, CLIP_MIN_S)]
    return found


def artefact_segments(rec: Recording, channels=QUALITY_CHANNELS) -> pd.DataFrame:
    """Stretches of unusable signal per channel.

    Parameters
    ----------
    rec : the night.
    channels : canonical/extra signal names to check (missing ones are skipped).

    Returns
    -------
    DataFrame with columns ``channel, problem, start_s, end_s`` (seconds from start); problem is
    ``flat`` (`sleeplm.io.preprocess.flat_seconds`, the loader's definition), ``pop`` (spike > 12 robust SD, +-2 s), ``clipped`` (at the
    signal's rails >= 1 s), or for SpO2 ``invalid`` (outside 50-100 %) and ``jump`` (> 4 %/s).

    Examples
    --------
    >>> segments = artefact_segments(tiny_recording())
    >>> list(segments.columns)
    ['channel', 'problem', 'start_s', 'end_s']
    >>> set(segments["problem"]) <= {"flat", "pop", "clipped", "invalid", "jump"}, bool((segments["end_s"] > segments["start_s"]).all())
    (True, True)
    """
    rows = []
    for name in channels:
        sig = get_signal(rec, name)
        if sig is None:
            continue
        # float32 as loaded: a float64 copy of every channel doubled the memory traffic of this pass.
        for problem, start, end in _channel_artefacts(name, np.asarray(sig.data, dtype=np.float32), sig.sfreq):
            rows.append((name, problem, round(start, 2), round(min(end, rec.n_epochs * EPOCH_SEC), 2)))
    return pd.DataFrame(rows, columns=["channel", "problem", "start_s", "end_s"])


def bad_seconds(artefacts: pd.DataFrame, channels, n_seconds: int) -> np.ndarray:
    """Per-second mask: True where any of `channels` has an artefact segment.

    Examples
    --------
    >>> import pandas as pd
    >>> segments = pd.DataFrame({"channel": ["AF", "SpO2"], "problem": ["flat", "invalid"],
    ...                          "start_s": [2.0, 5.0], "end_s": [4.0, 6.0]})
    >>> np.flatnonzero(bad_seconds(segments, ["AF"], 8)).tolist()
    [2, 3]
    >>> np.flatnonzero(bad_seconds(segments, ["AF", "SpO2"], 8)).tolist()
    [2, 3, 5]
    """
    mask = np.zeros(n_seconds, dtype=bool)
    for row in artefacts[artefacts["channel"].isin(list(channels))].itertuples(index=False):
        mask[int(np.floor(row.start_s)) : int(np.ceil(row.end_s))] = True
    return mask
