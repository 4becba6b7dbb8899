"""The Redis catalog: layout, atomic per-track writes, rebuild + switch, deletion. Real Redis."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis
from redis.crc import key_slot

from streamd.store.catalog import (
    REGISTRY_KEY,
    Catalog,
    CatalogError,
    StaleGenerationError,
    Track,
    list_catalogs,
)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def catalog(client: redis.Redis, unique: Callable[[str], str]) -> Iterator[Catalog]:
    cat = Catalog(client, unique("cat"))
    yield cat
    cat.delete()


def make_track(track_id: str, n: int, seed: int = 0, bits: int = 64, **info: str) -> Track:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    return Track(track_id, codes, np.arange(1, n + 1, dtype=np.float32) * 1.024, {"title": track_id, **info})


def keys_of(client: redis.Redis, cat: Catalog) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=cat.keys.prefix + "*", count=1000))


def test_layout_is_binary_and_in_one_cluster_slot(client: redis.Redis, catalog: Catalog) -> None:
    info = catalog.ensure(64, 48, "m1")
    odd = make_track("id:with{braces}", 5, seed=1)
    for track in (make_track("a", 10), odd):
        catalog.put_track(info.generation, track, 64)
    g = info.generation
    assert client.get(catalog.keys.codes(g, "a")) == make_track("a", 10).codes.tobytes()
    assert client.strlen(catalog.keys.offsets(g, "a")) == 10 * 4
    assert np.allclose(np.frombuffer(client.get(catalog.keys.offsets(g, "a")), "<f4"), make_track("a", 10).offsets)
    keys = keys_of(client, catalog)
    assert len(keys) == 1 + 1 + 1 + 1 + 2 * 3  # meta, changes, generation meta, tracks, 2 × 3 per track
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert catalog.name.encode() in client.smembers(REGISTRY_KEY)


def test_put_read_replace_delete_and_counters(catalog: Catalog) -> None:
    info = catalog.ensure(64, 48, "m1")
    g = info.generation
    assert catalog.put_track(g, make_track("a", 10), 64) == 1
    assert catalog.put_track(g, make_track("b", 7, seed=2, album="X"), 64) == 2
    assert catalog.put_track(g, make_track("a", 4, seed=3), 64) == 3  # replace
    served = catalog.info().served
    assert (served.tracks, served.codes) == (2, 11)
    tracks = {t.track_id: t for t in catalog.read_tracks(g, ["a", "b", "missing"], 64)}
    assert set(tracks) == {"a", "b"}
    assert np.array_equal(tracks["a"].codes, make_track("a", 4, seed=3).codes)
    assert tracks["b"].info == {"title": "b"}  # summary fields only
    assert next(catalog.read_tracks(g, ["b"], 64, info_fields=None)).info == {"title": "b", "album": "X"}
    assert catalog.delete_track("a") == 4
    assert catalog.delete_track("a") == 0
    served = catalog.info().served
    assert (served.tracks, served.codes) == (1, 7)
    changes = catalog.read_changes("0-0")
    assert [(c.op, c.track, c.version) for c in changes] == [
        ("put", "a", 1), ("put", "b", 2), ("put", "a", 3), ("del", "a", 4)]
    assert {c.epoch for c in changes} == {catalog.info().epoch}


def test_peaks_are_stored_with_a_track_replaced_with_it_and_deleted_with_it(client: redis.Redis, catalog: Catalog,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A track's spectral peaks (streamd.peaks) travel with its codes; a track written without
    them (indexed before peaks existed, or by a tool) reads back with none, and a replacement
    without peaks drops the old ones."""
    g = catalog.ensure(64, 48, "m1").generation
    peaks = np.array([[3, 10], [3, 70], [40, 5], [2**20, 95]], dtype=np.int32)
    with_peaks = make_track("a", 6)
    with_peaks.peaks = peaks
    catalog.put_track(g, with_peaks, 64)
    catalog.put_track(g, make_track("b", 4), 64)
    tracks = {t.track_id: t for t in catalog.read_tracks(g, ["a", "b"], 64)}
    assert np.array_equal(tracks["a"].peaks, peaks) and tracks["a"].peaks.dtype == np.int32
    assert tracks["b"].peaks is None and client.exists(catalog.keys.peaks(g, "b")) == 0
    catalog.put_track(g, make_track("a", 6), 64)  # replaced without peaks
    assert next(catalog.read_tracks(g, ["a"], 64)).peaks is None
    catalog.put_track(g, with_peaks, 64)
    client.set(catalog.keys.peaks(g, "b"), b"\x01\x02\x03")  # corrupt: the track reads without peaks, logged
    with caplog.at_level(logging.WARNING, logger="streamd.store.catalog"):
        assert next(catalog.read_tracks(g, ["b"], 64)).peaks is None
    assert "corrupt peaks value" in caplog.text and "'b'" in caplog.text
    catalog.delete_track("a")
    assert client.exists(catalog.keys.peaks(g, "a")) == 0


def test_bad_codes_are_rejected_before_writing(catalog: Catalog) -> None:
    g = catalog.ensure(64, 48, "m1").generation
    bad = make_track("a", 3, bits=32)
    with pytest.raises(ValueError, match="shape"):
        catalog.put_track(g, bad, 64)
    nan = make_track("b", 3)
    nan.offsets[1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        catalog.put_track(g, nan, 64)
    assert catalog.track_ids(g) == []


def test_rebuild_switches_atomically_and_drops_the_old_generation(client: redis.Redis, catalog: Catalog) -> None:
    info = catalog.ensure(64, 48, "m1")
    catalog.put_track(info.generation, make_track("old", 5), 64)
    g2 = catalog.begin_rebuild(64, 48, "m2")
    assert g2 == 2
    assert catalog.begin_rebuild(64, 48, "m2") == g2  # an interrupted rebuild is resumed
    assert catalog.put_track(g2, make_track("new", 3), 64) == 0  # not served yet: no change entry
    mid = catalog.info()
    assert (mid.generation, mid.building, mid.version) == (1, 2, 1)
    assert catalog.switch_to(g2) == 2
    after = catalog.info()
    assert (after.generation, after.building, after.served.model_version) == (2, None, "m2")
    assert catalog.track_ids(2) == ["new"]
    assert not any(":g1:" in k for k in keys_of(client, catalog))
    assert catalog.read_changes("0-0")[-1].op == "switch"
    with pytest.raises(StaleGenerationError):
        catalog.put_track(1, make_track("late", 2), 64)


def test_rebuild_with_another_model_abandons_the_unfinished_one(client: redis.Redis, catalog: Catalog) -> None:
    catalog.ensure(64, 48, "m1")
    g2 = catalog.begin_rebuild(64, 48, "m2")
    catalog.put_track(g2, make_track("x", 3), 64)
    g3 = catalog.begin_rebuild(32, 48, "m3")
    assert g3 == 3
    assert not any(":g2:" in k for k in keys_of(client, catalog))
    with pytest.raises(StaleGenerationError):
        catalog.put_track(g2, make_track("y", 3), 64)


def test_delete_removes_every_key(client: redis.Redis, catalog: Catalog) -> None:
    info = catalog.ensure(64, 48, "m1")
    for i in range(5):
        catalog.put_track(info.generation, make_track(f"t{i}", 3, seed=i), 64)
    catalog.begin_rebuild(64, 48, "m2")
    assert catalog.name in [c.name for c in list_catalogs(client)]
    assert catalog.delete() is True
    assert keys_of(client, catalog) == []
    assert catalog.info() is None
    assert catalog.name not in [c.name for c in list_catalogs(client)]
    assert catalog.delete() is False
    with pytest.raises(CatalogError):
        catalog.begin_rebuild(64, 48, "m2")


def test_invalid_names_are_refused(client: redis.Redis) -> None:
    for name in ("", "a b", "x}{", "-lead", "a" * 200):
        with pytest.raises(CatalogError, match="invalid catalog name"):
            Catalog(client, name)


def test_concurrent_writers_of_one_track_never_mix(redis_url: str, catalog: Catalog) -> None:
    """Two writers replace the same track over and over; every read sees one writer's whole track."""
    g = catalog.ensure(64, 48, "m1").generation
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(marker: int, n: int) -> None:
        c = redis.Redis.from_url(redis_url)
        cat = Catalog(c, catalog.name)
        track = Track("same", np.full((n, 8), marker, np.uint8), np.full(n, marker, np.float32),
                      {"marker": str(marker), "n_codes": str(n)})
        try:
            while not stop.is_set():
                cat.put_track(g, track, 64)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(m, n)) for m, n in ((17, 100), (230, 57))]
    for t in threads:
        t.start()
    reader = redis.Redis.from_url(redis_url)
    k = catalog.keys
    seen = set()
    try:
        for _ in range(300):
            pipe = reader.pipeline(transaction=True)  # MULTI/EXEC: one consistent snapshot
            pipe.get(k.codes(g, "same")).get(k.offsets(g, "same")).hgetall(k.info(g, "same"))
            pipe.hmget(k.generation_meta(g), "tracks", "codes")
            codes, offsets, info, counts = pipe.execute()
            if codes is None:
                continue
            codes = np.frombuffer(codes, np.uint8)
            offsets = np.frombuffer(offsets, "<f4")
            marker = int(info[b"marker"])
            seen.add(marker)
            assert (codes == marker).all() and (offsets == marker).all()
            assert len(codes) == 8 * len(offsets) == 8 * int(info[b"n_codes"])
            assert [int(x) for x in counts] == [1, len(offsets)]
    finally:
        stop.set()
        for t in threads:
            t.join()
        reader.close()
    assert not errors
    assert catalog.track_ids(g) == ["same"]
    assert seen  # the reader did observe writes
