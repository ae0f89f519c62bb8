"""Grounding check: every figure of an answer must come from the turn's tool results."""

import json

import pytest

from assistant.grounding import check_grounding, complete_citations, extract_figures
from sleeplm.terms import format_citation

TOOL_RESULTS = [
    {
        "tool": "night_summary",
        "ahi": 23.456,
        "tst_min": 402.5,
        "N3_min": 61.0,
        "findings": ["Total sleep time 402.5 min; AHI 23.5 events/h (moderate band, screening only)."],
    },
    json.dumps(
        {
            "episodes": [
                {"clock_start": "02:30:00", "clock_end": "02:41:30", "elapsed_start": "3h10m00s",
                 "epoch_start": 380, "epoch_end": 402, "min_spo2": 84}
            ]
        }
    ),
]


def test_extract_figures_kinds_and_values():
    figures = extract_figures("At 2:30 am (3h10m into the night, epochs 380-402) SpO2 fell to 84%; N3 was 61.0 min.")
    kinds = [(f.kind, f.value) for f in figures]
    assert kinds == [
        ("clock", 2 * 3600 + 30 * 60),
        ("elapsed", 3 * 3600 + 10 * 60),
        ("number", 380.0),
        ("number", 402.0),
        ("number", 84.0),
        ("number", 61.0),
    ]  # "SpO2" and "N3" are names, not figures


def test_grounded_answer_passes_with_formatting_and_rounding():
    answer = (
        "Your AHI was 23.46 (about 23 per hour). Oxygen dipped to 84% from 02:30 to 02:41:30, "
        "which is 3 h 10 min after the start (epochs 380-402). Total sleep 402.5 minutes, deep sleep 61 min."
    )
    report = check_grounding(answer, TOOL_RESULTS)
    assert report.unmatched == []
    assert "23.46" in report.matched and "02:30" in report.matched and "402.5" in report.matched


def test_ungrounded_answer_is_flagged():
    report = check_grounding("You had 41 apneas, the worst at 04:15, AHI 27.9.", TOOL_RESULTS)
    assert report.unmatched == ["41", "04:15", "27.9"]
    assert report.matched == []
    assert [f["meaning"] for f in report.failed] == ["count (apnea)", "clock time", "rate per hour (ahi)"]


def test_mixed_answer_reports_both():
    report = check_grounding("AHI 23.5; lowest SpO2 81% at 02:30.", TOOL_RESULTS)
    assert report.matched == ["23.5", "02:30"]
    assert report.unmatched == ["81"]


@pytest.mark.parametrize("written", ["23.4", "22", "02:29", "02:45", "3h11m"])
def test_rounding_is_limited_to_shown_precision(written):
    # 23.456 rounds to 23.5 (not 23.4) or 23 (not 22); 02:30:00 is not 02:29 or 02:45.
    assert check_grounding(written, TOOL_RESULTS).unmatched == [written]


def test_list_markers_are_not_figures():
    report = check_grounding("1. AHI 23.5\n2. N3 61 min", TOOL_RESULTS)
    assert report.unmatched == [] and report.matched == ["23.5", "61"]


def test_counts_written_as_words_are_checked():
    results = [{"n_apneas": 2, "n_awakenings": 21, "findings": ["2 apneas, 21 awakenings"]}]
    report = check_grounding("You had two apneas, three obstructive apneas and woke up twenty-one times.", results)
    assert report.matched == ["two", "twenty-one"] and report.unmatched == ["three"]
    assert check_grounding("It happened twice.", results).matched == ["twice"]
    # Words that count nothing are prose, not figures.
    assert extract_figures("One of them was at one point the worst; no one knows.") == []


def test_durations_match_in_any_unit_at_the_written_precision():
    results = [{"tst_min": 185.0, "spo2_min": 2.0, "events_per_h": 3.0, "findings": ["Longest apnea 25.0 s."]}]
    for answer in ("You slept about three hours.", "You slept 3 hours.", "You slept 3h.", "You slept 3h05m.",
                   "You slept 3 hours and 5 minutes.", "TST 185 min.",
                   "TST 185min.",
                   "The longest pause lasted twenty-five seconds."):
        report = check_grounding(answer, results)
        assert report.unmatched == [] and report.matched, answer
    # "two hours" is not the SpO2 minimum of 2; "3 hours" is not a rate of 3/h; 190 min is not 185 min.
    for answer, wrong in (("You slept two hours.", "two"), ("Only 2 hours.", "2"), ("Only 2h.", "2"), ("You slept 190 minutes.", "190"),
                          ("You slept four hours.", "four")):
        assert check_grounding(answer, results).unmatched == [wrong], answer
    assert check_grounding("3 hours", [{"events_per_h": 3.0}]).unmatched == ["3"]


def test_whole_hours_on_the_clock():
    results = [{"clock_start": "02:40:00"}]
    assert check_grounding("It started around 2 am.", results).matched == ["2 am"]
    assert check_grounding("It started at 3am.", results).matched == ["3am"]  # 02:40 rounds to 3 am
    assert check_grounding("It started at 4am.", results).unmatched == ["4am"]
    assert [(f.kind, f.value) for f in extract_figures("11 pm and 2 a.m.")] == [("clock", 23 * 3600.0), ("clock", 7200.0)]


def test_complete_citations_adds_only_the_ranges_a_tool_cited():
    """A bare clock range gets the elapsed time and epochs its tool result gave, in the format of
    `sleeplm.terms.format_citation`; an uncited range and an already complete citation are left alone."""
    cited = {"clock_start": "23:04:23", "clock_end": "23:04:37", "elapsed_start": "0h04m23s",
             "elapsed_end": "0h04m37s", "epoch_start": 8, "epoch_end": 8}
    result = {"events": [{"kind": "apnea", "citation": format_citation(cited)}]}
    answer = ("An apnea at 23:04:23-23:04:37, another 23:04:23-23:04:37 (elapsed 0h04m23s-0h04m37s, epoch 8), "
              "and nothing at 23:50:00-23:51:00.")
    completed = complete_citations(answer, [result])
    assert completed == ("An apnea at 23:04:23-23:04:37 (elapsed 0h04m23s-0h04m37s, epoch 8), another "
                         "23:04:23-23:04:37 (elapsed 0h04m23s-0h04m37s, epoch 8), and nothing at 23:50:00-23:51:00.")
    assert complete_citations(answer, [{"note": "no citation"}]) == answer
