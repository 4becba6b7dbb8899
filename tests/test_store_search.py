"""Exact and MIH Hamming search against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamd.store.codes import (
    SUPPORTED_BITS,
    flip_random_bits,
    from_planes,
    hamming_matrix,
    pack_bits,
    to_planes,
    unpack_bits,
)
from streamd.store.mih import MultiIndex, default_substrings, probe_masks, substring_layout
from streamd.store.search import TorchExactSearch, exact_topk, merge_topk


def reference_topk(db: np.ndarray, queries: np.ndarray, k: int, live: np.ndarray | None = None,
                   max_distance: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sort every database code by (distance, row); keep live ones within max_distance."""
    dist = hamming_matrix(queries, db).astype(np.int64)
    allowed = np.ones(dist.shape, dtype=bool)
    if live is not None:
        allowed &= (live >= 0)[None, :]
    if max_distance is not None:
        allowed &= dist <= max_distance
    out_d = np.full((len(queries), k), -1, np.int32)
    out_r = np.full((len(queries), k), -1, np.int64)
    for i in range(len(queries)):
        rows = np.flatnonzero(allowed[i])
        order = rows[np.lexsort((rows, dist[i, rows]))][:k]
        out_d[i, : len(order)] = dist[i, order]
        out_r[i, : len(order)] = order
    return out_d, out_r


def clustered_codes(rng: np.random.Generator, n_tracks: int, per_track: int, bits: int) -> np.ndarray:
    """Tracks as random walks: consecutive codes differ in about one bit, like overlapping windows."""
    start = rng.integers(0, 2, (n_tracks, 1, bits), dtype=np.uint8)
    steps = np.zeros((n_tracks, per_track, bits), dtype=np.uint8)
    flip_at = rng.integers(0, bits, (n_tracks, per_track))
    moved = rng.random((n_tracks, per_track)) < 0.8
    np.put_along_axis(steps, flip_at[..., None], moved[..., None].astype(np.uint8), axis=2)
    walk = np.bitwise_xor.accumulate(steps, axis=1) ^ start
    return pack_bits(walk.reshape(-1, bits))


def test_planes_round_trip_and_hamming_agree() -> None:
    rng = np.random.default_rng(0)
    for bits in SUPPORTED_BITS:
        codes = rng.integers(0, 256, (17, bits // 8), dtype=np.uint8)
        assert np.array_equal(from_planes(to_planes(codes, bits), bits), codes)
        assert np.array_equal(pack_bits(unpack_bits(codes, bits)), codes)
        flipped = flip_random_bits(codes, 3, rng)
        assert (np.diag(hamming_matrix(codes, flipped)) == 3).all()


def test_wrong_code_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        to_planes(np.zeros((3, 4), np.uint8), 64)
    with pytest.raises(ValueError, match="not supported"):
        to_planes(np.zeros((3, 3), np.uint8), 24)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sampled_from(SUPPORTED_BITS),
    n=st.integers(0, 400),
    n_queries=st.integers(1, 70),
    k=st.integers(1, 12),
    dead_fraction=st.sampled_from([0.0, 0.3]),
    limit=st.one_of(st.none(), st.integers(0, 64)),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_search_equals_brute_force(bits, n, n_queries, k, dead_fraction, limit, seed) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values make many ties, which must be broken by the lower row.
    db = rng.integers(0, 4, (n, bits // 8), dtype=np.uint8) * 85
    queries = rng.integers(0, 4, (n_queries, bits // 8), dtype=np.uint8) * 85
    live = np.where(rng.random(n) < dead_fraction, -1, 0).astype(np.int32) if dead_fraction else None
    expected = reference_topk(db, queries, k, live, limit)
    got = exact_topk(to_planes(db, bits), to_planes(queries, bits), k, live=live, max_distance=limit)
    assert np.array_equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_exact_search_splits_a_large_database_over_threads(bits: int) -> None:
    """A few queries over > 64 Ki codes take the split-and-merge path; same answer."""
    rng = np.random.default_rng(bits)
    db = rng.integers(0, 256, (200_000, bits // 8), dtype=np.uint8)
    queries = flip_random_bits(db[[5, 150_000, 199_999]], 2, rng)
    d, r = exact_topk(to_planes(db, bits), to_planes(queries, bits), 5)
    ref_d, ref_r = reference_topk(db, queries, 5)
    assert np.array_equal(d, ref_d) and np.array_equal(r, ref_r)
    if bits >= 64:  # shorter random codes have closer look-alikes among 200 000
        assert list(r[:, 0]) == [5, 150_000, 199_999]


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_torch_search_matches_reference_distances(bits: int) -> None:
    """The tensor path (run here on the CPU) returns the reference distances; rows at those distances."""
    rng = np.random.default_rng(1)
    db = rng.integers(0, 256, (3000, bits // 8), dtype=np.uint8)
    queries = np.concatenate([flip_random_bits(db[:20], 1, rng), rng.integers(0, 256, (20, bits // 8), np.uint8)])
    live = np.where(rng.random(3000) < 0.2, -1, 0).astype(np.int32)
    search = TorchExactSearch(db, bits, "cpu", live=live, chunk_bytes=40_000)
    for limit in (None, bits // 3):
        d, r = search.search(queries, 7, max_distance=limit)
        ref_d, _ = reference_topk(db, queries, 7, live, limit)
        assert np.array_equal(d, ref_d)
        found = r >= 0
        true = hamming_matrix(queries, db)[np.nonzero(found)[0], r[found]]
        assert np.array_equal(true, d[found]) and (live[r[found]] >= 0).all()


def test_merge_topk_orders_and_pads() -> None:
    d = np.array([[3, 1, -1, 2]])
    r = np.array([[7, 9, -1, 4]])
    md, mr = merge_topk(d, r, 5)
    assert md.tolist() == [[1, 2, 3, -1, -1]] and mr.tolist() == [[9, 4, 7, -1, -1]]


def test_probe_masks_cover_each_level_once() -> None:
    masks, starts = probe_masks(10, 3)
    assert starts.tolist() == [0, 1, 11, 56, 176]
    assert len(set(masks.tolist())) == len(masks)
    pops = np.bitwise_count(masks)
    for level in range(4):
        assert (pops[starts[level]:starts[level + 1]] == level).all()


def test_substring_layouts() -> None:
    assert [w for _, _, w in substring_layout(64, 3)] == [22, 21, 21]
    assert {p for p, _, _ in substring_layout(128, 6)} == {0, 1}
    assert default_substrings(64, 1_000_000) == 3
    assert default_substrings(128, 10_000) % 2 == 0
    with pytest.raises(ValueError):
        substring_layout(128, 3)


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from(SUPPORTED_BITS),
    m_extra=st.integers(0, 2),
    radius=st.integers(0, 12),
    k=st.integers(1, 10),
    dead=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_mih_equals_exact_search_within_radius(bits, m_extra, radius, k, dead, seed) -> None:
    """MIH returns exactly the top-k among codes within the radius (here always probing, no scan)."""
    rng = np.random.default_rng(seed)
    db = clustered_codes(rng, 30, 40, bits)
    queries = np.concatenate([flip_random_bits(db[rng.integers(0, len(db), 15)], 2, rng),
                              rng.integers(0, 256, (5, bits // 8), dtype=np.uint8)])
    live = np.where(rng.random(len(db)) < 0.2, -1, 0).astype(np.int32) if dead else None
    planes = to_planes(db, bits)
    m = default_substrings(bits, len(db)) + (2 if bits == 128 else 1) * m_extra
    index = MultiIndex(planes, m)
    d, r = index.search(to_planes(queries, bits), k, radius, live=live, allow_scan=False)
    ref_d, _ = reference_topk(db, queries, k, live, radius)
    assert np.array_equal(d, ref_d)
    found = r >= 0
    assert np.array_equal(hamming_matrix(queries, db)[np.nonzero(found)[0], r[found]], d[found])
    for row in r:  # no row twice
        assert len(set(row[row >= 0].tolist())) == int((row >= 0).sum())


def test_mih_recall_against_unlimited_exact_search() -> None:
    """Recall@10 of MIH vs an unlimited exact search grows with the radius on clustered codes, and
    the code a query was made from (4 bits flipped) is always found once the radius reaches 4."""
    rng = np.random.default_rng(7)
    bits, k = 64, 10
    db = clustered_codes(rng, 200, 200, bits)
    sources = rng.integers(0, len(db), 300)
    queries = flip_random_bits(db[sources], 4, rng)
    planes, qp = to_planes(db, bits), to_planes(queries, bits)
    exact_d, _ = exact_topk(planes, qp, k)
    index = MultiIndex(planes)
    recalls = {}
    for radius in (0, 2, 4, 6, 8, 10, 12):
        d, _ = index.search(qp, k, radius, allow_scan=False)
        recalls[radius] = float((d == exact_d).mean())  # sorted distances agree slot by slot
        if radius >= 4:
            assert (d[:, 0] >= 0).all() and (d[:, 0] <= 4).all()
    print("MIH recall@10 by radius:", recalls)
    values = list(recalls.values())
    assert values == sorted(values)
    assert recalls[0] == 0.0 and recalls[12] > 0.95
