"""The daemon against the real local Kafka: a simulated broadcast in, play events out.

Most tests use the test fingerprinter (tests/daemon_doubles.py) so that they check the daemon's
mechanics whatever the state of the model's training; ``test_end_to_end_real_model`` checks the
recognition targets with the shipped weights.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.request

import numpy as np
import pytest
from daemon_doubles import ProjectionFingerprinter
from daemon_helpers import (
    broadcast,
    catalog_searcher,
    corpus_tracks,
    daemon_config,
    ingest_streams,
    match_plays,
    start_daemon_process,
    topics_of,
)
from fault_helpers import reference_events
from kafka import TopicPartition

from streamd import ingest, protocol
from streamd.daemon import eventlog
from streamd.daemon.runner import Daemon
from streamd.kafka_io import BoundedProducer, delete_topics, ensure_topics, make_consumer
from streamd.metrics import Metrics

BOUNDARY_S = 2.0


@pytest.fixture
def cleanup(config):
    created = []
    yield created
    for cfg in created:
        delete_topics(cfg, topics_of(cfg))


def wait_until_consumed(config, timeout_s: float) -> bool:
    """True once the group's committed offsets reach the end of every audio partition (that has records)."""
    consumer = make_consumer(config)  # the daemon's group, never joined: only reads its offsets
    try:
        topic = config.kafka.audio_topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(ends[tp] == 0 or (consumer.committed(tp) or -1) >= ends[tp] for tp in tps):
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()


def run_in_thread(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    return thread


def check_against_truth(truth, plays, check_false: bool = True, boundary_s: float = BOUNDARY_S):
    result = match_plays(truth, plays)
    stream_end = {s["stream"]: s["duration_s"] for s in truth["stations"]}
    problems = []
    for i, segment in enumerate(result["required"]):
        found = result["found"][i]
        where = f"{segment['stream']} {segment['track_id']} {segment['start_s']:.1f}-{segment['end_s']:.1f}"
        if len(found) != 1:
            problems.append(f"{where}: found by {len(found)} plays")
            continue
        p = found[0]
        if abs(p["start_s"] - segment["start_s"]) > boundary_s:
            problems.append(f"{where}: start {p['start_s']:.1f}")
        if segment["end_s"] < stream_end[segment["stream"]] - 1 and (
            p["end_s"] is None or abs(p["end_s"] - segment["end_s"]) > boundary_s
        ):
            problems.append(f"{where}: end {p['end_s']}")
    if check_false:
        problems += [f"false play {p['stream_id']} {p['track_id']} {p['start_s']:.1f}-{p['end_s']}" for p in result["false"]]
    return result, problems


def check_ids(events, plays):
    """Every play: exactly one started id and at most one ended id, the same play id in both."""
    for play in plays.values():
        assert len(play["started_ids"]) == 1, play
        assert len(play["ended_ids"]) <= 1, play
    assert all(e["event_id"] != e["play_id"] for e in events)


@pytest.mark.timeout(300)
def test_end_to_end_with_kafka(config, kafka_bootstrap, corpus_dir, unique, tmp_path, cleanup):
    cfg = daemon_config(unique, partitions=2)
    cleanup.append(cfg)
    catalog, unknown = corpus_tracks(8, 3)
    truth, audios = broadcast(tmp_path, catalog, unknown, minutes=2.5, streams=3)
    fp = ProjectionFingerprinter()
    ingest_streams(cfg, audios)
    metrics = Metrics(process=False, gpu=False)
    daemon = Daemon(cfg, fingerprinter=fp, searcher=catalog_searcher(fp, catalog), metrics=metrics)
    thread = run_in_thread(daemon)
    try:
        assert wait_until_consumed(cfg, 200), "the daemon did not consume the broadcast in time"
        port = daemon.ops.port
        for path in ("/healthz", "/readyz"):
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").status == 200
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert "streamd_hops_total" in text and "streamd_decision_delay_seconds_bucket" in text
    finally:
        daemon.stop.set()
        thread.join(60)
    assert not thread.is_alive()
    events = eventlog.read_events(cfg)
    plays = eventlog.plays(events)
    check_ids(events, plays)
    # The test fingerprinter matches leading/trailing silence of a track too: boundaries to 6 s here;
    # the 2 s target and false events are checked with the real model below.
    result, problems = check_against_truth(truth, plays, check_false=False, boundary_s=6.0)
    assert result["required"], "the broadcast has no catalog play to find"
    assert not problems, problems
    assert metrics.chunks._value.get() == sum(-(-len(a) // 6000) for a in audios.values())
    assert metrics.events_published._value.get() == len(events)


NO_SHEDDING = {"daemon.shed_lag_s": 3600.0, "daemon.max_lag_s": 3600.0}
"""Audio stamped in the past is all behind the wall clock: shedding would drop it (and depends on timing)."""


def produce_records(config, records) -> None:
    with BoundedProducer(config) as producer:
        ingest.produce(records, producer, config.kafka.audio_topic)


def wait_for_new_events(config, known: set[str], n: int, timeout_s: float, proc) -> None:
    """Wait until the events topic holds ``n`` event ids not in ``known`` (while ``proc`` runs)."""
    deadline = time.monotonic() + timeout_s
    while len({e["event_id"] for e in eventlog.read_events(config, idle_s=0.2)} - known) < n:
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"fewer than {n} new events within {timeout_s} s"
        time.sleep(0.3)


@pytest.mark.timeout(420)
def test_restart_after_sigkill_keeps_plays_and_ids(config, kafka_bootstrap, corpus_dir, unique, tmp_path, cleanup):
    """Two crashes mid-broadcast, and the events topic holds exactly the event ids of an undisturbed run.

    The broadcast (3 stations, 3 min, capture times in the past so that Kafka's record timestamps
    are capture times, as with live ingest) arrives in three parts. Daemon 1 gets part 1 and kills
    itself in the narrowest window (the states listing a new play's events acknowledged, the events
    not sent); daemon 2 gets part 2 as well and is SIGKILLed from outside once it has published a
    few events, at a moment the test does not choose; daemon 3 gets the rest and stops. Recovery
    must re-send the unsent events from the outbox and continue every stream exactly (same hops,
    same tracker state), so the set of event ids equals the fault-free reference's — no play lost,
    split or re-identified — and every required play of the truth is found by exactly one play id.
    """
    # small polls: decisions go out a few seconds of audio at a time, as with live input
    cfg = daemon_config(unique, partitions=2, **NO_SHEDDING, **{"daemon.max_poll_records": 20})
    cleanup.append(cfg)
    catalog, unknown = corpus_tracks(8, 3)
    truth, audios = broadcast(tmp_path, catalog, unknown, minutes=3, streams=3, seed=2,
                              weights=(("catalog", 0.8), ("silence", 0.2)))
    fp = ProjectionFingerprinter()
    start_ms = ingest.now_ms() - 600_000  # NO_SHEDDING keeps audio up to an hour old
    reference = reference_events(cfg, fp, catalog_searcher(fp, catalog), audios, start_ms)
    _, ref_problems = check_against_truth(truth, eventlog.plays(reference), check_false=False, boundary_s=6.0)
    assert not [p for p in ref_problems if "found by" in p], f"the undisturbed run itself: {ref_problems}"
    records = list(ingest.merge_by_time(*(ingest.stream_chunks(a, 12000, sid, 500, start_ts_ms=start_ms)
                                          for sid, a in audios.items())))  # fmt: skip
    part_2 = next(i for i, r in enumerate(records) if r.timestamp_ms >= start_ms + 70_000)
    part_3 = next(i for i, r in enumerate(records) if r.timestamp_ms >= start_ms + 130_000)
    ids = [t.track_id for t in catalog]
    logs = [tmp_path / f"daemon{i}.log" for i in (1, 2, 3)]

    def tail(i: int) -> str:
        return logs[i].read_text()[-3000:]

    ensure_topics(cfg, {cfg.kafka.audio_topic: 2})
    produce_records(cfg, records[:part_2])
    first = start_daemon_process(cfg, ids, logs[0], crash="outbox:40")
    try:
        assert first.wait(180) == -signal.SIGKILL, tail(0)
    finally:
        if first.poll() is None:
            first.kill()
    crashed = eventlog.read_events(cfg)
    open_at_crash = {e["play_id"] for e in crashed if e["type"] == "started"} - {
        e["play_id"] for e in crashed if e["type"] == "ended"}
    assert open_at_crash, "no play was open at the crash"

    produce_records(cfg, records[part_2:part_3])
    second = start_daemon_process(cfg, ids, logs[1])
    try:
        wait_for_new_events(cfg, {e["event_id"] for e in crashed}, 6, 180, second)  # outbox re-sent, and more
        second.send_signal(signal.SIGKILL)
        second.wait(30)
    finally:
        if second.poll() is None:
            second.kill()
    assert "re-sent from the outbox" in logs[1].read_text(), tail(1)

    produce_records(cfg, records[part_3:])
    third = start_daemon_process(cfg, ids, logs[2])
    try:
        assert wait_until_consumed(cfg, 240), tail(2)
        third.send_signal(signal.SIGTERM)
        assert third.wait(60) == 0, tail(2)
    finally:
        if third.poll() is None:
            third.kill()

    events = eventlog.read_events(cfg)
    plays = eventlog.plays(events)
    check_ids(events, plays)
    got, want = {e["event_id"] for e in events}, {e["event_id"] for e in reference}
    differing = [f"{'extra' if e['event_id'] in got else 'missing'} {e['type']} {e['stream_id']} {e['track_id']} "
                 f"{e['start_s']:.1f}-{e['end_s']}" for e in events + reference if e["event_id"] in got ^ want]  # fmt: skip
    assert got == want, differing
    _, problems = check_against_truth(truth, plays, check_false=False, boundary_s=6.0)
    assert not [p for p in problems if "found by" in p], problems
    for pid in open_at_crash:  # a play open at the crash ended once, under the id it started with
        assert len(plays[pid]["ended_ids"]) == 1 or plays[pid]["end_s"] is None, plays[pid]


@pytest.mark.timeout(180)
def test_bad_records_go_to_dead_letter_with_reason(config, kafka_bootstrap, unique, cleanup):
    cfg = daemon_config(unique, partitions=1)
    cleanup.append(cfg)
    ensure_topics(cfg, {cfg.kafka.audio_topic: 1})
    tone = (0.2 * np.sin(np.arange(12000 * 4) * 0.05)).astype("float32")
    start = int(time.time() * 1000)
    good = [protocol.encode("good", tone[i : i + 6000], 12000, seq, start + seq * 500) for seq, i in enumerate(range(0, len(tone), 6000))]
    with BoundedProducer(cfg) as producer:
        topic = cfg.kafka.audio_topic
        producer.send(topic, value=b"\x00\x01\x02", key=b"bad", headers=[("v", b"1")])  # missing_header
        r = good[0]
        producer.send(topic, value=r.value[:-1], key=b"bad", headers=r.headers)  # bad_length
        producer.send(topic, value=r.value, key=None, headers=r.headers)  # missing_key
        for r in good:
            producer.send(topic, value=r.value, key=r.key, headers=r.headers)
    fp = ProjectionFingerprinter()
    metrics = Metrics(process=False, gpu=False)
    daemon = Daemon(cfg, fingerprinter=fp, searcher=catalog_searcher(fp, []), metrics=metrics, http=False)
    thread = run_in_thread(daemon)
    try:
        assert wait_until_consumed(cfg, 60)
    finally:
        daemon.stop.set()
        thread.join(30)
    consumer = make_consumer(cfg, group_id="")
    tp = TopicPartition(cfg.kafka.deadletter_topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    parked = []
    deadline = time.monotonic() + 20
    while len(parked) < 3 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            parked += records
    consumer.close()
    reasons = sorted(dict(r.headers)["reason"].decode() for r in parked)
    assert reasons == ["bad_length", "missing_header", "missing_key"]
    assert all(dict(r.headers)["source"].startswith(cfg.kafka.audio_topic.encode()) for r in parked)
    for reason in reasons:
        assert metrics.chunk_errors.labels(reason)._value.get() == 1
    assert metrics.chunks._value.get() == len(good)
    assert "good" in daemon.pipeline.streams and daemon.pipeline.bank.frame_count("good") > 0


def feed_tone_streams(cfg, daemon: Daemon, streams: int = 12, chunks: int = 16) -> bool:
    """Run ``daemon`` in a thread while ``streams`` tone streams are produced in real time (500 ms
    chunks); stop it once everything is committed. True if everything was committed in time."""
    tone = (0.2 * np.sin(np.arange(12000 * 2) * 0.05)).astype("float32")
    thread = run_in_thread(daemon)
    start = int(time.time() * 1000)
    try:
        with BoundedProducer(cfg) as producer:
            for seq in range(chunks):
                for n in range(streams):
                    r = protocol.encode(f"s{n}", tone[(seq % 4) * 6000 : (seq % 4 + 1) * 6000], 12000, seq, start + seq * 500)
                    producer.send(cfg.kafka.audio_topic, value=r.value, key=r.key, headers=r.headers)
                producer.flush()
                time.sleep(0.5)
        return wait_until_consumed(cfg, 30)
    finally:
        daemon.stop.set()
        thread.join(30)


def tone_daemon(cfg) -> Daemon:
    ensure_topics(cfg, {cfg.kafka.audio_topic: cfg.kafka.audio_partitions})
    fp = ProjectionFingerprinter()
    return Daemon(cfg, fingerprinter=fp, searcher=catalog_searcher(fp, []), metrics=Metrics(process=False, gpu=False), http=False)


def test_commits_roll_one_partition_at_a_time(config, kafka_bootstrap, unique, cleanup):
    """Rolling commits: each commit saves the states of one partition's streams and commits that
    partition only; every partition is committed about every ``commit_interval_s``; at the end
    every record is committed."""
    cfg = daemon_config(unique, partitions=4, **{"daemon.commit_interval_s": 2.0})
    cleanup.append(cfg)
    daemon = tone_daemon(cfg)
    commits: list[tuple[float, frozenset | None]] = []
    commit = daemon.commit
    daemon.commit = lambda partitions=None: (commits.append((time.monotonic(), partitions and frozenset(
        tp.partition for tp in partitions))), commit(partitions))  # fmt: skip
    assert feed_tone_streams(cfg, daemon)
    rolling = commits[:-1]  # the last one: the graceful stop commits everything
    assert commits[-1][1] is None
    assert rolling and all(parts is not None and len(parts) == 1 for _, parts in rolling)
    by_partition: dict[int, list[float]] = {}
    for t, parts in rolling:
        by_partition.setdefault(next(iter(parts)), []).append(t)
    assert len(by_partition) >= 2, "the 12 streams hash to several partitions"
    for times in by_partition.values():
        gaps = np.diff(times)
        assert gaps.size and gaps.max() < 2.0 + 0.5, f"a partition waited {gaps.max():.1f} s for its commit"



def test_young_collections_are_spaced_out_while_the_daemon_runs(config, kafka_bootstrap, unique, cleanup):
    """``daemon.gc_young_threshold`` holds while the daemon runs; closing gives the process its
    collector thresholds back."""
    import gc

    cfg = daemon_config(unique, partitions=1, **{"daemon.gc_young_threshold": 12_345})
    cleanup.append(cfg)
    before = gc.get_threshold()
    daemon = tone_daemon(cfg)
    seen = []
    commit = daemon.commit
    daemon.commit = lambda partitions=None: (seen.append(gc.get_threshold()), commit(partitions))
    assert feed_tone_streams(cfg, daemon, streams=2, chunks=6)
    assert seen and all(t == (12_345, *before[1:]) for t in seen)
    assert gc.get_threshold() == before

def test_slow_iterations_are_logged_with_their_breakdown(config, kafka_bootstrap, unique, cleanup, caplog, monkeypatch):
    from streamd.daemon import runner

    monkeypatch.setattr(runner, "SLOW_ITERATION_S", 0.0)  # every iteration counts as slow
    cfg = daemon_config(unique, partitions=1)
    cleanup.append(cfg)
    caplog.set_level("WARNING", logger="streamd.daemon")
    assert feed_tone_streams(cfg, tone_daemon(cfg), streams=2, chunks=6)
    slow = [r for r in caplog.records if r.getMessage() == "slow main-loop iteration"]
    assert slow
    for r in slow:
        parts = r.poll_s + r.process_s + r.commit_s + r.gauges_s
        assert parts <= r.seconds + 0.002 and r.seconds - parts < 0.05
    worked = [r for r in slow if r.records]
    assert worked and all(set(r.round) >= {"hops", "frontend_s", "model_s", "search_s", "decision_s"} for r in worked)


@pytest.mark.timeout(600)
def test_end_to_end_real_model(config, kafka_bootstrap, redis_url, corpus_dir, unique, tmp_path, cleanup):
    """The issue's acceptance test with the shipped weights: catalog indexed into Redis, 3 clean
    stations with crossfades, unknown music and silence through Kafka; every catalog play found
    once with boundaries within 2 s, and no event on unknown audio."""
    from streamd.indexer import index_paths
    from streamd.model import load_fingerprinter
    from streamd.store.catalog import Catalog, connect
    from streamd.store.replica import Replica

    name = unique("catalog").replace(".", "-")[-60:]
    cfg = daemon_config(unique, partitions=2, **{"store.catalog": name})
    cleanup.append(cfg)
    catalog, unknown = corpus_tracks(6, 3)
    truth, audios = broadcast(tmp_path, catalog, unknown, minutes=2.5, streams=3)
    fp = load_fingerprinter(cfg.model)
    manifest = tmp_path / "catalog.csv"
    manifest.write_text("track_id,path\n" + "".join(f"{t.track_id},{t.path}\n" for t in catalog))
    index_paths(cfg, name, [], manifest=manifest, encoder_factory=lambda: fp)
    client = connect(cfg.redis)
    replica = Replica.from_config(cfg).start()
    try:
        ingest_streams(cfg, audios)
        daemon = Daemon(cfg, fingerprinter=fp, searcher=replica, metrics=Metrics(process=False, gpu=False), http=False)
        thread = run_in_thread(daemon)
        try:
            assert wait_until_consumed(cfg, 420), "the daemon did not consume the broadcast in time"
        finally:
            daemon.stop.set()
            thread.join(60)
    finally:
        replica.stop()
        Catalog(client, name).delete()
        client.close()
    events = eventlog.read_events(cfg)
    plays = eventlog.plays(events)
    check_ids(events, plays)
    result, problems = check_against_truth(truth, plays, check_false=True)
    assert result["required"]
    assert not problems, f"model {fp.version}: {len(problems)} problem(s): {problems}"
