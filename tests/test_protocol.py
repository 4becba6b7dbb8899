"""Chunk protocol: lossless round trips (property tests) and one typed error per malformed case."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamd import protocol
from streamd.protocol import ProtocolError, decode, encode, from_pcm

headers_common = st.fixed_dictionaries(
    {
        "sample_rate": st.integers(protocol.MIN_SAMPLE_RATE, protocol.MAX_SAMPLE_RATE),
        "seq": st.integers(0, 2**62),
        "ts_ms": st.integers(0, 2**50),
    }
)


@st.composite
def pcm_payloads(draw, fmt):
    channels = draw(st.integers(1, 8))
    frames = draw(st.integers(1, 200))
    if fmt == "s16le":
        values = draw(arrays(np.int16, (frames, channels)))
        return values.astype("<i2"), channels
    values = draw(arrays(np.float32, (frames, channels), elements=st.floats(-1, 1, width=32)))
    return values.astype("<f4"), channels


def _valid_text(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@pytest.mark.parametrize("fmt", sorted(protocol.FORMATS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_encode_decode_is_lossless(fmt, data):
    """Any PCM payload decodes to floats that encode back to the identical bytes, headers intact."""
    raw, channels = data.draw(pcm_payloads(fmt))
    meta = data.draw(headers_common)
    stream_id = data.draw(st.text(min_size=1, max_size=40).filter(_valid_text))
    samples = from_pcm(raw.tobytes(), fmt, channels)
    record = encode(stream_id, samples if channels > 1 else samples[:, 0], fmt=fmt, **meta)
    assert record.value == raw.tobytes()
    assert record.timestamp_ms == meta["ts_ms"]

    chunk = decode(record.key, record.value, record.headers)
    assert chunk.stream_id == stream_id
    assert (chunk.seq, chunk.ts_ms, chunk.sample_rate, chunk.channels, chunk.fmt) == (
        meta["seq"], meta["ts_ms"], meta["sample_rate"], channels, fmt,
    )  # fmt: skip
    assert chunk.samples.dtype == np.float32 and chunk.samples.shape == (raw.shape[0], channels)
    np.testing.assert_array_equal(chunk.samples, samples)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, st.integers(1, 500), elements=st.floats(-1, 1, width=32)))
def test_s16le_quantisation_error_is_at_most_half_a_step(samples):
    chunk = decode(*encode("s", samples, 12000, 0, 0, fmt="s16le")[:3])
    error = np.abs(chunk.samples[:, 0] - samples)
    # Values above 32767/32768 clip to it; everything else is within half a step.
    assert np.all(error[samples < 32767 / 32768] <= 0.5 / 32768 + 1e-9)
    assert np.all(error <= 1 / 32768 + 1e-9)


def test_f32le_samples_outside_unit_range_are_clipped_on_decode():
    record = encode("s", np.array([1.5, -3.0, 0.25], dtype=np.float32), 12000, 0, 0, fmt="f32le")
    np.testing.assert_array_equal(decode(*record[:3]).samples[:, 0], [1.0, -1.0, 0.25])


def _good(fmt="s16le", channels=1, frames=4):
    samples = np.zeros((frames, channels), dtype=np.float32)
    key, value, headers, _ = encode("radio-1", samples, 12000, 7, 1_700_000_000_000, fmt=fmt)
    return key, value, dict(headers)


def _with(headers: dict, **changes) -> list:
    merged = {**headers, **changes}
    return [(k, v) for k, v in merged.items() if v is not None]


MALFORMED = {
    "missing_key": lambda k, v, h: (None, v, list(h.items())),
    "bad_key": lambda k, v, h: (b"\xff\xfe", v, list(h.items())),
    "missing_payload": lambda k, v, h: (k, None, list(h.items())),
    "missing_header": lambda k, v, h: (k, v, _with(h, sr=None)),
    "duplicate_header": lambda k, v, h: (k, v, [*h.items(), ("seq", b"8")]),
    "bad_header": lambda k, v, h: (k, v, _with(h, sr=b"12k")),
    "unsupported_version": lambda k, v, h: (k, v, _with(h, v=b"2")),
    "bad_format": lambda k, v, h: (k, v, _with(h, fmt=b"mp3")),
    "bad_sample_rate": lambda k, v, h: (k, v, _with(h, sr=b"10000000")),
    "bad_channels": lambda k, v, h: (k, v, _with(h, ch=b"0")),
    "bad_seq": lambda k, v, h: (k, v, _with(h, seq=b"-1")),
    "bad_timestamp": lambda k, v, h: (k, v, _with(h, ts=b"-5")),
    "bad_length": lambda k, v, h: (k, v + b"\x00", list(h.items())),
    "empty_payload": lambda k, v, h: (k, b"", list(h.items())),
}


def test_every_reason_has_a_malformed_case():
    assert set(MALFORMED) | {"non_finite"} == set(protocol.REASONS)


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_malformed_record_raises_its_reason(reason):
    key, value, headers = _good()
    with pytest.raises(ProtocolError) as info:
        decode(*MALFORMED[reason](key, value, headers))
    assert info.value.reason == reason
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_f32_samples_are_rejected(bad):
    key, value, headers = _good("f32le", channels=2)
    samples = np.frombuffer(value, dtype="<f4").copy()
    samples[3] = bad
    with pytest.raises(ProtocolError) as info:
        decode(key, samples.tobytes(), list(headers.items()))
    assert info.value.reason == "non_finite"


def test_stereo_frame_size_is_checked():
    key, value, headers = _good("s16le", channels=2)
    with pytest.raises(ProtocolError, match="multiple of 4"):
        decode(key, value[:-2], list(headers.items()))


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=20)),
    value=st.one_of(st.none(), st.binary(max_size=64)),
    headers=st.lists(
        st.tuples(
            st.sampled_from([*protocol.REQUIRED_HEADERS, "x"]), st.one_of(st.none(), st.binary(max_size=8))
        ),
        max_size=8,
    ),
)
def test_arbitrary_records_decode_or_raise_protocol_error(key, value, headers):
    """Garbage in never escapes as anything but ProtocolError."""
    try:
        chunk = decode(key, value, headers)
    except ProtocolError as exc:
        assert exc.reason in protocol.REASONS
    else:
        assert chunk.samples.ndim == 2 and np.isfinite(chunk.samples).all()


def test_decode_record_reads_consumer_record_fields():
    from types import SimpleNamespace

    key, value, headers = _good()
    chunk = protocol.decode_record(SimpleNamespace(key=key, value=value, headers=list(headers.items())))
    assert chunk.stream_id == "radio-1" and chunk.seq == 7 and chunk.n_frames == 4
    assert chunk.duration_s == pytest.approx(4 / 12000)
