"""Multi-index hashing (Norouzi, Punjani & Fleet, 2012): sublinear Hamming search within a radius.

Each K-bit code is cut into m disjoint substrings, and each substring position gets a table that
maps a substring value to the rows holding it (a bucket sort: ``offsets`` + ``rows``, no hashing).

Pigeonhole, in the refined form of the paper: if table i has been probed at every substring
distance ``0..t_i`` (``t_i = -1``: not probed), every code whose full distance is below
``Σ (t_i + 1)`` has been seen — a code never seen differs in at least ``t_i + 1`` bits in every
substring. So the search is a *schedule* of steps, each raising one table's probed distance by
one, and after step j every code within distance j is certain to have been seen: ``radius + 1``
steps find everything within the radius. For K = 64, m = 4 and radius 8 that is tables probed to
distances (2, 1, 1, 1), 188 buckets per query, where the plain rule (every table to
``floor(radius / m)``) probes (2, 2, 2, 2), 548. A query stops as soon as its k-th best is within
the distance already certain.

The result is exactly the top-k among codes within ``radius`` (codes farther away are never
returned), so recall against an unlimited exact search only drops when some of the true k
nearest lie beyond the radius.

Where the time goes, and what the layout does about it:

- Probes. A step's probes for the whole batch are radix-sorted by bucket so that the tables are
  read in address order, and the kernel prefetches each bucket's filters a few probes ahead (the
  gaps between probed buckets defeat the hardware prefetcher).
- Candidates. Each table keeps, in its bucket order, a 32-bit *filter* per code: 32 bits of the
  code outside that table's substring (the whole code for K ≤ 32). Since every code in a probed
  bucket differs from the query in exactly ``t`` substring bits, ``t + popcount(filter ^ query's)``
  is a lower bound of the distance; a bucket is screened 64 codes at a time with vector popcounts
  over 4 bytes per code, and only the few codes that pass (~0.1-0.4 % of unrelated ones at radius 8)
  have their row and full code fetched, batched and prefetched. Once the probes are sorted,
  streaming these filters is most of the time, so 4 bytes per code instead of 8 matters.

:func:`schedule_cost` models both costs; it orders a schedule's steps (cheapest first) and picks m
per database size and radius (:func:`default_substrings`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from streamd.store.codes import popcount32, popcount64
from streamd.store.search import MISSING, exact_topk, plane_bits

MAX_SUBSTRING_BITS = 24
MIN_SUBSTRING_BITS = 4
DEFAULT_RADIUS = 8  # the radius m is chosen for when the caller does not say (SearchSettings.radius)
# What one probe costs, in screened codes (fit to bench/search.py --substrings 3,4,5,6 at 1 M and 10 M).
PROBE_COST = 60.0


def substring_layout(bits: int, m: int) -> list[tuple[int, int, int]]:
    """(plane, shift, width) of each substring; substrings never straddle a word plane."""
    planes = 2 if bits == 128 else 1
    if m < planes or m % planes or m > bits:
        raise ValueError(f"cannot split {bits}-bit codes into {m} substrings")
    per_plane = m // planes
    plane_width = bits // planes
    layout = []
    for p in range(planes):
        shift = 0
        for i in range(per_plane):
            width = plane_width // per_plane + (1 if i < plane_width % per_plane else 0)
            layout.append((p, shift, width))
            shift += width
    if max(w for _, _, w in layout) > MAX_SUBSTRING_BITS:
        raise ValueError(f"{bits}-bit codes in {m} substrings need tables wider than "
                         f"{MAX_SUBSTRING_BITS} bits")
    return layout


def _step_cost(width: int, level: int, n_codes: int) -> float:
    """Expected cost of probing one table at one substring distance, in screened codes."""
    return math.comb(width, level) * (PROBE_COST + n_codes / 2**width)


def probe_schedule(widths: list[int], radius: int, n_codes: int) -> list[tuple[int, int]]:
    """The ``radius + 1`` steps ``(table, substring distance)`` that find every code within ``radius``.

    Each step raises one table's probed distance by one, greedily the cheapest next step first.
    A table's next distance only gets dearer (up to half its width, far beyond useful radii), so
    every prefix of the schedule is the cheapest way to its certain distance, which is what an
    early stop needs. ``Σ (width + 1) = K + m > radius``: the tables never run out of distances.
    """
    next_level = [0] * len(widths)
    steps = []
    for _ in range(radius + 1):
        table = min((i for i, w in enumerate(widths) if next_level[i] <= w),
                    key=lambda i: (_step_cost(widths[i], next_level[i], n_codes), i))
        steps.append((table, next_level[table]))
        next_level[table] += 1
    return steps


def schedule_cost(bits: int, m: int, radius: int, n_codes: int) -> float:
    """Expected cost of one query that runs its whole schedule (no early stop), in screened codes."""
    widths = [w for _, _, w in substring_layout(bits, m)]
    return sum(_step_cost(widths[i], level, n_codes) for i, level in probe_schedule(widths, radius, n_codes))


def default_substrings(bits: int, n_codes: int, radius: int = DEFAULT_RADIUS) -> int:
    """The m whose full schedule is cheapest at this database size and radius (:func:`schedule_cost`).

    Small radii land near Norouzi's rule of substrings of about log2(n) bits; larger radii on
    more, narrower substrings (radius 8, 64-bit codes: m = 5 at 1 M codes, 4 at 10 M).
    """
    planes = 2 if bits == 128 else 1
    radius = max(0, min(int(radius), bits))
    n_codes = max(n_codes, 1)
    options = [m for m in range(planes, bits // MIN_SUBSTRING_BITS + 1, planes)
               if -(-bits // m) <= MAX_SUBSTRING_BITS]
    return min(options, key=lambda m: (schedule_cost(bits, m, radius, n_codes), m))


@lru_cache(maxsize=64)
def probe_masks(width: int, max_level: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``width``-bit masks with at most ``max_level`` bits set, ordered by popcount.

    Returns (masks uint32, level_starts) with masks of popcount s at
    ``masks[level_starts[s]:level_starts[s + 1]]``.
    """
    masks: list[int] = []
    starts = [0]
    for level in range(min(max_level, width) + 1):
        masks.extend(sum(1 << b for b in combo) for combo in combinations(range(width), level))
        starts.append(len(masks))
    starts += [len(masks)] * (max_level + 1 - (len(starts) - 1))
    return np.asarray(masks, dtype=np.uint32), np.asarray(starts, dtype=np.int64)


@nb.njit
def _filter_word(word, word_bits, rotate):
    """The 32 bits (cyclically) above a substring ending at bit ``rotate``; a word of ≤ 32 bits whole."""
    x = np.uint64(word)
    if word_bits > 32 and rotate % 64 != 0:
        x = (x >> np.uint64(rotate % 64)) | (x << np.uint64(64 - rotate % 64))
    return np.uint32(x & np.uint64(0xFFFFFFFF))


@nb.njit(cache=True)
def _build_table(words, shift, width, word_bits):
    """One table: counting sort of the rows by substring value, and the rows' filters in that order.

    ``rows[offsets[v]:offsets[v + 1]]`` hold substring value v.
    """
    n = words.shape[0]
    n_buckets = 1 << width
    key_mask = np.uint64(n_buckets - 1)
    offsets = np.zeros(n_buckets + 1, np.int64)
    for j in range(n):
        offsets[((np.uint64(words[j]) >> np.uint64(shift)) & key_mask) + 1] += 1
    for v in range(n_buckets):
        offsets[v + 1] += offsets[v]
    fill = offsets[:-1].copy()
    rows = np.empty(n, np.int32)
    filters = np.empty(n, np.uint32)
    for j in range(n):
        key = (np.uint64(words[j]) >> np.uint64(shift)) & key_mask
        rows[fill[key]] = j
        filters[fill[key]] = _filter_word(words[j], word_bits, shift + width)
        fill[key] += 1
    return offsets.astype(np.int32), rows, filters


QUERY_BITS = 16  # a probe is (bucket << QUERY_BITS) | query, queries per group < 2**16
MAX_RADIX_BITS = 11
PROBE_CAP = 1 << 22  # probes sorted at once (32 MB), whatever the batch size and radius (default)
PREFETCH_AHEAD = 8  # probes
PREFETCH_CODES = 256  # of a bucket, at most
SLICE = 64  # a bucket's filters are screened this many at a time, into one bit mask
CANDIDATE_CAP = 1024  # codes that passed the filter, verified together (default)


@nb.njit(cache=True)
def _radix_sort(keys, shift, n_bits):
    """Stable LSD radix sort of uint64 ``keys`` by their bits ``[shift, shift + n_bits)``."""
    n = keys.shape[0]
    src = keys
    dst = np.empty_like(keys)
    n_passes = (n_bits + MAX_RADIX_BITS - 1) // MAX_RADIX_BITS
    pass_shift = shift
    for pass_index in range(n_passes):
        digit_bits = (n_bits - (pass_shift - shift) + (n_passes - pass_index) - 1) // (n_passes - pass_index)
        radix = 1 << digit_bits
        counts = np.zeros(radix + 1, np.int64)
        for i in range(n):
            counts[((src[i] >> np.uint64(pass_shift)) & np.uint64(radix - 1)) + 1] += 1
        for d in range(radix):
            counts[d + 1] += counts[d]
        for i in range(n):
            digit = (src[i] >> np.uint64(pass_shift)) & np.uint64(radix - 1)
            dst[counts[digit]] = src[i]
            counts[digit] += 1
        src, dst = dst, src
        pass_shift += digit_bits
    return src


@intrinsic
def _prefetch(typingctx, array, index):  # noqa: ARG001 - numba intrinsic signature
    """Start loading ``array[index]`` into the caches (``llvm.prefetch``); changes nothing else."""

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(function, [pointer, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(array, index), codegen


@nb.njit(boundscheck=False)
def _below(filters, start, stop, query_filter, limit):
    """Bit o set: the filter at ``start + o`` (o < 64) differs from the query's in fewer than ``limit`` bits.

    A branch-free loop that the compiler vectorises (vector popcounts); unsigned positions,
    because a signed index gets a negative-index check that turns the loads into gathers.
    """
    bits = np.uint64(0)
    for o in range(np.uint64(0), np.uint64(stop - start)):
        bits |= np.uint64(popcount32(filters[np.uint64(start) + o] ^ query_filter) < limit) << o
    return bits


@nb.njit(boundscheck=False)
def _consider(best_d, best_r, row, d, live, check_live):
    """Insert a candidate that beats the k-th best (unless deleted or already listed); new k-th best."""
    k = best_d.shape[0]
    if check_live and live[row] < 0:
        return best_d[k - 1]
    for t in range(k):
        if best_r[t] == row:
            return best_d[k - 1]
    t = k - 1
    while t > 0 and best_d[t - 1] > d:
        best_d[t] = best_d[t - 1]
        best_r[t] = best_r[t - 1]
        t -= 1
    best_d[t] = d
    best_r[t] = row
    return best_d[k - 1]


@nb.njit(boundscheck=False)
def _verify(n, cand_pos, cand_query, cand_row, table_rows, planes, queries, worst, best_d, best_r, live,
            check_live):
    """Full distances of the ``n`` candidates that passed the filter, and their insertion.

    Their rows and codes are random accesses, so each is prefetched for all candidates before
    it is read: the cache misses overlap instead of following one another.
    """
    for c in range(n):
        _prefetch(table_rows, cand_pos[c])
    for c in range(n):
        row = table_rows[cand_pos[c]]
        cand_row[c] = row
        for w in range(planes.shape[0]):
            _prefetch(planes[w], row)
    for c in range(n):
        q = cand_query[c]
        row = cand_row[c]
        d = np.int64(0)
        for w in range(planes.shape[0]):
            d += np.int64(popcount64(np.uint64(planes[w, row]) ^ np.uint64(queries[w, q])))
        if d < worst[q]:
            worst[q] = _consider(best_d[q], best_r[q], row, d, live, check_live)


@nb.njit(boundscheck=False, cache=True)
def _mih_search(live, check_live, planes, queries, word_bits, k, radius, sub_plane, sub_shift, sub_width,
                table_base, offsets, rows, filters, step_table, step_level, step_masks, masks, probe_cap,
                candidate_cap):
    """Step-synchronous MIH over a batch of queries (fewer than ``2**QUERY_BITS``), on one thread.

    Step j probes table ``step_table[j]`` at substring distance ``step_level[j]``, with the XOR
    masks ``masks[step_masks[j]:step_masks[j + 1]]``, for every active query. The step's probes
    ``(bucket, query)`` are radix-sorted by bucket, so the bucket table and the filters (each
    table's, in its bucket order) are read in increasing address order. After step j every code
    within distance j has been seen, so a query whose k-th best is within j is done. At most
    ``probe_cap`` probes are sorted at once and ``candidate_cap`` candidates verified at once.
    """
    m = sub_plane.shape[0]
    nq = queries.shape[1]
    best_d = np.full((nq, k), radius + 1, np.int64)
    best_r = np.full((nq, k), -1, np.int64)
    worst = np.full(nq, radius + 1, np.int64)
    keys = np.empty((nq, m), np.int64)
    query_filters = np.empty((nq, m), np.uint32)
    for q in range(nq):
        for i in range(m):
            word = queries[sub_plane[i], q]
            key_mask = np.uint64((1 << sub_width[i]) - 1)
            keys[q, i] = np.int64((np.uint64(word) >> np.uint64(sub_shift[i])) & key_mask)
            query_filters[q, i] = _filter_word(word, word_bits, sub_shift[i] + sub_width[i])
    cand_pos = np.empty(candidate_cap, np.int64)
    cand_query = np.empty(candidate_cap, np.int64)
    cand_row = np.empty(candidate_cap, np.int64)
    query_mask = np.uint64((1 << QUERY_BITS) - 1)
    active = np.arange(nq)
    for j in range(step_table.shape[0]):
        i = step_table[j]
        base = table_base[i]
        table_filters, table_rows = filters[i], rows[i]
        # Codes in a bucket probed at substring distance t differ in t bits the filter lacks.
        known = step_level[j] if word_bits > 32 else 0
        first, stop = step_masks[j], step_masks[j + 1]
        per_pass = max(1, probe_cap // (stop - first))
        for a0 in range(0, active.shape[0], per_pass):
            a1 = min(active.shape[0], a0 + per_pass)
            probes = np.empty((a1 - a0) * (stop - first), np.uint64)
            p = 0
            for a in range(a0, a1):
                q = active[a]
                key = keys[q, i]
                for mi in range(first, stop):
                    probes[p] = (np.uint64(key ^ masks[mi]) << np.uint64(QUERY_BITS)) | np.uint64(q)
                    p += 1
            probes = _radix_sort(probes, QUERY_BITS, sub_width[i])
            n_probes = probes.shape[0]
            n_cand = 0
            for p in range(n_probes):
                # The probes ascend, but with gaps the hardware does not predict: fetch ahead.
                if p + 2 * PREFETCH_AHEAD < n_probes:
                    further = base + np.int64(probes[p + 2 * PREFETCH_AHEAD] >> np.uint64(QUERY_BITS))
                    _prefetch(offsets, further)
                if p + PREFETCH_AHEAD < n_probes:
                    ahead = base + np.int64(probes[p + PREFETCH_AHEAD] >> np.uint64(QUERY_BITS))
                    # The whole bucket, a cache line (16 filters) at a time, up to PREFETCH_CODES.
                    last = min(offsets[ahead + 1], offsets[ahead] + PREFETCH_CODES)
                    for line in range(offsets[ahead], last, 16):
                        _prefetch(table_filters, line)
                bucket = base + np.int64(probes[p] >> np.uint64(QUERY_BITS))
                q = np.int64(probes[p] & query_mask)
                if worst[q] <= known:
                    continue
                limit = np.uint32(worst[q] - known)
                query_filter = query_filters[q, i]
                for start in range(offsets[bucket], offsets[bucket + 1], SLICE):
                    passed = _below(table_filters, start, min(start + SLICE, offsets[bucket + 1]),
                                    query_filter, limit)
                    while passed:
                        if n_cand == candidate_cap:
                            _verify(n_cand, cand_pos, cand_query, cand_row, table_rows, planes, queries,
                                    worst, best_d, best_r, live, check_live)
                            n_cand = 0
                        cand_pos[n_cand] = start + trailing_zeros(passed)
                        cand_query[n_cand] = q
                        n_cand += 1
                        passed &= passed - np.uint64(1)
            _verify(n_cand, cand_pos, cand_query, cand_row, table_rows, planes, queries, worst, best_d,
                    best_r, live, check_live)
        still = 0
        for q in active:
            if worst[q] > j:  # its k-th best is not yet certain
                active[still] = q
                still += 1
        active = active[:still]
        if still == 0:
            break
    missing = best_r < 0
    return np.where(missing, -1, best_d), best_r


class MultiIndex:
    """MIH tables over the first ``len`` rows of a word-plane array ``(W, n)``.

    ``m`` defaults to the cheapest for this many codes at ``radius`` (the radius searches will
    mostly use; any radius can be searched). The index keeps a reference to ``planes`` (candidates
    are verified against it); rows appended later are not indexed (search them with
    :func:`streamd.store.search.exact_topk` over ``rows=(len, n)``).
    """

    def __init__(self, planes: np.ndarray, m: int | None = None, *, radius: int = DEFAULT_RADIUS):
        self.planes = np.ascontiguousarray(planes)
        self.bits = plane_bits(planes)
        self.len = planes.shape[1]
        if self.len >= 2**31:
            raise ValueError("MultiIndex holds at most 2**31 - 1 codes")
        self.m = m or default_substrings(self.bits, self.len, radius)
        layout = substring_layout(self.bits, self.m)
        self.widths = [w for _, _, w in layout]
        self.sub_plane = np.array([p for p, _, _ in layout], np.int64)
        self.sub_shift = np.array([s for _, s, _ in layout], np.int64)
        self.sub_width = np.array(self.widths, np.int64)
        word_bits = planes.dtype.itemsize * 8
        bases, tables, row_lists, filter_lists = [], [], [], []
        base = 0
        for p, shift, width in layout:
            offsets, rows, filters = _build_table(self.planes[p], shift, width, word_bits)
            bases.append(base)
            tables.append(offsets)
            row_lists.append(rows)
            filter_lists.append(filters)
            base += offsets.shape[0]
        self.table_base = np.asarray(bases, np.int64)
        self.offsets = np.concatenate(tables)
        self.rows = np.stack(row_lists)  # (m, n) row numbers in bucket order, per table
        self.filters = np.stack(filter_lists)  # (m, n) uint32 filters in that order
        self._schedules: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self.probe_cap = PROBE_CAP
        self.candidate_cap = CANDIDATE_CAP

    @property
    def nbytes(self) -> int:
        """Memory of the tables (not counting the codes in the plane array)."""
        return self.offsets.nbytes + self.rows.nbytes + self.filters.nbytes

    def schedule(self, radius: int) -> list[tuple[int, int]]:
        """The (table, substring distance) steps of a search within ``radius`` (:func:`probe_schedule`)."""
        return probe_schedule(self.widths, min(int(radius), self.bits), self.len)

    def probes(self, radius: int) -> int:
        """Buckets one query probes when it runs the whole schedule."""
        return sum(math.comb(self.widths[i], level) for i, level in self.schedule(radius))

    def cost(self, radius: int) -> float:
        """Modelled cost of a query running the whole schedule, in screened codes (:func:`schedule_cost`)."""
        return schedule_cost(self.bits, self.m, min(int(radius), self.bits), self.len)

    def _schedule_arrays(self, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The schedule as kernel arrays: table and level per step, mask range per step, masks."""
        if radius not in self._schedules:
            steps = self.schedule(radius)
            step_masks = []
            for i, level in steps:
                masks, starts = probe_masks(self.widths[i], level)
                step_masks.append(masks[starts[level]:starts[level + 1]].astype(np.int64))
            bounds = np.cumsum([0] + [len(s) for s in step_masks]).astype(np.int64)
            self._schedules[radius] = (np.array([i for i, _ in steps], np.int64),
                                       np.array([level for _, level in steps], np.int64), bounds,
                                       np.concatenate(step_masks))
        return self._schedules[radius]

    def search(self, query_planes: np.ndarray, k: int, radius: int, *,
               live: np.ndarray | None = None, allow_scan: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k among indexed codes within ``radius`` of each query (same contract as exact_topk).

        When the schedule's modelled cost exceeds a quarter of the codes (a screened code costs about
        four times a scanned one, which the exact scan shares among 32 queries), the exact scan limited
        to ``radius`` is cheaper and is used instead (same result) unless ``allow_scan`` is false.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        step = 1 << (QUERY_BITS - 1)
        if query_planes.shape[1] > step:  # query numbers must fit their bit field
            parts = [self.search(query_planes[:, s:s + step], k, radius, live=live, allow_scan=allow_scan)
                     for s in range(0, query_planes.shape[1], step)]
            return np.concatenate([d for d, _ in parts]), np.concatenate([r for _, r in parts])
        radius = min(int(radius), self.bits)
        n_queries = query_planes.shape[1]
        if radius < 0 or self.len == 0 or n_queries == 0:
            return np.full((n_queries, k), MISSING, np.int32), np.full((n_queries, k), MISSING, np.int64)
        if allow_scan and self.cost(radius) * 4 > self.len:
            return exact_topk(self.planes, query_planes, k, live=live, max_distance=radius,
                              rows=(0, self.len))
        step_table, step_level, step_masks, masks = self._schedule_arrays(radius)
        check_live = live is not None
        live_arr = np.ascontiguousarray(live, dtype=np.int32) if check_live else np.zeros(0, np.int32)
        d, r = _mih_search(live_arr, check_live, self.planes, np.ascontiguousarray(query_planes),
                           self.planes.dtype.itemsize * 8, k, radius, self.sub_plane, self.sub_shift,
                           self.sub_width, self.table_base, self.offsets, self.rows, self.filters, step_table,
                           step_level, step_masks, masks, self.probe_cap, self.candidate_cap)
        return d.astype(np.int32), r
