"""Exact, batched top-k Hamming search over word planes (see :mod:`streamd.store.codes`).

CPU: a numba kernel. Each task takes a block of 32 queries and streams a range of the database
once; per database code it computes the 32 distances with XOR + popcount (the compiler turns the
fixed-size loop into vector popcounts) and only when one of them beats that query's current k-th
best does it do the (rare) insertion into the query's sorted top-k list. Reading each database
word once per 32 queries keeps it far from memory bandwidth limits, and no B × N distance matrix
is ever written. Tasks (query blocks × database ranges) run in parallel on numba's threads; when
there are fewer query blocks than threads the database is split and the partial lists merged.

GPU: :class:`TorchExactSearch` turns codes into ±1 vectors, where Hamming distance is
``(K - dot) / 2``, so a batch is one half-precision matrix multiply per database chunk + ``topk``.

Results: ``distances`` (B, k) int32 and ``rows`` (B, k) int64, sorted by distance; ties are broken
by the lower row on CPU (the GPU path does not promise an order among equal distances). Slots with
no result (fewer than k live codes within ``max_distance``) hold ``-1`` in both arrays.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from streamd.store.codes import popcount64

QUERY_BLOCK = 32
MIN_ROWS_PER_TASK = 1 << 16
MISSING = -1

_NO_LIVE = np.zeros(0, dtype=np.int32)


@nb.njit(inline="always")
def _insert(best_d, best_r, t, k, d, row):
    """Insert (d, row) into the sorted top-k list of query slot t; return the new k-th distance."""
    p = k - 1
    while p > 0 and best_d[t, p - 1] > d:
        best_d[t, p] = best_d[t, p - 1]
        best_r[t, p] = best_r[t, p - 1]
        p -= 1
    best_d[t, p] = d
    best_r[t, p] = row
    return best_d[t, k - 1]


@nb.njit(parallel=True, boundscheck=False, cache=True)
def _scan_one_plane(db, live, check_live, queries, k, limit, bounds):
    """Top-k over codes that fit one word. ``bounds`` (n_chunks + 1) splits the database rows."""
    n_queries = queries.shape[0]
    n_chunks = bounds.shape[0] - 1
    n_blocks = (n_queries + QUERY_BLOCK - 1) // QUERY_BLOCK
    out_d = np.empty((n_chunks, n_queries, k), np.int64)
    out_r = np.empty((n_chunks, n_queries, k), np.int64)
    for task in nb.prange(n_blocks * n_chunks):
        block = task // n_chunks
        chunk = task % n_chunks
        q0 = block * QUERY_BLOCK
        nq = min(n_queries, q0 + QUERY_BLOCK) - q0
        qv = np.zeros(QUERY_BLOCK, np.uint64)
        worst = np.full(QUERY_BLOCK, -1, np.int64)  # padding slots never accept anything
        for t in range(nq):
            qv[t] = np.uint64(queries[q0 + t])
            worst[t] = limit + 1
        best_d = np.full((QUERY_BLOCK, k), limit + 1, np.int64)
        best_r = np.full((QUERY_BLOCK, k), -1, np.int64)
        dist = np.empty(QUERY_BLOCK, np.int64)
        for j in range(bounds[chunk], bounds[chunk + 1]):
            x = np.uint64(db[j])
            hit = 0
            for t in range(QUERY_BLOCK):
                d = np.int64(popcount64(x ^ qv[t]))
                dist[t] = d
                hit |= d < worst[t]
            if hit and (not check_live or live[j] >= 0):
                for t in range(QUERY_BLOCK):
                    if dist[t] < worst[t]:
                        worst[t] = _insert(best_d, best_r, t, k, dist[t], j)
        for t in range(nq):
            out_d[chunk, q0 + t] = best_d[t]
            out_r[chunk, q0 + t] = best_r[t]
    return out_d, out_r


@nb.njit(parallel=True, boundscheck=False, cache=True)
def _scan_two_planes(db_lo, db_hi, live, check_live, q_lo, q_hi, k, limit, bounds):
    """Same as :func:`_scan_one_plane` for 128-bit codes held as two uint64 planes."""
    n_queries = q_lo.shape[0]
    n_chunks = bounds.shape[0] - 1
    n_blocks = (n_queries + QUERY_BLOCK - 1) // QUERY_BLOCK
    out_d = np.empty((n_chunks, n_queries, k), np.int64)
    out_r = np.empty((n_chunks, n_queries, k), np.int64)
    for task in nb.prange(n_blocks * n_chunks):
        block = task // n_chunks
        chunk = task % n_chunks
        q0 = block * QUERY_BLOCK
        nq = min(n_queries, q0 + QUERY_BLOCK) - q0
        qa = np.zeros(QUERY_BLOCK, np.uint64)
        qb = np.zeros(QUERY_BLOCK, np.uint64)
        worst = np.full(QUERY_BLOCK, -1, np.int64)
        for t in range(nq):
            qa[t] = q_lo[q0 + t]
            qb[t] = q_hi[q0 + t]
            worst[t] = limit + 1
        best_d = np.full((QUERY_BLOCK, k), limit + 1, np.int64)
        best_r = np.full((QUERY_BLOCK, k), -1, np.int64)
        dist = np.empty(QUERY_BLOCK, np.int64)
        for j in range(bounds[chunk], bounds[chunk + 1]):
            x = db_lo[j]
            y = db_hi[j]
            hit = 0
            for t in range(QUERY_BLOCK):
                d = np.int64(popcount64(x ^ qa[t])) + np.int64(popcount64(y ^ qb[t]))
                dist[t] = d
                hit |= d < worst[t]
            if hit and (not check_live or live[j] >= 0):
                for t in range(QUERY_BLOCK):
                    if dist[t] < worst[t]:
                        worst[t] = _insert(best_d, best_r, t, k, dist[t], j)
        for t in range(nq):
            out_d[chunk, q0 + t] = best_d[t]
            out_r[chunk, q0 + t] = best_r[t]
    return out_d, out_r


def plane_bits(planes: np.ndarray) -> int:
    """Code length K of a word-plane array ``(W, n)``."""
    return planes.shape[0] * planes.dtype.itemsize * 8


def merge_topk(distances: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge candidate lists ``(B, M)`` over disjoint rows (``-1`` = empty) into sorted ``(B, k)``."""
    big = np.iinfo(np.int64).max
    distances = np.where(rows < 0, big, distances.astype(np.int64))
    order = np.lexsort((np.where(rows < 0, big, rows), distances), axis=-1)[:, :k]
    d = np.take_along_axis(distances, order, axis=-1)
    r = np.take_along_axis(rows, order, axis=-1)
    if d.shape[1] < k:
        pad = k - d.shape[1]
        d = np.pad(d, ((0, 0), (0, pad)), constant_values=big)
        r = np.pad(r, ((0, 0), (0, pad)), constant_values=MISSING)
    missing = r < 0
    return np.where(missing, MISSING, d).astype(np.int32), np.where(missing, MISSING, r).astype(np.int64)


def _row_bounds(n_rows: int, n_queries: int) -> np.ndarray:
    """Split the database so that there are at least ~2 tasks per thread."""
    blocks = max(1, -(-n_queries // QUERY_BLOCK))
    wanted = -(-2 * nb.get_num_threads() // blocks)
    chunks = max(1, min(wanted, n_rows // MIN_ROWS_PER_TASK))
    return np.linspace(0, n_rows, chunks + 1).astype(np.int64)


def exact_topk(
    planes: np.ndarray,
    query_planes: np.ndarray,
    k: int,
    *,
    live: np.ndarray | None = None,
    max_distance: int | None = None,
    rows: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k Hamming neighbours of each query on the CPU.

    planes: database word planes ``(W, n)``; query_planes: ``(W, B)`` of the same dtype.
    live: optional int32 ``(n,)``; rows with a negative value are ignored (deleted codes).
    max_distance: codes farther than this are not returned (default: no limit).
    rows: optional ``(start, stop)``: search only that row range (row numbers stay global).
    """
    if planes.dtype != query_planes.dtype or planes.shape[0] != query_planes.shape[0]:
        raise ValueError(f"query planes {query_planes.dtype} {query_planes.shape} do not match "
                         f"database planes {planes.dtype} {planes.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bits = plane_bits(planes)
    limit = bits if max_distance is None else min(int(max_distance), bits)
    n_queries = query_planes.shape[1]
    start, stop = (0, planes.shape[1]) if rows is None else rows
    if n_queries == 0 or limit < 0 or stop <= start:
        return (np.full((n_queries, k), MISSING, np.int32), np.full((n_queries, k), MISSING, np.int64))
    bounds = _row_bounds(stop - start, n_queries) + start
    check_live = live is not None
    live_arr = np.ascontiguousarray(live, dtype=np.int32) if check_live else _NO_LIVE
    if planes.shape[0] == 1:
        d, r = _scan_one_plane(planes[0], live_arr, check_live, query_planes[0], k, limit, bounds)
    else:
        d, r = _scan_two_planes(planes[0], planes[1], live_arr, check_live,
                                query_planes[0], query_planes[1], k, limit, bounds)
    if d.shape[0] == 1:
        missing = r[0] < 0
        return np.where(missing, MISSING, d[0]).astype(np.int32), r[0]
    return merge_topk(np.concatenate(list(d), axis=1), np.concatenate(list(r), axis=1), k)


class TorchExactSearch:
    """Exact top-k Hamming search with tensor ops, for a GPU (works on any torch device).

    The database is held on the device as ±1 vectors (K half-precision values per code on a GPU,
    float32 on a CPU); ``dot(q, x) = K - 2 · hamming(q, x)`` is exact in both types for K ≤ 128.
    """

    def __init__(self, packed_codes: np.ndarray, bits: int, device: str, *,
                 live: np.ndarray | None = None, chunk_bytes: int = 1 << 31):
        import torch

        self.torch = torch
        self.bits = bits
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.chunk_bytes = chunk_bytes
        n = packed_codes.shape[0]
        self.signs = torch.empty((n, bits), dtype=self.dtype, device=self.device)
        step = 1 << 20
        for s in range(0, n, step):
            self.signs[s:s + step] = self._to_signs(packed_codes[s:s + step])
        self.penalty = self._penalty(live)

    def _penalty(self, live: np.ndarray | None):
        """Added to the scores of deleted rows: pushes them beyond any valid distance."""
        if live is None or not (np.asarray(live) < 0).any():
            return None
        dead = self.torch.from_numpy(np.asarray(live) < 0).to(self.device)
        penalty = self.torch.zeros(self.signs.shape[0], dtype=self.dtype, device=self.device)
        penalty[dead] = -4 * self.bits
        return penalty

    def with_live(self, live: np.ndarray) -> TorchExactSearch:
        """The same device database with another set of deleted rows (shares the code tensor)."""
        clone = object.__new__(TorchExactSearch)
        clone.__dict__.update(self.__dict__)
        clone.penalty = self._penalty(live)
        return clone

    def _to_signs(self, packed: np.ndarray):
        bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, count=self.bits)
        t = self.torch.from_numpy(bits).to(self.device, non_blocking=True)
        return t.to(self.dtype) * 2 - 1

    def search(self, packed_queries: np.ndarray, k: int, max_distance: int | None = None):
        """Same contract as :func:`exact_topk`, queries as packed ``(B, K // 8)`` uint8."""
        torch = self.torch
        limit = self.bits if max_distance is None else min(int(max_distance), self.bits)
        n = self.signs.shape[0]
        b = packed_queries.shape[0]
        if b == 0 or n == 0:
            return (np.full((b, k), MISSING, np.int32), np.full((b, k), MISSING, np.int64))
        q = self._to_signs(packed_queries)
        chunk = max(k, self.chunk_bytes // (2 * max(b, 1)))
        best_s = torch.full((b, 0), 0, dtype=self.dtype, device=self.device)
        best_r = torch.full((b, 0), 0, dtype=torch.int64, device=self.device)
        for s in range(0, n, chunk):
            scores = q @ self.signs[s:s + chunk].T
            if self.penalty is not None:
                scores += self.penalty[s:s + chunk]
            kk = min(k, scores.shape[1])
            top_s, top_r = torch.topk(scores, kk, dim=1)
            best_s = torch.cat([best_s, top_s], dim=1)
            best_r = torch.cat([best_r, top_r + s], dim=1)
            if best_s.shape[1] > k:
                best_s, pick = torch.topk(best_s, k, dim=1)
                best_r = torch.gather(best_r, 1, pick)
        order = torch.argsort(-best_s.float(), dim=1, stable=True)
        best_s = torch.gather(best_s, 1, order)
        best_r = torch.gather(best_r, 1, order)
        dist = ((self.bits - best_s.float()) / 2).round().to(torch.int64).cpu().numpy()
        rows = best_r.cpu().numpy()
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=self.bits + 1)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=MISSING)
        missing = (dist > limit) | (rows < 0)
        return np.where(missing, MISSING, dist).astype(np.int32), np.where(missing, MISSING, rows)
