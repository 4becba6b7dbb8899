"""Per-stream decision logic: turn each hop's catalog matches into play events.

Every hop (``model.hop_frames`` = 48 mel frames = 1.024 s of stream time) the daemon hashes the
newest window of each stream and asks the store for the top-k nearest catalog codes. One such
answer is weak evidence: for audio that is not in the catalog the store still returns k codes,
at random tracks and offsets. What separates a real play from chance is *temporal consistency*:
during a play, hop after hop, the same track comes back at a track offset that advances with
stream time (at speed 1 ± ``speed_tol``, radio stations speed tracks up by a few percent).

So per stream we keep a few hypotheses ("this stream plays track X with alignment
``track_offset - stream_time`` = a"). A hypothesis gains a hit when a match of its track lands
within ``align_tol_s`` of the offset it predicts; it dies when it misses too many hops. A
hypothesis becomes a *play* (``started`` event) once it has ``min_hits`` hits, enough summed
evidence and enough confidence; a play *ends* (``ended`` event) after ``end_after_misses`` hops
without a hit, at the time of its last hit. Random matches almost never line up over several
hops, so unknown music, speech and ads produce no events. Given the codes that were searched and
a catalog that returns codes by position, the tracker also *verifies* its plays: a hop's code
close to the one catalog code the play's line predicts supports the play even when the search
missed it (ends), and the codes before a play's first hit say where it began (starts). Given a
peak check (streamd.peaks: the stream's spectral peaks against the track's at the line's offset),
a candidate whose peaks agree starts after ``peak_hits`` hits instead of ``min_hits``, and agreeing
peaks carry an open play over hops the search missed.
docs/decision.md explains the rules, the boundary estimates and the measured false-event rate.

All times here are *stream times* in seconds (any monotonic clock of the stream: seconds since
stream start, or epoch seconds). The stream time of a hop is the time of the END (newest frame)
of the window its code summarises, the same convention as catalog offsets.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from streamd.config import Config

STARTED = "started"
ENDED = "ended"
FIT_SPAN_HOPS = 16  # hits must span this many hops before the playback speed is fitted
PEAK_SUPPORT_MISSES = (1, 4)  # missed hops after which an open play asks the peaks
RECENT_PLAYS = 16  # ended plays remembered per stream, to number a play that resumes at their alignment


@dataclass(frozen=True)
class DecisionParams:
    """Thresholds of the decision logic. ``from_config`` reads them from ``Config.daemon``."""

    hop_s: float = 1.024  # stream time between two hops of one stream
    code_bits: int = 64  # K, bits per code
    min_hits: int = 10  # hits a hypothesis needs before it becomes a play (docs/decision.md: sweep)
    min_evidence: float = 1.1  # summed hit scores (1 - 2 d / K per hit) needed to start
    min_confidence: float = 0.5  # confidence needed to start
    max_distance_ratio: float = 0.375  # matches farther than this * K bits are ignored
    align_tol_s: float = 1.5  # how far a hit may land from the predicted track offset
    speed_tol: float = 0.03  # allowed playback speed deviation (0.03 = 0.97 .. 1.03)
    candidate_max_misses: int = 1  # consecutive misses a not-yet-started hypothesis survives
    end_after_misses: int = 16  # consecutive misses that end a play (hysteresis)
    from_start_max_s: float = 8.0  # a play first hit at most this far into the track was played from 0
    start_context_s: float = 4.0  # audio the model needs before its first match (mid-track starts)
    max_overlap_s: float = 1.0  # how much a play may overlap the previous one, for the start bound
    end_bias_s: float = 1.5  # added to the last hit time to give the end (calibrated, docs/decision.md)
    max_candidates: int = 32  # hypotheses kept per stream (bounded state)
    rival_window_s: float = 1.5  # an open play of another track first hit this close (a hop + jitter) blocks a start (0: off)
    # Verification (docs/decision.md, "Verification"): the stream's recent codes compared one to one
    # with the catalog code its play's line predicts. 0 turns it off (also without a catalog lookup).
    verify_max_distance_ratio: float = 0.3125  # a code this close (x K bits) to the predicted one verifies
    verify_history_hops: int = 40  # codes kept per stream for the look back at a play's start
    verify_gap_hops: int = 2  # hops after the last hit that may verify; failed hops the look back may cross
    # Change-point boundaries (docs/decision.md, "Change points"): where the stream's codes along a
    # play's line stop being closer than ``boundary_distance_ratio`` x K to the catalog's, in sum,
    # before its first hit and after its last one. 0 turns it off (the walks above decide).
    boundary_distance_ratio: float = 0.43
    boundary_max_drop_ratio: float = 0.3125  # contrary evidence (sum of d - threshold, x K bits) that ends a walk
    boundary_start_context_s: float = 3.5  # start = change point - this (not before the line's origin)
    boundary_end_bias_s: float = -1.0  # end = change point + this (not before the last support + end_bias_s)
    # Peaks (docs/decision.md, "Peaks"): a candidate with ``peak_hits`` hits whose line the stream's
    # spectral peaks confirm (agreement >= ``peak_min_agreement``) starts without waiting for
    # ``min_hits``. 0 turns it off (also without a peak checker).
    peak_hits: int = 2
    peak_min_agreement: float = 0.4
    peak_veto_below: float = 0.2  # ... and a candidate at ``min_hits`` whose peaks agree less than this waits (0: off)
    id_quantum_s: float = 10.0  # plays of a track whose origins are closer may share an id bucket (events.py)

    @classmethod
    def from_config(cls, config: Config) -> DecisionParams:
        """Decision parameters from ``config.daemon``, hop and code length from the model/front end."""
        d, fe = config.daemon, config.frontend
        return cls(
            hop_s=config.model.hop_frames * fe.hop_length / fe.sample_rate,
            code_bits=config.model.bits,
            min_hits=d.min_hits,
            min_evidence=d.min_evidence,
            min_confidence=d.min_confidence,
            max_distance_ratio=d.max_distance_ratio,
            align_tol_s=d.align_tol_s,
            speed_tol=d.speed_tol,
            candidate_max_misses=d.candidate_max_misses,
            end_after_misses=d.end_after_misses,
            from_start_max_s=d.from_start_max_s,
            start_context_s=d.start_context_s,
            max_overlap_s=d.max_overlap_s,
            end_bias_s=d.end_bias_s,
            max_candidates=d.max_candidates,
            rival_window_s=d.rival_window_s,
            verify_max_distance_ratio=d.verify_max_distance_ratio,
            verify_history_hops=d.verify_history_hops,
            verify_gap_hops=d.verify_gap_hops,
            boundary_distance_ratio=d.boundary_distance_ratio,
            boundary_max_drop_ratio=d.boundary_max_drop_ratio,
            boundary_start_context_s=d.boundary_start_context_s,
            boundary_end_bias_s=d.boundary_end_bias_s,
            peak_hits=d.peak_hits,
            peak_min_agreement=d.peak_min_agreement,
            peak_veto_below=d.peak_veto_below,
            id_quantum_s=d.event_id_quantum_s,
        )


@dataclass(frozen=True)
class Play:
    """One recognised play of a catalog track on a stream (a snapshot; ``end_s`` is None while open).

    ``start_s``/``end_s`` are stream times of the estimated play boundaries, ``track_offset_s`` the
    track time at ``start_s``. ``origin_s`` is the stream time at which the track's offset 0 would
    have played given the alignment seen when the play was detected; it does not depend on when the
    first hit came, so it identifies the play across replays (events.py builds ids from it).
    ``detected_s`` is the stream time of the hop that started the play (detection latency =
    ``detected_s - start_s``). ``speed`` is the fitted playback speed, ``hits`` the number of hops
    that supported the play, ``mean_distance`` their mean Hamming distance. ``occurrence`` tells
    apart plays of the same track on the same stream whose origins lie within an id quantum of each
    other (a play that ended on a long dropout and resumed at the same alignment): 0 for the first,
    then 1, 2, ... (part of the play id, see events.py).
    """

    stream_id: str
    track_id: Any
    start_s: float
    end_s: float | None
    track_offset_s: float
    origin_s: float
    confidence: float
    hits: int
    mean_distance: float
    speed: float
    first_hit_s: float
    last_hit_s: float
    detected_s: float
    occurrence: int = 0

    @property
    def duration_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s


class PlayEvent(NamedTuple):
    """A decision: ``type`` is ``"started"`` or ``"ended"``; ``play`` the play at that moment."""

    type: str
    play: Play


class CodeLookup(Protocol):
    """The catalog's codes by position: what verification compares a stream's codes with
    (:meth:`streamd.store.table.CodeTable.codes_at`)."""

    def codes_at(self, track_id: Any, offsets: np.ndarray, tolerance_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(packed codes (n, K/8) uint8, found (n,) bool): the code of ``track_id`` nearest each
        offset, found when one lies within ``tolerance_s``."""
        ...


class PeakCheck(Protocol):
    """Spectral-peak agreement of a stream's newest audio with a track at an offset (streamd.peaks)."""

    def agreement(self, stream_id: str, t: float, track_id: Any, offset_s: float) -> float | None:
        """Share of the stream's peaks before stream time ``t`` that lie on ``track_id``'s peaks when
        ``t`` is at track offset ``offset_s`` (best lag and speed near it); None: no verdict."""
        ...


class _Hypothesis:
    """A guess "this stream plays ``track`` along the line offset ≈ o0 + speed * (t - t0)" + its evidence.

    The line is a least-squares fit of hit offsets against hit times (running sums, so the state
    is constant-size however long the play). Offsets and times are stored relative to the first
    hit to keep the sums well conditioned.
    """

    __slots__ = (
        "track", "t0", "o0", "t_last", "o_last", "t_end", "n", "sum_d", "score", "sx", "sy", "sxx", "sxy", "hit",
        "expires", "start_s", "track_offset_s", "origin_s", "detected_s", "prev_end_s", "audio_start_s", "occurrence",
        "verified_from", "from_track_start", "t_hit", "airing_start_s",
    )  # fmt: skip
    # Slots newer than some saved states: their value when absent.
    _OPTIONAL = {"audio_start_s": None, "verified_from": None, "from_track_start": None, "t_hit": None,
                 "airing_start_s": None}  # fmt: skip

    def __init__(self, track: Any, t: float, offset: float, distance: float, score: float, expires: float) -> None:
        self.track = track
        self.t0 = t
        self.o0 = offset
        self.t_last = t
        self.o_last = offset
        self.t_end = t
        self.t_hit = t  # last hit (search match), as opposed to verified support
        self.n = 1
        self.sum_d = distance
        self.score = score
        self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.hit = True
        self.expires = expires  # a hypothesis that is not a play yet dies when not supported by then
        # Set by the look back when it becomes a play (verification on): the earliest verified hop
        # before its first hit, and whether the look back reached the track's beginning (None: the
        # stream's code history ended first).
        self.verified_from: float | None = None
        self.from_track_start: bool | None = None
        # Set when it takes over a play (Tracker._hand_over): that play's first hit; the airing began by then.
        self.airing_start_s: float | None = None
        # start_s, track_offset_s, origin_s, detected_s, prev_end_s, audio_start_s, occurrence: set when
        # it becomes a play.

    def add_hit(self, t: float, offset: float, distance: float, score: float, hop_s: float) -> None:
        """Count a hit. It moves the end of the play only if the previous support was at most three
        hops before: one chance match near the predicted offset after a run of misses keeps the
        play alive, but should not stretch its end."""
        self.support(t, offset, hop_s)
        self.t_hit = t
        x = t - self.t0
        y = offset - self.o0
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        self.sum_d += distance
        self.score += score

    def support(self, t: float, offset: float, hop_s: float) -> None:
        """Support that moves the end (a hit, or a verified hop) if the previous support was at
        most three hops before."""
        if t - self.t_last <= 3.5 * hop_s:
            self.t_end = t
        self.keep_alive(t, offset)

    def keep_alive(self, t: float, offset: float) -> None:
        """Support without evidence: the hypothesis survives this hop but gains nothing."""
        self.t_last = t
        self.o_last = offset
        self.hit = True

    def line(self, p: DecisionParams) -> tuple[float, float]:
        """(speed, offset at t0) of the fitted line.

        The speed is taken as 1 until the hits span ``FIT_SPAN_HOPS`` hops: over shorter spans the
        timing jitter of the matches (a few tenths of a second) makes the fitted slope noisier than
        the speed range it could detect, and a 3 % speed error only builds up 0.5 s over 16 s,
        well inside the tolerance.
        """
        speed = min(max(self.slope(p), 1.0 - p.speed_tol), 1.0 + p.speed_tol)
        return speed, self.o0 + (self.sy - speed * self.sx) / self.n

    def slope(self, p: DecisionParams) -> float:
        """The least-squares slope of the hits (offset against time), not clamped to ``speed_tol``;
        1 until the hits span ``FIT_SPAN_HOPS`` hops (see :meth:`line`)."""
        n = self.n
        if n >= 3 and self.t_last - self.t0 >= FIT_SPAN_HOPS * p.hop_s:
            den = n * self.sxx - self.sx * self.sx
            if den > 0:
                return (n * self.sxy - self.sx * self.sy) / den
        return 1.0

    def predict(self, t: float, p: DecisionParams) -> float:
        speed, offset0 = self.line(p)
        return offset0 + speed * (t - self.t0)

    def confidence(self, p: DecisionParams) -> float:
        """Mean bit agreement above chance (0 at K/2 bits off, 1 for equal codes) x hit ratio."""
        agreement = max(0.0, 1.0 - 2.0 * self.sum_d / (self.n * p.code_bits))
        spanned = round((self.t_last - self.t0) / p.hop_s) + 1
        return agreement * min(1.0, self.n / spanned)

    def estimate_start(self, p: DecisionParams) -> tuple[float, float, float]:
        """(start_s, track_offset_s at start, origin_s) from the hits so far; see docs/decision.md.

        If the track was played from its beginning, the alignment gives the start exactly (origin,
        where the fitted line crosses offset 0); we assume so when the first hit came at most
        ``from_start_max_s`` into the track. Otherwise the play started mid-track and the origin
        lies before the real start; then the first hit bounds it: the model needs about
        ``start_context_s`` of the track before it matches, but not before the stream's audio began
        (``audio_start_s``: a stream that opens mid-track can match after a second or two). In both
        cases a play does not start long before the previous one ended. With verification, the look
        back (``Tracker._look_back``) may move the first hit earlier, to the earliest hop whose code
        verified, and a look back that reached the track's offset 0 through verified hops says
        "from its beginning" however late the first hit came. With change points
        (``boundary_distance_ratio``), a walk stopped before offset 0 gives the start as that
        point − ``boundary_start_context_s``, not before the origin.
        """
        speed, offset0 = self.line(p)
        origin = self.t0 - offset0 / speed
        start = origin
        first = self.t0 if self.verified_from is None else self.verified_from
        if p.boundary_distance_ratio > 0 and self.from_track_start is False:  # a change point before offset 0
            start = max(origin, first - p.boundary_start_context_s)
        elif not self.from_track_start and offset0 + speed * (first - self.t0) > p.from_start_max_s:
            start = first - p.start_context_s
        if start > origin and self.audio_start_s is not None:
            start = max(start, self.audio_start_s)
        if self.prev_end_s is not None:  # also for "from the start": an excerpt may begin a few s in
            start = max(start, self.prev_end_s - p.max_overlap_s)
        if self.airing_start_s is not None:
            start = min(start, self.airing_start_s)
        start = min(start, self.t0)
        return start, max(0.0, offset0 + speed * (start - self.t0)), origin

    def snapshot(self, stream_id: str, p: DecisionParams, end_s: float | None) -> Play:
        speed, _ = self.line(p)
        return Play(
            stream_id=stream_id,
            track_id=self.track,
            start_s=self.start_s,
            end_s=end_s,
            track_offset_s=self.track_offset_s,
            origin_s=self.origin_s,
            confidence=self.confidence(p),
            hits=self.n,
            mean_distance=self.sum_d / self.n,
            speed=speed,
            first_hit_s=self.t0,
            last_hit_s=self.t_end,
            detected_s=self.detected_s,
            occurrence=self.occurrence,
        )


def _distance_of(entry: list[Any]) -> float:
    return entry[1]


def _score_of(h: _Hypothesis) -> float:
    return h.score


class _StreamState:
    __slots__ = ("last_t", "audio_start_s", "plays", "candidates", "last_end_s", "ended", "history")

    def __init__(self, history_hops: int = 0) -> None:
        self.last_t: float | None = None
        self.audio_start_s: float | None = None  # stream time of the oldest audio the front end has
        self.plays: list[_Hypothesis] = []  # started, not yet ended
        self.candidates: list[_Hypothesis] = []  # not yet started
        self.last_end_s: float | None = None  # last hit of the most recent ended play
        self.ended: list[tuple[Any, float, int]] = []  # (track, origin_s, occurrence) of the latest ended plays
        self.history: deque[tuple[float, int]] = deque(maxlen=history_hops)  # (t, code as int), newest last


def _hypothesis_fields(h: _Hypothesis) -> dict[str, Any]:
    """A hypothesis as JSON-safe numbers; slots not set yet (a candidate's play fields) are None."""
    out = {}
    for name in _Hypothesis.__slots__:
        value = getattr(h, name, None)
        out[name] = None if isinstance(value, float) and not math.isfinite(value) else value
    return out


def _hypothesis_from(fields: dict[str, Any]) -> _Hypothesis:
    h = _Hypothesis.__new__(_Hypothesis)
    for name in _Hypothesis.__slots__:
        if name in fields:
            setattr(h, name, fields[name])
        elif name in _Hypothesis._OPTIONAL:
            setattr(h, name, _Hypothesis._OPTIONAL[name])
        else:
            raise ValueError(f"hypothesis lacks {name}")
    if h.expires is None:  # -inf (a duplicate marked to die) does not survive JSON
        h.expires = -math.inf
    return h


class Tracker:
    """Decision state of many streams. Feed one hop per stream with :meth:`update`.

    State per stream is bounded: at most ``max_candidates`` hypotheses plus the open plays, each
    a fixed set of numbers, and with a ``catalog`` (verification) the codes of the last
    ``verify_history_hops`` hops. Streams are created on first sight and forgotten by :meth:`flush`.
    """

    def __init__(self, params: DecisionParams | None = None, catalog: CodeLookup | None = None,
                 peaks: PeakCheck | None = None) -> None:  # fmt: skip
        self.params = params or DecisionParams()
        self.catalog = catalog
        self.peaks = peaks if self.params.peak_hits > 0 else None
        self._streams: dict[str, _StreamState] = {}
        p = self.params
        verifying = catalog is not None and p.verify_max_distance_ratio > 0 and p.verify_history_hops > 0
        self._verify_max = p.verify_max_distance_ratio * p.code_bits if verifying else -1.0
        self._boundary_max = p.boundary_distance_ratio * p.code_bits
        self._history_hops = p.verify_history_hops if verifying else 0
        self._max_distance = p.max_distance_ratio * p.code_bits
        self._score_scale = 2.0 / p.code_bits
        self._end_gap = (p.end_after_misses - 0.5) * p.hop_s
        self._merge_radius = 2.0 * p.align_tol_s

    @property
    def n_streams(self) -> int:
        return len(self._streams)

    @property
    def n_open_plays(self) -> int:
        return sum(len(s.plays) for s in self._streams.values())

    def open_plays(self, stream_id: str | None = None) -> list[Play]:
        """Snapshots of the plays that have started and not ended (of one stream, or all)."""
        ids = self._streams if stream_id is None else [stream_id]
        return [
            h.snapshot(sid, self.params, None)
            for sid in ids
            if sid in self._streams
            for h in self._streams[sid].plays
        ]

    def update(
        self,
        stream_ids: Sequence[str],
        stream_times: Sequence[float] | np.ndarray,
        match_track_ids: Sequence[Sequence[Any]] | np.ndarray,
        match_offsets: Sequence[Sequence[float]] | np.ndarray,
        match_distances: Sequence[Sequence[float]] | np.ndarray,
        audio_start_s: Sequence[float] | np.ndarray | None = None,
        codes: np.ndarray | None = None,
    ) -> list[PlayEvent]:
        """Feed one hop of B streams; return the events it causes (ended before started per stream).

        Row b holds stream ``stream_ids[b]`` at stream time ``stream_times[b]`` and its top-k
        matches: track ids (B, k), track offsets in seconds of the window end (B, k) and Hamming
        distances (B, k). Unused slots are marked by a distance < 0 or > K, or a track id of None
        or "". A hop whose time is not after the stream's previous hop is ignored.
        ``audio_start_s[b]``, if given, is the stream time of the oldest audio the front end holds
        for the stream: no play is reported to start before it. ``codes`` (B, K/8) uint8, if given,
        are the packed codes that were searched: with a catalog lookup the tracker verifies its
        plays with them.
        """
        times = np.asarray(stream_times, dtype=np.float64).tolist()
        starts = [None] * len(times) if audio_start_s is None else np.asarray(audio_start_s, np.float64).tolist()
        hop_codes = _code_ints(codes if self._history_hops else None, len(times))
        ids = match_track_ids.tolist() if isinstance(match_track_ids, np.ndarray) else match_track_ids
        offsets = np.asarray(match_offsets, dtype=np.float64).tolist()
        distances = np.asarray(match_distances).tolist()
        if not (len(stream_ids) == len(times) == len(starts) == len(ids) == len(offsets) == len(distances)):
            raise ValueError("update(): stream_ids, stream_times, audio_start_s and match arrays differ in length")
        events: list[PlayEvent] = []
        for stream_id, t, start, code, *matches in zip(stream_ids, times, starts, hop_codes, ids, offsets, distances,
                                                       strict=True):  # fmt: skip
            self._step(stream_id, t, *matches, events, start, code)
        return events

    def update_one(
        self,
        stream_id: str,
        stream_time: float,
        track_ids: Sequence[Any],
        offsets: Sequence[float],
        distances: Sequence[float],
        audio_start_s: float | None = None,
        code: np.ndarray | None = None,
    ) -> list[PlayEvent]:
        """:meth:`update` for a single stream (``code``: its packed code, (K/8,) uint8)."""
        events: list[PlayEvent] = []
        self._step(
            stream_id, float(stream_time), list(track_ids),
            np.asarray(offsets, dtype=np.float64).tolist(), np.asarray(distances).tolist(), events,
            None if audio_start_s is None else float(audio_start_s),
            None if code is None else _code_ints(np.asarray(code).reshape(1, -1), 1)[0],
        )  # fmt: skip
        return events

    def export_state(self, stream_id: str) -> dict[str, Any] | None:
        """Everything the tracker keeps of ``stream_id`` as a JSON-safe document (None: never seen).

        Open plays, candidates, the hop clock and the ended-play memory: a tracker restored from it
        (:meth:`restore_state`) and fed the same hops decides exactly what this one would have."""
        state = self._streams.get(stream_id)
        if state is None:
            return None
        return {
            "last_t": state.last_t,
            "audio_start_s": state.audio_start_s,
            "last_end_s": state.last_end_s,
            "plays": [_hypothesis_fields(h) for h in state.plays],
            "candidates": [_hypothesis_fields(h) for h in state.candidates],
            "ended": [list(entry) for entry in state.ended],
            "history": [[t, f"{code:x}"] for t, code in state.history],
        }

    def restore_state(self, stream_id: str, document: dict[str, Any]) -> None:
        """Replace the state of ``stream_id`` by one :meth:`export_state` made; ValueError if malformed."""
        state = _StreamState(self._history_hops)
        try:
            state.history.extend((float(t), int(code, 16)) for t, code in document.get("history", []))
            state.last_t = document["last_t"]
            state.audio_start_s = document.get("audio_start_s")
            state.last_end_s = document["last_end_s"]
            state.plays = [_hypothesis_from(f) for f in document["plays"]]
            state.candidates = [_hypothesis_from(f) for f in document.get("candidates", [])]
            state.ended = [(track, float(origin), int(n)) for track, origin, n in document.get("ended", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"tracker state of {stream_id}: {exc!r}") from None
        self._streams[stream_id] = state

    def flush(self, stream_id: str) -> list[PlayEvent]:
        """End of stream: end its open plays at their last hit and forget the stream."""
        state = self._streams.pop(stream_id, None)
        if state is None:
            return []
        return [self._end(stream_id, state, h) for h in state.plays]

    def reset(self, stream_id: str) -> list[PlayEvent]:
        """The stream's buffer was reset (long gap): end its open plays at their last hit, start afresh."""
        return self.flush(stream_id)

    def flush_all(self) -> list[PlayEvent]:
        """End every open play of every stream (shutdown)."""
        events: list[PlayEvent] = []
        for stream_id in list(self._streams):
            events.extend(self.flush(stream_id))
        return events

    def _end(self, stream_id: str, state: _StreamState, h: _Hypothesis) -> PlayEvent:
        p = self.params
        h.start_s, h.track_offset_s, _ = h.estimate_start(p)  # refined with every hit
        end = h.t_end + p.end_bias_s
        if p.boundary_distance_ratio > 0 and self._history_hops:
            t_change = self._end_change_point(h, state)
            if t_change is not None:
                end = max(end, t_change + p.boundary_end_bias_s)
        successors = [g.start_s for g in state.plays if g is not h and g.t0 > h.t0]
        if successors:  # the next track has started: plays overlap by at most a crossfade
            end = min(end, min(successors) + p.max_overlap_s)
        end = max(end, h.start_s)
        if state.last_end_s is None or h.t_end > state.last_end_s:
            state.last_end_s = h.t_end
        state.ended.append((h.track, h.origin_s, h.occurrence))
        del state.ended[:-RECENT_PLAYS]
        return PlayEvent(ENDED, h.snapshot(stream_id, p, end))

    def _step(
        self,
        stream_id: str,
        t: float,
        track_ids: list[Any],
        offsets: list[float],
        distances: list[float],
        events: list[PlayEvent],
        audio_start_s: float | None = None,
        code: int | None = None,
    ) -> None:
        p = self.params
        state = self._streams.get(stream_id)
        if state is None:
            state = self._streams[stream_id] = _StreamState(self._history_hops)
        if audio_start_s is not None:
            state.audio_start_s = audio_start_s
        if state.last_t is not None and t <= state.last_t:
            return
        state.last_t = t
        verifying = code is not None and self._history_hops > 0
        if verifying:
            state.history.append((t, code))

        # Matches of this hop by track: [offset, distance, claimed].
        max_d = self._max_distance
        by_track: dict[Any, list[list[Any]]] = {}
        for tid, offset, d in zip(track_ids, offsets, distances, strict=True):
            if tid is None or tid == "" or not 0 <= d <= max_d or offset != offset:
                continue
            entry = [offset, d, False]
            if tid in by_track:
                by_track[tid].append(entry)
            else:
                by_track[tid] = [entry]

        # Open plays claim first, then the hypotheses with the most evidence; each match supports
        # one hypothesis. A hypothesis whose line has come within the merge radius of a better
        # supported one of the same track is a duplicate of it and dies: either it fed on the
        # neighbours of that one's hits, or it is a worse-aligned line of the same passage (a first
        # hit one match off) that would otherwise keep the true line from forming.
        predictions: dict[Any, list[float]] = {}
        radius = self._merge_radius
        for h in state.plays:
            h.hit = False
            entries = by_track.get(h.track)
            if entries:
                predicted = h.predict(t, p)
                self._claim(h, t, entries, predicted)
                predictions.setdefault(h.track, []).append(predicted)
        for h in sorted(state.candidates, key=_score_of, reverse=True):  # stable: older first on ties
            h.hit = False
            entries = by_track.get(h.track)
            if entries:
                predicted = h.predict(t, p)
                others = predictions.get(h.track)
                if others is None:
                    predictions[h.track] = [predicted]
                elif any(abs(predicted - o) <= radius for o in others):
                    h.expires = -math.inf
                    continue
                else:
                    others.append(predicted)
                self._claim(h, t, entries, predicted)

        if verifying:
            for h in state.plays:
                if not h.hit:
                    self._verify(h, t, code)
        if self.peaks is not None:  # peaks support an open play the search and the codes missed
            for h in state.plays:
                # after 1 and 4 missed hops: a play that has ended is asked twice, not 12 times
                if not h.hit and round((t - h.t_last) / p.hop_s) in PEAK_SUPPORT_MISSES \
                        and self._peaks_agree(stream_id, h, t):  # fmt: skip
                    # alive, but the end does not move: the 4 s of peaks lag a change of track
                    h.keep_alive(t, h.predict(t, p))

        if state.plays:
            for h in [h for h in state.plays if not h.hit and t - h.t_last > self._end_gap]:
                state.plays.remove(h)
                successor = self._successor(h, state)
                if successor is None:
                    events.append(self._end(stream_id, state, h))
                else:
                    self._hand_over(h, successor, state)
            if self.peaks is not None:
                self._realign(state)

        candidates = [h for h in state.candidates if h.hit or h.expires >= t]
        if by_track:
            self._spawn(candidates, t, by_track, predictions)
        if len(candidates) > p.max_candidates:  # keep the best-supported ones
            candidates.sort(key=_score_of, reverse=True)
            del candidates[p.max_candidates :]

        started = False
        eligible = [h for h in candidates if h.hit and h.score >= p.min_evidence
                    and (h.n >= p.min_hits or self._peak_start(stream_id, state, h, t))]  # fmt: skip
        if eligible and p.rival_window_s > 0:  # rivals (one piece, two recordings): see _awaits_rival
            eligible = [h for h in eligible if not self._awaits_rival(h, candidates)]
            if len(eligible) > 1:
                eligible.sort(key=self._rival_rank, reverse=True)
        for h in eligible:
            if self._may_start(h, state, t) and not (h.n >= p.min_hits and self._peaks_refute(stream_id, h, t)):
                h.prev_end_s = self._previous_end(h, state)
                h.audio_start_s = state.audio_start_s
                if verifying:
                    self._look_back(h, state)
                h.start_s, h.track_offset_s, h.origin_s = h.estimate_start(p)
                h.detected_s = t
                h.occurrence = self._occurrence(h, state)
                state.plays.append(h)
                events.append(PlayEvent(STARTED, h.snapshot(stream_id, p, None)))
                started = True
        state.candidates = [h for h in candidates if h not in state.plays] if started else candidates

    def _successor(self, h: _Hypothesis, state: _StreamState) -> _Hypothesis | None:
        """The hypothesis that continues ending play ``h``: same track, first hit while ``h`` was
        still hit, supported since ``h``'s last hit, and enough evidence to start a play itself.

        Loop-based tracks repeat passages seconds apart, so a play can open at a wrong alignment
        (the true one hidden by talk-over at the start, say) while the true alignment builds up as
        a candidate that ``_may_start`` keeps from opening a second play of the track. When the
        wrong one fades, the true one is the same airing, not a new play.
        """
        p = self.params
        best = None
        for c in state.candidates:
            if (c.track == h.track and c.t0 < h.t_last < c.t_last and c.n >= p.min_hits
                    and c.score >= p.min_evidence and c.confidence(p) >= p.min_confidence
                    and (best is None or c.n > best.n)):  # fmt: skip
                best = c
        return best

    def _realign(self, state: _StreamState) -> None:
        """A play that started on its peaks with fewer than ``min_hits`` hits may have started at a
        repeat of a loop-based track (its peaks agree there too): while it is that young, a
        candidate of the same track with more evidence, hit this hop, takes it over as at a
        hand-over (same play id; its own hits give the boundaries that ``ended`` reports)."""
        p = self.params
        for h in [h for h in state.plays if h.n < p.min_hits]:
            better = [c for c in state.candidates if c.track == h.track and c.hit and c.score > h.score]
            if better:
                state.plays.remove(h)
                self._hand_over(h, max(better, key=_score_of), state)

    def _hand_over(self, h: _Hypothesis, successor: _Hypothesis, state: _StreamState) -> None:
        """``successor`` becomes play ``h``: same play id and detection (no new ``started``); its
        own hits give the boundaries and offset that ``ended`` reports, but the start is at most
        ``h``'s first hit (``airing_start_s``): the airing was under way by then, however late the
        successor's own hits began."""
        state.candidates.remove(successor)
        successor.airing_start_s = h.t0 if h.airing_start_s is None else min(h.t0, h.airing_start_s)
        successor.prev_end_s, successor.audio_start_s = h.prev_end_s, h.audio_start_s
        successor.origin_s, successor.detected_s, successor.occurrence = h.origin_s, h.detected_s, h.occurrence
        if self._history_hops and state.history:
            self._look_back(successor, state)
        successor.start_s, successor.track_offset_s, _ = successor.estimate_start(self.params)
        state.plays.append(successor)

    def _code_distance(self, track: Any, offsets: list[float], codes: list[int]) -> list[int | None]:
        """Hamming distance of each stream code to the catalog code of ``track`` at the offset its
        line predicts (None: the catalog has no code there, e.g. a silent passage)."""
        assert self.catalog is not None
        tolerance = 0.6 * self.params.hop_s
        found_codes, found = self.catalog.codes_at(track, np.asarray(offsets, dtype=np.float64), tolerance)
        refs = _code_ints(found_codes, len(offsets))
        return [(code ^ ref).bit_count() if ok else None  # type: ignore[operator]
                for code, ref, ok in zip(codes, refs, np.asarray(found).tolist(), strict=True)]  # fmt: skip

    def _verify(self, h: _Hypothesis, t: float, code: int) -> None:
        """An open play that the search did not support this hop: if its last hit is at most
        ``verify_gap_hops`` hops old and this hop's code is within ``verify_max_distance_ratio`` of
        the catalog code the play's line predicts, the hop supports it (moves its end, resets its
        misses) without counting as a hit. One code against one catalog code is a far easier test
        than beating every code of the catalog: at the true alignment it passes on most hops, at
        chance on a few percent (docs/decision.md, "Verification"). The gap limit keeps a chance
        pass, or a run of them under a weak model, from reviving or prolonging a play that has
        stopped matching: verification moves an end by at most ``verify_gap_hops`` hops."""
        p = self.params
        last_hit = h.t_last if h.t_hit is None else h.t_hit
        if t - last_hit > (p.verify_gap_hops + 0.5) * p.hop_s:
            return
        predicted = h.predict(t, p)
        distance = self._code_distance(h.track, [predicted], [code])[0]
        if distance is not None and distance <= self._verify_max:
            h.support(t, predicted, p.hop_s)

    def _look_back(self, h: _Hypothesis, state: _StreamState) -> None:
        """When ``h`` becomes a play: walk the stream's code history back from its first hit along
        its line, verifying each hop against the catalog. Sets ``h.verified_from`` (the earliest
        verified hop, or the first hit) and ``h.from_track_start``: True when the walk reached track
        offset 0 (the track played from its beginning), False when more than ``verify_gap_hops``
        hops in a row failed before that (the track began to match there: a mid-track start), None
        when the history ran out first (estimate_start then falls back to its guesses). With
        ``boundary_distance_ratio`` the walk is a change point (:meth:`_change_point`) instead: a
        DJ over the first seconds keeps the codes too far to verify but closer than chance."""
        p = self.params
        earlier = [(t, code) for t, code in reversed(state.history) if t < h.t0]
        h.verified_from, h.from_track_start = h.t0, None
        if not earlier:
            return
        times, offsets, distances = self._along_line(h, earlier)
        if p.boundary_distance_ratio > 0:
            before_start = [offset < -0.5 * p.hop_s for offset in offsets]
            t_best, reached = self._change_point(times, distances, before_start)
            h.verified_from = min(h.t0, t_best) if t_best is not None else h.t0
            h.from_track_start = reached
            return
        failed = 0
        for t, offset, distance in zip(times, offsets, distances, strict=True):
            if offset < -0.5 * p.hop_s:
                h.from_track_start = True
                return
            if distance is None:
                continue
            if distance <= self._verify_max:
                h.verified_from, failed = t, 0
            else:
                failed += 1
                if failed > p.verify_gap_hops:
                    h.from_track_start = False
                    return

    def _change_point(self, times: list[float], distances: list[int | None],
                      beyond: list[bool]) -> tuple[float | None, bool | None]:
        """Walk hops away from a play's hits (back from its first hit, or on from its last one),
        summing ``boundary_distance_ratio`` x K − distance: positive where the stream's code lies
        closer than that to the code the play's line predicts. Under a DJ over a play's first or
        last seconds the 128-bit codes sit ~43 bits from the catalog's at the true alignment, over
        other audio ~64 (docs/decision.md, "Change points"). The boundary is the hop where the sum
        peaks. Returns (that hop's time, or None if no hop added evidence; whether the walk reached
        the track's beginning): True when it reached a hop marked ``beyond`` (before track offset
        0) less than half the drop below the peak; False when the sum fell
        ``boundary_max_drop_ratio`` x K below the peak first, or it reached ``beyond`` lower;
        None when the hops ran out."""
        p = self.params
        threshold, drop = self._boundary_max, p.boundary_max_drop_ratio * p.code_bits
        total = best = 0.0
        t_best = None
        for t, distance, outside in zip(times, distances, beyond, strict=True):
            if outside:
                return t_best, total >= best - drop / 2
            if distance is None:
                continue
            total += threshold - distance
            if total > best:
                best, t_best = total, t
            elif total < best - drop:
                return t_best, False
        return t_best, None

    def _end_change_point(self, h: _Hypothesis, state: _StreamState) -> float | None:
        """The last hop after ``h``'s last support where its codes, in sum, still follow its line
        (:meth:`_change_point` forwards over the code history), or None."""
        later = [(t, code) for t, code in state.history if t > h.t_end]
        if not later:
            return None
        times, _, distances = self._along_line(h, later)
        return self._change_point(times, distances, [False] * len(times))[0]

    def _along_line(self, h: _Hypothesis, entries: list[tuple[float, int]]) -> tuple[list[float], list[float], list[int | None]]:
        """(times, offsets ``h``'s line predicts there, distances of the codes to the catalog's
        codes at those offsets) for history ``entries`` (t, code)."""
        times = [t for t, _ in entries]
        offsets = [h.predict(t, self.params) for t in times]
        return times, offsets, self._code_distance(h.track, offsets, [code for _, code in entries])

    def _peak_start(self, stream_id: str, state: _StreamState, h: _Hypothesis, t: float) -> bool:
        """A candidate with ``peak_hits`` (not ``min_hits``) hits may start: it could start otherwise
        (confidence, no play of its track open), no open play was hit by the search on this hop or
        the previous one (these cost nothing, so they are checked first), and the peaks agree.
        While a play goes on, a candidate of another track is a similar passage rather than a new
        play (it still starts at ``min_hits``); at a real change the old play stops being hit
        within a hop or two, before the new track has its ``peak_hits`` hits."""
        p = self.params
        recent = t - 1.5 * p.hop_s
        return (self.peaks is not None and h.n >= p.peak_hits and h.confidence(p) >= p.min_confidence
                and not any(o.track == h.track or (o.t_hit is not None and o.t_hit >= recent) for o in state.plays)
                and self._peaks_agree(stream_id, h, t))  # fmt: skip

    def _peaks_refute(self, stream_id: str, h: _Hypothesis, t: float) -> bool:
        """A candidate about to start on ``min_hits`` hits whose line the peaks contradict: the
        stream's peaks agree with the track's at chance level (below ``peak_veto_below``). Another
        piece of music that resembles a catalog passage can hold a consistent line of codes for
        ten hops and more (a 48 h soak had two such plays, agreement 0.11-0.17); a real play
        agrees far above chance a hop or two later if not now, so the veto delays it at most.
        No verdict (too few peaks, no peaks stored) vetoes nothing."""
        if self.peaks is None or self.params.peak_veto_below <= 0:
            return False
        agreement = self.peaks.agreement(stream_id, t, h.track, h.predict(t, self.params))
        return agreement is not None and agreement < self.params.peak_veto_below

    def _peaks_agree(self, stream_id: str, h: _Hypothesis, t: float) -> bool:
        """The stream's spectral peaks of the last seconds lie on the track's at the offset ``h``
        predicts (docs/decision.md, "Peaks"): independent evidence that lets a candidate start
        with ``peak_hits`` hits instead of ``min_hits``."""
        assert self.peaks is not None
        agreement = self.peaks.agreement(stream_id, t, h.track, h.predict(t, self.params))
        return agreement is not None and agreement >= self.params.peak_min_agreement

    def _patience(self, n: int) -> float:
        """How long after its last support a hypothesis with ``n`` hits that is not a play survives.

        As many consecutive misses as it has hits, at least ``candidate_max_misses``, at most
        ``end_after_misses``: chance hypotheses have one hit and die fast (bounding the state);
        a real play that already has a few hits is not lost to a few missed hops, which would
        delay its detection and its first hit.
        """
        p = self.params
        return (min(max(p.candidate_max_misses, n), p.end_after_misses) + 0.5) * p.hop_s

    def _claim(self, h: _Hypothesis, t: float, entries: list[list[Any]], predicted: float) -> None:
        """Give ``h`` the best unclaimed match of its track that lands on the offset it predicts.

        Best = smallest distance among the matches whose offset advanced since the previous hit.
        A match within tolerance that did not advance only keeps the hypothesis alive, without
        evidence: consecutive windows overlap by 28 of 29 s, so for audio that is not in the
        catalog the same chance match often comes back at the same offset a hop later, which the
        tolerance (wider than a hop) would otherwise accept as a hit.
        """
        p = self.params
        tolerance = p.align_tol_s + p.speed_tol * (t - h.t_last)
        min_offset = h.o_last + 0.5 * (t - h.t_last)
        best = None
        stuck = None
        for entry in entries:
            if entry[2] or abs(entry[0] - predicted) > tolerance:
                continue
            if entry[0] >= min_offset:
                if best is None or entry[1] < best[1]:
                    best = entry
            elif stuck is None:
                stuck = entry
        if best is not None:
            best[2] = True
            h.add_hit(t, best[0], best[1], max(0.0, 1.0 - best[1] * self._score_scale), p.hop_s)
            h.expires = t + self._patience(h.n)
        elif stuck is not None:
            stuck[2] = True
            h.keep_alive(t, stuck[0])
            h.expires = t + self._patience(h.n)

    def _spawn(
        self,
        candidates: list[_Hypothesis],
        t: float,
        by_track: dict[Any, list[list[Any]]],
        predictions: dict[Any, list[float]],
    ) -> None:
        """Unclaimed matches start new hypotheses, one per track and alignment.

        A match near the offset an existing hypothesis of its track predicts (within the merge
        radius, twice the tolerance) is a neighbour of that hypothesis' hit (adjacent catalog
        offsets have similar codes), not a new alignment; letting it start a parallel hypothesis
        would split plays.
        """
        radius = self._merge_radius
        scale = self._score_scale
        expires = t + self._patience(1)
        for tid, entries in by_track.items():
            taken = predictions.get(tid)
            if len(entries) > 1:
                entries.sort(key=_distance_of)
            for offset, d, claimed in entries:
                if claimed:
                    continue
                if taken is None:
                    taken = [offset]
                elif any(abs(offset - o) <= radius for o in taken):
                    continue
                else:
                    taken.append(offset)
                candidates.append(_Hypothesis(tid, t, offset, d, max(0.0, 1.0 - d * scale), expires))

    @staticmethod
    def _previous_end(h: _Hypothesis, state: _StreamState) -> float | None:
        """Last hit of the latest other play that was over before ``h``'s first hit (not overlapping)."""
        ends = [o.t_end for o in state.plays if o.t_end <= h.t0]
        if state.last_end_s is not None and state.last_end_s <= h.t0:
            ends.append(state.last_end_s)
        return max(ends, default=None)

    def _occurrence(self, h: _Hypothesis, state: _StreamState) -> int:
        """0, or one more than the latest play of ``h``'s track (open, or among the recently ended)
        whose origin is so close to ``h``'s that their ids could fall in one bucket (a hop of margin
        for the rounding of wall times to milliseconds). The same track resuming at the same
        alignment after a dropout that ended its play is a new play, and needs a new id."""
        radius = self.params.id_quantum_s + self.params.hop_s
        near = [o.occurrence for o in state.plays if o.track == h.track and abs(o.origin_s - h.origin_s) < radius]
        near += [n for track, origin, n in state.ended if track == h.track and abs(origin - h.origin_s) < radius]
        return max(near, default=-1) + 1

    def _may_start(self, h: _Hypothesis, state: _StreamState, t: float) -> bool:
        """Confidence is high enough and no play of the same track is open on the stream.

        The second condition keeps a repeated passage of the track being played (a chorus, or a
        loop a few seconds long, at another alignment) from starting a second play while the
        first one is still going: with a loop-based track, the first play can miss several hops
        in a row while the repeat is matched. A real second play of the same track starts once
        the first one has ended (``end_after_misses`` hops without support); its start is still
        estimated from its own hits, only its detection comes later.
        """
        p = self.params
        if h.confidence(p) < p.min_confidence:
            return False
        if p.rival_window_s > 0 and any(o.track != h.track and abs(o.t0 - h.t0) <= p.rival_window_s for o in state.plays):
            return False
        return not any(o.track == h.track for o in state.plays)

    def _awaits_rival(self, h: _Hypothesis, candidates: list[_Hypothesis]) -> bool:
        """``h`` has a serious rival — a candidate of another track whose first hit came within
        ``rival_window_s`` of its own, with at least half of ``min_hits`` — and either its hits do
        not span ``FIT_SPAN_HOPS`` hops yet, or its slope lies farther outside ``speed_tol`` than a
        rival's. Two recordings of one piece at different tempos (the corpus's
        ``landing_in_gran_paradiso`` and ``…_fast``) both match from the same moment; only the
        fitted speed tells them apart (the wrong one's slope lies outside the tolerance), so the
        choice waits for it. A rival that has not spanned the fit yet counts as fitting: the
        candidate outside waits until the rival fits, dies, or lies farther outside."""
        p = self.params
        rivals = [r for r in candidates
                  if r.track != h.track and r.n * 2 >= p.min_hits and abs(r.t0 - h.t0) <= p.rival_window_s]  # fmt: skip
        if not rivals:
            return False
        span = h.t_last - h.t0
        if span < FIT_SPAN_HOPS * p.hop_s:
            return True
        excess = self._speed_excess(h)
        if span < 2 * FIT_SPAN_HOPS * p.hop_s and (excess > 0 or any(self._speed_excess(r) > 0 for r in rivals)):
            return True  # a slope outside over 16 hops may be the jitter of a track's first matches
        return excess > 0 and any(self._speed_excess(r) < excess for r in rivals)

    def _speed_excess(self, h: _Hypothesis) -> float:
        """How far the fitted slope lies outside ``speed_tol`` (0 inside): the line of a recording at
        another tempo does not fit at any allowed speed."""
        return max(0.0, abs(h.slope(self.params) - 1.0) - self.params.speed_tol)

    def _rival_rank(self, h: _Hypothesis) -> tuple[float, float]:
        """Rivals eligible in one hop: the slope closer to the allowed speeds first (a recording at
        another tempo lies outside), then the more confident."""
        return -self._speed_excess(h), h.confidence(self.params)

    def _confidence_of(self, h: _Hypothesis) -> float:
        return h.confidence(self.params)


def decide(
    stream_times: Sequence[float] | np.ndarray,
    match_track_ids: Sequence[Sequence[Any]] | np.ndarray,
    match_offsets: Sequence[Sequence[float]] | np.ndarray,
    match_distances: Sequence[Sequence[float]] | np.ndarray,
    params: DecisionParams | None = None,
    stream_id: str = "",
    audio_start_s: float | None = None,
    codes: np.ndarray | None = None,
    catalog: CodeLookup | None = None,
    peaks: PeakCheck | None = None,
) -> list[Play]:
    """All plays in one whole recording (hop times + their top-k matches), sorted by start.

    The offline counterpart of the daemon (``streamd recognize``, ``streamd eval``): the same
    :class:`Tracker`, fed hop by hop, then flushed. ``audio_start_s``: the stream time where the
    recording begins (0 for ``Fingerprinter.codes_for_audio``'s hop grid), if plays must not start
    before it. ``codes`` (the packed code of every hop) and ``catalog`` turn verification on;
    ``peaks`` (a :class:`PeakCheck` over the recording) the peak-confirmed start.
    """
    tracker = Tracker(params, catalog, peaks)
    times = np.asarray(stream_times, dtype=np.float64).tolist()
    hop_codes = _code_ints(codes, len(times))
    ids = match_track_ids.tolist() if isinstance(match_track_ids, np.ndarray) else match_track_ids
    offsets = np.asarray(match_offsets, dtype=np.float64).tolist()
    distances = np.asarray(match_distances).tolist()
    events: list[PlayEvent] = []
    for t, tids, offs, ds, code in zip(times, ids, offsets, distances, hop_codes, strict=True):
        tracker._step(stream_id, t, tids, offs, ds, events, audio_start_s, code)
    events.extend(tracker.flush(stream_id))
    return sorted((e.play for e in events if e.type == ENDED), key=lambda play: play.start_s)


def _code_ints(codes: np.ndarray | None, n: int) -> list[int | None]:
    """Packed codes (n, K/8) uint8 → Python ints (XOR + bit_count is the cheapest Hamming distance
    of one pair); n Nones without codes."""
    if codes is None:
        return [None] * n
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or len(codes) != n:
        raise ValueError(f"codes must be ({n}, K/8) uint8, got shape {codes.shape}")
    return [int.from_bytes(row.tobytes(), "big") for row in codes]
