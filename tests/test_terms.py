"""The shared terms: one citation format, written and parsed in one place."""

import numpy as np
import torch

import sleeplm
from sleeplm.terms import (
    CAPTION_DOMAINS, EVENT_KINDS, format_citation, parse_citations, runs, runs_of, severity_band, value_runs,
)
from sleeplm.io.recording import EPOCH_SAMPLES


def test_citation_with_clock_round_trips(bare_recording):
    citation = bare_recording(start_seconds=23 * 3600.0).cite_epochs(10, 12)
    text = format_citation(citation)
    assert text.startswith(f"{citation['clock_start']}-{citation['clock_end']} (elapsed ")
    (parsed,) = parse_citations(f"An apnea at {text}.")
    assert {k: parsed[k] for k in ("clock_start", "clock_end", "elapsed_start", "elapsed_end", "epoch_start", "epoch_end")} == {
        k: citation[k] for k in ("clock_start", "clock_end", "elapsed_start", "elapsed_end", "epoch_start", "epoch_end")
    }
    assert parsed["text"] == text


def test_citation_without_clock_is_parsed(tmp_path):
    """A tensor input has no start time: the citation carries no clock and still parses."""
    torch.save(torch.randn(6, 10, EPOCH_SAMPLES, generator=torch.Generator().manual_seed(0)), tmp_path / "night.pt")
    rec = sleeplm.load_recording(tmp_path / "night.pt")
    citation = rec.cite_epochs(2, 3)
    assert citation.get("clock_start") is None
    text = format_citation(citation)
    assert text == "(elapsed 0h01m00s-0h02m00s, epochs 2-3)"
    parsed = parse_citations(f"Quiet breathing {text}.")[0]
    assert parsed["clock_start"] is None and (parsed["epoch_start"], parsed["epoch_end"]) == (2, 3)
    assert [c["epoch_end"] for c in parse_citations(f"{text} and {format_citation(rec.cite_epochs(4, 4))}")] == [3, 4]


def test_parse_ignores_text_that_only_looks_like_a_citation():
    assert parse_citations("epochs 3-4 (elapsed 3h, about)") == []


def test_runs_helpers_agree():
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    assert runs(mask).tolist() == [[1, 3], [5, 6], [7, 8]]
    assert runs_of(mask) == [(1, 2), (5, 5), (7, 7)]
    assert runs_of(mask, max_gap=1) == [(1, 2), (5, 7)]
    assert value_runs([2, 2, 1]) == [(0, 2, 2), (2, 3, 1)]


def test_severity_band_edges():
    assert [severity_band(x) for x in (0, 4.9, 5, 14.9, 15, 29.9, 30)] == [
        "normal", "normal", "mild", "mild", "moderate", "moderate", "severe"]


def test_list_events_offers_only_kinds_something_produces():
    from tools.events import EventArgs

    offered = set(EventArgs.model_fields["kind"].annotation.__args__)
    assert "artefact" not in offered and set(EVENT_KINDS) <= offered
    from sleeplm.model.inference import DOMAINS

    assert tuple(DOMAINS) == CAPTION_DOMAINS
