"""Spectral peaks of log-mel frames: an independent, fine-grained check of a candidate play.

The hash model summarises ~4.4 s of audio in one code per 1.024 s hop, and the decision logic
needs ``min_hits`` consistent hops before it trusts a line "stream plays track X at offset o":
chance matches of non-catalog music are consistent for a handful of hops, because consecutive
windows share most of their audio. That wait is most of the detection latency (docs/decision.md).

Spectral peaks answer the same question on another level. A peak is a log-mel bin that is the
largest of its neighbourhood (±``time_radius`` frames, ±``mel_radius`` mels) and stands out from
its surroundings; a few dozen per second survive codecs, noise and EQ well (the landmark idea of
Shazam, audfprint, Panako). Given a candidate's line, the peaks of the stream's newest seconds are
compared with the catalog track's peaks at the predicted offset: at the true alignment most of
them coincide within a frame and a mel bin, at chance a few percent. The line's offset is known
only to a few tenths of a second and its speed to ±3 %, so the agreement is the best over a small
range of lags and speeds.

Pure numpy: ``extract`` turns frames into peaks, ``agreement`` scores one alignment.
Reference peaks are extracted once per catalog track (``streamd index``), query peaks from the
stream's frames when a candidate asks for a check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PeakParams:
    """How peaks are picked and compared (frames: 12 kHz / hop 256 = 46.9 per second)."""

    time_radius: int = 7  # a peak is the largest bin within ±7 frames (±150 ms) ...
    mel_radius: int = 5  # ... and ±5 mel bins
    background_time: int = 23  # prominence = value − mean over ±23 frames ...
    background_mel: int = 10  # ... and ±10 mels
    min_prominence: float = 0.5  # log-power units above the local mean
    per_second: int = 30  # the most prominent peaks kept per second (1 s blocks of frames)
    frames_per_second: float = 12000 / 256
    tolerance_frames: int = 1  # a query peak agrees with a reference peak within ±1 frame ...
    tolerance_mels: int = 1  # ... and ±1 mel (a 3 % speed change moves a bin by about one)
    min_query_peaks: int = 40  # fewer peaks in the query (silence, a fade): no verdict


def _sliding_max(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Max over ±``radius`` along ``axis`` (edges: over what exists). Forward windows of doubling
    width on a copy padded with −inf: log₂(2 r + 1) maxima instead of 2 r."""
    n, width = x.shape[axis], 2 * radius + 1
    shape = list(x.shape)
    shape[axis] = n + 2 * radius
    out = np.full(shape, -np.inf, dtype=x.dtype)
    out[_along(axis, x.ndim, slice(radius, radius + n))] = x
    covered, length = 1, n + 2 * radius  # out[i] = max of the `covered` padded values from i on
    while covered < width:
        step = min(covered, width - covered)
        out = np.maximum(out[_along(axis, x.ndim, slice(0, length - step))], out[_along(axis, x.ndim, slice(step, length))])
        length, covered = length - step, covered + step
    return out


def _box_mean(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Mean over ±``radius`` along ``axis``, the edge values repeated beyond the ends (running sums;
    torch's cumsum is several times faster than numpy's on these small arrays)."""
    n = x.shape[axis]
    first = np.take(x, [0], axis=axis)
    last = np.take(x, [n - 1], axis=axis)
    padded = np.concatenate([np.repeat(first, radius + 1, axis), x, np.repeat(last, radius, axis)], axis=axis)
    sums = torch.cumsum(torch.from_numpy(padded), dim=axis, dtype=torch.float64 if n > 4096 else torch.float32).numpy()
    upper = sums[_along(axis, x.ndim, slice(2 * radius + 1, 2 * radius + 1 + n))]
    lower = sums[_along(axis, x.ndim, slice(0, n))]
    return ((upper - lower) / (2 * radius + 1)).astype(np.float32)


def _along(axis: int, ndim: int, index: slice) -> tuple[slice, ...]:
    """``index`` on ``axis``, everything on the other axes."""
    return tuple(index if a == axis else slice(None) for a in range(ndim))


def extract(frames: np.ndarray | torch.Tensor, params: PeakParams = PeakParams(), first_frame: int = 0) -> np.ndarray:
    """Peaks of log-mel ``frames`` (n_mels, T): int32 array (N, 2) of [frame index, mel bin], sorted
    by frame. ``first_frame`` is the index of ``frames[:, 0]`` in the whole signal, so that peaks of
    a window and of the whole signal share one frame axis. Peaks within ``time_radius`` frames of
    either end of the window may differ from those of the whole signal."""
    x = np.asarray(frames.numpy() if isinstance(frames, torch.Tensor) else frames, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"frames must be (n_mels, T), got shape {x.shape}")
    if x.shape[1] == 0:
        return np.zeros((0, 2), dtype=np.int32)
    p = params
    local_max = _sliding_max(_sliding_max(x, p.mel_radius, 0), p.time_radius, 1)
    prominence = x - _box_mean(_box_mean(x, p.background_mel, 0), p.background_time, 1)
    mels, times = np.nonzero((x == local_max) & (prominence >= p.min_prominence))
    if len(times) == 0:
        return np.zeros((0, 2), dtype=np.int32)
    strength = prominence[mels, times]
    block = np.floor((times + first_frame) / p.frames_per_second).astype(np.int64)
    # Keep the most prominent `per_second` peaks of each 1 s block (blocks on the whole-signal axis).
    order = np.lexsort((-strength, block))
    block, times, mels = block[order], times[order], mels[order]
    rank = np.arange(len(block)) - np.searchsorted(block, block, side="left")
    keep = rank < p.per_second
    peaks = np.stack([times[keep] + first_frame, mels[keep]], axis=1).astype(np.int32)
    return peaks[np.argsort(peaks[:, 0], kind="stable")]


def agreement(
    query: np.ndarray,
    reference: np.ndarray,
    query_end: int,
    reference_end: float,
    max_lag: int,
    speeds: tuple[float, ...] = (1.0,),
    params: PeakParams = PeakParams(),
) -> float | None:
    """Share of the ``query`` peaks that lie on ``reference`` peaks under the best lag and speed.

    ``query`` peaks (frame, mel) end at stream frame ``query_end``, which the candidate's line maps
    to reference frame ``reference_end``; a query peak at frame ``k`` is expected at reference frame
    ``reference_end + (k − query_end) × speed + lag`` for some ``|lag| ≤ max_lag`` frames and speed
    in ``speeds``, within ``tolerance_frames`` and ``tolerance_mels``. ``reference`` need only hold
    the peaks near that range. None when the query has fewer than ``min_query_peaks`` peaks."""
    p = params
    if len(query) < p.min_query_peaks:
        return None
    if len(reference) == 0:
        return 0.0
    q_time = (query[:, 0] - query_end).astype(np.float64)
    rows, cols = np.nonzero(np.abs(query[:, 1, None] - reference[None, :, 1]) <= p.tolerance_mels)  # mel-close pairs
    reach = max_lag + p.tolerance_frames
    width = 2 * reach + 1
    lag = np.rint(reference[cols, 0] - reference_end - q_time[rows] * np.asarray(speeds)[:, None]).astype(np.int64)
    inside = np.abs(lag) <= reach  # (speeds, pairs)
    speed_of = np.broadcast_to(np.arange(len(speeds))[:, None], lag.shape)
    on = np.zeros((len(speeds), len(query), width), dtype=bool)  # query peak on a reference peak at this lag
    on[speed_of[inside], np.broadcast_to(rows, lag.shape)[inside], lag[inside] + reach] = True
    # a query peak agrees at lag L if it has a reference peak at L ± tolerance_frames
    spread = on.copy()
    for shift in range(1, p.tolerance_frames + 1):
        spread[:, :, shift:] |= on[:, :, :-shift]
        spread[:, :, :-shift] |= on[:, :, shift:]
    counts = spread[:, :, p.tolerance_frames : width - p.tolerance_frames].sum(axis=1)
    return int(counts.max()) / len(query)


FRAME_EPSILON = 1e-3  # frames: hop times are whole frames; epoch seconds carry ~1e-5 frames of float noise


def frame_span(start_s: float, end_s: float) -> tuple[int, int]:
    """(first, last) whole frame indices whose ``frame_at`` time lies in [start_s, end_s], robust to
    the float noise of times that are whole frames (so that a daemon on epoch seconds and an
    offline run on seconds from 0 read exactly the same frames)."""
    return int(np.ceil(frame_at(start_s) - FRAME_EPSILON)), int(np.floor(frame_at(end_s) + FRAME_EPSILON))


def frame_at(t_s: float, sample_rate: int = 12000, n_fft: int = 512, hop_length: int = 256) -> float:
    """Index (fractional) of the frame that ends at time ``t_s`` of its signal: frame ``k`` covers
    samples ``[k × hop, k × hop + n_fft)`` (streamd.melspec), and stream times / catalog offsets are
    window *ends*."""
    return (t_s * sample_rate - n_fft) / hop_length


class PeakChecker:
    """Agreement of a stream's newest peaks with a catalog track at a predicted offset (the
    ``decision.PeakCheck`` protocol), from two lookups:

    - ``query(stream_id, start_s, end_s)``: (peaks, end frame): the stream's peaks (frame, mel)
      between two stream times and the (fractional) frame index of ``end_s`` on the same frame
      axis, which may start anywhere (the recording's first sample, the stream's last restart);
      None when those frames are not held;
    - ``reference(track_id)``: the track's peaks, frames from the track's first sample (None: none
      stored).

    The line's offset is known to a few tenths of a second and its speed to ``speed_tol``: the
    agreement is the best over lags of ±``max_lag_s`` and five speeds across the tolerance.
    """

    def __init__(self, query, reference, params: PeakParams = PeakParams(), window_s: float = 4.0,
                 max_lag_s: float = 1.5, speed_tol: float = 0.03) -> None:  # fmt: skip
        self.query, self.reference, self.params = query, reference, params
        self.window_s = window_s
        self.max_lag = int(round(max_lag_s * params.frames_per_second))
        self.speeds = tuple(float(s) for s in np.linspace(1 - speed_tol, 1 + speed_tol, 5))
        self.checks = 0  # agreements computed
        self.queries = 0  # stream peak windows extracted (the costly part)
        self._last_query: tuple = (None, None)
        self._answers: dict[tuple, float | None] = {}  # (track, offset) → agreement, for the last query

    def agreement(self, stream_id: str, t: float, track_id, offset_s: float) -> float | None:
        if self._last_query[0] != (stream_id, t):  # several candidates of a hop share the query
            self._last_query = ((stream_id, t), self.query(stream_id, t - self.window_s, t))
            self._answers = {}
            self.queries += 1
        key = (track_id, offset_s)
        if key not in self._answers:  # the same candidate asked twice in a hop (veto, then start)
            self._answers[key] = self._agreement(track_id, offset_s)
        return self._answers[key]

    def _agreement(self, track_id, offset_s: float) -> float | None:
        answer = self._last_query[1]
        reference = self.reference(track_id)
        if answer is None or reference is None:
            return None
        query, query_end = answer
        self.checks += 1
        reference_end = frame_at(offset_s)
        return agreement(query, self.near(reference, reference_end), int(np.floor(query_end + FRAME_EPSILON)),
                         reference_end, self.max_lag, self.speeds, self.params)  # fmt: skip

    def near(self, reference: np.ndarray, reference_end: float) -> np.ndarray:
        """The reference peaks a window ending at ``reference_end`` can reach (lags, speeds)."""
        reach = (self.window_s * (1 + max(abs(s - 1) for s in self.speeds))) * self.params.frames_per_second
        lo = np.searchsorted(reference[:, 0], reference_end - reach - self.max_lag - 2)
        hi = np.searchsorted(reference[:, 0], reference_end + self.max_lag + 2, side="right")
        return reference[lo:hi]


def recording_query(peaks_by_stream: dict[str, np.ndarray]):
    """``PeakChecker.query`` over whole recordings' peaks (``extract`` of each recording's frames,
    as ``streamd recognize`` and the decision sweep hold them), stream time 0 = first sample."""

    def query(stream_id: str, start_s: float, end_s: float) -> tuple[np.ndarray, float] | None:
        peaks = peaks_by_stream.get(stream_id)
        if peaks is None:
            return None
        first, last = frame_span(start_s, end_s)
        lo = np.searchsorted(peaks[:, 0], first)
        hi = np.searchsorted(peaks[:, 0], last, side="right")
        return peaks[lo:hi], frame_at(end_s)

    return query
