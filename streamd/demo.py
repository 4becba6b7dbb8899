"""``make demo``: the whole system on one machine, live.

1. Index a demo catalog (a handful of tracks of the dev corpus's TEST split) into Redis.
2. Simulate a 3-station broadcast (streamd.eval.simulate): catalog tracks, unknown music (VAL
   split), DJ talk, jingles and silence, with crossfades; stations 2 and 3 degraded.
3. Ingest it into Kafka in real time (streamd.ingest), one stream per station.
4. Run the daemon (in this process, on a thread) and show its play events as they arrive, in a
   rich table beside the ground truth of what each station is playing right now.

Stops on its own after ``--minutes`` (plus a few seconds to let the last plays end) or on Ctrl-C,
cleanly: ingest stops, the daemon commits and leaves its group.

    python -m streamd.demo [--minutes 3] [--tracks 6]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamd import audio, dataset, ingest
from streamd.config import Config, load_config
from streamd.daemon import eventlog
from streamd.daemon.runner import Daemon
from streamd.eval.simulate import Source, simulate
from streamd.kafka_io import BoundedProducer, ensure_topics

DEMO_CATALOG = "demo"


def demo_config(base: Config) -> Config:
    """The demo's own topics and group (a fresh run id), so that it never mixes with other data."""
    run = uuid.uuid4().hex[:8]
    overrides = {
        "kafka.audio_topic": f"streamd.demo.{run}.audio", "kafka.events_topic": f"streamd.demo.{run}.events",
        "kafka.deadletter_topic": f"streamd.demo.{run}.deadletter", "kafka.group_id": f"streamd-demo-{run}",
        "kafka.audio_partitions": 3, "daemon.state_topic": f"streamd.demo.{run}.state",
        "store.catalog": DEMO_CATALOG, "daemon.commit_interval_s": 2.0,
    }  # fmt: skip
    return load_config(overrides=overrides)


def build_catalog(config: Config, tracks: list[dataset.Track], console: Console) -> None:
    from streamd.indexer import index_paths
    from streamd.store.catalog import ModelMismatchError

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "catalog.csv"
        manifest.write_text("track_id,path\n" + "".join(f"{t.track_id},{t.path}\n" for t in tracks))
        try:
            report = index_paths(config, DEMO_CATALOG, [], manifest=manifest, rebuild=False, replace=True)
        except ModelMismatchError as exc:  # an earlier demo with other weights: the demo's own catalog
            console.print(f"{exc}; re-indexing the demo catalog")
            report = index_paths(config, DEMO_CATALOG, [], manifest=manifest, rebuild=True, replace=True)
    console.print(f"catalog {DEMO_CATALOG!r}: {report.indexed} indexed, {report.unchanged} unchanged, "
                  f"{len(report.failed)} failed ({report.elapsed_s:.1f} s)")  # fmt: skip


def now_playing(truth: dict, stream: str, t: float) -> str:
    parts = [f"{s['kind']} {s['track_id']}".strip() for s in truth["segments"]
             if s["stream"] == stream and s["layer"] == "main" and s["start_s"] <= t < s["end_s"]]  # fmt: skip
    return " + ".join(parts) or "-"


def view(truth: dict, events: list[dict], elapsed: float, catalog_ids: set[str]) -> Group:
    stations = Table(title=f"stations at {elapsed:5.1f} s (ground truth)")
    stations.add_column("stream")
    stations.add_column("playing now")
    for station in truth["stations"]:
        playing = now_playing(truth, station["stream"], elapsed)
        style = "green" if any(c in playing for c in catalog_ids) else "dim"
        stations.add_row(station["stream"], f"[{style}]{playing}[/]")
    plays = Table(title="recognitions (events topic)")
    for column in ("stream", "track", "start s", "end s", "offset s", "conf", "truth at start"):
        plays.add_column(column)
    for play in sorted(eventlog.plays(events).values(), key=lambda p: (p["stream_id"], p["start_s"]))[-20:]:
        end = "open" if play["end_s"] is None else f"{play['end_s']:.1f}"
        truth_at = now_playing(truth, play["stream_id"], play["start_s"] + 3)
        ok = play["track_id"] in truth_at
        plays.add_row(play["stream_id"], play["track_id"], f"{play['start_s']:.1f}", end, f"{play['offset_s']:.1f}",
                      f"{play['confidence']:.2f}", f"[{'green' if ok else 'red'}]{truth_at}[/]")  # fmt: skip
    return Group(stations, plays)


def run(minutes: float = 3.0, n_tracks: int = 6, seed: int = 7) -> list[dict]:
    """Run the demo; returns the events the daemon published."""
    console = Console()
    logging.basicConfig(level=logging.WARNING)
    config = demo_config(load_config())
    split = dataset.load_split()
    catalog, unknown = list(split.test[:n_tracks]), list(split.val[:4])
    console.print(f"[bold]1.[/] indexing {len(catalog)} test-split tracks into catalog {DEMO_CATALOG!r} ...")
    build_catalog(config, catalog, console)
    console.print(f"[bold]2.[/] simulating 3 stations x {minutes:g} min ...")
    out = Path(tempfile.mkdtemp(prefix="streamd-demo-"))
    truth = simulate([Source(t.track_id, t.path, t.duration_s) for t in catalog],
                     [Source(t.track_id, t.path, t.duration_s) for t in unknown],
                     out, hours=minutes / 60, streams=3, seed=seed, clean_stations=1, strength=(0.3, 0.5)).to_dict()
    audios = {s["stream"]: audio.load_audio(out / s["file"], 12000) for s in truth["stations"]}
    ensure_topics(config, {config.kafka.audio_topic: 3})
    console.print(f"[bold]3.[/] starting the daemon (model, catalog replica, Kafka group {config.kafka.group_id}) ...")
    stop = threading.Event()
    daemon = Daemon(config, stop=stop)
    daemon_thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    daemon_thread.start()
    console.print(f"[bold]4.[/] ingesting in real time to {config.kafka.audio_topic}; Ctrl-C stops")
    stop_ingest = threading.Event()
    start_ms = ingest.now_ms()

    def produce() -> None:
        records = ingest.merge_by_time(*(ingest.stream_chunks(a, 12000, sid, 500, start_ts_ms=start_ms)
                                         for sid, a in audios.items()))  # fmt: skip
        with BoundedProducer(config) as producer:
            ingest.produce(records, producer, config.kafka.audio_topic, realtime=True, stop=stop_ingest)

    ingest_thread = threading.Thread(target=produce, name="ingest", daemon=True)
    ingest_thread.start()
    events: list[dict] = []
    catalog_ids = {t.track_id for t in catalog}
    duration = max(len(a) for a in audios.values()) / 12000
    try:
        with Live(view(truth, events, 0.0, catalog_ids), console=console, refresh_per_second=2) as live:
            while daemon_thread.is_alive():
                elapsed = (ingest.now_ms() - start_ms) / 1000
                events = eventlog.read_events(config, idle_s=0.2, timeout_s=5)
                live.update(view(truth, events, min(elapsed, duration), catalog_ids))
                if elapsed > duration + 15:
                    break
                time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        stop_ingest.set()
        ingest_thread.join(10)
        stop.set()
        daemon_thread.join(60)
    events = eventlog.read_events(config, idle_s=0.2, timeout_s=5)
    found = eventlog.plays(events)
    required = [s for s in truth["segments"] if s["kind"] == "catalog" and s["layer"] == "main"]
    console.print(f"{len(found)} plays reported for {len(required)} catalog plays on air; "
                  f"events are on topic {config.kafka.events_topic}, audio in {out}")  # fmt: skip
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each simulated station")
    parser.add_argument("--tracks", type=int, default=6, help="test-split tracks in the demo catalog")
    args = parser.parse_args()
    run(args.minutes, args.tracks)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
