"""Retrieval and identification metrics over binary codes.

Retrieval: every query code ranks all database codes by Hamming distance (ties in random order,
so that a method cannot gain from the order of the database). Two notions of relevant:

- *track*: the database code is of the query's track (class-level retrieval, as in the paper's
  Fig. 6 and in most hashing papers);
- *moment*: the database code is of the query's track AND its window ends within ``tolerance_s``
  of the query's true position (what identification with an offset needs).

Identification: a query's codes up to ``d`` seconds vote with :func:`streamd.model.matching.vote`
(the daemon's rule); top-1 = the winning track is the right one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamd.model.matching import hamming_topk, vote


def average_precision(relevant_in_rank_order: np.ndarray) -> float:
    """AP of one ranking: the mean over relevant items of (relevant items up to it) / its rank."""
    hits = np.asarray(relevant_in_rank_order, dtype=bool)
    if not hits.any():
        return 0.0
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def rank_by_distance(distances: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row, database indices from nearest to farthest, ties in random order."""
    return np.lexsort((rng.random(distances.shape), distances), axis=-1)


@dataclass(frozen=True)
class Labels:
    """What a set of codes shows: the track number and the track time of each window's end."""

    track: np.ndarray
    offset_s: np.ndarray


def retrieval_metrics(
    query_codes: np.ndarray,
    query: Labels,
    db_codes: np.ndarray,
    db: Labels,
    rng: np.random.Generator,
    tolerance_s: float = 1.5,
    ks: tuple[int, ...] = (1, 5, 10, 20, 50, 100),
    block: int = 128,
) -> dict[str, object]:
    """mAP (track and moment relevance) and precision@k (track relevance) of packed codes."""
    ap_track, ap_moment, precision = [], [], {k: [] for k in ks if k <= len(db_codes)}
    for start in range(0, len(query_codes), block):
        stop = min(len(query_codes), start + block)
        distances = np.bitwise_count(query_codes[start:stop, None, :] ^ db_codes[None, :, :]).sum(-1)
        order = rank_by_distance(distances, rng)
        same_track = db.track[order] == query.track[start:stop, None]
        near = np.abs(db.offset_s[order] - query.offset_s[start:stop, None]) <= tolerance_s
        for row in range(stop - start):
            ap_track.append(average_precision(same_track[row]))
            ap_moment.append(average_precision(same_track[row] & near[row]))
        for k in precision:
            precision[k].extend(same_track[:, :k].mean(axis=1))
    return {
        "queries": len(ap_track),
        "mAP_track": float(np.mean(ap_track)) if ap_track else float("nan"),
        "mAP_moment": float(np.mean(ap_moment)) if ap_moment else float("nan"),
        "precision_at_k": {str(k): float(np.mean(v)) for k, v in precision.items()},
    }


def identification_top1(
    query_codes: np.ndarray,
    query_times_s: np.ndarray,
    query_ids: np.ndarray,
    query_tracks: np.ndarray,
    db_codes: np.ndarray,
    db: Labels,
    durations: tuple[float, ...],
    hop_s: float,
    top_k: int = 10,
    max_distance_fraction: float = 0.375,
) -> dict[str, float]:
    """Top-1 of the daemon's voting rule for each query duration (queries = runs of codes)."""
    bits = query_codes.shape[1] * 8
    index, distance = hamming_topk(db_codes, query_codes, top_k)
    right: dict[float, list[bool]] = {d: [] for d in durations}
    for qid in np.unique(query_ids):
        rows = np.flatnonzero(query_ids == qid)
        for d in durations:
            use = rows[query_times_s[rows] <= d + 1e-9]
            if len(use) == 0:
                continue
            match = vote(query_times_s[use], db.track[index[use]], db.offset_s[index[use]], distance[use], hop_s,
                         max_distance_fraction * bits)
            right[d].append(match.track == query_tracks[use[0]])
    return {f"{d:g}s": float(np.mean(v)) if v else float("nan") for d, v in right.items()}
