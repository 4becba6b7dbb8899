"""Test helpers for the store and indexer tests: a stand-in encoder and tiny audio files.

The encoder is a test double for the model with the same interface (``bits``, ``hop_frames``,
``version``, ``codes_for_audio``): it exercises the indexer's mechanics (files, ids, Redis
writes, resumption), not recognition quality.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from streamd.melspec import offline_logmel
from streamd.store.codes import pack_bits

SAMPLE_RATE = 12000


class RandomProjectionEncoder:
    """Log-mel, averaged over each window, times a fixed random matrix, sign → one code per hop."""

    hop_frames = 48
    window_frames = 96

    def __init__(self, bits: int = 64, version: str = "test-rp-1", seed: int = 0):
        self.bits = bits
        self.version = version
        self.projection = np.random.default_rng(seed).standard_normal((96, bits)).astype(np.float32)

    def codes_for_audio(self, audio_12k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logmel = offline_logmel(torch.from_numpy(np.asarray(audio_12k, np.float32))).numpy()  # (96, frames)
        ends = np.arange(self.window_frames, logmel.shape[1] + 1, self.hop_frames)
        if len(ends) == 0:
            return np.zeros((0, self.bits // 8), np.uint8), np.zeros(0)
        features = np.stack([logmel[:, e - self.window_frames:e].mean(axis=1) for e in ends])
        features -= features.mean(axis=0, keepdims=True) if len(ends) > 1 else 0.0
        codes = pack_bits(features @ self.projection > 0)
        return codes, ends * 256 / SAMPLE_RATE


def make_encoder() -> RandomProjectionEncoder:
    """Picklable factory for indexer worker processes."""
    return RandomProjectionEncoder()


CRASH_SECONDS = 3.25


class CrashingEncoder(RandomProjectionEncoder):
    """Kills its process on audio exactly CRASH_SECONDS long, like a decoder crashing on a bad file."""

    def codes_for_audio(self, audio_12k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(audio_12k) == int(CRASH_SECONDS * SAMPLE_RATE):
            import os

            os._exit(1)
        return super().codes_for_audio(audio_12k)


def tone_signal(seconds: float, seed: int) -> np.ndarray:
    """A few seconds of random chords with an amplitude envelope: distinct per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    signal = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.5):
        mask = (t >= start) & (t < start + 0.5)
        for freq in rng.uniform(100, 4000, 3):
            signal[mask] += np.sin(2 * np.pi * freq * t[mask])
    return (0.2 * signal / 3).astype(np.float32)


def write_wav(path: Path, signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return path
