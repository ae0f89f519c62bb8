"""Load a polysomnography night into a validated, SleepLM-ready, de-identified `Recording`.

Inputs: EDF, EDF+ and BDF files, or ready SleepLM tensors (``.pt``/``.npy``, float32
``[N, 10, 1920]``). This module verifies an EDF/BDF header against the file itself first, because
mne silently accepts truncated files, EDF+D gaps, 24-bit data in a ``.edf`` file and a record
duration of 0. mne then opens the file and parses its EDF+ annotations; the samples are scaled
from the verified record layout in float32, each channel at its own rate (see `_EdfReader`).

The result holds the z-scored 64-Hz epochs for SleepLM, the physical-unit signals for the
measurements, the start clock time, the reference scoring found in EDF+ annotations, and a
preflight record per channel. Nothing identifying is kept: patient and recording header fields,
the date and the file name are read past, never stored.
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sleeplm.io import channels as chmap
from sleeplm.io import preprocess
from sleeplm.io.annotations import reference_from_annotations
from sleeplm.io.scoring import (
    check_scoring_fits, find_scoring_file, read_annotation_file, read_scoring, scoring_reference,
)
from sleeplm.errors import (
    AnnotationFileError,
    ChannelMappingError,
    CorruptRecordingError,
    DiscontinuousRecordingError,
    NotARecordingError,
    RecordingError,
    ResourceLimitError,
    TensorFormatError,
    TooShortError,
)
from sleeplm.io.recording import (
    CANONICAL_CHANNELS,
    EPOCH_SAMPLES,
    EPOCH_SEC,
    POS_INDEX,
    POSITION_CODES,
    SFREQ,
    ChannelInfo,
    Recording,
    Signal,
    preflight_table,
)

__all__ = [
    "EdfHeader", "read_edf_header", "load_budget", "estimate_load_bytes", "load_recording", "read_annotation_file",
    "preflight_table", "MEMORY_BUDGET_BYTES", "MAX_RECORDING_S", "MIN_SIGNAL_RATE_HZ",
]

logger = logging.getLogger(__name__)

_EDF_SUFFIXES = {".edf": "EDF", ".rec": "EDF", ".bdf": "BDF"}
_TENSOR_SUFFIXES = {".pt", ".npy"}
_ANNOTATION_LABELS = {"EDF Annotations", "BDF Annotations"}
# Electrophysiology is reported in microvolts when the file stores a voltage.
_MICROVOLT_CHANNELS = {"ECG", "EEG_C3_A2", "EEG_C4_A1", "EOG_Left", "EOG_Right", "EMG_Chin"}
_TO_MICROVOLT = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}
_SHORT_NIGHT_S = 3600
# Budgets, checked against the header before any array exists (`load_budget`). The memory budget
# is what one load may allocate at its peak (SLEEPLM_MEMORY_BUDGET_MB overrides it); an 8-h,
# 10-channel 256-Hz night needs about 0.4 GB.
MEMORY_BUDGET_BYTES = int(float(os.environ.get("SLEEPLM_MEMORY_BUDGET_MB", 1024)) * 1024**2)
MAX_RECORDING_S = 48 * 3600  # two days: longer is not a night, and its arrays would not fit the budget
MIN_SIGNAL_RATE_HZ = 1 / EPOCH_SEC  # one sample per epoch; slower rates mean resampling ratios over 1920
# Data records are read in blocks of about this size (the file is never memory-mapped: a file
# truncated while it is read must give a RecordingError, not SIGBUS). A block small enough to stay
# in the CPU cache while a channel's columns are copied out of it (8-MB blocks measured 25 % slower).
_READ_BLOCK_BYTES = 512 * 1024
# Channels are read and prepared in parallel by at most this many threads (see `_load_threads`).
_MAX_LOAD_THREADS = 2


def _load_threads() -> int:
    """Threads that read a recording's channels: `_MAX_LOAD_THREADS`, within this process's CPU allotment.

    The allotment is ``OMP_NUM_THREADS`` when it holds a positive whole number (Ray sets it to the
    CPUs of each task, so a one-CPU cohort task loads its night on one thread and two tasks on two
    cores do not run four threads; batch schedulers and users set it the same way), else the CPUs
    this process may run on (``os.sched_getaffinity``: cpusets, containers, ``taskset``).
    """
    allotted = os.environ.get("OMP_NUM_THREADS", "").strip()
    if allotted.isdigit() and int(allotted) > 0:
        return min(_MAX_LOAD_THREADS, int(allotted))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(_MAX_LOAD_THREADS, cpus or 1))


@dataclass
class EdfHeader:
    """The parts of an EDF/BDF header the loader needs (no patient or recording fields).

    Attributes
    ----------
    file_type : "EDF" or "BDF"; `plus` is True for EDF+/BDF+.
    n_records, record_s : number and duration (s) of data records.
    labels, transducers, units, physical_min, physical_max, digital_min, digital_max, samples_per_record :
        per signal (transducer and unit as written, e.g. "Thermistor", "%").
    annotation_signals : indices of "EDF/BDF Annotations" signals.
    start_seconds : start time of day in seconds since midnight, or None if unreadable.
    warnings : facts about the file the user should know (e.g. EDF+D read as continuous).
    """

    file_type: str
    plus: bool
    n_records: int
    record_s: float
    labels: list[str]
    transducers: list[str]
    units: list[str]
    physical_min: np.ndarray
    physical_max: np.ndarray
    digital_min: np.ndarray
    digital_max: np.ndarray
    samples_per_record: np.ndarray
    annotation_signals: list[int]
    start_seconds: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def sfreqs(self) -> np.ndarray:
        return self.samples_per_record / self.record_s

    @property
    def data_signals(self) -> list[int]:
        return [i for i in range(len(self.labels)) if i not in self.annotation_signals]

    @property
    def format_name(self) -> str:
        return self.file_type + ("+" if self.plus else "")


def _field(raw: bytes, what: str, kind):
    text = raw.decode("latin-1").strip()
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not np.isfinite(value):  # float() also reads "nan" and "inf", which no header may hold
        raise CorruptRecordingError(
            f"the header field '{what}' holds {text!r}, not a number; the file is damaged. "
            "Re-export it from the recording software."
        )
    return value


def read_edf_header(path) -> EdfHeader:
    """Read and verify the EDF/BDF header against the file's size and name.

    Raises
    ------
    NotARecordingError : empty file, or not EDF/BDF at all.
    CorruptRecordingError : header and data disagree (truncated, wrong record count, record
        duration 0, 24-bit data declared as 16-bit or the reverse).
    DiscontinuousRecordingError : EDF+D/BDF+D whose data records have gaps between them.

    Examples
    --------
    >>> header = read_edf_header(tiny_night_path())
    >>> header.file_type, header.plus, header.n_records, header.record_s, header.start_seconds
    ('EDF', True, 900, 1.0, 82800.0)
    >>> header.labels[:3], header.samples_per_record[:3].tolist(), header.annotation_signals
    (['C3-M2', 'C4-M1', 'E1-M2'], [128, 128, 128], [14])
    >>> _ = (tmp_dir / "notes.edf").write_text("not a recording")
    >>> read_edf_header(tmp_dir / "notes.edf")
    Traceback (most recent call last):
    ...
    sleeplm.errors.NotARecordingError: ...
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise NotARecordingError("the file is empty (0 bytes); upload the complete EDF/BDF recording.")
    with open(path, "rb") as f:
        fixed = f.read(256)
        version = fixed[:8]
        if version == b"0       ":
            file_type, sample_bytes = "EDF", 2
        elif version == b"\xffBIOSEMI":
            file_type, sample_bytes = "BDF", 3
        else:
            raise NotARecordingError(
                "this is not an EDF/EDF+/BDF recording (its first bytes are not an EDF or BDF header). "
                "Export the night from the recording software as EDF(+) or BDF."
            )
        if len(fixed) < 256:
            raise CorruptRecordingError("the file ends inside its header (truncated); upload the complete file.")
        suffix_type = _EDF_SUFFIXES.get(path.suffix.lower())
        if suffix_type is not None and suffix_type != file_type:
            raise CorruptRecordingError(
                f"the file is named {path.suffix.lower()} but holds {file_type} data "
                f"({sample_bytes * 8}-bit samples); rename it to .{file_type.lower()} so it is read correctly."
            )
        header_bytes = _field(fixed[184:192], "number of header bytes", int)
        reserved = fixed[192:236].decode("latin-1").strip()
        n_records = _field(fixed[236:244], "number of data records", int)
        record_s = _field(fixed[244:252], "duration of a data record", float)
        n_signals = _field(fixed[252:256], "number of signals", int)
        if n_signals < 1 or header_bytes != 256 * (n_signals + 1):
            raise CorruptRecordingError(
                f"the header declares {n_signals} signals but {header_bytes} header bytes "
                f"(expected {256 * (n_signals + 1)}); the file is damaged. Re-export it."
            )
        block = f.read(256 * n_signals)
    if len(block) < 256 * n_signals:
        raise CorruptRecordingError("the file ends inside its header (truncated); upload the complete file.")
    if not record_s > 0 and not (record_s == 0 and _annotation_only(block, n_signals)):
        raise CorruptRecordingError(
            f"the header gives a data-record duration of {record_s} s; it must be positive. "
            "The file is damaged or wrongly exported; re-export it."
        )

    def column(offset: int, width: int) -> list[bytes]:
        start = offset * n_signals
        return [block[start + i * width : start + (i + 1) * width] for i in range(n_signals)]

    labels = [_text(raw) for raw in column(0, 16)]
    transducers = [_text(raw) for raw in column(16, 80)]
    units = [_text(raw) for raw in column(16 + 80, 8)]
    physical_min = np.array([_field(r, "physical minimum", float) for r in column(104, 8)])
    physical_max = np.array([_field(r, "physical maximum", float) for r in column(112, 8)])
    digital_min = np.array([_field(r, "digital minimum", float) for r in column(120, 8)])
    digital_max = np.array([_field(r, "digital maximum", float) for r in column(128, 8)])
    spr = np.array([_field(r, "samples per record", int) for r in column(120 + 80 + 16, 8)])
    annotations = [i for i, lab in enumerate(labels) if lab in _ANNOTATION_LABELS]
    if (spr <= 0).any():
        raise CorruptRecordingError("a signal declares 0 samples per data record; the file is damaged. Re-export it.")
    record_bytes = int(spr.sum()) * sample_bytes
    data_bytes = size - header_bytes
    if n_records == -1 and data_bytes % record_bytes == 0:  # allowed while recording: infer it
        n_records = data_bytes // record_bytes
    if n_records < 1:
        held = f"holds {data_bytes // record_bytes} complete data records" if data_bytes else "holds no data after its header"
        raise CorruptRecordingError(
            f"the header field 'number of data records' holds {n_records}, and the file {held}; "
            "the export did not finish or the header is damaged. Upload the complete, unmodified export."
        )
    expected = n_records * record_bytes
    if data_bytes != expected:
        hint = ""
        if file_type == "EDF" and expected and data_bytes == expected * 3 // 2:
            hint = " The data look 24-bit (BDF) while the header declares 16-bit EDF."
        elif file_type == "BDF" and expected and data_bytes == expected * 2 // 3:
            hint = " The data look 16-bit (EDF) while the header declares 24-bit BDF."
        elif data_bytes < expected:
            hint = f" The header claims {n_records} data records but the file holds {data_bytes // record_bytes}: it is truncated."
        raise CorruptRecordingError(
            f"the file size does not match its header ({data_bytes} data bytes, header implies {expected}).{hint} "
            "Upload the complete, unmodified export."
        )
    warnings = []
    if reserved.startswith(("EDF+D", "BDF+D")):
        # mne would stitch the gaps away: accept the file only when its records are in fact contiguous.
        onsets = _record_onsets(path, header_bytes, n_records, spr * sample_bytes, annotations)
        steps = np.diff(onsets)
        if len(steps) and np.abs(steps - record_s).max() > 1e-3:
            first = int(np.argmax(np.abs(steps - record_s) > 1e-3))
            raise DiscontinuousRecordingError(
                f"this EDF+D/BDF+D recording is discontinuous: after {onsets[first] + record_s:.0f} s it jumps to "
                f"{onsets[first + 1]:.0f} s; 30-s epochs would silently straddle the gap. "
                "Export it as a continuous EDF+C, or split it at the gaps."
            )
        warnings.append("marked discontinuous (EDF+D/BDF+D) but its data records are contiguous: read as continuous")
    return EdfHeader(
        file_type=file_type,
        plus=reserved.startswith(("EDF+", "BDF+")),
        n_records=n_records,
        record_s=record_s,
        labels=labels,
        transducers=transducers,
        units=units,
        physical_min=physical_min,
        physical_max=physical_max,
        digital_min=digital_min,
        digital_max=digital_max,
        samples_per_record=spr,
        annotation_signals=annotations,
        start_seconds=_start_seconds(fixed[176:184]),
        warnings=warnings,
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _text(raw: bytes) -> str:
    """A header text field; control bytes (no EDF field may hold them) become '?', so a label never
    carries a terminal escape sequence or invisible characters into a message or a channel map."""
    return _CONTROL.sub("?", raw.decode("latin-1")).strip()


def _annotation_only(signal_block: bytes, n_signals: int) -> bool:
    """True when every signal is an annotation signal (EDF+ allows record duration 0 then)."""
    labels = {signal_block[i * 16 : (i + 1) * 16].decode("latin-1").strip() for i in range(n_signals)}
    return labels <= _ANNOTATION_LABELS


def _record_onsets(path: Path, header_bytes: int, n_records: int, signal_bytes: np.ndarray,
                   annotations: list[int]) -> np.ndarray:
    """Onset (s) of every data record, from the time-keeping TAL that opens each EDF+ record."""
    if not annotations:
        raise CorruptRecordingError(
            "the header says EDF+D/BDF+D but the file has no annotation signal to time its records; re-export it."
        )
    i = annotations[0]
    start = int(signal_bytes[:i].sum())
    tals = _read_columns(path, header_bytes, n_records, int(signal_bytes.sum()), start,
                         start + min(int(signal_bytes[i]), 32))
    try:
        onsets = np.array([float(bytes(tal).split(b"\x14", 1)[0]) for tal in tals])
    except ValueError:
        onsets = np.array([np.nan])
    if not np.isfinite(onsets).all():
        raise CorruptRecordingError("the EDF+ record time stamps are unreadable; re-export the recording as EDF+C.")
    return onsets


def _read_columns(path: Path, header_bytes: int, n_records: int, record_bytes: int, lo: int, hi: int) -> np.ndarray:
    """Bytes ``lo:hi`` of every data record (uint8 ``[n_records, hi - lo]``), read block by block.

    Plain reads, not a memory map: a file truncated or replaced while it is read raises
    `CorruptRecordingError` here instead of killing the process with SIGBUS.
    """
    out = np.empty((n_records, hi - lo), dtype=np.uint8)
    per_block = max(1, min(n_records, _READ_BLOCK_BYTES // record_bytes))
    buffer = np.empty(per_block * record_bytes, dtype=np.uint8)
    with open(path, "rb") as f:
        f.seek(header_bytes)
        for first in range(0, n_records, per_block):
            n = min(per_block, n_records - first)
            view = buffer[: n * record_bytes]
            if f.readinto(memoryview(view)) != n * record_bytes:
                raise CorruptRecordingError(
                    "the file ended while it was being read (it was truncated or replaced after its header "
                    "was checked); upload the complete file again."
                )
            out[first : first + n] = view.reshape(n, record_bytes)[:, lo:hi]
    return out


def _start_seconds(raw: bytes) -> float | None:
    """Start time of day from the header's hh.mm.ss field (the date field is never read).

    None when the field is not three numbers (the clock is then unknown); `CorruptRecordingError`
    when they are out of range (e.g. 25.61.99), which mne cannot open either.
    """
    try:
        h, m, s = (int(part) for part in raw.decode("latin-1").strip().split("."))
    except ValueError:
        return None
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):  # mne refuses such a file: say which field is wrong
        raise CorruptRecordingError(
            f"the header's start time field holds {raw.decode('latin-1').strip()!r}, not a time of day (hh.mm.ss); "
            "the file is damaged. Re-export it from the recording software."
        )
    return float(h * 3600 + m * 60 + s)


def load_budget(header: EdfHeader, labels=None, budget_bytes: int | None = None) -> dict[str, int]:
    """Bytes the loader will allocate for this header, checked before any array exists.

    Parameters
    ----------
    header : a verified header (`read_edf_header` has already matched it to the file's size).
    labels : file labels the loader will read (default: every data signal).
    budget_bytes : the memory budget (default `MEMORY_BUDGET_BYTES`).

    Returns
    -------
    {"epochs", "signals", "channel_work", "peak"}: the SleepLM epoch array, the signals kept at
    their working rates, the transient arrays of the two channels prepared at a time, and their sum.

    Raises
    ------
    ResourceLimitError : naming the header field at fault: a claimed duration (number of data
        records x duration of a data record) over `MAX_RECORDING_S`, a signal's samples per
        record giving a rate under `MIN_SIGNAL_RATE_HZ`, or a peak over the budget.

    Examples
    --------
    >>> header = read_edf_header(tiny_night_path())              # 15 min (conftest.py)
    >>> budget = load_budget(header)
    >>> budget["epochs"] == 30 * 10 * 1920 * 4, budget["peak"] == sum(budget[k] for k in ("epochs", "signals", "channel_work"))
    (True, True)
    >>> load_budget(header, budget_bytes=1_000_000)
    Traceback (most recent call last):
    ...
    sleeplm.errors.ResourceLimitError: loading this recording would need about 9 MB (header fields: 900 data records of 1 s, 14 signals), over the 1 MB memory budget of one load. ...
    """
    budget_bytes = MEMORY_BUDGET_BYTES if budget_bytes is None else int(budget_bytes)
    duration_s = header.n_records * header.record_s
    if duration_s > MAX_RECORDING_S:
        raise ResourceLimitError(
            f"the header fields 'number of data records' ({header.n_records}) x 'duration of a data record' "
            f"({header.record_s:g} s) claim {duration_s / 3600:.1f} h, over the {MAX_RECORDING_S / 3600:.0f}-h limit "
            "for one recording; the header is damaged or this is not one night. Re-export the night."
        )
    wanted = set(header.labels[i] for i in header.data_signals) if labels is None else set(labels)
    indices = [i for i in header.data_signals if header.labels[i] in wanted]
    n_epochs = int(duration_s // EPOCH_SEC)
    sample_bytes = 3 if header.file_type == "BDF" else 2
    kept, work = 0, 0
    for i in indices:
        rate = float(header.samples_per_record[i]) / header.record_s
        if rate < MIN_SIGNAL_RATE_HZ:
            raise ResourceLimitError(
                f"the header field 'samples per record' of signal '{header.labels[i]}' gives "
                f"{int(header.samples_per_record[i])} sample(s) per {header.record_s:g}-s record ({rate:.3g} Hz), "
                f"below the {MIN_SIGNAL_RATE_HZ:.3g} Hz minimum (one sample per {EPOCH_SEC}-s epoch); "
                "the header is damaged. Re-export the recording."
            )
        n_file = header.n_records * int(header.samples_per_record[i])
        n_64 = duration_s * SFREQ
        # raw bytes + float32 samples (+ 24-bit widening) + artefact mask; 64-Hz versions, z-scores, mask.
        work_i = n_file * (sample_bytes + 4 + (8 if sample_bytes == 3 else 0) + 1) + int(n_64) * 4 * 5
        work = max(work, work_i)
        kept += int(duration_s * min(rate, max(preprocess.SIGNAL_RATE_LIMITS.values()))) * 4
    sizes = {
        "epochs": n_epochs * len(CANONICAL_CHANNELS) * EPOCH_SAMPLES * 4,
        "signals": kept,
        "channel_work": 2 * work,  # two channels are prepared at a time
    }
    sizes["peak"] = sum(sizes.values())
    if sizes["peak"] > budget_bytes:
        raise ResourceLimitError(
            f"loading this recording would need about {sizes['peak'] / 1024**2:.0f} MB "
            f"(header fields: {header.n_records} data records of {header.record_s:g} s, {len(indices)} signals), "
            f"over the {budget_bytes / 1024**2:.0f} MB memory budget of one load. "
            "Export only the night's sleep channels, or at a lower sampling rate."
        )
    return sizes


def estimate_load_bytes(path, channel_map=None) -> int:
    """Peak bytes `load_recording` will allocate for the EDF/BDF at `path` (header only; no array is made).

    Raises the `RecordingError` family exactly as loading would for a bad header or budget.

    Examples
    --------
    >>> estimate_load_bytes(tiny_night_path()) == load_budget(read_edf_header(tiny_night_path()))["peak"]
    True
    >>> _ = (tmp_dir / "notes.edf").write_text("not a recording")
    >>> estimate_load_bytes(tmp_dir / "notes.edf")
    Traceback (most recent call last):
    ...
    sleeplm.errors.NotARecordingError: ...
    """
    path = Path(path)
    header = read_edf_header(path)
    try:
        sources, _ = chmap.map_channels([header.labels[i] for i in header.data_signals], channel_map)
    except ChannelMappingError:
        return load_budget(header)["peak"]
    return load_budget(header, {label for source in sources.values() for label in source.labels})["peak"]


def load_recording(path, channel_map=None, position_map=None, normalization="night_zscore",
                   annotations=None) -> Recording:
    """Load and validate one night.

    Parameters
    ----------
    path : EDF/EDF+ (``.edf``), BDF (``.bdf``) file, or a ready tensor (``.pt``/``.npy``,
        float32 ``[N, 10, 1920]``, used as given).
    channel_map : optional ``{canonical_or_extra_name: file_label}`` overriding the alias table;
        ``"A-B"`` derives ``A - B`` from two file channels.
    position_map : vendor map name (see `sleeplm.io.channels.POSITION_MAPS`) or dict code -> label;
        default: the map of the recognised montage, else ``"sleeplm"`` codes.
    normalization : ``"night_zscore"`` (default, SleepLM's z-score: per channel, mean and
        standard deviation of the night's usable samples; flat, clipped, disconnected and
        artefact samples beyond 10 SD are left out of both, and z is clipped at ±10),
        ``"night_robust"`` (median and IQR/1.349 of the usable samples) or ``"per_epoch"``
        (each 30-s epoch on its own).
    annotations : optional separate scoring file, used instead of the recording's own EDF+
        annotations: an EDF+ annotation file such as Sleep-EDF's ``*-Hypnogram.edf``, an NSRR or
        Profusion XML, UCDDB ``*_respevt.txt``/``*_stage.txt``, a Noxturnal CSV export or a plain
        CSV (see `sleeplm.io.scoring`), aligned by the start time it states or by its clock times.
        When not given and the recording holds no stage annotations, a Sleep-EDF ``<id>-PSG.edf``
        uses the one ``<id minus last character>*-Hypnogram.edf`` beside it, if there is exactly
        one, and ``night.edf`` the scoring file named like it (``night-nsrr.xml``,
        ``night-profusion.xml``, ``night.xml``, ``night_respevt.txt``..., see
        `sleeplm.io.scoring.find_scoring_file`). A scoring file that does not belong to the
        recording is refused (`sleeplm.errors.ScoringMismatchError`), never cut to fit.

    Returns
    -------
    Recording

    Raises
    ------
    RecordingError subclasses, each with a message saying what to do.

    Notes
    -----
    A missing signal channel is zero-filled, as SleepLM was trained; a missing POS channel is
    filled with -1 ("unknown"), the code the SleepLM README reserves for missing position data.
    Signals are kept at ``min(file rate, SIGNAL_RATE_LIMITS)`` Hz (see `sleeplm.io.preprocess`).

    Examples
    --------
    >>> rec = load_recording(tiny_night_path())       # 15 min from 23:00:00, AASM labels
    >>> rec.epochs.shape, rec.epochs.dtype, rec.epoch_clock(20)
    ((30, 10, 1920), dtype('float32'), '23:10:00')
    >>> rec.source_format, rec.position_map, str(rec.reference.stages[0]), len(rec.reference.stages)
    ('EDF+', 'sleeplm', 'W', 30)
    >>> rec.signals["SpO2"].sfreq, rec.signals["SpO2"].unit
    (4.0, '%')
    """
    if normalization not in preprocess.NORMALIZATIONS:
        raise RecordingError(f"normalization must be one of {preprocess.NORMALIZATIONS}, not {normalization!r}.")
    path = Path(path)
    if not path.is_file():
        raise NotARecordingError("the recording file does not exist or is not a file; check the path.")
    suffix = path.suffix.lower()
    if suffix in _TENSOR_SUFFIXES:
        rec = _load_tensor(path)
    elif suffix in _EDF_SUFFIXES:
        rec = _load_edf(path, channel_map, position_map, normalization)
    else:
        raise NotARecordingError(
            f"files of type '{suffix or '(none)'}' are not supported; upload an EDF/EDF+ (.edf) or BDF (.bdf) "
            "recording, or a SleepLM tensor (.pt/.npy)."
        )
    found_beside = annotations is None and (rec.reference is None or rec.reference.stages is None)
    if found_beside:
        annotations = _sleep_edf_hypnogram(path) or find_scoring_file(path)
    if annotations is not None:
        try:
            scoring = read_scoring(annotations, recording_start=rec.start_seconds)
            check_scoring_fits(scoring, rec.n_epochs, rec.start_seconds)
        except AnnotationFileError as exc:
            if not found_beside:
                raise
            raise type(exc)(f"{exc} (This scoring file was found beside the recording, named like it: give the "
                            "right one with --annotations FILE, or rename it to load the night without it.)") from exc
        if found_beside and Path(annotations).name.lower().endswith("-hypnogram.edf"):
            scoring.source = "Sleep-EDF hypnogram"
        rec.reference = scoring_reference(scoring, rec.n_epochs, found_beside=found_beside)
        if found_beside:
            rec.warnings.append(f"reference scoring read from the {scoring.source} file beside the recording")
    return rec


def _sleep_edf_hypnogram(path: Path) -> Path | None:
    """The Sleep-EDF hypnogram beside ``SC4001E0-PSG.edf``: the one ``SC4001E*-Hypnogram.edf``."""
    match = re.fullmatch(r"(.+).-PSG\.edf", path.name, flags=re.IGNORECASE)
    if match is None:
        return None
    found = [p for p in path.parent.glob(f"{glob.escape(match.group(1))}*-Hypnogram.edf") if p.is_file()]
    return found[0] if len(found) == 1 else None


def _load_edf(path: Path, channel_map, position_map, normalization) -> Recording:
    header = read_edf_header(path)
    if not header.data_signals:
        raise NotARecordingError(
            f"this {header.format_name} file holds only annotations, no signals: it is a scoring file, not a "
            "recording. Upload the recording itself (and give this file as its scoring: annotations= in Python)."
        )
    n_epochs = int(header.n_records * header.record_s // EPOCH_SEC)
    if n_epochs < 1:
        raise TooShortError(
            f"the recording lasts {header.n_records * header.record_s:.1f} s, less than one {EPOCH_SEC}-s epoch; "
            "upload a longer recording."
        )
    file_labels = [header.labels[i] for i in header.data_signals]
    sources, montage = chmap.map_channels(
        file_labels, channel_map, units=[header.units[i] for i in header.data_signals],
        transducers=[header.transducers[i] for i in header.data_signals],
    )
    if not any(name in sources for name in CANONICAL_CHANNELS if name != "POS"):
        wanted = [name for name in CANONICAL_CHANNELS if name != "POS"]
        raise ChannelMappingError(
            "no recognisable sleep channel (EEG, EOG, EMG, ECG, airflow or effort) in this file. "
            f"Its channels are: {', '.join(file_labels)}. Name them with a channel map (channel_map= in Python, "
            f"--channel-map on the command line), e.g. {chmap.map_hint(file_labels, ['EEG_C3_A2'])}",
            labels=file_labels, wanted=wanted,
        )
    load_budget(header, {label for source in sources.values() for label in source.labels})
    reader = _EdfReader(path, header)
    # The vendor position map: the user's, else the recognised montage's, else guessed from the values.
    position_map_assumed = position_map is None and montage not in chmap.MONTAGE_POSITION_MAP
    if position_map is None:
        position_map = chmap.MONTAGE_POSITION_MAP.get(montage, "sleeplm")
    if isinstance(position_map, str) and position_map not in chmap.POSITION_MAPS:
        raise ChannelMappingError(
            f"unknown position_map {position_map!r}; use one of {sorted(chmap.POSITION_MAPS)} or a dict code->label."
        )
    duration_s = n_epochs * EPOCH_SEC
    decoded_with: dict[str, str] = {}  # the position map actually used, once POS is decoded

    epochs = np.zeros((n_epochs, len(CANONICAL_CHANNELS), EPOCH_SAMPLES), dtype=np.float32)
    epochs[:, POS_INDEX] = -1.0  # SleepLM README: -1 = unknown/missing position

    def prepare(name: str):
        """(info, signal) of one channel; its SleepLM row is written into `epochs` here, in the worker."""
        info, signal, row = prepare_channel(name)
        if row is not None:
            epochs[:, CANONICAL_CHANNELS.index(name)] = row
        return info, signal

    def prepare_channel(name: str):
        source = sources[name]
        data, sfreq, unit, rails = reader.read(source)
        info = ChannelInfo(
            name, present=True, source=source.description, derived=source.kind == "derived",
            substitute=source.kind == "substitute", original_sfreq=float(sfreq), unit=unit,
            warnings=list(source.warnings),
        )
        if unit and unit.lower() in _TO_MICROVOLT and name in _MICROVOLT_CHANNELS:
            to_uv = _TO_MICROVOLT[unit.lower()]
            if to_uv != 1.0:
                data *= np.float32(to_uv)
                rails = tuple(r * to_uv for r in rails)
            info.unit = "uV"
        data = data[: int(round(duration_s * sfreq))]
        if name == "POS":
            if sfreq > SFREQ:  # positions change over seconds: decode 64 Hz samples, not every file sample
                data, sfreq = preprocess.hold_resample(data, sfreq, SFREQ), float(SFREQ)
            used_map = position_map
            if position_map_assumed:
                used_map = chmap.guess_position_map(data)
                kind = "roll angles in degrees" if used_map == "nox" else "SleepLM codes"
                info.warnings.append(f"vendor not recognised: values read as {kind}; if wrong, give a position map "
                                     "(--position-map NAME|FILE, or position_map= in Python)")
            decoded_with["POS"] = used_map if isinstance(used_map, str) else "custom"
            return (info, *preprocess.prepare_position(data, sfreq, used_map, info))
        return (info, *preprocess.prepare_signal(name, data, sfreq, rails, info, normalization))

    # Channels are independent and numpy/scipy release the GIL: read and prepare them in parallel.
    names = [name for name in CANONICAL_CHANNELS + chmap.EXTRA_SIGNALS if name in sources]
    with ThreadPoolExecutor(max_workers=_load_threads()) as pool:
        prepared = dict(zip(names, pool.map(prepare, names)))

    infos, signals, extras = [], {}, []
    for name in CANONICAL_CHANNELS + chmap.EXTRA_SIGNALS:
        if name not in prepared:
            if name in CANONICAL_CHANNELS:
                infos.append(ChannelInfo(name, present=False))
            continue
        info, signal = prepared[name]
        if signal is not None:
            signals[name] = signal
        (infos if name in CANONICAL_CHANNELS else extras).append(info)
    reference = None
    annotations = reader.annotations()
    if annotations is not None:
        reference = reference_from_annotations(*annotations, n_epochs=n_epochs)
    warnings = list(header.warnings)
    if duration_s < _SHORT_NIGHT_S:
        warnings.append(f"very short recording ({duration_s / 60:.0f} min); night statistics will be unreliable")
    logger.info("loaded %s: %d epochs, %d/10 channels present", header.format_name, n_epochs,
                sum(i.present for i in infos))
    return Recording(
        epochs=epochs,
        channel_present=np.array([i.present for i in infos], dtype=bool),
        channels=infos,
        signals=signals,
        start_seconds=header.start_seconds,
        normalization=normalization,
        position_map=decoded_with.get("POS"),
        reference=reference,
        source_format=header.format_name,
        warnings=warnings,
        extra_channels=extras,
    )


class _EdfReader:
    """Reads file channels straight from the data records, as float32 in the file's units and rates.

    mne opens the file (its parser must accept it too) and supplies the EDF+ annotations; the
    samples are read block by block from the data records (`_read_columns`: no memory map, so a
    file truncated meanwhile is an error, not SIGBUS), whose layout `read_edf_header` and
    `load_budget` have already checked against the file size and the memory budget. mne's own reader converts every record to float64 in
    a Python loop and upsamples slower channels to the top rate; reading each channel at its own
    rate in float32 is several times faster and never interpolates.
    """

    def __init__(self, path: Path, header: EdfHeader):
        import mne

        read = mne.io.read_raw_bdf if header.file_type == "BDF" else mne.io.read_raw_edf
        try:
            self.raw = read(path, preload=False, stim_channel=None, verbose="error")
        except Exception as exc:  # mne's own errors for files our header check let through
            raise CorruptRecordingError(f"the file could not be read ({type(exc).__name__}); re-export it.") from exc
        if len(self.raw.ch_names) != len(header.data_signals):
            raise CorruptRecordingError("the file's signal list is inconsistent; re-export it.")
        self.header = header
        self.index = {header.labels[i]: i for i in reversed(header.data_signals)}  # first of duplicate labels
        sample_bytes = 3 if header.file_type == "BDF" else 2
        self.sample_bytes = sample_bytes
        self.first_byte = np.concatenate([[0], np.cumsum(header.samples_per_record)]) * sample_bytes
        self.path = path

    def _channel(self, label: str) -> tuple[np.ndarray, float, str, tuple[float, float]]:
        i = self.index[label]
        h = self.header
        gain_denominator = h.digital_max[i] - h.digital_min[i]
        if not gain_denominator > 0:
            raise CorruptRecordingError(
                f"channel '{label}' declares digital minimum {h.digital_min[i]:g} >= maximum {h.digital_max[i]:g}, "
                "so its samples cannot be scaled to physical units; re-export the recording."
            )
        block = _read_columns(self.path, 256 * (len(h.labels) + 1), h.n_records, int(self.first_byte[-1]),
                              int(self.first_byte[i]), int(self.first_byte[i + 1]))
        if self.sample_bytes == 2:
            digital = block.view("<i2")
        else:  # 24-bit little-endian: place the 3 bytes above a zero byte and shift back (sign-extends)
            wide = np.zeros((block.size // 3, 4), dtype=np.uint8)
            wide[:, 1:] = block.reshape(-1, 3)
            digital = wide.view("<i4") >> 8
        gain = (h.physical_max[i] - h.physical_min[i]) / gain_denominator
        offset = h.physical_min[i] - h.digital_min[i] * gain
        data = np.multiply(digital, np.float32(gain), dtype=np.float32).reshape(-1)
        data += np.float32(offset)
        # EDF allows physical minimum > maximum (an inverted channel): the rails are the lower and upper limit.
        rails = tuple(sorted((float(h.physical_min[i]), float(h.physical_max[i]))))
        return data, float(h.sfreqs[i]), h.units[i], rails

    def read(self, source: chmap.ChannelSource):
        """(data, sfreq, unit, rails) of a direct or derived source, freshly read (callers may modify it)."""
        data, sfreq, unit, rails = self._channel(source.labels[0])
        if source.kind != "derived":
            return data, sfreq, unit, rails
        ref, ref_sfreq, ref_unit, ref_rails = self._channel(source.labels[1])
        if _TO_MICROVOLT.get(ref_unit.lower()) != _TO_MICROVOLT.get(unit.lower()) or (
            unit.lower() not in _TO_MICROVOLT and ref_unit != unit
        ):
            labels = [self.header.labels[i] for i in self.header.data_signals]
            raise ChannelMappingError(
                f"cannot derive {source.description} for {source.name}: units differ ({unit!r} vs {ref_unit!r}); "
                f"choose other channels with a channel map: {chmap.map_hint(labels, (source.name,))}",
                labels=labels, wanted=(source.name,),
            )
        if ref_sfreq != sfreq:
            ref = preprocess.resample(ref, ref_sfreq, sfreq)
        n = min(len(data), len(ref))
        span = max(rails[1], ref_rails[1]) - min(rails[0], ref_rails[0])
        return data[:n] - ref[:n], sfreq, unit, (-span, span)

    def annotations(self):
        ann = self.raw.annotations
        if len(ann) == 0:
            return None
        return ann.onset, ann.duration, list(ann.description)


def _load_tensor(path: Path) -> Recording:
    """A ready SleepLM tensor ``[N, 10, 1920]`` float32, used as given (no resampling or z-scoring).

    ``.pt`` is read with ``torch.load(weights_only=True)`` and ``.npy`` with ``allow_pickle=False``,
    so an uploaded file can never run code.
    """
    if path.stat().st_size == 0:
        raise NotARecordingError("the file is empty (0 bytes); upload the complete tensor file.")
    import torch  # imported here: only tensor uploads need it, and it is slow to import

    with open(path, "rb") as f:
        magic = f.read(6)
    is_npy = path.suffix.lower() == ".npy"
    if (is_npy and magic != b"\x93NUMPY") or (not is_npy and not zipfile.is_zipfile(path)):
        raise NotARecordingError(
            f"this is not a {'NumPy .npy' if is_npy else 'torch.save'} file; upload a float32 [N, 10, 1920] "
            "tensor saved with np.save or torch.save, or an EDF/BDF recording."
        )
    try:
        if is_npy:
            array = np.load(path, allow_pickle=False)
        else:
            tensor = torch.load(path, weights_only=True, map_location="cpu")
            if not isinstance(tensor, torch.Tensor):
                raise TensorFormatError(
                    f"the .pt file holds a {type(tensor).__name__}, not a tensor; save a plain float32 "
                    "tensor [N, 10, 1920] with torch.save(tensor, path)."
                )
            array = tensor.detach().cpu().numpy()
    except (pickle.UnpicklingError, ValueError) as exc:
        raise TensorFormatError(
            "the file holds Python objects, which are never unpickled for safety, or is malformed; "
            "save a plain float32 array/tensor [N, 10, 1920] with np.save or torch.save."
        ) from exc
    except (OSError, RuntimeError, EOFError) as exc:
        raise NotARecordingError(
            f"the tensor file could not be read ({type(exc).__name__}); it may be truncated. Save it again."
        ) from exc
    expected = (len(CANONICAL_CHANNELS), EPOCH_SAMPLES)
    if array.ndim != 3 or tuple(array.shape[1:]) != expected:
        raise TensorFormatError(
            f"the tensor has shape {tuple(array.shape)}; SleepLM needs [N, {expected[0]}, {expected[1]}] "
            f"(N 30-s epochs, 10 channels, 64 Hz). Reshape or re-export it."
        )
    if array.dtype != np.float32:
        raise TensorFormatError(f"the tensor has dtype {array.dtype}; convert it to float32 first.")
    if array.shape[0] < 1:
        raise TooShortError("the tensor holds 0 epochs; upload at least one 30-s epoch.")
    if not np.isfinite(array).all():
        raise TensorFormatError(
            f"the tensor contains {int((~np.isfinite(array)).sum())} NaN/inf values; "
            "replace missing data with zeros (SleepLM's missing-channel convention) before saving."
        )
    array = np.ascontiguousarray(array)
    positions = array[:, POS_INDEX]
    present = [bool(np.any(array[:, c] != 0)) for c in range(len(CANONICAL_CHANNELS))]
    present[POS_INDEX] = bool(np.any(positions != -1))
    infos = [ChannelInfo(name, present=p, source="tensor" if p else None, original_sfreq=SFREQ if p else None)
             for name, p in zip(CANONICAL_CHANNELS, present)]
    if not np.isin(positions, list(POSITION_CODES)).all():
        infos[POS_INDEX].warnings.append("POS row holds values that are not position codes (-1..4)")
    pos_rate = preprocess.SIGNAL_RATE_LIMITS["POS"]
    flat_pos = positions.reshape(-1)
    signals = {"POS": Signal(preprocess.hold_resample(flat_pos, SFREQ, pos_rate), pos_rate, "code", "tensor")}
    return Recording(
        epochs=array,
        channel_present=np.array(present),
        channels=infos,
        signals=signals,
        start_seconds=None,
        normalization="as_given",
        position_map="sleeplm",
        reference=None,
        source_format="tensor",
        warnings=["ready tensor: no physical-unit signals, so signal measurements are unavailable"],
    )
