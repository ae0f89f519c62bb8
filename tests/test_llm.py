"""Backend selection and status: spec parsing, configuration precedence, and each backend for real
against servers started here on 127.0.0.1 (an OpenAI-compatible one and an Ollama-like one)."""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool

from assistant.llm import BackendSpec, LLMConfigError, LLMStatus, get_chat_model, parse_spec, resolve_spec


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    """No user configuration or OpenAI/Ollama variables leak into these tests."""
    for name in ("SLEEPLM_LLM", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "llm.toml"
    monkeypatch.setenv("SLEEPLM_CONFIG", str(config))
    return config


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- specs and configuration


@pytest.mark.parametrize("spec, expected", [
    ("none", BackendSpec("none")),
    ("local", BackendSpec("local", None)),  # chosen for the machine when the model is built
    ("LOCAL:0.5B", BackendSpec("local", "qwen2.5-0.5b-coder")),
    ("local:Qwen2.5-7B-Instruct", BackendSpec("local", "qwen2.5-7b-instruct")),
    ("ollama:qwen2.5:7b", BackendSpec("ollama", "qwen2.5:7b")),
    ("ollama:qwen2.5:7b@http://10.0.0.2:11434/", BackendSpec("ollama", "qwen2.5:7b", "http://10.0.0.2:11434")),
    ("openai:gpt-4o-mini", BackendSpec("openai", "gpt-4o-mini")),
    ("openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1", BackendSpec("openai", "Qwen/Qwen2.5-7B-Instruct", "http://127.0.0.1:8000/v1")),
])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("gpt4", "Unknown LLM backend 'gpt4'"),
    ("local:13b", "Unknown embedded model '13b'"),
    ("openai:", "names no model"),
    ("ollama:@http://127.0.0.1:11434", "names no model"),
])
def test_bad_specs_are_explained(spec, message):
    with pytest.raises(LLMConfigError, match=message):
        parse_spec(spec)
    model, status = get_chat_model(spec)
    assert model is None and not status.available and message in status.detail


def test_precedence_argument_then_env_then_config_then_local(isolated_config, monkeypatch):
    assert resolve_spec() == BackendSpec("local", None)
    isolated_config.write_text('[llm]\nspec = "ollama:llama3.2"\nbase_url = "http://127.0.0.1:9"\n')
    assert resolve_spec() == BackendSpec("ollama", "llama3.2", "http://127.0.0.1:9")
    monkeypatch.setenv("SLEEPLM_LLM", "ollama:qwen2.5:3b")
    assert resolve_spec() == BackendSpec("ollama", "qwen2.5:3b", "http://127.0.0.1:9")  # same backend: config URL applies
    assert resolve_spec("none") == BackendSpec("none")
    assert resolve_spec("openai:m@http://127.0.0.1:8") == BackendSpec("openai", "m", "http://127.0.0.1:8")


def test_config_api_key_variable(isolated_config, monkeypatch):
    isolated_config.write_text('[llm]\nspec = "openai:m@http://127.0.0.1:8/v1"\napi_key_env = "MY_SERVER_KEY"\n')
    assert resolve_spec().api_key_env == "MY_SERVER_KEY"


@pytest.mark.parametrize("text, message", [
    ("[llm\nspec = 1", "is not valid TOML"),
    ('[llm]\nspec = "none"\npassword = "x"\n', "unknown keys ['password']"),
])
def test_bad_config_file_gives_a_status_not_a_crash(isolated_config, text, message):
    isolated_config.write_text(text)
    model, status = get_chat_model()
    assert model is None and not status.available and message in status.detail


def test_none_backend_status_is_json_serialisable():
    model, status = get_chat_model("none")
    assert model is None
    assert json.loads(json.dumps(status.to_dict())) == {
        "backend": "none", "model": None, "available": False,
        "detail": "No language model configured: the assistant answers in tool-only mode.",
    }


def test_local_backend_without_llama_cpp_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    model, status = get_chat_model("local:1.5b")
    assert model is None
    assert status == LLMStatus("local", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", False, status.detail)
    assert "llama-cpp-python is not installed: run `make llm`" in status.detail
    model, status = get_chat_model("local")  # nothing is chosen or fetched for a model that could not run
    assert model is None and status.model == "embedded model" and "make llm" in status.detail


# ----------------------------------------------------------------------------- a tiny OpenAI-compatible / Ollama server


class TinyServer(BaseHTTPRequestHandler):
    """Speaks just enough of /v1/models, /v1/chat/completions (plain and SSE) and /api/tags.

    Replies are computed from the request: "echo: <last user text>", or, when tools are offered,
    a call of the first tool with {"kind": "respiratory"}. Every request body is kept.
    """

    requests: list[dict] = []
    served_models = ["tiny-chat"]
    required_key: str | None = None

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send_json(self, payload: dict, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        if self.required_key and self.headers.get("Authorization") != f"Bearer {self.required_key}":
            self._send_json({"error": {"message": "bad key"}}, 401)
            return False
        return True

    def do_GET(self):
        if self.path == "/v1/models" and self._authorised():
            self._send_json({"object": "list", "data": [{"id": m, "object": "model"} for m in self.served_models]})
        elif self.path == "/api/tags":
            self._send_json({"models": [{"name": m} for m in self.served_models]})
        elif self.path != "/v1/models":
            self._send_json({"error": "not found"}, 404)

    def do_POST(self):
        if self.path != "/v1/chat/completions" or not self._authorised():
            return self._send_json({"error": "not found"}, 404)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        TinyServer.requests.append(request)
        if request.get("tools"):
            call = {"id": "call_1", "type": "function",
                    "function": {"name": request["tools"][0]["function"]["name"], "arguments": '{"kind": "respiratory"}'}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": f"echo: {request['messages'][-1]['content']}"}, "stop"
        head = {"id": "chatcmpl-1", "created": 0, "model": request["model"]}
        if not request.get("stream"):
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            return self._send_json({**head, "object": "chat.completion", "usage": usage,
                                    "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        words = (message["content"] or "").split(" ")
        deltas = [{"role": "assistant", "content": w if i == 0 else f" {w}"} for i, w in enumerate(words) if w]
        for delta in deltas:
            chunk = {**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def tiny_server():
    TinyServer.requests, TinyServer.served_models, TinyServer.required_key = [], ["tiny-chat"], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), TinyServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_openai_compatible_server_answers(tiny_server):
    model, status = get_chat_model(f"openai:tiny-chat@{tiny_server}/v1")
    assert status == LLMStatus("openai", "tiny-chat", True, f"OpenAI-compatible server at {tiny_server}/v1.")
    reply = model.invoke([SystemMessage("be brief"), HumanMessage("how did I sleep?")])
    assert reply.content == "echo: how did I sleep?"
    sent = TinyServer.requests[-1]
    assert sent["model"] == "tiny-chat" and sent["temperature"] == 0.0
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_openai_compatible_server_streams(tiny_server):
    model, _ = get_chat_model(f"openai:tiny-chat@{tiny_server}/v1")
    pieces = [chunk.content for chunk in model.stream([HumanMessage("was my oxygen ever low")]) if chunk.content]
    assert pieces == ["echo:", " was", " my", " oxygen", " ever", " low"]
    assert TinyServer.requests[-1]["stream"] is True


def test_openai_compatible_server_tool_calls(tiny_server):
    @tool
    def list_events(kind: str = "all") -> str:
        """List measured events of one kind."""
        return kind

    model, _ = get_chat_model(f"openai:tiny-chat@{tiny_server}/v1")
    reply = model.bind_tools([list_events]).invoke([HumanMessage("when did respiration look abnormal?")])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("list_events", {"kind": "respiratory"})]
    assert TinyServer.requests[-1]["tools"][0]["function"]["name"] == "list_events"


def test_openai_base_url_from_environment(tiny_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"{tiny_server}/v1")
    model, status = get_chat_model("openai:tiny-chat")
    assert status.available and model.invoke("hi").content == "echo: hi"


def test_openai_server_that_does_not_list_the_model(tiny_server):
    model, status = get_chat_model(f"openai:other@{tiny_server}/v1")
    assert status.available and "does not list 'other' (it lists tiny-chat)" in status.detail


def test_openai_server_refusing_the_key(tiny_server, monkeypatch):
    TinyServer.required_key = "right"
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    model, status = get_chat_model(f"openai:tiny-chat@{tiny_server}/v1")
    assert model is None and "refused the API key (HTTP 401)" in status.detail
    monkeypatch.setenv("OPENAI_API_KEY", "right")
    model, status = get_chat_model(f"openai:tiny-chat@{tiny_server}/v1")
    assert status.available and model.invoke("hi").content == "echo: hi"


def test_openai_without_server_or_key():
    model, status = get_chat_model("openai:gpt-4o-mini")
    assert model is None and "give one as openai:<model>@http://host:port/v1" in status.detail


def test_openai_when_nothing_listens():
    url = f"http://127.0.0.1:{free_port()}/v1"
    model, status = get_chat_model(f"openai:tiny-chat@{url}")
    assert model is None and not status.available
    assert status.detail.startswith(f"No OpenAI-compatible server answers at {url} (ConnectError")


def test_ollama_when_nothing_listens(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free_port()}")
    model, status = get_chat_model("ollama:qwen2.5:7b")
    assert model is None and status.backend == "ollama" and status.model == "qwen2.5:7b"
    assert "Ollama is not running at http://127.0.0.1:" in status.detail and "`ollama pull qwen2.5:7b`" in status.detail


def test_ollama_model_not_pulled_and_pulled(tiny_server):
    TinyServer.served_models = ["llama3.2:latest"]
    model, status = get_chat_model(f"ollama:qwen2.5:7b@{tiny_server}")
    assert model is None and status.detail == f"Ollama at {tiny_server} does not have 'qwen2.5:7b': run `ollama pull qwen2.5:7b`."
    model, status = get_chat_model(f"ollama:llama3.2@{tiny_server}")
    assert status == LLMStatus("ollama", "llama3.2", True, f"Ollama at {tiny_server}.")
    assert model.model == "llama3.2" and model.base_url == tiny_server
