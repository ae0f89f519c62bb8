"""Giving a closed session's memory back to the operating system.

A session's arrays are freed when its last reference goes, but glibc's malloc keeps freed
memory in its heaps (and raises its mmap threshold after each large free, so later arrays of up
to 32 MB land in those heaps instead of their own mappings): a server's RSS then stays near its
peak after the sessions that caused it have closed. Two calls fix that on glibc (Linux); on
other C libraries they do nothing:

- `bound_heap`, once at start-up: a fixed mmap threshold, so every array over it has its own
  mapping, unmapped the moment it is freed;
- `release_memory`, after a session closes: a garbage collection, then ``malloc_trim(0)``,
  which returns the free pages of every malloc arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

__all__ = ["MMAP_THRESHOLD_BYTES", "bound_heap", "release_memory"]

logger = logging.getLogger(__name__)

# Allocations of at least this size get their own mapping (glibc's default starts at 128 KiB and
# rises up to 32 MiB as large blocks are freed).
MMAP_THRESHOLD_BYTES = 1024**2
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def bound_heap(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold_bytes` (no dynamic raise); True when set."""
    libc = _libc()
    if libc is None:
        return False
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    logger.debug("malloc mmap threshold fixed at %d bytes: %s", threshold_bytes, done)
    return done


def release_memory() -> bool:
    """Collect garbage and return malloc's free pages to the system; True when memory was returned."""
    gc.collect()
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
