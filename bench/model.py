"""Benchmark: the full-size SleepLM network (random weights) on this CPU.

Prints, in one run:
- a measured matmul peak (fp32 and bf16 GFLOP/s) to compare against;
- signal encoding: epochs/s of `encode_signals` vs the reference demo's encode path (which runs a
  dummy "." caption through the text tower and the decoder as well), FLOP/s as a fraction of peak;
- captions: tokens/s of batched, KV-cached greedy and beam decoding vs the reference-style path
  without cache (one epoch at a time, whole sequence recomputed and projected to the vocabulary
  every token), the per-epoch speed-up, and whether the tokens are identical;
- bf16 autocast: speed and agreement with fp32 (embedding differences, identical caption tokens);
- peak memory (max RSS) and the time a 960-epoch (8-h) night takes, extrapolated from the
  measured batches (the printout says which figures are extrapolated).

Run: ``nice .venv/bin/python bench/model.py [--threads 2] [--encode-batch 8] [--caption-epochs 32]
[--caption-tokens 32] [--uncached-tokens 16]``. Building the model takes ~1.5 GB.
``--quick`` runs every part on the tiny packaged config in seconds (checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sleeplm.model.config import DEFAULT_MODEL, RELEASED_OVERRIDES, TINY_MODEL
from sleeplm.model.inference import beam_search
from sleeplm.model.network import SOT_TOKEN_ID, SleepLMModel, build_model
from sleeplm.model.tokenizer import get_tokenizer

NIGHT_EPOCHS = 960
STAGE_EVENT = 4


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """Best wall time of `repeats` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def flops_of(fn) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(False), counter:  # its module hooks need autograd (one epoch: small graph)
        fn()
    return float(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    seconds, _ = timed(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds


def demo_encode_path(net: SleepLMModel, x: torch.Tensor, dot_ids: torch.Tensor) -> torch.Tensor:
    """The reference demo's encode_signals: a full forward with a "." caption per epoch."""
    latent, memory = net.biosignals(x)
    net.logits_from_memory(memory, dot_ids, STAGE_EVENT)
    return torch.nn.functional.normalize(latent, dim=-1)


def uncached_greedy(net: SleepLMModel, memory: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Reference-style decoding: recompute text tower + decoder over the whole prefix each token.

    One row per memory row: one epoch for greedy, or one epoch's memory repeated per beam, which is
    what the reference's beam search computes each step (its 3 beams run as a batch of 3).
    """
    ids = torch.full((memory.shape[0], 1), SOT_TOKEN_ID)
    condition = net.condition(STAGE_EVENT, memory.shape[0])
    for _ in range(new_tokens):
        _, tokens = net.text(ids)
        logits = net.text_decoder(memory, tokens, condition)  # every position projected, as the reference does
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def verdict(value: float, target: float) -> str:
    return f"target >= {target:g}x {'met' if value >= target else 'NOT met'}"


def uncached_step_seconds(net: SleepLMModel, memory: torch.Tensor, length: int) -> float:
    ids = torch.randint(1, 49000, (1, length))
    ids[0, 0] = SOT_TOKEN_ID
    condition = net.condition(STAGE_EVENT, 1)

    def step():
        _, tokens = net.text(ids)
        return net.text_decoder(memory, tokens, condition)[:, -1].argmax(-1)

    return timed(step)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encode-batch", type=int, default=8, help="epochs per timed encoding batch")
    parser.add_argument("--caption-epochs", type=int, default=32, help="epochs captioned together (cached)")
    parser.add_argument("--caption-tokens", type=int, default=32, help="new tokens per caption (eos banned)")
    parser.add_argument("--uncached-tokens", type=int, default=16, help="new tokens for the no-cache path")
    parser.add_argument("--quick", action="store_true",
                        help="tiny packaged config and small sizes: checks that every part runs (seconds)")
    args = parser.parse_args()
    if args.quick:
        args.encode_batch, args.caption_epochs, args.caption_tokens, args.uncached_tokens = 2, 4, 8, 4
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes share them)")

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak (2048^3): fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s")

    start = time.perf_counter()
    net = build_model(TINY_MODEL) if args.quick else build_model(DEFAULT_MODEL, **RELEASED_OVERRIDES)
    print(f"build {'TINY (--quick)' if args.quick else 'full'} model (random weights): {time.perf_counter() - start:.1f} s, "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, max RSS {peak_rss_gb():.2f} GB")

    x = torch.randn(args.encode_batch, 10, 1920)
    dot_ids = get_tokenizer(net.context_length)(["."] * args.encode_batch)
    with torch.inference_mode():
        # ---------------------------------------------------------------- encoding
        net.encode_signals(x[:1])  # warm-up
        enc_flops = flops_of(lambda: net.encode_signals(x[:1]))
        demo_flops = flops_of(lambda: demo_encode_path(net, x[:1], dot_ids[:1]))
        t_enc, emb = timed(lambda: net.encode_signals(x))
        t_demo, emb_demo = timed(lambda: demo_encode_path(net, x, dot_ids))
        assert torch.allclose(emb, emb_demo, atol=1e-5)
        eps_ours, eps_demo = args.encode_batch / t_enc, args.encode_batch / t_demo
        print(f"\nencoding, batch {args.encode_batch}: ours {eps_ours:.2f} epochs/s ({1 / eps_ours:.2f} s/epoch), "
              f"demo path {eps_demo:.2f} epochs/s ({1 / eps_demo:.2f} s/epoch) -> {eps_ours / eps_demo:.2f}x "
              f"({verdict(eps_ours / eps_demo, 2)})")
        print(f"  FLOPs/epoch: encoder {enc_flops / 1e9:.1f} G, demo path {demo_flops / 1e9:.1f} G; achieved "
              f"{enc_flops * eps_ours / 1e9:.1f} GFLOP/s = {enc_flops * eps_ours / peak32:.0%} of fp32 matmul peak")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net.encode_signals(x[:1])
            t_bf16, emb_bf16 = timed(lambda: net.encode_signals(x))
        emb_bf16 = torch.nn.functional.normalize(emb_bf16.float(), dim=-1)
        cosine = (emb_bf16 * emb).sum(-1)
        print(f"  bf16 autocast: {args.encode_batch / t_bf16:.2f} epochs/s ({t_enc / t_bf16:.2f}x fp32); "
              f"agreement with fp32: max |diff| {(emb_bf16 - emb).abs().max():.4f}, min cosine {cosine.min():.5f}")
        print(f"  max RSS {peak_rss_gb():.2f} GB")

        # ---------------------------------------------------------------- captions
        B, T = args.caption_epochs, args.caption_tokens
        _, memory = net.biosignals(torch.randn(B, 10, 1920))
        no_eos = T + 1  # ban end-of-text so every caption has exactly T new tokens
        t_greedy, greedy = timed(lambda: net.generate_from_memory(memory, STAGE_EVENT, T, min_len=no_eos))
        t_beam, _ = timed(lambda: beam_search(net, memory, STAGE_EVENT, 3, T, min_len=no_eos))
        t_single, _ = timed(lambda: net.generate_from_memory(memory[:1], STAGE_EVENT, T, min_len=no_eos))
        U = min(args.uncached_tokens, T)
        t_uncached, reference_ids = timed(lambda: uncached_greedy(net, memory[:1], U))
        t_uncached_beam, _ = timed(lambda: uncached_greedy(net, memory[:1].expand(3, -1, -1), U))
        identical = torch.equal(reference_ids[0], greedy[0, : U + 1])
        tps_greedy, tps_beam = B * T / t_greedy, B * T / t_beam
        tps_single, tps_uncached, tps_uncached_beam = T / t_single, U / t_uncached, U / t_uncached_beam
        print(f"\ncaptions ({T} new tokens, eos banned; uncached path {U} tokens, 1 epoch at a time):")
        print(f"  cached greedy, batch {B}: {tps_greedy:.1f} tokens/s ({t_greedy / B:.2f} s/epoch)")
        print(f"  cached greedy, batch 1: {tps_single:.1f} tokens/s")
        print(f"  cached beam (3 beams), batch {B}: {tps_beam:.1f} tokens/s ({t_beam / B:.2f} s/epoch)")
        print(f"  uncached greedy (reference style): {tps_uncached:.2f} tokens/s over the first {U} tokens")
        print(f"  uncached beam (reference style, 3 beams as a batch of 3): {tps_uncached_beam:.2f} tokens/s")
        print(f"  identical tokens (uncached vs cached batch): {identical}")
        print(f"  speed-up per token, first {U} tokens: batched cached greedy {tps_greedy / tps_uncached:.1f}x, "
              f"unbatched cached {tps_single / tps_uncached:.1f}x; cached beam vs uncached beam "
              f"{tps_beam / tps_uncached_beam:.1f}x")

        # The no-cache cost grows with length: measure single steps at a few lengths, integrate.
        lengths = sorted({min(n, net.context_length - 1) for n in (1, 64, 128, 255)})
        step = {n: uncached_step_seconds(net, memory[:1], n) for n in lengths}
        print("  uncached step time by prefix length: " + ", ".join(f"{n}: {s:.2f} s" for n, s in step.items()))
        per_token = np.interp(np.arange(1, net.context_length), lengths, [step[n] for n in lengths])
        for n_tokens in sorted({min(100, net.context_length - 1), net.context_length - 1}):
            uncached_caption = float(per_token[:n_tokens].sum())
            # Cached cost per token is nearly flat in length; extrapolated linearly from the measured batch.
            cached_caption = n_tokens * t_greedy / (B * T)
            print(f"  {n_tokens}-token caption per epoch: uncached {uncached_caption:.1f} s (interpolated from the "
                  f"step times), batched cached {cached_caption:.2f} s (extrapolated) -> "
                  f"{uncached_caption / cached_caption:.0f}x ({verdict(uncached_caption / cached_caption, 20)})")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t_greedy16, greedy16 = timed(lambda: net.generate_from_memory(memory, STAGE_EVENT, T, min_len=no_eos))
        same = (greedy16 == greedy).float().mean().item()
        print(f"  bf16 autocast greedy: {B * T / t_greedy16:.1f} tokens/s ({t_greedy / t_greedy16:.2f}x fp32); "
              f"tokens identical to fp32: {same:.1%} (random weights: near-tied logits flip easily)")
        print(f"  max RSS {peak_rss_gb():.2f} GB")

    # ---------------------------------------------------------------- a whole night
    encode_night = NIGHT_EPOCHS / eps_ours
    print(f"\n8-h night ({NIGHT_EPOCHS} epochs) on {args.threads} threads, extrapolated from the batches above:")
    print(f"  embeddings: {encode_night / 60:.1f} min (reference demo path: {NIGHT_EPOCHS / eps_demo / 60:.1f} min)")
    for n_tokens in (50, 100):
        night = NIGHT_EPOCHS * n_tokens * t_greedy / (B * T)
        print(f"  one domain's captions at {n_tokens} tokens/epoch: {night / 3600:.1f} h cached+batched")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
