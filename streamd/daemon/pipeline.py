"""The recognition pipeline without Kafka: protocol chunks in, play events out.

    chunks → FrontendBank (per-stream 29 s log-mel rings)
           → StreamingEncoder (the ready hops of every stream, batched over all of them)
           → catalog search (ONE batched call per round)
           → Tracker (temporal consistency + hysteresis) → play events

The daemon (:mod:`streamd.daemon.runner`) feeds it what it polls from Kafka; ``streamd recognize``
feeds it one file cut into chunks. Both get the same decisions for the same audio.

Times. Inside, a stream's times are epoch seconds of capture (the chunks' ``ts``), so they stay
valid across buffer resets, restarts and consumer handovers. Events report *stream time*: seconds
since the stream's epoch, the capture time of the first chunk streamd ever saw of it (kept with the
stream's state, :mod:`streamd.daemon.state`), plus wall-clock fields. The stream time of a hop is
the end of the window its code summarises, as for catalog offsets: after frame count ``e`` of the
stream's current buffer generation it is ``start_ts + e · hop_length / sample_rate``.

Warm-up and hand-over. A stream restored from its state document (:meth:`Pipeline.restore`)
resumes after the last hop its previous owner decided: the audio replayed up to there only advances
the front end and the encoder (no search, no decision), so the 29 s buffer and the encoder are full
when decisions resume, and that audio is never shed. The replay is cut into the same hops as
before (the document keeps a hop boundary, ``grid_ms``, and the first replayed chunk is trimmed to
it), so the restored stream computes the same codes and, with the tracker restored whole, decides
exactly what the previous owner would have.

Load shedding (docs/daemon.md). A hop whose end is more than ``shed_lag_s`` behind the wall clock
is *thinned*: every other such hop of a stream is encoded (the encoder must see every hop to stay
exact) but neither searched nor decided; the tracker tolerates missing hops. Chunks older than
``max_lag_s`` are dropped before the front end (the stream's buffer restarts at the next fresh
chunk). Both are counted in ``streamd_shed_total``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import torch

from streamd import events as event_docs
from streamd.config import Config, FrontendConfig
from streamd.daemon import state as stream_state
from streamd.decision import ENDED, STARTED, DecisionParams, Play, PlayEvent, Tracker
from streamd.frontend import FrontendBank
from streamd.metrics import Metrics, observe_many
from streamd.model.streaming import CATCH_UP_HOPS
from streamd.peaks import PeakChecker, PeakParams, extract, frame_at, frame_span
from streamd.protocol import Chunk

WAVE_S = 8.0  # audio per stream pushed before the ready hops are drained (ring holds 29 s)
MIN_SPLIT_ROWS = 64  # a batch is split (batch_split) only into parts of at least this many windows
PEAK_MARGIN_FRAMES = PeakParams().time_radius + 1  # frames read beyond a peak window: its edges' peaks are exact


class Searcher(Protocol):
    """What the pipeline needs of a catalog: a local replica, or a table in memory (tests, tools)."""

    catalog_name: str

    @property
    def version(self) -> int: ...

    def search(self, codes: np.ndarray, k: int | None = None) -> Any: ...

    def track_info(self, track_id: str) -> dict[str, str]: ...

    def codes_at(self, track_id: str, offsets: np.ndarray, tolerance_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Catalog codes by position (:meth:`streamd.store.table.CodeTable.codes_at`): the decision
        logic verifies its plays with them."""
        ...

    def peaks_of(self, track_id: str) -> np.ndarray | None:
        """The track's spectral peaks (streamd.peaks), None if the catalog holds none: the decision
        logic's peak check (docs/decision.md, "Peaks")."""
        ...


class TableSearcher:
    """A :class:`~streamd.store.table.CodeTable` in memory behind the :class:`Searcher` interface."""

    def __init__(self, table: Any, name: str = "memory", version: int = 1, top_k: int = 10):
        self.table, self.catalog_name, self._version, self.top_k = table, name, version, top_k

    @property
    def version(self) -> int:
        return self._version

    def search(self, codes: np.ndarray, k: int | None = None) -> Any:
        return self.table.search(codes, k or self.top_k)

    def track_info(self, track_id: str) -> dict[str, str]:
        return dict(self.table.track_meta.get(track_id, {}))

    def codes_at(self, track_id: str, offsets: np.ndarray, tolerance_s: float) -> tuple[np.ndarray, np.ndarray]:
        return self.table.codes_at(track_id, offsets, tolerance_s)

    def peaks_of(self, track_id: str) -> np.ndarray | None:
        return self.table.peaks_of(track_id)


@dataclasses.dataclass
class StreamInfo:
    """What the pipeline keeps per stream besides the front end, encoder slot and tracker state."""

    epoch_ms: float  # stream time 0 (capture time of the first chunk ever seen)
    slot: int
    generation: int = 0
    hops: int = 0  # hops encoded since the stream came to this pipeline
    resume_after_s: float = float("-inf")  # hops ending at or before this only warm up the encoder
    newest_ts_ms: float = 0.0  # capture end of the newest chunk pushed
    dirty: bool = True  # state changed since it was last saved
    restored: bool = False  # taken over from a state document (its resume point is the document's)
    grid_ms: float | None = None  # a hop boundary (capture ms) the front end's first audio must start on


@dataclasses.dataclass
class Decision:
    """A tracker decision with the event document built for it."""

    event: PlayEvent
    document: dict[str, Any]


@dataclasses.dataclass
class RoundStats:
    """What one round cost (for metrics and the benchmark)."""

    hops: int = 0
    decided: int = 0
    thinned: int = 0
    frontend_s: float = 0.0
    model_s: float = 0.0
    search_s: float = 0.0
    decision_s: float = 0.0


class Pipeline:
    """Front end + streaming encoder + search + tracker for many streams; see the module docstring.

    Not thread-safe: one caller feeds it. ``clock`` gives the wall time (epoch seconds) for lag
    and delay; ``metrics`` (optional) is fed as work happens.
    """

    def __init__(
        self,
        fingerprinter: Any,
        searcher: Searcher,
        params: DecisionParams,
        frontend: FrontendConfig | None = None,
        *,
        top_k: int = 10,
        max_batch: int = 256,
        initial_slots: int = 64,
        shed_lag_s: float = float("inf"),
        max_lag_s: float = float("inf"),
        id_quantum_s: float = 10.0,
        batch_split: int = 1,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.fp = fingerprinter
        self.searcher = searcher
        self.params = params
        self.batch_split = max(1, batch_split)
        self._split_pool = ThreadPoolExecutor(self.batch_split - 1, "streamd-split") if self.batch_split > 1 else None
        self.bank = FrontendBank(frontend, pool=self._split_pool, parts=self.batch_split)  # framing split like batches
        self.peaks = PeakChecker(self._stream_peaks, searcher.peaks_of, speed_tol=params.speed_tol)
        self.tracker = Tracker(params, catalog=searcher, peaks=self.peaks)
        self.top_k = top_k
        self.max_batch = max_batch
        self.shed_lag_s = shed_lag_s
        self.max_lag_s = max_lag_s
        self.id_quantum_s = id_quantum_s
        self.metrics = metrics
        self.clock = clock
        self.hop = fingerprinter.hop_frames
        mel = self.bank.params
        self.hop_ms = 1000.0 * mel.hop_length / mel.sample_rate  # one mel frame
        self.streams: dict[str, StreamInfo] = {}
        self.encoder = fingerprinter.streaming(initial_slots)
        self._free_slots = list(range(initial_slots - 1, -1, -1))
        self._counters = dict(self.bank.counters)
        self.last_round = RoundStats()
        self.delays: list[float] = []  # capture → decision delay of every decided hop (bench reads it)
        self.keep_delays = False

    # --- streams -----------------------------------------------------------------------------

    def _stream_peaks(self, stream_id: str, start_s: float, end_s: float) -> tuple[np.ndarray, float] | None:
        """(peaks, end frame): spectral peaks of the stream's frames between two stream times (the
        tracker's clock: capture epoch seconds of hop ends) on the frame axis of the stream's
        (re)start, and where ``end_s`` lies on it, as ``PeakChecker`` asks for them; None when those
        frames have left the ring."""
        if stream_id not in self.bank:
            return None
        state = self.bank.stream(stream_id)
        origin_s = state.start_ts_ms / 1000.0
        first, last = frame_span(start_s - origin_s, end_s - origin_s)
        first, last = max(0, first), min(last, state.ring.count - 1)
        lo = first - PEAK_MARGIN_FRAMES
        hi = min(last + PEAK_MARGIN_FRAMES, state.ring.count - 1)
        if last < first or lo < state.ring.count - self.bank.window_frames:
            return None
        frames = state.ring.read(lo, hi - lo + 1, np.empty((self.bank.params.n_mels, hi - lo + 1), np.float32))
        peaks = extract(frames, first_frame=lo)
        return peaks[(peaks[:, 0] >= first) & (peaks[:, 0] <= last)], frame_at(end_s - origin_s)

    def _slot(self) -> int:
        if not self._free_slots:
            self._grow(2 * self.encoder.max_streams)
        return self._free_slots.pop()

    def _grow(self, capacity: int) -> None:
        """Move every slot's encoder state into an encoder with ``capacity`` slots."""
        n = self.encoder.max_streams
        self.encoder = self.encoder.resized(capacity)
        self._free_slots = list(range(capacity - 1, n - 1, -1)) + self._free_slots

    def _info(self, chunk: Chunk) -> StreamInfo:
        info = self.streams.get(chunk.stream_id)
        if info is None:
            info = StreamInfo(epoch_ms=float(chunk.ts_ms), slot=self._slot())
            self.encoder.reset(info.slot)
            self.streams[chunk.stream_id] = info
        return info

    def resume_after(self, stream_id: str, until_s: float) -> None:
        """Hops of ``stream_id`` ending at or before ``until_s`` (epoch s) only warm up the encoder."""
        info = self.streams.get(stream_id)
        if info is not None:
            info.resume_after_s = max(info.resume_after_s, until_s)

    def restore(self, document: dict[str, Any]) -> None:
        """Take over a stream from its state document (:mod:`streamd.daemon.state`): its epoch, hop
        grid and tracker state; hops up to the last decided one only warm up the encoder."""
        sid = document["stream_id"]
        if sid in self.streams:
            return
        grid = document.get("grid_ms")
        info = StreamInfo(epoch_ms=float(document["epoch_ms"]), slot=self._slot(), dirty=False, restored=True,
                          grid_ms=None if grid is None else float(grid))  # fmt: skip
        self.encoder.reset(info.slot)
        last = stream_state.last_decided(document)
        if last is not None:
            info.resume_after_s = float(last)
        self.streams[sid] = info
        stream_state.restore_stream(self.tracker, document)

    def export(self, stream_id: str, outbox: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """The state document of a stream (with ``outbox``, its events not acknowledged yet), and
        mark it saved."""
        info = self.streams[stream_id]
        info.dirty = False
        grid = info.grid_ms
        if stream_id in self.bank:
            front = self.bank.stream(stream_id)
            grid = front.start_ts_ms + front.taken * self.hop_ms
        return stream_state.export_stream(self.tracker, stream_id, info.epoch_ms, grid, outbox)

    def forget(self, stream_ids: Iterable[str]) -> None:
        """Drop streams without ending their plays (they moved to another consumer, or shutdown)."""
        for sid in stream_ids:
            info = self.streams.pop(sid, None)
            if info is None:
                continue
            self.bank.remove(sid)
            self.tracker._streams.pop(sid, None)  # no events: the stream's next owner continues its plays
            self._free_slots.append(info.slot)
            if self.metrics is not None:
                self.metrics.forget_stream(sid)

    # --- feeding -----------------------------------------------------------------------------

    def push(self, chunks: Sequence[Chunk], warm: bool = False) -> None:
        """Give chunks (any streams, each stream's in order) to the front end; no model work.

        ``warm``: these chunks were already processed by an earlier owner of their streams; their
        hops only warm up the encoder (see :meth:`resume_after`), unless the stream was restored
        from a state document, which says exactly up to where its previous owner decided. Audio up
        to that point is never shed: it is a replay, not a backlog.
        """
        now_ms = self.clock() * 1000.0
        period_ms = self.hop * self.hop_ms
        fresh = []
        for chunk in chunks:
            end_ms = chunk.ts_ms + chunk.duration_s * 1000.0
            info = self.streams.get(chunk.stream_id)
            replay = warm or (info is not None and end_ms <= info.resume_after_s * 1000.0)
            if not replay and now_ms - end_ms > self.max_lag_s * 1000.0:
                if self.metrics is not None:
                    self.metrics.shed.labels("chunks").inc()
                continue
            info = info or self._info(chunk)
            if info.grid_ms is not None:
                if chunk.stream_id not in self.bank:
                    chunk = align_to_grid(chunk, info.grid_ms, period_ms)
                    if chunk is None:
                        continue
                info.grid_ms = None
            info.newest_ts_ms = max(info.newest_ts_ms, end_ms)
            if warm and not info.restored:
                info.resume_after_s = max(info.resume_after_s, end_ms / 1000.0)
            fresh.append(chunk)
        self.bank.push(fresh)
        self._count_frontend()

    def feed(self, chunks: Sequence[Chunk], warm: bool = False) -> list[Decision]:
        """Push ``chunks`` in waves of at most ``WAVE_S`` per stream, draining the ready hops after
        each wave, so that no stream's backlog outgrows its 29 s ring however much arrives at once."""
        decisions: list[Decision] = []
        for wave in _waves(chunks, WAVE_S):
            self.push(wave, warm)
            decisions += self.drain()
        return decisions

    def drain(self) -> list[Decision]:
        """Run rounds until no stream has a whole hop of new frames."""
        decisions: list[Decision] = []
        while True:
            ready = self.bank.ready(self.hop)
            if not ready:
                return decisions
            decisions += self.step(ready)

    # --- one round ---------------------------------------------------------------------------

    def step(self, ready: Sequence[str] | None = None) -> list[Decision]:
        """Encode, search and decide the ready hops of every stream in ``ready`` (default: all
        with a hop ready). A stream with a backlog (warm-up, a file, catching up) advances up to
        ``CATCH_UP_HOPS`` hops in one batched pass; streams with the same number of hops are
        batched together, at most ``max_batch`` windows at a time."""
        ready = list(self.bank.ready(self.hop) if ready is None else ready)
        stats = RoundStats()
        self.last_round = stats
        if not ready:
            return []
        m = self.metrics
        backlog = {sid: self.bank.new_frame_count(sid) // self.hop for sid in ready}
        if m is not None:
            m.backlog.set(sum(backlog.values()))
        by_hops: dict[int, list[str]] = {}
        for sid in ready:
            by_hops.setdefault(min(backlog[sid], CATCH_UP_HOPS), []).append(sid)
        now = self.clock()
        decisions: list[Decision] = []
        for k, ids in sorted(by_hops.items()):
            per_batch = max(1, self.max_batch // k)
            for lo in range(0, len(ids), per_batch):
                decisions += self._batch(ids[lo : lo + per_batch], k, now, stats)
        if m is not None:
            m.active_streams.set(len(self.streams))
            m.open_plays.set(self.tracker.n_open_plays)
        return decisions

    def _batch(self, ids: list[str], k: int, now: float, stats: RoundStats) -> list[Decision]:
        """``k`` hops of each stream in ``ids``. Rows are hop-major (all streams' first hop, then
        their second ...), so each stream's hops reach the tracker in time order."""
        m = self.metrics
        bank, streams = self.bank, self.streams
        t0 = time.perf_counter()
        for sid in ids:  # a buffer reset (long gap) restarts the stream's encoder from silence
            info = streams[sid]
            generation = bank.generation(sid)
            if generation != info.generation:
                info.generation = generation
                self.encoder.reset(info.slot)
        frames = bank.take_hop(ids, k * self.hop)
        slots = torch.tensor([streams[sid].slot for sid in ids], dtype=torch.long)
        last_hop_s = np.empty(len(ids))
        audio_start_s = np.empty(len(ids))
        fill = np.empty(len(ids))
        for b, sid in enumerate(ids):
            state = bank.stream(sid)
            audio_start_s[b] = state.start_ts_ms / 1000.0
            last_hop_s[b] = (state.start_ts_ms + state.taken * self.hop_ms) / 1000.0
            fill[b] = min(1.0, state.taken / bank.window_frames)
        hop_s = self.hop * self.hop_ms / 1000.0
        times = (last_hop_s[None, :] - hop_s * np.arange(k - 1, -1, -1)[:, None]).reshape(-1)  # (k·B,) hop-major
        row_ids = ids * k
        t1 = time.perf_counter()
        codes = self._advance(slots, torch.from_numpy(frames))  # (B, k, bytes)
        codes = np.ascontiguousarray(codes.transpose(1, 0, 2)).reshape(k * len(ids), -1)
        t2 = time.perf_counter()
        stats.frontend_s += t1 - t0
        stats.model_s += t2 - t1
        stats.hops += len(row_ids)

        # Which hops are decided: not warm-up, and not thinned away under load.
        decide = np.ones(len(row_ids), dtype=bool)
        for row, sid in enumerate(row_ids):
            info = streams[sid]
            info.hops += 1
            if times[row] <= info.resume_after_s:
                decide[row] = False
            elif now - times[row] > self.shed_lag_s and info.hops % 2:
                decide[row] = False
                stats.thinned += 1
        if m is not None:
            m.hops.inc(len(row_ids))
            m.batch_size.observe(len(row_ids))
            m.inference_seconds.observe(t2 - t1)
            observe_many(m.buffer_fill, fill)
            if stats.thinned:
                m.shed.labels("hops").inc(stats.thinned)
        rows = np.flatnonzero(decide)
        if rows.size == 0:
            return []
        hits = self.searcher.search(codes[rows], self.top_k)
        t3 = time.perf_counter()
        chosen = [row_ids[r] for r in rows]
        found = self.tracker.update(chosen, times[rows], hits.track_ids, hits.offsets, hits.distances,
                                    np.tile(audio_start_s, k)[rows], codes[rows])
        decided_at = self.clock()
        for sid in set(chosen):
            streams[sid].dirty = True
        decisions = [Decision(e, self.document(e, decided_at)) for e in found]
        t4 = time.perf_counter()
        stats.search_s += t3 - t2
        stats.decision_s += t4 - t3
        stats.decided += len(rows)
        delays = decided_at - times[rows]  # capture of the hop's newest audio → decision
        if self.keep_delays:
            self.delays.extend(delays.tolist())
        if m is not None:
            m.lookup_seconds.observe(t3 - t2)
            observe_many(m.decision_delay, delays)
            for d in decisions:
                m.play_event(d.event.type, d.event.play.stream_id, d.event.play.confidence)
        return decisions

    def _advance(self, slots: torch.Tensor, frames: torch.Tensor) -> np.ndarray:
        """The encoder's step for ``slots``; with ``batch_split`` > 1 the batch is cut into that
        many parts run at once on their own threads (torch releases the GIL; the parts touch
        disjoint slots). Unlike intra-op threads, the parts meet once per batch, not at every
        operation, so a core taken by another process delays one part instead of every layer.
        Parts are cut by stream but sized by rows (windows): a catch-up batch of few streams with
        many hops each is split too, or a daemon that fell behind would encode on one core only."""
        rows = len(slots) * (frames.shape[-1] // self.hop)
        parts = min(self.batch_split, rows // MIN_SPLIT_ROWS, len(slots))
        if parts <= 1 or self._split_pool is None:
            return self.encoder.advance_hops(slots, frames)
        bounds = np.linspace(0, len(slots), parts + 1).astype(int)
        futures = [self._split_pool.submit(self.encoder.advance_hops, slots[a:b], frames[a:b])
                   for a, b in zip(bounds[1:-1], bounds[2:], strict=True)]  # fmt: skip
        first = self.encoder.advance_hops(slots[: bounds[1]], frames[: bounds[1]])
        return np.concatenate([first, *(f.result() for f in futures)])

    def close(self) -> None:
        """Stop the threads of ``batch_split``."""
        if self._split_pool is not None:
            self._split_pool.shutdown()
            self._split_pool = None

    # --- events ------------------------------------------------------------------------------

    def document(self, event: PlayEvent, decided_at_s: float | None = None) -> dict[str, Any]:
        """The event document of a decision: stream times relative to the stream's epoch."""
        play = event.play
        info = self.streams.get(play.stream_id)
        epoch_ms = info.epoch_ms if info is not None else 0.0
        shifted = shift_play(play, -epoch_ms / 1000.0)
        return event_docs.build_event(
            PlayEvent(event.type, shifted),
            stream_epoch_ms=epoch_ms,
            model_version=self.fp.version,
            catalog_name=self.searcher.catalog_name,
            catalog_version=self.searcher.version,
            track=self.searcher.track_info(str(play.track_id)),
            detected_at_ms=None if decided_at_s is None else int(decided_at_s * 1000),
            id_quantum_s=self.id_quantum_s,
        )

    def end_all(self) -> list[Decision]:
        """End every open play (end of input for ``recognize``; a daemon hands plays over instead)."""
        now = self.clock()
        return [Decision(e, self.document(e, now)) for e in self.tracker.flush_all()]

    # --- counters ----------------------------------------------------------------------------

    def _count_frontend(self) -> None:
        counters, last = self.bank.counters, self._counters
        m = self.metrics
        if m is not None:
            for name, value in counters.items():
                delta = value - last.get(name, 0)
                if delta <= 0:
                    continue
                if name == "invalid":
                    m.chunk_errors.labels("invalid").inc(delta)
                elif name in ("duplicate", "late", "seq_gap", "ts_jump", "ts_backward", "seq_restart", "gap_reset"):
                    m.discontinuity(name, delta)
                elif name == "frames_skipped":
                    m.shed.labels("hops").inc(delta // self.hop)
                elif name == "gap_filled_ms":
                    m.gap_fill.inc(delta / 1000.0)
        self._counters = dict(counters)


def shift_play(play: Play, by_s: float) -> Play:
    """``play`` with every time moved by ``by_s`` seconds (epoch seconds → stream time)."""
    return dataclasses.replace(
        play,
        start_s=play.start_s + by_s,
        end_s=None if play.end_s is None else play.end_s + by_s,
        origin_s=play.origin_s + by_s,
        first_hit_s=play.first_hit_s + by_s,
        last_hit_s=play.last_hit_s + by_s,
        detected_s=play.detected_s + by_s,
    )


def align_to_grid(chunk: Chunk, grid_ms: float, period_ms: float) -> Chunk | None:
    """``chunk`` without the samples before the first hop boundary in it (boundaries lie at
    ``grid_ms + k · period_ms``); None when the whole chunk lies before the next boundary.

    The cut is sample-exact at rates with a whole number of samples per millisecond; the frames
    after it are exactly the earlier ones at 12 kHz (other rates go through a resampler that
    starts afresh, so they differ slightly)."""
    rate = chunk.sample_rate
    period = round(period_ms * rate / 1000.0)
    drop = round((grid_ms - chunk.ts_ms) * rate / 1000.0) % period
    if drop == 0:
        return chunk
    if drop >= chunk.n_frames:
        return None
    return dataclasses.replace(chunk, samples=chunk.samples[drop:], ts_ms=chunk.ts_ms + round(drop * 1000 / rate))


def _waves(chunks: Sequence[Chunk], wave_s: float) -> list[list[Chunk]]:
    """Split chunks into consecutive groups holding at most ``wave_s`` of audio of any one stream."""
    waves: list[list[Chunk]] = [[]]
    seconds: dict[str, float] = defaultdict(float)
    for chunk in chunks:
        if seconds[chunk.stream_id] + chunk.duration_s > wave_s and seconds[chunk.stream_id] > 0:
            waves.append([])
            seconds.clear()
        seconds[chunk.stream_id] += chunk.duration_s
        waves[-1].append(chunk)
    return [w for w in waves if w]


def pipeline_from_config(config: Config, fingerprinter: Any, searcher: Searcher, **overrides: Any) -> Pipeline:
    """A :class:`Pipeline` with the thresholds, batch size and shedding limits of ``config``."""
    d = config.daemon
    options: dict[str, Any] = dict(
        top_k=config.store.top_k,
        max_batch=config.model.max_batch,
        shed_lag_s=d.shed_lag_s,
        max_lag_s=d.max_lag_s,
        id_quantum_s=d.event_id_quantum_s,
        batch_split=config.model.batch_split,
    )
    options.update(overrides)
    # The thresholds are fractions of K: K is that of the codes this fingerprinter makes.
    params = dataclasses.replace(DecisionParams.from_config(config), code_bits=fingerprinter.bits)
    return Pipeline(fingerprinter, searcher, params, config.frontend, **options)


__all__ = ["ENDED", "STARTED", "Decision", "Pipeline", "Searcher", "TableSearcher", "pipeline_from_config"]
