"""The local-model catalogue: hub download pinned by sha256, automatic choice, `local:NAME`, fallback.

A tiny GGUF file is served by a local stand-in for the Hugging Face hub (`HF_ENDPOINT`); the
offline 1.5B is stood in for by a small verified file in the model cache. Nothing here loads
llama.cpp: these tests prove the download, checking and selection path.
"""

from __future__ import annotations

import hashlib
import struct
import time
from types import SimpleNamespace

import pytest

from assistant import llm as llm_backends
from assistant import local_llm
from assistant.llm import BackendSpec, parse_spec, prepare_backend
from assistant.local_llm import (
    DEFAULT_LOCAL_MODEL, GIB, GGUFModel, LocalModelUnavailable, choose_local_model, ensure_model_file,
    prepare_local_model, record_answer_seconds,
)
from hub_server import COMMIT, FakeHub, SilentServer, online
from sleeplm.model import checkpoint  # noqa: F401  (imported before any timing: torch takes seconds to import)

REPO, FILENAME = "tests/Tiny-Instruct-GGUF", "tiny-instruct-q4_k_m.gguf"


def gguf_bytes(name: str) -> bytes:
    """A minimal GGUF v3 file: header, no tensors, two metadata strings (architecture, name)."""
    def text(value: str) -> bytes:
        data = value.encode()
        return struct.pack("<Q", len(data)) + data

    metadata = [("general.architecture", "qwen2"), ("general.name", name)]
    body = b"".join(text(key) + struct.pack("<I", 8) + text(value) for key, value in metadata)  # 8: string
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata)) + body


TINY = gguf_bytes("tiny-instruct")
FALLBACK = gguf_bytes("fallback")


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    """A catalogue of a hub-only tiny model (strongest) and a stand-in offline fallback, in an empty cache."""
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SLEEPLM_LLM_BUDGET_S", raising=False)
    monkeypatch.setattr(local_llm, "require_llama_cpp", lambda: None)
    tiny = GGUFModel("Tiny Instruct", REPO, FILENAME, hashlib.sha256(TINY).hexdigest(), len(TINY), revision=COMMIT,
                     ram_bytes=4 * GIB, relative_time=1.2)
    fallback = GGUFModel("Fallback", "nobody/fallback-GGUF", "fallback.gguf", hashlib.sha256(FALLBACK).hexdigest(),
                         len(FALLBACK))
    (local_llm.models_dir() / "fallback.gguf").write_bytes(FALLBACK)
    models = {"tiny-instruct": tiny, DEFAULT_LOCAL_MODEL: fallback}
    monkeypatch.setattr(local_llm, "LOCAL_MODELS", models)
    return models


def test_real_catalogue_pins_every_file_and_names_its_source():
    for key, model in local_llm.LOCAL_MODELS.items():
        assert len(model.sha256) == 64 and int(model.sha256, 16) >= 0, key
        assert model.source and model.ram_bytes > 0
        assert model.parts_distribution or (model.revision and len(model.revision) == 40 and model.size_bytes), key
    assert [k for k, m in local_llm.LOCAL_MODELS.items() if m.auto][-1] == DEFAULT_LOCAL_MODEL  # strongest first
    assert parse_spec("local:7b") == BackendSpec("local", "qwen2.5-7b-instruct")


@pytest.mark.parametrize("available_gib, threads, budget, chosen, why", [
    (32, 2, 60, DEFAULT_LOCAL_MODEL, "qwen2.5-3b-instruct: ~80 s per answer on 2 threads (estimated) exceeds the 60 s budget"),
    (32, 8, 60, "qwen2.5-7b-instruct", "qwen2.5-7b-instruct: fits (9.0 of 32.0 GiB"),
    (6, 8, 60, "qwen2.5-3b-instruct", "qwen2.5-7b-instruct: needs 9.0 GiB with the app, 6.0 GiB available"),
    (4, 8, 600, DEFAULT_LOCAL_MODEL, "qwen2.5-3b-instruct: needs 6.0 GiB with the app, 4.0 GiB available"),
])
def test_automatic_choice_by_free_memory_and_answer_time(tmp_path, monkeypatch, available_gib, threads, budget,
                                                         chosen, why):
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path))
    choice = choose_local_model(available_bytes=available_gib * GIB, threads=threads, budget_s=budget)
    assert choice.key == chosen and why in choice.text


def test_a_speed_measured_here_outranks_the_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path))
    record_answer_seconds("1.5b", 2, 20.0)  # a fast machine: the 3B then takes ~40 s
    choice = choose_local_model(available_bytes=32 * GIB, threads=2, budget_s=60)
    assert choice.key == "qwen2.5-3b-instruct" and "~40 s per answer on 2 threads, scaled from the 1.5B measured here" in choice.text
    record_answer_seconds("qwen2.5-3b-instruct", 2, 75.0)  # ... but measured, it is too slow
    assert choose_local_model(available_bytes=32 * GIB, threads=2, budget_s=60).key == DEFAULT_LOCAL_MODEL


def test_named_model_is_downloaded_checked_and_then_works_offline(catalogue, monkeypatch):
    seen = []
    with FakeHub({(REPO, FILENAME): TINY}) as hub:
        online(monkeypatch, hub.url)
        key, why = prepare_local_model("tiny-instruct", progress=lambda fraction, text: seen.append(fraction))
        gets = [path for method, path, _ in hub.requests if method == "GET"]
    assert (key, why) == ("tiny-instruct", "tiny-instruct chosen by name")
    assert gets and all(f"/resolve/{COMMIT}/" in path for path in gets)  # the pinned revision
    assert seen[-1] == 1.0
    online(monkeypatch, "http://127.0.0.1:9")  # the hub is gone: the verified copy is used without network
    path = ensure_model_file("tiny-instruct")
    assert path.read_bytes() == TINY and path.is_relative_to(local_llm.models_dir())


def test_automatic_choice_downloads_the_model_that_fits(catalogue, monkeypatch):
    with FakeHub({(REPO, FILENAME): TINY}) as hub:
        online(monkeypatch, hub.url)
        monkeypatch.setattr(local_llm, "available_memory_bytes", lambda: 3 * GIB)  # too little for it
        assert prepare_local_model()[0] == DEFAULT_LOCAL_MODEL and not hub.requests
        monkeypatch.setattr(local_llm, "available_memory_bytes", lambda: 16 * GIB)
        spec, line = prepare_backend("local")
    assert spec == "local:tiny-instruct"
    assert line.startswith("language model: embedded tiny-instruct chosen (tiny-instruct: fits (7.0 of 16.0 GiB")


def test_a_file_that_is_not_the_pinned_one_is_refused_and_deleted(catalogue, monkeypatch):
    with FakeHub({(REPO, FILENAME): TINY[:-1] + b"X"}) as hub:
        online(monkeypatch, hub.url)
        with pytest.raises(LocalModelUnavailable, match="not the published"):
            ensure_model_file("tiny-instruct")
        key, why = prepare_local_model("tiny-instruct")
    assert key == DEFAULT_LOCAL_MODEL and "using the offline fallback" in why
    hub_cache = local_llm.models_dir() / "hub"
    assert not [p for p in hub_cache.rglob("*") if p.is_file() and p.stat().st_size == len(TINY)]


def test_an_unreachable_hub_falls_back_to_the_offline_model_in_seconds(catalogue, monkeypatch):
    monkeypatch.setattr(local_llm, "available_memory_bytes", lambda: 16 * GIB)
    online(monkeypatch, "http://127.0.0.1:9")  # refused at once
    started = time.perf_counter()
    spec, line = prepare_backend("local")
    assert time.perf_counter() - started < 5
    assert spec == f"local:{DEFAULT_LOCAL_MODEL}"
    assert f"{FILENAME} could not be downloaded from {REPO} (the hub did not answer" in line
    assert "using the offline fallback" in line
    with SilentServer() as silent:  # accepts and never answers: the short timeout ends the wait
        online(monkeypatch, silent.url)
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        started = time.perf_counter()
        assert prepare_local_model("tiny-instruct")[0] == DEFAULT_LOCAL_MODEL
        assert time.perf_counter() - started < 5


def test_get_chat_model_names_the_model_and_why(catalogue, monkeypatch):
    loaded = []

    def fake_load(key, **_):
        loaded.append(key)
        return SimpleNamespace(n_threads=2, model_name=local_llm.LOCAL_MODELS[key].display_name), 0.5

    monkeypatch.setattr(local_llm, "load_local_chat_model", fake_load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, status = llm_backends.get_chat_model("local:tiny-instruct")  # offline: not on disk, so the fallback
    assert loaded == [DEFAULT_LOCAL_MODEL] and status.available and status.model == "Fallback"
    assert "tiny-instruct chosen by name, but it could not be had" in status.detail
