"""SleepLM weights from the hub: download, cache, pinning, sha256 record, quick give-up (local fake hub)."""

from __future__ import annotations

import hashlib
import io
import json
import time

import numpy as np
import pytest
import torch

from hub_server import COMMIT, FakeHub, SilentServer, online
from sleeplm.errors import CheckpointError, ModelUnavailableError
from sleeplm.model.checkpoint import DEFAULT_FILENAME, DEFAULT_REPO, resolve_checkpoint, weights_record_path
from sleeplm.model.inference import SleepLM

EPOCHS = np.random.default_rng(0).normal(size=(2, 10, 1920)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_checkpoint() -> tuple[bytes, np.ndarray]:
    """A tiny-config checkpoint as the released file is laid out ({"state_dict": ...}) and its embeddings."""
    model = SleepLM.from_config("sleeplm_tiny", seed=7)
    buffer = io.BytesIO()
    torch.save({"state_dict": model.network.state_dict()}, buffer)
    return buffer.getvalue(), model.encode_signals(EPOCHS)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path / "sleeplm-cache"))
    monkeypatch.delenv("SLEEPLM_CHECKPOINT", raising=False)
    monkeypatch.delenv("SLEEPLM_REVISION", raising=False)
    return tmp_path / "hub-cache"


def test_first_run_downloads_records_and_then_works_offline(isolated, tiny_checkpoint, monkeypatch):
    data, embeddings = tiny_checkpoint
    seen = []
    with FakeHub({(DEFAULT_REPO, DEFAULT_FILENAME): data}) as hub:
        online(monkeypatch, hub.url)
        model = SleepLM.from_pretrained(cache_dir=isolated, config="sleeplm_tiny",
                                        progress=lambda fraction, text: seen.append((fraction, text)))
        assert [m for m, *_ in hub.requests][:1] == ["HEAD"] and "GET" in [m for m, *_ in hub.requests]
    np.testing.assert_allclose(model.encode_signals(EPOCHS), embeddings, atol=1e-6)
    assert seen[-1][0] == 1.0 and "downloading model_checkpoint.pt" in seen[-1][1]
    record = json.loads(weights_record_path().read_text())[f"{DEFAULT_REPO}/{DEFAULT_FILENAME}"]
    # Pinned to the commit the hub served, with the file's sha256.
    assert record["revision"] == COMMIT and record["sha256"] == hashlib.sha256(data).hexdigest()

    # The hub is gone: the cached file at the recorded commit is used without any network.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    path = resolve_checkpoint(DEFAULT_REPO, cache_dir=isolated)
    assert COMMIT in str(path) and path.read_bytes() == data


def test_a_changed_cached_file_is_refused(isolated, tiny_checkpoint, monkeypatch):
    data, _ = tiny_checkpoint
    with FakeHub({(DEFAULT_REPO, DEFAULT_FILENAME): data}) as hub:
        online(monkeypatch, hub.url)
        path = resolve_checkpoint(DEFAULT_REPO, cache_dir=isolated)
    blob = path.resolve()
    blob.write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="not the .* recorded"):
        resolve_checkpoint(DEFAULT_REPO, cache_dir=isolated)


def test_an_interrupted_download_is_resumed(isolated, tiny_checkpoint, monkeypatch):
    data, _ = tiny_checkpoint
    with FakeHub({(DEFAULT_REPO, DEFAULT_FILENAME): data}) as hub:
        online(monkeypatch, hub.url)
        hub.cut_first_get_at = len(data) - 1000  # past the client's first 10 MB chunk
        try:
            path = resolve_checkpoint(DEFAULT_REPO, cache_dir=isolated)
        except ModelUnavailableError:  # the client gave up on the broken transfer: the next run resumes
            path = resolve_checkpoint(DEFAULT_REPO, cache_dir=isolated)
        ranges = [r for method, _, r in hub.requests if method == "GET" and r]
    assert path.read_bytes() == data
    assert ranges and int(ranges[0].split("=")[1].split("-")[0]) > 0  # asked for the rest, not the whole file again


def test_unknown_revision_or_repo_is_named(isolated, tiny_checkpoint, monkeypatch):
    with FakeHub({(DEFAULT_REPO, DEFAULT_FILENAME): tiny_checkpoint[0]}) as hub:
        online(monkeypatch, hub.url)
        with pytest.raises(ModelUnavailableError, match="revision 'v9'"):
            resolve_checkpoint(DEFAULT_REPO, revision="v9", cache_dir=isolated)
        with pytest.raises(ModelUnavailableError, match="has no model_checkpoint.pt in 'someone/else'"):
            resolve_checkpoint("someone/else", cache_dir=isolated)


def test_an_unreachable_hub_is_given_up_quickly_with_the_way_out(isolated, monkeypatch):
    online(monkeypatch, "http://127.0.0.1:9")  # nothing listens there: refused at once
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="could not be reached.*--checkpoint PATH"):
        resolve_checkpoint(DEFAULT_REPO, cache_dir=isolated)
    assert time.perf_counter() - started < 5
    with SilentServer() as silent:  # accepts and never answers: the short timeout ends the wait
        online(monkeypatch, silent.url)
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        started = time.perf_counter()
        with pytest.raises(ModelUnavailableError, match="SLEEPLM_CHECKPOINT=PATH"):
            resolve_checkpoint(DEFAULT_REPO, cache_dir=isolated)
        assert time.perf_counter() - started < 5
