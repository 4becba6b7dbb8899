"""Multi-index hashing (Norouzi, Punjani & Fleet, 2012): sublinear Hamming search within a radius.

Each K-bit code is cut into m disjoint substrings, and each substring position gets a table that
maps a substring value to the rows holding it (a bucket sort: ``offsets`` + ``rows``, no hashing),
plus a copy of the codes in that bucket order so that a bucket's codes are contiguous.
Pigeonhole: if two codes differ in at most ``m · (s + 1) - 1`` bits, at least one of their m
substrings differs in at most ``s`` bits. So probing, in every table, all buckets within
substring distance ``s`` of the query's substring finds every code within that distance; the
candidates are then ranked by their exact full distance.

The search grows ``s`` level by level from 0 and a query stops early once its k-th best is within
the distance already guaranteed, or at ``s = floor(radius / m)``. The result is exactly the top-k
among codes within ``radius`` (codes farther away are never returned), so recall against an
unlimited exact search only drops when some of the true k nearest lie beyond the radius.

Cost: ``m · Σ_{s' ≤ s} C(K/m, s')`` bucket probes per query (718 for K = 64, m = 3, radius 8),
each a random memory access into tables far larger than the caches. That latency is what MIH
time is made of, so a batch's probes are radix-sorted by bucket first and the tables are then
read in address order (measured 1.4-2.6× faster than probing query by query; bench/search.py).
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations

import numba
import numba as nb
import numpy as np

from streamd.store.codes import popcount64
from streamd.store.search import MISSING, exact_topk, plane_bits

MAX_SUBSTRING_BITS = 24


def default_substrings(bits: int, n_codes: int) -> int:
    """Norouzi's rule of thumb: substrings of about log2(n) bits (each table ≈ one code per bucket)."""
    planes = 2 if bits == 128 else 1
    target = min(MAX_SUBSTRING_BITS, max(8, round(math.log2(max(n_codes, 2)))))
    m = max(planes, round(bits / target), math.ceil(bits / MAX_SUBSTRING_BITS))
    return m + (m % planes)


def substring_layout(bits: int, m: int) -> list[tuple[int, int, int]]:
    """(plane, shift, width) of each substring; substrings never straddle a word plane."""
    planes = 2 if bits == 128 else 1
    if m < planes or m % planes or bits // m > MAX_SUBSTRING_BITS + 8 or m > bits:
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
        raise ValueError(f"{bits}-bit codes in {m} substrings need tables wider than {MAX_SUBSTRING_BITS} bits")
    return layout


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


def probes_per_query(bits: int, m: int, radius: int) -> int:
    """Buckets one query probes at the full radius."""
    level = radius // m
    return sum(math.comb(w, s) for _, _, w in substring_layout(bits, m) for s in range(min(level, w) + 1))


@nb.njit(cache=True)
def _bucket_sort(keys, n_buckets):
    """Counting sort of row numbers by key: ``rows[offsets[v]:offsets[v + 1]]`` hold key v."""
    offsets = np.zeros(n_buckets + 1, np.int64)
    for j in range(keys.shape[0]):
        offsets[keys[j] + 1] += 1
    for v in range(n_buckets):
        offsets[v + 1] += offsets[v]
    fill = offsets[:-1].copy()
    rows = np.empty(keys.shape[0], np.int32)
    for j in range(keys.shape[0]):
        rows[fill[keys[j]]] = j
        fill[keys[j]] += 1
    return offsets.astype(np.int32), rows


QUERY_BITS = 16  # queries per group < 2**16
TABLE_BITS = 6  # substrings < 2**6
RADIX_BITS = 11


@nb.njit(cache=True)
def _radix_sort(keys, shift, n_bits):
    """Stable LSD radix sort of uint64 ``keys`` by their bits ``[shift, shift + n_bits)``."""
    n = keys.shape[0]
    src = keys
    dst = np.empty_like(keys)
    radix = 1 << RADIX_BITS
    for pass_shift in range(shift, shift + n_bits, RADIX_BITS):
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
    return src


RUN = 256  # candidates whose distances are computed in one vectorisable loop


@nb.njit(inline="always")
def _run_distances(codes, table, start, stop, queries, query, dist):
    """Distances from one query to the bucket-ordered codes ``start:stop`` of one table."""
    if codes.shape[1] == 1:
        qa = np.uint64(queries[0, query])
        for pos in range(start, stop):
            dist[pos - start] = np.int64(popcount64(np.uint64(codes[table, 0, pos]) ^ qa))
    else:
        qa = np.uint64(queries[0, query])
        qb = np.uint64(queries[1, query])
        for pos in range(start, stop):
            dist[pos - start] = np.int64(popcount64(np.uint64(codes[table, 0, pos]) ^ qa)
                                         + popcount64(np.uint64(codes[table, 1, pos]) ^ qb))


@nb.njit(inline="always")
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


@nb.njit(parallel=True, boundscheck=False, cache=True)
def _mih_search(live, check_live, queries, k, radius, max_level, n_groups, sub_plane, sub_shift, sub_width,
                table_base, bucket_bits, offsets, rows, codes, masks, mask_starts):
    """Level-synchronous MIH over groups of queries (one group per task).

    For each level s, every active query of the group emits its probes (bucket, table, query) as
    one uint64; the probes are radix-sorted by bucket, so the bucket tables and the codes stored
    in bucket order (``codes``: each table's copy of the database, sorted like its buckets) are
    read in increasing address order instead of at random, which is what makes MIH cheap here.
    A query stops once its k-th best distance is within the distance the levels done so far
    guarantee (``m · (s + 1) - 1``).
    """
    m = sub_plane.shape[0]
    n_queries = queries.shape[1]
    out_d = np.full((n_queries, k), -1, np.int64)
    out_r = np.full((n_queries, k), -1, np.int64)
    group_size = (n_queries + n_groups - 1) // n_groups
    for g in nb.prange(n_groups):
        q0 = g * group_size
        nq = min(n_queries, q0 + group_size) - q0
        if nq <= 0:
            continue
        best_d = np.full((nq, k), radius + 1, np.int64)
        best_r = np.full((nq, k), -1, np.int64)
        worst = np.full(nq, radius + 1, np.int64)
        keys = np.empty((nq, m), np.int64)
        for q in range(nq):
            for i in range(m):
                keys[q, i] = np.int64((np.uint64(queries[sub_plane[i], q0 + q]) >> np.uint64(sub_shift[i]))
                                      & np.uint64((1 << sub_width[i]) - 1))
        active = np.arange(nq)
        dist = np.empty(RUN, np.int64)
        for level in range(max_level + 1):
            per_query = 0
            for i in range(m):
                per_query += mask_starts[i, level + 1] - mask_starts[i, level]
            probes = np.empty(active.shape[0] * per_query, np.uint64)
            p = 0
            for q in active:
                for i in range(m):
                    base = table_base[i]
                    for mi in range(mask_starts[i, level], mask_starts[i, level + 1]):
                        bucket = base + (keys[q, i] ^ masks[mi])
                        probes[p] = ((np.uint64(bucket) << np.uint64(QUERY_BITS + TABLE_BITS))
                                     | np.uint64(i << QUERY_BITS) | np.uint64(q))
                        p += 1
            probes = _radix_sort(probes, QUERY_BITS + TABLE_BITS, bucket_bits)
            for p in range(probes.shape[0]):
                probe = probes[p]
                bucket = np.int64(probe >> np.uint64(QUERY_BITS + TABLE_BITS))
                i = np.int64((probe >> np.uint64(QUERY_BITS)) & np.uint64((1 << TABLE_BITS) - 1))
                q = np.int64(probe & np.uint64((1 << QUERY_BITS) - 1))
                for start in range(offsets[bucket], offsets[bucket + 1], RUN):
                    stop = min(start + RUN, offsets[bucket + 1])
                    _run_distances(codes, i, start, stop, queries, q0 + q, dist)
                    for pos in range(start, stop):
                        d = dist[pos - start]
                        if d < worst[q]:
                            worst[q] = _consider(best_d[q], best_r[q], rows[i, pos], d, live, check_live)
            certain = m * (level + 1) - 1  # every code this close has been seen
            still = 0
            for q in active:
                if worst[q] > certain:
                    active[still] = q
                    still += 1
            active = active[:still]
            if still == 0:
                break
        for q in range(nq):
            for t in range(k):
                if best_r[q, t] >= 0:
                    out_d[q0 + q, t] = best_d[q, t]
                    out_r[q0 + q, t] = best_r[q, t]
    return out_d, out_r


class MultiIndex:
    """MIH tables over the first ``len`` rows of a word-plane array ``(W, n)``.

    The index keeps a reference to ``planes``; rows appended later are not indexed (search them
    with :func:`streamd.store.search.exact_topk` over ``rows=(len, n)``).
    """

    def __init__(self, planes: np.ndarray, m: int | None = None):
        self.planes = planes
        self.bits = plane_bits(planes)
        self.len = planes.shape[1]
        if self.len >= 2**31:
            raise ValueError("MultiIndex holds at most 2**31 - 1 codes")
        self.m = m or default_substrings(self.bits, self.len)
        layout = substring_layout(self.bits, self.m)
        self.sub_plane = np.array([p for p, _, _ in layout], np.int64)
        self.sub_shift = np.array([s for _, s, _ in layout], np.int64)
        self.sub_width = np.array([w for _, _, w in layout], np.int64)
        bases, tables, row_lists = [], [], []
        base = 0
        for p, shift, width in layout:
            keys = ((planes[p] >> planes.dtype.type(shift)) & planes.dtype.type((1 << width) - 1)).astype(np.uint32)
            offsets, rows = _bucket_sort(keys, 1 << width)
            bases.append(base)
            tables.append(offsets)
            row_lists.append(rows)
            base += offsets.shape[0]
        self.table_base = np.asarray(bases, np.int64)
        self.bucket_bits = max(1, int(base).bit_length())
        self.offsets = np.concatenate(tables)
        self.rows = np.stack(row_lists)  # (m, n) row numbers in bucket order, per table
        self.codes = np.stack([planes[:, rows] for rows in row_lists])  # (m, W, n): codes in that order

    @property
    def nbytes(self) -> int:
        """Memory of the tables (not counting the codes in the plane array)."""
        return self.offsets.nbytes + self.rows.nbytes + self.codes.nbytes

    def probes(self, radius: int) -> int:
        return probes_per_query(self.bits, self.m, radius)

    def search(self, query_planes: np.ndarray, k: int, radius: int, *,
               live: np.ndarray | None = None, allow_scan: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k among indexed codes within ``radius`` of each query (same contract as exact_topk).

        When probing would touch more buckets than a quarter of the codes, an exact scan limited to
        ``radius`` is cheaper and is used instead (same result) unless ``allow_scan`` is false.
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
        if allow_scan and self.probes(radius) * 4 > self.len:
            return exact_topk(self.planes, query_planes, k, live=live, max_distance=radius, rows=(0, self.len))
        max_level = radius // self.m
        mask_list, starts = [], np.zeros((self.m, max_level + 2), np.int64)
        offset = 0
        for i, width in enumerate(self.sub_width):
            masks, level_starts = probe_masks(int(width), max_level)
            mask_list.append(masks)
            starts[i] = level_starts[: max_level + 2] + offset
            offset += masks.shape[0]
        check_live = live is not None
        live_arr = np.ascontiguousarray(live, dtype=np.int32) if check_live else np.zeros(0, np.int32)
        groups = max(1, min(numba.get_num_threads(), n_queries // 64))
        d, r = _mih_search(live_arr, check_live, np.ascontiguousarray(query_planes), k, radius, max_level, groups,
                           self.sub_plane, self.sub_shift, self.sub_width, self.table_base, self.bucket_bits,
                           self.offsets, self.rows, self.codes, np.concatenate(mask_list).astype(np.int64), starts)
        return d.astype(np.int32), r
