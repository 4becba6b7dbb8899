"""Helpers of the fault tests (tests/test_faults.py): servers of our own to break, paced ingest,
daemons in threads, and the delivery check against the simulator's ground truth.

The shared Kafka and Redis (``streamd services up``) serve every other test, so the fault tests
never stop them: :class:`PrivateRedis` is a redis-server on a free port in a temporary folder, and
:class:`PrivateKafka` a whole ``streamd services`` stack (broker + Redis) on free ports, started
with the project's jars. Both can be stopped, killed and started again with their data.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from daemon_helpers import match_plays

from streamd import audio, ingest, services
from streamd.config import Config, load_config
from streamd.daemon.runner import Daemon
from streamd.eval.simulate import Schedule, Source, simulate
from streamd.kafka_io import BoundedProducer, ensure_topics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_gone(pid: int, timeout_s: float = 60.0) -> None:
    """Wait until process ``pid`` has exited (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} still alive after {timeout_s} s")


class PrivateRedis:
    """A redis-server of our own: ``start()``, ``stop()`` (SIGTERM: saves its RDB), ``kill()`` (SIGKILL)."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> PrivateRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "3600 1", "--appendonly", "no", "--logfile", str(self.folder / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not services.redis_ready(self.port, timeout_s=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis did not start: {(self.folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class PrivateKafka:
    """A ``streamd services`` stack (Kafka broker + Redis) of our own on free ports in ``folder``.

    ``stop_kafka()`` stops the broker (SIGTERM, or SIGKILL with ``hard``); ``up()`` starts whatever
    is not running, keeping the data folder, like ``streamd services up``.
    """

    def __init__(self, folder: Path):
        self.config = load_config(overrides={
            "services.state_dir": str(folder), "services.kafka_port": free_port(),
            "services.kafka_controller_port": free_port(), "services.redis_port": free_port(),
            "services.start_timeout_s": 180, "services.kafka_heap_mb": 384,
        })  # fmt: skip
        version = self.config.services.kafka_version
        shared = services.state_dir(load_config()) / "kafka" / version / "libs"
        if (shared / ".complete").exists():  # the project's jars: no second download
            libs = folder / "kafka" / version / "libs"
            libs.parent.mkdir(parents=True, exist_ok=True)
            if not libs.exists():
                libs.symlink_to(shared)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.config.services.kafka_port}"

    def up(self) -> None:
        services.up(self.config, log=lambda _: None)

    def pid(self, name: str) -> int | None:
        return {s.name: s.pid for s in services.status(self.config)}[name]

    def stop_kafka(self, hard: bool = False) -> None:
        pid = self.pid("kafka")
        if pid is not None:
            os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
            wait_gone(pid, 90)

    def down(self) -> None:
        services.down(self.config, log=lambda _: None, timeout_s=30)


def fault_broadcast(out: Path, catalog: list, minutes: float, streams: int, seed: int) -> tuple[dict, dict]:
    """Clean stations of catalog excerpts (>= 30 s, mostly not whole tracks) and short silences:
    many plays per minute, so that a fault lands in the middle of some. → (truth, stream → audio)."""
    sources = [Source(t.track_id, t.path, t.duration_s) for t in catalog]
    schedule = Schedule(weights=(("catalog", 0.85), ("silence", 0.15)), full_track_probability=0.0,
                        crossfade_s=(0.0, 2.0), talkover_probability=0.0)  # fmt: skip
    truth = simulate(sources, [], out, hours=minutes / 60, streams=streams, seed=seed, clean_stations=streams,
                     schedule=schedule).to_dict()  # fmt: skip
    return truth, {s["stream"]: audio.load_audio(out / s["file"], 12000) for s in truth["stations"]}


def looped_blocks(base: np.ndarray, offset: int, block: int = 6000):
    """Endless 12 kHz audio: ``base`` from ``offset`` on, round and round, in blocks."""
    for start in itertools.count(offset, block):
        i = start % len(base)
        piece = base[i : i + block]
        yield piece if len(piece) == block else np.concatenate([piece, base[: block - len(piece)]])


# --- ingest -----------------------------------------------------------------------------------


CHUNK_MS = 500


@dataclass
class PacedIngest:
    """Produces streams in a thread at ``speed`` × real time (capture times start at ``start_ms``).

    ``speed`` is a number or a schedule ``[(until_audio_s, speed), ...]`` (the last speed holds on
    to the end), e.g. ``[(30, 1), (630, 10), (1e9, 1)]`` for a one-minute 10x burst. Chunks are stamped with their capture time; at speed > 1 those run ahead of the wall clock,
    which the daemon accepts (only audio *behind* the wall clock is shed). ``progress_s`` is the
    audio time produced so far; ``error`` holds what stopped the thread, if anything.
    """

    config: Config
    audios: dict[str, Any]  # stream id -> 12 kHz audio, or an iterable of blocks of it
    speed: float | list[tuple[float, float]] = 1.0
    drop: set[tuple[str, int]] = field(default_factory=set)  # (stream id, seq) lost on the way
    stagger: bool = False  # streams' chunk boundaries spread evenly over a chunk (independent stations), not aligned
    start_ms: int = field(default_factory=ingest.now_ms)
    progress_s: float = 0.0
    records: int = 0
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> PacedIngest:
        ensure_topics(self.config, {self.config.kafka.audio_topic: self.config.kafka.audio_partitions})
        self.thread = threading.Thread(target=self._run, name="paced-ingest", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            n = len(self.audios)
            phase_ms = [round(i * CHUNK_MS / n) if self.stagger else 0 for i in range(n)]
            records = ingest.merge_by_time(*(ingest.stream_chunks(a, 12000, sid, CHUNK_MS, start_ts_ms=self.start_ms + phase)
                                             for (sid, a), phase in zip(self.audios.items(), phase_ms, strict=True)))  # fmt: skip
            t0 = time.monotonic()
            topic = self.config.kafka.audio_topic
            with BoundedProducer(self.config) as producer:
                for record in records:
                    audio_s = (record.timestamp_ms - self.start_ms + ingest.record_duration_ms(record)) / 1000
                    wait = t0 + self.wall_s(audio_s) - time.monotonic()
                    if wait > 0 and self.stop.wait(wait):
                        break
                    if (record.key.decode(), int(dict(record.headers)["seq"])) in self.drop:
                        continue
                    producer.send(topic, value=record.value, key=record.key, headers=record.headers,
                                  timestamp_ms=min(record.timestamp_ms, ingest.now_ms()))  # fmt: skip
                    self.records += 1
                    self.progress_s = audio_s
        except BaseException as exc:  # reported by join()
            self.error = exc

    def wall_s(self, audio_s: float) -> float:
        """Seconds after the start at which ``audio_s`` of every stream is due."""
        if not isinstance(self.speed, list):
            return audio_s / self.speed
        wall, done = 0.0, 0.0
        for until_s, speed in self.speed:
            step = min(audio_s, until_s) - done
            if step <= 0:
                break
            wall, done = wall + step / speed, done + step
        return wall + max(0.0, audio_s - done) / self.speed[-1][1]

    def join(self, timeout_s: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "ingest did not finish in time"
        if self.error is not None:
            raise AssertionError(f"ingest failed: {self.error!r}") from self.error

    def wait_progress(self, audio_s: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.progress_s < audio_s:
            assert time.monotonic() < deadline and self.error is None, (self.progress_s, self.error)
            time.sleep(0.1)


def group_lag(config: Config) -> int:
    """Records of the audio topic the daemons' group has not committed yet (read from outside)."""
    from kafka import TopicPartition

    from streamd.kafka_io import make_consumer

    consumer = make_consumer(config)  # the group's id, never joined: only reads its offsets
    try:
        topic = config.kafka.audio_topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = consumer.end_offsets(tps)
        return sum(ends[tp] - max(0, consumer.committed(tp) or 0) for tp in tps)
    finally:
        consumer.close()


def wait_consumed(config: Config, timeout_s: float) -> None:
    """Wait until the group has committed every record of the audio topic."""
    deadline = time.monotonic() + timeout_s
    while (lag := group_lag(config)) > 0:
        assert time.monotonic() < deadline, f"{lag} records still uncommitted after {timeout_s} s"
        time.sleep(1.0)


# --- daemons ----------------------------------------------------------------------------------


class DaemonThread:
    """A :class:`Daemon` on a thread; ``stop()`` is its SIGTERM (finish, commit, leave the group)."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout_s: float = 60.0) -> None:
        self.daemon.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.error is not None:
            raise AssertionError(f"the daemon failed: {self.error!r}") from self.error


# --- checks -----------------------------------------------------------------------------------


@dataclass
class Delivery:
    """What the events topic says about a broadcast, against its ground truth."""

    required: int  # catalog plays of >= 30 s in the truth
    lost: list[str]  # required plays no play id covers
    split: list[str]  # required plays covered by more than one play id
    events: int  # records on the topic
    unique_events: int  # distinct event ids
    plays: int
    details: list[str] = field(default_factory=list)  # the plays behind lost/split/duplicates
    resent: int = 0  # deliveries of an id beyond those of the fault-free reference
    differing: int = 0  # event ids only in this run or only in the reference
    reference_lost: int = 0  # required plays the fault-free reference (the fingerprinter) misses

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of an event id (at-least-once re-sends, same id)."""
        return self.events - self.unique_events

    def summary(self) -> str:
        return (f"{self.required} required plays, {len(self.lost)} lost, {len(self.split)} split, "
                f"{self.plays} play ids, {self.events} events, {self.unique_events} unique, "
                f"{self.duplicates} same-id duplicates"
                + "".join(f"\n  {line}" for line in self.details))  # fmt: skip


def delivery(truth: dict, events: list[dict[str, Any]]) -> Delivery:
    """Compare events (read back from the topic) with the truth: lost plays, ids, duplicates."""
    from streamd.daemon import eventlog

    plays = eventlog.plays(events)
    result = match_plays(truth, plays)
    lost, split, details = [], [], []
    for i, segment in enumerate(result["required"]):
        where = f"{segment['stream']} {segment['track_id']} {segment['start_s']:.1f}-{segment['end_s']:.1f}"
        found = {p["play_id"]: p for p in result["found"][i]}
        if not found:
            lost.append(where)
        elif len(found) > 1:
            split.append(where)
            details += [f"split {where}: play {p['play_id'][:8]} {p['start_s']:.1f}-{p['end_s']}" for p in found.values()]
    seen: dict[str, int] = {}
    for e in events:
        seen[e["event_id"]] = seen.get(e["event_id"], 0) + 1
        if seen[e["event_id"]] == 2:
            details.append(f"re-sent {e['type']} {e['stream_id']} {e['track_id']} play {e['play_id'][:8]} "
                           f"{e['start_s']:.1f}-{e['end_s']} detected at {e['detected_at_ms']}")  # fmt: skip
    return Delivery(required=len(result["required"]), lost=lost, split=split,
                    events=len(events), unique_events=len({e["event_id"] for e in events}), plays=len(plays),
                    details=details)


def reference_events(config: Config, fp: Any, searcher: Any, audios: dict[str, np.ndarray],
                     start_ms: int) -> list[dict[str, Any]]:
    """The events of a fault-free run: the same chunks through one :class:`Pipeline`, no Kafka.

    The pipeline's decisions do not depend on how chunks are batched (each stream is decided hop
    by hop), so with shedding off this is exactly what an undisturbed daemon emits, ids included.
    """
    from streamd import protocol
    from streamd.daemon.pipeline import pipeline_from_config

    pipeline = pipeline_from_config(config, fp, searcher, shed_lag_s=float("inf"), max_lag_s=float("inf"))
    records = ingest.merge_by_time(*(ingest.stream_chunks(a, 12000, sid, 500, start_ts_ms=start_ms)
                                     for sid, a in audios.items()))  # fmt: skip
    chunks = [protocol.decode(r.key, r.value, r.headers) for r in records]
    return [d.document for lo in range(0, len(chunks), 2000) for d in pipeline.feed(chunks[lo : lo + 2000])]


def assert_delivered(truth: dict, events: list[dict[str, Any]], reference: list[dict[str, Any]],
                     handover: bool) -> Delivery:
    """Check a faulty run's events against the truth and the fault-free ``reference``.

    Always: no required play of the truth lost or split over two play ids that the reference finds
    whole (what the reference misses or splits is the stand-in fingerprinter's doing, not the
    fault's). Without a hand-over (the same daemon keeps its streams) the faulty run must emit
    exactly the reference's event ids, each as often. With a hand-over (a stream moves to another
    consumer, or the process restarts) the tracker's not-yet-started candidates are not part of
    the handed-over state (docs/daemon.md), so plays forming at that moment are re-detected and
    may differ from the reference; re-sends carry the same id.
    """
    d = delivery(truth, events)
    ref = delivery(truth, reference)
    assert d.required > 0, "the broadcast has no catalog play to find"
    ids, ref_ids = {e["event_id"] for e in events}, {e["event_id"] for e in reference}
    missing = [e for e in reference if e["event_id"] not in ids]
    extra = [e for e in events if e["event_id"] not in ref_ids]
    d.differing = len({e["event_id"] for e in missing + extra})
    d.resent = d.duplicates - ref.duplicates
    d.reference_lost = len(ref.lost)
    show = "\n".join(f"  {'missing' if e in missing else 'extra'} {e['type']} {e['stream_id']} {e['track_id']} "
                     f"{e['start_s']:.1f}-{e['end_s']}" for e in missing + extra)  # fmt: skip
    report = f"{d.summary()}\nreference: {ref.summary()}\n{show}"
    assert set(d.lost) <= set(ref.lost), report
    assert set(d.split) <= set(ref.split), report
    if not handover:
        assert not missing and not extra, report
        assert d.duplicates == ref.duplicates, report
    return d
