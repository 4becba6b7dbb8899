"""The daemon's audio source: its consumer-group membership on the audio topic, through librdkafka.

The daemon reads every chunk of every stream it owns (2 000 records/s at 1 000 streams with 0.5 s
chunks). kafka-python parses fetch responses in Python: 155 µs of CPU per record, 0.3 of
a core at that rate, on the cores the front end and the model need. librdkafka (confluent-kafka)
fetches and parses in C: 56 µs per record against 155, decoding included (bench/kafka_consume.py,
bench/RESULTS.md "Soak", session 17). Every other client (producers, admin, the readers of the
state and events topics) stays on kafka-python; their load is small.

Rebalances use the cooperative protocol (``cooperative-sticky``): when a member joins or leaves,
only the partitions that move are revoked and assigned; the others stay where they are, and their
streams keep running without a hand-over (with the eager protocol of kafka-python every partition
of every member was revoked, and every stream of the group replayed its warm-up). Every member of
a group must therefore speak it: a daemon of streamd before session 17 cannot join the group of a
newer one (the broker refuses the inconsistent protocol). librdkafka runs the callbacks inside
:meth:`AudioSource.poll`, on the daemon's own thread, so the daemon acts on them right there, with
blocking client calls allowed:

- ``on_revoked(partitions)``: before the partitions are given up (flush, drop their streams);
- ``on_assigned(partitions) -> {partition: start offset}``: the daemon reads the streams' states and
  says where each new partition's reading starts (a warm-up before the committed offset); the
  source adds the partitions at those offsets, so the first records fetched are the right ones.

librdkafka drops the records it had fetched for a previous assignment, including those already in
the batch being collected (librdkafka PR #3269); :meth:`poll` also drops any record of a partition
not assigned any more, so a revoked partition's records are never processed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException
from confluent_kafka import TopicPartition as _Partition
from kafka import TopicPartition

from streamd.config import Config
from streamd.kafka_io import MAX_RECORD_BYTES, connection_failure, librdkafka_options

log = logging.getLogger("streamd.daemon")

CLIENT_TIMEOUT_S = 30.0
# Fetch responses are buffers of librdkafka's threads, kept in glibc arenas that the daemon never
# trims (daemon.malloc_*): bounded responses bound that memory. One holds the largest record.
FETCH_BYTES = MAX_RECORD_BYTES
PREFETCH_KB = 64 * 1024  # fetched, not yet polled records (librdkafka's queue): ~2.7 s of 1 000 streams


class Record(NamedTuple):
    """One consumed record, with the fields of kafka-python's ``ConsumerRecord`` the daemon reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


OnAssigned = Callable[[set[TopicPartition]], dict[TopicPartition, int | None]]
OnRevoked = Callable[[set[TopicPartition]], None]


class AudioSource:
    """A librdkafka consumer in ``config.kafka.group_id`` with manual commits (offset + metadata).

    Partitions are kafka-python ``TopicPartition`` tuples throughout, records :class:`Record` tuples.
    ``on_assigned`` returns each partition's start offset (``None``: from the beginning).
    """

    def __init__(self, config: Config, on_assigned: OnAssigned, on_revoked: OnRevoked, max_records: int = 2000,
                 session_timeout_s: float = 10.0):  # fmt: skip
        self.config = config
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.max_records = max_records
        self.errors: list[str] = []  # the newest client errors (connection, login), for the failure message
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._lock = threading.Lock()  # assignment() is read by the ops server's thread
        self._closing = False
        self._consumer = Consumer({
            **librdkafka_options(config),
            "group.id": config.kafka.group_id,
            "client.id": "streamd-daemon",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(session_timeout_s * 1000),
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": FETCH_BYTES,
            "max.partition.fetch.bytes": FETCH_BYTES,
            "queued.max.messages.kbytes": PREFETCH_KB,
            "fetch.queue.backoff.ms": 20,  # a full queue pauses fetching this long (default 1 s: a stall)
            "error_cb": self._client_error,
            "logger": logging.getLogger("streamd.daemon.librdkafka"),
        })  # fmt: skip

    # --- group membership -----------------------------------------------------------------

    def subscribe(self, topic: str) -> None:
        self._consumer.subscribe([topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke)

    def _assign(self, consumer: Consumer, partitions: list[_Partition]) -> None:
        """Partitions added to this member's assignment (cooperative: only the new ones)."""
        assigned = {TopicPartition(p.topic, p.partition) for p in partitions}
        starts = self.on_assigned(assigned) if assigned and not self._closing else {}
        consumer.incremental_assign([_Partition(tp.topic, tp.partition, _start(starts.get(tp)))
                                     for tp in sorted(assigned)])  # fmt: skip
        with self._lock:
            self._assigned = self._assigned | assigned

    def _revoke(self, consumer: Consumer, partitions: list[_Partition]) -> None:
        """Partitions taken from this member (revoked in a rebalance, or lost with its session)."""
        revoked = {TopicPartition(p.topic, p.partition) for p in partitions}
        with self._lock:
            self._assigned = self._assigned - revoked
        if revoked and not self._closing:
            self.on_revoked(revoked)
        consumer.incremental_unassign(partitions)

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns now (safe from any thread)."""
        with self._lock:
            return set(self._assigned)

    # --- reading ---------------------------------------------------------------------------

    def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        """Up to ``max_records`` records, by partition in offset order; rebalance callbacks run here."""
        messages = self._consumer.consume(self.max_records, timeout_s)
        by_partition: dict[tuple[str, int], list[Record]] = {}
        for m in messages:
            if m.error() is not None:
                self._client_error(m.error())
                continue
            topic, partition = m.topic(), m.partition()
            by_partition.setdefault((topic, partition), []).append(
                Record(topic, partition, m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers() or [])
            )
        owned = self._assigned
        polled = {}
        for (topic, partition), records in by_partition.items():
            tp = TopicPartition(topic, partition)
            if tp in owned:
                polled[tp] = records
        return polled

    def _client_error(self, error: Any) -> None:
        text = error.str() if hasattr(error, "str") else str(error)
        self.errors = (self.errors + [text])[-10:]
        log.warning("Kafka client error", extra={"error": text})

    # --- offsets ---------------------------------------------------------------------------

    def partitions_for_topic(self, topic: str) -> set[int]:
        """The topic's partition numbers (raises :class:`KafkaUnavailableError` without a broker)."""
        try:
            metadata = self._consumer.list_topics(topic, timeout=CLIENT_TIMEOUT_S)
        except KafkaException as exc:
            raise connection_failure(self.config, self.errors, exc) from None
        found = metadata.topics.get(topic)
        return set(found.partitions) if found is not None and found.error is None else set()

    def committed(self, partitions: set[TopicPartition]) -> dict[TopicPartition, tuple[int, str] | None]:
        """The group's committed (offset, metadata) per partition; ``None`` where it has none."""
        out: dict[TopicPartition, tuple[int, str] | None] = {}
        for p in self._consumer.committed(_partitions(partitions), timeout=CLIENT_TIMEOUT_S):
            if p.error is not None:
                raise KafkaException(p.error)
            out[TopicPartition(p.topic, p.partition)] = (p.offset, p.metadata or "") if p.offset >= 0 else None
        return out

    def offsets_for_times(self, times_ms: dict[TopicPartition, int]) -> dict[TopicPartition, int | None]:
        """The first offset at or after each timestamp; ``None`` where no record is that new."""
        query = [_Partition(tp.topic, tp.partition, ts) for tp, ts in times_ms.items()]
        found = self._consumer.offsets_for_times(query, timeout=CLIENT_TIMEOUT_S)
        return {TopicPartition(p.topic, p.partition): (p.offset if p.error is None and p.offset >= 0 else None)
                for p in found}  # fmt: skip

    def commit(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        """Commit (offset, metadata) per partition, synchronously; raises ``KafkaException`` on failure."""
        done = self._consumer.commit(offsets=[_Partition(tp.topic, tp.partition, offset, metadata=metadata)
                                              for tp, (offset, metadata) in offsets.items()],
                                     asynchronous=False)  # fmt: skip
        for p in done or []:
            if p.error is not None:
                raise KafkaException(p.error)

    def lag(self) -> dict[int, int]:
        """Records behind the partition's end, per owned partition, from the high watermarks of the
        latest fetch responses (no broker request); partitions not fetched yet are left out."""
        owned = sorted(self.assignment())
        if not owned:
            return {}
        out = {}
        for p in self._consumer.position(_partitions(owned)):
            _, high = self._consumer.get_watermark_offsets(p, cached=True)
            if p.offset >= 0 and high >= 0:
                out[p.partition] = max(0, high - p.offset)
        return out

    def close(self) -> None:
        """Leave the group (its revocation does not call back into the daemon any more)."""
        self._closing = True
        self._consumer.close()


def _partitions(tps: Any) -> list[_Partition]:
    return [_Partition(tp.topic, tp.partition) for tp in tps]


def _start(offset: int | None) -> int:
    return OFFSET_BEGINNING if offset is None else offset
