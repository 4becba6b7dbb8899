"""streamd.eval.collect: the split manifest for indexing, and reading a daemon's events off Kafka
(real local Kafka, unique topics)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from streamd import dataset
from streamd.eval.collect import (
    CollectError,
    consumer_lag,
    read_topic,
    wait_until_consumed,
    write_json_lines,
    write_split_manifest,
)
from streamd.eval.score import parse_events
from streamd.indexer import read_manifest


def _fake_corpus(root: Path, n: int = 30) -> Path:
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["track_id", "package", "relative_path", "duration_s", "license"])
        for i in range(n):
            writer.writerow([f"pkg{i % 7}__song{i}", f"pkg{i % 7}", f"audio/pkg{i % 7}/song{i}.ogg", 60.0 + i, "cc0"])
    return root


def test_split_manifests_partition_the_corpus_and_index_by_absolute_path(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    split = dataset.load_split(corpus)
    seen: set[str] = set()
    for name in ("train", "val", "test"):
        out = tmp_path / f"{name}.csv"
        assert write_split_manifest(corpus, name, out) == len(getattr(split, name))
        jobs = read_manifest(out)
        ids = {job.track_id for job in jobs}
        assert ids == {t.track_id for t in getattr(split, name)}
        assert not ids & seen
        seen |= ids
        for job in jobs:
            package, _, stem = job.track_id.partition("__")
            assert job.path == (corpus / "audio" / package / f"{stem}.ogg").resolve()
            assert job.meta["license"] == "cc0" and "relative_path" not in job.meta
    assert len(seen) == 30


def test_split_manifest_rejects_an_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="split"):
        write_split_manifest(_fake_corpus(tmp_path), "dev", tmp_path / "x.csv")


def _event(stream: str, kind: str, start: float, end: float | None, play: str) -> dict:
    return {"type": kind, "stream_id": stream, "track_id": "t1", "play_id": play, "event_id": f"{play}-{kind}",
            "start_s": start, "end_s": end, "track_offset_s": 0.0, "confidence": 0.9, "detected_s": start + 4.0}


def test_read_topic_copies_every_event_and_skips_what_is_not_a_json_object(config, kafka_topic, tmp_path) -> None:
    from streamd.kafka_io import make_producer

    topic = kafka_topic(partitions=3)
    events = [_event(f"s{i % 3}", kind, 10.0 * i, None if kind == "started" else 10.0 * i + 40, f"p{i}")
              for i in range(12) for kind in ("started", "ended")]  # fmt: skip
    producer = make_producer(config)
    for e in events:
        producer.send(topic, key=e["stream_id"].encode(), value=json.dumps(e).encode())
    producer.send(topic, key=b"s0", value=b"not json")
    producer.send(topic, key=b"s1", value=b"[1, 2]")
    producer.flush()
    producer.close()

    got = list(read_topic(config, topic, timeout_s=30))
    assert sorted(got, key=lambda e: e["event_id"]) == sorted(events, key=lambda e: e["event_id"])

    out = tmp_path / "events.jsonl"
    assert write_json_lines(got, out) == len(events)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["stream_id"], e["start_s"]) for e in lines] == sorted((e["stream_id"], e["start_s"]) for e in lines)
    plays = parse_events(lines, {"s0": 500.0, "s1": 500.0, "s2": 500.0})
    assert len(plays) == 12 and all(p.end_s == p.start_s + 40 for p in plays)


def test_read_topic_of_a_missing_topic_is_an_error(config, kafka_bootstrap, unique) -> None:
    with pytest.raises(CollectError, match="does not exist"):
        list(read_topic(config, unique("missing"), timeout_s=5))


def test_wait_until_consumed_follows_the_groups_commits(config, kafka_topic, unique) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from streamd.kafka_io import make_consumer, make_producer

    topic, group = kafka_topic(partitions=2), unique("group")
    producer = make_producer(config)
    for i in range(10):
        producer.send(topic, key=f"s{i}".encode(), value=b"x", partition=i % 2)
    producer.flush()
    producer.close()
    assert consumer_lag(config, group, topic) == 10  # nothing committed yet

    consumer = make_consumer(config, group_id=group)
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(5, "", -1)})
    assert consumer_lag(config, group, topic) == 5
    with pytest.raises(CollectError, match="exited with 5 records"):
        wait_until_consumed(config, group, topic, timeout_s=30, poll_s=0.1, alive=lambda: False)
    with pytest.raises(CollectError, match="still has 5 records"):
        wait_until_consumed(config, group, topic, timeout_s=0, poll_s=0.1)

    consumer.commit({TopicPartition(topic, 1): OffsetAndMetadata(5, "", -1)})
    consumer.close()
    lags: list[int] = []
    assert wait_until_consumed(config, group, topic, timeout_s=30, poll_s=0.1, on_lag=lags.append) >= 0
    assert lags == [0]
