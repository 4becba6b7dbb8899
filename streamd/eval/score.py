"""Score play events against simulated ground truth, as a monitoring customer would.

A *play* is a catalog segment of the truth (main layer). A play is *found* when one event of the
same stream and track overlaps it by at least half of the play; plays and events are matched
one-to-one, largest overlap first. Plays shorter than ``min_play_s`` (cut by the end of a recording,
or short full tracks) are optional: finding them is not rewarded, an event matching them is not
false. Every event left unmatched is false, and is classed as

- ``duplicate``: it overlaps a play of its own track that another event found (a split or
  repeated report of one play),
- ``short_overlap``: it overlaps a play of its own track, but by less than half of the play and no
  other event found it (the play counts as missed too),
- ``wrong_track``: it lies mostly (>= 50 %) over catalog music of another track,
- ``non_catalog``: it lies mostly over unknown music, talk, jingles or silence.

Metrics: precision = matched / (events − events on optional plays); recall = found / required
plays; F1; boundary errors (event − truth, start and end, |median| and |p95| plus the signed mean);
track-offset error; detection latency (daemon: ``detected_at_s`` − play start; offline: event start
− play start); false events per hour of non-catalog audio. Everything is also broken down by
station, by degradation kind in the station's chain (``clean`` = empty chain), and by play
condition (talk-over, partial, full).

Events are dicts (JSON lines) in either form, see docs/accuracy.md:

- offline (``streamd recognize``): one record per play with ``stream_id`` (or ``stream``),
  ``track_id``, ``start_s``, ``end_s``, ``offset_s``, ``confidence``;
- daemon: ``type`` ``started`` / ``ended`` records sharing an ``event_id``; ``started`` carries
  ``detected_at_s`` (the stream time it was emitted at). Redelivered duplicates are merged.

All times are seconds from the start of the station recording.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from streamd.errors import StreamdError

TARGETS = {
    "f1": (">=", 0.99),
    "boundary_p95_s": ("<=", 1.0),
    "latency_median_s": ("<=", 6.0),
    "false_non_catalog_per_24h": ("<=", 1.0),
}
"""Issue 7's targets: F1 on plays >= 30 s, boundary p95, median latency, false events per 24 h."""

_ALIASES = {
    "stream": ("stream_id", "stream"),
    "offset_s": ("offset_s", "track_offset_s"),
    "detected_at_s": ("detected_at_s", "detected_s"),
    "event_id": ("play_id", "event_id", "id"),
    "type": ("type", "event"),
}


class ScoreError(StreamdError):
    """Events or truth that cannot be scored (missing fields, unknown stream times)."""


@dataclasses.dataclass(frozen=True)
class Event:
    """One reported play (a merged started/ended pair for the daemon)."""

    stream: str
    track_id: str
    start_s: float
    end_s: float
    offset_s: float | None = None
    confidence: float | None = None
    detected_at_s: float | None = None
    event_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Play:
    """A catalog play of the truth. ``required``: at least ``min_play_s`` long."""

    stream: str
    track_id: str
    start_s: float
    end_s: float
    offset_s: float
    speed: float
    required: bool
    talkover: bool
    partial: bool

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclasses.dataclass(frozen=True)
class Matching:
    """``pairs``: (play index, event index); ``false``: event index -> class; ``optional``: events
    matched to optional plays."""

    pairs: list[tuple[int, int]]
    false: dict[int, str]
    optional: set[int]


def _get(record: dict[str, Any], field: str) -> Any:
    for key in _ALIASES.get(field, (field,)):
        if record.get(key) is not None:
            return record[key]
    return None


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Daemon events may nest the play (``{"type": ..., "play": {...}}``): lift it to the top."""
    nested = record.get("play")
    return (
        {**nested, **{k: v for k, v in record.items() if k != "play"}} if isinstance(nested, dict) else record
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_events(
    records: Iterable[dict[str, Any]], stream_end_s: dict[str, float] | None = None
) -> list[Event]:
    """Events from offline or daemon records (see the module docstring).

    A daemon play that ``started`` but never ``ended`` lasts to its stream's end (``stream_end_s``),
    or to its own ``end_s`` if it has one. Records of other types (e.g. ``updated``) refine the
    boundaries of their event id.
    """
    plays: dict[str, dict[str, Any]] = {}
    offline: list[Event] = []
    for number, raw in enumerate(records):
        record = _flatten(raw)
        stream, track = _get(record, "stream"), record.get("track_id")
        if stream is None or track is None:
            raise ScoreError(f"event {number + 1} has no stream_id/track_id: {raw}")
        kind = _get(record, "type")
        if kind is None:
            if record.get("start_s") is None or record.get("end_s") is None:
                raise ScoreError(f"event {number + 1} has no start_s/end_s: {raw}")
            offline.append(
                Event(
                    str(stream),
                    str(track),
                    float(record["start_s"]),
                    float(record["end_s"]),
                    _optional_float(_get(record, "offset_s")),
                    _optional_float(record.get("confidence")),
                    _optional_float(_get(record, "detected_at_s")),
                    None if _get(record, "event_id") is None else str(_get(record, "event_id")),
                )
            )
            continue
        key = _get(record, "event_id")
        if key is None:  # without ids a play is known by where it started
            key = f"{stream}|{track}|{float(record.get('start_s', 0.0)):.3f}"
        state = plays.setdefault(str(key), {"stream": str(stream), "track_id": str(track)})
        for field in ("start_s", "end_s", "confidence"):
            if record.get(field) is not None and (kind == "ended" or field not in state):
                state[field] = float(record[field])
        if _get(record, "offset_s") is not None and (kind == "ended" or "offset_s" not in state):
            state["offset_s"] = float(_get(record, "offset_s"))
        if kind == "started":
            detected = _get(record, "detected_at_s")
            if detected is not None:  # the first delivery tells when it was first known
                state["detected_at_s"] = min(float(detected), state.get("detected_at_s", math.inf))
            elif "detected_at_s" not in state and record.get("start_s") is not None:
                state["detected_at_s"] = float(record["start_s"])
    events = list(offline)
    for key, state in plays.items():
        if "start_s" not in state:
            raise ScoreError(f"daemon play {key} has no start_s in any of its events")
        end = state.get("end_s")
        if end is None:
            end = (stream_end_s or {}).get(state["stream"])
        if end is None:
            raise ScoreError(f"daemon play {key} never ended and its stream's length is unknown")
        events.append(
            Event(
                state["stream"],
                state["track_id"],
                state["start_s"],
                float(end),
                state.get("offset_s"),
                state.get("confidence"),
                state.get("detected_at_s"),
                key,
            )
        )
    return sorted(events, key=lambda e: (e.stream, e.start_s, e.track_id))


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def plays_from_truth(segments: Sequence[dict[str, Any]], min_play_s: float = 30.0) -> list[Play]:
    """The catalog plays of the truth segments, with their talk-over and partial flags."""
    overlays = defaultdict(list)
    for s in segments:
        if s.get("layer", "main") == "overlay":
            overlays[s["stream"]].append((s["start_s"], s["end_s"]))
    plays = []
    for s in segments:
        if s["kind"] != "catalog" or s.get("layer", "main") != "main":
            continue
        talkover = any(_overlap(s["start_s"], s["end_s"], a, b) > 0 for a, b in overlays[s["stream"]])
        plays.append(
            Play(
                s["stream"],
                str(s["track_id"]),
                float(s["start_s"]),
                float(s["end_s"]),
                float(s.get("offset_s", 0.0)),
                float(s.get("speed", 1.0)),
                required=s["end_s"] - s["start_s"] >= min_play_s,
                talkover=talkover,
                partial=float(s.get("offset_s", 0.0)) > 0.5,
            )
        )
    return plays


def match(plays: Sequence[Play], events: Sequence[Event]) -> Matching:
    """One-to-one play/event matching, largest overlap fraction first; classify the rest."""
    by_key = defaultdict(list)
    for j, e in enumerate(events):
        by_key[(e.stream, e.track_id)].append(j)
    candidates = []
    for i, p in enumerate(plays):
        for j in by_key[(p.stream, p.track_id)]:
            e = events[j]
            fraction = _overlap(p.start_s, p.end_s, e.start_s, e.end_s) / max(p.duration_s, 1e-9)
            if fraction >= 0.5:
                candidates.append((-fraction, i, j))
    pairs, used_plays, used_events = [], set(), set()
    for _, i, j in sorted(candidates):
        if i not in used_plays and j not in used_events:
            used_plays.add(i)
            used_events.add(j)
            pairs.append((i, j))
    optional = {j for i, j in pairs if not plays[i].required}
    pairs = sorted((i, j) for i, j in pairs if plays[i].required)
    same_track = defaultdict(list)
    all_catalog = defaultdict(list)
    for i, p in enumerate(plays):
        same_track[(p.stream, p.track_id)].append(i)
        all_catalog[p.stream].append((p.start_s, p.end_s))
    false = {}
    for j, e in enumerate(events):
        if j in used_events:
            continue
        touched = [
            i
            for i in same_track[(e.stream, e.track_id)]
            if _overlap(e.start_s, e.end_s, plays[i].start_s, plays[i].end_s) > 0
        ]
        if touched:
            false[j] = "duplicate" if any(i in used_plays for i in touched) else "short_overlap"
            continue
        covered = _union_length([(max(a, e.start_s), min(b, e.end_s)) for a, b in all_catalog[e.stream]])
        false[j] = "wrong_track" if covered >= 0.5 * max(e.end_s - e.start_s, 1e-9) else "non_catalog"
    return Matching(pairs, false, optional)


def _union_length(intervals: Iterable[tuple[float, float]]) -> float:
    total, current_start, current_end = 0.0, None, None
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if current_end is None or a > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    if current_end is not None:
        total += current_end - current_start
    return total


def _stats(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}_median_s": None, f"{prefix}_p95_s": None, f"{prefix}_mean_s": None}
    array = np.asarray(values, dtype=np.float64)
    return {
        f"{prefix}_median_s": round(float(np.median(np.abs(array))), 4),
        f"{prefix}_p95_s": round(float(np.percentile(np.abs(array), 95)), 4),
        f"{prefix}_mean_s": round(float(np.mean(array)), 4),  # signed: early (<0) or late (>0)
    }


def _summarise(
    plays: Sequence[Play],
    events: Sequence[Event],
    matching: Matching,
    play_ids: set[int],
    event_ids: set[int],
    hours: float,
    non_catalog_hours: float,
    daemon: bool,
) -> dict[str, Any]:
    pairs = [(i, j) for i, j in matching.pairs if i in play_ids]
    required = [i for i in play_ids if plays[i].required]
    scored_events = [j for j in event_ids if j not in matching.optional]
    found = len(pairs)
    precision = found / len(scored_events) if scored_events else (1.0 if not required else 0.0)
    recall = found / len(required) if required else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    start_errors = [events[j].start_s - plays[i].start_s for i, j in pairs]
    end_errors = [events[j].end_s - plays[i].end_s for i, j in pairs]
    offset_errors = [
        events[j].offset_s - (plays[i].offset_s + (events[j].start_s - plays[i].start_s) * plays[i].speed)
        for i, j in pairs
        if events[j].offset_s is not None
    ]
    latency = [
        (events[j].detected_at_s if daemon and events[j].detected_at_s is not None else events[j].start_s)
        - plays[i].start_s
        for i, j in pairs
    ]
    false_kinds = defaultdict(int)
    for j in event_ids:
        if j in matching.false:
            false_kinds[matching.false[j]] += 1
    boundary = _stats([abs(x) for x in start_errors + end_errors], "boundary")
    summary = {
        "plays": len(required),
        "optional_plays": len(play_ids) - len(required),
        "events": len(event_ids),
        "found": found,
        "missed": len(required) - found,
        "false_events": sum(false_kinds.values()),
        "false_by_class": dict(sorted(false_kinds.items())),
        "precision": round(precision, 5),
        "recall": round(recall, 5),
        "f1": round(f1, 5),
        **_stats(start_errors, "start_error"),
        **_stats(end_errors, "end_error"),
        "boundary_median_s": boundary["boundary_median_s"],
        "boundary_p95_s": boundary["boundary_p95_s"],
        **_stats(offset_errors, "offset_error"),
        **_stats(latency, "latency"),
        "hours": round(hours, 4),
        "non_catalog_hours": round(non_catalog_hours, 4),
    }
    non_catalog_false = false_kinds.get("non_catalog", 0)
    summary["false_non_catalog_per_hour"] = (
        round(non_catalog_false / non_catalog_hours, 4) if non_catalog_hours > 0 else None
    )
    summary["false_non_catalog_per_24h"] = (
        round(24 * non_catalog_false / non_catalog_hours, 4) if non_catalog_hours > 0 else None
    )
    return summary


def _targets(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (op, bound) in TARGETS.items():
        value = summary.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[name] = {"value": value, "target": f"{op} {bound}", "met": met}
    return out


def score(
    truth: dict[str, Any],
    events: Sequence[Event],
    min_play_s: float = 30.0,
    daemon: bool | None = None,
) -> dict[str, Any]:
    """The full report (a JSON-ready dict): ``overall``, ``targets``, ``by_station``,
    ``by_degradation``, ``by_condition``, and the ``false_events`` list.

    ``truth`` is the ``truth.json`` dict (``stations``, ``segments``). ``daemon`` (default: whether
    any event has ``detected_at_s``) chooses how detection latency is measured.
    """
    stations = {s["stream"]: s for s in truth["stations"]}
    plays = plays_from_truth(truth["segments"], min_play_s)
    unknown_streams = sorted({e.stream for e in events} - set(stations))
    if unknown_streams:
        raise ScoreError(f"events name streams that are not in the truth: {', '.join(unknown_streams[:5])}")
    if daemon is None:
        daemon = any(e.detected_at_s is not None for e in events)
    matching = match(plays, events)
    catalog_s = defaultdict(float)
    for stream in stations:
        catalog_s[stream] = _union_length([(p.start_s, p.end_s) for p in plays if p.stream == stream])

    def summary_for(streams: set[str], play_filter=lambda p: True) -> dict[str, Any]:
        play_ids = {i for i, p in enumerate(plays) if p.stream in streams and play_filter(p)}
        event_ids = {j for j, e in enumerate(events) if e.stream in streams}
        hours = sum(stations[s]["duration_s"] for s in streams) / 3600
        non_catalog = sum(stations[s]["duration_s"] - catalog_s[s] for s in streams) / 3600
        return _summarise(plays, events, matching, play_ids, event_ids, hours, non_catalog, daemon)

    everything = set(stations)
    overall = summary_for(everything)
    kinds = defaultdict(set)
    for stream, station in stations.items():
        station_kinds = station.get("degradations") or sorted({s["kind"] for s in station["chain"]["steps"]})
        for kind in station_kinds or ["clean"]:
            kinds[kind].add(stream)
    by_degradation = {kind: summary_for(streams) for kind, streams in sorted(kinds.items())}
    by_station = {
        stream: {"chain": station["chain"].get("describe", ""), **summary_for({stream})}
        for stream, station in sorted(stations.items())
    }
    conditions = {
        "talkover": lambda p: p.talkover,
        "no_talkover": lambda p: not p.talkover,
        "partial": lambda p: p.partial,
        "full": lambda p: not p.partial,
    }
    by_condition = {}
    for name, keep in conditions.items():
        part = summary_for(everything, keep)
        by_condition[name] = {
            k: part[k] for k in ("plays", "found", "recall", "boundary_p95_s", "latency_median_s")
        }
    false_events = [
        {**dataclasses.asdict(events[j]), "class": kind} for j, kind in sorted(matching.false.items())
    ]
    return {
        "mode": "daemon" if daemon else "offline",
        "min_play_s": min_play_s,
        "overall": overall,
        "targets": _targets(overall),
        "by_degradation": by_degradation,
        "by_station": by_station,
        "by_condition": by_condition,
        "false_events": false_events,
    }
