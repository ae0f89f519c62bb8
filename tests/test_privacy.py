"""Nothing identifying reaches the language model: a spy chat model records every message.

The simulator writes a deliberately identifiable fake patient into the EDF header (name, code,
birthdate, recording date, hospital and technician fields); the file gets an identifying name.
Every tool is called through the agent after `NightSession.load`, and no planted value may
appear in any message sent to the model, in the audit record, or in any tool result.
"""

import json

import pytest
from conftest import call

from assistant.session import NightSession
from sleeplm.synthetic import simulate_night, write_night
from sleeplm.synthetic.edf import PATIENT_BIRTHDATE, PATIENT_CODE, PATIENT_NAME, RECORDING_DATE

FILE_STEM = "jane_testpatient_mrn0042_psg"


def date_forms(day):
    return [day.isoformat(), day.strftime("%d-%b-%Y").upper(), day.strftime("%d.%m.%y"), day.strftime("%d/%m/%Y"),
            day.strftime("%d%m%Y"), day.strftime("%Y%m%d")]


PLANTED = [PATIENT_NAME, PATIENT_NAME.replace(" ", "_"), PATIENT_NAME.split()[1], PATIENT_CODE, "PSG-2024-117",
           "SleepLab", FILE_STEM, *date_forms(PATIENT_BIRTHDATE), *date_forms(RECORDING_DATE)]


@pytest.fixture(scope="module")
def identifying_edf(tmp_path_factory):
    night = simulate_night(duration_h=0.34, seed=5, severity="moderate", sfreq=128)
    return write_night(night, tmp_path_factory.mktemp("uploads") / f"{FILE_STEM}.edf")


def test_no_identifying_field_reaches_the_llm(identifying_edf, scripted_model):
    turns = [
        ("what is in this recording?", call("recording_overview")),
        ("summary please", None),  # the router runs night_summary without a model call
        ("any events?", call("list_events", kind="all")),
        ("find REM", call("find_epochs", query="REM with rapid eye movements")),
        ("describe epoch 5", call("caption_epochs", domain="respiratory", start="epoch 5")),
        ("compare halves", call("compare_periods", a="first half", b="second half")),
        ("plot", None),  # the router's plot
    ]
    replies = [reply for _, tool_call in turns for reply in (tool_call, "Done.") if reply is not None]
    llm = scripted_model(*replies)
    session = NightSession(llm=llm)
    session.load(identifying_edf)
    results = [session.ask(question) for question, _ in turns]
    assert len(llm.seen) == len(replies)
    assert [c["status"] for turn in results for c in turn.tool_calls] == ["success"] * len(turns)
    # What the model reads: contents, tool calls and tool names (not LangChain's random ids).
    sent = json.dumps(
        [[(m.content, getattr(m, "tool_calls", None), getattr(m, "name", None)) for m in messages] for messages in llm.seen],
        default=str,
    )
    audit = json.dumps([turn.to_dict() for turn in results], default=str)
    assert "22:47:30" in sent  # the start clock time is not identifying and is needed for citations
    for text in (sent.lower(), audit.lower()):
        for value in PLANTED:
            assert value.lower() not in text, value
        assert str(identifying_edf.parent).lower() not in text
    session.close()
