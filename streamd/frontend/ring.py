"""A fixed-size rolling buffer of one stream's newest log-mel frames.

Stored frame-major, ``(capacity, n_mels)`` float32, and read out mel-major ``(n_mels, n)`` as the
model takes it. Frames are written for every stream all the time but read a hop (48 frames) at a
time, and with thousands of rings nothing is in cache: appending 23 frames costs ~1.4 µs into
contiguous rows against ~5.3 µs scattered over 96 mel rows (measured), while reading a hop
costs about the same either way. Only a whole-window read pays for it (~120 µs instead of ~60).

Frames a stream has not produced yet (after its start or a reset) read as :data:`LOG_SILENCE`,
the value ``offline_logmel`` gives digital silence.
"""

from __future__ import annotations

import math

import numpy as np

from streamd.melspec import LOG_EPS

LOG_SILENCE = math.log(LOG_EPS)  # as float32, exactly what offline_logmel gives digital silence


class MelRing:
    """The newest ``capacity`` frames of a stream, and how many frames it has produced."""

    __slots__ = ("data", "count")

    def __init__(self, n_mels: int, capacity: int):
        self.data = np.full((capacity, n_mels), LOG_SILENCE, dtype=np.float32)
        self.count = 0

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def reset(self) -> None:
        self.data.fill(LOG_SILENCE)
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        """Append ``frames`` of shape (n, n_mels), oldest first."""
        capacity = self.data.shape[0]
        n = frames.shape[0]
        first = self.count
        self.count += n
        if n > capacity:
            frames = frames[n - capacity :]
            first += n - capacity
            n = capacity
        pos = first % capacity
        head = min(n, capacity - pos)
        self.data[pos : pos + head] = frames[:head]
        if head < n:
            self.data[: n - head] = frames[head:]

    def read(self, first: int, n: int, out: np.ndarray) -> np.ndarray:
        """Copy frames number ``first .. first + n - 1`` into ``out`` of shape (n_mels, n).

        Numbers below 0 (before the stream's start) read as silence; frames that have left the
        ring or do not exist yet are a ValueError.
        """
        capacity = self.data.shape[0]
        if first + n > self.count or first < self.count - capacity or n < 0:
            raise ValueError(
                f"frames {first}..{first + n - 1} are not in the ring (it holds "
                f"{self.count - capacity}..{self.count - 1})"
            )
        start = first % capacity
        head = min(n, capacity - start)
        out[:, :head] = self.data[start : start + head].T
        if head < n:
            out[:, head:n] = self.data[: n - head].T
        return out

    def read_last(self, n: int, out: np.ndarray) -> np.ndarray:
        """Copy the newest ``n`` frames (oldest first) into ``out`` of shape (n_mels, n)."""
        return self.read(self.count - n, n, out)
