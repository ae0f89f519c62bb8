"""Answer styles: the patient style reads at about 8th grade, leads with what matters, explains its
terms and says what to discuss with a doctor; the clinician style leads with AASM figures and the rule."""

import re

import pytest
import textstat

from assistant.session import NightSession
from bench.grounding import BATTERY

# Clinical terms a patient answer may use only with a plain explanation next to them.
TERMS = ("apnea", "hypopnea", "desaturation", "arousal", "REM", "N3", "AHI")


def patient_answers(night) -> dict[str, str]:
    """The battery answered for a patient in tool-only mode: the tools' findings as the patient reads them."""
    session = NightSession(llm="none")
    session.night = night
    answers = {}
    for question in BATTERY:
        turn = session.ask(question, audience="patient")
        answers[question] = " ".join(line for call in turn.tool_calls for line in call["result"].get("findings", []))
    return answers


@pytest.fixture(scope="module")
def answers(_sim_loaded):
    from tools import NightContext

    rec, analysis = _sim_loaded
    return patient_answers(NightContext(rec=rec, analysis=analysis))


def test_patient_answers_read_at_about_8th_grade(answers):
    grades = {q: textstat.flesch_kincaid_grade(text) for q, text in answers.items()}
    assert sum(grades.values()) / len(grades) <= 8.0, grades
    assert max(grades.values()) <= 9.0, grades


def test_patient_answers_explain_the_clinical_terms_they_use(answers):
    for question, text in answers.items():
        for term in TERMS:
            for match in re.finditer(rf"\b{term}s?\b", text):
                before = text[max(0, match.start() - 2) : match.start()]
                explained = before.endswith("(") or (term == "AHI" and "Doctors call this number the AHI" in text)
                assert explained, (question, term, text[max(0, match.start() - 60) : match.end() + 20])


def test_patient_summary_leads_with_the_findings_that_matter_and_ends_with_the_doctor(answers):
    summary = answers["give me a patient-friendly summary of my night"]
    sentences = re.split(r"(?<=[.!?])\s+", summary)
    # A severe night: the breathing finding comes first, the doctor and the no-diagnosis note last.
    assert sentences[0].startswith("Breathing pauses and shallow breathing:") and "'severe' band" in sentences[0]
    assert "talk with your doctor" in summary and "mainly the breathing pauses" in summary
    assert sentences[-1] == "This is a screening test, not a diagnosis."
    assert not re.search(r"\byou have (sleep )?apnea\b|\bdiagnosed\b", summary, re.IGNORECASE)


def test_clinician_summary_leads_with_aasm_figures_and_the_rule(sim_night):
    from tools import parse_result, run_tool

    result = parse_result(run_tool("night_summary", {"audience": "clinician"}, sim_night).content)
    first = result["findings"][0]
    # The simulator's file carries its own scoring (the technician's): the AHI says who scored it, not a rule.
    assert first.startswith("AHI ") and "scored by the technician" in first and "band: severe" in first
    assert "rule 1A" not in first
    assert result["findings"][1].startswith("SpO2 mean")
