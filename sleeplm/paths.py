"""Where the project keeps files between runs: one cache folder for the demo night, downloaded
weights and their record, night embeddings and local language models.

Examples
--------
>>> from unittest import mock
>>> with mock.patch.dict(os.environ, {"SLEEPLM_CACHE": str(tmp_dir / "cache")}):
...     [path.relative_to(tmp_dir).as_posix() for path in (cache_root(), cache_root("embeddings"))]
['cache', 'cache/embeddings']
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "DEFAULT_CACHE", "cache_root"]

# The cache folder: this environment variable, else DEFAULT_CACHE ("~" is expanded in both).
CACHE_ENV = "SLEEPLM_CACHE"
DEFAULT_CACHE = "~/.cache/sleeplm-assistant"


def cache_root(*parts: str) -> Path:
    """``$SLEEPLM_CACHE`` (else ``~/.cache/sleeplm-assistant``), or a folder `parts` below it; created.

    Examples
    --------
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"SLEEPLM_CACHE": str(tmp_dir / "cache")}):
    ...     folder = cache_root("models")
    >>> folder == tmp_dir / "cache" / "models", folder.is_dir()
    (True, True)
    >>> with mock.patch.dict(os.environ, {"SLEEPLM_CACHE": ""}):
    ...     cache_root() == Path.home() / ".cache" / "sleeplm-assistant"
    True
    """
    folder = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser().joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
