"""The log-mel representation every part of streamd agrees on, computed offline.

Frames are not centred: frame ``k`` covers samples ``[k*hop, k*hop + n_fft)`` of the 12 kHz
signal, so a stream's frames never depend on where the stream or a chunk started. This offline
function is the reference that the streaming front end (``streamd.frontend``) must reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torchaudio

LOG_EPS = 1e-6


@dataclass(frozen=True)
class MelParams:
    sample_rate: int = 12000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    f_min: float = 0.0
    f_max: float = 6000.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Number of complete frames in ``n_samples`` samples."""
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop_length


@lru_cache(maxsize=8)
def mel_filterbank(params: MelParams = MelParams()) -> torch.Tensor:
    """(n_fft//2+1, n_mels) filterbank, torchaudio's HTK-scale triangles without normalisation."""
    return torchaudio.functional.melscale_fbanks(
        n_freqs=params.n_fft // 2 + 1,
        f_min=params.f_min,
        f_max=params.f_max,
        n_mels=params.n_mels,
        sample_rate=params.sample_rate,
        norm=None,
        mel_scale="htk",
    )


@lru_cache(maxsize=8)
def analysis_window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def offline_logmel(signal: torch.Tensor, params: MelParams = MelParams()) -> torch.Tensor:
    """Log-mel frames of a whole 12 kHz mono signal: (..., n_mels, n_frames), float32.

    ``log(power_mel + 1e-6)`` with no per-window normalisation, so that values do not depend
    on which window they are seen in.
    """
    signal = torch.as_tensor(signal, dtype=torch.float32)
    if signal.shape[-1] < params.n_fft:
        return signal.new_zeros((*signal.shape[:-1], params.n_mels, 0))
    spec = torch.stft(
        signal,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        window=analysis_window(params.n_fft),
        center=False,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(power.transpose(-1, -2), mel_filterbank(params)).transpose(-1, -2)
    return torch.log(mel + LOG_EPS)
