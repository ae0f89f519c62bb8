"""Channel alias table per montage, derivations, substitutes, user maps, vendor position maps."""

from __future__ import annotations

import numpy as np
import pytest

from sleeplm.io.channels import decode_position, map_channels, normalize_label, recognize_montage
from sleeplm.errors import ChannelMappingError

# Real label sets of each cohort/vendor and the expected mapping (d = direct, v = derived, s = substitute).
MONTAGE_CASES = {
    "shhs": (
        ["SaO2", "H.R.", "EEG(sec)", "ECG", "EMG", "EOG(L)", "EOG(R)", "EEG", "THOR RES", "ABDO RES", "POSITION",
         "LIGHT", "AIRFLOW", "NEW AIR", "OX stat"],
        {"EEG_C3_A2": "EEG(sec)", "EEG_C4_A1": "EEG", "EOG_Left": "EOG(L)", "EOG_Right": "EOG(R)",
         "EMG_Chin": "EMG", "ECG": "ECG", "THX": "THOR RES", "ABD": "ABDO RES", "AF": "AIRFLOW",
         "POS": "POSITION", "SpO2": "SaO2", "HR": "H.R.", "Light": "LIGHT", "Pressure": "NEW AIR"},
    ),
    "mesa": (
        ["EKG", "EOG-L", "EOG-R", "EMG", "EEG1", "EEG2", "EEG3", "Pres", "Flow", "Snore", "Thor", "Abdo", "Leg",
         "Therm", "Pos", "SpO2", "HR"],
        {"ECG": "EKG", "EOG_Left": "EOG-L", "EOG_Right": "EOG-R", "EMG_Chin": "EMG", "EEG_C4_A1": "EEG3",
         "EEG_C3_A2": "EEG3 (s)", "AF": "Flow", "Pressure": "Pres", "THX": "Thor", "ABD": "Abdo", "SpO2": "SpO2",
         "HR": "HR", "POS": "Pos", "Snore": "Snore"},
    ),
    "sleep-edf": (
        ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental", "Temp rectal",
         "Event marker"],
        {"EEG_C3_A2": "EEG Fpz-Cz (s)", "EEG_C4_A1": "EEG Pz-Oz (s)", "EOG_Left": "EOG horizontal (s)",
         "AF": "Resp oro-nasal", "EMG_Chin": "EMG submental"},
    ),
    None: (  # MrOS: monopolar electrodes with separate references
        ["C3", "C4", "A1", "A2", "LOC", "ROC", "L Chin", "R Chin", "ECG L", "ECG R", "Thoracic", "Abdominal",
         "Airflow", "Cannula Flow", "SaO2", "Position", "DHR"],
        {"EEG_C3_A2": "C3 - A2 (v)", "EEG_C4_A1": "C4 - A1 (v)", "EOG_Left": "LOC - A2 (v)",
         "EOG_Right": "ROC - A1 (v)", "EMG_Chin": "L Chin - R Chin (v)", "ECG": "ECG L - ECG R (v)",
         "THX": "Thoracic", "ABD": "Abdominal", "AF": "Airflow", "Pressure": "Cannula Flow", "SpO2": "SaO2",
         "POS": "Position", "HR": "DHR"},
    ),
}

OTHER_CASES = {
    "mros": (  # NSRR MrOS: monopolar leads referenced on load, two-lead ECG and chin EMG
        ["C3", "C4", "A1", "A2", "ROC", "LOC", "ECG L", "ECG R", "L Chin", "R Chin", "Leg L", "Leg R", "Airflow",
         "Cannula Flow", "Thoracic", "Abdominal", "SaO2", "Position", "HR", "DHR", "STAT"],
        {"EEG_C3_A2": "C3 - A2 (v)", "EEG_C4_A1": "C4 - A1 (v)", "EOG_Left": "LOC - A2 (v)",
         "EOG_Right": "ROC - A1 (v)", "ECG": "ECG L - ECG R (v)", "EMG_Chin": "L Chin - R Chin (v)",
         "THX": "Thoracic", "ABD": "Abdominal", "AF": "Airflow", "Pressure": "Cannula Flow", "SpO2": "SaO2",
         "POS": "Position", "HR": "HR"},
    ),
    "cfs": (
        ["C3", "C4", "M1", "M2", "LOC", "ROC", "ECG1", "ECG2", "EMG1", "EMG2", "THOR EFFORT", "ABDO EFFORT",
         "NASAL PRES", "AIRFLOW", "SpO2", "POSITION", "PULSE"],
        {"EEG_C3_A2": "C3 - M2 (v)", "EOG_Left": "LOC - M2 (v)", "ECG": "ECG1 - ECG2 (v)",
         "EMG_Chin": "EMG1 - EMG2 (v)", "THX": "THOR EFFORT", "Pressure": "NASAL PRES", "HR": "PULSE"},
    ),
    "wsc": (
        ["C3_M2", "O1_M2", "E1", "E2", "M1", "M2", "chin", "ECG", "thorax", "abdomen", "airflow", "nasal pressure",
         "SpO2", "pos"],
        {"EEG_C3_A2": "C3_M2", "EEG_C4_A1": "C3_M2 (s)", "EOG_Left": "E1 - M2 (v)", "EMG_Chin": "chin",
         "POS": "pos"},
    ),
    "cap": (
        ["Fp2-F4", "F4-C4", "C4-P4", "P4-O2", "C4-A1", "C3-A2", "ROC-LOC", "EMG1-EMG2", "ECG1-ECG2", "DX1-DX2",
         "TORACE", "ADDOME", "SAO2", "HR"],
        {"EEG_C3_A2": "C3-A2", "EEG_C4_A1": "C4-A1", "EOG_Left": "ROC-LOC (s)", "EMG_Chin": "EMG1-EMG2",
         "ECG": "ECG1-ECG2", "THX": "TORACE", "ABD": "ADDOME", "SpO2": "SAO2"},
    ),
    "aasm/nox": (
        ["C3-M2", "C4-M1", "F4-M1", "O2-M1", "E1-M2", "E2-M1", "Chin 1-Chin 2", "ECG", "Thorax", "Abdomen", "Flow",
         "Nasal Pressure", "SpO2", "Pulse", "Position", "Audio Volume"],
        {"EEG_C3_A2": "C3-M2", "EEG_C4_A1": "C4-M1", "EOG_Left": "E1-M2", "EOG_Right": "E2-M1",
         "EMG_Chin": "Chin 1-Chin 2", "AF": "Flow", "Pressure": "Nasal Pressure", "HR": "Pulse"},
    ),
    "compumedics": (
        ["EEG C3-A2", "EEG C4-A1", "EOG L", "EOG R", "EMG Chin", "ECG II", "THOR RES", "ABDO RES", "AIRFLOW", "SaO2",
         "H.R.", "POSITION", "Nasal Pressure", "Snore"],
        {"EEG_C3_A2": "EEG C3-A2", "EOG_Left": "EOG L", "EMG_Chin": "EMG Chin", "ECG": "ECG II", "Snore": "Snore"},
    ),
    "embla": (
        ["C3-M2", "C4-M1", "E1-M2", "E2-M2", "Chin1-Chin2", "EKG", "Thorax", "Abdomen", "Airflow", "Nasal Pres",
         "SpO2", "Pulse", "Body", "Snore"],
        {"EOG_Right": "E2-M2", "ECG": "EKG", "POS": "Body", "Pressure": "Nasal Pres"},
    ),
}


def described(sources):
    suffix = {"direct": "", "derived": " (v)", "substitute": " (s)"}
    return {name: s.description + suffix[s.kind] for name, s in sources.items()}


@pytest.mark.parametrize("montage", list(MONTAGE_CASES), ids=str)
def test_cohort_montages_map_completely(montage):
    labels, expected = MONTAGE_CASES[montage]
    sources, recognised = map_channels(labels)
    assert recognised == montage
    assert described(sources) == expected


@pytest.mark.parametrize("name", list(OTHER_CASES))
def test_vendor_label_sets(name):
    labels, expected = OTHER_CASES[name]
    sources, _ = map_channels(labels)
    got = described(sources)
    assert {k: got.get(k) for k in expected} == expected


def test_matching_ignores_case_space_and_punctuation():
    assert normalize_label(" eeg  C3:M2 ") == normalize_label("EEG C3-M2") == "eegc3m2"
    sources, _ = map_channels(["c3 m2", "CHIN1_CHIN2", "thor-res"])
    assert described(sources) == {"EEG_C3_A2": "c3 m2", "EMG_Chin": "CHIN1_CHIN2", "THX": "thor-res",
                                  "EEG_C4_A1": "c3 m2 (s)"}


def test_compumedics_labels_are_not_taken_for_shhs():
    assert recognize_montage(["THOR RES", "ABDO RES", "EEG C3-A2"]) is None


def test_substitute_warning_names_the_substitution():
    sources, _ = map_channels(["EEG Fpz-Cz"])
    assert sources["EEG_C3_A2"].kind == "substitute"
    assert sources["EEG_C3_A2"].warnings == ["no EEG_C3_A2 channel in the file; 'EEG Fpz-Cz' substituted for it"]


def test_unreferenced_electrode_is_used_with_a_warning():
    sources, _ = map_channels(["C3", "E1"])
    assert sources["EEG_C3_A2"].labels == ("C3",) and "without its reference" in sources["EEG_C3_A2"].warnings[0]


def test_user_channel_map_overrides_and_derives():
    sources, _ = map_channels(["C3-M2", "X1", "X2", "Y"], channel_map={"EEG_C3_A2": "Y", "EOG_Left": "X1-X2"})
    assert sources["EEG_C3_A2"].labels == ("Y",)
    assert sources["EOG_Left"].kind == "derived" and sources["EOG_Left"].labels == ("X1", "X2")
    assert sources["EEG_C4_A1"].labels == ("C3-M2",)  # the displaced match becomes C4's stand-in
    with pytest.raises(ChannelMappingError, match="Available labels: C3-M2, X1, X2, Y"):
        map_channels(["C3-M2", "X1", "X2", "Y"], channel_map={"EEG_C3_A2": "Z"})


@pytest.mark.parametrize(
    "position_map, raw, expected",
    [
        ("sleeplm", [0, 1, 2, 3, 4, -1, 7], [0, 1, 2, 3, 4, -1, -1]),
        ("shhs", [0, 1, 2, 3, 4], [0, 1, 2, 3, -1]),
        ("mesa", [0, 1, 2, 3, 4], [0, 2, 1, 3, 4]),
        ("compumedics", [1.0, 2.0, 2.5], [2, 1, -1]),
        ("nox", [0.0, 10.0, 90.0, -90.0, 180.0, -170.0, 450.0], [2, 2, 1, 0, 3, 3, 1]),
        ({5: "Supine", 6: "Left", 7: 0}, [5, 6, 7, 8], [2, 1, 0, -1]),
    ],
    ids=str,
)
def test_position_maps(position_map, raw, expected):
    codes, unknown = decode_position(np.array(raw, dtype=float), position_map)
    assert codes.tolist() == expected
    assert unknown == pytest.approx(np.mean(np.array(expected) == -1))


def test_position_map_errors():
    with pytest.raises(ChannelMappingError, match="unknown position_map"):
        decode_position(np.zeros(3), "philips")
    with pytest.raises(ChannelMappingError, match="targets must be one of"):
        decode_position(np.zeros(3), {0: "Sideways"})


def test_guess_position_map_tells_angles_from_codes():
    from sleeplm.io.channels import guess_position_map

    assert guess_position_map(np.array([0, 1, 2, 2, 3, -1.0])) == "sleeplm"
    assert guess_position_map(np.array([2.5, 88.0, -91.0, 179.0, 0.4])) == "nox"
    assert guess_position_map(np.array([np.nan])) == "sleeplm"
