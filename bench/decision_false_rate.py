"""False play events per 24 h of non-catalog audio, and what each threshold costs in detection.

Feeds the decision logic (streamd.decision) with synthetic store answers (streamd.synthetic_matches):
days of chance matches for audio that is not in the catalog, and a few hundred synthetic plays
(from the start and mid-track, speed 0.97-1.03, 5-20 % misses, 3-12 % bit errors). For a sweep
of (``min_hits``, ``min_evidence``) it prints false events per 24 h, recall, median detection latency and start/end
boundary errors. The numbers are in docs/decision.md.

    .venv/bin/python bench/decision_false_rate.py --days 5
    .venv/bin/python bench/decision_false_rate.py --days 5 --tracks 20 --k 50 --codes 1000000  # stress
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from streamd.decision import DecisionParams, Tracker, decide
from streamd.synthetic_matches import Segment, SyntheticCatalog, hop_times

DAY_S = 86_400.0


def false_events(params: DecisionParams, catalog: SyntheticCatalog, days: float, k: int, stuck: float, seed: int) -> int:
    """Plays decided on ``days`` of chance matches (none is correct)."""
    rng = np.random.default_rng(seed)
    total = 0
    for day in range(int(np.ceil(days))):
        length = DAY_S * min(1.0, days - day)
        m = catalog.chance_matches(rng, hop_times(0.0, length, params.hop_s), k, stuck)
        total += len(decide(m.times, m.track_ids, m.offsets, m.distances, params))
    return total


def random_plays(catalog: SyntheticCatalog, n: int, seed: int) -> list[Segment]:
    """``n`` plays of 30-120 s separated by 20-60 s of non-catalog audio; half start mid-track."""
    rng = np.random.default_rng(seed)
    segments, t = [], 30.0
    for _ in range(n):
        track = int(rng.integers(catalog.n_tracks))
        length = float(rng.uniform(30.0, 120.0))
        mid = rng.random() < 0.5
        offset = float(rng.uniform(0.0, catalog.durations[track] - length)) if mid else 0.0
        segments.append(Segment(
            track, t, t + length, track_offset_s=offset, speed=float(rng.uniform(0.97, 1.03)),
            hit_prob=float(rng.uniform(0.8, 0.95)), bit_error=float(rng.uniform(0.03, 0.12)),
            context_s=float(rng.uniform(1.0, 3.0)),
        ))  # fmt: skip
        t += length + float(rng.uniform(20.0, 60.0))
    return segments


def detection(params: DecisionParams, catalog: SyntheticCatalog, segments: list[Segment], k: int, seed: int) -> dict:
    """Recall, detection latency and boundary errors on synthetic plays (matched by track + overlap)."""
    rng = np.random.default_rng(seed)
    m = catalog.matches(rng, hop_times(0.0, segments[-1].end_s + 30.0, params.hop_s), segments, k=k)
    plays = decide(m.times, m.track_ids, m.offsets, m.distances, params)
    latency, start_full, start_mid, end_err, found = [], [], [], [], 0
    for seg in segments:
        tid = catalog.track_ids[seg.track]
        hit = [p for p in plays if p.track_id == tid and p.start_s < seg.end_s and p.end_s > seg.start_s]
        if hit:
            found += 1
            latency.append(hit[0].detected_s - seg.start_s)
            (start_mid if seg.track_offset_s > 0 else start_full).append(abs(hit[0].start_s - seg.start_s))
            end_err.append(hit[-1].end_s - seg.end_s)
    return {
        "recall": found / len(segments),
        "extra": len(plays) - found,
        "latency_p50": float(np.median(latency)),
        "start_full_p95": float(np.percentile(start_full, 95)),
        "start_mid_p95": float(np.percentile(start_mid, 95)),
        "end_p95": float(np.percentile(np.abs(end_err), 95)),
        "end_median": float(np.median(end_err)),
    }


def tracker_cost(catalog: SyntheticCatalog, streams: int, hops: int, k: int, seed: int) -> dict:
    """Seconds per stream-hop of ``Tracker.update`` for ``streams`` streams at once, and of a floor
    that only converts the same arrays to Python rows (what any per-stream Python loop pays)."""
    rng = np.random.default_rng(seed)
    ids = [f"stream-{i}" for i in range(streams)]
    length = 300.0
    segments = random_plays(catalog, 3, seed)
    per_stream = [catalog.matches(rng, hop_times(0.0, length), segments[: i % 2 * 3], k=k) for i in range(8)]
    tracker = Tracker()
    spent = floor = 0.0
    for hop in range(hops):
        rows = [per_stream[i % 8] for i in range(streams)]
        times = np.full(streams, rows[0].times[hop])
        tids = np.stack([m.track_ids[hop] for m in rows])
        offsets = np.stack([m.offsets[hop] for m in rows])
        distances = np.stack([m.distances[hop] for m in rows])
        t0 = time.perf_counter()
        tracker.update(ids, times, tids, offsets, distances)
        t1 = time.perf_counter()
        for _ in zip(ids, times.tolist(), tids.tolist(), offsets.tolist(), distances.tolist(), strict=True):
            pass
        t2 = time.perf_counter()
        spent += t1 - t0
        floor += t2 - t1
    return {"update_us": spent / (streams * hops) * 1e6, "floor_us": floor / (streams * hops) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=10.0, help="simulated days of non-catalog audio per setting")
    parser.add_argument("--codes", type=int, nargs="+", default=[40_000, 1_000_000], help="catalog sizes (codes)")
    parser.add_argument("--settings", nargs="+", default=["2:1.25", "3:1.875", "3:2.5", "4:2.5", "5:3.125"],
                        help="min_hits:min_evidence pairs to compare")
    parser.add_argument("--k", type=int, default=10, help="matches per hop (store top-k)")
    parser.add_argument("--tracks", type=int, default=200, help="tracks in the catalog (fewer = more chance collisions)")
    parser.add_argument("--min-confidence", type=float, default=None, help="override the confidence gate")
    parser.add_argument("--stuck", type=float, default=0.3, help="probability a chance match repeats at the next hop")
    parser.add_argument("--plays", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--streams", type=int, default=1000, help="streams per update() for the cost measurement")
    args = parser.parse_args()

    cost = tracker_cost(SyntheticCatalog(n_tracks=args.tracks, seed=args.seed), args.streams, 120, args.k, args.seed)
    print(
        f"Tracker.update, {args.streams} streams per call (half playing, half chance audio), k={args.k}: "
        f"{cost['update_us']:.1f} us per stream-hop; converting the arrays to rows alone: "
        f"{cost['floor_us']:.1f} us ({cost['update_us'] / cost['floor_us']:.1f}x); "
        f"{args.streams} streams at a {DecisionParams().hop_s} s hop use "
        f"{cost['update_us'] * args.streams / DecisionParams().hop_s / 1e4:.1f} % of a core"
    )

    base = DecisionParams()
    if args.min_confidence is not None:
        base = dataclasses.replace(base, min_confidence=args.min_confidence)
    print(f"params: {base}")
    print(f"k={args.k} tracks={args.tracks} stuck={args.stuck} days={args.days} plays={args.plays}")
    print(
        "     codes min_hits min_evidence | false/24h | recall extra latency_p50 "
        "start_p95(from 0, mid-track) end_p95 end_median | s"
    )
    for n_codes in args.codes:
        catalog = SyntheticCatalog(n_tracks=args.tracks, n_codes=n_codes, seed=args.seed)
        segments = random_plays(catalog, args.plays, args.seed + 1)
        for setting in args.settings:
            min_hits, min_evidence = setting.split(":")
            params = dataclasses.replace(base, min_hits=int(min_hits), min_evidence=float(min_evidence))
            t0 = time.perf_counter()
            false = false_events(params, catalog, args.days, args.k, args.stuck, args.seed + 2)
            det = detection(params, catalog, segments, args.k, args.seed + 3)
            print(
                f"{n_codes:>10} {params.min_hits:>8} {params.min_evidence:>12.2f} | {false / args.days:>9.2f} | "
                f"{det['recall']:>6.3f} {det['extra']:>5} {det['latency_p50']:>11.2f} "
                f"{det['start_full_p95']:>15.2f} {det['start_mid_p95']:>12.2f} "
                f"{det['end_p95']:>7.2f} {det['end_median']:>10.2f} | {time.perf_counter() - t0:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
