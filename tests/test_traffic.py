"""Bounded model traffic: tool calls per message and per turn, argument size and result size are capped,
and the trace keeps every call the model made (valid or not) with what was sent back."""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage, ToolMessage

from assistant.agent import (
    CHARS_PER_TOKEN, MAX_FINDINGS, MAX_LIST_ITEMS, MAX_RESULT_TOKENS, MAX_TURN_RESULT_TOKENS, estimate_tokens,
    MAX_TOOL_ARGUMENT_BYTES, MAX_TOOL_CALLS_PER_MESSAGE, MAX_TOOL_CALLS_PER_TURN, TurnGuard,
)
from assistant.session import NightSession


def session_on(night, llm):
    session = NightSession(llm=llm)
    session.night = night
    return session


def tool_call(name, call_id, **args):
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def test_a_flood_of_calls_runs_only_the_first_few_and_every_call_is_traced(known_night, scripted_model):
    flood = AIMessage(
        content="",
        tool_calls=[tool_call("recording_overview", "ok_1"), tool_call("list_events", "huge", kind="x" * 10_000_000)]
        + [tool_call("recording_overview", f"more_{i}") for i in range(300)],
        invalid_tool_calls=[{"name": "list_events", "args": "[1,2,3]", "id": "bad", "error": None, "type": "invalid_tool_call"}],
    )
    llm = scripted_model(flood, "The recording is 2 hours long.")
    turn = session_on(known_night, llm).ask("what is in this recording?")
    calls = turn.tool_calls
    assert len(calls) == 303  # every call the model made, the malformed one included
    ran = [c for c in calls if c["status"] == "success"]
    assert len(ran) == MAX_TOOL_CALLS_PER_MESSAGE - 1 and all(c["name"] == "recording_overview" for c in ran)
    huge = next(c for c in calls if c["name"] == "list_events" and c["status"] == "error")
    assert "over the limit of 4096" in huge["result"] and huge["args"]["refused_arguments"] == "10000012 bytes"
    refused = [c for c in calls if c["status"] == "refused"]
    assert len(refused) == 300 and all("not run and nothing sent back" in c["result"] for c in refused)
    assert any(c["args"] == "[1,2,3]" for c in refused)  # the malformed call is in the trace
    # What the model got back: one message per admitted call, no 10-MB echo, no 300 results.
    answer_request = llm.seen[-1]
    assert sum(isinstance(m, ToolMessage) for m in answer_request) == MAX_TOOL_CALLS_PER_MESSAGE
    assert len(json.dumps([str(m.content) for m in answer_request] + [str(getattr(m, "tool_calls", "")) for m in answer_request])) < 100_000
    assert len(json.dumps(turn.to_dict(), default=str)) < 200_000
    assert turn.mode == "agent"


def test_a_malformed_call_beside_a_valid_one_gets_a_tool_error_and_both_are_traced(known_night, scripted_model):
    message = AIMessage(content="", tool_calls=[tool_call("recording_overview", "ok_1")],
                        invalid_tool_calls=[{"name": "list_events", "args": "[1,2,3]", "id": "bad", "error": None,
                                             "type": "invalid_tool_call"}])
    llm = scripted_model(message, "The recording is 2 hours long.")
    turn = session_on(known_night, llm).ask("what is in this recording?")
    by_name = {c["name"]: c for c in turn.tool_calls}
    assert by_name["recording_overview"]["status"] == "success"  # run, and recorded as run
    assert by_name["list_events"]["status"] == "error" and "malformed" in by_name["list_events"]["result"]
    assert by_name["list_events"]["args"] == "[1,2,3]"
    sent_back = [m for m in llm.seen[-1] if isinstance(m, ToolMessage)]
    assert any("Tool error" in m.content and "malformed" in m.content for m in sent_back)


def test_calls_per_turn_are_capped(known_night, scripted_model):
    three = [tool_call("recording_overview", f"a{i}") for i in range(MAX_TOOL_CALLS_PER_MESSAGE)]
    again = [tool_call("recording_overview", f"b{i}") for i in range(MAX_TOOL_CALLS_PER_MESSAGE)]
    guard = TurnGuard()
    guard.start_turn()
    guard._bound_calls(AIMessage(content="", tool_calls=three))
    guard._bound_calls(AIMessage(content="", tool_calls=again))
    bounded = guard._bound_calls(AIMessage(content="", tool_calls=[tool_call("recording_overview", "c0")]))
    assert MAX_TOOL_CALLS_PER_TURN == 2 * MAX_TOOL_CALLS_PER_MESSAGE
    assert bounded.tool_calls == [] and "per question" in guard.dropped[-1]["result"]
    assert MAX_TOOL_ARGUMENT_BYTES <= 8192


def test_results_sent_to_the_model_are_capped():
    class Request:
        tool_call = {"name": "list_events", "id": "x", "args": {}}

    guard = TurnGuard()
    long = ToolMessage(content="y" * (3 * MAX_RESULT_TOKENS * CHARS_PER_TOKEN), tool_call_id="x", name="list_events")
    cut = guard.wrap_tool_call(Request(), lambda request: long)
    assert estimate_tokens(cut.content) <= MAX_RESULT_TOKENS and f"cut at {MAX_RESULT_TOKENS} tokens" in cut.content
    assert guard.full_results["x"] == long.content  # the trace keeps the whole result


def test_a_turns_results_stay_within_the_turn_budget_and_lists_show_their_top_items():
    """Four list_events results of 40 events each: the model reads the first findings and the first
    events of each, and all four together stay within the turn's budget."""
    events = [{"kind": "apnea", "clock_start": f"23:{i:02d}:00", "epoch_start": 2 * i, "duration_s": 12.5} for i in range(40)]
    content = json.dumps({"tool": "list_events", "findings": [f"finding {i}" for i in range(20)], "count": 40, "events": events})
    guard = TurnGuard()
    read = []
    for index in range(4):
        class Request:
            tool_call = {"name": "list_events", "id": f"c{index}", "args": {}}

        read.append(guard.wrap_tool_call(Request(), lambda request: ToolMessage(content=content, tool_call_id=request.tool_call["id"],
                                                                                  name="list_events")).content)
    first = json.loads(read[0])
    assert first["count"] == 40 and first["events"] == events[:MAX_LIST_ITEMS] and first["events_not_shown"] == 40 - MAX_LIST_ITEMS
    assert first["findings"] == [f"finding {i}" for i in range(MAX_FINDINGS)] and "tool" not in first
    assert all(estimate_tokens(text) <= MAX_RESULT_TOKENS for text in read)
    assert sum(estimate_tokens(text) for text in read) <= MAX_TURN_RESULT_TOKENS
    assert guard.result_tokens <= MAX_TURN_RESULT_TOKENS and json.loads(guard.full_results["c3"])["events"] == events
