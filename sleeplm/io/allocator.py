"""Process memory for night-sized arrays: freed blocks are kept for the next ones (glibc).

An 8-h night's signals and their filtered, resampled and Fourier-transformed copies are arrays of
15-60 MB. glibc's malloc maps every block above its mmap threshold (at most 32 MB) from the kernel
afresh and unmaps it when it is freed, so each filter pass, FFT and copy touches new pages that the
kernel must fault in and zero: ~250k page faults and ~1 s of system time per 8-h night, a tenth of
the night's CPU, all of it memory traffic that a second night on the other core competes with.
`keep_freed_memory` raises the mmap and trim thresholds so those blocks come from the heap and
freed ones are reused (the simulated 8-h nights of ``bench/cohort.py``, measured one after another
in one process: 27k page faults instead of 245k, 0.2 s of system time instead of 1.0 s, user time
unchanged). The process then keeps up to its peak heap between nights,
which is what a process that measures night after night needs anyway.

It is for processes that measure nights one after another: the cohort's Ray tasks
(`sleeplm.cohort.night.measure_night`) and ``sleeplm-assistant analyze``. On other C libraries
(musl, macOS) it does nothing. `return_freed_memory` is the opposite move, for a process that has
just dropped something large for good (the fp32 encoder a faster precision replaced).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import sys

__all__ = ["KEEP_BYTES", "glibc", "keep_freed_memory", "return_freed_memory"]

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks below this size come from the heap, and free memory at the heap's top is returned to the
# kernel only beyond it: above the largest array of an 8-h night (a 128-Hz channel's complex FFT is 59 MB).
KEEP_BYTES = 1 << 30


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc on Linux (errno kept for the caller), else None.

    Examples
    --------
    >>> import platform
    >>> (glibc() is not None) == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
    True
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.gnu_get_libc_version  # glibc only: other C libraries read malloc's parameters differently
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    libc.madvise.argtypes, libc.madvise.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int
    return libc


def return_freed_memory() -> bool:
    """Collect garbage and give the heap's free memory back to the kernel (glibc's ``malloc_trim(0)``).

    Returns
    -------
    True when glibc returned memory, False when there was none to return or the C library is not glibc.

    Examples
    --------
    >>> return_freed_memory() in (True, False)
    True
    """
    gc.collect()
    libc = glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed blocks of up to `KEEP_BYTES` in this process for reuse (once per process).

    Returns
    -------
    True when glibc took the setting, False elsewhere (nothing changed).

    Examples
    --------
    >>> import platform
    >>> keep_freed_memory() == (platform.libc_ver()[0] == "glibc")
    True
    """
    libc = glibc()
    if libc is None:
        return False
    kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
    logger.debug("malloc keeps freed blocks up to %d bytes: %s", KEEP_BYTES, kept)
    return kept
