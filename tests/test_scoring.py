"""Scoring files that come with a recording: real NSRR-learn Profusion XML and Noxturnal exports
(tests/data/scoring/README.md), generated NSRR XML, UCDDB text and CSV edge cases, files found
beside the EDF by name, and files that belong to another recording refused."""

from __future__ import annotations

import collections
import datetime
import re
from pathlib import Path

import numpy as np
import pytest
from test_io import SLEEP_EDF, write_psg

from cli import main as cli_main
from sleeplm.errors import AnnotationFileError, ScoringMismatchError
from sleeplm.io.annotations import SCORED_EVENT_COLUMNS
from sleeplm.io.reader import load_recording
from sleeplm.io.scoring import check_scoring_fits, find_scoring_file, read_scoring, scoring_reference
from sleeplm.terms import PRECISION_ENV, SCORED_EVENT_KINDS

DATA = Path(__file__).parent / "data" / "scoring"
PROFUSION = DATA / "learn-nsrr02.xml"
NOXTURNAL = DATA / "noxturnal_events_example_unicode_2.csv"


def kinds(events) -> dict:
    return {key: int(n) for key, n in events.groupby(["kind", "subtype"]).size().items()}


def nsrr_xml(stages, events=(), clock="22.00.00", epoch=30):
    """An NSRR XML: stage runs (concept, n_epochs) and events (concept, start, duration, extra XML)."""
    parts = ["<?xml version='1.0' encoding='UTF-8'?><PSGAnnotation><SoftwareVersion>Compumedics</SoftwareVersion>",
             f"<EpochLength>{epoch}</EpochLength><ScoredEvents>"]
    if clock is not None:
        parts.append("<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>"
                     f"<Duration>600</Duration><ClockTime>00.00.00 {clock}</ClockTime></ScoredEvent>")
    t = 0.0
    for concept, n in stages:
        parts.append(f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{concept}</EventConcept>"
                     f"<Start>{t}</Start><Duration>{n * epoch}</Duration></ScoredEvent>")
        t += n * epoch
    for concept, start, duration, extra in events:
        parts.append(f"<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>{concept}</EventConcept>"
                     f"<Start>{start}</Start><Duration>{duration}</Duration>{extra}</ScoredEvent>")
    return "".join(parts + ["</ScoredEvents></PSGAnnotation>"])


@pytest.fixture(autouse=True)
def _no_weights(monkeypatch):
    """The commands here run on measurements only, whatever an earlier test left in the environment."""
    monkeypatch.setenv("SLEEPLM_CHECKPOINT", "")
    monkeypatch.delenv(PRECISION_ENV, raising=False)


@pytest.fixture
def night(tmp_path):
    """A 10-min EDF+ without scoring, starting at 22:00:00."""
    path = tmp_path / "night.edf"
    write_psg(path, SLEEP_EDF, minutes=10, start=datetime.time(22, 0, 0))
    return path


# ---- real files ---------------------------------------------------------------------------------
def test_real_nsrr_learn_profusion_xml():
    scoring = read_scoring(PROFUSION)
    assert scoring.source == "Profusion XML" and scoring.offset_s is None
    assert len(scoring.stages) == 1195 and {d for _, d, _ in scoring.stages} == {30.0}
    assert kinds(scoring.events) == {("apnea", "obstructive"): 5, ("arousal", ""): 51, ("artefact", ""): 34,
                                     ("desaturation", ""): 66, ("hypopnea", "unspecified"): 101}
    desats = scoring.events[scoring.events.kind == "desaturation"]
    assert desats["spo2_nadir"].between(80, 100).all() and desats["spo2_nadir"].min() == 86
    assert scoring.events[scoring.events.kind != "desaturation"]["spo2_nadir"].isna().all()
    check_scoring_fits(scoring, n_epochs=1195)
    ref = scoring_reference(scoring, 1195)
    assert collections.Counter(ref.stages.tolist()) == {"W": 480, "N2": 399, "N3": 185, "R": 120, "N1": 11}
    with pytest.raises(ScoringMismatchError, match="stages up to 9h57m30s after the recording start, but the recording lasts 5h00m00s"):
        check_scoring_fits(scoring, n_epochs=600)  # the same scoring on a 5-h recording


def test_real_noxturnal_export_utf16_french():
    start = 23 * 3600 + 45 * 60 + 40  # the export's first row: "Début de l'analyse" at 23:45:40
    scoring = read_scoring(NOXTURNAL, recording_start=start)
    assert scoring.source == "Noxturnal CSV" and scoring.start_seconds == start and scoring.offset_s == 0
    assert kinds(scoring.events) == {
        ("apnea", "mixed"): 1, ("apnea", "obstructive"): 114, ("arousal", ""): 76, ("artefact", ""): 22,
        ("desaturation", ""): 191, ("hypopnea", "unspecified"): 89, ("limb_movement", ""): 29,
        ("limb_movement", "periodic"): 1, ("other", ""): 4, ("position_change", "Left"): 12,
        ("position_change", "Right"): 4, ("position_change", "Supine"): 18, ("position_change", "Upright"): 3,
    }
    # Unrecognised labels keep their text; "Éveil" is wake, 30-s epochs from 23:46:00.
    assert sorted(scoring.events.loc[scoring.events.kind == "other", "label"]) == [
        "Avertissement", "Début de l'analyse", "Notification", "Notification"]
    assert collections.Counter(stage for _, _, stage in scoring.stages) == {
        "N2": 354, "W": 169, "R": 146, "N3": 141, "N1": 38}
    assert scoring.stages[0] == (20.0, 30.0, "W")
    n_epochs = int(np.ceil(max(o + d for o, d, _ in scoring.stages) / 30))
    check_scoring_fits(scoring, n_epochs, start)
    # The same export against a recording that started at 01:00: its night began 75 min earlier.
    other = read_scoring(NOXTURNAL, recording_start=3600.0)
    with pytest.raises(ScoringMismatchError, match="starts at 23:45:40, 74 min before the recording's start"):
        check_scoring_fits(other, n_epochs, 3600.0)


def test_every_kind_is_a_shared_term_and_the_table_is_tidy():
    for scoring in (read_scoring(PROFUSION), read_scoring(NOXTURNAL, recording_start=0.0)):
        assert tuple(scoring.events.columns) == SCORED_EVENT_COLUMNS
        assert set(scoring.events["kind"]) <= set(SCORED_EVENT_KINDS)


# ---- generated edge cases ---------------------------------------------------------------------
def test_nsrr_xml_unscored_epochs_overlapping_events_and_nadir(tmp_path):
    path = tmp_path / "a-nsrr.xml"
    path.write_text(nsrr_xml(
        [("Wake|0", 2), ("Stage 2 sleep|2", 3), ("Unscored|9", 2), ("Stage 4 sleep|4", 1), ("REM sleep|5", 2)],
        [("Obstructive apnea|Obstructive Apnea", 70, 20, ""),
         ("SpO2 desaturation|SpO2 desaturation", 80, 15, "<SpO2Nadir>84</SpO2Nadir><SpO2Baseline>95</SpO2Baseline>"),
         ("Arousal|Arousal ()", 88, 6, ""), ("Central apnea|Central Apnea", 75, 10, "")]))
    scoring = read_scoring(path, recording_start=22 * 3600)
    assert scoring.source == "NSRR XML" and scoring.offset_s == 0
    ref = scoring_reference(scoring, 10)
    assert ref.stages.tolist() == ["W", "W", "N2", "N2", "N2", "?", "?", "N3", "R", "R"]
    events = ref.events
    assert events[["onset_s", "kind", "subtype"]].values.tolist() == [
        [70.0, "apnea", "obstructive"], [80.0, "desaturation", ""], [88.0, "arousal", ""], [75.0, "apnea", "central"]]
    assert events["spo2_nadir"].tolist()[1] == 84.0


def test_20_s_epochs_and_unscored_codes_of_profusion(tmp_path):
    codes = [0, 0, 0, 1, 2, 2, 3, 4, 9, 9, 5, 5]  # 12 x 20 s = 8 x 30 s
    path = tmp_path / "b-profusion.xml"
    path.write_text("<CMPStudyConfig><EpochLength>20</EpochLength><ScoredEvents><ScoredEvent><Name>Limb Movement (Left)"
                    "</Name><Start>12.5</Start><Duration>2</Duration></ScoredEvent></ScoredEvents><SleepStages>"
                    + "".join(f"<SleepStage>{c}</SleepStage>" for c in codes) + "</SleepStages></CMPStudyConfig>")
    scoring = read_scoring(path)
    assert [d for _, d, _ in scoring.stages] == [20.0] * 12
    # By majority of time: 60-90 s holds N1 20 s + N2 10 s; 150-180 s N3 10 s + unscored 20 s;
    # 180-210 s unscored 20 s + REM 10 s.
    assert scoring_reference(scoring, 8).stages.tolist() == ["W", "W", "N1", "N2", "N3", "?", "?", "R"]
    assert kinds(scoring.events) == {("limb_movement", ""): 1}


def test_ucddb_respevt_and_stage_files_read_together(tmp_path):
    (tmp_path / "ucddb099_stage.txt").write_text("0\n0\n2\n3\n3\n4\n5\n1\n7\n6\n")
    (tmp_path / "ucddb099_respevt.txt").write_text(
        "\n    Time    Type      PB/CS   Duration   Low    %Drop  Snore  Arousal  B/T Rate  B/T Change\n"
        "--------------------------------------------------------------------------------------\n"
        " 22:01:40   HYP-O               12      91.2    3.4     -       +        -         -\n"
        " 22:02:10   APNEA-C   PB        15      88.0    6.1     -       -        -         -\n"
        " 22:03:00   APNEA-M             11      -       -       +       -        -         -\n"
        " 22:03:30   HYP-C               10      93.0    2.0     -       -        -         -\n")
    for given in ("ucddb099_respevt.txt", "ucddb099_stage.txt"):  # either file brings the other
        scoring = read_scoring(tmp_path / given, recording_start=22 * 3600.0)
        assert scoring.source == "UCDDB text"
        assert [stage for _, _, stage in scoring.stages] == ["W", "W", "N1", "N2", "N2", "N3", "N3", "R", "?", "?"]
        assert scoring.events[["duration_s", "kind", "subtype"]].values.tolist() == [
            [12.0, "hypopnea", "obstructive"], [15.0, "apnea", "central"], [11.0, "apnea", "mixed"],
            [10.0, "hypopnea", "central"]]
        assert scoring.events["onset_s"].tolist() == [100.0, 130.0, 180.0, 210.0]
        assert scoring.events["spo2_nadir"].fillna(-1).tolist() == [91.2, 88.0, -1, 93.0]
    with pytest.raises(AnnotationFileError, match="clock times"):
        read_scoring(tmp_path / "ucddb099_respevt.txt", recording_start=None)


@pytest.mark.parametrize("times", [
    ["23:59:30", "23:59:40", "00:00:30"],                                     # clock times across midnight
    ["15/01/2016 23:59:30", "15/01/2016 23:59:40", "16/01/2016 00:00:30"],    # dates and times, day first
    ["2016-01-15T23:59:30", "2016-01-15T23:59:40", "2016-01-16T00:00:30"],    # ISO
])
def test_clock_time_formats_agree_with_offsets(tmp_path, times):
    clock = tmp_path / "clock.csv"
    clock.write_text("Start Time,Event,Duration\n" + "".join(
        f"{t},{label},{d}\n" for t, label, d in zip(times, ["N2", "Obstructive Apnea", "REM"], [30, 12, 30])))
    offsets = tmp_path / "offsets.csv"
    offsets.write_text("onset,duration,description\n30,30,N2\n40,12,Obstructive Apnea\n90,30,REM\n")
    start = 23 * 3600 + 59 * 60.0  # the recording starts 30 s before the first row
    by_clock, by_offset = read_scoring(clock, recording_start=start), read_scoring(offsets, recording_start=start)
    assert by_clock.stages == by_offset.stages == [(30.0, 30.0, "N2"), (90.0, 30.0, "R")]
    assert by_clock.events.drop(columns="label").equals(by_offset.events.drop(columns="label"))


def test_utf8_labels_are_read_and_free_text_is_scrubbed(tmp_path):
    path = tmp_path / "utf8.csv"
    path.write_text("Heure de début;Heure de fin;Événement;Durée\n[];[];[];[s]\n"
                    "22:00:00;22:00:30;Éveil;30\n22:00:30;22:01:00;N1;30\n22:00:35;22:00:50;Hypopnée;15\n"
                    "22:00:40;22:00:43;Micro-éveil;3\n22:00:45;22:00:45;Pt Jane Margaret Doe tel +1-555-0100;0\n",
                    encoding="utf-8-sig")
    scoring = read_scoring(path, recording_start=22 * 3600.0)
    assert scoring.stages == [(0.0, 30.0, "W"), (30.0, 30.0, "N1")]
    assert scoring.events[["kind", "label"]].values.tolist() == [
        ["hypopnea", "Hypopnée"], ["arousal", "Micro-éveil"], ["other", "Pt [NAME] [PHONE]"]]


def test_hostile_and_unknown_xml_is_refused(tmp_path):
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                    "<PSGAnnotation><ScoredEvents>&lol2;</ScoredEvents></PSGAnnotation>")
    with pytest.raises(AnnotationFileError, match="DTD or entities"):
        read_scoring(bomb)
    external = tmp_path / "external.xml"
    external.write_text('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>')
    with pytest.raises(AnnotationFileError, match="DTD or entities"):
        read_scoring(external)
    other = tmp_path / "other.xml"
    other.write_text("<html><body/></html>")
    with pytest.raises(AnnotationFileError, match="root <html> are not supported"):
        read_scoring(other)
    broken = tmp_path / "broken.xml"
    broken.write_text("<PSGAnnotation><ScoredEvents>")
    with pytest.raises(AnnotationFileError, match="not well-formed"):
        read_scoring(broken)


# ---- with the recording --------------------------------------------------------------------------
def test_nsrr_xml_beside_the_edf_is_found_and_scores_the_night(night):
    (night.parent / "night-nsrr.xml").write_text(nsrr_xml(
        [("Wake|0", 4), ("Stage 2 sleep|2", 10), ("REM sleep|5", 6)],
        [("Obstructive apnea|Obstructive Apnea", 200, 15, "")]))
    assert find_scoring_file(night).name == "night-nsrr.xml"
    rec = load_recording(night)
    assert rec.reference.stages.tolist() == ["W"] * 4 + ["N2"] * 10 + ["R"] * 6
    assert rec.reference.source == "NSRR XML file found beside the recording"
    assert "(NSRR XML file found beside the recording)" in rec.describe()
    assert any("NSRR XML file beside" in warning for warning in rec.warnings)
    assert "night-" not in rec.reference.source + " ".join(rec.warnings) + rec.describe()  # no file name is kept
    given = load_recording(night, annotations=night.parent / "night-nsrr.xml")
    assert given.reference.source == "NSRR XML file given with the recording"


def test_ucddb_files_beside_a_recording(night):
    (night.parent / "night_stage.txt").write_text("0\n" * 10 + "3\n" * 10)
    (night.parent / "night_respevt.txt").write_text("Time Type PB/CS Duration\n 22:05:00  HYP-O   12  90.0  4.0\n")
    rec = load_recording(night)
    assert rec.reference.source == "UCDDB text file found beside the recording"
    assert rec.reference.stages.tolist() == ["W"] * 10 + ["N2"] * 10
    assert rec.reference.events[["onset_s", "kind"]].values.tolist() == [[300.0, "hypopnea"]]


@pytest.mark.parametrize("stages, events, clock, match", [
    ([("Stage 2 sleep|2", 30)], [], "22.00.00", "stages up to 0h15m00s after the recording start"),
    ([("Stage 2 sleep|2", 20)], [("Hypopnea|Hypopnea", 900, 10, "")], "22.00.00", "events up to 0h15m10s"),
    ([("Stage 2 sleep|2", 20)], [], "19.00.00", "starts at 19:00:00, 180 min before"),
    ([("Stage 2 sleep|2", 20)], [], "22.30.00", "starts at 22:30:00, 30 min after"),
    ([("Stage 2 sleep|2", 6)], [], "22.00.00", "stages 6 epochs of 30 s but the recording holds 20"),
])
def test_a_scoring_file_of_another_recording_is_refused(night, stages, events, clock, match):
    path = night.parent / "other-nsrr.xml"
    path.write_text(nsrr_xml(stages, events, clock=clock))
    with pytest.raises(ScoringMismatchError, match=match) as refused:
        load_recording(night, annotations=path)
    assert "--annotations FILE" in str(refused.value) and "nothing was cut" in str(refused.value)


def test_the_real_profusion_file_is_refused_on_a_short_recording(night):
    with pytest.raises(ScoringMismatchError, match="but the recording lasts 0h10m00s"):
        load_recording(night, annotations=PROFUSION)


def test_inspect_takes_annotations_and_names_the_source(night, capsys):
    path = night.parent / "scoring.xml"
    path.write_text(nsrr_xml([("Wake|0", 20)], clock=None))
    assert cli_main(["inspect", str(night), "--annotations", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Reference scoring: 20 staged epochs, 0 events \(NSRR XML file given with the recording\)", out)
    path.write_text(nsrr_xml([("Wake|0", 40)], clock=None))
    assert cli_main(["inspect", str(night), "--annotations", str(path)]) == 2
    assert "error: the scoring file has stages up to" in capsys.readouterr().err


def test_cohort_manifest_names_each_nights_scoring_file(night):
    from sleeplm.cohort.inputs import NightTask, discover_nights
    from sleeplm.cohort.night import measure_night

    (night.parent / "scored-by-hand.xml").write_text(nsrr_xml([("Stage 2 sleep|2", 20)], clock=None))
    manifest = night.parent / "manifest.csv"
    manifest.write_text("path,subject_id,annotations\nnight.edf,s01,scored-by-hand.xml\n")
    (task,) = discover_nights(manifest)
    assert task.annotations == str(night.parent / "scored-by-hand.xml")
    assert NightTask.from_row(task.to_row()) == task
    result = measure_night(task.to_row(), str(night.parent / "out"), salt="salt-1")
    assert result["status"] == "done", result
    row = (night.parent / "out" / "parts" / result["night_id"] / "night.json").read_text()
    assert '"reference scoring"' in row, row


@pytest.mark.parametrize("start, duration", [("nan", "30"), ("inf", "30"), ("0", "-5"), ("1e400", "30")])
def test_times_that_are_not_seconds_are_refused(tmp_path, start, duration):
    path = tmp_path / "c-nsrr.xml"
    path.write_text(f"<PSGAnnotation><ScoredEvents><ScoredEvent><EventConcept>Arousal</EventConcept><Start>{start}</Start>"
                    f"<Duration>{duration}</Duration></ScoredEvent></ScoredEvents></PSGAnnotation>")
    with pytest.raises(AnnotationFileError, match="not a finite number of seconds"):
        read_scoring(path)


def test_an_event_just_before_the_start_is_kept_from_the_start(tmp_path):
    path = tmp_path / "early.csv"
    path.write_text("Start Time,Event,Duration\n21:59:50,Obstructive Apnea,25\n22:00:00,N2,30\n")
    scoring = read_scoring(path, recording_start=22 * 3600.0)
    check_scoring_fits(scoring, n_epochs=1, recording_start=22 * 3600.0)
    events = scoring_reference(scoring, 1).events
    assert events[["onset_s", "duration_s"]].values.tolist() == [[0.0, 15.0]]


def test_nsrr_download_layout_is_searched(tmp_path):
    edf = tmp_path / "polysomnography" / "edfs" / "shhs1" / "shhs1-200001.edf"
    edf.parent.mkdir(parents=True)
    write_psg(edf, SLEEP_EDF, minutes=10, start=datetime.time(22, 0, 0))
    assert find_scoring_file(edf) is None
    xml = tmp_path / "polysomnography" / "annotations-events-nsrr" / "shhs1" / "shhs1-200001-nsrr.xml"
    xml.parent.mkdir(parents=True)
    xml.write_text(nsrr_xml([("Stage 3 sleep|3", 20)]))
    assert find_scoring_file(edf) == xml
    assert load_recording(edf).reference.stages.tolist() == ["N3"] * 20


def test_analyze_takes_annotations(night, tmp_path):
    path = tmp_path / "scored.xml"
    path.write_text(nsrr_xml([("Wake|0", 2), ("Stage 1 sleep|1", 2), ("Stage 2 sleep|2", 16)],
                             [("Obstructive apnea|Obstructive Apnea", 200, 15, "")]))
    out = tmp_path / "out"
    assert cli_main(["analyze", str(night), "--out", str(out), "--annotations", str(path)]) == 0
    hypnogram = (out / "hypnogram.csv").read_text().splitlines()
    assert "reference scoring" in hypnogram[1] and ",W," in hypnogram[1] and ",N2," in hypnogram[-1]


def test_ask_takes_annotations_and_no_free_text_reaches_the_answer(night, tmp_path, capsys):
    path = tmp_path / "export.csv"
    path.write_text("Start Time,End Time,Event,Duration\n22:00:00,22:10:00,N2,600\n"
                    "22:03:00,22:03:20,Obstructive Apnea,20\n22:04:00,22:04:00,Pt Jane Margaret Doe MRN 12345678,0\n")
    assert cli_main(["ask", str(night), "what is in the recording?", "--llm", "none", "--json",
                     "--annotations", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "Noxturnal CSV file given with the recording" in printed
    assert "Jane" not in printed and "Doe" not in printed and "12345678" not in printed


def test_a_wrong_file_found_beside_says_it_was_found_by_name(night):
    (night.parent / "night_stage.txt").write_text("0\n" * 90)  # 45 min of stages for a 10-min night
    with pytest.raises(ScoringMismatchError, match="found beside the recording, named like it"):
        load_recording(night)


def test_the_preflight_says_when_there_is_no_scoring(night, capsys):
    assert cli_main(["inspect", str(night)]) == 0
    assert "Reference scoring: none (none in the file, none named like it beside it" in capsys.readouterr().out
