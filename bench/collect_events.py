"""Collect a daemon's play events into JSON lines for `streamd score` (used by bench/accuracy.sh).

    python bench/collect_events.py --events-topic T --out events.jsonl \
        [--wait-group G --audio-topic A --daemon-pid PID --timeout 3600]

With ``--wait-group`` it first waits until that consumer group (the daemon's) has committed the end
of the audio topic, failing early if ``--daemon-pid`` exits. Then it copies the events topic, from
its beginning to its current end, one event document per line (stream-time fields included).
Configuration (Kafka address, ...) comes from config.yaml / STREAMD_* as for the CLI.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from streamd.config import load_config
from streamd.eval.collect import read_topic, wait_until_consumed, write_json_lines


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wait-group", help="Consumer group that must have consumed --audio-topic first.")
    parser.add_argument("--audio-topic")
    parser.add_argument("--daemon-pid", type=int, help="Fail as soon as this process is gone.")
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds to wait for the group.")
    args = parser.parse_args()
    config = load_config()
    if args.wait_group:
        if not args.audio_topic:
            parser.error("--wait-group needs --audio-topic")
        last = [0.0]

        def show(lag: int) -> None:
            if time.monotonic() - last[0] >= 30:
                print(f"  daemon lag: {lag} audio records", file=sys.stderr, flush=True)
                last[0] = time.monotonic()

        waited = wait_until_consumed(config, args.wait_group, args.audio_topic, args.timeout,
                                     alive=lambda: _alive(args.daemon_pid), on_lag=show)  # fmt: skip
        print(f"daemon consumed {args.audio_topic} ({waited:.0f} s after ingest)", file=sys.stderr)
    n = write_json_lines(read_topic(config, args.events_topic), args.out)
    print(f"{n} events from {args.events_topic} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
