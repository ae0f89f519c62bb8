"""Which file channel feeds which SleepLM channel, and how body position is coded.

A PSG file names its channels after its vendor and cohort ("EEG(sec)", "C3-M2", "EEG Fpz-Cz",
"THOR RES"...). This module maps those labels onto the ten SleepLM input channels plus the
extra signals the measurements use, in four steps per canonical channel:

1. a montage table, when the label set is recognised as a known cohort (labels such as "EEG2"
   mean different things in SHHS and MESA, so the cohort decides);
2. the generic alias table (matching ignores case, spaces and punctuation);
3. a derivation from monopolar channels (C3 - M2, E1 - M2, Chin1 - Chin2, ECG L - ECG R);
4. the closest substitute (e.g. Fpz-Cz standing in for C3-A2), always with a warning.

Position channels are decoded with explicit, named vendor maps (`POSITION_MAPS`) into the
SleepLM codes 0 Right, 1 Left, 2 Supine, 3 Prone, 4 Upright, -1 unknown.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from sleeplm.errors import ChannelMappingError
from sleeplm.io.recording import CANONICAL_CHANNELS, POSITION_CODES

__all__ = [
    "EXTRA_SIGNALS",
    "ALIASES",
    "MONTAGES",
    "POSITION_MAPS",
    "ChannelSource",
    "normalize_label",
    "recognize_montage",
    "map_channels",
    "decode_position",
    "guess_position_map",
]

logger = logging.getLogger(__name__)

# Extra signals kept in physical units for the measurements (not fed to SleepLM).
EXTRA_SIGNALS = ("SpO2", "HR", "Snore", "Pressure", "Light")

# Direct aliases in priority order: properly referenced/bipolar labels only.
ALIASES: dict[str, tuple[str, ...]] = {
    "ECG": ("ECG", "EKG", "ECG II", "ECG1-ECG2", "ECG2-ECG1", "EKG1-EKG2", "ECG L-ECG R", "ECG LA-RA",
            "ECG I", "ECG-LA-RA", "ECG2-ECG3"),
    "ABD": ("ABD", "ABDO RES", "ABDO EFFORT", "Abdo", "Abdomen", "Abdominal", "ABD RES", "Effort ABD",
            "Resp Abdomen", "Resp abdominal", "Abdomen RIP", "RIP Abdom", "Abd Effort", "Abdominal Effort",
            "ADDOME"),
    "THX": ("THX", "THOR RES", "THOR EFFORT", "Thor", "Thorax", "Thoracic", "Chest", "Effort THO",
            "Resp Thorax", "Resp chest", "Thorax RIP", "RIP Thora", "Thor Effort", "Thoracic Effort", "TORACE"),
    "AF": ("AF", "AIRFLOW", "NEW AIR", "Flow", "Resp oro-nasal", "Oronasal", "Oro-nasal", "Nasal/Oral",
           "Therm", "Thermistor", "Oral Thermistor", "OroNasal Therm", "Resp oronasal", "Flow Th", "FLUSSO",
           "Resp airflow"),
    "EOG_Left": ("EOG_Left", "EOG(L)", "EOG-L", "E1-M2", "E1-A2", "LOC-A2", "LOC-M2", "EOG L", "EOG Left",
                 "EOGL", "L-EOG", "EOG LOC-A2", "EOG E1-M2", "E1-M1"),
    "EOG_Right": ("EOG_Right", "EOG(R)", "EOG-R", "E2-M1", "E2-A1", "ROC-A1", "ROC-M1", "E2-M2", "ROC-A2",
                  "EOG R", "EOG Right", "EOGR", "R-EOG", "EOG ROC-A1", "EOG E2-M1"),
    "EEG_C3_A2": ("EEG_C3_A2", "C3-A2", "C3-M2", "EEG C3-A2", "EEG C3-M2", "C3A2", "EEG(sec)", "EEG sec"),
    "EEG_C4_A1": ("EEG_C4_A1", "C4-A1", "C4-M1", "EEG C4-A1", "EEG C4-M1", "C4A1", "EEG"),
    "EMG_Chin": ("EMG_Chin", "EMG Chin", "Chin EMG", "Chin1-Chin2", "Chin1-Chin3", "Chin2-Chin3",
                 "Chin 1-Chin 2", "EMG Chin1-Chin2", "EMG submental", "Submental", "EMG1-EMG2", "L Chin-R Chin",
                 "LChin-RChin", "EMG", "Chin", "CHIN EMG", "EMG SUBM"),
    "POS": ("POS", "POSITION", "Pos", "Body", "Body Position", "Pos Sensor", "Position Sensor", "Posizione"),
    "SpO2": ("SpO2", "SaO2", "SpO2 %", "Oxygen saturation", "OSAT", "Sat", "SAO2 %", "SpO2-1", "Pleth SpO2"),
    "HR": ("HR", "H.R.", "Pulse", "PR", "Heart rate", "Pulse Rate", "DHR", "Pulse rate BPM"),
    "Snore": ("Snore", "Snoring", "Snore Mic", "Mic", "Microphone", "Sound", "Audio Volume"),
    "Pressure": ("Pressure", "Pres", "Nasal Pressure", "Nasal Pres", "NASAL PRES", "PFlow", "Cannula",
                 "Cannula Flow", "Flow Pressure", "NPRE", "Nasal Flow", "Flow Patient"),
    "Light": ("LIGHT", "Lights", "Light Sensor", "Lux"),
}

# Monopolar derivations: (active electrode labels, reference electrode labels).
DERIVATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "EEG_C3_A2": (("C3", "EEG C3"), ("A2", "M2", "EEG A2", "EEG M2")),
    "EEG_C4_A1": (("C4", "EEG C4"), ("A1", "M1", "EEG A1", "EEG M1")),
    "EOG_Left": (("E1", "LOC", "EOG E1", "EOG LOC"), ("M2", "A2", "EEG M2", "EEG A2")),
    "EOG_Right": (("E2", "ROC", "EOG E2", "EOG ROC"), ("M1", "A1", "EEG M1", "EEG A1")),
    "EMG_Chin": (("Chin1", "Chin 1", "L Chin", "LChin", "EMG1", "Chin L"),
                 ("Chin2", "Chin 2", "R Chin", "RChin", "EMG2", "Chin R", "Chin3")),
    "ECG": (("ECG L", "ECGL", "ECG LA", "ECG1", "EKG1"), ("ECG R", "ECGR", "ECG RA", "ECG2", "EKG2")),
}

# Unreferenced electrodes used as they are when nothing better exists (reference unknown).
UNREFERENCED: dict[str, tuple[str, ...]] = {
    "EEG_C3_A2": ("C3", "EEG C3"),
    "EEG_C4_A1": ("C4", "EEG C4"),
    "EOG_Left": ("E1", "LOC", "EOG E1", "EOG LOC"),
    "EOG_Right": ("E2", "ROC", "EOG E2", "EOG ROC"),
    "ECG": ("ECG1", "EKG1", "ECG L", "ECG2", "ECG R"),
}

# Closest stand-ins, best first; each use is reported as a substitution warning.
_EEG_STAND_INS = ("F3-M2", "F4-M1", "O1-M2", "O2-M1", "EEG Fpz-Cz", "Fpz-Cz", "Fz-Cz", "Cz-Oz", "EEG Pz-Oz",
                  "Pz-Oz", "EEG1", "EEG2", "EEG3", "EEG 1", "EEG 2")
SUBSTITUTES: dict[str, tuple[str, ...]] = {
    "EEG_C3_A2": ("C4-M1", "C4-A1", "EEG C4-M1", "C3-M1") + _EEG_STAND_INS,
    "EEG_C4_A1": ("C3-M2", "C3-A2", "EEG C3-M2", "C4-M2") + _EEG_STAND_INS[1:] + _EEG_STAND_INS[:1],
    "EOG_Left": ("EOG horizontal", "ROC-LOC", "LOC-ROC", "E1-E2", "EOG"),
    "AF": ALIASES["Pressure"],
}

# Cohort tables: labels whose meaning depends on the cohort (checked before the aliases).
MONTAGES: dict[str, dict[str, str | tuple[str, ...]]] = {
    "shhs": {"EEG_C3_A2": ("EEG(sec)", "EEG2", "EEG 2", "EEG sec"), "EEG_C4_A1": "EEG", "EOG_Left": "EOG(L)", "EOG_Right": "EOG(R)",
             "EMG_Chin": "EMG", "ECG": "ECG", "THX": "THOR RES", "ABD": "ABDO RES",
             # Some SHHS nights carry the airflow as "NEW AIR" only; beside "AIRFLOW" it is the second flow sensor.
             "AF": ("AIRFLOW", "NEW AIR"), "Pressure": "NEW AIR",
             "POS": "POSITION", "SpO2": "SaO2", "HR": "H.R.", "Light": "LIGHT"},
    "mesa": {"ECG": "EKG", "EOG_Left": "EOG-L", "EOG_Right": "EOG-R", "EMG_Chin": "EMG", "EEG_C4_A1": "EEG3",
             "AF": "Flow", "Pressure": "Pres", "THX": "Thor", "ABD": "Abdo", "SpO2": "SpO2", "HR": "HR",
             "POS": "Pos", "Snore": "Snore"},
    "sleep-edf": {"EMG_Chin": "EMG submental", "AF": "Resp oro-nasal"},
}
# Cohort stand-ins: the cohort lacks the channel; the closest one it has fills in, with a warning.
MONTAGE_SUBSTITUTES: dict[str, dict[str, str]] = {
    "mesa": {"EEG_C3_A2": "EEG3"},
    "sleep-edf": {"EEG_C3_A2": "EEG Fpz-Cz", "EEG_C4_A1": "EEG Pz-Oz", "EOG_Left": "EOG horizontal"},
}
# Labels that identify the cohort: every group must have one of its labels present.
_MONTAGE_SIGNATURES = {
    "shhs": (("THOR RES",), ("ABDO RES",), ("EEG",), ("EEG(sec)", "EEG2", "EEG 2", "EEG sec")),
    "mesa": (("EEG1",), ("EEG2",), ("EEG3",)),
    "sleep-edf": (("EEG Fpz-Cz",), ("EEG Pz-Oz",)),
}
# Which position map goes with a recognised montage.
MONTAGE_POSITION_MAP = {"shhs": "shhs", "mesa": "mesa"}

# Vendor position maps into SleepLM codes (0 Right, 1 Left, 2 Supine, 3 Prone, 4 Upright).
# The SHHS and MESA tables are the ones the SleepLM authors' NSRR preprocessing uses. No public
# code table was found for MrOS, CFS or integer-coded Nox exports, so none is guessed here: such
# files are read as SleepLM codes (or Nox roll angles) with a warning, and `position_map=` overrides.
POSITION_MAPS: dict[str, dict[int, int] | str] = {
    "sleeplm": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, -1: -1},
    # SHHS (Compumedics PS-2): 0 right, 1 left, 2 supine, 3 prone.
    "shhs": {0: 0, 1: 1, 2: 2, 3: 3},
    # Compumedics Profusion codes as used by MESA: 0 right, 1 supine, 2 left, 3 prone, 4 upright.
    "compumedics": {0: 0, 1: 2, 2: 1, 3: 3, 4: 4},
    "mesa": {0: 0, 1: 2, 2: 1, 3: 3, 4: 4},
    # Nox: roll angle about the body axis in degrees (0 supine, +90 left side, -90 right side, +-180 prone).
    "nox": "angle",
}


def normalize_label(label: str) -> str:
    """Lower-case a channel label and drop spaces/punctuation: ``"EEG C3-M2"`` -> ``"eegc3m2"``."""
    return re.sub(r"[^0-9a-z]", "", label.lower().replace("µ", "u"))


@dataclass
class ChannelSource:
    """Where one canonical channel (or extra signal) comes from in the file.

    Attributes
    ----------
    name : canonical channel or extra signal name.
    labels : file label(s): one for a direct or substitute match, (active, reference) for a derivation.
    kind : ``"direct"``, ``"derived"`` (active minus reference) or ``"substitute"``.
    warnings : what the user should know about this choice.
    """

    name: str
    labels: tuple[str, ...]
    kind: str = "direct"
    warnings: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        if self.kind == "derived":
            return f"{self.labels[0]} - {self.labels[1]}"
        return self.labels[0]


def recognize_montage(labels) -> str | None:
    """Name of the cohort montage whose signature labels are all present, else None."""
    present = {normalize_label(lab) for lab in labels}
    for name, signature in _MONTAGE_SIGNATURES.items():
        if all(any(normalize_label(label) in present for label in group) for group in signature):
            return name
    return None


def _find(candidates, by_norm: dict[str, str], used: set[str]) -> str | None:
    for cand in candidates:
        label = by_norm.get(normalize_label(cand))
        if label is not None and label not in used:
            return label
    return None


def map_channels(labels, channel_map: dict[str, str] | None = None) -> tuple[dict[str, ChannelSource], str | None]:
    """Map file channel labels onto the SleepLM channels and the extra signals.

    Parameters
    ----------
    labels : the file's signal labels (annotation channels excluded).
    channel_map : optional user override ``{canonical_or_extra: file_label}``; a label may be
        ``"A-B"`` naming two file channels to derive ``A - B``.

    Returns
    -------
    sources : dict name -> ChannelSource for every channel found (absent names are missing).
    montage : recognised cohort montage name, or None.
    """
    labels = list(labels)
    by_norm: dict[str, str] = {}
    for lab in labels:
        by_norm.setdefault(normalize_label(lab), lab)
    valid = set(CANONICAL_CHANNELS) | set(EXTRA_SIGNALS)
    sources: dict[str, ChannelSource] = {}
    used: set[str] = set()

    for name, label in (channel_map or {}).items():
        if name not in valid:
            raise ChannelMappingError(
                f"channel_map names {name!r}, which is not a SleepLM channel; use one of {sorted(valid)}."
            )
        if label in labels:
            sources[name] = ChannelSource(name, (label,), warnings=["chosen by the user's channel_map"])
        elif "-" in label and all(part in labels for part in label.split("-", 1)):
            active, ref = label.split("-", 1)
            sources[name] = ChannelSource(name, (active, ref), "derived", ["chosen by the user's channel_map"])
        else:
            raise ChannelMappingError(
                f"channel_map maps {name!r} to {label!r}, but the file has no such channel. "
                f"Available labels: {', '.join(labels)}."
            )
        used.update(sources[name].labels)

    montage = recognize_montage(labels)
    for name, candidates in MONTAGES.get(montage, {}).items():
        label = _find((candidates,) if isinstance(candidates, str) else candidates, by_norm, used)
        if name not in sources and label is not None:
            sources[name] = ChannelSource(name, (label,))
            used.add(label)

    for name in CANONICAL_CHANNELS + EXTRA_SIGNALS:
        if name in sources:
            continue
        label = _find(ALIASES[name], by_norm, used)
        if label is not None:
            sources[name] = ChannelSource(name, (label,))
        elif name in DERIVATIONS:
            actives, refs = DERIVATIONS[name]
            active, ref = _find(actives, by_norm, used), _find(refs, by_norm, set())
            if active is not None and ref is not None:
                sources[name] = ChannelSource(name, (active, ref), "derived")
        if name not in sources and name in UNREFERENCED:
            label = _find(UNREFERENCED[name], by_norm, used)
            if label is not None:
                sources[name] = ChannelSource(
                    name, (label,), warnings=[f"'{label}' used as {name} without its reference electrode"]
                )
        if name in sources:
            used.update(lab for lab in sources[name].labels[:1])

    # Substitutes last, so that a true match anywhere in the file wins over a stand-in. A stand-in
    # may share its file channel with another canonical channel (e.g. C4-M1 feeding both EEGs).
    for name, candidates in SUBSTITUTES.items():
        cohort_choice = MONTAGE_SUBSTITUTES.get(montage, {}).get(name)
        label = _find(((cohort_choice,) if cohort_choice else ()) + candidates, by_norm, set())
        if name in sources or label is None:
            continue
        sources[name] = ChannelSource(
            name, (label,), "substitute", [f"no {name} channel in the file; '{label}' substituted for it"]
        )
    logger.debug("montage %s, mapped %s", montage, {k: v.description for k, v in sources.items()})
    return sources, montage


def decode_position(values: np.ndarray, position_map: str | dict) -> tuple[np.ndarray, float]:
    """Decode a position channel into SleepLM codes.

    Parameters
    ----------
    values : raw position samples as stored in the file (codes or, for ``"nox"``, degrees).
    position_map : a name in `POSITION_MAPS` or a dict ``{file_code: sleeplm_code_or_label}``
        (labels "Right", "Left", "Supine", "Prone", "Upright").

    Returns
    -------
    codes : float32 array of SleepLM codes, -1 where the file code is unknown.
    unknown_fraction : share of samples that decoded to -1.
    """
    if isinstance(position_map, str):
        if position_map not in POSITION_MAPS:
            raise ChannelMappingError(
                f"unknown position_map {position_map!r}; use one of {sorted(POSITION_MAPS)} or a dict code->label."
            )
        table = POSITION_MAPS[position_map]
    else:
        by_label = {label.lower(): code for code, label in POSITION_CODES.items()}
        table = {}
        for code, target in position_map.items():
            target_code = by_label.get(str(target).lower()) if isinstance(target, str) else target
            if target_code not in POSITION_CODES:
                raise ChannelMappingError(
                    f"position_map maps {code!r} to {target!r}; targets must be one of {list(POSITION_CODES.values())}."
                )
            table[int(code)] = int(target_code)

    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, -1, dtype=np.float32)
    finite = np.isfinite(values)
    if table == "angle":
        angle = (values + 180.0) % 360.0 - 180.0
        out[finite & (np.abs(angle) <= 45)] = 2
        out[finite & (angle > 45) & (angle <= 135)] = 1
        out[finite & (angle < -45) & (angle >= -135)] = 0
        out[finite & (np.abs(angle) > 135)] = 3
    else:
        rounded = np.where(finite, np.round(values), np.nan)
        integral = finite & (np.abs(values - rounded) < 0.01)
        for code, target in table.items():
            out[integral & (rounded == code)] = target
    unknown = float(np.mean(out == -1)) if out.size else 0.0
    return out, unknown


def guess_position_map(values: np.ndarray) -> str:
    """Map for a position channel of an unrecognised vendor: ``"nox"`` when the values are roll
    angles in degrees (mostly not integer codes -1..4, all within ±360), else ``"sleeplm"`` codes."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "sleeplm"
    is_code = (np.abs(values - np.round(values)) < 0.01) & (values >= -1) & (values <= 4)
    if is_code.mean() < 0.5 and np.abs(values).max() <= 360:
        return "nox"
    return "sleeplm"
