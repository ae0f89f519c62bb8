"""`sleeplm-assistant ask FILE "question"`: one question, answered and traced on the terminal."""

from __future__ import annotations

import json
import os
import sys
import tempfile

from assistant.llm import parse_spec
from sleeplm.model.checkpoint import CHECKPOINT_ENV
from assistant.session import NightSession

__all__ = ["run_ask", "format_turn", "JSON_KEYS"]

# The --json object: exactly these keys (tool_calls carry name, args, result and status).
JSON_KEYS = ("answer", "tool_calls", "grounding", "llm", "llm_messages")


def format_turn(turn, session: NightSession) -> str:
    """Human-readable answer followed by the tool trace and the figures written."""
    lines = [turn.answer, "", f"[llm: {turn.llm.get('backend')} {turn.llm.get('model') or ''}".rstrip() + f"; mode: {turn.mode}]"]
    for call in turn.tool_calls:
        args = ", ".join(f"{k}={v!r}" for k, v in call["args"].items())
        lines.append(f"[tool {call['name']}({args}) -> {call['status']}]")
    figures = sorted(session.workdir.glob("figure-*.png"))
    lines += [f"[figure: {path}]" for path in figures]
    if turn.grounding["unmatched"]:
        lines.append(f"[unverified figures: {', '.join(turn.grounding['unmatched'])}]")
    return "\n".join(lines)


def run_ask(args) -> int:
    """Run the `ask` subcommand: load FILE, answer the question, print text or one JSON object.

    `args` carries ``file``, ``question``, ``llm`` (backend spec or None for the configured
    default), ``audience`` and ``json``. Returns the exit status: 0, or 1 when answering met an
    internal error (a bug; the answer names the reference it is logged under). SleepLM is used when ``SLEEPLM_CHECKPOINT`` names a
    weights file (the global ``--checkpoint`` option sets it); its night embeddings are then
    computed (or read from the cache) before the question is answered. Figures are written to a folder that is kept (its
    path is printed) so they can be opened after the command ends.
    """
    if args.llm is not None:
        parse_spec(args.llm)  # a mistyped --llm is an error to fix (exit 2), not a silent tool-only answer
    workdir = tempfile.mkdtemp(prefix="sleeplm-ask-")
    # SleepLM only when weights were named (--checkpoint sets SLEEPLM_CHECKPOINT): without them,
    # or from the hub, one question would wait minutes for SleepLM staging on a CPU.
    checkpoint = os.environ.get(CHECKPOINT_ENV)
    session = NightSession(llm=args.llm, workdir=workdir, **({"model": checkpoint} if checkpoint else {}))
    try:
        # One question does not wait for, nor need, YASA's cross-check of a file's own scoring.
        rec = session.load(args.file, stage_cross_check=False)
        if session.sleeplm is not None:  # named weights: retrieval from SleepLM, not the measured fallback
            print(f"SleepLM is embedding {rec.n_epochs} epochs (kept in the cache for later questions)...", file=sys.stderr)
            session.wait_for_background(embeddings_only=True)
        turn = session.ask(args.question, audience=args.audience)
        if args.json:
            record = turn.to_dict()
            json.dump({key: record[key] for key in JSON_KEYS}, sys.stdout, ensure_ascii=False, default=str)
            sys.stdout.write("\n")
        else:
            print(format_turn(turn, session))
    finally:
        if not any(session.workdir.iterdir()):
            session.workdir.rmdir()
    return 1 if turn.mode == "error" else 0  # an internal error (a bug) is not a successful answer
