"""Ingest: turn audio into protocol chunks and produce them to Kafka.

Three layers, usable on their own (the CLI, the demo and the daemon tests use them for one or
many streams):

- :func:`stream_chunks` cuts audio (an array, or an iterable of blocks from
  :func:`streamd.audio.open_audio`) into chunk records of ``chunk_ms`` with per-stream ``seq`` and
  capture time ``ts`` = start time + audio duration before the chunk;
- :func:`merge_by_time` interleaves the records of several streams in capture-time order;
- :func:`produce` sends records through a :class:`~streamd.kafka_io.BoundedProducer`, optionally
  paced by the wall clock (a chunk is sent once it has been "captured": at ``ts`` + its duration),
  and stops cleanly when asked.

:func:`ingest_source` ties them together for ``streamd ingest``.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamd import protocol
from streamd.audio import open_audio, reblock
from streamd.config import Config
from streamd.kafka_io import BoundedProducer, ensure_topics
from streamd.protocol import Record


def now_ms() -> int:
    return int(time.time() * 1000)


def chunk_frames(sample_rate: int, chunk_ms: float) -> int:
    frames = int(round(sample_rate * chunk_ms / 1000))
    if frames <= 0:
        raise ValueError(f"chunk of {chunk_ms} ms at {sample_rate} Hz has no samples")
    return frames


def stream_chunks(
    audio: np.ndarray | Iterable[np.ndarray],
    sample_rate: int,
    stream_id: str,
    chunk_ms: float = 500,
    fmt: str = "s16le",
    start_ts_ms: int | None = None,
    start_seq: int = 0,
) -> Iterator[Record]:
    """Protocol records for ``stream_id``: chunks of ``chunk_ms`` (the last may be shorter).

    ``audio`` is float32 ``(n,)`` / ``(n, channels)``, or an iterable of such blocks of any length.
    ``ts`` of chunk k is ``start_ts_ms`` (default: now) plus the duration of the audio before it,
    computed from the frame count so it never drifts.
    """
    frames = chunk_frames(sample_rate, chunk_ms)
    start = now_ms() if start_ts_ms is None else start_ts_ms
    blocks = [audio] if isinstance(audio, np.ndarray) else audio
    offset = 0
    for seq, block in enumerate(reblock(blocks, frames), start=start_seq):
        ts = start + (offset * 1000) // sample_rate
        yield protocol.encode(stream_id, block, sample_rate, seq, ts, fmt)
        offset += block.shape[0]


def merge_by_time(*streams: Iterable[Record]) -> Iterator[Record]:
    """Records of several streams, interleaved in capture-time order (lazily)."""
    return heapq.merge(*streams, key=lambda record: record.timestamp_ms)


def record_duration_ms(record: Record) -> float:
    headers = dict(record.headers)
    frames = len(record.value) // protocol.frame_bytes(headers["fmt"].decode(), int(headers["ch"]))
    return frames * 1000 / int(headers["sr"])


@dataclass
class IngestStats:
    """What :func:`produce` sent."""

    records: int = 0
    bytes: int = 0
    audio_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    last_seq: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def speed(self) -> float:
        """Audio seconds sent per wall-clock second."""
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


def produce(
    records: Iterable[Record],
    producer: BoundedProducer,
    topic: str,
    realtime: bool = False,
    stop: threading.Event | None = None,
    on_record: Callable[[Record, IngestStats], None] | None = None,
) -> IngestStats:
    """Send ``records`` to ``topic`` and wait until all are acknowledged.

    ``realtime`` sends each chunk only once it is complete in wall-clock terms (``ts`` + duration),
    like a live capture. Setting ``stop`` ends the run after the current record; what was sent is
    still flushed. The Kafka record timestamp is the capture time but never later than now
    (brokers reject timestamps more than an hour ahead, which ``--fast`` ingest of long audio hits).
    """
    stop = stop or threading.Event()
    stats = IngestStats()
    for record in records:
        if stop.is_set():
            stats.stopped_early = True
            break
        duration_ms = record_duration_ms(record)
        if realtime:
            wait_s = (record.timestamp_ms + duration_ms - now_ms()) / 1000
            if wait_s > 0 and stop.wait(wait_s):
                stats.stopped_early = True
                break
        producer.send(
            topic, value=record.value, key=record.key, headers=record.headers,
            timestamp_ms=min(record.timestamp_ms, now_ms()),
        )  # fmt: skip
        stats.records += 1
        stats.bytes += len(record.value)
        stats.audio_s += duration_ms / 1000
        stats.last_seq[record.key.decode()] = int(dict(record.headers)["seq"])
        if on_record is not None:
            on_record(record, stats)
    producer.flush()
    return stats


@dataclass(frozen=True)
class SourceInfo:
    source: str
    codec: str
    source_rate: int
    sample_rate: int
    channels: int
    duration_s: float | None


def _looped_blocks(
    source: str | Path, sample_rate: int | None, mono: bool, loop: bool, opened: Callable[[SourceInfo], None]
) -> Iterator[np.ndarray]:
    """Decoded blocks of ``source``, from the start again at its end when ``loop``."""
    first = True
    while True:
        with open_audio(source, sample_rate, mono=mono) as audio:
            if first:
                opened(SourceInfo(str(source), audio.codec, audio.source_rate, audio.sample_rate, audio.channels,
                                  audio.duration_s))  # fmt: skip
                first = False
            produced = False
            for block in audio:
                produced = True
                yield block
        if not loop or not produced:
            return


def ingest_source(
    config: Config,
    source: str | Path,
    stream_id: str,
    topic: str | None = None,
    realtime: bool = False,
    chunk_ms: float = 500,
    sample_rate: int | None = None,
    fmt: str = "s16le",
    mono: bool = False,
    loop: bool = False,
    stop: threading.Event | None = None,
    on_open: Callable[[SourceInfo], None] | None = None,
    on_record: Callable[[Record, IngestStats], None] | None = None,
) -> IngestStats:
    """Decode ``source`` (file or URL) and produce it to Kafka as chunks of ``stream_id``.

    The topic (default ``kafka.audio_topic``) is created with ``kafka.audio_partitions`` partitions
    when missing. Raises :class:`~streamd.errors.AudioDecodeError` when the source cannot be read
    (after flushing what was already produced).
    """
    if fmt not in protocol.FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(protocol.FORMATS)}")
    topic = topic or config.kafka.audio_topic
    info: dict[str, SourceInfo] = {}

    def opened(found: SourceInfo) -> None:
        info["source"] = found
        if on_open is not None:
            on_open(found)

    blocks = _looped_blocks(source, sample_rate, mono, loop, opened)
    first = next(blocks, None)  # opens the source: decode errors surface before Kafka is touched
    if first is None:
        from streamd.errors import AudioDecodeError

        raise AudioDecodeError(f"cannot decode {source}: no audio samples in it")
    ensure_topics(config, {topic: config.kafka.audio_partitions})

    def all_blocks() -> Iterator[np.ndarray]:
        yield first
        yield from blocks

    records = stream_chunks(all_blocks(), info["source"].sample_rate, stream_id, chunk_ms, fmt)
    with BoundedProducer(config) as producer:
        return produce(records, producer, topic, realtime=realtime, stop=stop, on_record=on_record)
