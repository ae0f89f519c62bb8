"""Errors that tell the truth: only the language model backend's own failure becomes the labelled
tool-only answer; a bug in a tool or the middleware is logged with its traceback and shown to the
user as "internal error" with a reference id, never passed off as an answer."""

import logging
import re

import pytest
from conftest import call

import assistant.agent
import tools.events
from assistant.session import NightSession


def session_on(night, llm=None):
    session = NightSession(llm=llm)
    session.night = night
    return session


@pytest.fixture
def broken_list_events(monkeypatch):
    """`list_events` with a programming error inside (a helper it calls raises)."""

    def select_events(*args, **kwargs):
        raise KeyError("start_s")  # a bug, not bad input

    monkeypatch.setattr(tools.events, "select_events", select_events)


def reference_in(answer: str) -> str:
    match = re.search(r"^Internal error \(reference ([0-9a-f]{8})\)", answer)
    assert match, answer
    return match.group(1)


def assert_logged_with_traceback(caplog, reference: str) -> None:
    records = [r for r in caplog.records if reference in r.getMessage()]
    assert records and records[0].levelno == logging.ERROR and records[0].exc_info is not None
    assert "KeyError" in caplog.text and "select_events" in caplog.text  # the traceback reached the log


def test_a_broken_tool_in_the_agent_is_an_internal_error(known_night, scripted_model, broken_list_events, caplog):
    llm = scripted_model(call("list_events", kind="respiratory"), "There were no apneas.")
    with caplog.at_level(logging.ERROR):
        turn = session_on(known_night, llm).ask("which respiratory events did I have?")  # the model's list_events runs
    assert turn.mode == "error"
    assert "no apneas" not in turn.answer and "tool-only" not in turn.answer
    assert_logged_with_traceback(caplog, reference_in(turn.answer))


def test_a_broken_tool_in_tool_only_mode_is_an_internal_error(known_night, broken_list_events, caplog):
    with caplog.at_level(logging.ERROR):
        turn = session_on(known_night).ask("was my oxygen ever low?")
    assert turn.mode == "error"
    assert_logged_with_traceback(caplog, reference_in(turn.answer))


def test_a_broken_middleware_is_an_internal_error_not_a_backend_failure(known_night, scripted_model, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise TypeError("tool_choice_prompt() got an unexpected keyword")

    session = session_on(known_night, scripted_model("Fine."))
    monkeypatch.setattr(assistant.agent, "tool_choice_prompt", broken)  # used in the middleware, per model call
    with caplog.at_level(logging.ERROR):
        turn = session.ask("how was my deep sleep?")  # the model chooses the tool: the tool-choice prompt is used
    assert turn.mode == "error" and "language model failed" not in turn.answer
    reference = reference_in(turn.answer)
    assert any(reference in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_refusal_from_the_library_still_reaches_the_model(known_night, scripted_model):
    """Bad input (a range outside the night) is not a bug: the tool says why and the model reads it."""
    seen = []

    def answer(messages):
        seen.append(messages[-1].content)
        return "That time is outside the recording."

    llm = scripted_model(call("list_events", kind="apnea", start="epoch 5000"), answer)
    turn = session_on(known_night, llm).ask("list the apneas at epoch 5000")
    assert turn.mode != "error" and turn.tool_calls[0]["status"] == "error"


def test_the_command_line_exits_1_on_an_internal_error(small_edf, broken_list_events, capsys):
    from cli import main

    assert main(["ask", str(small_edf), "was my oxygen ever low?", "--llm", "none"]) == 1
    assert "Internal error (reference " in capsys.readouterr().out
