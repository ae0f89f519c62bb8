"""Which file channel feeds which SleepLM channel, and how body position is coded.

A PSG file names its channels after its vendor and cohort ("EEG(sec)", "C3-M2", "EEG Fpz-Cz",
"THOR RES", "EOG1-A1", "VAB", "SAO2"...). This module reads a label's STRUCTURE rather than
looking it up in a list of exact strings:

- the EDF standard's type prefix ("EEG ", "EOG ", "EMG ", "ECG ", "Resp ", "SaO2 ") says what
  kind of signal follows;
- the rest is split into an active and a reference electrode ("C3-A1", "C3_M2", "E1:M2",
  "C3A2"); 10-20 scalp sites are recognised by pattern (side from the odd/even number), as are
  ear/mastoid references (A1, A2, M1, M2, linked ears), eye electrodes (E1/E2, LOC/ROC,
  EOG1/EOG2, "Left Horiz"), chin electrodes (Chin1, L Chin, EMG1, Subm, "1-2") and ECG leads;
- respiratory, oximetry, pulse, position, snore and light channels are recognised by their
  vendor abbreviations (NAF, Flow, Therm, VTH, VAB, Thor, Abdo, SAO2, Sat, PR, Pulse, ...);
- the header's physical dimension and transducer fields are evidence too: a ``%`` channel is
  oximetry, ``bpm`` is a rate (never ECG), a thermistor is airflow, a cannula is pressure.

Each canonical channel then takes, in this order: the user's channel map; a cohort table when
the label set is recognised as a known cohort (labels such as "EEG2" mean different things in
SHHS and MESA, and some cohort documents state that a bare "C3" is already C3-A2); the best
direct match by structure (a label with the expected reference first, then the other ear, then no
stated reference); a derivation from monopolar channels (C3 - M2, E1 - M2, Chin1 - Chin2,
ECG L - ECG R); and only when nothing better exists a stand-in (the other side's central EEG, Cz,
then same-side frontal/occipital leads; the other eye's EOG), reported as a substitute with the
reason.

Position channels are decoded with explicit, named vendor maps (`POSITION_MAPS`) into the
SleepLM codes 0 Right, 1 Left, 2 Supine, 3 Prone, 4 Upright, -1 unknown.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sleeplm.errors import ChannelMappingError
from sleeplm.io.recording import CANONICAL_CHANNELS, POSITION_CODES

__all__ = [
    "EXTRA_SIGNALS",
    "MONTAGES",
    "POSITION_MAPS",
    "ChannelSource",
    "LabelInfo",
    "normalize_label",
    "parse_label",
    "recognize_montage",
    "map_channels",
    "map_hint",
    "parse_channel_map",
    "parse_position_map",
    "decode_position",
    "guess_position_map",
]

logger = logging.getLogger(__name__)

# Extra signals kept in physical units for the measurements (not fed to SleepLM).
EXTRA_SIGNALS = ("SpO2", "HR", "Snore", "Pressure", "Light")

# Cohort tables: labels whose meaning depends on the cohort (checked before the label structure).
# CFS and CHAT: their montage documents (nsrr/cfs-documentation and nsrr/chat-documentation,
# pages/equipment/montage-and-sampling-rate-information.md) state that the channel "C3" holds C3/A2
# (C3/M2 in CHAT), "LOC" LOC/A2, "EMG1" EMG1/EMG2, "Lchin" Lchin/Cchin and "ECG1" ECG1/ECG2 (ECG1/ECG3):
# there a bare electrode name is already a derivation and must not be re-referenced.
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
    "cfs": {"EEG_C3_A2": "C3", "EEG_C4_A1": "C4", "EOG_Left": "LOC", "EOG_Right": "ROC", "EMG_Chin": "EMG1",
            "ECG": "ECG1"},
    "chat": {"EEG_C3_A2": "C3", "EEG_C4_A1": "C4", "EMG_Chin": "Lchin", "ECG": "ECG1"},
}
# Cohort stand-ins: the cohort lacks the channel; the closest one it has fills in, with a warning.
MONTAGE_SUBSTITUTES: dict[str, dict[str, str]] = {
    "mesa": {"EEG_C3_A2": "EEG3"},
    "sleep-edf": {"EEG_C3_A2": "EEG Fpz-Cz", "EEG_C4_A1": "EEG Pz-Oz", "EOG_Left": "EOG horizontal"},
}
# Labels that identify the cohort: every group must have one of its labels present.
_MONTAGE_SIGNATURES = {
    "shhs": (("EEG",), ("EEG(sec)", "EEG2", "EEG 2", "EEG sec")),
    "mesa": (("EEG1",), ("EEG2",), ("EEG3",)),
    "sleep-edf": (("EEG Fpz-Cz",), ("EEG Pz-Oz",)),
    "cfs": (("THOR EFFORT",), ("ABDO EFFORT",), ("EMG1",), ("EMG2",), ("C3",), ("LOC",)),
    "chat": (("Lchin",), ("Cchin",), ("C3",), ("E1",), ("M2",)),
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


# ---- label structure -----------------------------------------------------------------------------

# EDF+ signal label convention: "<type> <sensor>" with the type among these.
_TYPE_PREFIX = re.compile(r"^\s*(EEG|EOG|EMG|ECG|EKG|Resp|SaO2|SpO2)[\s.]+(\S.*)$", re.IGNORECASE)
# The same type word joined by a separator ("EOG-L", "ECG-LA-RA", "EEG_C3_A2").
_TYPE_PREFIX_JOINED = re.compile(r"^\s*(EEG|EOG|EMG|ECG|EKG)[-_:](\S.*)$", re.IGNORECASE)
_KIND_OF_PREFIX = {"eeg": "eeg", "eog": "eog", "emg": "emg", "ecg": "ecg", "ekg": "ecg", "resp": "resp",
                   "sao2": "spo2", "spo2": "spo2"}
_SEPARATOR = re.compile(r"\s*[-_:/]\s*")
# 10-20/10-10 scalp sites: letters for the region, an odd number on the left, even on the right, z midline.
_SCALP = re.compile(r"(fp|af|f|fc|ft|c|cp|t|tp|p|po|o)([1-9]|10|z)(2?)")
_EARS = {"a1": "L", "a2": "R", "m1": "L", "m2": "R"}
_LINKED_EARS = {"a1a2", "a2a1", "m1m2", "m2m1", "le", "lm", "cle", "ler", "linkedears", "linkedmastoids"}
_UNKNOWN_REFERENCE = {"ref", "avg", "car", "cms", "gnd", "pg1", "pg2", "x"}
# Eye electrodes and EOG channels by side; "bare" electrode names are monopolar (to the recording reference).
_EYE_BARE = {"e1": "L", "loc": "L", "e2": "R", "roc": "R"}
_EYE_CHANNEL = {
    "eog1": "L", "eogl": "L", "leog": "L", "eogleft": "L", "lefteye": "L", "lefthoriz": "L", "eoglefthoriz": "L",
    "eogg": "L", "eoggauche": "L",
    "eog2": "R", "eogr": "R", "reog": "R", "eogright": "R", "righteye": "R", "righthoriz": "R", "eogrighthoriz": "R",
    "eogdt": "R", "eogdroit": "R",
}
_EYE_TYPED = {"l": "L", "left": "L", "r": "R", "right": "R"}  # after an "EOG " prefix
_EYE_UNSIDED = {"eog", "horizontal", "eoghorizontal", "horiz", "heog", "eogh"}
# Chin EMG: a complete channel, or one electrode of a chin pair (numbered or sided).
_CHIN_CHANNEL = {"emg", "chin", "emgchin", "chinemg", "submental", "emgsubmental", "subm", "emgsubm", "mentalis"}
_CHIN_ELECTRODE = re.compile(r"(?:emg)?(?:chin|subm)\s*([1-3lrc])|([lrc])chin")
_EMG_CHANNEL = re.compile(r"emg([1-9])")
_NOT_CHIN = ("leg", "tib", "arm", "intercos", "diaph", "masseter", "frontalis", "lat", "rat")
_ECG = re.compile(r"(?:ecg|ekg)(.*)")
_ECG_LEAD = {"", "i", "ii", "iii", "v1", "v2", "v5", "lead", "leadii", "modv2"}
_ECG_ELECTRODE_ORDER = ("l", "la", "ll", "lf", "1", "r", "ra", "rl", "2", "3")
_GENERIC_EEG = re.compile(r"eeg(sec|\d|\d\d)?|sec|\d")
# Labels that are never a sleep signal (impedances, device channels, markers, CPAP settings...).
_NOT_A_SIGNAL = ("impedan", "battery", "voltage", "marker", "event", "temp", "status", "axis", "elevation",
                 "activity", "leak", "mask", "cpap", "phase", "limitation", "waveform", "pleth")
_NOT_A_SIGNAL_EXACT = {"imp", "stat", "oxstat", "k", "sum", "vtot", "ripsum", "cripsum", "pwa", "dc3", "dc8"}

# Named signals: full-match patterns on the label without its type prefix, best first.
_NAMED: dict[str, tuple[str, ...]] = {
    "ABD": (r"(?:resp|effort|belt|rip|inductance)*(?:abd|abdo|abdom|abdomen|abdominal|addome)"
            r"(?:res|effort|rip|belt|movement|movements)?", r"vab", r"abd\w*"),
    "THX": (r"(?:resp|effort|belt|rip|inductance)*(?:thx|tho|thor|thora|thorax|thoracic|chest|ribcage|torace)"
            r"(?:res|effort|rip|belt|movement|movements)?", r"vth", r"(?:thor|thx|chest)\w*"),
    "AF": (r"(?:resp)?(?:af|airflow|flow|therm|thermistor|thermal|oronasal|nasaloral|oronasaltherm|"
           r"oronasalthermistor|oralthermistor|flowth|flusso|newair|naf\d?|nasalflow|oralflow|flowpatient\d?|"
           r"airflowthermistor|thermflow)", r"\w*therm\w*|\w*airflow\w*"),
    "Pressure": (r"(?:resp)?(?:pres|pressure|nasalpressure|nasalpres|naspres|npre|npres|cannula|cannulaflow|"
                 r"nasalcannula|pflow|flowpressure|nasal|naf\d?p\w*|ptaf|presionnasal)",
                 r"\w*(?:cannula|nasalpres|naspres)\w*"),
    "SpO2": (r"spo2|sao2|sat|saturation|osat|oxygensaturation|spo2\d|sao2\d|so2", r"(?:spo2|sao2)\w+",
             r"\w+(?:spo2|sao2)"),
    "HR": (r"hr|heartrate|pr|pulserate|pulseratebpm|hrate", r"pulse|pulso", r"dhr|derivedhr"),
    "Snore": (r"snore|snoring|snoremic|snoresensor", r"mic|microphone|sound|phono|tracheal\w*", r"audio\w*"),
    "POS": (r"pos|position|bodyposition|bodypos|body|posizione|possensor|positionsensor|posangle", r"pos\w*"),
    "Light": (r"light|lights|lightoff|lightsoff|lightsensor|lux",),
}
_RESP_TARGETS = {"ABD", "THX", "AF", "Pressure", "Snore"}
_RATE_UNITS = {"bpm", "/min", "1/min", "beats/min", "b/min", "beat/min", "min-1", "1/mn", "puls/min", "bmp"}
_PERCENT_UNITS = {"%", "percent", "%sat", "%spo2", "%sao2"}
_VOLT_UNITS = {"uv", "mv", "v", "nv"}


def normalize_label(label: str) -> str:
    """Lower-case a channel label and drop spaces/punctuation: ``"EEG C3-M2"`` -> ``"eegc3m2"``.

    Examples
    --------
    >>> normalize_label("EEG C3-M2"), normalize_label("SpO2 (%)"), normalize_label("EMG µV")
    ('eegc3m2', 'spo2', 'emguv')
    """
    return re.sub(r"[^0-9a-z]", "", label.lower().replace("µ", "u").replace("μ", "u"))


@dataclass(frozen=True)
class LabelInfo:
    """What a channel label (and its header fields) says about the signal.

    Attributes
    ----------
    label : the label as written in the file.
    kind : signal type from the EDF type prefix ("eeg", "eog", "emg", "ecg", "resp", "spo2"), or None.
    name : the label without its type prefix, normalised (see `normalize_label`).
    parts : normalised derivation parts, ``(active,)`` or ``(active, reference)``.
    unit : physical dimension, lower case without spaces (``"uv"``, ``"%"``, ``"bpm"``).
    transducer : transducer field, lower case.
    """

    label: str
    kind: str | None
    name: str
    parts: tuple[str, ...]
    unit: str = ""
    transducer: str = ""


def parse_label(label: str, unit: str = "", transducer: str = "") -> LabelInfo:
    """Split a label into its EDF type prefix and derivation parts.

    Examples
    --------
    >>> parse_label("EOG EOG1-A1").kind, parse_label("EOG EOG1-A1").parts
    ('eog', ('eog1', 'a1'))
    >>> parse_label("C3A2").parts
    ('c3', 'a2')
    """
    match = _TYPE_PREFIX.match(label) or _TYPE_PREFIX_JOINED.match(label)
    kind, rest = (_KIND_OF_PREFIX[match.group(1).lower()], match.group(2)) if match else (None, label)
    if not normalize_label(rest):  # "SpO2 %": a unit after the name, not a type prefix
        kind, rest = None, label
    parts = tuple(p for p in (normalize_label(piece) for piece in _SEPARATOR.split(rest.strip())) if p)
    if len(parts) == 1:  # "C3A2": site and ear reference written together
        glued = re.fullmatch(r"(.+?)(a[12]|m[12])", parts[0])
        if glued and _SCALP.fullmatch(glued.group(1)):
            parts = (glued.group(1), glued.group(2))
    elif len(parts) == 2 and None in (_electrode(parts[0], kind), _electrode(parts[1], kind)) \
            and _electrode(normalize_label(rest), kind) is not None:
        parts = (normalize_label(rest),)  # "L-EOG": one name written with a separator, not a derivation
    unit_norm = re.sub(r"\s+", "", unit.lower().replace("µ", "u").replace("μ", "u"))
    return LabelInfo(label, kind, normalize_label(rest), parts or ("",), unit_norm, transducer.lower().strip())


@dataclass(frozen=True)
class _Electrode:
    """One derivation part: what it is ("scalp", "ear", "eye", "eye_unsided", "chin", "chin_electrode",
    "emg_channel", "ecg", "ecg_electrode", "unknown_ref"), its side ("L", "R", "Z", "both") and key."""

    kind: str
    side: str | None = None
    key: str = ""
    bare: bool = False


def _electrode(part: str, label_kind: str | None) -> _Electrode | None:
    if label_kind in (None, "eeg"):
        scalp = _SCALP.fullmatch(part)
        if scalp:
            number = scalp.group(2)
            side = "Z" if number == "z" else ("L" if int(number) % 2 else "R")
            return _Electrode("scalp", side, scalp.group(1) + number + scalp.group(3))
    if label_kind in (None, "eeg", "eog"):
        if part in _EARS:
            return _Electrode("ear", _EARS[part], part)
        if part in _LINKED_EARS:
            return _Electrode("ear", "both", part)
        if part in _UNKNOWN_REFERENCE:
            return _Electrode("unknown_ref", None, part)
    if label_kind in (None, "eog"):
        if part in _EYE_BARE:
            return _Electrode("eye", _EYE_BARE[part], part, bare=True)
        if part in _EYE_CHANNEL:
            return _Electrode("eye", _EYE_CHANNEL[part], part)
        if label_kind == "eog" and part in _EYE_TYPED:
            return _Electrode("eye", _EYE_TYPED[part], part)
        if part in _EYE_UNSIDED or (label_kind == "eog" and part.startswith("horiz")):
            return _Electrode("eye_unsided", None, part)
    if label_kind in (None, "emg") and not any(word in part for word in _NOT_CHIN):
        if part in _CHIN_CHANNEL:
            return _Electrode("chin", None, part)
        chin = _CHIN_ELECTRODE.fullmatch(part)
        if chin:
            return _Electrode("chin_electrode", None, chin.group(1) or chin.group(2))
        numbered = _EMG_CHANNEL.fullmatch(part)
        if numbered:
            return _Electrode("emg_channel", None, numbered.group(1))
    if label_kind in (None, "ecg"):
        ecg = _ECG.fullmatch(part)
        suffix = ecg.group(1) if ecg else (part if label_kind == "ecg" else None)
        if suffix is not None:
            if suffix in _ECG_ELECTRODE_ORDER:
                return _Electrode("ecg_electrode", None, suffix)
            if suffix in _ECG_LEAD or label_kind == "ecg":
                return _Electrode("ecg", None, suffix)
    if label_kind == "eeg" and _GENERIC_EEG.fullmatch(part):
        return _Electrode("eeg_generic", None, part)
    if label_kind is None and _GENERIC_EEG.fullmatch(part) and part.startswith("eeg"):
        return _Electrode("eeg_generic", None, part)
    return None


def _unit_kind(unit: str) -> str | None:
    if unit in _RATE_UNITS:
        return "rate"
    if unit in _PERCENT_UNITS:
        return "percent"
    if unit in _VOLT_UNITS:
        return "volt"
    return None


def _excluded(info: LabelInfo) -> bool:
    if "spo2" in info.name or "sao2" in info.name:  # e.g. "Pleth SpO2": the saturation, not the waveform
        return info.name in _NOT_A_SIGNAL_EXACT
    return info.name in _NOT_A_SIGNAL_EXACT or any(word in info.name for word in _NOT_A_SIGNAL)


def _transducer_kind(transducer: str) -> tuple[bool, bool]:
    """(thermal airflow sensor, pressure sensor) according to a transducer field."""
    transducer = transducer.lower()
    thermal = any(word in transducer for word in ("thermistor", "thermocouple", "thermal", "thermisense"))
    return thermal, not thermal and any(word in transducer for word in ("cannula", "pressure"))


def _transducer_contradicts(target: str, transducer: str) -> bool:
    """True when the header says the sensor is of another kind than `target` (e.g. a cannula for airflow)."""
    thermal, pressure = _transducer_kind(transducer)
    return (target == "AF" and pressure) or (target == "Pressure" and thermal)


def _named_rank(info: LabelInfo, target: str) -> int | None:
    """Rank (0 best) of `info` as the named signal `target`, from its name, unit and transducer."""
    if _excluded(info) or info.kind in ("eeg", "eog", "emg", "ecg"):
        return None
    if info.kind == "resp" and target not in _RESP_TARGETS:
        return None
    if info.kind == "spo2" and target != "SpO2":
        return None
    by_unit = _unit_kind(info.unit)
    if by_unit == "rate" and target != "HR":  # a rate in beats per minute: pulse rate, never ECG or flow
        return None
    if by_unit == "percent" and target != "SpO2":
        return None
    if by_unit == "volt" and target in ("SpO2", "HR"):  # a waveform in volts is not a saturation or a rate
        return None
    names = [info.name] + ([info.parts[0]] if len(info.parts) > 1 else [])
    rank = next((i for i, pattern in enumerate(_NAMED[target]) for name in names if re.fullmatch(pattern, name)), None)
    thermal, pressure = _transducer_kind(info.transducer)
    if _transducer_contradicts(target, info.transducer):
        return None
    if rank is None:  # nothing in the name: the header fields alone may still say what it is
        if (target == "AF" and thermal) or (target == "Pressure" and pressure):
            return 5
        if target == "SpO2" and by_unit == "percent":
            return 8
        if target == "HR" and by_unit == "rate":
            return 8
    elif target == "HR" and by_unit == "rate":
        rank = 0
    return rank


# ---- from structure to SleepLM channels ------------------------------------------------------------

# Ranks of a candidate (lower is better): 0 the expected derivation, 1 referenced to the other ear,
# 2 derived from monopolar channels, 3 no stated reference, 4 one electrode of a pair; from
# _STAND_IN on, a stand-in for a channel the file lacks (reported as a substitute with its reason).
_DERIVED_RANK = 2
_STAND_IN = 10
_SIDE = {"EEG_C3_A2": "L", "EEG_C4_A1": "R", "EOG_Left": "L", "EOG_Right": "R"}
_OTHER_SIDE = {"L": "R", "R": "L"}
_CENTRAL = {"L": "c3", "R": "c4"}
_SIDE_WORD = {"L": "left", "R": "right"}
# Stand-in tiers for a missing central EEG, by the region of the stand-in's active electrode.
_REGION_TIER = {"f": 12, "fc": 12, "c": 12, "cp": 13, "p": 13, "o": 13, "po": 13, "t": 14, "tp": 14, "ft": 14,
                "fp": 14, "af": 14}


@dataclass(frozen=True)
class _Candidate:
    rank: int
    note: str | None = None  # why this choice is less than exact (a warning), or why it stands in


def _reference_fit(reference: _Electrode | None, side: str) -> int | None:
    """0 opposite or linked ears, 1 same-side ear, 3 no or unknown reference; None if not a reference."""
    if reference is None or reference.kind == "unknown_ref":
        return 3
    if reference.kind == "ear":
        return 0 if reference.side in (_OTHER_SIDE[side], "both") else 1
    return None


def _reference_note(fit: int, label: str, target: str) -> str | None:
    if fit == 1:
        return f"'{label}' is referenced to the ear on its own side; SleepLM's {target} uses the opposite ear"
    if fit == 3:
        return f"'{label}' used as {target} without its reference electrode"
    return None


def _eeg_candidate(label: str, active: _Electrode, reference: _Electrode | None, target: str) -> _Candidate | None:
    side = _SIDE[target]
    if active.kind == "eeg_generic":
        return _Candidate(19, "an EEG channel whose electrodes the label does not name")
    if active.kind != "scalp":
        return None
    fit = _reference_fit(reference, side)
    bipolar = reference is not None and reference.kind == "scalp"
    if fit is None and not bipolar:
        return None
    if active.key == _CENTRAL[side] and not bipolar:
        return _Candidate(fit, _reference_note(fit, label, target))
    region = _SCALP.fullmatch(active.key).group(1)
    if bipolar:
        return _Candidate(18, "a bipolar EEG derivation between two scalp sites")
    if active.key == _CENTRAL[_OTHER_SIDE[side]]:
        return _Candidate(_STAND_IN, f"the {_SIDE_WORD[_OTHER_SIDE[side]]} central EEG")
    if region == "c" and active.side == "Z":
        return _Candidate(11, "the midline central EEG")
    tier = _REGION_TIER.get(region, 14)
    if active.side == "Z":
        return _Candidate(max(tier, 14) + 1, "a midline EEG lead")
    if active.side == side:
        return _Candidate(tier, f"a {_SIDE_WORD[side]}-side EEG lead")
    return _Candidate(tier + 4, f"a {_SIDE_WORD[active.side]}-side EEG lead")


def _eog_candidate(label: str, active: _Electrode, reference: _Electrode | None, target: str) -> _Candidate | None:
    side = _SIDE[target]
    if active.kind == "eye_unsided" or (active.kind == "eye" and reference is not None and reference.kind == "eye"):
        return _Candidate(11, "a horizontal EOG between both eyes") if target == "EOG_Left" else None
    if active.kind != "eye":
        return None
    if reference is not None and reference.kind not in ("ear", "unknown_ref", "scalp"):
        return None
    fit = _reference_fit(reference, side)
    if fit is None:  # referenced to a scalp site (e.g. E1-Fpz)
        fit = 3
    if active.side != side:
        return _Candidate(_STAND_IN, f"the {_SIDE_WORD[active.side]} EOG")
    if reference is None and not active.bare:  # an EOG channel named by its side ("EOG(L)", "EOG1")
        fit = 0
    return _Candidate(fit, _reference_note(fit, label, target))


def _emg_candidate(label: str, parts: tuple[str, ...], electrodes: list[_Electrode | None]) -> _Candidate | None:
    first = electrodes[0]
    if len(parts) == 2:
        second = electrodes[1]
        kinds = {e.kind for e in electrodes if e is not None}
        if first is not None and second is not None and kinds <= {"chin_electrode", "emg_channel", "chin"}:
            return _Candidate(0)
        if first is not None and first.kind == "chin_electrode" and parts[1] in ("l", "r", "c"):
            return _Candidate(0)  # "cchin_l": centre chin referenced to left chin
        if all(part in ("1", "2", "3", "f") for part in parts):
            return _Candidate(0)  # chin electrodes numbered 1, 2 and F ("1-2", "1-F")
        return None
    if first is None:
        return None
    if first.kind == "chin":
        return _Candidate(0)
    if first.kind == "emg_channel":
        return _Candidate(3 + int(first.key) / 10)  # the lowest-numbered EMG channel first
    if first.kind == "chin_electrode":
        return _Candidate(4, f"'{label}' is one chin electrode, used without its pair")
    return None


def _ecg_candidate(label: str, info: LabelInfo, electrodes: list[_Electrode | None]) -> _Candidate | None:
    if len(info.parts) == 2:
        if all(e is not None and e.kind in ("ecg", "ecg_electrode") for e in electrodes) or info.kind == "ecg":
            return _Candidate(0)
        return None
    first = electrodes[0]
    if first is None:
        return None
    if first.kind == "ecg":
        return _Candidate(0)
    if first.kind == "ecg_electrode":
        return _Candidate(3, f"'{label}' is one ECG electrode, used without a second one")
    return None


def _candidates(info: LabelInfo) -> dict[str, _Candidate]:
    """Every channel `info` could feed, with its rank."""
    found: dict[str, _Candidate] = {}
    for target in _NAMED:
        rank = _named_rank(info, target)
        if rank is not None:
            found[target] = _Candidate(rank)
    if found or _excluded(info) or len(info.parts) > 2 or _unit_kind(info.unit) in ("rate", "percent"):
        return found
    electrodes = [_electrode(part, info.kind) for part in info.parts]
    active = electrodes[0]
    reference = electrodes[1] if len(electrodes) == 2 else None
    if len(electrodes) == 2 and reference is None:  # a reference the structure does not know
        reference = _Electrode("unrecognised", None, info.parts[1])
    if active is not None:
        for target in ("EEG_C3_A2", "EEG_C4_A1"):
            candidate = _eeg_candidate(info.label, active, reference, target)
            if candidate is not None:
                found[target] = candidate
        for target in ("EOG_Left", "EOG_Right"):
            candidate = _eog_candidate(info.label, active, reference, target)
            if candidate is not None:
                found[target] = candidate
    for target, candidate in (("EMG_Chin", _emg_candidate(info.label, info.parts, electrodes)),
                              ("ECG", _ecg_candidate(info.label, info, electrodes))):
        if candidate is not None:
            found[target] = candidate
    return found


def _monopolar(infos: list[LabelInfo]) -> dict[str, list[tuple[str, _Electrode]]]:
    """Single electrodes recorded against the amplifier's reference, by kind (for derivations)."""
    found: dict[str, list[tuple[str, _Electrode]]] = {}
    for info in infos:
        if len(info.parts) != 1 or _excluded(info):
            continue
        electrode = _electrode(info.parts[0], info.kind)
        if electrode is not None and (electrode.kind != "eye" or electrode.bare):
            found.setdefault(electrode.kind, []).append((info.label, electrode))
    return found


def _derivation(target: str, mono: dict[str, list[tuple[str, _Electrode]]], used: set[str]):
    """(active label, reference label, note) deriving `target` from monopolar channels, or None."""
    if target in _SIDE:
        side = _SIDE[target]
        kind = "scalp" if target.startswith("EEG") else "eye"
        actives = [label for label, e in mono.get(kind, []) if label not in used and e.side == side
                   and (kind == "eye" or e.key == _CENTRAL[side])]
        ears = sorted(mono.get("ear", []), key=lambda item: _reference_fit(item[1], side))
        if actives and ears:
            reference, electrode = ears[0]
            fit = _reference_fit(electrode, side)
            note = (f"derived against {reference}, the ear on the same side; SleepLM's {target} uses the opposite ear"
                    if fit == 1 else None)
            return actives[0], reference, note
        return None
    if target == "EMG_Chin":
        chin = sorted(mono.get("chin_electrode", []), key=lambda item: "1l2r3c".index(item[1].key))
        return (chin[0][0], chin[1][0], None) if len(chin) >= 2 and chin[0][0] not in used else None
    if target == "ECG":
        leads = sorted(mono.get("ecg_electrode", []), key=lambda item: _ECG_ELECTRODE_ORDER.index(item[1].key))
        return (leads[0][0], leads[1][0], None) if len(leads) >= 2 and leads[0][0] not in used else None
    return None


@dataclass
class ChannelSource:
    """Where one canonical channel (or extra signal) comes from in the file.

    Attributes
    ----------
    name : canonical channel or extra signal name.
    labels : file label(s): one for a direct or substitute match, (active, reference) for a derivation.
    kind : ``"direct"``, ``"derived"`` (active minus reference) or ``"substitute"``.
    warnings : what the user should know about this choice (for a substitute: what stands in, and why).
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
    """Name of the cohort montage whose signature labels are all present, else None.

    Examples
    --------
    >>> recognize_montage(["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"])
    'sleep-edf'
    >>> recognize_montage(["C3-M2", "C4-M1"]) is None      # AASM labels: no cohort signature
    True
    """
    present = {normalize_label(lab) for lab in labels}
    for name, signature in _MONTAGE_SIGNATURES.items():
        if all(any(normalize_label(label) in present for label in group) for group in signature):
            return name
    return None


def _user_source(name: str, label: str, labels: list[str]) -> ChannelSource:
    """The user's choice for `name`: a file label, or "A-B" for A minus B (labels matched case-insensitively)."""
    by_norm: dict[str, list[str]] = {}
    for lab in labels:
        by_norm.setdefault(normalize_label(lab), []).append(lab)

    def find(text: str) -> str | None:
        if text in labels:
            return text
        matches = by_norm.get(normalize_label(text), [])
        return matches[0] if len(matches) == 1 else None

    note = ["chosen by the user's channel map"]
    if find(label) is not None:
        return ChannelSource(name, (find(label),), warnings=note)
    for cut in [m.start() for m in re.finditer("-", label)]:
        active, reference = find(label[:cut].strip()), find(label[cut + 1:].strip())
        if active is not None and reference is not None:
            return ChannelSource(name, (active, reference), "derived", note)
    raise ChannelMappingError(
        f"the channel map maps {name!r} to {label!r}, but the file has no such channel. "
        f"Available labels: {', '.join(labels)}. Map it with {map_hint(labels, (name,))}.",
        labels=labels, wanted=(name,),
    )


def map_channels(labels, channel_map: dict[str, str] | None = None, units=None,
                 transducers=None) -> tuple[dict[str, ChannelSource], str | None]:
    """Map file channel labels onto the SleepLM channels and the extra signals.

    Parameters
    ----------
    labels : the file's signal labels (annotation channels excluded).
    channel_map : optional user override ``{canonical_or_extra: file_label}``; a label may be
        ``"A-B"`` naming two file channels to derive ``A - B``.
    units, transducers : the header's physical dimension and transducer field of each label
        (evidence: ``%`` is oximetry, ``bpm`` a rate, a thermistor airflow); optional.

    Returns
    -------
    sources : dict name -> ChannelSource for every channel found (absent names are missing).
    montage : recognised cohort montage name, or None.

    Examples
    --------
    >>> sources, _ = map_channels(["C3-A1", "EOG1-A1", "EOG2-A1", "EMG1", "VTH", "VAB", "NAF1", "SAO2", "PR"])
    >>> {name: source.description for name, source in sources.items()}["EMG_Chin"]
    'EMG1'
    >>> sources["EEG_C4_A1"].kind, sources["EEG_C4_A1"].labels
    ('substitute', ('C3-A1',))
    >>> sources, montage = map_channels(["C3-M2", "C4-M1", "E1-M2", "Chin1-Chin2", "ECG II", "SpO2"])
    >>> sources["EEG_C3_A2"].labels, sources["EOG_Left"].labels, sources["SpO2"].labels, montage
    (('C3-M2',), ('E1-M2',), ('SpO2',), None)
    >>> "AF" in sources                                   # no airflow channel in this file
    False
    >>> sources, _ = map_channels(["C3", "M2", "E1"], channel_map={"EEG_C3_A2": "C3-M2"})
    >>> sources["EEG_C3_A2"].kind, sources["EEG_C3_A2"].labels
    ('derived', ('C3', 'M2'))
    """
    labels = list(labels)
    units = list(units) if units is not None else [""] * len(labels)
    transducers = list(transducers) if transducers is not None else [""] * len(labels)
    valid = set(CANONICAL_CHANNELS) | set(EXTRA_SIGNALS)
    sources: dict[str, ChannelSource] = {}
    used: set[str] = set()

    for name, label in (channel_map or {}).items():
        if name not in valid:
            raise ChannelMappingError(
                f"the channel map names {name!r}, which is not a SleepLM channel; use one of "
                f"{', '.join(CANONICAL_CHANNELS + EXTRA_SIGNALS)}.",
                labels=labels, wanted=tuple(n for n in CANONICAL_CHANNELS if n != "POS"),
            )
        sources[name] = _user_source(name, str(label), labels)
        used.update(sources[name].labels[:1])

    by_norm: dict[str, str] = {}
    for lab in labels:
        if normalize_label(lab):  # a blank or punctuation-only label names nothing
            by_norm.setdefault(normalize_label(lab), lab)
    montage = recognize_montage(labels)
    transducer_of = dict(zip(labels, transducers))
    for name, candidates in MONTAGES.get(montage, {}).items():
        candidates = (candidates,) if isinstance(candidates, str) else candidates
        label = next((by_norm[normalize_label(c)] for c in candidates
                      if normalize_label(c) in by_norm and by_norm[normalize_label(c)] not in used
                      and not _transducer_contradicts(name, transducer_of[by_norm[normalize_label(c)]] or "")), None)
        if name not in sources and label is not None:
            sources[name] = ChannelSource(name, (label,))
            used.add(label)

    seen: set[str] = set()
    infos = []
    for lab, unit, transducer in zip(labels, units, transducers):
        if lab not in seen:  # a repeated label names its first channel (as the reader does)
            seen.add(lab)
            infos.append(parse_label(lab, unit or "", transducer or ""))
    candidates = {info.label: _candidates(info) for info in infos}
    mono = _monopolar(infos)
    for name in CANONICAL_CHANNELS + EXTRA_SIGNALS:
        if name in sources:
            continue
        ranked = sorted(
            (c.rank, i, info.label, c.note) for i, info in enumerate(infos)
            if (c := candidates[info.label].get(name)) is not None and c.rank < _STAND_IN and info.label not in used
        )
        derivation = _derivation(name, mono, used)
        if derivation is not None and (not ranked or ranked[0][0] > _DERIVED_RANK):
            active, reference, note = derivation
            sources[name] = ChannelSource(name, (active, reference), "derived", [note] if note else [])
        elif ranked:
            sources[name] = ChannelSource(name, (ranked[0][2],), warnings=[ranked[0][3]] if ranked[0][3] else [])
        if name in sources:
            used.add(sources[name].labels[0])

    # Stand-ins last, so that a true match anywhere in the file wins over a stand-in. A stand-in may
    # share its file channel with another channel (e.g. C3-A1 feeding both EEGs); an unused one is preferred.
    for name in CANONICAL_CHANNELS:
        if name in sources:
            continue
        substitute = MONTAGE_SUBSTITUTES.get(montage, {}).get(name)
        cohort_choice = by_norm.get(normalize_label(substitute)) if substitute else None
        if cohort_choice is not None:
            sources[name] = ChannelSource(name, (cohort_choice,), "substitute",
                                          [f"no {name} channel in the file; '{cohort_choice}' substituted for it "
                                           f"(the closest lead this cohort records)"])
            continue
        if name == "AF" and "Pressure" in sources and sources["Pressure"].kind == "direct":
            label = sources["Pressure"].labels[0]
            sources[name] = ChannelSource(name, (label,), "substitute", [
                f"no {name} channel in the file; '{label}' substituted for it (nasal pressure instead of airflow)"])
            continue
        if name == "EOG_Right" and sources.get("EOG_Left", ChannelSource("", ())).kind == "substitute":
            continue  # a horizontal EOG standing in for the left eye says nothing of the right one
        ranked = sorted(
            (c.rank, info.label in used, i, info.label, c.note) for i, info in enumerate(infos)
            if (c := candidates[info.label].get(name)) is not None and c.rank >= _STAND_IN
        )
        if ranked:
            _, _, _, label, why = ranked[0]
            used.add(label)
            sources[name] = ChannelSource(name, (label,), "substitute",
                                          [f"no {name} channel in the file; '{label}' substituted for it ({why})"])
    logger.debug("montage %s, mapped %s", montage, {k: v.description for k, v in sources.items()})
    return sources, montage


# What each SleepLM channel can be made of, for the hint of a channel map (see `map_hint`).
_HINT_KINDS = {
    "EEG_C3_A2": ("EEG_C3_A2", "EEG_C4_A1"), "EEG_C4_A1": ("EEG_C3_A2", "EEG_C4_A1"),
    "EOG_Left": ("EOG_Left", "EOG_Right"), "EOG_Right": ("EOG_Left", "EOG_Right"),
}


def map_hint(labels, wanted, used=()) -> str:
    """A channel map to type, filled in with the file's own labels.

    Each wanted channel lists the labels that could feed it (by structure) and every label whose
    meaning is not recognised at all; labels already used elsewhere are left out.

    Examples
    --------
    >>> map_hint(["C3-A1", "O1-A1", "Foo"], ["EEG_C3_A2"])
    'EEG_C3_A2=<one of: C3-A1, O1-A1, Foo>'
    """
    labels = [lab for lab in dict.fromkeys(labels) if lab not in set(used)]
    found = {lab: _candidates(parse_label(lab)) for lab in labels}
    unknown = [lab for lab in labels if not found[lab] and not _excluded(parse_label(lab))]
    parts = []
    for name in wanted:
        kinds = _HINT_KINDS.get(name, (name,))
        fitting = [lab for lab in labels if any(kind in found[lab] for kind in kinds)]
        choices = [lab for lab in labels if lab in fitting or lab in unknown] or labels
        parts.append(f"{name}=<one of: {', '.join(choices)}>")
    return ",".join(parts)


def _read_map_file(path: Path, what: str) -> dict:
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ChannelMappingError(f"the {what} file {path.name} could not be read ({exc}); "
                                  "write it as a flat JSON object or TOML table.") from exc
    if not isinstance(data, dict) or any(isinstance(v, (dict, list)) for v in data.values()):
        raise ChannelMappingError(f"the {what} file {path.name} must hold one flat table of NAME = VALUE pairs.")
    return data


def _map_file(spec: str, what: str) -> Path | None:
    path = Path(spec)
    if path.suffix.lower() not in (".json", ".toml"):
        return None
    if not path.is_file():
        raise ChannelMappingError(f"the {what} file {spec} does not exist; check the path.")
    return path


def parse_channel_map(spec) -> dict[str, str] | None:
    """A channel map from ``"EEG_C3_A2=C3-A1,EMG_Chin=EMG1"`` or a JSON/TOML file of such pairs.

    Examples
    --------
    >>> parse_channel_map("EEG_C3_A2=C3-A1, EMG_Chin = EMG1")
    {'EEG_C3_A2': 'C3-A1', 'EMG_Chin': 'EMG1'}
    """
    if spec is None or isinstance(spec, dict):
        return spec
    path = _map_file(spec, "channel map")
    if path is not None:
        return {str(k): str(v) for k, v in _read_map_file(path, "channel map").items()}
    mapping = {}
    for pair in filter(None, (piece.strip() for piece in spec.split(","))):
        name, sep, label = pair.partition("=")
        if not sep or not name.strip() or not label.strip():
            raise ChannelMappingError(
                f"cannot read {pair!r} in the channel map; write NAME=LABEL pairs separated by commas "
                "(e.g. EEG_C3_A2=C3-A1,EMG_Chin=EMG1) or give a .json/.toml file."
            )
        mapping[name.strip()] = label.strip()
    return mapping


def parse_position_map(spec) -> str | dict | None:
    """A position map: a name in `POSITION_MAPS`, or a JSON/TOML file of ``file code = label`` pairs.

    Examples
    --------
    >>> parse_position_map("mesa")
    'mesa'
    """
    if spec is None or isinstance(spec, dict):
        return spec
    path = _map_file(spec, "position map")
    if path is None:
        if spec not in POSITION_MAPS:
            raise ChannelMappingError(
                f"unknown position map {spec!r}; use one of {', '.join(sorted(POSITION_MAPS))}, or a .json/.toml "
                "file mapping the file's codes to Right, Left, Supine, Prone or Upright."
            )
        return spec
    table = {}
    for code, target in _read_map_file(path, "position map").items():
        try:
            table[int(code)] = target
        except ValueError:
            raise ChannelMappingError(
                f"the position map file {path.name} maps {code!r}; its keys must be the file's integer codes."
            ) from None
    decode_position(np.zeros(0), table)  # checks every target now, not at the first epoch
    return table


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

    Examples
    --------
    >>> import numpy as np
    >>> codes, unknown = decode_position(np.array([0, 1, 2, 9]), "mesa")   # MESA: 1 supine, 2 left
    >>> codes.tolist(), unknown
    ([0.0, 2.0, 1.0, -1.0], 0.25)
    >>> decode_position(np.array([-90.0, 0.0, 90.0]), "nox")[0].tolist()   # roll angles: right, supine, left
    [0.0, 2.0, 1.0]
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
    angles in degrees (mostly not integer codes -1..4, all within ±360), else ``"sleeplm"`` codes.

    Examples
    --------
    >>> import numpy as np
    >>> guess_position_map(np.array([2, 2, 1, 0, 2])), guess_position_map(np.array([-87.5, 3.2, 91.0]))
    ('sleeplm', 'nox')
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "sleeplm"
    is_code = (np.abs(values - np.round(values)) < 0.01) & (values >= -1) & (values <= 4)
    if is_code.mean() < 0.5 and np.abs(values).max() <= 360:
        return "nox"
    return "sleeplm"
