"""Stage sources: the file's scoring, SleepLM captions (hook), YASA; and their agreement."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from physio_night import make_night
from sleeplm.measure.staging import agreement, stage_from_caption, stage_night, stage_with_yasa

STAGES = ["W"] * 6 + ["N1"] * 2 + ["N2"] * 12 + ["N3"] * 10 + ["R"] * 6 + ["N2"] * 4


class CaptionModel:
    """Stands in for SleepLM's `caption` contract: one stage_event caption per epoch."""

    def __init__(self, captions):
        self.captions = captions
        self.domains = []

    def caption(self, epochs, domain, progress=None):
        self.domains.append(domain)
        return self.captions[: len(epochs)]


@pytest.mark.parametrize("text, stage", [
    ("Stage N2 sleep with sleep spindles and a K-complex.", "N2"),
    ("REM sleep with rapid eye movements.", "R"),
    ("Deep slow-wave sleep, no events.", "N3"),
    ("The subject is awake with alpha rhythm.", "W"),
    ("Stage N1, drowsy.", "N1"),
    ("Regular breathing.", "?"),
])
def test_stage_words_in_captions(text, stage):
    assert stage_from_caption(text) == stage


def test_reference_scoring_wins_and_is_compared_with_sleeplm():
    rec = make_night(STAGES)
    words = {"W": "Awake.", "N1": "Stage N1.", "N2": "Stage N2 sleep.", "N3": "Stage N3.", "R": "REM sleep."}
    captions = [words[s] for s in STAGES]
    captions[10] = "Stage N3."  # one disagreement
    model = CaptionModel(captions)
    result = stage_night(rec, model=model, automatic=False)
    assert result.source == "reference scoring"
    assert list(result.hypnogram) == STAGES
    assert model.domains == ["stage_event"]
    assert result.agreement["with"] == "sleeplm"
    assert result.agreement["accuracy"] == pytest.approx(39 / 40, abs=1e-3)
    assert 0.9 < result.agreement["kappa"] < 1


def test_agreement_matches_sklearn_and_skips_unscored():
    rng = np.random.default_rng(1)
    a = rng.choice(["W", "N1", "N2", "N3", "R"], 200).astype(object)
    b = a.copy()
    b[rng.choice(200, 50, replace=False)] = "N2"
    a[:10] = "?"
    result = agreement(a, b, "yasa")
    assert result["n_epochs"] == 190
    assert result["kappa"] == pytest.approx(cohen_kappa_score(a[10:].astype(str), b[10:].astype(str)), abs=1e-3)


def test_yasa_stages_the_night_without_scoring():
    rec = make_night(["N2"] * 20, scored=False)
    result = stage_night(rec)
    assert result.source == "yasa" and result.agreement is None
    assert len(result.hypnogram) == 20 and set(result.hypnogram) <= {"W", "N1", "N2", "N3", "R"}
    assert list(stage_with_yasa(rec)) == list(result.hypnogram)


def test_no_eeg_means_no_hypnogram_with_reason():
    rec = make_night(["N2"] * 4, scored=False, drop=("EEG_C3_A2", "EEG_C4_A1", "Pressure"))
    result = stage_night(rec)
    assert result.hypnogram is None and result.source == "none"
    assert "no EEG" in result.unavailable["yasa"]


def test_flat_eeg_is_not_staged_as_wake_all_night():
    rec = make_night(["N2"] * 20, scored=False)
    for name in ("EEG_C3_A2", "EEG_C4_A1"):
        rec.signals[name].data[:] = 0.0
    result = stage_night(rec)
    assert result.hypnogram is None and "flat or artefact for 100% of the night" in result.unavailable["yasa"]


def _dead_c4_night(tmp_path):
    """A simulated night with a dead C4 lead, and YASA's stages of it from C3 alone."""
    from sleeplm.io.reader import load_recording
    from sleeplm.synthetic import simulate_night, write_night

    path = write_night(simulate_night(0.25, seed=1, sfreq=128, artefacts=False), tmp_path / "n.edf")
    only_c3 = load_recording(path)
    only_c3.signals.pop("EEG_C4_A1")
    expected = stage_with_yasa(only_c3)
    assert np.isin(expected, ["N1", "N2", "N3", "R"]).mean() > 0.3  # a realistic EEG: YASA finds sleep
    dead_c4 = load_recording(path)
    dead_c4.signals["EEG_C4_A1"].data[:] = 0.0
    return dead_c4, expected


def test_the_usable_eeg_lead_is_staged_when_the_other_is_dead(tmp_path):
    dead_c4, expected = _dead_c4_night(tmp_path)
    result = stage_night(dead_c4)
    assert result.source == "yasa" and list(result.hypnogram) == list(expected)


def test_the_nights_artefact_table_picks_the_eeg_without_checking_it_again(tmp_path, monkeypatch):
    import sleeplm.measure.staging as staging
    from sleeplm.measure.quality import artefact_segments

    dead_c4, expected = _dead_c4_night(tmp_path)
    artefacts = artefact_segments(dead_c4)  # what analyze_night computed first, every channel

    def checked_again(*args, **kwargs):
        raise AssertionError("the EEG artefacts were computed a second time")

    monkeypatch.setattr(staging, "artefact_segments", checked_again)
    result = stage_night(dead_c4, artefacts=artefacts)
    assert result.source == "yasa" and list(result.hypnogram) == list(expected)
    assert list(stage_with_yasa(dead_c4, artefacts=artefacts)) == list(expected)
    with pytest.raises(AssertionError, match="second time"):  # without the table, staging checks the EEG itself
        stage_night(dead_c4)


@pytest.fixture(scope="module")
def low_rate_night(tmp_path_factory):
    """A simulated half night with EEG/EOG/EMG/ECG at 50 Hz and breathing and SpO2 at 1 Hz, and its truth."""
    from scipy.signal import resample_poly

    from sleeplm.io.reader import load_recording
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    night = simulate_night(0.5, seed=0, severity="severe", sfreq=128)
    for label, (data, sfreq, unit) in list(night.signals.items()):
        target = 50 if sfreq >= 100 else 1 if label != "Position" else sfreq
        if target != sfreq:
            low, high = night.physical_ranges[label]
            night.signals[label] = (np.clip(resample_poly(data, int(target), int(sfreq)), low, high).astype(np.float32),
                                    float(target), unit)
    path = write_night(night, tmp_path_factory.mktemp("low") / "low.edf")
    return load_recording(path), load_truth(path)


def test_50_hz_eeg_is_staged_with_the_reason_and_loss_stated(low_rate_night):
    from sleeplm.measure.summary import night_summary

    rec, truth = low_rate_night
    for info in rec.channels[6:8]:
        assert info.original_sfreq == 50 and any("resampled to 100 Hz for staging" in w for w in info.warnings)
    assert "resampled to 100 Hz" in rec.describe()  # the preflight says it
    result = stage_night(rec)
    assert result.source == "yasa" and "Nothing above 25 Hz was recorded" in result.note
    assert agreement(result.hypnogram, truth.hypnogram, "truth")["kappa"] >= 0.5
    summary = night_summary(rec, staging=result)
    assert summary["staging_note"] == result.note


def test_1_hz_airflow_effort_and_spo2_are_used(low_rate_night):
    import sys
    from pathlib import Path

    from sleeplm.measure.events import detect_events
    from sleeplm.measure.signals import get_signal

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from evaluation import event_agreement

    rec, truth = low_rate_night
    for name in ("AF", "THX", "ABD", "SpO2"):
        assert get_signal(rec, name) is not None and get_signal(rec, name).sfreq == 1.0, name
    events = detect_events(rec, truth.hypnogram)
    truth_resp = truth.events[truth.events.kind.isin(["apnea", "hypopnea"])]
    scored = event_agreement(events[events.kind.isin(["apnea", "hypopnea"])], truth_resp)
    assert scored["recall"] >= 0.8 and scored["precision"] >= 0.8, scored
    assert (events.kind == "desaturation").sum() >= 3
