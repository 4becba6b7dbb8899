"""A first look at the pipeline's front half: audio streams → protocol chunks → Kafka → decoded back.

``make demo`` runs this (after ``streamd services up``) until the recognition daemon's demo
replaces it. A background thread ingests a few streams in real time (real corpus tracks when the
dev corpus is present, generated tones otherwise) plus one deliberately malformed record; the main
thread consumes the topic and shows a live table of what arrives per stream.

    python -m streamd.demo [--seconds 10]
"""

from __future__ import annotations

import argparse
import csv
import os
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from kafka import TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamd import audio, ingest, protocol
from streamd.config import Config, load_config
from streamd.kafka_io import BoundedProducer, ensure_topics, make_consumer

CORPUS = Path(os.environ.get("STREAMD_CORPUS", "~/.cache/streamd/corpus")).expanduser()


def demo_sources(seconds: float, n_tracks: int = 3) -> dict[str, tuple[np.ndarray, int, str]]:
    """stream id → (audio, sample rate, fmt): corpus tracks at their own rate, and a 12 kHz tone."""
    sources: dict[str, tuple[np.ndarray, int, str]] = {}
    if (CORPUS / "manifest.csv").exists():
        with open(CORPUS / "manifest.csv") as handle:
            rows = list(csv.DictReader(handle))[:n_tracks]
        for i, row in enumerate(rows):
            rate = int(row["sample_rate"])
            samples = audio.load_audio(CORPUS / row["relative_path"], None, mono=False, max_seconds=seconds)
            sources[f"radio-{i + 1}"] = (samples, rate, "s16le")
    t = np.arange(int(seconds * 12000)) / 12000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2).astype(np.float32)
    sources["test-tone"] = (tone, 12000, "f32le")
    return sources


def _produce(config: Config, topic: str, sources: dict, stop: threading.Event, done: threading.Event) -> None:
    start = ingest.now_ms()
    streams = [
        ingest.stream_chunks(samples, rate, stream_id, chunk_ms=500, fmt=fmt, start_ts_ms=start)
        for stream_id, (samples, rate, fmt) in sources.items()
    ]
    try:
        with BoundedProducer(config) as producer:
            # One malformed record, to show that consumers count it instead of crashing.
            producer.send(topic, value=b"\x00" * 3, key=b"broken-encoder", headers=[("v", b"1")])
            ingest.produce(ingest.merge_by_time(*streams), producer, topic, realtime=True, stop=stop)
    finally:
        done.set()


def _table(stats: dict, errors: Counter, elapsed: float) -> Table:
    table = Table(title=f"chunks arriving from Kafka ({elapsed:4.1f} s)")
    for column in ("stream", "format", "chunks", "seq", "audio s", "lag ms", "rms"):
        table.add_column(column, justify="left" if column in ("stream", "format") else "right")
    for stream_id, s in sorted(stats.items()):
        table.add_row(
            stream_id, s["format"], str(s["chunks"]), str(s["seq"]), f"{s['audio_s']:.1f}",
            f"{s['latency_ms']:.0f}", f"{s['rms']:.3f}",
        )  # fmt: skip
    for reason, count in sorted(errors.items()):
        table.add_row("[red]malformed[/]", f"[red]{reason}[/]", str(count), "", "", "", "")
    return table


def run(config: Config, seconds: float = 10.0) -> dict:
    """Run the demo; returns the per-stream statistics that were shown."""
    console = Console()
    topic = config.kafka.audio_topic
    ensure_topics(config, {topic: config.kafka.audio_partitions})
    sources = demo_sources(seconds)
    console.print(
        f"streaming {len(sources)} sources in real time for {seconds:g} s to Kafka topic {topic} ..."
    )

    consumer = make_consumer(config, group_id="")
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for tp in partitions:
        consumer.position(tp)  # resolve "end" now, before anything is produced

    stats: dict = defaultdict(lambda: {"chunks": 0, "seq": -1, "audio_s": 0.0, "latency_ms": 0.0, "rms": 0.0})
    errors: Counter = Counter()
    stop, done = threading.Event(), threading.Event()
    producer = threading.Thread(target=_produce, args=(config, topic, sources, stop, done), daemon=True)
    started = time.monotonic()
    producer.start()
    idle_since = None
    try:
        with Live(_table(stats, errors, 0), console=console, refresh_per_second=4) as live:
            while True:
                polled = consumer.poll(timeout_ms=250)
                for record in (r for batch in polled.values() for r in batch):
                    try:
                        chunk = protocol.decode_record(record)
                    except protocol.ProtocolError as exc:
                        errors[exc.reason] += 1
                        continue
                    s = stats[chunk.stream_id]
                    s["format"] = f"{chunk.sample_rate / 1000:g}k {chunk.channels}ch {chunk.fmt}"
                    s["chunks"] += 1
                    s["seq"] = chunk.seq
                    s["audio_s"] += chunk.duration_s
                    s["latency_ms"] = ingest.now_ms() - (chunk.ts_ms + chunk.duration_s * 1000)
                    s["rms"] = float(np.sqrt(np.mean(chunk.samples**2)))
                live.update(_table(stats, errors, time.monotonic() - started))
                if done.is_set() and not polled:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 1.0:
                        break
    except KeyboardInterrupt:
        stop.set()
    finally:
        producer.join(timeout=30)
        consumer.close()
    console.print(
        f"{sum(s['chunks'] for s in stats.values())} chunks from {len(stats)} streams decoded, "
        f"{sum(errors.values())} malformed record(s) counted. Next: the daemon turns these into recognitions."
    )
    return dict(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how much audio each stream sends")
    args = parser.parse_args()
    run(load_config(), args.seconds)


if __name__ == "__main__":
    main()
