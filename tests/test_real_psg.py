"""Respiratory scoring on real expert-scored PSG, asserted offline from derived features.

tests/data/real_dreams_excerpt3_resp.npz is written by ``bench/real.py --write-features`` from the
DREAMS Spindles database's excerpt 3 (a 30-min clinical Brainnet PSG, 50 Hz; source, commit and
licence in bench/data/PROVENANCE.md): its breathing channels as the product reads them (nasal
thermistor NAF1, thoracic VTH and abdominal VAB belts) low-passed and decimated to 4 Hz, the arousals
the product detects on the full-rate EEG, and the experts' 30-s stages and 38 respiratory events in
sleep. The file carries no SpO2 worth reading (its SAO2 channel holds values around 0), so
hypopneas qualify by arousal only: the experts' events are mostly hypopneas with rounded,
drifting flow, which is what the detectors are measured on here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sleeplm.io.recording import CANONICAL_CHANNELS, EPOCH_SAMPLES, ChannelInfo, Recording, Signal
from sleeplm.measure.events import _in_sleep
from sleeplm.measure.respiratory import detect_desaturations, respiratory_candidates
from sleeplm.measure.rules import score_candidates

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from evaluation import event_agreement  # noqa: E402

FEATURES = Path(__file__).parent / "data" / "real_dreams_excerpt3_resp.npz"
SOURCES = {"AF": "NAF1", "THX": "VTH", "ABD": "VAB"}


@pytest.fixture(scope="module")
def dreams():
    data = np.load(FEATURES)
    stages = data["stages"].astype(object)
    signals = {name: Signal(data[name].astype(float), float(data["sfreq"]), "uV", label)
               for name, label in SOURCES.items()}
    present = np.array([name in signals for name in CANONICAL_CHANNELS])
    rec = Recording(
        epochs=np.zeros((len(stages), len(CANONICAL_CHANNELS), EPOCH_SAMPLES), dtype=np.float32),
        channel_present=present,
        channels=[ChannelInfo(canonical=name, present=bool(p)) for name, p in zip(CANONICAL_CHANNELS, present)],
        signals=signals, start_seconds=None, normalization="night_zscore", position_map=None, reference=None,
        source_format="EDF",
    )
    arousals = pd.DataFrame(data["arousals"], columns=["start_s", "end_s"])
    experts = pd.DataFrame(data["expert_events"], columns=["start_s", "end_s", "code"])
    return rec, stages, arousals, experts


def _scored(rec, stages, arousals, rule: str = "1A") -> pd.DataFrame:
    clean = {name: np.zeros(rec.n_epochs * 30, dtype=bool) for name in ("AF", "Pressure")}
    candidates = respiratory_candidates(rec, clean, detect_desaturations(np.array([])), arousals)
    events, _ = score_candidates(candidates, rule)
    return pd.DataFrame(_in_sleep(events, stages))


def test_real_flow_events_recall_and_precision(dreams):
    rec, stages, arousals, experts = dreams
    assert len(experts) == 38 and rec.n_epochs == 60
    events = _scored(rec, stages, arousals)
    scored = event_agreement(events, experts)
    assert scored["recall"] >= 0.7 and scored["precision"] >= 0.8, scored
    # AHI in the experts' sleep: the experts' 84/h against ours, within a quarter of it.
    tst_h = np.isin(stages, ["N1", "N2", "N3", "R"]).sum() * 30 / 3600
    assert len(experts) / tst_h == pytest.approx(84.4, abs=0.1)
    assert abs(len(events) / tst_h - len(experts) / tst_h) <= 0.25 * len(experts) / tst_h


def test_without_arousal_evidence_only_apneas_are_scored(dreams):
    rec, stages, _, experts = dreams
    events = _scored(rec, stages, pd.DataFrame(columns=["start_s", "end_s"]))
    assert set(events["kind"]) == {"apnea"}
    # The experts' apneas (codes other than 10 in DREAMS' event channel) are found without help.
    apneas = experts[experts["code"] != 10]
    assert event_agreement(events, apneas)["recall"] >= 0.75
