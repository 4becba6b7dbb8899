"""Helpers of the daemon tests: a simulated broadcast, a catalog table, ingest, a daemon in a thread
or a subprocess, and the checks against ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from streamd import audio, dataset, ingest
from streamd.config import Config, load_config
from streamd.daemon.pipeline import TableSearcher
from streamd.eval.simulate import Schedule, Source, simulate
from streamd.kafka_io import BoundedProducer, ensure_topics
from streamd.store.catalog import Track
from streamd.store.table import CodeTable, SearchSettings

HERE = Path(__file__).parent


def daemon_config(unique, partitions: int = 2, **extra: Any) -> Config:
    """A config with fresh topics and group, ephemeral HTTP port, fast commits."""
    overrides = {
        "kafka.audio_topic": unique("audio"), "kafka.events_topic": unique("events"),
        "kafka.deadletter_topic": unique("dlq"), "kafka.group_id": unique("group"),
        "kafka.audio_partitions": partitions, "daemon.state_topic": unique("state"),
        "daemon.http_port": 0, "daemon.commit_interval_s": 1.0,
    }  # fmt: skip
    overrides.update(extra)
    return load_config(overrides=overrides)


def topics_of(config: Config) -> list[str]:
    k = config.kafka
    return [k.audio_topic, k.events_topic, k.deadletter_topic, config.daemon.state_topic]


def corpus_tracks(n_catalog: int, n_unknown: int) -> tuple[list[dataset.Track], list[dataset.Track]]:
    """The first tracks of the test split (catalog) and of the val split (unknown music)."""
    split = dataset.load_split()
    return list(split.test[:n_catalog]), list(split.val[:n_unknown])


def broadcast(out: Path, catalog: list, unknown: list, minutes: float, streams: int = 3, seed: int = 1,
              weights: tuple = (("catalog", 0.6), ("unknown", 0.2), ("silence", 0.2)),
              crossfade_s: tuple[float, float] = (0.0, 3.0)) -> tuple[dict, dict[str, np.ndarray]]:
    """Clean simulated stations (crossfades, unknown music, silence) → (truth dict, stream → 12 kHz audio)."""
    sources = [Source(t.track_id, t.path, t.duration_s) for t in catalog]
    unknowns = [Source(t.track_id, t.path, t.duration_s) for t in unknown]
    schedule = Schedule(weights=weights, crossfade_s=crossfade_s, talkover_probability=0.0)
    truth = simulate(sources, unknowns, out, hours=minutes / 60, streams=streams, seed=seed,
                     clean_stations=streams, schedule=schedule).to_dict()
    audios = {s["stream"]: audio.load_audio(out / s["file"], 12000) for s in truth["stations"]}
    return truth, audios


def catalog_searcher(fp: Any, tracks: list[dataset.Track], peaks: bool = False) -> TableSearcher:
    """The tracks indexed in memory; with ``peaks``, their spectral peaks too (as ``streamd index``)."""
    from streamd.indexer import track_peaks

    rows = []
    for t in tracks:
        audio = dataset.load_audio(t)
        codes, offsets = fp.codes_for_audio(audio)
        rows.append(Track(t.track_id, codes, offsets.astype(np.float32), {"title": t.track_id},
                          track_peaks(audio) if peaks else None))  # fmt: skip
    return TableSearcher(CodeTable.build(fp.bits, rows, SearchSettings()), name="test")


def ingest_streams(config: Config, audios: dict[str, np.ndarray], start_ms: int | None = None,
                   realtime: bool = False, stop: threading.Event | None = None) -> ingest.IngestStats:
    """Produce every stream as 500 ms s16le chunks, interleaved by capture time."""
    ensure_topics(config, {config.kafka.audio_topic: config.kafka.audio_partitions})
    start = ingest.now_ms() if start_ms is None else start_ms
    records = ingest.merge_by_time(*(ingest.stream_chunks(a, 12000, sid, 500, start_ts_ms=start)
                                     for sid, a in audios.items()))  # fmt: skip
    with BoundedProducer(config) as producer:
        return ingest.produce(records, producer, config.kafka.audio_topic, realtime=realtime, stop=stop)


def start_daemon_process(config: Config, catalog_ids: list[str], log_path: Path, crash: str = "") -> subprocess.Popen:
    """The daemon with the test fingerprinter in a subprocess (so that it can be SIGKILLed);
    ``crash``: where it kills itself (tests/daemon_proc.py)."""
    env = dict(os.environ)
    env["STREAMD_TEST_CONFIG"] = json.dumps({f"{s}.{k}": v for s, d in config.redacted().items() for k, v in d.items()})
    env["STREAMD_TEST_CRASH"] = crash
    return subprocess.Popen([sys.executable, str(HERE / "daemon_proc.py"), *catalog_ids],
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115


def match_plays(truth: dict, plays: dict[str, dict], min_play_s: float = 30.0) -> dict[str, Any]:
    """Per required catalog play of the truth: the plays (same stream and track) overlapping it by
    at least half of it; plus the plays that lie mostly outside any catalog play of their track."""
    required = [s for s in truth["segments"] if s["kind"] == "catalog" and s["layer"] == "main"
                and s["end_s"] - s["start_s"] >= min_play_s]  # fmt: skip
    ends = {s["stream"]: s["duration_s"] for s in truth["stations"]}
    found: dict[int, list[dict]] = {i: [] for i in range(len(required))}
    false = []
    for p in plays.values():
        end = p["end_s"] if p["end_s"] is not None else ends[p["stream_id"]]
        hit = False
        for i, s in enumerate(required):
            if s["stream"] != p["stream_id"] or s["track_id"] != p["track_id"]:
                continue
            overlap = min(end, s["end_s"]) - max(p["start_s"], s["start_s"])
            if overlap >= 0.5 * (s["end_s"] - s["start_s"]):
                found[i].append(p)
                hit = True
        on_catalog = any(s["stream"] == p["stream_id"] and s["track_id"] == p["track_id"]
                         and min(end, s["end_s"]) - max(p["start_s"], s["start_s"]) >= 0.5 * (end - p["start_s"])
                         for s in truth["segments"] if s["kind"] == "catalog")  # fmt: skip
        if not hit and not on_catalog:
            false.append(p)
    return {"required": required, "found": found, "false": false}
