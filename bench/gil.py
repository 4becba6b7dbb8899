"""The GIL convoy: what a busy Python thread does to the model's encoder step, by switch interval.

The daemon's Kafka client (kafka-python 3) decodes fetch responses in Python on its own I/O
thread. Every torch operation of an encoder step releases the GIL while it computes and must take
it back before the next operation starts; while another thread runs Python, taking it back waits
until that thread yields it, at the latest after ``sys.getswitchinterval()``. This bench runs the
shipped model's streaming step (``StreamingEncoder.advance_hops``, one hop, one torch thread) on
batches of streams alone and beside a thread that only runs Python, at several switch intervals,
and reports the step's wall time as a ratio to the step alone (same run). ``daemon.gil_switch_interval_ms``
is the daemon's setting (streamd/daemon/allocator.py).

    .venv/bin/python bench/gil.py --json runs/gil.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamd.config import load_config  # noqa: E402
from streamd.model import load_fingerprinter  # noqa: E402


class BusyThread:
    """A thread that runs Python (no I/O, no GIL release) until stopped; counts its loops."""

    def __init__(self) -> None:
        self.loops = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(1000):
                self.loops += 1

    def __enter__(self) -> BusyThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def time_steps(encoder, batch: int, repeats: int) -> tuple[float, float]:
    """(wall s, CPU s of the calling thread) per encoder step of ``batch`` streams, one hop each."""
    slots = torch.arange(batch)
    frames = torch.randn(batch, encoder.arch.n_mels, encoder.arch.hop_frames) - 6.0
    encoder.advance_hops(slots, frames)  # warm-up: allocations, oneDNN kernels
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(repeats):
        encoder.advance_hops(slots, frames)
    return (time.perf_counter() - wall) / repeats, (time.thread_time() - cpu) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[50, 400, 1000], help="streams per step")
    parser.add_argument("--intervals-ms", type=float, nargs="+", default=[5.0, 1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(1)  # the daemon's default (model.threads 0 → one thread)
    fingerprinter = load_fingerprinter(load_config().model)
    encoder = fingerprinter.streaming(max(args.batches))
    default_interval = sys.getswitchinterval()
    rows = []
    try:
        alone = {b: time_steps(encoder, b, args.repeats) for b in args.batches}
        for b in args.batches:
            rows.append({"busy_thread": False, "interval_ms": default_interval * 1000, "batch": b,
                         "wall_ms": alone[b][0] * 1000, "cpu_ms": alone[b][1] * 1000, "wall_vs_alone": 1.0})  # fmt: skip
        with BusyThread() as busy:
            for interval in args.intervals_ms:
                sys.setswitchinterval(interval / 1000.0)
                for b in args.batches:
                    loops, start = busy.loops, time.perf_counter()
                    wall, cpu = time_steps(encoder, b, args.repeats)
                    rate = (busy.loops - loops) / (time.perf_counter() - start)
                    rows.append({"busy_thread": True, "interval_ms": interval, "batch": b, "wall_ms": wall * 1000,
                                 "cpu_ms": cpu * 1000, "wall_vs_alone": wall / alone[b][0],
                                 "busy_loops_per_s": rate})  # fmt: skip
    finally:
        sys.setswitchinterval(default_interval)

    print(f"{platform.machine()}, torch {torch.__version__}, 1 torch thread, {fingerprinter.version}, "
          f"{args.repeats} steps per row")  # fmt: skip
    print("| busy Python thread | switch interval | streams per step | step wall | step CPU | wall vs alone | busy thread's loops/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        loops = f"{r['busy_loops_per_s'] / 1e6:.1f} M" if r["busy_thread"] else ""
        print(f"| {'yes' if r['busy_thread'] else 'no'} | {r['interval_ms']:g} ms | {r['batch']} | {r['wall_ms']:.0f} ms "
              f"| {r['cpu_ms']:.0f} ms | {r['wall_vs_alone']:.2f} | {loops} |")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": fingerprinter.version, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
