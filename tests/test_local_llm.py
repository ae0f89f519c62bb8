"""The embedded model: ChatML rendering, tool-call parsing, streaming, verified model files.

Everything but the last test runs without llama.cpp: the adapter is driven by a scripted
completion source standing in for llama.cpp's `create_completion`. The last test (slow) runs
the real Qwen2.5-Coder-1.5B when llama-cpp-python and the model parts are installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from assistant import local_llm
from assistant.local_llm import (
    GGUFModel, LlamaCppChatModel, LocalModelUnavailable, ModelChecksumError, assemble_parts, ensure_model_file,
    parse_model_output, part_files, render_prompt, verify_model_file,
)

# ----------------------------------------------------------------------------- tools like the agent's


@tool
def night_summary(audience: str = "clinician") -> dict:
    """Whole-night statistics: total sleep time, efficiency, minutes of each stage, AHI, oxygen, heart rate.
    Use for 'how did I sleep', 'how much deep sleep', 'what is my AHI'."""
    raise NotImplementedError("schema only")


@tool
def list_events(kind: str = "all", start: str | None = None, end: str | None = None) -> dict:
    """List measured events (apneas, hypopneas, oxygen desaturations, arousals, heart-rate episodes) with
    their clock times and epochs. kind: 'respiratory', 'desaturation', 'arousal', 'heart_rate' or 'all'.
    Use for 'when did breathing look abnormal', 'was my oxygen ever low'."""
    raise NotImplementedError("schema only")


@tool
def find_epochs(query: str, top_k: int = 5) -> dict:
    """Find the moments that best match a plain-words description ('REM with rapid eye movements',
    'loud snoring with desaturation') by SleepLM signal-text retrieval."""
    raise NotImplementedError("schema only")


@tool
def recording_overview() -> dict:
    """Describe the recording: duration, start clock time, channels present or missing."""
    raise NotImplementedError("schema only")


AGENT_LIKE_TOOLS = [recording_overview, night_summary, find_epochs, list_events]

# ----------------------------------------------------------------------------- rendering


def test_render_without_tools_uses_default_system_and_open_assistant_turn():
    assert render_prompt([HumanMessage("hi")]) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_render_with_tools_calls_and_grouped_results():
    schema = {"type": "function", "function": {"name": "list_events", "description": "d", "parameters": {}}}
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("apneas?"),
        AIMessage("", tool_calls=[
            {"name": "list_events", "args": {"kind": "apnea"}, "id": "1"},
            {"name": "night_summary", "args": {}, "id": "2"},
        ]),
        ToolMessage("3 apneas", tool_call_id="1"),
        ToolMessage("AHI 4.1", tool_call_id="2"),
        AIMessage("Three apneas."),
        HumanMessage("more?"),
    ]
    assert render_prompt(messages, [schema]) == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query."
        "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "list_events", "description": "d", "parameters": {}}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call>"
        ' XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\napneas?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "list_events", "arguments": {"kind": "apnea"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "night_summary", "arguments": {}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n3 apneas\n</tool_response>\n<tool_response>\nAHI 4.1\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nThree apneas.<|im_end|>\n<|im_start|>user\nmore?<|im_end|>\n<|im_start|>assistant\n"
    )


# ----------------------------------------------------------------------------- parsing


def test_parse_tagged_call_with_prose_around():
    out = parse_model_output('Let me look.\n<tool_call>\n{"name": "list_events", "arguments": {"kind": "respiratory"}}\n</tool_call>')
    assert out.content == "Let me look."
    assert [(c["name"], c["args"]) for c in out.tool_calls] == [("list_events", {"kind": "respiratory"})]
    assert out.tool_calls[0]["id"].startswith("call_") and out.invalid_tool_calls == []


def test_parse_several_tagged_calls_and_string_arguments():
    text = (
        '<tool_call>\n{"name": "night_summary", "arguments": "{\\"audience\\": \\"patient\\"}"}\n</tool_call>\n'
        '<tool_call>\n{"name": "list_events", "parameters": {"kind": "desaturation"}}\n</tool_call>'
    )
    out = parse_model_output(text)
    assert [(c["name"], c["args"]) for c in out.tool_calls] == [
        ("night_summary", {"audience": "patient"}), ("list_events", {"kind": "desaturation"}),
    ]
    assert len({c["id"] for c in out.tool_calls}) == 2 and out.content == ""


def test_parse_unclosed_tag_at_end_of_output():
    out = parse_model_output('<tool_call>\n{"name": "recording_overview", "arguments": {}}')
    assert [c["name"] for c in out.tool_calls] == ["recording_overview"]


def test_parse_malformed_tagged_call_becomes_invalid_not_prose():
    out = parse_model_output('<tool_call>\n{"name": "list_events", "arguments": {"kind": }\n</tool_call>')
    assert out.tool_calls == [] and out.content == ""
    assert out.invalid_tool_calls[0]["args"].startswith('{"name": "list_events"')
    assert "name and arguments" in out.invalid_tool_calls[0]["error"]


@pytest.mark.parametrize("text, expected", [
    ('{"name": "night_summary", "arguments": {"audience": "patient"}}', [("night_summary", {"audience": "patient"})]),
    ('```json\n{"name": "night_summary", "arguments": {}}\n```', [("night_summary", {})]),
    ('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]', [("a", {}), ("b", {"x": 1})]),
    ('{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {}}', [("a", {}), ("b", {})]),
    ('{"type": "function", "function": {"name": "a", "arguments": "{}"}}', [("a", {})]),
    # the 1.5B model copies the doubled braces of the template's example (seen on the demo night)
    ('{{"name": "list_events", "arguments": {"kind": "respiratory"}}}}', [("list_events", {"kind": "respiratory"})]),
    ('<tool_call>\n{{"name": "a", "arguments": {}}}\n</tool_call>', [("a", {})]),
])
def test_parse_bare_json_calls(text, expected):
    out = parse_model_output(text)
    assert [(c["name"], c["args"]) for c in out.tool_calls] == expected and out.content == ""


@pytest.mark.parametrize("text", [
    "You slept 6 h 12 min; deep sleep was 44 min.",
    '{"answer": "44 min"}',
    '{"name": "a", "arguments": {}} and then I would explain',
    "{not json at all",
    '{{"answer": "44 min"}}',
])
def test_parse_prose_and_non_call_json_stay_text(text):
    out = parse_model_output(text)
    assert out.tool_calls == [] and out.invalid_tool_calls == [] and out.content == text


# ----------------------------------------------------------------------------- the adapter, with scripted completions


class ScriptedCompletions:
    """Stands in for llama.cpp's `create_completion`: records prompts, returns scripted text in pieces."""

    def __init__(self, pieces: list[str]):
        self.pieces, self.prompts, self.kwargs = pieces, [], []
        self._input_ids, self.cache = np.array([], dtype=np.intc), None  # an empty context, no prompt cache

    def tokenize(self, data: bytes, special: bool = True) -> list[int]:
        return list(data)  # one token per byte

    def create_completion(self, prompt, stream=False, **kwargs):
        self.prompts.append(prompt)
        self.kwargs.append(kwargs)
        if stream:
            return iter([{"choices": [{"text": p, "finish_reason": None}]} for p in self.pieces]
                        + [{"choices": [{"text": "", "finish_reason": "stop"}]}])
        return {
            "choices": [{"text": "".join(self.pieces), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": len(self.pieces), "total_tokens": 11 + len(self.pieces)},
        }


@pytest.fixture
def scripted_llama(monkeypatch):
    def install(*pieces: str) -> tuple[LlamaCppChatModel, ScriptedCompletions]:
        completions = ScriptedCompletions(list(pieces))
        monkeypatch.setattr(local_llm, "_llama", lambda *args: (completions, threading.Lock()))
        return LlamaCppChatModel(model_path="scripted.gguf"), completions

    return install


def test_invoke_with_bound_tools_returns_tool_calls_and_usage(scripted_llama):
    model, completions = scripted_llama('<tool_call>\n{"name": "list_events", ', '"arguments": {"kind": "respiratory"}}\n</tool_call>')
    reply = model.bind_tools(AGENT_LIKE_TOOLS).invoke([HumanMessage("when did respiration look abnormal?")])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("list_events", {"kind": "respiratory"})]
    assert reply.usage_metadata == {"input_tokens": 11, "output_tokens": 2, "total_tokens": 13,
                                    "input_token_details": {"cache_read": 0}}
    prompt = completions.prompts[0]
    assert '"name": "list_events"' in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert completions.kwargs[0]["stop"] == ["<|im_end|>", "<|endoftext|>"] and completions.kwargs[0]["temperature"] == 0.0


def test_invoke_without_tools_offers_none(scripted_llama):
    model, completions = scripted_llama("Deep sleep was 44 min.")
    reply = model.invoke([HumanMessage("how much deep sleep?")])
    assert reply.content == "Deep sleep was 44 min." and reply.tool_calls == []
    assert "<tools>" not in completions.prompts[0]


@pytest.mark.parametrize("choice, opening, written, args", [
    ("any", '<|im_start|>assistant\n<tool_call>\n{"name": "', 'night_summary", "arguments": {}}\n</tool_call>', {}),
    # A named tool: its arguments' object is opened as well (after a bare `"arguments": ` the 1.5B wrote `0}`).
    ("night_summary", '<|im_start|>assistant\n<tool_call>\n{"name": "night_summary", "arguments": {', "}}\n</tool_call>", {}),
    ("night_summary", '"arguments": {', '"audience": "patient"}}\n</tool_call>', {"audience": "patient"}),
])
def test_tool_choice_opens_the_reply_with_a_call(scripted_llama, choice, opening, written, args):
    model, completions = scripted_llama(written)
    reply = model.bind_tools(AGENT_LIKE_TOOLS, tool_choice=choice).invoke([HumanMessage("how did I sleep?")])
    assert completions.prompts[0].endswith(opening)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("night_summary", args)]


def test_stream_prose_token_by_token(scripted_llama):
    model, _ = scripted_llama("\n", "You", " slept", " 6 h", " <", "3")
    chunks = list(model.stream([HumanMessage("how long did I sleep?")]))
    texts = [c.content for c in chunks if c.content]
    assert texts[:3] == ["You", " slept", " 6 h"]  # each arrives as it is generated
    assert "".join(texts) == "You slept 6 h <3"  # a '<' that does not become a tag is released at the end


def test_stream_never_shows_a_tool_call_as_text(scripted_llama):
    pieces = ["Checking", " now.", "\n<tool", '_call>\n{"name": "list_events",', ' "arguments": {"kind": "apnea"}}', "\n</tool_call>"]
    model, _ = scripted_llama(*pieces)
    chunks = list(model.bind_tools(AGENT_LIKE_TOOLS).stream([HumanMessage("apneas?")]))
    assert all("tool_call" not in c.content and "{" not in c.content for c in chunks)
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content.strip() == "Checking now."
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("list_events", {"kind": "apnea"})]


def test_stream_bare_json_call_becomes_a_tool_call(scripted_llama):
    model, _ = scripted_llama('{"name": "night_summary",', ' "arguments": {"audience": "patient"}}')
    chunks = list(model.stream([HumanMessage("summary")]))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == "" and [(c["name"], c["args"]) for c in merged.tool_calls] == [("night_summary", {"audience": "patient"})]


def test_stream_malformed_call_stays_invalid(scripted_llama):
    model, _ = scripted_llama('<tool_call>\n{"name": "list_events", "arguments": {"kind": ', "}\n</tool_call>")
    chunks = list(model.bind_tools(AGENT_LIKE_TOOLS).stream([HumanMessage("apneas?")]))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.tool_calls == [] and len(merged.invalid_tool_calls) == 1 and merged.content == ""


class StateCache:
    """The prompt cache's interface: states by token tuple."""

    def __init__(self):
        self.cache_state = {}

    def __setitem__(self, key, value):
        self.cache_state[tuple(key)] = value


class PrefixLlama(ScriptedCompletions):
    """llama.cpp's token bookkeeping: `eval` appends to the context from `n_tokens` on, a saved state is
    the context's tokens, the prompt cache maps token tuples to states."""

    def __init__(self, pieces: list[str]):
        self.pieces, self.prompts, self.kwargs = pieces, [], []
        self.ids, self.n_tokens, self.evaluated = [], 0, 0
        self.cache = StateCache()

    @property
    def _input_ids(self):
        return np.array(self.ids[: self.n_tokens], dtype=np.intc)

    def eval(self, tokens):
        self.ids = self.ids[: self.n_tokens] + list(tokens)
        self.n_tokens, self.evaluated = len(self.ids), self.evaluated + len(tokens)

    def save_state(self):
        return tuple(self.ids[: self.n_tokens])


@pytest.fixture
def prefix_llama(monkeypatch):
    llama = PrefixLlama(["Fine."])
    monkeypatch.setattr(local_llm, "_llama", lambda *args: (llama, threading.Lock()))
    monkeypatch.setattr(local_llm, "_WARMED", {})
    monkeypatch.setattr(local_llm, "_WAITING", {})
    return LlamaCppChatModel(model_path="scripted.gguf"), llama


def test_the_prompt_prefixes_are_evaluated_once_in_the_background_and_reused(prefix_llama):
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from assistant.agent import prompt_prefixes, system_prompt

    model, llama = prefix_llama
    prefixes = prompt_prefixes()
    model.warm_prompt_prefixes(prefixes).join(timeout=30)
    systems = [local_llm.render_system(text, [convert_to_openai_tool(t) for t in tools] or None) for text, tools in prefixes]
    assert sorted(llama.cache.cache_state) == sorted(tuple(text.encode()) for text in systems)  # one state per system turn
    # Each start is evaluated once: the patient answer prompt only past the text it shares with the clinician's.
    assert llama.evaluated < sum(len(text.encode()) for text in systems)
    assert model.warm_prompt_prefixes(prefixes) is None  # once per process: a second session starts nothing
    reply = model.invoke([SystemMessage(system_prompt("clinician")), HumanMessage("how did I sleep?")])
    assert reply.usage_metadata["input_token_details"]["cache_read"] >= len(systems[0].encode())


def test_the_warm_up_waits_while_a_question_waits(prefix_llama):
    from assistant.agent import prompt_prefixes

    model, llama = prefix_llama
    local_llm._WAITING[id(llama)] = 1  # a question holds or waits for the model
    thread = model.warm_prompt_prefixes(prompt_prefixes()[:1])
    thread.join(timeout=0.3)
    assert thread.is_alive() and llama.evaluated == 0
    local_llm._WAITING[id(llama)] = 0
    thread.join(timeout=30)
    assert not thread.is_alive() and llama.evaluated > 0


# ----------------------------------------------------------------------------- model files


def write_parts(folder: Path, blobs: list[bytes]) -> list[Path]:
    paths = []
    for index, blob in enumerate(blobs, start=1):
        path = folder / f"part{index:02d}.bin"
        path.write_bytes(blob)
        paths.append(path)
    return paths


BLOBS = [b"GGUF" + bytes(range(256)) * 40, b"middle part " * 500, b"tail"]
JOINED = b"".join(BLOBS)
JOINED_SHA = hashlib.sha256(JOINED).hexdigest()


def test_assemble_parts_in_order_verifies_and_stamps(tmp_path):
    parts = write_parts(tmp_path, BLOBS)
    dest = assemble_parts(parts, tmp_path / "model.gguf", JOINED_SHA, len(JOINED))
    assert dest.read_bytes() == JOINED
    assert json.loads((tmp_path / "model.gguf.verified.json").read_text())["sha256"] == JOINED_SHA


@pytest.mark.parametrize("order, size", [([1, 0, 2], len(JOINED)), ([0, 1, 2], len(JOINED) + 1)])
def test_assemble_parts_wrong_order_or_size_leaves_nothing(tmp_path, order, size):
    parts = write_parts(tmp_path, BLOBS)
    with pytest.raises(ModelChecksumError, match="reinstall the part packages"):
        assemble_parts([parts[i] for i in order], tmp_path / "model.gguf", JOINED_SHA, size)
    assert not (tmp_path / "model.gguf").exists() and not (tmp_path / "model.gguf.partial").exists()


def test_verify_deletes_a_corrupted_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(JOINED[:-1] + b"X")
    with pytest.raises(ModelChecksumError, match="was deleted"):
        verify_model_file(path, JOINED_SHA, len(JOINED))
    assert not path.exists()


def test_a_file_changed_after_verification_is_hashed_again(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(JOINED)
    verify_model_file(path, JOINED_SHA, len(JOINED))
    path.write_bytes(b"Y" + JOINED[1:])  # same size, new mtime: the stamp no longer vouches for it
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ModelChecksumError):
        verify_model_file(path, JOINED_SHA, len(JOINED))


@pytest.fixture
def fake_part_packages(tmp_path, monkeypatch):
    """Installs (on sys.path) distributions fakeparts-part1..3, each holding data/partNN.bin, and a model spec."""
    site = tmp_path / "site"
    for index, blob in enumerate(BLOBS, start=1):
        package = site / f"fakeparts_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "data" / f"part{index:02d}.bin").write_bytes(blob)
        info = site / f"fakeparts_part{index}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakeparts-part{index}\nVersion: 0.1.0\n")
        (info / "RECORD").write_text(f"fakeparts_part{index}/data/part{index:02d}.bin,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path / "cache"))
    spec = GGUFModel("Fake", "nobody/fake-GGUF", "fake.gguf", JOINED_SHA, len(JOINED), "fakeparts-part{index}", "0.1.0", 3)
    monkeypatch.setitem(local_llm.LOCAL_MODELS, "fake", spec)
    return spec


def test_ensure_model_file_assembles_from_installed_parts_then_reuses_it(fake_part_packages, tmp_path):
    assert [p.name for p in part_files(fake_part_packages)] == ["part01.bin", "part02.bin", "part03.bin"]
    path = ensure_model_file("fake")
    assert path == tmp_path / "cache" / "models" / "fake.gguf" and path.read_bytes() == JOINED
    mtime = path.stat().st_mtime_ns
    assert ensure_model_file("fake").stat().st_mtime_ns == mtime  # verified stamp: not rebuilt


def test_ensure_model_file_rebuilds_a_corrupted_cache(fake_part_packages):
    path = ensure_model_file("fake")
    path.write_bytes(b"Z" * len(JOINED))
    assert ensure_model_file("fake").read_bytes() == JOINED


def test_missing_parts_and_no_hub_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = GGUFModel("Absent", "nobody/absent-GGUF", "absent.gguf", "0" * 64, None, "sleeplm-absent-part{index}", "1.0", 2)
    monkeypatch.setitem(local_llm.LOCAL_MODELS, "absent", spec)
    with pytest.raises(LocalModelUnavailable) as error:
        ensure_model_file("absent")
    message = str(error.value)
    assert "2 of the 2 packages" in message and "make llm" in message and "sleeplm-absent-part1==1.0" in message
    assert "could not be downloaded from nobody/absent-GGUF" in message
    assert not list(tmp_path.glob("models/absent.gguf*"))


def test_without_llama_cpp_the_loader_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(LocalModelUnavailable, match="make llm"):
        local_llm.load_local_chat_model("1.5b")


def test_the_prompt_cache_keeps_the_newest_state_per_system_message():
    """Alternating tool-choice and answer prompts: a new state replaces the older one of its kind, so
    the other kind's state stays where llama-cpp-python's plain LRU cache would have dropped it."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llm)")
    from assistant.prompt_cache import PromptStateCache

    end = 9  # the end-of-message token
    tools, answer = (1, 2, end), (3, end)  # two system messages

    def state(size):
        return types.SimpleNamespace(llama_state_size=size)

    cache = PromptStateCache(capacity_bytes=250, end_of_message=end)
    cache[tools + (10, 11)] = first_tools = state(100)
    cache[answer + (10, 12)] = first_answer = state(100)
    assert cache[tools + (10, 11, 13)] is first_tools  # the next question's tool choice: longest prefix
    cache[tools + (10, 11, 13, 14)] = state(100)
    assert list(cache.cache_state) == [answer + (10, 12), tools + (10, 11, 13, 14)] and cache.cache_size == 200
    assert cache[answer + (10, 12, 15)] is first_answer
    cache[(5, end)] = state(100)  # a third kind: over the capacity, the least recently used goes
    assert list(cache.cache_state) == [answer + (10, 12), (5, end)]


def test_the_battery_fails_when_a_models_run_fails(monkeypatch, capsys):
    """`bench/llm_battery.py` prints its table and still exits non-zero when a present model's run fails."""
    import subprocess

    from bench import llm_battery

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(llm_battery, "present", lambda key: None)
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: subprocess.CompletedProcess(args, 3, stdout=""))
    monkeypatch.setattr(sys, "argv", ["llm_battery.py", "--models", "1.5b", "--questions", "1"])
    with pytest.raises(SystemExit) as exited:
        llm_battery.main()
    assert exited.value.code == "the battery failed for qwen2.5-1.5b-coder"
    out = capsys.readouterr().out
    assert "question battery (1 questions" in out and "the run failed (exit 3" in out
    # Right tool counts what the agent ran; how many of those were the model's own call is said beside it.
    row = {"grounded": True, "cite_expected": False, "cites": False, "seconds": 2.0}
    memory = {stage: {"total": gib * local_llm.GIB, "anon": 0} for stage, gib in
              (("night", 1), ("loaded", 2), ("first_answer", 2), ("last_answer", 2))}
    table = llm_battery.summarise({"model": "m", "threads": 2, "load_s": 1.0, "memory": memory, "rows": [
        {**row, "right_tool": True, "replaced": 1, "route": "model-forced"}, {**row, "right_tool": True, "replaced": 0, "route": "model"},
        {**row, "right_tool": True, "replaced": 0, "route": "router"}, {**row, "right_tool": False, "replaced": 0, "route": "model"}]})
    assert "right tool 3/4 (1 run by the router without a model call, 1 the model's own call)" in table


@pytest.mark.parametrize("amx", [True, False])
def test_cpus_listing_amx_load_without_extra_buffer_types(monkeypatch, amx):
    """On AMX CPUs llama.cpp's AMX buffers crashed (SIGILL): those load with use_extra_bufts off, others as is."""
    seen = []
    c_api = types.ModuleType("llama_cpp.llama_cpp")
    c_api.llama_model_default_params = lambda: types.SimpleNamespace(use_extra_bufts=True)

    class FakeLlama:
        _logits_all = False

        def __init__(self, **kwargs):
            seen.append(c_api.llama_model_default_params().use_extra_bufts)

        def n_vocab(self):
            return 8

        def tokenize(self, text, add_bos, special):
            return [7] if (text, add_bos, special) == (b"<|im_end|>", False, True) else [1, 2]

        def set_cache(self, cache):
            self.cache = cache

    class FakeRAMCache:
        def __init__(self, capacity_bytes):
            self.capacity_bytes = capacity_bytes

    package = types.ModuleType("llama_cpp")
    package.Llama, package.LlamaRAMCache, package.llama_cpp = FakeLlama, FakeRAMCache, c_api
    monkeypatch.setitem(sys.modules, "llama_cpp", package)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_cpp", c_api)
    monkeypatch.delitem(sys.modules, "assistant.prompt_cache", raising=False)  # imported anew over the fake package
    monkeypatch.setattr(local_llm, "amx_advertised", lambda: amx)
    monkeypatch.setattr(local_llm, "_LOADED", {})
    llama, _ = local_llm._llama("fake.gguf", 2, 512)
    assert seen == [not amx]
    assert llama.scores.shape == (1, 8)  # the unused score table is one row (saved states copy it)
    assert (llama.cache.capacity_bytes, llama.cache.end_of_message) == (local_llm.STATE_CACHE_BYTES, 7)
    assert c_api.llama_model_default_params().use_extra_bufts  # the library's defaults are restored


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def real_local_model():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llm)")
    try:
        model, _ = local_llm.load_local_chat_model("1.5b", n_threads=2)
    except LocalModelUnavailable as exc:
        pytest.skip(f"embedded model not available: {exc}")
    return model


@pytest.mark.slow
def test_real_model_template_matches_the_one_inside_the_gguf(real_local_model):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from langchain_core.utils.function_calling import convert_to_openai_tool

    llama, _ = local_llm._llama(real_local_model.model_path, real_local_model.n_threads, real_local_model.n_ctx)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value, **_: json.dumps(value, ensure_ascii=False)
    template = env.from_string(llama.metadata["tokenizer.chat_template"])
    tools = [convert_to_openai_tool(t) for t in AGENT_LIKE_TOOLS]
    conversation = [
        {"role": "system", "content": "Answer from tool results."},
        {"role": "user", "content": "apneas?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "list_events", "arguments": {"kind": "apnea"}}}]},
        {"role": "tool", "content": "3 apneas"},
    ]
    messages = [
        SystemMessage("Answer from tool results."), HumanMessage("apneas?"),
        AIMessage("", tool_calls=[{"name": "list_events", "args": {"kind": "apnea"}, "id": "1"}]),
        ToolMessage("3 apneas", tool_call_id="1"),
    ]
    for offered in (tools, None):
        expected = template.render(messages=conversation, tools=offered, add_generation_prompt=True)
        assert render_prompt(messages, offered) == expected


@pytest.mark.slow
def test_real_model_calls_the_right_tool(real_local_model):
    system = SystemMessage("You answer questions about one night of sleep recording. Use the tools; never guess numbers.")
    reply = real_local_model.bind_tools(AGENT_LIKE_TOOLS).invoke([system, HumanMessage("when did respiration look abnormal?")])
    assert [c["name"] for c in reply.tool_calls] == ["list_events"]
    assert reply.tool_calls[0]["args"].get("kind") in ("respiratory", "all", "apnea")
    answer = real_local_model.invoke([
        system, HumanMessage("when did respiration look abnormal?"), reply,
        ToolMessage("Obstructive apneas from 23:33:30 to 23:41:00 (epochs 7-22).", tool_call_id=reply.tool_calls[0]["id"]),
    ])
    assert answer.tool_calls == [] and "23:33" in answer.content
    # The saved prompt states hold their KV cells, not llama-cpp-python's unused score table
    # (n_batch x vocabulary floats, ~300 MiB per state for this model).
    llama, _ = local_llm._llama(real_local_model.model_path, real_local_model.n_threads, real_local_model.n_ctx)
    states = list(llama.cache.cache_state.values())
    assert states and all(state.scores.nbytes <= 4 * llama.n_vocab() for state in states)
