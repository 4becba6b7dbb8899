"""Spectral peaks: where they are, that windows agree with the whole signal, and that the agreement
separates the true alignment of a degraded excerpt from chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamd import degrade
from streamd.melspec import offline_logmel
from streamd.peaks import (
    PeakChecker,
    PeakParams,
    _box_mean,
    _sliding_max,
    agreement,
    extract,
    frame_at,
    recording_query,
)

SR = 12000
FPS = PeakParams().frames_per_second


def music(seconds: float, seed: int) -> np.ndarray:
    """Music-like audio: notes of changing chords (each call with another seed: another "track")."""
    rng = np.random.default_rng(seed)
    parts = [degrade.synthetic_music(int(SR * 2.0), SR, rng) for _ in range(int(np.ceil(seconds / 2.0)))]
    return (0.2 * np.concatenate(parts)[: int(SR * seconds)]).astype(np.float32)


def frames_of(audio: np.ndarray) -> np.ndarray:
    return offline_logmel(torch.from_numpy(audio)).numpy()


def test_isolated_bumps_are_the_peaks_and_their_positions_are_exact():
    frames = np.zeros((96, 400), dtype=np.float32)
    bumps = [(50, 20), (120, 60), (300, 85)]
    for t, m in bumps:
        frames[m, t] = 5.0
    peaks = extract(frames, first_frame=1000)
    assert sorted(map(tuple, peaks.tolist())) == [(t + 1000, m) for t, m in bumps]


def test_the_peaks_of_a_window_are_those_of_the_whole_signal_away_from_its_edges():
    frames = frames_of(music(30.0, seed=1))
    whole = extract(frames)
    a, b = 400, 700
    window = extract(frames[:, a - 60 : b + 60], first_frame=a - 60)  # margins wider than the filters
    inner = lambda p: {tuple(x) for x in p.tolist() if a <= x[0] < b}  # noqa: E731
    assert inner(whole) and inner(window) == inner(whole)
    assert 10 <= len(whole) / (frames.shape[1] / FPS) <= PeakParams().per_second + 1


@pytest.mark.parametrize("shape", [(96, 1), (96, 9), (96, 204), (7, 300)])
def test_the_fast_filters_equal_a_direct_computation(shape):
    """The sliding maximum (doubling windows) and the box mean (running sums, edges repeated) of
    ``extract`` against their definitions, element by element, on both axes."""
    x = np.random.default_rng(shape[1]).standard_normal(shape).astype(np.float32)
    for axis, radius in ((0, 5), (1, 7), (0, 10), (1, 23)):
        n = x.shape[axis]
        moved = np.moveaxis(x, axis, 0)
        direct_max = np.stack([moved[max(0, i - radius) : i + radius + 1].max(axis=0) for i in range(n)])
        clamped = np.clip(np.arange(-radius, radius + 1)[None, :] + np.arange(n)[:, None], 0, n - 1)
        direct_mean = moved[clamped].mean(axis=1)
        assert np.array_equal(_sliding_max(x, radius, axis), np.moveaxis(direct_max, 0, axis))
        np.testing.assert_allclose(_box_mean(x, radius, axis), np.moveaxis(direct_mean, 0, axis), atol=1e-5)


def test_agreement_finds_the_lag_and_the_speed_and_is_low_by_chance():
    rng = np.random.default_rng(0)
    reference = np.stack([np.sort(rng.integers(0, 2000, 600)), rng.integers(0, 96, 600)], axis=1).astype(np.int32)
    end = 1500
    stretched = reference[(reference[:, 0] > end - 190) & (reference[:, 0] <= end)].copy()
    # the stream plays the reference 2 % faster and the line predicts 30 frames (0.64 s) late
    query = stretched.copy()
    query[:, 0] = np.rint(4000 + (stretched[:, 0] - end) / 1.02).astype(np.int32)
    speeds = tuple(np.linspace(0.97, 1.03, 5))
    assert agreement(query, reference, 4000, end - 30, max_lag=70, speeds=speeds) >= 0.9
    assert agreement(query, reference, 4000, end - 30, max_lag=10, speeds=speeds) < 0.2  # lag out of reach
    random_query = np.stack([np.sort(rng.integers(3810, 4001, len(query))), rng.integers(0, 96, len(query))], axis=1)
    assert agreement(random_query, reference, 4000, end, max_lag=70, speeds=speeds) < 0.3
    assert agreement(query[:10], reference, 4000, end, max_lag=70) is None  # too few peaks: no verdict


def test_a_degraded_excerpt_agrees_at_its_offset_and_not_elsewhere():
    """A 40 s "track"; the stream plays its second half after 10 s of another one, through MP3 at
    64 kb/s and pink noise at 10 dB SNR. At the true offset (line 0.4 s off) about half of the peaks agree; at
    other offsets and against another track, few do."""
    track = music(40.0, seed=2)
    other = music(40.0, seed=3)
    stream = np.concatenate([other[: 10 * SR], track[20 * SR :]])
    stream = degrade.codec_roundtrip(stream, SR, "mp3", 64)
    stream = degrade.add_noise(stream, SR, snr_db=10.0, color="pink", seed=4)
    reference = {"track": extract(frames_of(track)), "other": extract(frames_of(other[10 * SR :]))}
    checker = PeakChecker(recording_query({"s": extract(frames_of(stream))}), reference.get)
    t = 10.0 + 6.0  # 6 s into the excerpt: track offset 26 s
    assert checker.agreement("s", t, "track", 26.0 + 0.4) >= 0.4  # the decision's threshold
    assert checker.agreement("s", t, "track", 26.0 - 8.0) < 0.3
    assert checker.agreement("s", t, "other", 12.0) < 0.3
    assert checker.agreement("s", t, "missing", 12.0) is None and checker.agreement("?", t, "track", 26.0) is None
    assert frame_at(1.024) == pytest.approx(46.0)  # 48 frames per hop, the window end's frame
