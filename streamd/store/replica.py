"""A daemon's local copy of one catalog: searched in process, kept in sync with Redis by a thread.

Searches run on an immutable :class:`~streamd.store.table.CodeTable`; the sync thread builds the
next table and swaps one reference, so a search never waits for Redis and never sees half a
change.

Sync protocol (see docs/store.md):

* Full sync: note the newest change-stream ID, then read the catalog head (epoch, version,
  generation) and every track of the served generation, and build a table.
* Follow: ``XREAD BLOCK`` the change stream from the noted ID. Each ``put``/``del`` entry names a
  track; the replica re-reads that track's current state (so replaying an entry is harmless) and
  applies a batch of entries as one new table.
* Anything that breaks the chain forces a full sync: an entry from another epoch (catalog
  deleted and recreated), a ``switch`` (re-indexed generation) or ``drop``, a version gap (entries
  trimmed away), and, after a lost connection, a head that went backwards or a last-seen entry
  that no longer exists (Redis restarted from older data). When the stream is idle the head is
  checked once per block period, which also catches a deleted stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numba
import numpy as np
import redis

from streamd.config import Config
from streamd.store.catalog import Catalog, Change, connect
from streamd.store.table import CodeTable, Hits, SearchSettings

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def settings_from_config(config: Config) -> SearchSettings:
    """Search settings for ``config.store``; device ``auto`` means CUDA when torch sees a GPU."""
    store = config.store
    device = store.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return SearchSettings(mode=store.search, radius=store.mih_radius, device=device,
                          mih_substrings=store.mih_substrings or None, threads=store.search_threads or None)


class Replica:
    """See the module docstring. ``start()`` it, ``search()`` it, ``stop()`` it."""

    def __init__(self, connect_fn: Callable[[], redis.Redis], catalog: str,
                 settings: SearchSettings | None = None, *, top_k: int = 10, block_ms: int = 1000,
                 batch: int = 1000):
        self.catalog_name = catalog
        self.settings = settings or SearchSettings()
        self.top_k = top_k
        self.block_ms = block_ms
        self.batch = batch
        self._connect = connect_fn
        self._client: redis.Redis | None = None
        self._catalog: Catalog | None = None
        self._table: CodeTable | None = None
        self._epoch: str | None = None
        self._version = 0
        self._generation = 0
        self._last_id = "0-0"
        self._needs_full = True
        self._disconnected = False
        self._confirmed_at = 0.0
        self._listening = False
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.full_syncs = 0
        self.changes_applied = 0
        self.last_apply_delay_s = 0.0
        self.last_error: str | None = None

    @classmethod
    def from_config(cls, config: Config, catalog: str | None = None) -> Replica:
        block_ms = int(min(1000.0, config.redis.socket_timeout_s * 500))  # a blocking read must not time out
        return cls(lambda: connect(config.redis), catalog or config.store.catalog, settings_from_config(config),
                   top_k=config.store.top_k, block_ms=max(10, block_ms))

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float | None = 60.0) -> Replica:
        """Start the sync thread and wait (up to ``timeout_s``) for the first full sync."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"replica-{self.catalog_name}", daemon=True)
            self._thread.start()
        if timeout_s is not None and not self._synced.wait(timeout_s):
            raise TimeoutError(f"catalog {self.catalog_name!r}: no sync with Redis within {timeout_s} s "
                               f"(last error: {self.last_error})")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Replica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what callers use ------------------------------------------------------------------

    def search(self, codes: np.ndarray, k: int | None = None) -> Hits:
        """Top-k catalog codes for each packed query code ``(B, K // 8)``; never touches Redis."""
        k = k or self.top_k
        table = self._table
        if table is None:
            b = len(codes)
            return Hits(np.full((b, k), -1, np.int32), np.full((b, k), None, dtype=object),
                        np.full((b, k), np.nan, np.float32))
        if self.settings.threads:
            numba.set_num_threads(min(self.settings.threads, numba.config.NUMBA_NUM_THREADS))
        return table.search(codes, k)

    def codes_at(self, track_id: str, offsets: np.ndarray, tolerance_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Catalog codes of ``track_id`` by position (:meth:`CodeTable.codes_at`); none found before
        the first sync."""
        table = self._table
        if table is None:
            n = len(np.asarray(offsets).reshape(-1))
            return np.zeros((n, 0), dtype=np.uint8), np.zeros(n, dtype=bool)
        return table.codes_at(track_id, offsets, tolerance_s)

    def peaks_of(self, track_id: str) -> np.ndarray | None:
        """The track's spectral peaks (:meth:`CodeTable.peaks_of`); None before the first sync."""
        table = self._table
        return None if table is None else table.peaks_of(track_id)

    @property
    def table(self) -> CodeTable | None:
        return self._table

    @property
    def bits(self) -> int | None:
        table = self._table
        return table.bits if table is not None else None

    @property
    def version(self) -> int:
        return self._version

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def epoch(self) -> str | None:
        return self._epoch

    @property
    def size(self) -> int:
        """Live codes in the local table."""
        table = self._table
        return table.size if table is not None else 0

    @property
    def n_tracks(self) -> int:
        table = self._table
        return table.n_tracks if table is not None else 0

    @property
    def connected(self) -> bool:
        return self._synced.is_set() and not self._disconnected

    @property
    def sync_delay_s(self) -> float:
        """How far behind Redis the local table may be: 0 while caught up and listening for changes;
        otherwise the time since the replica last knew it had every change (it grows while a big
        batch is applied, a full sync runs or Redis is unreachable)."""
        if self._listening and not self._disconnected:
            return 0.0
        if not self._confirmed_at:
            return float("inf")
        return max(0.0, time.time() - self._confirmed_at)

    def track_info(self, track_id: str) -> dict[str, str]:
        """Metadata (title, artist, duration_s) of a track in the local table, {} if unknown."""
        table = self._table
        return dict(table.track_meta.get(track_id, {})) if table is not None else {}

    def wait_for(self, predicate: Callable[[Replica], bool], timeout_s: float = 10.0) -> bool:
        """Poll until ``predicate(self)`` holds (for tests and tools); True if it did in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.01)
        return predicate(self)

    # --- the sync thread -------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self._client is None:
                    self._client = self._connect()
                    self._catalog = Catalog(self._client, self.catalog_name)
                if self._disconnected and not self._needs_full:
                    self._check_after_reconnect()
                if self._needs_full:
                    self._full_sync()
                if self._disconnected:
                    log.info("catalog %r: reconnected to Redis (version %d)", self.catalog_name, self._version)
                self._disconnected = False
                self._follow_once()
                backoff = 0.1
            except _CONNECTION_ERRORS as exc:
                self._listening = False
                if not self._disconnected:
                    log.warning("catalog %r: lost Redis (%s); retrying", self.catalog_name, exc)
                self._disconnected = True
                self.last_error = str(exc)
                self._stop.wait(backoff)
                backoff = min(2.0, backoff * 2)
            except Exception as exc:  # a bug or bad data: keep serving the old table, resync later
                self._listening = False
                log.exception("catalog %r: sync failed; will resync", self.catalog_name)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._needs_full = True
                self._stop.wait(backoff)
                backoff = min(5.0, backoff * 2)

    def _full_sync(self) -> None:
        catalog = self._catalog
        assert catalog is not None
        started = time.time()
        last_id = catalog.last_change_id()
        info = catalog.info()
        if info is None or info.served is None:
            table, epoch, version, generation = None, None, 0, 0
        else:
            bits = info.served.bits
            tracks = catalog.read_tracks(info.generation, catalog.track_ids(info.generation), bits)
            table = CodeTable.build(bits, tracks, self.settings)
            epoch, version, generation = info.epoch, info.version, info.generation
        self._table, self._epoch, self._version, self._generation = table, epoch, version, generation
        self._last_id = last_id
        self._needs_full = False
        self._confirmed_at = started
        self.full_syncs += 1
        self._synced.set()
        log.info("catalog %r: loaded version %d, generation %d: %d tracks, %d codes in %.2f s",
                 self.catalog_name, version, generation, self.n_tracks, self.size, time.time() - started)

    def _check_after_reconnect(self) -> None:
        """After a lost connection: can the change stream still be followed from where we were?"""
        catalog = self._catalog
        assert catalog is not None
        epoch, version, generation = catalog.head()
        if epoch != self._epoch or version < self._version or generation != self._generation:
            self._needs_full = True
        elif self._last_id != "0-0" and not catalog.change_exists(self._last_id):
            self._needs_full = True

    def _follow_once(self) -> None:
        catalog = self._catalog
        assert catalog is not None
        self._listening = True
        try:
            changes = catalog.read_changes(self._last_id, count=self.batch, block_ms=self.block_ms)
        finally:
            self._listening = False
        returned_at = time.time()
        if not changes:
            if catalog.head() == (self._epoch, self._version, self._generation):
                self._confirmed_at = returned_at
                return
            changes = catalog.read_changes(self._last_id, count=self.batch)  # written just now?
            if not changes:
                self._needs_full = True  # the stream lost entries or vanished
                return
        self._apply(changes)
        if len(changes) < self.batch and not self._needs_full:
            self._confirmed_at = returned_at

    def _apply(self, changes: list[Change]) -> None:
        """Apply a batch of changes as one new table, or flag a full sync if the chain breaks."""
        catalog = self._catalog
        assert catalog is not None
        version, last_id = self._version, self._last_id
        affected: set[str] = set()
        for change in changes:
            if (change.epoch != self._epoch or change.op not in ("put", "del")
                    or change.generation != self._generation or change.version > version + 1):
                self._needs_full = True
                return
            affected.add(change.track)
            version = max(version, change.version)
            last_id = change.entry_id
        table = self._table
        assert table is not None
        tracks = list(catalog.read_tracks(self._generation, sorted(affected), table.bits))
        self._table = table.with_changes(affected, tracks)
        self._version, self._last_id = version, last_id
        self.changes_applied += len(changes)
        self.last_apply_delay_s = max(0.0, time.time() - changes[-1].committed_at)
