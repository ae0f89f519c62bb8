"""Write a simulated night as EDF+ (or 24-bit BDF+) with its truth beside it, and read the truth back.

The header carries a deliberately identifiable fake patient (`PATIENT_NAME`, `PATIENT_BIRTHDATE`,
`PATIENT_CODE`) and recording date (`RECORDING_DATE`) so that privacy tests can check that none
of them leaks out of the product.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path

import edfio
import numpy as np
import pandas as pd

from sleeplm.errors import RecordingError
from sleeplm.synthetic.night import SIMULATOR_VERSION, SimulationError, SyntheticNight, Truth
from sleeplm.synthetic.scenario import EVENT_COLUMNS

__all__ = ["PATIENT_NAME", "PATIENT_CODE", "PATIENT_BIRTHDATE", "RECORDING_DATE", "write_night", "load_truth",
           "truth_path"]

logger = logging.getLogger(__name__)

PATIENT_NAME = "Jane Testpatient"
PATIENT_CODE = "MRN-0042-TEST"
PATIENT_BIRTHDATE = dt.date(1970, 1, 2)
RECORDING_DATE = dt.date(2024, 5, 6)

# EDF/BDF header layout: general fields (256 bytes), then per-signal fields grouped by field.
_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("unit", 8), ("physical_min", 8), ("physical_max", 8),
                  ("digital_min", 8), ("digital_max", 8), ("prefilter", 80), ("samples_per_record", 8),
                  ("reserved", 32))
_BDF_DIGITAL = (-8388608, 8388607)


def truth_path(recording_path) -> Path:
    """Where the truth of a written night lives: ``<recording path>.truth.json``.

    Examples
    --------
    >>> truth_path("night.edf").name
    'night.edf.truth.json'
    """
    return Path(str(recording_path) + ".truth.json")


def write_night(night: SyntheticNight, path) -> Path:
    """Write `night` as EDF+ (BDF+ when `path` ends in ``.bdf``) and its truth as ``<path>.truth.json``.

    Parameters
    ----------
    night : from `simulate_night`.
    path : destination ``.edf`` or ``.bdf`` file (parent folders are created).

    Returns
    -------
    Path of the recording.

    Notes
    -----
    Data records last 1 s. Each channel's physical range is the amplifier range for EEG/EOG
    (so a clipped stretch sits on the rail) and its data range with a 2 % margin otherwise;
    16-bit EDF then resolves EEG to 0.015 uV and 24-bit BDF to 0.00006 uV.

    Examples
    --------
    >>> from sleeplm.synthetic import simulate_night
    >>> night = simulate_night(duration_h=0.1, seed=1, sfreq=128)   # 12 epochs
    >>> path = write_night(night, tmp_dir / "night.edf")
    >>> path.name, truth_path(path).exists()
    ('night.edf', True)
    >>> write_night(night, tmp_dir / "night.bdf").read_bytes()[1:8]   # BDF+ header: 0xFF "BIOSEMI"
    b'BIOSEMI'
    """
    path = Path(path)
    if path.suffix.lower() not in (".edf", ".bdf"):
        raise SimulationError(f"cannot write {path.name!r}: the file name must end in .edf or .bdf.")
    path.parent.mkdir(parents=True, exist_ok=True)
    signals = []
    for label in night.labels:
        data, sfreq, unit = night.signals[label]
        low, high = night.physical_ranges[label]
        signals.append(edfio.EdfSignal(np.clip(data.astype(np.float64), low, high), sfreq, label=label,
                                       physical_dimension=unit, physical_range=(low, high)))
    hours, minutes, seconds = (int(part) for part in night.start_clock.split(":"))
    edf = edfio.Edf(
        signals,
        patient=edfio.Patient(code=PATIENT_CODE, sex="F", birthdate=PATIENT_BIRTHDATE,
                              name=PATIENT_NAME.replace(" ", "_")),
        recording=edfio.Recording(startdate=RECORDING_DATE, hospital_administration_code="PSG-2024-117",
                                  investigator_technician_code="SleepLab", equipment_code="SleepLM-simulator"),
        starttime=dt.time(hours, minutes, seconds),
        data_record_duration=1,
        annotations=[edfio.EdfAnnotation(onset, duration or None, text) for onset, duration, text in night.annotations],
    )
    buffer = io.BytesIO()
    edf.write(buffer)
    raw = buffer.getvalue()
    if path.suffix.lower() == ".bdf":
        raw = _to_bdf(raw, night)
    path.write_bytes(raw)
    truth_path(path).write_text(json.dumps(_truth_to_dict(night.truth)))
    logger.info("wrote %d channels, %.1f h to %s", len(night.labels), night.duration_s / 3600, path.suffix)
    return path


def _header_fields(raw: bytes) -> tuple[int, int, dict[str, list[bytes]]]:
    """Number of signals, of data records, and the raw per-signal header fields of an EDF."""
    n_signals = int(raw[252:256])
    n_records = int(raw[236:244])
    fields, offset = {}, 256
    for name, width in _SIGNAL_FIELDS:
        fields[name] = [raw[offset + i * width : offset + (i + 1) * width] for i in range(n_signals)]
        offset += width * n_signals
    return n_signals, n_records, fields


def _to_bdf(raw: bytes, night: SyntheticNight) -> bytes:
    """Re-encode an EDF+ byte string as BDF+ (24-bit samples quantised from the physical data)."""
    n_signals, n_records, fields = _header_fields(raw)
    samples = [int(value) for value in fields["samples_per_record"]]
    header = bytearray(raw[: 256 * (n_signals + 1)])
    header[0:8] = b"\xffBIOSEMI"
    header[192:236] = b"BDF+C".ljust(44)
    offset = 256
    for name, width in _SIGNAL_FIELDS:
        for i in range(n_signals):
            value = fields[name][i]
            if name == "label" and value.strip() == b"EDF Annotations":
                value = b"BDF Annotations".ljust(width)
            elif name in ("digital_min", "digital_max"):
                value = str(_BDF_DIGITAL[name == "digital_max"]).encode().ljust(width)
            header[offset + i * width : offset + (i + 1) * width] = value
        offset += width * n_signals

    records = np.frombuffer(raw, dtype=np.uint8, offset=256 * (n_signals + 1)).reshape(n_records, -1)
    blocks, start = [], 0
    for i, n in enumerate(samples):
        label = fields["label"][i].decode().strip()
        edf_block = records[:, start : start + 2 * n]
        start += 2 * n
        if label == "EDF Annotations":  # same text, longer slots
            blocks.append(np.concatenate([edf_block, np.zeros((n_records, n), dtype=np.uint8)], axis=1))
            continue
        low, high = float(fields["physical_min"][i]), float(fields["physical_max"][i])
        data = np.clip(night.signals[label][0].astype(np.float64), low, high)
        digital = np.round((data - low) / (high - low) * (_BDF_DIGITAL[1] - _BDF_DIGITAL[0]) + _BDF_DIGITAL[0])
        little = digital.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        blocks.append(little.reshape(n_records, 3 * n))
    return bytes(header) + np.concatenate(blocks, axis=1).tobytes()


def _truth_to_dict(truth: Truth) -> dict:
    events = truth.events.astype(object).where(truth.events.notna(), None)
    return {
        "hypnogram": truth.hypnogram.tolist(),
        "events": events.to_dict(orient="records"),
        "ahi": None if np.isnan(truth.ahi) else round(truth.ahi, 3),
        "start_clock": truth.start_clock,
        "montage": truth.montage,
        "severity": truth.severity,
        "seed": truth.seed,
        "position": truth.position.tolist(),
        "position_map": truth.position_map,
        "spo2_baseline": truth.spo2_baseline,
        "simulator_version": SIMULATOR_VERSION,
    }


def load_truth(edf_path) -> Truth:
    """The ground truth written beside a simulated recording by `write_night`.

    Raises
    ------
    RecordingError
        When no readable ``<edf_path>.truth.json`` exists (only simulated nights have one).

    Examples
    --------
    >>> truth = load_truth(tiny_night_path())
    >>> truth.start_clock, truth.severity, truth.montage, len(truth.hypnogram)
    ('23:00:00', 'severe', 'aasm', 30)
    >>> sorted(set(truth.events["kind"]) & {"apnea", "hypopnea"})
    ['apnea', 'hypopnea']
    """
    source = truth_path(edf_path)
    try:
        content = json.loads(source.read_text())
        events = pd.DataFrame(content["events"]).reindex(columns=EVENT_COLUMNS)
        for column in ("start_s", "end_s", "flow_drop_pct", "desat_pct", "nadir_s"):
            events[column] = events[column].astype(float)
        return Truth(
            hypnogram=np.array(content["hypnogram"], dtype="<U2"),
            events=events,
            ahi=float("nan") if content["ahi"] is None else float(content["ahi"]),
            start_clock=content["start_clock"],
            montage=content["montage"],
            severity=content["severity"],
            seed=int(content["seed"]),
            position=np.array(content["position"], dtype=int),
            position_map=content["position_map"],
            spo2_baseline=float(content["spo2_baseline"]),
        )
    except FileNotFoundError:
        raise RecordingError(
            f"no ground truth beside {Path(edf_path).name!r}: only nights written by "
            "sleeplm.synthetic.write_night have a '.truth.json' file."
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"the truth file {source.name!r} is unreadable ({exc}); write the night again.") from None
