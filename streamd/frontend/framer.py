"""Log-mel frames at arbitrary positions of one sample buffer, many at a time.

The bank lays the new audio of many streams end to end in one buffer and asks for the frames
that start at given offsets. They are computed in cache-sized blocks with the very operations of
:func:`streamd.melspec.offline_logmel` (window, ``rfft``, ``re² + im²``, ``@ filterbank``,
``log(· + 1e-6)``), in float32 with torch, into preallocated buffers: freshly allocated
multi-megabyte arrays cost more in page faults than the FFT itself.

Why torch and not numpy: ``torch.stft`` and ``torch.fft.rfft`` share one FFT, so frames come out
bit-identical to the offline reference, and on this machine it is about twice as fast as
``numpy.fft``. numpy's FFT rounds differently, which moves log-mel values of near-silent bands
(those the resampler's anti-alias filter leaves almost empty) by up to ~1e-3.
"""

from __future__ import annotations

import numpy as np
import torch

from streamd.melspec import LOG_EPS, MelParams, analysis_window, mel_filterbank

# MKL's matmul takes other kernels, which round differently, for very few rows (seen: 1-3, 5-7,
# 9-11 rows). The filterbank matmul always runs on at least this many rows so that a frame's
# values never depend on how many frames happened to be computed with it.
MIN_MATMUL_ROWS = 16


class LogmelFramer:
    """Computes ``(n, n_mels)`` log-mel frames from frame start offsets into a float32 buffer.

    ``threads`` is the torch thread count the batched operations run with (the previous setting
    is restored afterwards); None leaves torch's setting alone. One thread is best: the blocks
    are small, and with two threads on a busy machine every operation waits for a second
    thread that is not scheduled (measured: 20-50 times slower per frame under load).
    """

    def __init__(self, params: MelParams = MelParams(), block_frames: int = 1024, threads: int | None = 1):
        self.params = params
        self.block_frames = max(block_frames, MIN_MATMUL_ROWS)
        self.threads = threads
        n_fft, n_bins = params.n_fft, params.n_fft // 2 + 1
        self._window = analysis_window(n_fft)
        self._filterbank = mel_filterbank(params)
        rows = self.block_frames
        self._frames = torch.zeros((rows, n_fft))
        self._spectrum = torch.zeros((rows, n_bins), dtype=torch.complex64)
        self._squares = torch.zeros((rows, n_bins, 2))
        self._power = torch.zeros((rows, n_bins))
        self._out = torch.zeros((2 * rows, params.n_mels))

    def _output(self, n_frames: int) -> torch.Tensor:
        if n_frames <= self._out.shape[0]:
            return self._out[:n_frames]
        return torch.empty((n_frames, self.params.n_mels))  # a rare big request: not kept

    def compute(self, signal: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Frames starting at ``starts`` (int64 sample offsets) of the 1-D float32 ``signal``.

        Returns an array that may be an internal buffer, valid until the next call.
        """
        previous = torch.get_num_threads()
        if self.threads is None or previous == self.threads:
            return self._compute(signal, starts)
        torch.set_num_threads(self.threads)
        try:
            return self._compute(signal, starts)
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
        for begin in range(0, n_total, self.block_frames):
            end = min(begin + self.block_frames, n_total)
            n = end - begin
            frames = self._frames[:n]
            torch.index_select(every_frame, 0, offsets[begin:end], out=frames)
            frames.mul_(self._window)
            spectrum = self._spectrum[:n]
            torch.fft.rfft(frames, out=spectrum)
            parts = torch.view_as_real(spectrum)
            squares = self._squares[:n]
            torch.mul(parts, parts, out=squares)
            power = self._power[:n]
            torch.add(squares[..., 0], squares[..., 1], out=power)  # re² + im², as offline
            mel = out[begin:end]
            if n >= MIN_MATMUL_ROWS:
                torch.matmul(power, self._filterbank, out=mel)
            else:  # rows past n hold finite leftovers of earlier blocks; their results are unused
                mel.copy_(torch.matmul(self._power[:MIN_MATMUL_ROWS], self._filterbank)[:n])
            mel.add_(LOG_EPS).log_()
        return out.numpy()
