"""Checkpoint loading: layouts, missing/mismatched/extra keys, hub cache and offline behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sleeplm.model.checkpoint import load_state_dict_checked, read_state_dict, resolve_checkpoint
from sleeplm.errors import CheckpointError, ModelUnavailableError
from sleeplm.model.inference import SleepLM
from sleeplm.model.network import build_model

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def fixture_a():
    return torch.load(DATA / "fixture_a.pt", weights_only=True)


def reference_embedding(model: SleepLM, fixture_a) -> float:
    return (torch.from_numpy(model.encode_signals(fixture_a["signals"])) - fixture_a["signal_emb_norm"]).abs().max()


@pytest.mark.parametrize("layout", ["bare", "state_dict", "module_prefix", "state_dict_and_module_prefix", "model"])
def test_saved_layouts_load_and_reproduce_the_reference(tmp_path, fixture_a, layout):
    state = fixture_a["state_dict"]
    if "module" in layout:
        state = {f"module.{k}": v for k, v in state.items()}
    wrapper = "model" if layout == "model" else "state_dict"
    payload = {wrapper: state, "epoch": 12} if layout.startswith(("state_dict", "model")) else state
    path = tmp_path / "model_checkpoint.pt"
    torch.save(payload, path)
    model = SleepLM.from_pretrained(str(path), config=fixture_a["config"])
    assert reference_embedding(model, fixture_a) <= 1e-5
    assert model.unexpected_keys == []
    folder_model = SleepLM.from_pretrained(str(tmp_path), config=fixture_a["config"])  # a folder holding the file
    assert folder_model.checkpoint_id == model.checkpoint_id


def test_missing_and_mismatched_keys_are_listed(fixture_a):
    state = dict(fixture_a["state_dict"])
    del state["text.ln_final.bias"]
    state["channel_embeddings"] = torch.zeros(12, 8)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_checked(build_model(fixture_a["config"]), state)
    message = str(err.value)
    assert "text.ln_final.bias" in message and "1 missing key" in message
    assert "channel_embeddings (checkpoint (12, 8), network (5, 8))" in message


def test_extra_keys_are_reported_and_ignored(fixture_a, caplog):
    state = dict(fixture_a["state_dict"])
    state["signal_decoder.head.weight"] = torch.ones(3, 3)  # e.g. a training-only reconstruction head
    model = SleepLM.from_config(fixture_a["config"], state_dict=state)
    assert model.unexpected_keys == ["signal_decoder.head.weight"]
    assert "signal_decoder.head.weight" in caplog.text
    assert reference_embedding(model, fixture_a) <= 1e-5


def test_unreadable_and_code_carrying_files_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        read_state_dict(junk)
    # weights_only=True: pickled objects other than tensors/containers are rejected, not executed.
    pickled = tmp_path / "object.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Path("/tmp")}, pickled)
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        read_state_dict(pickled)
    with pytest.raises(CheckpointError, match="No checkpoint file"):
        resolve_checkpoint(str(tmp_path / "absent.pt"))


def test_hub_offline_without_cache_says_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SLEEPLM_CHECKPOINT", raising=False)
    with pytest.raises(ModelUnavailableError) as err:
        SleepLM.from_pretrained(cache_dir=tmp_path)
    message = str(err.value)
    assert "--checkpoint PATH" in message and "SLEEPLM_CHECKPOINT" in message and "no cached copy" in message


def test_hub_cache_and_revision_are_honoured_offline(tmp_path, fixture_a):
    """A file in the Hugging Face cache layout is found without network, by branch or by commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--yang-ai-lab--SleepLM-Base"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    torch.save(fixture_a["state_dict"], snapshot / "model_checkpoint.pt")
    assert resolve_checkpoint("yang-ai-lab/SleepLM-Base", cache_dir=tmp_path) == snapshot / "model_checkpoint.pt"
    assert resolve_checkpoint("yang-ai-lab/SleepLM-Base", revision=commit, cache_dir=tmp_path).is_file()
    with pytest.raises(ModelUnavailableError):
        resolve_checkpoint("yang-ai-lab/SleepLM-Base", revision="v9-unknown", cache_dir=tmp_path)
    model = SleepLM.from_pretrained(cache_dir=tmp_path, config=fixture_a["config"])
    assert reference_embedding(model, fixture_a) <= 1e-5


def test_environment_variable_names_a_local_file(tmp_path, fixture_a, monkeypatch):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": fixture_a["state_dict"]}, path)
    monkeypatch.setenv("SLEEPLM_CHECKPOINT", str(path))
    model = SleepLM.from_pretrained(config=fixture_a["config"])
    assert reference_embedding(model, fixture_a) <= 1e-5
