"""The question battery per local language model: right tool, grounded answer, citations, time, memory.

For each catalogue model present on this machine (its verified file in the model cache or the hub
cache, or its PyPI parts installed; nothing is downloaded unless ``--download``), a simulated night
is loaded and every question of the battery (`bench.grounding.BATTERY`) is asked with that model,
each model in its own process so memory figures do not mix. Per model:

- right tool: the first tool the agent ran is one the keyword router picks for the question
  (the tool-only reference, asked in the same process); of those, how many the router ran without
  a model call (a question whose tool is clear: `assistant.agent.sure_route`) and how many the
  model called itself (a routed question naming a part of the night gets its routed tool forced,
  and a call of another tool is replaced by it: `assistant.agent.routed_tool`);
- grounded: the model's own answer was kept (mode "agent": every figure matched the tool results
  by meaning; a "fallback" answer was replaced by the tools' write-up, "tool-only" means the model
  gave nothing usable);
- cites: of the questions whose reference answer cites a period, answers citing clock + elapsed +
  epochs;
- seconds per answer (mean, max); the mean is recorded (``models/speed.json``) for the automatic
  choice of ``--llm local``;
- memory: process RSS with the night loaded and no model, after loading the model, after the first
  answer and after the last (issue 15: the embedded model adds <= 2 GiB; for the models that
  cannot run here, the catalogue's declared figure is printed).

Run: ``nice .venv/bin/python bench/llm_battery.py [--models NAME ...] [--hours 1]
[--questions N] [--download]``; exits non-zero when a present model's run fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch's threads stay out of llama.cpp's way
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.local_llm import GIB  # noqa: E402  (after the path; imports no hub client)


def rss() -> dict:
    """Resident memory of this process in bytes: total, anonymous, file-backed (the mapped model file)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return {"total": fields["VmRSS"], "anon": fields.get("RssAnon", 0), "file": fields.get("RssFile", 0)}


class ReplacedCalls(logging.Handler):
    """Counts the agent's replacements of a model's call by the routed tool (its log records)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("routed question:")


def expectations(reference, questions: list[str]) -> list[tuple[set, bool]]:
    """Per question, (the tools the keyword router picks, whether the tool-only answer cites a period)
    from `reference`, a tool-only `NightSession` with the night loaded (its named periods are reset after)."""
    from sleeplm.terms import parse_citations

    expected = []
    for question in questions:
        tools = {name for name, _ in reference.route(question)}
        cites = any(c["clock_start"] for c in parse_citations(reference.ask(question).answer))
        expected.append((tools, cites))
    reference.reset()
    return expected


def battery_checks(turn, tools: set, cite_expected: bool) -> dict:
    """The battery's checks of one answer: right tool (the first tool run is one the router picks),
    grounded (the model's own answer was kept), cites (clock + elapsed + epochs), and passed (all
    three, cites only where the reference answer cites a period)."""
    from sleeplm.terms import parse_citations

    called = [c["name"] for c in turn.tool_calls]
    right = turn.mode in ("agent", "fallback") and bool(called) and called[0] in tools
    grounded = turn.mode == "agent" and not turn.grounding.get("unmatched")
    cites = any(c["clock_start"] for c in parse_citations(turn.answer))
    return {"called": called, "expected": sorted(tools), "right_tool": right, "grounded": grounded,
            "cite_expected": cite_expected, "cites": cites, "passed": right and grounded and (cites or not cite_expected)}


def run_one(key: str, hours: float, n_questions: int) -> dict:
    """The battery with one model, in this process."""
    from assistant.local_llm import default_threads, load_local_chat_model
    from assistant.session import NightSession
    from bench.grounding import BATTERY
    from sleeplm.synthetic import simulate_night, write_night

    questions = BATTERY[:n_questions]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_night(simulate_night(hours, seed=0, severity="moderate", sfreq=128), Path(tmp) / "night.edf")
        reference = NightSession(llm="none")
        reference.load(path, stage_cross_check=False)
        expected = expectations(reference, questions)
        session_night = NightSession(llm="none")
        session_night.load(path, stage_cross_check=False)
    memory = {"night": rss()}
    threads = default_threads()
    started = time.perf_counter()
    model, _ = load_local_chat_model(key, n_threads=threads)
    load_s = time.perf_counter() - started
    memory["loaded"] = rss()
    session = NightSession(llm=model)
    session.night = session_night.night
    replaced = ReplacedCalls()
    agent_log = logging.getLogger("assistant.agent")
    agent_log.addHandler(replaced)
    agent_log.setLevel(logging.INFO)
    rows = []
    for (tools, cites), question in zip(expected, questions):
        replaced.count = 0
        started = time.perf_counter()
        turn = session.ask(question)
        seconds = time.perf_counter() - started
        memory.setdefault("first_answer", rss())
        checks = battery_checks(turn, tools, cites)
        called = checks["called"]
        rows.append({"question": question, "mode": turn.mode, **checks, "replaced": replaced.count, "route": turn.route,
                     "seconds": round(seconds, 1)})
        print(f"  {key}: {question!r}: {turn.mode}, called {called or 'nothing'} "
              f"(reference {sorted(tools)}; {replaced.count} call(s) of another tool replaced), {seconds:.1f} s, "
              f"RSS {rss()['total'] / GIB:.2f} GiB", file=sys.stderr, flush=True)
    memory["last_answer"] = rss()
    for other in (session, session_night, reference):
        other.close()
    return {"model": key, "threads": threads, "load_s": round(load_s, 1), "rows": rows, "memory": memory}


def present(key: str) -> str | None:
    """None when the model's verified file can be had without network, else why not."""
    from assistant.local_llm import LocalModelUnavailable, ensure_model_file, require_llama_cpp

    try:
        require_llama_cpp()
    except LocalModelUnavailable as exc:
        return str(exc)
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the hub cache is read; nothing is downloaded
    try:
        ensure_model_file(key)
        return None
    except LocalModelUnavailable as exc:
        return str(exc)
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def summarise(result: dict) -> str:
    rows = result["rows"]
    n = len(rows)
    right = sum(r["right_tool"] for r in rows)
    own = sum(r["right_tool"] and not r["replaced"] and r["route"] != "router" for r in rows)
    routed = sum(r["route"] == "router" for r in rows)
    grounded = sum(r["grounded"] for r in rows)
    cite_n = sum(r["cite_expected"] for r in rows)
    cites = sum(r["cites"] for r in rows if r["cite_expected"])
    seconds = [r["seconds"] for r in rows]
    memory = result["memory"]
    base = memory["night"]["total"]
    added = {stage: (memory[stage]["total"] - base) / GIB for stage in ("loaded", "first_answer", "last_answer")}
    anon = (memory["last_answer"]["anon"] - memory["night"]["anon"]) / GIB
    return (f"{result['model']:20} right tool {right}/{n} ({routed} run by the router without a model call, {own} the "
            f"model's own call)   grounded {grounded}/{n}   cites clock+elapsed+epochs "
            f"{cites}/{cite_n}   {sum(seconds) / n:.1f} s per answer (max {max(seconds):.1f}, {result['threads']} threads, "
            f"load {result['load_s']:.1f} s)\n{'':20} RSS {base / GIB:.2f} GiB with the night; the model adds "
            f"{added['loaded']:.2f} GiB loaded, {added['first_answer']:.2f} after the first answer, "
            f"{added['last_answer']:.2f} after the last ({anon:.2f} GiB of it anonymous, the rest the mapped file)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="catalogue names (default: all)")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--questions", type=int, default=None, help="first N questions of the battery (default: all)")
    parser.add_argument("--download", action="store_true", help="download hub models that are not cached")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process: one model, JSON out
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if args.download else "1")  # before huggingface_hub is imported
    from assistant.local_llm import LOCAL_MODELS, LocalModelUnavailable, ensure_model_file, model_key, record_answer_seconds
    from bench.grounding import BATTERY

    n_questions = args.questions or len(BATTERY)
    if args.one:
        print(json.dumps(run_one(args.one, args.hours, n_questions)))
        return
    keys = [model_key(name) for name in args.models] if args.models else list(LOCAL_MODELS)
    absent, failed, results = {}, {}, []
    for key in keys:
        if args.download:
            try:
                ensure_model_file(key)
            except LocalModelUnavailable as exc:
                print(f"{key}: {exc}", file=sys.stderr)
        why = present(key)
        if why:
            absent[key] = why
            continue
        child = subprocess.run([sys.executable, __file__, "--one", key, "--hours", str(args.hours),
                                "--questions", str(n_questions)], stdout=subprocess.PIPE, text=True)
        if child.returncode != 0:
            failed[key] = f"the run failed (exit {child.returncode}; its log is above)"
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        results.append(result)
        mean = sum(r["seconds"] for r in result["rows"]) / len(result["rows"])
        record_answer_seconds(key, result["threads"], mean)
    print(f"\nquestion battery ({n_questions} questions, simulated {args.hours:g}-h night), per local model; "
          f"load average {os.getloadavg()[0]:.2f}")
    for result in results:
        print(summarise(result))
    for key, why in absent.items():
        model = LOCAL_MODELS[key]
        print(f"{key:20} absent here (declared RAM {model.ram_bytes / GIB:.0f} GiB, answer time "
              f"~{model.relative_time:g}x the 1.5B): {why}")
    for key, why in failed.items():
        print(f"{key:20} {why}")
    if failed:  # the table is printed; the command still fails
        sys.exit(f"the battery failed for {', '.join(failed)}")


if __name__ == "__main__":
    main()
