"""Sweep the decision thresholds offline on simulated stations: the model runs once, the tracker many times.

bench/accuracy.sh measures one setting end to end and takes minutes per hour of audio, most of it
in the model. The decision logic (streamd.decision) only sees each hop's top-k catalog matches, so
this script

1. computes the per-hop codes of every station recording of the given simulated sets ONCE with the
   shipped model (``Fingerprinter.codes_for_audio``: the daemon's hop grid, window end = 1.024 s ×
   (n + 1) from the first sample, as ``streamd recognize`` reports stream times), searches them in
   an in-memory catalog of the corpus test split (the tracks the simulator played; codes made as
   ``streamd index`` makes them) and caches the top-k matches to an ``.npz`` keyed by the model's
   version, the sets and k;
2. replays ``decision.decide`` (the daemon's ``Tracker``) over the cached matches for a grid of
   parameters and scores each setting with ``streamd.eval.score`` against the sets' truth;
3. prints a table, marks the settings no other setting beats on all of false events, F1 and
   latency, and plots false events per 24 h against median latency (F1 as colour).

    .venv/bin/python bench/decision_sweep.py                      # default sets, cache, grid
    .venv/bin/python bench/decision_sweep.py --only-cache          # step 1 only
    .venv/bin/python bench/decision_sweep.py --grid min_hits=3,4,6 min_evidence=1.5,3 ...
    .venv/bin/python bench/decision_sweep.py --verify-distances    # distances at the true alignments

Plays >= 30 s are scored (``streamd score``'s default). Latency is detection latency in stream
time (the hop that started the play − the true start), as for daemon events. False events per 24 h
pool every set's non-catalog hours: with a few hours of audio one false event is worth ~10 per 24 h,
so a 0 here is a bound of that size, not a measurement of the ≤ 1 per 24 h target
(bench/decision_false_rate.py simulates days of chance matches for that).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamd.config import load_config
from streamd.decision import DecisionParams, decide
from streamd.eval import score as scoring

ACCURACY_DIR = Path.home() / ".cache" / "streamd" / "accuracy"
DEFAULT_SETS = ("sim-4x1h-s2026", "soak-2x0.5h-s2027")
DEFAULT_GRID = {
    "min_hits": [3, 4, 5, 6, 8, 9, 10, 12],
    "min_confidence": [0.5, 0.6],
    "align_tol_s": [1.0, 1.5],
    "end_after_misses": [8, 12],
}
"""What moved the scores in the first sweeps (docs/decision.md): min_evidence and max_distance_ratio
changed nothing past min_hits >= 4 (chance matches of this model sit at 5-10 bits, like real ones),
candidate_max_misses 0-2 nothing at all."""
CATALOG_KEY = "_catalog"  # cache entries _catalog/<track index>/{codes,offsets}
PREVIOUS_DEFAULTS = {"min_hits": 3, "end_after_misses": 8}  # before the sweep of 2026-11-28, for reference


# --- step 1: matches of every hop, cached ---------------------------------------------------------


def catalog_table(fp: Any, corpus: Path, bits: int) -> tuple[Any, list[Any]]:
    """(CodeTable, tracks) of the corpus test split, every track encoded as ``streamd index`` does it."""
    from streamd.eval.collect import write_split_manifest
    from streamd.indexer import Encoded, encode_file, read_manifest
    from streamd.store.catalog import Track
    from streamd.store.table import CodeTable, SearchSettings

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "catalog-test.csv"
        write_split_manifest(corpus, "test", manifest)
        jobs = read_manifest(manifest)
    tracks = []
    for job in jobs:
        result = encode_file(job, fp)
        if not isinstance(result, Encoded):
            raise SystemExit(f"cannot encode catalog track {job.path}: {result.reason}")
        tracks.append(Track(job.track_id, result.codes, result.offsets))
    return CodeTable.build(bits, tracks, SearchSettings()), tracks


def station_matches(fp: Any, table: Any, path: Path, k: int) -> dict[str, np.ndarray]:
    """Hop times (window ends, s from the first sample), packed codes and top-k matches of one station file."""
    from streamd.audio import load_audio

    codes, times = fp.codes_for_audio(load_audio(path, 12000))
    hits = table.search(codes, k)
    index = {tid: i for i, tid in enumerate(table.track_ids)}
    tracks = np.array([[index.get(t, -1) for t in row] for row in hits.track_ids.tolist()], dtype=np.int32)
    return {
        "times": np.asarray(times, dtype=np.float64),
        "codes": np.asarray(codes, dtype=np.uint8),
        "tracks": tracks,
        "offsets": np.asarray(hits.offsets, dtype=np.float32),
        "distances": np.asarray(hits.distances, dtype=np.int16),
    }


def pipeline_agreement(fp: Any, table: Any, path: Path, seconds: float, config: Any) -> float:
    """Fraction of equal code bits between ``codes_for_audio`` and the daemon's streaming pipeline
    (front-end bank + streaming encoder, fed 500 ms chunks) over the first ``seconds`` of ``path``:
    the check that the cached matches are what the daemon would search."""
    import torch

    from streamd.audio import load_audio
    from streamd.daemon.pipeline import TableSearcher, pipeline_from_config
    from streamd.daemon.recognize import chunks_of

    seen: list[np.ndarray] = []

    class Recording(TableSearcher):
        def search(self, codes: np.ndarray, k: int | None = None) -> Any:
            seen.append(np.asarray(codes).copy())
            return super().search(codes, k)

    pipeline = pipeline_from_config(config, fp, Recording(table), shed_lag_s=np.inf, max_lag_s=np.inf)
    chunks = []
    for chunk in chunks_of(path, "check"):
        if chunk.ts_ms >= seconds * 1000:
            break
        chunks.append(chunk)
    with torch.inference_mode():
        pipeline.feed(chunks)
    streamed = np.concatenate(seen)
    offline, _ = fp.codes_for_audio(load_audio(path, 12000, max_seconds=seconds))
    n = min(len(streamed), len(offline))
    if n == 0:
        return float("nan")
    return float(1.0 - np.unpackbits(streamed[:n] ^ offline[:n]).mean())


def build_cache(sets: list[Path], cache: Path, k: int, corpus: Path, check_s: float) -> None:
    """Encode the catalog and every station once, search, save the matches to ``cache``."""
    import torch

    from streamd.model import load_fingerprinter

    config = load_config()
    fp = load_fingerprinter(config.model)
    started = time.perf_counter()
    with torch.inference_mode():
        table, tracks = catalog_table(fp, corpus, config.model.bits)
        print(f"catalog: {table.n_tracks} test-split tracks, {table.size} codes, {time.perf_counter() - started:.0f} s")
        arrays: dict[str, np.ndarray] = {}
        for i, track in enumerate(tracks):  # the catalog itself, for verification (codes by position)
            arrays[f"{CATALOG_KEY}/{i}/codes"] = np.asarray(track.codes, dtype=np.uint8)
            arrays[f"{CATALOG_KEY}/{i}/offsets"] = np.asarray(track.offsets, dtype=np.float32)
        for set_dir in sets:
            truth = json.loads((set_dir / "truth.json").read_text())
            for station in truth["stations"]:
                t0 = time.perf_counter()
                matches = station_matches(fp, table, set_dir / station["file"], k)
                for name, value in matches.items():
                    arrays[f"{set_dir.name}/{station['stream']}/{name}"] = value
                print(f"{set_dir.name}/{station['stream']}: {len(matches['times'])} hops, "
                      f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        if check_s > 0:
            first = sets[0] / json.loads((sets[0] / "truth.json").read_text())["stations"][0]["file"]
            agreement = pipeline_agreement(fp, table, first, check_s, config)
            print(f"codes_for_audio vs the daemon pipeline, first {check_s:.0f} s of {first.name}: "
                  f"{100 * agreement:.2f} % equal bits")  # fmt: skip
    meta = {"model": fp.version, "k": k, "bits": config.model.bits, "sets": [s.name for s in sets],
            "track_ids": list(table.track_ids),
            "codes": table.size, "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(cache)
    print(f"cached matches -> {cache} ({time.perf_counter() - started:.0f} s)")


def peaks_path(cache: Path) -> Path:
    return cache.with_name(cache.name.replace(".npz", "") + ".peaks.npz")


def build_peaks(sets: list[Path], cache: Path, corpus: Path) -> None:
    """Spectral peaks (streamd.peaks.extract) of every catalog track and every station, next to the
    matches cache: what the peak-confirmed start (docs/decision.md, "Peaks") compares."""
    from streamd.audio import load_audio
    from streamd.eval.collect import write_split_manifest
    from streamd.indexer import read_manifest, track_peaks

    def peaks_of(path: Path) -> np.ndarray:
        return track_peaks(load_audio(path, 12000))

    started = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "catalog-test.csv"
        write_split_manifest(corpus, "test", manifest)
        jobs = read_manifest(manifest)
    ids = []
    for i, job in enumerate(jobs):
        arrays[f"track/{i}"] = peaks_of(Path(job.path))
        ids.append(job.track_id)
    for set_dir in sets:
        for station in json.loads((set_dir / "truth.json").read_text())["stations"]:
            arrays[f"station/{set_dir.name}/{station['stream']}"] = peaks_of(set_dir / station["file"])
    tmp = peaks_path(cache).with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps({"track_ids": ids, "sets": [s.name for s in sets]})), **arrays)
    tmp.replace(peaks_path(cache))
    print(f"peaks of {len(ids)} tracks and the stations -> {peaks_path(cache)} ({time.perf_counter() - started:.0f} s)")


def load_peaks(cache: Path) -> dict[str, Any]:
    """{set: PeakChecker} over the stations' and the catalog's cached peaks."""
    from streamd.peaks import PeakChecker, recording_query

    with np.load(peaks_path(cache), allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        reference = {tid: data[f"track/{i}"] for i, tid in enumerate(meta["track_ids"])}
        stations: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            if key.startswith("station/"):
                _, set_name, stream = key.split("/")
                stations.setdefault(set_name, {})[stream] = data[key]
    return {name: PeakChecker(recording_query(by_stream), reference.get) for name, by_stream in stations.items()}


def load_cache(cache: Path) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, np.ndarray]]]]:
    """(meta, {set: {stream: {times, track_ids (object), offsets, distances}}})."""
    with np.load(cache, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        ids = np.array([None] + meta["track_ids"], dtype=object)  # index -1 -> None (empty slot)
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for key in data.files:
            if key == "meta" or key.startswith(CATALOG_KEY):
                continue
            set_name, stream, name = key.split("/")
            station = out.setdefault(set_name, {}).setdefault(stream, {})
            station[name] = data[key]
        for stations in out.values():
            for station in stations.values():
                station["track_ids"] = ids[station.pop("tracks") + 1]
    return meta, out


def load_catalog(cache: Path) -> Any:
    """The cached catalog as a CodeTable, for verification (None: a cache from before it kept one)."""
    from streamd.store.catalog import Track
    from streamd.store.table import CodeTable, SearchSettings

    with np.load(cache, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if f"{CATALOG_KEY}/0/codes" not in data.files:
            return None
        tracks = [Track(tid, data[f"{CATALOG_KEY}/{i}/codes"], data[f"{CATALOG_KEY}/{i}/offsets"])
                  for i, tid in enumerate(meta["track_ids"])]  # fmt: skip
    return CodeTable.build(meta.get("bits", 8 * tracks[0].codes.shape[1]), tracks, SearchSettings())


def verification_distances(matches: dict, truths: dict[str, dict], catalog: Any, hop_s: float, seed: int = 0) -> None:
    """Print how far a station's code lies from the catalog code at its TRUE alignment (from the
    simulator's truth), by time from the play's start and end, against random tracks and offsets:
    what the verification threshold (docs/decision.md, "Verification") is chosen from."""
    from streamd.model.hashing import hamming

    rng = np.random.default_rng(seed)
    track_ids = [t for t in catalog.track_ids if t is not None]
    by_start: dict[int, list[int]] = {}
    by_end: dict[int, list[int]] = {}
    by_kind: dict[str, list[int]] = {}  # what the newest 3 s of the hop's window hold (change points)
    chance: list[int] = []

    def distances(codes: np.ndarray, track: str, offsets: np.ndarray) -> np.ndarray:
        ref, found = catalog.codes_at(track, offsets, 0.6 * hop_s)
        return np.where(found, hamming(codes, ref).astype(np.int64), -1)

    for set_name, stations in matches.items():
        plays = scoring.plays_from_truth(truths[set_name]["segments"])
        overlays = [s for s in truths[set_name]["segments"] if s.get("layer") == "overlay"]
        for stream, m in stations.items():
            times, codes = m["times"], m["codes"]
            rows = rng.integers(len(times), size=300)
            tracks = rng.choice(track_ids, size=300)
            for row, track in zip(rows, tracks, strict=True):
                d = distances(codes[row : row + 1], track, rng.uniform(0, 200, 1))[0]
                if d >= 0:
                    chance.append(int(d))
            for play in (q for q in plays if q.stream == stream and q.track_id in catalog.track_rows):
                near = (times > play.start_s - 12) & (times < play.end_s + 12)
                t = times[near]
                for ti, d in zip(t, distances(codes[near], play.track_id, play.offset_s + play.speed * (t - play.start_s)),
                                 strict=True):  # fmt: skip
                    if d < 0:
                        continue
                    by_kind.setdefault(_window_kind(ti, play, overlays), []).append(int(d))
                    if (a := int(np.floor(ti - play.start_s))) <= 10:
                        by_start.setdefault(a, []).append(int(d))
                    if (b := int(np.floor(ti - play.end_s))) >= -6:
                        by_end.setdefault(b, []).append(int(d))
    bits = catalog.bits
    threshold = DecisionParams.verify_max_distance_ratio * bits
    print(f"distance of a station code to the catalog code at its true alignment ({bits} bits); "
          f"share <= {threshold:g} (verify_max_distance_ratio x K)")  # fmt: skip
    c = np.array(chance)
    print(f"random track and offset: n={len(c)}, quantiles 0.1/1/5/50 %: {np.percentile(c, [0.1, 1, 5, 50]).round()}, "
          f"<= threshold {np.mean(c <= threshold):.1%}")  # fmt: skip
    cut = DecisionParams.boundary_distance_ratio * bits
    print(f"by what the window's newest 3 s hold: share <= {cut:g} (boundary_distance_ratio x K)")
    print(f"{'':>34}      n   p10   p25   p50   p75   p90  <=cut")
    for kind in ("inside a play, clear", "inside a play, talk-over", "before a play", "after a play"):
        d = np.array(by_kind.get(kind, [-1]))
        q = np.percentile(d, [10, 25, 50, 75, 90])
        print(f"{kind:>34} {len(d):>6} " + " ".join(f"{v:>5.0f}" for v in q) + f"  {np.mean(d <= cut):>5.0%}")
    for name, table in (("s since the play's start", by_start), ("s since the play's end", by_end)):
        print(f"{name:>26}      n   p10   p50   p90  <=thr")
        for key in sorted(table):
            d = np.array(table[key])
            q = np.percentile(d, [10, 50, 90])
            print(f"{key:>26} {len(d):>6} {q[0]:>5.0f} {q[1]:>5.0f} {q[2]:>5.0f}  {np.mean(d <= threshold):>5.0%}")


def _window_kind(t: float, play: Any, overlays: list[dict[str, Any]]) -> str:
    """What the newest 3 s of the window ending at stream time ``t`` hold, for a hop near ``play``:
    the play in the clear or under talk-over, or other audio before / after it (the line extended)."""
    if t < play.start_s + 0.5:
        return "before a play"
    if t > play.end_s + 3.5:
        return "after a play"
    if t - 3.0 < play.start_s or t > play.end_s:
        return "play boundary"
    talk = any(o["stream"] == play.stream and o["start_s"] < t and o["end_s"] > t - 3.0 for o in overlays)
    return "inside a play, talk-over" if talk else "inside a play, clear"


# --- step 2: replay the tracker per setting --------------------------------------------------------


def events_for(params: DecisionParams, stations: dict[str, dict[str, np.ndarray]],
               catalog: Any = None, peaks: Any = None) -> list[scoring.Event]:
    """The plays ``decide`` finds in every station, as scorer events (daemon semantics: detected_at_s).
    With ``catalog`` (and codes in the cache) the tracker verifies, as the daemon does; with
    ``peaks`` (a PeakChecker over these stations) it may start plays on peak agreement."""
    events = []
    for stream, m in stations.items():
        codes = m.get("codes") if catalog is not None else None
        for play in decide(m["times"], m["track_ids"], m["offsets"], m["distances"], params, stream,
                           audio_start_s=0.0, codes=codes, catalog=catalog if codes is not None else None,
                           peaks=peaks):
            events.append(scoring.Event(stream, str(play.track_id), play.start_s, play.end_s, play.track_offset_s,
                                        play.confidence, play.detected_s))  # fmt: skip
    return events


def evaluate(params: DecisionParams, matches: dict, truths: dict[str, dict], catalog: Any = None,
             peaks: dict[str, Any] | None = None) -> dict[str, float]:
    """One setting over every set: recall/precision/F1, latency and boundaries over the sets with
    catalog plays; false non-catalog events per 24 h over all sets' non-catalog hours."""
    found = required = scored = wrong = duplicate = false_nc = 0
    nc_hours = 0.0
    stream_hops = peak_queries = 0
    latency: list[float] = []
    start_errors: list[float] = []
    end_errors: list[float] = []
    for set_name, stations in matches.items():
        checker = (peaks or {}).get(set_name)
        queries_before = checker.queries if checker is not None else 0
        events = events_for(params, stations, catalog, checker)
        if checker is not None and params.peak_hits > 0:
            peak_queries += checker.queries - queries_before
        stream_hops += sum(len(np.unique(m["times"])) for m in stations.values())
        report = scoring.score(truths[set_name], events, daemon=True)
        o = report["overall"]
        found += o["found"]
        required += o["plays"]
        scored += o["found"] + o["false_events"]
        wrong += o["false_by_class"].get("wrong_track", 0)
        duplicate += o["false_by_class"].get("duplicate", 0) + o["false_by_class"].get("short_overlap", 0)
        false_nc += o["false_by_class"].get("non_catalog", 0)
        nc_hours += o["non_catalog_hours"]
        plays = scoring.plays_from_truth(truths[set_name]["segments"])
        matching = scoring.match(plays, events)
        for i, j in matching.pairs:
            latency.append(events[j].detected_at_s - plays[i].start_s)
            start_errors.append(events[j].start_s - plays[i].start_s)
            end_errors.append(events[j].end_s - plays[i].end_s)
    precision = found / scored if scored else 1.0
    recall = found / required if required else 1.0
    return {
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "recall": recall,
        "precision": precision,
        "false_nc_24h": 24 * false_nc / nc_hours if nc_hours else float("nan"),
        "false_nc": false_nc,
        "wrong_track": wrong,
        "duplicate": duplicate,
        "latency_p50": float(np.median(latency)) if latency else float("nan"),
        "boundary_p95": float(np.percentile(np.abs(start_errors + end_errors), 95)) if start_errors else float("nan"),
        "boundaries": len(start_errors + end_errors),
        "boundaries_within_1s": int(np.sum(np.abs(start_errors + end_errors) <= 1.0)),
        "boundaries_over_3s": int(np.sum(np.abs(start_errors + end_errors) > 3.0)),
        **_signed(start_errors, "start"),
        **_signed(end_errors, "end"),
        "nc_hours": nc_hours,
        "peak_queries_per_hop": peak_queries / stream_hops if stream_hops else 0.0,
    }


def _signed(errors: list[float], name: str) -> dict[str, float]:
    """Median of the signed error (event - truth: < 0 early) and p95 of its size."""
    if not errors:
        return {f"{name}_median": float("nan"), f"{name}_p95": float("nan")}
    return {f"{name}_median": float(np.median(errors)), f"{name}_p95": float(np.percentile(np.abs(errors), 95))}


def grid_settings(base: DecisionParams, grid: dict[str, list[float]]) -> list[DecisionParams]:
    """Every combination of the grid, on top of ``base``; ``min_evidence_per_hit`` scales with min_hits."""
    names = list(grid)
    settings = []
    for values in itertools.product(*(grid[n] for n in names)):
        changes = dict(zip(names, values, strict=True))
        per_hit = changes.pop("min_evidence_per_hit", None)
        if "min_hits" in changes:
            changes["min_hits"] = int(changes["min_hits"])
        for key in ("candidate_max_misses", "end_after_misses", "max_candidates", "verify_gap_hops", "verify_history_hops"):
            if key in changes:
                changes[key] = int(changes[key])
        params = dataclasses.replace(base, **changes)
        if per_hit is not None:
            params = dataclasses.replace(params, min_evidence=round(per_hit * params.min_hits, 3))
        settings.append(params)
    return list(dict.fromkeys(settings))


def parse_grid(items: list[str] | None) -> dict[str, list[float]]:
    if not items:
        return DEFAULT_GRID
    fields = {f.name for f in dataclasses.fields(DecisionParams)} | {"min_evidence_per_hit"}
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in fields or not values:
            raise SystemExit(f"--grid wants NAME=v1,v2,... with NAME a DecisionParams field, got {item!r}")
        grid[name] = [float(v) for v in values.split(",")]
    return grid


def pareto(rows: list[dict[str, Any]]) -> set[int]:
    """Settings that no other setting beats on false events, F1 and latency at once."""
    keys = [(r["false_nc_24h"], -r["f1"], r["latency_p50"]) for r in rows]
    front = set()
    for i, a in enumerate(keys):
        if not any(all(x <= y for x, y in zip(b, a, strict=True)) and b != a for b in keys):
            front.add(i)
    return front


SWEPT = ("min_hits", "min_evidence", "min_confidence", "max_distance_ratio", "align_tol_s",
         "candidate_max_misses", "end_after_misses", "start_context_s", "end_bias_s", "from_start_max_s",
         "rival_window_s", "verify_max_distance_ratio", "verify_gap_hops", "verify_history_hops", "peak_hits",
         "peak_min_agreement", "peak_veto_below", "boundary_distance_ratio", "boundary_max_drop_ratio",
         "boundary_start_context_s", "boundary_end_bias_s")  # fmt: skip


def table_lines(rows: list[dict[str, Any]], front: set[int], markdown: bool) -> list[str]:
    """The rows as a fixed-width or markdown table; parameter columns only for what varies."""
    varying = [n for n in SWEPT if len({getattr(r["params"], n) for r in rows}) > 1]
    head = [*varying, "F1", "recall", "false nc/24h (n)", "wrong track", "dup", "latency p50 s", "bound p95 s",
            "<=1 s/>3 s", "start med/p95", "end med/p95", "peak q/hop", ""]
    lines = []
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    else:
        lines.append(" ".join(f"{h:>12}" for h in head))
    for i, r in enumerate(rows):
        p: DecisionParams = r["params"]
        cells = [f"{getattr(p, n):g}" for n in varying]
        cells += [f"{r['f1']:.3f}", f"{r['recall']:.3f}", f"{r['false_nc_24h']:.0f} ({r['false_nc']})",
                  str(r["wrong_track"]), str(r["duplicate"]), f"{r['latency_p50']:.1f}", f"{r['boundary_p95']:.1f}",
                  f"{r['boundaries_within_1s']}/{r['boundaries_over_3s']}",
                  f"{r['start_median']:+.1f}/{r['start_p95']:.1f}", f"{r['end_median']:+.1f}/{r['end_p95']:.1f}", f"{r['peak_queries_per_hop']:.3f}",
                  ", ".join(x for x in ("pareto" if i in front else "", r.get("label", "")) if x)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |" if markdown else " ".join(f"{c:>12}" for c in cells))
    return lines


def plot(rows: list[dict[str, Any]], front: set[int], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    x = np.array([r["latency_p50"] for r in rows])
    floor = 24 / max(rows[0]["nc_hours"], 1e-9) / 2  # zero false events: plotted at half of one event
    y = np.array([max(r["false_nc_24h"], floor) for r in rows])
    f1 = np.array([r["f1"] for r in rows])
    dots = ax.scatter(x, y, c=f1, cmap="viridis", s=18, alpha=0.8)
    fx = sorted(front)
    ax.scatter(x[fx], y[fx], s=40, facecolor="none", edgecolor="grey", lw=0.7, label="Pareto (false, F1, latency)")
    for i, r in enumerate(rows):
        if r.get("is_default"):
            ax.scatter([x[i]], [y[i]], marker="*", s=220, facecolor="none", edgecolor="red", label="current defaults")
        if r.get("label") == "previous defaults":
            ax.scatter([x[i]], [y[i]], marker="D", s=90, facecolor="none", edgecolor="black", label="previous defaults")
    ax.axhline(1.0, color="grey", ls=":", lw=0.8)
    ax.axvline(6.0, color="grey", ls=":", lw=0.8)
    ax.axhline(floor, color="grey", ls="--", lw=0.6)
    ax.text(ax.get_xlim()[0], floor, " 0 false events (plotted here)", va="bottom", ha="left", fontsize=7, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("median detection latency (s, stream time)")
    ax.set_ylabel("false events per 24 h of non-catalog audio")
    ax.set_title(title, fontsize=9)
    fig.colorbar(dots, ax=ax, label="F1 (plays >= 30 s)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", type=Path, default=[ACCURACY_DIR / s for s in DEFAULT_SETS],
                        help="simulated sets (folders with truth.json and sim-*.flac)")
    parser.add_argument("--cache", type=Path, default=None, help="matches cache (default: next to the first set)")
    parser.add_argument("--rebuild", action="store_true", help="recompute the matches even if the cache exists")
    parser.add_argument("--only-cache", action="store_true", help="stop after computing the matches")
    parser.add_argument("--k", type=int, default=None, help="matches per hop (default: store.top_k)")
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "streamd" / "corpus")
    parser.add_argument("--check-s", type=float, default=60.0,
                        help="compare codes with the daemon pipeline over this many seconds (0: skip)")
    parser.add_argument("--grid", nargs="+", default=None, help="NAME=v1,v2 ... (default: a built-in grid)")
    parser.add_argument("--top", type=int, default=40, help="rows of the printed table (Pareto front first)")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/decision-sweep.png"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--json", type=Path, default=None, help="every setting's scores as JSON")
    parser.add_argument("--peaks", action="store_true",
                        help="also cache the stations' and tracks' spectral peaks and replay with the peak check")
    parser.add_argument("--verify-distances", action="store_true",
                        help="print code distances at the true alignments (verification threshold) and stop")
    args = parser.parse_args()

    config = load_config()
    k = args.k or config.store.top_k
    cache = args.cache or args.sets[0].parent / f"decision-sweep-k{k}.npz"
    if args.rebuild or not cache.exists():
        build_cache(args.sets, cache, k, args.corpus, args.check_s)
    meta, matches = load_cache(cache)
    if meta["sets"] != [s.name for s in args.sets] or meta["k"] != k:
        raise SystemExit(f"{cache} holds {meta['sets']} at k={meta['k']}: rerun with --rebuild")
    catalog = load_catalog(cache)
    print(f"matches of model {meta['model']}, k={k}, {meta['codes']} catalog codes, built {meta['built']}, "
          f"verification {'possible' if catalog is not None else 'off (cache without codes: --rebuild)'}")
    peaks = None
    if args.peaks:
        if args.rebuild or not peaks_path(cache).exists():
            build_peaks(args.sets, cache, args.corpus)
        peaks = load_peaks(cache)
    if args.only_cache:
        return
    truths = {s.name: json.loads((s / "truth.json").read_text()) for s in args.sets}
    if args.verify_distances:
        if catalog is None:
            raise SystemExit(f"{cache} has no codes: rerun with --rebuild")
        verification_distances(matches, truths, catalog, DecisionParams.from_config(config).hop_s)
        return

    base = DecisionParams.from_config(config)
    previous = dataclasses.replace(base, **PREVIOUS_DEFAULTS)
    settings = grid_settings(base, parse_grid(args.grid))
    settings = [base, previous] + [s for s in settings if s not in (base, previous)]
    started = time.perf_counter()
    rows = []
    for params in settings:
        label = "defaults" if params == base else "previous defaults" if params == previous else ""
        rows.append({"params": params, **evaluate(params, matches, truths, catalog, peaks), "is_default": params == base,
                     "label": label})
    print(f"{len(rows)} settings in {time.perf_counter() - started:.0f} s; "
          f"non-catalog audio: {rows[0]['nc_hours']:.2f} h (1 false event = {24 / rows[0]['nc_hours']:.1f} per 24 h)")
    front = pareto(rows)
    order = sorted(range(len(rows)), key=lambda i: (i not in front, rows[i]["false_nc_24h"], -rows[i]["f1"]))
    shown = [i for i in order[: args.top]]
    shown += [i for i, r in enumerate(rows) if r["label"] and i not in shown]
    print("\n".join(table_lines([rows[i] for i in shown], {n for n, i in enumerate(shown) if i in front}, False)))
    if args.markdown:
        lines = table_lines([rows[i] for i in shown], {n for n, i in enumerate(shown) if i in front}, True)
        args.markdown.write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps([{**{k: v for k, v in r.items() if k != "params"},
                                          "params": dataclasses.asdict(r["params"])} for r in rows], indent=1))
    title = (f"decision sweep, model {meta['model']}, k={k}\n{', '.join(meta['sets'])}; "
             f"{rows[0]['nc_hours']:.1f} h non-catalog")  # fmt: skip
    if args.plot and args.plot != Path(""):
        plot(rows, front, args.plot, title)
        print(f"plot -> {args.plot}")


if __name__ == "__main__":
    main()
