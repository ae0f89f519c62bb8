"""concept_timeline: any concept scored per epoch (SleepLM similarity, else measured fallback), top periods cited."""

from __future__ import annotations

import numpy as np

from tools import parse_result, run_tool
from tools.timeline import sleeplm_scores, smooth, top_periods


def timeline(night, **args):
    message = run_tool("concept_timeline", args, night)
    return parse_result(message.content), message.artifact


def test_top_periods_are_the_clusters_of_the_highest_scores():
    curve = np.zeros(200)
    curve[50:60] = 1.0
    curve[120:124] = 2.0
    curve[150] = 0.5
    periods = top_periods(curve, top_k=3)
    assert [(a, b) for a, b, _ in periods] == [(120, 123), (50, 59), (150, 150)] and periods[0][2] == 2.0
    assert len(top_periods(curve, top_k=2)) == 2 and top_periods(np.ones(50), 3) == []
    np.testing.assert_allclose(smooth(np.array([0, 0, 3, 0, 0.0]), 3), [0, 1, 1, 1, 0])


def test_without_sleeplm_the_measured_fallback_scores_the_concept_and_says_so(known_night):
    result, figure = timeline(known_night, concepts=["rapid eye movements"], smooth_epochs=1)
    assert result["source"] == "measured (fallback)" and "SleepLM retrieval is unavailable" in result["fallback_reason"]
    item = result["concepts"][0]
    assert item["scored_by"].startswith("EOG power in the rapid eye-movement band (0.6-5 Hz) in the night's top 10%")
    # The EOG power rises linearly over the 240 epochs: its top tenth is epochs 216-239, from 00:48:00.
    assert (item["periods"][0]["epoch_start"], item["periods"][0]["epoch_end"]) == (216, 239)
    assert item["periods"][0]["clock_start"] == "00:48:00"
    assert "scored from the measurements instead" in result["findings"][0]
    assert "'rapid eye movements' is strongest at 00:48:00-" in result["findings"][1]
    curve = figure.axes[0].lines[0].get_ydata()
    assert len(curve) == known_night.rec.n_epochs and curve[216:].min() == 1 and curve[:216].max() == 0


def test_a_concept_the_measurements_cannot_test_is_reported_not_scored(known_night):
    result, figure = timeline(known_night, concepts=["alpha intrusion"])
    assert result["concepts"][0]["periods"] == [] and "understands" in result["concepts"][0]["not_scored"]
    assert figure is None and "no period found" in result["findings"][1]


def test_with_sleeplm_concepts_are_scored_by_similarity_and_overlaid(sim_night, tiny_sleeplm_embeddings):
    model, embeddings = tiny_sleeplm_embeddings
    sim_night.model, sim_night.embeddings = model, embeddings.astype(np.float16)
    concepts = ["snoring with desaturation", "REM with rapid eye movements"]
    result, figure = timeline(sim_night, concepts=concepts, smooth_epochs=5, top_k=2)
    assert result["source"] == "sleeplm" and [c["concept"] for c in result["concepts"]] == concepts
    expected = smooth(sleeplm_scores(model, embeddings, concepts)[:, 0], 5)
    first = result["concepts"][0]["periods"][0]
    assert first["peak_similarity"] == round(float(expected.max()), 3)
    assert expected[first["epoch_start"] : first["epoch_end"] + 1].max() == expected.max()
    assert {"clock_start", "elapsed_start", "epoch_start", "epoch_end"} <= first.keys()
    assert len(result["concepts"][1]["periods"]) <= 2
    assert [line.get_label() for line in figure.axes[0].lines] == concepts  # overlaid in one panel
    assert "not a probability" in result["note"]


def test_bad_arguments_come_back_as_readable_errors(known_night):
    message = run_tool("concept_timeline", {"concepts": []}, known_night)
    assert message.status == "error" and "concepts" in message.content
    message = run_tool("concept_timeline", {"concepts": ["  "]}, known_night)
    assert message.status == "error" and "at least one concept" in message.content
