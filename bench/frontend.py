"""Real-time streams per CPU core for the streaming front end (resample + STFT + log-mel).

N concurrent streams send 500 ms chunks; each step pushes one chunk of every stream to a
``FrontendBank`` in batches (as a Kafka poll would deliver them). Throughput is stream-seconds of
audio per CPU second of this process (``time.process_time``), so other work on the machine slows
the wall clock more than the result (it still evicts caches: expect a few % between runs;
``--repeat`` reports the best, median and worst). The naive baseline, measured in the same run
on fewer streams, keeps 29.12 s of 12 kHz samples per stream and recomputes ``offline_logmel``
over the whole window for every chunk; it resamples with the same soxr streams.

    .venv/bin/python bench/frontend.py --streams 3000 --seconds 10 [--repeat 3]

``--compare-quality MQ`` instead measures what another soxr quality does to the log-mel frames
and to the model's codes, against HQ, on real music (the first 90 s of tracks of the corpus, at
their own rate, downmixed as the front end does); VHQ and a 0.1 dB gain change are the yardsticks.

    .venv/bin/python bench/frontend.py --compare-quality MQ --tracks 16
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

from streamd.config import Config, FrontendConfig  # noqa: E402
from streamd.frontend import FrontendBank  # noqa: E402
from streamd.frontend.audio import downmix, make_resampler, resample_whole  # noqa: E402
from streamd.frontend.framer import DEFAULT_BLOCK_FRAMES  # noqa: E402
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


def decode_native(path: str, seconds: float) -> tuple[np.ndarray, int]:
    """The first ``seconds`` of a file as float32 (n_frames, channels) at its own sample rate."""
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.rate, stream.channels
        packed = av.AudioResampler(format="flt", layout=stream.layout.name, rate=rate)
        pieces, n = [], 0
        for frame in container.decode(stream):
            for out in packed.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1, channels))
                n += pieces[-1].shape[0]
            if n >= seconds * rate:
                break
    return np.concatenate(pieces)[: int(seconds * rate)], rate


def compare_quality(quality: str, n_tracks: int, seconds: float, weights: str) -> None:
    """Log-mel frames and model codes of ``quality`` against HQ, with VHQ and +0.1 dB as yardsticks."""
    from streamd.dataset import read_manifest
    from streamd.model.api import load_weights_file

    tracks = read_manifest()
    picks = np.random.default_rng(1).choice(len(tracks), min(n_tracks, len(tracks)), replace=False)
    model = load_weights_file(weights) if os.path.exists(weights) else None
    variants = [quality, "VHQ", "HQ +0.1 dB"]
    logmel_diffs: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    bit_diffs: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    for index in picks:
        samples, rate = decode_native(str(tracks[index].path), seconds)
        mono = downmix(samples)
        hq = resample_whole(mono, rate, 12000, "HQ", last=True)
        reference = offline_logmel(torch.from_numpy(hq)).numpy()
        codes = model.codes_for_audio(hq)[0] if model else None
        for variant in variants:
            if variant == "HQ +0.1 dB":
                audio = hq * np.float32(10 ** (0.1 / 20))
            else:
                audio = resample_whole(mono, rate, 12000, variant, last=True)
            logmel_diffs[variant].append(np.abs(offline_logmel(torch.from_numpy(audio)).numpy() - reference))
            if model:
                bit_diffs[variant].append(
                    np.unpackbits(codes ^ model.codes_for_audio(audio)[0], axis=1).sum(axis=1)
                )
    print(
        f"# {len(picks)} tracks x {seconds:g} s, against soxr HQ; model {weights if model else 'not found'}"
    )
    for variant in variants:
        frames = np.concatenate(logmel_diffs[variant], axis=1)  # (n_mels, frames)
        per_band = frames.mean(axis=1)
        worst = np.argsort(per_band)[::-1][:3]
        others = np.delete(frames, worst, axis=0)
        line = (
            f"{variant:11s} log-mel |diff|: mean {frames.mean():.2e}, p99.9 {np.quantile(frames, 0.999):.3f}, "
            f"max {frames.max():.3f}; worst bands "
            + ", ".join(f"{b} (mean {per_band[b]:.3f})" for b in worst)
            + f"; other bands max {others.max():.3f}"
        )
        if model:
            bits = np.concatenate(bit_diffs[variant])
            line += (
                f" | codes: {bits.mean():.3f} of {model.bits} bits differ on average, "
                f"{np.mean(bits == 0):.1%} identical, max {bits.max()} ({len(bits)} codes)"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio seconds per stream")
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--batch", type=int, default=500, help="chunks per push (a Kafka poll)")
    parser.add_argument("--block-frames", type=int, default=DEFAULT_BLOCK_FRAMES)
    parser.add_argument("--naive-streams", type=int, default=16)
    parser.add_argument("--naive-seconds", type=float, default=5.0)
    parser.add_argument("--quality", default="HQ", choices=["QQ", "LQ", "MQ", "HQ", "VHQ"])
    parser.add_argument("--hop", type=int, default=48, help="frames per model hop taken after each step")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the bank per case (fresh bank each)")
    parser.add_argument(
        "--compare-quality", choices=["QQ", "LQ", "MQ", "VHQ"], help="accuracy mode, see above"
    )
    parser.add_argument("--tracks", type=int, default=16, help="corpus tracks for --compare-quality")
    parser.add_argument("--track-seconds", type=float, default=90.0)
    parser.add_argument("--weights", default=Config().model.weights, help="model for --compare-quality")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.compare_quality:
        compare_quality(args.compare_quality, args.tracks, args.track_seconds, args.weights)
        return
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.processor() or platform.machine()} "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, torch {torch.__version__}, numpy {np.__version__}, "
        f"soxr quality {args.quality}, {args.batch} chunks per push, {args.block_frames}-frame blocks"
    )
    cases = list(CASES) if args.case == "all" else [args.case]
    chunks = args.streams * args.seconds / CHUNK_S
    for case in cases:
        runs = [
            run_bank(
                args.streams,
                args.seconds,
                case,
                args.batch,
                args.block_frames,
                args.profile,
                args.hop,
                args.quality,
            )
            for _ in range(args.repeat)
        ]
        runs.sort(key=lambda run: run["streams_per_core"])
        ours = runs[-1]
        spread = (
            f"median {runs[len(runs) // 2]['streams_per_core']:.0f}, worst {runs[0]['streams_per_core']:.0f} of {len(runs)}; "
            if len(runs) > 1
            else ""
        )
        naive = run_naive(args.naive_streams, args.naive_seconds, case, args.quality)
        parts = run_parts(args.streams, min(args.seconds, 4.0), case, args.quality)
        print(
            f"{case:16s} streams={args.streams} seconds={args.seconds:g}: "
            f"{ours['streams_per_core']:7.0f} real-time streams/core "
            f"({spread}cpu {ours['cpu_s']:.2f} s, wall {ours['wall_s']:.2f} s, "
            f"{1e6 * ours['cpu_s'] / chunks:.1f} us/chunk) | "
            f"hop reads {1e6 * ours['read_cpu_s'] / chunks:.1f} us/chunk | "
            f"alone: downmix {parts['downmix_us']:.1f}, soxr {parts['resample_us']:.1f} us/chunk | "
            f"naive ({args.naive_streams} streams): {naive['streams_per_core']:6.1f} streams/core | "
            f"ratio {ours['streams_per_core'] / naive['streams_per_core']:.0f}x | load {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
