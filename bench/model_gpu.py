"""Hash-model inference throughput on a GPU: real-time streams per GPU at the daemon's 1.024 s hop.

One run measures, for each numeric precision of the shipped model and a sweep of batch sizes:

- incremental: ``StreamingEncoder.advance`` over B streams per call (the daemon's path, codes
  packed and copied back to the host);
- catch-up: ``advance_hops`` over B/8 streams with 8 hops each, per stream-hop;
- full window: the network over B 1366-frame windows, what a daemon without the streaming cache
  would run every hop;

and, before any timing, how exactly each precision reproduces the float64 CPU codes, on real
music (log-mel of test-split tracks made by ``prepare``) and on random log-mel: the share of code
bits that differ from the reference, for the incremental and the full-window path.

Streams a GPU holds in real time = B × 1.024 s / (wall seconds per call of B streams); the best of
``--repeats`` calls after warm-up, with the GPU synchronised around each call.

    python bench/model_gpu.py prepare --out .gpu/real_logmel.npy      # here, needs the corpus
    python bench/model_gpu.py run --real .gpu/real_logmel.npy --json $OUT/model_gpu.json   # there
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import HOP_S, cost  # noqa: E402  (bench/model.py: the CPU benchmark's analytic cost)

from streamd.model.api import Fingerprinter, load_weights_file  # noqa: E402
from streamd.model.network import LOG_FLOOR  # noqa: E402
from streamd.model.streaming import CATCH_UP_HOPS  # noqa: E402

PRECISIONS = {"fp32 (no TF32)": (torch.float32, False), "fp32 + TF32": (torch.float32, True),
              "bf16": (torch.bfloat16, True), "fp16": (torch.float16, True)}


def prepare(out: Path, tracks: int, seconds: float) -> None:
    """Log-mel (tracks, 96, frames) float16 of ``seconds`` from 30 s into the first ``tracks`` test-split
    tracks that long."""
    from streamd.dataset import load_audio, load_split
    from streamd.melspec import MelParams, offline_logmel

    mel = MelParams()
    split = load_split()
    pieces = []
    start, length = int(30 * mel.sample_rate), int(seconds * mel.sample_rate)
    for track in split.test:
        audio = load_audio(track)
        if len(audio) >= start + length:
            pieces.append(offline_logmel(torch.as_tensor(audio[start : start + length]), mel).numpy())
        if len(pieces) == tracks:
            break
    frames = min(p.shape[-1] for p in pieces)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.stack([p[:, :frames] for p in pieces]).astype(np.float16))
    print(f"{out}: {len(pieces)} tracks × {frames} frames")


def _with_precision(fp: Fingerprinter, dtype: torch.dtype, device: str) -> Fingerprinter:
    """``fp`` (freshly loaded) moved to ``device`` in ``dtype``."""
    fp.net = fp.net.to(device=device, dtype=dtype)
    fp.device, fp.dtype = torch.device(device), dtype
    return fp


def _bits(relaxed: torch.Tensor) -> np.ndarray:
    return (relaxed.float().cpu().numpy() > 0)


def _windows(streams: torch.Tensor, hops: int, window_frames: int) -> torch.Tensor:
    """The full window ending after ``hops`` hops of each stream, silence-padded before its start."""
    history = streams[..., : hops * 48]
    if history.shape[-1] >= window_frames:
        return history[..., -window_frames:]
    return torch.nn.functional.pad(history, (window_frames - history.shape[-1], 0), value=LOG_FLOOR)


def reference_bits(reference: Fingerprinter, streams: torch.Tensor, checked: list[int]) -> np.ndarray:
    """Float64 CPU full-window code bits of the windows ending at the ``checked`` hops."""
    return np.concatenate([_bits(reference.relaxed_for_logmel(_windows(streams, hop, reference.window_frames)))
                           for hop in checked])


def agreement(candidate: Fingerprinter, streams: torch.Tensor, checked: list[int], ref_bits: np.ndarray) -> dict:
    """Share of code bits where the candidate's incremental and full-window codes differ from the
    reference's (:func:`reference_bits`), over windows ending at the ``checked`` hops."""
    streams = streams.to(candidate.dtype)
    encoder = candidate.streaming(streams.shape[0])
    slots = torch.arange(streams.shape[0])
    incremental, full = [], []
    for hop in range(1, max(checked) + 1):
        relaxed = encoder.advance_relaxed(slots, streams[..., (hop - 1) * 48 : hop * 48])
        if hop in checked:
            incremental.append(_bits(relaxed))
            full.append(_bits(candidate.relaxed_for_logmel(_windows(streams, hop, candidate.window_frames))))
    return {"incremental_bits_differing": float((np.concatenate(incremental) != ref_bits).mean()),
            "full_window_bits_differing": float((np.concatenate(full) != ref_bits).mean()),
            "codes_compared": int(ref_bits.shape[0])}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats: int) -> float:
    fn()
    _sync()
    best = float("inf")
    for _ in range(repeats):
        _sync()
        started = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - started)
    return best


def throughput(fp: Fingerprinter, batch: int, repeats: int) -> dict:
    arch = fp.arch
    encoder = fp.streaming(batch)
    slots = torch.arange(batch, device=fp.device)
    frames = (torch.randn(batch, arch.n_mels, arch.hop_frames, device=fp.device) * 3 - 6).to(fp.dtype)
    incremental = _timed(lambda: encoder.advance(slots, frames), repeats)
    on_device = _timed(lambda: encoder.advance_relaxed(slots, frames), repeats)
    k = CATCH_UP_HOPS
    catch_up_frames = (torch.randn(batch // k, arch.n_mels, k * arch.hop_frames, device=fp.device) * 3 - 6).to(fp.dtype)
    catch_up = _timed(lambda: encoder.advance_hops(slots[: batch // k], catch_up_frames), repeats)
    full_batch = min(batch, 4096)
    windows = (torch.randn(full_batch, arch.n_mels, arch.window_frames, device=fp.device) * 3 - 6).to(fp.dtype)
    with torch.inference_mode():
        full = _timed(lambda: fp.net(windows), max(1, repeats // 2))
    return {
        "batch": batch,
        "incremental_ms_per_call": round(incremental * 1e3, 2),
        "incremental_on_device_ms": round(on_device * 1e3, 2),
        "incremental_us_per_stream_hop": round(incremental / batch * 1e6, 3),
        "incremental_streams": int(batch * HOP_S / incremental),
        "catch_up_us_per_stream_hop": round(catch_up / (batch // k * k) * 1e6, 3),
        "full_window_us_per_stream_hop": round(full / full_batch * 1e6, 2),
        "full_window_streams": int(full_batch * HOP_S / full),
        "speedup": round((full / full_batch) / (incremental / batch), 1),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if fp.device.type == "cuda" else None,
    }


def run(args: argparse.Namespace) -> None:
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    print(f"{name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {platform.python_version()}", flush=True)
    reference = load_weights_file(args.weights)
    reference.net = reference.net.double()
    reference.dtype = torch.float64
    generator = torch.Generator().manual_seed(0)
    inputs = {"random log-mel": torch.randn(64, 96, 40 * 48, generator=generator, dtype=torch.float64) * 3 - 6}
    if args.real:
        real = torch.as_tensor(np.load(args.real).astype(np.float64))
        inputs["real music"] = real[..., : (real.shape[-1] // 48) * 48]
    checks = {}
    for input_name, streams in inputs.items():
        checked = sorted({3, 5, 10, streams.shape[-1] // 96, streams.shape[-1] // 48})
        checks[input_name] = (streams, checked, reference_bits(reference, streams, checked))
    result = {"device": name, "torch": torch.__version__, "hop_s": HOP_S, **cost(reference.arch), "precisions": {}}
    for label in args.precisions:
        dtype, tf32 = PRECISIONS[label]
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        fp = _with_precision(load_weights_file(args.weights), dtype, args.device)
        entry = {"agreement": {}, "throughput": []}
        for input_name, (streams, checked, ref_bits) in checks.items():
            entry["agreement"][input_name] = agreement(fp, streams, checked, ref_bits)
        print(label, json.dumps(entry["agreement"]), flush=True)
        for batch in args.batches:
            if args.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                row = throughput(fp, batch, args.repeats)
            except torch.OutOfMemoryError:
                print(f"{label} batch {batch}: out of memory", flush=True)
                break
            entry["throughput"].append(row)
            print(label, json.dumps(row), flush=True)
        result["precisions"][label] = entry
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    header = ("batch", "incremental_ms_per_call", "incremental_streams", "catch_up_us_per_stream_hop",
              "full_window_streams", "speedup", "peak_memory_gb")
    for label, entry in result["precisions"].items():
        print(f"\n{label}: {json.dumps(entry['agreement'])}")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in entry["throughput"]:
            print("| " + " | ".join(str(row[h]) for h in header) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="log-mel of real test-split music for the agreement check")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--tracks", type=int, default=16)
    prep.add_argument("--seconds", type=float, default=45.0)
    go = sub.add_parser("run", help="measure on the CUDA device")
    go.add_argument("--weights", default="models/streamd-hash128.safetensors")
    go.add_argument("--real", default="", help="log-mel .npy from 'prepare'")
    go.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    go.add_argument("--repeats", type=int, default=5)
    go.add_argument("--json", default="")
    go.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out")
    go.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.tracks, args.seconds)
    else:
        run(args)


if __name__ == "__main__":
    main()
