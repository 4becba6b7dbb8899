"""The hash network of the paper, built so that a sliding window can be computed one hop at a time.

Structure (paper §2.2, §3.2-3.3, eqs. 1-4; choices where the paper is vague are in docs/model.md):

    log-mel window (1 × 96 × T)
      → FCN-5 trunk: 5 × [conv 3×3 → BN → ReLU → max-pool]       (Choi et al. 2016 style)
      → feature maps of several levels (blocks ``levels``)
      → resize each level to a common grid: mean over the columns of each hop (time) and
        bilinear, anti-aliased resize to ``common_freq`` bands (frequency); project to ``feature_dim``
      → similarity selection: gate each level by how much it differs (cosine) from the level below
      → LSTM1 over the time steps of each level's map (eq. 1), last state per map
      → LSTM2 over the sequence of maps (eq. 2) → h_end
      → hash layer q = tanh(W h_end + v) (eq. 3), sign → K bits at inference
      → softmax classifier over training classes (eq. 4; training only)

Exact streaming. Convolutions are padded along frequency only, so along time every block is
"valid" and shift-equivariant; time pools have stride = kernel and their strides multiply to
the hop (48 frames). A window is cropped to the newest ``input_frames`` = 48·n + overhead frames,
so that every pooling grid is anchored at the window's end. Then the features of the hop that ends
at frame e depend only on frames up to e, and a stream can compute them from the newest 48 frames
plus 2 cached input columns per block (:mod:`streamd.model.streaming`). Everything after the trunk
works on per-hop feature vectors and is recomputed over the window (it is small).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from streamd.melspec import LOG_EPS

LOG_FLOOR = math.log(LOG_EPS)
"""Log-mel value of digital silence; frames before a track or stream start are filled with it."""


@dataclass(frozen=True)
class ArchConfig:
    n_mels: int = 96
    window_frames: int = 1366
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    freq_strides: tuple[int, ...] = (2, 1, 1, 1, 1)
    freq_pools: tuple[int, ...] = (2, 2, 2, 2, 3)
    time_pools: tuple[int, ...] = (2, 2, 2, 2, 3)
    levels: tuple[int, ...] = (2, 3, 4, 5)
    common_freq: int = 3
    feature_dim: int = 32
    lstm1_hidden: int = 64
    lstm2_hidden: int = 128
    bits: int = 64
    selection: str = "cosine"  # "cosine" | "none"
    # Hops of the window the head reads (newest first); 0 = all hops that fit the window (the
    # paper's 29 s). Short contexts give codes of the last few seconds: a track is found seconds
    # after it starts, and longer queries vote over many codes (docs/model.md).
    context_hops: int = 0
    # Parts each hop's columns are split into before the frequency resize (per level at most its
    # columns per hop: gcd(hop_parts, columns)); 1 = the mean over the whole hop. More parts give
    # the head the timing inside a hop (docs/model.md, "Sub-hop timing").
    hop_parts: int = 1
    # Head variants for the paper's comparisons (docs/experiments.md); the defaults are the model.
    rnn: str = "lstm"  # recurrent unit of both recurrent layers: "lstm" | "gru" | "rnn" (simple RNN)
    rnn_layers: int = 2  # 2: eqs. 1-2 (RNN1 per map, RNN2 over maps); 1: RNN1 only, its last states concatenated
    level_mode: str = "sequence"  # "sequence": one map per level; "concat": each hop's level vectors in one map
    input_mean: float = -6.0
    input_std: float = 4.0

    def __post_init__(self) -> None:
        if not (len(self.widths) == len(self.freq_strides) == len(self.freq_pools) == len(self.time_pools)):
            raise ValueError("widths, freq_strides, freq_pools and time_pools need one entry per block")
        if any(not 1 <= level <= len(self.widths) for level in self.levels) or not self.levels:
            raise ValueError(f"levels must name blocks 1..{len(self.widths)}")
        if self.bits not in (16, 32, 64, 128):
            raise ValueError("bits must be 16, 32, 64 or 128")
        if self.selection not in ("cosine", "none"):
            raise ValueError("selection must be 'cosine' or 'none'")
        if self.rnn not in RECURRENT_UNITS or self.rnn_layers not in (1, 2):
            raise ValueError(f"rnn must be one of {sorted(RECURRENT_UNITS)} and rnn_layers 1 or 2")
        if self.level_mode not in ("sequence", "concat"):
            raise ValueError("level_mode must be 'sequence' or 'concat'")
        if self.hop_parts < 1:
            raise ValueError("hop_parts must be >= 1")
        if self.context_hops < 0:
            raise ValueError("context_hops must be >= 0 (0: the whole window)")
        if self.input_frames > self.window_frames:
            raise ValueError(f"window_frames {self.window_frames} is shorter than one hop + overhead")

    @property
    def hop_frames(self) -> int:
        return math.prod(self.time_pools)

    @property
    def overhead_frames(self) -> int:
        """Extra input frames the valid time convolutions eat: 2 columns per block at its resolution."""
        return sum(2 * math.prod(self.time_pools[:b]) for b in range(len(self.time_pools)))

    @property
    def n_steps(self) -> int:
        """Hops the head reads per window (time steps of every level map after resizing)."""
        return self.context_hops or (self.window_frames - self.overhead_frames) // self.hop_frames

    @property
    def input_frames(self) -> int:
        """Newest frames of a window that the network reads (the older rest is ignored)."""
        return self.n_steps * self.hop_frames + self.overhead_frames

    def freq_bins(self, block: int) -> int:
        """Frequency bins after ``block`` blocks (0 = the input)."""
        bins = self.n_mels
        for stride, pool in zip(self.freq_strides[:block], self.freq_pools[:block], strict=True):
            bins = ((bins - 1) // stride + 1) // pool
        return bins

    def channels(self, block: int) -> int:
        return 1 if block == 0 else self.widths[block - 1]

    def columns_per_hop(self, block: int) -> int:
        return self.hop_frames // math.prod(self.time_pools[:block])

    def parts_per_hop(self, block: int) -> int:
        """Equal parts of a hop's columns whose means level ``block``'s features keep apart."""
        return math.gcd(self.hop_parts, self.columns_per_hop(block))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> ArchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


class ConvBlock(nn.Module):
    """conv 3×3 (frequency padding 1, no time padding) → BN → ReLU → max-pool (stride = kernel).

    ``freq_stride`` > 1 makes the convolution skip frequency rows (the cheap way to shrink the
    first, widest block); the time stride is always 1 so that the block stays shift-equivariant.
    """

    def __init__(self, c_in: int, c_out: int, freq_pool: int, time_pool: int, freq_stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=(1, 0), stride=(freq_stride, 1), bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = (freq_pool, time_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), self.pool)


def separable_max_pool(x: torch.Tensor, freq_pool: int, time_pool: int) -> torch.Tensor:
    """``F.max_pool2d(x, (freq_pool, time_pool))`` (stride = kernel, remainder dropped), computed
    as elementwise maxima of strided views, time first: exactly the same values, and on CPU
    cheaper than ATen's max-pool for the trunk's channels-last maps (the whole streaming step
    10 % cheaper, bench/RESULTS.md)."""
    f, t = x.shape[-2] // freq_pool * freq_pool, x.shape[-1] // time_pool * time_pool
    x = x[..., :f, :t]
    out = x[..., 0::time_pool]
    for j in range(1, time_pool):
        out = torch.maximum(out, x[..., j::time_pool])
    pooled = out[..., 0::freq_pool, :]
    for i in range(1, freq_pool):
        pooled = torch.maximum(pooled, out[..., i::freq_pool, :])
    return pooled


class FusedConvBlock(nn.Module):
    """Inference form of a :class:`ConvBlock`: batch norm folded into the convolution, the ReLU
    moved after the max-pool (both monotone), channels-last memory layout, for which oneDNN's
    small-channel convolutions are 1.5-3× faster on CPU, and :func:`separable_max_pool`
    (bench/model.py). Same function as the block in eval mode, up to float rounding."""

    def __init__(self, block: ConvBlock, channels_last: bool = True):
        super().__init__()
        conv, bn = block.conv, block.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=conv.padding, stride=conv.stride,
                              bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight * scale[:, None, None, None])
            self.conv.bias.copy_(bn.bias - bn.running_mean * scale)
        self.pool = block.pool
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.conv.to(memory_format=self.layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(separable_max_pool(self.conv(x.contiguous(memory_format=self.layout)), *self.pool))


class HashNet(nn.Module):
    """Trunk + per-hop level features + recurrent hash head. See the module docstring."""

    def __init__(self, arch: ArchConfig, n_classes: int = 0):
        super().__init__()
        self.arch = arch
        self.blocks = nn.ModuleList(
            ConvBlock(arch.channels(b), arch.channels(b + 1), arch.freq_pools[b], arch.time_pools[b], arch.freq_strides[b])
            for b in range(len(arch.widths))
        )
        self.projections = nn.ModuleList(
            nn.Linear(arch.channels(level) * arch.common_freq * arch.parts_per_hop(level), arch.feature_dim)
            for level in arch.levels
        )
        for i, level in enumerate(arch.levels):
            self.register_buffer(f"freq_resize{i}", frequency_resize_matrix(arch.freq_bins(level), arch.common_freq), persistent=False)
        n_levels = len(arch.levels)
        self.gate_scale = nn.Parameter(torch.full((n_levels,), 4.0))
        self.gate_bias = nn.Parameter(torch.full((n_levels,), 2.0))
        # Named lstm1/lstm2 whatever the unit, so that weights files keep their tensor names.
        unit = RECURRENT_UNITS[arch.rnn]
        concat = arch.level_mode == "concat"
        self.lstm1 = unit(arch.feature_dim * (n_levels if concat else 1), arch.lstm1_hidden, batch_first=True)
        self.lstm2 = unit(arch.lstm1_hidden, arch.lstm2_hidden, batch_first=True) if arch.rnn_layers == 2 else None
        embedding = arch.lstm2_hidden if arch.rnn_layers == 2 else arch.lstm1_hidden * (1 if concat else n_levels)
        self.hash = nn.Linear(embedding, arch.bits)
        self.classifier = nn.Linear(arch.bits, n_classes) if n_classes > 0 else None

    # --- trunk -------------------------------------------------------------------------------

    def normalise(self, logmel: torch.Tensor) -> torch.Tensor:
        return (logmel - self.arch.input_mean) / self.arch.input_std

    def level_features(self, level_index: int, fmap: torch.Tensor) -> torch.Tensor:
        """(B, C, F, hops·k) newest columns of one level → (B, hops, D) per-hop vectors.

        Mean over the k columns of each hop (or over each of its ``parts_per_hop`` equal parts),
        anti-aliased bilinear resize of frequency to ``common_freq`` bands, flatten, linear
        projection. Each hop's vector depends only on that hop's columns, which is what makes the
        streaming path exact.
        """
        arch = self.arch
        b, c, f, t = fmap.shape
        level = arch.levels[level_index]
        k, parts = arch.columns_per_hop(level), arch.parts_per_hop(level)
        hops = t // k
        pooled = fmap.reshape(b, c, f, hops, parts, k // parts).mean(dim=-1)
        resize = getattr(self, f"freq_resize{level_index}").to(pooled.dtype)
        resized = torch.einsum("bcftp,fg->btpcg", pooled, resize)
        return self.projections[level_index](resized.reshape(b, hops, parts * c * arch.common_freq))

    def hop_features(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, n_mels, hops·48 + overhead) → per-hop features (B, hops, levels, D).

        The frame count must be exactly ``hops * hop_frames + overhead_frames``; hop j's features
        describe frames ending at ``overhead + 48·(j+1)``.
        """
        arch = self.arch
        frames = logmel.shape[-1] - arch.overhead_frames
        if frames <= 0 or frames % arch.hop_frames:
            raise ValueError(f"need hops*{arch.hop_frames} + {arch.overhead_frames} frames, got {logmel.shape[-1]}")
        hops = frames // arch.hop_frames
        x = self.normalise(logmel).unsqueeze(1)
        per_level = []
        for b, block in enumerate(self.blocks, start=1):
            x = block(x)
            if b in arch.levels:
                k = arch.columns_per_hop(b)
                per_level.append(self.level_features(arch.levels.index(b), x[..., x.shape[-1] - hops * k :]))
        return torch.stack(per_level, dim=2)

    # --- head --------------------------------------------------------------------------------

    def select(self, maps: torch.Tensor) -> torch.Tensor:
        """Similarity selection over a window's level maps (N, levels, steps, D).

        Level l is scaled by sigmoid(a_l·(1 − cos(M_l, M_{l−1})) + b_l): a level that repeats
        the one below it adds little and is damped; the first level is compared with nothing
        (cos = 1). The gate is a function of the whole window, so it is exact in streaming too.
        """
        if self.arch.selection == "none":
            return maps
        flat = maps.flatten(2)
        cos = F.cosine_similarity(flat[:, 1:], flat[:, :-1], dim=-1, eps=1e-6)
        cos = torch.cat([cos.new_ones(cos.shape[0], 1), cos], dim=1)  # works for a single level too
        gate = torch.sigmoid(self.gate_scale * (1.0 - cos) + self.gate_bias)
        return maps * gate[..., None, None]

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """Window level maps (N, levels, steps, D) → the real-valued embedding h_end before the hash layer."""
        maps = self.select(maps)
        if self.arch.level_mode == "concat":
            maps = maps.transpose(1, 2).flatten(2).unsqueeze(1)  # (N, 1, steps, levels·D)
        n, levels, steps, dim = maps.shape
        h1 = _last_state(self.lstm1(maps.reshape(n * levels, steps, dim)))  # eq. 1, last state per map
        if self.lstm2 is None:
            return h1.reshape(n, -1)
        return _last_state(self.lstm2(h1.reshape(n, levels, -1)))  # eq. 2

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        """Window level maps (N, levels, steps, D) → relaxed codes q in (−1, 1), (N, bits)."""
        return torch.tanh(self.hash(self.embed(maps)))  # eq. 3

    def classify(self, codes: torch.Tensor) -> torch.Tensor:
        """Softmax logits over training classes from (relaxed) codes, eq. 4."""
        if self.classifier is None:
            raise RuntimeError("this network has no classifier (n_classes=0)")
        return self.classifier(codes)

    def fused_for_inference(self, channels_last: bool = True) -> HashNet:
        """An eval-mode copy whose conv blocks have batch norm folded in (see FusedConvBlock)."""
        fused = copy.deepcopy(self).eval()
        fused.blocks = nn.ModuleList(
            FusedConvBlock(block, channels_last) if isinstance(block, ConvBlock) else block for block in fused.blocks
        )
        return fused

    # --- whole windows -----------------------------------------------------------------------

    def crop_window(self, logmel: torch.Tensor) -> torch.Tensor:
        """The newest ``input_frames`` of a window; a short window is left-padded with silence."""
        need = self.arch.input_frames
        t = logmel.shape[-1]
        if t >= need:
            return logmel[..., t - need :]
        return F.pad(logmel, (need - t, 0), value=LOG_FLOOR)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Full-window forward: log-mel windows (B, n_mels, T) → relaxed codes (B, bits)."""
        return self.head(self.hop_features(self.crop_window(windows)).transpose(1, 2))

    def windows_from_hops(self, feats: torch.Tensor, ends: torch.Tensor | None = None) -> torch.Tensor:
        """Per-hop features (B, hops, L, D) → every window of ``n_steps`` consecutive hops.

        Returns (B, windows, L, n_steps, D); window w covers hops [w, w + n_steps). With ``ends``
        (B, W) of last-hop indices, only those windows: (B, W, L, n_steps, D).
        """
        steps = self.arch.n_steps
        unfolded = feats.unfold(1, steps, 1)  # (B, windows, L, D, steps)
        unfolded = unfolded.permute(0, 1, 2, 4, 3)
        if ends is None:
            return unfolded
        index = (ends - steps + 1).clamp(min=0)
        return unfolded[torch.arange(feats.shape[0])[:, None], index]


RECURRENT_UNITS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _last_state(output: tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The last layer's final hidden state from a one-layer LSTM / GRU / RNN call's output."""
    hidden = output[1]
    return (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]


def frequency_resize_matrix(bins: int, size: int) -> torch.Tensor:
    """(bins, size) matrix of PyTorch's bilinear resize along frequency (anti-aliased when shrinking).

    Built by resizing unit vectors, and applied as a matrix so that the time axis never goes
    through ``F.interpolate`` (whose anti-aliased mode treats a 1-column input differently).
    """
    basis = torch.eye(bins, dtype=torch.float64).reshape(1, bins, bins, 1).expand(1, bins, bins, 2)
    resized = F.interpolate(basis, size=(size, 2), mode="bilinear", antialias=bins > size, align_corners=False)
    return resized[0, :, :, 0].float()

