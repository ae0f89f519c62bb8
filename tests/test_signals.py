"""Signal helpers: one value per second at any rate, and the words for an unusable signal."""

from __future__ import annotations

import numpy as np

from sleeplm.io.recording import Signal
from sleeplm.measure.signals import MIN_SFREQ, per_second, unusable_reason


def test_per_second_holds_slow_signals_one_value_per_second():
    """A 0.25-Hz SpO2 (one sample per 4 s) gives one value for every second, each sample held."""
    spo2 = np.array([97.0, 94.0, 90.0])
    held = per_second(spo2, 0.25)
    assert held.tolist() == [97.0] * 4 + [94.0] * 4 + [90.0] * 4
    assert per_second(np.arange(4.0), 4, "max").tolist() == [3.0]


def test_unusable_reason_says_a_usable_signal_is_usable(bare_recording):
    rec = bare_recording(n_epochs=2)
    rec.signals["EEG_C3_A2"] = Signal(np.zeros(60 * 128, dtype=np.float32), 128.0, "uV", "C3-M2")
    rec.signals["EEG_C4_A1"] = Signal(np.zeros(60 * 32, dtype=np.float32), 32.0, "uV", "C4-M1")
    rec.signals["HR"] = Signal(np.full(60, 60.0, dtype=np.float32), 1.0, "bpm", "HR")
    assert unusable_reason(rec, "EEG_C3_A2") == "the EEG_C3_A2 signal is usable (128 Hz)"
    assert unusable_reason(rec, "EEG_C4_A1") == (
        f"EEG_C4_A1 is sampled at 32 Hz, too slow to measure (needs >= {MIN_SFREQ['EEG_C4_A1']:g} Hz)")
    assert unusable_reason(rec, "HR") == "the HR signal is usable (1 Hz)"  # no rate floor: no KeyError
    assert unusable_reason(rec, "SpO2") == "no SpO2 signal in this recording"
