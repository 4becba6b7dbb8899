"""Binary codes: the packed-byte layout everyone exchanges, and the word layout search runs on.

Everywhere outside the search kernels a batch of K-bit codes is a ``np.uint8`` array of shape
``(n, K // 8)`` made by ``np.packbits(bits, axis=-1)``. The kernels instead want each code as
machine words so that one XOR + one popcount compares two codes. :func:`to_planes` reinterprets
the packed bytes as unsigned words without changing any bit (a Hamming distance does not care
how bits are grouped into words) and lays them out word-major, ``(W, n)``, so that each word
plane is contiguous and the kernels vectorise: K = 16, 32, 64 give one plane of ``uint16``,
``uint32``, ``uint64``; K = 128 gives two ``uint64`` planes.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import intrinsic

SUPPORTED_BITS = (16, 32, 64, 128)

_WORD_DTYPE = {16: np.uint16, 32: np.uint32, 64: np.uint64, 128: np.uint64}


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported code length, else raise ``ValueError``."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"code length {bits} is not supported; supported: {SUPPORTED_BITS}")
    return bits


def code_bytes(bits: int) -> int:
    """Bytes per packed code."""
    return check_bits(bits) // 8


def word_dtype(bits: int) -> np.dtype:
    return np.dtype(_WORD_DTYPE[check_bits(bits)])


def n_planes(bits: int) -> int:
    """Number of word planes a K-bit code occupies (2 for K = 128, else 1)."""
    return 2 if check_bits(bits) == 128 else 1


def check_packed(codes: np.ndarray, bits: int) -> np.ndarray:
    """Validate a packed code batch and return it as a C-contiguous ``(n, K // 8)`` uint8 array."""
    codes = np.asarray(codes)
    width = code_bytes(bits)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width:
        raise ValueError(
            f"codes must be a uint8 array of shape (n, {width}) for {bits}-bit codes, "
            f"got {codes.dtype} {codes.shape}"
        )
    return np.ascontiguousarray(codes)


def to_planes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packed ``(n, K // 8)`` uint8 codes → word planes ``(W, n)`` (a copy, C-contiguous)."""
    codes = check_packed(codes, bits)
    words = codes.view(word_dtype(bits))  # (n, W): native-endian reinterpretation, no copy
    return np.ascontiguousarray(words.T)


def from_planes(planes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`to_planes`."""
    planes = np.asarray(planes, dtype=word_dtype(bits))
    return np.ascontiguousarray(planes.T).view(np.uint8).reshape(planes.shape[1], code_bytes(bits))


def pack_bits(bits_array: np.ndarray) -> np.ndarray:
    """``(n, K)`` array of 0/1 (or bool) → packed ``(n, K // 8)`` uint8, the project's convention."""
    return np.packbits(np.asarray(bits_array, dtype=bool), axis=-1)


def unpack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packed codes → ``(n, K)`` uint8 array of 0/1."""
    return np.unpackbits(check_packed(codes, bits), axis=-1, count=bits)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances between packed code batches, ``(len(a), len(b))`` int32.

    Plain numpy, O(len(a) · len(b)) memory: a reference and a tool for small batches, not the
    search path.
    """
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=-1, dtype=np.int32)


def flip_random_bits(codes: np.ndarray, n_flips: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of packed ``codes`` with exactly ``n_flips`` distinct random bits flipped per code."""
    codes = np.asarray(codes, dtype=np.uint8)
    n, width = codes.shape
    bits = width * 8
    if not 0 <= n_flips <= bits:
        raise ValueError(f"n_flips must be in 0..{bits}, got {n_flips}")
    positions = np.argsort(rng.random((n, bits)), axis=1)[:, :n_flips]
    mask = np.zeros((n, bits), dtype=bool)
    np.put_along_axis(mask, positions, True, axis=1)
    return codes ^ np.packbits(mask, axis=-1)


def _popcount_intrinsic(width: types.Integer):
    """A numba intrinsic: population count of one unsigned integer of ``width`` (one ``popcnt``,
    or a vector popcount when numba vectorises the loop: 8 uint64 or 16 uint32 lanes per AVX-512)."""

    def popcount(typingctx, x):  # noqa: ARG001 - numba intrinsic signature
        def codegen(context, builder, sig, args):  # noqa: ARG001
            return builder.ctpop(args[0])

        return width(width), codegen

    return intrinsic(popcount)


popcount64 = _popcount_intrinsic(types.uint64)
popcount32 = _popcount_intrinsic(types.uint32)
