"""From relaxed codes to the packed binary codes that catalogs and the daemon store.

Bit k is 1 where the relaxed code q_k = tanh(·) is positive (the sign quantisation of eq. 3).
Packing is ``np.packbits`` along the last axis, big-endian bit order: bit 0 of a code is the
most significant bit of its first byte. Every part of streamd uses these two functions.
"""

from __future__ import annotations

import numpy as np
import torch


def to_bits(relaxed: torch.Tensor | np.ndarray) -> np.ndarray:
    """(…, K) relaxed codes → (…, K) uint8 bits (1 where the value is > 0)."""
    if isinstance(relaxed, torch.Tensor):
        relaxed = relaxed.detach().to("cpu", torch.float32).numpy()
    return (np.asarray(relaxed) > 0).astype(np.uint8)


_BYTE_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_bits(relaxed: torch.Tensor | np.ndarray) -> np.ndarray:
    """(…, K) relaxed codes → (…, K//8) packed uint8 codes.

    Codes on a GPU are packed there, so only K/8 bytes per code cross to the host (not 4K).
    """
    if isinstance(relaxed, torch.Tensor) and relaxed.device.type != "cpu":
        return pack_bits_on_device(relaxed).cpu().numpy()
    return np.packbits(to_bits(relaxed), axis=-1)


def pack_bits_on_device(relaxed: torch.Tensor) -> torch.Tensor:
    """:func:`pack_bits` computed by torch where ``relaxed`` lives; returns a uint8 tensor there."""
    bits = (relaxed.detach() > 0).reshape(*relaxed.shape[:-1], -1, 8).to(torch.uint8)
    weights = torch.tensor(_BYTE_WEIGHTS, dtype=torch.uint8, device=relaxed.device)
    return (bits * weights).sum(dim=-1, dtype=torch.uint8)


def unpack_bits(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """(…, K//8) packed codes → (…, K) uint8 bits."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=-1, count=bits)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed codes, broadcasting over leading axes."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1)
