"""Real-time streams per CPU core for the streaming front end (resample + STFT + log-mel).

N concurrent streams send 500 ms chunks; each step pushes one chunk of every stream to a
``FrontendBank`` in batches (as a Kafka poll would deliver them). Throughput is stream-seconds of
audio per CPU second of this process (``time.process_time``), so other work on the machine slows
the wall clock more than the result. The naive baseline, measured in the same run on fewer
streams, keeps 29.12 s of 12 kHz samples per stream and recomputes ``offline_logmel`` over the
whole window for every chunk; it resamples with the same soxr streams.

    .venv/bin/python bench/frontend.py --streams 3000 --seconds 10
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from streamd.config import FrontendConfig  # noqa: E402
from streamd.frontend import FrontendBank  # noqa: E402
from streamd.frontend.audio import downmix, make_resampler  # noqa: E402
from streamd.melspec import offline_logmel  # noqa: E402
from streamd.protocol import Chunk  # noqa: E402

CHUNK_S = 0.5
CASES = {"44k-stereo-s16": (44100, 2, "s16le"), "12k-mono-s16": (12000, 1, "s16le")}


def chunk_pool(rate: int, channels: int, n_distinct: int, seed: int = 0) -> list[np.ndarray]:
    """Distinct 500 ms chunks of music-like audio (tones plus noise) quantised like s16 PCM."""
    rng = np.random.default_rng(seed)
    n = int(rate * CHUNK_S)
    t = np.arange(n) / rate
    pool = []
    for _ in range(n_distinct):
        tones = sum(np.sin(2 * np.pi * rng.uniform(50, 5000) * t + rng.uniform(0, 6)) for _ in range(6))
        audio = 0.05 * tones[:, None] + 0.05 * rng.standard_normal((n, channels))
        pool.append((np.round(audio * 32767) / 32768).astype(np.float32))
    return pool


def run_bank(
    n_streams: int,
    seconds: float,
    case: str,
    batch: int,
    block_frames: int,
    profile: bool,
    hop: int,
    quality: str,
) -> dict:
    rate, channels, fmt = CASES[case]
    pool = chunk_pool(rate, channels, 32)
    bank = FrontendBank(FrontendConfig(resample_quality=quality), block_frames=block_frames)
    steps = int(seconds / CHUNK_S)
    ids = [f"{case}-{i}" for i in range(n_streams)]
    chunk_ms = int(CHUNK_S * 1000)
    cpu = wall = read_cpu = 0.0
    frames = 0
    profiler = cProfile.Profile() if profile else None
    for step in range(steps + 1):  # step 0 starts the streams and is not timed
        chunks = [
            Chunk(sid, step, step * chunk_ms, rate, channels, fmt, pool[(i + step) % len(pool)])
            for i, sid in enumerate(ids)
        ]
        c0, w0 = time.process_time(), time.perf_counter()
        if profiler and step:
            profiler.enable()
        for begin in range(0, len(chunks), batch):
            frames += bank.push(chunks[begin : begin + batch])
        if profiler:
            profiler.disable()
        if step:
            cpu += time.process_time() - c0
            wall += time.perf_counter() - w0
        c0 = time.process_time()
        ready = bank.ready(hop)
        if ready:
            bank.take_hop(ready, hop)
        if step:
            read_cpu += time.process_time() - c0
    assert sum(bank.counters.values()) == bank.counters["in_order"] + bank.counters["stream_start"], (
        bank.counters
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)
    audio_s = n_streams * steps * CHUNK_S
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "streams_per_core": audio_s / cpu,
        "frames": frames,
        "read_cpu_s": read_cpu,
    }


def run_naive(n_streams: int, seconds: float, case: str, quality: str) -> dict:
    """Recompute the whole 29.12 s window of every stream for every chunk."""
    rate, channels, _ = CASES[case]
    pool = chunk_pool(rate, channels, 32)
    window_samples = (FrontendConfig().window_frames - 1) * 256 + 512
    buffers = [np.zeros(window_samples, dtype=np.float32) for _ in range(n_streams)]
    resamplers = [make_resampler(rate, 12000, quality) for _ in range(n_streams)]
    steps = int(seconds / CHUNK_S)
    cpu = wall = 0.0
    for step in range(steps):
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(n_streams):
            mono = downmix(pool[(i + step) % len(pool)])
            audio = mono if resamplers[i] is None else resamplers[i].resample_chunk(mono)
            buf = buffers[i]
            buf[: -len(audio)] = buf[len(audio) :]
            buf[-len(audio) :] = audio
            offline_logmel(torch.from_numpy(buf))
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    return {"cpu_s": cpu, "wall_s": wall, "streams_per_core": n_streams * steps * CHUNK_S / cpu}


def run_parts(n_streams: int, seconds: float, case: str, quality: str) -> dict:
    """CPU µs per chunk of the two per-chunk steps before framing: downmix and soxr alone."""
    rate, channels, _ = CASES[case]
    pool = chunk_pool(rate, channels, 32)
    resamplers = [make_resampler(rate, 12000, quality) for _ in range(n_streams)]
    steps = int(seconds / CHUNK_S)
    downmix_cpu = resample_cpu = 0.0
    for step in range(steps + 1):
        c0 = time.process_time()
        monos = [downmix(pool[(i + step) % len(pool)]) for i in range(n_streams)]
        c1 = time.process_time()
        if resamplers[0] is not None:
            for resampler, mono in zip(resamplers, monos, strict=True):
                resampler.resample_chunk(mono)
        c2 = time.process_time()
        if step:
            downmix_cpu += c1 - c0
            resample_cpu += c2 - c1
    chunks = n_streams * steps
    return {"downmix_us": 1e6 * downmix_cpu / chunks, "resample_us": 1e6 * resample_cpu / chunks}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio seconds per stream")
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--batch", type=int, default=500, help="chunks per push (a Kafka poll)")
    parser.add_argument("--block-frames", type=int, default=1024)
    parser.add_argument("--naive-streams", type=int, default=16)
    parser.add_argument("--naive-seconds", type=float, default=5.0)
    parser.add_argument("--quality", default="HQ", choices=["QQ", "LQ", "MQ", "HQ", "VHQ"])
    parser.add_argument("--hop", type=int, default=48, help="frames per model hop taken after each step")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.processor() or platform.machine()} "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, torch {torch.__version__}, numpy {np.__version__}, "
        f"soxr quality {args.quality}, {args.batch} chunks per push"
    )
    cases = list(CASES) if args.case == "all" else [args.case]
    for case in cases:
        ours = run_bank(
            args.streams,
            args.seconds,
            case,
            args.batch,
            args.block_frames,
            args.profile,
            args.hop,
            args.quality,
        )
        naive = run_naive(args.naive_streams, args.naive_seconds, case, args.quality)
        parts = run_parts(args.streams, min(args.seconds, 4.0), case, args.quality)
        print(
            f"{case:16s} streams={args.streams} seconds={args.seconds:g}: "
            f"{ours['streams_per_core']:7.0f} real-time streams/core "
            f"(cpu {ours['cpu_s']:.2f} s, wall {ours['wall_s']:.2f} s, "
            f"{1e6 * ours['cpu_s'] / (args.streams * args.seconds / CHUNK_S):.1f} us/chunk) | "
            f"hop reads {1e6 * ours['read_cpu_s'] / (args.streams * args.seconds / CHUNK_S):.1f} us/chunk | "
            f"alone: downmix {parts['downmix_us']:.1f}, soxr {parts['resample_us']:.1f} us/chunk | "
            f"naive ({args.naive_streams} streams): {naive['streams_per_core']:6.1f} streams/core | "
            f"ratio {ours['streams_per_core'] / naive['streams_per_core']:.0f}x"
        )


if __name__ == "__main__":
    main()
