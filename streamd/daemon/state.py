"""A stream's decision state as a small JSON document, so that its open plays survive a restart or a
hand-over to another consumer.

The daemon writes one document per stream to a compacted Kafka topic (``daemon.state_topic``, key =
stream id, same partition number as the stream's audio) whenever the stream's plays change and
before every offset commit (docs/daemon.md, "Delivery"). The next owner of the stream reads the
newest document and puts the tracker back where it was at the commit: an open play keeps its
``play_id`` and ends with one ``ended`` event, without a second ``started``.

What is kept: the stream's epoch (stream time 0), the time of the last decided hop, the end of the
last finished play, and the open plays with every number of their hypothesis (a fixed set of
floats). Candidates that are not plays yet are not kept: after a restart they are found again
within a few hops (only their detection is later).
"""

from __future__ import annotations

import json
import math
from typing import Any

from streamd.decision import Tracker, _Hypothesis, _StreamState

STATE_VERSION = 1


class StateError(ValueError):
    """A state document that cannot be read (another version, bad JSON, missing fields)."""


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def export_stream(tracker: Tracker, stream_id: str, epoch_ms: float) -> dict[str, Any]:
    """The state document of ``stream_id`` (its tracker state may be absent: no hop decided yet)."""
    state = tracker._streams.get(stream_id)
    plays = []
    if state is not None:
        for h in state.plays:
            plays.append({name: _number(getattr(h, name, None)) for name in _Hypothesis.__slots__})
    return {
        "v": STATE_VERSION,
        "stream_id": stream_id,
        "epoch_ms": epoch_ms,
        "last_t": None if state is None else state.last_t,
        "last_end_s": None if state is None else state.last_end_s,
        "plays": plays,
    }


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def decode(value: bytes) -> dict[str, Any]:
    """The state document in a record value; :class:`StateError` if it is not one."""
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"state is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != STATE_VERSION:
        raise StateError(f"state document of another version: {str(document)[:80]}")
    for key in ("stream_id", "epoch_ms", "plays"):
        if key not in document:
            raise StateError(f"state document lacks {key}")
    return document


def restore_stream(tracker: Tracker, document: dict[str, Any]) -> None:
    """Put ``document``'s open plays and hop clock into ``tracker`` (replacing the stream's state)."""
    state = _StreamState()
    state.last_t = document.get("last_t")
    state.last_end_s = document.get("last_end_s")
    for fields in document["plays"]:
        h = _Hypothesis.__new__(_Hypothesis)
        for name in _Hypothesis.__slots__:
            if name not in fields:
                raise StateError(f"state of {document['stream_id']}: play lacks {name}")
            setattr(h, name, fields[name])
        state.plays.append(h)
    tracker._streams[document["stream_id"]] = state
