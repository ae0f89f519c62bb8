"""One conversation over one recording: load, analyse, ask, stream.

`NightSession` is what the app and the CLI use::

    session = NightSession(llm=chat_model)      # llm=None: configured backend, else tool-only
    session.load("night.edf")
    turn = session.ask("how much deep sleep did I get?", audience="patient")
    for event in session.ask_stream("and in the second half of the night?"):
        ...  # tool_start / tool_end / token / final

Nothing identifying leaves the session: the recording is loaded through `load_recording`,
which keeps no patient/recording header fields and no file name, and tools only see the
de-identified `Recording`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import ToolException
from langgraph.errors import GraphRecursionError

from assistant.agent import (
    AUDIENCES, FALLBACK_LABEL, MAX_ANSWER_CHARS, RECURSION_LIMIT, TurnGuard, answer_problem, build_agent, is_refusal,
    named_periods, prompt_prefixes, result_summary, route_question, tool_writeup,
)
from assistant.grounding import check_grounding, complete_citations
from assistant.errors import InternalError, LLMBackendError, SessionError
from assistant.llm import get_chat_model
from assistant.markup import inert_markdown
from assistant.sleeplm_jobs import loading, plan_sleeplm_jobs, run_sleeplm_jobs, start_background
from sleeplm.errors import ModelUnavailableError
from sleeplm.io.recording import Recording
from sleeplm.measure.rules import DEFAULT_RULE, resolve_rule
from tools import ALL_TOOLS, NightContext, parse_result, run_tool
from tools.captions import consistency_note

__all__ = ["NightSession", "TurnResult", "SessionError", "NO_LLM_LABEL"]

logger = logging.getLogger(__name__)

NO_LLM_REASON = "No language model is configured"
NO_LLM_LABEL = f"{NO_LLM_REASON}, so this is tool-only mode: the tools chosen by keyword say:"
OUT_OF_SCOPE = (
    "I can only answer questions about the loaded sleep recording (sleep stages, breathing, oxygen, "
    "heart rate, body position, events). Try 'give me a summary of my night'."
)


@dataclass
class TurnResult:
    """Everything one question produced.

    Attributes
    ----------
    answer : text shown to the user (with a grounding note or fallback label when needed).
    tool_calls : [{"name", "args", "result", "status"}] in call order; results are JSON data.
    grounding : {"matched": [...], "unmatched": [...]} figures of the answer.
    llm : {"backend", "model"} that wrote the answer ("none" in tool-only mode).
    llm_messages : every message sent to the language model this turn (audit).
    mode : "agent", "fallback" (tools' write-up replaced the answer), "tool-only" (no language model,
        or its backend failed) or "error" (a bug: the answer is "Internal error" with the reference
        the server log holds its traceback under).
    artifacts : figures produced by `plot` (matplotlib Figures), in call order.
    route : how the tools were chosen (`assistant.agent.ROUTES`): "router" (run without a model
        call; the model wrote the answer in one call), "model-forced" (the model was offered and
        made to call the one routed tool), "model" (the model chose among all tools), or
        "tool-only" (the keyword router, no model answer).
    usage : the backend's counts over the turn's model calls: "model_calls", "input_tokens",
        "output_tokens", "cache_read" (prompt tokens reused from the backend's prefix cache) and
        "prefix_hits" (calls that reused any); zeros when no model was called.

    The answer is made inert on construction (`assistant.markup.inert_markdown`: no HTML,
    images, links or URLs), so the page, ``--json``, ``/ask`` and the exports all get the same text.
    """

    answer: str
    tool_calls: list[dict] = field(default_factory=list)
    grounding: dict = field(default_factory=lambda: {"matched": [], "unmatched": []})
    llm: dict = field(default_factory=lambda: {"backend": "none", "model": None})
    llm_messages: list[dict] = field(default_factory=list)
    mode: str = "agent"
    artifacts: list[Any] = field(default_factory=list)
    route: str = "model"
    usage: dict = field(default_factory=lambda: {"model_calls": 0, "input_tokens": 0, "output_tokens": 0,
                                                 "cache_read": 0, "prefix_hits": 0})

    def __post_init__(self) -> None:
        self.answer = inert_markdown(self.answer)

    def to_dict(self) -> dict:
        """JSON-serialisable form (figures left out)."""
        return {
            "answer": self.answer, "tool_calls": self.tool_calls, "grounding": self.grounding,
            "llm": self.llm, "llm_messages": self.llm_messages, "mode": self.mode, "route": self.route, "usage": self.usage,
        }


def _resolve_llm(llm: Any) -> tuple[BaseChatModel | None, dict]:
    """A chat model and its {"backend", "model"} from an instance, a spec string or None (configured default)."""
    if isinstance(llm, BaseChatModel):
        name = getattr(llm, "model_name", None) or getattr(llm, "model", None) or type(llm).__name__
        return llm, {"backend": llm._llm_type, "model": str(name), "detail": "chat model given to the session"}
    model, status = get_chat_model(llm)
    info = {"backend": status.backend, "model": status.model, "detail": status.detail}
    return (model if status.available else None), info


def loaded_status(model: Any) -> str:
    """The status sentence of loaded SleepLM weights, with the encoder's precision and why."""
    choice = getattr(model, "precision", None)
    return f"SleepLM weights loaded; precision {choice.reason}" if choice is not None else "SleepLM weights loaded"


def _resolve_sleeplm(model: Any, precision: str = "auto") -> tuple[Any, str]:
    """A SleepLM instance (or None) and one sentence on its status; named weights are loaded in `precision`."""
    if model is None:
        return None, "no SleepLM weights were given to this session"
    if not isinstance(model, (str, Path)):
        return model, loaded_status(model)
    from sleeplm.model.inference import SleepLM  # torch and the network load only when weights are named

    try:
        model = SleepLM.from_pretrained(str(model), precision=precision)
    except ModelUnavailableError as exc:
        return None, str(exc)
    return model, loaded_status(model)


class NightSession:
    """A conversation about one recording.

    Parameters
    ----------
    llm : a LangChain chat model, a backend spec string ("openai:<model>@<url>", "ollama:<model>",
        "local", "none"), or None for the configured default. Without a usable model the session
        answers in a clearly labelled tool-only mode.
    model : a loaded `SleepLM`, a weights source for `SleepLM.from_pretrained`, or None.
    precision : the encoder precision weights named by `model` are loaded in ("auto", the default, reads
        ``$SLEEPLM_PRECISION``; see `sleeplm.model.inference.SleepLM`).
    workdir : folder for this session's temporary files (figures); a fresh temporary folder,
        deleted by `close`, when None.
    """

    # The conversation's scope, tools, their context type and keyword router (a cohort session
    # replaces them: `assistant.cohort.CohortSession`).
    SCOPE = "night"
    TOOLS = ALL_TOOLS
    CONTEXT = NightContext

    def route(self, question: str, audience: str = "clinician") -> list[tuple[str, dict]]:
        """Tools the keyword router picks for `question` (tool-only mode, and what counts as in scope); a
        follow-up resolves against the periods the previous answer named."""
        return route_question(question, audience, previous=getattr(self.night, "named_periods", None))

    def __init__(self, llm: Any = None, model: Any = None, workdir: str | Path | None = None, rule: str = DEFAULT_RULE,
                 precision: str = "auto") -> None:
        self.rule = resolve_rule(rule).name  # the scoring rule nights are loaded with (`set_rule` changes it)
        self.llm, self.llm_info = _resolve_llm(llm)
        self.sleeplm, self.sleeplm_status = _resolve_sleeplm(model, precision)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="sleeplm-session-") if workdir is None else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.night: NightContext | None = None
        self._guard = TurnGuard(self.SCOPE)
        self._agent = build_agent(self.llm, self._guard, self.TOOLS, self.CONTEXT) if self.llm is not None else None
        # A backend with a prefix cache (the embedded model) evaluates the prompts' common starts
        # now, in the background, once per process: the first question does not wait for them.
        warm = getattr(self.llm, "warm_prompt_prefixes", None)
        if callable(warm):
            warm(prompt_prefixes(self.SCOPE, self.TOOLS))
        self._thread_id = uuid.uuid4().hex
        self._background: list[threading.Thread] = []
        self._n_figures = 0

    # ---- loading ----------------------------------------------------------------------
    def load(
        self, path: str | Path, progress: Callable | None = None, channel_map: dict | None = None,
        position_map: str | dict | None = None, stage_cross_check: bool = True, annotations: str | Path | None = None,
        scoring: str = "technician",
        rule: str | None = None,
    ) -> Recording:
        """Load and analyse a recording; start SleepLM embeddings in the background when a model is loaded.

        `progress` is handed to the analysis (``progress(fraction, text)``); `channel_map`,
        `position_map` and `annotations` (the technician's scoring file; default: one named like
        the recording beside it) to `sleeplm.io.reader.load_recording`. A night with its own scoring (the
        technician's) is ready without waiting for YASA: the product's own scoring and its agreement
        with the technician's (`tools.NightContext.compare_scorings`) run in the background when
        `stage_cross_check`, else when first asked for. `scoring` is whose scoring the answers use
        when the recording came with scoring: "technician" (default) or "automatic" (then the
        automatic scoring is computed before the night is ready); see `set_scoring`. Raises the
        `sleeplm.errors.RecordingError` family for unusable files. A new recording starts a new
        conversation. `rule` (a name of `sleeplm.measure.rules.RULES`) replaces the session's scoring rule.
        """
        night = self.read_night(path, progress, channel_map, position_map, annotations, scoring, rule)
        self.use_night(night, stage_cross_check)
        return night.rec

    def read_night(
        self, path: str | Path, progress: Callable | None = None, channel_map: dict | None = None,
        position_map: str | dict | None = None, annotations: str | Path | None = None, scoring: str = "technician",
        rule: str | None = None,
    ) -> NightContext:
        """The first half of `load` (same arguments): the recording loaded and analysed into a night,
        which the session does not answer about until `use_night` is given it.

        A caller that may have started several loads (a browser tab: the page's opening load and an
        upload) uses the one it wants, not the one that happened to finish last.
        """
        from sleeplm.io.reader import load_recording

        if rule is not None:
            self.rule = resolve_rule(rule).name
        with loading():  # other sessions' SleepLM background work pauses meanwhile
            rec = load_recording(path, channel_map=channel_map, position_map=position_map, annotations=annotations)
            analysis = self._analyze(rec, progress, scoring, self.rule)
        return NightContext(rec=rec, analysis=analysis, model=self.sleeplm, model_status=self.sleeplm_status)

    def use_night(self, night: NightContext | None, stage_cross_check: bool = True) -> None:
        """The second half of `load`: answer about `night` (from `read_night`; None: about no night) in a
        new conversation, and start its background work (see `load`). The jobs of the night used before
        stop at their next batch."""
        self.night = night
        self.reset()
        self._background = []
        if night is None:
            return
        analysis = night.analysis
        # With the technician's stages, SleepLM does not stage the night: nothing else replaces the analysis
        # meanwhile. A scoring with events only is compared when first asked for.
        if stage_cross_check and analysis.staging.source == "reference scoring" and analysis.agreement is None:
            self._background.append(start_background(self._cross_check, night, name="yasa-check"))
        if self.sleeplm is not None:
            self._start_sleeplm(night)

    def attach_sleeplm(self, model: Any) -> None:
        """Use `model` (a loaded SleepLM that arrived after the session started) from now on,
        starting its background jobs on the loaded night."""
        self.sleeplm, self.sleeplm_status = model, loaded_status(model)
        night = self.night
        if night is not None and night.model is None:
            night.model, night.model_status = model, self.sleeplm_status
            self._start_sleeplm(night)

    def _start_sleeplm(self, night: NightContext) -> None:
        """Embeddings and SleepLM staging of `night` in the background: the conversation does not wait."""
        plan_sleeplm_jobs(night)
        self._background.append(start_background(run_sleeplm_jobs, night, self.sleeplm, lambda: self.night is night,
                                                 name="sleeplm"))

    def wait_for_background(self, timeout_s: float | None = None, embeddings_only: bool = False) -> bool:
        """Wait for the background jobs of the loaded night (SleepLM embeddings and staging, YASA
        cross-check), or only until the SleepLM embeddings exist; True when they ended."""
        if embeddings_only:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            night = self.night
            while (night is not None and night.embeddings is None and isinstance(night.sleeplm_jobs.get("embeddings"), float)
                   and any(job.is_alive() for job in self._background)):
                if deadline is not None and time.monotonic() > deadline:
                    return False
                time.sleep(0.1)
            return True
        for job in self._background:
            job.join(timeout_s)
        return not any(job.is_alive() for job in self._background)

    def set_rule(self, rule: str) -> None:
        """Score the loaded night (and the nights loaded later) under another rule, from the measurements
        already made (`sleeplm.measure.analysis.rescore`: no signal is read again).

        On a night whose scoring came with it, the product's own (automatic) events are re-scored;
        the technician's apneas and hypopneas stay as scored, and stay in use while the technician's
        scoring is chosen (its AHI is labelled as the technician's, `set_scoring` switches)."""
        from sleeplm.measure.analysis import rescore

        self.rule = resolve_rule(rule).name
        night = self.night
        if night is None or night.analysis is None:
            return
        with night.analysis_lock:  # after a comparison under way: it is re-scored, not lost
            if night.analysis.hypopnea_rule != self.rule:
                night.analysis = rescore(night.rec, night.analysis, self.rule)
                night.version += 1

    def _analyze(self, rec: Recording, progress: Callable | None, scoring: str = "technician", rule: str = DEFAULT_RULE):
        from sleeplm.measure.analysis import analyze_night  # YASA and LightGBM load with the first night

        # With the file's own scoring, the automatic scoring is a comparison: it runs after loading (~20 s
        # cold), unless the answers are to use it. SleepLM's staging (captions of every epoch, minutes)
        # runs in the background, after loading.
        return analyze_night(rec, model=None, progress=progress, automatic_staging=False, scoring=scoring,
                             hypopnea_rule=rule)

    @staticmethod
    def _cross_check(night: NightContext) -> None:
        try:
            night.compare_scorings()
        except Exception:  # the comparison is optional; the technician's scoring stands alone
            logger.exception("comparison with the automatic scoring failed")

    def set_scoring(self, scoring: str) -> None:
        """Answer from now on with `scoring`: "technician" (the scoring that came with the recording) or
        "automatic" (the product's own staging and events, computed now if not yet).

        Raises `SessionError` without a loaded night, or for "technician" on a night without scoring.
        """
        from sleeplm.errors import MeasurementError
        from sleeplm.measure.analysis import use_scoring

        night = self.night
        if not isinstance(night, NightContext) or night.analysis is None:
            raise SessionError("no recording is loaded.")
        # Under the night's lock: a replacement of the analysis under way (SleepLM's re-staging, a
        # re-scoring) is waited for and the choice applies to its result, never undone by it.
        with night.analysis_lock:
            if scoring == night.scoring:
                return
            if scoring == "automatic" and "automatic" not in night.analysis.scorings:
                try:
                    night.compare_scorings()
                except ToolException as exc:
                    raise SessionError(str(exc)) from exc
            try:
                night.analysis = use_scoring(night.analysis, scoring)
            except MeasurementError as exc:
                raise SessionError(str(exc)) from exc
            night.version += 1

    # ---- conversation -----------------------------------------------------------------
    def reset(self) -> None:
        """Forget the conversation (the loaded recording stays)."""
        if self._agent is not None:
            self._agent.checkpointer.delete_thread(self._thread_id)
        if isinstance(self.night, NightContext):
            self.night.named_periods = None
        self._thread_id = uuid.uuid4().hex

    def close(self) -> None:
        """End the session: forget the night and the conversation, stop the SleepLM jobs at their next
        batch and wait for them (and for a running YASA cross-check), and delete the temporary files."""
        self.reset()
        self.night = None
        for job in self._background:
            job.join()
        self._background = []
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def ask(self, question: str, audience: str = "clinician") -> TurnResult:
        """Answer one question (follow-ups see the earlier turns)."""
        final = None
        for event in self.ask_stream(question, audience):
            if event["type"] == "final":
                final = event["turn"]
        return final

    def ask_stream(self, question: str, audience: str = "clinician") -> Iterator[dict]:
        """Answer one question, yielding events as they happen.

        Yields
        ------
        {"type": "tool_start", "id", "name", "args"}
        {"type": "tool_end", "id", "name", "summary", "duration_s", "artifact"}  (figure or None)
        {"type": "token", "text"}  (answer text as the model writes it; the final answer may differ)
        {"type": "final", "turn": TurnResult}
        """
        if self.night is None:
            raise SessionError("No recording is loaded: call load(path) with an EDF/EDF+/BDF file first.")
        if audience not in AUDIENCES:
            raise SessionError(f"Unknown audience {audience!r}: use 'clinician' or 'patient'.")
        if not isinstance(question, str) or not question.strip():
            raise SessionError("The question is empty: ask something about the recording.")
        self.night.audience = audience
        try:
            if self._agent is None:
                yield from self._tool_only(question, audience, self._no_llm_reason())
            else:
                yield from self._agent_turn(question)
        except Exception:  # a bug in a tool, the middleware or here: never passed off as an answer
            error = InternalError()
            logger.exception("internal error (reference %s) answering %d-character question", error.reference,
                             len(question))
            yield {"type": "final", "turn": TurnResult(
                answer=error.user_message, llm={"backend": self.llm_info.get("backend"), "model": self.llm_info.get("model")},
                llm_messages=list(self._guard.sent), mode="error",
            )}

    # ---- internals --------------------------------------------------------------------
    def _remember_periods(self, answer: str, tool_calls: list[dict]) -> None:
        """Keep the periods this answer named for the next question's follow-ups (the last ones stay otherwise)."""
        named = named_periods(answer, tool_calls)
        if named is not None:
            self.night.named_periods = named

    def _usage(self) -> dict:
        """The turn's model calls and the backend's token counts (`TurnResult.usage`)."""
        return {"model_calls": self._guard.calls, **self._guard.usage}

    def _no_llm_reason(self) -> str:
        """Why there is no language model: none chosen, or the chosen one cannot run (and what to do)."""
        backend = self.llm_info.get("backend")
        if backend in (None, "none"):
            return NO_LLM_REASON
        return f"The {backend} language model is unavailable ({self.llm_info.get('detail')})"

    def _tool_end(self, call_id: str, message: ToolMessage, started: float, artifact: Any = None) -> tuple[dict, dict]:
        # The full result (the model read its compact view, `assistant.agent.compact_result`).
        result = parse_result(self._guard.full_results.pop(call_id, message.content))
        call = {"name": message.name, "args": {}, "result": result, "status": message.status}
        if artifact is not None:
            self._n_figures += 1
            artifact.savefig(self.workdir / f"figure-{self._n_figures}.png", dpi=100)
        event = {
            "type": "tool_end", "id": call_id, "name": message.name,
            "summary": result_summary(message.name, result, message.status),
            "duration_s": round(time.perf_counter() - started, 3), "artifact": artifact,
        }
        return call, event

    def _tool_only(self, question: str, audience: str, reason: str = NO_LLM_REASON,
                   failed: Sequence[dict] = ()) -> Iterator[dict]:
        """Answer with the keyword router's tools and their own write-up, saying why there is no LLM answer.

        `failed`: the language model's tool calls that ended in an error, reported when the
        router has no tool for the question."""
        calls, artifacts = [], []
        for index, (name, args) in enumerate(self.route(question, audience)):
            call_id = f"route_{index}"
            yield {"type": "tool_start", "id": call_id, "name": name, "args": args}
            started = time.perf_counter()
            message = run_tool(name, args, self.night, call_id, tools=self.TOOLS)
            call, event = self._tool_end(call_id, message, started, message.artifact)
            call["args"] = args
            calls.append(call)
            if event["artifact"] is not None:
                artifacts.append(event["artifact"])
            yield event
        if calls:
            answer = f"{reason}, so this is tool-only mode: the tools chosen by keyword say:\n{tool_writeup(calls)}"
        elif failed:
            answer = f"{reason}. The tools it called reported:\n{tool_writeup(failed)}"
        else:
            answer = f"{reason}. {OUT_OF_SCOPE}"
        yield {"type": "token", "text": answer}
        self._remember_periods(answer, calls)
        grounding = check_grounding(answer, [c["result"] for c in calls] + [question])
        yield {"type": "final", "turn": TurnResult(
            answer=answer, tool_calls=calls, grounding=grounding.to_dict(), llm={"backend": "none", "model": None},
            llm_messages=list(self._guard.sent), mode="tool-only", artifacts=artifacts, route="tool-only",
            usage=self._usage(),
        )}

    def _agent_turn(self, question: str) -> Iterator[dict]:
        config = {"configurable": {"thread_id": self._thread_id}, "recursion_limit": RECURSION_LIMIT}
        self._guard.start_turn()
        calls: dict[str, dict] = {}
        started: dict[str, float] = {}
        artifacts = []
        stream = self._agent.stream(
            {"messages": [HumanMessage(question)]}, config, context=self.night, stream_mode=["updates", "messages"]
        )
        try:
            yield from self._stream_events(stream, calls, started, artifacts)
        except GraphRecursionError:
            logger.warning("turn stopped at the graph recursion limit")
        except LLMBackendError as exc:  # the backend failed (connection, parsing...): answer without it
            logger.exception("language model backend failed")
            yield from self._tool_only(question, self.night.audience, reason=f"The language model failed ({exc.describe()})")
            return
        # Every call the model made, in order, with what was sent back; then those dropped over the limits.
        tool_calls = [{"name": c["name"], "args": c["args"], "result": c.get("result"), "status": c.get("status", "not run")}
                      for c in calls.values()] + list(self._guard.dropped)
        turn, problem = self._finish(question, config, tool_calls, artifacts)
        if turn is None:  # no tool result and the reply is unusable: the keyword router's tools answer
            yield from self._tool_only(question, self.night.audience,
                                       reason=f"The language model gave no usable answer ({problem})",
                                       failed=tool_calls)
            return
        yield {"type": "final", "turn": turn}

    def _stream_events(self, stream, calls: dict, started: dict, artifacts: list) -> Iterator[dict]:
        """Map LangGraph's ("updates" | "messages", chunk) stream to the session's event dicts."""
        for mode, chunk in stream:
            if mode == "messages":
                message, meta = chunk
                if meta.get("langgraph_node") == "model" and isinstance(message.content, str) and message.content:
                    yield {"type": "token", "text": message.content}
                continue
            for node, update in chunk.items():
                for message in (update or {}).get("messages", []) if isinstance(update, dict) else []:
                    if node == "model" and isinstance(message, AIMessage):
                        for tc in message.tool_calls:
                            # A refused call (malformed or oversized arguments) is traced with what the model gave.
                            args = self._guard.refused[tc["id"]][0] if tc["id"] in self._guard.refused else tc["args"]
                            calls[tc["id"]] = {"name": tc["name"], "args": args}
                            started[tc["id"]] = time.perf_counter()
                            yield {"type": "tool_start", "id": tc["id"], "name": tc["name"], "args": args}
                    elif node == "tools" and isinstance(message, ToolMessage):
                        call, event = self._tool_end(
                            message.tool_call_id, message, started.get(message.tool_call_id, time.perf_counter()),
                            self._guard.artifacts.pop(message.tool_call_id, None),
                        )
                        calls.setdefault(message.tool_call_id, {"name": message.name, "args": {}}).update(
                            result=call["result"], status=call["status"]
                        )
                        if event["artifact"] is not None:
                            artifacts.append(event["artifact"])
                        yield event

    def _finish(self, question: str, config: dict, tool_calls: list[dict],
                artifacts: list) -> tuple[TurnResult | None, str | None]:
        """Check the model's last message: (turn, problem). The turn keeps the answer (with a
        grounding note) or falls back to the tools' write-up; it is None when the answer is
        unusable and no tool gave a result (the caller then answers in tool-only mode)."""
        messages = self._agent.get_state(config).values.get("messages", [])
        last = messages[-1] if messages and isinstance(messages[-1], AIMessage) else None
        # Figures the user gave in the question are theirs, not invented by the model.
        sources = [c["result"] for c in tool_calls if c["status"] == "success"] + [question]
        # A runaway reply fails `answer_problem` by its length; only its start is read, so checking it stays quick.
        text = inert_markdown(last.text.strip()[: MAX_ANSWER_CHARS + 1]) if last is not None else ""
        grounding = check_grounding(text, sources)
        in_scope = bool(self.route(question))
        problem = answer_problem(last, grounding, tool_calls, in_scope=in_scope)
        if problem is None and not tool_calls and not in_scope and not is_refusal(text):
            # Off-topic, answered from the model's own knowledge: the product answers about the night only.
            answer, mode = OUT_OF_SCOPE, "agent"
        elif problem is None:
            answer, mode = complete_citations(text, sources) + consistency_note(tool_calls, text), "agent"
        elif any(c["status"] == "success" for c in tool_calls):
            answer, mode = f"{FALLBACK_LABEL}\n{tool_writeup(tool_calls)}", "fallback"
            logger.info("answer replaced by the tool write-up: %s", problem)
            # What is shown is the write-up (checked); which of the model's claims failed is kept.
            rejected = grounding
            grounding = check_grounding(answer, [c["result"] for c in tool_calls] + [question])
            grounding.failed = rejected.failed
            grounding.rejected = problem
        else:
            return None, problem
        if last is not None and answer != last.text:
            # Later turns see this turn as the user saw it: the checked answer, never the model's rejected draft.
            self._agent.update_state(config, {"messages": [AIMessage(content=answer, id=last.id)]})
        self._remember_periods(answer, tool_calls)
        return TurnResult(
            answer=answer, tool_calls=tool_calls, grounding=grounding.to_dict(),
            llm={"backend": self.llm_info.get("backend"), "model": self.llm_info.get("model")},
            llm_messages=list(self._guard.sent), mode=mode, artifacts=artifacts, route=self._guard.route,
            usage=self._usage(),
        ), problem
