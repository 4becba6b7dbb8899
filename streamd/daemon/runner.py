"""``streamd run``: the consumer-group loop around the :class:`~streamd.daemon.pipeline.Pipeline`.

    poll (bounded) → decode (bad records → dead-letter topic) → pipeline.feed → publish events
    every commit_interval_s: save changed stream states → flush producer → commit offsets

Delivery is at-least-once with deterministic event ids (docs/daemon.md): input offsets are
committed only after every event and state record caused by the records before them is
acknowledged by Kafka, so a crash replays at most the records after the last commit, and the
replay re-emits the same ids. Open plays are handed over through the compacted state topic.

Partitions are assigned by the group coordinator; one stream's chunks are on one partition (key =
stream id). On revocation the loop has finished its batch (the listener runs inside ``poll``): it
saves the states, flushes, commits and drops the streams of those partitions. On assignment it
seeks each partition back to ``warmup`` seconds before the committed position (the committed
offset's metadata holds the newest record timestamp processed), so buffers and encoder are full
when decisions resume at the committed offset.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamd import protocol
from streamd.config import Config
from streamd.daemon import state as stream_state
from streamd.daemon.pipeline import STARTED, Decision, Pipeline, Searcher, pipeline_from_config
from streamd.events import encode as encode_event
from streamd.httpserver import Heartbeat, OpsServer
from streamd.kafka_io import BoundedProducer, KafkaSendError, ensure_topics, make_consumer
from streamd.metrics import Metrics

log = logging.getLogger("streamd.daemon")

LAG_INTERVAL_S = 5.0
WINDOW_S = 1366 * 256 / 12000  # the ring's length in seconds (29.1 s)


class Daemon:
    """One daemon process. ``run()`` blocks until ``stop`` is set (SIGTERM) and returns 0."""

    def __init__(
        self,
        config: Config,
        fingerprinter: Any = None,
        searcher: Searcher | None = None,
        metrics: Metrics | None = None,
        stop: threading.Event | None = None,
        http: bool = True,
    ):
        self.config = config
        self.stop = stop or threading.Event()
        self._fp = fingerprinter
        self._searcher = searcher
        self.metrics = metrics
        self.http = http
        self.heartbeat = Heartbeat(config.daemon.health_stall_s)
        self.pipeline: Pipeline | None = None
        self.ops: OpsServer | None = None
        self.consumer: Any = None
        self.producer: BoundedProducer | None = None
        self.state_partitions = 0
        self.partition_of: dict[str, TopicPartition] = {}  # stream → its audio partition
        self.processed: dict[TopicPartition, int] = {}  # next offset to commit
        self.newest_record_ts: dict[TopicPartition, int] = {}
        self.warm_until: dict[TopicPartition, int] = {}  # records below this offset only warm up
        self.pending_state: dict[str, dict[str, Any]] = {}  # restored, not yet seen streams
        self._revoked: set[TopicPartition] = set()  # noted by the rebalance listener, handled after poll
        self._assigned: set[TopicPartition] = set()
        self.uncommitted = 0
        self.unacked_events = 0
        self.events_sent = 0
        self.deadlettered = 0

    # --- setup -------------------------------------------------------------------------------

    def _setup(self) -> None:
        config, kafka, d = self.config, self.config.kafka, self.config.daemon
        if self._fp is None:
            from streamd.model import load_fingerprinter

            self._fp = load_fingerprinter(config.model)
        if self._searcher is None:
            from streamd.store.replica import Replica

            self._searcher = Replica.from_config(config).start()
        if self.metrics is None:
            self.metrics = Metrics(top_streams=d.metrics_top_streams, model_version=self._fp.version)
        self.pipeline = pipeline_from_config(config, self._fp, self._searcher, metrics=self.metrics)
        ensure_topics(config, {kafka.audio_topic: kafka.audio_partitions, kafka.events_topic: kafka.audio_partitions,
                               kafka.deadletter_topic: 1})  # fmt: skip
        self.consumer = make_consumer(config, max_poll_records=d.max_poll_records)
        partitions = self.consumer.partitions_for_topic(kafka.audio_topic) or set()
        self.state_partitions = max(1, len(partitions))
        ensure_topics(config, {d.state_topic: self.state_partitions},
                      topic_configs={"cleanup.policy": "compact", "segment.ms": "600000"})  # fmt: skip
        self.producer = BoundedProducer(config, acks="all", linger_ms=2, client_id="streamd-daemon")
        if self.http:
            self.ops = OpsServer(d.http_host, d.http_port, self.metrics.render, self.heartbeat, {
                "partitions_assigned": lambda: bool(self.consumer is not None and self.consumer.assignment()),
                "catalog_loaded": lambda: getattr(self._searcher, "size", 1) > 0,
                "model_loaded": lambda: self._fp is not None,
            }).start()  # fmt: skip
        self.consumer.subscribe([kafka.audio_topic], listener=_Listener(self))
        log.info("daemon started", extra={"group": kafka.group_id, "topic": kafka.audio_topic,
                                          "model_version": self._fp.version,
                                          "catalog": getattr(self._searcher, "catalog_name", "")})  # fmt: skip

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self._setup()
        assert self.consumer is not None
        last_commit = last_lag = time.monotonic()
        try:
            while not self.stop.is_set():
                polled = self.consumer.poll(timeout_ms=200)
                if self._revoked:
                    self.on_revoked(self._revoked)
                    self._revoked = set()
                if self._assigned:
                    self.on_assigned(self._assigned)
                    # what this poll returned for them started at the committed offset: fetch again
                    polled = {tp: r for tp, r in polled.items() if tp not in self._assigned}
                    self._assigned = set()
                if polled:
                    self._process(polled)
                now = time.monotonic()
                if now - last_commit >= self.config.daemon.commit_interval_s:
                    self.commit()
                    last_commit = now
                if now - last_lag >= LAG_INTERVAL_S:
                    self._update_gauges()
                    last_lag = now
                self.heartbeat.beat()
                self.metrics.tick()
            self.commit()  # graceful stop: finish, publish, commit, leave the group
            log.info("daemon stopping", extra={"events": self.events_sent, "deadlettered": self.deadlettered})
        finally:
            self.close()
        return 0

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None
        if self.producer is not None:
            try:
                self.producer.close()
            finally:
                self.producer = None
        if self.ops is not None:
            self.ops.stop()
        stop = getattr(self._searcher, "stop", None)
        if stop is not None:
            stop()

    def _process(self, polled: dict[TopicPartition, list[Any]]) -> None:
        pipeline, m = self.pipeline, self.metrics
        assert pipeline is not None and self.producer is not None
        warm: list[protocol.Chunk] = []
        live: list[protocol.Chunk] = []
        n_bytes = 0
        for tp, records in polled.items():
            warm_until = self.warm_until.get(tp, -1)
            for record in records:
                try:
                    chunk = protocol.decode_record(record)
                except protocol.ProtocolError as exc:
                    self._dead_letter(record, exc.reason)
                    continue
                n_bytes += len(record.value)
                sid = chunk.stream_id
                if sid not in pipeline.streams and sid in self.pending_state:
                    pipeline.restore(self.pending_state.pop(sid))
                self.partition_of[sid] = tp
                (warm if record.offset < warm_until else live).append(chunk)
            self.processed[tp] = records[-1].offset + 1
            self.newest_record_ts[tp] = max(self.newest_record_ts.get(tp, 0), max(r.timestamp for r in records))
            self.uncommitted += len(records)
        m.chunks.inc(len(warm) + len(live))
        m.bytes.inc(n_bytes)
        if warm:
            self._publish(pipeline.feed(warm, warm=True))
        if live:
            self._publish(pipeline.feed(live))
        m.commit_lag.set(self.uncommitted)

    def _dead_letter(self, record: Any, reason: str) -> None:
        """A record that is not a chunk: count it and park it, with why, on the dead-letter topic.

        It also counts for its stream in the top-N view when its key names a stream this daemon
        has (keys of garbage records must not grow the per-stream table without bound)."""
        stream_id = record.key.decode("utf-8", errors="replace") if record.key else None
        known = self.pipeline is not None and stream_id in self.pipeline.streams
        self.metrics.chunk_error(reason, stream_id=stream_id if known else None)
        self.deadlettered += 1
        headers = [(k, v) for k, v in (record.headers or []) if k not in ("reason", "source")]
        headers += [("reason", reason.encode()), ("source", f"{record.topic}/{record.partition}/{record.offset}".encode())]
        self.producer.send(self.config.kafka.deadletter_topic, value=record.value if record.value is not None else b"",
                           key=record.key, headers=headers)  # fmt: skip
        log.warning("bad record sent to the dead-letter topic",
                    extra={"reason": reason, "topic": record.topic, "partition": record.partition,
                           "offset": record.offset})  # fmt: skip

    def _publish(self, decisions: list[Decision]) -> None:
        """Send the events; a play that started or ended also saves its stream's state at once."""
        if not decisions:
            return
        topic = self.config.kafka.events_topic
        for d in decisions:
            key, value = encode_event(d.document)
            self.producer.send(topic, value=value, key=key)
            self.unacked_events += 1
            self.events_sent += 1
            log.info("play %s", d.event.type, extra={"stream_id": d.document["stream_id"],
                     "track_id": d.document["track_id"], "play_id": d.document["play_id"],
                     "start_s": d.document["start_s"], "end_s": d.document["end_s"],
                     "confidence": d.document["confidence"]})  # fmt: skip
        # The events first: a saved open play whose `started` event was lost would never be re-sent.
        self._flush()
        for sid in {d.event.play.stream_id for d in decisions}:
            self._save_state(sid)
        if any(d.event.type == STARTED for d in decisions):
            self.metrics.open_plays.set(self.pipeline.tracker.n_open_plays)

    def _save_state(self, stream_id: str) -> None:
        tp = self.partition_of.get(stream_id)
        if tp is None or self.pipeline is None or stream_id not in self.pipeline.streams:
            return
        document = self.pipeline.export(stream_id)
        self.producer.send(self.config.daemon.state_topic, value=stream_state.encode(document),
                           key=stream_id.encode(), partition=tp.partition % self.state_partitions)  # fmt: skip

    # --- delivery ----------------------------------------------------------------------------

    def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Save changed states, wait for every event and state to be acknowledged, then commit."""
        if self.consumer is None or self.producer is None or self.pipeline is None:
            return
        for sid, info in list(self.pipeline.streams.items()):
            if info.dirty and (partitions is None or self.partition_of.get(sid) in partitions):
                self._save_state(sid)
        self._flush()
        offsets = {
            tp: OffsetAndMetadata(offset, json.dumps({"ts": self.newest_record_ts.get(tp, 0)}), -1)
            for tp, offset in self.processed.items()
            if partitions is None or tp in partitions
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except Exception as exc:  # e.g. a rebalance in progress: the next commit retries
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed", extra={"error": repr(exc)})
            return
        self.metrics.commits.inc()
        if partitions is None:
            self.uncommitted = 0
            self.metrics.commit_lag.set(0)

    def _flush(self) -> None:
        """Wait until Kafka acknowledged everything sent; a failure stops the daemon uncommitted."""
        try:
            self.producer.flush(timeout_s=60)
        except KafkaSendError as exc:
            self.metrics.event_failed("timeout" if "Timeout" in str(exc) else "rejected")
            log.error("events or states were not acknowledged; offsets stay uncommitted", extra={"error": str(exc)})
            raise
        self.metrics.events_published.inc(self.unacked_events)
        self.unacked_events = 0

    def _update_gauges(self) -> None:
        consumer, m = self.consumer, self.metrics
        assigned = consumer.assignment()
        if assigned:
            try:
                ends = consumer.end_offsets(list(assigned))
                m.set_consumer_lag({tp.partition: max(0, ends[tp] - consumer.position(tp)) for tp in assigned})
            except Exception as exc:  # a metrics refresh must never stop the loop
                log.debug("consumer lag refresh failed", extra={"error": repr(exc)})
        searcher = self._searcher
        if hasattr(searcher, "size"):
            m.set_catalog(searcher.catalog_name, searcher.version, searcher.size, getattr(searcher, "n_tracks", 0))
        delay = getattr(searcher, "sync_delay_s", None)
        if delay is not None and delay != float("inf"):
            m.replica_sync_delay.set(delay)
        m.active_streams.set(len(self.pipeline.streams))

    # --- rebalancing -------------------------------------------------------------------------

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop the streams of partitions another consumer now owns. Their offsets can no longer be
        committed by this one: the new owner replays from the last commit (at most
        ``commit_interval_s`` of audio) with the states saved then, so it emits the same ids."""
        revoked = set(revoked)
        if not revoked:
            return
        try:
            self._flush()  # events already decided still go out
        except KafkaSendError:
            pass
        gone = [sid for sid, tp in self.partition_of.items() if tp in revoked]
        self.pipeline.forget(gone)
        for sid in gone:
            del self.partition_of[sid]
        for tp in revoked:
            self.processed.pop(tp, None)
            self.warm_until.pop(tp, None)
            self.newest_record_ts.pop(tp, None)
        log.info("partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked),
                                              "streams": len(gone)})  # fmt: skip

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        if not assigned:
            return
        d = self.config.daemon
        self.pending_state.update(read_states(self.config, d.state_topic, {tp.partition % self.state_partitions
                                                                           for tp in assigned}))  # fmt: skip
        for tp in assigned:
            committed = self.consumer.committed(tp, metadata=True)
            if committed is None or committed.offset is None or committed.offset < 0:
                self.consumer.seek_to_beginning(tp)  # no position yet: everything, nothing to warm up
                continue
            start = committed.offset
            try:
                newest_ts = int(json.loads(committed.metadata or "{}").get("ts", 0))
            except (ValueError, AttributeError, TypeError):
                newest_ts = 0
            if newest_ts > 0:
                target = newest_ts - int((WINDOW_S + d.warmup_margin_s) * 1000)
                found = self.consumer.offsets_for_times({tp: max(0, target)}).get(tp)
                if found is not None:
                    start = min(start, found.offset)
            start = max(start, committed.offset - d.warmup_max_records)
            self.consumer.seek(tp, start)
            self.warm_until[tp] = committed.offset
            self.processed[tp] = committed.offset
            self.newest_record_ts[tp] = newest_ts
        log.info("partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned),
                                               "restored_streams": len(self.pending_state)})  # fmt: skip


class _Listener(ConsumerRebalanceListener):
    """Notes the changes only: kafka-python 3 runs listeners on its IO thread, where no blocking
    client call (commit, committed, offsets_for_times) is allowed; the loop acts on them after poll."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.daemon._revoked |= set(revoked)
        self.daemon._assigned -= set(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.daemon._assigned |= set(assigned)


def read_states(config: Config, topic: str, partitions: set[int], timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """The newest state document of every stream in ``partitions`` of the state topic."""
    consumer = make_consumer(config, group_id="", enable_auto_commit=False)
    states: dict[str, dict[str, Any]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    sid = record.key.decode("utf-8", errors="replace") if record.key else ""
                    if record.value is None:
                        states.pop(sid, None)
                        continue
                    try:
                        states[sid] = stream_state.decode(record.value)
                    except stream_state.StateError as exc:
                        log.warning("unreadable stream state skipped", extra={"stream_id": sid, "error": str(exc)})
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
        if remaining:
            log.warning("state topic not read to its end in time", extra={"partitions": [tp.partition for tp in remaining]})
    finally:
        consumer.close()
    return states

