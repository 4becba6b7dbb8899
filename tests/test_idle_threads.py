"""streamd's OpenMP threads sleep when idle: a spinning search thread steals the core that the
model's other batch part (or the Kafka broker) runs on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = r"""
import resource, time
import numpy as np
import streamd  # first: the OpenMP runtime reads its settings when it loads
from streamd.store.table import CodeTable, SearchSettings
from streamd.store.catalog import Track

rng = np.random.default_rng(0)
tracks = [Track(f"t{i}", rng.integers(0, 256, (500, 8), dtype=np.uint8), np.arange(500, dtype=np.float32))
          for i in range(20)]
table = CodeTable.build(64, tracks, SearchSettings(threads=2))
queries = rng.integers(0, 256, (256, 8), dtype=np.uint8)
table.search(queries, 5)

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

spent = []
for _ in range(15):
    table.search(queries, 5)
    before = cpu()
    time.sleep(0.05)
    spent.append(cpu() - before)
print(sorted(spent)[len(spent) // 2])
"""


def cpu_while_idle(wait_policy: str | None) -> float:
    """Median CPU seconds the process uses during a 50 ms sleep right after a parallel search."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait_policy is not None:
        env["OMP_WAIT_POLICY"] = wait_policy
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no OpenMP worker threads to spin")
def test_search_threads_sleep_when_idle_unless_told_to_spin():
    assert cpu_while_idle(None) < 0.01  # streamd's default: passive
    assert cpu_while_idle("ACTIVE") > 0.03  # an explicit setting wins, and spinning shows here
