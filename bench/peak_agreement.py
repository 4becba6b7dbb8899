"""How well spectral peaks tell a play's true alignment from chance (docs/decision.md, "Peaks").

For every catalog play >= 30 s of a simulated set (bench/accuracy.sh makes them), the stream's
peaks of the 4 s before a time 3-8 s into the play are compared (streamd.peaks.PeakChecker, as the
decision logic asks) with the track's peaks at the true offset plus a line error drawn from
N(0, 0.4 s); then random stream times are compared with random catalog tracks at random offsets
(chance). Prints the agreement quantiles per station and the share of true checks that pass the
decision threshold (``daemon.peak_min_agreement``).

    .venv/bin/python bench/peak_agreement.py ~/.cache/streamd/accuracy/sim-4x1h-s2026 --chance 500

``--cost`` also times what one check costs the daemon (one thread, process CPU time): extracting
the peaks of a stream's 4 s window from its log-mel frames (with the margins the pipeline reads,
streamd.daemon.pipeline) and one agreement over the lags and speeds the decision logic searches.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from streamd.audio import load_audio
from streamd.config import load_config
from streamd.daemon.pipeline import PEAK_MARGIN_FRAMES
from streamd.indexer import track_peaks
from streamd.melspec import offline_logmel
from streamd.peaks import PeakChecker, agreement, extract, recording_query

SECONDS_IN = (3, 4, 5, 6, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set_dir", type=Path, help="a simulated set (truth.json + station files)")
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "streamd" / "corpus")
    parser.add_argument("--chance", type=int, default=500, help="chance checks per station")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost", action="store_true", help="also time one check's extraction and agreement")
    args = parser.parse_args()
    threshold = load_config().daemon.peak_min_agreement
    truth = json.loads((args.set_dir / "truth.json").read_text())
    manifest = {row.split(",")[0]: row.split(",")[2] for row in (args.corpus / "manifest.csv").read_text().splitlines()[1:]}
    tracks = sorted({s["track_id"] for s in truth["segments"] if s["kind"] == "catalog"})
    reference = {tid: track_peaks(load_audio(args.corpus / manifest[tid], 12000)) for tid in tracks}
    rng = np.random.default_rng(args.seed)
    print(f"agreement (share of the stream's peaks on the track's; decision threshold {threshold})")
    for station in truth["stations"]:
        stream = station["stream"]
        audio = load_audio(args.set_dir / station["file"], 12000)
        checker = PeakChecker(recording_query({stream: track_peaks(audio)}), reference.get)
        true: dict[int, list[float]] = {}
        for seg in truth["segments"]:
            if seg["stream"] != stream or seg["kind"] != "catalog" or seg["end_s"] - seg["start_s"] < 30:
                continue
            for k in SECONDS_IN:
                offset = seg["offset_s"] + k * seg["speed"] + rng.normal(0.0, 0.4)
                value = checker.agreement(stream, seg["start_s"] + k, seg["track_id"], offset)
                if value is not None:
                    true.setdefault(k, []).append(value)
        chance = []
        duration = len(audio) / 12000
        for _ in range(args.chance):
            track = tracks[rng.integers(len(tracks))]
            value = checker.agreement(stream, rng.uniform(5.0, duration), track,
                                      rng.uniform(4.0, reference[track][-1, 0] / 46.875))  # fmt: skip
            if value is not None:
                chance.append(value)
        print(f"{stream} [{station['chain']['describe']}]")
        for k, values in sorted(true.items()):
            v = np.array(values)
            print(f"  true, {k} s into the play: n={len(v):3d}  p10/p25/p50 {np.percentile(v, [10, 25, 50]).round(2)}"
                  f"  pass {np.mean(v >= threshold):.0%}")  # fmt: skip
        c = np.array(chance)
        print(f"  chance: n={len(c)}  p50/p99/p99.9/max {np.percentile(c, [50, 99, 99.9, 100]).round(3)}"
              f"  pass {np.mean(c >= threshold):.2%}")  # fmt: skip
        if args.cost:
            time_one_check(audio, reference[tracks[0]], checker, rng)


def time_one_check(audio: np.ndarray, reference: np.ndarray, checker: PeakChecker, rng: np.random.Generator,
                   repeats: int = 300) -> None:  # fmt: skip
    """CPU ms of the two parts of one check, at random stream times (see the module docstring)."""
    torch.set_num_threads(1)
    frames = offline_logmel(torch.from_numpy(audio[: 600 * 12000])).numpy()
    window = int(round(checker.window_s * checker.params.frames_per_second)) + 2 * PEAK_MARGIN_FRAMES
    starts = rng.integers(0, frames.shape[1] - window, repeats)
    started = time.process_time()
    queries = [extract(frames[:, a : a + window], first_frame=int(a)) for a in starts]
    extract_ms = (time.process_time() - started) / repeats * 1e3
    ends = rng.uniform(300, reference[-1, 0] - checker.max_lag, repeats)
    started = time.process_time()
    for query, start, end in zip(queries, starts, ends, strict=True):
        agreement(query, checker.near(reference, float(end)), int(start) + window - PEAK_MARGIN_FRAMES, float(end),
                  checker.max_lag, checker.speeds)  # fmt: skip
    agreement_ms = (time.process_time() - started) / repeats * 1e3
    print(f"  cost: extract {extract_ms:.3f} ms per 4 s window, agreement {agreement_ms:.3f} ms per check")


if __name__ == "__main__":
    main()
