"""PNG figures of a ``streamd experiments`` run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _title(results: dict[str, Any], text: str) -> str:
    return f"QUICK (pipeline check, not meaningful) — {text}" if results["mode"] == "quick" else text


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bits_axis(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks([16, 32, 64, 128], ["16", "32", "64", "128"])
    ax.minorticks_off()


def head_figure(results: dict[str, Any], stage: str, title: str, path: Path) -> Path:
    """Validation top-1 and mAP over training steps, and test top-1 per query duration."""
    rows = results[stage]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, r in rows.items():
        steps = [c["step"] for c in r["curve"]]
        axes[0].plot(steps, [100 * c["val_top1"] for c in r["curve"]], marker=".", label=name)
        axes[1].plot(steps, [c["val_mAP"] for c in r["curve"]], marker=".", label=name)
    axes[0].set(xlabel="training step", ylabel="validation top-1 % (voting)", title="validation identification")
    axes[1].set(xlabel="training step", ylabel="validation mAP (moment)", title="validation retrieval")
    names = list(rows)
    durations = list(rows[names[0]]["test"]["top1"])
    width = 0.8 / len(durations)
    for j, d in enumerate(durations):
        axes[2].bar([i + j * width for i in range(len(names))], [100 * rows[n]["test"]["top1"][d] for n in names], width, label=f"{d} query")
    axes[2].set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, ha="right", fontsize=8)
    axes[2].set(ylabel="test top-1 %", title="test identification (degraded queries)")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(_title(results, title))
    return _save(fig, path)


def hashing_figures(results: dict[str, Any], out: Path) -> list[Path]:
    """mAP vs code length, precision@k at 64 bits, identification top-1 vs code length."""
    methods = results["hashing"]["methods"]
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for method, per_bits in methods.items():
        bits = sorted(per_bits, key=int)
        style = "*" if len(bits) == 1 else "o-"
        for ax, key in zip(axes, ("mAP_track", "mAP_moment"), strict=True):
            ax.plot([int(b) for b in bits], [per_bits[b][key] for b in bits], style, label=method, markersize=8)
    for ax, what in zip(axes, ("same track", "same track, within ±1.5 s"), strict=True):
        ax.set(xlabel="bits", ylabel="mAP", title=f"relevant = {what}")
        _bits_axis(ax)
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(results, "Fig. 6 — mAP of the hash layer vs KSH / ITQ / LSH on the same embeddings"))
    paths.append(_save(fig, out / "fig6_map.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method, per_bits in methods.items():
        if "64" in per_bits:
            ks = list(per_bits["64"]["precision_at_k"])
            ax.plot([int(k) for k in ks], [per_bits["64"]["precision_at_k"][k] for k in ks], "o-", label=method)
    ax.set(xscale="log", xlabel="k", ylabel="precision@k (same track)", title=_title(results, "precision@k, 64 bits"))
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "fig6_precision.png"))

    durations = list(next(iter(next(iter(methods.values())).values()))["top1"])
    fig, axes = plt.subplots(1, len(durations), figsize=(4 * len(durations), 4), sharey=True)
    for ax, d in zip(axes, durations, strict=True):
        for method, per_bits in methods.items():
            bits = sorted(per_bits, key=int)
            ax.plot([int(b) for b in bits], [100 * per_bits[b]["top1"][d] for b in bits], "*" if len(bits) == 1 else "o-",
                    label=method, markersize=8)
        ax.set(xlabel="bits", title=f"{d} queries")
        _bits_axis(ax)
    axes[0].set_ylabel("identification top-1 % (degraded)")
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(results, "Code length vs identification top-1"))
    paths.append(_save(fig, out / "bits.png"))
    return paths


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    paths = []
    if "fig4" in results:
        paths.append(head_figure(results, "fig4", "Fig. 4 — recurrent unit (RNN / GRU / LSTM, 1 or 2 layers)", out / "fig4.png"))
    if "fig5" in results:
        paths.append(head_figure(results, "fig5", "Fig. 5 — feature maps (one level, all in one map, sequence)", out / "fig5.png"))
    if "hashing" in results:
        paths.extend(hashing_figures(results, out))
    return paths
