"""Channel alias table per montage, derivations, substitutes, user maps, vendor position maps."""

from __future__ import annotations

import numpy as np
import pytest

from sleeplm.io.channels import decode_position, map_channels, normalize_label, recognize_montage
from sleeplm.errors import ChannelMappingError

# The label sets of public datasets and vendor exports, with their sources, are in test_channel_corpus.py.
@pytest.mark.parametrize(
    "labels, montage",
    [
        (["SaO2", "H.R.", "EEG (sec)", "EEG", "ECG", "EOG(L)", "EOG(R)", "EMG", "Thor RES", "Abdo RES"], "shhs"),
        (["EKG", "EOG-L", "EOG-R", "EMG", "EEG1", "EEG2", "EEG3", "Flow", "Thor", "Abdo"], "mesa"),
        (["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental"], "sleep-edf"),
        (["C3", "C4", "A1", "A2", "LOC", "ROC", "EMG1", "EMG2", "Thor Effort", "Abdo Effort"], "cfs"),
        (["E1", "E2", "C3", "C4", "M1", "M2", "Lchin", "Rchin", "Cchin", "Chest", "ABD"], "chat"),
        (["C3", "C4", "A1", "A2", "ROC", "LOC", "L Chin", "R Chin", "Thoracic", "Abdominal"], None),  # MrOS
    ],
)
def test_cohort_montages_are_recognised(labels, montage):
    assert recognize_montage(labels) == montage


def described(sources):
    suffix = {"direct": "", "derived": " (v)", "substitute": " (s)"}
    return {name: s.description + suffix[s.kind] for name, s in sources.items()}


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
    assert sources["EEG_C3_A2"].warnings == [
        "no EEG_C3_A2 channel in the file; 'EEG Fpz-Cz' substituted for it "
        "(a bipolar EEG derivation between two scalp sites)"]


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


@pytest.mark.parametrize(
    "label, expected",
    [("EOG-L", "EOG_Left"), ("L-EOG", "EOG_Left"), ("EOG_Right", "EOG_Right"), ("ECG-LA-RA", "ECG"),
     ("EEG_C3_A2", "EEG_C3_A2"), ("SpO2 %", "SpO2"), ("EMG-Chin", "EMG_Chin"), ("EOG(R)", "EOG_Right")],
)
def test_one_name_written_with_separators_is_not_a_derivation(label, expected):
    sources, _ = map_channels([label])
    assert [name for name, source in sources.items() if source.kind != "substitute"] == [expected]


def test_an_shhs_eeg_extract_is_recognised_by_its_two_eeg_labels():
    sources, montage = map_channels(["EEG", "EEG(sec)", "EOG(L)", "EOG(R)"])
    assert montage == "shhs"
    assert described(sources) == {"EEG_C3_A2": "EEG(sec)", "EEG_C4_A1": "EEG", "EOG_Left": "EOG(L)",
                                  "EOG_Right": "EOG(R)"}
