"""Hop-by-hop inference for many streams at once, exactly equal to the full-window forward pass.

Per stream slot the encoder keeps, in preallocated tensors:

- for every conv block, the last 2 input columns it saw (its 3-wide valid time convolution needs
  them to continue seamlessly), and
- a ring of the newest ``n_steps`` per-hop feature vectors (levels × D each).

``advance`` pushes the newest 48 log-mel frames of a batch of slots through the trunk (only
2 + k columns per block instead of the window), appends one feature vector per level to each
ring, and runs the small recurrent head over the ring. ``advance_hops`` does the same for
several consecutive hops per slot in one batched pass (a backlog: warm-up, a file). A reset slot starts from the state that
an endless run of silence (log-mel floor) would leave, which is exactly how the full-window
forward pass pads a window that reaches back before the stream started.
"""

from __future__ import annotations

import torch

from streamd.model.hashing import pack_bits
from streamd.model.network import LOG_FLOOR, HashNet

CATCH_UP_HOPS = 8  # most hops one stream advances in one advance_hops call when it has a backlog (the daemon)


class StreamingEncoder:
    """Incremental encoder over ``max_streams`` slots. Not thread-safe; one caller at a time.

    State: ``block_cache`` (one (slots, C, F, 2) tensor per conv block) and ``ring`` (slots,
    n_steps, levels, D), each slot's newest per-hop features, oldest first. :meth:`resized`
    copies it into an encoder with more slots.
    """

    def __init__(self, net: HashNet, max_streams: int):
        if net.training:
            raise ValueError("the streaming encoder needs a network in eval mode")
        self.net = net
        self.arch = net.arch
        self.max_streams = max_streams
        param = next(net.parameters())
        self.device, self.dtype = param.device, param.dtype
        arch = self.arch
        n_blocks = len(arch.widths)
        with torch.inference_mode():
            self._silent_columns, self._silent_features = self._silence_state()
        self.block_cache = [
            torch.empty((max_streams, arch.channels(b), arch.freq_bins(b), 2), device=self.device, dtype=self.dtype)
            for b in range(n_blocks)
        ]
        self.ring = torch.empty(
            (max_streams, arch.n_steps, len(arch.levels), arch.feature_dim), device=self.device, dtype=self.dtype
        )
        self.reset(torch.arange(max_streams))

    def _silence_state(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Block input columns and per-hop features of a stream that has only ever been silent."""
        arch = self.arch
        frames = arch.overhead_frames + 2 * arch.hop_frames
        x = self.net.normalise(torch.full((1, arch.n_mels, frames), LOG_FLOOR, device=self.device, dtype=self.dtype))
        x = x.unsqueeze(1)
        columns = []
        for block in self.net.blocks:
            columns.append(x[0, :, :, -2:].clone())
            x = block(x)
        feats = self.net.hop_features(
            torch.full((1, arch.n_mels, frames), LOG_FLOOR, device=self.device, dtype=self.dtype)
        )
        return columns, feats[0, -1].clone()

    def resized(self, max_streams: int) -> StreamingEncoder:
        """A new encoder with ``max_streams`` slots; slots below the old capacity keep their state."""
        new = StreamingEncoder(self.net, max_streams)
        n = min(self.max_streams, max_streams)
        with torch.inference_mode():
            for dst, src in zip(new.block_cache, self.block_cache, strict=True):
                dst[:n] = src[:n]
            new.ring[:n] = self.ring[:n]
        return new

    def reset(self, slots: torch.Tensor | int | list[int]) -> None:
        """Forget a slot's past: it continues as if everything before were silence."""
        slots = torch.as_tensor(slots, dtype=torch.long, device=self.device).reshape(-1)
        for cache, silent in zip(self.block_cache, self._silent_columns, strict=True):
            cache[slots] = silent
        self.ring[slots] = self._silent_features

    @torch.inference_mode()
    def advance_hops_relaxed(self, slots: torch.Tensor, new_frames: torch.Tensor) -> torch.Tensor:
        """Push k consecutive hops (B, n_mels, k·hop_frames) per slot in one call; return the
        relaxed code of every hop (B, k, bits) in (−1, 1), oldest first.

        The same numbers as k calls of :meth:`advance_relaxed`: the trunk's convolutions are valid
        in time and its pools tile a hop exactly, so running 2 + k·w columns per block equals k
        runs of 2 + w. Catching up a backlog (warm-up, a file) this way costs one batched pass.
        """
        net, arch = self.net, self.arch
        slots = torch.as_tensor(slots, dtype=torch.long, device=self.device).reshape(-1)
        if slots.numel() != torch.unique(slots).numel():
            raise ValueError("a slot may appear only once per advance() call")
        new_frames = torch.as_tensor(new_frames, device=self.device, dtype=self.dtype)
        n_frames = new_frames.shape[-1] if new_frames.dim() == 3 else 0
        if (new_frames.shape[:2] != (slots.numel(), arch.n_mels) or n_frames == 0
                or n_frames % arch.hop_frames):  # fmt: skip
            raise ValueError(
                f"new_frames must be (B, {arch.n_mels}, k·{arch.hop_frames}), got {tuple(new_frames.shape)}"
            )
        k, n = n_frames // arch.hop_frames, arch.n_steps
        x = net.normalise(new_frames).unsqueeze(1)
        hop_vectors = []
        for b, (block, cache) in enumerate(zip(net.blocks, self.block_cache, strict=True), start=1):
            joined = _joined(cache[slots], x, getattr(block, "layout", torch.contiguous_format))
            cache[slots] = joined[..., -2:]
            x = block(joined)
            if b in arch.levels:
                hop_vectors.append(net.level_features(arch.levels.index(b), x))
        hops = torch.stack(hop_vectors, dim=2)  # (B, k, levels, D)
        history = torch.cat([self.ring[slots], hops], dim=1)  # (B, n + k, levels, D), oldest first
        self.ring[slots] = history[:, k:]
        windows = history.unfold(1, n, 1)[:, 1:]  # (B, k, levels, D, n): the window ending at each new hop
        batch = windows.permute(0, 1, 2, 4, 3).reshape(slots.numel() * k, len(arch.levels), n, arch.feature_dim)
        return net.head(batch).reshape(slots.numel(), k, -1)

    def advance_relaxed(self, slots: torch.Tensor, new_frames: torch.Tensor) -> torch.Tensor:
        """Push one hop (B, n_mels, hop_frames) per slot; return relaxed codes (B, bits) in (−1, 1)."""
        if torch.as_tensor(new_frames).shape[-1] != self.arch.hop_frames:
            raise ValueError(f"new_frames must be (B, {self.arch.n_mels}, {self.arch.hop_frames}), got {tuple(new_frames.shape)}")
        return self.advance_hops_relaxed(slots, new_frames)[:, 0]

    def advance(self, slots: torch.Tensor, new_frames: torch.Tensor) -> torch.Tensor:
        """Push one hop per slot; return packed codes (B, bits//8) uint8 on the CPU."""
        return pack_bits(self.advance_relaxed(slots, new_frames))

    def advance_hops(self, slots: torch.Tensor, new_frames: torch.Tensor) -> torch.Tensor:
        """Push k hops per slot; return packed codes (B, k, bits//8) uint8 on the CPU."""
        return pack_bits(self.advance_hops_relaxed(slots, new_frames))


def _joined(cached: torch.Tensor, x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``torch.cat([cached, x], dim=-1)`` written straight into the memory layout the block's
    convolution reads (channels-last for the fused blocks), which saves the block one copy."""
    b, c, f, t = x.shape
    joined = torch.empty((b, c, f, cached.shape[-1] + t), dtype=x.dtype, device=x.device, memory_format=layout)
    joined[..., : cached.shape[-1]] = cached
    joined[..., cached.shape[-1] :] = x
    return joined
