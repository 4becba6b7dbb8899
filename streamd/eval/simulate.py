"""Simulated radio stations with exact ground truth.

A station is a schedule of items — catalog tracks (full, or a 30 s+ excerpt from a random offset),
unknown music, DJ talk (espeak-ng), jingles and dead air — joined by crossfades, with DJ talk-over
at the start or end of songs (music ducked under the voice), then run through the station's
degradation chain (:mod:`streamd.degrade`): playback speed, EQ, multiband compression and limiting,
MP3/AAC, reverb, noise.

The schedule is planned first, from the seed alone, so the truth is known before any audio exists.
Audio is rendered in blocks of ``block_s`` seconds: each block is mixed with ``context_s`` of
pre-roll, degraded (noise seeds differ per block), and the pre-roll dropped, so filter tails,
compressor state and codec priming are right at block joins and hours of audio stay in bounded memory.

Truth times are output (station) times. A music item played ``speed`` times fast covers track time
``offset_s + (t - start_s) * speed`` at station time ``t``. Same seed, same inputs → byte-identical
files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import wave
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamd import degrade
from streamd.errors import StreamdError

KINDS = ("catalog", "unknown", "talk", "jingle", "silence")
MUSIC_KINDS = ("catalog", "unknown")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".oga")
PROGRAMME_DBFS = -20.0
"""Level every item is brought to before processing (RMS), as a station's loudness normalisation does."""

STATION_PROBABILITIES = {
    "speed": 0.3,
    "eq": 0.6,
    "compress": 0.8,
    "codec": 0.8,
    "reverb": 0.25,
    "noise": 0.5,
}
"""How often each station-level degradation is in a station's chain (at strength >= 0.5)."""


class SimulationError(StreamdError):
    """The simulator cannot run: no sources, unreadable lists, bad arguments."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A piece of music the simulator may play. ``audio`` (at the simulation rate) replaces ``path``."""

    track_id: str
    path: Path | None
    duration_s: float
    audio: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What the station plays, in what way: the knobs of :func:`plan_station`."""

    weights: tuple[tuple[str, float], ...] = (
        ("catalog", 0.55),
        ("unknown", 0.2),
        ("talk", 0.1),
        ("jingle", 0.1),
        ("silence", 0.05),
    )
    min_play_s: float = 30.0
    full_track_probability: float = 0.4
    crossfade_s: tuple[float, float] = (0.0, 5.0)
    talk_s: tuple[float, float] = (4.0, 20.0)
    jingle_s: tuple[float, float] = (2.0, 6.0)
    silence_s: tuple[float, float] = (0.5, 3.0)
    talkover_probability: float = 0.25
    talkover_s: tuple[float, float] = (3.0, 10.0)
    talkover_duck_db: tuple[float, float] = (6.0, 15.0)


@dataclasses.dataclass
class Item:
    """One scheduled element, in output samples. ``talkovers``: (start, end, duck_db), item-relative."""

    kind: str
    start: int
    end: int
    seed: int
    source: int = -1
    track_id: str = ""
    offset_s: float = 0.0
    speed: float = 1.0
    fade_in: int = 0
    fade_out: int = 0
    talkovers: list[tuple[int, int, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Segment:
    """A row of ground truth. ``layer`` is ``main`` for the programme and ``overlay`` for talk-over."""

    stream: str
    kind: str
    track_id: str
    start_s: float
    end_s: float
    offset_s: float
    speed: float
    layer: str = "main"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Station:
    stream: str
    file: str
    duration_s: float
    chain: degrade.DegradationChain

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "file": self.file,
            "duration_s": self.duration_s,
            "speed": self.chain.speed_factor,
            "degradations": sorted(set(self.chain.kinds)),
            "chain": self.chain.to_dict(),
        }


@dataclasses.dataclass(frozen=True)
class Truth:
    """Everything the scorer needs: stations (with their chains) and the segments they played."""

    sample_rate: int
    seed: int
    stations: tuple[Station, ...]
    segments: tuple[Segment, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "sample_rate": self.sample_rate,
            "seed": self.seed,
            "stations": [station.to_dict() for station in self.stations],
            "segments": [segment.to_dict() for segment in self.segments],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        stations = tuple(
            Station(
                s["stream"], s["file"], float(s["duration_s"]), degrade.DegradationChain.from_dict(s["chain"])
            )
            for s in data["stations"]
        )
        segments = tuple(Segment(**row) for row in data["segments"])
        return cls(int(data["sample_rate"]), int(data["seed"]), stations, segments)

    def write(self, out_dir: Path) -> None:
        """``truth.json`` (everything) and ``truth.csv`` (one row per segment, chain described)."""
        (out_dir / "truth.json").write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        chains = {station.stream: station.chain.describe() for station in self.stations}
        with open(out_dir / "truth.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(
                ["stream", "kind", "track_id", "start_s", "end_s", "offset_s", "speed", "layer", "chain"]
            )
            for s in self.segments:
                writer.writerow(
                    [s.stream, s.kind, s.track_id, f"{s.start_s:.4f}", f"{s.end_s:.4f}", f"{s.offset_s:.4f}"]
                    + [f"{s.speed:.5f}", s.layer, chains[s.stream]]
                )


def load_truth(path: Path) -> Truth:
    """Read ``truth.json`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "truth.json"
    try:
        return Truth.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SimulationError(f"cannot read ground truth {path}: {exc}") from exc


# --- Sources ------------------------------------------------------------------------------------


def probe_duration(path: Path) -> float:
    """Duration of an audio file in seconds from its container, without decoding."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise SimulationError(f"cannot read audio file {path}: {exc}") from exc
    raise SimulationError(f"{path}: the container does not say how long it is")


def _sources_from_manifest(manifest: Path) -> list[Source]:
    root = manifest.parent
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    sources = []
    for row in rows:
        relative = row.get("relative_path") or row.get("path")
        if not relative or not row.get("track_id"):
            raise SimulationError(f"{manifest}: rows need track_id and relative_path (or path)")
        path = root / relative
        duration = float(row["duration_s"]) if row.get("duration_s") else probe_duration(path)
        sources.append(Source(row["track_id"], path, duration))
    return sources


def find_sources(location: Path, track_ids: set[str] | None = None) -> list[Source]:
    """Music to play, from a folder or a list.

    - a folder with ``manifest.csv`` (the corpus layout): its rows, ids from the manifest;
    - any other folder: audio files found recursively, id = path relative to the folder without
      the suffix;
    - a ``.csv`` file: a manifest (``track_id``, ``relative_path`` or ``path``, optional ``duration_s``);
    - any other file: one audio path per line, id = file stem.

    ``track_ids`` keeps only those ids (e.g. the corpus's test split). Sorted by id, so the schedule
    does not depend on the order the file system lists files in.
    """
    location = Path(location).expanduser()
    if location.is_dir() and (location / "manifest.csv").exists():
        sources = _sources_from_manifest(location / "manifest.csv")
    elif location.is_dir():
        files = sorted(p for p in location.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        sources = [
            Source(p.relative_to(location).with_suffix("").as_posix(), p, probe_duration(p)) for p in files
        ]
    elif location.suffix.lower() == ".csv":
        sources = _sources_from_manifest(location)
    elif location.is_file():
        lines = [line.strip() for line in location.read_text().splitlines()]
        paths = [Path(line).expanduser() for line in lines if line and not line.startswith("#")]
        sources = [Source(p.stem, p, probe_duration(p)) for p in paths]
    else:
        raise SimulationError(f"{location}: no such folder or list file")
    if track_ids is not None:
        sources = [s for s in sources if s.track_id in track_ids]
    return sorted(sources, key=lambda s: s.track_id)


# --- Planning -----------------------------------------------------------------------------------


class _Deck:
    """Plays sources in a shuffled order, reshuffling when all were played (like a rotation)."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng, self.order = n, rng, []

    def draw(self) -> int:
        if not self.order:
            self.order = list(self.rng.permutation(self.n))
        return int(self.order.pop())


def _choose_kind(
    rng: np.random.Generator, schedule: Schedule, previous: str | None, available: set[str]
) -> str:
    kinds, weights = [], []
    for kind, weight in schedule.weights:
        repeat_ok = kind in MUSIC_KINDS or kind != previous
        if kind in available and weight > 0 and repeat_ok:
            kinds.append(kind)
            weights.append(weight)
    if not kinds:
        raise SimulationError(f"nothing to schedule: the weighted kinds have no sources ({schedule.weights})")
    p = np.asarray(weights) / np.sum(weights)
    return kinds[int(rng.choice(len(kinds), p=p))]


def plan_station(
    rng: np.random.Generator,
    catalog: Sequence[Source],
    unknown: Sequence[Source],
    duration_s: float,
    sr: int,
    speed: float = 1.0,
    schedule: Schedule | None = None,
) -> list[Item]:
    """The station's items in start order, covering [0, duration_s) — gaps never, overlaps only at
    crossfades. Music plays ``speed`` times fast; the last item is cut at the end."""
    schedule = schedule or Schedule()
    total = int(round(duration_s * sr))
    pools = {"catalog": catalog, "unknown": unknown}
    decks = {kind: _Deck(len(pool), rng) for kind, pool in pools.items() if pool}
    available = {"talk", "jingle", "silence"} | set(decks)
    if not decks:
        raise SimulationError("no music to play: the catalog and unknown lists are both empty")
    jingle_seeds = [int(s) for s in rng.integers(0, 2**31, 4)]  # a station reuses a few jingles
    items: list[Item] = []
    cursor = 0
    while cursor < total:
        previous = items[-1] if items else None
        kind = _choose_kind(rng, schedule, previous.kind if previous else None, available)
        item = Item(kind=kind, start=0, end=0, seed=int(rng.integers(0, 2**31)))
        if kind in MUSIC_KINDS:
            item.source = decks[kind].draw()
            source = pools[kind][item.source]
            length_s = max(0.1, source.duration_s - 0.05)  # container durations can be a little long
            min_track_s = schedule.min_play_s * speed  # so the excerpt lasts min_play_s on air
            if length_s > min_track_s and rng.random() >= schedule.full_track_probability:
                play_s = float(rng.uniform(min_track_s, length_s))
                item.offset_s = float(rng.uniform(0.0, length_s - play_s))
            else:
                play_s = length_s
            item.track_id, item.speed = source.track_id, speed
            length = int(round(play_s / speed * sr))
        else:
            lo, hi = {"talk": schedule.talk_s, "jingle": schedule.jingle_s, "silence": schedule.silence_s}[
                kind
            ]
            length = int(round(rng.uniform(lo, hi) * sr))
            if kind == "jingle":
                item.seed = jingle_seeds[int(rng.integers(0, len(jingle_seeds)))]
        overlap = 0
        if previous is not None and "silence" not in (kind, previous.kind):
            hi = schedule.crossfade_s[1] if kind in MUSIC_KINDS and previous.kind in MUSIC_KINDS else 1.0
            overlap = int(rng.uniform(schedule.crossfade_s[0], hi) * sr)
            overlap = min(overlap, (previous.end - previous.start) // 2, length // 2)
            previous.fade_out = overlap
        item.start = cursor - overlap
        item.end = item.start + length
        item.fade_in = overlap
        if kind in MUSIC_KINDS:
            _plan_talkovers(item, rng, schedule, sr)
        items.append(item)
        cursor = item.end
    last = items[-1]
    last.end = min(last.end, total)
    last.fade_out = 0
    last.talkovers = [
        (a, min(b, last.end - last.start), d) for a, b, d in last.talkovers if a < last.end - last.start
    ]
    return items


def _plan_talkovers(item: Item, rng: np.random.Generator, schedule: Schedule, sr: int) -> None:
    length = item.end - item.start
    for at_start in (True, False):
        if rng.random() >= schedule.talkover_probability:
            continue
        talk = int(min(rng.uniform(*schedule.talkover_s), 0.4 * length / sr) * sr)
        gap = int(rng.uniform(0.5, 2.0) * sr)
        start = gap if at_start else length - gap - talk
        if talk > sr and start >= 0:
            item.talkovers.append((start, start + talk, float(rng.uniform(*schedule.talkover_duck_db))))


def station_chain(rng: np.random.Generator, strength: float, clean: bool = False) -> degrade.DegradationChain:
    """A station's degradations (speed, EQ, compression, codec, reverb, noise), noise levels
    referenced to the programme level so block processing keeps them constant."""
    if clean:
        return degrade.DegradationChain()
    chain = degrade.random_chain(
        rng, strength, kinds=list(STATION_PROBABILITIES), probabilities=STATION_PROBABILITIES
    )
    steps = []
    for step in chain.steps:
        if step.kind == "noise":
            step = degrade.Step("noise", {**step.params, "ref_dbfs": PROGRAMME_DBFS})
        steps.append(step)
    return degrade.DegradationChain(tuple(steps))


def segments_of(stream: str, items: Sequence[Item], sr: int) -> list[Segment]:
    """Ground truth rows for a planned station: one per item, plus one ``overlay`` row per talk-over."""
    rows = []
    for item in items:
        rows.append(
            Segment(
                stream=stream,
                kind=item.kind,
                track_id=item.track_id,
                start_s=round(item.start / sr, 6),
                end_s=round(item.end / sr, 6),
                offset_s=round(item.offset_s, 6),
                speed=item.speed if item.kind in MUSIC_KINDS else 1.0,
            )
        )
        for start, end, _ in item.talkovers:
            rows.append(
                Segment(
                    stream,
                    "talk",
                    "",
                    round((item.start + start) / sr, 6),
                    round((item.start + end) / sr, 6),
                    0.0,
                    1.0,
                    "overlay",
                )
            )
    return rows


# --- Rendering ----------------------------------------------------------------------------------


def jingle(duration_s: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A station sting: a rising arpeggio of bright harmonic notes into a decaying chord, over a
    noise swell. Unit peak."""
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr
    root = rng.uniform(220.0, 440.0)
    intervals = rng.choice([[0, 4, 7, 12], [0, 5, 9, 12], [0, 3, 7, 10], [0, 7, 12, 16]])
    note_s = rng.uniform(0.1, 0.25)
    out = np.zeros(n)
    for i, semitones in enumerate(intervals):
        onset = i * note_s
        envelope = np.where(t >= onset, np.exp(-(t - onset) / (0.4 * duration_s)), 0.0)
        freq = root * 2.0 ** (semitones / 12.0)
        for harmonic in range(1, 6):
            if freq * harmonic < 0.45 * sr:
                out += envelope * np.sin(2 * np.pi * freq * harmonic * t) / harmonic**1.2
    swell = degrade.coloured_noise(n, sr, "pink", rng) * np.exp(-(((t - 0.2) / 0.15) ** 2)) * 0.3
    out = (out + swell) * np.minimum(1.0, (n - np.arange(n)) / (0.05 * sr))
    return (out / (np.max(np.abs(out)) + 1e-9)).astype(np.float32)


def _level(audio: np.ndarray, target_dbfs: float = PROGRAMME_DBFS) -> np.ndarray:
    """``audio`` at ``target_dbfs`` RMS, or less where that would push peaks past 0.98."""
    active = audio[np.abs(audio) > 1e-4]
    if len(active) == 0:
        return audio
    gain = min(10 ** ((target_dbfs - degrade.power_db(active)) / 20.0), 0.98 / float(np.max(np.abs(audio))))
    return (audio * gain).astype(np.float32)


class AudioLoader(Protocol):
    def __call__(self, path: Path, sample_rate: int) -> np.ndarray: ...


def default_loader(path: Path, sample_rate: int) -> np.ndarray:
    """Decode with :func:`streamd.audio.load_audio` (float32 mono at ``sample_rate``)."""
    from streamd.audio import load_audio

    return load_audio(path, sample_rate=sample_rate)


class _TrackCache:
    """Decoded, level-normalised sources; a few at a time, since a station plays them in order."""

    def __init__(self, sources: Sequence[Source], sr: int, loader: AudioLoader, size: int = 4) -> None:
        self.sources, self.sr, self.loader, self.size = sources, sr, loader, size
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def get(self, index: int) -> np.ndarray:
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        source = self.sources[index]
        audio = source.audio if source.audio is not None else self.loader(source.path, self.sr)
        audio = _level(np.asarray(audio, dtype=np.float32))
        self.cache[index] = audio
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return audio


def render_item(item: Item, sr: int, tracks: dict[str, _TrackCache]) -> np.ndarray:
    """The clean audio of one item (``end - start`` samples), faded and with its talk-overs."""
    n = item.end - item.start
    rng = np.random.default_rng(item.seed)
    if item.kind in MUSIC_KINDS:
        track = tracks[item.kind].get(item.source)
        first = int(round(item.offset_s * sr))
        need = int(math.ceil(n * item.speed)) + 64
        portion = track[first : first + need]
        portion = np.pad(portion, (0, max(0, need - len(portion))))
        audio = degrade.change_speed(portion, sr, item.speed) if item.speed != 1.0 else portion
        audio = np.pad(audio[:n], (0, max(0, n - len(audio))))
        audio = _mix_talkovers(audio, item.talkovers, sr, rng)
    elif item.kind == "talk":
        audio = _level(degrade.talk(n / sr, sr, rng))
    elif item.kind == "jingle":
        audio = _level(jingle(n / sr, sr, rng))
    else:
        audio = np.zeros(n, np.float32)
    return degrade.fade(audio, item.fade_in, item.fade_out)


def _mix_talkovers(music: np.ndarray, talkovers: list[tuple[int, int, float]], sr: int, rng) -> np.ndarray:
    """Duck the music by ``duck_db`` (0.3 s ramps) under each talk-over and add the voice."""
    if not talkovers:
        return music
    duck_db = np.zeros(len(music))
    voice = np.zeros(len(music), np.float32)
    ramp = int(0.3 * sr)
    for start, end, depth in talkovers:
        envelope = np.interp(
            np.arange(len(music)), [start - ramp, start, end, end + ramp], [0.0, 1.0, 1.0, 0.0]
        )
        duck_db = np.minimum(duck_db, -depth * envelope)
        voice[start:end] += _level(degrade.talk((end - start) / sr, sr, rng))
    return (music * 10.0 ** (duck_db / 20.0) + voice).astype(np.float32)


class _Writer(Protocol):
    def write(self, block: np.ndarray) -> None: ...


def _to_int16(block: np.ndarray) -> np.ndarray:
    return np.clip(np.round(block * 32767.0), -32768, 32767).astype("<i2")


@contextmanager
def open_writer(path: Path, sr: int, fmt: str) -> Iterator[_Writer]:
    """A mono 16-bit WAV or FLAC writer taking float32 blocks."""
    if fmt == "wav":
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sr)

            class WavWriter:
                def write(self, block: np.ndarray) -> None:
                    wav.writeframes(_to_int16(block).tobytes())

            yield WavWriter()
    elif fmt == "flac":
        import av

        with av.open(str(path), "w", format="flac") as container:
            stream = container.add_stream("flac", rate=sr)
            stream.layout = "mono"
            stream.format = "s16"
            written = [0]

            class FlacWriter:
                def write(self, block: np.ndarray) -> None:
                    frame = av.AudioFrame.from_ndarray(_to_int16(block)[None, :], format="s16", layout="mono")
                    frame.sample_rate, frame.pts = sr, written[0]
                    written[0] += len(block)
                    for packet in stream.encode(frame):
                        container.mux(packet)

            yield FlacWriter()
            for packet in stream.encode(None):
                container.mux(packet)
    else:
        raise SimulationError(f"format must be wav or flac, got {fmt!r}")


def render_station(
    items: Sequence[Item],
    chain: degrade.DegradationChain,
    sr: int,
    tracks: dict[str, _TrackCache],
    writer: _Writer,
    block_s: float = 60.0,
    context_s: float = 3.0,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Mix, degrade and write a planned station block by block (see the module docstring)."""
    block_chain = chain.without("speed")  # speed is applied per music item when it is rendered
    total = items[-1].end if items else 0
    block, context = int(block_s * sr), int(context_s * sr)
    rendered: dict[int, np.ndarray] = {}
    upcoming = 0
    for index, block_start in enumerate(range(0, total, block)):
        block_end = min(block_start + block, total)
        window_start = max(0, block_start - context)
        while upcoming < len(items) and items[upcoming].start < block_end:
            rendered[upcoming] = render_item(items[upcoming], sr, tracks)
            upcoming += 1
        mix = np.zeros(block_end - window_start, np.float32)
        for i, audio in rendered.items():
            item = items[i]
            lo, hi = max(item.start, window_start), min(item.end, block_end)
            if lo < hi:
                mix[lo - window_start : hi - window_start] += audio[lo - item.start : hi - item.start]
        degraded = degrade.apply(mix, sr, block_chain.reseeded(index))
        writer.write(degraded[block_start - window_start :])
        for i in [i for i in rendered if items[i].end <= block_end - context]:  # not needed again
            del rendered[i]
        if progress:
            progress(block_end / sr)


# --- The whole run ------------------------------------------------------------------------------


def _station_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0x5717, int(index)])


def plan(
    catalog: Sequence[Source],
    unknown: Sequence[Source],
    hours: float,
    streams: int,
    seed: int = 0,
    sample_rate: int = 12000,
    fmt: str = "wav",
    clean_stations: int = 1,
    strength: tuple[float, float] = (0.3, 1.0),
    schedule: Schedule | None = None,
) -> tuple[Truth, list[list[Item]]]:
    """Stations, their chains and schedules, and the truth — without rendering any audio."""
    if streams < 1 or hours <= 0:
        raise SimulationError("need at least one stream and a positive duration")
    if fmt not in ("wav", "flac"):
        raise SimulationError(f"format must be wav or flac, got {fmt!r}")
    duration_s = hours * 3600.0
    stations, segments, schedules = [], [], []
    for index in range(streams):
        rng = _station_rng(seed, index)
        chain = station_chain(rng, float(rng.uniform(*strength)), clean=index < clean_stations)
        stream = f"sim-{index:03d}"
        items = plan_station(rng, catalog, unknown, duration_s, sample_rate, chain.speed_factor, schedule)
        stations.append(Station(stream, f"{stream}.{fmt}", round(items[-1].end / sample_rate, 6), chain))
        segments += segments_of(stream, items, sample_rate)
        schedules.append(items)
    return Truth(sample_rate, seed, tuple(stations), tuple(segments)), schedules


def _render_one(
    station: Station,
    items: list[Item],
    catalog: Sequence[Source],
    unknown: Sequence[Source],
    out_dir: Path,
    sr: int,
    loader: AudioLoader,
    block_s: float,
    progress: Callable[[float], None] | None,
) -> None:
    tracks = {"catalog": _TrackCache(catalog, sr, loader), "unknown": _TrackCache(unknown, sr, loader)}
    path = out_dir / station.file
    with open_writer(path, sr, path.suffix.lstrip(".")) as writer:
        render_station(items, station.chain, sr, tracks, writer, block_s=block_s, progress=progress)


def simulate(
    catalog: Sequence[Source],
    unknown: Sequence[Source],
    out_dir: Path,
    hours: float = 1.0,
    streams: int = 4,
    seed: int = 0,
    sample_rate: int = 12000,
    fmt: str = "wav",
    clean_stations: int = 1,
    strength: tuple[float, float] = (0.3, 1.0),
    schedule: Schedule | None = None,
    loader: AudioLoader | None = None,
    block_s: float = 60.0,
    progress: Callable[[str, float], None] | None = None,
    jobs: int = 1,
) -> Truth:
    """Write ``streams`` station recordings of ``hours`` each into ``out_dir`` plus ``truth.json`` and
    ``truth.csv``, and return the truth. The first ``clean_stations`` stations are undegraded (a
    reference); the others get a random chain at a strength drawn from ``strength``.
    ``progress(stream, seconds_written)`` is called after every block. ``jobs`` > 1 renders that
    many stations at once in worker processes (the output does not depend on it)."""
    truth, schedules = plan(
        catalog, unknown, hours, streams, seed, sample_rate, fmt, clean_stations, strength, schedule
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth.write(out_dir)
    work = [
        (station, items, catalog, unknown, out_dir, sample_rate, loader or default_loader, block_s)
        for station, items in zip(truth.stations, schedules, strict=True)
    ]
    if jobs <= 1 or len(work) == 1:
        for args in work:
            stream = args[0].stream
            _render_one(*args, (lambda seconds, s=stream: progress(s, seconds)) if progress else None)
    else:
        _render_in_processes(work, jobs, progress)
    return truth


def _render_with_queue(args: tuple, queue: Any) -> None:
    stream = args[0].stream
    _render_one(*args, lambda seconds: queue.put((stream, seconds)))


def _render_in_processes(work: list[tuple], jobs: int, progress: Callable[[str, float], None] | None) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context) as pool:
        queue = manager.Queue()
        pending = {pool.submit(_render_with_queue, args, queue) for args in work}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            while not queue.empty():
                stream, seconds = queue.get()
                if progress:
                    progress(stream, seconds)
            for future in done:
                future.result()  # re-raise a worker's error here
