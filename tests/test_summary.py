"""Night statistics: equal to YASA where both define a figure; AASM indices on a known night."""

import warnings

import numpy as np
import pandas as pd
import pytest
import yasa

from physio_night import make_night
from sleeplm.measure.staging import StagingResult
from sleeplm.measure.summary import SUMMARY_KEYS, night_summary, severity_band, sleep_statistics

YASA_CODES = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4, "?": -2}
SAME = {"tib_min": "TIB", "spt_min": "SPT", "tst_min": "TST", "waso_min": "WASO", "sol_min": "SOL", "se_pct": "SE",
        "N1_min": "N1", "N2_min": "N2", "N3_min": "N3", "R_min": "REM",
        "N1_pct": "%N1", "N2_pct": "%N2", "N3_pct": "%N3", "R_pct": "%REM"}


def random_hypnogram(seed: int, longest_run: int = 30) -> np.ndarray:
    """Runs of stages with some unscored epochs, starting and ending awake."""
    rng = np.random.default_rng(seed)
    runs = [[s] * rng.integers(1, longest_run) for s in rng.choice(["W", "N1", "N2", "N3", "R", "?"], 40)]
    return np.concatenate([["W"] * 10] + runs + [["W"] * 5]).astype(object)


def yasa_statistics(hyp: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return yasa.sleep_statistics(np.array([YASA_CODES[s] for s in hyp]), sf_hyp=1 / 30)


@pytest.mark.parametrize("seed", range(5))
def test_equal_to_yasa_sleep_statistics(seed):
    hyp = random_hypnogram(seed)
    ours, theirs = sleep_statistics(hyp), yasa_statistics(hyp)
    for key, name in SAME.items():
        assert ours[key] == pytest.approx(theirs[name], rel=1e-9), key
    assert ours["rem_latency_min"] == pytest.approx(theirs["Lat_REM"] - theirs["SOL"])


def test_night_summary_equal_to_yasa_on_the_same_hypnogram():
    hyp = random_hypnogram(7, longest_run=8)
    summary = night_summary(make_night(list(hyp)), staging=StagingResult(hyp, "reference scoring"))
    theirs = yasa_statistics(hyp)
    for key, name in SAME.items():
        assert summary[key] == pytest.approx(theirs[name], rel=1e-9), key


def test_awakenings_and_latencies():
    hyp = np.array(["W", "W", "N1", "N2", "W", "N2", "R", "W", "W", "N2", "W"], dtype=object)
    stats = sleep_statistics(hyp)
    assert stats["n_awakenings"] == 2 and stats["sol_min"] == 1.0 and stats["rem_latency_min"] == 2.0
    assert stats["waso_min"] == 1.5 and stats["W_pct"] == pytest.approx(100 * 6 / 11, abs=0.01)


@pytest.mark.parametrize("ahi, band", [(0, "normal"), (4.99, "normal"), (5, "mild"), (15, "moderate"), (30, "severe"), (None, None)])
def test_severity_bands(ahi, band):
    assert severity_band(ahi) == band


def test_known_night_indices():
    stages = ["W"] * 2 + ["N2"] * 38 + ["R"] * 20
    positions = np.full(1800, 2.0)
    positions[900:] = 1.0  # supine first half, left second half
    events = pd.DataFrame({
        "kind": ["apnea", "apnea", "hypopnea", "desaturation", "desaturation"],
        "subtype": ["obstructive", "central", "", "4%", "3%"],
        "start_s": [300.0, 600.0, 1300.0, 320.0, 620.0], "end_s": [320.0, 620.0, 1325.0, 340.0, 640.0],
    })
    rec = make_night(stages, positions=positions)
    rec.signals["SpO2"].data[100:160] = 88.0
    summary = night_summary(rec, events=events, staging=StagingResult(np.array(stages, dtype=object), "reference scoring"))
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["tst_min"] == 29.0 and summary["n_apneas"] == 2 and summary["n_hypopneas"] == 1
    assert summary["ahi"] == pytest.approx(3 / (29 / 60), abs=0.01)
    assert summary["ahi_supine"] == pytest.approx(2 / (14 / 60), abs=0.01)  # 28 supine sleep epochs
    assert summary["ahi_nonsupine"] == pytest.approx(1 / 0.25, abs=0.01)
    assert summary["ahi_rem"] == pytest.approx(1 / (10 / 60), abs=0.01)
    assert summary["odi3"] == pytest.approx(2 / (29 / 60), abs=0.01) and summary["odi4"] == pytest.approx(1 / (29 / 60), abs=0.01)
    assert summary["t90_min"] == 1.0 and summary["spo2_min"] == 88.0
    assert summary["hr_mean"] == pytest.approx(60, abs=0.5)
    assert summary["position_min"] == {"Left": 15.0, "Supine": 15.0}
    assert summary["severity"] == "mild" and summary["not_assessable"] == {}


def test_no_eeg_gives_rei_and_reasons():
    rec = make_night(["N2"] * 20, [("apnea", "obstructive", 300, 20)], scored=False,
                     drop=("EEG_C3_A2", "EEG_C4_A1", "SpO2", "Pressure"))
    summary = night_summary(rec)
    assert summary["tst_min"] is None and summary["ahi"] is None
    assert "EEG" in summary["not_assessable"]["tst_min"] and "REI" in summary["not_assessable"]["ahi"]
    assert summary["rei"] == pytest.approx(1 / (10 / 60), abs=0.01)
    assert summary["odi3"] is None and "SpO2" in summary["not_assessable"]["odi3"]
    # No SpO2 and no EEG: hypopneas cannot be scored, so the index counts apneas only and no band is given.
    assert summary["ahi_rule"] == "apneas only" and summary["severity"] is None and summary["n_hypopneas"] is None
    assert "apneas only" in summary["not_assessable"]["severity"]
    assert "no usable SpO2 and no EEG" in summary["not_assessable"]["n_hypopneas"]


def test_dead_sensors_are_not_a_normal_night():
    """An airflow sensor flat all night, or SpO2 stuck at 0, gives no AHI/ODI (with the reason), not 0 / 'normal'."""
    stages = ["N2"] * 40
    rec = make_night(stages, [("apnea", "obstructive", 300, 20)])
    rec.signals["AF"].data[:] = 0.0
    rec.signals["SpO2"].data[:] = 0.0
    summary = night_summary(rec, staging=StagingResult(np.array(stages, dtype=object), "reference scoring"))
    for key in ("ahi", "rei", "severity", "n_apneas", "odi3", "odi4", "t90_min"):
        assert summary[key] is None, key
    assert "usable" in summary["not_assessable"]["ahi"] and "0%" in summary["not_assessable"]["ahi"]
    assert summary["airflow_usable_pct"] == 0.0 and summary["tst_min"] == 20.0
    # Half the night usable is enough (the index is still counted over sleep time).
    rec = make_night(stages, [("apnea", "obstructive", 300, 20)])
    rec.signals["AF"].data[700 * 32 :] = 0.0
    summary = night_summary(rec, staging=StagingResult(np.array(stages, dtype=object), "reference scoring"))
    assert summary["ahi"] == pytest.approx(3.0) and summary["n_apneas"] == 1
    assert summary["airflow_usable_pct"] == pytest.approx(100 * 700 / 1200, abs=1)
