"""A scripted hostile language model: markup rebuilt from pieces, a runaway reply, a tool name
that is markup. Each is neutralised with an honest note, never shown or crashed on.

Complements test_agent.py (invented figures, loops, JSON answers, injected annotations) and the
`assistant.markup` doctests (plain HTML, images, links).
"""

from __future__ import annotations

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
