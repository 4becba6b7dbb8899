"""Training hash heads on frozen-trunk hop features.

:class:`HeadNet` is a :class:`~streamd.model.network.HashNet` whose ``hop_features`` reads the
cached trunk features (:mod:`streamd.experiments.features`) instead of log-mel: it keeps only
its projections, similarity selection, recurrent layers and hash layer, so any ``ArchConfig``
head variant (recurrent unit, layers, levels, level mode, bits) trains with the unchanged
``streamd.train.compute_losses`` and learning-rate schedule.

:class:`HashLayerNet` is the smallest head: only the hash layer q = tanh(Wᵀh + v) (eq. 3) and the
classifier, on fixed embeddings h. Fig. 6 uses it to give our hash layer and the hashing baselines
exactly the same input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from streamd.experiments.features import Trunk, ViewBank, WindowSet
from streamd.model.api import read_metadata
from streamd.model.network import ArchConfig, HashNet
from streamd.train import TrainConfig, compute_losses, learning_rate


class HeadNet(HashNet):
    """A HashNet head over cached hop features (B, hops, F) of all trunk blocks."""

    def __init__(self, arch: ArchConfig, slices: list[slice], n_classes: int = 0):
        super().__init__(arch, n_classes)
        del self.blocks  # the trunk is frozen and already applied
        self.slices = slices

    def hop_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Cached hop features (B, hops, F) → projected level vectors (B, hops, levels, D)."""
        return torch.stack(
            [projection(feats[..., self.slices[level - 1]]) for projection, level in zip(self.projections, self.arch.levels, strict=True)],
            dim=2,
        )


class HashLayerNet(nn.Module):
    """Hash layer + classifier on fixed embeddings; duck-types the HashNet calls of compute_losses.

    Its "hop features" are embeddings (items, windows, d) already one per window.
    """

    def __init__(self, dim: int, bits: int, n_classes: int):
        super().__init__()
        self.hash = nn.Linear(dim, bits)
        self.classifier = nn.Linear(bits, n_classes)

    def hop_features(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings

    def windows_from_hops(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings

    def head(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hash(embeddings))

    def classify(self, codes: torch.Tensor) -> torch.Tensor:
        return self.classifier(codes)


def train_head(
    net: nn.Module,
    batches: Callable[[int], dict[str, torch.Tensor]],
    cfg: TrainConfig,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int = 0,
) -> list[dict[str, Any]]:
    """Train ``net`` for ``cfg.steps`` on ``batches(step)`` (AdamW, warm-up + cosine, as streamd train).

    Returns the curve: one record per ``eval_every`` steps (and at the end) with the step, the
    mean training losses since the last record, the wall time and ``evaluate(net)``.
    """
    torch.manual_seed(cfg.seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    curve: list[dict[str, Any]] = []
    running: dict[str, float] = {}
    started, counted = time.time(), 0
    net.train()
    for step in range(cfg.steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(cfg, step)
        total, stats = compute_losses(net, batches(step), cfg)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimiser.step()
        counted += 1
        for key, value in stats.items():
            running[key] = running.get(key, 0.0) + value
        if (eval_every and (step + 1) % eval_every == 0) or step + 1 == cfg.steps:
            record: dict[str, Any] = {"step": step + 1, "wall_s": round(time.time() - started, 1)}
            record.update({k: v / counted for k, v in running.items()})
            running, counted = {}, 0
            if evaluate is not None:
                net.eval()
                record.update(evaluate(net))
                net.train()
            curve.append(record)
    net.eval()
    return curve


@torch.no_grad()
def window_outputs(net: HeadNet, windows: WindowSet, output: str = "head", max_batch: int = 512) -> torch.Tensor:
    """``net.head`` (relaxed codes) or ``net.embed`` (h) of every window of a WindowSet, in its order."""
    fn = net.head if output == "head" else net.embed
    result = torch.zeros((0, 0))
    for recording in np.unique(windows.recording):
        rows = np.flatnonzero(windows.recording == recording)
        feats = net.hop_features(windows.feats[recording].float()[None])
        maps = net.windows_from_hops(feats, torch.as_tensor(windows.end[rows] + net.arch.n_steps - 1)[None])[0]
        values = torch.cat([fn(chunk) for chunk in maps.split(max_batch)])
        if result.numel() == 0:
            result = values.new_zeros((len(windows), values.shape[1]))
        result[torch.as_tensor(rows)] = values
    return result


@torch.no_grad()
def bank_embeddings(net: HashNet, bank: ViewBank) -> tuple[torch.Tensor, torch.Tensor]:
    """h of every query and reference window of a view bank: (N, items, windows, d) each."""
    def embed(feats: torch.Tensor) -> torch.Tensor:
        items = feats.shape[0]
        maps = net.windows_from_hops(net.hop_features(feats.float()))
        return net.embed(maps.flatten(0, 1)).reshape(items, bank.windows, -1)

    return (torch.stack([embed(q) for q in bank.query]), torch.stack([embed(r) for r in bank.reference]))


def trained_head(trunk: Trunk) -> HeadNet:
    """The head of the trunk's own weights file (the shipped model) over cached hop features."""
    arch = ArchConfig.from_dict({**json.loads(read_metadata(trunk.weights)["arch"]), "window_frames": trunk.arch.window_frames})
    net = HeadNet(arch, trunk.slices())
    missing, _ = net.load_state_dict(load_file(str(trunk.weights)), strict=False)
    if missing:
        raise ValueError(f"{trunk.weights} lacks head tensors {missing}")
    return net.eval()
