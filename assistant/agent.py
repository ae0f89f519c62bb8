"""The LangChain agent over the night tools, built for small local models.

- `create_agent` with an in-memory checkpointer (one thread per conversation, so follow-ups
  see earlier turns) and a model-call limit per turn.
- `TurnGuard` middleware: puts a short tool-choice prompt in front of the first call (earlier
  turns shown as plain questions and answers, at most `MAX_HISTORY_CHARS`, in every call; a tool call required when the keyword router
  recognises the question; only the routed tool offered and called when it is sure, `routed_tool`)
  and the answer rules with the audience's style in front of the
  answer call, drops time ranges no one gave, records
  every message sent to the language model (audit, privacy tests), and, once the turn has a
  successful tool result, calls the model WITHOUT tools, because small models otherwise repeat
  the call or answer in JSON. A tool call made anyway is removed and marked as a repeat.
- Bounded traffic: at most `MAX_TOOL_CALLS_PER_MESSAGE` tool calls per model message and
  `MAX_TOOL_CALLS_PER_TURN` per turn run (the rest are dropped from the conversation and kept in
  the trace as "refused"); a call whose arguments exceed `MAX_TOOL_ARGUMENT_BYTES` or are not a
  JSON object (an invalid tool call) gets a tool error instead of running, its arguments are not
  echoed back.
- Bounded reading (`compact_result`): what the model reads of a tool result is its compact view
  (findings first, the top `MAX_LIST_ITEMS` items of a list, figures with their units as the
  tools phrase them) within `MAX_RESULT_TOKENS` per result and `MAX_TURN_RESULT_TOKENS` per turn;
  the full result stays in the trace and is what answers are checked against.
- One model call where the tool is clear (`sure_route`): a question the router is sure of gets
  its tools run without a model call (a tool call written by the router, id ``route_...``), and
  the model writes the answer in one call. The route taken (`ROUTES`) is in the trace.
- `answer_problem` / `tool_writeup`: the answer check and the tools' own write-up that replaces
  an answer that fails it.
- `route_question`: the keyword router of the tool-only mode (no language model at all).

To add a question form the router is sure of, add a rule to `_SURE_ROUTES` (or a `_ROUTES` rule
that `routed_tool` accepts), with a test in tests/test_answers_fast.py.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from importlib import resources
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelCallLimitMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from assistant.errors import LLMBackendError
from assistant.grounding import Grounding
from sleeplm.terms import AUDIENCES
from tools import ALL_TOOLS, NightContext

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIENCES", "SCOPES", "MAX_MODEL_CALLS", "MAX_TOOL_CALLS_PER_MESSAGE", "MAX_TOOL_CALLS_PER_TURN",
    "MAX_TOOL_ARGUMENT_BYTES", "MAX_RESULT_TOKENS", "MAX_TURN_RESULT_TOKENS", "CHARS_PER_TOKEN", "MAX_LIST_ITEMS",
    "MAX_FINDINGS", "ROUTES", "estimate_tokens", "compact_result", "sure_route", "MAX_ANSWER_CHARS", "MAX_HISTORY_CHARS", "HISTORY_BLOCK_TURNS",
    "RECURSION_LIMIT", "FALLBACK_LABEL", "load_prompt", "system_prompt", "prompt_prefixes",
    "tool_choice_prompt",
    "TurnGuard", "build_agent", "message_record", "answer_problem", "is_refusal", "tool_writeup", "route_question",
    "result_summary", "named_periods", "follow_up_hint", "routed_tool",
]

# Two tool rounds plus the answer, with one spare for a corrected tool call.
MAX_MODEL_CALLS = 4
# Graph steps, not model calls: each round is before-model, model, after-model and tools nodes.
# A safety net behind MAX_MODEL_CALLS, which ends the turn first.
RECURSION_LIMIT = 10 * MAX_MODEL_CALLS
FALLBACK_LABEL = "The language model's answer could not be verified; here are the tool results:"
REPEATED_CALL_KEY = "sleeplm_repeated_tool_calls"
# Model traffic limits. A question needs one or two tools; a small model that calls more in one
# message is looping. Every tool's arguments fit in a few hundred bytes.
MAX_TOOL_CALLS_PER_MESSAGE = 3
MAX_TOOL_CALLS_PER_TURN = 6
MAX_TOOL_ARGUMENT_BYTES = 4096
# What the model reads of tool results (`compact_result`), in tokens. Every token read costs
# prompt evaluation (~50 tokens/s on 2 AVX2 cores: 1,000 tokens ~20 s); a full list_events result
# of the 1.5-h demo night was ~4,000 tokens. Token counts are estimated at CHARS_PER_TOKEN characters per token (measured
# with Qwen2.5's tokenizer on the tools' JSON results: 1.85-2.5; digits are one token each).
CHARS_PER_TOKEN = 2
MAX_RESULT_TOKENS = 1000
MAX_TURN_RESULT_TOKENS = 1600
# The compact view: the first findings (the tools write the most important first: totals, the
# most disturbed period) and the top items of a list (ranked periods, the first events).
MAX_FINDINGS = 6
MAX_LIST_ITEMS = 3
# How a turn's tools were chosen (`TurnResult.route`): by the router without a model call, by the
# model with only the routed tool offered and forced, or by the model among all tools.
ROUTES = ("router", "model-forced", "model")
# Earlier questions and answers shown to the model (`_plain_history`): the turns since the last
# multiple of HISTORY_BLOCK_TURNS, at most MAX_HISTORY_CHARS (~1,800 tokens).
HISTORY_BLOCK_TURNS = 4
MAX_HISTORY_CHARS = 4_000
# An answer is a few paragraphs (the embedded model stops at 512 tokens, ~2,500 characters); one
# far longer is a runaway reply (a repetition loop, a dump): never checked or shown as an answer.
MAX_ANSWER_CHARS = 12_000
# Text of the message ModelCallLimitMiddleware leaves when it ends a turn.
STEP_LIMIT_PREFIX = "Model call limits exceeded"


def load_prompt(name: str) -> str:
    """Text of ``prompts/<name>.txt`` (package data)."""
    return resources.files("prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()


# What a conversation is about: one night, or a cohort of nights (prompts prefixed "cohort_").
SCOPES = ("night", "cohort")


def _prompt_name(name: str, scope: str) -> str:
    return name if scope == "night" else f"{scope}_{name}"


def system_prompt(audience: str = "clinician", scope: str = "night") -> str:
    """The answer-step system prompt: the answer rules (of a night or a cohort) followed by the audience's style."""
    return f"{load_prompt(_prompt_name('system', scope))}\n\n{load_prompt(audience)}"


def prompt_prefixes(scope: str = "night", tools=None) -> list[tuple[str, list]]:
    """(system message, tools offered after it) that every turn's prompts start with: the answer
    step's per audience (no tools; the one-call route's only call), then the tool step's per
    audience (every tool). A backend with a prefix cache evaluates them once per process, in the
    background at start-up (`NightSession`), so a turn evaluates only its own messages."""
    tools = ALL_TOOLS if tools is None else tools
    return [(system_prompt(a, scope), []) for a in AUDIENCES] + [(tool_choice_prompt(a, scope), list(tools)) for a in AUDIENCES]


def tool_choice_prompt(audience: str = "clinician", scope: str = "night") -> str:
    """The tool-choice system prompt: short, because small models answer in prose instead of
    calling a tool when the prompt is long; the answer rules come with the answer step."""
    hint = 'The reader is the patient: pass audience "patient" where a tool asks for it.' if audience == "patient" else (
        "The reader is a clinician.")
    return f"{load_prompt(_prompt_name('tool_choice', scope))}\n{hint}"


def message_record(message: BaseMessage, call: int | None = None) -> dict:
    """A JSON-serialisable record of one message as the language model sees it."""
    record: dict[str, Any] = {"role": message.type, "content": message.content}
    if call is not None:
        record = {"call": call, **record}
    if isinstance(message, AIMessage) and message.tool_calls:
        record["tool_calls"] = [{"name": c["name"], "args": c["args"]} for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        record["name"] = message.name
    return record


def _current_turn(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Messages after the last user message (this turn's tool calls and results)."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage):
            return messages[index + 1 :]
    return messages


class TurnGuard(AgentMiddleware):
    """System prompt per audience, audit of every LLM message, no tools after a tool result, figures kept aside."""

    def __init__(self, scope: str = "night") -> None:
        super().__init__()
        self.scope = scope
        self.start_turn()

    def start_turn(self) -> None:
        self.sent: list[dict] = []
        self.calls = 0
        # How the tools were chosen (one of `ROUTES`), and the backend's token counts summed over
        # this turn's model calls ("cache_read": prompt tokens the backend reused from its prefix
        # cache; "prefix_hits": calls that reused any).
        self.route = "model"
        self.usage = {"input_tokens": 0, "output_tokens": 0, "cache_read": 0, "prefix_hits": 0}
        # Tool-call id -> the full result when the model read its compact view; tokens read so far.
        self.full_results: dict[str, str] = {}
        self.result_tokens = 0
        self.artifacts: dict[str, Any] = {}
        self.tool_calls = 0  # tool calls admitted this turn
        # Tool-call id -> (arguments as the model gave them, for the trace; error sent back instead of running).
        self.refused: dict[str, tuple[Any, str]] = {}
        # Calls the model made that were dropped from the conversation: trace entries {"name", "args", "result", "status"}.
        self.dropped: list[dict] = []

    def wrap_tool_call(self, request, handler):
        call = request.tool_call
        if call["id"] in self.refused:
            return ToolMessage(content=self.refused[call["id"]][1], tool_call_id=call["id"], name=call["name"], status="error")
        result = handler(request)
        # Figures stay out of the conversation state (the checkpointer cannot and need not
        # store them); the session picks them up here by tool-call id.
        if isinstance(result, ToolMessage) and result.artifact is not None:
            self.artifacts[result.tool_call_id] = result.artifact
            result = result.model_copy(update={"artifact": None})
        if isinstance(result, ToolMessage) and isinstance(result.content, str):
            compact = compact_result(result.content, min(MAX_RESULT_TOKENS, MAX_TURN_RESULT_TOKENS - self.result_tokens))
            self.result_tokens += estimate_tokens(compact)
            if compact != result.content:
                self.full_results[result.tool_call_id] = result.content
                result = result.model_copy(update={"content": compact})
        return result

    def _count(self, response: ModelResponse) -> None:
        """Add the backend's token counts of one model call to the turn's `usage`."""
        for message in response.result:
            usage = getattr(message, "usage_metadata", None) or {}
            reused = (usage.get("input_token_details") or {}).get("cache_read", 0)
            self.usage["input_tokens"] += usage.get("input_tokens", 0)
            self.usage["output_tokens"] += usage.get("output_tokens", 0)
            self.usage["cache_read"] += reused
            self.usage["prefix_hits"] += reused > 0

    def _drop(self, name: Any, args: Any, why: str) -> None:
        self.dropped.append({"name": str(name or "unknown"), "args": _args_for_trace(args),
                             "result": f"not run and nothing sent back to the model: {why}", "status": "refused"})

    def _bound_calls(self, message: AIMessage) -> AIMessage:
        """The message with its tool calls within the limits; malformed or oversized ones answered by a tool error."""
        if not message.tool_calls and not message.invalid_tool_calls:
            return message
        candidates = [(c, None) for c in message.tool_calls] + [
            ({"name": c.get("name") or "unknown", "args": c.get("args"), "id": c.get("id") or f"invalid_{uuid.uuid4().hex[:8]}",
              "type": "tool_call"}, c.get("error") or "not a JSON object")
            for c in message.invalid_tool_calls
        ]
        kept = []
        for call, invalid in candidates:
            if len(kept) >= MAX_TOOL_CALLS_PER_MESSAGE:
                self._drop(call["name"], call["args"], f"over the limit of {MAX_TOOL_CALLS_PER_MESSAGE} tool calls per model message")
                continue
            if self.tool_calls >= MAX_TOOL_CALLS_PER_TURN:
                self._drop(call["name"], call["args"], f"over the limit of {MAX_TOOL_CALLS_PER_TURN} tool calls per question")
                continue
            self.tool_calls += 1
            size = len(json.dumps(call["args"], default=str)) if invalid is None else len(str(call["args"]))
            if invalid is not None or not isinstance(call["args"], dict):
                problem = f"the arguments are malformed ({invalid or 'not a JSON object'}); pass a JSON object of named arguments"
            elif size > MAX_TOOL_ARGUMENT_BYTES:
                problem = f"the arguments are {size} bytes long, over the limit of {MAX_TOOL_ARGUMENT_BYTES}; pass short arguments"
            else:
                kept.append(call)
                continue
            self.refused[call["id"]] = (_args_for_trace(call["args"]), f"Tool error: {problem}. The tool was not run.")
            kept.append({**call, "args": {}})
        return message.model_copy(update={"tool_calls": kept, "invalid_tool_calls": []})

    def wrap_model_call(self, request: ModelRequest, handler) -> ModelResponse | AIMessage:
        context = request.runtime.context
        audience = getattr(context, "audience", "clinician")
        turn = _current_turn(request.messages)
        answered = any(isinstance(m, ToolMessage) and m.status != "error" for m in turn)
        messages = _plain_history(request.messages[: len(request.messages) - len(turn)])
        if answered:
            request = request.override(system_message=SystemMessage(system_prompt(audience, self.scope)),
                                       messages=messages + list(turn), tools=[])
        else:
            question = messages[-1].content if messages and isinstance(messages[-1], HumanMessage) else ""
            previous = getattr(context, "named_periods", None)
            sure = sure_route(question, audience, previous) if self.scope == "night" and not turn and isinstance(question, str) else []
            if sure:  # the router's tools run without a model call; the model then answers in one call
                self.route = "router"
                call = AIMessage(content="", tool_calls=[
                    {"name": name, "args": args, "id": f"route_{uuid.uuid4().hex[:12]}", "type": "tool_call"} for name, args in sure])
                return ModelResponse(result=[self._bound_calls(call)], structured_response=None)
            # A question the keyword router recognises is about the night: the first call of the
            # turn must call a tool (small models otherwise refuse or answer from memory).
            forced = "any" if not turn and isinstance(question, str) and route_question(question, previous=previous) else request.tool_choice
            # A question with one sure tool (`routed_tool`: a follow-up on the periods just named,
            # a "when"/"show me"/"was X ever low" question the router recognises): only that tool
            # is offered and called (the 1.5B model otherwise picks a neighbour, e.g. caption_epochs
            # for "show me"); its call is completed from the routed call below.
            routed = routed_tool(question, audience, previous) if not turn and isinstance(question, str) else []
            tools = request.tools
            if routed:
                forced = routed[0][0]
                tools = [t for t in request.tools if getattr(t, "name", None) == forced] or request.tools
                self.route = "model-forced"
            # The periods just named come after the system message and its tools, whose evaluated
            # prefix every tool step shares (`prompt_prefixes`).
            hint = follow_up_hint(previous)
            request = request.override(system_message=SystemMessage(tool_choice_prompt(audience, self.scope)),
                                       messages=[*([SystemMessage(hint)] if hint else []), *messages, *turn],
                                       tool_choice=forced, tools=tools)
        self.calls += 1
        self.sent += [message_record(m, self.calls) for m in [request.system_message, *request.messages]]
        try:
            response = handler(request)
        except Exception as exc:  # only the backend's own failure may become the tool-only answer
            raise LLMBackendError(f"the language model backend failed: {type(exc).__name__}") from exc
        self._count(response)
        if not answered:  # the epochs of the follow-up hint (periods already named) count as said
            response = _without_invented_times(response, request.messages)
            if routed:
                response = self._fitted_to(response, routed[0], partner_ok=not _follow_up(question, previous))
            return ModelResponse(result=[self._bound_calls(m) if isinstance(m, AIMessage) else m for m in response.result],
                                 structured_response=response.structured_response)
        # Tools were not offered: a tool call now is a repeat; keep the text, drop the call.
        fixed = []
        for message in response.result:
            if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
                for c in [*message.tool_calls, *message.invalid_tool_calls]:
                    self._drop(c.get("name"), c.get("args"), "a tool call after a tool result, when no tools were offered")
                names = [c.get("name") or "unknown" for c in [*message.tool_calls, *message.invalid_tool_calls]]
                message = AIMessage(content=message.content, id=message.id, additional_kwargs={REPEATED_CALL_KEY: names})
            fixed.append(message)
        return ModelResponse(result=fixed, structured_response=response.structured_response)

    def _fitted_to(self, response: ModelResponse, routed: tuple[str, dict], partner_ok: bool = False) -> ModelResponse:
        """The response's tool calls fitted to the routed call: one call is kept, the model's call of
        the routed tool or else its first call, which becomes the routed call (same id); arguments
        the routed call has but the model left out (a period's "epoch A"/"epoch B", "within", the
        "kind") are added, the model's own are kept. With `partner_ok` (not a follow-up on named
        periods), a call of the routed tool's partner in `SAME_ANSWER` is kept as the model made it:
        both answer "when" with measured, timed events. The calls left over are dropped (traced as
        refused). A reply whose only calls are malformed (arguments that cannot be read) gets the
        routed call instead. The arguments still go through the limits and the tools' own validation."""
        name, args = routed
        accepted = {name, SAME_ANSWER.get(name)} if partner_ok else {name}
        fixed = []
        for message in response.result:
            if isinstance(message, AIMessage) and not message.tool_calls and message.invalid_tool_calls:
                # Only malformed calls (unreadable arguments): the routed call is made instead, with the
                # arguments the router read from the question; the malformed ones are traced as refused.
                for broken in message.invalid_tool_calls:
                    self._drop(broken.get("name"), broken.get("args"),
                               f"malformed ({broken.get('error') or 'unreadable arguments'}); the question routes to {name}, "
                               "whose call the router read from it was made instead")
                call = {"name": name, "args": dict(args), "type": "tool_call",
                        "id": message.invalid_tool_calls[0].get("id") or f"route_{uuid.uuid4().hex[:12]}"}
                message = message.model_copy(update={"tool_calls": [call], "invalid_tool_calls": []})
            elif isinstance(message, AIMessage) and message.tool_calls:
                call = next((c for c in message.tool_calls if c["name"] == name), None) or next(
                    (c for c in message.tool_calls if c["name"] in accepted), message.tool_calls[0])
                for other in message.tool_calls:
                    if other is not call:
                        self._drop(other["name"], other["args"], f"the question routes to {name}; one call of it is made")
                if call["name"] not in accepted:
                    logger.info("routed question: %s replaced by %s, the tool the question routes to", call["name"], name)
                    call = {**call, "name": name, "args": dict(args)}
                elif call["name"] == name and isinstance(call["args"], dict):  # a partner's call stands as made
                    call = {**call, "args": {**args, **call["args"]}}
                message = message.model_copy(update={"tool_calls": [call]})
            fixed.append(message)
        return ModelResponse(result=fixed, structured_response=response.structured_response)


def _plain_history(earlier: list[BaseMessage]) -> list[BaseMessage]:
    """Earlier turns as plain questions and answers (the current question last), a bounded window.

    Their tool calls and results are left out: with them in view, small models answer a new
    question from old results instead of calling a tool, and the answer step's prompt grew by
    every earlier result (past the 1.5B model's 8,192-token context by the sixth question of
    bench/llm_battery.py); answers are checked against this turn's results only. The window
    holds the exchanges since the last multiple of `HISTORY_BLOCK_TURNS` (at least the last
    one), so the prompt's start stays the same for several turns and the local model's prompt
    cache keeps serving it; then the oldest go until the window is within `MAX_HISTORY_CHARS`.
    """
    plain = [m for m in earlier if isinstance(m, HumanMessage) or (isinstance(m, AIMessage) and not m.tool_calls)]
    exchanges: list[list[BaseMessage]] = []
    for message in plain[:-1]:
        if isinstance(message, HumanMessage) or not exchanges:
            exchanges.append([])
        exchanges[-1].append(message)
    exchanges = exchanges[(len(exchanges) - 1) // HISTORY_BLOCK_TURNS * HISTORY_BLOCK_TURNS:] if exchanges else []

    def size(exchange: list[BaseMessage]) -> int:
        return sum(len(m.content if isinstance(m.content, str) else json.dumps(m.content)) for m in exchange)

    while len(exchanges) > 1 and sum(map(size, exchanges)) > MAX_HISTORY_CHARS:
        exchanges.pop(0)
    return [m for exchange in exchanges for m in exchange] + plain[-1:]


def _args_for_trace(args: Any) -> Any:
    """Arguments as the trace keeps them: as given when short, else their size and start."""
    text = args if isinstance(args, str) else json.dumps(args, default=str)
    if len(text) <= MAX_TOOL_ARGUMENT_BYTES:
        return args
    return {"refused_arguments": f"{len(text)} bytes", "start": text[:80]}


TIME_ARGUMENTS = ("start", "end")


def _numbers(text: str) -> set[int]:
    # Not "N2" or "SpO2" (names), and not 0 ("09:00" is said by "at 9").
    return {int(run) for run in re.findall(r"(?<![A-Za-z])\d+", text)} - {0}


def _without_invented_times(response: ModelResponse, messages: list[BaseMessage]) -> ModelResponse:
    """Drop a tool call's time range when its anchor's numbers were not all said in the conversation.

    Small models copy the example times of the prompt ("02:30") into calls about the whole
    night; the range is then outside the recording or arbitrary. A range anchored on numbers
    that the user, an earlier answer or a tool result gave is kept ("epoch 12" to "epoch 13" for
    "at epoch 12"), and so is a phrase ("second half").
    """
    said = _numbers(" ".join(m.content if isinstance(m.content, str) else json.dumps(m.content) for m in messages))
    fixed = []
    for message in response.result:
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = []
            for call in message.tool_calls:
                # The range's anchor: the start's numbers, else the end's ("00:00" to "02:00").
                numbers = next(filter(None, (_numbers(str(call["args"].get(name) or "")) for name in TIME_ARGUMENTS)), set())
                if not numbers <= said:
                    call = {**call, "args": {k: v for k, v in call["args"].items() if k not in TIME_ARGUMENTS}}
                calls.append(call)
            message = message.model_copy(update={"tool_calls": calls})
        fixed.append(message)
    return ModelResponse(result=fixed, structured_response=response.structured_response)


def build_agent(llm: BaseChatModel, guard: TurnGuard, tools=None, context_schema=None):
    """The compiled agent graph over `tools` (default all night tools, whose `context` must be a
    `NightContext`; the cohort tools take a `tools.cohort.CohortContext`)."""
    return create_agent(
        llm,
        ALL_TOOLS if tools is None else tools,
        system_prompt=tool_choice_prompt("clinician", guard.scope),
        middleware=[guard, ModelCallLimitMiddleware(run_limit=MAX_MODEL_CALLS, exit_behavior="end")],
        context_schema=NightContext if context_schema is None else context_schema,
        checkpointer=InMemorySaver(),
    )


_REFUSAL = re.compile(r"\bonly (help|answer)\b|\b(cannot|can't|can not|unable to) (help|assist)\b", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """True for a reply that declines ("I can only help with this recording")."""
    return bool(_REFUSAL.search(text))


def answer_problem(answer: AIMessage | None, grounding: Grounding, tool_calls: list[dict],
                   in_scope: bool = False) -> str | None:
    """Why an answer cannot be shown as it is (None when it passes the check).

    Fails: no answer, an answer over `MAX_ANSWER_CHARS`, an answer that is a tool call or JSON, a repeated tool call, an answer with
    any figure that no tool result gives with the same meaning (`assistant.grounding`), or a
    refusal of an `in_scope` question (one the keyword router would answer).
    """
    if answer is None:
        return "the model gave no answer"
    if answer.additional_kwargs.get(REPEATED_CALL_KEY):
        return "the model repeated a tool call instead of answering"
    text = answer.text.strip() if isinstance(answer.text, str) else str(answer.content).strip()
    if not text:
        return "the model's answer was empty"
    if len(text) > MAX_ANSWER_CHARS:
        return f"the answer was {len(text)} characters long, over the limit of {MAX_ANSWER_CHARS} (a runaway reply)"
    if text.startswith(STEP_LIMIT_PREFIX):
        return f"the step limit ({MAX_MODEL_CALLS} model calls) was reached before an answer"
    if text[0] in "{[" or "<tool_call>" in text or re.search(r'"(name|arguments)"\s*:', text):
        return "the model answered with JSON instead of sentences"
    if grounding.unmatched and not any(c.get("status") == "success" for c in tool_calls):
        return "the answer gives figures that no tool produced"
    if grounding.unmatched:
        claims = ", ".join(f"{f['claim']} as {f['meaning']}" for f in grounding.failed) or ", ".join(grounding.unmatched)
        return f"figures in the answer do not match the tool results by meaning ({claims})"
    if in_scope and is_refusal(text):
        return "the model declined a question about the recording"
    return None


def tool_writeup(tool_calls: list[dict]) -> str:
    """The tools' own pre-phrased findings, one block per call, errors included (calls refused
    over the traffic limits ran nothing and are left out)."""
    blocks = []
    for call in tool_calls:
        if call.get("status") == "refused":
            continue
        result = call["result"]
        if result is None:
            blocks.append(f"- {call['name']}: did not finish.")
            continue
        if call.get("status") == "error" or not isinstance(result, dict):
            blocks.append(f"- {call['name']}: {result}")
            continue
        source = result.get("source")
        lines = "\n".join(f"  - {line}" for line in result.get("findings", []))
        blocks.append(f"- {call['name']} (source: {source}):\n{lines}")
    return "\n".join(blocks) if blocks else "No tool was run."


# Words that ask when or where in the night something was abnormal (answered with ranked periods).
_WHEN = r"\b(when|what time|which part|which hours?|periods?|worst|most|abnormal|irregular|unusual|problems?)\b"
# Who scored the night besides the product, and words comparing two scorings.
_SCORER = r"\b(technician|scorer|sleep lab|expert|manual\w*|hand[- ]scor\w*|human|reference scoring)"
_AGREE = r"\b(compar\w*|agree\w*|differ\w*|match\w*|vs\.?|versus)\b"
# Tool-only mode: first matching rule wins; order from specific to general.
_ROUTES: list[tuple[str, str, dict]] = [
    # Technician vs automatic: "which events did you miss?", "how does your scoring compare with the technician's?"
    (r"\b(did|do|have) you miss|\b(missed|overlooked)\b.*\b(event|apn|hypopn|desat|arousal)", "scoring_agreement",
     {"show_events": "missed"}),
    (rf"{_SCORER}.*{_AGREE}|{_AGREE}.*{_SCORER}|\bkappa\b", "scoring_agreement", {}),
    (r"\b(plot|show|draw|graph|chart|visuali[sz]e|hypnogram)\b.*\b(event|apn|breath|oxygen)", "plot", {"kind": "events"}),
    (r"\b(plot|draw|graph|chart|visuali[sz]e|hypnogram)\b", "plot", {"kind": "hypnogram"}),
    (r"\b(compare|versus|vs\.?|difference)\b.*\b(supine|back)\b", "compare_periods", {"a": "supine", "b": "non-supine"}),
    (r"\b(compare|versus|vs\.?|difference)\b.*\brem\b", "compare_periods", {"a": "REM", "b": "NREM"}),
    (r"\b(compare|versus|vs\.?|difference|halves|half)\b", "compare_periods", {"a": "first half", "b": "second half"}),
    # "When did breathing look abnormal", "when was my sleep most disturbed": ranked periods.
    (rf"{_WHEN}.*\b(disturb|restless|fragment|interrupt|bad|poor|wors)|\b(disturb|restless)\w*\b.*{_WHEN}",
     "abnormal_periods", {"kind": "disturbed"}),
    (rf"{_WHEN}.*\b(oxygen|spo2|saturation|desat)|\b(oxygen|spo2|saturation|desat)\w*\b.*{_WHEN}",
     "abnormal_periods", {"kind": "desaturation"}),
    (rf"{_WHEN}.*\b(breath|respirat|apn|hypopn|snor)|\b(breath|respirat|apn|hypopn|snor)\w*\b.*{_WHEN}",
     "abnormal_periods", {"kind": "respiratory"}),
    (rf"{_WHEN}.*\b(heart|cardiac|pulse|tachy|brady)|\b(heart|cardiac|pulse|tachy|brady)\w*\b.*{_WHEN}",
     "abnormal_periods", {"kind": "heart_rate"}),
    (r"\b(oxygen|spo2|saturation|desat)", "list_events", {"kind": "desaturation"}),
    (r"\b(breath|respirat|apn|hypopn|snor)", "list_events", {"kind": "respiratory"}),
    (r"\b(arousal)", "list_events", {"kind": "arousal"}),
    (r"\b(heart|cardiac|pulse|tachy|brady)", "list_events", {"kind": "heart_rate"}),
    (r"\b(find|where|when)\b.*\b(rem|rapid eye|deep|n3|wake)\b|\brapid eye\b", "find_epochs", {}),
    (r"\b(channel|signal|recording|file|montage|overview)\b", "recording_overview", {}),
    (r"\b(summary|summar|sleep|deep|rem|n3|efficien|ahi|night|stage|tst)\b", "night_summary", {}),
]


# Why an event was scored, whether it was real, under which rule, how clear-cut: the criteria tools.
_EVENT_WORDS = r"(apn\w*|hypopn\w*|events?|desat\w*|arousals?|stop(?:ped)? breathing|breathing pauses?)"
_EXPLAIN = re.compile(rf"\b(why|explain|how do you know|what made|what makes|justify)\b.*\b{_EVENT_WORDS}\b|"
                      rf"\b(real|genuine|artefacts?|artifacts?|borderline)\b.*\b({_EVENT_WORDS[1:-1]}|that|it|this)\b|"
                      rf"\b({_EVENT_WORDS[1:-1]}|that|it|this)\b.*\b(real|genuine|artefacts?|artifacts?|borderline)\b|"
                      rf"\bevent\s+#?[rdah]\d{{1,4}}\b", re.IGNORECASE)
_RULE_WORDS = re.compile(r"\b(rules?|criteria|definitions?|chicago|shhs|cms|medicare|aasm|1a|1b)\b|\b[34]\s?(?:%|percent)",
                         re.IGNORECASE)
_INDEX_WORDS = re.compile(r"\b(ahi|index|events? per hour|rdi|rei)\b", re.IGNORECASE)
_CLEAR_CUT = re.compile(r"\b(clear[- ]?cut|certain|confiden\w*|definite|unambiguous|borderline)\b.*\b(events?|apn\w*|"
                        r"hypopn\w*|them|these|those)\b|\bhow many\b.*\b(clear[- ]?cut|certain|borderline|real)\b", re.IGNORECASE)
_ASKED_TIME = re.compile(r"\b(\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?|\d+h\d{1,2}m?|epoch\s+\d+|[rdah]\d{3})\b", re.IGNORECASE)
_ASKED_KIND = [(r"\bhypopn", "hypopnea"), (r"\bapn|stop(?:ped)? breathing|breathing pause", "apnea"),
               (r"\bdesat|oxygen", "desaturation"), (r"\barousal", "arousal")]
_RULE_ALIASES = [(r"\b4\s?(?:%|percent)|\b1b\b|\bcms\b|\bmedicare\b", "1B"), (r"\b3\s?(?:%|percent)|\b1a\b", "1A"),
                 (r"\bchicago\b", "chicago-1999"), (r"\bshhs\b|sleep heart health", "shhs"),
                 (r"\b2007\b.*\balternative\b", "aasm-2007-alternative"), (r"\b2007\b", "aasm-2007-recommended")]


def _criteria_route(question: str) -> list[tuple[str, dict]]:
    """explain_event for "why ... apnea at 02:14?" / "was that a real event or an artefact?", ahi_under_rules for
    "what would my AHI be under the 4 % rule?" / "how many of these events are clear-cut?" ([] otherwise).

    Examples
    --------
    >>> _criteria_route("Why do you say I had an apnea at 02:14?")
    [('explain_event', {'event': '02:14', 'kind': 'apnea'})]
    >>> _criteria_route("was that a real event or an artefact?")
    [('explain_event', {})]
    >>> _criteria_route("what would my AHI be under the 4 % rule?")
    [('ahi_under_rules', {'rules': ['1B']})]
    >>> _criteria_route("how many of these events are clear-cut?")
    [('ahi_under_rules', {})]
    """
    if _RULE_WORDS.search(question) and _INDEX_WORDS.search(question):
        rules = list(dict.fromkeys(name for pattern, name in _RULE_ALIASES if re.search(pattern, question, re.IGNORECASE)))
        return [("ahi_under_rules", {"rules": rules} if rules else {})]
    if _CLEAR_CUT.search(question) and not _ASKED_TIME.search(question):
        return [("ahi_under_rules", {})]
    if _EXPLAIN.search(question):
        args: dict = {}
        time = _ASKED_TIME.search(question)
        if time:
            args["event"] = time.group(1)
        kind = next((kind for pattern, kind in _ASKED_KIND if re.search(pattern, question, re.IGNORECASE)), None)
        if kind and args:
            args["kind"] = kind
        return [("explain_event", args)]
    return []


# A follow-up leans on the previous answer: "and in REM?", "what about the second half?", "show me that period".
_FOLLOW_UP = re.compile(r"^\W*(and|what about|how about|same for|now)\b|\b(that|this|the same|those|these) periods?\b|"
                        r"\b(first|second|third|fourth|fifth|worst|last|final|latest) period\b|\bperiod #?\d\b|#\d\b|"
                        r"^\W*(show|plot|draw|zoom in on|zoom into|let me see)( me)? (it|that|this|them|those|these)\W*$")
_RANK_WORDS = {"first": 1, "worst": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}
# The highest-numbered period of the previous answer.
_LAST_WORDS = r"\b(last|final|latest)\b"
# Parts of the night a follow-up can restrict the previous periods to (`abnormal_periods`' `within`).
_WITHIN = [(r"\bnon[- ]?rem\b|\bnrem\b", "NREM"), (r"\brem\b|\bdream", "REM"), (r"\bdeep sleep\b|\bn3\b", "deep sleep"),
           (r"\bnon[- ]?supine\b|\b(side|lateral)\b", "non-supine"), (r"\bsupine\b|\bon (my|the) back\b", "supine")]
_HALVES = [(r"\bsecond half\b|\blater\b|\bend of the night\b", "second half"), (r"\bfirst half\b|\bearl(y|ier)\b", "first half")]


def named_periods(answer: str, tool_calls: list[dict]) -> dict | None:
    """The periods an answer named, for follow-ups: those of its `abnormal_periods` result whose
    epoch range or start clock the answer cites (all of them when it cites none), or None."""
    for call in reversed(tool_calls):
        result = call.get("result")
        if call.get("name") != "abnormal_periods" or call.get("status") != "success" or not isinstance(result, dict):
            continue
        periods = result.get("periods") or []
        cited = [p for p in periods if f"{p['epoch_start']}-{p['epoch_end']}" in answer
                 or (p.get("clock_start") and p["clock_start"][:5] in answer)]
        return {"tool": "abnormal_periods", "args": dict(call.get("args") or {}), "periods": cited or periods}
    return None


def _follow_up(question: str, previous: dict | None) -> list[tuple[str, dict]]:
    """Tools for a follow-up question, resolved against the periods the previous answer named
    ([] when there are none or the question is no follow-up)."""
    q = question.lower()
    if not previous or not _FOLLOW_UP.search(q):
        return []
    periods = previous.get("periods") or []
    if re.search(r"\b(show|plot|see|zoom|look at|draw)\b", q) and periods:
        rank = next((n for word, n in _RANK_WORDS.items() if re.search(rf"\b{word}\b", q)), None)
        if rank is None and re.search(_LAST_WORDS, q):
            rank = max(p.get("rank", 0) for p in periods)
        digit = re.search(r"#\s?(\d)\b|period (\d)\b", q)
        rank = int(digit.group(1) or digit.group(2)) if digit else rank or 1
        period = next((p for p in periods if p.get("rank") == rank), periods[0])
        return [("plot", {"kind": "events", "start": f"epoch {period['epoch_start']}", "end": f"epoch {period['epoch_end']}"})]
    args = {k: v for k, v in previous.get("args", {}).items() if k in ("kind", "gap_min")}
    for pattern, within in _WITHIN:
        if re.search(pattern, q):
            return [(previous["tool"], {**args, "within": within})]
    for pattern, half in _HALVES:
        if re.search(pattern, q):
            return [(previous["tool"], {**args, "start": half})]
    return []


def follow_up_hint(previous: dict | None) -> str:
    """One paragraph for the tool-choice prompt naming the periods of the previous answer ('' without them)."""
    if not previous or not previous.get("periods"):
        return ""
    listed = "; ".join(f"#{p['rank']} epochs {p['epoch_start']}-{p['epoch_end']}" + (f" ({p['clock_start']}-{p['clock_end']})" if p.get("clock_start") else "")
                       for p in previous["periods"])
    kind = previous.get("args", {}).get("kind", "respiratory")
    return (f"The previous answer named these {kind} periods: {listed}. For a follow-up about them, call "
            f"abnormal_periods with kind \"{kind}\" and within \"REM\"/\"supine\"... or start \"second half\", or plot with "
            "kind \"events\" and start/end \"epoch A\"/\"epoch B\" of the period meant (#1 for 'that period').")


# "show me X" / "when did X happen": X is a concept for `concept_timeline` unless a measured
# event, a figure of the night or a summary figure answers it.
_CONCEPT_QUESTION = re.compile(
    r"^\s*(?:please\s+|can you\s+)?(?:show me|when (?:did|was|were|do|does|is|are))\s+(?:the\s+|my\s+|any\s+|i\s+(?:have\s+|had\s+|get\s+)?)?"
    r"(?P<concept>.+?)(?:\s+(?:happen|occur|appear|start|show up|take place)\w*)?(?:\s+in the night)?\s*[?.!]*\s*$",
    re.IGNORECASE)
_FIGURE_OR_FACT = re.compile(
    r"\b(plot|hypnogram|graph|chart|summary|overview|channels?|fall asleep|wake up|abnormal\w*|disturb\w*|most|worst|that|this|those|these|it|them)\b|"
    r"^(?:the |my )?(?:night|recording|signals?|rem|deep(?:est)? sleep|light sleep|n[123]|wake|sleep)"
    r"(?: sleep| periods?| stages?)?$", re.IGNORECASE)
# A sleep stage with a feature ("REM with rapid eye movements") is find_epochs' retrieval (stages are measured).
_STAGE_LED = re.compile(r"^(?:rem|n[123]|deep sleep|light sleep|wake)\b", re.IGNORECASE)
_MEASURED_EVENT = re.compile(r"\b(apn\w*|hypopn\w*|desat\w*|arousal\w*|events?|oxygen|spo2|heart rate|respirat\w*|"
                             r"breath\w*)\b", re.IGNORECASE)


def concept_question(question: str) -> str | None:
    """The concept of a "show me ..." / "when did ... happen" question that no measured event answers, else None.

    Examples
    --------
    >>> concept_question("When did alpha intrusion happen?")
    'alpha intrusion'
    >>> concept_question("show me my apneas") is None
    True
    >>> concept_question("show me snoring with desaturation")
    'snoring with desaturation'

    """
    match = _CONCEPT_QUESTION.match(question)
    if match is None:
        return None
    concept = match.group("concept").strip()
    if not concept or _FIGURE_OR_FACT.search(concept) or _STAGE_LED.match(concept):
        return None
    # An event alone is a measured event; combined with something else ("snoring with desaturation") a concept.
    if _MEASURED_EVENT.search(concept) and not re.search(r"\b(with|and|during)\b", concept):
        return None
    return concept


def route_question(question: str, audience: str = "clinician", previous: dict | None = None) -> list[tuple[str, dict]]:
    """Tools to run for a question when no language model is available (keyword rules).

    Parameters
    ----------
    question : the user's question.
    audience : "clinician" or "patient" (passed to tools that phrase for it).
    previous : the periods the previous answer named (`named_periods`); a follow-up ("and in
        REM?", "what about the second half?", "show me that period") resolves against them.

    Returns
    -------
    list of (tool name, arguments); empty when no rule matches (out of scope).
    """
    q = question.lower()
    resolved = _follow_up(question, previous)
    if resolved:
        return resolved
    criteria = _criteria_route(question)
    if criteria:
        return criteria
    concept = concept_question(question)
    if concept is not None:
        return [("concept_timeline", {"concepts": [concept]})]
    for pattern, name, args in _ROUTES:
        if re.search(pattern, q):
            if name == "night_summary":
                args = {"audience": audience}
            elif name == "find_epochs":
                args = {"query": question}
            return [(name, dict(args))]
    return []


# Question forms whose routed tool is the answer's tool: when / where / what time, show me / plot,
# "was X ever low". Other questions keep the model's free choice of tool.
_ROUTED_FORM = re.compile(r"^\W*(?:please\s+|can you\s+|could you\s+)?(?:when|what time|at what time|where|which (?:part|hours?|periods?)|"
                          r"show|plot|draw|let me see)\b|\bever\s+(?:low|high|drop\w*|f[ae]ll)\b", re.IGNORECASE)
# The router's residual and catch-all answers: any "show me X" it does not recognise is a concept,
# and a word like "night" or "signal" says only that the question is about the recording.
_UNSURE_TOOLS = ("concept_timeline", "recording_overview", "night_summary")
# Tools only one kind of question asks for, whatever its form ("how does your scoring compare with the technician's?").
_SURE_TOOLS = ("scoring_agreement",)
# Tools that answer the same "when" question from the same measured events (single events with
# their times, or the periods they cluster in): a model that picks the partner of the routed one
# is not overruled ("When were the apneas?" may be answered by either).
SAME_ANSWER = {"list_events": "abnormal_periods", "abnormal_periods": "list_events"}


def routed_tool(question: str, audience: str = "clinician", previous: dict | None = None) -> list[tuple[str, dict]]:
    """The one tool the agent must use for a question the router recognises with confidence, else [].

    The criteria questions (`_criteria_route`: why an event was scored, whether it was real, the AHI
    under another rule, how many events are clear-cut) are always routed.

    A follow-up resolved against the periods the previous answer named ("show me that period"),
    or a "when ..." / "show me ..." / "was X ever low?" question that a keyword rule routes to one
    tool (`route_question`; not the residual `concept_timeline` nor the catch-alls
    `recording_overview` and `night_summary`). The agent offers and forces only that tool and turns
    a call of another tool into it (the 1.5B model picks neighbours: caption_epochs for "show me
    REM with rapid eye movements", abnormal_periods for "was my oxygen ever low?").

    Examples
    --------
    >>> routed_tool("was my oxygen ever low?")
    [('list_events', {'kind': 'desaturation'})]
    >>> routed_tool("how much deep sleep did I get?")
    []
    >>> routed_tool("which events did you miss?"), routed_tool("How does your scoring compare with the technician's?")
    ([('scoring_agreement', {'show_events': 'missed'})], [('scoring_agreement', {})])

    """
    routed = _follow_up(question, previous) or _criteria_route(question)
    if not routed:
        sure_form = _ROUTED_FORM.search(question)
        routed = [(name, args) for name, args in route_question(question, audience, previous)
                  if name in _SURE_TOOLS or (sure_form and name not in _UNSURE_TOOLS)]
    return routed if len(routed) == 1 else []


def result_summary(name: str, result: Any, status: str) -> str:
    """One line for the UI's tool step: the first finding, or the error."""
    if status == "error" or not isinstance(result, dict):
        return f"error: {str(result)[:200]}"
    findings = result.get("findings") or []
    return findings[0] if findings else json.dumps(result)[:200]


# Questions about a part of the night ("after 3 am", "in the second half", "during REM", "at epoch
# 120"): the model's call carries the range or the part, so the router is not sure of them alone.
_RESTRICTED = re.compile(r"\d|\b(half|after|before|between|during(?! the night)|from|until|till|around|since|morning|evening|early|"
                         r"earlier|late|later|epochs?|supine|back|side|in (?:rem|n[123]|deep|light))\b",
                         re.IGNORECASE)
# Question forms with one clear tool besides `routed_tool`'s when / show me / "was X ever low":
# summaries, and how much / how long of the stages (deep sleep, REM, ...). First match wins.
_SURE_ROUTES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\bsumm(?:ary|ari[sz]e)\b|\boverview of (?:my|the|this) (?:night|sleep)\b", re.IGNORECASE), "night_summary"),
    (re.compile(r"\bhow (?:much|long)\b.*\b(?:deep|rem|n[123]|light|slow[- ]wave|dream\w*|sleep|slept|awake|wake)\b|"
                r"\b(?:sleep )?stages?\b|\bsleep efficiency\b|^\W*what(?:'s| is| was) (?:my |the )?ahi\W*$", re.IGNORECASE),
     "night_summary"),
]


def sure_route(question: str, audience: str = "clinician", previous: dict | None = None) -> list[tuple[str, dict]]:
    """The tools to run without asking the model, for a question whose tool is clear, else [].

    A follow-up resolved against the periods just named, a question `routed_tool` is sure of,
    or a summary / stage-amount question (`_SURE_ROUTES`), when it names no part of the night
    (a time, a half, a stage or a position to restrict to: the model's call carries those).

    Examples
    --------
    >>> sure_route("When did respiration look abnormal?")
    [('abnormal_periods', {'kind': 'respiratory'})]
    >>> sure_route("how much deep sleep did I get?", "patient")
    [('night_summary', {'audience': 'patient'})]
    >>> sure_route("when did respiration look abnormal after 3 am?"), sure_route("how did I sleep?")
    ([], [])

    """
    if _follow_up(question, previous):
        return routed_tool(question, audience, previous)
    if _RESTRICTED.search(question):
        return []
    routed = routed_tool(question, audience, previous)
    if routed:
        return routed
    return next(([(name, {"audience": audience})] for pattern, name in _SURE_ROUTES if pattern.search(question)), [])


def estimate_tokens(text: str) -> int:
    """Tokens the model reads for `text`, estimated at `CHARS_PER_TOKEN` characters per token."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _shown(view: dict, limit: int, nested: bool = True) -> dict:
    """`view` with every list of records, its own (and with `nested` its records'), cut to its
    first `limit` items (how many were left out beside it)."""
    out = {}
    for key, value in view.items():
        out[key] = _shown(value, limit) if nested and isinstance(value, dict) else value
        if isinstance(value, list) and len(value) > limit and key != "findings" and any(isinstance(v, dict) for v in value):
            out[key] = value[:limit]
            out[f"{key}_not_shown"] = len(value) - limit + view.get(f"{key}_not_shown", 0)
    return out


def compact_result(content: str, budget_tokens: int = MAX_RESULT_TOKENS) -> str:
    """What the model reads of one tool result: its compact view within `budget_tokens`.

    A JSON object loses its empty fields and the tool's name, keeps its first `MAX_FINDINGS`
    findings and the first `MAX_LIST_ITEMS` items of each list of records, also in its nested
    records (the file's quoted annotations); ``<list>_not_shown`` says how many were left out.
    While over the budget, the records lose their nested details, its own lists shrink to one
    item, then lists and nested records go, the largest first (``omitted`` names them), then the
    last findings; text (an error) or a view still over the budget is cut, saying so.

    Examples
    --------
    >>> compact_result('{"tool": "t", "findings": ["3 apneas."], "events": [{"i": 1}, {"i": 2}, {"i": 3}, {"i": 4}]}')
    '{"findings": ["3 apneas."], "events": [{"i": 1}, {"i": 2}, {"i": 3}], "events_not_shown": 1}'
    >>> compact_result("Tool error: " + "x" * 400, budget_tokens=40)
    'Tool error: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx [cut at 40 tokens]'

    """
    budget = max(0, budget_tokens) * CHARS_PER_TOKEN
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return content if len(content) <= budget else f"{content[: max(0, budget - 22)]} [cut at {budget_tokens} tokens]"
    view = {k: v for k, v in data.items() if k != "tool" and v not in (None, "", [], {})}
    if isinstance(view.get("findings"), list) and len(view["findings"]) > MAX_FINDINGS:
        view["findings_not_shown"] = len(view["findings"]) - MAX_FINDINGS
        view["findings"] = view["findings"][:MAX_FINDINGS]
    view = _shown(view, MAX_LIST_ITEMS)

    def text() -> str:
        return json.dumps(view, ensure_ascii=False)

    if len(text()) > budget:  # the records' nested details go (an event's evidence, a period's minutes per stage)
        view = {k: [{f: x for f, x in v.items() if not isinstance(x, (dict, list))} if isinstance(v, dict) else v for v in value]
                if isinstance(value, list) and k != "findings" else value for k, value in view.items()}
    if len(text()) > budget:
        view = _shown(view, 1, nested=False)
    # The largest first (the findings say what they hold).
    nested = sorted((k for k, v in view.items() if isinstance(v, (list, dict)) and k != "findings"),
                    key=lambda k: len(json.dumps(view[k], ensure_ascii=False)))
    while len(text()) > budget and nested:
        key = nested.pop()
        view.pop(key)
        view.setdefault("omitted", []).append(key)
    while len(text()) > budget and len(view.get("findings") or []) > 1:
        view["findings"] = view["findings"][:-1]
        view["findings_not_shown"] = view.get("findings_not_shown", 0) + 1
    return text() if len(text()) <= budget else f"{text()[: max(0, budget - 22)]} [cut at {budget_tokens} tokens]"
