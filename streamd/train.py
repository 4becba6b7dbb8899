"""`streamd train`: train the hash network on the corpus's training split, resumably.

A run lives in one folder (``runs/NAME``): ``config.yaml`` (the resolved training config),
``checkpoint.pt`` (model + optimiser + step, written atomically every few minutes, loaded with
``weights_only=True``), ``metrics.jsonl`` (one JSON object per logged step and per validation),
``best.safetensors`` (best validation so far). The best model is also exported to the configured
``export`` path (default ``models/streamd-hash64.safetensors``) so the daemon always has the
best-so-far weights.

Batches are a pure function of (seed, step): a killed run resumed with ``--resume`` continues
with the batches it would have seen. Data for the next batches is made in one worker process
(audio excerpts, degradation chains, log-mel) while the main process trains.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from streamd.config import yaml_problem
from streamd.dataset import Track, load_split
from streamd.errors import StreamdError
from streamd.model import losses
from streamd.model.api import Fingerprinter, save_weights
from streamd.model.hashing import pack_bits
from streamd.model.network import ArchConfig, HashNet
from streamd.model.views import ViewConfig, ViewMaker


@dataclass(frozen=True)
class LossWeights:
    cross_entropy: float = 1.0
    contrastive: float = 1.0
    quantisation: float = 0.1
    balance: float = 0.1
    temperature: float = 0.1
    min_gap_hops: int = 3
    queue: int = 0  # reference codes of earlier batches kept as extra negatives (0 = off)


@dataclass(frozen=True)
class TrainConfig:
    name: str = "streamd-hash64"
    seed: int = 0
    steps: int = 6000
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 300
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    threads: int = 2
    workers: int = 1
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    val_every: int = 250
    val_items: int = 48
    precise_bn_batches: int = 16  # re-estimate BN statistics on this many batches before validating/exporting
    export: str = "models/streamd-hash64.safetensors"
    arch: ArchConfig = field(default_factory=ArchConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["arch"] = self.arch.to_dict()
        return out


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise StreamdError(f"{where}: unknown key(s) {sorted(unknown)}; known: {', '.join(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    data = dict(data)
    nested = {
        "arch": _build(ArchConfig, data.pop("arch", {}) or {}, "arch"),
        "views": _build(ViewConfig, data.pop("views", {}) or {}, "views"),
        "loss": _build(LossWeights, data.pop("loss", {}) or {}, "loss"),
    }
    base = _build(TrainConfig, data, "train config")
    return replace(base, **nested)


PRESETS: dict[str, dict[str, Any]] = {
    # Short runs that differ only in the loss, for the ablation in docs/model.md (one torch thread,
    # so they can run beside the main run; no export to models/).
    "ablation-ce": {"name": "ablation-ce", "loss": {"contrastive": 0.0, "quantisation": 0.0, "balance": 0.0}},
    "ablation-ce-contrastive": {"name": "ablation-ce-contrastive", "loss": {"quantisation": 0.0, "balance": 0.0}},
    "ablation-full": {"name": "ablation-full"},
    "ablation-contrastive-quant": {"name": "ablation-contrastive-quant", "loss": {"cross_entropy": 0.0}},
    # Same as ablation-full plus a queue of 4096 earlier reference codes as extra negatives.
    "ablation-full-queue": {"name": "ablation-full-queue", "loss": {"queue": 4096}},
    # Data variants of ablation-full (uniform fills, 8 tracks x 16 windows per batch):
    "ablation-full-loguniform": {"name": "ablation-full-loguniform", "views": {"fill_distribution": "log-uniform"}},
    "ablation-full-wide": {"name": "ablation-full-wide", "views": {"fill_distribution": "uniform", "items": 16, "windows": 8}},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def load_train_config(path: str | Path | None = None, preset: str | None = None) -> TrainConfig:
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise StreamdError(f"training config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise StreamdError(f"training config {path} is not valid YAML: {yaml_problem(exc)}") from None
    if preset:
        if preset not in PRESETS:
            raise StreamdError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        short_run = {"steps": 500, "val_every": 250, "threads": 1, "export": "", "warmup_steps": 100,
                     "views": {"fill_distribution": "uniform"}}  # the ablation table's setting
        data = _merge(data, _merge(short_run, PRESETS[preset]))
    return train_config_from_dict(data)


# --- data ------------------------------------------------------------------------------------


class StepBatches(torch.utils.data.Dataset):
    """Batch number ``step`` of a run, made from rng(seed, step): resumable and order-free."""

    def __init__(self, tracks: tuple[Track, ...], cfg: TrainConfig):
        self.tracks, self.cfg = tracks, cfg
        self.maker: ViewMaker | None = None

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        if self.maker is None:
            self.maker = ViewMaker(self.tracks, self.cfg.arch, self.cfg.views)
        rng = np.random.default_rng([self.cfg.seed, step])
        indices = rng.choice(len(self.tracks), size=self.cfg.views.items, replace=False)  # uniform by track
        return self.maker.batch(rng, indices)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


# --- model step ------------------------------------------------------------------------------


def window_codes(net: HashNet, logmel: torch.Tensor, windows: int) -> torch.Tensor:
    """(I, n_mels, frames) item sequences → relaxed codes of every window, (I·windows, bits)."""
    feats = net.hop_features(logmel)
    maps = net.windows_from_hops(feats)  # (I, windows, levels, steps, D)
    assert maps.shape[1] == windows
    return net.head(maps.flatten(0, 1))


class NegativeQueue:
    """FIFO of normalised, detached reference codes from earlier steps (extra NT-Xent negatives)."""

    def __init__(self, size: int):
        self.size = size
        self.codes: torch.Tensor | None = None

    def get(self) -> torch.Tensor | None:
        return self.codes

    def push(self, codes: torch.Tensor) -> None:
        if self.size <= 0:
            return
        fresh = torch.nn.functional.normalize(codes.detach(), dim=-1)
        self.codes = fresh if self.codes is None else torch.cat([fresh, self.codes])[: self.size]


def compute_losses(net: HashNet, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                   queue: NegativeQueue | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    w = cfg.views.windows
    q = window_codes(net, batch["query"], w)
    r = window_codes(net, batch["reference"], w)
    items = torch.arange(batch["track"].shape[0]).repeat_interleave(w)
    window = torch.arange(w).repeat(batch["track"].shape[0])
    labels = batch["track"].repeat_interleave(w)
    weights = cfg.loss
    both = torch.cat([q, r])
    terms: dict[str, torch.Tensor] = {}
    contrastive, accuracy = losses.nt_xent(q, r, items, window, weights.temperature, weights.min_gap_hops,
                                           queue.get() if queue is not None else None)
    if queue is not None:
        queue.push(r)
    terms["contrastive"] = contrastive
    terms["cross_entropy"] = losses.cross_entropy(net.classify(both), torch.cat([labels, labels]))
    terms["quantisation"] = losses.quantisation(both)
    terms["balance"] = losses.bit_balance(both)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    with torch.no_grad():
        bit_agree = (q.sign() == r.sign()).float().mean()
    stats = {name: float(value.detach()) for name, value in terms.items()}
    stats.update(loss=float(total.detach()), pair_top1=float(accuracy), bit_agree=float(bit_agree))
    return total, stats


def learning_rate(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# --- validation ------------------------------------------------------------------------------


@torch.no_grad()
def precise_batchnorm(net: HashNet, batches: list[dict[str, torch.Tensor]] | Any) -> HashNet:
    """A copy of ``net`` whose batch-norm statistics are the plain average over ``batches``
    (both views), instead of the exponential average of the last training steps, which trails
    the weights and is noisy (+1.6 points validation top-1 at step 2000 of the shipped run)."""
    import copy

    fresh = copy.deepcopy(net)
    norms = [m for m in fresh.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average
    fresh.train()
    for batch in batches:
        fresh.hop_features(batch["query"])
        fresh.hop_features(batch["reference"])
    for module in norms:
        module.momentum = 0.1
    return fresh.eval()



class Validator:
    """Window-level retrieval on validation tracks (never test): catalog = clean val tracks indexed
    like a real catalog, queries = fixed degraded / partial query windows of the same tracks.
    ``top1`` = fraction of query windows whose nearest catalog code (Hamming) is the right track."""

    def __init__(self, tracks: tuple[Track, ...], cfg: TrainConfig):
        self.tracks = tracks
        # Fixed query views (not the run's training views), so validations stay comparable even
        # when a run's augmentation is changed on resume.
        maker = ViewMaker(tracks, cfg.arch, ViewConfig(items=cfg.val_items, windows=16, fill_distribution="log-uniform"))
        rng = np.random.default_rng([cfg.seed, 10**9])
        indices = rng.integers(0, len(tracks), size=cfg.val_items)
        self.batch = maker.batch(rng, indices)
        self.audio = maker.audio
        self.windows = 16

    @torch.no_grad()
    def __call__(self, net: HashNet) -> dict[str, float]:
        was_training = net.training
        net.eval()
        fp = Fingerprinter(net)
        catalog, labels = [], []
        for i in range(len(self.tracks)):
            codes, _ = fp.codes_for_audio(self.audio.clean(i))
            catalog.append(codes)
            labels.append(np.full(len(codes), i))
        catalog_codes, catalog_labels = np.concatenate(catalog), np.concatenate(labels)
        query = pack_bits(window_codes(net, self.batch["query"], self.windows))
        truth = self.batch["track"].repeat_interleave(self.windows).numpy()
        distances = np.bitwise_count(query[:, None, :] ^ catalog_codes[None, :, :]).sum(-1)
        predicted = catalog_labels[distances.argmin(axis=1)]
        hit = predicted == truth
        fills = self.batch["fill_s"].repeat_interleave(self.windows).numpy() + np.tile(np.arange(self.windows), len(self.batch["fill_s"])) * fp.hop_s
        short = fills < 8
        net.train(was_training)
        return {
            "val_top1": float(hit.mean()),
            "val_top1_short_fill": float(hit[short].mean()) if short.any() else None,
            "val_catalog_codes": int(len(catalog_codes)),
        }


# --- the loop --------------------------------------------------------------------------------


def _changed_keys(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: [old, new]} for every value that differs between two config dicts."""
    out: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_changed_keys(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = [a, b]
    return out


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _beats_shipped(path: Path, val_top1: float) -> bool:
    """Whether a model with this validation top-1 should replace the one exported at ``path``
    (a short or restarted run must not overwrite a better shipped model)."""
    if not path.exists():
        return True
    try:
        from streamd.model.api import read_metadata

        shipped = json.loads(read_metadata(path).get("training", "{}"))["metrics"]["val_top1"]
    except (KeyError, TypeError, ValueError, OSError):
        return True
    return val_top1 > float(shipped)


def _export(net: HashNet, path: Path, cfg: TrainConfig, step: int, metrics: dict[str, Any], split_sizes: dict[str, int]) -> None:
    save_weights(
        path,
        net,
        {
            "name": cfg.name,
            "training": {
                "steps": step,
                "metrics": metrics,
                "data": {"corpus": "dev", "split": split_sizes, "classes": split_sizes["train"]},
                "config": cfg.to_dict(),
            },
        },
    )


def warm_start(net: HashNet, weights: dict[str, torch.Tensor]) -> list[str]:
    """Copy every module of ``weights`` whose tensors all fit ``net`` (names and shapes); return the
    names of the tensors left fresh.

    A module is copied whole or not at all (a trained bias next to a fresh weight means nothing).
    The conv trunk must fit entirely (a warm start that re-initialises the trunk is a mistake);
    head parts may differ, e.g. a one-layer recurrent head warm-started from a two-layer model
    keeps the trunk and LSTM1 and trains the hash layer anew.

    A level projection of a model with whole-hop means (``hop_parts`` 1) is widened to the parts
    of ``net`` so that it computes the same function: each part gets the weights / parts, and the
    mean of the part means is the whole-hop mean.
    """
    own = net.state_dict()
    weights = dict(weights)
    for i, level in enumerate(net.arch.levels):
        name = f"projections.{i}.weight"
        parts = net.arch.parts_per_hop(level)
        if name in weights and parts > 1 and weights[name].shape[1] * parts == own[name].shape[1]:
            weights[name] = weights[name].repeat(1, parts) / parts
    misfit = {k.rpartition(".")[0] for k in own if k not in weights or weights[k].shape != own[k].shape}
    fitting = {k: v for k, v in weights.items() if k in own and k.rpartition(".")[0] not in misfit}
    fresh = sorted(k for k in own if k not in fitting)
    trunk = [k for k in fresh if k.startswith("blocks.")]
    if trunk or not fitting:
        raise StreamdError(f"the weights do not fit this architecture's conv trunk (missing or reshaped: {trunk})")
    net.load_state_dict(fitting, strict=False)
    return fresh


def train(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True,
          init_weights: Path | None = None) -> dict[str, Any]:
    """Train (or continue) the run in ``out``; returns the final metrics.

    ``init_weights`` (a streamd safetensors file) warm-starts a new run from exported weights,
    e.g. when a run folder with its optimiser state is lost; the classifier starts fresh.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    if checkpoint_path.exists() and not resume:
        raise StreamdError(f"{out} already has a checkpoint; pass --resume to continue it or choose another --out")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    split = load_split()
    split_sizes = {name: len(split[name]) for name in ("train", "val", "test")}
    net = HashNet(cfg.arch, n_classes=len(split.train))
    optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best, started = 0, -1.0, time.time()
    elapsed_before = 0.0
    if init_weights is not None and not (resume and checkpoint_path.exists()):
        from safetensors.torch import load_file

        fresh = warm_start(net, load_file(str(init_weights)))
        if any(not k.startswith("classifier.") for k in fresh):
            print(f"warm start from {init_weights}: trained from scratch: {', '.join(sorted(fresh))}")
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        start, best, elapsed_before = int(state["step"]), float(state["best"]), float(state.get("elapsed_s", 0.0))
    metrics_file = (out / "metrics.jsonl").open("a")
    config_path = out / "config.yaml"
    if resume and config_path.exists():
        before = yaml.safe_load(config_path.read_text()) or {}
        changed = _changed_keys(before, cfg.to_dict())
        if changed:  # a deliberate mid-run change: keep a record of it next to the metrics
            metrics_file.write(json.dumps({"config_change": changed, "step": start, "time": time.time()}) + "\n")
    config_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def log(record: dict[str, Any]) -> None:
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()

    def save_checkpoint(step: int) -> None:
        _atomic_torch_save(
            {"model": net.state_dict(), "optimiser": optimiser.state_dict(), "step": step, "best": best,
             "elapsed_s": elapsed_before + time.time() - started},
            checkpoint_path,
        )

    validator = Validator(split.val, cfg) if cfg.val_every > 0 else None

    def with_precise_bn(model: HashNet) -> HashNet:
        if cfg.precise_bn_batches <= 0:
            return model
        source = StepBatches(split.train, cfg)  # batches from beyond the run's steps: never trained on
        return precise_batchnorm(model, (source[cfg.steps + i] for i in range(cfg.precise_bn_batches)))

    loader = torch.utils.data.DataLoader(
        StepBatches(split.train, cfg),
        batch_size=None,
        sampler=range(start, cfg.steps),
        num_workers=cfg.workers,
        worker_init_fn=_worker_init if cfg.workers else None,
        prefetch_factor=2 if cfg.workers else None,
        persistent_workers=False,
    )
    net.train()
    queue = NegativeQueue(cfg.loss.queue) if cfg.loss.queue > 0 else None
    last_checkpoint = time.time()
    running: dict[str, float] = {}
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    last: dict[str, Any] = {}
    with Progress(*columns, disable=not progress, refresh_per_second=1) as bar:
        task = bar.add_task(cfg.name, total=cfg.steps, completed=start, info="")
        step = start
        for step, batch in enumerate(loader, start=start):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(cfg, step)
            total, stats = compute_losses(net, batch, cfg, queue)
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimiser.step()
            for key, value in stats.items():
                running[key] = running.get(key, 0.0) + value
            if (step + 1) % cfg.log_every == 0:
                record = {k: v / cfg.log_every for k, v in running.items()}
                record.update(step=step + 1, lr=learning_rate(cfg, step), time=time.time(),
                              elapsed_s=elapsed_before + time.time() - started)
                log(record)
                running.clear()
                bar.update(task, info=f"loss {record['loss']:.3f} pair@1 {record['pair_top1']:.2f} bits {record['bit_agree']:.2f}")
            if validator is not None and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
                candidate = with_precise_bn(net)
                last = validator(candidate)
                last["step"] = step + 1
                log({"validation": last, "time": time.time()})
                if last["val_top1"] > best:
                    best = last["val_top1"]
                    _export(candidate, out / "best.safetensors", cfg, step + 1, last, split_sizes)
                    if cfg.export and _beats_shipped(Path(cfg.export), best):
                        _export(candidate, Path(cfg.export), cfg, step + 1, last, split_sizes)
                save_checkpoint(step + 1)
                last_checkpoint = time.time()
            elif time.time() - last_checkpoint > cfg.checkpoint_minutes * 60:
                save_checkpoint(step + 1)
                last_checkpoint = time.time()
            bar.update(task, completed=step + 1)
        save_checkpoint(cfg.steps)
    _export(with_precise_bn(net), out / "final.safetensors", cfg, cfg.steps, last, split_sizes)
    metrics_file.close()
    return {"best_val_top1": best, **last}
