"""Looping radio stations produced to Kafka in real time, at a small CPU cost (bench/soak.py's load).

The soak measures the daemon, and on a 2-vCPU machine its load generator shares the daemon's cores.
With kafka-python and per-chunk PCM encoding (tests/fault_helpers.PacedIngest) the generator takes
0.83 of a core for 1 000 stations, this one 0.06 (``python bench/station_feed.py``, which measures
both; bench/RESULTS.md, "Soak", session 15). Here the looped audio is encoded to s16le once, each
chunk's payload is a slice of it, and librdkafka (confluent-kafka) builds and sends the batches in C. The records are the protocol's
(:func:`streamd.protocol.encode`'s key, payload and headers), keyed by stream and partitioned by
the Java client's murmur2 as kafka-python partitions them, so the daemon reads what
``streamd ingest`` would send.

:func:`looped_records` is the pure part (tests/test_station_feed.py checks it against
``streamd.ingest.stream_chunks``); :class:`StationFeed` paces it in a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from streamd import protocol
from streamd.ingest import now_ms


def looped_records(base: np.ndarray, offsets: dict[str, int], sample_rate: int, chunk_ms: int, start_ms: int,
                   stagger: bool) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]], int]]:
    """Endless (key, value, headers, timestamp ms) of every stream, in capture-time order.

    Stream ``s`` plays ``base`` (mono float audio) from sample ``offsets[s]`` on, round and round, in
    chunks of ``chunk_ms``; with ``stagger`` the streams' chunk boundaries are spread evenly over a
    chunk (independent stations), else all fall on the same instants."""
    frames = sample_rate * chunk_ms // 1000
    pcm = np.frombuffer(protocol.to_pcm(base, "s16le"), dtype="<i2")
    looped = np.concatenate([pcm, pcm[:frames]]).tobytes()  # a chunk that wraps is one slice too
    n, width = len(pcm), protocol.frame_bytes("s16le", 1)
    per_record = ("seq", "ts")
    fixed = [h for h in protocol.encode("-", base[:frames], sample_rate, 0, 0).headers if h[0] not in per_record]
    streams = [(sid.encode(), offset % n, round(i * chunk_ms / len(offsets)) if stagger else 0)
               for i, (sid, offset) in enumerate(offsets.items())]  # fmt: skip
    seq = 0
    while True:
        chunk_start_ms = start_ms + seq * 1000 * frames // sample_rate
        for key, offset, phase_ms in streams:
            at = (offset + seq * frames) % n * width
            ts = chunk_start_ms + phase_ms
            yield key, looped[at : at + frames * width], [*fixed, ("seq", str(seq).encode()), ("ts", str(ts).encode())], ts
        seq += 1


def looping_stations(tracks: list, streams: int) -> tuple[np.ndarray, dict[str, int]]:
    """The soak's stations: ``tracks``' 12 kHz audio end to end, and where each of ``streams``
    streams starts in it (evenly spaced)."""
    from streamd import dataset

    base = np.concatenate([dataset.load_audio(t) for t in tracks]).astype(np.float32)
    step = max(1, len(base) // streams)
    return base, {f"soak-{i:04d}": i * step for i in range(streams)}


def librdkafka_settings(bootstrap_servers: str) -> dict[str, object]:
    """A producer for a local soak: murmur2 partitioning (Java's and kafka-python's), batches of up to
    1 MB, 5 ms linger, every record acknowledged by the leader."""
    return {"bootstrap.servers": bootstrap_servers, "partitioner": "murmur2_random", "linger.ms": 5,
            "batch.size": 1 << 20, "message.max.bytes": 8 << 20, "acks": 1,
            "queue.buffering.max.kbytes": 256 << 10, "enable.idempotence": False}  # fmt: skip


@dataclass
class StationFeed:
    """Produces :func:`looped_records` in real time in a thread (``progress_s``: audio time sent)."""

    bootstrap_servers: str
    topic: str
    base: np.ndarray
    offsets: dict[str, int]
    stagger: bool = False
    sample_rate: int = 12000
    chunk_ms: int = 500
    start_ms: int = field(default_factory=now_ms)
    progress_s: float = 0.0
    records: int = 0
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> StationFeed:
        self.thread = threading.Thread(target=self._run, name="station-feed", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import KafkaException, Producer

        failures: list[str] = []

        def delivered(err, _msg) -> None:
            if err is not None:
                failures.append(str(err))

        try:
            producer = Producer(librdkafka_settings(self.bootstrap_servers))
            t0 = time.monotonic()
            for key, value, headers, ts in looped_records(self.base, self.offsets, self.sample_rate, self.chunk_ms,
                                                          self.start_ms, self.stagger):  # fmt: skip
                audio_s = (ts - self.start_ms + self.chunk_ms) / 1000
                wait = t0 + audio_s - time.monotonic()
                if wait > 0:
                    producer.poll(0)
                    if self.stop.wait(wait):
                        break
                elif self.stop.is_set():  # behind real time: still stop when asked
                    break
                if failures:
                    raise KafkaException(failures[0])
                while True:
                    try:
                        producer.produce(self.topic, value=value, key=key, headers=headers,
                                         timestamp=min(ts, now_ms()), on_delivery=delivered)  # fmt: skip
                        break
                    except BufferError:  # local queue full: let librdkafka send, then retry
                        producer.poll(0.05)
                self.records += 1
                self.progress_s = audio_s
            producer.flush(10)
        except BaseException as exc:  # reported by the soak's sampling loop
            self.error = exc


def measure(feed: str, streams: int, seconds: float) -> dict[str, float]:
    """CPU of this process while ``feed`` produces ``streams`` looping stations for ``seconds``
    to a fresh topic (deleted after), in cores (process CPU time / wall time)."""
    import sys
    import uuid
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fault_helpers import PacedIngest, looped_blocks

    from streamd import dataset
    from streamd.config import load_config
    from streamd.kafka_io import delete_topics, ensure_topics

    config = load_config(overrides={"kafka.audio_topic": f"feedbench.{uuid.uuid4().hex[:8]}"})
    topic = config.kafka.audio_topic
    ensure_topics(config, {topic: 8}, topic_configs={"retention.bytes": str(64 << 20), "segment.bytes": str(16 << 20)})
    base, offsets = looping_stations(list(dataset.load_split().test[:8]), streams)
    if feed == "librdkafka":
        runner: StationFeed | PacedIngest = StationFeed(config.kafka.bootstrap_servers, topic, base, offsets)
    else:
        runner = PacedIngest(config, {sid: looped_blocks(base, o) for sid, o in offsets.items()})
    cpu0, wall0 = time.process_time(), time.monotonic()
    runner.start()
    runner.stop.wait(seconds)
    runner.stop.set()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    result = {"cores": cpu / wall, "records": runner.records, "behind_s": max(0.0, wall - runner.progress_s)}
    if runner.thread is not None:
        runner.thread.join(30)
    delete_topics(config, [topic])
    return result


def main() -> None:
    """``python bench/station_feed.py --streams 1000 --seconds 60``: each feed alone, in turn."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--feeds", nargs="+", default=["kafka-python", "librdkafka"], choices=["kafka-python", "librdkafka"])
    args = parser.parse_args()
    results = {feed: measure(feed, args.streams, args.seconds) for feed in args.feeds}
    print(json.dumps(results, indent=1))
    if len(results) == 2:
        print(f"kafka-python / librdkafka CPU: {results['kafka-python']['cores'] / results['librdkafka']['cores']:.1f}x")


if __name__ == "__main__":
    main()
