"""Deciding which catalog track a run of query codes belongs to: Hamming top-k per hop, then
temporal-consistency voting.

A query is a run of codes, one per daemon hop, each with its stream time ``t_i`` (end of its
window). For each code a search backend (faiss, the Redis store, or :func:`hamming_topk` here)
returns its k nearest catalog codes, each labelled (track, catalog offset o, distance d). A hit
says "this stream is at track time o now", i.e. the track started ``o − t_i`` before stream time 0.
Hits of the true track agree on that alignment across hops; chance hits scatter. So:

- each hit votes for the key (track, round((o − t_i) / hop)) with weight
  ``max(0, 1 − d / max_distance)`` — closer codes count more, codes beyond ``max_distance`` not at all;
- a key also collects the votes of its two neighbouring alignment bins (±1 hop), which absorbs the
  ±half-hop grid offset between stream and catalog and ±3 % speed changes over 29 s;
- per key, each query hop contributes at most its best hit, and the key's score is the sum over hops;
- the best key wins (ties between neighbouring bins go to the bin with more direct votes); ``score`` is compared with a threshold (calibrated on non-catalog music for a
  target false-accept rate) to accept or reject.

The daemon and ``streamd recognize`` use the same function over the hops of a sliding recent
horizon; everything here is pure numpy with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamd.model.hashing import pack_bits


@dataclass(frozen=True)
class Match:
    track: int  # index into the caller's track list (or a track id number), -1 when no hit at all
    offset_s: float  # catalog track time at the end of the newest query hop
    score: float  # summed vote weight (0 .. number of hops)
    hops: int  # query hops that voted for the winning key
    runner_up: float  # score of the best key of a different track


def hamming_topk(catalog: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k by brute force: (indices (m, k), distances (m, k)), nearest first.

    ``catalog`` (n, B) and ``queries`` (m, B) are packed uint8 codes. Fine for catalogs up to a
    few 100 k codes; the daemon uses faiss or the store's index for more.
    """
    catalog = np.ascontiguousarray(catalog, dtype=np.uint8)
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    if catalog.shape[1] % 8 == 0:  # compare 64 bits at a time
        catalog_w, queries_w = catalog.view(np.uint64), queries.view(np.uint64)
    else:
        catalog_w, queries_w = catalog, queries
    k = min(k, len(catalog))
    out_i = np.empty((len(queries), k), np.int64)
    out_d = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 256):
        block = queries_w[start : start + 256]
        dist = np.bitwise_count(block[:, None, :] ^ catalog_w[None, :, :]).sum(-1, dtype=np.int64)
        part = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < dist.shape[1] else np.tile(np.arange(dist.shape[1]), (len(block), 1))
        part_d = np.take_along_axis(dist, part, 1)
        order = np.argsort(part_d, axis=1, kind="stable")
        out_i[start : start + len(block)] = np.take_along_axis(part, order, 1)
        out_d[start : start + len(block)] = np.take_along_axis(part_d, order, 1)
    return out_i, out_d


def asymmetric_topk(catalog: np.ndarray, relaxed: np.ndarray, k: int, shortlist: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by asymmetric distance: the query keeps its relaxed code q in (−1, 1), the catalog
    its bits. Distance = K · Σ|q_i|·[bit i differs] / Σ|q_i|: a disagreement on a bit the model was
    unsure of (|q_i| near 0) counts little. Same scale as Hamming (0..K); equal to it when every
    |q_i| is 1. The ``shortlist`` nearest codes in Hamming distance are re-ranked.

    ``catalog`` (n, K/8) packed codes, ``relaxed`` (m, K) → (indices (m, k), distances (m, k)).
    """
    relaxed = np.asarray(relaxed, dtype=np.float32)
    bits = relaxed.shape[1]
    index, _ = hamming_topk(catalog, pack_bits(relaxed), max(k, shortlist))
    candidate_bits = np.unpackbits(catalog[index], axis=-1, count=bits).astype(bool)  # (m, s, K)
    weight = np.abs(relaxed)
    differs = candidate_bits != (relaxed > 0)[:, None, :]
    distance = bits * (differs * weight[:, None, :]).sum(-1) / np.maximum(weight.sum(-1, keepdims=True), 1e-9)
    order = np.argsort(distance, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(index, order, 1), np.take_along_axis(distance, order, 1)


def vote(*hits, **options) -> Match:
    """The best :class:`Match` of a run of query hops: :func:`ranked`'s first, same arguments."""
    return ranked(*hits, **options)[0]


def ranked(
    query_times_s: np.ndarray,
    hit_tracks: np.ndarray,
    hit_offsets_s: np.ndarray,
    hit_distances: np.ndarray,
    hop_s: float,
    max_distance: float,
    tolerance_hops: int = 1,
    tracks_wanted: int = 1,
) -> list[Match]:
    """Temporal-consistency vote over the hits of a run of query hops (see the module docstring).

    ``query_times_s`` (m,) stream time of each hop; ``hit_*`` (m, k) the k hits per hop
    (track numbers, catalog offsets, Hamming distances). Returns the best key of each of the
    ``tracks_wanted`` best-scoring tracks, best first (a second opinion, such as spectral peaks,
    may then choose among them); ``runner_up`` of each is the best score of another track.
    """
    m, k = hit_tracks.shape
    weight = np.clip(1.0 - hit_distances / max_distance, 0.0, None).ravel()
    keep = weight > 0
    if not keep.any():
        return [Match(-1, float("nan"), 0.0, 0, 0.0)]
    hop_index = np.repeat(np.arange(m), k)[keep]
    tracks = hit_tracks.ravel()[keep].astype(np.int64)
    key = np.rint((hit_offsets_s - query_times_s[:, None]).ravel()[keep] / hop_s).astype(np.int64)
    weight = weight[keep]
    # Spread each hit to the neighbouring alignment bins, then keep each hop's best hit per key.
    shifts = np.arange(-tolerance_hops, tolerance_hops + 1)
    tracks = np.repeat(tracks, len(shifts))
    key = (key[:, None] + shifts[None, :]).ravel()
    direct = np.tile(shifts == 0, len(weight))
    hop_index = np.repeat(hop_index, len(shifts))
    weight = np.repeat(weight, len(shifts))
    order = np.lexsort((~direct, -weight, hop_index, key, tracks))
    tracks, key, hop_index, weight, direct = tracks[order], key[order], hop_index[order], weight[order], direct[order]
    first = np.ones(len(tracks), bool)
    first[1:] = (tracks[1:] != tracks[:-1]) | (key[1:] != key[:-1]) | (hop_index[1:] != hop_index[:-1])
    tracks, key, weight, direct = tracks[first], key[first], weight[first], direct[first]
    group_start = np.ones(len(tracks), bool)
    group_start[1:] = (tracks[1:] != tracks[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(group_start)
    scores = np.add.reduceat(weight, starts)
    direct_scores = np.add.reduceat(weight * direct, starts)  # breaks ties between neighbouring bins
    counts = np.diff(np.append(starts, len(tracks)))
    matches: list[Match] = []
    for best in np.lexsort((direct_scores, scores))[::-1]:
        track = int(tracks[starts[best]])
        if any(m.track == track for m in matches):
            continue
        other = scores[tracks[starts] != track]
        offset = float(key[starts[best]] * hop_s + query_times_s[-1])
        matches.append(Match(track, offset, float(scores[best]), int(counts[best]), float(other.max()) if len(other) else 0.0))
        if len(matches) == tracks_wanted:
            break
    return matches


def identify(
    catalog_codes: np.ndarray,
    catalog_tracks: np.ndarray,
    catalog_offsets_s: np.ndarray,
    query_codes: np.ndarray,
    query_times_s: np.ndarray,
    hop_s: float,
    top_k: int = 10,
    max_distance: float | None = None,
) -> Match:
    """Search + vote in one call, for small in-memory catalogs (evaluation, tests)."""
    bits = catalog_codes.shape[1] * 8
    index, distance = hamming_topk(catalog_codes, query_codes, top_k)
    return vote(
        np.asarray(query_times_s, np.float64),
        catalog_tracks[index],
        catalog_offsets_s[index],
        distance,
        hop_s,
        max_distance if max_distance is not None else 0.375 * bits,
    )
