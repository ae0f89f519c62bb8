"""Write tests/data/fixture_b.pt and fixture_tokenizer_reference.json with the reference SleepLM code.

The reference is github:yang-ai-lab/SleepLM @ f788466.

A second tiny configuration, unlike fixture_a in every size (widths 12, heads 2/3/4, prefix 3,
patch 32, 2 temporal layers per block, 3 decoder memory tokens) and with a separate learnable
channel RoPE per block (share_channel_rope false). The procedure is FIXTURES.md's, restricted to
what the reference forward pass produces: the reference `generate()` needs transformers 4.x
(not installed here), so the top-k and beam outputs are absent; `argmax_loop_20` is there.

The tokenizer file holds the reference SimpleTokenizer's ids and decoding of varied texts.

Run: ``.venv/bin/python tests/data/fixture_make.py /path/to/SleepLM/src`` (not a test; needs
nothing beyond torch and the reference source tree, whose package is `open_clip`).
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

SEED = 7
CONFIG = {
    "embed_dim": 10,
    "multimodal_cfg": {"width": 12, "context_length": 24, "mlp_ratio": 2, "layers": 3, "heads": 4},
    "biosignals_cfg": {
        "architecture": "pure_transformer", "input_channels": 10, "signal_length": 1920, "sampling_rate": 64,
        "patch_size": 32, "conv_embed_dim": 6, "num_temporal_layers": 2, "activation": "swiglu",
        "norm_type": "rmsnorm", "mlp_bias": False, "share_channel_rope": False, "transformer_layers": 3,
        "transformer_width": 12, "transformer_heads": 2, "mlp_ratio": 2.5, "pool_type": "attn", "dropout": 0.1,
        "decoder_tokens": 3,
    },
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "layers": 1, "heads": 3, "width": 12,
                 "embed_cls": True, "output_tokens": True},
    "prefix_len": 3,
    "num_caption_channels": 5,
    "decoder_type": "cross_attention",
}
CAPTIONS = ["Stage N2 sleep with spindles and K-complexes.", "Regular heart rhythm, no arousal!", "."]
TOKENIZER_TEXTS = [
    *CAPTIONS, "", "Don't stop: it's 3:45am — SpO2 dropped to 87% (ΔSpO₂ ≥ 4%)!!", "Café ünïcode naïve 😴 sleep 💤",
    "&amp;lt;b&amp;gt; html &quot;quoted&quot;", "  multiple\t\nspaces   ",
    "THE QUICK BROWN FOX jumps over 1234567890 lazy dogs; 3.14159", "中文 日本語 한국어",
    "obstructive sleep apnea with oxygen desaturation and arousal " * 12,
    "REM sleep with rapid eye movements, sawtooth waves, and low chin EMG tone.",
    "hypopnea/apnea-index=12.5/h; AHI>15", "ECG: HR 62 bpm, sinus rhythm; PVCs x3", "l'été était très chaud",
    "a" * 300, "N1→N2→N3→REM", "'quoted' \"double\" `back`",
]


def main(reference_src: str) -> None:
    sys.path.insert(0, reference_src)
    from open_clip import SimpleTokenizer
    from open_clip.biosignals_coca_model import BiosignalsCoCa

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    model = BiosignalsCoCa(**CONFIG, cast_dtype=None)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p += torch.randn_like(p) * (0.1 if p.ndim <= 1 else 0.02)
    model.eval()

    g = torch.Generator().manual_seed(1000 + SEED)
    x = torch.randn(3, 10, 1920, generator=g) * torch.linspace(0.5, 3, 10)[None, :, None] + 1.5
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)
    for b, code in enumerate((2.0, 0.0, -1.0)):
        x[b, 9] = code
    missing = x.clone()
    missing[0, [4, 5]] = 0
    missing[1, 0] = 0
    missing[2, [1, 2, 3]] = 0

    ctx, prefix = CONFIG["text_cfg"]["context_length"], CONFIG["prefix_len"]
    tokenizer = SimpleTokenizer(context_length=ctx)
    text_ids = tokenizer(CAPTIONS)
    subset = torch.unique(torch.cat([text_ids.flatten(), torch.tensor([0, 49406, 49407]),
                                     torch.randint(0, 49408, (200,), generator=g)]))

    def condition(m):
        return torch.tensor([[m] + [-1] * (prefix - 1)] * 3)

    out = {"config": CONFIG, "seed": SEED, "state_dict": model.state_dict(), "torch_version": str(torch.__version__),
           "signals": x, "signals_missing_channels": missing, "captions": CAPTIONS, "text_ids": text_ids,
           "sot_token_id": 49406, "eot_token_id": 49407, "pad_token_id": 0, "logits_vocab_subset": subset}
    with torch.no_grad():
        plain = model(x)
        out["signal_emb_norm"], out["signal_decoder_tokens"] = plain["image_features"], plain["image_embs"]
        out["signal_emb_unnorm"] = model.biosignals(x)[0]
        demo = model(x, tokenizer(["."] * 3), channel_indices=condition(4))
        out["signal_emb_norm_demo_path"] = F.normalize(demo["image_features"], dim=-1)
        out["signal_emb_norm_missing_channels"] = model.encode_image(missing)
        out["text_emb_norm"] = model.encode_text(text_ids)
        out["text_emb_unnorm"], out["text_token_embs"] = model.text(text_ids)

        teacher = {}
        for m in [0, 1, 2, 3, 4, None]:
            ci = None if m is None else condition(m)
            o = model(x, text_ids, channel_indices=ci)
            logits = o["logits"]
            entry = {"channel_indices": ci, "logits_subset": logits[..., subset],
                     "logsumexp": logits.logsumexp(-1), "argmax": logits.argmax(-1)}
            if m is not None:
                top = logits.topk(5, dim=-1)
                entry.update(top5_values=top.values, top5_indices=top.indices, labels=o["labels"],
                             label_logprob=logits.log_softmax(-1).gather(-1, o["labels"][..., None])[..., 0],
                             image_features=o["image_features"], text_features=o["text_features"],
                             logit_scale_exp=o["logit_scale"])
            teacher["no_condition" if m is None else m] = entry
        full = model(x, text_ids, channel_indices=condition(4))["logits"][1, :12]
        teacher["full_logits_modality4_sample1_first12pos"] = full
        out["teacher_forced"] = teacher
        out["logit_scale"] = model.logit_scale.detach().clone()

        generation = {}
        for m in range(5):
            ids = torch.full((3, 1), 49406)
            for _ in range(20):
                step = model(x, ids, channel_indices=condition(m), output_labels=False)["logits"][:, -1]
                ids = torch.cat([ids, step.argmax(-1, keepdim=True)], dim=1)
            generation[m] = {"argmax_loop_20": ids}
        out["generation"] = generation
    # Clone views (e.g. one row of the full logits) so that only their own elements are saved.
    out = _compact(out)
    torch.save(out, Path(__file__).with_name("fixture_b.pt"))


def _compact(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    return value


def write_tokenizer_reference() -> None:
    from open_clip import SimpleTokenizer

    tokenizer, cases = SimpleTokenizer(context_length=256), []
    for text in TOKENIZER_TEXTS:
        ids = tokenizer([text])[0].tolist()
        ids = ids[: ids.index(49407) + 1]  # through end-of-text; the rest is padding
        decoded = tokenizer.decode([i for i in ids if i not in (0, 49406, 49407)]).strip()
        cases.append({"text": text, "ids": ids, "decoded": decoded})
    source = "open_clip SimpleTokenizer of github:yang-ai-lab/SleepLM @ f788466, context 256"
    path = Path(__file__).with_name("fixture_tokenizer_reference.json")
    path.write_text(json.dumps({"source": source, "cases": cases}, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
    write_tokenizer_reference()
