"""Decode audio from a file or an HTTP/Icecast URL into float32 numpy arrays at a chosen rate.

PyAV (FFmpeg) demuxes and decodes anything FFmpeg reads; soxr resamples. Two ways in:

- :func:`load_audio` returns a whole file as one array (mono ``(n,)`` or ``(n, channels)``);
- :func:`open_audio` returns an :class:`AudioStream`, iterated block by block, for long files and
  endless radio streams (constant memory).

Samples are float32 in [-1, 1]. Anything that cannot be opened or decoded (missing or corrupt
file, unreachable URL, no audio stream) raises :class:`~streamd.errors.AudioDecodeError` with a
one-line message naming the source. A few undecodable packets in the middle of a stream are
skipped; :data:`MAX_BAD_PACKETS` in a row is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
import soxr

from streamd.errors import AudioDecodeError

MAX_BAD_PACKETS = 50
DEFAULT_TIMEOUT_S = 15.0


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and "://" in source


def _describe(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


class AudioStream:
    """An opened audio source, iterated as float32 blocks at ``sample_rate``.

    ``sample_rate`` is the requested output rate (the source's own rate when none was asked for),
    ``channels`` the output channel count (1 when ``mono``). ``duration_s`` is the container's
    duration, ``None`` for live streams. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        source: str | Path,
        sample_rate: int | None = None,
        mono: bool = True,
        block_frames: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        self.source = str(source)
        if not is_url(source) and not Path(source).exists():
            raise AudioDecodeError(f"cannot open {source}: no such file")
        options = (
            {"reconnect": "1", "reconnect_streamed": "1", "reconnect_delay_max": "5"}
            if is_url(source)
            else {}
        )
        try:
            self._container = av.open(self.source, timeout=timeout_s, options=options)
        except (av.FFmpegError, OSError) as exc:
            what = "cannot reach" if is_url(source) else "cannot open"
            raise AudioDecodeError(f"{what} {source}: {_describe(exc)}") from None
        if not self._container.streams.audio:
            self._container.close()
            raise AudioDecodeError(f"cannot decode {source}: it has no audio stream")
        self._stream = self._container.streams.audio[0]
        self._stream.thread_type = "AUTO"
        self.source_rate = int(self._stream.codec_context.sample_rate or self._stream.rate or 0)
        if self.source_rate <= 0:
            self.close()
            raise AudioDecodeError(f"cannot decode {source}: unknown sample rate")
        self.source_channels = int(self._stream.codec_context.channels or 1)
        self.codec = self._stream.codec_context.name
        self.sample_rate = int(sample_rate or self.source_rate)
        self.channels = 1 if mono else self.source_channels
        self.mono = mono
        self.block_frames = block_frames
        duration = self._container.duration
        self.duration_s = duration / 1_000_000 if duration and duration > 0 else None

    # --- decoding -----------------------------------------------------------------------------

    def _decoded(self) -> Iterator[tuple[np.ndarray, int]]:
        """Decoded frames as (float32 array (n, channels), their sample rate), corrupt packets skipped."""
        to_float = av.AudioResampler(format="fltp")
        bad_in_a_row = 0
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except (av.InvalidDataError, av.error.UndefinedError) as exc:
                    bad_in_a_row += 1
                    if bad_in_a_row >= MAX_BAD_PACKETS:
                        raise AudioDecodeError(
                            f"cannot decode {self.source}: {bad_in_a_row} corrupt packets in a row ({_describe(exc)})"
                        ) from None
                    continue
                bad_in_a_row = 0
                for frame in frames:
                    for converted in to_float.resample(frame):
                        planes = converted.to_ndarray()  # (channels, n) for planar float
                        yield np.ascontiguousarray(planes.T, dtype=np.float32), int(converted.sample_rate)
        except AudioDecodeError:
            raise
        except (av.FFmpegError, OSError) as exc:
            raise AudioDecodeError(f"cannot decode {self.source}: {_describe(exc)}") from None

    def _shaped(self, block: np.ndarray) -> np.ndarray:
        if self.mono:
            return block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        if block.shape[1] != self.channels:
            raise AudioDecodeError(
                f"cannot decode {self.source}: channel count changed from {self.channels} to {block.shape[1]}"
            )
        return block

    def _empty(self) -> np.ndarray:
        return np.zeros((0,) if self.mono else (0, self.channels), dtype=np.float32)

    def _resampled(self) -> Iterator[np.ndarray]:
        """Blocks of any length at the output rate and channel count, in [-1, 1]."""
        resampler: soxr.ResampleStream | None = None
        in_rate = None
        for block, rate in self._decoded():
            block = self._shaped(block)
            if rate != in_rate:
                if resampler is not None:  # the source changed rate mid-stream (chained Ogg, HLS)
                    yield from _clipped(resampler.resample_chunk(self._empty(), last=True))
                in_rate = rate
                resampler = None
                if rate != self.sample_rate:
                    resampler = soxr.ResampleStream(
                        rate, self.sample_rate, self.channels, dtype="float32", quality="HQ"
                    )
            yield from _clipped(block if resampler is None else resampler.resample_chunk(block))
        if resampler is not None:
            yield from _clipped(resampler.resample_chunk(self._empty(), last=True))

    def __iter__(self) -> Iterator[np.ndarray]:
        """Blocks of exactly ``block_frames`` frames (the last may be shorter), or as decoded."""
        blocks = self._resampled()
        return reblock(blocks, self.block_frames) if self.block_frames else blocks

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def reblock(blocks: Iterable[np.ndarray], frames: int) -> Iterator[np.ndarray]:
    """Regroup blocks of any lengths into blocks of exactly ``frames`` frames (the last may be shorter)."""
    if frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    pending: list[np.ndarray] = []
    have = 0
    for block in blocks:
        pending.append(block)
        have += block.shape[0]
        if have < frames:
            continue
        joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
        cut = (have // frames) * frames
        for start in range(0, cut, frames):
            yield joined[start : start + frames]
        pending = [joined[cut:]] if cut < have else []
        have -= cut
    if have:
        yield np.concatenate(pending)


def _clipped(block: np.ndarray) -> Iterator[np.ndarray]:
    """The block clipped to [-1, 1] in place (decoders and resamplers overshoot), unless empty."""
    if block.shape[0]:
        yield np.clip(block, -1.0, 1.0, out=block)


def open_audio(
    source: str | Path,
    sample_rate: int | None = None,
    mono: bool = True,
    block_frames: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AudioStream:
    """Open a file or URL for block-by-block decoding; see :class:`AudioStream`."""
    return AudioStream(source, sample_rate, mono, block_frames, timeout_s)


def load_audio(
    source: str | Path,
    sample_rate: int | None = 12000,
    mono: bool = True,
    max_seconds: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """Decode a whole file (or the first ``max_seconds`` of a stream) to float32 at ``sample_rate``.

    Returns shape ``(n,)`` when ``mono`` else ``(n, channels)``; ``sample_rate=None`` keeps the
    source's rate. Raises :class:`AudioDecodeError` when nothing could be decoded.
    """
    blocks = []
    have = 0
    with open_audio(source, sample_rate, mono, timeout_s=timeout_s) as stream:
        limit = None if max_seconds is None else int(round(max_seconds * stream.sample_rate))
        for block in stream:
            blocks.append(block)
            have += block.shape[0]
            if limit is not None and have >= limit:
                break
    if not blocks:
        raise AudioDecodeError(f"cannot decode {source}: no audio samples in it")
    audio = np.concatenate(blocks)
    return audio if limit is None else audio[:limit]
