"""The SleepLM network against the reference: state-dict layout and every stored output of every fixture."""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path

import pytest
import torch
from conftest import caption_logits, generate

from sleeplm.model.config import DEFAULT_MODEL, SleepLMConfig, get_model_config, list_models
from sleeplm.errors import CheckpointError
from sleeplm.model.network import EOT_TOKEN_ID, PAD_TOKEN_ID, SOT_TOKEN_ID, SleepLMRequestError, build_model

DATA = Path(__file__).parent / "data"
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert len(ours) == manifest["num_state_dict_entries"] == 557
    assert all(dtype == "float32" for _, _, dtype in ours)
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters_model_parameters"]
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["total_numel_state_dict"]
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


def test_reference_json_builds_as_is():
    """The packaged JSON is the reference file byte for byte; as a plain dict it builds with its own 12/1."""
    raw = json.loads(resources.files("sleeplm.model").joinpath("model_configs", f"{DEFAULT_MODEL}.json").read_text())
    with torch.device("meta"):
        model = build_model(raw)
    assert model.channel_embeddings.shape == (12, 768) and model.text_decoder.prefix_len == 1
    assert len(model.state_dict()) == 557


def test_overrides_and_json_values():
    raw = get_model_config("sleep_coca_base_dualtransformer")
    assert (raw.prefix_len, raw.num_caption_channels) == (1, 12)  # the JSON as shipped
    with torch.device("meta"):
        model = build_model(raw.to_dict(), prefix_len=3, num_caption_channels=4)
    assert model.channel_embeddings.shape == (4, 768)
    assert model.text_decoder.prefix_causal_mask.shape == (3 + 256, 3 + 256)
    assert {"sleep_coca_base_dualtransformer", "sleeplm_tiny"} <= set(list_models())


def test_missing_keys_take_the_reference_defaults():
    """open_clip's CLIPTextCfg/MultimodalCfg and SleepLM's BiosignalsCfg defaults; prefix_len 0."""
    cfg = SleepLMConfig.from_dict({"embed_dim": 64, "text_cfg": {"embed_cls": True}, "biosignals_cfg": {
        "architecture": "pure_transformer", "transformer_width": 512, "transformer_heads": 8}})  # widths must agree
    assert (cfg.text.context_length, cfg.text.width, cfg.text.heads, cfg.text.layers) == (77, 512, 8, 12)
    assert (cfg.multimodal.context_length, cfg.multimodal.width, cfg.multimodal.heads) == (77, 512, 8)
    bio = cfg.biosignals
    assert (bio.input_channels, bio.signal_length, bio.patch_size, bio.transformer_layers) == (12, 1000, 32, 6)
    assert (bio.num_temporal_layers, bio.mlp_ratio, cfg.prefix_len, cfg.num_caption_channels) == (2, 4.0, 0, 12)


def test_bad_configs_are_clear_errors():
    base = get_model_config("sleeplm_tiny").to_dict()
    for section, key, value in [("text_cfg", "ls_init_value", 1e-4), ("multimodal_cfg", "proj_bias", True),
                                (None, "decoder_type", "concat"), (None, "use_signal_decoder", True)]:
        cfg = json.loads(json.dumps(base))
        (cfg[section] if section else cfg)[key] = value
        with pytest.raises(CheckpointError, match=f"{key}={value!r}"):
            build_model(cfg)
    no_architecture = json.loads(json.dumps(base))
    del no_architecture["biosignals_cfg"]["architecture"]  # the reference default is a conv encoder
    with pytest.raises(CheckpointError, match="conv_transformer"):
        build_model(no_architecture)
    with pytest.raises(SleepLMRequestError, match="outside 0..4"):
        build_model("sleeplm_tiny").condition(5, batch=1)

    with pytest.raises(CheckpointError, match="Unknown model config override"):
        build_model("sleeplm_tiny", num_layers=3)
    with pytest.raises(CheckpointError, match="No model config named"):
        get_model_config("sleeplm_huge")
    bad = get_model_config("sleeplm_tiny").to_dict()
    bad["biosignals_cfg"]["transformer_heads"] = 3
    with pytest.raises(CheckpointError, match="not divisible"):
        SleepLMConfig.from_dict(bad)


# ---- reference fixtures: numerical equivalence with the reference implementation ------------
# Every tests/data/fixture_<name>.pt in the FIXTURES.md format is checked, whatever its configuration:
# fixture_a (from ../shared/reference) and fixture_b (written by tests/data/fixture_make.py with the
# reference code: other widths/heads/layers/patch/prefix, unshared channel RoPE, 2 temporal layers).
FIXTURE_FILES = sorted(p for p in DATA.glob("fixture_*.pt") if not p.stem.endswith("_beam_eos"))
EOS_FILES = sorted(DATA.glob("fixture_*_beam_eos.pt"))
CHECKED_TOP = {"config", "seed", "state_dict", "state_dict_bytes", "torch_version", "transformers_version",
               "signals", "signals_missing_channels", "captions", "text_ids", "sot_token_id", "eot_token_id",
               "pad_token_id", "signal_emb_norm", "signal_decoder_tokens", "signal_emb_unnorm",
               "signal_emb_norm_demo_path", "signal_emb_norm_missing_channels", "text_emb_norm", "text_emb_unnorm",
               "text_token_embs", "logits_vocab_subset", "teacher_forced", "logit_scale", "generation"}
CHECKED_TEACHER = {"channel_indices", "logits_subset", "logsumexp", "argmax", "top5_values", "top5_indices",
                   "label_logprob", "labels", "image_features", "text_features", "logit_scale_exp"}


@functools.lru_cache(maxsize=None)
def load_fixture(path: Path) -> tuple[dict, torch.nn.Module]:
    stored = torch.load(path, weights_only=True)
    model = build_model(stored["config"])
    model.load_state_dict(stored["state_dict"], strict=True)
    return stored, model


@pytest.fixture(params=FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def ref(request):
    return load_fixture(request.param)


def modality_of(entry: dict) -> int:
    """The modality id of stored channel_indices, which must be our condition layout [[m, -1, ...]] per row."""
    ci = entry["channel_indices"]
    m = int(ci[0, 0])
    assert (ci[:, 0] == m).all() and (ci[:, 1:] == -1).all(), ci
    return m


def test_fixture_files_are_present_and_every_stored_output_is_checked():
    assert [p.name for p in FIXTURE_FILES][:2] == ["fixture_a.pt", "fixture_b.pt"] and EOS_FILES
    for path in FIXTURE_FILES:
        stored, _ = load_fixture(path)
        assert set(stored) <= CHECKED_TOP, f"{path.name}: unchecked outputs {set(stored) - CHECKED_TOP}"
        for key, entry in stored["teacher_forced"].items():
            if isinstance(entry, dict):
                assert set(entry) <= CHECKED_TEACHER, f"{path.name} {key}: unchecked {set(entry) - CHECKED_TEACHER}"
        for entry in stored["generation"].values():
            assert all(re.fullmatch(r"argmax_loop_\d+|generate_topk1_seq\d+|beam_demo_settings_seq\d+", k)
                       for k in entry), entry.keys()


def test_special_token_ids(ref):
    stored, _ = ref
    assert (stored["sot_token_id"], stored["eot_token_id"], stored["pad_token_id"]) == (
        SOT_TOKEN_ID, EOT_TOKEN_ID, PAD_TOKEN_ID)


def test_signal_embeddings(ref):
    stored, net = ref
    with torch.no_grad():
        x = stored["signals"]
        assert max_diff(net.encode_signals(x), stored["signal_emb_norm"]) <= TOL
        assert max_diff(net.encode_signals(x), stored["signal_emb_norm_demo_path"]) <= TOL
        assert max_diff(net.encode_signals(x, normalize=False), stored["signal_emb_unnorm"]) <= TOL
        assert max_diff(net.biosignals(x)[1], stored["signal_decoder_tokens"]) <= TOL
        missing = net.encode_signals(stored["signals_missing_channels"])
        assert max_diff(missing, stored["signal_emb_norm_missing_channels"]) <= TOL
        assert torch.allclose(missing.norm(dim=-1), torch.ones(len(missing)), atol=1e-6)


def test_text_embeddings(ref):
    stored, net = ref
    with torch.no_grad():
        ids = stored["text_ids"]
        assert max_diff(net.encode_text(ids), stored["text_emb_norm"]) <= TOL
        latent, tokens = net.text(ids)
        assert max_diff(latent, stored["text_emb_unnorm"]) <= TOL
        assert max_diff(tokens, stored["text_token_embs"]) <= TOL
    assert max_diff(net.logit_scale, stored["logit_scale"]) <= TOL


def test_teacher_forced_logits_for_every_condition(ref):
    stored, net = ref
    x, ids = stored["signals"], stored["text_ids"]
    conditions = {k: v for k, v in stored["teacher_forced"].items() if isinstance(v, dict)}
    assert "no_condition" in conditions and len(conditions) >= 6
    for key, entry in conditions.items():
        modality = None if key == "no_condition" else modality_of(entry)
        assert modality == (None if key == "no_condition" else key)
        with torch.no_grad():
            logits = caption_logits(net, x, ids, modality)
        assert logits.shape == (len(x), ids.shape[1] - 1, net.config.text.vocab_size)
        assert max_diff(logits[..., stored["logits_vocab_subset"]], entry["logits_subset"]) <= TOL, key
        assert max_diff(logits.logsumexp(-1), entry["logsumexp"]) <= TOL, key
        assert torch.equal(logits.argmax(-1), entry["argmax"]), key
        if modality is None:
            continue
        assert torch.equal(ids[:, 1:], entry["labels"])
        label_logprob = logits.log_softmax(-1).gather(-1, entry["labels"][..., None])[..., 0]
        assert max_diff(label_logprob, entry["label_logprob"]) <= TOL
        top = logits.topk(5, dim=-1)
        assert max_diff(top.values, entry["top5_values"]) <= TOL
        assert torch.equal(top.indices, entry["top5_indices"])
        # The reference's captioning forward also returns both embeddings (unaffected by the condition).
        with torch.no_grad():
            assert max_diff(net.encode_signals(x), entry["image_features"]) <= TOL
            assert max_diff(net.encode_text(ids), entry["text_features"]) <= TOL
        assert max_diff(net.logit_scale.exp(), entry["logit_scale_exp"]) <= TOL


def test_full_logits_slice(ref):
    stored, net = ref
    expected = stored["teacher_forced"]["full_logits_modality4_sample1_first12pos"]
    with torch.no_grad():
        logits = caption_logits(net, stored["signals"], stored["text_ids"], 4)
    assert max_diff(logits[1, : len(expected)], expected) <= TOL


def test_generation_matches_reference(ref):
    stored, net = ref
    x = stored["signals"]
    assert set(stored["generation"]) == set(range(5))
    for modality, entry in stored["generation"].items():
        (loop_key,) = [k for k in entry if k.startswith("argmax_loop_")]
        with torch.no_grad():
            argmax_loop = generate(net, x, modality, max_new_tokens=int(loop_key.rsplit("_", 1)[1]), min_len=0)
        assert torch.equal(argmax_loop, entry[loop_key]), (modality, loop_key)
        for key, value in entry.items():
            if key.startswith("generate_topk1_seq"):
                # The reference top-k=1 sampler forces its last token to end-of-text; the others are greedy.
                n = int(key.removeprefix("generate_topk1_seq")) - 1
                with torch.no_grad():
                    greedy = generate(net, x, modality, max_new_tokens=n, min_len=0)
                assert torch.equal(greedy[:, :n], value[:, :n]) and (value[:, n] == EOT_TOKEN_ID).all()
            elif key.startswith("beam_demo_settings_seq"):
                # The demo's 3-beam/3-group search == greedy with end-of-text banned below 16 tokens.
                seq_len = int(key.removeprefix("beam_demo_settings_seq"))
                for b, beam in enumerate(value):
                    with torch.no_grad():
                        ours = generate(net, x[b : b + 1], modality, max_new_tokens=seq_len - 1, min_len=16)
                    assert torch.equal(ours, beam), (modality, b)


@pytest.mark.parametrize("eos_file", EOS_FILES, ids=[p.stem for p in EOS_FILES])
def test_demo_beam_search_with_end_of_text(eos_file):
    base, _ = load_fixture(eos_file.with_name(eos_file.name.replace("_beam_eos", "")))
    eos_case = torch.load(eos_file, weights_only=True)
    assert eos_case["override_key"] == f"text_decoder.text_projection[:, {EOT_TOKEN_ID}]"
    state = dict(base["state_dict"])
    projection = state["text_decoder.text_projection"].clone()
    projection[:, EOT_TOKEN_ID] = eos_case["override_value"]
    state["text_decoder.text_projection"] = projection
    model = build_model(base["config"])
    model.load_state_dict(state, strict=True)
    max_new = base["config"]["text_cfg"]["context_length"] - 3  # the fixture's seq_len ctx-2, start token included
    lengths = set()
    with torch.no_grad():
        for (modality, b), result in eos_case["results"].items():
            ours = generate(model, base["signals"][b : b + 1], modality, max_new_tokens=max_new, min_len=16)
            assert torch.equal(ours, result["beam"]), (modality, b)
            assert torch.equal(ours, result["greedy_minlen16"]), (modality, b)
            lengths.add(ours.shape[1])
        # A batch stops each row at its own end-of-text and pads the rest with 0.
        batch = generate(model, base["signals"], 2, max_new_tokens=max_new, min_len=16)
    assert len(lengths) > 1 and min(lengths) >= 17  # captions end at different lengths, never before 16 tokens
    for b in range(len(base["signals"])):
        single = eos_case["results"][(2, b)]["beam"][0]
        assert torch.equal(batch[b, : len(single)], single)
        assert (batch[b, len(single) :] == 0).all()
    assert batch[0, 0] == SOT_TOKEN_ID


def test_cached_decoding_equals_teacher_forcing_including_id_zero(ref):
    """Id 0 (also the character '!') hides the key after it (legacy padding mask), in the cache too."""
    stored, net = ref
    ids = stored["text_ids"].clone()
    ids[0, 5] = 0  # a real id 0 inside a caption; rows 1 and 2 end in padding
    steps = ids.shape[1] - 1
    with torch.no_grad():
        memory = net.biosignals(stored["signals"])[1]
        for modality in (1, None):
            reference = net.logits_from_memory(memory, ids, modality)
            state = net.start_decoding(memory, modality, max_len=steps)
            stepped = torch.stack([net.decode_step(state, ids[:, t]) for t in range(steps)], dim=1)
            assert max_diff(stepped, reference) <= TOL


def test_prefix_len_zero_is_the_unconditioned_decoder(ref):
    """With no condition tokens the decoder is plain causal: the fixture's no-condition logits, any prefix_len."""
    stored, _ = ref
    model = build_model(stored["config"], prefix_len=0)
    model.load_state_dict(stored["state_dict"], strict=True)  # the prefix length adds no parameters
    with torch.no_grad():
        logits = caption_logits(model, stored["signals"], stored["text_ids"], None)
    expected = stored["teacher_forced"]["no_condition"]["logits_subset"]
    assert max_diff(logits[..., stored["logits_vocab_subset"]], expected) <= TOL
    with pytest.raises(SleepLMRequestError, match="prefix_len 0"):
        caption_logits(model, stored["signals"], stored["text_ids"], 1)


def test_cache_growth_beyond_its_first_reservation_keeps_results_exact():
    """Captions longer than the cache's first 64 positions (it doubles) still equal teacher forcing."""
    config = get_model_config("sleeplm_tiny").to_dict()
    config["text_cfg"]["context_length"] = config["multimodal_cfg"]["context_length"] = 160
    torch.manual_seed(0)
    model = build_model(config)
    x = torch.randn(2, 10, 1920)
    with torch.no_grad():
        generated = generate(model, x, 3, max_new_tokens=150, min_len=151)
        assert generated.shape == (2, 151)
        logits = caption_logits(model, x, generated, 3)
    assert torch.equal(logits.argmax(-1), generated[:, 1:])  # greedy picks are the teacher-forced argmax
