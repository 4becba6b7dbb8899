"""Where the boundary errors of a scored run come from: each matched play's start and end error,
grouped by what the truth has at that boundary (a DJ talking within 10 s, the length of the
crossfade with the neighbouring item, a play from the track's beginning or from its middle).

    .venv/bin/python bench/boundary_causes.py --truth SIM_DIR --events EVENTS.jsonl [--json OUT]

Also prints the p95 a crossfade-tolerant scorer would give (an error of 0 anywhere inside the
crossfade at that boundary, else the distance to its nearer edge) beside the strict one
(``streamd score``: the truth counts a crossfade from its first sample), and the worst boundaries.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from streamd.eval.score import match, parse_events, plays_from_truth

TALK_RADIUS_S = 10.0


@dataclass(frozen=True)
class Boundary:
    side: str  # "start" or "end"
    error_s: float  # event - truth
    crossfade_s: float  # overlap with the neighbouring main-layer item at this boundary
    neighbour: str  # that item's kind ("-" when none touches)
    talk: bool  # a talk-over lies within TALK_RADIUS_S of the boundary, on the play's side
    from_start: bool  # the play starts at the track's beginning
    stream: str
    track_id: str

    @property
    def tolerant_error_s(self) -> float:
        """|error| outside the crossfade region (0 inside): [start, start + xf] or [end - xf, end]."""
        lo, hi = (0.0, self.crossfade_s) if self.side == "start" else (-self.crossfade_s, 0.0)
        return max(lo - self.error_s, self.error_s - hi, 0.0)


def boundaries(truth: dict, records: list[dict]) -> list[Boundary]:
    segments = truth["segments"]
    plays = plays_from_truth(segments)
    ends = {s["stream"]: s["duration_s"] for s in truth["stations"]}
    events = parse_events(records, ends)
    main = [s for s in segments if s.get("layer", "main") == "main"]
    talk = [s for s in segments if s.get("layer") == "overlay"]
    out = []
    for i, j in match(plays, events).pairs:
        play, event = plays[i], events[j]
        for side, at, error in (("start", play.start_s, event.start_s - play.start_s),
                                ("end", play.end_s, event.end_s - play.end_s)):  # fmt: skip
            crossfade, neighbour = 0.0, "-"
            for s in main:
                if s["stream"] != play.stream or (s["start_s"], s["end_s"]) == (play.start_s, play.end_s):
                    continue
                overlap = s["end_s"] - at if side == "start" else at - s["start_s"]
                inside = s["start_s"] < at <= s["end_s"] + 1e-6 if side == "start" else s["start_s"] - 1e-6 <= at < s["end_s"]
                if inside and overlap >= crossfade:
                    crossfade, neighbour = max(overlap, 0.0), s["kind"]
            near_talk = any(
                t["stream"] == play.stream and t["start_s"] < at + TALK_RADIUS_S and t["end_s"] > at - TALK_RADIUS_S
                for t in talk
            )
            out.append(Boundary(side, error, crossfade, neighbour, near_talk, not play.partial, play.stream,
                                play.track_id))  # fmt: skip
    return out


def summary(rows: list[Boundary]) -> dict[str, float | int]:
    errors = np.abs([r.error_s for r in rows])
    signed = np.asarray([r.error_s for r in rows])
    return {"n": len(rows), "within_1s": int((errors <= 1).sum()), "beyond_3s": int((errors > 3).sum()),
            "abs_median_s": float(np.median(errors)), "abs_p95_s": float(np.percentile(errors, 95)),
            "signed_median_s": float(np.median(signed))}  # fmt: skip


GROUPS = {
    "all": lambda r: True,
    "DJ talk within 10 s": lambda r: r.talk,
    "no talk, crossfade >= 1 s": lambda r: not r.talk and r.crossfade_s >= 1,
    "no talk, crossfade < 1 s": lambda r: not r.talk and r.crossfade_s < 1,
    "start, from the track's beginning, no talk": lambda r: r.side == "start" and r.from_start and not r.talk,
    "start, mid-track, no talk": lambda r: r.side == "start" and not r.from_start and not r.talk,
    "end, no talk": lambda r: r.side == "end" and not r.talk,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", type=Path, required=True, help="simulated set (its truth.json)")
    parser.add_argument("--events", type=Path, required=True, help="events JSON lines (daemon or offline)")
    parser.add_argument("--json", type=Path, help="write the groups and every boundary here")
    parser.add_argument("--worst", type=int, default=10)
    args = parser.parse_args()
    truth_path = args.truth / "truth.json" if args.truth.is_dir() else args.truth
    truth = json.loads(truth_path.read_text())
    records = [json.loads(line) for line in args.events.read_text().splitlines() if line.strip()]
    rows = boundaries(truth, records)
    groups = {name: summary(sel) for name, keep in GROUPS.items() if (sel := [r for r in rows if keep(r)])}
    print("| boundaries | n | within 1 s | beyond 3 s | median abs | p95 abs | signed median |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, g in groups.items():
        print(f"| {name} | {g['n']} | {g['within_1s']} | {g['beyond_3s']} | {g['abs_median_s']:.2f} s | "
              f"{g['abs_p95_s']:.2f} s | {g['signed_median_s']:+.2f} s |")  # fmt: skip
    tolerant = np.asarray([r.tolerant_error_s for r in rows])
    print(f"\ncrossfade-tolerant: p95 {np.percentile(tolerant, 95):.2f} s, within 1 s {int((tolerant <= 1).sum())} "
          f"of {len(rows)}, beyond 3 s {int((tolerant > 3).sum())}")  # fmt: skip
    print("\nworst:")
    for r in sorted(rows, key=lambda r: -abs(r.error_s))[: args.worst]:
        print(f"  {r.side:5s} {r.error_s:+6.2f} s  crossfade {r.crossfade_s:3.1f} s ({r.neighbour})  talk {r.talk!s:5s} "
              f"{'from start' if r.from_start else 'mid-track '}  {r.stream} {r.track_id}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"groups": groups, "crossfade_tolerant_p95_s": float(np.percentile(tolerant, 95)),
                                         "boundaries": [asdict(r) for r in rows]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
