"""Channel recognition on the documented label sets of public sleep datasets and vendor exports.

Each case writes a tiny EDF (two 1-s records; the Brainnet case 2-s records at 50 Hz, as the
file in issue 12) with the dataset's real labels and, where the source gives them, its transducer
("sensor type") field; physical dimensions are the conventional ones (uV for electrodes, % for
oximetry, bpm for rates) where the source does not list them. The header is read back with
`read_edf_header` and mapped with its labels, transducers and dimensions; the test asserts the
FULL mapping (every SleepLM channel and extra signal found, nothing else).

Notation of the expected mapping: ``"label"`` direct, ``"A - B (v)"`` derived, ``"label (s)"`` a
stand-in (substitute).
"""

from __future__ import annotations

import numpy as np
import pytest
from edfio import Edf, EdfSignal

from sleeplm.io.channels import map_channels
from sleeplm.io.reader import read_edf_header

UV, PCT, BPM = "uV", "%", "bpm"


def ch(label: str, unit: str = "", transducer: str = "") -> tuple[str, str, str]:
    return label, unit, transducer


NSRR_GOLD = "Gold cup electrode"
NONIN = "Nonin XPOD 3011, 8000 sensor"

CORPUS: dict[str, dict] = {
    "sleep-edf": {
        "source": "PhysioNet Sleep-EDF Expanded, SC*-PSG.edf signals as listed in ayushbaid/AttendToSleep "
                  "stanford_info/README.md ('Physionet dataset') and the MNE sleep tutorial",
        "channels": [ch("EEG Fpz-Cz", UV), ch("EEG Pz-Oz", UV), ch("EOG horizontal", UV), ch("Resp oro-nasal"),
                     ch("EMG submental", UV), ch("Temp rectal", "DegC"), ch("Event marker")],
        "expected": {"EEG_C3_A2": "EEG Fpz-Cz (s)", "EEG_C4_A1": "EEG Pz-Oz (s)", "EOG_Left": "EOG horizontal (s)",
                     "AF": "Resp oro-nasal", "EMG_Chin": "EMG submental"},
    },
    "shhs-1": {
        "source": "nsrr/shhs-documentation pages/10-montage-and-sampling-rate-information-shhs1.md "
                  "(EDF Label and Sensor type columns)",
        "channels": [ch("SaO2", PCT, NONIN), ch("H.R.", BPM, NONIN), ch("EEG (sec)", UV, NSRR_GOLD),
                     ch("EEG", UV, NSRR_GOLD), ch("ECG", "mV", "Ag/AgCl patch"), ch("EOG(L)", UV, NSRR_GOLD),
                     ch("EOG(R)", UV, NSRR_GOLD), ch("EMG", UV, NSRR_GOLD),
                     ch("Thor RES", "", "Respitrace Inductance Plethysmography"),
                     ch("Abdo RES", "", "Respitrace Inducatnce Plethysmography"),
                     ch("Position", "", "Internal mercury gauge"), ch("Light", "", "External ambient light sensor"),
                     ch("New Air", "", "ProTech thermistor M325"), ch("Airflow"), ch("OX STAT", "", NONIN)],
        "expected": {"EEG_C3_A2": "EEG (sec)", "EEG_C4_A1": "EEG", "EOG_Left": "EOG(L)", "EOG_Right": "EOG(R)",
                     "EMG_Chin": "EMG", "ECG": "ECG", "THX": "Thor RES", "ABD": "Abdo RES", "AF": "Airflow",
                     "POS": "Position", "SpO2": "SaO2", "HR": "H.R.", "Light": "Light"},
    },
    "shhs-2": {
        "source": "nsrr/shhs-documentation pages/11-montage-and-sampling-rate-information-shhs2.md (SHHS2v4)",
        "channels": [ch("SaO2", PCT, NONIN), ch("PR", BPM, NONIN), ch("EEG (sec)", UV, NSRR_GOLD),
                     ch("EEG", UV, NSRR_GOLD), ch("ECG", "mV", "Ag/AgCl patch"), ch("EMG", UV, NSRR_GOLD),
                     ch("EOG(L)", UV, NSRR_GOLD), ch("EOG(R)", UV, NSRR_GOLD),
                     ch("Airflow", "", "Compumedics thermistor"),
                     ch("Thor RES", "", "Respitrace Inductance Plethysmography"),
                     ch("Abdo RES", "", "Respitrace Inductance Plethysmography"),
                     ch("Position", "", "Compumedics external sensor"),
                     ch("Light", "", "External ambient light sensor"), ch("OX STAT", "", NONIN)],
        "expected": {"EEG_C3_A2": "EEG (sec)", "EEG_C4_A1": "EEG", "EOG_Left": "EOG(L)", "EOG_Right": "EOG(R)",
                     "EMG_Chin": "EMG", "ECG": "ECG", "THX": "Thor RES", "ABD": "Abdo RES", "AF": "Airflow",
                     "POS": "Position", "SpO2": "SaO2", "HR": "PR", "Light": "Light"},
    },
    "mesa (Compumedics Profusion export)": {
        "source": "nsrr/mesa-documentation pages/equipment/montage-and-sampling-rate-information.md (channels and "
                  "sensor types); EEG/EOG/EMG EDF labels as extracted in perslev/U-Time "
                  "resources/usleep_dataset_prep/mesa.md",
        "channels": [ch("EKG", UV, "Ag/AgCl patch"), ch("EOG-L", UV, NSRR_GOLD), ch("EOG-R", UV, NSRR_GOLD),
                     ch("EMG", UV, NSRR_GOLD), ch("EEG1", UV, NSRR_GOLD), ch("EEG2", UV, NSRR_GOLD),
                     ch("EEG3", UV, NSRR_GOLD), ch("Flow", "", "Nasal Cannula"),
                     ch("Snore", "", "Nasal Cannula (vibratory)"),
                     ch("Thor", "", "Compumedics Inductive Respiratory Band"),
                     ch("Abdo", "", "Compumedics Inductive Respiratory Band"),
                     ch("Leg", UV, "Compumedics Limb Movement Sensor (Piezo)"),
                     ch("Aux_AC", "", "Salter ThermiSense 5700"), ch("Pos", "", "Built-in Device Sensor"),
                     ch("Pleth", "", "Nonin 8000 sensor"), ch("OxStatus", "", "Nonin 8000 sensor"),
                     ch("SpO2", PCT, "Nonin 8000 sensor"), ch("HR", BPM, "Nonin 8000 sensor"), ch("DHR", BPM)],
        # The cohort table maps EEG3 (C4-M1) and the EOG/EMG labels; the header's transducers put the
        # thermistor (Aux_AC) on airflow and the cannula (Flow) on nasal pressure.
        "expected": {"ECG": "EKG", "EOG_Left": "EOG-L", "EOG_Right": "EOG-R", "EMG_Chin": "EMG",
                     "EEG_C4_A1": "EEG3", "EEG_C3_A2": "EEG3 (s)", "AF": "Aux_AC", "Pressure": "Flow",
                     "THX": "Thor", "ABD": "Abdo", "SpO2": "SpO2", "HR": "HR", "POS": "Pos", "Snore": "Snore"},
    },
    "mros": {
        "source": "nsrr/mros-documentation pages/equipment-mros1.md (EDF Label, Input 2 = Fpz: monopolar leads)",
        "channels": [ch("Position", "", "Compumedics external sensor"),
                     ch("Leg L", UV, "Compumedics piezo leg leads"), ch("Leg R", UV, "Compumedics piezo leg leads"),
                     ch("C3", UV, NSRR_GOLD), ch("C4", UV, NSRR_GOLD), ch("A1", UV, NSRR_GOLD),
                     ch("A2", UV, NSRR_GOLD), ch("ROC", UV, NSRR_GOLD), ch("LOC", UV, NSRR_GOLD),
                     ch("ECG L", UV, "Ag/AgCl patch"), ch("ECG R", UV, "Ag/AgCl patch"),
                     ch("L Chin", UV, NSRR_GOLD), ch("R Chin", UV, NSRR_GOLD),
                     ch("Airflow", "", "ProTech Thermistor"), ch("SUM", "", "Compumedics Summit IP RIP"),
                     ch("Thoracic", "", "Compumedics Summit IP RIP"), ch("Abdominal", "", "Compumedics Summit IP RIP"),
                     ch("STAT", "", NONIN), ch("HR", BPM, NONIN), ch("SAO2", PCT, NONIN),
                     ch("Cannula Flow", "", "Nasal cannula"), ch("DHR", BPM, "Derived from EKG")],
        "expected": {"EEG_C3_A2": "C3 - A2 (v)", "EEG_C4_A1": "C4 - A1 (v)", "EOG_Left": "LOC - A2 (v)",
                     "EOG_Right": "ROC - A1 (v)", "ECG": "ECG L - ECG R (v)", "EMG_Chin": "L Chin - R Chin (v)",
                     "THX": "Thoracic", "ABD": "Abdominal", "AF": "Airflow", "Pressure": "Cannula Flow",
                     "SpO2": "SAO2", "POS": "Position", "HR": "HR"},
    },
    "cfs": {
        "source": "nsrr/cfs-documentation pages/equipment/montage-and-sampling-rate-information.md (CFSv2; "
                  "its Channel Derivation column: C3 is C3/A2, LOC LOC/A2, EMG1 EMG1/EMG2, ECG1 ECG1/ECG2)",
        "channels": [ch("C3", UV, NSRR_GOLD), ch("C4", UV, NSRR_GOLD), ch("A1", UV, NSRR_GOLD),
                     ch("A2", UV, NSRR_GOLD), ch("LOC", UV, NSRR_GOLD), ch("ROC", UV, NSRR_GOLD),
                     ch("ECG2", UV, "Ag/AgCl patch"), ch("ECG1", UV, "Ag/AgCl patch"), ch("EMG1", UV, NSRR_GOLD),
                     ch("EMG2", UV, NSRR_GOLD), ch("EMG3", UV, NSRR_GOLD),
                     ch("L Leg", UV, "Compumedics piezo leg leads"), ch("R Leg", UV, "Compumedics piezo leg leads"),
                     ch("Airflow", "", "Compumedics thermistor"), ch("Thor Effort", "", "Compumedics Summit IP RIP"),
                     ch("Abdo Effort", "", "Compumedics Summit IP RIP"), ch("Sum", "", "Compumedics Summit IP RIP"),
                     ch("Snore", "", "Compumedics snore mic"), ch("Position", "", "Compumedics external position sensor"),
                     ch("Ox Status", "", "Nonin 8000 sensor"), ch("Pulse", BPM, "Nonin 8000 sensor"),
                     ch("SpO2", PCT, "Nonin 8000 sensor"), ch("Nasal Pres", "", "Nasal cannula")],
        "expected": {"EEG_C3_A2": "C3", "EEG_C4_A1": "C4", "EOG_Left": "LOC", "EOG_Right": "ROC", "ECG": "ECG1",
                     "EMG_Chin": "EMG1", "THX": "Thor Effort", "ABD": "Abdo Effort", "AF": "Airflow",
                     "Pressure": "Nasal Pres", "SpO2": "SpO2", "HR": "Pulse", "POS": "Position", "Snore": "Snore"},
    },
    "chat": {
        "source": "nsrr/chat-documentation pages/equipment/montage-and-sampling-rate-information.md (C3 is C3/M2, "
                  "E1 is E1/FPz, Lchin Lchin/Cchin, ECG1 ECG1/ECG3)",
        "channels": [ch("E1", UV, NSRR_GOLD), ch("E2", UV, NSRR_GOLD), ch("F3", UV, NSRR_GOLD),
                     ch("F4", UV, NSRR_GOLD), ch("C3", UV, NSRR_GOLD), ch("C4", UV, NSRR_GOLD),
                     ch("T3", UV, NSRR_GOLD), ch("T4", UV, NSRR_GOLD), ch("O1", UV, NSRR_GOLD),
                     ch("O2", UV, NSRR_GOLD), ch("M1", UV, NSRR_GOLD), ch("M2", UV, NSRR_GOLD),
                     ch("Lchin", UV), ch("Rchin", UV), ch("Cchin", UV), ch("ECG1", UV), ch("ECG2", UV),
                     ch("ECG3", UV), ch("RLeg1", UV), ch("Rleg2", UV), ch("LLeg1", UV), ch("LLeg2", UV),
                     ch("Airflow", "", "Dymedix airflow with RERA-quality cable"),
                     ch("Cannula Flow", "", "Salter or Protech Cannual (Dual-end for NP & CO2)"),
                     ch("Chest", "", "Protech Z-Rip System"), ch("ABD", "", "Protech Z-Rip System"),
                     ch("SUM", "", "Protech Z-Rip System"), ch("SpO2", PCT, "Nonin 8000J (or comparable)"),
                     ch("Pleth", "", "Nonin 8000J (or comparable)"), ch("Position"), ch("Cap"), ch("EtCO2"),
                     ch("Snore", UV)],
        "expected": {"EEG_C3_A2": "C3", "EEG_C4_A1": "C4", "EMG_Chin": "Lchin", "ECG": "ECG1",
                     "EOG_Left": "E1 - M2 (v)", "EOG_Right": "E2 - M1 (v)", "AF": "Airflow",
                     "Pressure": "Cannula Flow", "THX": "Chest", "ABD": "ABD", "SpO2": "SpO2", "POS": "Position",
                     "Snore": "Snore"},
    },
    "wsc (Grass Comet)": {
        "source": "nsrr/wsc-documentation pages/montage-and-sampling-rate-information.md (Grass Comet, 2009-)",
        "channels": [ch("E1", UV), ch("E2", UV), ch("F3_M2", UV), ch("Fz_M2", UV), ch("Cz_M2", UV),
                     ch("C3_M2", UV), ch("Pz_M2", UV), ch("O1_M2", UV), ch("cchin_l", UV), ch("lleg_r", UV),
                     ch("ECG", UV), ch("snore", "", "Pro-Tech snore sensor"),
                     ch("flow", "", "Dymedix disposible oral nasal airflow sensor"),
                     ch("nas_pres", "", "Pro-tech nasal pressure transducer"),
                     ch("thorax", "", "Pro-Tech Z-Rip inductance plethysmography summation system"),
                     ch("abdomen", "", "Pro-Tech Z-Rip inductance plethysmography summation system"),
                     ch("sum", "", "Pro-Tech Z-Rip inductance plethysmography summation system"),
                     ch("position", "", "Natus Neurology DC body position sensor"),
                     ch("spo2", PCT, "Ohmeda 3900 Oximeter with a 3 second averaging rate")],
        "expected": {"EEG_C3_A2": "C3_M2", "EEG_C4_A1": "C3_M2 (s)", "EOG_Left": "E1", "EOG_Right": "E2",
                     "EMG_Chin": "cchin_l", "ECG": "ECG", "Snore": "snore", "AF": "flow", "Pressure": "nas_pres",
                     "THX": "thorax", "ABD": "abdomen", "POS": "position", "SpO2": "spo2"},
    },
    "wsc (Grass Heritage)": {
        "source": "nsrr/wsc-documentation pages/montage-and-sampling-rate-information.md (Grass Heritage, 2000-2009)",
        "channels": [ch("E1", UV), ch("E2", UV), ch("C3_M2", UV), ch("O1_M2", UV), ch("chin", UV),
                     ch("lleg_r", UV), ch("snore", "", "Microphone"), ch("ECG", UV),
                     ch("nasalflow", "", "Thermistor"), ch("oralflow", "", "Thermistor"),
                     ch("nas_pres", "", "Transducer"), ch("thorax", "", "Respiratory inductance plethysmography"),
                     ch("abdomen", "", "Respiratory inductance plethysmography"),
                     ch("sum", "", "Respiratory inductance plethysmography"), ch("position", "", "Body Position"),
                     ch("spo2", PCT, "Oximeter")],
        "expected": {"EEG_C3_A2": "C3_M2", "EEG_C4_A1": "C3_M2 (s)", "EOG_Left": "E1", "EOG_Right": "E2",
                     "EMG_Chin": "chin", "ECG": "ECG", "Snore": "snore", "AF": "nasalflow", "Pressure": "nas_pres",
                     "THX": "thorax", "ABD": "abdomen", "POS": "position", "SpO2": "spo2"},
    },
    "cap": {
        "source": "a CAP Sleep Database recording (PhysioNet capslpdb) as read by public CAP scripts: ROC-LOC, "
                  "Fp2-F4, F4-C4, C4-P4, C4-A1, P4-O2, EMG1-EMG2, ECG1-ECG2 (also the FieldTrip sleep "
                  "tutorial on brux1.edf: C4-A1, ROC-LOC, EMG1-EMG2, ECG1-ECG2)",
        "channels": [ch("ROC-LOC", UV), ch("Fp2-F4", UV), ch("F4-C4", UV), ch("C4-P4", UV), ch("C4-A1", UV),
                     ch("P4-O2", UV), ch("EMG1-EMG2", UV), ch("ECG1-ECG2", "mV")],
        "expected": {"EEG_C4_A1": "C4-A1", "EEG_C3_A2": "C4-A1 (s)", "EOG_Left": "ROC-LOC (s)",
                     "EMG_Chin": "EMG1-EMG2", "ECG": "ECG1-ECG2"},
    },
    "dreams": {
        "source": "DREAMS Subjects database (Université de Mons), excerpt*.edf labels as listed by public "
                  "DREAMS loaders in the GitHub code index (SIGNAL_LABELS; visbrain's mne_switch test on excerpt2.edf)",
        "channels": [ch(label, UV) for label in ("ECG", "FP1-A2", "CZ-A1", "EMG1", "EOG1")]
        + [ch("VTH"), ch("VAB"), ch("NAF2P-A1"), ch("NAF1"), ch("PHONO"), ch("PR", BPM), ch("SAO2", PCT),
           ch("PCPAP"), ch("POS")]
        + [ch(label, UV) for label in ("EOG2", "O1-A2", "FP2-A1", "O2-A1", "CZ2-A1", "EMG2", "PULSE")]
        + [ch("VTOT"), ch("EMG3", UV)],
        "expected": {"ECG": "ECG", "EEG_C3_A2": "CZ-A1 (s)", "EEG_C4_A1": "CZ2-A1 (s)", "EMG_Chin": "EMG1",
                     "EOG_Left": "EOG1", "EOG_Right": "EOG2", "THX": "VTH", "ABD": "VAB", "Pressure": "NAF2P-A1",
                     "AF": "NAF1", "Snore": "PHONO", "HR": "PR", "SpO2": "SAO2", "POS": "POS"},
    },
    "isruc": {
        "source": "ISRUC-Sleep (PhysioNet isruc-sleep 1.0.0) EEG/EOG labels as extracted in perslev/U-Time "
                  "resources/usleep_dataset_prep/isruc-sg1.md (its other channels are not listed there)",
        "channels": [ch(label, UV) for label in ("F3-M2", "C3-M2", "O1-M2", "F4-M1", "C4-M1", "O2-M1", "E1-M2",
                                                 "E2-M1")],
        "expected": {"EEG_C3_A2": "C3-M2", "EEG_C4_A1": "C4-M1", "EOG_Left": "E1-M2", "EOG_Right": "E2-M1"},
    },
    "mass ss1": {
        "source": "Montreal Archive of Sleep Studies SS1 EDF labels (SS1_Channels of a public MASS loader in the "
                  "GitHub code index)",
        "channels": [ch(label, UV) for label in (
            "EOG Left Horiz", "EOG Right Horiz", "EMG Chin1", "EMG Chin2", "EMG Chin3", "EEG F3-CLE", "EEG F4-CLE",
            "EEG C3-CLE", "EEG C4-CLE", "EEG O1-CLE", "EEG O2-CLE", "ECG ECGI", "EMG Ant Tibial L",
            "EMG Ant Tibial R")]
        + [ch("Resp Thermistor"), ch("Resp Cannula"), ch("Resp Belt Thor"), ch("Resp Belt Abdo")]
        + [ch(label, UV) for label in ("EEG F7-CLE", "EEG F8-CLE", "EEG T3-CLE", "EEG T4-CLE", "EEG T5-CLE",
                                       "EEG T6-CLE", "EEG P3-CLE", "EEG P4-CLE", "EEG Fz-CLE", "EEG Cz-CLE",
                                       "EEG Pz-CLE", "EEG A2-CLE")]
        + [ch("SaO2 SaO2", PCT)],
        "expected": {"EOG_Left": "EOG Left Horiz", "EOG_Right": "EOG Right Horiz",
                     "EMG_Chin": "EMG Chin1 - EMG Chin2 (v)", "EEG_C3_A2": "EEG C3-CLE", "EEG_C4_A1": "EEG C4-CLE",
                     "ECG": "ECG ECGI", "AF": "Resp Thermistor", "Pressure": "Resp Cannula", "THX": "Resp Belt Thor",
                     "ABD": "Resp Belt Abdo", "SpO2": "SaO2 SaO2"},
    },
    "mass ss3": {
        "source": "MASS SS3 EDF labels (perslev/U-Time resources/usleep_dataset_prep/mass-c3.md and SS3_Channels "
                  "of a public MASS loader)",
        "channels": [ch(label, UV) for label in (
            "EOG Left Horiz", "EOG Right Horiz", "EEG Fp1-LER", "EEG Fp2-LER", "EEG F7-LER", "EEG F8-LER",
            "EEG F3-LER", "EEG F4-LER", "EEG T3-LER", "EEG T4-LER", "EEG C3-LER", "EEG C4-LER", "EEG T5-LER",
            "EEG T6-LER", "EEG P3-LER", "EEG P4-LER", "EEG O1-LER", "EEG O2-LER", "EEG Fz-LER", "EEG Cz-LER",
            "EEG Pz-LER", "EEG Oz-LER", "EEG A2-LER", "EMG Chin1", "EMG Chin2", "EMG Chin3", "ECG ECGI")],
        "expected": {"EOG_Left": "EOG Left Horiz", "EOG_Right": "EOG Right Horiz", "EEG_C3_A2": "EEG C3-LER",
                     "EEG_C4_A1": "EEG C4-LER", "EMG_Chin": "EMG Chin1 - EMG Chin2 (v)", "ECG": "ECG ECGI"},
    },
    "hmc": {
        "source": "PhysioNet HMC sleep staging 1.1 labels (torcheeg HMCDataset docs and public HMC loaders)",
        "channels": [ch(label, UV) for label in ("EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2", "EMG chin",
                                                 "EOG E1-M2", "EOG E2-M2")] + [ch("ECG", "mV")],
        "expected": {"EEG_C4_A1": "EEG C4-M1", "EEG_C3_A2": "EEG C3-M2", "EMG_Chin": "EMG chin",
                     "EOG_Left": "EOG E1-M2", "EOG_Right": "EOG E2-M2", "ECG": "ECG"},
    },
    "dreem dod-h": {
        "source": "Dreem Open Dataset DOD-H channel names (tsy935/graphs4mer constants.py DODH_CHANNELS; the h5 "
                  "paths read by perslev/U-Time resources/usleep_dataset_prep/convert_dod_datasets.py)",
        "channels": [ch(label, UV) for label in ("C3_M2", "F3_F4", "F3_M2", "F3_O1", "F4_M1", "F4_O2", "FP1_F3",
                                                 "FP1_M2", "FP1_O1", "FP2_F4", "FP2_M1", "FP2_O2", "ECG", "EMG",
                                                 "EOG1", "EOG2")],
        "expected": {"EEG_C3_A2": "C3_M2", "EEG_C4_A1": "C3_M2 (s)", "ECG": "ECG", "EMG_Chin": "EMG",
                     "EOG_Left": "EOG1", "EOG_Right": "EOG2"},
    },
    "embla (nuMoM2b, Embla Titanium)": {
        "source": "nsrr/numom2b-documentation pages/montage-and-sampling-rate-information.md",
        "channels": [ch("Nasal", "", "Nasal cannula"), ch("EKG", UV, "Ag/AgCl patch"),
                     ch("Thorax", "", "XactTrace Respiratory Inductance Plethysmography Belt"),
                     ch("Abdomen", "", "XactTrace Respiratory Inductance Plethysmography Belt"),
                     ch("Snore", "", "Nasal cannula (vibratory)"), ch("SpO2", PCT, "Nonin 8000 sensor"),
                     ch("Pulse", BPM, "Nonin 8000 sensor"), ch("RD-Pleth", "", "Nonin 8000 sensor"),
                     ch("Activity", "", "Embla internal X-Y gravity"), ch("Position", "", "Embla internal X-Y gravity"),
                     ch("Sum", "", "XactTrace Respiratory Inductance Plethysmography Belt"), ch("DHR", BPM)],
        "expected": {"Pressure": "Nasal", "AF": "Nasal (s)", "ECG": "EKG", "THX": "Thorax", "ABD": "Abdomen",
                     "Snore": "Snore", "SpO2": "SpO2", "HR": "Pulse", "POS": "Position"},
    },
    "nox (Nox A1 export)": {
        "source": "Nox A1 PSG export 'DS_10 Night 2', channel list in a public pyedflib reader script "
                  "(Hoan Tran, Northeastern) in the GitHub code index",
        "channels": [ch(label, UV) for label in (
            "1", "1-2", "1-F", "2", "2-F", "C3", "C3-M2", "C4", "C4-M1", "E1", "E1-M2", "E2", "E2-M1", "E2-M2", "ECG",
            "F", "F3", "F3-M2", "F4", "F4-M1", "Left Leg", "M1", "M1M2", "M2", "O1", "O1-M2", "O2", "O2-M1",
            "Right Leg")]
        + [ch("Abdomen Fast"), ch("Flow"), ch("Mask Pressure", "cmH2O"), ch("Nasal Pressure", "cmH2O"),
           ch("Snore"), ch("Thorax Fast"), ch("Audio Volume"), ch("Audio Volume dB", "dB"),
           ch("Voltage (battery", "V"), ch("Pulse Waveform"), ch("PWA"), ch("Abdomen CaL"), ch("Abdomen"),
           ch("cRIP Flow"), ch("cRIP Sum"), ch("K"), ch("Resp Rate", "rpm"), ch("RIP Flow"), ch("RIP Sum"),
           ch("Chest"), ch("Activity", "g"), ch("Elevation"), ch("PosAngle", "deg"), ch("X Axis", "g"),
           ch("Flow Limitation"), ch("Heart Rate", BPM), ch("Pulse", BPM), ch("Saturation", PCT),
           ch("SpO2 B-B", PCT), ch("C3 Impedance", "kOhm"), ch("ECG Impedance", "kOhm"), ch("Light"),
           ch("RIP Phase"), ch("MaskPressure", "cmH2O")],
        "expected": {"EMG_Chin": "1-2", "EEG_C3_A2": "C3-M2", "EEG_C4_A1": "C4-M1", "EOG_Left": "E1-M2",
                     "EOG_Right": "E2-M1", "ECG": "ECG", "AF": "Flow", "Pressure": "Nasal Pressure", "Snore": "Snore",
                     "ABD": "Abdomen", "THX": "Chest", "POS": "PosAngle", "HR": "Heart Rate", "SpO2": "Saturation",
                     "Light": "Light"},
    },
    "philips alice (Sleepware-style labels)": {
        "source": "ayushbaid/AttendToSleep stanford_info/README.md (Stanford clinic export: Effort THO/ABD, "
                  "Flow Patient, Body, PulseRate)",
        "channels": [ch(label, UV) for label in ("EEG F3-A2", "EEG F4-A1", "EEG A1-A2", "EEG C3-A2", "EEG C4-A1",
                                                 "EEG O1-A2", "EEG O2-A1", "EOG LOC-A2", "EOG ROC-A2", "EMG Chin",
                                                 "Leg 1", "Leg 2", "ECG II", "Snore")]
        + [ch("Flow Patient"), ch("Flow Patient"), ch("Effort THO"), ch("Effort ABD"), ch("SpO2", PCT), ch("Body"),
           ch("PulseRate", BPM)],
        "expected": {"EEG_C3_A2": "EEG C3-A2", "EEG_C4_A1": "EEG C4-A1", "EOG_Left": "EOG LOC-A2",
                     "EOG_Right": "EOG ROC-A2", "EMG_Chin": "EMG Chin", "ECG": "ECG II", "Snore": "Snore",
                     "AF": "Flow Patient", "THX": "Effort THO", "ABD": "Effort ABD", "SpO2": "SpO2", "POS": "Body",
                     "HR": "PulseRate"},
    },
    "brainnet polygraph": {
        "source": "issue 12: a real 30-min clinical PSG from a Brainnet polygraph (all 50 Hz, 2-s records)",
        "channels": [ch(label, UV) for label in ("C3-A1", "O1-A1", "FP1-A1", "EOG1-A1", "EOG2-A1", "EMG1", "ECG")]
        + [ch("NAF1"), ch("VAB"), ch("VTH"), ch("SAO2", PCT), ch("PR", BPM), ch("POS"), ch("PHONO"), ch("PULSE")],
        "record_s": 2, "sfreq": 50,
        "expected": {"EEG_C3_A2": "C3-A1", "EEG_C4_A1": "C3-A1 (s)", "EOG_Left": "EOG1-A1", "EOG_Right": "EOG2-A1",
                     "EMG_Chin": "EMG1", "ECG": "ECG", "AF": "NAF1", "ABD": "VAB", "THX": "VTH", "SpO2": "SAO2",
                     "HR": "PR", "POS": "POS", "Snore": "PHONO"},
    },
    "physionet challenge 2018": {
        "source": "PhysioNet/CinC Challenge 2018 (physionet.org/content/challenge-2018) signal names",
        "channels": [ch(label, UV) for label in ("F3-M2", "F4-M1", "C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2",
                                                 "Chin1-Chin2")]
        + [ch("ABD"), ch("CHEST"), ch("AIRFLOW"), ch("SaO2", PCT), ch("ECG", "mV")],
        "expected": {"EEG_C3_A2": "C3-M2", "EEG_C4_A1": "C4-M1", "EOG_Left": "E1-M2", "EOG_Right": "E1-M2 (s)",
                     "EMG_Chin": "Chin1-Chin2", "ABD": "ABD", "THX": "CHEST", "AF": "AIRFLOW", "SpO2": "SaO2",
                     "ECG": "ECG"},
    },
    "ucddb (St Vincent's)": {
        "source": "PhysioNet ucddb EEG/EOG labels as extracted in perslev/U-Time resources/usleep_dataset_prep/svuh.md",
        "channels": [ch(label, UV) for label in ("C3A2", "C4A1", "Lefteye", "RightEye")],
        "expected": {"EEG_C3_A2": "C3A2", "EEG_C4_A1": "C4A1", "EOG_Left": "Lefteye", "EOG_Right": "RightEye"},
    },
    "eeg file in edf type+sensor style": {
        "source": "issue 12: a real 25-min EEG recording labelled EEG F3, EEG C3, EOG EOG1, EOG EOG2, EMG EMG1, EMG EMG2",
        "channels": [ch(label, UV) for label in ("EEG F3", "EEG C3", "EOG EOG1", "EOG EOG2", "EMG EMG1", "EMG EMG2")],
        "expected": {"EEG_C3_A2": "EEG C3", "EEG_C4_A1": "EEG C3 (s)", "EOG_Left": "EOG EOG1",
                     "EOG_Right": "EOG EOG2", "EMG_Chin": "EMG EMG1"},
    },
}


def described(sources) -> dict[str, str]:
    suffix = {"direct": "", "derived": " (v)", "substitute": " (s)"}
    return {name: source.description + suffix[source.kind] for name, source in sources.items()}


def write_header_only(path, channels, record_s: float = 1, sfreq: float = 1) -> None:
    """A two-record EDF with these (label, unit, transducer) channels."""
    n = int(2 * record_s * sfreq)
    signals = [EdfSignal(np.linspace(-1, 1, n), sfreq, label=label, physical_dimension=unit,
                         transducer_type=transducer, physical_range=(-2, 2))
               for label, unit, transducer in channels]
    Edf(signals, data_record_duration=record_s).write(path)


@pytest.mark.parametrize("dataset", list(CORPUS))
def test_documented_label_sets_map_completely(dataset, tmp_path):
    case = CORPUS[dataset]
    assert case["source"]
    path = tmp_path / "night.edf"
    write_header_only(path, case["channels"], case.get("record_s", 1), case.get("sfreq", 1))
    header = read_edf_header(path)
    signals = header.data_signals
    assert [header.labels[i] for i in signals] == [c[0] for c in case["channels"]]
    sources, _ = map_channels([header.labels[i] for i in signals], units=[header.units[i] for i in signals],
                              transducers=[header.transducers[i] for i in signals])
    assert described(sources) == case["expected"]


def test_the_corpus_covers_fifteen_datasets_and_vendors():
    assert len(CORPUS) >= 15


def test_stand_ins_say_what_stands_in_and_why():
    sources, _ = map_channels(["CZ-A1"])
    assert sources["EEG_C3_A2"].kind == sources["EEG_C4_A1"].kind == "substitute"
    assert sources["EEG_C3_A2"].warnings == [
        "no EEG_C3_A2 channel in the file; 'CZ-A1' substituted for it (the midline central EEG)"]
    sources, _ = map_channels(["E2-M1", "C4-M1"])
    assert described(sources) == {"EOG_Right": "E2-M1", "EEG_C4_A1": "C4-M1", "EOG_Left": "E2-M1 (s)",
                                  "EEG_C3_A2": "C4-M1 (s)"}
    assert "(the right EOG)" in sources["EOG_Left"].warnings[0]


def test_a_stand_in_is_used_only_when_nothing_better_exists():
    # O1-A1 could stand in for C3-A2, but a monopolar C3 with a right mastoid is the real thing.
    sources, _ = map_channels(["O1-A1", "C3", "A2"])
    assert described(sources)["EEG_C3_A2"] == "C3 - A2 (v)"
    # A same-side reference is still the C3 electrode: preferred to any stand-in, with a warning.
    sources, _ = map_channels(["Cz-A1", "O1-A1", "C3-A1"])
    assert described(sources)["EEG_C3_A2"] == "C3-A1"
    assert "own side" in sources["EEG_C3_A2"].warnings[0]


@pytest.mark.parametrize(
    "label, unit, transducer, expected",
    [
        ("Sat", "%", "", "SpO2"),
        ("X7", "%", "pulse oximeter", "SpO2"),
        ("Pulse", "bpm", "", "HR"),
        ("ECG", "bpm", "", "HR"),  # a rate derived from the ECG is a heart rate, not an ECG
        ("PULSE", "uV", "", None),  # a pulse waveform in volts is not a rate
        ("Channel 5", "", "Thermistor", "AF"),
        ("Flow", "", "nasal cannula", "Pressure"),  # the header says cannula: pressure, not airflow
        ("NAF", "", "", "AF"),
        ("Pressure", "cmH2O", "", "Pressure"),
        ("Therm", "", "", "AF"),
        ("Thor", "", "", "THX"),
        ("Abdo", "", "", "ABD"),
        ("SpO2", "%", "", "SpO2"),
        ("Subm", "uV", "", "EMG_Chin"),
        ("LOC", "uV", "", "EOG_Left"),
        ("E2", "uV", "", "EOG_Right"),
    ],
)
def test_header_fields_are_evidence(label, unit, transducer, expected):
    sources, _ = map_channels([label], units=[unit], transducers=[transducer])
    found = [name for name, source in sources.items() if source.kind != "substitute"]
    assert found == ([expected] if expected else [])


def write_night(path, labels, sfreq: float = 50, record_s: float = 2, minutes: float = 2) -> None:
    rng = np.random.default_rng(3)
    n = int(minutes * 60 * sfreq)
    signals = [EdfSignal(rng.normal(0, 20, n), sfreq, label=label, physical_dimension=unit)
               for label, unit in labels]
    Edf(signals, data_record_duration=record_s).write(path)


def test_eeg_only_files_load_and_the_preflight_names_the_stand_in(tmp_path):
    from sleeplm.io.reader import load_recording, preflight_table

    for label in ("C3-A1", "CZ-A1"):
        path = tmp_path / f"{label}.edf"
        write_night(path, [(label, "uV")])
        table = preflight_table(load_recording(path)).set_index("channel")
        assert table.loc["EEG_C4_A1", "status"] == "substitute"
        assert f"'{label}' substituted for it" in table.loc["EEG_C4_A1", "warnings"]
    assert table.loc["EEG_C3_A2", "status"] == "substitute" and "midline central" in table.loc["EEG_C3_A2", "warnings"]


def test_the_brainnet_night_loads_with_its_channels(tmp_path):
    from sleeplm.io.reader import load_recording, preflight_table

    path = tmp_path / "brainnet.edf"
    write_night(path, [(label, "uV") for label in ("C3-A1", "O1-A1", "FP1-A1", "EOG1-A1", "EOG2-A1", "EMG1", "ECG")]
                + [("NAF1", ""), ("VAB", ""), ("VTH", ""), ("SAO2", "%"), ("PR", "bpm"), ("POS", ""), ("PHONO", ""),
                   ("PULSE", "")])
    rec = load_recording(path)
    table = preflight_table(rec).set_index("channel")
    assert (table.loc[["ECG", "ABD", "THX", "AF", "EOG_Left", "EOG_Right", "EEG_C3_A2", "EMG_Chin", "POS"], "status"]
            == "present").all()
    assert table.loc["EEG_C4_A1", "status"] == "substitute"
    # Recognised (the random test values of SAO2/PR are implausible, so the preflight then excludes them as dead sensors).
    assert {"SpO2", "HR", "Snore"} <= {info.canonical for info in rec.extra_channels}
    assert "Snore" in rec.signals
