"""What the rest of streamd uses: a loaded model that turns audio or log-mel into binary codes.

    fp = load_fingerprinter(config.model)            # reads models/streamd-hash64.safetensors
    codes, offsets_s = fp.codes_for_audio(audio_12k)  # catalog: one code per hop of a track
    codes = fp.codes_for_logmel(windows)              # (B, 96, T) full windows
    enc = fp.streaming(max_streams=2000)              # daemon: one hop per stream per call
    codes = enc.advance(slots, newest_48_frames)

Conventions: a code is K bits packed with ``np.packbits`` (big-endian), shape (n, K//8) uint8.
A catalog code's ``offset_s`` is the track time of the END of its window: the window that ends
after frame count e has offset e·hop_length/sample_rate (e = 48, 96, ...). Before the track
start the window is filled with digital silence (log-mel floor), the same padding the daemon
applies to a stream that has just started.

Weights are safetensors only (no pickle): tensors of the network without its training
classifier, plus JSON metadata in the header (architecture, mel parameters, training summary).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from streamd.errors import StreamdError
from streamd.melspec import MelParams, offline_logmel
from streamd.model.hashing import pack_bits
from streamd.model.network import LOG_FLOOR, ArchConfig, HashNet
from streamd.model.streaming import StreamingEncoder

FORMAT = "streamd-hash/1"


ACTIVE_LEVEL = -12.0
"""A frame is *active* when its mean log-mel exceeds this (digital silence is log(1e-6) = -13.8)."""
INFORMATIVE_SPAN_FRAMES = 144  # the newest 3 s of a window
INFORMATIVE_MIN_ACTIVE = 96  # need >= 2 s of sound in them


def informative_hops(logmel: np.ndarray | torch.Tensor, ends: np.ndarray) -> np.ndarray:
    """Which windows carry enough sound to be worth indexing or searching.

    A window ending after ``ends[k]`` frames of ``logmel`` (n_mels, frames) is informative when at
    least 2 of its newest 3 s of frames are active (not near digital silence). Codes of silent or
    nearly silent windows (a track's first second, pauses, dead air) look alike for every track,
    so a catalog should not store them and a query should not vote with them.
    """
    level = torch.as_tensor(logmel).float().mean(dim=0).cpu().numpy()
    active = np.concatenate([[0], np.cumsum(level > ACTIVE_LEVEL)])
    ends = np.asarray(ends, dtype=np.int64)
    starts = np.clip(ends - INFORMATIVE_SPAN_FRAMES, 0, None)
    return (active[np.clip(ends, 0, len(level))] - active[starts]) >= INFORMATIVE_MIN_ACTIVE


class ModelLoadError(StreamdError):
    """Weights are missing, not safetensors, or do not match the configuration."""


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


class Fingerprinter:
    """A hash network in eval mode plus the conventions for windows, hops and offsets.

    By default the network is used in its fused inference form (batch norm folded into the
    convolutions); both the full-window and the streaming path use the same fused copy.
    """

    def __init__(
        self,
        net: HashNet,
        version: str = "untrained",
        mel: MelParams = MelParams(),
        metadata: dict[str, Any] | None = None,
        max_batch: int = 256,
        fuse: bool = True,
    ):
        self.net = net.fused_for_inference() if fuse else net.eval()
        for module in self.net.modules():
            if isinstance(module, torch.nn.RNNBase):
                module.flatten_parameters()  # cuDNN wants one weight block; copies and moves split it
        self.arch: ArchConfig = net.arch
        self.mel = mel
        self.version = version
        self.metadata = metadata or {}
        self.max_batch = max_batch
        self.device = next(net.parameters()).device
        self.dtype = next(net.parameters()).dtype

    @property
    def bits(self) -> int:
        return self.arch.bits

    @property
    def hop_frames(self) -> int:
        return self.arch.hop_frames

    @property
    def window_frames(self) -> int:
        return self.arch.window_frames

    @property
    def hop_s(self) -> float:
        return self.hop_frames * self.mel.hop_length / self.mel.sample_rate

    # --- whole windows -----------------------------------------------------------------------

    @torch.inference_mode()
    def relaxed_for_logmel(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) log-mel windows → relaxed codes (B, bits) on the CPU (the net's dtype)."""
        windows = torch.as_tensor(windows, dtype=self.dtype)
        if windows.ndim != 3 or windows.shape[1] != self.arch.n_mels:
            raise ValueError(f"windows must be (B, {self.arch.n_mels}, T), got {tuple(windows.shape)}")
        out = [self.net(chunk.to(self.device)).cpu() for chunk in windows.split(self.max_batch)]
        return torch.cat(out) if out else torch.zeros((0, self.bits))

    def codes_for_logmel(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, n_mels, T) log-mel windows → packed codes (B, bits//8) uint8 (full-window forward)."""
        return pack_bits(self.relaxed_for_logmel(windows))

    # --- whole tracks ------------------------------------------------------------------------

    @torch.inference_mode()
    def relaxed_for_track_logmel(self, logmel: np.ndarray | torch.Tensor, chunk_hops: int = 512) -> tuple[torch.Tensor, np.ndarray]:
        """Log-mel of a whole track (n_mels, frames) → (relaxed codes (n, bits), offsets_s (n,)).

        One code per hop, for the windows ending after 48, 96, ... frames. The trunk runs once
        over the silence-padded track (it is shift-equivariant), in chunks to bound memory, and
        the head runs per window; the result equals the full-window forward of every window.
        """
        arch, net = self.arch, self.net
        logmel = torch.as_tensor(logmel, dtype=self.dtype)
        n_windows = logmel.shape[-1] // arch.hop_frames
        if n_windows == 0:
            return torch.zeros((0, self.bits)), np.zeros(0, np.float64)
        pad = arch.overhead_frames + (arch.n_steps - 1) * arch.hop_frames
        padded = torch.nn.functional.pad(logmel[:, : n_windows * arch.hop_frames], (pad, 0), value=LOG_FLOOR)
        total_hops = n_windows + arch.n_steps - 1
        feats = []
        for h0 in range(0, total_hops, chunk_hops):
            h1 = min(total_hops, h0 + chunk_hops)
            piece = padded[:, h0 * arch.hop_frames : h1 * arch.hop_frames + arch.overhead_frames]
            feats.append(net.hop_features(piece[None].to(self.device))[0])
        feats = torch.cat(feats)[None]  # (1, hops, levels, D)
        windows = net.windows_from_hops(feats)[0]  # (n_windows, levels, steps, D)
        relaxed = torch.cat([net.head(chunk).cpu() for chunk in windows.split(self.max_batch)])
        offsets = (np.arange(1, n_windows + 1) * arch.hop_frames * self.mel.hop_length / self.mel.sample_rate)
        return relaxed, offsets.astype(np.float64)

    def codes_for_audio(self, audio_12k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A whole track (float32 mono, 12 kHz) → (codes (n, bits//8) uint8, offsets_s (n,) float64).

        One code per hop (``hop_frames`` = 1.024 s by default); offset = track time of the END of
        the window. This is how catalogs are indexed.
        """
        audio = np.asarray(audio_12k, dtype=np.float32).reshape(-1)
        relaxed, offsets = self.relaxed_for_track_logmel(offline_logmel(torch.from_numpy(audio), self.mel))
        return pack_bits(relaxed), offsets

    def informative_for_audio(self, audio_12k: np.ndarray) -> np.ndarray:
        """(n,) bool per code of :meth:`codes_for_audio`: False for (nearly) silent windows."""
        logmel = offline_logmel(torch.from_numpy(np.asarray(audio_12k, dtype=np.float32).reshape(-1)), self.mel)
        n = logmel.shape[-1] // self.hop_frames
        return informative_hops(logmel, np.arange(1, n + 1) * self.hop_frames)

    # --- streams -----------------------------------------------------------------------------

    def streaming(self, max_streams: int) -> StreamingEncoder:
        """A hop-by-hop encoder with state for ``max_streams`` stream slots (see streaming.py)."""
        return StreamingEncoder(self.net, max_streams)


# --- weights files -------------------------------------------------------------------------------


def save_weights(path: str | Path, net: HashNet, metadata: dict[str, Any] | None = None) -> Path:
    """Write the network (minus its training classifier) as safetensors with JSON metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    header = {
        "format": FORMAT,
        "arch": json.dumps(net.arch.to_dict()),
        "mel": json.dumps(asdict(MelParams())),
    }
    for key, value in (metadata or {}).items():
        header[key] = value if isinstance(value, str) else json.dumps(value)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_weights_file(path: str | Path, device: str | torch.device = "cpu", max_batch: int = 256) -> Fingerprinter:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model weights {path} not found (train with `streamd train` or set model.weights)")
    try:
        meta = read_metadata(path)
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several types for a bad header
        raise ModelLoadError(f"{path} is not a streamd safetensors weights file: {exc}") from None
    if meta.get("format") != FORMAT or "arch" not in meta:
        raise ModelLoadError(f"{path}: not a {FORMAT} weights file (format={meta.get('format')!r})")
    arch = ArchConfig.from_dict(json.loads(meta["arch"]))
    net = HashNet(arch)
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{path}: weights do not match the architecture (missing {missing}, unexpected {unexpected})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    version = f"{meta.get('name', path.stem)}-{digest}"
    mel = MelParams(**json.loads(meta["mel"])) if "mel" in meta else MelParams()
    return Fingerprinter(net.to(device).eval(), version=version, mel=mel, metadata=meta, max_batch=max_batch)


def load_fingerprinter(model_config: Any, device: str | None = None) -> Fingerprinter:
    """Load the weights named by ``model_config`` (a :class:`streamd.config.ModelConfig`).

    Checks that the file's bits and hop match the configuration, so a daemon configured for
    64-bit codes never silently runs a 32-bit model. ``device`` overrides ``model_config.device``.
    """
    dev = resolve_device(device or getattr(model_config, "device", "auto"))
    threads = int(getattr(model_config, "threads", 0) or 0)
    if threads > 0 and dev.type == "cpu":
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        # TF32 convolutions (torch's default) flip ~0.02 % of code bits against a catalog indexed
        # on a CPU; plain fp32 gives the CPU's bits and still ~0.9 M streams per H200 (bench/RESULTS.md).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    fp = load_weights_file(model_config.weights, dev, max_batch=min(int(getattr(model_config, "max_batch", 256)), 1024))
    bits = getattr(model_config, "bits", fp.bits)
    hop = getattr(model_config, "hop_frames", fp.hop_frames)
    if fp.bits != bits:
        raise ModelLoadError(f"{model_config.weights} makes {fp.bits}-bit codes but model.bits is {bits}")
    if fp.hop_frames != hop:
        raise ModelLoadError(f"{model_config.weights} has a {fp.hop_frames}-frame hop but model.hop_frames is {hop}")
    return fp
