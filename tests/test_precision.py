"""bf16 signal encoder: chosen only where bf16 is fast on the hardware and agrees with fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sleeplm.errors import SleepLMRequestError
from sleeplm.model import precision
from sleeplm.model.inference import SleepLM

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fixture_a():
    return torch.load(DATA / "fixture_a.pt", weights_only=True)


@pytest.fixture
def checkpoint(tmp_path, fixture_a, monkeypatch):
    monkeypatch.setenv(precision.PRECISION_ENV, "auto")
    path = tmp_path / "model_checkpoint.pt"
    torch.save({"state_dict": fixture_a["state_dict"]}, path)
    return path


def fast(monkeypatch, yes: bool) -> None:
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": (yes, "fast" if yes else "emulated (AVX2)"))


def dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


def test_slow_bf16_hardware_keeps_the_fp32_encoder(checkpoint, fixture_a, monkeypatch):
    fast(monkeypatch, False)
    model = SleepLM.from_pretrained(str(checkpoint), config=fixture_a["config"])
    assert not model.bf16_embeddings and "AVX2" in model.precision.reason
    assert dtypes(model.network) == {torch.float32} and not model.checkpoint_id.endswith("-bf16")
    reference = fixture_a["signal_emb_norm"].numpy()
    assert np.abs(model.encode_signals(fixture_a["signals"]) - reference).max() <= 1e-5


def test_fast_bf16_hardware_stores_the_encoder_in_bf16_when_it_agrees(checkpoint, fixture_a, monkeypatch):
    fast(monkeypatch, True)
    model = SleepLM.from_pretrained(str(checkpoint), config=fixture_a["config"])
    fp32 = SleepLM.from_config(fixture_a["config"], state_dict=fixture_a["state_dict"])
    assert model.bf16_embeddings and model.precision.min_cosine_embedding >= precision.MIN_COSINE
    assert model.precision.min_cosine_memory >= precision.MIN_COSINE
    encoder = model.network.biosignals
    # Linear/conv/attention weights halve; RoPE frequencies and norm weights stay fp32; text and decoder stay fp32.
    assert encoder.embed_projection.weight.dtype == torch.bfloat16
    assert encoder.shared_channel_rope.freqs.dtype == torch.float32 and encoder.ln_final.weight.dtype == torch.float32
    assert dtypes(model.network.text) == dtypes(model.network.text_decoder) == {torch.float32}
    bf16_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    fp32_bytes = sum(p.numel() * p.element_size() for p in fp32.network.biosignals.parameters())
    assert bf16_bytes < 0.55 * fp32_bytes
    assert model.checkpoint_id == fp32.checkpoint_id + "-bf16"  # its own embedding cache entries

    fast_emb = model.encode_signals(fixture_a["signals"])
    cosine = (fast_emb * fixture_a["signal_emb_norm"].numpy()).sum(axis=1)
    assert cosine.min() >= precision.MIN_COSINE and fast_emb.dtype == np.float32
    query = "REM sleep with eye movements"
    assert [i for i, _ in model.retrieve(query, fast_emb, top_k=3)] == \
        [i for i, _ in fp32.retrieve(query, fixture_a["signal_emb_norm"].numpy(), top_k=3)]
    # Captions run on the bf16 encoder's memory with the fp32 decoder.
    captions = model.caption(fixture_a["signals"][:2], "brain", max_len=8, min_len=4)
    assert len(captions) == 2 and all(isinstance(text, str) for text in captions)


def test_disagreement_puts_the_fp32_weights_back_unchanged(checkpoint, fixture_a, monkeypatch):
    fast(monkeypatch, True)
    monkeypatch.setattr(precision, "MIN_COSINE", 1.01)  # no bf16 result can reach it
    model = SleepLM.from_pretrained(str(checkpoint), config=fixture_a["config"])
    assert not model.bf16_embeddings and "disagreed with fp32" in model.precision.reason
    assert model.precision.min_cosine_embedding is not None
    state = model.network.state_dict()
    for name, tensor in fixture_a["state_dict"].items():
        assert torch.equal(state[name], tensor), name


def test_precision_can_be_forced_and_a_wrong_setting_is_refused(checkpoint, fixture_a, monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": pytest.fail("forced: no detection"))
    monkeypatch.setenv(precision.PRECISION_ENV, "fp32")
    assert not SleepLM.from_pretrained(str(checkpoint), config=fixture_a["config"]).bf16_embeddings
    monkeypatch.setenv(precision.PRECISION_ENV, "bf16")
    assert SleepLM.from_pretrained(str(checkpoint), config=fixture_a["config"]).bf16_embeddings
    monkeypatch.setenv(precision.PRECISION_ENV, "half")
    with pytest.raises(SleepLMRequestError, match="auto, fp32 or bf16"):
        SleepLM.from_pretrained(str(checkpoint), config=fixture_a["config"])


def test_bf16_speed_is_detected_from_flags_and_a_calibration(monkeypatch):
    precision.bf16_is_fast.cache_clear()
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "fma"})  # the AMD EPYC of STACK.md
    monkeypatch.setattr(precision, "bf16_speedup", lambda: pytest.fail("no calibration without bf16 flags"))
    fast_, why = precision.bf16_is_fast("cpu")
    assert not fast_ and "no avx512_bf16 / amx_bf16 flag" in why
    precision.bf16_is_fast.cache_clear()
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 0.02)  # flags claim it, the timing says emulated
    assert precision.bf16_is_fast("cpu")[0] is False
    precision.bf16_is_fast.cache_clear()
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 3.2)
    fast_, why = precision.bf16_is_fast("cpu")
    assert fast_ and "3.2x fp32" in why and "avx512_bf16" in why
    precision.bf16_is_fast.cache_clear()
    monkeypatch.setattr(precision, "_cpu_flags", lambda: None)  # no /proc/cpuinfo: the calibration decides
    assert precision.bf16_is_fast("cpu")[0] is True
    precision.bf16_is_fast.cache_clear()
