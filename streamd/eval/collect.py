"""The Kafka edge of the accuracy run: wait until a daemon has consumed the audio, read its events.

The daemon's events already carry stream-time fields (``start_s``, ``end_s``, ``detected_s``,
seconds since the stream's first chunk; docs/events.md), which is what ``streamd score`` reads, so
collecting is copying the events topic to JSON lines, one event document per line, unchanged.

The daemon commits an audio offset only after every event caused by the records before it is
acknowledged (docs/daemon.md), so once its group's committed offsets reach the end of the audio
topic, every event it will emit for that audio is on the events topic — except the ``ended`` of
plays still open at the end of a stream, which the scorer extends to the stream's end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from streamd.config import Config, load_config
from streamd.errors import StreamdError
from streamd.kafka_io import make_admin, make_consumer


class CollectError(StreamdError):
    """The daemon did not consume its input in time, or a topic could not be read."""


def consumer_lag(config: Config, group: str, topic: str) -> int:
    """Records of ``topic`` that ``group`` has not committed yet (all of them before its first commit)."""
    admin = make_admin(config)
    consumer = make_consumer(config, group_id="")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise CollectError(f"topic {topic} does not exist")
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets({group: partitions}).get(group, {})
        done = {tp: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}
        return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
    finally:
        consumer.close()
        admin.close()


def wait_until_consumed(
    config: Config,
    group: str,
    topic: str,
    timeout_s: float,
    poll_s: float = 2.0,
    alive: Callable[[], bool] = lambda: True,
    on_lag: Callable[[int], None] | None = None,
) -> float:
    """Block until ``group`` has committed the end of every partition of ``topic``; return the
    seconds waited. :class:`CollectError` after ``timeout_s`` or as soon as ``alive()`` is false
    (the daemon process exited)."""
    start = time.monotonic()
    while True:
        lag = consumer_lag(config, group, topic)
        if on_lag is not None:
            on_lag(lag)
        if lag == 0:
            return time.monotonic() - start
        if not alive():
            raise CollectError(f"the daemon exited with {lag} records of {topic} not consumed")
        if time.monotonic() - start > timeout_s:
            raise CollectError(f"group {group} still has {lag} records of {topic} to consume after {timeout_s:.0f} s")
        time.sleep(poll_s)


def read_topic(config: Config, topic: str, timeout_s: float = 60.0) -> Iterator[dict[str, Any]]:
    """Every record value of ``topic`` as JSON, from the beginning up to its end offsets at call
    time (without a consumer group, so nothing is committed). Values that are not JSON objects are
    skipped: the scorer would reject them and they cannot be play events."""
    consumer = make_consumer(config, group_id="", consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise CollectError(f"topic {topic} does not exist")
        ends = consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise CollectError(f"reading {topic} took longer than {timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < ends[tp]:
                        document = _json_object(record.value)
                        if document is not None:
                            yield document
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        consumer.close()


def _json_object(value: bytes | None) -> dict[str, Any] | None:
    try:
        document = json.loads(value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def write_json_lines(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write ``records`` one JSON object per line (sorted by stream and stream time); return how many."""
    ordered = sorted(records, key=lambda r: (str(r.get("stream_id", "")), float(r.get("start_s") or 0.0),
                                             r.get("type") != "started"))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for record in ordered:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    return len(ordered)


def write_split_manifest(corpus_dir: Path, split: str, out: Path) -> int:
    """Write an index manifest (``streamd index --manifest``) of one corpus split: the corpus
    manifest's rows of that split with an absolute ``path`` instead of ``relative_path``; return
    the track count."""
    from streamd import dataset

    if split not in ("train", "val", "test"):
        raise CollectError(f"split must be train, val or test, got {split!r}")
    corpus_dir = Path(corpus_dir).expanduser()
    chosen = {track.track_id for track in getattr(dataset.load_split(corpus_dir), split)}
    with (corpus_dir / "manifest.csv").open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["track_id"] in chosen]
    if not rows:
        raise CollectError(f"the {split} split of {corpus_dir} is empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        columns = ["track_id", "path"] + [c for c in rows[0] if c not in ("track_id", "relative_path")]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            path = (corpus_dir / row.pop("relative_path")).resolve()
            writer.writerow({**row, "path": str(path)})
    return len(rows)


# --- command line (bench/accuracy.sh): python -m streamd.eval.collect --help ----------------------


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
    parser = argparse.ArgumentParser(description="Collect a daemon's play events into JSON lines for `streamd score`.")
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
