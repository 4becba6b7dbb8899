"""The chunk protocol: how one piece of a stream's PCM audio travels as a Kafka record.

Record key = stream id (UTF-8). Value = interleaved PCM payload. Headers: ``v`` (protocol
version), ``sr`` (sample rate, Hz), ``ch`` (channels), ``fmt`` (``s16le`` or ``f32le``),
``seq`` (per-stream sequence number), ``ts`` (capture time of the first sample, epoch ms).
Header values are ASCII decimal integers, except ``fmt``. See docs/protocol.md. Producer
(``streamd ingest``) and daemon both use this module only.

:func:`decode` never lets malformed input escape as anything but :class:`ProtocolError`, whose
``reason`` is one of :data:`REASONS` (a short code meant for a metric label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from streamd.errors import StreamdError

VERSION = 1
FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32
MAX_INT_HEADER = 2**63 - 1  # seq and ts must fit in a signed 64-bit integer (floats, numpy, JSON downstream)
REQUIRED_HEADERS = ("v", "sr", "ch", "fmt", "seq", "ts")
S16_SCALE = 32768.0  # s16 value k <-> float k / 32768, so every s16 value round-trips exactly

REASONS = (
    "missing_key",  # no stream id
    "bad_key",  # stream id is not UTF-8
    "missing_payload",  # value is None (e.g. a tombstone)
    "missing_header",
    "duplicate_header",
    "bad_header",  # a header value that is not an integer where one is required
    "unsupported_version",
    "bad_format",
    "bad_sample_rate",
    "bad_channels",
    "bad_seq",
    "bad_timestamp",
    "bad_length",  # payload length not a multiple of the frame size
    "empty_payload",
    "non_finite",  # NaN or infinity in f32le samples
)


class ProtocolError(StreamdError):
    """A record that is not a valid chunk. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Chunk:
    """One decoded chunk. ``samples`` is float32, shape (n_frames, channels), in [-1, 1]."""

    stream_id: str
    seq: int
    ts_ms: int
    sample_rate: int
    channels: int
    fmt: str
    samples: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate


class Record(NamedTuple):
    """What to hand to a Kafka producer for one chunk."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def frame_bytes(fmt: str, channels: int) -> int:
    """Bytes per frame (one sample of every channel)."""
    return FORMATS[fmt].itemsize * channels


def to_pcm(samples: np.ndarray, fmt: str) -> bytes:
    """Float samples (n,) or (n, channels) → interleaved little-endian PCM bytes.

    s16le rounds to the nearest step of 1/32768 and clips to [-1, 32767/32768]; f32le is exact.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "f32le":
        return np.ascontiguousarray(samples, dtype="<f4").tobytes()
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * np.float32(S16_SCALE))
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def from_pcm(payload: bytes, fmt: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes → float32 array (n_frames, channels). No validation; see :func:`decode`."""
    raw = np.frombuffer(payload, dtype=FORMATS[fmt])
    if fmt == "f32le":
        samples = raw.astype(np.float32)  # a native-endian, writable copy
    else:  # one pass; × 2⁻¹⁵ is exact, so the same floats as dividing by S16_SCALE
        samples = np.multiply(raw, np.float32(1.0 / S16_SCALE), dtype=np.float32)
    return samples.reshape(-1, channels)


def encode(
    stream_id: str,
    samples: np.ndarray,
    sample_rate: int,
    seq: int,
    ts_ms: int,
    fmt: str = "s16le",
) -> Record:
    """One chunk of ``stream_id`` as a Kafka record. ``samples``: float32 (n,) mono or (n, channels)."""
    if samples.ndim not in (1, 2):
        raise ValueError(f"samples must have shape (n,) or (n, channels), got {samples.shape}")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    headers = [
        ("v", str(VERSION).encode()),
        ("sr", str(int(sample_rate)).encode()),
        ("ch", str(channels).encode()),
        ("fmt", fmt.encode()),
        ("seq", str(int(seq)).encode()),
        ("ts", str(int(ts_ms)).encode()),
    ]
    return Record(stream_id.encode("utf-8"), to_pcm(samples, fmt), headers, int(ts_ms))


def _int_header(headers: dict[str, bytes], name: str) -> int:
    raw = headers[name]
    try:
        text = raw.decode("ascii")
        if not text.lstrip("-").isdigit():
            raise ValueError(text)
        return int(text)
    except (UnicodeDecodeError, ValueError, AttributeError):
        raise ProtocolError("bad_header", f"header {name}={raw!r} is not an integer") from None


def decode(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, Any]] | None) -> Chunk:
    """Validate and decode one record; raise :class:`ProtocolError` for anything malformed.

    f32le samples outside [-1, 1] are clipped (resamplers overshoot slightly); NaN and infinity are
    rejected.
    """
    if not key:
        raise ProtocolError("missing_key", "record has no key (stream id)")
    try:
        stream_id = bytes(key).decode("utf-8")
    except (UnicodeDecodeError, TypeError):
        raise ProtocolError("bad_key", f"key {key[:40]!r} is not UTF-8") from None
    if value is None:
        raise ProtocolError("missing_payload", f"stream {stream_id}: record has no value")

    by_name: dict[str, bytes] = {}
    for name, raw in headers or ():
        if name in by_name:
            raise ProtocolError("duplicate_header", f"stream {stream_id}: header {name} appears twice")
        by_name[name] = raw if raw is not None else b""
    for name in REQUIRED_HEADERS:
        if name not in by_name:
            raise ProtocolError("missing_header", f"stream {stream_id}: header {name} is missing")

    version = _int_header(by_name, "v")
    if version != VERSION:
        raise ProtocolError(
            "unsupported_version", f"stream {stream_id}: v={version}, this reader speaks v{VERSION}"
        )
    fmt = by_name["fmt"].decode("ascii", errors="replace") if isinstance(by_name["fmt"], bytes) else ""
    if fmt not in FORMATS:
        raise ProtocolError("bad_format", f"stream {stream_id}: fmt={fmt!r}; allowed: {', '.join(FORMATS)}")
    sample_rate = _int_header(by_name, "sr")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            "bad_sample_rate",
            f"stream {stream_id}: sr={sample_rate}; allowed {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}",
        )
    channels = _int_header(by_name, "ch")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError("bad_channels", f"stream {stream_id}: ch={channels}; allowed 1..{MAX_CHANNELS}")
    seq = _int_header(by_name, "seq")
    if not 0 <= seq <= MAX_INT_HEADER:
        raise ProtocolError("bad_seq", f"stream {stream_id}: seq={seq} is negative or beyond 64 bits")
    ts_ms = _int_header(by_name, "ts")
    if not 0 <= ts_ms <= MAX_INT_HEADER:
        raise ProtocolError("bad_timestamp", f"stream {stream_id}: ts={ts_ms} is negative or beyond 64 bits")

    payload = bytes(value) if not isinstance(value, bytes) else value
    size = frame_bytes(fmt, channels)
    if len(payload) == 0:
        raise ProtocolError("empty_payload", f"stream {stream_id} seq {seq}: no samples")
    if len(payload) % size:
        raise ProtocolError(
            "bad_length",
            f"stream {stream_id} seq {seq}: {len(payload)} bytes is not a multiple of {size} ({fmt} x {channels})",
        )
    samples = from_pcm(payload, fmt, channels)
    if fmt == "f32le":
        if not np.isfinite(samples).all():
            raise ProtocolError("non_finite", f"stream {stream_id} seq {seq}: NaN or infinite samples")
        np.clip(samples, -1.0, 1.0, out=samples)
    return Chunk(stream_id, seq, ts_ms, sample_rate, channels, fmt, samples)


def decode_record(record: Any) -> Chunk:
    """Decode a consumed record (the daemon's ``source.Record``, kafka-python's ``ConsumerRecord``: anything
    with ``key``, ``value``, ``headers``)."""
    return decode(record.key, record.value, record.headers)
