"""Training examples: what the daemon will hear (query) next to what the catalog indexed (reference).

One *item* is a run of ``windows`` consecutive hop-spaced windows over a training track X:

- reference view: the clean track, windows ending at X-samples R_0, R_0 + hop, ... and silence
  before the track start, exactly as ``Fingerprinter.codes_for_audio`` indexes a catalog;
- query view: the broadcast's view of the same moments. With probability ``partial_prob`` the
  first window holds only the newest ``fill`` seconds (3-29 s, uniform or log-uniform) of X, preceded by other music,
  DJ talk, noise or silence, often crossfaded; X is taken from its start (a track change) or from
  anywhere (a stream joined late, a DJ cut). X may be played ±3 % fast, may come from a
  precomputed MP3/AAC copy, and the whole query goes through a random degradation chain
  (``streamd.degrade``). The query's hop grid is shifted against the reference by up to ±half a
  hop, because the daemon's grid is not aligned with the catalog's.

Query window w and reference window w are positives; later windows have more of X in them, so
one item covers a range of fills. Both views are returned as log-mel sequences of exactly
``overhead + 48 · (n_steps + windows - 1)`` frames, ready for ``HashNet.hop_features``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from streamd import degrade
from streamd.dataset import SAMPLE_RATE, Track, audio_cache_path, codec_variant_name, load_audio
from streamd.errors import StreamdError
from streamd.melspec import MelParams, offline_logmel
from streamd.model.network import ArchConfig


@dataclass(frozen=True)
class ViewConfig:
    items: int = 8
    windows: int = 16
    partial_prob: float = 0.7
    track_start_prob: float = 0.5
    min_fill_s: float = 3.0
    max_fill_s: float = 29.0
    fill_distribution: str = "uniform"  # of the first window's fill: "uniform" | "log-uniform"
    shift_hops: float = 0.5
    speed_prob: float = 0.3
    max_speed: float = 0.03
    codec_prob: float = 0.5
    codec_copies: int = 2
    degrade_prob: float = 0.8
    compress_prob: float = 0.25  # the multiband compressor is the costliest on-the-fly step
    # Chance of each degradation step (degrade.DEFAULT_PROBABILITIES otherwise), e.g. {"speech": 0.4}
    # to train harder on what ``streamd eval``'s breakdown puts at the bottom.
    degrade_probabilities: dict[str, float] = field(default_factory=dict)
    min_strength: float = 0.2
    max_strength: float = 1.0
    crossfade_prob: float = 0.5
    max_crossfade_s: float = 4.0
    prefix_music: float = 0.6
    prefix_talk: float = 0.15
    prefix_noise: float = 0.15  # the rest is silence

    def __post_init__(self) -> None:
        unknown = set(self.degrade_probabilities) - set(degrade.STEPS)
        if unknown:
            raise StreamdError(f"views.degrade_probabilities: unknown step(s) {sorted(unknown)}; known: {', '.join(degrade.STEPS)}")
        if any(not 0.0 <= p <= 1.0 for p in self.degrade_probabilities.values()):
            raise StreamdError("views.degrade_probabilities: each chance must be in [0, 1]")


class TrackAudio:
    """Cached 12 kHz audio of a set of tracks (clean and codec copies), loaded lazily per process."""

    def __init__(self, tracks: tuple[Track, ...]):
        self.tracks = tracks
        self._clean: dict[int, np.ndarray] = {}

    def clean(self, index: int) -> np.ndarray:
        if index not in self._clean:
            self._clean[index] = load_audio(self.tracks[index])
        return self._clean[index]

    def variant(self, index: int, rng: np.random.Generator, copies: int) -> np.ndarray | None:
        """A random precomputed codec copy, or None when none is cached (yet)."""
        track = self.tracks[index]
        available = [i for i in range(copies) if audio_cache_path(track, None, codec_variant_name(i)).exists()]
        if not available:
            return None
        return load_audio(track, variant=codec_variant_name(int(rng.choice(available))))


def _excerpt(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """audio[start : start + length] with zeros where that reaches outside the track."""
    out = np.zeros(length, np.float32)
    lo, hi = max(0, start), min(len(audio), start + length)
    if hi > lo:
        out[lo - start : hi - start] = audio[lo:hi]
    return out


class ViewMaker:
    """Builds batches of (query, reference) log-mel sequences; deterministic given an rng."""

    def __init__(self, tracks: tuple[Track, ...], arch: ArchConfig, views: ViewConfig, mel: MelParams = MelParams()):
        self.audio = TrackAudio(tracks)
        self.arch, self.cfg, self.mel = arch, views, mel
        self.hop = arch.hop_frames * mel.hop_length
        self.frames = arch.overhead_frames + arch.hop_frames * (arch.n_steps + views.windows - 1)
        self.samples = mel.hop_length * (self.frames - 1) + mel.n_fft
        self.groups = [t.group for t in tracks]

    def _prefix(self, rng: np.random.Generator, n: int, exclude_group: str) -> np.ndarray:
        cfg = self.cfg
        kind = rng.random()
        if kind < cfg.prefix_music:
            while True:
                other = int(rng.integers(len(self.groups)))
                if self.groups[other] != exclude_group:
                    break
            audio = self.audio.clean(other)
            return _excerpt(audio, int(rng.integers(0, max(1, len(audio) - n))), n)
        if kind < cfg.prefix_music + cfg.prefix_talk:
            return degrade.talk(n / SAMPLE_RATE, SAMPLE_RATE, rng).astype(np.float32) * np.float32(rng.uniform(0.3, 1.0))
        if kind < cfg.prefix_music + cfg.prefix_talk + cfg.prefix_noise:
            color = str(rng.choice(["white", "pink", "brown"]))
            noise = degrade.coloured_noise(n, SAMPLE_RATE, color, rng)
            return (noise * np.float32(10 ** (rng.uniform(-45, -20) / 20) / (np.std(noise) + 1e-9))).astype(np.float32)
        return np.zeros(n, np.float32)

    def item(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """One item: (query audio, reference audio, fill seconds of window 0, or the seconds the model reads if full)."""
        cfg, hop, n = self.cfg, self.hop, self.samples
        x = self.audio.clean(index)
        span = (cfg.windows - 1) * hop
        window_s = self.arch.input_frames * self.mel.hop_length / SAMPLE_RATE
        speed = 1.0 + rng.uniform(-cfg.max_speed, cfg.max_speed) if rng.random() < cfg.speed_prob else 1.0
        shift = int(rng.uniform(-cfg.shift_hops, cfg.shift_hops) * hop)
        q_end0 = n - span  # query sample where window 0 ends
        partial = rng.random() < cfg.partial_prob
        if partial:
            if cfg.fill_distribution == "log-uniform":  # favours the short fills right after a change
                fill_s = float(np.exp(rng.uniform(np.log(cfg.min_fill_s), np.log(cfg.max_fill_s))))
            else:
                fill_s = float(rng.uniform(cfg.min_fill_s, cfg.max_fill_s))
            fill = min(int(fill_s * SAMPLE_RATE), q_end0)
            longest = len(x) - span - hop - int(fill * speed)
            start = 0 if rng.random() < cfg.track_start_prob or longest <= 0 else int(rng.integers(0, longest))
            r0 = start + int(fill * speed) - shift
            q_start = q_end0 - fill
        else:
            fill = q_end0
            lo, hi = int(window_s * SAMPLE_RATE), len(x) - span - hop
            r0 = int(rng.integers(lo, hi)) if hi > lo else int(rng.integers(hop, max(hop + 1, len(x) - span)))
            start = r0 + shift - int(q_end0 * speed)
            q_start = 0
        r0 = max(r0, hop // 2)
        reference = _excerpt(x, r0 + span - n, n)

        source = x
        if rng.random() < cfg.codec_prob:
            source = self.audio.variant(index, rng, cfg.codec_copies)
            source = x if source is None else source
        x_len = n - q_start
        x_part = _excerpt(source, start, int(np.ceil(x_len * speed)) + 64)
        if speed != 1.0:
            x_part = degrade.change_speed(x_part, SAMPLE_RATE, speed)
        x_part = _excerpt(x_part, 0, x_len)
        if q_start > 0:
            overlap = int(rng.uniform(0.2, cfg.max_crossfade_s) * SAMPLE_RATE) if rng.random() < cfg.crossfade_prob else 0
            overlap = min(overlap, q_start)
            prefix = self._prefix(rng, q_start + overlap, self.groups[index])
            query = degrade.crossfade(prefix, x_part, overlap)[:n]
        else:
            query = x_part
        if rng.random() < cfg.degrade_prob:
            chain = degrade.random_chain(
                rng,
                float(rng.uniform(cfg.min_strength, cfg.max_strength)),
                kinds=[k for k in degrade.STEPS if k not in ("speed", "codec")],
                probabilities={"compress": cfg.compress_prob, **cfg.degrade_probabilities},
            )
            backgrounds = [self.audio.clean(int(rng.integers(len(self.groups))))]
            query = degrade.apply(query, SAMPLE_RATE, chain, backgrounds=backgrounds)
        return query.astype(np.float32), reference, fill / SAMPLE_RATE if partial else window_s

    def batch(self, rng: np.random.Generator, indices: np.ndarray) -> dict[str, torch.Tensor]:
        queries, references, fills = [], [], []
        for index in indices:
            q, r, fill = self.item(rng, int(index))
            queries.append(q)
            references.append(r)
            fills.append(fill)
        query = offline_logmel(torch.from_numpy(np.stack(queries)), self.mel)
        reference = offline_logmel(torch.from_numpy(np.stack(references)), self.mel)
        assert query.shape[-1] == self.frames, (query.shape, self.frames)
        return {
            "query": query,
            "reference": reference,
            "track": torch.as_tensor(np.asarray(indices), dtype=torch.long),
            "fill_s": torch.as_tensor(fills, dtype=torch.float32),
        }
