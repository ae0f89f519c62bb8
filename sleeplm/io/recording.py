"""The `Recording`: one loaded, validated, SleepLM-ready night.

Everything downstream (model, measurements, tools, app) consumes this one object.
It holds the model input (`epochs`, z-scored, SleepLM channel order), the physical
signals the measurements need, the reference scoring found in the file, and time
helpers so that every result can be cited as clock time + elapsed time + epoch range.

It is de-identified by construction: no patient name/id, birthdate, recording date
or original file name is stored in any field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sleeplm.terms import EPOCH_SEC, STAGES, format_clock, format_elapsed

__all__ = [
    "CANONICAL_CHANNELS",
    "POSITION_CODES",
    "STAGES",
    "EPOCH_SEC",
    "SFREQ",
    "EPOCH_SAMPLES",
    "Signal",
    "ChannelInfo",
    "ReferenceScoring",
    "Recording",
    "format_elapsed",
    "format_clock",
    "preflight_table",
]

SFREQ = 64
EPOCH_SAMPLES = EPOCH_SEC * SFREQ  # 1920

# SleepLM input order (README of yang-ai-lab/SleepLM).
CANONICAL_CHANNELS = (
    "ECG",
    "ABD",
    "THX",
    "AF",
    "EOG_Left",
    "EOG_Right",
    "EEG_C3_A2",
    "EEG_C4_A1",
    "EMG_Chin",
    "POS",
)
POS_INDEX = CANONICAL_CHANNELS.index("POS")

POSITION_CODES = {0: "Right", 1: "Left", 2: "Supine", 3: "Prone", 4: "Upright", -1: "Unknown"}



@dataclass
class Signal:
    """One signal in physical units at its analysis rate.

    Attributes
    ----------
    data : 1-D float array, physical units (`unit`).
    sfreq : sampling rate in Hz.
    unit : physical unit, e.g. ``"uV"``, ``"%"``, ``"bpm"``, ``"code"`` for POS.
    source : the file's channel label it came from (a label, never a patient field),
        or a derivation such as ``"C3-M2 (C3 - M2)"``.
    """

    data: np.ndarray
    sfreq: float
    unit: str
    source: str

    @property
    def duration_s(self) -> float:
        return len(self.data) / self.sfreq


@dataclass
class ChannelInfo:
    """Preflight facts about one canonical channel."""

    canonical: str
    present: bool
    source: str | None = None  # file label(s) that fed it
    derived: bool = False  # built from monopolar channels (e.g. C3 - M2)
    substitute: bool = False  # a stand-in channel (e.g. Fpz-Cz for C3-A2); the warning names it
    original_sfreq: float | None = None
    unit: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReferenceScoring:
    """The technician's scoring that came with the recording: stages and events.

    Attributes
    ----------
    stages : per-epoch stage labels aligned to `Recording.epochs` (values in STAGES or "?"),
        or None when the scoring has no stages.
    events : the tidy events table, columns `sleeplm.io.annotations.SCORED_EVENT_COLUMNS`
        (``onset_s, duration_s, kind, subtype, label, spo2_nadir``), seconds from the recording
        start; kind in `sleeplm.terms.SCORED_EVENT_KINDS`, label the scorer's text scrubbed of
        identifiers.
    source : where it came from, as the preflight names it, e.g. ``"EDF+ annotations in the
        recording"`` or ``"NSRR XML file found beside the recording"`` (a format, never a file name).
    """

    stages: np.ndarray | None
    events: pd.DataFrame
    source: str = "EDF+ annotations in the recording"


@dataclass
class Recording:
    """A loaded night.

    Attributes
    ----------
    epochs : float32 [N, 10, 1920], SleepLM channel order, 64 Hz, z-scored per channel
        (POS holds integer position codes, not z-scored), missing channels zero-filled.
    channel_present : bool [10], one per CANONICAL_CHANNELS entry.
    channels : ChannelInfo per canonical channel (same order).
    signals : physical-unit signals by name. Canonical names for the 10 channels
        (POS in codes at its own rate) plus extras such as ``"SpO2"`` (%), ``"HR"`` (bpm),
        ``"Snore"``, ``"Pressure"``.
    start_seconds : clock start as seconds since midnight (time of day only, no date),
        or None when the file carries no usable start time.
    normalization : how `epochs` were z-scored: ``"night_zscore"``, ``"night_robust"`` or ``"per_epoch"``
        (see `sleeplm.io.preprocess.NORMALIZATIONS`).
    position_map : name of the vendor position map used to decode POS, or None.
    reference : scoring found in the file, or None.
    source_format : "EDF", "EDF+", "BDF", "BDF+", "tensor".
    warnings : recording-level warnings (very short, mostly unknown position, ...).
    extra_channels : ChannelInfo of the extra signals found (SpO2, HR, Snore, Pressure, Light).
    """

    epochs: np.ndarray
    channel_present: np.ndarray
    channels: list[ChannelInfo]
    signals: dict[str, Signal]
    start_seconds: float | None
    normalization: str
    position_map: str | None
    reference: ReferenceScoring | None
    source_format: str
    warnings: list[str] = field(default_factory=list)
    extra_channels: list[ChannelInfo] = field(default_factory=list)

    def content_digest(self) -> str:
        """sha256 (hex) of the model input `epochs`: keys caches of what SleepLM computes from them.

        Computed when asked (~0.04 s for an 8-h night), not at load and not remembered: loading
        needs no hash, and epochs changed since still get their own digest. The same file loaded
        with another channel map or normalization is another input with another digest.
        Not identifying by itself.

        Examples
        --------
        >>> rec = tiny_recording()
        >>> digest = rec.content_digest()
        >>> len(digest), digest == rec.content_digest()
        (64, True)
        """
        return hashlib.sha256(np.ascontiguousarray(self.epochs, dtype=np.float32)).hexdigest()

    # ---- size -------------------------------------------------------------------------
    @property
    def n_epochs(self) -> int:
        return int(self.epochs.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_epochs * EPOCH_SEC

    def has(self, name: str) -> bool:
        """True when a canonical channel is present or an extra signal exists.

        Examples
        --------
        >>> rec = tiny_recording()
        >>> rec.has("EEG_C3_A2"), rec.has("SpO2"), rec.has("Light")
        (True, True, False)
        """
        if name in CANONICAL_CHANNELS:
            return bool(self.channel_present[CANONICAL_CHANNELS.index(name)])
        return name in self.signals

    def describe(self) -> str:
        """Preflight report: recording facts, then one line per channel (source, rate, status, warnings).

        Examples
        --------
        >>> lines = tiny_recording().describe().splitlines()
        >>> for line in lines[:3] + [line for line in lines if line.startswith(("channel ", "EEG_C4_A1"))]:
        ...     print(line)
        Format: EDF+   Epochs: 30 x 30 s (0h15m00s)   Start: 23:00:00
        Normalization: night_zscore   Position map: sleeplm   Channels present: 10/10
        Reference scoring: 30 staged epochs, 19 events (EDF+ annotations in the recording)
        channel    status   source          rate_hz  unit  warnings
        EEG_C4_A1  present  C4-M1               128  uV    flat for 7% of the recording
        """
        start = self.clock_at(0) or "unknown"
        lines = [
            f"Format: {self.source_format}   Epochs: {self.n_epochs} x {EPOCH_SEC} s "
            f"({format_elapsed(self.duration_s)})   Start: {start}",
            f"Normalization: {self.normalization}   Position map: {self.position_map or 'none'}   "
            f"Channels present: {int(self.channel_present.sum())}/{len(CANONICAL_CHANNELS)}",
        ]
        if self.reference is not None:
            n_staged = 0 if self.reference.stages is None else int((self.reference.stages != "?").sum())
            lines.append(f"Reference scoring: {n_staged} staged epochs, {len(self.reference.events)} events "
                         f"({self.reference.source})")
        else:
            lines.append("Reference scoring: none (none in the file, none named like it beside it; "
                         "a scoring file can be given with --annotations FILE)")
        lines += [f"Warning: {w}" for w in self.warnings]
        table = preflight_table(self)
        widths = {col: max(len(col), *(len(str(v)) for v in table[col])) for col in ("channel", "status", "source")}
        header = "  ".join(col.ljust(widths[col]) for col in widths) + "  rate_hz  unit  warnings"
        lines.append(header)
        for row in table.itertuples(index=False):
            rate = "" if pd.isna(row.original_sfreq_hz) else f"{row.original_sfreq_hz:g}"
            cells = [str(getattr(row, col)).ljust(widths[col]) for col in widths]
            lines.append(("  ".join(cells) + f"  {rate:>7}  {row.unit:<4}  {row.warnings}").rstrip())
        return "\n".join(lines)

    # ---- time -------------------------------------------------------------------------
    def clock_at(self, seconds: float) -> str | None:
        """Clock time ``"HH:MM:SS"`` at `seconds` after recording start (None if unknown).

        Examples
        --------
        >>> tiny_recording().clock_at(3725.0)                  # starts at 23:00:00
        '00:02:05'
        """
        if self.start_seconds is None:
            return None
        return format_clock(self.start_seconds + seconds)

    def epoch_clock(self, epoch: int) -> str | None:
        """Clock time at the start of `epoch`.

        Examples
        --------
        >>> tiny_recording().epoch_clock(3)
        '23:01:30'
        """
        return self.clock_at(epoch * EPOCH_SEC)

    def epoch_elapsed(self, epoch: int) -> str:
        """Elapsed time at the start of `epoch`, e.g. ``"1h02m30s"``.

        Examples
        --------
        >>> tiny_recording().epoch_elapsed(125)
        '1h02m30s'
        """
        return format_elapsed(epoch * EPOCH_SEC)

    def epoch_of(self, seconds: float) -> int:
        """Epoch index that contains `seconds` after start (clipped to the night).

        Examples
        --------
        >>> rec = tiny_recording()                             # 30 epochs
        >>> rec.epoch_of(59.9), rec.epoch_of(60.0), rec.epoch_of(-5.0), rec.epoch_of(10_000.0)
        (1, 2, 0, 29)
        """
        return int(min(max(seconds // EPOCH_SEC, 0), max(self.n_epochs - 1, 0)))

    def cite(self, start_s: float, end_s: float) -> dict:
        """Time citation of an interval in seconds from start: clock, elapsed and epoch range.

        The epoch range is inclusive; `end_s` is exclusive.

        Examples
        --------
        >>> tiny_recording().cite(95.0, 122.0)                 # starts at 23:00:00
        {'clock_start': '23:01:35', 'clock_end': '23:02:02', 'elapsed_start': '0h01m35s', 'elapsed_end': '0h02m02s', 'epoch_start': 3, 'epoch_end': 4, 'start_s': 95.0, 'end_s': 122.0}
        """
        end_s = max(end_s, start_s)
        last = self.epoch_of(max(end_s - 1e-6, start_s))
        return {
            "clock_start": self.clock_at(start_s),
            "clock_end": self.clock_at(end_s),
            "elapsed_start": format_elapsed(start_s),
            "elapsed_end": format_elapsed(end_s),
            "epoch_start": self.epoch_of(start_s),
            "epoch_end": last,
            "start_s": round(float(start_s), 2),
            "end_s": round(float(end_s), 2),
        }

    def cite_epochs(self, first: int, last: int) -> dict:
        """Time citation of the inclusive epoch range ``first..last``.

        Examples
        --------
        >>> citation = tiny_recording().cite_epochs(2, 3)
        >>> citation["clock_start"], citation["clock_end"], citation["epoch_start"], citation["epoch_end"]
        ('23:01:00', '23:02:00', 2, 3)
        """
        return self.cite(first * EPOCH_SEC, (last + 1) * EPOCH_SEC)


def preflight_table(rec: Recording) -> pd.DataFrame:
    """One row per canonical channel (then per extra signal): status, source, rate, unit, warnings.

    Notes
    -----
    Columns: ``channel``; ``status`` in {present, derived, substitute, missing, extra};
    ``source`` (file label or derivation); ``original_sfreq_hz``; ``unit``; ``warnings`` ("; "-joined).

    Examples
    --------
    >>> table = preflight_table(tiny_recording())
    >>> list(table.columns)
    ['channel', 'status', 'source', 'original_sfreq_hz', 'unit', 'warnings']
    >>> table.set_index("channel").loc[["EEG_C3_A2", "AF", "SpO2"], ["status", "source", "original_sfreq_hz"]]
              status       source  original_sfreq_hz
    channel
    EEG_C3_A2  present      C3-M2              128.0
    AF         present      Airflow             32.0
    SpO2         extra         SpO2              4.0
    """
    rows = []
    for info in list(rec.channels) + list(rec.extra_channels):
        if info.canonical not in CANONICAL_CHANNELS:
            status = "extra"
        elif not info.present:
            status = "missing"
        else:
            status = "derived" if info.derived else "substitute" if info.substitute else "present"
        rows.append({
            "channel": info.canonical,
            "status": status,
            "source": info.source or "",
            "original_sfreq_hz": info.original_sfreq,
            "unit": info.unit or "",
            "warnings": "; ".join(info.warnings),
        })
    return pd.DataFrame(rows, columns=["channel", "status", "source", "original_sfreq_hz", "unit", "warnings"])
