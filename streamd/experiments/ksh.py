"""Kernel-based supervised hashing (Liu, Wang, Ji, Jiang, Chang, CVPR 2012).

Bit k of x is sign(k̄(x)ᵀ aₖ), where k̄(x) are RBF kernel values against m random anchors,
centred on the training mean. With l labelled samples, S ∈ {+1, −1}^{l×l} (similar or not), and
H = sign(K̄ₗ A) the codes of the labelled samples, KSH minimises ‖H Hᵀ − r S‖²_F: inner products
of r-bit codes should be +r for similar and −r for dissimilar pairs. Bits are learned greedily;
with the residue R_{k−1} = rS − Σ_{t<k} h_t h_tᵀ, bit k maximises hₖᵀ R_{k−1} hₖ:

1. spectral relaxation: drop the sign, max aᵀK̄ₗᵀRK̄ₗa s.t. aᵀK̄ₗᵀK̄ₗa = l — a generalised
   eigenproblem, solved through the Cholesky factor of K̄ₗᵀK̄ₗ;
2. refinement: replace sign by the sigmoid-shaped φ(z) = 2/(1 + e^{−z}) − 1 and do gradient ascent
   on φ(K̄ₗa)ᵀ R φ(K̄ₗa) from the spectral solution (backtracking line search);
3. keep whichever of the two gives the larger discrete objective, update the residue.
"""

from __future__ import annotations

import numpy as np


def _phi(z: np.ndarray) -> np.ndarray:
    return 2.0 / (1.0 + np.exp(-np.clip(z, -50, 50))) - 1.0


class KSH:
    def __init__(self, bits: int, anchors: int = 300, labelled: int = 2000, refine_steps: int = 100, seed: int = 0):
        self.bits, self.n_anchors, self.labelled, self.refine_steps, self.seed = bits, anchors, labelled, refine_steps, seed
        self.anchors: np.ndarray | None = None
        self.sigma = 1.0
        self.kernel_mean: np.ndarray | None = None
        self.weights: np.ndarray | None = None  # (m, bits)
        self.objective: list[float] = []  # hₖᵀ R_{k−1} hₖ / l² of each chosen bit

    def kernel(self, x: np.ndarray) -> np.ndarray:
        """Centred RBF kernel features k̄(x), (n, m)."""
        x = np.asarray(x, np.float64)
        sq = (x**2).sum(1)[:, None] + (self.anchors**2).sum(1)[None, :] - 2 * x @ self.anchors.T
        k = np.exp(-np.maximum(sq, 0.0) / (2 * self.sigma**2))
        return k - self.kernel_mean if self.kernel_mean is not None else k

    def fit(self, x: np.ndarray, labels: np.ndarray) -> KSH:
        """Learn from ``x`` (n, d) with ``labels`` (n,): pairs with equal labels are similar."""
        x, labels = np.asarray(x, np.float64), np.asarray(labels)
        rng = np.random.default_rng(self.seed)
        self.anchors = x[rng.choice(len(x), min(self.n_anchors, len(x)), replace=False)]
        sample = x[rng.choice(len(x), min(len(x), 2000), replace=False)]
        distances = np.sqrt(np.maximum((sample**2).sum(1)[:, None] + (self.anchors**2).sum(1)[None] - 2 * sample @ self.anchors.T, 0))
        self.sigma = float(distances.mean()) or 1.0
        self.kernel_mean = None
        self.kernel_mean = self.kernel(x).mean(axis=0)
        chosen = self._labelled_sample(labels, rng)
        k = self.kernel(x[chosen])
        same = labels[chosen][:, None] == labels[chosen][None, :]
        residue = self.bits * np.where(same, 1.0, -1.0)
        n_labelled, m = k.shape
        gram = k.T @ k + 1e-6 * n_labelled * np.eye(m)
        chol = np.linalg.cholesky(gram)
        self.weights = np.zeros((m, self.bits))
        self.objective = []
        for bit in range(self.bits):
            a = self._spectral(k, residue, chol, n_labelled)
            refined = self._refine(k, residue, a)
            best = max((a, refined), key=lambda w: self._discrete_objective(k, residue, w))
            h = np.where(k @ best >= 0, 1.0, -1.0)
            self.objective.append(float(h @ residue @ h) / n_labelled**2)
            residue -= np.outer(h, h)
            self.weights[:, bit] = best
        return self

    def _labelled_sample(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """l samples, drawn so that most have at least one similar partner (whole label groups first)."""
        if len(labels) <= self.labelled:
            return np.arange(len(labels))
        groups = [np.flatnonzero(labels == value) for value in rng.permutation(np.unique(labels))]
        chosen: list[int] = []
        for members in groups:
            if len(chosen) + len(members) > self.labelled:
                break
            chosen.extend(members.tolist())
        if len(chosen) < self.labelled:
            rest = np.setdiff1d(np.arange(len(labels)), chosen)
            chosen.extend(rng.choice(rest, self.labelled - len(chosen), replace=False).tolist())
        return np.asarray(chosen)

    @staticmethod
    def _spectral(k: np.ndarray, residue: np.ndarray, chol: np.ndarray, n_labelled: int) -> np.ndarray:
        """Top generalised eigenvector of (KᵀRK, KᵀK), scaled to aᵀKᵀKa = n_labelled."""
        m_left = np.linalg.solve(chol, k.T @ residue @ k)
        c = np.linalg.solve(chol, m_left.T).T  # L⁻¹ M L⁻ᵀ
        _, vectors = np.linalg.eigh((c + c.T) / 2)
        a = np.linalg.solve(chol.T, vectors[:, -1])
        return a * np.sqrt(n_labelled / max(float(np.square(k @ a).sum()), 1e-12))

    def _refine(self, k: np.ndarray, residue: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Gradient ascent on φ(Ka)ᵀ R φ(Ka) with a backtracking step size."""

        def value(w: np.ndarray) -> float:
            b = _phi(k @ w)
            return float(b @ residue @ b)

        current, step = value(a), 1.0 / len(k)
        for _ in range(self.refine_steps):
            b = _phi(k @ a)
            gradient = k.T @ ((residue @ b) * (1.0 - b**2))  # d/da of bᵀRb, with φ' = (1 − φ²)/2
            while step > 1e-12:
                candidate = a + step * gradient
                new = value(candidate)
                if new > current:
                    a, current, step = candidate, new, step * 1.5
                    break
                step *= 0.5
            else:
                break
        return a

    @staticmethod
    def _discrete_objective(k: np.ndarray, residue: np.ndarray, a: np.ndarray) -> float:
        h = np.where(k @ a >= 0, 1.0, -1.0)
        return float(h @ residue @ h)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return (self.kernel(x) @ self.weights >= 0).astype(np.uint8)
