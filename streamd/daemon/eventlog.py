"""Reading the events topic back: for tests, the demo and scoring the daemon (docs/accuracy.md).

:func:`read_events` collects every event on a topic (from the start, no consumer group);
:func:`plays` folds them into one record per play (same-id duplicates merged, the ``ended`` event's
boundaries win); :func:`scorer_records` gives the JSON-lines form ``streamd score`` reads. The
daemon's ``start_s``/``end_s`` are stream times (seconds since the stream's first chunk), which is
station time when the station was ingested from its first sample.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import TopicPartition

from streamd.config import Config
from streamd.events import decode
from streamd.kafka_io import make_consumer


def read_events(config: Config, topic: str | None = None, idle_s: float = 1.0, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every event on ``topic`` (default ``kafka.events_topic``) now, in partition order."""
    topic = topic or config.kafka.events_topic
    consumer = make_consumer(config, group_id="")
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=int(idle_s * 1000)).values():
                out.extend(decode(r.value) for r in records)
        return out
    finally:
        consumer.close()


def plays(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """play_id → {stream_id, track_id, start_s, end_s (None while open), started_ids, ended_ids, ...}."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        play = out.setdefault(e["play_id"], {"play_id": e["play_id"], "stream_id": e["stream_id"],
                                             "track_id": e["track_id"], "end_s": None, "started_ids": set(),
                                             "ended_ids": set(), "deliveries": 0})  # fmt: skip
        play["deliveries"] += 1
        play[f"{e['type']}_ids"].add(e["event_id"])
        if e["type"] == "ended" or "start_s" not in play:
            play.update(start_s=e["start_s"], offset_s=e["track_offset_s"], confidence=e["confidence"])
        if e["type"] == "ended":
            play["end_s"] = e["end_s"]
        if e["type"] == "started":
            play["detected_s"] = e["detected_s"]
    return out


def scorer_records(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events in the form :func:`streamd.eval.score.parse_events` reads (paired by play id)."""
    return [
        {"stream_id": e["stream_id"], "track_id": e["track_id"], "type": e["type"], "event_id": e["play_id"],
         "start_s": e["start_s"], "end_s": e["end_s"], "offset_s": e["track_offset_s"],
         "confidence": e["confidence"], "detected_at_s": e["detected_s"] if e["type"] == "started" else None}
        for e in events
    ]  # fmt: skip
