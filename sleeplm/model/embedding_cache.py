"""SleepLM night embeddings, computed once per recording and checkpoint and kept on disk.

Encoding a whole night takes minutes on a laptop CPU, while every retrieval question needs
the same [N, 512] matrix; so it is stored as `.npy` under `$SLEEPLM_CACHE/embeddings/`
(default `~/.cache/sleeplm-assistant`) and reused across questions and restarts. The file
name holds only hashes (of the prepared epochs and of the checkpoint): nothing identifying.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sleeplm.io.recording import Recording
from sleeplm.paths import cache_root

__all__ = ["embedding_cache_path", "night_embeddings"]

logger = logging.getLogger(__name__)


def embedding_cache_path(model: Any, rec: Recording) -> Path:
    """Where the embeddings of `rec` under `model`'s checkpoint are stored.

    The key is the digest of the prepared epochs (`Recording.content_digest`), not of the file:
    the same file loaded with another channel map or normalisation gives different model input.

    Examples
    --------
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"SLEEPLM_CACHE": str(tmp_dir)}):
    ...     path = embedding_cache_path(tiny_model(), tiny_recording())
    >>> path.parent == tmp_dir / "embeddings", path.suffix
    (True, '.npy')
    >>> rec = tiny_recording()
    >>> path.name == f"{rec.content_digest()[:32]}-{tiny_model().checkpoint_id}.npy"
    True
    """
    name = f"{rec.content_digest()[:32]}-{model.checkpoint_id}.npy"
    return cache_root("embeddings") / name


def night_embeddings(model: Any, rec: Recording, progress: Callable[[float, str], Any] | None = None) -> np.ndarray:
    """Signal embeddings [N, E] (unit vectors stored as float16) of every epoch of `rec`, cached on disk.

    float16 halves memory and disk against float32 and changes cosine similarities by < 1e-3
    (tests/test_inference.py); callers compute similarities in float32.

    Parameters
    ----------
    model : sleeplm.model.inference.SleepLM
        Needs `checkpoint_id` and `encode_signals`.
    rec : Recording
        The loaded night (its `epochs` are the model input as prepared by ingestion).
    progress : callable(fraction, message), optional
        Called while encoding (not on a cache hit, which reports 1.0 once).

    Examples
    --------
    >>> from unittest import mock
    >>> model, rec = tiny_model(), tiny_recording()
    >>> with mock.patch.dict(os.environ, {"SLEEPLM_CACHE": str(tmp_dir)}):
    ...     emb = night_embeddings(model, rec)                        # encoded, then stored
    ...     stored = embedding_cache_path(model, rec).exists()
    ...     again = night_embeddings(model, rec, progress=lambda f, m: print(f, m))   # read back
    1.0 ...
    >>> emb.shape, emb.dtype, stored, bool((again == emb).all())
    ((30, 512), dtype('float16'), True, True)
    """
    path = embedding_cache_path(model, rec)
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape[0] == rec.n_epochs and cached.dtype in (np.float16, np.float32):
                if progress:
                    progress(1.0, "SleepLM embeddings loaded from cache")
                return cached.astype(np.float16, copy=False)
            logger.warning("Ignoring a cached embedding file of the wrong shape %s", cached.shape)
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring an unreadable cached embedding file (%s)", exc)
    embeddings = model.encode_signals(rec.epochs, progress=progress).astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a crash or a concurrent reader never sees half a file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy.tmp", delete=False) as tmp:
        np.save(tmp, embeddings)
    os.replace(tmp.name, path)
    logger.info("SleepLM embeddings of %d epochs cached", rec.n_epochs)
    return embeddings
