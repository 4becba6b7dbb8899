"""Hash-model inference throughput: real-time streams per 2-core CPU at the daemon's 1.024 s hop.

For each model variant, in one run:
- incremental: ``StreamingEncoder.advance`` over B streams per call (the daemon's path): the
  trunk sees 48 new frames + 2 cached columns per block, the recurrent head its 27-step ring;
- catch-up: ``StreamingEncoder.advance_hops`` over B/8 streams with 8 hops each (a backlog:
  warm-up, ``streamd recognize``), per stream-hop;
- full window: ``net(windows)`` over B 1366-frame windows, what a daemon without the
  streaming cache would run every hop;
and the analytic cost (parameters, MFLOP per hop and per full window).

Each stream needs one stream-hop of compute per 1.024 s, so the streams a CPU holds in real time
= B × 1.024 s / (seconds per call of B streams). By default the clock is this process's CPU time
with one torch thread, and 2 cores are credited with twice one core's streams (the daemon can run
one inference thread per core); ``--wall --threads 2`` measures the 2-thread wall time instead,
which is only meaningful on a quiet machine. The best of ``--repeats`` calls is reported.

    .venv/bin/python bench/model.py [--threads 2] [--batch 1024] [--repeats 5] [--weights models/streamd-hash128.safetensors]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
import types
from dataclasses import replace

import torch

from streamd.model.api import Fingerprinter, load_weights_file
from streamd.model.network import ArchConfig, HashNet
from streamd.model.streaming import CATCH_UP_HOPS

HOP_S = 48 * 256 / 12000


def conv_mflop(arch: ArchConfig, time_columns_in: int) -> float:
    """Multiply-adds ×2 of the conv trunk for an input of ``time_columns_in`` frames."""
    total, t = 0.0, time_columns_in
    bins = arch.n_mels
    for b in range(len(arch.widths)):
        c_in, c_out = arch.channels(b), arch.channels(b + 1)
        out_bins = (bins - 1) // arch.freq_strides[b] + 1
        total += 2 * 9 * c_in * c_out * out_bins * (t - 2)
        bins, t = out_bins // arch.freq_pools[b], (t - 2) // arch.time_pools[b]
    return total / 1e6


def head_mflop(arch: ArchConfig) -> float:
    levels, steps = len(arch.levels), arch.n_steps
    lstm1 = 2 * 4 * arch.lstm1_hidden * (arch.feature_dim + arch.lstm1_hidden) * steps * levels
    lstm2 = 2 * 4 * arch.lstm2_hidden * (arch.lstm1_hidden + arch.lstm2_hidden) * levels
    return (lstm1 + lstm2 + 2 * arch.lstm2_hidden * arch.bits) / 1e6


def projection_mflop_per_hop(arch: ArchConfig) -> float:
    return sum(2 * arch.channels(level) * arch.common_freq * arch.feature_dim for level in arch.levels) / 1e6


def cost(arch: ArchConfig) -> dict[str, float]:
    per_hop_trunk = sum(
        2 * 9 * arch.channels(b) * arch.channels(b + 1) * ((arch.freq_bins(b) - 1) // arch.freq_strides[b] + 1) * arch.columns_per_hop(b + 1) * arch.time_pools[b]
        for b in range(len(arch.widths))
    ) / 1e6
    net = HashNet(arch)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "trunk_mflop_per_hop": round(per_hop_trunk, 2),
        "head_mflop_per_hop": round(head_mflop(arch) + projection_mflop_per_hop(arch), 2),
        "mflop_per_stream_hop": round(per_hop_trunk + head_mflop(arch) + projection_mflop_per_hop(arch), 2),
        "mflop_full_window": round(conv_mflop(arch, arch.input_frames) + head_mflop(arch) + arch.n_steps * projection_mflop_per_hop(arch), 1),
    }


def _time(fn, repeats: int) -> float:
    """Best-of-``repeats`` seconds per call: CPU time of this process (robust on a shared machine,
    where wall time mostly measures other people's jobs) or wall time with ``--wall``."""
    clock = time.perf_counter if WALL else time.process_time
    fn()  # warm-up (allocations, oneDNN primitive cache)
    best = float("inf")
    for _ in range(repeats):
        started = clock()
        fn()
        best = min(best, clock() - started)
    return best


WALL = False


def _aten_pool_forward(block, x: torch.Tensor) -> torch.Tensor:
    """FusedConvBlock.forward with ATen's max-pool instead of ``separable_max_pool`` (the peer)."""
    return torch.nn.functional.relu(torch.nn.functional.max_pool2d(block.conv(x.contiguous(memory_format=block.layout)), block.pool))


def measure(fp: Fingerprinter, batch: int, repeats: int, full_batch: int) -> dict[str, float]:
    arch = fp.arch
    encoder = fp.streaming(batch)
    slots = torch.arange(batch)
    frames = torch.randn(batch, arch.n_mels, arch.hop_frames) * 3 - 6
    incremental = _time(lambda: encoder.advance(slots, frames), repeats)
    k = CATCH_UP_HOPS  # catch-up: batch/k streams, k hops each, in one advance_hops call
    catch_up_slots = torch.arange(batch // k)
    catch_up_frames = torch.randn(batch // k, arch.n_mels, k * arch.hop_frames) * 3 - 6
    catch_up = _time(lambda: encoder.advance_hops(catch_up_slots, catch_up_frames), repeats)
    windows = torch.randn(full_batch, arch.n_mels, arch.window_frames) * 3 - 6
    full = _time(lambda: fp.codes_for_logmel(windows), max(1, repeats // 2))
    cores = 1 if WALL else 2  # CPU time: one core's worth of work; two cores hold twice as many
    return {
        "incremental_ms_per_call": round(incremental * 1e3, 1),
        "incremental_us_per_stream_hop": round(incremental / batch * 1e6, 1),
        "incremental_streams_2cores": int(cores * batch * HOP_S / incremental),
        "catch_up_us_per_stream_hop": round(catch_up / (batch // k * k) * 1e6, 1),
        "full_window_ms_per_stream_hop": round(full / full_batch * 1e3, 2),
        "full_window_streams_2cores": int(cores * full_batch * HOP_S / full),
        "speedup": round((full / full_batch) / (incremental / batch), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is summed over them)")
    parser.add_argument("--batch", type=int, default=1024, help="streams per advance() call")
    parser.add_argument("--full-batch", type=int, default=64, help="windows per full-window call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", default="models/streamd-hash128.safetensors")
    parser.add_argument("--json", default="")
    parser.add_argument("--wall", action="store_true", help="measure wall time instead of CPU time")
    args = parser.parse_args()
    global WALL
    WALL = args.wall
    torch.set_num_threads(args.threads)

    default = ArchConfig()
    variants: dict[str, Fingerprinter] = {}
    try:
        variants["shipped (BN folded, channels-last)"] = load_weights_file(args.weights)
    except Exception as exc:  # no weights yet: measure the same architecture untrained
        print(f"(no weights: {exc}; using an untrained default model)")
        variants["default untrained (BN folded, channels-last)"] = Fingerprinter(HashNet(default))
    nchw = Fingerprinter(HashNet(default))
    nchw.net = HashNet(default).fused_for_inference(channels_last=False)
    variants["default, BN folded, NCHW layout"] = nchw
    aten_pool = copy.deepcopy(next(iter(variants.values())))
    for block in aten_pool.net.blocks:
        block.forward = types.MethodType(_aten_pool_forward, block)
    variants["same, ATen max_pool2d (before session 4)"] = aten_pool
    variants["default, unfused BN, NCHW layout"] = Fingerprinter(HashNet(default), fuse=False)
    paper_widths = replace(default, widths=(32, 64, 128, 128, 256), freq_strides=(1, 1, 1, 1, 1), freq_pools=(2, 2, 2, 3, 4))
    variants["peer: paper-width FCN-5 32-64-128-128-256"] = Fingerprinter(HashNet(paper_widths))

    rows = []
    for name, fp in variants.items():
        row = {"model": name, **cost(fp.arch), **measure(fp, args.batch, args.repeats, args.full_batch)}
        rows.append(row)
        print(json.dumps(row))
    header = ("model", "params", "mflop_per_stream_hop", "mflop_full_window", "incremental_us_per_stream_hop",
              "incremental_streams_2cores", "catch_up_us_per_stream_hop", "full_window_streams_2cores", "speedup")
    clock = "wall time" if WALL else "CPU time (x2 for 2 cores)"
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, {clock}, "
          f"batch {args.batch} streams per call, hop {HOP_S:.3f} s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "batch": args.batch, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
