"""A/B of the streaming encoder step: this working tree against a git revision, in one run.

On a shared 2-vCPU machine the same code's timing drifts by 10-20 % from minute to minute, more
than most single changes to the step are worth. So the two code trees are timed alternately, in
fresh subprocesses (``--rounds`` each), and the table gives both medians and their ratio. Each
subprocess loads the shipped model with its own tree's code and times ``StreamingEncoder.advance_hops``
(one torch thread, CPU time of the calling thread) for ``--batch`` streams, one hop each and a
catch-up of ``CATCH_UP_HOPS`` hops; it also checks that both trees give the same codes.

    .venv/bin/python bench/step_ab.py --baseline HEAD --rounds 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from streamd.config import load_config
from streamd.daemon.pipeline import CATCH_UP_HOPS
from streamd.model import load_fingerprinter
torch.set_num_threads(1)
batch, repeats = int(sys.argv[2]), int(sys.argv[3])
config = load_config()
fp = load_fingerprinter(config.model)
encoder = fp.streaming(batch)
generator = torch.Generator().manual_seed(0)
frames = torch.randn(batch, 96, 48, generator=generator) * 3 - 6
catch_up = torch.randn(batch // CATCH_UP_HOPS, 96, 48 * CATCH_UP_HOPS, generator=generator) * 3 - 6
def best(fn):
    fn()
    times = []
    for _ in range(repeats):
        t = time.thread_time(); fn(); times.append(time.thread_time() - t)
    return min(times)
slots = torch.arange(batch)
step = best(lambda: encoder.advance_hops(slots, frames))
catch = best(lambda: encoder.advance_hops(slots[: batch // CATCH_UP_HOPS], catch_up))
encoder = fp.streaming(batch)
codes = b"".join(encoder.advance_hops(slots, frames).tobytes() for _ in range(3))
print(json.dumps({"step_us_per_hop": 1e6 * step / batch, "catch_up_us_per_hop": 1e6 * catch / (batch // CATCH_UP_HOPS * CATCH_UP_HOPS),
                  "codes_sha": hashlib.sha256(codes).hexdigest()[:16], "model": fp.version}))
"""


def run_tree(tree: Path, batch: int, repeats: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(batch), str(repeats)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per subprocess (best counts)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline), args.baseline], cwd=ROOT, check=True)
        try:
            trees = {"working tree": ROOT, f"baseline {args.baseline}": baseline}
            results: dict[str, list[dict]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                for name, tree in trees.items():
                    results[name].append(run_tree(tree, args.batch, args.repeats))
                print(f"round {round_ + 1}: " + ", ".join(f"{n} {r[-1]['step_us_per_hop']:.0f} µs" for n, r in results.items()))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=True)

    names = list(results)
    medians = {n: {k: statistics.median(r[k] for r in rs) for k in ("step_us_per_hop", "catch_up_us_per_hop")}
               for n, rs in results.items()}  # fmt: skip
    same = len({r["codes_sha"] for rs in results.values() for r in rs}) == 1
    print(f"\n{results[names[0]][0]['model']}, batch {args.batch}, 1 torch thread, CPU time, median of {args.rounds} "
          f"alternating rounds (best of {args.repeats} calls each); identical codes: {'yes' if same else 'NO'}")  # fmt: skip
    print("| code | step µs per stream-hop | catch-up µs per stream-hop |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {medians[name]['step_us_per_hop']:.0f} | {medians[name]['catch_up_us_per_hop']:.0f} |")
    ratio = {k: medians[names[0]][k] / medians[names[1]][k] for k in medians[names[0]]}
    print(f"| ratio | {ratio['step_us_per_hop']:.2f} | {ratio['catch_up_us_per_hop']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "medians": medians, "ratio": ratio, "identical_codes": same}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
