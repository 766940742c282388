"""keep_freed_memory: freed large blocks stay in the process (what makes a CPU step stop page-faulting)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tripletnet import allocator

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)

# Resident bytes given back to the OS when a written 64 MiB block is freed, in a fresh process.
_FREED_RSS_DROP = """
import ctypes, ctypes.util, importlib.util, mmap, sys
# The module alone (it needs no torch): the process stays small and quick to start.
spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * mmap.PAGESIZE
size = 64 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
before = resident()
libc.free(block)
print(before - resident())
"""


def _rss_drop_on_free(mode: str) -> int:
    command = [sys.executable, "-c", _FREED_RSS_DROP, mode, allocator.__file__]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_a_freed_large_block_stays_resident_only_with_the_setting() -> None:
    # glibc's default: a 64 MiB block is its own mapping, unmapped (and later faulted in afresh) on free.
    assert _rss_drop_on_free("default") > 48 << 20
    # Kept: the block came from the heap and its pages stay for the next allocation.
    assert _rss_drop_on_free("keep") < 16 << 20
