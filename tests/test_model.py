"""The SleepLM network against the reference: state-dict layout and every stored output of fixture_a."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sleeplm.config import SleepLMConfig, get_model_config, list_models
from sleeplm.errors import CheckpointError
from sleeplm.model import EOT_TOKEN_ID, SOT_TOKEN_ID, build_model

DATA = Path(__file__).parent / "data"
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fixture_a():
    return torch.load(DATA / "fixture_a.pt", weights_only=True)


@pytest.fixture(scope="module")
def net(fixture_a):
    model = build_model(fixture_a["config"])
    model.load_state_dict(fixture_a["state_dict"], strict=True)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ---- full configuration: layout of the released checkpoint --------------------------------
def test_full_state_dict_matches_manifest_key_by_key():
    manifest = json.loads((DATA / "manifest_full.json").read_text())
    with torch.device("meta"):
        model = build_model(get_model_config("sleep_coca_base_dualtransformer"), num_caption_channels=5, prefix_len=2)
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    reference = [(e["key"], e["shape"], e["dtype"]) for e in manifest["entries"]]
    assert ours == reference  # same keys, same order, same shapes and dtypes
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters_model_parameters"]
    buffers = [[name, list(b.shape), str(b.dtype)] for name, b in model.named_buffers()]
    assert buffers == manifest["all_buffers_including_nonpersistent"]


def test_channel_rope_is_one_tied_parameter_and_temporal_rope_is_a_buffer():
    with torch.device("meta"):
        model = build_model("sleep_coca_base_dualtransformer", num_caption_channels=5, prefix_len=2)
    bio = model.biosignals
    shared = bio.shared_channel_rope.freqs
    assert all(block.channel_attention.rotary_emb.freqs is shared for block in bio.transformer_blocks)
    assert isinstance(shared, torch.nn.Parameter)
    temporal = bio.transformer_blocks[0].temporal_attention_layers[0].rotary_emb
    assert "freqs" in temporal._buffers and "freqs" not in temporal._parameters
    assert "text.attn_mask" not in model.state_dict() and "text_decoder.prefix_causal_mask" not in model.state_dict()


def test_overrides_and_json_values():
    raw = get_model_config("sleep_coca_base_dualtransformer")
    assert (raw.prefix_len, raw.num_caption_channels) == (1, 12)  # the JSON as shipped
    with torch.device("meta"):
        model = build_model(raw.to_dict(), prefix_len=3, num_caption_channels=4)
    assert model.channel_embeddings.shape == (4, 768)
    assert model.text_decoder.prefix_causal_mask.shape == (3 + 256, 3 + 256)
    assert {"sleep_coca_base_dualtransformer", "sleeplm_tiny"} <= set(list_models())


def test_bad_configs_are_clear_errors():
    with pytest.raises(CheckpointError, match="Unknown model config override"):
        build_model("sleeplm_tiny", num_layers=3)
    with pytest.raises(CheckpointError, match="No model config named"):
        get_model_config("sleeplm_huge")
    bad = get_model_config("sleeplm_tiny").to_dict()
    bad["biosignals_cfg"]["transformer_heads"] = 3
    with pytest.raises(CheckpointError, match="not divisible"):
        SleepLMConfig.from_dict(bad)


# ---- fixture_a: numerical equivalence with the reference implementation -------------------
def test_signal_embeddings(net, fixture_a):
    with torch.no_grad():
        x = fixture_a["signals"]
        assert max_diff(net.encode_signals(x), fixture_a["signal_emb_norm"]) <= TOL
        assert max_diff(net.encode_signals(x), fixture_a["signal_emb_norm_demo_path"]) <= TOL
        assert max_diff(net.encode_signals(x, normalize=False), fixture_a["signal_emb_unnorm"]) <= TOL
        assert max_diff(net.biosignals(x)[1], fixture_a["signal_decoder_tokens"]) <= TOL
        missing = net.encode_signals(fixture_a["signals_missing_channels"])
        assert max_diff(missing, fixture_a["signal_emb_norm_missing_channels"]) <= TOL
        assert torch.allclose(missing.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_text_embeddings(net, fixture_a):
    with torch.no_grad():
        ids = fixture_a["text_ids"]
        assert max_diff(net.encode_text(ids), fixture_a["text_emb_norm"]) <= TOL
        latent, tokens = net.text(ids)
        assert max_diff(latent, fixture_a["text_emb_unnorm"]) <= TOL
        assert max_diff(tokens, fixture_a["text_token_embs"]) <= TOL


@pytest.mark.parametrize("modality", [0, 1, 2, 3, 4, None])
def test_teacher_forced_logits(net, fixture_a, modality):
    stored = fixture_a["teacher_forced"]["no_condition" if modality is None else modality]
    with torch.no_grad():
        logits = net.caption_logits(fixture_a["signals"], fixture_a["text_ids"], modality)
    assert logits.shape == (3, 31, 49408)
    assert max_diff(logits[..., fixture_a["logits_vocab_subset"]], stored["logits_subset"]) <= TOL
    assert max_diff(logits.logsumexp(-1), stored["logsumexp"]) <= TOL
    assert torch.equal(logits.argmax(-1), stored["argmax"])
    if modality is not None:
        labels = fixture_a["text_ids"][:, 1:]
        assert torch.equal(labels, stored["labels"])
        label_logprob = logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0]
        assert max_diff(label_logprob, stored["label_logprob"]) <= TOL
        top = logits.topk(5, dim=-1)
        assert max_diff(top.values, stored["top5_values"]) <= TOL
        assert torch.equal(top.indices, stored["top5_indices"])
        assert max_diff(net.logit_scale.exp(), stored["logit_scale_exp"]) <= TOL


def test_full_logits_slice(net, fixture_a):
    with torch.no_grad():
        logits = net.caption_logits(fixture_a["signals"], fixture_a["text_ids"], 4)
    assert max_diff(logits[1, :12], fixture_a["teacher_forced"]["full_logits_modality4_sample1_first12pos"]) <= TOL


@pytest.mark.parametrize("modality", range(5))
def test_generation_matches_reference(net, fixture_a, modality):
    stored = fixture_a["generation"][modality]
    x = fixture_a["signals"]
    with torch.no_grad():
        argmax_loop = net.generate(x, modality, max_new_tokens=20, min_len=0)
        assert torch.equal(argmax_loop, stored["argmax_loop_20"])
        # The reference top-k=1 sampler forces its 21st token to end-of-text; the first 20 are greedy.
        assert torch.equal(argmax_loop[:, :20], stored["generate_topk1_seq21"][:, :20])
        assert (stored["generate_topk1_seq21"][:, 20] == EOT_TOKEN_ID).all()
        for b, beam in enumerate(stored["beam_demo_settings_seq30"]):
            assert torch.equal(net.generate(x[b : b + 1], modality, max_new_tokens=29, min_len=16), beam)


def test_demo_beam_search_with_end_of_text(fixture_a):
    eos_case = torch.load(DATA / "fixture_a_beam_eos.pt", weights_only=True)
    state = dict(fixture_a["state_dict"])
    projection = state["text_decoder.text_projection"].clone()
    projection[:, EOT_TOKEN_ID] = eos_case["override_value"]
    state["text_decoder.text_projection"] = projection
    model = build_model(fixture_a["config"])
    model.load_state_dict(state, strict=True)
    lengths = set()
    with torch.no_grad():
        for (modality, b), result in eos_case["results"].items():
            ours = model.generate(fixture_a["signals"][b : b + 1], modality, max_new_tokens=29, min_len=16)
            assert torch.equal(ours, result["beam"]), (modality, b)
            lengths.add(ours.shape[1])
        # A batch stops each row at its own end-of-text and pads the rest with 0.
        batch = model.generate(fixture_a["signals"], 2, max_new_tokens=29, min_len=16)
    assert {17, 27, 30} <= lengths
    for b in range(3):
        single = eos_case["results"][(2, b)]["beam"][0]
        assert torch.equal(batch[b, : len(single)], single)
        assert (batch[b, len(single) :] == 0).all()
    assert batch[0, 0] == SOT_TOKEN_ID


def test_cached_decoding_equals_teacher_forcing_including_id_zero(net, fixture_a):
    """Id 0 (also the character '!') hides the key after it (legacy padding mask), in the cache too."""
    ids = fixture_a["text_ids"].clone()
    ids[0, 5] = 0  # a real id 0 inside a caption; rows 1 and 2 end in padding
    with torch.no_grad():
        memory = net.biosignals(fixture_a["signals"])[1]
        for modality in (1, None):
            reference = net.logits_from_memory(memory, ids, modality)
            state = net.start_decoding(memory, modality, max_len=31)
            stepped = torch.stack([net.decode_step(state, ids[:, t]) for t in range(31)], dim=1)
            assert max_diff(stepped, reference) <= TOL


def test_cache_growth_beyond_its_first_reservation_keeps_results_exact():
    """Captions longer than the cache's first 64 positions (it doubles) still equal teacher forcing."""
    config = get_model_config("sleeplm_tiny").to_dict()
    config["text_cfg"]["context_length"] = config["multimodal_cfg"]["context_length"] = 160
    torch.manual_seed(0)
    model = build_model(config)
    x = torch.randn(2, 10, 1920)
    with torch.no_grad():
        generated = model.generate(x, 3, max_new_tokens=150, min_len=151)
        assert generated.shape == (2, 151)
        logits = model.caption_logits(x, generated, 3)
    assert torch.equal(logits.argmax(-1), generated[:, 1:])  # greedy picks are the teacher-forced argmax
