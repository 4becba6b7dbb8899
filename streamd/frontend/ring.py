"""A fixed-size rolling buffer of one stream's newest log-mel frames.

Stored mel-major, ``(n_mels, capacity)`` float32, as the model reads it: copying a window out is
``n_mels`` contiguous row copies. Frames a stream has not produced yet (after its start or a
reset) read as :data:`LOG_SILENCE`, the value ``offline_logmel`` gives digital silence.
"""

from __future__ import annotations

import math

import numpy as np

from streamd.melspec import LOG_EPS

LOG_SILENCE = float(np.float32(math.log(LOG_EPS)))


class MelRing:
    """The newest ``capacity`` frames of a stream, and how many frames it has produced."""

    __slots__ = ("data", "count")

    def __init__(self, n_mels: int, capacity: int):
        self.data = np.full((n_mels, capacity), LOG_SILENCE, dtype=np.float32)
        self.count = 0

    @property
    def capacity(self) -> int:
        return self.data.shape[1]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def reset(self) -> None:
        self.data.fill(LOG_SILENCE)
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        """Append ``frames`` of shape (n, n_mels), oldest first."""
        capacity = self.data.shape[1]
        n = frames.shape[0]
        first = self.count
        self.count += n
        if n > capacity:
            frames = frames[n - capacity :]
            first += n - capacity
            n = capacity
        pos = first % capacity
        head = min(n, capacity - pos)
        self.data[:, pos : pos + head] = frames[:head].T
        if head < n:
            self.data[:, : n - head] = frames[head:].T

    def read_last(self, n: int, out: np.ndarray) -> np.ndarray:
        """Copy the newest ``n`` frames (oldest first) into ``out`` of shape (n_mels, n)."""
        capacity = self.data.shape[1]
        if not 0 <= n <= capacity:
            raise ValueError(f"can read 0..{capacity} frames, not {n}")
        start = (self.count - n) % capacity
        head = min(n, capacity - start)
        out[:, :head] = self.data[:, start : start + head]
        if head < n:
            out[:, head:n] = self.data[:, : n - head]
        return out
