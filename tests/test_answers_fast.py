"""Answers in few model calls (issue 21): the router's one-call route, the prefix shared by every
turn and evaluated at start-up (counted by the backend), the model's choice when the router is unsure."""

from __future__ import annotations

import json

import pytest
from conftest import call
from langchain_core.messages import SystemMessage, ToolMessage

from assistant.agent import prompt_prefixes, route_question, sure_route, system_prompt, tool_choice_prompt
from assistant.session import NightSession
from bench.answers import DESIGN_CARD_QUESTIONS
from bench.grounding import BATTERY
from tools import ALL_TOOLS


def session_on(night, llm):
    session = NightSession(llm=llm)
    session.night = night
    return session


def cite_findings(messages):
    result = json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)
    return " ".join(result.get("findings") or ["The tool gave no findings."])


@pytest.mark.parametrize("question", DESIGN_CARD_QUESTIONS)
def test_each_design_card_question_takes_the_one_call_route(known_night, scripted_model, question):
    audience = "patient" if "patient" in question else "clinician"
    llm = scripted_model(cite_findings)
    turn = session_on(known_night, llm).ask(question, audience=audience)
    routed = sure_route(question, audience)
    assert routed and [(c["name"], c["args"]) for c in turn.tool_calls] == routed
    assert routed[0][0] in {name for name, _ in route_question(question, audience)}  # the tool-only router agrees
    assert turn.route == "router" and turn.to_dict()["route"] == "router"
    assert len(llm.seen) == 1 and turn.usage["model_calls"] == 1 and llm.tools_offered == []  # the answer, no tools
    assert [m["role"] for m in turn.llm_messages] == ["system", "human", "ai", "tool"]
    assert turn.llm_messages[0]["content"] == system_prompt(audience)


@pytest.mark.parametrize("question", [
    "when did respiration look abnormal after 3 am?",  # a time: the model's call carries the range
    "was my oxygen ever low in REM?", "how much deep sleep in the second half?",
    "how did I sleep?", "what do the file's annotations say?", "compare supine versus non-supine",
])
def test_questions_naming_a_part_of_the_night_or_unclear_are_not_sure(question):
    assert sure_route(question) == []


def test_paraphrases_of_the_design_card_are_sure():
    assert sure_route("when was my breathing abnormal?") == [("abnormal_periods", {"kind": "respiratory"})]
    assert sure_route("summarise my sleep", "patient") == [("night_summary", {"audience": "patient"})]
    assert sure_route("How much REM sleep did I get?") == [("night_summary", {"audience": "clinician"})]
    assert sure_route("what is my AHI?") == [("night_summary", {"audience": "clinician"})]
    assert sure_route("show me my hypnogram") == [("plot", {"kind": "hypnogram"})]
    assert sum(bool(sure_route(q)) for q in BATTERY) >= 6  # most of the battery needs one model call


def test_the_second_question_of_a_session_hits_the_prefix_cache(known_night, scripted_model):
    """The session hands the backend the prompts' common starts at start-up; every call's prompt
    starts with one of them, and the backend counts what it reused (usage cache_read)."""
    llm = scripted_model(cite_findings, cite_findings, call("night_summary"), "You slept 95.0 min.")
    session = session_on(known_night, llm)
    assert [text for _, text in (p[1] for p in llm.evaluated)] == [text for text, _ in prompt_prefixes()]
    first = session.ask("When did respiration look abnormal?")
    second = session.ask("Give me a summary of my night")
    assert first.usage["prefix_hits"] == 1 and first.usage["cache_read"] == 2  # no tools + the system message
    # The second question reuses the system message and the first question (the history's start).
    assert second.usage["prefix_hits"] == 1 and second.usage["cache_read"] >= 3 and second.usage["model_calls"] == 1
    assert isinstance(llm.seen[1][0], SystemMessage) and llm.seen[1][0].content == llm.seen[0][0].content
    # A question the router is unsure of: its tool step starts with the warmed tool prompt and tools.
    third = session.ask("how did I sleep?")
    assert third.route == "model" and third.usage["model_calls"] == 2 and third.usage["prefix_hits"] == 2
    assert llm.seen[2][0].content == tool_choice_prompt("clinician")


def test_a_question_the_router_is_unsure_of_reaches_the_model_with_tools_offered(known_night, scripted_model):
    llm = scripted_model(call("night_summary"), "You slept 95.0 min with an AHI of 1.89.")
    turn = session_on(known_night, llm).ask("how did I sleep?")
    assert sure_route("how did I sleep?") == [] and turn.route == "model"
    assert llm.tools_offered == [len(ALL_TOOLS)] and llm.tool_choices == ["any"]  # in scope: a tool call is required
    assert [c["name"] for c in turn.tool_calls] == ["night_summary"] and turn.usage["model_calls"] == 2
    assert turn.mode == "agent" and turn.grounding["unmatched"] == []
    # Out of scope: tools offered, none required, none called.
    llm = scripted_model("I can only help with this sleep recording.")
    turn = session_on(known_night, llm).ask("what is the capital of France?")
    assert llm.tools_offered == [len(ALL_TOOLS)] and turn.tool_calls == [] and turn.route == "model"


def test_the_follow_up_hint_comes_after_the_shared_prefix(known_night, scripted_model):
    """The periods just named reach the tool step after its system message and tools, so the
    warmed prefix still serves it."""
    llm = scripted_model(cite_findings, call("list_events", kind="respiratory"), "Three events.")
    session = session_on(known_night, llm)
    session.ask("when did breathing look abnormal?")
    session.ask("which respiratory events did I have?")
    tool_step = llm.seen[1]
    assert tool_step[0].content == tool_choice_prompt("clinician")
    assert isinstance(tool_step[1], SystemMessage) and "The previous answer named these" in tool_step[1].content



def test_the_server_starts_evaluating_the_prompt_prefixes_at_start_up(monkeypatch, scripted_model):
    import app
    from assistant import llm as backends

    chat = scripted_model()
    monkeypatch.setattr(backends, "get_chat_model", lambda spec=None: (chat, backends.LLMStatus("local", "m", True, "ok")))
    app.ConfiguredChatModel().warm_up().join(timeout=30)
    assert [text for _, (_, text) in chat.evaluated] == [text for text, _ in prompt_prefixes()]
