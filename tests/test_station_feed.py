"""bench/station_feed.py: the soak's cheap producer sends exactly what ``streamd ingest`` would."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_helpers import looped_blocks  # noqa: E402
from station_feed import looped_records  # noqa: E402

from streamd import ingest, protocol  # noqa: E402


@pytest.mark.parametrize("stagger", [False, True])
def test_looped_records_equal_the_ingest_records_of_the_looped_audio(stagger):
    rng = np.random.default_rng(3)
    base = (0.3 * rng.standard_normal(14_321)).astype(np.float32)  # not a whole number of chunks
    offsets = {"a": 0, "b": 5_000, "c": 14_000}
    start_ms, chunk_ms, n_chunks = 1_700_000_000_000, 500, 9  # 9 chunks wrap the base more than twice
    phases = {sid: round(i * chunk_ms / len(offsets)) if stagger else 0 for i, sid in enumerate(offsets)}
    expected = list(ingest.merge_by_time(*(
        itertools.islice(ingest.stream_chunks(looped_blocks(base, offset), 12000, sid, chunk_ms,
                                              start_ts_ms=start_ms + phases[sid]), n_chunks)
        for sid, offset in offsets.items())))  # fmt: skip
    got = list(itertools.islice(looped_records(base, offsets, 12000, chunk_ms, start_ms, stagger), len(expected)))
    assert [(k, v, h, ts) for k, v, h, ts in got] == [(r.key, r.value, r.headers, r.timestamp_ms) for r in expected]
    chunk = protocol.decode(got[-1][0], got[-1][1], got[-1][2])
    assert chunk.samples.shape == (6000, 1)
