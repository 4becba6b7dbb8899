"""``streamd run``: the consumer-group loop around the :class:`~streamd.daemon.pipeline.Pipeline`.

    poll (bounded) → decode (bad records → dead-letter topic) → pipeline.feed → publish events
    publish: save the deciding streams' states, with the new events as outbox → flush → send events
    rolling commits: each partition every commit_interval_s, one partition at a time (spread
    evenly over the interval): flush → save its changed stream states → flush → commit its offset

Delivery is at-least-once with deterministic event ids (docs/daemon.md, "Recovery"). Two rules
make a crash at any point recoverable:

1. An event is sent only after the state document of its stream that lists it (the *outbox*) is
   acknowledged. So every event ever sent is either acknowledged or in the outbox of its stream's
   newest state, and that state holds the whole tracker as of the decision: the next owner
   re-sends the outbox and continues from that state, never re-deciding a published play.
2. Input offsets are committed only after every event and state caused by the records before
   them is acknowledged: a restart replays at most the records after the last commit.

Partitions are assigned by the group coordinator; one stream's chunks are on one partition (key =
stream id). The audio is read through librdkafka (:mod:`streamd.daemon.source`), whose rebalance
callbacks run inside ``poll`` on this thread. On revocation the daemon flushes what it decided and
drops the streams of those partitions, without processing records of them any more. On
assignment it reads the streams' states and starts each partition a window (29 s), a hop and
``warmup_margin_s`` before the committed position (the committed offset's metadata holds the
newest record timestamp processed), so buffers and encoder are full when decisions resume after
the last decided hop of each restored stream.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition

from streamd import protocol
from streamd.config import Config
from streamd.daemon import state as stream_state
from streamd.daemon.allocator import freeze_startup_objects, space_young_collections, tune_malloc
from streamd.daemon.pipeline import STARTED, Decision, Pipeline, Searcher, pipeline_from_config
from streamd.daemon.source import AudioSource, Record
from streamd.events import encode as encode_event
from streamd.httpserver import Heartbeat, OpsServer
from streamd.kafka_io import BoundedProducer, KafkaSendError, ensure_topics, make_consumer
from streamd.metrics import Metrics

log = logging.getLogger("streamd.daemon")

LAG_INTERVAL_S = 5.0
DAEMON_MODEL_THREADS = 1  # model.threads 0 in the daemon: its other threads share the cores (docs/daemon.md, "Threads")
SLOW_ITERATION_S = 1.0  # a main-loop iteration this long is logged with where its time went


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
        self.consumer: AudioSource | None = None
        self.producer: BoundedProducer | None = None
        self.state_partitions = 0
        self.partition_of: dict[str, TopicPartition] = {}  # stream → its audio partition
        self.processed: dict[TopicPartition, int] = {}  # next offset to commit
        self.newest_record_ts: dict[TopicPartition, int] = {}
        self.warm_until: dict[TopicPartition, int] = {}  # records below this offset only warm up
        self.pending_state: dict[str, dict[str, Any]] = {}  # restored, not yet seen streams
        self.unacked: dict[str, list[dict[str, Any]]] = {}  # per stream: events sent since the last flush
        self.outbox_saved: set[str] = set()  # streams whose newest saved state lists an outbox
        self.uncommitted: dict[TopicPartition, int] = {}  # records processed since the partition's commit
        self.committed_at: dict[TopicPartition, float] = {}  # monotonic time of each partition's last commit
        self._torch_threads = 0  # torch's thread count before the daemon set its own (0: untouched)
        self._gc_threshold: tuple[int, int, int] | None = None  # the collector's thresholds before the daemon's
        self.unacked_events = 0
        self.events_sent = 0
        self.deadlettered = 0
        self._unwatch_gc: Callable[[], None] | None = None

    # --- setup -------------------------------------------------------------------------------

    def _setup(self) -> None:
        config, kafka, d = self.config, self.config.kafka, self.config.daemon
        tune_malloc(d.malloc_mmap_threshold_kb, d.malloc_arena_max, d.malloc_trim_threshold_kb)
        if self._fp is None:
            from streamd.model import load_fingerprinter

            if config.model.threads == 0:
                import torch

                self._torch_threads = torch.get_num_threads()  # given back by close()
                torch.set_num_threads(DAEMON_MODEL_THREADS)
            self._fp = load_fingerprinter(config.model)
        if self._searcher is None:
            from streamd.store.replica import Replica

            self._searcher = Replica.from_config(config).start()
        if self.metrics is None:
            self.metrics = Metrics(top_streams=d.metrics_top_streams, model_version=self._fp.version)
        per_core = bool(self._torch_threads) and self._fp.device.type == "cpu"  # one model thread: one part per core
        split = config.model.batch_split or ((os.cpu_count() or 1) if per_core else 1)
        self.pipeline = pipeline_from_config(config, self._fp, self._searcher, metrics=self.metrics, batch_split=split)
        self._unwatch_gc = self.metrics.watch_gc()
        ensure_topics(config, {kafka.audio_topic: kafka.audio_partitions, kafka.events_topic: kafka.audio_partitions,
                               kafka.deadletter_topic: 1})  # fmt: skip
        self.consumer = AudioSource(config, self.on_assigned, self.on_revoked, max_records=d.max_poll_records,
                                    session_timeout_s=d.session_timeout_s)  # fmt: skip
        partitions = self.consumer.partitions_for_topic(kafka.audio_topic) or set()
        self.state_partitions = max(1, len(partitions))
        ensure_topics(config, {d.state_topic: self.state_partitions},
                      topic_configs={"cleanup.policy": "compact", "segment.ms": "60000"})  # fmt: skip
        self.producer = BoundedProducer(config, acks="all", linger_ms=2, client_id="streamd-daemon")
        if self.http:
            self.ops = OpsServer(d.http_host, d.http_port, self.metrics.render, self.heartbeat, {
                "partitions_assigned": lambda: bool(self.consumer is not None and self.consumer.assignment()),
                "catalog_loaded": lambda: getattr(self._searcher, "size", 1) > 0,
                "model_loaded": lambda: self._fp is not None,
            }).start()  # fmt: skip
        self.consumer.subscribe(kafka.audio_topic)
        if d.gc_freeze:
            freeze_startup_objects()
        if d.gc_young_threshold:
            self._gc_threshold = space_young_collections(d.gc_young_threshold)  # given back by close()
        log.info("daemon started", extra={"group": kafka.group_id, "topic": kafka.audio_topic,
                                          "model_version": self._fp.version,
                                          "catalog": getattr(self._searcher, "catalog_name", "")})  # fmt: skip

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self._setup()
        assert self.consumer is not None
        next_commit = last_lag = time.monotonic()
        try:
            while not self.stop.is_set():
                t_start = time.monotonic()
                polled = self.consumer.poll(0.2)  # rebalances are handled inside (on_revoked, on_assigned)
                t_polled = time.monotonic()
                if polled:
                    self._process(polled)
                now = t_processed = time.monotonic()
                if now >= next_commit:
                    due = self._due_partition()
                    if due is not None:
                        self.commit({due})
                    step = self.config.daemon.commit_interval_s / max(1, len(self.processed))
                    next_commit = max(now, next_commit + step)  # a steady cadence, no burst after a stall
                t_committed = time.monotonic()
                if now - last_lag >= LAG_INTERVAL_S:
                    self._update_gauges()
                    last_lag = now
                self.heartbeat.beat()
                self.metrics.tick()
                t_end = time.monotonic()
                if t_end - t_start >= SLOW_ITERATION_S:
                    log.warning("slow main-loop iteration", extra={
                        "seconds": round(t_end - t_start, 3), "poll_s": round(t_polled - t_start, 3),
                        "process_s": round(t_processed - t_polled, 3), "commit_s": round(t_committed - t_processed, 3),
                        "gauges_s": round(t_end - t_committed, 3), "records": sum(map(len, polled.values())),
                        "round": dataclasses.asdict(self.pipeline.last_round)})  # fmt: skip  # the newest round
            self.commit()  # graceful stop: finish, publish, commit, leave the group
            log.info("daemon stopping", extra={"events": self.events_sent, "deadlettered": self.deadlettered})
        finally:
            self.close()
        return 0

    def close(self) -> None:
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        if self._torch_threads:
            import torch

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = 0
        if self._unwatch_gc is not None:
            self._unwatch_gc()
            self._unwatch_gc = None
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.producer is not None:
            try:
                self.producer.close()
            finally:
                self.producer = None
        if self.ops is not None:
            self.ops.stop()
        if self.pipeline is not None:
            self.pipeline.close()
        stop = getattr(self._searcher, "stop", None)
        if stop is not None:
            stop()

    def _process(self, polled: dict[TopicPartition, list[Record]]) -> None:
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
                self.partition_of[sid] = tp
                if sid not in pipeline.streams and sid in self.pending_state:
                    self._restore(self.pending_state.pop(sid))
                (warm if record.offset < warm_until else live).append(chunk)
            self.processed[tp] = records[-1].offset + 1
            self.newest_record_ts[tp] = max(self.newest_record_ts.get(tp, 0), max(r.timestamp for r in records))
            self.uncommitted[tp] = self.uncommitted.get(tp, 0) + len(records)
        m.chunks.inc(len(warm) + len(live))
        m.bytes.inc(n_bytes)
        if warm:
            self._publish(pipeline.feed(warm, warm=True))
        if live:
            self._publish(pipeline.feed(live))
        m.commit_lag.set(sum(self.uncommitted.values()))

    def _dead_letter(self, record: Record, reason: str) -> None:
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
        """Save the deciding streams' states with these events as outbox, wait until Kafka has them,
        then send the events (rule 1 of the module docstring)."""
        if not decisions:
            return
        new: dict[str, list[dict[str, Any]]] = {}
        for d in decisions:
            new.setdefault(d.document["stream_id"], []).append(d.document)
        for sid, documents in new.items():
            self._save_state(sid, documents)
        self._flush()
        for d in decisions:
            self._send_event(d.document, d.event.type)
        if any(d.event.type == STARTED for d in decisions):
            self.metrics.open_plays.set(self.pipeline.tracker.n_open_plays)

    def _send_event(self, document: dict[str, Any], kind: str, resent: bool = False) -> None:
        key, value = encode_event(document)
        self.producer.send(self.config.kafka.events_topic, value=value, key=key)
        self.unacked.setdefault(document["stream_id"], []).append(document)
        self.unacked_events += 1
        self.events_sent += 1
        log.info("play %s%s", kind, " (re-sent from the outbox)" if resent else "",
                 extra={"stream_id": document["stream_id"], "track_id": document["track_id"],
                        "play_id": document["play_id"], "start_s": document["start_s"],
                        "end_s": document["end_s"], "confidence": document["confidence"]})  # fmt: skip

    def _restore(self, document: dict[str, Any]) -> None:
        """Take a stream over from its state document; re-send the events it lists as unacknowledged."""
        self.pipeline.restore(document)
        for event in document.get("outbox", []):
            self._send_event(event, event["type"], resent=True)

    def _save_state(self, stream_id: str, new_events: list[dict[str, Any]] | None = None) -> None:
        """Send the stream's state; its outbox: the events sent and not acknowledged, plus ``new_events``."""
        tp = self.partition_of.get(stream_id)
        if tp is None or self.pipeline is None or stream_id not in self.pipeline.streams:
            return
        outbox = self.unacked.get(stream_id, []) + (new_events or [])
        document = self.pipeline.export(stream_id, outbox)
        self.producer.send(self.config.daemon.state_topic, value=stream_state.encode(document),
                           key=stream_id.encode(), partition=tp.partition % self.state_partitions)  # fmt: skip
        if outbox:
            self.outbox_saved.add(stream_id)
        else:
            self.outbox_saved.discard(stream_id)

    # --- delivery ----------------------------------------------------------------------------

    def _due_partition(self) -> TopicPartition | None:
        """The processed partition committed longest ago (rolling commits: one at a time keeps
        each stop of the main loop short, ~1/n of saving every stream's state at once)."""
        return min(self.processed, key=lambda tp: self.committed_at.get(tp, 0.0), default=None)

    def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Wait for the events, save the changed states of ``partitions``' streams (all if None),
        wait for them, then commit those partitions' offsets (rule 2)."""
        if self.consumer is None or self.producer is None or self.pipeline is None:
            return
        with self.metrics.commit_seconds.time():
            self._commit(partitions)

    def _commit(self, partitions: set[TopicPartition] | None) -> None:
        self._flush()  # every event sent is acknowledged: the states saved now need no outbox
        for sid, info in list(self.pipeline.streams.items()):
            if info.dirty and (partitions is None or self.partition_of.get(sid) in partitions):
                self._save_state(sid)
        self._flush()
        offsets = {
            tp: (offset, json.dumps({"ts": self.newest_record_ts.get(tp, 0)}))
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
        now = time.monotonic()
        for tp in offsets:
            self.uncommitted.pop(tp, None)
            self.committed_at[tp] = now
        self.metrics.commit_lag.set(sum(self.uncommitted.values()))

    def _flush(self) -> None:
        """Wait until Kafka acknowledged everything sent; a failure stops the daemon uncommitted.

        Streams whose saved state lists an outbox are marked changed: their next state needs none."""
        try:
            self.producer.flush(timeout_s=60)
        except KafkaSendError as exc:
            self.metrics.event_failed("timeout" if "Timeout" in str(exc) else "rejected")
            log.error("events or states were not acknowledged; offsets stay uncommitted", extra={"error": str(exc)})
            raise
        self.metrics.events_published.inc(self.unacked_events)
        self.unacked_events = 0
        self.unacked.clear()
        for sid in self.outbox_saved:
            info = self.pipeline.streams.get(sid)
            if info is not None:
                info.dirty = True

    def _update_gauges(self) -> None:
        m = self.metrics
        try:
            m.set_consumer_lag(self.consumer.lag())
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

    @property
    def warmup_s(self) -> float:
        """Audio replayed before the committed position: the ring (29.1 s), a hop, the margin."""
        fe, model = self.config.frontend, self.config.model
        return (fe.window_frames + model.hop_frames) * fe.hop_length / fe.sample_rate + self.config.daemon.warmup_margin_s

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop the streams of partitions another consumer now owns, after flushing what they
        decided. No state is saved and no offset committed any more: the new owner may already be
        reading them. It replays from the last commit with the newest states, which list every
        event not acknowledged (rule 1), so it re-sends rather than re-decides them."""
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
            self.unacked.pop(sid, None)  # if the flush failed, they are in the outbox of the saved state
            self.outbox_saved.discard(sid)
        for tp in revoked:
            self.processed.pop(tp, None)
            self.uncommitted.pop(tp, None)
            self.committed_at.pop(tp, None)
            self.warm_until.pop(tp, None)
            self.newest_record_ts.pop(tp, None)
        log.info("partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked),
                                              "streams": len(gone)})  # fmt: skip

    def on_assigned(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Read the new partitions' stream states; return where each partition's reading starts:
        ``warmup_s`` of audio before its committed offset (``None``: from the beginning, nothing
        committed yet)."""
        if not assigned:
            return {}
        d = self.config.daemon
        states = read_states(self.config, d.state_topic, {tp.partition % self.state_partitions for tp in assigned})
        running = self.pipeline.streams  # a state partition may also hold streams this daemon runs already
        self.pending_state.update((sid, doc) for sid, doc in states.items() if sid not in running)
        committed = self.consumer.committed(assigned)
        starts: dict[TopicPartition, int | None] = {tp: None for tp in assigned}
        newest: dict[TopicPartition, int] = {}
        for tp, found in committed.items():
            if found is None:
                continue
            offset, metadata = found
            try:
                newest[tp] = int(json.loads(metadata or "{}").get("ts", 0))
            except (ValueError, AttributeError, TypeError):
                newest[tp] = 0
            starts[tp] = offset
            self.warm_until[tp] = offset
            self.processed[tp] = offset
            self.newest_record_ts[tp] = newest[tp]
        warm_from = {tp: max(0, ts - int(self.warmup_s * 1000)) for tp, ts in newest.items() if ts > 0}
        if warm_from:
            for tp, offset in self.consumer.offsets_for_times(warm_from).items():
                if offset is not None:
                    starts[tp] = min(starts[tp], offset)
        for tp in newest:
            starts[tp] = max(starts[tp], self.warm_until[tp] - d.warmup_max_records)
        log.info("partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned),
                                               "restored_streams": len(self.pending_state)})  # fmt: skip
        return starts


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

