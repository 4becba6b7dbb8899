"""Fault tests: the daemon under a Redis restart and outage, a Kafka broker restart, a second daemon
joining and leaving its group, and a 10x burst (issue 11). docs/reliability.md has the outcomes.

Each test streams a simulated broadcast (ground truth from streamd.eval.simulate) through Kafka
while the fault happens, reads the events topic back and compares it with the truth and with a
fault-free reference run of the same chunks (tests/fault_helpers.py, ``assert_delivered``): no
catalog play lost or given a second play id; where the daemon keeps its streams through the fault
(Redis restart and outage, broker restart) exactly the reference's event ids, each delivered as
often; where streams change hands (rebalance) re-sends carry the same ids. The daemon runs with
the test fingerprinter (tests/daemon_doubles.py): these tests measure delivery, not recognition
quality. Servers that are broken on purpose are private ones on free ports
(tests/fault_helpers.py); the shared Kafka and Redis are never touched. The kill -9 and restart
case is tests/test_daemon.py's ``test_restart_after_sigkill_keeps_plays_and_ids``.
"""

from __future__ import annotations

import collections
import itertools
import signal
import time

import numpy as np
import psutil
import pytest
from daemon_doubles import ProjectionFingerprinter
from daemon_helpers import (
    catalog_searcher,
    corpus_tracks,
    daemon_config,
    start_daemon_process,
    topics_of,
)
from fault_helpers import (
    DaemonThread,
    PacedIngest,
    PrivateKafka,
    PrivateRedis,
    assert_delivered,
    fault_broadcast,
    group_lag,
    looped_blocks,
    reference_events,
    wait_consumed,
)

from streamd import dataset, ingest
from streamd.daemon import eventlog
from streamd.daemon.runner import Daemon
from streamd.kafka_io import delete_topics
from streamd.metrics import Metrics
from streamd.store.replica import Replica

NO_SHEDDING = {"daemon.shed_lag_s": 3600.0, "daemon.max_lag_s": 3600.0}
"""Fault tests compare with a fault-free reference run: shedding (wall-clock dependent) is off."""


@pytest.fixture
def cleanup():
    created = []
    yield created
    for cfg in created:
        delete_topics(cfg, topics_of(cfg))


def index_catalog(cfg, name, tracks, fp, folder) -> None:
    from streamd.indexer import index_paths

    manifest = folder / "catalog.csv"
    manifest.write_text("track_id,path\n" + "".join(f"{t.track_id},{t.path}\n" for t in tracks))
    report = index_paths(cfg, name, [], manifest=manifest, encoder_factory=lambda: fp)
    assert not report.failed


@pytest.mark.parametrize(
    ("outage_s", "speed"),
    [pytest.param(1.0, 4.0, id="restart"), pytest.param(30.0, 2.0, id="outage-30s", marks=pytest.mark.slow)],
)
@pytest.mark.timeout(300)
def test_redis_restart_and_outage_lose_nothing(outage_s, speed, config, kafka_bootstrap, corpus_dir, unique,
                                               tmp_path, cleanup):  # fmt: skip
    """Redis (the catalog) goes away during ingestion: the daemon keeps recognising from its local
    replica, reports the replica's growing age, resyncs when Redis is back, and loses nothing."""
    redis = PrivateRedis(tmp_path / "redis").start()
    try:
        cfg = daemon_config(unique, partitions=2, **NO_SHEDDING, **{"redis.url": redis.url, "store.catalog": "faults",
                                                                   "redis.socket_timeout_s": 2.0})  # fmt: skip
        cleanup.append(cfg)
        catalog, _ = corpus_tracks(8, 0)
        truth, audios = fault_broadcast(tmp_path, catalog, minutes=2, streams=3, seed=3)
        fp = ProjectionFingerprinter()
        index_catalog(cfg, "faults", catalog, fp, tmp_path)
        start_ms = ingest.now_ms()
        with Replica.from_config(cfg) as replica:
            reference = reference_events(cfg, fp, replica, audios, start_ms)
        metrics = Metrics(process=False, gpu=False)
        runner = DaemonThread(Daemon(cfg, fingerprinter=fp, metrics=metrics, http=False))
        feed = PacedIngest(cfg, audios, speed=speed, start_ms=start_ms).start()
        feed.wait_progress(30.0, 60)
        redis.stop()
        down_at = time.monotonic()
        ages = []
        while time.monotonic() - down_at < outage_s:
            time.sleep(0.5)
            ages.append(metrics.replica_sync_delay._value.get())
        redis.start()
        feed.join(180)
        wait_consumed(cfg, 120)
        replica = runner.daemon._searcher
        assert replica.wait_for(lambda r: r.connected and r.sync_delay_s == 0.0, 30), replica.last_error
        assert replica.last_error, "the replica never noticed that Redis was gone"
        runner.stop()
    finally:
        redis.kill()
    if outage_s >= 10:  # the gauge is refreshed every 5 s
        assert max(ages) >= outage_s - 10, ages
    events = eventlog.read_events(cfg)
    d = assert_delivered(truth, events, reference, handover=False)
    print(f"redis outage {outage_s:g} s: {d.summary()}; re-sent {d.resent}; replica full syncs {replica.full_syncs}, "
          f"max age seen {max(ages):.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
@pytest.mark.timeout(600)
def test_kafka_broker_restart_during_ingestion(hard, corpus_dir, unique, tmp_path):
    """The (single) broker stops in the middle of ingestion and comes back ~5 s later: producer and
    daemon reconnect and carry on; the events are exactly those of a fault-free run."""
    stack = PrivateKafka(tmp_path / "stack")
    stack.up()
    try:
        cfg = daemon_config(unique, partitions=2, **NO_SHEDDING, **{"kafka.bootstrap_servers": stack.bootstrap})
        catalog, _ = corpus_tracks(8, 0)
        truth, audios = fault_broadcast(tmp_path, catalog, minutes=2.5, streams=3, seed=4)
        fp = ProjectionFingerprinter()
        searcher = catalog_searcher(fp, catalog)
        start_ms = ingest.now_ms()
        reference = reference_events(cfg, fp, searcher, audios, start_ms)
        metrics = Metrics(process=False, gpu=False)
        runner = DaemonThread(Daemon(cfg, fingerprinter=fp, searcher=searcher, metrics=metrics, http=False))
        feed = PacedIngest(cfg, audios, speed=2.0, start_ms=start_ms).start()
        feed.wait_progress(50.0, 90)
        stack.stop_kafka(hard=hard)
        time.sleep(5)
        restart = time.monotonic()
        stack.up()
        print(f"broker back after {time.monotonic() - restart:.1f} s")
        feed.join(300)
        wait_consumed(cfg, 180)
        runner.stop()
        events = eventlog.read_events(cfg)
    finally:
        stack.down()
    d = assert_delivered(truth, events, reference, handover=False)
    print(f"broker restart ({'SIGKILL' if hard else 'SIGTERM'}): {d.summary()}; re-sent {d.resent}; commit failures "
          f"{metrics.commit_failures._value.get():g}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_second_daemon_joins_and_leaves(config, kafka_bootstrap, corpus_dir, unique, tmp_path, cleanup):
    """A second daemon joins the group mid-broadcast (a partition moves to it) and leaves again (it
    moves back): no required play lost or given a second id; re-sends only with the same id. The
    rebalances are cooperative: the streams of the partition that never moves keep running on the
    first daemon, and their events are exactly the fault-free run's."""
    cfg = daemon_config(unique, partitions=2, **NO_SHEDDING)  # sim-000..003: two streams on each
    cleanup.append(cfg)
    catalog, _ = corpus_tracks(8, 0)
    truth, audios = fault_broadcast(tmp_path, catalog, minutes=2.5, streams=4, seed=5)
    fp = ProjectionFingerprinter()
    searcher = catalog_searcher(fp, catalog)
    start_ms = ingest.now_ms()
    reference = reference_events(cfg, fp, searcher, audios, start_ms)
    first = DaemonThread(Daemon(cfg, fingerprinter=fp, searcher=searcher, metrics=Metrics(process=False, gpu=False),
                                http=False))  # fmt: skip
    feed = PacedIngest(cfg, audios, speed=1.5, start_ms=start_ms).start()
    feed.wait_progress(40.0, 90)
    second_metrics = Metrics(process=False, gpu=False)
    second = DaemonThread(Daemon(cfg, fingerprinter=ProjectionFingerprinter(), searcher=searcher,
                                 metrics=second_metrics, http=False))  # fmt: skip
    joined = time.monotonic()
    while second_metrics.chunks._value.get() == 0:  # it has partitions and their audio
        assert time.monotonic() - joined < 90, f"the second daemon consumed nothing in 90 s: {second.daemon.consumer.assignment()}"
        assert second.thread.is_alive(), second.error
        time.sleep(0.2)
    took_s = time.monotonic() - joined
    feed.wait_progress(min(feed.progress_s + 30.0, 140.0), 60)
    owned = sorted(tp.partition for tp in (second.daemon.consumer.assignment() or ()))
    second.stop()
    feed.join(180)
    wait_consumed(cfg, 120)
    kept = {sid for sid, tp in first.daemon.partition_of.items() if tp.partition not in owned}
    first.stop()
    assert owned, "the second daemon had no partition when it left"
    assert kept, "every stream moved"
    events = eventlog.read_events(cfg)
    d = assert_delivered(truth, events, reference, handover=True)
    ids = collections.Counter(e["event_id"] for e in events if e["stream_id"] in kept)
    assert ids == collections.Counter(e["event_id"] for e in reference if e["stream_id"] in kept), sorted(kept)
    print(f"rebalance (second daemon consumed {took_s:.1f} s after joining, owned partitions {owned}): "
          f"{d.summary()}; event ids differing from the fault-free run: {d.differing}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_burst_of_ten_times_real_time(config, kafka_bootstrap, corpus_dir, unique, tmp_path, cleanup):
    """100 streams in real time, then 10x real time for one minute, then real time again: the
    group's lag comes back to a few seconds of audio and the daemon's memory stays bounded."""
    n_streams, before_s, burst_wall_s, after_s = 100, 30.0, 60.0, 150.0
    cfg = daemon_config(unique, partitions=4)
    cleanup.append(cfg)
    catalog, _ = corpus_tracks(6, 0)
    base = np.concatenate([dataset.load_audio(t) for t in catalog]).astype(np.float32)
    step = len(base) // n_streams
    burst_end = before_s + 10 * burst_wall_s
    total = burst_end + after_s
    audios = {f"burst-{i:02d}": itertools.islice(looped_blocks(base, i * step), int(total * 2)) for i in range(n_streams)}
    log = tmp_path / "daemon.log"
    proc = start_daemon_process(cfg, [t.track_id for t in catalog], log)
    try:
        daemon = psutil.Process(proc.pid)
        feed = PacedIngest(cfg, audios, speed=[(before_s, 1.0), (burst_end, 10.0), (1e9, 1.0)]).start()
        samples = []  # (wall s since start, phase, rss MB, group lag records)
        t0 = time.monotonic()

        def sample(phase):
            samples.append((time.monotonic() - t0, phase, daemon.memory_info().rss / 2**20, group_lag(cfg)))

        while feed.progress_s < before_s:
            time.sleep(2)
            sample("before")
        while feed.progress_s < burst_end:
            time.sleep(2)
            sample("burst")
        while feed.thread.is_alive():
            time.sleep(2)
            sample("after")
            assert proc.poll() is None, log.read_text()[-3000:]
        feed.join(30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    per_s = 2 * n_streams  # records per second of real-time input
    before = [s for s in samples if s[1] == "before"]
    peak_lag = max(s[3] for s in samples)
    final_lag = [s[3] for s in samples if s[1] == "after"][-5:]
    rss_base = max(s[2] for s in before)
    rss_peak = max(s[2] for s in samples)
    print(f"burst: peak lag {peak_lag} records ({peak_lag / per_s:.0f} s of input), lag in the last 10 s "
          f"{final_lag}, RSS before {rss_base:.0f} MB, peak {rss_peak:.0f} MB")
    for s in samples:
        print(f"  t={s[0]:5.0f} s {s[1]:<6} rss {s[2]:6.0f} MB lag {s[3]:6d}")
    assert max(final_lag) <= 5 * per_s, "the lag did not recover after the burst"
    assert rss_peak <= 1.25 * rss_base + 100, "memory grew during the burst"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_soak_ci(config, kafka_bootstrap, corpus_dir, tmp_path):
    """bench/soak.py's CI variant (2 min, 50 streams): no RSS growth, lag growth or leaks."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "soak.json"
    script = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
    result = subprocess.run([sys.executable, str(script), "--ci", "--streams", "50", "--out", str(out)],
                            capture_output=True, text=True, timeout=360)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] and all(c["ok"] for c in report["checks"].values()), report["checks"]
