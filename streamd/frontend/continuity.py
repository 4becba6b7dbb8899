"""Where a chunk belongs in its stream: in order, duplicate, late, after a gap, or after a restart.

A stream's chunks carry a sequence number and the capture time (epoch ms) of their first sample.
Kafka keeps a partition's order, but producers retry (duplicates), restart (the sequence starts
again) and lose audio (sequence gaps, or a capture overrun that skips time without skipping a
sequence number). :class:`ChunkOrder` remembers just enough of a stream's recent past to tell
these cases apart; what to *do* about each case is the bank's business (docs/frontend.md).
"""

from __future__ import annotations

IN_ORDER = "in_order"
DUPLICATE = "duplicate"
LATE = "late"
SEQ_GAP = "seq_gap"
TS_JUMP = "ts_jump"
TS_BACKWARD = "ts_backward"
SEQ_RESTART = "seq_restart"

_NO_GAP = {event: (event, 0.0) for event in (IN_ORDER, DUPLICATE, LATE, TS_BACKWARD)}  # no allocation

RECENT_SEQS = 64  # how many accepted sequence numbers are remembered to recognise duplicates
_RECENT_MASK = (1 << RECENT_SEQS) - 1


class ChunkOrder:
    """The expected next chunk of one stream, and which of the last 64 sequence numbers arrived.

    ``classify`` looks at a chunk without changing anything; ``advance`` records a chunk that
    the stream accepted. Times are in milliseconds; ``jitter_ms`` is how far a capture time may
    stray from the expected one before it counts as a jump.
    """

    __slots__ = ("next_seq", "next_ts_ms", "recent", "last_duration_ms", "jitter_ms")

    def __init__(self, seq: int, ts_ms: float, jitter_ms: float):
        self.next_seq = seq
        self.next_ts_ms = float(ts_ms)
        self.recent = 0  # bit k set: sequence number next_seq - 1 - k was accepted
        self.last_duration_ms = 0.0
        self.jitter_ms = jitter_ms

    def classify(self, seq: int, ts_ms: int) -> tuple[str, float]:
        """The case this chunk is, and for gaps the missing time in seconds (0 otherwise).

        - ``in_order``: the expected sequence number at about the expected time.
        - ``ts_jump``: the expected sequence number, but its capture time is later than expected
          by more than the jitter; the gap is that difference.
        - ``ts_backward``: the expected sequence number, captured earlier than expected (a
          producer clock step); the sequence number is trusted and the audio taken as contiguous.
        - ``seq_gap``: sequence numbers were skipped. The gap is the capture-time difference when
          the capture time moved forward consistently, else the skipped count times the last
          chunk's duration.
        - ``seq_restart``: an older sequence number whose capture time is *later* than expected:
          the producer restarted its numbering. The gap is the capture-time difference.
        - ``duplicate``: otherwise, an older sequence number among the last 64 accepted ones.
        - ``late``: otherwise, an older sequence number that was not accepted (it arrived after
          its gap was dealt with, or is older than the remembered 64).
        """
        expected = self.next_seq
        gap_ms = ts_ms - self.next_ts_ms
        if seq == expected:
            if gap_ms > self.jitter_ms:
                return TS_JUMP, gap_ms / 1000.0
            if gap_ms < -self.jitter_ms:
                return _NO_GAP[TS_BACKWARD]
            return _NO_GAP[IN_ORDER]
        if seq > expected:
            if gap_ms < -self.jitter_ms:
                gap_ms = (seq - expected) * self.last_duration_ms
            return SEQ_GAP, max(gap_ms, 0.0) / 1000.0
        if gap_ms > self.jitter_ms:
            return SEQ_RESTART, gap_ms / 1000.0
        age = expected - 1 - seq
        if age < RECENT_SEQS and (self.recent >> age) & 1:
            return _NO_GAP[DUPLICATE]
        return _NO_GAP[LATE]

    def advance(self, seq: int, ts_ms: int, duration_ms: float) -> None:
        """Record that the chunk ``seq`` was accepted; the next one is expected right after it."""
        shift = seq + 1 - self.next_seq
        if 0 < shift < RECENT_SEQS:
            self.recent = ((self.recent << shift) | 1) & _RECENT_MASK
        else:  # a restart (shift <= 0) or a gap longer than the memory
            self.recent = 1
        self.next_seq = seq + 1
        self.next_ts_ms = ts_ms + duration_ms
        self.last_duration_ms = duration_ms
