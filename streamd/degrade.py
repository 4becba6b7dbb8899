"""Degradations that a broadcast chain does to music, for training augmentation and the simulator.

Every degradation is a plain function ``f(audio, sr, **params) -> audio`` on float32 mono numpy audio in
[-1, 1]. All of them except :func:`change_speed` keep the length and the time alignment of the input
(codec delay and filter delay are compensated), so ground-truth times stay right. Random ones take an
integer ``seed`` and are deterministic given it.

A :class:`DegradationChain` is a list of :class:`Step` (a kind from :data:`STEPS` and its parameters).
It is JSON-serialisable, so a chain can be stored next to the audio it made and replayed exactly:

    rng = np.random.default_rng(0)
    chain = random_chain(rng, strength=0.7)      # e.g. speed -> eq -> compress -> codec -> noise
    degraded = apply(audio, 12000, chain)
    DegradationChain.from_json(chain.to_json()) == chain

Parameter ranges (what :func:`random_chain` draws, ``strength`` = 1 reaches the harsh end):

    noise       snr_db 20..0, color white | pink | brown
    background  other music mixed at snr_db 20..0 (music-to-background power ratio)
    speech      espeak-ng talk mixed at snr_db 20..0 (music-to-speech power ratio)
    codec       mp3 | aac, bitrate_kbps 128..32, encoded at 12/22.05/24/44.1 kHz
    eq          1-3 peaking/shelving bands of +-3..12 dB, tilt +-0..3 dB/octave, optional band limits
    reverb      rt60_s 0.2..1.0, wet 0.1..0.5
    speed       factor 1 +- 0..0.03 (pitch and tempo change together; the output length is n / factor)
    gain        db -3..+3 up to -12..+6
    compress    multiband, threshold_db -10..-30, ratio 2..8, then a limiter at -1 dBFS
    limit       lookahead peak limiter, ceiling_db -1..-6

docs/degradations.md has the table with the reasoning behind each range.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import wave
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from streamd.errors import StreamdError

__all__ = [
    "STEPS",
    "DegradationChain",
    "DegradationError",
    "Step",
    "add_background",
    "add_noise",
    "add_speech",
    "apply",
    "change_speed",
    "codec_roundtrip",
    "coloured_noise",
    "compress",
    "crossfade",
    "fade",
    "fade_curves",
    "equalize",
    "gain",
    "limit",
    "mix_at_snr",
    "power_db",
    "random_chain",
    "reverb",
    "speech_clip",
    "synthetic_music",
    "talk",
]

EPS = 1e-12


class DegradationError(StreamdError):
    """A degradation cannot run: unknown step kind, bad parameter or a missing external tool."""


# --- Small numeric helpers ---------------------------------------------------------------------


def db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def power_db(audio: np.ndarray) -> float:
    """Mean power of ``audio`` in dB relative to a full-scale square wave (0 dBFS = power 1)."""
    if len(audio) == 0:
        return -240.0
    return float(10.0 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + EPS))


def _as_float32(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise DegradationError(f"expected mono 1-D audio, got shape {audio.shape}")
    return audio


def _finite(audio: np.ndarray) -> np.ndarray:
    return np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0).astype(np.float32, copy=False)


def fft_convolve(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Full linear convolution (length ``len(signal) + len(kernel) - 1``) by real FFT."""
    n = len(signal) + len(kernel) - 1
    n_fft = 1 << max(1, (n - 1).bit_length())
    spectrum = np.fft.rfft(signal, n_fft) * np.fft.rfft(kernel, n_fft)
    return np.fft.irfft(spectrum, n_fft)[:n]


def _fir_from_magnitude(magnitude: Callable[[np.ndarray], np.ndarray], sr: int, n_taps: int) -> np.ndarray:
    """Linear-phase FIR (odd ``n_taps``) whose response approximates ``magnitude(freqs_hz)``."""
    n_fft = n_taps - 1
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    impulse = np.fft.irfft(magnitude(freqs).astype(np.float64), n_fft)
    impulse = np.roll(impulse, n_taps // 2)
    kernel = np.empty(n_taps)
    kernel[:n_fft] = impulse
    kernel[0] = kernel[n_fft] = impulse[0] / 2.0  # the circular tap at index 0 belongs to both ends
    return kernel * np.hanning(n_taps + 2)[1:-1]


def _filter_linear_phase(audio: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Apply a symmetric FIR and remove its (n_taps - 1) / 2 delay: same length, same alignment."""
    delay = (len(kernel) - 1) // 2
    return fft_convolve(audio.astype(np.float64), kernel)[delay : delay + len(audio)]


def mix_at_snr(
    audio: np.ndarray, other: np.ndarray, snr_db: float, ref_dbfs: float | None = None
) -> np.ndarray:
    """``audio + k * other`` with k chosen so that power(audio) / power(k * other) = ``snr_db``.

    ``ref_dbfs`` replaces the measured power of ``audio`` as the reference, so that a long recording
    processed in blocks gets a constant noise level (quiet passages then have a lower SNR, as on air).
    """
    reference = power_db(audio) if ref_dbfs is None else ref_dbfs
    other_db = power_db(other)
    if other_db < -200 or reference < -200:
        return audio.astype(np.float32)
    scale = 10.0 ** ((reference - snr_db - other_db) / 20.0)
    return (audio + scale * other).astype(np.float32)


def _fit_length(audio: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """``n`` samples of ``audio`` from ``offset``, looped when it is too short."""
    if len(audio) == 0:
        return np.zeros(n, np.float32)
    index = (offset + np.arange(n)) % len(audio)
    return audio[index]


# --- Additive degradations ---------------------------------------------------------------------

NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def coloured_noise(n: int, sr: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**alpha (white 0, pink 1, brown 2), unit power."""
    if color not in NOISE_EXPONENTS:
        raise DegradationError(f"noise color must be one of {sorted(NOISE_EXPONENTS)}, got {color!r}")
    white = rng.standard_normal(n)
    if n == 0:
        return white.astype(np.float32)
    alpha = NOISE_EXPONENTS[color]
    if alpha == 0.0 or n < 2:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0)  # no DC blow-up below 20 Hz
        noise = np.fft.irfft(spectrum / freqs ** (alpha / 2.0), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + EPS)).astype(np.float32)


def add_noise(
    audio: np.ndarray,
    sr: int,
    snr_db: float,
    color: str = "white",
    seed: int = 0,
    ref_dbfs: float | None = None,
) -> np.ndarray:
    """Additive white/pink/brown noise at ``snr_db`` (0-20 dB) below the signal (or ``ref_dbfs``)."""
    audio = _as_float32(audio)
    noise = coloured_noise(len(audio), sr, color, np.random.default_rng(seed))
    return mix_at_snr(audio, noise, snr_db, ref_dbfs)


def synthetic_music(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A few seconds of music-like sound: random chords of harmonic notes with note envelopes.

    Used as background music when no real music is given; unit power.
    """
    t = np.arange(n) / sr
    out = np.zeros(n)
    note_len = max(1, int(sr * rng.uniform(0.2, 0.6)))
    n_notes = n // note_len + 1
    base = rng.uniform(110.0, 330.0)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    decay = np.exp(-np.arange(note_len) / (0.3 * note_len))
    for voice in range(3):
        steps = scale[rng.integers(0, len(scale), n_notes)] - 12 * (voice == 0)
        freqs = np.repeat(base * 2.0 ** (steps / 12.0), note_len)[:n]
        phase = 2 * np.pi * np.cumsum(freqs) / sr
        envelope = np.tile(decay, n_notes)[:n]
        for harmonic in (1, 2, 3):
            if base * 2 ** (16 / 12) * harmonic < sr / 2:
                out += envelope * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi)) / harmonic
    out += 0.01 * np.sin(2 * np.pi * 0.5 * t)  # keep it from being exactly periodic
    return (out / (np.sqrt(np.mean(out**2)) + EPS)).astype(np.float32)


def add_background(
    audio: np.ndarray,
    sr: int,
    snr_db: float,
    seed: int = 0,
    background: np.ndarray | None = None,
    ref_dbfs: float | None = None,
) -> np.ndarray:
    """Other music mixed under ``audio`` at ``snr_db``; :func:`synthetic_music` when none is given.

    A given ``background`` (at ``sr``) is looped or cut to length, starting at a seeded offset.
    """
    audio = _as_float32(audio)
    rng = np.random.default_rng(seed)
    if background is None or len(background) == 0:
        other = synthetic_music(len(audio), sr, rng)
    else:
        other = _fit_length(
            np.asarray(background, np.float32), len(audio), int(rng.integers(0, len(background)))
        )
    return mix_at_snr(audio, other, snr_db, ref_dbfs)


# --- Synthetic speech (espeak-ng) --------------------------------------------------------------

TALK_BANK_SIZE = 64
"""Distinct cached talk clips that :func:`add_speech` picks from (seed % TALK_BANK_SIZE)."""

_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "de", "fr", "es", "it", "nl", "sv")
_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")
_PHRASES = (
    "you are listening to {station}, the best music all day long",
    "that was a great one, and coming up next, more hits after the news",
    "the weather for today: {weather} with temperatures around {n} degrees",
    "traffic update: expect delays of {n} minutes on the ring road near exit {m}",
    "call us now on {n} {m} {n} and win two tickets for the concert on saturday",
    "it is {n} minutes past {m}, good morning to everyone driving to work",
    "thanks for all your messages, keep them coming, the lines are open",
    "this is {station}, stay tuned, we have a special guest in the studio at {m} o'clock",
    "and now a quick look at the headlines before we go back to the music",
    "don't forget the big summer festival this weekend in the city park",
)
_STATIONS = ("radio ninety nine point five", "city f m", "hit radio one", "classic wave", "the beat")
_WEATHER = ("sunny", "cloudy", "light rain", "strong wind", "fog in the morning")


def _talk_text(rng: np.random.Generator) -> str:
    sentences = []
    for _ in range(int(rng.integers(1, 4))):
        template = _PHRASES[int(rng.integers(0, len(_PHRASES)))]
        sentences.append(
            template.format(
                station=_STATIONS[int(rng.integers(0, len(_STATIONS)))],
                weather=_WEATHER[int(rng.integers(0, len(_WEATHER)))],
                n=int(rng.integers(2, 40)),
                m=int(rng.integers(1, 12)),
            )
        )
    return ". ".join(sentences) + "."


def _cache_dir() -> Path:
    root = os.environ.get("STREAMD_CACHE") or Path.home() / ".cache" / "streamd"
    return Path(root) / "talk"


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise DegradationError(f"{path}: expected 16-bit PCM from espeak-ng")
        frames = wav.readframes(wav.getnframes())
        rate, channels = wav.getframerate(), wav.getnchannels()
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1), rate


def _espeak_wav(text: str, voice: str, words_per_minute: int, pitch: int) -> Path:
    """The WAV file espeak-ng makes for these settings, generated once and cached on disk."""
    key = hashlib.sha1(f"{text}|{voice}|{words_per_minute}|{pitch}".encode()).hexdigest()[:20]
    path = _cache_dir() / f"{key}.wav"
    if path.exists():
        return path
    if shutil.which("espeak-ng") is None:
        raise DegradationError("espeak-ng is not installed (apt-get install espeak-ng); it makes the talk")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        cmd = ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "-w", tmp, text]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise DegradationError(f"espeak-ng failed: {result.stderr.strip()[:200]}")
        os.replace(tmp, path)  # atomic, so parallel data-loader workers never read half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_clip_memory: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()


def speech_clip(index: int, sr: int) -> np.ndarray:
    """Talk clip number ``index``: seeded text, voice, speed and pitch; peak-normalised to 0.9.

    Clips are cached on disk (``~/.cache/streamd/talk`` or ``$STREAMD_CACHE/talk``) and in memory.
    """
    key = (int(index), int(sr))
    if key in _clip_memory:
        _clip_memory.move_to_end(key)
        return _clip_memory[key]
    rng = np.random.default_rng([0x7A1C, int(index)])
    voice = f"{_VOICES[int(rng.integers(0, len(_VOICES)))]}+{_VARIANTS[int(rng.integers(0, len(_VARIANTS)))]}"
    path = _espeak_wav(_talk_text(rng), voice, int(rng.integers(140, 201)), int(rng.integers(25, 75)))
    samples, rate = _read_wav(path)
    if rate != sr:
        import soxr

        samples = soxr.resample(samples, rate, sr).astype(np.float32)
    samples = (0.9 * samples / (np.max(np.abs(samples)) + EPS)).astype(np.float32)
    _clip_memory[key] = samples
    while len(_clip_memory) > 4 * TALK_BANK_SIZE:
        _clip_memory.popitem(last=False)
    return samples


def talk(duration_s: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``duration_s`` of DJ talk: bank clips joined by short pauses, cut to length."""
    n = int(round(duration_s * sr))
    pieces, total = [], 0
    while total < n:
        clip = speech_clip(int(rng.integers(0, TALK_BANK_SIZE)), sr)
        pause = np.zeros(int(sr * rng.uniform(0.2, 0.8)), np.float32)
        pieces += [clip, pause]
        total += len(clip) + len(pause)
    return np.concatenate(pieces)[:n]


def add_speech(
    audio: np.ndarray, sr: int, snr_db: float, seed: int = 0, ref_dbfs: float | None = None
) -> np.ndarray:
    """Synthetic speech over ``audio``; ``snr_db`` = music-to-speech power ratio (0-20 dB).

    The talk (clips joined by short pauses) runs from a seeded point in the first half to the end.
    """
    audio = _as_float32(audio)
    rng = np.random.default_rng(seed)
    speech = talk(len(audio) / sr, sr, rng)
    start = int(rng.integers(0, max(1, len(audio) // 2)))
    speech = np.concatenate([np.zeros(start, np.float32), speech[: len(audio) - start]])
    reference = power_db(audio) if ref_dbfs is None else ref_dbfs
    voiced = np.abs(speech) > 1e-4  # SNR against the speech while it talks, not diluted by silence
    if not voiced.any():
        return audio
    scale = 10.0 ** ((reference - snr_db - power_db(speech[voiced])) / 20.0)
    return (audio + scale * speech).astype(np.float32)


# --- Lossy codecs (PyAV, in memory) -----------------------------------------------------------

CODECS = {"mp3": ("libmp3lame", "mp3"), "aac": ("aac", "adts")}


def _encode_decode(audio: np.ndarray, sr: int, codec: str, bitrate_kbps: int) -> np.ndarray:
    import av

    encoder, container = CODECS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(encoder, rate=sr)
        stream.bit_rate = int(bitrate_kbps * 1000)
        stream.layout = "mono"
        block = 4096
        for start in range(0, len(audio), block):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + block], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = sr, start
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    buffer.seek(0)
    decoded = []
    with av.open(buffer, "r") as source:
        for frame in source.decode(audio=0):
            samples = frame.to_ndarray()
            if np.issubdtype(samples.dtype, np.integer):
                samples = samples / float(np.iinfo(samples.dtype).max + 1)
            decoded.append(
                samples[0] if frame.format.is_planar else samples[0, :: len(frame.layout.channels)]
            )
    return np.concatenate(decoded).astype(np.float32) if decoded else np.zeros(0, np.float32)


def _resample(audio: np.ndarray, in_rate: float, out_rate: float) -> np.ndarray:
    if in_rate == out_rate:
        return audio
    import soxr

    return soxr.resample(audio, in_rate, out_rate, quality="HQ").astype(np.float32)


def _codec_pass(audio: np.ndarray, sr: int, codec: str, bitrate_kbps: int, encode_sr: int) -> np.ndarray:
    decoded = _encode_decode(_resample(audio, sr, encode_sr), encode_sr, codec, bitrate_kbps)
    return _resample(decoded, encode_sr, sr)


@lru_cache(maxsize=256)
def codec_delay(sr: int, codec: str, bitrate_kbps: int, encode_sr: int) -> int:
    """Samples (at ``sr``) by which the decoded stream lags the input, measured once on a probe.

    MP3 files carry a LAME gapless tag that the decoder honours (delay 0); ADTS AAC has 1024 priming
    samples. Measuring instead of hard-coding keeps alignment right across FFmpeg versions.
    """
    rng = np.random.default_rng(1234)
    probe = np.zeros(2 * sr, np.float32)
    probe[sr // 2 : sr // 2 + sr // 4] = 0.3 * rng.standard_normal(sr // 4)
    decoded = _codec_pass(probe, sr, codec, bitrate_kbps, encode_sr)
    max_lag = min(len(decoded), sr // 2)
    correlation = fft_convolve(decoded[: len(probe) + max_lag], probe[::-1])
    lags = np.arange(len(correlation)) - (len(probe) - 1)
    valid = (lags >= -sr // 10) & (lags < max_lag)
    return int(lags[valid][np.argmax(correlation[valid])])


def codec_roundtrip(
    audio: np.ndarray, sr: int, codec: str = "mp3", bitrate_kbps: int = 64, encode_sr: int | None = None
) -> np.ndarray:
    """Encode to MP3 or AAC at ``bitrate_kbps`` (32-128) and decode, in memory; same length and alignment.

    ``encode_sr`` (default ``sr``) is the rate the stream is encoded at, as a station would at 22.05 or
    44.1 kHz; the audio is resampled there and back.
    """
    audio = _as_float32(audio)
    if codec not in CODECS:
        raise DegradationError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if len(audio) == 0:
        return audio
    encode_sr = int(encode_sr or sr)
    delay = codec_delay(sr, codec, int(bitrate_kbps), encode_sr)
    decoded = _codec_pass(audio, sr, codec, int(bitrate_kbps), encode_sr)
    if delay >= 0:
        decoded = decoded[delay:]
    else:
        decoded = np.concatenate([np.zeros(-delay, np.float32), decoded])
    out = np.zeros(len(audio), np.float32)
    out[: min(len(audio), len(decoded))] = decoded[: len(audio)]
    return out


# --- Filters: EQ, reverb -----------------------------------------------------------------------

EQ_BAND_TYPES = ("peaking", "lowshelf", "highshelf")


def _biquad_magnitude(band: dict[str, Any], freqs: np.ndarray, sr: int) -> np.ndarray:
    """|H(f)| of an RBJ-cookbook peaking or shelving biquad."""
    kind, f0, gain_db, q = (
        band["type"],
        float(band["freq_hz"]),
        float(band["gain_db"]),
        float(band.get("q", 0.7)),
    )
    if kind not in EQ_BAND_TYPES:
        raise DegradationError(f"eq band type must be one of {EQ_BAND_TYPES}, got {kind!r}")
    f0 = min(max(f0, 10.0), 0.49 * sr)
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2 * max(q, 0.05))
    cos = np.cos(w0)
    if kind == "peaking":
        b = [1 + alpha * a, -2 * cos, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos, 1 - alpha / a]
    else:
        sq = 2 * np.sqrt(a) * alpha
        sign = 1 if kind == "lowshelf" else -1
        b = [
            a * ((a + 1) - sign * (a - 1) * cos + sq),
            sign * 2 * a * ((a - 1) - sign * (a + 1) * cos),
            a * ((a + 1) - sign * (a - 1) * cos - sq),
        ]
        den = [
            (a + 1) + sign * (a - 1) * cos + sq,
            -sign * 2 * ((a - 1) + sign * (a + 1) * cos),
            (a + 1) + sign * (a - 1) * cos - sq,
        ]
    z = np.exp(-1j * 2 * np.pi * freqs / sr)
    return np.abs(np.polyval(b[::-1], z) / np.polyval(den[::-1], z))


def equalize(
    audio: np.ndarray,
    sr: int,
    bands: Sequence[dict[str, Any]] = (),
    tilt_db_per_octave: float = 0.0,
    highpass_hz: float | None = None,
    lowpass_hz: float | None = None,
    n_taps: int = 1025,
) -> np.ndarray:
    """Zero-phase EQ: biquad bands (``{"type", "freq_hz", "gain_db", "q"}``), a spectral tilt around
    1 kHz, and optional 4th-order-like high/low band limits; one linear-phase FIR, delay removed."""
    audio = _as_float32(audio)

    def magnitude(freqs: np.ndarray) -> np.ndarray:
        response = np.ones_like(freqs)
        for band in bands:
            response *= _biquad_magnitude(band, freqs, sr)
        if tilt_db_per_octave:
            octaves = np.log2(np.clip(freqs, 50.0, None) / 1000.0)
            response *= 10.0 ** (tilt_db_per_octave * octaves / 20.0)
        if highpass_hz:
            response /= np.sqrt(1.0 + (highpass_hz / np.maximum(freqs, 1e-3)) ** 8)
        if lowpass_hz:
            response /= np.sqrt(1.0 + (freqs / lowpass_hz) ** 8)
        return response

    return _finite(_filter_linear_phase(audio, _fir_from_magnitude(magnitude, sr, n_taps)))


def reverb_impulse_response(sr: int, rt60_s: float, seed: int = 0, predelay_ms: float = 10.0) -> np.ndarray:
    """Synthetic room: exponentially decaying noise (60 dB down at ``rt60_s``), unit energy, with a
    pre-delay and brighter early part (high frequencies die faster, as in real rooms)."""
    rng = np.random.default_rng(seed)
    n = max(2, int(rt60_s * sr))
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    dull = np.convolve(noise, np.ones(4) / 4, mode="same")  # a cheap low-pass for the late tail
    mix = np.exp(-t / (0.3 * rt60_s))
    tail = (mix * noise + (1 - mix) * dull) * 10.0 ** (-3.0 * t / rt60_s)
    ir = np.concatenate([np.zeros(int(predelay_ms * sr / 1000)), tail])
    return ir / (np.sqrt(np.sum(ir**2)) + EPS)


def reverb(
    audio: np.ndarray,
    sr: int,
    rt60_s: float = 0.5,
    wet: float = 0.3,
    seed: int = 0,
    predelay_ms: float = 10.0,
) -> np.ndarray:
    """Room reverb (``rt60_s`` 0.2-1.0 s): ``(1 - wet) * dry + wet * reverberant``, level-matched; the
    direct path is undelayed so alignment is kept; the tail past the end is cut."""
    audio = _as_float32(audio)
    if len(audio) == 0:
        return audio
    ir = reverb_impulse_response(sr, rt60_s, seed, predelay_ms)
    wet_signal = fft_convolve(audio.astype(np.float64), ir)[: len(audio)]
    return _finite((1.0 - wet) * audio + wet * wet_signal)


# --- Time and level -----------------------------------------------------------------------------


def change_speed(audio: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (0.97-1.03), like a sped-up broadcast: pitch and tempo both change
    and the output has ``round(len(audio) / factor)`` samples. Track time t plays at output time t / factor."""
    audio = _as_float32(audio)
    if not 0.5 <= factor <= 2.0:
        raise DegradationError(f"speed factor must be within 0.5..2, got {factor}")
    if factor == 1.0 or len(audio) == 0:
        return audio.copy()
    out = _resample(audio, sr * factor, sr)
    target = int(round(len(audio) / factor))
    if len(out) < target:
        out = np.concatenate([out, np.zeros(target - len(out), np.float32)])
    return _finite(out[:target])


def gain(audio: np.ndarray, sr: int, db: float) -> np.ndarray:
    """Multiply by ``db`` decibels (clipping, if any, happens at the end of :func:`apply`)."""
    return (_as_float32(audio) * db_to_amplitude(db)).astype(np.float32)


def _frame_levels(audio: np.ndarray, frame: int, reduce: str) -> np.ndarray:
    n_frames = -(-len(audio) // frame)
    padded = np.zeros(n_frames * frame, np.float32)
    padded[: len(audio)] = audio
    frames = padded.reshape(n_frames, frame)
    if reduce == "peak":
        return np.max(np.abs(frames), axis=1)
    return np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))


def _smooth_gain_db(target_db: np.ndarray, frame_s: float, attack_ms: float, release_ms: float) -> np.ndarray:
    """Attack/release ballistics on a gain-reduction curve (dB <= 0), one step per frame."""
    attack = 1.0 - math.exp(-frame_s * 1000.0 / max(attack_ms, 1e-3))
    release = 1.0 - math.exp(-frame_s * 1000.0 / max(release_ms, 1e-3))
    out = np.empty(len(target_db))
    current = 0.0
    for i, target in enumerate(target_db.tolist()):  # per frame (ms), not per sample
        current += (attack if target < current else release) * (target - current)
        out[i] = current
    return out


def _frame_gain_to_samples(gain_db: np.ndarray, frame: int, n: int) -> np.ndarray:
    centres = (np.arange(len(gain_db)) + 0.5) * frame
    return 10.0 ** (np.interp(np.arange(n), centres, gain_db) / 20.0)


def _compress_band(
    band: np.ndarray, sr: int, threshold_db: float, ratio: float, attack_ms: float, release_ms: float
) -> np.ndarray:
    frame = max(1, int(sr * 0.005))
    level_db = 20.0 * np.log10(_frame_levels(band, frame, "rms") + EPS)
    reduction = np.minimum(0.0, (threshold_db - level_db) * (1.0 - 1.0 / ratio))
    smoothed = _smooth_gain_db(reduction, frame / sr, attack_ms, release_ms)
    return band * _frame_gain_to_samples(smoothed, frame, len(band))


def limit(
    audio: np.ndarray, sr: int, ceiling_db: float = -1.0, release_ms: float = 50.0, lookahead_ms: float = 2.0
) -> np.ndarray:
    """Lookahead peak limiter: no sample above ``ceiling_db``; gain recovers over ``release_ms``."""
    audio = _as_float32(audio)
    if len(audio) == 0:
        return audio
    ceiling = db_to_amplitude(ceiling_db)
    frame = max(1, int(sr * 0.001))
    needed = np.minimum(1.0, ceiling / (_frame_levels(audio, frame, "peak") + EPS))
    reach = max(1, int(round(lookahead_ms / 1000 * sr / frame)))
    padded = np.pad(needed, reach, constant_values=1.0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1)
    held_db = 20.0 * np.log10(windows.min(axis=1))
    smoothed = _smooth_gain_db(held_db, frame / sr, 0.0, release_ms)
    out = audio * _frame_gain_to_samples(smoothed, frame, len(audio))
    return np.clip(out, -ceiling, ceiling).astype(np.float32)


def compress(
    audio: np.ndarray,
    sr: int,
    threshold_db: float = -20.0,
    ratio: float = 4.0,
    attack_ms: float = 10.0,
    release_ms: float = 200.0,
    makeup_db: float = 0.0,
    crossovers_hz: Sequence[float] = (200.0, 2000.0),
    ceiling_db: float = -1.0,
) -> np.ndarray:
    """Broadcast processing: a multiband compressor (bands split at ``crossovers_hz`` by complementary
    linear-phase filters, each band compressed on its own RMS envelope), make-up gain, then a limiter."""
    audio = _as_float32(audio)
    if len(audio) == 0:
        return audio
    if ratio < 1.0:
        raise DegradationError(f"compression ratio must be >= 1, got {ratio}")
    rest = audio.astype(np.float64)
    bands = []
    for crossover in sorted(crossovers_hz):
        kernel = _fir_from_magnitude(lambda f, c=crossover: 1.0 / np.sqrt(1.0 + (f / c) ** 8), sr, 513)
        low = _filter_linear_phase(rest, kernel)
        bands.append(low)
        rest = rest - low  # complementary: the bands sum back to the input exactly
    bands.append(rest)
    mixed = sum(_compress_band(b, sr, threshold_db, ratio, attack_ms, release_ms) for b in bands)
    mixed = mixed * db_to_amplitude(makeup_db)
    return limit(_finite(mixed), sr, ceiling_db)


def fade_curves(n: int, curve: str = "equal_power") -> tuple[np.ndarray, np.ndarray]:
    """Fade-in and fade-out gains of ``n`` samples (``equal_power`` keeps loudness through
    uncorrelated material, ``linear`` keeps amplitude); the two always cross-fade to a full signal."""
    ramp = (np.arange(n) + 0.5) / max(n, 1)
    if curve == "equal_power":
        return np.sin(ramp * np.pi / 2), np.cos(ramp * np.pi / 2)
    if curve == "linear":
        return ramp, 1.0 - ramp
    raise DegradationError(f"fade curve must be equal_power or linear, got {curve!r}")


def fade(audio: np.ndarray, fade_in: int = 0, fade_out: int = 0, curve: str = "equal_power") -> np.ndarray:
    """``audio`` with its first ``fade_in`` samples faded in and its last ``fade_out`` faded out."""
    out = _as_float32(audio).copy()
    fade_in, fade_out = min(int(fade_in), len(out)), min(int(fade_out), len(out))
    if fade_in:
        out[:fade_in] *= fade_curves(fade_in, curve)[0]
    if fade_out:
        out[len(out) - fade_out :] *= fade_curves(fade_out, curve)[1]
    return out


def crossfade(first: np.ndarray, second: np.ndarray, overlap: int, curve: str = "equal_power") -> np.ndarray:
    """``first`` then ``second``, overlapping by ``overlap`` samples with a fade-out/fade-in."""
    first, second = _as_float32(first), _as_float32(second)
    overlap = int(max(0, min(overlap, len(first), len(second))))
    if overlap == 0:
        return np.concatenate([first, second])
    fade_in, fade_out = fade_curves(overlap, curve)
    middle = first[len(first) - overlap :] * fade_out + second[:overlap] * fade_in
    return np.concatenate([first[: len(first) - overlap], middle.astype(np.float32), second[overlap:]])


# --- Chains -------------------------------------------------------------------------------------

STEPS: dict[str, Callable[..., np.ndarray]] = {
    "speed": change_speed,
    "background": add_background,
    "speech": add_speech,
    "eq": equalize,
    "compress": compress,
    "limit": limit,
    "codec": codec_roundtrip,
    "reverb": reverb,
    "noise": add_noise,
    "gain": gain,
}
"""Step kinds, in the order :func:`random_chain` puts them (playback, studio, station, stream, room)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One degradation: a kind from :data:`STEPS` and the keyword parameters of its function."""

    kind: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in STEPS:
            raise DegradationError(f"unknown degradation {self.kind!r}; known: {', '.join(STEPS)}")

    def describe(self) -> str:
        p = self.params
        match self.kind:
            case "noise":
                return f"noise({p.get('color', 'white')},{p['snr_db']:.0f}dB)"
            case "codec":
                return f"{p.get('codec', 'mp3')}@{int(p.get('bitrate_kbps', 64))}k"
            case "speed":
                return f"speed({p['factor']:.3f})"
            case "reverb":
                return f"reverb({p.get('rt60_s', 0.5):.1f}s)"
            case "background" | "speech":
                return f"{self.kind}({p['snr_db']:.0f}dB)"
        return self.kind


@dataclasses.dataclass(frozen=True)
class DegradationChain:
    """Steps applied in order. JSON-serialisable; with the seeds in its steps it replays exactly."""

    steps: tuple[Step, ...] = ()

    @property
    def kinds(self) -> list[str]:
        return [step.kind for step in self.steps]

    @property
    def speed_factor(self) -> float:
        """How much faster than the original the output plays (product of the speed steps)."""
        return float(np.prod([step.params["factor"] for step in self.steps if step.kind == "speed"]))

    def describe(self) -> str:
        return "+".join(step.describe() for step in self.steps) or "clean"

    def without(self, *kinds: str) -> DegradationChain:
        return DegradationChain(tuple(s for s in self.steps if s.kind not in kinds))

    def reseeded(self, salt: int) -> DegradationChain:
        """The same chain with every ``seed`` mixed with ``salt``: for processing a long recording
        in blocks, so the noise of block k differs from block k+1 yet stays reproducible."""
        steps = []
        for step in self.steps:
            params = dict(step.params)
            if "seed" in params:
                params["seed"] = int(np.random.default_rng([int(params["seed"]), int(salt)]).integers(2**31))
            steps.append(Step(step.kind, params))
        return DegradationChain(tuple(steps))

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [{"kind": s.kind, "params": s.params} for s in self.steps],
            "describe": self.describe(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DegradationChain:
        try:
            return cls(tuple(Step(str(s["kind"]), dict(s.get("params", {}))) for s in data["steps"]))
        except (KeyError, TypeError) as exc:
            raise DegradationError(f"not a degradation chain: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DegradationChain:
        return cls.from_dict(json.loads(text))


def apply(
    audio: np.ndarray,
    sr: int,
    chain: DegradationChain,
    backgrounds: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Run ``chain`` over ``audio`` and return finite float32 audio clipped to [-1, 1].

    ``backgrounds`` (arrays at ``sr``) feed ``background`` steps; the step's seed picks one. Without
    them those steps use synthetic music.
    """
    out = _as_float32(audio)
    for step in chain.steps:
        params = dict(step.params)
        if step.kind == "background" and backgrounds:
            params["background"] = backgrounds[int(params.get("seed", 0)) % len(backgrounds)]
        try:
            out = STEPS[step.kind](out, sr, **params)
        except TypeError as exc:
            raise DegradationError(f"bad parameters for {step.kind}: {exc}") from exc
    return np.clip(_finite(out), -1.0, 1.0)


DEFAULT_PROBABILITIES = {
    "speed": 0.3,
    "background": 0.2,
    "speech": 0.2,
    "eq": 0.6,
    "compress": 0.5,
    "limit": 0.0,
    "codec": 0.6,
    "reverb": 0.3,
    "noise": 0.6,
    "gain": 0.5,
}
"""Chance of each step in :func:`random_chain` at ``strength`` >= 0.5 (linearly less below)."""


def _lerp(mild: float, harsh: float, severity: float) -> float:
    return mild + (harsh - mild) * severity


def random_step(kind: str, rng: np.random.Generator, severity: float) -> Step:
    """A step of ``kind`` with parameters drawn at ``severity`` (0 mild .. 1 harsh end of its range)."""

    def sev() -> float:  # each parameter gets its own draw in [0, severity]
        return float(rng.uniform(0.0, severity))

    seed = int(rng.integers(2**31))
    match kind:
        case "speed":
            params = {"factor": round(1.0 + float(rng.choice([-1, 1])) * _lerp(0.0, 0.03, sev()), 5)}
        case "background" | "speech":
            params = {"snr_db": round(_lerp(20.0, 0.0, sev()), 2), "seed": seed}
        case "noise":
            color = str(rng.choice(list(NOISE_EXPONENTS)))
            params = {"snr_db": round(_lerp(20.0, 0.0, sev()), 2), "color": color, "seed": seed}
        case "eq":
            bands = []
            for _ in range(int(rng.integers(1, 4))):
                band_type = str(rng.choice(EQ_BAND_TYPES))
                bands.append(
                    {
                        "type": band_type,
                        "freq_hz": round(float(np.exp(rng.uniform(np.log(80), np.log(5000)))), 1),
                        "gain_db": round(float(rng.choice([-1, 1])) * _lerp(3.0, 12.0, sev()), 2),
                        "q": round(float(rng.uniform(0.5, 2.0)), 2),
                    }
                )
            params = {"bands": bands, "tilt_db_per_octave": round(float(rng.uniform(-3, 3)) * severity, 2)}
            if rng.random() < 0.3 * severity:
                params["highpass_hz"] = round(_lerp(50.0, 300.0, sev()), 1)
            if rng.random() < 0.3 * severity:
                params["lowpass_hz"] = round(_lerp(5500.0, 2500.0, sev()), 1)
        case "compress":
            params = {
                "threshold_db": round(_lerp(-10.0, -30.0, sev()), 2),
                "ratio": round(_lerp(2.0, 8.0, sev()), 2),
                "attack_ms": round(float(rng.uniform(1.0, 20.0)), 2),
                "release_ms": round(float(rng.uniform(50.0, 500.0)), 1),
                "makeup_db": round(_lerp(0.0, 10.0, sev()), 2),
            }
        case "limit":
            params = {"ceiling_db": round(_lerp(-1.0, -6.0, sev()), 2)}
        case "codec":
            codec = str(rng.choice(list(CODECS)))
            bitrate = int(round(_lerp(128.0, 32.0, sev()) / 8.0) * 8)
            encode_sr = int(
                rng.choice([12000, 22050, 24000, 44100] if bitrate >= 64 else [12000, 22050, 24000])
            )
            params = {"codec": codec, "bitrate_kbps": bitrate, "encode_sr": encode_sr}
        case "reverb":
            params = {
                "rt60_s": round(_lerp(0.2, 1.0, sev()), 3),
                "wet": round(_lerp(0.1, 0.5, sev()), 3),
                "seed": seed,
            }
        case "gain":
            params = {
                "db": round(float(rng.uniform(_lerp(-3.0, -12.0, severity), _lerp(3.0, 6.0, severity))), 2)
            }
        case _:
            raise DegradationError(f"unknown degradation {kind!r}; known: {', '.join(STEPS)}")
    return Step(kind, params)


def random_chain(
    rng: np.random.Generator,
    strength: float = 0.5,
    kinds: Sequence[str] | None = None,
    probabilities: dict[str, float] | None = None,
) -> DegradationChain:
    """A random chain for augmentation. ``strength`` in [0, 1]: 0 gives the clean chain; it scales both
    how likely each step is (full :data:`DEFAULT_PROBABILITIES` from 0.5 up) and how harsh its
    parameters can be. ``kinds`` restricts the steps (e.g. drop ``speech`` when espeak-ng is missing).
    Steps come in :data:`STEPS` order."""
    strength = float(np.clip(strength, 0.0, 1.0))
    chances = {**DEFAULT_PROBABILITIES, **(probabilities or {})}
    allowed = set(STEPS if kinds is None else kinds)
    unknown = allowed - set(STEPS)
    if unknown:
        raise DegradationError(f"unknown degradation(s) {sorted(unknown)}; known: {', '.join(STEPS)}")
    steps = []
    for kind in STEPS:
        if kind in allowed and rng.random() < chances.get(kind, 0.0) * min(1.0, 2.0 * strength):
            steps.append(random_step(kind, rng, strength))
    return DegradationChain(tuple(steps))
