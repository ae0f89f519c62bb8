"""Which language model answers: backend specs, configuration and a status the UI can show.

A backend spec is one string:

- ``"local"``: the embedded llama.cpp model chosen for this machine (free memory, answer-time
  budget), ``"local:NAME"`` one of the catalogue (``qwen2.5-7b-instruct``, ``qwen2.5-3b-instruct``,
  ``qwen2.5-1.5b-coder``, ``qwen2.5-0.5b-coder``; see `assistant.local_llm`); no conversation
  text leaves the computer (a hub model's file is downloaded once, on first use);
- ``"openai:<model>"`` or ``"openai:<model>@http://host:port/v1"``: any OpenAI-compatible server
  (vLLM, llama.cpp server, LM Studio, OpenAI itself) through langchain-openai;
- ``"ollama:<model>"`` or ``"ollama:<model>@http://host:11434"``: Ollama through langchain-ollama;
- ``"none"``: no language model; the assistant answers in its labelled tool-only mode.

The spec comes from the argument (CLI ``--llm``), else the ``SLEEPLM_LLM`` environment variable,
else the ``[llm]`` table of a TOML file (``$SLEEPLM_CONFIG``, else
``~/.config/sleeplm-assistant/llm.toml``)::

    [llm]
    spec = "openai:qwen2.5-7b-instruct"
    base_url = "http://127.0.0.1:8000/v1"   # optional, openai/ollama
    api_key_env = "VLLM_API_KEY"            # optional: name of the variable holding the key

else ``"local"``. `get_chat_model` never raises for a backend that cannot be used: it returns
``(None, status)`` whose ``detail`` says what to install or configure.

Privacy: the chat models built here are the only places where text leaves the process; the
status probes send no conversation text (they only list the server's models).
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel

from assistant.errors import LLMConfigError

__all__ = [
    "BACKENDS", "DEFAULT_SPEC", "LLMConfigError", "LLMStatus", "BackendSpec", "config_path", "read_config",
    "resolve_spec", "parse_spec", "prepare_backend", "get_chat_model",
]

logger = logging.getLogger(__name__)

BACKENDS = ("local", "openai", "ollama", "none")
DEFAULT_SPEC = "local"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
# Local servers (vLLM, llama.cpp, LM Studio) accept any key, but the OpenAI client insists on one.
PLACEHOLDER_API_KEY = "not-needed"
PROBE_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 120.0


@dataclass
class LLMStatus:
    """What the assistant's language model is, and whether it can be used.

    Attributes
    ----------
    backend : "local", "openai", "ollama" or "none".
    model : model name (None when there is no model).
    available : True when the returned chat model can be called.
    detail : one or two sentences for the UI: where the model runs, or what to install/configure.
    """

    backend: str
    model: str | None
    available: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BackendSpec:
    """A parsed spec, with the base URL and API key variable filled in from configuration."""

    backend: str
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None


def config_path() -> Path:
    """The configuration file consulted when neither argument nor ``SLEEPLM_LLM`` gives a spec."""
    explicit = os.environ.get("SLEEPLM_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return Path("~/.config/sleeplm-assistant/llm.toml").expanduser()


def read_config(path: str | Path | None = None) -> dict:
    """The ``[llm]`` table of the configuration file ({} when there is no file).

    Raises
    ------
    LLMConfigError : the file is not valid TOML or its ``[llm]`` table has unknown keys.
    """
    path = Path(path) if path is not None else config_path()
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("llm", {})
    except tomllib.TOMLDecodeError as exc:
        raise LLMConfigError(f"The LLM configuration file {path} is not valid TOML ({exc}); fix or delete it.") from exc
    unknown = set(table) - {"spec", "base_url", "api_key_env"}
    if not isinstance(table, dict) or unknown:
        raise LLMConfigError(
            f"The [llm] table of {path} has unknown keys {sorted(unknown)}; allowed: spec, base_url, api_key_env."
        )
    return table


def parse_spec(spec: str) -> BackendSpec:
    """Split a spec string into backend, model and base URL (``@http...`` suffix).

    Examples
    --------
    >>> parse_spec("ollama:qwen2.5:7b")
    BackendSpec(backend='ollama', model='qwen2.5:7b', base_url=None, api_key_env=None)
    >>> parse_spec("openai:qwen@http://127.0.0.1:8000/v1").base_url
    'http://127.0.0.1:8000/v1'
    """
    text = spec.strip()
    backend, _, rest = text.partition(":")
    backend = backend.lower()
    if backend not in BACKENDS:
        raise LLMConfigError(
            f"Unknown LLM backend {backend!r} in {spec!r}; use local[:NAME], openai:<model>[@<url>], "
            "ollama:<model>[@<url>] or none."
        )
    model, base_url = rest, None
    head, at, tail = rest.rpartition("@")
    if at and tail.startswith(("http://", "https://")):
        model, base_url = head, tail.rstrip("/")
    model = model.strip() or None
    if backend == "none":
        return BackendSpec("none")
    if backend == "local":  # no name: chosen for this machine when the model is built
        from assistant.local_llm import model_key

        try:
            return BackendSpec("local", model_key(model) if model else None)
        except KeyError as exc:
            raise LLMConfigError(exc.args[0]) from exc
    if model is None:
        raise LLMConfigError(f"{spec!r} names no model; write {backend}:<model>, e.g. {backend}:qwen2.5:7b.")
    return BackendSpec(backend, model, base_url)


def resolve_spec(spec: str | None = None) -> BackendSpec:
    """The spec in force: argument, else ``SLEEPLM_LLM``, else the config file, else ``"local"``.

    The config file's ``base_url`` and ``api_key_env`` apply when its spec is the one in force
    or names the same backend.
    """
    config = read_config()
    chosen = spec or os.environ.get("SLEEPLM_LLM") or config.get("spec") or DEFAULT_SPEC
    parsed = parse_spec(chosen)
    configured_backend = parse_spec(config["spec"]).backend if config.get("spec") else None
    if configured_backend == parsed.backend:
        parsed = BackendSpec(
            parsed.backend, parsed.model, parsed.base_url or config.get("base_url"), config.get("api_key_env")
        )
    return parsed


def get_chat_model(spec: str | None = None) -> tuple[BaseChatModel | None, LLMStatus]:
    """A LangChain chat model for the configured backend, and its status.

    Parameters
    ----------
    spec : backend spec (see module docstring); None for the configured default.

    Returns
    -------
    (model, status) : model is None whenever ``status.available`` is False; ``status.detail``
        then says what to install or configure. Never raises for an unusable backend.
    """
    try:
        parsed = resolve_spec(spec)
    except LLMConfigError as exc:
        return None, LLMStatus(backend=str(spec or "configured"), model=None, available=False, detail=str(exc))
    builders = {"none": _no_model, "local": _local_model, "openai": _openai_model, "ollama": _ollama_model}
    model, status = builders[parsed.backend](parsed)
    logger.info("LLM backend %s (%s): %s", status.backend, status.model, status.detail)
    return model, status


def _no_model(spec: BackendSpec) -> tuple[None, LLMStatus]:
    return None, LLMStatus("none", None, False, "No language model configured: the assistant answers in tool-only mode.")


def prepare_backend(spec: str | None = None, progress: Any = None) -> tuple[str | None, str]:
    """(the spec to build the model from, one line saying what it is) before a server starts.

    For the embedded backend the model is chosen now and its file fetched (a hub download shows
    its progress; an unreachable hub costs seconds and leaves the offline 1.5B), and the spec
    returned names it, so every later `get_chat_model` loads that one. Other specs come back
    unchanged. Never raises: a problem is in the line, and `get_chat_model` reports it again.
    """
    try:
        parsed = resolve_spec(spec)
    except LLMConfigError as exc:
        return spec, f"language model: {exc}"
    if parsed.backend != "local":
        return spec, f"language model: {parsed.backend}{':' + parsed.model if parsed.model else ''}"
    from assistant import local_llm

    try:
        key, why = local_llm.prepare_local_model(parsed.model, progress)
    except (local_llm.LocalModelUnavailable, OSError) as exc:  # OSError: unwritable cache folder, full disk
        return spec, f"language model: the embedded model is unavailable ({exc})"
    return f"local:{key}", f"language model: embedded {why}"


def _local_model(spec: BackendSpec) -> tuple[BaseChatModel | None, LLMStatus]:
    from assistant import local_llm

    name = local_llm.LOCAL_MODELS[spec.model].display_name if spec.model else "embedded model"
    try:
        key, why = local_llm.prepare_local_model(spec.model)
        model, seconds = local_llm.load_local_chat_model(key)
    except (local_llm.LocalModelUnavailable, OSError) as exc:  # OSError: unwritable cache folder, full disk
        return None, LLMStatus("local", name, False, str(exc))
    detail = (f"Embedded llama.cpp on this computer: {why}; {model.n_threads} threads, loaded in {seconds:.1f} s. "
              "Nothing leaves it.")
    return model, LLMStatus("local", model.model_name, True, detail)


def _probe(url: str, headers: dict | None = None) -> tuple[httpx.Response | None, str]:
    """GET a status URL; (response, "") or (None, why it failed). Sends no conversation text."""
    try:
        return httpx.get(url, headers=headers or {}, timeout=PROBE_TIMEOUT_S), ""
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _openai_model(spec: BackendSpec) -> tuple[BaseChatModel | None, LLMStatus]:
    base_url = spec.base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get(spec.api_key_env or "OPENAI_API_KEY")
    if not base_url and not api_key:
        return None, LLMStatus(
            "openai", spec.model, False,
            "No OpenAI-compatible server configured: give one as openai:<model>@http://host:port/v1 "
            "(or set OPENAI_BASE_URL), or set OPENAI_API_KEY for the hosted service.",
        )
    base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
    api_key = api_key or PLACEHOLDER_API_KEY
    response, error = _probe(f"{base_url}/models", {"Authorization": f"Bearer {api_key}"})
    if response is None:
        return None, LLMStatus(
            "openai", spec.model, False,
            f"No OpenAI-compatible server answers at {base_url} ({error}); start it or fix the URL.",
        )
    if response.status_code in (401, 403):
        return None, LLMStatus(
            "openai", spec.model, False,
            f"The server at {base_url} refused the API key (HTTP {response.status_code}); set the right key in "
            f"{spec.api_key_env or 'OPENAI_API_KEY'}.",
        )
    detail = f"OpenAI-compatible server at {base_url}."
    served = _listed_models(response, "data", "id")
    if served and spec.model not in served:
        detail += f" It does not list {spec.model!r} (it lists {', '.join(sorted(served)[:5])}); requests may fail."
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        model=spec.model, base_url=base_url, api_key=api_key, temperature=0.0,
        timeout=REQUEST_TIMEOUT_S, max_retries=1,
    )
    return model, LLMStatus("openai", spec.model, True, detail)


def _ollama_model(spec: BackendSpec) -> tuple[BaseChatModel | None, LLMStatus]:
    base_url = spec.base_url or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_URL
    if not base_url.startswith(("http://", "https://")):
        base_url = f"http://{base_url}"
    base_url = base_url.rstrip("/")
    response, error = _probe(f"{base_url}/api/tags")
    if response is None or response.status_code != 200:
        why = error or f"HTTP {response.status_code}"
        return None, LLMStatus(
            "ollama", spec.model, False,
            f"Ollama is not running at {base_url} ({why}): install Ollama, run `ollama serve` and "
            f"`ollama pull {spec.model}`, or set OLLAMA_HOST.",
        )
    pulled = _listed_models(response, "models", "name")
    wanted = spec.model if ":" in spec.model else f"{spec.model}:latest"
    if wanted not in pulled and spec.model not in pulled:
        return None, LLMStatus(
            "ollama", spec.model, False, f"Ollama at {base_url} does not have {spec.model!r}: run `ollama pull {spec.model}`."
        )
    from langchain_ollama import ChatOllama

    model = ChatOllama(model=spec.model, base_url=base_url, temperature=0.0)
    return model, LLMStatus("ollama", spec.model, True, f"Ollama at {base_url}.")


def _listed_models(response: httpx.Response, list_key: str, name_key: str) -> set[str]:
    """Model names from a model-list answer ({} when the answer is not such a list)."""
    try:
        entries = response.json().get(list_key) or []
        return {str(entry[name_key]) for entry in entries if isinstance(entry, dict) and name_key in entry}
    except (ValueError, AttributeError):
        return set()
