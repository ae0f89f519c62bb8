"""The SleepLM inference wrapper (tiny and fixture models) and the night-embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import caption_logits

from sleeplm.model.embedding_cache import embedding_cache_path, night_embeddings
from sleeplm.errors import TensorFormatError
from sleeplm.model.inference import DOMAINS, SleepLM, beam_search
from sleeplm.model.network import EOT_TOKEN_ID, SOT_TOKEN_ID

DATA = Path(__file__).parent / "data"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fixture_a():
    return torch.load(DATA / "fixture_a.pt", weights_only=True)


@pytest.fixture(scope="module")
def eos_model(fixture_a):
    """fixture_a's model with the end-of-text column raised so that captions end (fixture_a_beam_eos.pt)."""
    eos_case = torch.load(DATA / "fixture_a_beam_eos.pt", weights_only=True)
    state = dict(fixture_a["state_dict"])
    projection = state["text_decoder.text_projection"].clone()
    projection[:, EOT_TOKEN_ID] = eos_case["override_value"]
    state["text_decoder.text_projection"] = projection
    return SleepLM.from_config(fixture_a["config"], state_dict=state), eos_case["results"]


@pytest.fixture(scope="module")
def tiny():
    return SleepLM.from_config("sleeplm_tiny")


@pytest.fixture(scope="module")
def epochs():
    return np.random.default_rng(3).normal(size=(7, 10, 1920)).astype(np.float32)


def test_tiny_model_is_deterministic_and_shaped_like_the_released_one(tiny, epochs):
    assert tiny.network.config.embed_dim == 512
    again = SleepLM.from_config("sleeplm_tiny")
    assert again.checkpoint_id == tiny.checkpoint_id
    assert SleepLM.from_config("sleeplm_tiny", seed=1).checkpoint_id != tiny.checkpoint_id
    emb = tiny.encode_signals(epochs)
    assert emb.shape == (7, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb, again.encode_signals(epochs))


def test_batching_and_progress_do_not_change_embeddings(fixture_a):
    model = SleepLM.from_config(fixture_a["config"], state_dict=fixture_a["state_dict"])
    calls = []
    emb = model.encode_signals(fixture_a["signals"].numpy(), batch_size=2, progress=lambda f, m: calls.append(f))
    assert calls == [2 / 3, 1.0]
    np.testing.assert_allclose(emb, fixture_a["signal_emb_norm"].numpy(), atol=1e-5)
    np.testing.assert_allclose(model.encode_text(fixture_a["captions"]), fixture_a["text_emb_norm"].numpy(), atol=1e-5)


def test_channel_mask_is_the_zero_padding_convention(fixture_a):
    model = SleepLM.from_config(fixture_a["config"], state_dict=fixture_a["state_dict"])
    present = np.ones((3, 10), dtype=bool)
    present[0, [4, 5]] = False
    present[1, 0] = False
    present[2, [1, 2, 3]] = False
    masked = model.encode_signals(fixture_a["signals"], channel_mask=present)
    np.testing.assert_allclose(masked, fixture_a["signal_emb_norm_missing_channels"].numpy(), atol=1e-5)
    one_mask = model.encode_signals(fixture_a["signals"], channel_mask=present[1])
    np.testing.assert_allclose(one_mask[1], masked[1], atol=1e-6)


def test_bad_epochs_are_clear_errors(tiny):
    with pytest.raises(TensorFormatError, match=r"\[N, 10, 1920\]"):
        tiny.encode_signals(np.zeros((4, 9, 1920), dtype=np.float32))
    bad = np.zeros((2, 10, 1920), dtype=np.float32)
    bad[1, 3, 10] = np.nan
    with pytest.raises(TensorFormatError, match="NaN"):
        tiny.encode_signals(bad)
    with pytest.raises(TensorFormatError, match="channel_mask"):
        tiny.encode_signals(np.zeros((2, 10, 1920), dtype=np.float32), channel_mask=[True, False])
    with pytest.raises(ValueError, match="Unknown caption domain"):
        tiny.caption(np.zeros((1, 10, 1920), dtype=np.float32), "kidney")


def test_retrieve_ranks_by_cosine_similarity(tiny):
    queries = ["REM sleep with rapid eye movements", "obstructive apnea with desaturation", "quiet wake"]
    text = tiny.encode_text(queries)
    signal_like = np.stack([text[2], text[0], text[1], -text[0]])  # epoch 1 is the first query's own vector
    hits = tiny.retrieve(queries[0], signal_like, top_k=2, domain="brain")
    assert hits[0][0] == 1 and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 2 and hits[0][1] >= hits[1][1]
    ranked = tiny.retrieve(queries[0], signal_like, top_k=10)
    assert [e for e, _ in ranked][-1] == 3 and ranked[-1][1] == pytest.approx(-1.0, abs=1e-5)
    with pytest.raises(TensorFormatError):
        tiny.retrieve("x", np.zeros((3, 16)), top_k=1)


def test_default_captions_equal_the_reference_demo_beam_search(fixture_a, eos_model):
    model, results = eos_model
    ids = model.caption_ids(fixture_a["signals"], "respiratory", max_len=30, batch_size=2)
    for b, row in enumerate(ids):
        np.testing.assert_array_equal(row, results[(DOMAINS["respiratory"], b)]["beam"][0].numpy())
    texts = model.caption(fixture_a["signals"][:1], "brain", max_len=30)
    assert texts == [model.tokenizer.decode(results[(0, 0)]["beam"][0])]


def test_beam_search_with_one_beam_is_greedy_and_batches_like_single_epochs(fixture_a, eos_model):
    model, results = eos_model
    x = fixture_a["signals"]
    with torch.inference_mode():
        memory = model.network.biosignals(x)[1]
        for modality in range(5):
            single_beam = beam_search(model.network, memory, modality, beams=1, max_new_tokens=29, min_len=16)
            for b in range(3):
                np.testing.assert_array_equal(single_beam[b], results[(modality, b)]["greedy_minlen16"][0].numpy())
        batched = beam_search(model.network, memory, 3, beams=3, max_new_tokens=29, min_len=16)
        alone = [beam_search(model.network, memory[b : b + 1], 3, beams=3, max_new_tokens=29, min_len=16)[0]
                 for b in range(3)]
    for a, b in zip(batched, alone):
        np.testing.assert_array_equal(a, b)
    for row in batched:
        assert row[0] == SOT_TOKEN_ID and EOT_TOKEN_ID not in row[1:15]


def test_beam_option_returns_ranked_hypotheses_within_limits(tiny, epochs):
    ids = tiny.caption_ids(epochs[:3], "cardiac", max_len=20, min_len=5, beams=3)
    assert len(ids) == 3
    for row in ids:
        assert row[0] == SOT_TOKEN_ID and 5 <= len(row) <= 20
        assert EOT_TOKEN_ID not in row[1:4]
    assert all(isinstance(text, str) for text in tiny.caption(epochs[:2], "stage_event", max_len=12, beams=2))


def test_night_embeddings_are_computed_once_and_survive_restarts(tmp_path, monkeypatch, bare_recording, epochs):
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path))
    rec = bare_recording(n_epochs=7)
    rec.epochs[:] = epochs
    model = SleepLM.from_config("sleeplm_tiny")
    calls = []
    original = model.encode_signals
    model.encode_signals = lambda *a, **k: calls.append(1) or original(*a, **k)
    first = night_embeddings(model, rec)
    second = night_embeddings(model, rec)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    # Stored as float16: similarities (computed in float32) move by less than 1e-3.
    exact = model.encode_signals(rec.epochs)
    text = model.encode_text(["deep sleep", "apnea"])
    assert first.dtype == np.float16
    assert np.abs(first.astype(np.float32) @ text.T - exact @ text.T).max() < 1e-3
    path = embedding_cache_path(model, rec)
    assert path.is_file() and path.parent == tmp_path / "embeddings"
    assert rec.content_digest()[:32] in path.name and model.checkpoint_id in path.name
    restarted = SleepLM.from_config("sleeplm_tiny")  # same weights, new process-like instance
    restarted.encode_signals = lambda *a, **k: pytest.fail("cache miss after restart")
    np.testing.assert_array_equal(night_embeddings(restarted, rec), first)
    other_weights = SleepLM.from_config("sleeplm_tiny", seed=5)
    assert embedding_cache_path(other_weights, rec) != path
    rec.epochs[0, 0, :10] += 1.0  # the same file prepared differently is another cache entry
    assert embedding_cache_path(model, rec) != path


def test_bf16_embeddings_agree_with_fp32_and_use_their_own_cache_key(fixture_a, tmp_path, monkeypatch):
    from sleeplm.model import precision

    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "relative_speed",  # its timing is not what this test checks
                        lambda reference, candidate: (1.0, reference(), candidate()))
    fp32 = SleepLM.from_config(fixture_a["config"], state_dict=fixture_a["state_dict"])
    bf16 = SleepLM.from_config(fixture_a["config"], state_dict=fixture_a["state_dict"], precision="bf16")
    assert bf16.checkpoint_id != fp32.checkpoint_id
    fast = bf16.encode_signals(fixture_a["signals"])
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cosine = (fast * fixture_a["signal_emb_norm"].numpy()).sum(axis=1)
    assert cosine.min() > 0.99


def naive_beam_search(network, x, modality, beams, max_new_tokens, min_len):
    """The same search written plainly: no cache, one hypothesis at a time, full teacher-forced recompute."""
    running, finished = [([SOT_TOKEN_ID], 0.0)], []
    for step in range(max_new_tokens):
        candidates = []
        for seq, score in running:
            with torch.no_grad():  # the appended 0 is a placeholder label; only the last position's logits count
                logprobs = caption_logits(network, x, torch.tensor([seq + [0]]), modality)[0, -1].log_softmax(-1)
            if step + 1 < min_len:
                logprobs[EOT_TOKEN_ID] = float("-inf")
            values, tokens = logprobs.topk(2 * beams)
            candidates += [(score + v, seq + [t]) for v, t in zip(values.tolist(), tokens.tolist())]
        candidates.sort(key=lambda c: -c[0])
        running = []
        for score, seq in candidates:
            if seq[-1] == EOT_TOKEN_ID:
                finished.append((score / len(seq), seq))
            elif len(running) < beams:
                running.append((seq, score))
            if len(running) == beams:
                break
        if step + 1 == max_new_tokens:
            finished.append((running[0][1] / len(running[0][0]), running[0][0]))
        elif len(finished) >= beams and running[0][1] / (len(running[0][0])) <= sorted(
                (s for s, _ in finished), reverse=True)[beams - 1]:
            break
    return max(finished)[1]


@pytest.mark.parametrize("source, modality, beams, min_len",
                         [("fixture_b", 4, 2, 8), ("fixture_b", 1, 3, 8), ("eos", 2, 3, 4), ("eos", 0, 2, 16)])
def test_cached_batched_beam_search_equals_a_plain_one(request, fixture_a, source, modality, beams, min_len):
    """Another reference configuration (fixture_b), and fixture_a's model whose captions end (end-of-text)."""
    if source == "eos":
        model, signals, context = request.getfixturevalue("eos_model")[0], fixture_a["signals"], 32
    else:
        stored = torch.load(DATA / "fixture_b.pt", weights_only=True)
        model = SleepLM.from_config(stored["config"], state_dict=stored["state_dict"])
        signals, context = stored["signals"], stored["config"]["text_cfg"]["context_length"]
    ours = model.caption_ids(signals, modality, max_len=context, min_len=min_len, beams=beams)
    assert source != "eos" or any(len(row) < context for row in ours)  # some captions end before the limit
    for b, row in enumerate(ours):
        plain = naive_beam_search(model.network, signals[b : b + 1], modality, beams, context - 1, min_len)
        assert row.tolist() == plain, (modality, beams, b)


def test_caption_progress_reports_each_batch(tiny, epochs):
    calls = []
    texts = tiny.caption(epochs[:5], "respiratory", max_len=6, min_len=2, batch_size=2,
                         progress=lambda fraction, message: calls.append((fraction, message)))
    assert len(texts) == 5 and [f for f, _ in calls] == [0.4, 0.8, 1.0]
    assert calls[-1][1] == "SleepLM captions: 5/5 epochs"
