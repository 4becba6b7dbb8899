"""`streamd ingest` and the ingest module: decode → chunks → real Kafka, counted and in order."""

from __future__ import annotations

import csv
import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from streamd import audio, ingest, protocol
from streamd.errors import AudioDecodeError
from streamd.kafka_io import make_consumer

REPO = Path(__file__).resolve().parents[1]


def write_wav(
    path: Path, seconds: float, sample_rate: int = 16000, channels: int = 1, seed: int = 0
) -> np.ndarray:
    """A s16 WAV of noise + a tone; returns its samples as float32 (n, channels), exactly as stored."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    signal_ = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    pcm = np.clip(np.rint(signal_ * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768


def consume_stream(config, topic: str, stream_id: str, timeout_s: float = 30.0) -> list[protocol.Chunk]:
    """Every chunk of ``stream_id`` in ``topic`` (all partitions, from the start), in offset order."""
    from kafka import TopicPartition

    consumer = make_consumer(config, group_id="", consumer_timeout_ms=1000)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    end = consumer.end_offsets(partitions)
    chunks = []
    deadline = time.monotonic() + timeout_s
    while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            chunks += [protocol.decode_record(r) for r in records if r.key == stream_id.encode()]
    consumer.close()
    return chunks


def joined(chunks: list[protocol.Chunk]) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks])


def assert_in_order(chunks: list[protocol.Chunk], chunk_ms: float) -> None:
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    starts = np.cumsum([0] + [c.n_frames for c in chunks[:-1]])
    expected_ts = chunks[0].ts_ms + (starts * 1000) // chunks[0].sample_rate
    assert [c.ts_ms for c in chunks] == list(expected_ts)
    assert all(c.duration_s == pytest.approx(chunk_ms / 1000, abs=1e-3) for c in chunks[:-1])


# --- pure chunking ----------------------------------------------------------------------------


def test_stream_chunks_cuts_counts_and_timestamps():
    samples = np.linspace(-1, 1, 12000 * 3 + 100, dtype=np.float32)
    records = list(ingest.stream_chunks(samples, 12000, "s1", chunk_ms=500, fmt="f32le", start_ts_ms=1_000))
    chunks = [protocol.decode(*r[:3]) for r in records]
    assert [c.n_frames for c in chunks] == [6000] * 6 + [100]
    assert [c.ts_ms for c in chunks] == [1_000 + 500 * i for i in range(7)]
    np.testing.assert_array_equal(joined(chunks)[:, 0], samples)


def test_stream_chunks_regroups_blocks_of_any_size():
    blocks = [np.full((n, 2), i / 10, np.float32) for i, n in enumerate([7, 1, 30, 2, 0, 11])]
    chunks = [
        protocol.decode(*r[:3]) for r in ingest.stream_chunks(blocks, 1000, "s", chunk_ms=10, start_seq=5)
    ]
    assert [c.n_frames for c in chunks] == [10] * 5 + [1]  # 51 frames
    assert [c.seq for c in chunks] == [5, 6, 7, 8, 9, 10]
    np.testing.assert_allclose(joined(chunks), np.concatenate(blocks), atol=1 / 32768)


def test_merge_by_time_interleaves_streams_by_capture_time():
    a = ingest.stream_chunks(np.zeros(12000, np.float32), 12000, "a", 250, start_ts_ms=0)
    b = ingest.stream_chunks(np.zeros(12000, np.float32), 12000, "b", 250, start_ts_ms=100)
    merged = list(ingest.merge_by_time(a, b))
    assert [(r.key, r.timestamp_ms) for r in merged] == [
        (b"a", 0), (b"b", 100), (b"a", 250), (b"b", 350), (b"a", 500), (b"b", 600), (b"a", 750), (b"b", 850),
    ]  # fmt: skip


# --- decoding errors --------------------------------------------------------------------------


def test_corrupt_file_raises_audio_decode_error(tmp_path):
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + os.urandom(4000))
    with pytest.raises(AudioDecodeError, match="bad.ogg"):
        audio.load_audio(bad)


def test_missing_file_raises_audio_decode_error(tmp_path):
    with pytest.raises(AudioDecodeError, match="no such file"):
        audio.load_audio(tmp_path / "nope.wav")


def test_unreachable_url_raises_audio_decode_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AudioDecodeError, match="cannot reach"):
        audio.load_audio(f"http://127.0.0.1:{port}/radio.mp3", timeout_s=3)


# --- HTTP source ------------------------------------------------------------------------------


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_http_404_raises_audio_decode_error(http_server):
    with pytest.raises(AudioDecodeError, match="404|Not Found|cannot reach"):
        audio.load_audio(f"{http_server}/missing.wav")


def test_load_audio_resamples_and_keeps_channels(tmp_path):
    original = write_wav(tmp_path / "st.wav", 2.0, sample_rate=16000, channels=2)
    stereo = audio.load_audio(tmp_path / "st.wav", sample_rate=None, mono=False)
    np.testing.assert_array_equal(stereo, original)
    mono12 = audio.load_audio(tmp_path / "st.wav", sample_rate=12000)
    assert mono12.ndim == 1 and abs(len(mono12) - 24000) <= 1
    # The 440 Hz tone survives resampling (1 s at 12 kHz: FFT bins are 1 Hz apart), at the mixdown's level.
    spectrum = np.abs(np.fft.rfft(mono12[:12000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1
    np.testing.assert_allclose(
        np.sqrt(np.mean(mono12**2)), np.sqrt(np.mean(original.mean(axis=1) ** 2)), rtol=0.05
    )


# --- to Kafka ---------------------------------------------------------------------------------


def test_ingest_generated_wav_lands_every_sample_in_order(config, kafka_topic, unique, tmp_path):
    topic = kafka_topic(partitions=3)
    stream = unique("stream")
    original = write_wav(tmp_path / "gen.wav", 3.3, sample_rate=16000, channels=2)
    stats = ingest.ingest_source(config, tmp_path / "gen.wav", stream, topic=topic, chunk_ms=500)
    assert stats.records == 7 and stats.last_seq == {stream: 6}

    chunks = consume_stream(config, topic, stream)
    assert len(chunks) == 7
    assert_in_order(chunks, 500)
    assert {(c.sample_rate, c.channels, c.fmt) for c in chunks} == {(16000, 2, "s16le")}
    np.testing.assert_array_equal(joined(chunks), original)  # s16 in, s16 out: bit exact
    assert abs(chunks[0].ts_ms - time.time() * 1000) < 60_000


def test_ingest_from_http_url_resampled_to_f32(config, kafka_topic, unique, tmp_path, http_server):
    topic = kafka_topic()
    stream = unique("stream")
    write_wav(tmp_path / "served.wav", 2.0, sample_rate=22050)
    expected = audio.load_audio(tmp_path / "served.wav", sample_rate=12000)
    stats = ingest.ingest_source(
        config, f"{http_server}/served.wav", stream, topic=topic, chunk_ms=250, sample_rate=12000, fmt="f32le"
    )
    chunks = consume_stream(config, topic, stream)
    assert len(chunks) == stats.records == 8
    assert_in_order(chunks, 250)
    assert {(c.sample_rate, c.channels, c.fmt) for c in chunks} == {(12000, 1, "f32le")}
    np.testing.assert_array_equal(joined(chunks)[:, 0], expected)


def _shortest_corpus_track(corpus_dir: Path) -> tuple[Path, float]:
    with open(corpus_dir / "manifest.csv") as handle:
        row = min(csv.DictReader(handle), key=lambda r: float(r["duration_s"]))
    return corpus_dir / row["relative_path"], float(row["duration_s"])


def test_ingest_short_real_track_lands_expected_samples(config, kafka_topic, unique, corpus_dir):
    track, duration_s = _shortest_corpus_track(corpus_dir)
    topic = kafka_topic(partitions=2)
    stream = unique("stream")
    expected = audio.load_audio(track, sample_rate=12000)
    assert abs(len(expected) / 12000 - duration_s) < 0.5
    stats = ingest.ingest_source(config, track, stream, topic=topic, sample_rate=12000, mono=True)
    chunks = consume_stream(config, topic, stream)
    assert len(chunks) == stats.records == -(-len(expected) // 6000)
    assert_in_order(chunks, 500)
    received = joined(chunks)[:, 0]
    assert len(received) == len(expected)
    np.testing.assert_allclose(received, expected, atol=0.5 / 32768 + 1e-7)


# --- the command ------------------------------------------------------------------------------


def _streamd(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streamd", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_cli_ingest_reports_summary_and_decode_errors(config, kafka_topic, unique, tmp_path):
    topic = kafka_topic()
    stream = unique("stream")
    write_wav(tmp_path / "cli.wav", 1.2, sample_rate=8000)
    proc = _streamd(
        "ingest", str(tmp_path / "cli.wav"), "--stream", stream, "--topic", topic, "--chunk-ms", "400"
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"sent 3 chunks of {stream} to {topic}" in " ".join(out.split())
    assert len(consume_stream(config, topic, stream)) == 3

    (tmp_path / "corrupt.mp3").write_bytes(os.urandom(3000))
    proc = _streamd("ingest", str(tmp_path / "corrupt.mp3"), "--stream", stream, "--topic", topic)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "error:" in err and "corrupt.mp3" in err and "Traceback" not in err


def test_cli_ingest_stops_cleanly_on_sigint(config, kafka_topic, unique, tmp_path):
    topic = kafka_topic()
    stream = unique("stream")
    write_wav(tmp_path / "live.wav", 1.0, sample_rate=8000)
    proc = _streamd(
        "ingest", str(tmp_path / "live.wav"), "--stream", stream, "--topic", topic,
        "--realtime", "--loop", "--chunk-ms", "100",
    )  # fmt: skip
    # Wait until chunks are flowing, then interrupt.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not consume_stream(config, topic, stream, timeout_s=2):
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = " ".join(out.split())
    assert summary.startswith("interrupted: sent ") and f"of {stream} to {topic}" in summary
    sent = int(summary.split("sent ")[1].split()[0])
    chunks = consume_stream(config, topic, stream)
    assert len(chunks) == sent >= 3
    assert_in_order(chunks, 100)


def test_damaged_compressed_file_decodes_what_it_can(tmp_path):
    """Truncated files and garbage in the middle lose the damaged part, not the whole file."""
    import av

    rate, n = 16000, 16000 * 4
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(n) / rate) * 32767).astype(np.int16)
    path = tmp_path / "tone.flac"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        for start in range(0, n, 4096):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 4096], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(path.read_bytes())
    assert len(audio.load_audio(path, None)) == n

    (tmp_path / "truncated.flac").write_bytes(data[: len(data) // 2])
    truncated = audio.load_audio(tmp_path / "truncated.flac", None)
    assert 0.3 * n < len(truncated) < 0.7 * n

    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (tmp_path / "garbled.flac").write_bytes(data)
    garbled = audio.load_audio(tmp_path / "garbled.flac", None)
    assert 0.7 * n < len(garbled) <= n and np.isfinite(garbled).all()

    (tmp_path / "header.flac").write_bytes(data[:60])
    with pytest.raises(AudioDecodeError, match="header.flac"):
        audio.load_audio(tmp_path / "header.flac")
