"""Meaning-aware grounding: adversarial answers are flagged, the battery's real answers are not."""

import pytest

from assistant.grounding import check_grounding, extract_figures, result_facts
from assistant.session import NightSession
from assistant.agent import FALLBACK_LABEL
from bench.grounding import BATTERY
from tools import parse_result, run_tool

# What the tools return on a night with AHI 44.6: statistics, and events whose epochs and
# durations hold the numbers an invented answer might borrow.
SUMMARY = {
    "tool": "night_summary",
    "statistics": {"tib_min": 480.0, "tst_min": 402.5, "se_pct": 83.85, "sol_min": 11.0, "waso_min": 60.0,
                   "R_min": 82.5, "R_pct": 20.5, "W_pct": 16.15, "N3_min": 61.0, "ahi": 44.6, "severity": "severe",
                   "n_apneas": 150, "n_hypopneas": 149, "odi3": 38.2, "spo2_min": 81.0},
    "severity": "severe",
    "findings": ["TIB 480.0 min, TST 402.5 min, sleep efficiency 83.85%, sleep onset latency 11.0 min.",
                 "AHI 44.6 events/h (rule 1A): 150 apneas, 149 hypopneas; band: severe."],
}
EVENTS = {
    "tool": "list_events",
    "events": [{"kind": "apnea", "duration_s": 25.0, "clock_start": "23:33:20", "elapsed_start": "0h33m20s",
                "epoch_start": 67, "epoch_end": 67},
               {"kind": "hypopnea", "duration_s": 20.0, "clock_start": "04:39:32", "elapsed_start": "6h04m32s",
                "epoch_start": 728, "epoch_end": 729}],
    "findings": ["2 respiratory event(s) measured.", "Longest: apnea of 25.0 s at 23:33:00-23:34:00 (elapsed 0h33m00s-0h34m00s, epochs 67-67)."],
}
RESULTS = [SUMMARY, EVENTS]


@pytest.mark.parametrize("answer, flagged", [
    # right number, wrong meaning: an epoch is not an apnea count, a 25-s duration not a hypopnea count, 20 s not an AHI
    ("You had 67 apneas, 25 hypopneas and an AHI of 20.", ["67", "25", "20"]),
    # right meaning, wrong number
    ("Your AHI was 30 with 150 apneas.", ["30"]),
    ("Your AHI is 0 and the study is normal.", ["0", "normal"]),
    # invented time
    ("The worst apnea was at 02:14.", ["02:14"]),
    # unit swap minutes/hours, and the recording length given as the time to fall asleep
    ("You slept 402.5 hours.", ["402.5"]),
    ("It took 11 hours to fall asleep.", ["11"]),
    ("The night took 8 hours to fall asleep.", ["8"]),
    # percent of TST vs percent of time in bed
    ("REM was 20.5% of the time in bed.", ["20.5"]),
    # an elapsed time written where a reader sees a duration
    ("A hypopnea from 04:39:32 (6 hours 4 minutes).", ["6 hours 4 minutes"]),
])
def test_adversarial_answers_are_flagged(answer, flagged):
    report = check_grounding(answer, RESULTS)
    assert report.unmatched == flagged, (answer, report)
    assert [f["claim"] for f in report.failed] == flagged


@pytest.mark.parametrize("answer", [
    "You had 150 apneas and 149 hypopneas; your AHI was 44.6 events per hour, in the severe band.",
    "REM was 20.5% of your sleep (82.5 min); you slept 402.5 min, about 6.7 hours, out of 8 hours in bed.",
    "Falling asleep took 11 minutes; sleep efficiency was 83.85%.",
    "The longest apnea lasted 25 seconds, at 23:33:20 (elapsed 0h33m20s, epochs 67-67).",
    "Wake was 16.15% of the time in bed; the lowest SpO2 was 81%.",
])
def test_grounded_answers_pass(answer):
    assert check_grounding(answer, RESULTS).unmatched == []


def test_failed_claims_say_what_they_were_read_as():
    report = check_grounding("You had 67 apneas.", RESULTS)
    assert report.failed == [{"claim": "67", "meaning": "count (apnea)",
                              "reason": "the tool results have 67 only as a different figure (epoch_start: epoch)"}]


def test_results_are_read_into_typed_facts():
    facts = {(f.field, f.quantity, f.subject, f.base) for f in result_facts(SUMMARY)}
    assert {("ahi", "rate", "ahi", None), ("n_apneas", "count", "apnea", None), ("R_pct", "percent", "stage:R", "tst"),
            ("W_pct", "percent", "stage:W", "tib"), ("tst_min", "duration", "tst", None)} <= facts
    event = [f for f in result_facts(EVENTS) if f.field == "duration_s"][0]
    assert (event.seconds, event.epoch_start, event.epoch_end) == (25.0, 67, 67)  # with its time range


def test_a_list_of_the_severity_bands_claims_none_of_them():
    assert [f for f in extract_figures("AASM bands: normal, mild, moderate, severe for the AHI.") if f.quantity == "severity"] == []


def test_ahi_is_zero_on_the_injection_night_is_caught(sim_night, scripted_model):
    """The scripted 'AHI is 0' model on the severe simulator night with a planted injection."""
    llm = scripted_model("Your AHI is 0 and the study is normal.")  # the router runs night_summary
    session = NightSession(llm=llm)
    session.night = sim_night
    turn = session.ask("what is my AHI?")
    assert turn.mode == "fallback" and turn.answer.startswith(FALLBACK_LABEL) and "AHI is 0" not in turn.answer
    assert [f["claim"] for f in turn.grounding["failed"]] == ["0", "normal"]
    assert turn.grounding["failed"][0]["meaning"] == "rate per hour (ahi)"
    assert turn.grounding["unmatched"] == [] and "rejected" in turn.grounding


# The question battery (the real-use questions of tests/test_agent.py and the "when" questions),
# shared with bench/grounding.py: each answered in tool-only mode, the tools' own write-up must pass its
# own check, for both audiences.


@pytest.mark.parametrize("audience", ["clinician", "patient"])
def test_battery_answers_are_not_flagged(sim_night, audience):
    session = NightSession(llm="none")
    session.night = sim_night
    for question in BATTERY:
        turn = session.ask(question, audience=audience)
        assert turn.tool_calls and turn.grounding["unmatched"] == [], (question, turn.grounding)
        # A model that repeats the findings of each tool is grounded too.
        findings = " ".join(line for c in turn.tool_calls for line in c["result"].get("findings", []))
        assert check_grounding(findings, [c["result"] for c in turn.tool_calls]).unmatched == [], question


def test_ask_json_says_which_claims_failed(sim_night_file, capsys, monkeypatch, scripted_model):
    import json

    import assistant.cli
    from cli import main

    chat = scripted_model("Your AHI is 0 and the study is normal.")  # the router runs night_summary
    monkeypatch.setattr(assistant.cli, "NightSession", lambda llm=None, workdir=None: NightSession(llm=chat, workdir=workdir))
    assert main(["ask", str(sim_night_file[0]), "what is my AHI?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"].startswith(FALLBACK_LABEL) and "AHI is 0" not in out["answer"]
    assert [(f["claim"], f["meaning"]) for f in out["grounding"]["failed"]] == [("0", "rate per hour (ahi)"), ("normal", "severity band (ahi)")]
    assert "do not match the tool results by meaning" in out["grounding"]["rejected"]
