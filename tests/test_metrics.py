"""The metric registry: names, types and labels as Prometheus scrapes them."""

from __future__ import annotations

import sys
import types

import numpy as np
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from streamd import protocol
from streamd.metrics import CHUNK_ERROR_REASONS, Metrics, observe_many

EXPECTED = {
    # family name (as the parser reports it): type
    "streamd_build_info": "gauge",
    "streamd_chunks_consumed": "counter",
    "streamd_bytes_consumed": "counter",
    "streamd_chunk_errors": "counter",
    "streamd_discontinuities": "counter",
    "streamd_gap_fill_seconds": "counter",
    "streamd_active_streams": "gauge",
    "streamd_open_plays": "gauge",
    "streamd_buffer_fill_ratio": "histogram",
    "streamd_consumer_lag_messages": "gauge",
    "streamd_commit_lag_messages": "gauge",
    "streamd_commits": "counter",
    "streamd_commit_failures": "counter",
    "streamd_commit_seconds": "histogram",
    "streamd_gc_pause_seconds": "histogram",
    "streamd_hops": "counter",
    "streamd_batch_size": "histogram",
    "streamd_inference_seconds": "histogram",
    "streamd_lookup_seconds": "histogram",
    "streamd_decision_delay_seconds": "histogram",
    "streamd_backlog_hops": "gauge",
    "streamd_shed": "counter",
    "streamd_recognitions": "counter",
    "streamd_recognition_confidence": "histogram",
    "streamd_events_published": "counter",
    "streamd_events_failed": "counter",
    "streamd_catalog_version": "gauge",
    "streamd_catalog_codes": "gauge",
    "streamd_catalog_tracks": "gauge",
    "streamd_replica_sync_delay_seconds": "gauge",
    "streamd_loop_last_tick_timestamp_seconds": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
}


def scrape(metrics: Metrics) -> dict:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(families: dict, sample_name: str, **labels: str) -> float:
    for family in families.values():
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return sample.value
    raise KeyError(f"{sample_name}{labels}")


def test_every_documented_metric_is_exported_with_its_type_and_conventions():
    families = scrape(Metrics(model_version="m1"))
    for name, kind in EXPECTED.items():
        assert name in families, name
        assert families[name].type == kind, name
    for family in families.values():
        assert family.name.startswith(("streamd_", "process_")), family.name
        for sample in family.samples:
            assert "stream_id" not in sample.labels  # no per-stream series by default
            assert not sample.name.endswith("_created")
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
    assert value(families, "streamd_build_info", version="0.1.0", model_version="m1") == 1.0
    assert value(families, "streamd_recognitions_total", type="started") == 0.0  # series exist from the start
    assert {s.labels["reason"] for s in families["streamd_chunk_errors"].samples} == set(CHUNK_ERROR_REASONS)
    assert set(protocol.REASONS) <= set(CHUNK_ERROR_REASONS)
    assert not any(name.startswith("streamd_gpu_") for name in families)  # CPU process: no GPU series


def test_registries_are_independent_and_helpers_count_with_bounded_labels():
    a, b = Metrics(process=False), Metrics(process=False)
    a.chunks.inc(3)
    a.bytes.inc(4000)
    a.chunk_error("bad_seq", "s1")
    a.chunk_error("something new")
    a.discontinuity("seq_gap")
    a.discontinuity("made up", 2)
    a.play_event("started", "s1", 0.8)
    a.play_event("ended", "s1", 0.8)
    a.event_failed("rejected")
    a.set_consumer_lag({0: 12, 5: 3})
    a.set_consumer_lag({5: 1})
    a.set_catalog("default", 7, 1_000_000, 5000)
    a.tick(123.0)
    fa, fb = scrape(a), scrape(b)
    assert value(fa, "streamd_chunks_consumed_total") == 3 and value(fb, "streamd_chunks_consumed_total") == 0
    assert value(fa, "streamd_chunk_errors_total", reason="bad_seq") == 1
    assert value(fa, "streamd_chunk_errors_total", reason="other") == 1
    assert value(fa, "streamd_discontinuities_total", kind="other") == 2
    assert value(fa, "streamd_recognitions_total", type="ended") == 1
    assert value(fa, "streamd_recognition_confidence_count") == 1  # ended plays only
    assert value(fa, "streamd_events_failed_total", reason="rejected") == 1
    assert [s.labels for s in fa["streamd_consumer_lag_messages"].samples] == [{"partition": "5"}]
    assert value(fa, "streamd_catalog_codes", catalog="default") == 1_000_000
    assert value(fa, "streamd_loop_last_tick_timestamp_seconds") == 123.0
    assert "process_cpu_seconds" not in fa


def test_top_streams_view_is_opt_in_and_bounded():
    metrics = Metrics(top_streams=2, process=False)
    for stream, n in (("a", 5), ("b", 1), ("c", 3)):
        for _ in range(n):
            metrics.play_event("started", stream, 0.9)
    metrics.chunk_error("bad_length", "b")
    families = scrape(metrics)
    top = {s.labels["stream_id"]: s.value for s in families["streamd_top_stream_recognitions"].samples}
    assert top == {"a": 5, "c": 3}
    assert {s.labels["stream_id"] for s in families["streamd_top_stream_errors"].samples} == {"b"}
    metrics.forget_stream("a")
    top = {s.labels["stream_id"] for s in scrape(metrics)["streamd_top_stream_recognitions"].samples}
    assert top == {"c", "b"}
    assert "streamd_top_stream_recognitions" not in scrape(Metrics(process=False))


def test_observe_many_equals_observing_one_by_one():
    a, b = Metrics(process=False), Metrics(process=False)
    values = np.random.default_rng(0).uniform(0, 1.2, 1000)
    values[:10] = [0.1, 0.2, 1.0, 0.0, 0.95, 0.99, 1.2, np.nan, 0.5, 0.9]  # bucket edges, over, NaN dropped
    observe_many(a.buffer_fill, values)
    for v in values[np.isfinite(values)]:
        b.buffer_fill.observe(float(v))
    sa = [(s.name, s.labels, round(s.value, 6)) for s in scrape(a)["streamd_buffer_fill_ratio"].samples]
    sb = [(s.name, s.labels, round(s.value, 6)) for s in scrape(b)["streamd_buffer_fill_ratio"].samples]
    assert sa == sb
    observe_many(a.buffer_fill, [])


def test_observe_many_falls_back_to_the_public_api():
    class Plain:
        def __init__(self):
            self.seen = []

        def observe(self, v):
            self.seen.append(v)

    plain = Plain()
    observe_many(plain, [1.0, 2.0])  # type: ignore[arg-type]
    assert plain.seen == [1.0, 2.0]
    assert isinstance(Metrics(process=False).buffer_fill, Histogram)


def test_gpu_series_appear_when_the_process_uses_cuda(monkeypatch):
    """No GPU on the test machines: a stand-in for torch.cuda exercises the collector's code path."""

    class FakeCuda:
        @staticmethod
        def is_available():
            return True

        @staticmethod
        def is_initialized():
            return True

        @staticmethod
        def device_count():
            return 2

        @staticmethod
        def memory_allocated(i):
            return 1000 * (i + 1)

        @staticmethod
        def memory_reserved(i):
            return 4000 * (i + 1)

        @staticmethod
        def utilization(i):
            if i == 1:
                raise RuntimeError("pynvml missing")
            return 37

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=FakeCuda))
    families = scrape(Metrics(process=False))
    assert value(families, "streamd_gpu_memory_allocated_bytes", device="1") == 2000
    assert value(families, "streamd_gpu_memory_reserved_bytes", device="0") == 4000
    assert value(families, "streamd_gpu_utilization_ratio", device="0") == 0.37
    assert [s.labels for s in families["streamd_gpu_utilization_ratio"].samples] == [{"device": "0"}]


def test_garbage_collections_are_timed_until_unwatched():
    import gc

    metrics = Metrics(process=False, gpu=False)
    unwatch = metrics.watch_gc()
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        unwatch()
    families = scrape(metrics)
    assert value(families, "streamd_gc_pause_seconds_count", generation="2") >= 1
    assert value(families, "streamd_gc_pause_seconds_count", generation="0") >= 1
    before = value(families, "streamd_gc_pause_seconds_count", generation="2")
    gc.collect(2)  # not counted any more
    assert value(scrape(metrics), "streamd_gc_pause_seconds_count", generation="2") == before
