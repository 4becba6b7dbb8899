"""Log-mel frames at arbitrary positions of one sample buffer, many at a time.

The bank lays the new audio of many streams end to end in one buffer and asks for the frames
that start at given offsets. They are computed in cache-sized blocks with the very operations of
:func:`streamd.melspec.offline_logmel` (window, ``rfft``, ``re² + im²``, ``@ filterbank``,
``log(· + 1e-6)``), in float32 with torch, into preallocated buffers: a freshly allocated
multi-megabyte array (say the ``rfft`` result, without ``out=``) costs page faults in the bank,
where the heap is busy, more than the copy that ``out=`` makes.

Why torch and not numpy: ``torch.stft`` and ``torch.fft.rfft`` share one FFT, so frames come out
bit-identical to the offline reference, and on this machine it is about twice as fast as
``numpy.fft``. numpy's FFT rounds differently, which moves log-mel values of near-silent bands
(those the resampler's anti-alias filter leaves almost empty) by up to ~1e-3.

The filterbank matmul was the largest single cost (~0.5 µs a frame). The low half of the mel
bands only has weights in the lowest quarter of the FFT bins, so it is multiplied with just
those (:func:`split_filterbank`): 40% fewer multiply-adds, and with MKL the same bits (measured:
leaving out trailing bins whose weights are zero does not change its sums; leaving out leading
ones does). That is the BLAS's behaviour, not a law, so it is checked when the first framer is
built; where it does not hold, the whole filterbank is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from functools import lru_cache
from typing import TypeVar

import numpy as np
import torch

from streamd.melspec import LOG_EPS, MelParams, analysis_window, mel_filterbank

# MKL's matmul takes other kernels, which round differently, for very few rows (seen: 1-3, 5-7,
# 9-11 rows). The filterbank matmul always runs on at least this many rows so that a frame's
# values never depend on how many frames happened to be computed with it.
MIN_MATMUL_ROWS = 16

# Frames per batched step: large enough that the per-call cost of the ~8 torch operations is
# small (~0.04 µs a frame); a block's buffers (~7 KB a frame, 7 MB) stay in the L3 cache from one
# block to the next. Measured in the bank: 512-2048 are within noise, 256 is slower.
DEFAULT_BLOCK_FRAMES = 1024

# With a pool, a call with at least this many frames per part is cut into parts computed at once.
MIN_PART_FRAMES = 256

# (first band, end band, bins used, filterbank[:bins, first:end]) for each part of the matmul
FilterbankPart = tuple[int, int, int, torch.Tensor]
T = TypeVar("T")


@lru_cache(maxsize=8)
def split_filterbank(params: MelParams) -> tuple[FilterbankPart, ...]:
    """The filterbank as two matmuls, low and high mel bands, each over the bins up to its last
    non-zero weight; a single part (the whole filterbank) unless that gives bit-identical
    results on this machine's BLAS, tried on random power spectra of several row counts."""
    filterbank = mel_filterbank(params)
    n_bins, n_mels = filterbank.shape
    whole = ((0, n_mels, n_bins, filterbank),)
    half = n_mels // 2
    parts = []
    for first, end in ((0, half), (half, n_mels)):
        used = filterbank[:, first:end].ne(0).any(dim=1).nonzero()
        bins = int(used.max()) + 1 if len(used) else 1
        parts.append((first, end, bins, filterbank[:bins, first:end].contiguous()))
    generator = torch.Generator().manual_seed(0)
    for rows in (MIN_MATMUL_ROWS, 17, 23, 64, 257, 1024):
        # power spectra span many decades: near-silent bins next to loud ones
        power = torch.exp(torch.empty((rows, n_bins)).uniform_(-40.0, 12.0, generator=generator))
        split = apply_filterbank(power, parts, torch.empty((rows, n_mels)))
        if not torch.equal(split, apply_filterbank(power, whole, torch.empty((rows, n_mels)))):
            return whole
    return tuple(parts)


def apply_filterbank(power: torch.Tensor, parts: Sequence[FilterbankPart], out: torch.Tensor) -> torch.Tensor:
    """``out = power @ filterbank``, (rows, n_mels), computed part by part."""
    for first, end, bins, weights in parts:
        torch.matmul(power[:, :bins], weights, out=out[:, first:end])
    return out


class LogmelFramer:
    """Computes ``(n, n_mels)`` log-mel frames from frame start offsets into a float32 buffer.

    Frames are computed ``block_frames`` at a time; results for up to ``out_frames`` frames per
    call go to a preallocated buffer (default: two blocks), more to a temporary one.

    ``threads`` is the torch thread count the batched operations run with (the previous setting
    is restored afterwards); None leaves torch's setting alone. One thread is best: the blocks
    are small, and with two threads on a busy machine every operation waits for a second
    thread that is not scheduled (measured: 20-50 times slower per frame under load).

    ``pool`` and ``parts``: a call with many frames is cut into up to ``parts`` runs of frames,
    one computed by the caller and the others at the same time by ``pool``'s threads (torch
    releases the GIL), each with its own block buffers. As with the model's ``batch_split``, the
    parts meet once per call, not at every operation. Every frame is computed by the same
    operations either way: the frames are the same bits.
    """

    def __init__(
        self,
        params: MelParams = MelParams(),
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        threads: int | None = 1,
        out_frames: int | None = None,
        pool: Executor | None = None,
        parts: int = 1,
    ):
        self.params = params
        self.block_frames = max(block_frames, MIN_MATMUL_ROWS)
        self.threads = threads
        self.pool = pool
        self.parts = max(1, parts) if pool is not None else 1
        n_fft = params.n_fft
        self._window = analysis_window(n_fft)
        self.filterbank_parts = self._with_threads(split_filterbank, params)
        self._buffers = [_BlockBuffers(self.block_frames, n_fft) for _ in range(self.parts)]
        self._out = torch.zeros((out_frames or 2 * self.block_frames, params.n_mels))

    def _output(self, n_frames: int) -> torch.Tensor:
        if n_frames <= self._out.shape[0]:
            return self._out[:n_frames]
        return torch.empty((n_frames, self.params.n_mels))  # a rare big request: not kept

    def compute(self, signal: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Frames starting at ``starts`` (int64 sample offsets) of the 1-D float32 ``signal``.

        Returns an array that may be an internal buffer, valid until the next call.
        """
        return self._with_threads(self._compute, signal, starts)

    def _with_threads(self, function: Callable[..., T], *args: object) -> T:
        previous = torch.get_num_threads()
        if self.threads is None or previous == self.threads:
            return function(*args)
        torch.set_num_threads(self.threads)
        try:
            return function(*args)
        finally:
            torch.set_num_threads(previous)

    def _compute(self, signal: np.ndarray, starts: np.ndarray) -> np.ndarray:
        n_fft = self.params.n_fft
        n_total = len(starts)
        out = self._output(n_total)
        if n_total == 0:
            return out.numpy()
        source = torch.from_numpy(signal)
        every_frame = source.as_strided((len(signal) - n_fft + 1, n_fft), (1, 1))
        offsets = torch.from_numpy(starts)
        parts = min(self.parts, n_total // MIN_PART_FRAMES)
        if parts <= 1:
            self._frame_run(self._buffers[0], every_frame, offsets, out, 0, n_total)
            return out.numpy()
        bounds = np.linspace(0, n_total, parts + 1).astype(int)
        futures = [self.pool.submit(self._frame_run, self._buffers[p], every_frame, offsets, out, bounds[p], bounds[p + 1])
                   for p in range(1, parts)]  # fmt: skip
        self._frame_run(self._buffers[0], every_frame, offsets, out, 0, bounds[1])
        for future in futures:
            future.result()
        return out.numpy()

    def _frame_run(self, buffers: _BlockBuffers, every_frame: torch.Tensor, offsets: torch.Tensor, out: torch.Tensor,
                   first: int, end: int) -> None:  # fmt: skip
        """Frames ``first:end`` of the call into ``out``, a block at a time in ``buffers``."""
        for begin in range(first, end, self.block_frames):
            stop = min(begin + self.block_frames, end)
            n = stop - begin
            frames = buffers.frames[:n]
            torch.index_select(every_frame, 0, offsets[begin:stop], out=frames)
            frames.mul_(self._window)
            spectrum = buffers.spectrum[:n]
            torch.fft.rfft(frames, out=spectrum)
            squares = torch.view_as_real(spectrum)
            squares.mul_(squares)  # in place: one buffer less to keep in cache
            power = buffers.power[:n]
            torch.add(squares[..., 0], squares[..., 1], out=power)  # re² + im², as offline
            mel = out[begin:stop]
            if n >= MIN_MATMUL_ROWS:
                apply_filterbank(power, self.filterbank_parts, mel)
            else:  # rows past n hold finite leftovers of earlier blocks; their results are unused
                rows = torch.empty((MIN_MATMUL_ROWS, self.params.n_mels))
                mel.copy_(apply_filterbank(buffers.power[:MIN_MATMUL_ROWS], self.filterbank_parts, rows)[:n])
            mel.add_(LOG_EPS).log_()


class _BlockBuffers:
    """One block's intermediate arrays (frames, spectrum, power), reused from block to block."""

    def __init__(self, rows: int, n_fft: int):
        n_bins = n_fft // 2 + 1
        self.frames = torch.zeros((rows, n_fft))
        self.spectrum = torch.zeros((rows, n_bins), dtype=torch.complex64)
        self.power = torch.zeros((rows, n_bins))
