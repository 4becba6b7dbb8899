"""Frozen-trunk features, computed once and shared by every experiment variant.

The paper's hash network reads feature maps of a *pre-trained* FCN-5. Here the trunk is the conv
trunk of a trained streamd model (``models/streamd-hash64.safetensors`` by default), frozen; the
variants of Figs. 4-6 differ only after it. So the trunk's output is computed once per audio:
for every block (1-5) and every hop, the block's columns of that hop averaged and its frequency
axis resized to ``common_freq`` bands — exactly what ``HashNet.level_features`` computes before its
linear projection. These *hop features* (hops, F) with F = Σ_b channels_b · common_freq feed any
head (see :mod:`streamd.experiments.heads`).

Three kinds of audio are turned into hop features:

- training views (:func:`build_view_bank`): batches of ``streamd.model.views.ViewMaker`` (degraded,
  partial query windows next to clean catalog references), as in ``streamd train``;
- catalogs (:func:`catalog_windows`): clean tracks, one window per hop, informative windows only,
  as ``streamd eval`` indexes them;
- queries (:func:`query_windows`): a random excerpt of a catalog track, after 15-29 s of other
  music or DJ talk (crossfaded or cut), degraded by ``streamd.degrade.random_chain`` — the
  ``streamd eval`` protocol; every hop of the first ``max(durations)`` seconds is one window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from streamd import degrade
from streamd.dataset import SAMPLE_RATE, Track, load_audio
from streamd.errors import StreamdError
from streamd.melspec import MelParams, offline_logmel
from streamd.model.api import informative_hops, load_weights_file
from streamd.model.network import LOG_FLOOR, ArchConfig, HashNet, frequency_resize_matrix
from streamd.model.views import ViewConfig, ViewMaker


@dataclass
class Trunk:
    """The frozen conv trunk of a trained model (batch norm folded in) and its architecture."""

    net: HashNet
    arch: ArchConfig
    weights: Path
    mel: MelParams

    @property
    def hop_s(self) -> float:
        return self.arch.hop_frames * self.mel.hop_length / self.mel.sample_rate

    def slices(self) -> list[slice]:
        """Where block b's features sit in a hop feature vector (index b − 1)."""
        out, start = [], 0
        for block in range(1, len(self.arch.widths) + 1):
            size = self.arch.channels(block) * self.arch.common_freq
            out.append(slice(start, start + size))
            start += size
        return out

    @property
    def dim(self) -> int:
        return self.slices()[-1].stop


def load_trunk(weights: str | Path, window_frames: int | None = None) -> Trunk:
    """The trunk of ``weights``; ``window_frames`` shortens the window (quick mode only)."""
    fp = load_weights_file(weights)
    arch = fp.arch if window_frames is None else replace(fp.arch, window_frames=window_frames)
    if arch.hop_parts != 1:
        raise StreamdError(f"{weights}: the head experiments cache whole-hop means; hop_parts {arch.hop_parts} is not supported")
    fp.net.arch = arch
    return Trunk(fp.net, arch, Path(weights), fp.mel)


@torch.inference_mode()
def hop_features(trunk: Trunk, logmel: torch.Tensor) -> torch.Tensor:
    """Log-mel (B, n_mels, hops·hop + overhead) → hop features of all blocks (B, hops, F)."""
    arch, net = trunk.arch, trunk.net
    hops = (logmel.shape[-1] - arch.overhead_frames) // arch.hop_frames
    x = net.normalise(logmel.float()).unsqueeze(1)
    per_block = []
    for block_index, block in enumerate(net.blocks, start=1):
        x = block(x)
        b, c, f, _ = x.shape
        k = arch.columns_per_hop(block_index)
        pooled = x[..., x.shape[-1] - hops * k :].reshape(b, c, f, hops, k).mean(dim=-1)
        resized = torch.einsum("bcft,fg->btcg", pooled, frequency_resize_matrix(f, arch.common_freq))
        per_block.append(resized.reshape(b, hops, c * arch.common_freq))
    return torch.cat(per_block, dim=-1)


def recording_features(trunk: Trunk, audio: np.ndarray, chunk_hops: int = 512) -> tuple[torch.Tensor, np.ndarray]:
    """A whole recording → (hop features (n + n_steps − 1, F) float16, informative (n,)).

    Window w (w = 0 … n − 1) ends after (w + 1) hops of the recording and covers feature rows
    [w, w + n_steps); before the start the window holds silence, as in
    ``Fingerprinter.relaxed_for_track_logmel``.
    """
    arch = trunk.arch
    logmel = offline_logmel(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), trunk.mel)
    n = logmel.shape[-1] // arch.hop_frames
    pad = arch.overhead_frames + (arch.n_steps - 1) * arch.hop_frames
    padded = F.pad(logmel[:, : n * arch.hop_frames], (pad, 0), value=LOG_FLOOR)
    total = n + arch.n_steps - 1
    pieces = []
    for h0 in range(0, total, chunk_hops):
        h1 = min(total, h0 + chunk_hops)
        pieces.append(hop_features(trunk, padded[None, :, h0 * arch.hop_frames : h1 * arch.hop_frames + arch.overhead_frames])[0])
    informative = informative_hops(logmel, np.arange(1, n + 1) * arch.hop_frames)
    return torch.cat(pieces).half(), informative


# --- training views ------------------------------------------------------------------------------


@dataclass
class ViewBank:
    """Hop features of ``batches`` training batches: query / reference (N, items, hops, F) float16."""

    query: torch.Tensor
    reference: torch.Tensor
    track: torch.Tensor  # (N, items) class index into the training tracks
    windows: int

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        i = index % len(self.track)
        return {"query": self.query[i].float(), "reference": self.reference[i].float(), "track": self.track[i]}


def build_view_bank(trunk: Trunk, tracks: tuple[Track, ...], views: ViewConfig, batches: int, seed: int,
                    progress=None) -> ViewBank:
    """Hop features of ``batches`` ViewMaker batches; batch i is drawn from rng(seed, i)."""
    maker = ViewMaker(tracks, trunk.arch, views, trunk.mel)
    query, reference, labels = [], [], []
    for i in range(batches):
        rng = np.random.default_rng([seed, i])
        indices = rng.choice(len(tracks), size=views.items, replace=False)
        batch = maker.batch(rng, indices)
        query.append(hop_features(trunk, batch["query"]).half())
        reference.append(hop_features(trunk, batch["reference"]).half())
        labels.append(batch["track"])
        if progress is not None:
            progress()
    return ViewBank(torch.stack(query), torch.stack(reference), torch.stack(labels), views.windows)


# --- catalogs and queries ------------------------------------------------------------------------


@dataclass
class WindowSet:
    """Windows of several recordings, stored as the recordings' hop features (windows overlap).

    Per window (flat arrays): ``recording``, ``end`` (window index inside its recording), ``track``,
    ``offset_s`` (true track time of the window's end) and ``time_s`` (for queries: seconds since
    the excerpt started; for catalogs: = offset_s).
    """

    feats: list[torch.Tensor]
    recording: np.ndarray
    end: np.ndarray
    track: np.ndarray
    offset_s: np.ndarray
    time_s: np.ndarray

    def __len__(self) -> int:
        return len(self.recording)

    def select(self, keep: np.ndarray) -> WindowSet:
        return WindowSet(self.feats, self.recording[keep], self.end[keep], self.track[keep], self.offset_s[keep], self.time_s[keep])


def _window_set(feats: list[torch.Tensor], rows: list[dict[str, np.ndarray]]) -> WindowSet:
    columns = {key: np.concatenate([r[key] for r in rows]) if rows else np.zeros(0) for key in ("end", "track", "offset_s", "time_s")}
    recording = np.concatenate([np.full(len(r["end"]), i) for i, r in enumerate(rows)]) if rows else np.zeros(0, np.int64)
    return WindowSet(feats, recording.astype(np.int64), columns["end"].astype(np.int64), columns["track"].astype(np.int64),
                     columns["offset_s"], columns["time_s"])


def catalog_windows(trunk: Trunk, tracks: tuple[Track, ...], progress=None) -> WindowSet:
    """Every informative hop of every track (clean), labelled by track number and end time."""
    feats, rows = [], []
    for i, track in enumerate(tracks):
        f, informative = recording_features(trunk, load_audio(track))
        ends = np.flatnonzero(informative)
        offsets = (ends + 1) * trunk.hop_s
        feats.append(f)
        rows.append({"end": ends, "track": np.full(len(ends), i), "offset_s": offsets, "time_s": offsets})
        if progress is not None:
            progress()
    return _window_set(feats, rows)


@dataclass(frozen=True)
class QueryConfig:
    queries: int = 100
    durations: tuple[float, ...] = (3.0, 5.0, 10.0, 29.0)
    context_s: tuple[float, float] = (15.0, 29.0)
    track_start_prob: float = 0.25
    strength: float = 0.6
    seed: int = 20261128


def query_windows(trunk: Trunk, tracks: tuple[Track, ...], context: tuple[Track, ...], cfg: QueryConfig,
                  progress=None) -> WindowSet:
    """Degraded broadcast-like queries of ``tracks`` (numbered as in the catalog), after ``context`` audio."""
    rng = np.random.default_rng(cfg.seed)
    audio = [load_audio(t) for t in tracks]
    context_audio = [load_audio(t) for t in context]
    feats, rows = [], []
    for _ in range(cfg.queries):
        index = int(rng.integers(len(tracks)))
        excerpt_s = max(cfg.durations) + 1.5
        longest = len(audio[index]) / SAMPLE_RATE - excerpt_s
        start_s = 0.0 if rng.random() < cfg.track_start_prob or longest <= 0 else float(rng.uniform(0, longest))
        excerpt = audio[index][int(start_s * SAMPLE_RATE) : int((start_s + excerpt_s) * SAMPLE_RATE)]
        before = int(rng.uniform(*cfg.context_s) * SAMPLE_RATE)
        source = context_audio[int(rng.integers(len(context_audio)))]
        if rng.random() < 0.8:
            at = int(rng.integers(0, max(1, len(source) - before)))
            prefix = np.pad(source[at : at + before], (0, max(0, before - len(source[at : at + before]))))
        else:
            prefix = degrade.talk(before / SAMPLE_RATE, SAMPLE_RATE, rng)
        overlap = int(rng.uniform(0.0, 2.0) * SAMPLE_RATE) if rng.random() < 0.5 else 0
        chain = degrade.random_chain(rng, cfg.strength)
        query = degrade.apply(degrade.crossfade(prefix, excerpt, overlap), SAMPLE_RATE, chain, backgrounds=[source])
        speed = chain.speed_factor
        excerpt_at = (before - overlap) / SAMPLE_RATE / speed
        f, informative = recording_features(trunk, query)
        times = (np.arange(len(informative)) + 1) * trunk.hop_s - excerpt_at
        ends = np.flatnonzero(informative & (times > 0) & (times <= max(cfg.durations) + 1e-9))
        feats.append(f)
        rows.append({"end": ends, "track": np.full(len(ends), index), "offset_s": start_s + times[ends] * speed,
                     "time_s": times[ends]})
        if progress is not None:
            progress()
    return _window_set(feats, rows)
