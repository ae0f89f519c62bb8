"""Event detection on hand-built nights with known pauses, dips, heart rate and positions."""

import numpy as np
import pandas as pd
import pytest

from physio_night import make_night
from sleeplm.measure.events import EVENT_COLUMNS, detect_events
from sleeplm.measure.quality import artefact_segments
from sleeplm.measure.signals import MeasurementError

STAGES = ["W"] * 2 + ["N2"] * 40 + ["R"] * 10 + ["N2"] * 8
TRUE_EVENTS = [("apnea", "obstructive", 300, 20), ("apnea", "central", 600, 15), ("hypopnea", "obstructive", 900, 25),
               ("apnea", "obstructive", 1200, 30), ("hypopnea", "central", 1650, 20)]


def iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


@pytest.fixture(scope="module")
def night():
    hr = np.full(len(STAGES) * 30, 62.0)
    hr[1500:1560] = 105.0
    hr[1700:1770] = 35.0
    pos = np.full(len(STAGES) * 30, 2.0)
    pos[1000:] = 0.0
    return make_night(STAGES, TRUE_EVENTS, hr_bpm=hr, positions=pos)


@pytest.fixture(scope="module")
def events(night):
    return detect_events(night, hypnogram=np.array(STAGES, dtype=object))


def test_table_shape_and_citations(events, night):
    assert list(events.columns) == EVENT_COLUMNS
    row = events[events.kind == "apnea"].iloc[0]
    assert row.clock_start == night.clock_at(row.start_s)
    assert row.epoch_start == int(row.start_s // 30)


def test_apneas_and_hypopneas_found_with_subtypes(events):
    resp = events[events.kind.isin(["apnea", "hypopnea"])]
    assert len(resp) == len(TRUE_EVENTS)
    for (kind, subtype, start, duration), row in zip(TRUE_EVENTS, resp.itertuples()):
        assert row.kind == kind and row.subtype == subtype
        assert iou((start, start + duration), (row.start_s, row.end_s)) > 0.6
    assert resp.iloc[0].evidence["flow_drop_pct"] >= 90
    assert 40 <= resp.iloc[2].evidence["flow_drop_pct"] <= 70


def test_desaturations_follow_each_event(events):
    desats = events[events.kind == "desaturation"]
    assert len(desats) == 5
    assert all(3.5 <= e["drop_pct"] <= 4.2 and e["nadir_pct"] < 93 for e in desats.evidence)


def test_rule_1b_needs_4_percent(night):
    # The dips are 3.9 %: enough for rule 1A, not for 1B.
    strict = detect_events(night, hypnogram=np.array(STAGES, dtype=object), hypopnea_rule="1B")
    assert (strict.kind == "hypopnea").sum() == 0
    assert (strict.kind == "apnea").sum() == 3


def test_heart_rate_and_position_events(events):
    tachy = events[events.kind == "tachycardia"]
    assert len(tachy) == 1 and abs(tachy.iloc[0].start_s - 1500) <= 3 and abs(tachy.iloc[0].end_s - 1560) <= 3
    assert 100 <= tachy.iloc[0].evidence["hr_mean_bpm"] <= 110
    brady = events[events.kind == "bradycardia"]
    assert len(brady) == 1 and abs(brady.iloc[0].start_s - 1700) <= 3 and abs(brady.iloc[0].end_s - 1770) <= 3
    assert 33 <= brady.iloc[0].evidence["hr_extreme_bpm"] <= 37
    change = events[events.kind == "position_change"]
    assert list(change.subtype) == ["supine to right"] and change.iloc[0].start_s == 1000


def test_flat_airflow_is_an_artefact_not_an_apnea():
    rec = make_night(["N2"] * 20)
    # Sensor off for 60 s while breathing goes on; the loader's filters leave a faint ringing.
    rec.signals["AF"].data[300 * 32 : 360 * 32] = 2e-5 * (-1.0) ** np.arange(60 * 32)
    artefacts = artefact_segments(rec)
    flat = artefacts[(artefacts.channel == "AF") & (artefacts.problem == "flat")]
    assert len(flat) == 1 and flat.iloc[0].start_s == pytest.approx(300, abs=1)
    events = detect_events(rec, hypnogram=np.array(["N2"] * 20, dtype=object))
    assert not events.kind.isin(["apnea", "hypopnea"]).any()


def test_wake_events_not_scored_when_stages_known():
    stages = ["W"] * 20
    rec = make_night(stages, [("apnea", "obstructive", 300, 20)])
    assert (detect_events(rec, hypnogram=np.array(stages, dtype=object)).kind == "apnea").sum() == 0
    assert (detect_events(rec).kind == "apnea").sum() == 1  # no stages: monitoring time


def test_bad_arguments_raise_clear_errors(night):
    with pytest.raises(MeasurementError, match="1A"):
        detect_events(night, hypopnea_rule="5%")
    with pytest.raises(MeasurementError, match="epochs"):
        detect_events(night, hypnogram=np.array(["N2"] * 5, dtype=object))


def test_event_agreement_matches_one_to_one_at_iou():
    from bench.evaluation import event_agreement, match_events

    ours = pd.DataFrame({"start_s": [10.0, 14.0, 100.0], "end_s": [30.0, 30.0, 110.0]})
    truth = pd.DataFrame({"start_s": [12.0, 200.0], "end_s": [28.0, 210.0]})
    assert match_events(ours, truth) == [(0, 0, pytest.approx(0.8))]  # the better overlap (0.8 vs 0.78) wins
    assert event_agreement(ours, truth) == {"tp": 1, "fp": 2, "fn": 1, "precision": 0.333, "recall": 0.5, "f1": 0.4}
    assert event_agreement(ours.iloc[:0], truth.iloc[:0])["f1"] == 1.0


@pytest.mark.parametrize("montage, severity, seed", [("aasm", "severe", 3), ("nox", "moderate", 1)])
def test_accuracy_on_simulated_nights_with_truth(tmp_path, montage, severity, seed):
    """The simulator's truth (artefacts and noise on): respiratory and desaturation F1 >= 0.9 at IoU >= 0.2,
    AHI within 2/h (the issue's targets; bench/accuracy.py measures 36 nights)."""
    from bench.evaluation import event_agreement
    from sleeplm.io.reader import load_recording
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    path = write_night(simulate_night(1.0, seed=seed, severity=severity, montage=montage, sfreq=128), tmp_path / "n.edf")
    rec, truth = load_recording(path), load_truth(path)
    events = detect_events(rec, hypnogram=truth.hypnogram)
    resp, true_resp = events[events.kind.isin(["apnea", "hypopnea"])], truth.events[truth.events.kind.isin(["apnea", "hypopnea"])]
    assert len(true_resp) >= 10
    assert event_agreement(resp, true_resp)["f1"] >= 0.9
    desats = truth.events[truth.events.kind == "desaturation"]
    assert event_agreement(events[events.kind == "desaturation"], desats)["f1"] >= 0.9
    tst_h = np.isin(truth.hypnogram, ["N1", "N2", "N3", "R"]).sum() / 120
    assert abs(len(resp) / tst_h - truth.ahi) <= 2.0
    flats = truth.events[(truth.events.kind == "artefact") & (truth.events.subtype == "flat")]
    for flat in flats.itertuples():  # a dead sensor is never an apnea
        assert not ((resp.start_s < flat.end_s) & (resp.end_s > flat.start_s) & (resp.start_s > flat.start_s - 5)).any()


def _night_with_flow_drop_then(eeg_burst: str):
    """A 25-s 55 % flow drop (no desaturation) at 300 s, then at 327-333 s an EEG `eeg_burst`:
    "alpha" (a real arousal) or "pop" (electrode pops, 3000 uV spikes every 0.5 s)."""
    rec = make_night(["N2"] * 20)
    fs = rec.signals["AF"].sfreq
    rec.signals["AF"].data[int(300 * fs) : int(325 * fs)] *= 0.45
    for name in ("EEG_C3_A2", "EEG_C4_A1"):
        eeg = rec.signals[name]
        fs_eeg = int(eeg.sfreq)
        burst = slice(327 * fs_eeg, 333 * fs_eeg)
        if eeg_burst == "alpha":
            eeg.data[burst] += 60 * np.sin(2 * np.pi * 10 * np.arange(6 * fs_eeg) / fs_eeg)
        else:
            eeg.data[burst][:: fs_eeg // 2] += 3000.0
    return rec


def test_rule_1a_counts_a_hypopnea_ending_in_an_arousal_and_1b_does_not():
    rec, hyp = _night_with_flow_drop_then("alpha"), np.array(["N2"] * 20, dtype=object)
    events = detect_events(rec, hypnogram=hyp, hypopnea_rule="1A")
    hypopnea = events[events.kind == "hypopnea"]
    assert len(hypopnea) == 1 and abs(hypopnea.iloc[0].start_s - 300) <= 5
    assert hypopnea.iloc[0].evidence["arousal"] and hypopnea.iloc[0].evidence["rule"] == "1A"
    assert hypopnea.iloc[0].evidence["desaturation_pct"] < 3  # qualified by the arousal alone
    assert 40 <= hypopnea.iloc[0].evidence["flow_drop_pct"] <= 70
    assert (events.kind == "arousal").sum() == 1
    assert not (detect_events(rec, hypnogram=hyp, hypopnea_rule="1B").kind == "hypopnea").any()


def test_electrode_pops_are_neither_arousals_nor_qualify_a_hypopnea():
    rec, hyp = _night_with_flow_drop_then("pop"), np.array(["N2"] * 20, dtype=object)
    artefacts = artefact_segments(rec)
    pops = artefacts[(artefacts.channel == "EEG_C3_A2") & (artefacts.problem == "pop")]
    assert len(pops) == 1 and pops.iloc[0].start_s <= 327 and pops.iloc[0].end_s >= 333
    events = detect_events(rec, hypnogram=hyp, artefacts=artefacts)
    assert not events.kind.isin(["arousal", "hypopnea", "apnea"]).any()
    # The same night scored as if the pops were signal: they would fake an arousal and a hypopnea.
    unmasked = detect_events(rec, hypnogram=hyp, artefacts=artefacts.iloc[:0])
    assert {"arousal", "hypopnea"} <= set(unmasked.kind)


def _sigh_then_pause(pause_s: float):
    """A sigh (one deep breath, 300-305 s) then a central pause of `pause_s`, and a 4 % SpO2 dip after it."""
    rec = make_night(["N2"] * 20)
    for name in ("AF", "THX", "ABD"):
        sig = rec.signals[name]
        fs = int(sig.sfreq)
        sig.data[300 * fs : 305 * fs] *= 2.0
        sig.data[305 * fs : int((305 + pause_s) * fs)] *= 0.05
    seconds = np.arange(len(rec.signals["SpO2"].data))
    rec.signals["SpO2"].data -= np.round(4.0 * np.exp(-(((seconds - 325) / 8.0) ** 2)), 1)
    return rec


@pytest.mark.parametrize("pause_s, expected", [(5, []), (7, []), (12, [("apnea", "central")])])
def test_post_sigh_pause_under_10_s_is_not_an_event(pause_s, expected):
    """The envelope's smear is given back by how deep the drop is: a 7-s pause read at the 30 % rule
    is not stretched to 10 s (it was, as a hypopnea), while a 12-s pause is a central apnea."""
    events = detect_events(_sigh_then_pause(pause_s), hypnogram=np.array(["N2"] * 20, dtype=object))
    resp = events[events.kind.isin(["apnea", "hypopnea"])]
    assert list(zip(resp.kind, resp.subtype)) == expected
    if expected:
        assert resp.iloc[0].start_s == pytest.approx(305, abs=1.5) and resp.iloc[0].end_s == pytest.approx(317, abs=1.5)


def test_a_desaturation_already_falling_does_not_qualify_a_later_flow_drop():
    rec = make_night(["N2"] * 20)
    seconds = np.arange(len(rec.signals["SpO2"].data))
    rec.signals["SpO2"].data -= np.round(5.0 * np.exp(-(((seconds - 330) / 12.0) ** 2)), 1)  # falls from ~305 s
    fs = int(rec.signals["AF"].sfreq)
    rec.signals["AF"].data[315 * fs : 335 * fs] *= 0.45  # flow drop 315-335 s, after the fall began
    events = detect_events(rec, hypnogram=np.array(["N2"] * 20, dtype=object), hypopnea_rule="1B")
    desat = events[events.kind == "desaturation"]
    assert len(desat) == 1 and desat.iloc[0].start_s < 315
    assert not (events.kind == "hypopnea").any()
    # The same dip falling only after the drop began qualifies it.
    rec.signals["SpO2"].data = np.round(96.0 - 5.0 * np.exp(-(((seconds - 350) / 8.0) ** 2)), 1)
    events = detect_events(rec, hypnogram=np.array(["N2"] * 20, dtype=object), hypopnea_rule="1B")
    assert (events.kind == "hypopnea").sum() == 1


def test_a_desaturation_starts_where_the_fall_begins_not_at_an_older_higher_level():
    """Whole-percent SpO2 that sat at 97 % until 250 s, then 96 %, falls to 91 % after a flow drop at
    315-340 s: the fall begins at ~330 s (not at 250 s), so it qualifies the hypopnea (rule 1B), and
    it ends at two-thirds recovery although 16-bit EDF scaling reads 95 % back as 94.9998 %."""
    rec = make_night(["N2"] * 20)
    n = len(rec.signals["SpO2"].data)
    spo2 = np.full(n, 96.0)
    spo2[200:250] = 97.0
    fall = [95, 95, 94, 94, 93, 92, 92, 91, 91, 91, 92, 93, 94, 95]
    spo2[330 : 330 + len(fall)] = fall
    rec.signals["SpO2"].data = spo2 + np.where(spo2 < 96, -0.0002, 0.0)  # EDF scaling, as read back
    fs = int(rec.signals["AF"].sfreq)
    rec.signals["AF"].data[315 * fs : 340 * fs] *= 0.45
    events = detect_events(rec, hypnogram=np.array(["N2"] * 20, dtype=object), hypopnea_rule="1B")
    desat = events[events.kind == "desaturation"]
    assert len(desat) == 1 and desat.iloc[0].start_s == pytest.approx(329, abs=1.5)
    assert desat.iloc[0].end_s == pytest.approx(342, abs=1.5) and desat.iloc[0].evidence["drop_pct"] == 6.0
    assert (events.kind == "hypopnea").sum() == 1


@pytest.mark.slow
def test_eight_hour_night_measures_end_to_end(tmp_path):
    """Artefacts + features + events + summary of a whole 8-h night; bench/measure.py times it (target <= 20 s)."""
    from sleeplm.measure.features import epoch_features
    from sleeplm.io.reader import load_recording
    from sleeplm.measure.staging import StagingResult
    from sleeplm.measure.summary import night_summary
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    path = write_night(simulate_night(8.0, seed=0, sfreq=256), tmp_path / "night.edf")
    rec, truth = load_recording(path), load_truth(path)
    artefacts = artefact_segments(rec)
    features = epoch_features(rec, artefacts)
    events = detect_events(rec, truth.hypnogram, artefacts=artefacts)
    summary = night_summary(rec, events, StagingResult(truth.hypnogram, "reference scoring"), features=features,
                            artefacts=artefacts)
    assert len(features) == 960 and abs(summary["ahi"] - truth.ahi) <= 2


def test_mixed_apnea_effort_absent_then_resumed():
    rec = make_night(["N2"] * 20, [("apnea", "central", 300, 24)])
    for name in ("THX", "ABD"):  # effort comes back for the second half of the pause, against a closed airway
        sig = rec.signals[name]
        fs = int(sig.sfreq)
        t = np.arange(12 * fs) / fs
        sig.data[312 * fs : 324 * fs] = np.sin(2 * np.pi * 0.25 * (t + 312))
    events = detect_events(rec, hypnogram=np.array(["N2"] * 20, dtype=object))
    apnea = events[events.kind == "apnea"]
    assert list(apnea.subtype) == ["mixed"] and abs(apnea.iloc[0].start_s - 300) <= 2


def _n2_night_with_alpha(seconds):
    """20 epochs of N2 whose EEG carries a 10-Hz alpha burst (12 uV, 10-20x its alpha power) in each whole second listed."""
    rec = make_night(["N2"] * 20)
    for name in ("EEG_C3_A2", "EEG_C4_A1"):
        eeg = rec.signals[name]
        fs = int(eeg.sfreq)
        for second in seconds:
            eeg.data[second * fs : (second + 1) * fs] += 12 * np.sin(2 * np.pi * 10 * np.arange(fs) / fs)
    return rec


def _arousals(rec):
    from sleeplm.measure.events import detect_arousals

    return detect_arousals(rec, np.array(["N2"] * 20, dtype=object), np.zeros(rec.n_epochs * 30, dtype=bool))


def test_an_arousal_is_a_frequency_shift_lasting_three_seconds():
    """AASM: the EEG shift lasts >= 3 s. Alpha that swings from one second to the next is one arousal
    when 3 of its seconds show it (307, 309, 311: gaps of a second bridged); two isolated alpha seconds 3 s
    apart (387, 390) span 4 s with two quiet seconds between them: no 3-s shift, no arousal."""
    swinging = _arousals(_n2_night_with_alpha([307, 309, 311]))
    assert swinging[["start_s", "end_s"]].values.tolist() == [[307.0, 312.0]]
    assert _arousals(_n2_night_with_alpha([387, 390])).empty
    sustained = _arousals(_n2_night_with_alpha(range(450, 455)))
    assert sustained[["start_s", "end_s"]].values.tolist() == [[450.0, 455.0]]

