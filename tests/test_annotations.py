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
        # Compumedics/NSRR codes after the bar (the second simulator's scoring file): misread as "other" before.
        ("Stage 1 sleep|NREM1", "N1"), ("Stage 2 sleep|NREM2", "N2"), ("Stage 3 sleep|NREM3", "N3"),
        ("REM sleep|REM", "R"), ("Wake|Wake", "W"), ("NREM2", "N2"), ("NREM 3", "N3"),
        ("Arousal|Arousal ()", None),
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
    assert ref.events["spo2_nadir"].isna().all()  # EDF+ annotations give no nadir
    assert ref.events.drop(columns="spo2_nadir").to_dict("records") == [
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


def _scored(step: float, codes: list[str]) -> tuple[list[float], list[float], list[str]]:
    onsets = [i * step for i in range(len(codes))]
    return onsets, [step] * len(codes), codes


def test_20_s_rk_epochs_map_to_30_s_by_majority_of_scored_time():
    # 20-s R&K epochs W W 1 2 2 3 4 4 R on the 30-s grid:
    onsets, durations, labels = _scored(20, ["Sleep stage W", "Sleep stage W", "Sleep stage 1", "Sleep stage 2",
                                             "Sleep stage 2", "Sleep stage 3", "Sleep stage 4", "Sleep stage 4",
                                             "Sleep stage R"])
    ref = reference_from_annotations(onsets, durations, labels, n_epochs=7)
    # 0-30: W 30 s; 30-60: W 10 + N1 20 -> N1; 60-90: N2 30; 90-120: N2 10 + S3 20 -> N3;
    # 120-150: S4 30 -> N3; 150-180: S4 10 + R 20 -> R; 180-210: unscored -> ?
    assert ref.stages.tolist() == ["W", "N1", "N2", "N3", "N3", "R", "?"]


def test_s3_and_s4_time_adds_up_to_n3():
    # 30-s epoch scored in 5-s R&K epochs: S2 10 s, S3 10 s, S4 10 s -> N3 holds 20 of 30 s.
    onsets, durations, labels = _scored(5, ["2", "2", "S3", "S3", "S4", "S4"])
    labels = [f"Sleep stage {lab[-1]}" for lab in labels]
    assert reference_from_annotations(onsets, durations, labels, n_epochs=1).stages.tolist() == ["N3"]


def test_5_s_epochs_and_half_scored_rule():
    # 5-s epochs, zero durations (one scoring epoch each): 0-30 all N2; 30-60 only 15 s scored
    # (exactly half: scored); 60-90 only 10 s scored (less than half: "?").
    onsets = [0, 5, 10, 15, 20, 25, 30, 35, 40, 60, 65]
    labels = ["N2"] * 6 + ["R", "R", "R", "W", "W"]
    ref = reference_from_annotations(onsets, [0.0] * len(onsets), labels, n_epochs=3)
    assert ref.stages.tolist() == ["N2", "R", "?"]


def test_30_s_aasm_epochs_are_unchanged_and_movement_time_is_unscored():
    onsets, durations, labels = _scored(30, ["W", "N1", "N2", "N3", "R", "Movement time"])
    ref = reference_from_annotations(onsets, durations, labels, n_epochs=6)
    assert ref.stages.tolist() == ["W", "N1", "N2", "N3", "R", "?"]
