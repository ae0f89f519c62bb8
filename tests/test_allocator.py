"""sleeplm.io.allocator: freed night-sized blocks are reused from the heap, not mapped afresh."""

import platform

import numpy as np
import pytest

from sleeplm.io.allocator import KEEP_BYTES, glibc, keep_freed_memory, return_freed_memory


def _in_heap(address: int) -> bool:
    """Whether `address` lies in the process's heap (the brk area malloc reuses), not in a mapping of its own."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("[heap]"):
                low, high = (int(bound, 16) for bound in line.split()[0].split("-"))
                if low <= address < high:
                    return True
    return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_night_sized_blocks_come_from_the_heap():
    n_bytes = 64 << 20  # above glibc's largest default mmap threshold (32 MB), below KEEP_BYTES
    assert n_bytes < KEEP_BYTES
    assert keep_freed_memory()
    block = np.ones(n_bytes // 8)
    assert _in_heap(block.ctypes.data)  # without the setting, glibc maps it afresh (and unmaps it when freed)


def test_other_c_libraries_are_left_alone(monkeypatch):
    keep_freed_memory.cache_clear()
    glibc.cache_clear()
    monkeypatch.setattr("sys.platform", "darwin")
    try:
        assert glibc() is None
        assert keep_freed_memory() is False
        assert return_freed_memory() is False
    finally:
        keep_freed_memory.cache_clear()
        glibc.cache_clear()
