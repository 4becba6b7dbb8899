"""The development corpus as the model sees it: a deterministic track split and a decoded-audio cache.

The corpus (``../shared/corpus/build_corpus.sh --set dev``) is a folder with ``manifest.csv`` and
the original ogg/opus/flac files. Training reads tracks thousands of times, so every track is
decoded once to 12 kHz mono int16 (``<cache>/audio12k/<track_id>.npy``, ~0.9 GB for the dev
set) and memory-mapped afterwards.

The split is by *group* of related recordings, so a sped-up, remastered or "old" version of a
test track never appears in training. Groups come from normalised file stems (see
:func:`group_key`); the assignment of groups to train / val / test is a pure function of the
group names, so every machine and every session gets the same split.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamd.errors import AudioDecodeError, StreamdError

SAMPLE_RATE = 12000
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.10, "test": 0.20}
SPLIT_SALT = "streamd-split-v1"

# Suffixes that mark another version of the same piece (sped up, remastered, old, remixed).
_VARIANT_SUFFIXES = ("_fast", "_f", "_enhanced", "-old", "_old", "_remix", "_remake", "-epic", "_epic")


def default_corpus_dir() -> Path:
    return Path(os.environ.get("STREAMD_CORPUS", Path.home() / ".cache" / "streamd" / "corpus"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("STREAMD_CACHE", Path.home() / ".cache" / "streamd"))


@dataclass(frozen=True)
class Track:
    track_id: str
    package: str
    path: Path
    duration_s: float
    group: str


@dataclass(frozen=True)
class Split:
    train: tuple[Track, ...]
    val: tuple[Track, ...]
    test: tuple[Track, ...]

    def __getitem__(self, name: str) -> tuple[Track, ...]:
        return getattr(self, name)

    def all(self) -> tuple[Track, ...]:
        return self.train + self.val + self.test


def _strip_variant(stem: str) -> str:
    changed = True
    while changed:
        changed = False
        for suffix in _VARIANT_SUFFIXES:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                stem, changed = stem[: -len(suffix)], True
    return stem


def _normalise_stem(stem: str) -> str:
    # warzone2100 ships the same track under original_/legacy_/aftermath_soundtrack_ prefixes.
    return _strip_variant(re.sub(r"^[a-z]+_soundtrack_", "", stem.lower()))


def group_key(track_id: str, sibling_stems: set[str]) -> str:
    """The group a track belongs to: ``package__normalised stem``.

    Variant suffixes (``_fast``, ``_f``, ``_enhanced``, ``-old``, ``_remix`` ...) are removed,
    and a trailing ``2``/``_2``-style digit is removed when the stem without it names another
    track of the same package (``forest2`` → ``forest``, ``airship_2`` → ``airship``), so
    sequels and alternates stay with their original. ``track10`` never joins ``track1``. Soundtrack
    edition prefixes (warzone2100 ``original_soundtrack_``/``aftermath_soundtrack_``) are ignored,
    so ``track3`` and ``track3_enhanced`` share a group.
    """
    package, _, stem = track_id.partition("__")
    stem = _normalise_stem(stem)
    bases = {_normalise_stem(s) for s in sibling_stems}
    match = re.fullmatch(r"(.*?\D)[_-]?(\d)", stem)
    if match and match.group(1) in bases and match.group(1) != stem:
        stem = match.group(1)
    return f"{package}__{stem}"


def read_manifest(corpus_dir: Path | None = None) -> list[Track]:
    corpus_dir = Path(corpus_dir or default_corpus_dir())
    manifest = corpus_dir / "manifest.csv"
    if not manifest.exists():
        raise StreamdError(
            f"no corpus at {corpus_dir} (manifest.csv missing); build it with "
            f"`bash ../shared/corpus/build_corpus.sh --set dev --out {corpus_dir}`"
        )
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    stems_by_package: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        package, _, stem = row["track_id"].partition("__")
        stems_by_package[package].add(stem)
    return [
        Track(
            track_id=row["track_id"],
            package=row["package"],
            path=corpus_dir / row["relative_path"],
            duration_s=float(row["duration_s"]),
            group=group_key(row["track_id"], stems_by_package[row["package"]]),
        )
        for row in rows
    ]


def split_tracks(tracks: list[Track], fractions: dict[str, float] = SPLIT_FRACTIONS) -> Split:
    """Assign whole groups to train/val/test, aiming at ``fractions`` of the track count.

    Groups are ordered by a salted hash of their name (stable across runs and machines) and
    dealt out greedily: each group goes to the split that is furthest below its target.
    """
    groups: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        groups[track.group].append(track)
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{SPLIT_SALT}:{g}".encode()).hexdigest())
    assigned: dict[str, list[Track]] = {name: [] for name in fractions}
    total = len(tracks)
    for group in order:
        deficit = {name: fractions[name] * total - len(assigned[name]) for name in fractions}
        target = max(deficit, key=lambda name: (deficit[name], name == "train"))
        assigned[target].extend(sorted(groups[group], key=lambda t: t.track_id))
    return Split(**{name: tuple(sorted(v, key=lambda t: t.track_id)) for name, v in assigned.items()})


def load_split(corpus_dir: Path | None = None) -> Split:
    """The deterministic train / val / test split of the corpus at ``corpus_dir``."""
    return split_tracks(read_manifest(corpus_dir))


def decode_to_12k(path: Path) -> np.ndarray:
    """Decode any audio file to mono float32 at 12 kHz (PyAV + soxr)."""
    import av
    import soxr

    pieces: list[np.ndarray] = []
    bad_packets = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            rate = stream.rate or 48000
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    bad_packets += 1  # a corrupt packet (seen in one Debian ogg): skip, keep going
                    continue
                for frame in frames:
                    pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise AudioDecodeError(f"cannot decode {path}: {exc}") from None
    if not pieces or bad_packets > 100:
        raise AudioDecodeError(f"cannot decode {path}: {bad_packets} bad packets, no audio")
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def audio_cache_path(track: Track, cache_dir: Path | None = None, variant: str = "clean") -> Path:
    return Path(cache_dir or default_cache_dir()) / "audio12k" / variant / f"{track.track_id}.npy"


def load_audio(track: Track, cache_dir: Path | None = None, variant: str = "clean") -> np.ndarray:
    """The track at 12 kHz as float32, decoding and caching it (int16 .npy) on first use."""
    path = audio_cache_path(track, cache_dir, variant)
    if not path.exists():
        if variant != "clean":
            raise StreamdError(f"no cached {variant!r} copy of {track.track_id} at {path}")
        audio = decode_to_12k(track.path)
        save_audio(path, audio)
    return np.load(path, mmap_mode="r").astype(np.float32) / 32767.0


def save_audio(path: Path, audio: np.ndarray) -> None:
    """Write 12 kHz audio as int16 .npy atomically (rename), so a killed job leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16))
    os.replace(tmp, path)


def build_audio_cache(tracks: list[Track] | tuple[Track, ...], cache_dir: Path | None = None) -> int:
    """Decode every track that is not cached yet; returns how many were decoded."""
    decoded = 0
    for track in tracks:
        if not audio_cache_path(track, cache_dir).exists():
            load_audio(track, cache_dir)
            decoded += 1
    return decoded


def codec_variant_name(index: int) -> str:
    return f"codec{index}"


def build_codec_copies(tracks: list[Track] | tuple[Track, ...], copies: int = 2, seed: int = 0, cache_dir: Path | None = None) -> int:
    """Precompute ``copies`` MP3/AAC round trips (32-128 kb/s, random per track) of each track.

    The codec is the one expensive degradation (~15 ms per second of audio), so training draws
    it from these copies and applies the cheap rest of the chain on the fly. Copy ``i`` of a
    track is deterministic in (seed, track, i). Returns how many copies were written.
    """
    from streamd import degrade

    written = 0
    for track in tracks:
        for index in range(copies):
            path = audio_cache_path(track, cache_dir, codec_variant_name(index))
            if path.exists():
                continue
            digest = int(hashlib.sha256(f"{seed}:{track.track_id}:{index}".encode()).hexdigest()[:8], 16)
            rng = np.random.default_rng(digest)
            step = degrade.random_step("codec", rng, severity=float(rng.uniform(0.3, 1.0)))
            save_audio(path, degrade.codec_roundtrip(load_audio(track, cache_dir), SAMPLE_RATE, **step.params))
            written += 1
    return written


if __name__ == "__main__":
    split = load_split()
    for name in SPLIT_FRACTIONS:
        tracks = split[name]
        print(name, len(tracks), f"{sum(t.duration_s for t in tracks) / 3600:.2f} h")
    print("decoded", build_audio_cache(split.all()), flush=True)
    import sys

    if "--codec-copies" in sys.argv:
        print("codec copies", build_codec_copies(split.train), flush=True)
