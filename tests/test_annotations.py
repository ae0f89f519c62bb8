"""EDF+ annotation labels -> stages aligned to the epoch grid and typed events."""

from __future__ import annotations

import numpy as np
import pytest

from sleeplm.io.annotations import parse_event_label, parse_stage_label, reference_from_annotations


@pytest.mark.parametrize(
    "label, stage",
    [
        ("Sleep stage W", "W"), ("Sleep stage 1", "N1"), ("Sleep stage 2", "N2"), ("Sleep stage 3", "N3"),
        ("Sleep stage 4", "N3"), ("Sleep stage R", "R"), ("Sleep stage ?", "?"), ("W", "W"), ("N1", "N1"),
        ("N2", "N2"), ("N3", "N3"), ("REM", "R"), ("R", "R"), ("Stage 2 sleep|2", "N2"), ("Wake|0", "W"),
        ("REM sleep|5", "R"), ("Stage 4 sleep|4", "N3"), ("Sleep_stage_N2", "N2"), ("Movement time", "?"),
        ("stage r", "R"), ("Wake", "W"),
        ("Obstructive Apnea", None), ("Arousal", None), ("Lights off", None), ("Limb movement", None),
    ],
)
def test_stage_label_styles(label, stage):
    assert parse_stage_label(label) == stage


@pytest.mark.parametrize(
    "label, kind, subtype",
    [
        ("Obstructive Apnea", "apnea", "obstructive"), ("Central apnea", "apnea", "central"),
        ("Mixed Apnea", "apnea", "mixed"), ("Apnea", "apnea", "unspecified"),
        ("Hypopnea", "hypopnea", "unspecified"), ("Obstructive Hypopnea", "hypopnea", "obstructive"),
        ("Central Hypopnea", "hypopnea", "central"), ("SpO2 desaturation", "desaturation", ""),
        ("Arousal", "arousal", ""), ("EEG arousal", "arousal", ""), ("ASDA arousal|Arousal (ASDA)", "arousal", ""),
        ("Limb movement", "limb_movement", ""), ("Periodic Limb Movement", "limb_movement", "periodic"),
        ("RERA", "rera", ""), ("Lights off", "lights_off", ""), ("Tachycardia", "tachycardia", ""),
        ("Technician note: bathroom", "other", ""),
    ],
)
def test_event_labels(label, kind, subtype):
    assert parse_event_label(label) == (kind, subtype)


def test_stages_align_to_the_epoch_grid_and_events_keep_their_text():
    onsets = [0, 30, 60, 151, 240.0, 95.5, 500]
    durations = [30, 30, 90, 30, 30, 12, 0]
    labels = ["Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage 4", "Sleep stage R",
              "Obstructive Apnea", "Bathroom break"]
    ref = reference_from_annotations(onsets, durations, labels, n_epochs=10)
    # 60 s + 90 s covers epochs 2-4; onset 151 s rounds to epoch 5; 240 s is epoch 8.
    assert ref.stages.tolist() == ["W", "N1", "N2", "N2", "N2", "N3", "?", "?", "R", "?"]
    assert ref.events.to_dict("records") == [
        {"onset_s": 95.5, "duration_s": 12.0, "kind": "apnea", "subtype": "obstructive", "label": "Obstructive Apnea"},
        {"onset_s": 500.0, "duration_s": 0.0, "kind": "other", "subtype": "", "label": "Bathroom break"},
    ]


def test_no_stage_annotations_means_no_stages():
    ref = reference_from_annotations([10.0], [np.nan], ["Arousal"], n_epochs=4)
    assert ref.stages is None and ref.events["kind"].tolist() == ["arousal"]
    assert reference_from_annotations([], [], [], n_epochs=4) is None


def test_stage_annotations_past_the_end_are_ignored():
    ref = reference_from_annotations([0, 120], [60, 60], ["W", "N2"], n_epochs=3)
    assert ref.stages.tolist() == ["W", "W", "?"]
