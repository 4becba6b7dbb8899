"""A stream's recovery state as a small JSON document, so that a restart or a hand-over to another
consumer continues the stream exactly where the published events left it.

The daemon writes one document per stream to a compacted Kafka topic (``daemon.state_topic``, key =
stream id, same partition number as the stream's audio) before it publishes any event the stream
decided, and before every offset commit (docs/daemon.md, "Recovery"). The next owner of the stream
reads the newest document, re-sends its outbox and puts the tracker back where it was.

What is kept:

- ``epoch_ms``: the stream's epoch (stream time 0), so event times do not move with the owner;
- ``grid_ms``: the capture time of a hop boundary of the stream's front end, so the next owner cuts
  the audio it replays into the same hops (same codes, same decisions);
- ``tracker``: the whole decision state (:meth:`streamd.decision.Tracker.export_state`): hop clock,
  open plays, candidates that are not plays yet, and the memory of recently ended plays;
- ``outbox``: the event documents decided but not known to be acknowledged by Kafka when the
  document was written. Events are only sent once the document that lists them is durable, so an
  event is either in the newest document's outbox or acknowledged; the next owner re-sends the
  outbox (same ``event_id``\\ s: consumers drop the duplicates).

Version 1 documents (open plays only, no grid, no outbox) are still read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from streamd.decision import Tracker

STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)


class StateError(ValueError):
    """A state document that cannot be read (another version, bad JSON, missing fields)."""


def export_stream(
    tracker: Tracker,
    stream_id: str,
    epoch_ms: float,
    grid_ms: float | None = None,
    outbox: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The state document of ``stream_id`` (its tracker state may be absent: no hop decided yet)."""
    return {
        "v": STATE_VERSION,
        "stream_id": stream_id,
        "epoch_ms": epoch_ms,
        "grid_ms": grid_ms,
        "tracker": tracker.export_state(stream_id),
        "outbox": list(outbox),
    }


def encode(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON. orjson, as every stream's state is written at each offset commit (about
    14× faster than the standard library's encoder on real documents, bench/RESULTS.md "Soak");
    numpy scalars are written as numbers."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(value: bytes) -> dict[str, Any]:
    """The state document in a record value (version 1 converted); :class:`StateError` if it is not one."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"state is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("v") not in READABLE_VERSIONS:
        raise StateError(f"state document of another version: {str(document)[:80]}")
    for key in ("stream_id", "epoch_ms"):
        if key not in document:
            raise StateError(f"state document lacks {key}")
    if document["v"] == STATE_VERSION and document.get("tracker") is not None:
        try:
            Tracker().restore_state(str(document["stream_id"]), document["tracker"])  # well-formed?
        except ValueError as exc:
            raise StateError(str(exc)) from None
    if document["v"] == 1:
        if "plays" not in document:
            raise StateError("state document lacks plays")
        document = {
            "v": STATE_VERSION,
            "stream_id": document["stream_id"],
            "epoch_ms": document["epoch_ms"],
            "grid_ms": None,
            "tracker": {"last_t": document.get("last_t"), "last_end_s": document.get("last_end_s"),
                        "plays": [{**play, "occurrence": play.get("occurrence", 0)} for play in document["plays"]]},
            "outbox": [],
        }  # fmt: skip
    return document


def last_decided(document: dict[str, Any]) -> float | None:
    """Time (the stream's clock) of the last hop the document's tracker decided; None if none."""
    tracker = document.get("tracker")
    return None if tracker is None else tracker.get("last_t")


def restore_stream(tracker: Tracker, document: dict[str, Any]) -> None:
    """Put ``document``'s decision state into ``tracker`` (replacing the stream's state)."""
    if document.get("tracker") is None:
        return
    try:
        tracker.restore_state(document["stream_id"], document["tracker"])
    except ValueError as exc:
        raise StateError(str(exc)) from None
