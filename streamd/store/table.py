"""An immutable, searchable snapshot of a catalog's codes: what a replica swaps in after each sync.

Arrays (one row per code): word planes ``(W, rows)`` (see :mod:`streamd.store.codes`), ``live``
int32 (index into ``track_ids``, or -1 for a deleted code) and ``offsets`` float32. A track's codes
occupy consecutive rows.

Applying a change makes a new table without disturbing searches running on the old one: the
``live`` array is copied (deleted rows set to -1) and new codes are appended after the last row
in a shared, over-allocated buffer, past the end that older snapshots read. A base index (MIH
tables, or the database on a GPU) covers the rows present when it was built; rows appended since
are scanned exactly. When too many rows are dead or unindexed the table is rebuilt compactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamd.store.catalog import Track
from streamd.store.codes import check_packed, from_planes, n_planes, to_planes, word_dtype
from streamd.store.mih import MultiIndex
from streamd.store.search import TorchExactSearch, exact_topk, merge_topk

MIN_UNINDEXED_ROWS = 65_536  # rows appended since the base index was built, before rebuilding it
MIN_DEAD_ROWS = 1024  # deleted rows kept before compacting (and at least a quarter of all rows)


class Hits(NamedTuple):
    """Search results, each (B, k), best first. Empty slots: distance -1, track id None, offset NaN."""

    distances: np.ndarray
    track_ids: np.ndarray
    offsets: np.ndarray


@dataclass(frozen=True)
class SearchSettings:
    """How a table is searched: ``exact`` scan, or ``mih`` within ``radius``; ``device`` cpu|cuda;
    ``threads``: CPU threads per search (None: numba's default, all cores)."""

    mode: str = "exact"
    radius: int = 8
    device: str = "cpu"
    mih_substrings: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "mih"):
            raise ValueError(f"search mode must be 'exact' or 'mih', got {self.mode!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"search device must be 'cpu' or 'cuda', got {self.device!r}")


class CodeTable:
    """See the module docstring. Build with :meth:`build`, change with :meth:`with_changes`."""

    def __init__(self, bits: int, settings: SearchSettings, planes: np.ndarray, offsets: np.ndarray,
                 n_rows: int, live: np.ndarray, track_ids: list[str | None],
                 track_rows: dict[str, tuple[int, int, int]], track_meta: dict[str, dict[str, str]],
                 buffer_end: list[int] | None = None, track_peaks: dict[str, np.ndarray] | None = None):
        self.bits = bits
        self.settings = settings
        self._planes = planes  # (W, capacity); rows >= n_rows may be written by newer snapshots
        self._offsets = offsets  # (capacity,)
        self._buffer_end = buffer_end or [n_rows]  # shared by the snapshots of one buffer: rows in use
        self._buffer_end[0] = n_rows
        self.n_rows = n_rows
        self.live = live
        self.track_ids = track_ids  # by track index; None for removed tracks
        self.track_rows = track_rows  # track id -> (track index, first row, end row)
        self.track_meta = track_meta
        self.track_peaks = track_peaks or {}  # track id -> spectral peaks (streamd.peaks), if stored
        self.base: MultiIndex | TorchExactSearch | None = None
        self.base_rows = 0

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def empty(cls, bits: int, settings: SearchSettings) -> CodeTable:
        return cls.build(bits, [], settings)

    @classmethod
    def build(cls, bits: int, tracks: Iterable[Track], settings: SearchSettings) -> CodeTable:
        """A compact table of ``tracks`` with a fresh base index."""
        tracks = list(tracks)
        n = sum(len(t.codes) for t in tracks)
        planes = np.empty((n_planes(bits), max(n, 1)), dtype=word_dtype(bits))
        offsets = np.empty(max(n, 1), dtype=np.float32)
        live = np.empty(n, dtype=np.int32)
        track_ids: list[str | None] = []
        track_rows: dict[str, tuple[int, int, int]] = {}
        row = 0
        for track in tracks:
            start, row = row, _place(track, planes, offsets, live, row, len(track_ids), bits)
            track_rows[track.track_id] = (len(track_ids), start, row)
            track_ids.append(track.track_id)
        meta = {t.track_id: dict(t.info) for t in tracks}
        peaks = {t.track_id: t.peaks for t in tracks if t.peaks is not None}
        table = cls(bits, settings, planes, offsets, n, live, track_ids, track_rows, meta, track_peaks=peaks)
        table._index_all()
        return table

    def _index_all(self) -> None:
        s = self.settings
        planes = self._planes[:, : self.n_rows]
        if s.device == "cuda":
            packed = from_planes(planes, self.bits)
            self.base = TorchExactSearch(packed, self.bits, "cuda", live=self.live)
        elif s.mode == "mih" and self.n_rows:
            self.base = MultiIndex(np.ascontiguousarray(planes), s.mih_substrings, radius=s.radius)
        self.base_rows = self.n_rows if self.base is not None else 0

    def with_changes(self, removed: Iterable[str], added: Sequence[Track]) -> CodeTable:
        """A new table without the ``removed`` track ids and with ``added`` (replacing same ids)."""
        added = list(added)
        gone = set(removed) | {t.track_id for t in added}
        live = self.live.copy()
        track_ids = list(self.track_ids)
        track_rows = dict(self.track_rows)
        track_meta = dict(self.track_meta)
        track_peaks = dict(self.track_peaks)
        for track_id in gone:
            track_meta.pop(track_id, None)
            track_peaks.pop(track_id, None)
            if track_id in track_rows:
                index, start, stop = track_rows.pop(track_id)
                track_ids[index] = None
                live[start:stop] = -1
        n_new = sum(len(t.codes) for t in added)
        planes, offsets, buffer_end = self._planes, self._offsets, self._buffer_end
        # Append in place only past every row a snapshot of this buffer uses; else copy.
        if self.n_rows + n_new > planes.shape[1] or buffer_end[0] != self.n_rows:
            capacity = max(2 * planes.shape[1], self.n_rows + n_new)
            planes = np.empty((planes.shape[0], capacity), dtype=planes.dtype)
            planes[:, : self.n_rows] = self._planes[:, : self.n_rows]
            offsets = np.empty(capacity, dtype=np.float32)
            offsets[: self.n_rows] = self._offsets[: self.n_rows]
            buffer_end = None
        live = np.concatenate([live, np.empty(n_new, dtype=np.int32)])
        row = self.n_rows
        for track in added:
            start, row = row, _place(track, planes, offsets, live, row, len(track_ids), self.bits)
            track_rows[track.track_id] = (len(track_ids), start, row)
            track_ids.append(track.track_id)
            track_meta[track.track_id] = dict(track.info)
            if track.peaks is not None:
                track_peaks[track.track_id] = track.peaks
        table = CodeTable(self.bits, self.settings, planes, offsets, row, live, track_ids, track_rows, track_meta,
                          buffer_end, track_peaks)
        if table._needs_rebuild(self.base_rows):
            return table.compacted()
        table.base, table.base_rows = self.base, self.base_rows
        if isinstance(table.base, TorchExactSearch) and gone:
            table.base = table.base.with_live(live[: table.base_rows])
        return table

    def _needs_rebuild(self, base_rows: int) -> bool:
        dead = int((self.live < 0).sum())
        if dead > max(MIN_DEAD_ROWS, self.n_rows // 4):
            return True
        wants_base = self.settings.device == "cuda" or self.settings.mode == "mih"
        unindexed = self.n_rows - base_rows
        return wants_base and unindexed > max(MIN_UNINDEXED_ROWS, base_rows // 10)

    def compacted(self) -> CodeTable:
        """Same content without dead rows, with a fresh base index."""
        keep = self.live >= 0
        used = np.array(sorted(index for index, _, _ in self.track_rows.values()), dtype=np.int64)
        remap = np.full(len(self.track_ids), -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        live = remap[self.live[keep]]
        planes = np.ascontiguousarray(self._planes[:, : self.n_rows][:, keep])
        offsets = self._offsets[: self.n_rows][keep].copy()
        track_ids: list[str | None] = [self.track_ids[i] for i in used]
        ends = np.cumsum(np.bincount(live, minlength=len(used)))  # rows are in track index order
        starts = ends - np.bincount(live, minlength=len(used))
        track_rows = {tid: (i, int(starts[i]), int(ends[i])) for i, tid in enumerate(track_ids)}
        table = CodeTable(self.bits, self.settings, planes, offsets, len(live), live, track_ids, track_rows,
                          dict(self.track_meta), track_peaks=dict(self.track_peaks))
        table._index_all()
        return table

    # --- queries ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of live codes."""
        return int((self.live >= 0).sum())

    @property
    def n_tracks(self) -> int:
        return len(self.track_rows)

    @property
    def nbytes(self) -> int:
        """Memory held for this table's rows (codes, track index, offsets, base index tables)."""
        per_row = self._planes.dtype.itemsize * self._planes.shape[0] + 4 + 4
        base = self.base.nbytes if isinstance(self.base, MultiIndex) else 0
        return self.n_rows * per_row + base

    def peaks_of(self, track_id: str) -> np.ndarray | None:
        """The track's spectral peaks (N, 2) int32 [frame, mel], None if not stored (streamd.peaks)."""
        return self.track_peaks.get(track_id)

    def codes_at(self, track_id: str, offsets: np.ndarray, tolerance_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(packed codes (n, K/8), found (n,)): the live code of ``track_id`` whose offset is
        nearest each of ``offsets``, found when it lies within ``tolerance_s`` (a track's codes are
        stored in offset order). What the decision logic's verification compares a stream with."""
        offsets = np.asarray(offsets, dtype=np.float64).reshape(-1)
        rows = self.track_rows.get(track_id)
        empty = np.zeros((len(offsets), self.bits // 8), dtype=np.uint8), np.zeros(len(offsets), dtype=bool)
        if rows is None or rows[2] <= rows[1] or not len(offsets):
            return empty
        _, first, end = rows
        track_offsets = self._offsets[first:end]
        right = np.clip(np.searchsorted(track_offsets, offsets), 0, end - first - 1)
        left = np.clip(right - 1, 0, None)
        nearest = np.where(np.abs(track_offsets[left] - offsets) <= np.abs(track_offsets[right] - offsets), left, right)
        row = first + nearest
        found = (np.abs(track_offsets[nearest] - offsets) <= tolerance_s) & (self.live[row] >= 0)
        return from_planes(np.ascontiguousarray(self._planes[:, row]), self.bits), found

    def search(self, codes: np.ndarray, k: int) -> Hits:
        """Top-k catalog codes for each packed query code ``(B, K // 8)``."""
        codes = check_packed(codes, self.bits)
        dist, rows = self.search_rows(codes, k)
        found = rows >= 0
        safe = np.where(found, rows, 0)
        track_index = self.live[safe] if self.n_rows else np.zeros_like(safe, dtype=np.int32)
        ids = np.empty(rows.shape, dtype=object)
        ids[found] = [self.track_ids[i] for i in track_index[found]]
        offsets = np.where(found, self._offsets[safe] if self.n_rows else 0.0, np.nan).astype(np.float32)
        return Hits(dist, ids, offsets)

    def search_rows(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows) for packed query codes, using the base index plus an exact tail scan."""
        s = self.settings
        limit = s.radius if s.mode == "mih" else None
        planes = self._planes[:, : self.n_rows]
        if self.base is None:
            return exact_topk(planes, to_planes(codes, self.bits), k, live=self.live, max_distance=limit)
        if isinstance(self.base, MultiIndex):
            base = self.base.search(to_planes(codes, self.bits), k, s.radius, live=self.live)
        else:
            base = self.base.search(codes, k, max_distance=limit)
        if self.base_rows == self.n_rows:
            return base
        tail = exact_topk(planes, to_planes(codes, self.bits), k, live=self.live, max_distance=limit,
                          rows=(self.base_rows, self.n_rows))
        return merge_topk(np.concatenate([base[0], tail[0]], axis=1),
                          np.concatenate([base[1], tail[1]], axis=1), k)


def _place(track: Track, planes: np.ndarray, offsets: np.ndarray, live: np.ndarray, row: int,
           track_index: int, bits: int) -> int:
    """Copy one track's codes into rows ``row...``; return the next free row."""
    n = len(track.codes)
    if n:
        planes[:, row:row + n] = to_planes(track.codes, bits)
        offsets[row:row + n] = track.offsets
        live[row:row + n] = track_index
    return row + n

