"""Synthetic store answers (top-k matches per hop) for testing and benchmarking the decision logic.

The decision logic only sees, per hop, k (track id, track offset, Hamming distance) triples. This
module fakes them for a timeline of plays without any audio or model, so that thresholds can be
checked over days of simulated stream time in seconds:

- *Chance matches* (what the store returns for audio that is not in the catalog): the k nearest of
  ``n_codes`` random codes, so their distances are the k smallest of ``n_codes`` draws of
  Binomial(K, 1/2), at a uniformly random track and offset. Consecutive windows overlap by 28 of
  29 seconds, so a chance match often repeats at the next hop with the same offset
  (``stuck_prob``); that is modelled too.
- *True matches* during a play: the track at its true offset (playback ``speed`` and a start
  offset), snapped to the catalog's offset grid with some timing jitter, distance
  Binomial(K, ``bit_error``), present with probability ``hit_prob`` (misses), plus near neighbours
  (the adjacent catalog offsets, a few bits farther), only once ``context_s`` of the play has been
  heard (the model needs some of the track in its window before it matches).

What it cannot model is real audio that resembles a catalog track (covers, remixes, shared
samples); the false-event rate on such audio has to be measured with the real model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """A play of catalog track number ``track`` from stream time ``start_s`` to ``end_s``.

    ``track_offset_s`` is the track time at ``start_s`` (0 = played from the beginning).
    """

    track: int
    start_s: float
    end_s: float
    track_offset_s: float = 0.0
    speed: float = 1.0
    hit_prob: float = 0.9
    bit_error: float = 0.08
    context_s: float = 2.0

    def offset_at(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.track_offset_s + self.speed * (t - self.start_s)


@dataclass(frozen=True)
class Matches:
    """Top-k store answers for ``len(times)`` hops of one stream, best (smallest distance) first."""

    times: np.ndarray  # (n,) float64, stream time of each hop (window end)
    track_ids: np.ndarray  # (n, k) object array of str
    offsets: np.ndarray  # (n, k) float64, track time of the window end
    distances: np.ndarray  # (n, k) int16


class SyntheticCatalog:
    """A catalog of ``n_tracks`` tracks with random durations, known only by its size and code length."""

    def __init__(
        self,
        n_tracks: int = 200,
        n_codes: int = 40_000,
        code_bits: int = 64,
        offset_step_s: float = 0.5,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.n_tracks = n_tracks
        self.n_codes = n_codes
        self.code_bits = code_bits
        self.offset_step_s = offset_step_s
        self.durations = rng.uniform(120.0, 300.0, n_tracks)
        self.track_ids = np.array([f"t{i:05d}" for i in range(n_tracks)], dtype=object)
        k = code_bits
        self._chance_pmf = np.array([math.comb(k, d) for d in range(k + 1)], dtype=np.float64) / 2.0**k

    def chance_matches(self, rng: np.random.Generator, times: np.ndarray, k: int, stuck_prob: float = 0.0) -> Matches:
        """What the store answers for audio that is not in the catalog, at each of ``times``."""
        n = len(times)
        counts = rng.multinomial(self.n_codes, self._chance_pmf, size=n)
        cumulative = np.cumsum(counts, axis=1)
        distances = np.stack([(cumulative > r).argmax(axis=1) for r in range(k)], axis=1).astype(np.int16)
        tracks = rng.integers(0, self.n_tracks, size=(n, k))
        offsets = rng.uniform(0.0, 1.0, size=(n, k)) * self.durations[tracks]
        offsets = np.round(offsets / self.offset_step_s) * self.offset_step_s
        if stuck_prob > 0 and n > 1:
            # A stuck slot repeats the match of the last fresh hop of that slot (window overlap).
            fresh = rng.random((n, k)) >= stuck_prob
            fresh[0] = True
            source = np.where(fresh, np.arange(n)[:, None], 0)
            source = np.maximum.accumulate(source, axis=0)
            columns = np.arange(k)[None, :]
            tracks = tracks[source, columns]
            offsets = offsets[source, columns]
        return Matches(np.asarray(times, dtype=np.float64), self.track_ids[tracks], offsets, distances)

    def matches(
        self,
        rng: np.random.Generator,
        times: np.ndarray,
        segments: list[Segment],
        k: int = 10,
        stuck_prob: float = 0.3,
        jitter_s: float = 0.25,
        neighbours: int = 2,
        share_overlaps: bool = True,
    ) -> Matches:
        """Store answers at ``times`` for a stream playing ``segments`` over background chance matches.

        Where segments overlap (a crossfade) each is matched with its ``hit_prob`` divided by the
        number of overlapping segments, unless ``share_overlaps`` is false.
        """
        times = np.asarray(times, dtype=np.float64)
        base = self.chance_matches(rng, times, k, stuck_prob)
        track_ids = base.track_ids.copy()
        offsets = base.offsets.copy()
        distances = base.distances.astype(np.int32)
        active = np.zeros(len(times), dtype=np.int32)
        for seg in segments if share_overlaps else ():
            active += (times >= seg.start_s) & (times <= seg.end_s)
        extra_ids, extra_offsets, extra_distances = [], [], []
        step = self.offset_step_s
        for seg in segments:
            duration = self.durations[seg.track]
            true_offset = seg.offset_at(times)
            present = (
                (times >= seg.start_s + seg.context_s)
                & (times <= seg.end_s)
                & (true_offset <= duration)
                & (rng.random(len(times)) < seg.hit_prob / np.maximum(active, 1))
            )
            observed = np.round((true_offset + rng.normal(0.0, jitter_s, len(times))) / step) * step
            d = rng.binomial(self.code_bits, seg.bit_error, len(times))
            for j in range(-neighbours, neighbours + 1):
                column_offsets = np.clip(observed + j * step, 0.0, duration)
                column_d = d + 2 * abs(j) + rng.integers(0, 2, len(times)) * (j != 0)
                extra_ids.append(np.where(present, self.track_ids[seg.track], None))
                extra_offsets.append(column_offsets)
                extra_distances.append(np.where(present, column_d, self.code_bits + 1))
        if extra_ids:
            track_ids = np.concatenate([track_ids, np.stack(extra_ids, axis=1)], axis=1)
            offsets = np.concatenate([offsets, np.stack(extra_offsets, axis=1)], axis=1)
            distances = np.concatenate([distances, np.stack(extra_distances, axis=1)], axis=1)
            order = np.argsort(distances, axis=1, kind="stable")[:, :k]
            track_ids = np.take_along_axis(track_ids, order, axis=1)
            offsets = np.take_along_axis(offsets, order, axis=1)
            distances = np.take_along_axis(distances, order, axis=1)
        return Matches(times, track_ids, offsets, distances.astype(np.int16))


def hop_times(start_s: float, end_s: float, hop_s: float = 1.024) -> np.ndarray:
    """Hop times (window ends) from ``start_s`` up to ``end_s``."""
    return start_s + hop_s * np.arange(int(np.floor((end_s - start_s) / hop_s)) + 1)
