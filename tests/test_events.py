"""Play event documents: schema, encoding, deterministic ids."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from streamd.decision import ENDED, STARTED, Play, PlayEvent, Tracker
from streamd.events import EventError, build_event, decode, encode, event_id, play_id, validate
from streamd.synthetic_matches import Segment, SyntheticCatalog, hop_times

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "events.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
CATALOG = SyntheticCatalog(seed=0)
EPOCH_MS = 1_790_000_000_000  # wall time at stream time 0


def tracked_events(start_index: int = 0, epoch_ms: float | None = EPOCH_MS):
    """Events of one play (track 4 from its start at 30 s), fed from hop ``start_index`` on."""
    seg = Segment(4, 30.0, 150.0)
    m = CATALOG.matches(np.random.default_rng(0), hop_times(0.0, 200.0), [seg])
    tracker = Tracker()
    t0 = m.times[start_index]
    out = []
    for i in range(start_index, len(m.times)):
        # The stream clock restarts at 0 where feeding starts (as after a daemon restart).
        for e in tracker.update_one("radio-1", m.times[i] - t0, m.track_ids[i], m.offsets[i], m.distances[i]):
            epoch = None if epoch_ms is None else epoch_ms + t0 * 1000.0
            out.append(build_event(e, stream_epoch_ms=epoch, model_version="hash64-v1",
                                   catalog_name="default", catalog_version=7,
                                   track={"title": "Song", "artist": "Band", "duration_s": 180.5}))  # fmt: skip
    return out


def test_a_play_gives_a_started_and_an_ended_event_that_validate_against_the_schema():
    started, ended = tracked_events()
    assert (started["type"], ended["type"]) == (STARTED, ENDED)
    for event in (started, ended):
        VALIDATOR.validate(event)
        validate(event)
    assert started["play_id"] == ended["play_id"] and started["event_id"] != ended["event_id"]
    assert started["end_s"] is None and started["end_wall_ms"] is None
    assert ended["start_s"] == pytest.approx(30.0, abs=1.0) and ended["end_s"] == pytest.approx(150.0, abs=3.0)
    assert ended["start_wall_ms"] == pytest.approx(EPOCH_MS + 30_000, abs=1000)
    assert ended["end_wall_ms"] - ended["start_wall_ms"] == pytest.approx(1000 * (ended["end_s"] - ended["start_s"]), abs=1)
    assert ended["track"] == {"title": "Song", "artist": "Band", "duration_s": 180.5}
    assert ended["catalog_version"] == "7" and ended["track_id"] == CATALOG.track_ids[4]


def test_encode_decode_round_trip_with_the_stream_as_key():
    _, ended = tracked_events()
    key, value = encode(ended)
    assert key == b"radio-1"
    assert decode(value) == ended
    assert b" " not in value.split(b'"track"')[0]  # compact JSON


def test_ids_survive_a_replay_with_a_restarted_stream_clock():
    original = tracked_events()
    replay = tracked_events(start_index=45)  # resumes ~46 s into the stream, 16 s into the play
    assert [e["type"] for e in replay] == [STARTED, ENDED]
    assert [e["event_id"] for e in replay] == [e["event_id"] for e in original]
    assert replay[1]["start_wall_ms"] != original[1]["start_wall_ms"]  # its start estimate differs; ids do not


def test_ids_depend_on_stream_track_origin_bucket_and_type():
    base = play_id("s", "t", 1_000_000.0)
    assert play_id("s", "t", 1_000_000.0 + 4_000) == base  # same 10 s bucket
    assert play_id("s", "t", 1_000_000.0 + 6_000) != base
    assert play_id("s2", "t", 1_000_000.0) != base and play_id("s", "t2", 1_000_000.0) != base
    assert event_id(base, STARTED) != event_id(base, ENDED)
    assert event_id(base, STARTED) == event_id(play_id("s", "t", 1_000_000.0), STARTED)
    assert play_id("s", "t", 1_000_000.0, occurrence=0) == base  # ids of first plays never changed
    assert len({base, play_id("s", "t", 1_000_000.0, occurrence=1), play_id("s", "t", 1_000_000.0, occurrence=2)}) == 3


def test_without_wall_clock_the_wall_fields_are_null_and_ids_use_stream_time():
    started, ended = tracked_events(epoch_ms=None)
    assert started["start_wall_ms"] is None and ended["end_wall_ms"] is None
    VALIDATOR.validate(ended)
    validate(ended)


def _broken_events() -> list[tuple[str, dict]]:
    _, good = tracked_events()
    cases = []

    def case(name, **changes):
        event = copy.deepcopy(good)
        for key, value in changes.items():
            if value is KeyError:
                del event[key]
            else:
                event[key] = value
        cases.append((name, event))

    case("missing field", confidence=KeyError)
    case("unknown field", extra=1)
    case("bad type", type="paused")
    case("bad version", schema_version=2)
    case("confidence above 1", confidence=1.5)
    case("string number", start_s="30")
    case("bool as int", hits=True)
    case("zero hits", hits=0)
    case("negative offset", track_offset_s=-1.0)
    case("not a uuid", event_id="abc")
    case("empty stream", stream_id="")
    case("ended without end", end_s=None)
    case("started with end", type=STARTED)
    case("nested metadata", track={"tags": ["a"]})
    case("float wall time", start_wall_ms=1.5)
    return cases


@pytest.mark.parametrize("name,event", _broken_events(), ids=[n for n, _ in _broken_events()])
def test_invalid_events_are_rejected_by_both_the_code_and_the_schema(name: str, event: dict):
    with pytest.raises(EventError):
        validate(event)
    assert not VALIDATOR.is_valid(event), name
    with pytest.raises(EventError):
        encode(event)


def test_decode_rejects_non_json_and_non_events():
    for value in (b"\xff\xfe", b"{not json", b"[1, 2]", b'{"type": "started"}'):
        with pytest.raises(EventError):
            decode(value)


def test_metadata_is_made_json_safe():
    snapshot = Play("s", 12, 1.0, 2.0, 0.0, 1.0, 0.9, 3, 4.0, 1.0, 1.0, 2.0, 1.5)
    event = build_event(PlayEvent(ENDED, snapshot), stream_epoch_ms=0, model_version="m", catalog_name="c",
                        catalog_version="1", track={"year": 1999, "path": Path("/x"), "gain": None})  # fmt: skip
    assert event["track_id"] == "12" and event["track"] == {"year": 1999, "path": "/x", "gain": None}
    VALIDATOR.validate(event)
    validate(event)
