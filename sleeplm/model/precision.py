"""The signal encoder's precision, chosen per machine: fast and faithful, never slower than fp32.

Machines differ (STACK.md): on a CPU with native bf16 (avx512_bf16 / AMX) bf16 runs the encoder
~3x faster than fp32; on an AVX2-only CPU torch emulates bf16 and it runs ~60x *slower*, while
int8 dynamic quantization of the Linear layers (`torch.ao.quantization.quantize_dynamic`, x86
engine) runs ~2x faster. So `choose_precision` ("auto") works in three steps:

1. **Flags** name one candidate per device (`candidate_for`): a CUDA GPU -> bf16 (fp16 where bf16
   is absent); a CPU with avx512_bf16 or amx_bf16 -> bf16; another x86 CPU -> int8.
2. **Calibration on the loaded network** (`calibrate`): the candidate is compared with fp32 on a
   fixed probe (`PROBE_EPOCHS` epochs, `probe_epochs`): signal-embedding min cosine >=
   `MIN_COSINE`, top-10 retrieval overlap >= `MIN_OVERLAP`/10 for every design-card query
   (`AGREEMENT_QUERIES`; ties within `SCORE_TOLERANCE` at the rank-10 boundary count as agreeing,
   `retrieval_overlap`), and greedy caption ids identical on `CAPTION_EPOCHS` of its epochs. The
   speed is measured on the same passes (`relative_speed`): each path first runs one epoch
   untimed (kernels for the new shapes), then the probe's batched fp32 pass and the candidate's
   are timed (best of two rounds when a pass is shorter than `REPEAT_BELOW_S`). Its cost is
   those two probe passes and one greedy decode of both paths' captions as one batch; at full size
   on 2 CPU cores the fp32 pass alone takes several seconds (README, bench/model.py).
3. **Decision** (`decide`): a candidate that disagrees, or is not `MIN_SPEEDUP` x fp32, is not used
   (fp32 is, with the reason recorded); one whose captions differ is used for embeddings only
   (captions keep the fp32 encoder).

When the chosen encoder serves both embeddings and captions, the network's fp32 encoder is dropped
and its memory returned (`release_encoder`): the converted copy replaces it rather than adding to
it. The result is cached per machine (CPU model, torch version, checkpoint, device) under
``$SLEEPLM_CACHE/precision/``, so later loads apply it at once. An explicit precision ("fp32",
"bf16", "int8", or ``$SLEEPLM_PRECISION``) is honoured; it is timed too (cached alike) and a
warning says so when it is slower than fp32 here. The text tower and the caption decoder stay fp32.

Kept in fp32 inside a bf16/fp16 encoder: the rotary-position frequencies (bf16 angles at position
119 would be off by up to ~0.5 rad) and the RMSNorm weights (tiny; the norm is computed in fp32).
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import logging
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from sleeplm.errors import SleepLMRequestError
from sleeplm.io.allocator import glibc, return_freed_memory
from sleeplm.model.network import RMSNorm, RotaryEmbedding, SleepLMModel
from sleeplm.paths import cache_root
from sleeplm.terms import PRECISION_ENV, PRECISIONS

__all__ = ["PRECISION_ENV", "PRECISIONS", "MIN_COSINE", "MIN_OVERLAP", "TOP_K", "SCORE_TOLERANCE", "MIN_SPEEDUP",
           "PROBE_EPOCHS", "CAPTION_EPOCHS", "CAPTION_TOKENS", "REPEAT_BELOW_S", "AGREEMENT_QUERIES", "Agreement",
           "PrecisionChoice", "requested_precision", "candidate_for", "int8_engine", "probe_epochs", "encoder_in",
           "release_encoder", "run_encoder", "autocast_for", "relative_speed", "retrieval_overlap", "agreement",
           "calibrate", "decide", "calibration_key", "choose_precision"]

logger = logging.getLogger(__name__)

MIN_COSINE = 0.999  # lowest cosine between a candidate's and the fp32 signal embedding of any probe epoch
TOP_K = 10
MIN_OVERLAP = 9  # of the TOP_K epochs fp32 retrieves for each design-card query, the candidate must retrieve this many
# Two retrieval scores (cosine similarities) closer than this are equally good matches to a user: `find_epochs`
# shows similarities to 3 decimals (tools/retrieval.py) and the product stores night embeddings as float16, which
# moves similarities by up to ~1e-3 itself (sleeplm/model/embedding_cache.py). An epoch the candidate ranks in its
# top-k that fp32 ranks just outside counts as agreeing only when fp32 scores it within this of fp32's k-th score
# (a tie at the boundary), and likewise for the fp32 epoch it displaced. Fixed: never derived from the candidate.
SCORE_TOLERANCE = 1e-3
MIN_SPEEDUP = 1.1  # a candidate is used only when it runs the encoder at least this much faster than fp32
PROBE_EPOCHS = 16  # top-10 of 16: the smallest probe where a top-10 still leaves 6 epochs out (each costs a full fp32 epoch)
CAPTION_EPOCHS = 4
# Greedy new tokens compared per caption, in the stage/event domain (the one SleepLM staging reads), end-of-text
# banned before them: the shortest caption the product writes (`SleepLM.caption`'s min_len=16).
CAPTION_TOKENS = 16
CAPTION_DOMAIN = 4
REPEAT_BELOW_S = 0.5  # a timed probe pass shorter than this is timed twice (best kept): short ones are easily disturbed
CACHE_VERSION = 2  # 2: retrieval overlap counts ties within SCORE_TOLERANCE (version-1 entries are ignored)
# The design card's retrieval queries: the concepts users ask SleepLM to find in a night.
AGREEMENT_QUERIES = ("obstructive apnea with oxygen desaturation", "REM sleep with rapid eye movements",
                     "deep slow-wave sleep", "wake with alpha rhythm", "snoring with desaturation", "leg movements",
                     "supine position", "sleep spindles in N2", "alpha intrusion", "arousal from sleep")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Agreement:
    """A candidate's agreement with fp32 on the probe (`calibrate`).

    `retrieval_overlap` is the worst design-card query's top-`top_k` overlap counting ties within
    `SCORE_TOLERANCE` at fp32's rank-`top_k` boundary as agreeing (`retrieval_overlap`, the function);
    `exact_overlap` the worst query's overlap of the two top-`top_k` sets as they are (None: not
    recorded, a calibration cached before it was).
    """

    min_cosine: float
    retrieval_overlap: int  # worst query's overlap of the top-`TOP_K` epochs, ties at the boundary agreeing
    top_k: int
    captions_identical: bool
    exact_overlap: int | None = None

    def overlap_text(self) -> str:
        """The retrieval overlap for people.

        Examples
        --------
        >>> Agreement(0.99999, 10, 10, True, exact_overlap=7).overlap_text()
        'top-10 overlap 10/10 (7/10 exact; the rest tie within 0.001)'
        >>> Agreement(0.99999, 9, 10, True, exact_overlap=9).overlap_text()
        'top-10 overlap 9/10'
        """
        return f"top-{self.top_k} overlap {self._overlap_figures()}"

    def _ties_counted(self) -> bool:
        """Whether ties at the boundary raised the overlap above the exact one."""
        return self.exact_overlap is not None and self.exact_overlap < self.retrieval_overlap

    def _overlap_figures(self) -> str:
        ties = f" ({self.exact_overlap}/{self.top_k} exact; the rest tie within {SCORE_TOLERANCE:g})"
        return f"{self.retrieval_overlap}/{self.top_k}{ties if self._ties_counted() else ''}"

    def failure(self) -> str | None:
        """Why the candidate may not be used (None when it agrees).

        Examples
        --------
        >>> Agreement(0.9980, 10, 10, True).failure(), Agreement(0.9995, 9, 10, False).failure()
        ('min cosine 0.99800 < 0.999', None)
        >>> Agreement(0.9999, 8, 10, True, exact_overlap=6).failure()
        'top-10 retrieval overlap 8/10 (6/10 exact; the rest tie within 0.001) < 9/10'
        """
        if self.min_cosine < MIN_COSINE:
            return f"min cosine {self.min_cosine:.5f} < {MIN_COSINE}"
        if self.retrieval_overlap < MIN_OVERLAP * self.top_k / TOP_K:
            return f"top-{self.top_k} retrieval overlap {self._overlap_figures()} < {MIN_OVERLAP}/{TOP_K}"
        return None


@dataclass
class PrecisionChoice:
    """The signal encoder's precision on this machine and why.

    Attributes
    ----------
    precision : what embeddings are computed in: "fp32", "bf16", "fp16" or "int8".
    caption_precision : what caption memory tokens are computed in (fp32 when `precision` changed captions).
    requested : "auto" or the precision asked for.
    basis : what the device offers, e.g. "AVX2 CPU without fast bf16".
    reason : one line for people (`inspect`, the app's status line, summary.json).
    speedup : measured encoder throughput of `precision` over fp32 on this machine (None: not timed).
    agreement : the candidate's agreement with fp32 (None: not checked).
    rejected : candidate -> why it is not used.
    calibration_s : seconds the calibration took when it ran; cached : read from the calibration cache.
    """

    precision: str
    caption_precision: str
    requested: str
    basis: str
    reason: str = ""
    speedup: float | None = None
    agreement: Agreement | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    calibration_s: float | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (summary.json, the trace's metadata, the calibration cache).

        Examples
        --------
        >>> choice = PrecisionChoice("int8", "int8", "auto", "AVX2 CPU without fast bf16", "int8: ...", 2.1,
        ...                          Agreement(0.9993, 10, 10, True))
        >>> data = choice.to_dict()
        >>> data["precision"], data["agreement"]["min_cosine"], json.loads(json.dumps(data))["speedup"]
        ('int8', 0.9993, 2.1)
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionChoice:
        """The choice `to_dict` wrote (the calibration cache).

        Examples
        --------
        >>> choice = PrecisionChoice("bf16", "fp32", "auto", "CPU with amx_bf16", "bf16: ...", 2.5,
        ...                          Agreement(0.99999, 10, 10, False))
        >>> PrecisionChoice.from_dict(choice.to_dict()) == choice
        True
        """
        data = dict(data)
        if data.get("agreement"):
            data["agreement"] = Agreement(**data["agreement"])
        return cls(**data)


def requested_precision(precision: str | None = "auto") -> str:
    """The precision asked for: `precision`, where "auto" (or None) defers to ``$SLEEPLM_PRECISION`` (default auto).

    Examples
    --------
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {PRECISION_ENV: "int8"}):
    ...     requested_precision("auto"), requested_precision("fp32")
    ('int8', 'fp32')
    >>> requested_precision("half")
    Traceback (most recent call last):
    ...
    sleeplm.errors.SleepLMRequestError: ...
    """
    choice = str(precision or "auto").strip().lower()
    if choice == "auto":
        choice = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
        source = f"${PRECISION_ENV}={choice!r}"
    else:
        source = f"precision={precision!r}"
    if choice not in PRECISIONS:
        raise SleepLMRequestError(f"{source}: use {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}.")
    return choice


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


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_engine() -> str | None:
    """The quantized engine int8 dynamic Linear layers use here (x86, else fbgemm), None where there is none.

    Examples
    --------
    >>> int8_engine() in ("x86", "fbgemm", None)
    True
    """
    engines = torch.backends.quantized.supported_engines
    return next((name for name in ("x86", "fbgemm") if name in engines), None)


def candidate_for(device: str, flags: set[str] | None = None) -> tuple[str | None, str]:
    """(the precision auto tries on `device`, or None for fp32 only; what the device offers).

    `flags` are the CPU's (default: read from /proc/cpuinfo).

    Examples
    --------
    >>> candidate_for("cpu", {"avx2", "fma", "avx512_bf16"})
    ('bf16', 'CPU with avx512_bf16')
    >>> candidate_for("cpu", {"avx2", "fma"})[1]
    'AVX2 CPU without fast bf16'
    """
    kind = torch.device(device).type
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA GPU with bf16"
        return "fp16", "CUDA GPU without bf16"
    if kind != "cpu":
        return None, f"device {device!r}: fp32 only"
    flags = _cpu_flags() if flags is None else flags
    native = sorted((flags or set()).intersection(_BF16_FLAGS))
    if native:
        return "bf16", f"CPU with {', '.join(native)}"
    capability = "AVX2" if "avx2" in (flags or ()) else torch.backends.cpu.get_cpu_capability()
    if int8_engine() is None:
        return None, f"{capability} CPU without fast bf16 or an int8 engine"
    return "int8", f"{capability} CPU without fast bf16"


def probe_epochs(n: int, channels: int, samples: int, seed: int = 0) -> torch.Tensor:
    """A fixed probe of `n` z-scored epochs [n, channels, samples]: per channel a few rhythms (0.5-30 Hz
    at 64 Hz) in noise, the same on every machine.

    Examples
    --------
    >>> x = probe_epochs(2, 10, 1920)
    >>> tuple(x.shape), round(float(x[0, 0].std()), 2), bool((x == probe_epochs(2, 10, 1920)).all())
    ((2, 10, 1920), 1.0, True)
    """
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float64) / 64.0
    freqs = 0.5 + 29.5 * torch.rand(n, channels, 3, 1, generator=generator, dtype=torch.float64)
    amps = torch.rand(n, channels, 3, 1, generator=generator, dtype=torch.float64)
    x = (amps * torch.sin(2 * torch.pi * freqs * t)).sum(2) + 0.5 * torch.randn(n, channels, samples, generator=generator,
                                                                                  dtype=torch.float64)
    return ((x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)).float()


def encoder_in(encoder: nn.Module, precision: str) -> nn.Module:
    """A copy of the fp32 `encoder` that runs in `precision` (the encoder itself for fp32).

    bf16/fp16: weights stored in that type (run it under `autocast_for`), made directly from the
    fp32 ones (no transient fp32 copy), except the RoPE frequencies (also the tied, shared channel
    RoPE) and the norm weights, which stay fp32; int8: its Linear layers replaced by int8 dynamic
    ones (`torch.ao.quantization.quantize_dynamic`, x86 engine; CPU only).

    Examples
    --------
    >>> from sleeplm.model.network import build_model
    >>> encoder = build_model("sleeplm_tiny").biosignals
    >>> half = encoder_in(encoder, "bf16")
    >>> half.embed_projection.weight.dtype, half.ln_final.weight.dtype, encoder.embed_projection.weight.dtype
    (torch.bfloat16, torch.float32, torch.float32)
    >>> type(encoder_in(encoder, "int8").embed_projection).__name__, encoder_in(encoder, "fp32") is encoder
    ('Linear', True)
    >>> type(encoder_in(encoder, "int8").embed_projection).__module__
    'torch.ao.nn.quantized.dynamic.modules.linear'
    """
    if precision == "fp32":
        return encoder
    if precision in _AUTOCAST:
        dtype, kept = _AUTOCAST[precision], {id(p) for m in encoder.modules() if isinstance(m, (RMSNorm, RotaryEmbedding))
                                            for p in m.parameters(recurse=False)}
        memo = {id(p): nn.Parameter(p.detach().to(dtype), requires_grad=False) for p in encoder.parameters()
                if p.is_floating_point() and p.dtype != dtype and id(p) not in kept}
        return copy.deepcopy(encoder, memo)
    if precision == "int8":
        engine = int8_engine()
        if engine is None or next(encoder.parameters()).device.type != "cpu":
            raise SleepLMRequestError("int8 runs on a CPU with the x86 (or fbgemm) quantized engine only; "
                                      "use --precision auto, fp32 or bf16 here.")
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():  # torch 2.13 marks torch.ao.quantization deprecated (pinned; tested here)
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(encoder, {nn.Linear}, dtype=torch.qint8, inplace=False)
    raise SleepLMRequestError(f"Unknown encoder precision {precision!r}.")


def autocast_for(precision: str, device_type: str):
    """The autocast context a `precision` encoder runs under (a no-op for fp32 and int8).

    Examples
    --------
    >>> with autocast_for("bf16", "cpu"):
    ...     bf16 = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    >>> with autocast_for("int8", "cpu"):
    ...     int8 = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    >>> bf16, int8
    (torch.bfloat16, torch.float32)
    """
    return torch.autocast(device_type, dtype=_AUTOCAST.get(precision, torch.bfloat16), enabled=precision in _AUTOCAST)


def release_encoder(network: SleepLMModel, encoder: nn.Module) -> int:
    """Put `encoder` in place of `network`'s signal encoder and give the old one's memory back.

    Returns the bytes of memory-mapped pages dropped.

    For when nothing uses the old (fp32) encoder any more: its tensors are freed when this drops
    the last reference (heap: returned with `sleeplm.io.allocator.return_freed_memory`, glibc only). Tensors on a memory-mapped checkpoint (`sleeplm.model.checkpoint.read_state_dict`)
    stay mapped while any tensor of the file lives, so their pages are dropped from this process
    with ``madvise(MADV_DONTNEED)``: only whole pages inside a tensor that no tensor left in the
    network shares, only where /proc/self/maps shows a private file mapping (never written: were
    those pages read again, the file's bytes would come back). Linux with glibc only; elsewhere only the swap.

    Examples
    --------
    >>> from sleeplm.model.network import build_model
    >>> network = build_model("sleeplm_tiny")
    >>> dropped = release_encoder(network, encoder_in(network.biosignals, "bf16"))
    >>> network.biosignals.embed_projection.weight.dtype, dropped >= 0
    (torch.bfloat16, True)
    """
    old, network.biosignals = network.biosignals, encoder
    live = {t.untyped_storage().data_ptr() for t in (*network.parameters(), *network.buffers())}
    spans = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
             for t in (*old.parameters(), *old.buffers())
             if t.device.type == "cpu" and t.untyped_storage().data_ptr() not in live]
    del old
    return_freed_memory()
    libc = glibc()
    if libc is None:
        return 0
    dropped, page, mapped = 0, os.sysconf("SC_PAGE_SIZE"), _file_mappings()
    for start, end in spans:
        first, last = -(-start // page) * page, end // page * page
        if last > first and any(low <= first and last <= high for low, high in mapped):
            if libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED) == 0:
                dropped += last - first
    return dropped


_MADV_DONTNEED = 4  # Linux


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's private mappings of regular files (/proc/self/maps)."""
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        private_file = fields[1].endswith("p") and fields[5].startswith("/") if len(fields) == 6 else False
        if private_file and not fields[5].endswith("(deleted)"):
            low, high = (int(value, 16) for value in fields[0].split("-"))
            spans.append((low, high))
    return spans


def run_encoder(encoder: nn.Module, precision: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, memory tokens) of `encoder` running in `precision` on `x`, as float32 (on a GPU: finished).

    Examples
    --------
    >>> from sleeplm.model.network import build_model
    >>> encoder = build_model("sleeplm_tiny").biosignals
    >>> latent, memory = run_encoder(encoder_in(encoder, "bf16"), "bf16", probe_epochs(2, 10, 1920))
    >>> latent.dtype, latent.shape[0], memory.dtype
    (torch.float32, 2, torch.float32)
    """
    with torch.inference_mode(), autocast_for(precision, x.device.type):
        latent, memory = encoder(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)  # timed passes end when the GPU is done
    return latent.float(), memory.float()


def relative_speed(reference: Callable[[], Any], candidate: Callable[[], Any],
                   repeat_below_s: float = REPEAT_BELOW_S) -> tuple[float, Any, Any]:
    """(throughput of `candidate` over `reference`, the reference's result, the candidate's result).

    Each is timed once, reference first (both warmed up by the caller); when either call took
    less than `repeat_below_s`, both run once more in the same order and each keeps its best, so
    one burst of other work on a shared machine does not decide a short measurement.

    Examples
    --------
    >>> speed, small, large = relative_speed(lambda: sum(range(200000)), lambda: sum(range(1000)))
    >>> speed > 1, small, large
    (True, 19999900000, 499500)
    """
    best, results = [float("inf"), float("inf")], [None, None]
    for _ in range(2):
        for index, fn in enumerate((reference, candidate)):
            began = time.perf_counter()
            results[index] = fn()
            best[index] = min(best[index], time.perf_counter() - began)
        if max(best) >= repeat_below_s:
            break
    return best[0] / max(best[1], 1e-9), results[0], results[1]


def _query_embeddings(network: SleepLMModel, tokenizer: Callable, device: torch.device) -> torch.Tensor:
    with torch.inference_mode():
        return network.encode_text(tokenizer(list(AGREEMENT_QUERIES)).to(device)).float()


def retrieval_overlap(scores: torch.Tensor, scores32: torch.Tensor, k: int = TOP_K,
                      tolerance: float = SCORE_TOLERANCE) -> tuple[int, int]:
    """(tie-aware, exact) overlap of the candidate's and fp32's top-`k` epochs, worst query of each.

    `scores` and `scores32` are [epochs, queries] similarities from the candidate's and the fp32
    embeddings. Exact: how many of the candidate's top `k` are in fp32's. Tie-aware: an exchange at
    the boundary is not a disagreement when both epochs are ties in fp32's own scores: the
    candidate's epoch outside fp32's top `k` scores (in fp32) at least fp32's k-th score minus
    `tolerance`, and the fp32 epoch it displaced scores at most the k-th score plus `tolerance`.
    So it is `k` minus the larger of the two counts of exchanged epochs that are not such ties.
    `tolerance` is fixed (`SCORE_TOLERANCE`), judged on the fp32 scores alone: a candidate whose
    errors reorder epochs farther apart than that fails, whatever its own error.

    Examples
    --------
    >>> s32 = torch.tensor([[0.90], [0.80], [0.70], [0.6995], [0.50]])     # 5 epochs, 1 query, k = 3
    >>> retrieval_overlap(torch.tensor([[0.90], [0.80], [0.6990], [0.6999], [0.50]]), s32, k=3)  # 2 and 3 swap: a tie
    (3, 2)
    >>> retrieval_overlap(torch.tensor([[0.90], [0.80], [0.60], [0.61], [0.75]]), s32, k=3)     # 4 (0.50 in fp32) comes in
    (2, 2)
    """
    k = min(k, scores.shape[0])
    top = scores.topk(k, dim=0).indices.T.tolist()
    ranked32 = scores32.sort(dim=0, descending=True)
    top32, kth = ranked32.indices[:k].T.tolist(), ranked32.values[k - 1]
    tie_aware, exact = k, k
    for query, (mine, theirs) in enumerate(zip(top, top32)):
        came_in, left = set(mine) - set(theirs), set(theirs) - set(mine)
        column, boundary = scores32[:, query], float(kth[query])
        not_tied_in = sum(float(column[e]) < boundary - tolerance for e in came_in)
        not_tied_out = sum(float(column[e]) > boundary + tolerance for e in left)
        exact = min(exact, k - len(came_in))
        tie_aware = min(tie_aware, k - max(not_tied_in, not_tied_out))
    return tie_aware, exact


def agreement(network: SleepLMModel, outputs: tuple[torch.Tensor, torch.Tensor],
              reference: tuple[torch.Tensor, torch.Tensor], queries: torch.Tensor) -> Agreement:
    """Agreement of a candidate's probe outputs (latents, memory) with fp32's `reference` ones.

    Min cosine of the signal embeddings, the retrieval overlap for the `queries` (`retrieval_overlap`),
    and greedy caption ids of the first `CAPTION_EPOCHS` epochs from either memory, decoded as one
    batch (rows are decoded independently; one batch costs about what one path alone does).

    Examples
    --------
    >>> from sleeplm.model.network import build_model
    >>> from sleeplm.model.tokenizer import get_tokenizer
    >>> net, probe = build_model("sleeplm_tiny").eval(), probe_epochs(12, 10, 1920)
    >>> with torch.inference_mode():
    ...     latent, memory = net.biosignals(probe)
    ...     queries = net.encode_text(get_tokenizer(net.context_length)(list(AGREEMENT_QUERIES)))
    >>> same = agreement(net, (latent, memory), (latent, memory), queries)   # fp32 against itself
    >>> same.min_cosine > 0.99999, same.retrieval_overlap, same.exact_overlap, same.captions_identical, same.failure()
    (True, 10, 10, True, None)
    """
    (latent, memory), (latent32, memory32) = outputs, reference
    embeddings = nn.functional.normalize(latent, dim=-1)
    embeddings32 = nn.functional.normalize(latent32, dim=-1)
    min_cosine = float((embeddings * embeddings32).sum(-1).min())
    k = min(TOP_K, latent.shape[0])
    overlap, exact = retrieval_overlap(embeddings @ queries.T, embeddings32 @ queries.T, k)
    n = min(CAPTION_EPOCHS, memory.shape[0])
    with torch.inference_mode():
        ids = network.generate_from_memory(torch.cat([memory32[:n], memory[:n]]), CAPTION_DOMAIN, CAPTION_TOKENS,
                                           min_len=CAPTION_TOKENS)
    return Agreement(min_cosine, overlap, k, bool(torch.equal(ids[:n], ids[n:])), exact)


def calibrate(network: SleepLMModel, candidate: str, tokenizer: Callable) -> tuple[Agreement, float, nn.Module]:
    """Agreement with fp32 on the fixed probe, and measured speed over fp32 of the network's encoder in `candidate`.

    Returns (agreement, speedup, the encoder in `candidate`). The network's own encoder is fp32
    and left as it is. Both paths run one probe epoch untimed, then the whole probe as one
    timed batch each (`relative_speed`): the agreement is computed from those same passes.

    Examples
    --------
    >>> from sleeplm.model.network import build_model
    >>> from sleeplm.model.tokenizer import get_tokenizer
    >>> net = build_model("sleeplm_tiny").eval()
    >>> agreed, speedup, encoder = calibrate(net, "int8", get_tokenizer(net.context_length))
    >>> agreed.top_k, speedup > 0, encoder is not net.biosignals, net.biosignals.embed_projection.weight.dtype
    (10, True, True, torch.float32)
    """
    encoder = network.biosignals
    device = next(encoder.parameters()).device
    bio = network.config.biosignals
    probe = probe_epochs(PROBE_EPOCHS, bio.input_channels, bio.signal_length).to(device)
    converted = encoder_in(encoder, candidate)
    queries = _query_embeddings(network, tokenizer, device)
    run_encoder(encoder, "fp32", probe[:1])  # warm-up: kernels for the new shapes, untimed
    run_encoder(converted, candidate, probe[:1])
    speedup, reference, outputs = relative_speed(lambda: run_encoder(encoder, "fp32", probe),
                                                 lambda: run_encoder(converted, candidate, probe))
    return agreement(network, outputs, reference, queries), speedup, converted


def decide(requested: str, candidate: str | None, basis: str, agreed: Agreement | None = None,
           speedup: float | None = None) -> PrecisionChoice:
    """The choice for `requested` ("auto" or a precision) from the calibration's figures for `candidate`.

    Examples
    --------
    >>> good = Agreement(min_cosine=0.9993, retrieval_overlap=10, top_k=10, captions_identical=True)
    >>> decide("auto", "int8", "AVX2 CPU without fast bf16", good, 2.1).reason
    'int8: AVX2 CPU without fast bf16, 2.1x fp32, min cosine 0.9993'
    >>> decide("auto", "int8", "AVX2 CPU without fast bf16", good, 0.9).reason
    'fp32: AVX2 CPU without fast bf16; int8 not used (0.90x fp32: not faster)'
    >>> decide("auto", "bf16", "CPU with amx_bf16", Agreement(0.99999, 10, 10, False, exact_overlap=7), 2.9).reason
    'bf16: CPU with amx_bf16, 2.9x fp32, min cosine 1.0000, top-10 overlap 10/10 (7/10 exact; the rest tie within 0.001); captions fp32 (bf16 changed greedy caption ids)'
    """
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32", requested, basis, "fp32: asked for")
    if candidate is None:
        return PrecisionChoice("fp32", "fp32", requested, basis, f"fp32: {basis}")
    figures = f"{speedup:.1f}x fp32, min cosine {agreed.min_cosine:.4f}"
    if agreed._ties_counted():  # say so when the overlap needed ties to pass
        figures += f", {agreed.overlap_text()}"
    captions = candidate if agreed.captions_identical else "fp32"
    caption_note = "" if agreed.captions_identical else f"; captions fp32 ({candidate} changed greedy caption ids)"
    if requested != "auto":  # honoured whatever it measures; a warning says when it costs speed or agreement
        slower = f" — SLOWER than fp32 on this machine ({speedup:.2f}x)" if speedup < 1 else ""
        disagrees = f" — disagrees with fp32 ({agreed.failure()})" if agreed.failure() else ""
        return PrecisionChoice(candidate, captions, requested, basis,
                               f"{candidate}: asked for, {figures}{slower}{disagrees}{caption_note}", speedup, agreed)
    why_not = (f"disagrees with fp32: {agreed.failure()}" if agreed.failure()
               else f"{speedup:.2f}x fp32: not faster" if speedup < MIN_SPEEDUP else None)
    if why_not:
        return PrecisionChoice("fp32", "fp32", requested, basis, f"fp32: {basis}; {candidate} not used ({why_not})",
                               speedup, agreed, {candidate: why_not})
    return PrecisionChoice(candidate, captions, requested, basis, f"{candidate}: {basis}, {figures}{caption_note}",
                           speedup, agreed)


def calibration_key(weights_id: str, device: str, requested: str) -> str:
    """The calibration cache's key: CPU model, torch version, checkpoint, device and what was asked for.

    Examples
    --------
    >>> calibration_key("abc", "cpu", "auto") == calibration_key("abc", "cpu", "auto") != calibration_key("abd", "cpu", "auto")
    True
    """
    kind = torch.device(device).type
    machine = torch.cuda.get_device_name(torch.device(device)) if kind == "cuda" else _cpu_model()
    parts = [str(CACHE_VERSION), machine, torch.__version__, weights_id, kind, requested]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _cache_path(key: str) -> Path:
    return cache_root("precision") / f"{key}.json"


def _read_cached(key: str) -> PrecisionChoice | None:
    try:
        return PrecisionChoice.from_dict(json.loads(_cache_path(key).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring an unreadable precision calibration (%s)", exc)
        return None


def _write_cached(key: str, choice: PrecisionChoice) -> None:
    path = _cache_path(key)
    try:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(choice.to_dict(), indent=1))
        partial.replace(path)
    except OSError as exc:  # a read-only cache: the choice still holds for this process
        logger.warning("could not cache the precision calibration (%s)", exc)


def choose_precision(network: SleepLMModel, weights_id: str, tokenizer: Callable,
                     precision: str | None = "auto") -> tuple[PrecisionChoice, nn.Module, nn.Module]:
    """Choose the signal encoder's precision for `network` (fp32, on its device) and build its encoders.

    Returns (choice, the encoder for embeddings, the encoder for caption memory); either may be
    the network's own fp32 encoder. When one converted encoder serves both, it replaces the
    network's fp32 encoder, whose memory is given back (`release_encoder`). The first load on a
    machine calibrates (`calibrate`); later loads with the same CPU model, torch version,
    checkpoint and request read the cached choice.

    Raises
    ------
    SleepLMRequestError
        An unknown precision, or int8 asked for on a GPU.

    Examples
    --------
    >>> from unittest import mock
    >>> from sleeplm.model.network import build_model
    >>> from sleeplm.model.tokenizer import get_tokenizer
    >>> net = build_model("sleeplm_tiny").eval()
    >>> with mock.patch.dict(os.environ, {"SLEEPLM_CACHE": str(tmp_dir)}):
    ...     choice, embeddings, captions = choose_precision(net, "tiny", get_tokenizer(64), "fp32")
    >>> choice.reason, embeddings is captions is net.biosignals
    ('fp32: asked for', True)
    """
    requested = requested_precision(precision)
    device = str(next(network.parameters()).device)
    candidate, basis = candidate_for(device)
    if requested != "auto":
        candidate = requested
    if requested == "fp32" or candidate is None:
        choice = decide(requested, candidate, basis)
        return choice, network.biosignals, network.biosignals
    key = calibration_key(weights_id, device, requested)
    choice = _read_cached(key)
    if choice is not None:
        choice.cached = True
        converted = encoder_in(network.biosignals, choice.precision)
    else:
        logger.info("calibrating the SleepLM encoder's precision on this machine (%s, once; cached)", candidate)
        started = time.perf_counter()
        agreed, speedup, converted = calibrate(network, candidate, tokenizer)
        choice = decide(requested, candidate, basis, agreed, speedup)
        choice.calibration_s = time.perf_counter() - started
        _write_cached(key, choice)
        if choice.precision == "fp32":
            converted = network.biosignals
            return_freed_memory()  # the rejected candidate's copy is freed: give its heap back
    if requested != "auto" and (choice.speedup or 0) < 1:
        logger.warning("SleepLM precision %s was asked for but runs the encoder at %.2fx fp32 on this machine",
                       requested, choice.speedup or 0)
    elif requested != "auto" and choice.agreement is not None and choice.agreement.failure():
        logger.warning("SleepLM precision %s was asked for but disagrees with fp32 (%s)", requested,
                       choice.agreement.failure())
    if choice.caption_precision != choice.precision:
        return choice, converted, network.biosignals  # captions read the fp32 encoder's memory: both are kept
    if converted is not network.biosignals:  # one encoder for both: the fp32 one serves nothing any more
        dropped = release_encoder(network, converted)
        logger.info("fp32 signal encoder released (%.0f MB of mapped checkpoint pages dropped)", dropped / 1e6)
    return choice, converted, converted
