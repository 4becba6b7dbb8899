"""Multi-index hashing (Norouzi, Punjani & Fleet, 2012): sublinear Hamming search within a radius.

Each K-bit code is cut into m disjoint substrings, and each substring position gets a table that
maps a substring value to the rows holding it (a bucket sort: ``offsets`` + ``rows``, no hashing).
Pigeonhole: if two codes differ in at most ``m · (s + 1) - 1`` bits, at least one of their m
substrings differs in at most ``s`` bits. So probing, in every table, all buckets within
substring distance ``s`` of the query's substring finds every code within that distance; the
candidates are then ranked by their exact full distance.

The search grows ``s`` from 0 and stops early once the query's k-th best is within the distance
already guaranteed, or at ``s = floor(radius / m)``. The result is exactly the top-k among codes
within ``radius`` (codes farther away are never returned), so recall against an unlimited exact
search only drops when some of the true k nearest lie beyond the radius. Cost grows with the
number of probed buckets, ``m · Σ_{s' ≤ s} C(K/m, s')``, and with how many codes share them.
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations

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


@nb.njit(inline="always")
def _distance(planes, j, query):
    d = 0
    for w in range(planes.shape[0]):
        d += popcount64(np.uint64(planes[w, j]) ^ np.uint64(query[w]))
    return np.int64(d)


CANDIDATE_CHUNK = 4096


@nb.njit(inline="always")
def _rank_candidates(planes, live, check_live, query, cand, n_cand, dist, best_d, best_r, worst):
    """Exact distances of gathered candidate rows, then insertion of those that beat the k-th best."""
    for c in range(n_cand):  # independent loads: the CPU overlaps the cache misses
        dist[c] = _distance(planes, cand[c], query)
    k = best_d.shape[0]
    for c in range(n_cand):
        d = dist[c]
        j = cand[c]
        if d >= worst or (check_live and live[j] < 0):
            continue
        seen = False
        for p in range(k):
            if best_r[p] == j:
                seen = True
                break
        if seen:
            continue
        p = k - 1
        while p > 0 and best_d[p - 1] > d:
            best_d[p] = best_d[p - 1]
            best_r[p] = best_r[p - 1]
            p -= 1
        best_d[p] = d
        best_r[p] = j
        worst = best_d[k - 1]
    return worst


@nb.njit(parallel=True, boundscheck=False, cache=True)
def _mih_search(planes, live, check_live, queries, k, radius, max_level,
                sub_plane, sub_shift, sub_width, table_base, offsets, rows, masks, mask_starts):
    """Per query and level: gather all bucket ranges, then all candidate rows, then rank them.

    Doing each step as a separate loop of independent loads (instead of walking bucket by bucket)
    lets the CPU keep many cache misses in flight, which is what MIH's cost is made of.
    """
    m = sub_plane.shape[0]
    n_queries = queries.shape[1]
    max_probes = 0
    for level in range(max_level + 1):
        probes = 0
        for i in range(m):
            probes += mask_starts[i, level + 1] - mask_starts[i, level]
        max_probes = max(max_probes, probes)
    out_d = np.full((n_queries, k), -1, np.int64)
    out_r = np.full((n_queries, k), -1, np.int64)
    for qi in nb.prange(n_queries):
        query = queries[:, qi]
        best_d = np.full(k, radius + 1, np.int64)
        best_r = np.full(k, -1, np.int64)
        worst = radius + 1
        keys = np.empty(m, np.int64)
        for i in range(m):
            keys[i] = np.int64((np.uint64(query[sub_plane[i]]) >> np.uint64(sub_shift[i]))
                               & np.uint64((1 << sub_width[i]) - 1))
        lo = np.empty(max_probes, np.int64)
        hi = np.empty(max_probes, np.int64)
        table = np.empty(max_probes, np.int64)
        cand = np.empty(CANDIDATE_CHUNK, np.int64)
        dist = np.empty(CANDIDATE_CHUNK, np.int64)
        for level in range(max_level + 1):
            n_probes = 0
            for i in range(m):
                base = table_base[i]
                for mi in range(mask_starts[i, level], mask_starts[i, level + 1]):
                    bucket = base + (keys[i] ^ masks[mi])
                    lo[n_probes] = offsets[bucket]
                    hi[n_probes] = offsets[bucket + 1]
                    table[n_probes] = i
                    n_probes += 1
            n_cand = 0
            for p in range(n_probes):
                for pos in range(lo[p], hi[p]):
                    cand[n_cand] = rows[table[p], pos]
                    n_cand += 1
                    if n_cand == CANDIDATE_CHUNK:
                        worst = _rank_candidates(planes, live, check_live, query, cand, n_cand, dist,
                                                 best_d, best_r, worst)
                        n_cand = 0
            worst = _rank_candidates(planes, live, check_live, query, cand, n_cand, dist, best_d, best_r, worst)
            if worst <= m * (level + 1) - 1:  # every code closer than the k-th best is already found
                break
        for p in range(k):
            if best_r[p] >= 0:
                out_d[qi, p] = best_d[p]
                out_r[qi, p] = best_r[p]
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
        self.offsets = np.concatenate(tables) if tables else np.zeros(0, np.int32)
        self.rows = np.stack(row_lists) if row_lists else np.zeros((0, 0), np.int32)

    @property
    def nbytes(self) -> int:
        """Memory of the tables (not counting the codes themselves)."""
        return self.offsets.nbytes + self.rows.nbytes

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
        d, r = _mih_search(self.planes, live_arr, check_live, np.ascontiguousarray(query_planes), k, radius,
                           max_level, self.sub_plane, self.sub_shift, self.sub_width, self.table_base,
                           self.offsets, self.rows, np.concatenate(mask_list).astype(np.int64), starts)
        return d.astype(np.int32), r
