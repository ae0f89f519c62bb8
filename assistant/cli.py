"""`sleeplm-assistant ask FILE "question"`: one question, answered and traced on the terminal.

FILE may also be two recordings of one person (measured as a two-night cohort first) or a folder
written by `sleeplm-assistant cohort` (questions across nights, `assistant.cohort.CohortSession`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from assistant.llm import parse_spec
from assistant.markup import inert_markdown
from sleeplm.model.checkpoint import CHECKPOINT_ENV
from assistant.session import NightSession, SessionError
from sleeplm.measure.rules import DEFAULT_RULE

__all__ = ["run_ask", "format_turn", "format_trace", "stream_turn", "JSON_KEYS"]

# The --json object: exactly these keys (tool_calls carry name, args, result and status).
JSON_KEYS = ("answer", "tool_calls", "grounding", "llm", "llm_messages")


# Control characters (terminal escapes, carriage returns) never reach the terminal from the model's text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _call_text(name: Any, args: Any) -> str:
    """``name(key=value, ...)`` with the model's names and keys printed inert (no terminal escapes)."""
    args = args if isinstance(args, dict) else {"arguments": args}
    return f"{inert_markdown(str(name))}({', '.join(f'{inert_markdown(str(k))}={v!r}' for k, v in args.items())})"


def format_trace(turn, session: NightSession) -> str:
    """The lines after the answer: backend and mode, the route and model calls, the tool trace, the figures written."""
    usage = turn.usage
    lines = [f"[llm: {turn.llm.get('backend')} {turn.llm.get('model') or ''}".rstrip() + f"; mode: {turn.mode}]",
             f"[route: {turn.route}; {usage['model_calls']} model call(s); prompt {usage['input_tokens']} tokens "
             f"({usage['cache_read']} reused from the prefix cache), answer {usage['output_tokens']} tokens]"]
    for call in turn.tool_calls:
        lines.append(f"[tool {_call_text(call['name'], call['args'])} -> {call['status']}]")
    figures = sorted(session.workdir.glob("figure-*.png"))
    lines += [f"[figure: {path}]" for path in figures]
    if turn.grounding["unmatched"]:
        lines.append(f"[unverified figures: {', '.join(turn.grounding['unmatched'])}]")
    if turn.grounding.get("rejected"):
        lines.append(f"[the language model's answer was replaced: {turn.grounding['rejected']}]")
    return "\n".join(lines)


def format_turn(turn, session: NightSession) -> str:
    """Human-readable answer followed by the trace (`format_trace`)."""
    return f"{turn.answer}\n\n{format_trace(turn, session)}"


def stream_turn(session: NightSession, question: str, audience: str, out=None):
    """Answer on the terminal as it happens: each tool step when it is chosen and when it ends, the
    answer as the model writes it, then the trace; returns the turn.

    The checked answer replaces what was streamed when they differ (citations completed, or the
    tools' write-up after a failed check): it is printed after a line saying so.
    """
    out = out or sys.stdout
    streamed, turn = [], None
    for event in session.ask_stream(question, audience=audience):
        if event["type"] == "tool_start":
            print(f"[tool {_call_text(event['name'], event['args'])} ...]", file=out, flush=True)
        elif event["type"] == "tool_end":
            print(f"[tool {inert_markdown(str(event['name']))} done in {event['duration_s']:.2f} s: "
                  f"{_CONTROL.sub('', inert_markdown(event['summary']))}]", file=out, flush=True)
        elif event["type"] == "token":
            text = _CONTROL.sub("", event["text"])
            streamed.append(text)
            out.write(text)
            out.flush()
        elif event["type"] == "final":
            turn = event["turn"]
    shown = "".join(streamed).strip()
    if turn.answer.strip() != shown:
        if shown:
            why = turn.grounding.get("rejected")
            print(f"\n\n[{'the answer above failed the check (' + why + '); instead' if why else 'the checked answer'}:]",
                  file=out)
        print(turn.answer, file=out, end="")
    print(f"\n\n{format_trace(turn, session)}", file=out, flush=True)
    return turn


def _answer(args, session: NightSession):
    """Answer the question: streamed to the terminal (`stream_turn`), or one JSON object with --json; returns the turn."""
    if not args.json:
        return stream_turn(session, args.question, args.audience)
    turn = session.ask(args.question, audience=args.audience)
    record = turn.to_dict()
    json.dump({key: record[key] for key in JSON_KEYS}, sys.stdout, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
    return turn


def _ask_cohort(args, files: list[str]) -> int:
    """A question across nights: a cohort folder, or two recordings measured first (on local Ray)."""
    from assistant.cohort import CohortSession

    workdir = Path(tempfile.mkdtemp(prefix="sleeplm-ask-"))
    session = CohortSession(llm=args.llm, workdir=workdir)
    try:
        if len(files) == 2:
            print("Measuring the two nights on Ray (night 1, night 2)...", file=sys.stderr)
            session.load_nights(files)
        else:
            session.load(files[0])
        turn = _answer(args, session)
    finally:
        if not any(path.name.startswith("figure-") for path in workdir.iterdir()):
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if turn.mode == "error" else 0


def run_ask(args) -> int:
    """Run the `ask` subcommand: load FILE, answer the question, print text or one JSON object.

    `args` carries ``file``, ``question``, ``llm`` (backend spec or None for the configured
    default), ``audience``, ``json`` and optionally ``rule`` (the scoring rule, `sleeplm.measure.rules`), ``channel_map``/``position_map`` (parsed maps
    for `sleeplm.io.reader.load_recording`, see `sleeplm.io.channels.parse_channel_map`). Returns the
    exit status: 0, or 1 when answering met an internal error (a bug; the answer names the reference
    it is logged under). SleepLM is used when ``checkpoint`` (the global ``--checkpoint`` option), else
    ``$SLEEPLM_CHECKPOINT``, names a weights file, loaded in ``precision`` (``--precision``, default auto,
    which reads ``$SLEEPLM_PRECISION``); its night embeddings are then
    computed (or read from the cache) before the question is answered. Figures are written to a folder that is kept (its
    path is printed) so they can be opened after the command ends.
    """
    if args.llm is not None:
        parse_spec(args.llm)  # a mistyped --llm is an error to fix (exit 2), not a silent tool-only answer
    files = args.file if isinstance(args.file, list) else [args.file]
    if any(not str(path).strip() for path in files):  # Path("") is the current folder: never a cohort by accident
        raise SessionError("ask got an empty path; give a recording (EDF/EDF+/BDF or .pt tensor), two recordings "
                           "of one person, or a folder written by `sleeplm-assistant cohort`.")
    if len(files) > 2:
        raise SessionError("ask takes one recording, two recordings of one person, or one cohort folder; "
                           f"got {len(files)} paths. Run `sleeplm-assistant cohort` over more nights first.")
    if len(files) == 2 or Path(files[0]).is_dir():
        return _ask_cohort(args, files)
    args.file = files[0]
    workdir = tempfile.mkdtemp(prefix="sleeplm-ask-")
    # SleepLM only when weights were named (--checkpoint, else $SLEEPLM_CHECKPOINT): without them,
    # or from the hub, one question would wait minutes for SleepLM staging on a CPU.
    checkpoint = getattr(args, "checkpoint", None) or os.environ.get(CHECKPOINT_ENV)
    weights = {"model": checkpoint, "precision": getattr(args, "precision", None) or "auto"} if checkpoint else {}
    session = NightSession(llm=args.llm, workdir=workdir, **weights)
    try:
        # One question does not wait for, nor need, YASA's cross-check of a file's own scoring.
        rec = session.load(args.file, stage_cross_check=False, channel_map=getattr(args, "channel_map", None),
                           position_map=getattr(args, "position_map", None), annotations=getattr(args, "annotations", None),
                           scoring=getattr(args, "scoring", "technician"), rule=getattr(args, "rule", DEFAULT_RULE))
        if session.sleeplm is not None:  # named weights: retrieval from SleepLM, not the measured fallback
            print(session.sleeplm_status, file=sys.stderr)
            print(f"SleepLM is embedding {rec.n_epochs} epochs (kept in the cache for later questions)...", file=sys.stderr)
            session.wait_for_background(embeddings_only=True)
        turn = _answer(args, session)
    finally:
        session.close()  # SleepLM staging stops at its next batch: the process exits cleanly, not inside torch
        if not any(session.workdir.iterdir()):
            session.workdir.rmdir()
    return 1 if turn.mode == "error" else 0  # an internal error (a bug) is not a successful answer
