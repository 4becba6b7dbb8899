"""What consuming audio chunks from Kafka costs the daemon's process: CPU per record, by consumer setting.

A fresh topic on the local broker is filled with ``--records`` chunks of ``--streams`` streams
(12 kHz mono s16le, 500 ms: the soak's records, protocol headers included), then read back from the
start, once per variant, each record decoded with ``protocol.decode_record`` as the daemon does:
by the daemon's consumer (``streamd.daemon.source.AudioSource``, librdkafka, in a fresh group) and
by kafka-python consumers (``kafka_io.make_consumer``, ``poll(max_records=daemon.max_poll_records)``,
the daemon's consumer until session 17) with the settings each variant names. CPU =
``time.process_time`` of this process (all threads: librdkafka and kafka-python 3 fetch on their
own threads), so the broker's work is not counted. Variants alternate over ``--repeats`` rounds;
the table gives the median per variant and the ratio to the daemon's consumer in the same run.

    .venv/bin/python bench/kafka_consume.py --records 20000 --repeats 3 --json runs/kafka_consume.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamd import protocol  # noqa: E402
from streamd.config import load_config  # noqa: E402
from streamd.kafka_io import delete_topics, ensure_topics, make_consumer, make_producer  # noqa: E402

CHUNK_S = 0.5
SAMPLE_RATE = 12000

DAEMON = "daemon: librdkafka (AudioSource)"
VARIANTS: dict[str, dict[str, Any]] = {
    DAEMON: {},
    "kafka-python, defaults": {},
    "fetch_min_bytes 1 MB, wait 100 ms": {"fetch_min_bytes": 1 << 20, "fetch_max_wait_ms": 100},
    "fetch_min_bytes 4 MB, wait 200 ms": {"fetch_min_bytes": 4 << 20, "fetch_max_wait_ms": 200},
    "max_partition_fetch_bytes 8 MB": {"max_partition_fetch_bytes": 8 << 20},
    "check_crcs off": {"check_crcs": False},
}


def fill(config: Any, topic: str, streams: int, records: int) -> None:
    producer = make_producer(config)
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(int(CHUNK_S * SAMPLE_RATE))).astype(np.float32)
    now_ms = int(time.time() * 1000)
    for i in range(records):
        stream, seq = i % streams, i // streams
        record = protocol.encode(f"station-{stream:04d}", samples, SAMPLE_RATE, seq, now_ms + int(seq * CHUNK_S * 1000))
        producer.send(topic, key=record.key, value=record.value, headers=record.headers)
    producer.flush()
    producer.close()


def _kafka_python(config: Any, topic: str, options: dict[str, Any], max_poll: int) -> tuple[Any, Any]:
    consumer = make_consumer(config, topic, group_id="", **options)
    return consumer, lambda: consumer.poll(timeout_ms=1000, max_records=max_poll)


def _librdkafka(config: Any, topic: str, max_poll: int) -> tuple[Any, Any]:
    from dataclasses import replace

    from streamd.daemon.source import AudioSource

    group = replace(config, kafka=replace(config.kafka, group_id=f"bench.kafka-consume.{uuid.uuid4().hex[:8]}"))
    source = AudioSource(group, lambda tps: dict.fromkeys(tps), lambda tps: None, max_records=max_poll)
    source.subscribe(topic)
    return source, lambda: source.poll(1.0)


def consume(config: Any, topic: str, records: int, variant: str, max_poll: int) -> dict[str, float]:
    if variant == DAEMON:
        consumer, poll = _librdkafka(config, topic, max_poll)
    else:
        consumer, poll = _kafka_python(config, topic, VARIANTS[variant], max_poll)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    seen = 0
    while seen < records:
        polled = poll()
        for batch in polled.values():
            for record in batch:
                protocol.decode_record(record)
            seen += len(batch)
        if time.perf_counter() - wall0 > 600:
            raise RuntimeError(f"only {seen} of {records} records in 600 s")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    consumer.close()
    return {"cpu_us_per_record": 1e6 * cpu / seen, "wall_s": wall, "records": seen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    config = load_config()
    topic = f"bench.kafka-consume.{uuid.uuid4().hex[:8]}"
    ensure_topics(config, {topic: args.partitions})
    try:
        t0 = time.perf_counter()
        fill(config, topic, args.streams, args.records)
        print(f"{args.records} records of {args.streams} streams in {topic} ({time.perf_counter() - t0:.0f} s)")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
        for repeat in range(args.repeats):
            for name in args.variants:
                result = consume(config, topic, args.records, name, config.daemon.max_poll_records)
                runs[name].append(result)
                print(f"  round {repeat + 1}: {name}: {result['cpu_us_per_record']:.0f} µs CPU per record, "
                      f"{result['wall_s']:.1f} s")  # fmt: skip
    finally:
        delete_topics(config, [topic])
    base = statistics.median(r["cpu_us_per_record"] for r in runs[args.variants[0]])
    print(f"\n{args.records} records (12 kHz mono s16le, {CHUNK_S * 1000:.0f} ms), {args.partitions} partitions, "
          f"max_poll_records {config.daemon.max_poll_records}, median of {args.repeats}")  # fmt: skip
    print("| consumer setting | CPU µs per record (median) | runs | vs the daemon's |")
    print("|---|---:|---|---:|")
    summary = {}
    for name, results in runs.items():
        values = [r["cpu_us_per_record"] for r in results]
        median = statistics.median(values)
        summary[name] = {"median_cpu_us_per_record": median, "runs": results, "options": VARIANTS[name]}
        print(f"| {name} | {median:.0f} | {', '.join(f'{v:.0f}' for v in values)} | {median / base:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
