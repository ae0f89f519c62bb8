"""Channel layouts of common PSG systems: labels, units, rates and body-position codes.

Each montage lists its channels as `ChannelSpec` (file label, simulated source, unit, highest
rate). A channel is written at ``min(sfreq, max_rate)`` Hz, so ``sfreq`` sets the rate of the
fast channels while slow ones (SpO2, position...) keep their system's rate.

Body-position codes as each system stores them (``POSITION_ENCODINGS``; the loader's maps in
`sleeplm.io.channels.POSITION_MAPS` decode them):

============  ==================================================  ==================
montage       stored value -> position                             loader map
============  ==================================================  ==================
aasm          0 Right, 1 Left, 2 Supine, 3 Prone (SleepLM codes)   "sleeplm" (assumed)
monopolar     same as aasm                                         "sleeplm" (assumed)
shhs          0 Right, 1 Left, 2 Supine, 3 Prone (SHHS PS-2)       "shhs"
mesa          0 Right, 1 Supine, 2 Left, 3 Prone (Compumedics)     "mesa"
nox           roll angle in degrees: 0 supine, +90 left,          "nox" (recognised
              -90 right, 180 prone                                  from the angles)
sleep-edf     no position channel                                  -
brainnet      no position channel                                  -
edf-types     same as aasm                                         "sleeplm" (assumed)
============  ==================================================  ==================

Two montages carry the label styles of real files: ``brainnet`` the bare vendor labels of a
Brainnet clinical polygraph export (``C3-A1``, ``EOG1-A1``, ``EMG1``, ``NAF1``, ``VAB``, ``VTH``,
``SAO2``, ``PR``; everything at 50 Hz, as the DREAMS recordings), ``edf-types`` the EDF
standard's "type + sensor" labels (``EEG C3-A2``, ``EOG E1-M2``, ``Resp Thor``, ``SaO2 SpO2``...).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChannelSpec", "MONTAGES", "POSITION_ENCODINGS", "POSITION_MAP_NAMES", "ROLL_ANGLE_DEG"]


@dataclass(frozen=True)
class ChannelSpec:
    """One channel of a montage.

    Attributes
    ----------
    label : the channel label written to the file.
    source : the simulated signal it carries (see `sleeplm.synthetic.render_source`).
    unit : physical dimension written to the file.
    max_rate : its system's sampling rate (Hz); written at ``min(sfreq, max_rate)``.
    gain : factor from the source's unit to `unit` (e.g. 0.001 for uV -> mV, or to
        dimensionless belt/flow signals).
    """

    label: str
    source: str
    unit: str
    max_rate: int
    gain: float = 1.0


def _aasm_tail(resp_rate: int = 32) -> list[ChannelSpec]:
    """ECG, breathing, oximetry, position and snore channels shared by the AASM-style layouts."""
    return [
        ChannelSpec("ECG II", "ECG", "uV", 512),
        # Thermistor and RIP belts stored in mV, as AASM-style systems export them (not the EEG's uV).
        ChannelSpec("Airflow", "Airflow", "mV", resp_rate, gain=1e-3),
        ChannelSpec("Nasal Pressure", "Pressure", "cmH2O", resp_rate),
        ChannelSpec("Thorax", "Thorax", "mV", resp_rate, gain=1e-3),
        ChannelSpec("Abdomen", "Abdomen", "mV", resp_rate, gain=1e-3),
        ChannelSpec("SpO2", "SpO2", "%", 4),
        ChannelSpec("Pulse", "HR", "bpm", 4),
        ChannelSpec("Position", "Position", "", 1),
        ChannelSpec("Snore", "Snore", "uV", 128),
    ]


MONTAGES: dict[str, list[ChannelSpec]] = {
    "aasm": [
        ChannelSpec("C3-M2", "C3-M2", "uV", 512),
        ChannelSpec("C4-M1", "C4-M1", "uV", 512),
        ChannelSpec("E1-M2", "E1-M2", "uV", 512),
        ChannelSpec("E2-M1", "E2-M1", "uV", 512),
        ChannelSpec("Chin1-Chin2", "Chin1-Chin2", "uV", 512),
        *_aasm_tail(),
    ],
    # Referential recording: the loader has to derive C3-M2, C4-M1, E1-M2, E2-M1 and Chin1-Chin2.
    "monopolar": [
        *(ChannelSpec(name, name, "uV", 512) for name in ("C3", "C4", "M1", "M2", "E1", "E2", "Chin1", "Chin2")),
        *_aasm_tail(),
    ],
    # Sleep Heart Health Study (Compumedics PS-2) EDFs.
    "shhs": [
        ChannelSpec("SaO2", "SpO2", "%", 1),
        ChannelSpec("H.R.", "HR", "bpm", 1),
        ChannelSpec("EEG(sec)", "C3-M2", "uV", 125),
        ChannelSpec("ECG", "ECG", "mV", 250, gain=1e-3),
        ChannelSpec("EMG", "Chin1-Chin2", "uV", 125),
        ChannelSpec("EOG(L)", "E1-M2", "uV", 50),
        ChannelSpec("EOG(R)", "E2-M1", "uV", 50),
        ChannelSpec("EEG", "C4-M1", "uV", 125),
        ChannelSpec("THOR RES", "Thorax", "", 10, gain=1 / 200),
        ChannelSpec("ABDO RES", "Abdomen", "", 10, gain=1 / 200),
        ChannelSpec("POSITION", "Position", "", 1),
        ChannelSpec("LIGHT", "Light", "", 1),
        ChannelSpec("AIRFLOW", "Airflow", "", 10, gain=1 / 120),
        ChannelSpec("NEW AIR", "Pressure", "", 10),
    ],
    # Multi-Ethnic Study of Atherosclerosis (Compumedics Somte) EDFs.
    "mesa": [
        ChannelSpec("EKG", "ECG", "uV", 256),
        ChannelSpec("EOG-L", "E1-M2", "uV", 256),
        ChannelSpec("EOG-R", "E2-M1", "uV", 256),
        ChannelSpec("EMG", "Chin1-Chin2", "uV", 256),
        ChannelSpec("EEG1", "Fz-Cz", "uV", 256),
        ChannelSpec("EEG2", "Cz-Oz", "uV", 256),
        ChannelSpec("EEG3", "C4-M1", "uV", 256),
        ChannelSpec("Pres", "Pressure", "cmH2O", 32),
        ChannelSpec("Flow", "Airflow", "uV", 32),
        ChannelSpec("Snore", "Snore", "uV", 32),
        ChannelSpec("Thor", "Thorax", "uV", 32),
        ChannelSpec("Abdo", "Abdomen", "uV", 32),
        ChannelSpec("Pos", "Position", "", 32),
        ChannelSpec("HR", "HR", "bpm", 1),
        ChannelSpec("SpO2", "SpO2", "%", 1),
    ],
    # Sleep-EDF (Sleep Cassette) layout: two EEG leads, one horizontal EOG, 1-Hz respiration and EMG.
    "sleep-edf": [
        ChannelSpec("EEG Fpz-Cz", "Fpz-Cz", "uV", 100),
        ChannelSpec("EEG Pz-Oz", "Pz-Oz", "uV", 100),
        ChannelSpec("EOG horizontal", "EOG horizontal", "uV", 100),
        ChannelSpec("Resp oro-nasal", "Airflow", "", 1, gain=1 / 120),
        ChannelSpec("EMG submental", "EMG RMS", "uV", 1),
        ChannelSpec("Temp rectal", "Temp", "degC", 1),
        ChannelSpec("Event marker", "Marker", "", 1),
    ],
    # Nox A1/T3 (Noxturnal export): cannula-derived flow, no thermistor, position as a roll angle.
    "nox": [
        ChannelSpec("C3-M2", "C3-M2", "uV", 200),
        ChannelSpec("C4-M1", "C4-M1", "uV", 200),
        ChannelSpec("E1-M2", "E1-M2", "uV", 200),
        ChannelSpec("E2-M1", "E2-M1", "uV", 200),
        ChannelSpec("Chin 1-Chin 2", "Chin1-Chin2", "uV", 200),
        ChannelSpec("ECG", "ECG", "uV", 200),
        ChannelSpec("Thorax", "Thorax", "uV", 25),
        ChannelSpec("Abdomen", "Abdomen", "uV", 25),
        ChannelSpec("Nasal Pressure", "Pressure", "cmH2O", 25),
        ChannelSpec("Flow", "Cannula flow", "", 25),
        ChannelSpec("SpO2", "SpO2", "%", 3),
        ChannelSpec("Pulse", "HR", "bpm", 3),
        ChannelSpec("Position", "Position", "deg", 10),
        ChannelSpec("Audio Volume", "Snore dB", "dB", 10),
    ],
}

MONTAGES["brainnet"] = [
    ChannelSpec("C3-A1", "C3-M2", "UV", 50),
    ChannelSpec("C4-A2", "C4-M1", "UV", 50),
    ChannelSpec("EOG1-A1", "E1-M2", "UV", 50),
    ChannelSpec("EOG2-A1", "E2-M1", "UV", 50),
    ChannelSpec("EMG1", "Chin1-Chin2", "UV", 50),
    ChannelSpec("ECG", "ECG", "MV", 50, gain=1e-3),
    ChannelSpec("NAF1", "Airflow", "UV", 50),
    ChannelSpec("VAB", "Abdomen", "ML", 50, gain=1 / 40),
    ChannelSpec("VTH", "Thorax", "ML", 50, gain=1 / 40),
    ChannelSpec("SAO2", "SpO2", "%", 50),
    ChannelSpec("PR", "HR", "BPM", 50),
]
MONTAGES["edf-types"] = [
    ChannelSpec("EEG C3-A2", "C3-M2", "uV", 256),
    ChannelSpec("EEG C4-A1", "C4-M1", "uV", 256),
    ChannelSpec("EOG E1-M2", "E1-M2", "uV", 256),
    ChannelSpec("EOG E2-M1", "E2-M1", "uV", 256),
    ChannelSpec("EMG Chin", "Chin1-Chin2", "uV", 256),
    ChannelSpec("ECG ECG", "ECG", "uV", 256),
    ChannelSpec("Resp Flow", "Airflow", "uV", 32),
    ChannelSpec("Resp Pressure", "Pressure", "cmH2O", 32),
    ChannelSpec("Resp Thor", "Thorax", "uV", 32),
    ChannelSpec("Resp Abdo", "Abdomen", "uV", 32),
    ChannelSpec("SaO2 SpO2", "SpO2", "%", 4),
    ChannelSpec("HR Pulse", "HR", "bpm", 4),
    ChannelSpec("Pos Position", "Position", "", 1),
]

# How each montage stores body position: SleepLM code -> stored value, or "angle" (degrees).
POSITION_ENCODINGS: dict[str, dict[int, float] | str | None] = {
    "aasm": {0: 0, 1: 1, 2: 2, 3: 3},
    "monopolar": {0: 0, 1: 1, 2: 2, 3: 3},
    "shhs": {0: 0, 1: 1, 2: 2, 3: 3},
    "mesa": {0: 0, 1: 2, 2: 1, 3: 3},
    "nox": "angle",
    "sleep-edf": None,
    "brainnet": None,
    "edf-types": {0: 0, 1: 1, 2: 2, 3: 3},
}
# The `sleeplm.io.channels.POSITION_MAPS` entry that decodes each montage's position channel.
POSITION_MAP_NAMES = {"aasm": "sleeplm", "monopolar": "sleeplm", "shhs": "shhs", "mesa": "mesa", "nox": "nox",
                      "sleep-edf": None, "brainnet": None, "edf-types": "sleeplm"}
# Roll angle (degrees) of each SleepLM position code in the "angle" encoding.
ROLL_ANGLE_DEG = {0: -90.0, 1: 90.0, 2: 0.0, 3: 180.0}
