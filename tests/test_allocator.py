"""glibc malloc settings of the daemon (streamd/daemon/allocator.py)."""

import platform
import subprocess
import sys

import pytest

from streamd.daemon.allocator import tune_malloc

GLIBC = platform.libc_ver()[0] == "glibc"


def test_zero_settings_leave_malloc_alone():
    assert tune_malloc(0, 0) is False
    assert tune_malloc(0, 0, trim_threshold_kb=0) is False


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_settings_apply_on_glibc():
    # In a child: the settings are process-wide and must not leak into the test session.
    code = "from streamd.daemon.allocator import tune_malloc; print(tune_malloc(64, 2), tune_malloc(0, 0, 1024))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_fixed_threshold_returns_freed_blocks_between_live_ones():
    """Once glibc's dynamic threshold has risen, freed 200 kB blocks between live ones stay resident
    (heap holes); with the fixed 64 kB threshold they are mmapped and go back to the system."""
    code = """
import ctypes, sys
from streamd.daemon.allocator import tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc(64, 2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
big = libc.malloc(8 << 20); libc.memset(big, 1, 8 << 20); libc.free(big)  # raises the dynamic threshold
base = rss()
blocks = [libc.malloc(200_000) for _ in range(400)]                         # 80 MB
for b in blocks: libc.memset(b, 1, 200_000)
for b in blocks[::2]: libc.free(b)                                           # 40 MB of holes
print((rss() - base) / 2**20)
"""
    resident = {mode: float(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                           check=True).stdout) for mode in ("default", "tuned")}  # fmt: skip
    assert resident["default"] > 70 and resident["tuned"] < 45, resident


def test_frozen_startup_objects_leave_full_collections():
    """In a child (freezing is process-wide): after freeze_startup_objects the collector's
    generations (what a full collection walks) no longer hold the start-up objects, and a cycle
    made later is still collected."""
    code = """
import gc
import torch  # ~100 k start-up objects
from streamd.daemon.allocator import freeze_startup_objects

walked_before = len(gc.get_objects())
frozen = freeze_startup_objects()
walked_after = len(gc.get_objects())

class Node: pass
a, b = Node(), Node(); a.other, b.other = b, a  # a cycle made after the freeze
del a, b
print(frozen, walked_before, walked_after, gc.collect())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    frozen, walked_before, walked_after, collected = map(int, out.split())
    assert frozen > 50_000 and walked_before > 50_000
    assert walked_after < walked_before / 20
    assert collected >= 2
