"""The streaming front end: protocol chunks of thousands of streams in, rolling log-mel windows out.

``FrontendBank.push(chunks)`` takes chunks of many streams at once. Per chunk (a lean Python
step): decide where it belongs in its stream (:mod:`.continuity`), downmix, resample to 12 kHz
with the stream's own ``soxr.ResampleStream`` and copy the result, behind the stream's
not-yet-framed samples, into the bank's *signal* buffer, where the audio of many streams lies end
to end. When the buffer is full, and at the end of the push, every frame that became complete is
computed in one batched pass over the buffer (:mod:`.framer`) and appended to its stream's ring
(:mod:`.ring`). Each stream keeps fewer than ``n_fft`` not-yet-framed samples between calls, so
its frames are exactly those of ``offline_logmel`` over its whole 12 kHz signal, however the
signal was cut into chunks.

Policy for gaps and disorder, and the counters: docs/frontend.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Executor

import numpy as np

from streamd.config import FrontendConfig
from streamd.frontend import continuity
from streamd.frontend.audio import chunk_problem, downmix, flush, make_resampler
from streamd.frontend.continuity import ChunkOrder
from streamd.frontend.framer import DEFAULT_BLOCK_FRAMES, MIN_MATMUL_ROWS, LogmelFramer
from streamd.frontend.ring import LOG_SILENCE, MelRing
from streamd.melspec import MelParams
from streamd.protocol import Chunk

COUNTER_NAMES = (
    "stream_start",
    continuity.IN_ORDER,
    continuity.DUPLICATE,
    continuity.LATE,
    continuity.SEQ_GAP,
    continuity.TS_JUMP,
    continuity.TS_BACKWARD,
    continuity.SEQ_RESTART,
    "gap_filled",
    "gap_reset",
    "rate_change",
    "channels_change",
    "format_change",
    "empty",
    "invalid",
    "frames_skipped",
    "gap_filled_ms",
)
_DROP_EVENTS = frozenset((continuity.DUPLICATE, continuity.LATE))
_INTEGER_FORMATS = frozenset(("s16le",))  # formats whose decoded samples cannot be NaN or inf
MONO_SCRATCH_SAMPLES = 1 << 18  # the downmix of a longer chunk gets a fresh array
SIGNAL_BLOCKS = 8  # the signal buffer holds this many blocks of frames: framed in one go


class StreamState:
    """Everything the front end keeps for one stream; its size does not grow with stream length."""

    __slots__ = (
        "stream_id",
        "order",
        "sample_rate",
        "channels",
        "fmt",
        "resampler",
        "tail",
        "tail_len",
        "span_start",
        "span_len",
        "ring",
        "taken",
        "generation",
        "start_ts_ms",
    )

    def __init__(self, stream_id: str, chunk: Chunk, ring: MelRing, n_fft: int, jitter_ms: float):
        self.stream_id = stream_id
        self.order = ChunkOrder(chunk.seq, chunk.ts_ms, jitter_ms)
        self.sample_rate = chunk.sample_rate
        self.channels = chunk.channels
        self.fmt = chunk.fmt
        self.resampler = None
        self.tail = np.zeros(n_fft, dtype=np.float32)  # 12 kHz samples not yet in a complete frame
        self.tail_len = 0
        # where the stream's unframed audio (tail, then new samples) lies in the bank's signal
        # buffer during a push; span_start is -1 while it has none
        self.span_start = -1
        self.span_len = 0
        self.ring = ring
        self.taken = 0  # ring.count when frames were last taken
        self.generation = 0  # +1 at each reset
        self.start_ts_ms = float(chunk.ts_ms)  # capture time of 12 kHz sample 0 of this generation

    @property
    def nbytes(self) -> int:
        """Bytes of the stream's arrays (ring and sample tail); soxr's C state is extra, fixed."""
        return self.ring.nbytes + self.tail.nbytes


class FrontendBank:
    """Per-stream log-mel rings for many streams, updated by batched pushes of protocol chunks.

    Frames are counted per stream from its (re)start: frame ``k`` covers 12 kHz samples
    ``[k*hop, k*hop + n_fft)`` after ``start_ts_ms``. The ring keeps the newest
    ``window_frames``; older frames are gone.

    ``block_frames`` frames are computed per batched step (cache-sized); ``threads`` is the torch
    thread count for that step; with a ``pool``, large framings are cut into up to ``parts``
    parts computed at once (see :class:`~streamd.frontend.framer.LogmelFramer`).
    """

    def __init__(
        self,
        config: FrontendConfig | None = None,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        threads: int | None = 1,
        pool: Executor | None = None,
        parts: int = 1,
    ):
        config = config or FrontendConfig()
        self.config = config
        self.params = MelParams(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_max=config.sample_rate / 2,
        )
        self.window_frames = config.window_frames
        self.pad_frames = config.pad_frames
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._streams: dict[str, StreamState] = {}
        hop = self.params.hop_length
        signal_frames = SIGNAL_BLOCKS * max(block_frames, MIN_MATMUL_ROWS)  # at most, per framing
        self._framer = LogmelFramer(self.params, block_frames, threads, out_frames=signal_frames, pool=pool, parts=parts)
        # New audio of many streams laid end to end, each stream's behind its unframed tail: one
        # copy per chunk, made while the resampler's output is still in cache, and the
        # resampler's array is freed at once (so the heap does not grow and shrink with every
        # push). Fixed size: framed and emptied whenever the next piece does not fit.
        self._signal = np.zeros(signal_frames * hop, dtype=np.float32)
        self._fill = 0
        self._spans: list[StreamState] = []  # streams with a span in the signal, in signal order
        self._new_frames = 0  # frames computed during the current push
        self._mono = np.zeros(MONO_SCRATCH_SAMPLES, dtype=np.float32)  # downmix of a resampled chunk
        self._jitter_ms = config.max_ts_jitter_s * 1000.0

    # --- feeding --------------------------------------------------------------------------------

    def push(self, chunks: Iterable[Chunk]) -> int:
        """Take chunks of any streams (each stream's in arrival order); return the new frame count.

        Every frame the chunks complete is in its stream's ring when this returns.
        """
        self._new_frames = 0
        streams = self._streams
        counters = self.counters
        for chunk in chunks:
            problem = chunk_problem(chunk.samples, chunk.channels, chunk.sample_rate)
            if problem is not None:
                counters["invalid"] += 1
                continue
            samples = chunk.samples
            n = samples.shape[0]
            if samples.shape[1] > 1 and chunk.sample_rate != self.params.sample_rate and n <= len(self._mono):
                mono = downmix(samples, self._mono[:n])  # soxr copies it: scratch will do
            else:
                mono = downmix(samples)
            if chunk.fmt not in _INTEGER_FORMATS and not np.isfinite(mono).all():
                counters["invalid"] += 1
                continue
            state = streams.get(chunk.stream_id)
            if state is None:
                state = self._start_stream(chunk)
            else:
                event, gap_s = state.order.classify(chunk.seq, chunk.ts_ms)
                counters[event] += 1
                if event is not continuity.IN_ORDER:
                    if event in _DROP_EVENTS:
                        continue
                    if gap_s > 0.0:
                        self._bridge_gap(state, gap_s, chunk)
                if (
                    chunk.sample_rate != state.sample_rate
                    or chunk.channels != state.channels
                    or chunk.fmt != state.fmt
                ):
                    self._follow_format(state, chunk)
            if n == 0:
                counters["empty"] += 1
            else:
                self._append(state, mono if state.resampler is None else state.resampler.resample_chunk(mono))
            state.order.advance(chunk.seq, chunk.ts_ms, n * 1000.0 / chunk.sample_rate)
        self._frame_signal()
        return self._new_frames

    def _start_stream(self, chunk: Chunk) -> StreamState:
        self.counters["stream_start"] += 1
        ring = MelRing(self.params.n_mels, self.window_frames)
        state = StreamState(chunk.stream_id, chunk, ring, self.params.n_fft, self._jitter_ms)
        state.resampler = make_resampler(
            chunk.sample_rate, self.params.sample_rate, self.config.resample_quality
        )
        self._streams[chunk.stream_id] = state
        return state

    def _bridge_gap(self, state: StreamState, gap_s: float, chunk: Chunk) -> None:
        """Fill a short gap with silence at the stream's current rate; restart after a long one."""
        if gap_s <= self.config.max_gap_fill_s:
            self.counters["gap_filled"] += 1
            self.counters["gap_filled_ms"] += round(gap_s * 1000.0)
            silence = np.zeros(round(gap_s * state.sample_rate), dtype=np.float32)
            self._append(
                state, silence if state.resampler is None else state.resampler.resample_chunk(silence)
            )
            return
        self.counters["gap_reset"] += 1
        self._reset(state, chunk.ts_ms)

    def _follow_format(self, state: StreamState, chunk: Chunk) -> None:
        """Count format changes; a new sample rate flushes the old resampler and starts a new one."""
        if chunk.sample_rate != state.sample_rate:
            self.counters["rate_change"] += 1
            self._append(state, flush(state.resampler))
            state.sample_rate = chunk.sample_rate
            state.resampler = make_resampler(
                chunk.sample_rate, self.params.sample_rate, self.config.resample_quality
            )
        if chunk.channels != state.channels:
            self.counters["channels_change"] += 1
            state.channels = chunk.channels
        if chunk.fmt != state.fmt:
            self.counters["format_change"] += 1
            state.fmt = chunk.fmt

    def _reset(self, state: StreamState, ts_ms: float) -> None:
        """Forget the stream's audio and frames; it starts again at ``ts_ms`` as a new generation."""
        if state.span_start >= 0:  # its audio in the signal is dropped (the space stays unused)
            self._spans.remove(state)
            state.span_start = -1
            state.span_len = 0
        state.tail_len = 0
        state.ring.reset()
        state.taken = 0
        state.generation += 1
        state.start_ts_ms = float(ts_ms)
        if state.resampler is not None:
            state.resampler.clear()

    # --- batched framing ------------------------------------------------------------------------

    def _append(self, state: StreamState, audio: np.ndarray) -> None:
        """Copy a stream's new 12 kHz audio into the signal buffer, behind its unframed samples."""
        n = audio.shape[0]
        if n == 0:
            return
        signal = self._signal
        fill = self._fill
        start = state.span_start
        if start < 0:  # the stream's first audio since the buffer was framed: tail, then audio
            tail_len = state.tail_len
            if fill + tail_len + n <= signal.shape[0]:
                signal[fill : fill + tail_len] = state.tail[:tail_len]
                signal[fill + tail_len : fill + tail_len + n] = audio
                state.span_start = fill
                state.span_len = tail_len + n
                self._spans.append(state)
                self._fill = fill + tail_len + n
                return
        elif start + state.span_len == fill:  # its span is the last one: extend it
            if fill + n <= signal.shape[0]:
                signal[fill : fill + n] = audio
                state.span_len += n
                self._fill = fill + n
                return
        elif fill + state.span_len + n <= signal.shape[0]:  # other spans follow: move it to the end
            length = state.span_len
            signal[fill : fill + length] = signal[start : start + length]
            signal[fill + length : fill + length + n] = audio
            state.span_start = fill
            state.span_len = length + n
            self._spans.remove(state)
            self._spans.append(state)
            self._fill = fill + length + n
            return
        self._frame_signal()  # full: frame what it holds (this stream's span too), then retry
        if state.tail_len + n <= signal.shape[0]:
            self._append(state, audio)
        else:  # more audio than the whole buffer (a chunk of minutes): framed on its own
            alone = np.concatenate([state.tail[: state.tail_len], audio])
            self._frame_spans(alone, [state], [0], [alone.shape[0]])

    def _frame_signal(self) -> None:
        """Frame the spans of every stream in the signal buffer and empty it."""
        spans = self._spans
        if spans:
            starts = [state.span_start for state in spans]
            lengths = [state.span_len for state in spans]
            self._frame_spans(self._signal[: self._fill], spans, starts, lengths)
        self._spans = []
        self._fill = 0

    def _frame_spans(
        self, signal: np.ndarray, states: list[StreamState], starts: list[int], lengths: list[int]
    ) -> None:
        """Append to each stream's ring the complete frames of its unframed audio
        ``signal[start : start + length]``; what follows its last frame becomes its tail."""
        hop = self.params.hop_length
        n_frames_in = self.params.n_frames
        counts = [n_frames_in(length) for length in lengths]
        n_frames = sum(counts)
        counts_arr = np.asarray(counts, dtype=np.int64)
        # frame j of stream i starts at starts[i] + hop * j; numbered over all the frames, that
        # is starts[i] - hop * (frames before stream i) + hop * (frame number)
        firsts = np.cumsum(counts_arr) - counts_arr
        frame_starts = np.repeat(np.asarray(starts, dtype=np.int64) - hop * firsts, counts_arr)
        frame_starts += hop * np.arange(n_frames, dtype=np.int64)
        mel = self._framer.compute(signal, frame_starts)
        row = 0
        for state, start, length, n in zip(states, starts, lengths, counts, strict=True):
            if n:
                state.ring.write(mel[row : row + n])
                row += n
            rest = length - n * hop
            end = start + length
            state.tail[:rest] = signal[end - rest : end]
            state.tail_len = rest
            state.span_start = -1
            state.span_len = 0
        self._new_frames += n_frames

    # --- reading --------------------------------------------------------------------------------

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._streams

    def __len__(self) -> int:
        return len(self._streams)

    def stream_ids(self) -> list[str]:
        return list(self._streams)

    def stream(self, stream_id: str) -> StreamState:
        """The stream's state (read it, do not change it); KeyError for an unknown stream."""
        return self._streams[stream_id]

    def frame_count(self, stream_id: str) -> int:
        """Frames the stream has produced since its (re)start; the newest is number count - 1."""
        return self._streams[stream_id].ring.count

    def generation(self, stream_id: str) -> int:
        """How often the stream was reset (its frames then restart from 0)."""
        return self._streams[stream_id].generation

    def frame_end_ms(self, stream_id: str, frame: int) -> float:
        """Capture time (epoch ms) just after the last sample of frame number ``frame``."""
        state = self._streams[stream_id]
        end_sample = frame * self.params.hop_length + self.params.n_fft
        return state.start_ts_ms + end_sample * 1000.0 / self.params.sample_rate

    def new_frame_count(self, stream_id: str) -> int:
        """Frames produced since the stream's frames were last taken (may exceed the ring)."""
        state = self._streams[stream_id]
        return state.ring.count - state.taken

    def ready(self, min_new_frames: int) -> list[str]:
        """Streams with at least ``min_new_frames`` frames not taken yet, e.g. a model hop."""
        return [sid for sid, s in self._streams.items() if s.ring.count - s.taken >= min_new_frames]

    def take_new_frames(self, stream_ids: Sequence[str]) -> list[np.ndarray]:
        """Per stream, the (n_mels, n) frames produced since the last take, and mark them taken.

        At most ``window_frames`` come back; frames a consumer let fall out of the ring are
        counted in ``counters["frames_skipped"]``.
        """
        taken = []
        for sid in stream_ids:
            state = self._streams[sid]
            count = state.ring.count
            n = min(count - state.taken, self.window_frames)
            self.counters["frames_skipped"] += count - state.taken - n
            taken.append(state.ring.read_last(n, np.empty((self.params.n_mels, n), dtype=np.float32)))
            state.taken = count
        return taken

    def take_hop(self, stream_ids: Sequence[str], n: int, out: np.ndarray | None = None) -> np.ndarray:
        """(B, n_mels, n): each stream's oldest ``n`` frames not taken yet; mark them taken.

        This is what an incremental model consumes: hops stay aligned to the stream's frame
        numbers (the k-th hop is frames ``k*n .. k*n + n - 1`` since the (re)start). A consumer
        that fell more than the ring behind skips whole hops (counted in
        ``counters["frames_skipped"]``). Every stream needs ``n`` untaken frames (``ready(n)``),
        else ValueError.
        """
        if out is None:
            out = np.empty((len(stream_ids), self.params.n_mels, n), dtype=np.float32)
        for row, sid in enumerate(stream_ids):
            state = self._streams[sid]
            lag = state.ring.count - state.taken
            if lag < n:
                raise ValueError(f"stream {sid!r} has {lag} untaken frames, fewer than {n}")
            if lag > self.window_frames:
                skipped = -(-(lag - self.window_frames) // n) * n
                self.counters["frames_skipped"] += skipped
                state.taken += skipped
            state.ring.read(state.taken, n, out[row])
            state.taken += n
        return out

    def last_frames(self, stream_ids: Sequence[str], n: int, out: np.ndarray | None = None) -> np.ndarray:
        """(B, n_mels, n): the newest ``n`` frames of each stream, oldest first.

        Frames before a stream's (re)start read as silence (``LOG_SILENCE``); use
        ``frame_count`` to know how many are real.
        """
        if out is None:
            out = np.empty((len(stream_ids), self.params.n_mels, n), dtype=np.float32)
        for row, sid in enumerate(stream_ids):
            self._streams[sid].ring.read_last(n, out[row])
        return out

    def windows(
        self,
        stream_ids: Sequence[str],
        pad_frames: int | None = None,
        pad_value: float = LOG_SILENCE,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """(B, n_mels, window_frames + pad_frames): each stream's newest window, padded.

        The padding (default ``config.pad_frames``; the paper reads 1366 frames as 1400) is
        split over both ends, ``pad_frames // 2`` before the oldest frame and the rest after the
        newest, filled with ``pad_value`` (default: the log-mel value of silence).
        """
        pad = self.pad_frames if pad_frames is None else pad_frames
        before = pad // 2
        width = self.window_frames + pad
        if out is None:
            out = np.empty((len(stream_ids), self.params.n_mels, width), dtype=np.float32)
        if pad:
            out[:, :, :before] = pad_value
            out[:, :, before + self.window_frames :] = pad_value
        for row, sid in enumerate(stream_ids):
            self._streams[sid].ring.read_last(
                self.window_frames, out[row, :, before : before + self.window_frames]
            )
        return out

    def window(
        self, stream_id: str, pad_frames: int | None = None, pad_value: float = LOG_SILENCE
    ) -> np.ndarray:
        """(n_mels, window_frames + pad_frames): one stream's newest window; see ``windows``."""
        return self.windows([stream_id], pad_frames, pad_value)[0]

    def remove(self, stream_id: str) -> None:
        """Forget a stream (e.g. idle for long); a later chunk starts it afresh."""
        self._streams.pop(stream_id, None)
