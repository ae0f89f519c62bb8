"""Measured captions: deterministic text from the features and events of an epoch range."""

import numpy as np
import pytest

from physio_night import make_night
from sleeplm.measure.analysis import analyze_night
from sleeplm.report.describe import describe_epochs
from sleeplm.measure.signals import MeasurementError

STAGES = ["W"] * 4 + ["N2"] * 16 + ["N3"] * 6 + ["R"] * 4


@pytest.fixture(scope="module")
def night():
    rec = make_night(STAGES, [("apnea", "obstructive", 300, 20)])
    return rec, analyze_night(rec, automatic_staging=False)


def test_brain_text_names_stage_and_spindles(night):
    rec, analysis = night
    out = describe_epochs(rec, "brain", 6, 8, analysis=analysis)
    assert out["source"] == "measured" and out["domain"] == "brain"
    assert out["text"].startswith("Stage N2 (reference scoring) with sleep spindles and K-complexes")
    assert "alpha low" in out["text"]
    assert out["citation"] == rec.cite_epochs(6, 8)
    assert "rapid eye movements" in describe_epochs(rec, "brain", 26, 29, analysis=analysis)["text"]
    assert "slow waves dominant" in describe_epochs(rec, "brain", 21, 23, analysis=analysis)["text"]


def test_cardiac_and_respiratory_text(night):
    rec, analysis = night
    cardiac = describe_epochs(rec, "cardiac", 4, 5, analysis=analysis)["text"]
    assert cardiac.startswith("Heart rate 60-60 bpm (mean 60), steady") and "SpO2 mean 96%" in cardiac
    resp = describe_epochs(rec, "respiratory", 10, 11, analysis=analysis)["text"]
    assert "Breathing 15/min, regular" in resp and "1 obstructive apnea" in resp
    assert "no respiratory events" in describe_epochs(rec, "respiratory", 4, 5, analysis=analysis)["text"]


def test_position_and_stage_event_text(night):
    rec, analysis = night
    assert describe_epochs(rec, "position_muscle", 0, 3, analysis=analysis)["text"].startswith("Supine")
    text = describe_epochs(rec, "stage_event", 9, 11, analysis=analysis)["text"]
    assert text.startswith("Stage N2") and "1 obstructive apnea" in text


def test_deterministic(night):
    rec, analysis = night
    assert describe_epochs(rec, "brain", 0, 29, analysis=analysis) == describe_epochs(rec, "brain", 0, 29, analysis=analysis)


def test_bad_requests(night):
    rec, analysis = night
    with pytest.raises(MeasurementError, match="domain"):
        describe_epochs(rec, "heart", 0, 1, analysis=analysis)
    with pytest.raises(MeasurementError, match="outside"):
        describe_epochs(rec, "brain", 25, 40, analysis=analysis)


def test_no_airflow_is_not_no_events():
    rec = make_night(STAGES[:8], drop=("AF", "Pressure", "THX", "ABD", "SpO2"))
    text = describe_epochs(rec, "respiratory", 4, 5, analysis=analyze_night(rec, automatic_staging=False))["text"]
    assert "airflow not measured (missing or flat)" in text and "not assessable without airflow" in text
    assert "no respiratory events" not in text
