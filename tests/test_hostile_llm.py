"""A scripted hostile language model: markup rebuilt from pieces, a runaway reply, a tool name
that is markup. Each is neutralised with an honest note, never shown or crashed on.

Complements test_agent.py (invented figures, loops, JSON answers, injected annotations) and the
`assistant.markup` doctests (plain HTML, images, links).
"""

from __future__ import annotations

import pytest
from conftest import call

import app
from assistant.agent import FALLBACK_LABEL, MAX_ANSWER_CHARS
from assistant.markup import inert_markdown
from assistant.session import NightSession


def session_on(night, llm):
    session = NightSession(llm=llm)
    session.night = night
    return session


def test_markup_rebuilt_from_its_own_pieces_is_removed(known_night, scripted_model):
    """One pass of the tag filter turned '<<script>script>' into '<script>': a live tag in the answer."""
    for answer in ("Your AHI is 1.89. <<script>script>alert(document.cookie)<</script>/script>",
                   "Your AHI is 1.89. <<img src=x>img src=x onerror=alert(1)>",
                   "Your AHI is 1.89. <<a href=javascript:alert(1)>a href=javascript:alert(1)>details</a>"):
        turn = session_on(known_night, scripted_model(call("night_summary"), answer)).ask("how did I sleep?")
        assert turn.mode == "agent" and turn.answer.startswith("Your AHI is 1.89.")
        assert "<" not in turn.answer and "javascript" not in turn.answer.lower(), turn.answer
    assert "<script" not in inert_markdown("<" * 40 + "script>" + ">" * 40)


def test_a_runaway_reply_is_replaced_quickly_with_the_reason(known_night, scripted_model):
    """A repetition loop (here 200 kB) was checked figure by figure and then shown whole as the answer."""
    runaway = "Your AHI is 1.89. " + "blah 1.89 " * 20_000
    turn = session_on(known_night, scripted_model(call("night_summary"), runaway)).ask("how did I sleep?")
    assert turn.mode == "fallback" and turn.answer.startswith(FALLBACK_LABEL) and len(turn.answer) < MAX_ANSWER_CHARS
    assert f"over the limit of {MAX_ANSWER_CHARS}" in turn.grounding["rejected"]


def test_a_tool_name_that_is_markup_is_shown_inert(known_night, scripted_model):
    """The model names the tool; the chat step's title showed that name as written."""
    llm = scripted_model(call("<img src=x onerror=alert(1)>", q=1), call("night_summary", call_id="c2"), "Your AHI is 1.89.")
    events = list(session_on(known_night, llm).ask_stream("how did I sleep?"))
    start = next(e for e in events if e["type"] == "tool_start")
    step = app._step_message(start)
    assert "<" not in step["metadata"]["title"] and "onerror" not in step["content"]
    assert events[-1]["turn"].tool_calls[0]["status"] == "error"


def test_invisible_and_control_characters_are_removed_before_the_check(known_night, scripted_model):
    """A terminal link (ESC]8) printed by `ask`, and '1<zero-width space>89' shown as 189 but checked as 1 and 89."""
    osc_link = "Your AHI is 1.89. \x1b]8;;https://evil.example\x07details\x1b]8;;\x07\r"
    turn = session_on(known_night, scripted_model(call("night_summary"), osc_link)).ask("how did I sleep?")
    assert turn.mode == "agent" and not any(ch in turn.answer for ch in "\x1b\x07\r") and "evil" not in turn.answer
    hidden = "Your AHI is 1\u200b89 events per hour."  # reads as 189
    turn = session_on(known_night, scripted_model(call("night_summary"), hidden)).ask("how did I sleep?")
    assert turn.mode == "fallback" and "189 as rate per hour (ahi)" in turn.grounding["rejected"]


def test_the_terminal_trace_prints_the_models_tool_name_inert(known_night, scripted_model, tmp_path):
    from assistant.cli import format_turn

    llm = scripted_model(call("\x1b[2Jnight_summary", **{"\x1b[31mkey": 1}), call("night_summary", call_id="c2"), "Your AHI is 1.89.")
    session = session_on(known_night, llm)
    text = format_turn(session.ask("how did I sleep?"), session)
    assert "\x1b" not in text and "[tool night_summary(key=1) -> error]" in text


def test_a_figure_that_is_not_assessable_is_never_written_as_none(known_night):
    """The summary's write-up (the fallback answer, the tool-only answer) read 'None apneas', 'Supine AHI None',
    'sleep onset latency None min' and 'N1 0.0 min (None% of TST)' on nights without those figures."""
    from tools import parse_result, run_tool

    known_night.analysis.summary.update(sol_min=None, N1_pct=None, ahi_supine=None)
    texts = [" ".join(parse_result(run_tool("night_summary", {"audience": audience}, known_night).content)["findings"])
             for audience in ("clinician", "patient")]
    assert not any("None" in text for text in texts), texts
    assert "Supine AHI not assessable" in texts[0] and "apneas not assessable" in texts[0]


@pytest.mark.parametrize("text", ["x<y, 3 > 2", "AHI <5 and SpO2 > 90 %", "HR<60 bpm, SpO2>90 %", "a<b", "x<y"])
def test_comparisons_are_not_taken_for_tags(text):
    """'x<y, 3 > 2' became 'x 2': anything from '<' + letter to '>' was removed as a tag."""
    assert inert_markdown(text) == text


def test_real_markup_still_goes_next_to_comparisons():
    text = "AHI <5 <b>ok</b> <svg/onload=alert(1)> <img\nsrc=x onerror=alert(1)> <http://h/x> <!-- c --> 3 > 2 <a href=x"
    assert inert_markdown(text) == "AHI <5 ok     3 > 2 "


def test_the_one_call_answer_is_checked_like_any_other(known_night, scripted_model):
    """The router's route (no tool step, one model call): invented figures, JSON and markup in the answer
    meet the same checks as after the model's own tool call."""
    question = "Give me a summary of my night"
    turn = session_on(known_night, scripted_model("Your AHI is 31.2 and the study is normal.")).ask(question)
    assert turn.route == "router" and turn.mode == "fallback" and "31.2" not in turn.answer
    turn = session_on(known_night, scripted_model('{"name": "night_summary", "arguments": {}}')).ask(question)
    assert turn.route == "router" and turn.mode == "fallback" and "JSON" in turn.grounding["rejected"]
    turn = session_on(known_night, scripted_model("Your AHI is 1.89. <<script>script>alert('x')<</script>/script>")).ask(question)
    assert turn.route == "router" and turn.mode == "agent" and turn.answer.startswith("Your AHI is 1.89.") and "<" not in turn.answer
