"""The Prometheus test harness (tests/prom_helpers.py) against a tiny real exporter."""

from __future__ import annotations

import pytest
from prom_helpers import PrometheusServer, free_port
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server


@pytest.fixture
def exporter():
    """A prometheus_client HTTP exporter on a free loopback port with a counter and a histogram."""
    registry = CollectorRegistry()
    chunks = Counter("demo_chunks", "Chunks seen.", ["reason"], registry=registry)
    latency = Histogram("demo_latency_seconds", "Latency.", registry=registry)
    chunks.labels("ok").inc(3)
    latency.observe(0.05)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=5)


def test_prometheus_scrapes_the_exporter_and_reports_which_queries_have_data(exporter: str) -> None:
    with PrometheusServer([exporter]) as prom:
        prom.wait_for_scrapes(2)
        present, quantile, absent, broken = prom.evaluate(
            [
                'sum by (reason) (rate(demo_chunks_total{reason="ok"}[1m]))',
                "histogram_quantile(0.99, sum by (le) (rate(demo_latency_seconds_bucket[1m])))",
                "rate(demo_not_exported_total[1m])",
                "rate(demo_chunks_total[1m]",
            ]
        )
    assert present.has_data and present.series == present.finite_series == 1
    assert quantile.has_data  # a NaN quantile of an idle histogram is a series, just not finite
    assert not absent.has_data and absent.error is None
    assert not broken.has_data and "parse error" in broken.error


def test_stop_removes_the_data_directory(exporter: str) -> None:
    prom = PrometheusServer([exporter])
    prom.start()
    data_dir = prom._dir
    assert data_dir.exists()
    prom.stop()
    assert not data_dir.exists()
