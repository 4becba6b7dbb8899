"""Cost of the degradations (streamd/degrade.py) for on-the-fly training augmentation.

Each step runs on the same 5 s of 12 kHz music-like audio; times are CPU seconds of this process
(``time.process_time``), median of ``--repeats`` runs. "x real time" = audio seconds per CPU second.
The peer in the same run is an unavoidable cost of any augmentation pipeline: one real FFT
log-power spectrogram of the clip (what the model's front end computes anyway).

    .venv/bin/python bench/degrade.py --repeats 20
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from streamd import degrade  # noqa: E402

SR = 12000
SECONDS = 5.0


def cpu_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    clip = 0.3 * degrade.synthetic_music(int(SECONDS * SR), SR, rng)

    def spectrogram() -> None:
        frames = np.lib.stride_tricks.sliding_window_view(clip, 512)[::256] * np.hanning(512)
        np.log(np.abs(np.fft.rfft(frames)) ** 2 + 1e-6)

    steps = {
        "speed 1.03": degrade.Step("speed", {"factor": 1.03}),
        "noise pink": degrade.Step("noise", {"snr_db": 10.0, "color": "pink", "seed": 1}),
        "background": degrade.Step("background", {"snr_db": 10.0, "seed": 1}),
        "speech": degrade.Step("speech", {"snr_db": 10.0, "seed": 1}),
        "eq 3 bands": degrade.random_step("eq", np.random.default_rng(1), 1.0),
        "compress": degrade.Step("compress", {"threshold_db": -25.0, "ratio": 4.0}),
        "limit": degrade.Step("limit", {"ceiling_db": -3.0}),
        "mp3 64k @12k": degrade.Step("codec", {"codec": "mp3", "bitrate_kbps": 64, "encode_sr": 12000}),
        "mp3 128k @44.1k": degrade.Step("codec", {"codec": "mp3", "bitrate_kbps": 128, "encode_sr": 44100}),
        "aac 64k @12k": degrade.Step("codec", {"codec": "aac", "bitrate_kbps": 64, "encode_sr": 12000}),
        "aac 128k @44.1k": degrade.Step("codec", {"codec": "aac", "bitrate_kbps": 128, "encode_sr": 44100}),
        "reverb 1 s": degrade.Step("reverb", {"rt60_s": 1.0, "wet": 0.3, "seed": 1}),
        "gain": degrade.Step("gain", {"db": 3.0}),
    }
    peer = cpu_time(spectrogram, args.repeats)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print(f"# clip {SECONDS:g} s at {SR} Hz, median of {args.repeats}, CPU time")
    print(f"{'step':<18} {'ms':>8} {'x real time':>12} {'x spectrogram':>14}")
    print(f"{'(peer) spectrogram':<18} {1000 * peer:8.2f} {SECONDS / peer:12.0f} {1.0:14.1f}")
    for name, step in steps.items():
        chain = degrade.DegradationChain((step,))
        degrade.apply(clip, SR, chain)  # warm: codec delay probe, talk clip cache
        seconds = cpu_time(lambda chain=chain: degrade.apply(clip, SR, chain), args.repeats)
        print(f"{name:<18} {1000 * seconds:8.2f} {SECONDS / seconds:12.0f} {seconds / peer:14.1f}")
    chains = [degrade.random_chain(np.random.default_rng(seed), 0.7) for seed in range(args.repeats)]
    for chain in chains:
        degrade.apply(clip, SR, chain)
    start = time.process_time()
    for chain in chains:
        degrade.apply(clip, SR, chain)
    mean = (time.process_time() - start) / len(chains)
    print(f"{'random chain 0.7':<18} {1000 * mean:8.2f} {SECONDS / mean:12.0f} {mean / peer:14.1f}  (mean)")


if __name__ == "__main__":
    main()
