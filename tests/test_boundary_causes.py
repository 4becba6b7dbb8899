"""bench/boundary_causes.py: which boundary each error belongs to, and the crossfade-tolerant error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from boundary_causes import Boundary, boundaries  # noqa: E402


def segment(kind, start, end, track="", offset=0.0, layer="main"):
    return {"stream": "s0", "kind": kind, "track_id": track, "start_s": start, "end_s": end, "offset_s": offset,
            "speed": 1.0, "layer": layer}  # fmt: skip


TRUTH = {
    "stations": [{"stream": "s0", "duration_s": 400.0}],
    "segments": [
        segment("unknown", 0.0, 62.0),
        segment("catalog", 60.0, 160.0, "a", offset=30.0),  # 2 s crossfade in, mid-track
        segment("talk", 160.0, 170.0),
        segment("catalog", 170.0, 300.0, "b"),  # hard cut in, from the track's beginning
        segment("talk", 290.0, 296.0, layer="overlay"),  # a DJ over b's last seconds
        segment("silence", 300.0, 400.0),
    ],
}


def test_each_boundary_gets_its_crossfade_talk_and_error():
    events = [{"stream_id": "s0", "track_id": "a", "start_s": 63.0, "end_s": 159.0},
              {"stream_id": "s0", "track_id": "b", "start_s": 170.5, "end_s": 295.0}]  # fmt: skip
    rows = {(r.track_id, r.side): r for r in boundaries(TRUTH, events)}
    a_start, a_end, b_start, b_end = rows["a", "start"], rows["a", "end"], rows["b", "start"], rows["b", "end"]
    assert (a_start.error_s, a_start.crossfade_s, a_start.neighbour, a_start.from_start) == (3.0, 2.0, "unknown", False)
    assert (a_end.error_s, a_end.crossfade_s, a_end.neighbour) == (-1.0, 0.0, "talk")
    assert (b_start.error_s, b_start.crossfade_s, b_start.from_start, b_start.talk) == (0.5, 0.0, True, False)
    assert b_end.talk and b_end.error_s == -5.0
    assert not a_start.talk and not a_end.talk


@pytest.mark.parametrize(("side", "error", "crossfade", "tolerant"), [
    ("start", 1.5, 2.0, 0.0),  # inside the fade-in
    ("start", 3.0, 2.0, 1.0),  # 1 s after it
    ("start", -0.5, 2.0, 0.5),  # before it
    ("end", -1.5, 2.0, 0.0),
    ("end", -3.0, 2.0, 1.0),
    ("end", 0.7, 0.0, 0.7),
])  # fmt: skip
def test_crossfade_tolerant_error(side, error, crossfade, tolerant):
    row = Boundary(side, error, crossfade, "catalog", False, False, "s0", "t")
    assert row.tolerant_error_s == pytest.approx(tolerant)
