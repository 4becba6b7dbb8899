"""Play events as they travel on Kafka (topic ``kafka.events_topic``, default ``streamd.recognitions``).

One JSON object per record, key = stream id (UTF-8), so one stream's events stay in order on one
partition. A play produces exactly two events: ``started`` when the daemon is sure of it and
``ended`` when it is over; both carry the same ``play_id``. docs/events.md describes every field;
docs/events.schema.json is the JSON Schema (draft 2020-12), kept equal to :func:`validate`.

Ids are deterministic, so that a daemon that replays audio after a restart re-emits the same ids
and consumers can drop duplicates:

- ``play_id`` = UUIDv5 of (stream id, track id, the play's *origin* rounded to
  ``id_quantum_s``, and its *occurrence* when that is not 0). The origin is the wall time at which
  the track's offset 0 played (or would have) given the alignment seen at detection: unlike the
  estimated start or the detection time, it does not depend on which hop first matched, so a
  replay lands on the same value (up to the model's timing jitter, which the rounding absorbs).
  Wall time, because it comes from the chunks' capture timestamps and survives restarts; stream
  time may restart at 0. The occurrence (:class:`~streamd.decision.Play`) numbers plays of one
  track on one stream whose origins are within a quantum of each other — a play that ended on a
  long dropout and resumed at the same alignment — which would otherwise share an id.
- ``event_id`` = UUIDv5 of (play_id, type).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from streamd.decision import ENDED, STARTED, PlayEvent
from streamd.errors import StreamdError

SCHEMA_VERSION = 1
EVENT_TYPES = (STARTED, ENDED)
NAMESPACE = uuid.UUID("4d6704bd-5753-4450-9129-3fcb6de83559")
"""UUIDv5 namespace of streamd's ids. Never change it: ids would change with it."""


class EventError(StreamdError):
    """A record is not a valid play event (bad JSON, missing or mistyped field)."""


def play_id(
    stream_id: str, track_id: str, origin_ms: float, id_quantum_s: float = 10.0, occurrence: int = 0
) -> str:
    """The id shared by a play's two events (see the module docstring). Occurrence 0 keeps the
    ids of the first version of this scheme."""
    bucket = math.floor(origin_ms / (id_quantum_s * 1000.0) + 0.5)
    name = f"{stream_id}\n{track_id}\n{bucket}" + (f"\n{occurrence}" if occurrence else "")
    return str(uuid.uuid5(NAMESPACE, name))


def event_id(play: str, kind: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{play}\n{kind}"))


def _wall_ms(stream_epoch_ms: float | None, stream_s: float | None) -> int | None:
    if stream_epoch_ms is None or stream_s is None:
        return None
    return int(round(stream_epoch_ms + stream_s * 1000.0))


def build_event(
    decision: PlayEvent,
    *,
    stream_epoch_ms: float | None,
    model_version: str,
    catalog_name: str,
    catalog_version: str | int,
    track: Mapping[str, Any] | None = None,
    detected_at_ms: int | None = None,
    id_quantum_s: float = 10.0,
) -> dict[str, Any]:
    """The event document for one decision of the tracker.

    ``stream_epoch_ms`` is the wall time (epoch ms, from the chunks' ``ts``) at stream time 0,
    so that wall time = ``stream_epoch_ms + stream_s * 1000``; pass 0 when stream times already
    are epoch seconds, None when unknown (wall fields become null and ids use stream time).
    ``track`` is the catalog's metadata of the track (title, artist, ...). ``detected_at_ms`` is
    the wall clock at emission (now by default).
    """
    play = decision.play
    track_id = str(play.track_id)
    origin_ms = _wall_ms(stream_epoch_ms, play.origin_s)
    pid = play_id(play.stream_id, track_id, play.origin_s * 1000.0 if origin_ms is None else origin_ms,
                  id_quantum_s, play.occurrence)  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id(pid, decision.type),
        "play_id": pid,
        "type": decision.type,
        "stream_id": play.stream_id,
        "track_id": track_id,
        "track": _metadata(track),
        "start_s": round(play.start_s, 3),
        "end_s": None if play.end_s is None else round(play.end_s, 3),
        "start_wall_ms": _wall_ms(stream_epoch_ms, play.start_s),
        "end_wall_ms": _wall_ms(stream_epoch_ms, play.end_s),
        "track_offset_s": round(max(0.0, play.track_offset_s), 3),
        "confidence": round(min(1.0, max(0.0, play.confidence)), 4),
        "hits": play.hits,
        "speed": round(play.speed, 4),
        "detected_s": round(play.detected_s, 3),
        "detected_at_ms": int(time.time() * 1000) if detected_at_ms is None else int(detected_at_ms),
        "model_version": str(model_version),
        "catalog_name": str(catalog_name),
        "catalog_version": str(catalog_version),
    }


def _metadata(track: Mapping[str, Any] | None) -> dict[str, Any]:
    """Track metadata with string keys and scalar values (others become strings)."""
    out: dict[str, Any] = {}
    for key, value in (track or {}).items():
        if value is None or isinstance(value, (str, bool, int, float)):
            out[str(key)] = value
        else:
            out[str(key)] = str(value)
    return out


def encode(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka record for ``event``, which is validated first."""
    validate(event)
    value = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return event["stream_id"].encode(), value.encode()


def decode(value: bytes | str) -> dict[str, Any]:
    """The event in a record value; :class:`EventError` unless it is a valid event."""
    try:
        event = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"event is not JSON: {exc}") from None
    validate(event)
    return event


# --- validation: the same rules as docs/events.schema.json ----------------------------------------

_NUMBER = (int, float)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    # name: (allowed types, nullable)
    "schema_version": ((int,), False),
    "event_id": ((str,), False),
    "play_id": ((str,), False),
    "type": ((str,), False),
    "stream_id": ((str,), False),
    "track_id": ((str,), False),
    "track": ((dict,), False),
    "start_s": (_NUMBER, False),
    "end_s": (_NUMBER, True),
    "start_wall_ms": ((int,), True),
    "end_wall_ms": ((int,), True),
    "track_offset_s": (_NUMBER, False),
    "confidence": (_NUMBER, False),
    "hits": ((int,), False),
    "speed": (_NUMBER, False),
    "detected_s": (_NUMBER, False),
    "detected_at_ms": ((int,), False),
    "model_version": ((str,), False),
    "catalog_name": ((str,), False),
    "catalog_version": ((str,), False),
}


def validate(event: Any) -> None:
    """Raise :class:`EventError` unless ``event`` is a valid event document of this schema version."""
    if not isinstance(event, dict):
        raise EventError(f"event must be a JSON object, got {type(event).__name__}")
    missing = [k for k in _FIELDS if k not in event]
    if missing:
        raise EventError(f"event lacks field(s): {', '.join(missing)}")
    unknown = [k for k in event if k not in _FIELDS]
    if unknown:
        raise EventError(f"event has unknown field(s): {', '.join(unknown)}")
    for name, (types, nullable) in _FIELDS.items():
        value = event[name]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise EventError(f"event field {name}: {value!r} is not a {'/'.join(t.__name__ for t in types)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise EventError(f"event field {name}: {value!r} is not finite")
    if event["schema_version"] != SCHEMA_VERSION:
        raise EventError(f"event schema_version {event['schema_version']} is not {SCHEMA_VERSION}")
    if event["type"] not in EVENT_TYPES:
        raise EventError(f"event type {event['type']!r} is not one of {', '.join(EVENT_TYPES)}")
    for name in ("event_id", "play_id"):
        try:
            uuid.UUID(event[name])
        except ValueError:
            raise EventError(f"event field {name}: {event[name]!r} is not a UUID") from None
    if not event["stream_id"] or not event["track_id"]:
        raise EventError("event stream_id and track_id must not be empty")
    if not 0.0 <= event["confidence"] <= 1.0:
        raise EventError(f"event confidence {event['confidence']} is outside [0, 1]")
    if event["track_offset_s"] < 0 or event["hits"] < 1 or event["speed"] <= 0:
        raise EventError("event track_offset_s must be >= 0, hits >= 1, speed > 0")
    ended = event["type"] == ENDED
    if (event["end_s"] is not None) != ended:
        raise EventError("event end_s must be set on ended events and null on started ones")
    if ended and event["end_s"] < event["start_s"]:
        raise EventError("event end_s is before start_s")
    if (event["end_wall_ms"] is not None) and not ended:
        raise EventError("event end_wall_ms must be null on started events")
    for key, value in event["track"].items():
        if value is not None and not isinstance(value, (str, bool, int, float)):
            raise EventError(f"event track.{key}: metadata values must be strings, numbers, booleans or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise EventError(f"event track.{key}: {value!r} is not finite")
