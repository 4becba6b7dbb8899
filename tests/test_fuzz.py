"""Fuzzing the daemon's input side: the chunk decoder and the per-stream front-end state.

Malformed records are built by mutating valid ones (so they get past the first checks and reach
the deep ones): headers dropped, doubled or replaced by garbage, an unknown protocol version,
truncated or padded payloads, NaN/inf samples, absurd rates, huge sequence numbers and capture
times, out-of-order and duplicate sequence numbers, huge chunks. The contract under test:

- :func:`streamd.protocol.decode` returns a sane :class:`Chunk` or raises :class:`ProtocolError`
  with a known reason, nothing else;
- :meth:`FrontendBank.push` never raises and counts what it drops, and a clean stream's frames
  are the same with and without garbage of other streams pushed in between.

The daemon-level version, thousands of malformed records mixed with good streams through a
running daemon and real Kafka, is at the end of this file.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamd import protocol
from streamd.config import FrontendConfig
from streamd.frontend import FrontendBank
from streamd.protocol import Chunk, ProtocolError

INT64_MAX = 2**63 - 1
TOLERANCE = 1e-5  # as in tests/test_frontend.py: batched framing is not bit-identical across groupings
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_BANK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- malformed records -----------------------------------------------------------------------

GARBAGE_VALUES = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"", b"-", b"--1", b"+5", b" 1", b"1 ", b"1e3", b"0x10", b"1.0", b"\xff", b"nan", b"inf",
                     b"-0", b"00000000000000000001", b"9" * 30, b"9" * 400, b"-" + b"9" * 30]),
    st.integers(-(2**80), 2**80).map(lambda i: str(i).encode()),
)


@st.composite
def valid_records(draw) -> tuple[bytes, bytes, list[tuple[str, bytes]], str]:
    fmt = draw(st.sampled_from(sorted(protocol.FORMATS)))
    channels = draw(st.integers(1, 3))
    rate = draw(st.sampled_from([8000, 12000, 44100, 48000]))
    frames = draw(st.integers(1, 64))
    samples = draw(st.sampled_from([0.0, 0.25, -0.5])) * np.ones((frames, channels), np.float32)
    seq = draw(st.integers(0, 10**6))
    record = protocol.encode(draw(st.sampled_from(["a", "b", "ü-stream"])), samples, rate, seq,
                             1_700_000_000_000 + seq, fmt=fmt)  # fmt: skip
    return record.key, record.value, list(record.headers), fmt


def _set(headers: list, name: str, value: bytes | None) -> list:
    out = [(k, v) for k, v in headers if k != name]
    return out if value is None else [*out, (name, value)]


@st.composite
def mutated_records(draw) -> tuple:
    """A valid record with 1-4 random mutations applied."""
    key, value, headers, fmt = draw(valid_records())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from([
            "drop_header", "dup_header", "garbage_header", "unknown_header", "version", "rate", "channels",
            "seq", "ts", "fmt", "truncate", "pad", "empty", "no_value", "key", "non_finite", "none_header",
        ]))  # fmt: skip
        name = draw(st.sampled_from(protocol.REQUIRED_HEADERS))
        if kind == "drop_header":
            headers = _set(headers, name, None)
        elif kind == "dup_header":
            headers = [*headers, (name, draw(GARBAGE_VALUES))]
        elif kind == "garbage_header":
            headers = _set(headers, name, draw(GARBAGE_VALUES))
        elif kind == "unknown_header":
            headers = [*headers, (draw(st.text(max_size=5)), draw(st.binary(max_size=5)))]
        elif kind == "none_header":
            headers = _set(headers, name, None) + [(name, None)]
        elif kind == "version":
            headers = _set(headers, "v", str(draw(st.integers(-5, 2**70).filter(lambda v: v != 1))).encode())
        elif kind == "rate":
            headers = _set(headers, "sr", str(draw(st.sampled_from([0, -1, 1, 999, 384_001, 10**12, 10**40]))).encode())
        elif kind == "channels":
            headers = _set(headers, "ch", str(draw(st.sampled_from([0, -1, 2, 4, 33, 10**9]))).encode())
        elif kind == "seq":
            headers = _set(headers, "seq", str(draw(st.sampled_from([-1, 0, INT64_MAX, INT64_MAX + 1, 10**30]))).encode())
        elif kind == "ts":
            headers = _set(headers, "ts", str(draw(st.sampled_from([-1, 0, INT64_MAX, INT64_MAX + 1, 10**300]))).encode())
        elif kind == "fmt":
            headers = _set(headers, "fmt", draw(st.sampled_from([b"S16LE", b"f64le", b"mp3", b"", b"\xff\xfe"])))
        elif kind == "truncate" and value:
            value = value[: draw(st.integers(0, len(value) - 1))]
        elif kind == "pad" and value is not None:
            value = value + draw(st.binary(min_size=1, max_size=7))
        elif kind == "empty":
            value = b""
        elif kind == "no_value":
            value = None
        elif kind == "key":
            key = draw(st.sampled_from([None, b"", b"\xff\xfe\xfd", b"\xc3"]))
        elif kind == "non_finite" and fmt == "f32le" and value and len(value) % 4 == 0:
            raw = np.frombuffer(value, "<f4").copy()
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            value = raw.tobytes()
    return key, value, headers


def check_decoded(chunk: Chunk) -> None:
    """What a consumer of a decoded chunk may rely on."""
    assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 2
    assert chunk.samples.shape[1] == chunk.channels >= 1 and chunk.n_frames >= 1
    assert np.isfinite(chunk.samples).all() and np.abs(chunk.samples).max() <= 1.0
    assert protocol.MIN_SAMPLE_RATE <= chunk.sample_rate <= protocol.MAX_SAMPLE_RATE
    assert 0 <= chunk.seq <= INT64_MAX and 0 <= chunk.ts_ms <= INT64_MAX
    assert chunk.fmt in protocol.FORMATS
    chunk.stream_id.encode("utf-8")


def decode_or_reason(record: tuple) -> Chunk | str:
    try:
        chunk = protocol.decode(*record)
    except ProtocolError as exc:
        assert exc.reason in protocol.REASONS, exc.reason
        assert str(exc).startswith(exc.reason)
        return exc.reason
    check_decoded(chunk)
    return chunk


@FUZZ
@given(record=mutated_records())
def test_mutated_records_decode_to_sane_chunks_or_raise_protocol_error(record):
    decode_or_reason(record)


@FUZZ
@given(record=valid_records(), name=st.sampled_from(protocol.REQUIRED_HEADERS))
def test_a_missing_header_is_always_rejected(record, name):
    key, value, headers, _ = record
    assert decode_or_reason((key, value, _set(headers, name, None))) == "missing_header"


@FUZZ
@given(record=valid_records(), version=st.integers(-(2**70), 2**70).filter(lambda v: v != protocol.VERSION))
def test_an_unknown_protocol_version_is_always_rejected(record, version):
    key, value, headers, _ = record
    assert decode_or_reason((key, value, _set(headers, "v", str(version).encode()))) == "unsupported_version"


@FUZZ
@given(record=valid_records(), cut=st.integers(1, 7))
def test_a_payload_cut_inside_a_frame_is_always_rejected(record, cut):
    key, value, headers, fmt = record
    channels = int(dict(headers)["ch"])
    size = protocol.frame_bytes(fmt, channels)
    if cut % size == 0:
        cut += 1
    assert decode_or_reason((key, value[: max(0, len(value) - cut)], headers)) in ("bad_length", "empty_payload")


@pytest.mark.parametrize("name,value,reason", [
    ("seq", INT64_MAX + 1, "bad_seq"), ("seq", 10**30, "bad_seq"),
    ("ts", INT64_MAX + 1, "bad_timestamp"), ("ts", 10**300, "bad_timestamp"),
])  # fmt: skip
def test_integers_beyond_64_bits_are_rejected(name, value, reason):
    """Python ints have no limit; downstream code (float epochs, numpy, JSON events) does."""
    record = protocol.encode("s", np.zeros(4, np.float32), 12000, 0, 0)
    assert decode_or_reason((record.key, record.value, _set(record.headers, name, str(value).encode()))) == reason


def test_huge_chunk_decodes_without_trouble():
    """A 10 s chunk of 384 kHz stereo f32le (30 MB, over Kafka's limit but not the decoder's)."""
    samples = np.full((384_000 * 10, 2), 0.5, np.float32)
    record = protocol.encode("big", samples, 384_000, 0, 0, fmt="f32le")
    chunk = protocol.decode(record.key, record.value, record.headers)
    assert chunk.n_frames == 3_840_000 and chunk.duration_s == 10.0


# --- the per-stream state ----------------------------------------------------------------------

CLEAN_RATE = 44_100
CLEAN_CHUNK = 4410  # 100 ms
BANK_CONFIG = FrontendConfig(window_frames=256)


def clean_stream(n_chunks: int = 12) -> list[Chunk]:
    """An in-order 44.1 kHz s16le stream (through the resampler, the stateful path)."""
    rng = np.random.default_rng(7)
    audio = (0.3 * rng.standard_normal(n_chunks * CLEAN_CHUNK)).astype(np.float32)
    chunks = []
    for k in range(n_chunks):
        record = protocol.encode("clean", audio[k * CLEAN_CHUNK : (k + 1) * CLEAN_CHUNK], CLEAN_RATE, k, 10_000 + 100 * k)
        chunks.append(protocol.decode(record.key, record.value, record.headers))
    return chunks


@st.composite
def garbage_chunks(draw) -> Chunk:
    """A chunk of another stream that decodes but is hostile to the stream state, or one that bypasses
    the decoder (what a bug upstream could hand the bank): disorder, absurd values, NaN, huge."""
    sid = draw(st.sampled_from(["g1", "g2", "g3"]))
    kind = draw(st.sampled_from(["decoded", "disorder", "rate", "nan", "shape", "huge", "empty", "extreme"]))
    rate = draw(st.sampled_from([8000, 12000, 22050, 48000, 384_000]))
    n = draw(st.integers(0, 3000))
    samples = np.full((n, 1), draw(st.floats(-1, 1, width=32)), np.float32)
    seq = draw(st.integers(0, 40))
    ts = draw(st.integers(0, 20_000))
    if kind == "decoded":
        got = decode_or_reason(draw(mutated_records()))
        if isinstance(got, Chunk):
            return dataclasses.replace(got, stream_id=sid)
        kind = "disorder"
    if kind == "disorder":  # random seq/ts: duplicates, late, gaps, restarts, clock steps
        return Chunk(sid, seq, ts, rate, 1, "s16le", samples)
    if kind == "rate":
        return Chunk(sid, seq, ts, draw(st.sampled_from([0, -48000, 1, 10**9])), 1, "f32le", samples)
    if kind == "nan":
        bad = samples.copy() if n else np.zeros((1, 1), np.float32)
        bad[draw(st.integers(0, len(bad) - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return Chunk(sid, seq, ts, rate, 1, "f32le", bad)
    if kind == "shape":
        return Chunk(sid, seq, ts, rate, draw(st.sampled_from([1, 2, 5])),
                     "f32le", draw(st.sampled_from([samples[:, 0], samples.astype(np.float64), np.zeros((3, 4), np.float32)])))  # fmt: skip
    if kind == "huge":
        return Chunk(sid, seq, ts, 48_000, 2, "s16le", np.full((48_000 * 20, 2), 0.1, np.float32))  # 20 s at once
    if kind == "empty":
        return Chunk(sid, seq, ts, rate, 1, "s16le", samples[:0])
    return Chunk(sid, draw(st.sampled_from([0, INT64_MAX])), draw(st.sampled_from([0, INT64_MAX])), rate, 1, "s16le", samples)


def clean_frames(bank: FrontendBank, pushes: list[list[Chunk]]) -> np.ndarray:
    frames = []
    for batch in pushes:
        bank.push(batch)
        if "clean" in bank:
            frames.extend(bank.take_new_frames(["clean"]))
    return np.concatenate(frames, axis=1)


@FUZZ_BANK
@given(garbage=st.lists(garbage_chunks(), min_size=1, max_size=25), data=st.data())
def test_garbage_of_other_streams_never_crashes_the_bank_nor_changes_a_clean_stream(garbage, data):
    clean = clean_stream()
    alone = clean_frames(FrontendBank(BANK_CONFIG), [[c] for c in clean])
    # the same clean chunks, with the garbage spread between them and pushed in the same batches
    mixed: list[list[Chunk]] = [[c] for c in clean]
    for g in garbage:
        mixed[data.draw(st.integers(0, len(mixed) - 1))].append(g)
    for batch in mixed:
        data.draw(st.randoms()).shuffle(batch)
        batch.sort(key=lambda c: c.stream_id != "clean")  # clean keeps its order; garbage comes after it
    bank = FrontendBank(BANK_CONFIG)
    together = clean_frames(bank, mixed)
    assert together.shape == alone.shape and alone.shape[1] > 0
    assert np.abs(together - alone).max() <= TOLERANCE
    assert all(v >= 0 for v in bank.counters.values())
    for sid in bank.stream_ids():  # every garbage stream's state is still readable
        bank.window(sid)
        assert np.isfinite(bank.last_frames([sid], 8)).all()


@FUZZ_BANK
@given(order=st.lists(st.integers(0, 11), min_size=1, max_size=40))
def test_any_order_of_a_streams_own_chunks_is_counted_never_crashes(order):
    """Out-of-order, duplicate and missing sequence numbers of one stream: classified and counted."""
    clean = clean_stream()
    bank = FrontendBank(BANK_CONFIG)
    for k in order:
        bank.push([clean[k]])
    c = bank.counters
    classified = sum(c[name] for name in ("in_order", "duplicate", "late", "seq_gap", "ts_jump", "ts_backward", "seq_restart"))
    assert c["stream_start"] == 1 and classified == len(order) - 1
    assert np.isfinite(bank.window("clean")).all()


def test_bank_counts_every_invalid_chunk_it_is_handed():
    bank = FrontendBank(BANK_CONFIG)
    nan = np.zeros((10, 1), np.float32)
    nan[3] = np.nan
    bad = [Chunk("x", 0, 0, 0, 1, "f32le", nan[:1] * 0), Chunk("x", 1, 0, 12000, 1, "f32le", nan),
           Chunk("x", 2, 0, 12000, 2, "f32le", nan * 0), Chunk("x", 3, 0, 10**9, 1, "s16le", nan * 0)]  # fmt: skip
    bank.push(bad)
    assert bank.counters["invalid"] == len(bad) and "x" not in bank



# --- thousands of malformed records through a running daemon ------------------------------------


def random_malformed(rng: np.random.Generator, good: protocol.Record) -> tuple:
    """A record that :func:`protocol.decode` rejects, by a random mix of mutations of ``good``."""
    while True:
        key, value, headers = good.key, good.value, list(good.headers)
        for _ in range(int(rng.integers(1, 4))):
            name = protocol.REQUIRED_HEADERS[int(rng.integers(len(protocol.REQUIRED_HEADERS)))]
            junk = [b"", b"x", b"-1", b"1e3", b"99999999999999999999999", b"2", b"0", b"\xff", b"mp3"][int(rng.integers(9))]
            kind = int(rng.integers(9))
            if kind == 0:
                headers = _set(headers, name, None)
            elif kind == 1:
                headers = [*headers, (name, junk)]
            elif kind == 2:
                headers = _set(headers, name, junk)
            elif kind == 3:
                value = value[: int(rng.integers(0, len(value)))]
            elif kind == 4:
                value = value + rng.bytes(int(rng.integers(1, 4)))
            elif kind == 5:
                key = [None, b"\xff\xfe"][int(rng.integers(2))]
            elif kind == 6:
                headers = _set(headers, "v", str(int(rng.integers(2, 1000))).encode())
            elif kind == 7 and dict(headers).get("fmt") == b"f32le" and len(value) % 4 == 0 and value:
                raw = np.frombuffer(value, "<f4").copy()
                raw[int(rng.integers(len(raw)))] = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
                value = raw.tobytes()
            elif kind == 8:
                headers = _set(headers, "sr", str([0, 999, 384_001, 10**12][int(rng.integers(4))]).encode())
        reason = decode_or_reason((key, value, headers))
        if isinstance(reason, str):
            return key, value, headers, reason


def produce_fuzz_mix(cfg, n_bad: int, seed: int = 0):
    """Good streams plus ``n_bad`` malformed records, interleaved, in one producer pass.

    Returns (good audio per stream, expected reason counts)."""
    from collections import Counter

    from streamd.kafka_io import BoundedProducer, ensure_topics

    rng = np.random.default_rng(seed)
    ensure_topics(cfg, {cfg.kafka.audio_topic: cfg.kafka.audio_partitions})
    now = int(time.time() * 1000)
    good_audio = {f"good-{i}": (0.2 * np.sin(np.arange(12_000 * 8) * (0.03 + 0.01 * i))).astype(np.float32) for i in range(3)}
    good = [protocol.encode(sid, a[k : k + 6000], 12_000, k // 6000, now + k // 12) for sid, a in good_audio.items()
            for k in range(0, len(a), 6000)]  # fmt: skip
    templates = [protocol.encode(f"bad-{i}", rng.uniform(-1, 1, (int(rng.integers(1, 200)), int(rng.integers(1, 3)))).astype(np.float32),
                                 int(rng.choice([8000, 12000, 48000])), i, now, fmt=str(rng.choice(["s16le", "f32le"])))
                 for i in range(50)]  # fmt: skip
    bad = [random_malformed(rng, templates[int(rng.integers(len(templates)))]) for _ in range(n_bad)]
    expected = Counter(reason for *_, reason in bad)
    # good records keep their per-stream order; the bad ones land anywhere around them
    slots = np.sort(rng.integers(0, len(bad) + 1, size=len(good)))
    with BoundedProducer(cfg, max_pending=5000, linger_ms=20) as producer:
        g = 0
        for i in range(len(bad) + 1):
            while g < len(good) and slots[g] <= i:
                producer.send(cfg.kafka.audio_topic, value=good[g].value, key=good[g].key, headers=good[g].headers)
                g += 1
            if i < len(bad):
                key, value, headers, _ = bad[i]
                producer.send(cfg.kafka.audio_topic, value=b"" if value is None else value, key=key, headers=headers)
    return good_audio, expected, len(good)


def read_dead_letters(cfg, expected: int, timeout_s: float = 60.0) -> list:
    from kafka import TopicPartition

    from streamd.kafka_io import make_consumer

    consumer = make_consumer(cfg, group_id="")
    tp = TopicPartition(cfg.kafka.deadletter_topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    parked: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(parked) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                parked += records
        parked += [r for records in consumer.poll(timeout_ms=1000).values() for r in records]  # nothing more
    finally:
        consumer.close()
    return parked


def run_fuzz_through_daemon(unique, n_bad: int) -> None:
    import threading
    import urllib.request
    from collections import Counter

    from daemon_doubles import ProjectionFingerprinter
    from daemon_helpers import catalog_searcher, daemon_config, topics_of
    from prometheus_client.parser import text_string_to_metric_families

    from streamd.daemon.runner import Daemon
    from streamd.kafka_io import delete_topics
    from streamd.metrics import Metrics

    cfg = daemon_config(unique, partitions=2, **{"daemon.max_poll_records": 5000})
    try:
        started = time.monotonic()
        good_audio, expected, n_good = produce_fuzz_mix(cfg, n_bad)
        produced_s = time.monotonic() - started
        fp = ProjectionFingerprinter()
        metrics = Metrics(process=False, gpu=False)
        daemon = Daemon(cfg, fingerprinter=fp, searcher=catalog_searcher(fp, []), metrics=metrics)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        total = n_bad + n_good
        deadline = time.monotonic() + 120
        seen = 0.0
        while time.monotonic() < deadline and thread.is_alive():
            errors = sum(metrics.chunk_errors.labels(r)._value.get() for r in protocol.REASONS)
            seen = metrics.chunks._value.get() + errors
            if seen >= total:
                break
            time.sleep(0.2)
        consumed_s = time.monotonic() - started - produced_s
        assert thread.is_alive(), "the daemon stopped (crashed?) while consuming garbage"
        assert seen == total, f"the daemon handled {seen} of {total} records in time"
        text = urllib.request.urlopen(f"http://127.0.0.1:{daemon.ops.port}/metrics").read().decode()
        daemon.stop.set()
        thread.join(60)
        assert not thread.is_alive()
        scraped = {s.labels["reason"]: s.value for fam in text_string_to_metric_families(text)
                   if fam.name == "streamd_chunk_errors" for s in fam.samples if s.name.endswith("_total")}  # fmt: skip
        for reason in protocol.REASONS:  # every rejection counted under its reason, in the exposition too
            assert scraped[reason] == expected.get(reason, 0), reason
        parked = read_dead_letters(cfg, n_bad)
        assert Counter(dict(r.headers)["reason"].decode() for r in parked) == expected
        assert len(parked) == n_bad
        # good streams: every chunk consumed and framed exactly as if alone
        assert metrics.chunks._value.get() == n_good
        bank = daemon.pipeline.bank
        for sid, audio in good_audio.items():
            assert bank.frame_count(sid) == (len(audio) - 512) // 256 + 1, sid
        print(f"\n{n_bad} malformed + {n_good} good records: produced in {produced_s:.1f} s, "
              f"daemon handled them in {consumed_s:.1f} s; reasons {dict(expected)}")
    finally:
        delete_topics(cfg, topics_of(cfg))


@pytest.mark.timeout(240)
def test_malformed_records_through_a_running_daemon(config, kafka_bootstrap, unique):
    """10 000 random malformed records mixed with 3 good streams through the daemon and real Kafka:
    no crash, each counted by reason (metrics object and /metrics) and dead-lettered with its reason;
    the good streams are framed completely."""
    run_fuzz_through_daemon(unique, 10_000)
