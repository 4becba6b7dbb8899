"""`streamd experiments`: the paper's comparisons (§4, Figs. 4-6) on streamd's corpus and model.

One run computes, in order, with every intermediate result cached under ``OUT/cache`` (a killed
run started again with the same command continues where it stopped):

1. frozen-trunk hop features (:mod:`.features`) of ``bank_batches`` training batches (the training
   split, views as in ``streamd train``), of the validation and test catalogs (clean tracks) and of
   degraded broadcast-like queries of them (context from the other split);
2. **fig4** — recurrent unit: simple RNN / GRU / LSTM × 1 / 2 recurrent layers, same data, steps,
   learning rate and seed; validation top-1 and mAP every ``eval_every`` steps (curves);
3. **fig5** — feature maps: all 5 levels concatenated into one map per hop vs each single level
   vs the sequence of level maps (levels 1-5, and the shipped 2-5);
4. **fig6** / **bits** — hashing: the real-valued embedding h (input of the hash layer) of the
   shipped model for training windows and test windows; our hash layer (eq. 3, trained on h with
   the training losses) vs KSH, ITQ and LSH (fitted on the same training h) at 16/32/64/128 bits:
   mAP, precision@k and identification top-1 of degraded queries (the daemon's voting rule).

Results: ``OUT/results.json``, ``OUT/report.md`` (tables) and ``OUT/img/*.png``; ``publish`` puts
the report into docs/experiments.md (between the mode's markers) and the plots into docs/img/.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamd.dataset import Split, Track, load_split
from streamd.errors import StreamdError
from streamd.experiments import plots
from streamd.experiments.features import (
    QueryConfig,
    Trunk,
    ViewBank,
    WindowSet,
    build_view_bank,
    catalog_windows,
    load_trunk,
    query_windows,
)
from streamd.experiments.heads import (
    HashLayerNet,
    HeadNet,
    bank_embeddings,
    train_head,
    trained_head,
    window_outputs,
)
from streamd.experiments.itq import ITQ
from streamd.experiments.ksh import KSH
from streamd.experiments.lsh import LSH
from streamd.experiments.metrics import Labels, identification_top1, retrieval_metrics
from streamd.model.hashing import pack_bits
from streamd.model.views import ViewConfig
from streamd.train import LossWeights, TrainConfig

STAGES = ("fig4", "fig5", "fig6", "bits")

FIG4_VARIANTS: dict[str, dict[str, Any]] = {
    "LSTM ×2": {},
    "LSTM ×1": {"rnn_layers": 1},
    "GRU ×2": {"rnn": "gru"},
    "GRU ×1": {"rnn": "gru", "rnn_layers": 1},
    "SimpleRNN ×2": {"rnn": "rnn"},
    "SimpleRNN ×1": {"rnn": "rnn", "rnn_layers": 1},
}
ALL_LEVELS = (1, 2, 3, 4, 5)
FIG5_VARIANTS: dict[str, dict[str, Any]] = {
    "sequence 2-5 (shipped)": {},
    "sequence 1-5": {"levels": ALL_LEVELS},
    "concat 1-5 (one map)": {"levels": ALL_LEVELS, "level_mode": "concat"},
    **{f"level {level} only": {"levels": (level,)} for level in ALL_LEVELS},
}
BASELINES = {"KSH": KSH, "ITQ": ITQ, "LSH": LSH}


@dataclass(frozen=True)
class SuiteConfig:
    """Sizes of one run. ``FULL`` is the reproduction; ``QUICK`` only checks the pipeline."""

    mode: str = "full"
    seed: int = 0
    weights: str = "models/streamd-hash64.safetensors"
    window_frames: int | None = None  # None: the trained model's 1366-frame window
    tracks_per_split: tuple[int, int, int] | None = None  # (train, val, test) shortest tracks; None: all
    bank_batches: int = 400
    views: ViewConfig = field(default_factory=ViewConfig)
    head_steps: int = 2000
    warmup_steps: int = 100
    lr: float = 2e-3
    eval_every: int = 250
    val_queries: int = 60
    queries: QueryConfig = field(default_factory=lambda: QueryConfig(queries=200))
    bits: tuple[int, ...] = (16, 32, 64, 128)
    hash_layer_steps: int = 1500
    ksh_anchors: int = 300
    ksh_labelled: int = 2000
    baseline_windows: int = 20000
    threads: int = 2

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


FULL = SuiteConfig()
QUICK = SuiteConfig(
    mode="quick",
    window_frames=6 * 48 + 62,  # 6 hops instead of 27
    tracks_per_split=(6, 3, 4),
    bank_batches=4,
    views=ViewConfig(items=4, windows=4),
    head_steps=20,
    warmup_steps=5,
    eval_every=10,
    val_queries=3,
    queries=QueryConfig(queries=6, durations=(3.0, 5.0, 10.0)),
    hash_layer_steps=20,
    ksh_anchors=40,
    ksh_labelled=200,
    baseline_windows=2000,
    threads=1,
)


def log(message: str, started: float) -> None:
    print(f"[{time.time() - started:7.1f} s] {message}", flush=True)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# --- data --------------------------------------------------------------------------------------


def suite_split(cfg: SuiteConfig) -> Split:
    split = load_split()
    if cfg.tracks_per_split is None:
        return split

    def shortest(tracks: tuple[Track, ...], n: int) -> tuple[Track, ...]:
        return tuple(sorted(sorted(tracks, key=lambda t: t.duration_s)[:n], key=lambda t: t.track_id))

    return Split(*(shortest(split[name], n) for name, n in zip(("train", "val", "test"), cfg.tracks_per_split, strict=True)))


def _save_windows(ws: WindowSet, path: Path) -> None:
    torch.save({"feats": ws.feats, **{k: torch.from_numpy(np.asarray(getattr(ws, k))) for k in
                ("recording", "end", "track", "offset_s", "time_s")}}, path)


def _load_windows(path: Path) -> WindowSet:
    data = torch.load(path, weights_only=True)
    return WindowSet(data["feats"], *(data[k].numpy() for k in ("recording", "end", "track", "offset_s", "time_s")))


class Data:
    """The cached inputs of every stage, built on first use."""

    def __init__(self, cfg: SuiteConfig, cache: Path, weights: Path, started: float):
        self.cfg, self.cache, self.started = cfg, cache, started
        self.split = suite_split(cfg)
        self.trunk: Trunk = load_trunk(weights, cfg.window_frames)
        self._bank: ViewBank | None = None
        self._windows: dict[str, WindowSet] = {}

    @property
    def n_classes(self) -> int:
        return len(self.split.train)

    def bank(self) -> ViewBank:
        if self._bank is None:
            path = self.cache / "train_bank.pt"
            if path.exists():
                data = torch.load(path, weights_only=True)
                self._bank = ViewBank(data["query"], data["reference"], data["track"], int(data["windows"]))
            else:
                log(f"training views: {self.cfg.bank_batches} batches of {self.cfg.views.items} tracks × "
                    f"{self.cfg.views.windows} windows from {len(self.split.train)} training tracks", self.started)
                t0 = time.time()
                bank = build_view_bank(self.trunk, self.split.train, self.cfg.views, self.cfg.bank_batches, self.cfg.seed,
                                       progress=self._every(50, "  batches"))
                torch.save({"query": bank.query, "reference": bank.reference, "track": bank.track,
                            "windows": torch.tensor(bank.windows)}, path)
                self._timed("train_bank", time.time() - t0)
                self._bank = bank
        return self._bank

    def windows(self, name: str) -> WindowSet:
        """``val_catalog``, ``val_queries``, ``test_catalog`` or ``test_queries``."""
        if name not in self._windows:
            path = self.cache / f"{name}.pt"
            if path.exists():
                self._windows[name] = _load_windows(path)
            else:
                t0 = time.time()
                part, kind = name.split("_")
                tracks = self.split[part]
                if kind == "catalog":
                    log(f"{part} catalog: {len(tracks)} tracks", self.started)
                    ws = catalog_windows(self.trunk, tracks)
                else:
                    context = self.split.train if part == "val" else self.split.val  # never catalog music
                    qcfg = self.cfg.queries if part == "test" else replace(self.cfg.queries, queries=self.cfg.val_queries, seed=self.cfg.queries.seed + 1)
                    log(f"{part} queries: {qcfg.queries} degraded excerpts (strength {qcfg.strength})", self.started)
                    ws = query_windows(self.trunk, tracks, context, qcfg, progress=self._every(50, "  queries"))
                _save_windows(ws, path)
                self._timed(name, time.time() - t0)
                self._windows[name] = ws
        return self._windows[name]

    def _timed(self, name: str, seconds: float) -> None:
        """Remember how long building a cached input took (kept across resumed runs)."""
        path = self.cache / "data_wall_s.json"
        walls = json.loads(path.read_text()) if path.exists() else {}
        walls[name] = round(seconds, 1)
        path.write_text(json.dumps(walls, indent=1))

    def _every(self, n: int, what: str):
        count = [0]

        def tick() -> None:
            count[0] += 1
            if count[0] % n == 0:
                log(f"{what} {count[0]}", self.started)

        return tick


# --- evaluation --------------------------------------------------------------------------------


def code_metrics(data: Data, part: str, catalog_codes: np.ndarray, query_codes: np.ndarray, durations: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Identification top-1 per query duration and retrieval metrics of packed codes."""
    catalog, queries = data.windows(f"{part}_catalog"), data.windows(f"{part}_queries")
    durations = durations or data.cfg.queries.durations
    db = Labels(catalog.track, catalog.offset_s)
    top1 = identification_top1(query_codes, queries.time_s, queries.recording, queries.track, catalog_codes, db, durations, data.trunk.hop_s)
    keep = queries.time_s >= min(data.cfg.queries.durations) - 1e-9
    rng = np.random.default_rng(data.cfg.seed)
    retrieval = retrieval_metrics(query_codes[keep], Labels(queries.track[keep], queries.offset_s[keep]), catalog_codes, db, rng)
    return {"top1": top1, **retrieval}


def head_metrics(data: Data, net: HeadNet, part: str, durations: tuple[float, ...] | None = None) -> dict[str, Any]:
    codes = {kind: pack_bits(window_outputs(net, data.windows(f"{part}_{kind}"))) for kind in ("catalog", "queries")}
    return code_metrics(data, part, codes["catalog"], codes["queries"], durations)


def train_config(cfg: SuiteConfig, steps: int) -> TrainConfig:
    return TrainConfig(name="experiment", seed=cfg.seed, steps=steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                       threads=cfg.threads, workers=0, views=cfg.views, loss=LossWeights(), export="")


# --- stages ------------------------------------------------------------------------------------


def run_head_variant(data: Data, name: str, variant: dict[str, Any]) -> dict[str, Any]:
    """Train one head variant on the view bank; curves on validation, final numbers on test."""
    cfg = data.cfg
    # Keyed by the variant, so that a variant shared by two figures is trained once.
    path = data.cache / "heads" / f"{slug(json.dumps(variant, sort_keys=True)) or 'shipped'}.json"
    if path.exists():
        return {**json.loads(path.read_text()), "name": name}
    bank = data.bank()
    val_durations = (max(d for d in cfg.queries.durations if d <= 10.0),)
    arch = replace(data.trunk.arch, **variant)
    torch.manual_seed(cfg.seed)
    net = HeadNet(arch, data.trunk.slices(), data.n_classes)
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("classifier."))
    log(f"head {name!r}: {params} parameters, {cfg.head_steps} steps", data.started)
    started = time.time()

    def evaluate(model: HeadNet) -> dict[str, float]:
        m = head_metrics(data, model, "val", val_durations)
        return {"val_top1": m["top1"][f"{val_durations[0]:g}s"], "val_mAP": m["mAP_moment"]}

    curve = train_head(net, bank.batch, train_config(cfg, cfg.head_steps), evaluate, cfg.eval_every)
    result = {"name": name, "variant": {k: list(v) if isinstance(v, tuple) else v for k, v in variant.items()},
              "parameters": params, "curve": curve, "train_wall_s": round(time.time() - started, 1),
              "test": head_metrics(data, net, "test")}
    result["wall_s"] = round(time.time() - started, 1)
    log(f"  test top-1 {result['test']['top1']}  mAP(moment) {result['test']['mAP_moment']:.3f}", data.started)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def run_hashing(data: Data) -> dict[str, Any]:
    """Fig. 6 and code length: every method maps the shipped model's h to K bits."""
    cfg = data.cfg
    path = data.cache / "hashing.json"
    if path.exists():
        return json.loads(path.read_text())
    started = time.time()
    head = trained_head(data.trunk)
    bank = data.bank()
    h_query, h_reference = bank_embeddings(head, bank)  # (N, items, windows, d)
    h_catalog = {part: window_outputs(head, data.windows(f"{part}_catalog"), "embed") for part in ("test",)}
    h_queries = window_outputs(head, data.windows("test_queries"), "embed")
    n, items, windows, dim = h_query.shape
    # KSH's supervision: a "moment" = one item's windows in the same block of 3 hops (they share
    # 26 of 27 hops of audio), query and reference view alike; every other pair is dissimilar.
    moment = (np.arange(n * items)[:, None] * windows + np.arange(windows)[None, :] // 3).reshape(-1)
    train_x = torch.cat([h_query.reshape(-1, dim), h_reference.reshape(-1, dim)]).numpy()
    train_labels = np.concatenate([moment, moment])
    rng = np.random.default_rng(cfg.seed)
    moments = np.unique(moment)
    per_moment = 2 * min(3, windows)
    chosen = rng.choice(moments, min(len(moments), max(1, cfg.baseline_windows // per_moment)), replace=False)
    subset = np.flatnonzero(np.isin(train_labels, chosen))  # whole moments, so that similar pairs survive
    log(f"hashing: h is {dim}-d; {len(train_x)} training windows ({len(subset)} for the baselines)", data.started)
    results: dict[str, Any] = {"embedding_dim": dim, "methods": {}}

    def record(method: str, bits: int, catalog_bits: np.ndarray, query_bits: np.ndarray, extra: dict | None = None) -> None:
        metrics = code_metrics(data, "test", np.packbits(catalog_bits, axis=-1), np.packbits(query_bits, axis=-1))
        results["methods"].setdefault(method, {})[str(bits)] = {**metrics, **(extra or {})}
        log(f"  {method:>22} {bits:3d} bits: mAP track {metrics['mAP_track']:.3f} moment {metrics['mAP_moment']:.3f} "
            f"top-1 {metrics['top1']}", data.started)

    with torch.no_grad():
        shipped = {kind: window_outputs(head, data.windows(f"test_{kind}")) for kind in ("catalog", "queries")}
    record("ours (shipped, end-to-end)", head.arch.bits, (shipped["catalog"] > 0).numpy().astype(np.uint8),
           (shipped["queries"] > 0).numpy().astype(np.uint8))
    for bits in cfg.bits:
        t0 = time.time()
        torch.manual_seed(cfg.seed)
        layer = HashLayerNet(dim, bits, data.n_classes)

        def batch(step: int) -> dict[str, torch.Tensor]:
            i = step % n
            return {"query": h_query[i], "reference": h_reference[i], "track": bank.track[i]}

        train_head(layer, batch, train_config(cfg, cfg.hash_layer_steps))
        with torch.no_grad():
            codes = [(layer.head(x) > 0).numpy().astype(np.uint8) for x in (h_catalog["test"], h_queries)]
        record("ours (hash layer on h)", bits, *codes, {"fit_s": round(time.time() - t0, 1)})
        for method, cls in BASELINES.items():
            t0 = time.time()
            kwargs = {"anchors": cfg.ksh_anchors, "labelled": cfg.ksh_labelled} if method == "KSH" else {}
            hasher = cls(bits, seed=cfg.seed, **kwargs).fit(train_x[subset], train_labels[subset])
            record(method, bits, hasher.encode(h_catalog["test"].numpy()), hasher.encode(h_queries.numpy()),
                   {"fit_s": round(time.time() - t0, 1)})
    results["wall_s"] = round(time.time() - started, 1)
    path.write_text(json.dumps(results, indent=1))
    return results


# --- the suite ---------------------------------------------------------------------------------


def wall_times(results: dict[str, Any], cache: Path) -> dict[str, float]:
    """Seconds each part took when it was computed (cached parts keep their original time)."""
    path = cache / "data_wall_s.json"
    walls: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    trained: dict[str, float] = {}
    for stage in ("fig4", "fig5"):
        for r in results.get(stage, {}).values():
            trained[json.dumps(r["variant"], sort_keys=True)] = r.get("wall_s", r["train_wall_s"])
    if trained:
        walls["heads"] = round(sum(trained.values()), 1)
    if "hashing" in results:
        walls["hashing"] = results["hashing"]["wall_s"]
    walls["total"] = round(sum(walls.values()), 1)
    return walls


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _pin_weights(cfg: SuiteConfig, cache: Path, started: float) -> Path:
    """The run's own copy of the weights: a training run may rewrite ``cfg.weights`` meanwhile."""
    copy = cache / "weights.safetensors"
    if not copy.exists():
        shutil.copyfile(cfg.weights, copy)
    elif _sha256(copy) != _sha256(Path(cfg.weights)):
        log(f"note: {cfg.weights} changed since this run started; continuing with the copy taken then "
            f"(delete {cache} to start over with the new weights)", started)
    return copy


def run_suite(cfg: SuiteConfig, out: Path, only: tuple[str, ...] = STAGES, publish_to: Path | None = None) -> dict[str, Any]:
    """Run the selected stages (cached in ``out/cache``), write results.json, report.md and plots."""
    unknown = set(only) - set(STAGES)
    if unknown:
        raise StreamdError(f"unknown experiment(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    if not Path(cfg.weights).exists():
        raise StreamdError(f"model weights {cfg.weights} not found: the experiments use its trained trunk")
    started = time.time()
    torch.set_num_threads(cfg.threads)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    stamp = cache / "config.json"
    if stamp.exists() and json.loads(stamp.read_text()) != cfg.to_dict():
        raise StreamdError(f"{cache} holds results of another configuration; delete it or use another --out")
    stamp.write_text(json.dumps(cfg.to_dict(), indent=1))
    weights = _pin_weights(cfg, cache, started)
    fingerprint = {"config": cfg.to_dict(), "weights_sha256": _sha256(weights)}
    data = Data(cfg, cache, weights, started)
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.update({"mode": cfg.mode, **fingerprint,
                    "split": {name: [t.track_id for t in data.split[name]] for name in ("train", "val", "test")}})
    log(f"{cfg.mode} run → {out}; split {len(data.split.train)}/{len(data.split.val)}/{len(data.split.test)} tracks; "
        f"window {data.trunk.arch.n_steps} hops", started)
    data.bank()
    for name in ("val_catalog", "val_queries", "test_catalog", "test_queries"):
        data.windows(name)
    for stage, variants in (("fig4", FIG4_VARIANTS), ("fig5", FIG5_VARIANTS)):
        if stage in only:
            results[stage] = {name: run_head_variant(data, name, v) for name, v in variants.items()}
    if {"fig6", "bits"} & set(only):
        results["hashing"] = run_hashing(data)
    results["wall_s"] = wall_times(results, cache)
    results["wall_s"]["this_call"] = round(time.time() - started, 1)
    results_path.write_text(json.dumps(results, indent=1))
    images = plots.write_all(results, out / "img")
    (out / "report.md").write_text(report_markdown(results, image_prefix="img/"))
    if publish_to is not None:
        publish(results, images, publish_to)
    log(f"done: {results_path}, {out / 'report.md'}, {len(images)} plots", started)
    return results


# --- report ------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _head_table(rows: dict[str, Any], durations: list[str]) -> list[str]:
    lines = ["| variant | parameters | val top-1 % | val mAP | " + " | ".join(f"test top-1 {d} %" for d in durations)
             + " | test mAP (moment) | test mAP (track) | train s |",
             "|---" * (7 + len(durations)) + "|"]
    for name, r in rows.items():
        last = r["curve"][-1]
        lines.append(f"| {name} | {r['parameters']:,} | {_pct(last.get('val_top1'))} | {last.get('val_mAP', float('nan')):.3f} | "
                     + " | ".join(_pct(r["test"]["top1"].get(d)) for d in durations)
                     + f" | {r['test']['mAP_moment']:.3f} | {r['test']['mAP_track']:.3f} | {r['train_wall_s']:.0f} |")
    return lines


def report_markdown(results: dict[str, Any], image_prefix: str) -> str:
    """The results as markdown tables and image links (``image_prefix`` + plot file name)."""
    quick = results["mode"] == "quick"
    out = []
    if quick:
        out += ["> **QUICK MODE — pipeline check only.** Tiny subset (few tracks, a few dozen steps, short",
                "> windows): the numbers below say nothing about the methods.", ""]
    cfg = results["config"]
    split = results["split"]
    out += [f"Mode `{results['mode']}`, seed {cfg['seed']}, weights `{cfg['weights']}` (sha256 {results['weights_sha256']}), "
            f"split {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test tracks, "
            f"wall time per stage (s): {json.dumps(results.get('wall_s', {}))}.", ""]
    for stage, title in (("fig4", "Fig. 4 — recurrent unit"), ("fig5", "Fig. 5 — feature maps")):
        if stage not in results:
            continue
        rows = results[stage]
        durations = list(next(iter(rows.values()))["test"]["top1"])
        out += [f"### {title}", "", *_head_table(rows, durations), "",
                f"![{title}]({image_prefix}{stage}.png)", ""]
    hashing = results.get("hashing")
    if hashing:
        methods = hashing["methods"]
        bits = sorted({int(b) for m in methods.values() for b in m})
        out += ["### Fig. 6 — hash layer vs hashing baselines (same embeddings h)", "",
                "| method | " + " | ".join(f"mAP track {b}" for b in bits) + " | " + " | ".join(f"mAP moment {b}" for b in bits) + " |",
                "|---" * (1 + 2 * len(bits)) + "|"]
        for method, per_bits in methods.items():
            cells = [f"{per_bits[str(b)]['mAP_track']:.3f}" if str(b) in per_bits else "" for b in bits]
            cells += [f"{per_bits[str(b)]['mAP_moment']:.3f}" if str(b) in per_bits else "" for b in bits]
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        out += ["", f"![Fig. 6 mAP]({image_prefix}fig6_map.png) ![precision@k]({image_prefix}fig6_precision.png)", "",
                "### Code length vs identification top-1 (degraded queries, voting)", ""]
        durations = list(next(iter(next(iter(methods.values())).values()))["top1"])
        out += ["| method | bits | " + " | ".join(f"top-1 {d} %" for d in durations) + " |", "|---" * (2 + len(durations)) + "|"]
        for method, per_bits in methods.items():
            for b in sorted(per_bits, key=int):
                out.append(f"| {method} | {b} | " + " | ".join(_pct(per_bits[b]["top1"][d]) for d in durations) + " |")
        out += ["", f"![code length]({image_prefix}bits.png)", ""]
    return "\n".join(out)


def publish(results: dict[str, Any], images: list[Path], docs: Path) -> None:
    """Copy the plots to docs/img/experiments-<mode>-*.png and the report into docs/experiments.md."""
    mode = results["mode"]
    img_dir = docs / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        (img_dir / f"experiments-{mode}-{image.name}").write_bytes(image.read_bytes())
    page = docs / "experiments.md"
    begin, end = f"<!-- BEGIN {mode} results (written by streamd experiments --publish) -->", f"<!-- END {mode} results -->"
    text = page.read_text() if page.exists() else ""
    block = f"{begin}\n{report_markdown(results, image_prefix=f'img/experiments-{mode}-')}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    page.write_text(text)
