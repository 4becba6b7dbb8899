"""Issue 10's acceptance test: every Grafana panel's query returns series when a real Prometheus
scrapes a running daemon that streams flow through.

Unlike tests/test_deploy.py (which scrapes streamd's metric registry moved by hand), the series here
come from ``Daemon.run`` itself: Kafka in, catalog replica from a Redis, events out, the opt-in
top-N per-stream view on (``daemon.metrics_top_streams``). The streams are short catalog excerpts
(plays start and end), one stream loses a chunk on the way (a gap the front end bridges: gap
fill), and one broken record of a known stream goes to the dead-letter topic (chunk errors,
per-stream errors). Only the GPU panels are left out: there is no GPU here. The fingerprinter is
the tests' stand-in (tests/daemon_doubles.py): what is checked is that the metrics are fed, not
recognition quality.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from daemon_doubles import ProjectionFingerprinter
from daemon_helpers import corpus_tracks, daemon_config, topics_of
from fault_helpers import DaemonThread, PacedIngest, PrivateRedis, fault_broadcast
from prom_helpers import PrometheusServer

from streamd import ingest
from streamd.daemon.runner import Daemon
from streamd.indexer import index_paths
from streamd.kafka_io import BoundedProducer, delete_topics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "grafana"))
import build_dashboard  # noqa: E402

FED = ("streamd_gap_fill_seconds_total", "streamd_top_stream_errors", "streamd_top_stream_recognitions",
       "streamd_recognitions_total", "streamd_chunk_errors_total", "streamd_events_published_total")  # fmt: skip
"""Metrics that must have moved, not only be exported at 0."""


def value(prom: PrometheusServer, expr: str) -> float:
    result = prom.api("query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else float("nan")


@pytest.mark.timeout(240)
def test_every_dashboard_panel_has_data_from_a_running_daemon(config, kafka_bootstrap, corpus_dir, unique, tmp_path):
    redis = PrivateRedis(tmp_path / "redis").start()
    cfg = daemon_config(unique, partitions=2, **{"redis.url": redis.url, "store.catalog": "dashboard",
                                                 "daemon.metrics_top_streams": 5})  # fmt: skip
    try:
        catalog, _ = corpus_tracks(4, 0)
        _, audios = fault_broadcast(tmp_path, catalog, minutes=1.0, streams=3, seed=7)
        fp = ProjectionFingerprinter()
        manifest = tmp_path / "catalog.csv"
        manifest.write_text("track_id,path\n" + "".join(f"{t.track_id},{t.path}\n" for t in catalog))
        assert not index_paths(cfg, "dashboard", [], manifest=manifest, encoder_factory=lambda: fp).failed
        gappy = sorted(audios)[0]
        runner = DaemonThread(Daemon(cfg, fingerprinter=fp))
        try:
            feed = PacedIngest(cfg, audios, speed=2.0, drop={(gappy, 30)}).start()
            deadline = time.monotonic() + 60
            while runner.daemon.ops is None:
                assert time.monotonic() < deadline and runner.thread.is_alive(), runner.error
                time.sleep(0.1)
            with PrometheusServer([f"127.0.0.1:{runner.daemon.ops.port}"], scrape_interval_s=1.0) as prom:
                feed.wait_progress(20.0, 60)
                with BoundedProducer(cfg) as producer:  # a truncated chunk of a stream the daemon has
                    record = next(ingest.stream_chunks(audios[gappy][:6000], 12000, gappy, 500))
                    producer.send(cfg.kafka.audio_topic, value=record.value[:-1], key=record.key,
                                  headers=record.headers)  # fmt: skip
                feed.join(90)
                prom.wait_for_scrapes(5)
                exprs = [build_dashboard.concrete(e) for e in build_dashboard.expressions(exclude_requires={"gpu"})]
                deadline = time.monotonic() + 30  # gauges refreshed every 5 s (lag, catalog) may trail
                while True:
                    results = prom.evaluate(exprs)
                    failed = [f"{r.expr}: {r.error or 'no series'}" for r in results if not r.has_data]
                    if not failed or time.monotonic() > deadline:
                        break
                    time.sleep(2)
                moved = {name: value(prom, f"sum({name})") for name in FED}
        finally:
            runner.stop()
    finally:
        redis.kill()
        delete_topics(cfg, topics_of(cfg))
    assert len(exprs) > 40
    assert not failed, "\n".join(failed)
    assert all(v > 0 for v in moved.values()), moved
