"""bfloat16 for the signal encoder, only where the hardware makes it fast and the result agrees with fp32.

On CPUs with native bf16 instructions (avx512_bf16 / amx_bf16) a bf16 matmul runs several times
faster than fp32; on AVX2-only CPUs torch emulates bf16 and it runs ~60x *slower* (STACK.md).
So nothing is assumed: `bf16_is_fast` reads the CPU's flags and times a short matmul
calibration. When bf16 is fast, `bf16_encoder` stores the signal encoder's weights in bf16
(half their memory) and keeps them only if the embeddings and the caption memory tokens of a
fixed probe agree with the fp32 ones (cosine >= `MIN_COSINE`); otherwise the fp32 weights are
put back unchanged. The text tower and the caption decoder stay fp32.
``SLEEPLM_PRECISION`` = auto (default: that decision), fp32 or bf16 (forced) overrides it.

Kept in fp32 inside the encoder: the rotary-position frequencies (bf16 angles at position
119 would be off by up to ~0.5 rad) and the RMSNorm weights (tiny; the norm is computed in fp32).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sleeplm.model.network import RMSNorm, RotaryEmbedding

__all__ = ["PRECISION_ENV", "MIN_COSINE", "MIN_SPEEDUP", "PROBE_EPOCHS", "Bf16Decision", "bf16_is_fast", "bf16_speedup",
           "cast_encoder", "bf16_encoder"]

logger = logging.getLogger(__name__)

PRECISION_ENV = "SLEEPLM_PRECISION"
# Lowest cosine between a bf16 and the fp32 output (embedding, or any caption memory token) of the probe.
MIN_COSINE = 0.999
# bf16 is used when a bf16 matmul is at least this much faster than fp32 (native bf16: 3-6x; emulated: 0.02x).
MIN_SPEEDUP = 1.5
PROBE_EPOCHS = 4
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass
class Bf16Decision:
    """Whether the encoder runs in bf16, why, and the agreement figures behind it (None when not checked)."""

    use_bf16: bool
    reason: str
    min_cosine_embedding: float | None = None
    min_cosine_memory: float | None = None


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_speedup(size: int = 256, rounds: int = 5, seconds: float = 0.01) -> float:
    """Measured bf16 / fp32 matmul throughput on this CPU (a ~0.1-s calibration with the current threads).

    The two precisions are timed in alternating short rounds and each keeps its best round, so a
    burst of other work on a shared machine lowers neither alone (one sequential pair of timings read
    anywhere from 1.5x to 22x on the same CPU while other processes ran).

    Examples
    --------
    >>> bf16_speedup() > 0
    True
    """
    operands = {dtype: (torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype))
                for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(operands, 0.0)
    for a, b in operands.values():
        torch.mm(a, b)  # warm-up
    for _ in range(rounds):
        for dtype, (a, b) in operands.items():
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                torch.mm(a, b)
                count += 1
            best[dtype] = max(best[dtype], count / (time.perf_counter() - start))
    return best[torch.bfloat16] / best[torch.float32]


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device: str = "cpu") -> tuple[bool, str]:
    """(True, why) when bf16 compute is fast on `device`: a GPU that supports it, or a CPU with native
    bf16 instructions whose measured bf16 matmul beats fp32 by `MIN_SPEEDUP`; else (False, why).

    Examples
    --------
    >>> fast, why = bf16_is_fast("cpu")
    >>> isinstance(fast, bool) and bool(why)
    True
    """
    if device.startswith("cuda"):
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return supported, f"GPU {'supports' if supported else 'does not support'} bf16"
    if device != "cpu":
        return False, f"bf16 is not used on device {device!r}"
    flags = _cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    if flags is not None and not flags.intersection(_BF16_FLAGS):
        return False, f"CPU without native bf16 ({capability}, no {' / '.join(_BF16_FLAGS)} flag): fp32 is faster"
    speedup = bf16_speedup()
    named = "flags " + ", ".join(sorted(flags.intersection(_BF16_FLAGS))) if flags else "flags unknown"
    if speedup < MIN_SPEEDUP:
        return False, f"bf16 matmul measured at {speedup:.2f}x fp32 ({capability}, {named}): fp32 kept"
    return True, f"bf16 matmul measured at {speedup:.1f}x fp32 ({capability}, {named})"


def cast_encoder(encoder: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast the encoder's weights (all but RoPE frequencies and norm weights) to `dtype`, in place.

    Returns the parameters it replaced by name, so that they can be put back unchanged.
    The RoPE modules (also the tied, shared channel RoPE) and the norms keep their fp32 tensors.

    Examples
    --------
    >>> from sleeplm.model.network import build_model
    >>> encoder = build_model("sleeplm_tiny").biosignals
    >>> replaced = cast_encoder(encoder, torch.bfloat16)
    >>> encoder.embed_projection.weight.dtype, encoder.ln_final.weight.dtype, replaced["embed_projection.weight"].dtype
    (torch.bfloat16, torch.float32, torch.float32)
    """
    replaced = {}
    for module_name, module in encoder.named_modules():
        if isinstance(module, (RMSNorm, RotaryEmbedding)):
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            full = f"{module_name}.{name}" if module_name else name
            if param.is_floating_point() and param.dtype != dtype:
                replaced[full] = param
                setattr(module, name, nn.Parameter(param.detach().to(dtype), requires_grad=False))
    return replaced


def _restore(encoder: nn.Module, replaced: dict[str, torch.Tensor]) -> None:
    for full, param in replaced.items():
        module_name, _, name = full.rpartition(".")
        setattr(encoder.get_submodule(module_name) if module_name else encoder, name, param)


def _agreement(encoder: nn.Module, reference: tuple[torch.Tensor, torch.Tensor], probe: torch.Tensor,
                      device_type: str) -> tuple[float, float]:
    """Lowest cosine of the probe's embeddings and memory tokens, computed now (bf16), against `reference` (fp32)."""
    with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16):
        latent, memory = encoder(probe)
    cos = nn.functional.cosine_similarity
    return (float(cos(latent.float(), reference[0], dim=-1).min()),
            float(cos(memory.float(), reference[1], dim=-1).min()))


def bf16_encoder(encoder: nn.Module, input_shape: tuple[int, int], device: str = "cpu", seed: int = 0) -> Bf16Decision:
    """Store `encoder`'s weights in bf16 when bf16 is fast on `device` and agrees with fp32; else leave them.

    Agreement: a fixed probe of `PROBE_EPOCHS` random (z-scored-like, N(0, 1)) epochs of
    `input_shape` (channels, samples) is encoded in fp32 and in bf16; bf16 stays only when every
    embedding and every caption memory token has cosine >= `MIN_COSINE` with its fp32 counterpart.
    Bf16 weights then need `torch.autocast` around the encoder (as `SleepLM` does).

    Examples
    --------
    >>> from sleeplm.model.network import build_model
    >>> encoder = build_model("sleeplm_tiny").biosignals
    >>> decision = bf16_encoder(encoder, (10, 1920))
    >>> decision.use_bf16 == (encoder.embed_projection.weight.dtype == torch.bfloat16)
    True
    >>> decision.use_bf16 == (bf16_is_fast("cpu")[0] and decision.min_cosine_embedding >= MIN_COSINE)
    True
    """
    fast, why = bf16_is_fast(device)
    if not fast:
        return Bf16Decision(False, why)
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randn(PROBE_EPOCHS, *input_shape, generator=generator).to(device)
    with torch.inference_mode():
        latent, memory = encoder(probe)
    replaced = cast_encoder(encoder, torch.bfloat16)
    cos_embedding, cos_memory = _agreement(encoder, (latent.float(), memory.float()), probe,
                                                  torch.device(device).type)
    if min(cos_embedding, cos_memory) < MIN_COSINE:
        _restore(encoder, replaced)
        return Bf16Decision(False, f"{why}, but bf16 disagreed with fp32 on the probe (min cosine embedding "
                                   f"{cos_embedding:.5f}, memory {cos_memory:.5f} < {MIN_COSINE}): fp32 kept",
                            cos_embedding, cos_memory)
    return Bf16Decision(True, f"{why}; probe agreement min cosine embedding {cos_embedding:.5f}, memory "
                              f"{cos_memory:.5f} (>= {MIN_COSINE})", cos_embedding, cos_memory)
