"""Replicas follow the Redis catalog: another process's writes, lost history, Redis restarts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from streamd.store.catalog import Catalog, Track
from streamd.store.replica import Replica
from streamd.store.table import SearchSettings

REPO = Path(__file__).resolve().parents[1]


def make_track(track_id: str, n: int, seed: int) -> Track:
    rng = np.random.default_rng(seed)
    return Track(track_id, rng.integers(0, 256, (n, 8), dtype=np.uint8),
                 np.arange(1, n + 1, dtype=np.float32), {"title": track_id.title()})


@pytest.fixture
def catalog(redis_url: str, unique: Callable[[str], str]) -> Iterator[Catalog]:
    client = redis.Redis.from_url(redis_url)
    cat = Catalog(client, unique("cat"))
    yield cat
    cat.delete()
    client.close()


def start_replica(url: str, name: str, **kwargs) -> Replica:
    return Replica(lambda: redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=1), name,
                   SearchSettings(**kwargs), block_ms=200).start(timeout_s=30)


def test_replica_sees_changes_made_by_another_process(redis_url: str, catalog: Catalog, tmp_path: Path) -> None:
    """One process runs the indexer (with the stand-in encoder), this one's replica follows."""
    from store_doubles import RandomProjectionEncoder, tone_signal, write_wav

    from streamd.audio import load_audio

    g = catalog.ensure(64, 48, "test-rp-1").generation
    catalog.put_track(g, make_track("first", 30, 1), 64)
    song = write_wav(tmp_path / "second.wav", tone_signal(8, 5))
    replica = start_replica(redis_url, catalog.name)
    try:
        assert (replica.n_tracks, replica.size, replica.version) == (1, 30, 1)
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO / "tests")!r})
            import redis
            from store_doubles import RandomProjectionEncoder
            from streamd.config import load_config
            from streamd.indexer import index_paths
            from streamd.store.catalog import Catalog
            config = load_config(overrides={{"redis.url": {redis_url!r}}})
            report = index_paths(config, {catalog.name!r}, [{str(song)!r}], encoder_factory=RandomProjectionEncoder)
            assert report.indexed == 1, report
            Catalog(redis.Redis.from_url({redis_url!r}), {catalog.name!r}).delete_track("first")
        """)
        subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=120)
        assert replica.wait_for(lambda r: r.version == 3, timeout_s=10)
        codes, offsets = RandomProjectionEncoder().codes_for_audio(load_audio(song))
        assert (replica.n_tracks, replica.size) == (1, len(codes))
        hits = replica.search(codes, 1)
        assert set(hits.track_ids[:, 0]) == {"second"} and (hits.distances[:, 0] == 0).all()
        assert np.allclose(hits.offsets[:, 0], offsets)
        assert replica.track_info("second")["title"] == "second"
        assert replica.full_syncs == 1 and replica.changes_applied == 2
        assert replica.sync_delay_s < 5 and replica.last_apply_delay_s < 5
    finally:
        replica.stop()


def test_rebuild_and_delete_reach_the_replica(redis_url: str, catalog: Catalog) -> None:
    g = catalog.ensure(64, 48, "m1").generation
    catalog.put_track(g, make_track("a", 10, 1), 64)
    replica = start_replica(redis_url, catalog.name, mode="mih", radius=4)
    try:
        g2 = catalog.begin_rebuild(64, 48, "m2")
        catalog.put_track(g2, make_track("b", 12, 2), 64)
        time.sleep(0.3)
        assert replica.generation == 1 and replica.n_tracks == 1  # a rebuild is invisible until the switch
        catalog.switch_to(g2)
        assert replica.wait_for(lambda r: r.generation == g2, timeout_s=10)
        assert replica.n_tracks == 1 and replica.track_info("b") and not replica.track_info("a")
        catalog.delete()
        assert replica.wait_for(lambda r: r.epoch is None, timeout_s=10)
        assert replica.size == 0 and replica.search(np.zeros((1, 8), np.uint8)).track_ids[0, 0] is None
    finally:
        replica.stop()


def test_the_replica_serves_peaks_after_a_full_sync_and_after_changes(redis_url: str, catalog: Catalog) -> None:
    g = catalog.ensure(64, 48, "m1").generation
    first = make_track("a", 10, 1)
    first.peaks = np.array([[1, 2], [5, 90]], dtype=np.int32)
    catalog.put_track(g, first, 64)
    replica = start_replica(redis_url, catalog.name)
    try:
        assert np.array_equal(replica.peaks_of("a"), first.peaks) and replica.peaks_of("b") is None
        second = make_track("b", 12, 2)
        second.peaks = np.array([[7, 7]], dtype=np.int32)
        catalog.put_track(g, second, 64)
        catalog.put_track(g, make_track("a", 10, 3), 64)  # replaced without peaks
        assert replica.wait_for(lambda r: r.version == 3, timeout_s=10)
        assert np.array_equal(replica.peaks_of("b"), second.peaks) and replica.peaks_of("a") is None
        catalog.delete_track("b")
        assert replica.wait_for(lambda r: r.version == 4, timeout_s=10)
        assert replica.peaks_of("b") is None
    finally:
        replica.stop()


def test_lost_history_forces_a_full_resync(redis_url: str, catalog: Catalog) -> None:
    client = catalog.client
    g = catalog.ensure(64, 48, "m1").generation
    catalog.put_track(g, make_track("a", 10, 1), 64)
    replica = start_replica(redis_url, catalog.name)
    try:
        # An entry whose version skips ahead: the entries between were trimmed away.
        client.hset(catalog.keys.meta, "version", 7)
        client.set(catalog.keys.codes(g, "a"), make_track("a", 5, 9).codes.tobytes())
        client.set(catalog.keys.offsets(g, "a"), np.zeros(5, "<f4").tobytes())
        epoch = catalog.info().epoch
        client.xadd(catalog.keys.changes, {"op": "put", "track": "a", "version": 7, "generation": g, "epoch": epoch})
        assert replica.wait_for(lambda r: r.full_syncs == 2, timeout_s=10)
        assert (replica.version, replica.size) == (7, 5)
        # The stream vanishes and the head moves on without any entry to read.
        client.delete(catalog.keys.changes)
        client.hset(catalog.keys.meta, "version", 9)
        catalog.client.delete(catalog.keys.codes(g, "a"))  # (track now unreadable: dropped on load)
        assert replica.wait_for(lambda r: r.full_syncs == 3, timeout_s=10)
        assert (replica.version, replica.size) == (9, 0)
    finally:
        replica.stop()


def test_searches_during_a_stream_of_changes_never_fail(redis_url: str, catalog: Catalog) -> None:
    g = catalog.ensure(64, 48, "m1").generation
    replica = start_replica(redis_url, catalog.name)
    errors: list[BaseException] = []
    stop = threading.Event()
    probe = make_track("t0", 50, 0).codes

    def search_loop() -> None:
        try:
            while not stop.is_set():
                hits = replica.search(probe, 3)
                found = hits.distances >= 0
                assert all(isinstance(t, str) for t in hits.track_ids[found])
        except BaseException as exc:
            errors.append(exc)

    searcher = threading.Thread(target=search_loop)
    searcher.start()
    try:
        for i in range(60):
            catalog.put_track(g, make_track(f"t{i % 7}", 50, i % 7), 64)
            if i % 5 == 4:
                catalog.delete_track(f"t{(i * 3) % 7}")
        final = catalog.info()
        assert replica.wait_for(lambda r: r.version == final.version, timeout_s=15)
    finally:
        stop.set()
        searcher.join()
        replica.stop()
    assert not errors
    assert replica.size == final.served.codes and replica.n_tracks == final.served.tracks


# --- a private Redis that the test can restart ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server on a free port whose data (RDB) lives in a temp folder and survives restarts."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server; `make setup` does it)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        pytest.fail(f"private redis-server on port {self.port} did not start")

    def stop(self, save: bool) -> None:
        """Stop the server: with ``save`` the data is back after start(); without, it is as of the
        last SAVE. (SAVE + SIGKILL rather than SHUTDOWN, which takes seconds here.)"""
        if save:
            redis.Redis(port=self.port, socket_timeout=5).save()
        self.kill()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def test_replica_resyncs_after_redis_restarts(private_redis: PrivateRedis) -> None:
    url = private_redis.url
    catalog = Catalog(redis.Redis.from_url(url), "radio")
    g = catalog.ensure(64, 48, "m1").generation
    catalog.put_track(g, make_track("a", 10, 1), 64)
    replica = start_replica(url, "radio")
    try:
        # 1. Restart with the data intact: the replica reconnects and simply continues.
        private_redis.stop(save=True)
        assert replica.wait_for(lambda r: not r.connected, timeout_s=10)
        assert replica.sync_delay_s > 0
        private_redis.start()
        Catalog(redis.Redis.from_url(url), "radio").put_track(g, make_track("b", 20, 2), 64)
        assert replica.wait_for(lambda r: r.version == 2 and r.connected, timeout_s=15)
        assert (replica.size, replica.full_syncs) == (30, 1)

        # 2. Restart from an older snapshot: the replica's newer state is gone, so it reloads.
        client = redis.Redis.from_url(url)
        client.save()  # snapshot at version 2
        catalog = Catalog(client, "radio")
        catalog.put_track(g, make_track("c", 5, 3), 64)
        catalog.delete_track("a")
        assert replica.wait_for(lambda r: r.version == 4, timeout_s=10)
        assert replica.size == 25
        client.close()
        private_redis.stop(save=False)
        private_redis.start()
        assert replica.wait_for(lambda r: r.full_syncs == 2 and r.connected, timeout_s=15)
        assert (replica.version, replica.size, replica.n_tracks) == (2, 30, 2)

        # 3. Restart with no data at all: the catalog is gone, and so is the replica's copy.
        private_redis.stop(save=False)
        os.remove(private_redis.folder / "dump.rdb")
        private_redis.start()
        assert replica.wait_for(lambda r: r.epoch is None and r.connected, timeout_s=15)
        assert replica.size == 0
        fresh = Catalog(redis.Redis.from_url(url), "radio")
        fresh.put_track(fresh.ensure(64, 48, "m1").generation, make_track("d", 7, 4), 64)
        assert replica.wait_for(lambda r: r.size == 7, timeout_s=10)
    finally:
        replica.stop()
