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
from streamd.store.mih import (
    MultiIndex,
    _filter_word,
    _step_cost,
    default_substrings,
    probe_masks,
    probe_schedule,
    schedule_cost,
    substring_layout,
)
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
    assert default_substrings(128, 10_000) % 2 == 0
    with pytest.raises(ValueError):
        substring_layout(128, 3)
    with pytest.raises(ValueError):
        substring_layout(64, 2)  # 32-bit tables


def test_default_substrings_follow_the_cost_model() -> None:
    """m is the cheapest modelled schedule; the values docs/store.md and bench/RESULTS.md quote."""
    assert default_substrings(64, 1_000_000, 8) == 5
    assert default_substrings(64, 10_000_000, 8) == 4
    for n, radius in ((1_000_000, 8), (50_000, 4), (10_000_000, 2)):
        m = default_substrings(64, n, radius)
        assert all(schedule_cost(64, m, radius, n) <= schedule_cost(64, other, radius, n) for other in range(3, 17))
    for bits in SUPPORTED_BITS:
        for n in (1, 1000, 10**6):
            m = default_substrings(bits, n)
            assert max(w for _, _, w in substring_layout(bits, m)) <= 24


@pytest.mark.parametrize(("widths", "radius", "n"), [([13, 13, 13, 13, 12], 8, 10**6), ([16] * 4, 8, 10**7),
                                                     ([22, 21, 21], 10, 10**6), ([8, 8, 7], 6, 100)])
def test_probe_schedule_certifies_one_more_bit_per_step(widths, radius, n) -> None:
    """radius + 1 steps; each table's distances are 0, 1, 2, ... in order; every prefix is the cheapest
    set of steps reaching its certain distance (what an early stop relies on)."""
    steps = probe_schedule(widths, radius, n)
    assert len(steps) == radius + 1
    for table in range(len(widths)):
        levels = [level for i, level in steps if i == table]
        assert levels == list(range(len(levels)))

    def cheapest(reach, tables):  # cheapest probed distances t_i with Σ (t_i + 1) = reach, brute force
        if not tables:
            return 0.0 if reach == 0 else float("inf")
        width, rest = tables[0], tables[1:]
        return min(sum(_step_cost(width, level, n) for level in range(used)) + cheapest(reach - used, rest)
                   for used in range(min(reach, width + 1) + 1))

    for j in range(radius + 1):
        prefix = sum(_step_cost(widths[i], level, n) for i, level in steps[: j + 1])
        assert prefix == pytest.approx(cheapest(j + 1, widths))


def test_filter_word_is_a_lower_bound_that_ignores_the_substring() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2**64, 2000, dtype=np.uint64), rng.integers(0, 2**64, 2000, dtype=np.uint64)
    for shift, width in ((0, 13), (13, 13), (39, 13), (52, 12), (40, 24)):
        rotate = shift + width
        fa = np.array([_filter_word(x, 64, rotate) for x in a], np.uint32)
        fb = np.array([_filter_word(x, 64, rotate) for x in b], np.uint32)
        assert (np.bitwise_count(fa ^ fb) <= np.bitwise_count(a ^ b)).all()
        substring = np.uint64(((1 << width) - 1) << shift)
        assert np.array_equal(np.array([_filter_word(x, 64, rotate) for x in a ^ substring], np.uint32), fa)
    words = rng.integers(0, 2**16, 100, dtype=np.uint16)  # short codes: the filter is the whole word
    assert [int(_filter_word(w, 16, 8)) for w in words] == [int(w) for w in words]


@pytest.mark.parametrize("m", [3, 4, 5, 8])
def test_mih_finds_every_split_of_the_radius_over_the_substrings(m: int) -> None:
    """The refined pigeonhole, adversarially: a code differing from the query in d_i bits of substring
    i, for every split (d_1..d_m) of ``radius`` bits, is found; one bit more never is."""
    rng = np.random.default_rng(m)
    radius = 8
    widths = [w for _, _, w in substring_layout(64, m)]
    starts = np.cumsum([0] + widths[:-1])
    query = rng.integers(0, 2, 64, dtype=np.uint8)

    def splits(total, parts):
        if parts == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in splits(total - first, parts - 1):
                yield (first, *rest)

    def code_at(split):
        bits = query.copy()
        for d, start, width in zip(split, starts, widths, strict=True):
            bits[start + rng.choice(width, d, replace=False)] ^= 1
        return bits

    inside = [code_at(sp) for sp in splits(radius, m) if all(d <= w for d, w in zip(sp, widths, strict=True))]
    outside = [code_at(sp) for sp in list(splits(radius + 1, m))[::7] if max(sp) <= min(widths)]
    # Bit b of a code word is bit b of the substring layout: write the word, then pack.
    def pack_words(rows):
        words = (np.asarray(rows, np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
        return words.view(np.uint8).reshape(-1, 8)

    db = np.concatenate([pack_words(inside), pack_words(outside)])
    q = pack_words([query])
    index = MultiIndex(to_planes(db, 64), m)
    d, r = index.search(to_planes(q, 64), len(db), radius, allow_scan=False)
    assert sorted(r[0][r[0] >= 0].tolist()) == list(range(len(inside)))
    assert (d[0][d[0] >= 0] == radius).all()


def test_mih_verifies_in_small_batches_and_sorts_in_small_passes() -> None:
    """Crowded buckets (many copies of few codes) overflow the candidate buffer and the probe
    passes when their caps are tiny; the answer is the same."""
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    db = np.concatenate([flip_random_bits(np.repeat(base, 150, axis=0), 1, rng),
                         rng.integers(0, 256, (500, 8), dtype=np.uint8)])
    queries = flip_random_bits(base[rng.integers(0, 6, 40)], 2, rng)
    live = np.where(rng.random(len(db)) < 0.1, -1, 0).astype(np.int32)
    planes, qp = to_planes(db, 64), to_planes(queries, 64)
    ref_d, _ = reference_topk(db, queries, 25, live, 6)
    index = MultiIndex(planes, 4)
    for probe_cap, candidate_cap in ((1 << 22, 1024), (5, 3), (40, 1)):
        index.probe_cap, index.candidate_cap = probe_cap, candidate_cap
        d, r = index.search(qp, 25, 6, live=live, allow_scan=False)
        assert np.array_equal(d, ref_d)
        for row in r:
            assert len(set(row[row >= 0].tolist())) == int((row >= 0).sum())


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
