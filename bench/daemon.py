"""How many streams one process holds in real time at the 48-frame (1.024 s) hop, and where the time goes.

In-process feed (isolates the daemon's compute from Kafka): N synthetic streams (tones + noise, 12 kHz
s16le chunks of 512 ms, encoded with the protocol) are pre-encoded; each round the chunks of one hop
of every stream are stamped with the current wall clock, decoded (``protocol.decode``), pushed to the
front end, and the ready hops encoded (streaming model, batched), searched (one batched call on a
catalog of random codes) and decided (tracker). Per round we time every stage; a stream count is
held in real time when a round (one hop of every stream) takes less than the hop.

    .venv/bin/python bench/daemon.py --streams 100,300,1000 --rounds 8 [--model test]
    .venv/bin/python bench/daemon.py --streams 1000 --rounds 30 --daemon-threads --split 1,2

``--split 1,2``: the rounds alternate between those ``model.batch_split`` values (the front end's
framing is split alike) in one pipeline, so the table compares them under the same conditions
(medians over the rounds of each); ``--daemon-threads``: one torch thread, as ``streamd run`` sets it.

``--model test`` uses the test fingerprinter (tests/daemon_doubles.py) as a cheap peer that shows
the pipeline's own overhead (front end, search, tracker, Python) without the network.
Delay = wall clock at decision - capture time of the newest sample of the hop (what
``streamd_decision_delay_seconds`` measures), so it includes waiting for the round's other streams.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from streamd import protocol  # noqa: E402
from streamd.config import load_config  # noqa: E402
from streamd.daemon.allocator import tune_malloc  # noqa: E402
from streamd.daemon.pipeline import TableSearcher, pipeline_from_config  # noqa: E402
from streamd.store.catalog import Track  # noqa: E402
from streamd.store.table import CodeTable, SearchSettings  # noqa: E402

SR = 12000
CHUNK = 6144  # 512 ms: two chunks per hop (a hop is 12288 samples)


def synthetic_audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    freqs = rng.uniform(100, 3000, 4)
    x = sum(np.sin(2 * np.pi * f * t * (1 + 0.01 * np.sin(t))) for f in freqs) / 4
    return (0.3 * x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def random_catalog(bits: int, tracks: int, codes_per_track: int) -> TableSearcher:
    rng = np.random.default_rng(0)
    rows = [Track(f"t{i}", rng.integers(0, 256, (codes_per_track, bits // 8), dtype=np.uint8),
                  (np.arange(1, codes_per_track + 1) * 1.024).astype(np.float32)) for i in range(tracks)]  # fmt: skip
    return TableSearcher(CodeTable.build(bits, rows, SearchSettings()), name="bench")


def run(n_streams: int, rounds: int, fp, searcher, splits: tuple[int, ...] = (1,)) -> dict[int, dict]:
    """Stage seconds per round (medians) and delays, for each batch split in ``splits``; rounds
    alternate between them."""
    config = load_config()
    pipeline = pipeline_from_config(config, fp, searcher, shed_lag_s=np.inf, max_lag_s=np.inf,
                                    batch_split=max(splits))  # fmt: skip
    audio = synthetic_audio(40.0, 1)
    ids = [f"s{i:05d}" for i in range(n_streams)]
    # Warm-up: 29 s of audio per stream so that the rings are full (not timed).
    start = int(time.time() * 1000) - 30_000
    warm_chunks = 29 * SR // CHUNK
    for c in range(warm_chunks):
        block = audio[c * CHUNK : (c + 1) * CHUNK]
        chunks = [protocol.decode(*protocol.encode(sid, block, SR, c, start + c * 512)[:3]) for sid in ids]
        pipeline.push(chunks, warm=True)
    pipeline.drain()
    stages = ("decode", "frontend", "model", "search", "decision", "round")
    timings: dict[int, dict[str, list[float]]] = {s: {k: [] for k in stages} for s in splits}
    delays: dict[int, list[float]] = {s: [] for s in splits}
    seq = warm_chunks
    for r in range(rounds + len(splits)):
        split = splits[r % len(splits)]
        pipeline.batch_split = split
        pipeline.bank._framer.parts = split  # noqa: SLF001 (a bench knob, not an API)
        records = []
        for _ in range(2):  # two 512 ms chunks = one hop
            block = audio[(seq % 70) * CHUNK : (seq % 70 + 1) * CHUNK]
            records += [protocol.encode(sid, block, SR, seq, 0) for sid in ids]
            seq += 1
        t0 = time.perf_counter()
        now_ms = int(time.time() * 1000)
        chunks = []
        for i, rec in enumerate(records):  # stamp as just captured
            k = i // n_streams
            headers = [(h, v) if h != "ts" else ("ts", str(now_ms - (2 - k) * 512).encode()) for h, v in rec.headers]
            chunks.append(protocol.decode(rec.key, rec.value, headers))
        t1 = time.perf_counter()
        pipeline.push(chunks)
        t2 = time.perf_counter()
        stats = []
        pipeline.delays.clear()
        pipeline.keep_delays = True
        while pipeline.bank.ready(pipeline.hop):
            pipeline.step()
            stats.append(pipeline.last_round)
        t3 = time.perf_counter()
        if r < len(splits):
            continue  # each setting's first round includes lazy initialisation
        t = timings[split]
        t["decode"].append(t1 - t0)
        t["frontend"].append(t2 - t1 + sum(s.frontend_s for s in stats))
        t["model"].append(sum(s.model_s for s in stats))
        t["search"].append(sum(s.search_s for s in stats))
        t["decision"].append(sum(s.decision_s for s in stats))
        t["round"].append(t3 - t0)
        delays[split] += pipeline.delays
    pipeline.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {}
    for split in splits:
        d = np.asarray(delays[split]) if delays[split] else np.full(1, np.nan)  # no decision: nan, not a crash
        out[split] = {k: float(np.median(v)) for k, v in timings[split].items()}
        out[split].update(streams=n_streams, p50=float(np.percentile(d, 50)), p99=float(np.percentile(d, 99)),
                          rss_mb=rss_mb)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="100,300,1000")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--model", choices=("shipped", "test"), default="shipped")
    parser.add_argument("--catalog-tracks", type=int, default=200)
    parser.add_argument("--split", default="1", help="model.batch_split values, alternated round by round")
    parser.add_argument("--daemon-threads", action="store_true", help="one torch thread, as `streamd run` sets it")
    parser.add_argument("--malloc", default="daemon",
                        help="glibc malloc settings: 'daemon' (daemon.malloc_*), 'heap' (large buffers kept on "
                             "the heap: 512 MB mmap and trim thresholds, 2 arenas), 'glibc' (its defaults), or "
                             "'MMAP_KB:TRIM_KB' (2 arenas)")  # fmt: skip
    args = parser.parse_args()
    d = load_config().daemon
    if args.malloc == "daemon":
        tune_malloc(d.malloc_mmap_threshold_kb, d.malloc_arena_max, d.malloc_trim_threshold_kb)
    elif args.malloc == "heap":
        tune_malloc(524_288, 2, trim_threshold_kb=524_288)
    elif args.malloc != "glibc":
        mmap_kb, _, trim_kb = args.malloc.partition(":")
        if not (mmap_kb.isdigit() and (trim_kb or "0").isdigit()):
            parser.error(f"--malloc: daemon, heap, glibc or MMAP_KB:TRIM_KB, not {args.malloc!r}")
        tune_malloc(int(mmap_kb), 2, trim_threshold_kb=int(trim_kb or 0))
    if args.model == "test":
        from daemon_doubles import ProjectionFingerprinter

        fp = ProjectionFingerprinter()
    else:
        from streamd.model import load_fingerprinter

        fp = load_fingerprinter(load_config().model)
    searcher = random_catalog(fp.bits, args.catalog_tracks, 200)
    if args.daemon_threads:
        import torch

        torch.set_num_threads(1)
    splits = tuple(int(s) for s in args.split.split(","))
    print(f"model {fp.version}; catalog {args.catalog_tracks * 200} random codes; load {os.getloadavg()[0]:.1f}; "
          f"hop 1.024 s; malloc {args.malloc}")  # fmt: skip
    print("streams | split | round s (median) | decode | frontend | model | search | decision | real time? "
          "| p50 delay s | p99 delay s | max RSS MB")  # fmt: skip
    for n in (int(s) for s in args.streams.split(",")):
        for split, r in run(n, args.rounds, fp, searcher, splits).items():
            print(f"{n} | {split} | {r['round']:.3f} | {r['decode']:.3f} | {r['frontend']:.3f} | {r['model']:.3f} | "
                  f"{r['search']:.3f} | {r['decision']:.3f} | {'yes' if r['round'] < 1.024 else 'no'} | "
                  f"{r['p50']:.2f} | {r['p99']:.2f} | {r['rss_mb']:.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
