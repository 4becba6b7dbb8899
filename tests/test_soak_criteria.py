"""bench/soak.py's pass/fail arithmetic: memory trend and delay quantiles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from soak import projected_growth, quantile_between  # noqa: E402


def test_memory_trend_ignores_spikes_and_counts_steady_growth():
    times = [5.0 * i for i in range(60)]
    spiky = [1000.0 + (150.0 if i % 7 == 3 else 0.0) for i in range(60)]  # +15 % now and then, no trend
    assert abs(projected_growth(times, spiky)) < 1e-9
    slow_leak = [1000.0 + 0.2 * t for t in times]  # +59 MB over the run, spikes on top
    leak_with_spikes = [v + s - 1000.0 for v, s in zip(slow_leak, spiky, strict=True)]
    assert projected_growth(times, leak_with_spikes) == pytest.approx(59.0 / 1029.5, rel=0.02)
    assert projected_growth(times, [1000.0 - 0.2 * t for t in times]) < 0


def test_delay_quantiles_between_histogram_snapshots():
    before = [(0.5, 10.0), (1.0, 20.0), (1.5, 30.0), (float("inf"), 30.0)]
    after = [(0.5, 510.0), (1.0, 1000.0), (1.5, 1025.0), (float("inf"), 1030.0)]  # 1 000 new: 500 / 480 / 15 / 5
    assert quantile_between(before, after, 0.5) == 0.5
    assert quantile_between(before, after, 0.99) == 1.5
    assert quantile_between(before, after, 0.999) == float("inf")
    assert quantile_between([], after) is None and quantile_between(after, after) is None


def _samples(shed_per_sample: float) -> list[dict]:
    return [{"t_s": 10.0 * i, "rss_mb": 1000.0, "lag_s": 0.5, "threads": 8, "fds": 20, "shed": shed_per_sample * i}
            for i in range(30)]  # fmt: skip


def test_shedding_is_reported_as_behind_without_failing_the_leak_checks():
    """A daemon that sheds hops did not keep real time: the check says so (never 'ok'), while the
    soak's verdict, which is about leaks and growth, still rests on the other checks."""
    from argparse import Namespace

    from soak import verdict

    args = Namespace(streams=10, duration=300.0, warmup=30.0, model="test", partitions=1, processes=1, phases="aligned",
                     feed="librdkafka")
    behind = verdict(args, _samples(100.0), exit_code=0)
    assert behind["checks"]["kept_real_time"]["ok"] is False and behind["checks"]["kept_real_time"]["shed_after_warmup"] > 0
    assert behind["ok"] is True
    held = verdict(args, _samples(0.0), exit_code=0)
    assert held["checks"]["kept_real_time"]["ok"] is True and held["ok"] is True
