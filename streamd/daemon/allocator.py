"""Keep a long-running daemon's resident memory flat and its pauses short: glibc malloc settings
and a frozen garbage-collector generation.

The daemon's large buffers (Kafka record values of ~10-50 kB, numpy and torch batches) are
allocated and freed by several threads with varying sizes. Left at its defaults, glibc
(a) raises its mmap threshold each time a large mmapped block is freed, so later large blocks come
from the heap, whose pages return to the system only when the top of the heap is free, and
(b) gives every thread its own arena. Both make RSS ratchet upwards: a 500-stream soak grew
1.10 -> 1.81 GB in 5 minutes at real time with the defaults, and stayed at 1.05 GB with a fixed
64 kB threshold and two arenas (bench/RESULTS.md, "Soak"). The same settings can be given as the
environment variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_ARENA_MAX``; ``mallopt`` at start-up
does it for every way of launching the daemon.

A 64 kB threshold had a price in CPU: every buffer above it was mapped afresh and faulted in
page by page each round (a 1 000-stream encoder step: 0.70 s, 0.40 s of it in the kernel, against
0.27-0.30 s with the buffers kept on the heap). Keeping them on the heap with one 4 096-stream
batch per round let RSS climb for ~15 minutes (1.4 -> 2.2 GB at 500 streams), because the batch
buffers came in ever new sizes. With the encoder's batches capped at ``model.max_batch`` 256
streams the large buffers recur in a few sizes that the heap reuses, so the defaults are now a
64 MB mmap threshold and a 512 MB trim threshold: a 40-minute 500-stream soak held RSS at 1.42 GB
from its fifth minute to its end, with ~25 % less CPU than the 64 kB setting (bench/RESULTS.md,
"Soak", session 14).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(mmap_threshold_kb: int, arena_max: int, trim_threshold_kb: int = 0) -> bool:
    """Fix glibc's mmap threshold (0: keep the dynamic default), cap its arenas (0: no cap) and fix
    how much free memory at the top of the heap it keeps before returning it (0: the default).

    Returns whether the settings were applied: False on a C library without ``mallopt`` (musl,
    macOS), where the daemon runs as before."""
    if mmap_threshold_kb <= 0 and arena_max <= 0 and trim_threshold_kb <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("mallopt not available; malloc settings left at their defaults")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = True
    if mmap_threshold_kb > 0:
        ok &= mallopt(M_MMAP_THRESHOLD, mmap_threshold_kb * 1024) == 1
    if trim_threshold_kb > 0:
        ok &= mallopt(M_TRIM_THRESHOLD, trim_threshold_kb * 1024) == 1
    if arena_max > 0:
        ok &= mallopt(M_ARENA_MAX, arena_max) == 1
    if not ok:
        log.warning("mallopt refused the malloc settings; RSS may creep up over long runs",
                    extra={"mmap_threshold_kb": mmap_threshold_kb, "arena_max": arena_max,
                           "trim_threshold_kb": trim_threshold_kb})  # fmt: skip
    return bool(ok)


def freeze_startup_objects() -> int:
    """Move every object alive now (modules, the model, clients: ~250 k objects with torch) out of
    the cyclic garbage collector's reach; returns how many.

    A full collection walks every tracked object and stops the main loop meanwhile: with the
    start-up objects in the walk, each took ~160 ms, about every 10 s, under 1 000 streams
    (``streamd_gc_pause_seconds``). Frozen objects are still freed by reference counting; only a
    reference cycle among them would stay, and start-up objects live as long as the process."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def space_young_collections(threshold: int) -> tuple[int, int, int]:
    """Collect the young generation after ``threshold`` net allocations instead of Python's 700;
    returns the thresholds before, for undoing.

    The daemon allocates and frees many short-lived objects per record and per hop (Kafka records,
    chunks, match lists), almost all freed by reference counting. At 700 the collector ran ~22
    young and ~2 middle collections a second under 1 000 streams, and what survived each (objects
    alive for a moment longer) piled into the old generation and set off a full collection (86 ms)
    every ~5 s: 3.6 % of the main thread in all (``streamd_gc_pause_seconds``, bench/RESULTS.md,
    "Soak", session 16). Spaced out, fewer such objects are still alive when a collection comes."""
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    return before
