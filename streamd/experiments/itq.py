"""Iterative quantisation (Gong & Lazebnik, CVPR 2011): PCA to K dimensions, then the rotation R
that minimises the quantisation error ‖B − VR‖²_F, alternating B = sign(VR) with the orthogonal
Procrustes solution for R. Unsupervised.
"""

from __future__ import annotations

import numpy as np


class ITQ:
    def __init__(self, bits: int, iterations: int = 50, seed: int = 0):
        self.bits, self.iterations, self.seed = bits, iterations, seed
        self.mean: np.ndarray | None = None
        self.projection: np.ndarray | None = None  # PCA directions then rotation, (d, bits)
        self.quantisation_error: list[float] = []  # ‖B − VR‖²_F / n per iteration, non-increasing

    def fit(self, x: np.ndarray, labels: np.ndarray | None = None) -> ITQ:
        """Learn PCA + rotation on ``x`` (n, d); ``labels`` are ignored. Needs bits <= d."""
        x = np.asarray(x, np.float64)
        if self.bits > x.shape[1]:
            raise ValueError(f"ITQ needs bits <= embedding size ({self.bits} > {x.shape[1]})")
        self.mean = x.mean(axis=0)
        centred = x - self.mean
        _, vectors = np.linalg.eigh(centred.T @ centred)
        pca = vectors[:, ::-1][:, : self.bits]
        v = centred @ pca
        rng = np.random.default_rng(self.seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        self.quantisation_error = []
        for _ in range(self.iterations):
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            self.quantisation_error.append(float(np.square(b - v @ rotation).sum() / len(v)))
            u, _, wt = np.linalg.svd(v.T @ b)  # max tr(Bᵀ V R) over orthogonal R
            rotation = u @ wt
        b = np.where(v @ rotation >= 0, 1.0, -1.0)
        self.quantisation_error.append(float(np.square(b - v @ rotation).sum() / len(v)))
        self.projection = pca @ rotation
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) @ self.projection >= 0).astype(np.uint8)
