"""From a chunk's PCM to the mono 12 kHz samples the log-mel frames are computed from.

Downmixing happens *before* resampling: one mono resampler per stream costs half of a stereo
one, and a change of channel count mid-stream then leaves the resampler untouched. Both steps
work sample by sample in a fixed order, so the result does not depend on how a stream was cut
into chunks; ``soxr.ResampleStream`` is chunk-invariant too (its output for a signal fed in any
pieces is bit-identical to feeding it in one piece; tests/test_frontend.py checks this).
"""

from __future__ import annotations

import numpy as np
import soxr

MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
_EMPTY = np.zeros(0, dtype=np.float32)


def downmix(samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Mono float32 from (n_frames, channels) float32: the channel mean, added left to right.

    A mono input comes back as a view, without a copy; otherwise the result goes to ``out``
    (n_frames,) when given.
    """
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    mono = np.add(samples[:, 0], samples[:, 1], out=out)
    for channel in range(2, channels):
        mono += samples[:, channel]
    mono *= np.float32(1.0 / channels)
    return mono


def chunk_problem(samples: object, channels: int, sample_rate: int) -> str | None:
    """Why a chunk's fields cannot be used, or None when they can (finite values aside)."""
    if not isinstance(samples, np.ndarray) or samples.dtype != np.float32 or samples.ndim != 2:
        return "samples must be a float32 array of shape (n_frames, channels)"
    if channels < 1 or samples.shape[1] != channels:
        return f"samples have {samples.shape[1]} channels, the chunk says {channels}"
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        return f"sample rate {sample_rate} outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}"
    return None


def make_resampler(in_rate: int, out_rate: int, quality: str) -> soxr.ResampleStream | None:
    """A mono streaming resampler, or None when no resampling is needed."""
    if in_rate == out_rate:
        return None
    return soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)


def flush(resampler: soxr.ResampleStream | None) -> np.ndarray:
    """The output a resampler still holds back, as at the end of a signal."""
    if resampler is None:
        return _EMPTY
    return resampler.resample_chunk(_EMPTY, last=True)


def resample_whole(
    mono: np.ndarray, in_rate: int, out_rate: int, quality: str, last: bool = False
) -> np.ndarray:
    """A whole mono signal through a fresh streaming resampler in one piece: the reference output.

    Without ``last`` the resampler keeps back its delay, exactly as a live stream does, so the
    result is what the streaming front end has produced after the same input.
    """
    resampler = make_resampler(in_rate, out_rate, quality)
    if resampler is None:
        return np.asarray(mono, dtype=np.float32)
    return resampler.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32), last=last)
