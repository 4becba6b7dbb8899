"""CodeTable: a table changed step by step answers like one built from scratch (exact and MIH)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamd.store import table as table_module
from streamd.store.catalog import Track
from streamd.store.codes import flip_random_bits, hamming_matrix
from streamd.store.mih import MultiIndex, default_substrings
from streamd.store.table import CodeTable, SearchSettings


def random_track(track_id: str, rng: np.random.Generator, bits: int, max_codes: int = 60) -> Track:
    n = int(rng.integers(0, max_codes))
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    return Track(track_id, codes, rng.random(n).astype(np.float32) * 100, {"title": track_id.upper()})


def check_hits(table: CodeTable, tracks: dict[str, Track], queries: np.ndarray, k: int) -> np.ndarray:
    """Every hit names a stored code at the reported distance; returns the distances."""
    hits = table.search(queries, k)
    for qi in range(len(queries)):
        for d, tid, off in zip(hits.distances[qi], hits.track_ids[qi], hits.offsets[qi], strict=True):
            if d < 0:
                assert tid is None and np.isnan(off)
                continue
            track = tracks[tid]
            rows = np.flatnonzero(track.offsets == off)
            assert len(rows) >= 1
            assert d in hamming_matrix(queries[qi:qi + 1], track.codes[rows])[0]
    return hits.distances


@pytest.mark.parametrize("mode", ["exact", "mih"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), bits=st.sampled_from([32, 64, 128]))
def test_incremental_changes_match_a_fresh_build(monkeypatch, mode: str, seed: int, bits: int) -> None:
    monkeypatch.setattr(table_module, "MIN_UNINDEXED_ROWS", 50)  # rebuild the base index often
    monkeypatch.setattr(table_module, "MIN_DEAD_ROWS", 20)  # and compact often
    rng = np.random.default_rng(seed)
    settings_ = SearchSettings(mode=mode, radius=bits // 4)
    current = {f"t{i}": random_track(f"t{i}", rng, bits) for i in range(8)}
    table = CodeTable.build(bits, current.values(), settings_)
    for step in range(12):
        removed = list(rng.choice(sorted(current), size=min(len(current), int(rng.integers(0, 3))), replace=False))
        added = [random_track(f"t{int(rng.integers(0, 20))}", rng, bits) for _ in range(int(rng.integers(0, 3)))]
        added = list({t.track_id: t for t in added}.values())
        for tid in removed:
            current.pop(tid)
        current.update({t.track_id: t for t in added})
        table = table.with_changes(removed, added)
        fresh = CodeTable.build(bits, current.values(), settings_)
        assert table.size == fresh.size == sum(len(t.codes) for t in current.values())
        assert table.n_tracks == len(current)
        pool = [t.codes for t in current.values() if len(t.codes)] or [np.zeros((1, bits // 8), np.uint8)]
        base = np.concatenate(pool)
        queries = np.concatenate([flip_random_bits(base[rng.integers(0, len(base), 6)], 2, rng),
                                  rng.integers(0, 256, (2, bits // 8), dtype=np.uint8)])
        got = check_hits(table, current, queries, 5)
        want = check_hits(fresh, current, queries, 5)
        assert np.array_equal(got, want), f"step {step}"
    for tid, track in current.items():
        assert table.track_meta[tid] == track.info


def test_mih_table_uses_the_base_index_and_scans_the_tail() -> None:
    rng = np.random.default_rng(3)
    tracks = [random_track(f"t{i}", rng, 64, max_codes=200) for i in range(50)]
    table = CodeTable.build(64, tracks, SearchSettings(mode="mih", radius=6))
    assert isinstance(table.base, MultiIndex) and table.base_rows == table.n_rows
    assert table.base.m == default_substrings(64, table.n_rows, 6)  # m chosen for the configured radius
    extra = Track("late", tracks[0].codes[:5].copy(), np.arange(5, dtype=np.float32), {})
    newer = table.with_changes([], [extra])
    assert newer.base is table.base and newer.base_rows < newer.n_rows  # appended rows are scanned
    hits = newer.search(extra.codes, 3)
    assert set(hits.track_ids[:, 0]) <= {"late", "t0"} and (hits.distances[:, 0] == 0).all()
    assert table.size == newer.size - 5  # the older snapshot is unchanged


def test_empty_table_and_wrong_width() -> None:
    table = CodeTable.empty(64, SearchSettings())
    hits = table.search(np.zeros((2, 8), np.uint8), 3)
    assert (hits.distances == -1).all() and (hits.track_ids == None).all()  # noqa: E711
    with pytest.raises(ValueError, match="shape"):
        table.search(np.zeros((2, 4), np.uint8), 3)


def test_two_changes_from_the_same_snapshot_do_not_overwrite_each_other() -> None:
    rng = np.random.default_rng(4)
    big = Track("a", rng.integers(0, 256, (100, 8), dtype=np.uint8), np.zeros(100, np.float32), {})
    base = CodeTable.build(64, [big], SearchSettings())
    grown = base.with_changes([], [random_track("b", rng, 64, max_codes=5)])  # room for 95 more rows in place
    x = Track("x", rng.integers(0, 256, (20, 8), dtype=np.uint8), np.zeros(20, np.float32), {})
    y = Track("y", rng.integers(0, 256, (20, 8), dtype=np.uint8), np.ones(20, np.float32), {})
    with_x = grown.with_changes([], [x])
    with_y = grown.with_changes([], [y])  # must not reuse the rows with_x appended into
    assert set(with_x.search(x.codes, 1).track_ids[:, 0]) == {"x"}
    assert set(with_y.search(y.codes, 1).track_ids[:, 0]) == {"y"}
    assert (with_x.search(x.codes, 1).distances[:, 0] == 0).all()
