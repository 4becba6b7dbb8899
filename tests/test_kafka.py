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
