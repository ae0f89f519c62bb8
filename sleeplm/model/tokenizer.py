"""CLIP byte-pair-encoding tokenizer, as SleepLM uses it (context 256, zero padding).

SleepLM tokenises captions with open_clip's `SimpleTokenizer` and its bundled
`bpe_simple_vocab_16e6.txt.gz` (MIT; shipped here byte-identical in `sleeplm/vocab/`).
open_clip itself cannot be imported on this stack (it pulls in torchvision), so this
module carries an independent implementation of the same scheme:

1. clean: ftfy repair, double HTML unescape, whitespace collapse, lower case;
2. split into words/numbers/punctuation runs with the CLIP regular expression;
3. map each word's UTF-8 bytes to printable characters, then merge symbol pairs by rank;
4. frame with <start_of_text> ... <end_of_text>, truncate (keeping the end token), pad with 0.

Ids: 49406 start, 49407 end, 0 padding. Note that id 0 is also the character "!", so
the model's legacy padding mask treats a real "!" as padding (ARCH.md §3).
"""

from __future__ import annotations

import functools
import gzip
import html
from importlib import resources
from typing import Iterable

import ftfy
import numpy as np
import regex
import torch

__all__ = ["ClipTokenizer", "get_tokenizer", "SOT_TOKEN_ID", "EOT_TOKEN_ID", "PAD_TOKEN_ID"]

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
PAD_TOKEN_ID = 0
_NUM_MERGES = 49152 - 256 - 2
_WORD_END = "</w>"


@functools.lru_cache(maxsize=1)
def _byte_to_char() -> dict[int, str]:
    """Reversible map of the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the others (controls, space...) are moved
    to code points 256+ so that no BPE symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """CLIP BPE tokenizer producing SleepLM's fixed-length id rows.

    Parameters
    ----------
    context_length : int
        Length of every encoded row (SleepLM: 256), start and end tokens included.
    vocab_path : str or None
        The gzipped merges file; the packaged `bpe_simple_vocab_16e6.txt.gz` when None.

    Examples
    --------
    >>> tok = get_tokenizer()
    >>> ids = tok(["Stage N2 sleep."])          # LongTensor [1, 256]
    >>> ids.shape, tok.decode(ids[0])
    (torch.Size([1, 256]), 'stage n 2 sleep .')
    """

    def __init__(self, context_length: int = 256, vocab_path: str | None = None):
        if vocab_path is None:
            with resources.files("sleeplm.model").joinpath("vocab", "bpe_simple_vocab_16e6.txt.gz").open("rb") as fh:
                lines = gzip.decompress(fh.read()).decode("utf-8").split("\n")
        else:
            with gzip.open(vocab_path, "rt", encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        # Line 0 is a version header; the vocabulary keeps the first _NUM_MERGES merges.
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        symbols = list(_byte_to_char().values())
        vocab = symbols + [s + _WORD_END for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.token_to_id = {token: i for i, token in enumerate(vocab)}
        self.id_to_token = vocab
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self.char_to_byte = {c: b for b, c in _byte_to_char().items()}
        self.context_length = int(context_length)
        self.sot_token_id = self.token_to_id["<start_of_text>"]
        self.eot_token_id = self.token_to_id["<end_of_text>"]
        self.pad_token_id = PAD_TOKEN_ID
        self.vocab_size = len(vocab)
        self._word_pattern = regex.compile(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        self._bpe_cache: dict[str, tuple[str, ...]] = {}

    def _merge_word(self, word: str) -> tuple[str, ...]:
        """Apply the ranked merges to one pre-tokenised word (bytes already mapped to chars)."""
        if word in ("<start_of_text>", "<end_of_text>"):
            return (word,)
        cached = self._bpe_cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + _WORD_END]
        while len(parts) > 1:
            ranked = [(self.merge_rank.get(pair, _NUM_MERGES), pair) for pair in zip(parts, parts[1:])]
            best_rank, best = min(ranked)
            if best_rank == _NUM_MERGES:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._bpe_cache[word] = tuple(parts)
        return self._bpe_cache[word]

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens or padding.

        Examples
        --------
        >>> tokenizer = get_tokenizer()
        >>> ids = tokenizer.encode("Deep sleep with spindles")
        >>> ids, len(ids)                                     # "spindles" is three word pieces
        ([3383, 3840, 593, 588, 5386, 840], 6)
        """
        byte_to_char = _byte_to_char()
        ids = []
        for word in self._word_pattern.findall(_clean(text)):
            mapped = "".join(byte_to_char[b] for b in word.encode("utf-8"))
            ids.extend(self.token_to_id[token] for token in self._merge_word(mapped))
        return ids

    def __call__(self, texts: str | Iterable[str], context_length: int | None = None) -> torch.Tensor:
        """Encode texts to a LongTensor [n_texts, context_length] (start, ids, end, zero padding)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = int(context_length or self.context_length)
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > length:
                # Truncation keeps the start token and ends the row with the end token.
                ids = ids[: length - 1] + [self.eot_token_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        """Text of one id row; start, end and padding ids (49406, 49407, 0) are dropped.

        Examples
        --------
        >>> tokenizer = get_tokenizer()
        >>> tokenizer.decode(tokenizer(["Deep sleep with spindles"])[0])     # lower-cased by the tokenizer
        'deep sleep with spindles'
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        dropped = {self.sot_token_id, self.eot_token_id, self.pad_token_id}
        chars = "".join(self.id_to_token[int(i)] for i in np.asarray(ids).ravel() if int(i) not in dropped)
        text = bytes(self.char_to_byte[c] for c in chars).decode("utf-8", errors="replace")
        return text.replace(_WORD_END, " ").strip()


@functools.lru_cache(maxsize=4)
def get_tokenizer(context_length: int = 256) -> ClipTokenizer:
    """The shared tokenizer for a context length (parsing the merges file takes ~0.5 s).

    Examples
    --------
    >>> tok = get_tokenizer()
    >>> tok is get_tokenizer(), tok.context_length      # parsed once, shared
    (True, 256)
    >>> get_tokenizer(16)(["Stage N2 sleep."])
    tensor([[49406, ..., 49407, 0, ...]])
    """
    return ClipTokenizer(context_length=context_length)
