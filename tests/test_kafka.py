"""Kafka helpers against the real local broker: consumer groups, commits, resume, bounded producer."""

from __future__ import annotations

import time

import pytest
from kafka import TopicPartition

from streamd.kafka_io import (
    BoundedProducer,
    KafkaSendError,
    client_options,
    make_consumer,
    wait_for_assignment,
)


def _drain(consumer, want: int, timeout_s: float = 30.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def test_consumer_group_round_trip_commit_and_resume(config, kafka_topic, unique):
    topic = kafka_topic(partitions=2)
    group = unique("group")
    with BoundedProducer(config) as producer:
        for i in range(10):
            producer.send(
                topic, value=f"v{i}".encode(), key=f"k{i % 3}".encode(), headers=[("seq", str(i).encode())]
            )
    assert producer.records_sent == 10

    first = make_consumer(config, topic, group_id=group)
    assigned = wait_for_assignment(first)
    assert assigned == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    records = _drain(first, 10)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(10))
    assert all(dict(r.headers)["seq"] == r.value[1:] for r in records)
    # Per key, records arrive in the order they were produced.
    for key in (b"k0", b"k1", b"k2"):
        seqs = [int(r.value[1:]) for r in records if r.key == key]
        assert seqs == sorted(seqs)
    first.commit()
    first.close()

    with BoundedProducer(config) as producer:
        for i in range(10, 15):
            producer.send(topic, value=f"v{i}".encode(), key=b"k0")

    # A restarted member of the same group resumes from the committed offsets: only the new records.
    second = make_consumer(config, topic, group_id=group)
    wait_for_assignment(second)
    resumed = _drain(second, 5)
    time.sleep(0.5)
    resumed += _drain(second, 1, timeout_s=0.5)
    assert [r.value for r in resumed] == [f"v{i}".encode() for i in range(10, 15)]
    committed = {tp: second.committed(tp) for tp in second.assignment()}
    assert sum(committed.values()) == 10
    second.close()


def test_bounded_producer_limits_in_flight_records(config, kafka_topic):
    topic = kafka_topic()
    with BoundedProducer(config, max_pending=4, max_pending_bytes=10_000) as producer:
        for _ in range(50):
            producer.send(topic, value=b"x" * 3000)
            assert producer.pending <= 4
            assert producer._pending_bytes <= 10_000
    assert producer.records_sent == 50
    assert producer.bytes_sent == 150_000


def test_bounded_producer_raises_when_broker_rejects_a_record(config, kafka_topic):
    """Brokers reject timestamps more than 1 h in the future; flush() alone would not say so."""
    topic = kafka_topic()
    producer = BoundedProducer(config)
    producer.send(topic, value=b"x", timestamp_ms=int(time.time() * 1000) + 3 * 3600 * 1000)
    with pytest.raises(KafkaSendError, match="not delivered"):
        producer.flush()
    producer.producer.close()


def test_client_options_carry_tls_and_sasl_settings(config):
    from dataclasses import replace

    from streamd.config import ConfigError

    kafka = replace(
        config.kafka, bootstrap_servers="a:9093, b:9093", security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
        sasl_username="u", sasl_password="p", ssl_cafile="/ca.pem",
    )  # fmt: skip
    options = client_options(kafka)
    assert options["bootstrap_servers"] == ["a:9093", "b:9093"]
    assert options["sasl_plain_username"] == "u" and options["sasl_plain_password"] == "p"
    assert options["ssl_cafile"] == "/ca.pem"
    with pytest.raises(ConfigError, match="kafka.sasl_mechanism"):
        client_options(replace(kafka, sasl_mechanism=""))


def test_librdkafka_options_carry_tls_and_sasl_settings(config):
    from dataclasses import replace

    from streamd.kafka_io import librdkafka_options

    kafka = replace(
        config.kafka, bootstrap_servers="a:9093, b:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u", sasl_password="p", ssl_cafile="/ca.pem", ssl_certfile="/c.pem",
    )  # fmt: skip
    assert librdkafka_options(kafka) == {
        "bootstrap.servers": "a:9093,b:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem", "ssl.certificate.location": "/c.pem",
    }  # fmt: skip


def _source_poll(source, want: int, timeout_s: float = 30.0) -> dict:
    got: dict = {}
    deadline = time.monotonic() + timeout_s
    while sum(map(len, got.values())) < want and time.monotonic() < deadline:
        for tp, records in source.poll(0.2).items():
            got.setdefault(tp, []).extend(records)
    return got


def test_audio_source_starts_where_the_daemon_says_and_commits_metadata(config, kafka_topic, unique):
    """The daemon's librdkafka consumer: each assigned partition starts at the offset the
    ``on_assigned`` hook returns; offsets are committed with metadata. A second member's join moves
    one partition (cooperative): the first member's ``on_revoked`` gets that one only, it keeps
    reading the other where it was (no re-assignment, nothing re-read), and neither member sees
    records of a partition it does not own."""
    from dataclasses import replace

    from streamd.daemon.source import AudioSource

    topic = kafka_topic(partitions=2)
    cfg = replace(config, kafka=replace(config.kafka, group_id=unique("group")))
    t0 = int(time.time() * 1000) - 60_000
    with BoundedProducer(config) as producer:
        for i in range(20):
            producer.send(topic, value=f"v{i}".encode(), key=b"k", partition=i % 2, timestamp_ms=t0 + i * 1000)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    calls: list = []

    def assigned(tps):
        calls.append(("assigned", set(tps)))
        return {p0: 7, p1: None}

    first = AudioSource(cfg, assigned, lambda tps: calls.append(("revoked", set(tps))), max_records=100)
    assert first.partitions_for_topic(topic) == {0, 1}
    first.subscribe(topic)
    got = _source_poll(first, 3 + 10)
    assert first.assignment() == {p0, p1} and calls == [("assigned", {p0, p1})]
    assert [r.offset for r in got[p0]] == [7, 8, 9] and [r.offset for r in got[p1]] == list(range(10))
    assert got[p1][0].value == b"v1" and got[p1][0].timestamp == t0 + 1000 and got[p1][0].key == b"k"

    first.commit({p0: (8, '{"ts": 123}'), p1: (4, "")})
    assert first.committed({p0, p1}) == {p0: (8, '{"ts": 123}'), p1: (4, "")}
    assert first.offsets_for_times({p0: t0 + 10_500, p1: t0 + 10 ** 9}) == {p0: 6, p1: None}
    assert first.lag() == {0: 0, 1: 0}

    second = AudioSource(cfg, lambda tps: {tp: 0 for tp in tps}, lambda tps: None, max_records=100)
    second.subscribe(topic)
    try:
        deadline = time.monotonic() + 60
        early: dict = {}
        while not (first.assignment() and second.assignment()) and time.monotonic() < deadline:
            first.poll(0.2)
            for tp, records in second.poll(0.2).items():
                early.setdefault(tp, []).extend(records)
        assert first.assignment() | second.assignment() == {p0, p1}
        assert not first.assignment() & second.assignment()
        (theirs,) = second.assignment()
        (ours,) = first.assignment()
        assert calls == [("assigned", {p0, p1}), ("revoked", {theirs})]
        from_start = _source_poll(second, 10 - len(early.get(theirs, [])))  # its hook said: from offset 0
        from_start = {tp: early.get(tp, []) + from_start.get(tp, []) for tp in set(early) | set(from_start)}
        assert [r.offset for r in from_start[theirs]] == list(range(10)) and set(from_start) == {theirs}
        with BoundedProducer(config) as producer:
            for i in range(20, 24):
                producer.send(topic, value=f"v{i}".encode(), key=b"k", partition=i % 2)
        assert [r.offset for r in _source_poll(first, 2)[ours]] == [10, 11]  # re-assigned, it would restart at the hook's 7 / 0
        assert [r.offset for r in _source_poll(second, 2)[theirs]] == [10, 11]
    finally:
        second.close()
        first.close()
