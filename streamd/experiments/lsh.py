"""Locality-sensitive hashing by random projections (Charikar 2002): bit k = sign(wₖᵀ(x − μ)).

Data-independent apart from the centring, so it is the floor every learned method should beat.
"""

from __future__ import annotations

import numpy as np


class LSH:
    def __init__(self, bits: int, seed: int = 0):
        self.bits, self.seed = bits, seed
        self.mean: np.ndarray | None = None
        self.projection: np.ndarray | None = None

    def fit(self, x: np.ndarray, labels: np.ndarray | None = None) -> LSH:
        """Centre on the training mean and draw Gaussian projections; ``labels`` are ignored."""
        x = np.asarray(x, np.float64)
        self.mean = x.mean(axis=0)
        self.projection = np.random.default_rng(self.seed).standard_normal((x.shape[1], self.bits))
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) embeddings → (n, bits) uint8 bits."""
        return ((np.asarray(x, np.float64) - self.mean) @ self.projection > 0).astype(np.uint8)
