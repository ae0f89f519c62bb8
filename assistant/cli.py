"""`sleeplm-assistant ask FILE "question"`: one question, answered and traced on the terminal.

FILE may also be two recordings of one person (measured as a two-night cohort first) or a folder
written by `sleeplm-assistant cohort` (questions across nights, `assistant.cohort.CohortSession`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from assistant.llm import parse_spec
from assistant.markup import inert_markdown
from sleeplm.model.checkpoint import CHECKPOINT_ENV
from assistant.session import NightSession, SessionError

__all__ = ["run_ask", "format_turn", "JSON_KEYS"]

# The --json object: exactly these keys (tool_calls carry name, args, result and status).
JSON_KEYS = ("answer", "tool_calls", "grounding", "llm", "llm_messages")


def format_turn(turn, session: NightSession) -> str:
    """Human-readable answer followed by the tool trace and the figures written."""
    lines = [turn.answer, "", f"[llm: {turn.llm.get('backend')} {turn.llm.get('model') or ''}".rstrip() + f"; mode: {turn.mode}]"]
    for call in turn.tool_calls:  # names and argument keys are the model's: printed inert (no terminal escapes)
        args = call["args"] if isinstance(call["args"], dict) else {"arguments": call["args"]}
        args = ", ".join(f"{inert_markdown(str(k))}={v!r}" for k, v in args.items())
        lines.append(f"[tool {inert_markdown(str(call['name']))}({args}) -> {call['status']}]")
    figures = sorted(session.workdir.glob("figure-*.png"))
    lines += [f"[figure: {path}]" for path in figures]
    if turn.grounding["unmatched"]:
        lines.append(f"[unverified figures: {', '.join(turn.grounding['unmatched'])}]")
    if turn.grounding.get("rejected"):
        lines.append(f"[the language model's answer was replaced: {turn.grounding['rejected']}]")
    return "\n".join(lines)


def _answer(args, session: NightSession):
    """Answer the question and print it (text, or one JSON object with --json); returns the turn."""
    turn = session.ask(args.question, audience=args.audience)
    if args.json:
        record = turn.to_dict()
        json.dump({key: record[key] for key in JSON_KEYS}, sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        print(format_turn(turn, session))
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
    default), ``audience``, ``json`` and optionally ``channel_map``/``position_map`` (parsed maps
    for `sleeplm.io.reader.load_recording`, see `sleeplm.io.channels.parse_channel_map`). Returns the
    exit status: 0, or 1 when answering met an internal error (a bug; the answer names the reference
    it is logged under). SleepLM is used when ``SLEEPLM_CHECKPOINT`` names a
    weights file (the global ``--checkpoint`` option sets it); its night embeddings are then
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
    # SleepLM only when weights were named (--checkpoint sets SLEEPLM_CHECKPOINT): without them,
    # or from the hub, one question would wait minutes for SleepLM staging on a CPU.
    checkpoint = os.environ.get(CHECKPOINT_ENV)
    session = NightSession(llm=args.llm, workdir=workdir, **({"model": checkpoint} if checkpoint else {}))
    try:
        # One question does not wait for, nor need, YASA's cross-check of a file's own scoring.
        rec = session.load(args.file, stage_cross_check=False, channel_map=getattr(args, "channel_map", None),
                           position_map=getattr(args, "position_map", None), annotations=getattr(args, "annotations", None))
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
