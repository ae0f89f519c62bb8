"""`analyze_to_dir` / `sleeplm-assistant analyze`: the export contract on a real EDF+ file."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from edfio import Edf, EdfAnnotation, EdfSignal

from physio_night import make_night
from cli import main
from sleeplm.report.analyze_dir import analyze_to_dir

STAGES = ["W"] * 2 + ["N2"] * 20 + ["R"] * 6 + ["N2"] * 4
LABELS = {"EEG_C3_A2": "EEG C3-A2", "EEG_C4_A1": "EEG C4-A1", "EOG_Left": "EOG LOC-A2", "EOG_Right": "EOG ROC-A1",
          "EMG_Chin": "EMG Chin", "ECG": "ECG", "AF": "Thermistor", "THX": "Thorax", "ABD": "Abdomen",
          "SpO2": "SpO2", "POS": "Position"}
CONTRACT = ["tib_min", "spt_min", "tst_min", "se_pct", "sol_min", "rem_latency_min", "waso_min",
            "W_min", "N1_min", "N2_min", "N3_min", "R_min", "W_pct", "N1_pct", "N2_pct", "N3_pct", "R_pct",
            "n_awakenings", "ahi", "ahi_rule", "rei", "severity", "ahi_supine", "ahi_nonsupine", "ahi_rem",
            "ahi_nrem", "odi3", "odi4", "t90_min", "spo2_min", "spo2_mean", "hr_mean", "n_apneas", "n_hypopneas"]


EVENT_KINDS = {"apnea", "hypopnea", "desaturation", "arousal", "tachycardia", "bradycardia", "position_change"}


def write_edf(path, drop=(), scored=True, events=(("apnea", "obstructive", 300, 20), ("apnea", "central", 500, 20))):
    """The test night as an EDF+ file, without the channels in `drop`, with its stages as annotations if `scored`."""
    rec = make_night(STAGES, events)
    signals = [EdfSignal(rec.signals[name].data, rec.signals[name].sfreq, label=label,
                         physical_dimension=rec.signals[name].unit) for name, label in LABELS.items() if name not in drop]
    stages = [EdfAnnotation(i * 30, 30, f"Sleep stage {s}") for i, s in enumerate(STAGES)] if scored else []
    Edf(signals, starttime=dt.time(23, 10, 0), annotations=stages).write(path)
    return path


def check_contract(summary: dict) -> None:
    """Exactly the contract's keys, the rule and the AHI by confidence (and, for a scored recording, whose
    scoring and the agreement); every null figure has its reason, and only null figures have one."""
    assert list(summary) == CONTRACT + ["rule", "ahi_by_confidence", "not_assessable"] + (
        ["scoring", "agreement"] if "scoring" in summary else [])
    reasons = summary["not_assessable"]
    assert {key for key in CONTRACT if summary[key] is None} == set(reasons)
    assert all(isinstance(reason, str) and reason for reason in reasons.values())


@pytest.fixture(scope="module")
def edf_path(tmp_path_factory):
    return write_edf(tmp_path_factory.mktemp("night") / "patient-smith.edf")


def test_analyze_writes_the_contract(edf_path, tmp_path):
    written = analyze_to_dir(edf_path, tmp_path / "out")
    assert [p.name for p in written] == ["summary.json", "events.csv", "hypnogram.csv", "report.md"]
    summary = json.loads(written[0].read_text())
    check_contract(summary)
    assert summary["tst_min"] == 15.0 and summary["n_apneas"] == 2 and summary["n_hypopneas"] == 0
    assert summary["ahi"] == pytest.approx(8.0, abs=0.01) and summary["severity"] == "mild"
    assert summary["ahi_rule"] == "1A" and summary["rei"] == pytest.approx(2 / (16 / 60), abs=0.01)
    assert summary["se_pct"] == pytest.approx(100 * 15 / 16) and summary["R_pct"] == pytest.approx(100 * 3 / 15)
    assert summary["not_assessable"] == {"ahi_nonsupine": "no non-supine sleep"}  # supine all night

    events = pd.read_csv(written[1])
    # The one events table (sleeplm.report.export): the contract's columns plus duration_s and elapsed_start.
    assert list(events.columns) == ["kind", "subtype", "start_s", "end_s", "duration_s", "clock_start", "clock_end",
                                    "elapsed_start", "epoch_start", "epoch_end", "evidence", "event_id", "confidence"]
    assert set(events.kind) <= EVENT_KINDS | {"near_miss"} and {"apnea", "desaturation"} <= set(events.kind)
    assert (events.epoch_start == events.start_s // 30).all() and (events.end_s > events.start_s).all()
    apneas = events[events.kind == "apnea"]
    assert list(apneas.subtype) == ["obstructive", "central"] and apneas.iloc[0].clock_start == "23:15:00"
    assert json.loads(apneas.iloc[0].evidence)["flow_drop_pct"] >= 90

    hyp = pd.read_csv(written[2])
    assert list(hyp.columns) == ["epoch", "clock", "stage", "source"]
    assert list(hyp.stage) == STAGES and hyp.clock.iloc[2] == "23:11:00"
    assert list(hyp.epoch) == list(range(len(STAGES))) and set(hyp.source) == {"reference scoring"}
    report = written[3].read_text()
    assert "AHI 8/h" in report and "hypopnea rule 1A" in report and "smith" not in report.lower()
    assert "Sleep stages from: reference scoring. Agreement with yasa" in report


def test_night_without_breathing_channels(tmp_path):
    path = write_edf(tmp_path / "n.edf", drop=("AF", "THX", "ABD"))
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    check_contract(summary)
    for key in ("ahi", "rei", "severity", "ahi_supine", "ahi_rem", "ahi_nrem", "n_apneas", "n_hypopneas"):
        assert summary[key] is None and "airflow" in summary["not_assessable"][key]
    assert summary["tst_min"] == 15.0 and summary["odi3"] is not None  # sleep and SpO2 are still measured
    events = pd.read_csv(tmp_path / "out" / "events.csv")
    assert not events.kind.isin(["apnea", "hypopnea"]).any()
    assert "AHI not assessable" in (tmp_path / "out" / "report.md").read_text()


def test_night_without_eeg_gives_rei_over_recording_time(tmp_path):
    path = write_edf(tmp_path / "n.edf", drop=("EEG_C3_A2", "EEG_C4_A1"), scored=False)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    check_contract(summary)
    assert summary["tib_min"] == 16.0
    for key in ("tst_min", "se_pct", "sol_min", "waso_min", "N2_min", "R_pct", "n_awakenings", "ahi", "ahi_rem"):
        assert summary[key] is None, key
    assert "EEG" in summary["not_assessable"]["tst_min"] and "REI" in summary["not_assessable"]["ahi"]
    assert summary["rei"] == pytest.approx(2 / (16 / 60), abs=0.01) and summary["severity"] == "mild"
    assert summary["spo2_min"] is not None and "spo2_min" not in summary["not_assessable"]
    hyp = pd.read_csv(tmp_path / "out" / "hypnogram.csv")
    assert set(hyp.stage) == {"?"} and set(hyp.source) == {"none"} and len(hyp) == len(STAGES)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "REI over recording time 7.5/h" in report and "severe" not in report


def test_cli_analyze(edf_path, tmp_path, capsys):
    assert main(["analyze", str(edf_path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "summary.json").exists() and "summary.json" in capsys.readouterr().out


def test_cli_analyze_rule_1b_is_named(tmp_path):
    path = write_edf(tmp_path / "n.edf", events=[("hypopnea", "obstructive", 300, 20)])  # a 3.9 % dip: 1A only
    counts = {}
    for rule in ("1A", "1B"):
        assert main(["analyze", str(path), "--out", str(tmp_path / rule), "--hypopnea-rule", rule]) == 0
        summary = json.loads((tmp_path / rule / "summary.json").read_text())
        assert summary["ahi_rule"] == rule and f"hypopnea rule {rule}" in (tmp_path / rule / "report.md").read_text()
        counts[rule] = summary["n_hypopneas"]
    assert counts == {"1A": 1, "1B": 0}


def test_cli_rule_names_the_rule_and_keeps_the_near_miss_with_its_failing_criterion(tmp_path):
    path = write_edf(tmp_path / "n.edf", events=[("hypopnea", "obstructive", 300, 20)])  # a 3.9 % dip
    assert main(["analyze", str(path), "--out", str(tmp_path / "out"), "--rule", "aasm-2007-recommended"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ahi_rule"] == "aasm-2007-recommended" and summary["n_hypopneas"] == 0
    assert summary["rule"]["parameters"]["hypopnea_desat_pct"] == 4.0 and "Iber" in summary["rule"]["citation"]
    assert summary["ahi_by_confidence"]["all"]["events"] == summary["n_apneas"] + summary["n_hypopneas"]
    events = pd.read_csv(tmp_path / "out" / "events.csv")
    near = events[events.kind == "near_miss"]
    failed = [f for row in near.evidence for f in json.loads(row)["criteria"]["failed"]]
    assert {"criterion": "desaturation_pct", "measured": 3.9, "threshold": 4.0, "margin": -0.1} in failed
    assert (near.confidence < 0.5).all() and near.event_id.str.match(r"R\d{3}").all()
    with pytest.raises(SystemExit):  # argparse refuses an unknown rule, naming the known ones
        main(["analyze", str(path), "--out", str(tmp_path / "x"), "--rule", "2C"])


def test_cli_analyze_bad_file(tmp_path, capsys):
    bad = tmp_path / "notes.edf"
    bad.write_text("not a recording")
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err


class StageCaptions:
    """Stands in for SleepLM's `caption` contract: one stage_event caption per epoch (the true stage)."""

    def caption(self, epochs, domain, progress=None):
        assert domain == "stage_event"
        words = {"W": "Awake.", "N1": "Stage N1.", "N2": "Stage N2 sleep.", "N3": "Stage N3.", "R": "REM sleep."}
        return [words[s] for s in STAGES[: len(epochs)]]


def test_unscored_night_staged_by_sleeplm_captions_with_yasa_agreement(tmp_path):
    path = write_edf(tmp_path / "n.edf", scored=False)
    written = analyze_to_dir(path, tmp_path / "out", model=StageCaptions())
    hyp = pd.read_csv(written[2])
    assert list(hyp.stage) == STAGES and set(hyp.source) == {"sleeplm"}
    assert "Sleep stages from: sleeplm. Agreement with yasa: accuracy" in written[3].read_text()
    assert json.loads(written[0].read_text())["tst_min"] == 15.0


def test_cli_analyze_unreadable_checkpoint(edf_path, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "analyze", str(edf_path), "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_without_spo2_and_eeg_summary_says_apneas_only(tmp_path):
    path = write_edf(tmp_path / "n.edf", drop=("EEG_C3_A2", "EEG_C4_A1", "SpO2"), scored=False)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    check_contract(summary)
    assert summary["ahi_rule"] == "apneas only" and summary["n_apneas"] == 2
    assert summary["severity"] is None and summary["n_hypopneas"] is None
    assert "apneas only" in summary["not_assessable"]["severity"]
    assert "apneas only: hypopneas cannot be scored" in (tmp_path / "out" / "report.md").read_text()
