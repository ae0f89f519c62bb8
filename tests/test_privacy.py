"""Nothing identifying reaches the language model: a spy chat model records every message.

The EDF+ written here plants a patient name, code, birthdate, recording date, hospital and
technician codes, and an identifying file name; each tool is called through the agent and
no planted string may appear in any message sent to the model or in any tool result.
"""

import datetime as dt
import json

import numpy as np
import pytest
from conftest import call
from edfio import Edf, EdfAnnotation, EdfSignal, Patient, Recording

from assistant.session import NightSession

PLANTED = {
    "name": "Jane_Plantedname_Doe",
    "code": "PID4711SECRET",
    "hospital": "HOSPCODE9931",
    "technician": "TECHNICIAN_BOB",
    "equipment": "DEVICE_SN_55AA",
    "file": "jane_doe_night_4711",
}
BIRTHDATE = dt.date(1970, 2, 3)
RECORDED = dt.date(2024, 5, 6)
DATE_FORMS = ["1970-02-03", "03-FEB-1970", "03.02.70", "2024-05-06", "06-MAY-2024", "06.05.24", "06/05/2024", "2024-5-6"]


@pytest.fixture(scope="module")
def identifying_edf(tmp_path_factory):
    rng = np.random.default_rng(3)
    seconds = 20 * 60
    signals = [
        EdfSignal(rng.normal(0, 30, seconds * 128), 128, label=label, physical_dimension="uV")
        for label in ("EEG C3-A2", "EEG C4-A1", "EOG LOC-A2", "EOG ROC-A1", "EMG Chin", "ECG")
    ]
    signals.append(EdfSignal(np.clip(rng.normal(95, 1, seconds), 80, 100), 1, label="SpO2", physical_dimension="%"))
    edf = Edf(
        signals,
        patient=Patient(code=PLANTED["code"], sex="F", birthdate=BIRTHDATE, name=PLANTED["name"]),
        recording=Recording(startdate=RECORDED, hospital_administration_code=PLANTED["hospital"],
                            investigator_technician_code=PLANTED["technician"], equipment_code=PLANTED["equipment"]),
        starttime=dt.time(22, 45, 0),
        annotations=[EdfAnnotation(300, 15, "Obstructive Apnea"), EdfAnnotation(30, None, "Sleep stage 2")],
    )
    path = tmp_path_factory.mktemp("private") / f"{PLANTED['file']}.edf"
    edf.write(path)
    return path


def test_no_identifying_field_reaches_the_llm(identifying_edf, scripted_model):
    turns = [
        ("what is in this recording?", call("recording_overview")),
        ("summary please", call("night_summary", audience="patient")),
        ("any apneas?", call("list_events", kind="all")),
        ("find REM", call("find_epochs", query="REM with rapid eye movements")),
        ("describe 23:00", call("caption_epochs", domain="brain", start="23:00")),
        ("compare halves", call("compare_periods", a="first half", b="second half")),
        ("plot", call("plot", kind="events")),
    ]
    replies = []
    for _, tool_call in turns:
        replies += [tool_call, "Done."]
    llm = scripted_model(*replies)
    session = NightSession(llm=llm)
    session.load(identifying_edf)
    results = []
    for question, _ in turns:
        turn = session.ask(question)
        results.append(turn)
    assert len(llm.seen) == 2 * len(turns)
    # What the model reads: contents, tool calls and tool names (not LangChain's random ids).
    sent = json.dumps(
        [[(m.content, getattr(m, "tool_calls", None), getattr(m, "name", None)) for m in messages] for messages in llm.seen],
        default=str,
    )
    audit = json.dumps([turn.to_dict() for turn in results], default=str)
    assert "22:45:00" in sent  # the start clock time is not identifying and is needed for citations
    for text in (sent, audit):
        lowered = text.lower()
        for value in PLANTED.values():
            assert value.lower() not in lowered, value
        for form in DATE_FORMS:
            assert form.lower() not in lowered, form
        assert str(identifying_edf.parent).lower() not in lowered
    session.close()
