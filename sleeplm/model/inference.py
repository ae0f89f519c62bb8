"""`SleepLM`: the inference API on top of the network (embeddings, retrieval, captions).

>>> model = SleepLM.from_config("sleeplm_tiny")   # random tiny network; SleepLM.from_pretrained() loads the release
>>> rec = tiny_recording()                        # a 15-min night (30 epochs)
>>> emb = model.encode_signals(rec.epochs)        # [N, 512] unit vectors (numpy)
>>> emb.shape, round(float(np.linalg.norm(emb[0])), 3)
((30, 512), 1.0)
>>> hits = model.retrieve("REM sleep with eye movements", emb, top_k=5)   # [(epoch, cosine)], best first
>>> len(hits), all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
(5, True)
>>> captions = model.caption(rec.epochs[10:13], "brain", max_len=24)      # one caption per epoch
>>> len(captions), all(isinstance(c, str) for c in captions)
(3, True)

Everything runs under `torch.inference_mode`, in batches, on the chosen device. Captions use
the network's key/value cache and decode many epochs per step; by default they are greedy with
end-of-text banned below 16 tokens, which is exactly what the reference demo's beam search
returns (ARCH.md §7). `beams=k` runs a real (length-normalised) beam search instead.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sleeplm.model.checkpoint import (
    CHECKPOINT_ENV,
    DEFAULT_FILENAME,
    DEFAULT_REPO,
    load_state_dict_checked,
    read_state_dict,
    resolve_checkpoint,
    state_dict_fingerprint,
)
from sleeplm.model.config import DEFAULT_MODEL, RELEASED_OVERRIDES, TINY_MODEL
from sleeplm.model.precision import autocast_for, choose_precision
from sleeplm.errors import TensorFormatError
from sleeplm.model.network import EOT_TOKEN_ID, SOT_TOKEN_ID, SleepLMModel, SleepLMRequestError, build_model
from sleeplm.model.tokenizer import get_tokenizer
from sleeplm.terms import CAPTION_DOMAINS

__all__ = ["SleepLM", "SleepLMRequestError", "DOMAINS", "domain_id", "resolve_device", "beam_search"]

logger = logging.getLogger(__name__)

# Caption domain -> modality id of the released model (the demo's order).
DOMAINS = {name: index for index, name in enumerate(CAPTION_DOMAINS)}
Progress = Callable[[float, str], Any]


def resolve_device(device: str = "auto") -> str:
    """A torch device name: "auto" is "cuda" when torch sees a GPU, else "cpu"; other names pass through.

    Examples
    --------
    >>> resolve_device("cpu"), resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    ('cpu', True)
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def domain_id(domain: str | int) -> int:
    """Modality id of a caption domain name (brain 0, cardiac 1, respiratory 2, position_muscle 3, stage_event 4).

    Examples
    --------
    >>> domain_id("brain"), domain_id("cardiac"), domain_id(4)
    (0, 1, 4)
    >>> domain_id("dreams")
    Traceback (most recent call last):
    ...
    sleeplm.errors.SleepLMRequestError: ...
    """
    if isinstance(domain, (int, np.integer)) and int(domain) in DOMAINS.values():
        return int(domain)
    if isinstance(domain, str) and domain in DOMAINS:
        return DOMAINS[domain]
    raise SleepLMRequestError(f"Unknown caption domain {domain!r}; use one of {', '.join(DOMAINS)}.")


class SleepLM:
    """A loaded SleepLM network with batched inference helpers.

    Parameters
    ----------
    network : SleepLMModel
        The network with its weights.
    checkpoint_id : str
        Identifies the weights (cache keys); a fingerprint of the state dict.
    device : str
        Torch device for inference ("cpu", "cuda"...).
    unexpected_keys : list of str
        Checkpoint keys the network did not use (reported at load time, ignored).
    batch_size : int
        Epochs per forward pass for embeddings.
    caption_batch_size : int
        Epochs decoded together. A decoding step reads every decoder weight once whatever the
        batch, so on CPU larger batches are nearly free per step (the KV cache costs ~38 MB per
        epoch at full size and 256 tokens).
    precision : str
        The signal encoder's precision: "auto" (default; ``$SLEEPLM_PRECISION`` when set, else chosen
        for this machine by `sleeplm.model.precision.choose_precision`: CPU flags, agreement with
        fp32 and a timed calibration at first load, cached), or "fp32", "bf16", "int8" (honoured;
        a warning when slower than fp32 here). The text tower and the caption decoder stay fp32.

    Attributes
    ----------
    precision : PrecisionChoice
        The encoder's precision and why (`precision.reason`, one line), with the calibration's figures.
    """

    def __init__(self, network: SleepLMModel, checkpoint_id: str, device: str = "cpu",
                 unexpected_keys: Sequence[str] = (), batch_size: int = 16, caption_batch_size: int = 32,
                 precision: str = "auto"):
        self.network = network.to(device).eval()
        self.weights_id = checkpoint_id
        self.device = torch.device(device)
        self.unexpected_keys = list(unexpected_keys)
        self.batch_size = int(batch_size)
        self.caption_batch_size = int(caption_batch_size)
        self.tokenizer = get_tokenizer(network.context_length)
        self.precision, self._embedding_encoder, self.network.biosignals = choose_precision(
            self.network, checkpoint_id, self.tokenizer, precision)
        logger.info("SleepLM signal encoder precision: %s", self.precision.reason)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = DEFAULT_REPO, filename: str = DEFAULT_FILENAME,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        device: str = "auto", config: str | dict = DEFAULT_MODEL,
                        precision: str = "auto", progress: Progress | None = None) -> SleepLM:
        """Load the released SleepLM-Base weights from a hub repo id or a local file/folder.

        The environment variable SLEEPLM_CHECKPOINT (a local file) replaces the default hub id.
        `config` names the network the file is for; the released one (default) is built with the
        demo's 5 caption channels and prefix length 2. `device` "auto" is the GPU when torch sees
        one, else the CPU. `progress(fraction, text)` follows a download from the hub.
        `precision` "auto" (default), "fp32", "bf16" or "int8": the signal encoder's precision (see
        `SleepLM`); auto calibrates once per machine and checkpoint, later loads reuse the choice.

        Raises
        ------
        ModelUnavailableError
            The hub cannot be reached and nothing is cached (the message says how to pass a file).
        CheckpointError
            The file is unreadable, or keys are missing / have other shapes (listed).

        Examples
        --------
        >>> torch.save(tiny_model().network.state_dict(), tmp_dir / "tiny.pt")     # a local file: no hub
        >>> model = SleepLM.from_pretrained(tmp_dir / "tiny.pt", config="sleeplm_tiny", device="cpu")
        >>> model.checkpoint_id == tiny_model().checkpoint_id, model.unexpected_keys
        (True, [])
        """
        if source is None or (str(source) == DEFAULT_REPO and os.environ.get(CHECKPOINT_ENV)):
            source = os.environ.get(CHECKPOINT_ENV) or DEFAULT_REPO
        path = resolve_checkpoint(source, filename=filename, revision=revision, cache_dir=cache_dir, progress=progress)
        network = build_model(config, **(RELEASED_OVERRIDES if config == DEFAULT_MODEL else {}))
        report = load_state_dict_checked(network, read_state_dict(path), source=path.name)
        logger.info("SleepLM weights loaded (%d unused checkpoint keys)", len(report.unexpected_keys))
        return cls(network, state_dict_fingerprint(network), resolve_device(device), report.unexpected_keys,
                   precision=precision)

    @property
    def checkpoint_id(self) -> str:
        """The weights' fingerprint and the embeddings' precision, e.g. "3f2a...-int8" (embedding cache keys:
        embeddings of different precisions are never mixed)."""
        return f"{self.weights_id}-{self.precision.precision}"

    @classmethod
    def from_config(cls, config: str | dict = TINY_MODEL, state_dict: dict[str, torch.Tensor] | None = None,
                    device: str = "cpu", seed: int = 0, precision: str = "auto", **overrides: Any) -> SleepLM:
        """A network from a packaged config name or a config dict, with `state_dict` or seeded random weights.

        Meant for tests and development (`SleepLM.from_config("sleeplm_tiny")` builds in well under a
        second); random weights produce meaningless but deterministic embeddings and captions.
        `precision` as for `SleepLM` (default "auto").

        Examples
        --------
        >>> model = SleepLM.from_config("sleeplm_tiny", seed=0)
        >>> model.checkpoint_id == SleepLM.from_config("sleeplm_tiny", seed=0).checkpoint_id   # same seed, same weights
        True
        >>> model.network.config.embed_dim, model.network.context_length
        (512, 64)
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = build_model(config, **overrides)
        unexpected: list[str] = []
        if state_dict is not None:
            unexpected = load_state_dict_checked(network, state_dict, source="state_dict").unexpected_keys
        return cls(network, state_dict_fingerprint(network), device, unexpected, precision=precision)

    # ------------------------------------------------------------------ inputs
    def _epochs_tensor(self, epochs: Any, channel_mask: Any = None) -> torch.Tensor:
        bio = self.network.config.biosignals
        x = torch.as_tensor(np.asarray(epochs) if not isinstance(epochs, torch.Tensor) else epochs)
        if x.ndim == 2:
            x = x[None]
        expected = (bio.input_channels, bio.signal_length)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise TensorFormatError(f"SleepLM needs epochs shaped [N, {expected[0]}, {expected[1]}] (30 s at 64 Hz "
                                    f"in the SleepLM channel order); got {list(x.shape)}. Load the night with "
                                    "sleeplm.load_recording and pass rec.epochs.")
        if not x.is_floating_point():
            raise TensorFormatError(f"SleepLM epochs must be floating point, not {x.dtype}.")
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise TensorFormatError("SleepLM epochs contain NaN or infinite values; fill gaps with 0 "
                                    "(the README's convention for missing data) before encoding.")
        if channel_mask is not None:
            mask = torch.as_tensor(np.asarray(channel_mask), dtype=torch.bool)
            if mask.shape not in ((bio.input_channels,), (x.shape[0], bio.input_channels)):
                raise TensorFormatError(f"channel_mask must have shape [{bio.input_channels}] or "
                                        f"[N, {bio.input_channels}]; got {list(mask.shape)}.")
            # Absent channels are zero rows (SleepLM README); the model has no other notion of "missing".
            x = x * mask.reshape(-1, bio.input_channels, 1).to(x.dtype)
        return x

    def _batches(self, n: int, batch_size: int | None, default: int | None = None):
        size = max(1, int(batch_size or default or self.batch_size))
        return [(start, min(start + size, n)) for start in range(0, n, size)]

    # ------------------------------------------------------------------ embeddings and retrieval
    def encode_signals(self, epochs: Any, channel_mask: Any = None, batch_size: int | None = None,
                       progress: Progress | None = None) -> np.ndarray:
        """Signal embeddings [N, E] (float32 unit vectors) of epochs [N, C, S].

        `channel_mask` ([C] or [N, C], True = present) zeroes absent channels first.
        `progress(fraction, message)` is called after every batch.

        Examples
        --------
        >>> embeddings = tiny_model().encode_signals(tiny_recording().epochs[:4])
        >>> embeddings.shape, embeddings.dtype, np.linalg.norm(embeddings, axis=1).round(3).tolist()
        ((4, 512), dtype('float32'), [1.0, 1.0, 1.0, 1.0])
        """
        x = self._epochs_tensor(epochs, channel_mask)
        out = np.empty((x.shape[0], self.network.config.embed_dim), dtype=np.float32)
        batches = self._batches(x.shape[0], batch_size)
        with torch.inference_mode(), autocast_for(self.precision.precision, self.device.type):
            for a, b in batches:
                latent, _ = self._embedding_encoder(x[a:b].to(self.device))
                latent = latent.float()
                out[a:b] = torch.nn.functional.normalize(latent, dim=-1).cpu().numpy()
                if progress:
                    progress(b / x.shape[0], f"SleepLM embeddings: {b}/{x.shape[0]} epochs")
        return out

    def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Text embeddings [M, E] (float32 unit vectors).

        Examples
        --------
        >>> embeddings = tiny_model().encode_text(["deep sleep", "snoring"])
        >>> embeddings.shape, np.linalg.norm(embeddings, axis=1).round(3).tolist()
        ((2, 512), [1.0, 1.0])
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise SleepLMRequestError("encode_text needs one or more non-empty strings (the query was empty).")
        with torch.inference_mode():
            ids = self.tokenizer(texts).to(self.device)
            return self.network.encode_text(ids).float().cpu().numpy()

    def retrieve(self, query: str, signal_embeddings: np.ndarray, top_k: int = 10,
                 domain: str | None = None) -> list[tuple[int, float]]:
        """Epochs whose embeddings best match `query`: [(epoch index, cosine similarity)], best first.

        `domain` is validated but does not change the ranking: SleepLM's signal and text
        embeddings do not depend on the caption modality (ARCH.md §5).

        Examples
        --------
        >>> model = tiny_model()                              # random weights: the ranking means nothing
        >>> hits = model.retrieve("obstructive apnea", model.encode_signals(tiny_recording().epochs[:6]), top_k=3)
        >>> scores = [score for _, score in hits]
        >>> len(hits), scores == sorted(scores, reverse=True), all(-1 <= s <= 1 for s in scores)
        (3, True, True)
        """
        if domain is not None:
            domain_id(domain)
        emb = np.asarray(signal_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.network.config.embed_dim:
            raise TensorFormatError(f"signal_embeddings must be [N, {self.network.config.embed_dim}] "
                                    f"(from encode_signals); got {list(emb.shape)}.")
        scores = emb @ self.encode_text(query)[0]
        order = np.argsort(-scores, kind="stable")[: max(0, int(top_k))]
        return [(int(i), float(scores[i])) for i in order]

    # ------------------------------------------------------------------ captions
    def caption(self, epochs: Any, domain: str | int, max_len: int = 256, min_len: int = 16,
                beams: int | None = None, batch_size: int | None = None,
                progress: Progress | None = None) -> list[str]:
        """One caption per epoch for `domain` (brain, cardiac, respiratory, position_muscle, stage_event).

        Greedy by default (the reference demo's output); `beams=k` runs length-normalised beam
        search. `max_len` counts the start token and is capped at the model's context length.

        Examples
        --------
        >>> captions = tiny_model().caption(tiny_recording().epochs[:2], "brain", max_len=8, min_len=4)
        >>> len(captions), all(isinstance(c, str) for c in captions)
        (2, True)
        """
        return [self.tokenizer.decode(ids) for ids in
                self.caption_ids(epochs, domain, max_len, min_len, beams, batch_size, progress)]

    def caption_ids(self, epochs: Any, domain: str | int, max_len: int = 256, min_len: int = 16,
                    beams: int | None = None, batch_size: int | None = None,
                    progress: Progress | None = None) -> list[np.ndarray]:
        """Token ids of `caption` (start token first, end-of-text last when emitted).

        Examples
        --------
        >>> ids = tiny_model().caption_ids(tiny_recording().epochs[:1], "cardiac", max_len=8, min_len=8)
        >>> int(ids[0][0]), len(ids[0])                       # the start token, then 7 generated ids
        (49406, 8)
        """
        modality = domain_id(domain)
        if beams is not None and int(beams) < 1:
            raise SleepLMRequestError(f"beams must be a positive number of beams (or None for greedy), not {beams!r}.")
        x = self._epochs_tensor(epochs)
        max_new = min(int(max_len), self.network.context_length) - 1
        captions: list[np.ndarray] = []
        with torch.inference_mode():
            for a, b in self._batches(x.shape[0], batch_size, self.caption_batch_size):
                with autocast_for(self.precision.caption_precision, self.device.type):
                    _, memory = self.network.biosignals(x[a:b].to(self.device))
                memory = memory.float()  # the decoder stays fp32
                if beams is None or int(beams) == 1:
                    ids = self.network.generate_from_memory(memory, modality, max_new, min_len)
                    captions += [_trim(row) for row in ids.cpu().numpy()]
                else:
                    captions += beam_search(self.network, memory, modality, int(beams), max_new, min_len)
                if progress:
                    progress(b / x.shape[0], f"SleepLM captions: {b}/{x.shape[0]} epochs")
        return captions


def _trim(row: np.ndarray) -> np.ndarray:
    """Drop the zero padding after end-of-text."""
    end = np.flatnonzero(row == EOT_TOKEN_ID)
    return row[: end[0] + 1] if end.size else row


def beam_search(network: SleepLMModel, memory: torch.Tensor, modality: int, beams: int, max_new_tokens: int,
                min_len: int = 16) -> list[np.ndarray]:
    """Length-normalised beam search (score = sum of token log-probabilities / length), cached and batched.

    Every epoch keeps `beams` running hypotheses; a hypothesis ending in end-of-text is set aside
    with its normalised score. An epoch is done once it holds `beams` finished hypotheses and no
    running one can still beat the worst of them, or at the length limit. Returns the best
    hypothesis per epoch (start token first). Like any beam search it can prune the greedy path
    and return a caption that scores below the greedy one (seen on random-weight test models).

    Examples
    --------
    >>> model = tiny_model()
    >>> x = torch.as_tensor(tiny_recording().epochs[:2])
    >>> with torch.inference_mode():
    ...     _, memory = model.network.biosignals(x)
    ...     best = beam_search(model.network, memory, domain_id("brain"), beams=3, max_new_tokens=10, min_len=4)
    >>> len(best), [int(ids[0]) for ids in best] == [SOT_TOKEN_ID] * 2, all(len(ids) <= 11 for ids in best)
    (2, True, True)
    """
    B, k = memory.shape[0], beams
    state = network.start_decoding(memory.repeat_interleave(k, dim=0), modality, max_len=1 + max_new_tokens)
    seqs = torch.full((B * k, 1), SOT_TOKEN_ID, dtype=torch.long, device=memory.device)
    scores = torch.full((B, k), float("-inf"), device=memory.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first one
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(B)]
    active = list(range(B))  # epochs still searching, in row-block order
    for step in range(max_new_tokens):
        logprobs = torch.log_softmax(network.decode_step(state, seqs[:, -1]).float(), dim=-1)
        if step + 1 < min_len:
            logprobs[:, EOT_TOKEN_ID] = float("-inf")
        vocab = logprobs.shape[-1]
        total = (scores.view(-1, 1) + logprobs).view(len(active), k * vocab)
        top_scores, top_index = total.topk(2 * k, dim=-1)
        keep_rows, next_tokens, next_scores, still_active = [], [], [], []
        length = seqs.shape[1] + 1
        for e, epoch in enumerate(active):
            chosen = []
            for score, index in zip(top_scores[e].tolist(), top_index[e].tolist()):
                beam, token = divmod(index, vocab)
                row = e * k + beam
                if token == EOT_TOKEN_ID:
                    finished[epoch].append((score / length, torch.cat([seqs[row], seqs.new_tensor([token])])))
                elif score > float("-inf"):
                    chosen.append((row, token, score))
                if len(chosen) == k:
                    break
            best_running = chosen[0][2] / length if chosen else float("-inf")
            kth_finished = sorted((s for s, _ in finished[epoch]), reverse=True)[k - 1 : k]
            done = bool(kth_finished) and best_running <= kth_finished[0]
            if chosen and not done and step + 1 < max_new_tokens:
                chosen += [chosen[-1]] * (k - len(chosen))  # pad with copies when fewer candidates survived
                still_active.append(epoch)
                keep_rows += [r for r, _, _ in chosen]
                next_tokens += [t for _, t, _ in chosen]
                next_scores.append([s for _, _, s in chosen])
            elif chosen and not done:  # length limit: the best running hypothesis competes too
                row, token, score = chosen[0]
                finished[epoch].append((score / length, torch.cat([seqs[row], seqs.new_tensor([token])])))
        if not still_active:
            break
        rows = torch.tensor(keep_rows, device=memory.device)
        state.select(rows)
        seqs = torch.cat([seqs[rows], torch.tensor(next_tokens, device=memory.device)[:, None]], dim=1)
        scores = torch.tensor(next_scores, device=memory.device)
        active = still_active
    return [max(finished[e], key=lambda item: item[0])[1].cpu().numpy() for e in range(B)]
