"""``streamd recognize``: the daemon's pipeline over one file or radio URL, without Kafka.

The source is decoded block by block (:func:`streamd.audio.open_audio`, 12 kHz mono), cut into
protocol chunks of ``chunk_ms`` exactly as ``streamd ingest`` cuts them (capture time 0 = the
first sample, so stream time = seconds into the source) and fed through the same
:class:`~streamd.daemon.pipeline.Pipeline` as the daemon. A play is reported when it ends (or at
the end of the source), so a live URL prints plays as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamd import protocol
from streamd.audio import open_audio
from streamd.config import Config
from streamd.daemon.pipeline import ENDED, Decision, Pipeline, Searcher, pipeline_from_config
from streamd.ingest import stream_chunks

FEED_CHUNKS = 32  # chunks per feed call (16 s at 500 ms)


def play_line(document: dict[str, Any]) -> dict[str, Any]:
    """The one-line form of an ``ended`` event: track, boundaries, offset, confidence."""
    return {
        "track_id": document["track_id"],
        "start_s": document["start_s"],
        "end_s": document["end_s"],
        "offset_s": document["track_offset_s"],
        "confidence": document["confidence"],
    }


def chunks_of(source: str | Path, stream_id: str, chunk_ms: float = 500.0) -> Iterator[protocol.Chunk]:
    """Decoded protocol chunks of ``source`` (12 kHz mono f32le; ``ts`` 0 = first sample)."""
    with open_audio(source, 12000, mono=True) as audio:
        for record in stream_chunks(iter(audio), 12000, stream_id, chunk_ms, fmt="f32le", start_ts_ms=0):
            yield protocol.decode(record.key, record.value, record.headers)


def recognize_chunks(
    pipeline: Pipeline, chunks: Iterator[protocol.Chunk], on_play: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Feed ``chunks`` through ``pipeline``; return (and pass to ``on_play``) one line per play."""
    lines: list[dict[str, Any]] = []

    def take(decisions: list[Decision]) -> None:
        for d in decisions:
            if d.event.type == ENDED:
                line = play_line(d.document)
                line["stream_id"] = d.document["stream_id"]
                lines.append(line)
                if on_play is not None:
                    on_play(line)

    batch: list[protocol.Chunk] = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) >= FEED_CHUNKS:
            take(pipeline.feed(batch))
            batch = []
    if batch:
        take(pipeline.feed(batch))
    take(pipeline.end_all())
    return lines


def recognize(
    config: Config,
    source: str | Path,
    searcher: Searcher,
    fingerprinter: Any,
    stream_id: str = "recognize",
    on_play: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Plays of catalog tracks in ``source`` (file or URL), each {track_id, start_s, end_s, offset_s,
    confidence, stream_id}, in the order they ended."""
    pipeline = pipeline_from_config(config, fingerprinter, searcher, shed_lag_s=np.inf, max_lag_s=np.inf)
    return recognize_chunks(pipeline, chunks_of(source, stream_id), on_play)
