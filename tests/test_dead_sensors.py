"""Dead sensors are not data: a flat, disconnected or implausible SpO2/HR channel is flagged in the
preflight and excluded from every statistic that would use it, which is then null with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from sleeplm.io.preprocess import dead_sensor
from sleeplm.io.reader import load_recording, preflight_table
from sleeplm.measure.analysis import analyze_night
from sleeplm.synthetic import simulate_night, write_night

SPO2_KEYS = ("spo2_mean", "spo2_min", "t90_min", "odi3", "odi4")


def night_with(tmp_path, name, values_of):
    """A simulator night whose `name` channel is replaced by `values_of(n)`."""
    night = simulate_night(duration_h=0.2, seed=7, severity="moderate", sfreq=128)
    data, rate, unit = night.signals[name]
    night.signals[name] = (values_of(len(data)).astype(np.float32), rate, unit)
    return write_night(night, tmp_path / "night.edf")


@pytest.mark.parametrize("dead", [
    lambda n: np.full(n, 50.0),  # constant at 50 %: probe off
    lambda n: np.full(n, 0.0),  # disconnected oximeter reads 0
    lambda n: np.random.default_rng(0).uniform(0, 40, n),  # implausible values
])
def test_a_dead_oximeter_gives_no_spo2_statistics(tmp_path, dead):
    path = night_with(tmp_path, "SpO2", dead)
    rec = load_recording(path)
    assert "SpO2" not in rec.signals
    table = preflight_table(rec).set_index("channel")
    assert "excluded from every statistic" in table.loc["SpO2", "warnings"]
    summary = analyze_night(rec, automatic_staging=False).summary
    for key in SPO2_KEYS:
        assert summary[key] is None, key
        assert "preflight" in summary["not_assessable"][key], summary["not_assessable"][key]


def test_a_working_oximeter_is_kept(tmp_path):
    night = simulate_night(duration_h=0.2, seed=7, severity="moderate", sfreq=128)
    rec = load_recording(write_night(night, tmp_path / "ok.edf"))
    assert "SpO2" in rec.signals
    assert analyze_night(rec, automatic_staging=False).summary["spo2_mean"] > 80


def test_dead_sensor_rules():
    assert dead_sensor("HR", np.full(50, 0.0, dtype=np.float32), 0.0, 0.0, "bpm").startswith("constant at 0 bpm")
    assert "implausible" in dead_sensor("HR", np.full(50, 400.0, dtype=np.float32) + np.arange(50), 10.0, 420.0, "bpm")
    assert dead_sensor("HR", np.linspace(55, 70, 50, dtype=np.float32), 3.0, 60.0, "bpm") is None
    assert dead_sensor("Light", np.zeros(50, dtype=np.float32), 0.0, 0.0, "") is None
