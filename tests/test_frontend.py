"""The streaming front end reproduces offline_logmel for any chunking, and follows its gap policy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamd.config import FrontendConfig
from streamd.frontend import COUNTER_NAMES, LOG_SILENCE, FrontendBank
from streamd.frontend.audio import downmix, make_resampler, resample_whole
from streamd.frontend.continuity import ChunkOrder
from streamd.frontend.framer import apply_filterbank, split_filterbank
from streamd.melspec import MelParams, mel_filterbank, offline_logmel
from streamd.protocol import Chunk

RATES = (8000, 11025, 16000, 22050, 44100, 48000)
TOLERANCE = 1e-5
CONFIG = FrontendConfig()
QUALITY = CONFIG.resample_quality


def music_like(rng: np.random.Generator, n: int, channels: int, rate: int) -> np.ndarray:
    """Tones, noise and a silent stretch: loud and near-empty mel bands in one signal."""
    t = np.arange(n) / rate
    tones = sum(np.sin(2 * np.pi * rng.uniform(40, rate / 2) * t) for _ in range(3))
    audio = 0.1 * tones[:, None] + rng.uniform(0.0, 0.3) * rng.standard_normal((n, channels))
    if n > 10:
        start = rng.integers(0, n // 2)
        audio[start : start + n // 5] = 0.0
    return audio.astype(np.float32)


def chunks_of(
    audio: np.ndarray,
    sizes: list[int],
    rate: int,
    stream_id: str = "s",
    seq0: int = 0,
    ts0: float = 1_000_000.0,
    fmt: str = "f32le",
) -> list[Chunk]:
    """Cut ``audio`` into consecutive chunks of ``sizes`` (cycled), with consistent seq and ts."""
    chunks, start, k = [], 0, 0
    while start < len(audio):
        size = sizes[k % len(sizes)]
        piece = audio[start : start + size]
        ts = int(round(ts0 + start * 1000.0 / rate))
        chunks.append(Chunk(stream_id, seq0 + k, ts, rate, audio.shape[1], fmt, piece))
        start += size
        k += 1
    return chunks


def reference(mono_12k: np.ndarray) -> np.ndarray:
    return offline_logmel(torch.from_numpy(np.ascontiguousarray(mono_12k))).numpy()


def collect(bank: FrontendBank, chunks: list[Chunk], per_push: int = 1) -> np.ndarray:
    """Push ``chunks`` a few at a time and gather every frame the stream produced, in order."""
    frames = []
    for begin in range(0, len(chunks), per_push):
        bank.push(chunks[begin : begin + per_push])
        frames.extend(bank.take_new_frames(["s"]))
    return np.concatenate(frames, axis=1) if frames else np.zeros((96, 0), np.float32)


def assert_frames_match(got: np.ndarray, want: np.ndarray, exact: bool = False) -> None:
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    elif got.size:
        assert np.abs(got - want).max() <= TOLERANCE


# --- the resampler --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from(RATES),
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=12),
)
def test_soxr_stream_output_does_not_depend_on_chunking(rate, seed, sizes):
    mono = downmix(music_like(np.random.default_rng(seed), rate, 1, rate))
    whole = resample_whole(mono, rate, 12000, QUALITY)
    resampler = make_resampler(rate, 12000, QUALITY)
    pieces, start, k = [], 0, 0
    while start < len(mono):
        pieces.append(resampler.resample_chunk(mono[start : start + sizes[k % len(sizes)]]))
        start += sizes[k % len(sizes)]
        k += 1
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_filterbank_parts_cover_every_weight_and_give_the_bits_of_the_whole_matmul():
    params = MelParams()
    filterbank = mel_filterbank(params)
    parts = split_filterbank(params)
    covered = torch.zeros_like(filterbank)
    for first, end, bins, weights in parts:
        covered[:bins, first:end] = weights
    torch.testing.assert_close(covered, filterbank, rtol=0, atol=0)  # nothing left out
    power = torch.exp(torch.empty((300, filterbank.shape[0])).uniform_(-30.0, 10.0))
    out = apply_filterbank(power, parts, torch.empty((300, params.n_mels)))
    assert torch.equal(out, power @ filterbank)


def test_downmix_is_the_channel_mean_and_keeps_mono_as_a_view():
    samples = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    np.testing.assert_allclose(downmix(samples), samples.mean(axis=1), rtol=1e-6)
    mono = samples[:, :1].copy()
    assert np.shares_memory(downmix(mono), mono)


# --- frames equal the offline reference -----------------------------------------------------------

chunk_size = st.one_of(st.integers(1, 8), st.integers(9, 400), st.integers(401, 30000))


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from(RATES + (12000,)),
    channels=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
    seconds=st.floats(0.02, 2.5),
    sizes=st.lists(chunk_size, min_size=1, max_size=10),
    per_push=st.integers(1, 4),
)
def test_frames_equal_offline_for_any_chunking(rate, channels, seed, seconds, sizes, per_push):
    audio = music_like(np.random.default_rng(seed), int(seconds * rate), channels, rate)
    if min(sizes) < 8:  # keep examples with tiny chunks short enough to run quickly
        audio = audio[:4000]
    bank = FrontendBank()
    got = collect(bank, chunks_of(audio, sizes, rate), per_push)
    want = reference(resample_whole(downmix(audio), rate, 12000, QUALITY))
    assert_frames_match(got, want)
    assert bank.counters["in_order"] == len(chunks_of(audio, sizes, rate)) - 1


@pytest.mark.parametrize("sizes", [[1], [255, 1, 256, 3], [6000], [511, 513]])
def test_12k_frames_are_bit_identical_to_offline(sizes):
    audio = music_like(np.random.default_rng(len(sizes)), 12000 * 2, 1, 12000)
    if sizes == [1]:
        audio = audio[:6000]  # 22 frames: offline_logmel of under 12 frames rounds differently
    got = collect(FrontendBank(), chunks_of(audio, sizes, 12000), per_push=3)
    assert_frames_match(got, reference(audio[:, 0]), exact=True)


@pytest.mark.parametrize("rate", [44100, 8000])
def test_one_sample_chunks_of_a_resampled_stream(rate):
    audio = music_like(np.random.default_rng(1), rate // 4, 2, rate)
    got = collect(FrontendBank(), chunks_of(audio, [1], rate), per_push=7)
    assert_frames_match(got, reference(resample_whole(downmix(audio), rate, 12000, QUALITY)))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), block_frames=st.sampled_from([1, 7, 64, 1024]))
def test_many_streams_pushed_together_each_match_their_own_offline(seed, block_frames):
    rng = np.random.default_rng(seed)
    streams = {}
    for i in range(6):
        rate = int(rng.choice(RATES + (12000,)))
        channels = int(rng.integers(1, 3))
        audio = music_like(rng, int(rng.uniform(0.1, 1.5) * rate), channels, rate)
        sizes = [int(s) for s in rng.integers(1, rate // 2, size=4)]
        streams[f"s{i}"] = (rate, audio, chunks_of(audio, sizes, rate, stream_id=f"s{i}"))
    # interleave the streams at random, each stream's chunks staying in order
    per_stream = {sid: list(chunks) for sid, (_, _, chunks) in streams.items()}
    interleaved = []
    while any(per_stream.values()):
        sid = rng.choice([s for s, cs in per_stream.items() if cs])
        interleaved.append(per_stream[sid].pop(0))
    bank = FrontendBank(block_frames=block_frames)
    got = {sid: [] for sid in streams}
    begin = 0
    while begin < len(interleaved):
        step = int(rng.integers(1, 20))
        bank.push(interleaved[begin : begin + step])
        begin += step
        started = [sid for sid in streams if sid in bank]
        for sid, frames in zip(started, bank.take_new_frames(started), strict=True):
            got[sid].append(frames)
    for sid, (rate, audio, _) in streams.items():
        want = reference(resample_whole(downmix(audio), rate, 12000, QUALITY))
        assert_frames_match(np.concatenate(got[sid], axis=1), want)



def test_framing_cut_into_parts_on_a_pool_gives_the_same_bits():
    """``pool``/``parts``: a large framing computed in parts on several threads is bit for bit the
    one-thread framing, in the framer and through a bank of many streams pushed at once."""
    from concurrent.futures import ThreadPoolExecutor

    from streamd.frontend.framer import MIN_PART_FRAMES, LogmelFramer

    class CountingPool(ThreadPoolExecutor):
        submitted = 0

        def submit(self, *args, **kwargs):
            self.submitted += 1
            return super().submit(*args, **kwargs)

    rng = np.random.default_rng(3)
    signal = music_like(rng, 400_000, 1, 12000)[:, 0]
    starts = np.sort(rng.integers(0, len(signal) - 512, size=3 * MIN_PART_FRAMES + 17))
    with CountingPool(2) as pool:
        one = LogmelFramer(block_frames=100).compute(signal, starts).copy()
        framer = LogmelFramer(block_frames=100, pool=pool, parts=3)
        assert np.array_equal(framer.compute(signal, starts), one)
        assert pool.submitted == 2
        assert np.array_equal(framer.compute(signal, starts[:40]), one[:40])  # too few to cut
        assert pool.submitted == 2

        streams = {f"s{i}": music_like(rng, int(rng.uniform(2.0, 4.0) * 12000), 1, 12000) for i in range(12)}
        chunks = [c for sid, audio in streams.items() for c in chunks_of(audio, [6000], 12000, stream_id=sid)]
        banks = {parts: FrontendBank(pool=pool, parts=parts) for parts in (1, 2)}
        for bank in banks.values():
            bank.push(chunks)
        assert pool.submitted > 2
        ids = list(streams)
        for mine, theirs in zip(banks[1].take_new_frames(ids), banks[2].take_new_frames(ids), strict=True):
            assert mine.shape[1] > 0 and np.array_equal(mine, theirs)

# --- gaps and disorder ----------------------------------------------------------------------------

RATE = 12000
CHUNK = 1200  # 100 ms: capture times stay whole milliseconds, so time-measured gaps are exact


def pieces(
    n_chunks: int, rate: int = RATE, chunk: int = CHUNK, seed: int = 0, channels: int = 1
) -> list[np.ndarray]:
    audio = music_like(np.random.default_rng(seed), n_chunks * chunk, channels, rate)
    return [audio[k * chunk : (k + 1) * chunk] for k in range(n_chunks)]


def chunk(seq: int, ts_ms: float, samples: np.ndarray, rate: int = RATE, fmt: str = "f32le") -> Chunk:
    return Chunk("s", seq, int(ts_ms), rate, samples.shape[1], fmt, samples)


def in_order(parts: list[np.ndarray], rate: int = RATE, ts0: float = 1_000_000.0) -> list[Chunk]:
    out, ts = [], ts0
    for seq, samples in enumerate(parts):
        out.append(chunk(seq, ts, samples, rate))
        ts += len(samples) * 1000 / rate
    return out


def mono12k(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([downmix(p) for p in parts])


def nonzero(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if v}


def test_counters_start_at_zero_with_every_name():
    assert FrontendBank().counters == dict.fromkeys(COUNTER_NAMES, 0)


def test_first_chunk_starts_a_stream():
    bank = FrontendBank()
    audio = pieces(2, chunk=300)
    bank.push([chunk(7, 5000, audio[0])])
    assert "s" in bank and bank.frame_count("s") == 0 and bank.generation("s") == 0
    assert nonzero(bank.counters) == {"stream_start": 1}
    assert (bank.window("s") == LOG_SILENCE).all()
    bank.push([chunk(8, 5025, audio[1])])
    assert bank.frame_count("s") == 1  # 600 samples hold one 512-sample frame
    assert nonzero(bank.counters) == {"stream_start": 1, "in_order": 1}


def test_duplicates_are_dropped():
    parts = pieces(4)
    c = in_order(parts)
    bank = FrontendBank()
    got = collect(bank, [c[0], c[1], c[1], c[2], c[0], c[3]])
    assert_frames_match(got, reference(mono12k(*parts)), exact=True)
    assert nonzero(bank.counters) == {"stream_start": 1, "in_order": 3, "duplicate": 2}


def test_short_seq_gap_is_filled_with_silence_and_the_late_chunk_dropped():
    parts = pieces(5)
    c = in_order(parts)
    bank = FrontendBank()
    got = collect(bank, [c[0], c[1], c[3], c[2], c[4]])
    want = reference(mono12k(parts[0], parts[1], np.zeros_like(parts[2]), parts[3], parts[4]))
    assert_frames_match(got, want, exact=True)
    assert nonzero(bank.counters) == {
        "stream_start": 1,
        "in_order": 2,
        "seq_gap": 1,
        "gap_filled": 1,
        "gap_filled_ms": 100,
        "late": 1,
    }


def test_seq_gap_without_capture_times_is_measured_in_chunks():
    parts = pieces(5)
    bank = FrontendBank()
    no_ts = [chunk(seq, 0, parts[seq]) for seq in (0, 1, 4)]  # a producer that sends ts = 0
    got = collect(bank, no_ts)
    want = reference(mono12k(parts[0], parts[1], np.zeros_like(parts[2]), np.zeros_like(parts[3]), parts[4]))
    assert_frames_match(got, want, exact=True)
    assert bank.counters["seq_gap"] == 1 and bank.counters["gap_filled"] == 1
    assert bank.counters["ts_backward"] == 1  # ts 0 is earlier than expected for seq 1


def test_short_gap_through_the_resampler_equals_offline_of_the_filled_signal():
    rate, size = 44100, 4410
    parts = pieces(4, rate=rate, chunk=size, channels=2)
    c = in_order(parts, rate=rate)
    got = collect(FrontendBank(), [c[0], c[2], c[3]])
    filled = mono12k(parts[0], np.zeros_like(parts[1]), parts[2], parts[3])
    assert_frames_match(got, reference(resample_whole(filled, rate, 12000, QUALITY)))


def test_long_seq_gap_resets_the_stream():
    parts = pieces(6)
    c = in_order(parts)
    after = [chunk(40, c[3].ts_ms + 5000, parts[3]), chunk(41, c[3].ts_ms + 5100, parts[4])]
    bank = FrontendBank()
    collect(bank, c[:3])
    assert bank.frame_count("s") > 0
    got = collect(bank, after)
    assert bank.generation("s") == 1
    assert bank.stream("s").start_ts_ms == c[3].ts_ms + 5000
    assert_frames_match(got, reference(mono12k(parts[3], parts[4])), exact=True)
    assert bank.frame_count("s") == got.shape[1]
    silent = bank.window_frames - got.shape[1]
    assert (bank.window("s")[:, :silent] == LOG_SILENCE).all()
    assert nonzero(bank.counters) == {"stream_start": 1, "in_order": 3, "seq_gap": 1, "gap_reset": 1}


def test_signal_buffer_overflow_interleaving_and_chunks_larger_than_the_buffer():
    # block_frames=64: the bank's signal buffer holds 8 * 64 * 256 = 131072 samples. The pushes
    # fill it several times, a stream's span is extended (two chunks in a row) and moved (its
    # next chunk after other streams'), and chunks of 140000 samples are framed on their own.
    rng = np.random.default_rng(21)
    audio = {sid: music_like(rng, 400_000, 1, RATE) for sid in "abc"}
    sizes = {"a": [140_000, 7000, 13], "b": [3000, 3000, 9000], "c": [1, 20_000, 511]}
    queues = {sid: chunks_of(audio[sid], sizes[sid], RATE, stream_id=sid) for sid in audio}
    order = ["a", "b", "b", "c", "a", "c", "c", "b", "a"] * 12
    bank = FrontendBank(block_frames=64)
    got = {sid: [] for sid in audio}
    fed = dict.fromkeys(audio, 0)
    for begin in range(0, len(order), 9):
        push = [queues[sid].pop(0) for sid in order[begin : begin + 9] if queues[sid]]
        for c in push:
            fed[c.stream_id] += len(c.samples)
        bank.push(push)
        sids = sorted({c.stream_id for c in push})
        for sid, frames in zip(sids, bank.take_new_frames(sids), strict=True):
            got[sid].append(frames)
    for sid in audio:
        want = reference(audio[sid][: fed[sid], 0])
        assert_frames_match(np.concatenate(got[sid], axis=1), want, exact=True)


def test_reset_in_the_middle_of_a_push_drops_the_audio_before_it():
    parts = pieces(5)
    c = in_order(parts)
    after = [chunk(40, c[3].ts_ms + 5000, parts[3]), chunk(41, c[3].ts_ms + 5100, parts[4])]
    bank = FrontendBank()
    bank.push(c[:3] + after)  # one push: the reset comes while the stream has unframed audio
    assert bank.generation("s") == 1
    (got,) = bank.take_new_frames(["s"])
    assert_frames_match(got, reference(mono12k(parts[3], parts[4])), exact=True)


@pytest.mark.parametrize("jump_ms, expect", [(500, "gap_filled"), (5000, "gap_reset")])
def test_capture_time_jump_without_seq_gap(jump_ms, expect):
    parts = pieces(4)
    c = in_order(parts)
    jumped = [dataclasses.replace(c[2], ts_ms=c[2].ts_ms + jump_ms), chunk(3, c[3].ts_ms + jump_ms, parts[3])]
    bank = FrontendBank()
    before = collect(bank, c[:2])
    after = collect(bank, jumped)
    if expect == "gap_filled":
        silence = np.zeros((jump_ms * RATE // 1000, 1), np.float32)
        want = reference(mono12k(parts[0], parts[1], silence, parts[2], parts[3]))
        assert_frames_match(np.concatenate([before, after], axis=1), want, exact=True)
    else:
        assert_frames_match(after, reference(mono12k(parts[2], parts[3])), exact=True)
        assert bank.generation("s") == 1
    filled = {"gap_filled_ms": jump_ms} if expect == "gap_filled" else {}
    assert nonzero(bank.counters) == {"stream_start": 1, "in_order": 2, "ts_jump": 1, expect: 1, **filled}


def test_capture_time_going_back_keeps_the_audio_contiguous():
    parts = pieces(4)
    c = in_order(parts)
    stepped = [
        c[0],
        c[1],
        dataclasses.replace(c[2], ts_ms=c[2].ts_ms - 10_000),
        chunk(3, c[3].ts_ms - 10_000, parts[3]),
    ]
    bank = FrontendBank()
    got = collect(bank, stepped)
    assert_frames_match(got, reference(mono12k(*parts)), exact=True)
    assert nonzero(bank.counters) == {"stream_start": 1, "in_order": 2, "ts_backward": 1}


def test_restarted_producer_numbering_is_a_restart_not_late_chunks():
    parts = pieces(5)
    c = in_order(parts)
    restarted = [chunk(0, c[3].ts_ms + 1000, parts[3]), chunk(1, c[4].ts_ms + 1000, parts[4])]
    bank = FrontendBank()
    got = collect(bank, c[:3] + restarted)
    silence = np.zeros((RATE, 1), np.float32)  # the 1 s the producer was away
    assert_frames_match(
        got, reference(mono12k(parts[0], parts[1], parts[2], silence, parts[3], parts[4])), exact=True
    )
    assert nonzero(bank.counters) == {
        "stream_start": 1,
        "in_order": 3,
        "seq_restart": 1,
        "gap_filled": 1,
        "gap_filled_ms": 1000,
    }


def test_sample_rate_change_flushes_the_resampler_and_keeps_frames_continuous():
    segments = [(44100, 2), (16000, 1), (12000, 1), (48000, 2)]
    rng = np.random.default_rng(3)
    chunks, want, ts, seq = [], [], 1_000_000.0, 0
    for k, (rate, channels) in enumerate(segments):
        audio = music_like(rng, rate // 2, channels, rate)
        for part in np.array_split(audio, 3):
            chunks.append(Chunk("s", seq, int(ts), rate, channels, "f32le", part))
            ts += len(part) * 1000 / rate
            seq += 1
        want.append(resample_whole(downmix(audio), rate, 12000, QUALITY, last=k < len(segments) - 1))
    bank = FrontendBank()
    got = collect(bank, chunks, per_push=2)
    assert_frames_match(got, reference(np.concatenate(want)))
    assert bank.counters["rate_change"] == 3 and bank.counters["channels_change"] == 2
    assert bank.counters["ts_jump"] == 0 and bank.counters["gap_reset"] == 0


def test_channel_and_format_changes_are_counted_and_frames_continuous():
    rate = 22050
    parts = [pieces(1, rate=rate, chunk=4410, seed=s, channels=ch)[0] for s, ch in enumerate((2, 1, 2))]
    c = in_order(parts, rate=rate)
    c = [dataclasses.replace(c[0], fmt="s16le"), c[1], dataclasses.replace(c[2], fmt="s16le")]
    bank = FrontendBank()
    got = collect(bank, c)
    assert_frames_match(got, reference(resample_whole(mono12k(*parts), rate, 12000, QUALITY)))
    assert nonzero(bank.counters) == {
        "stream_start": 1,
        "in_order": 2,
        "channels_change": 2,
        "format_change": 2,
    }


def test_invalid_chunks_are_counted_and_skipped():
    parts = pieces(4)
    c = in_order(parts)
    nan = parts[2].copy()
    nan[5] = np.nan
    bad = [
        dataclasses.replace(c[2], samples=parts[2].astype(np.float64)),
        dataclasses.replace(c[2], samples=parts[2][:, 0]),
        dataclasses.replace(c[2], channels=2),
        dataclasses.replace(c[2], sample_rate=0),
        dataclasses.replace(c[2], samples=nan),
        dataclasses.replace(c[2], samples=None),
    ]
    bank = FrontendBank()
    bank.push([dataclasses.replace(c[0], stream_id="never", samples=nan)])  # does not start a stream
    assert "never" not in bank
    got = collect(bank, [c[0], c[1], *bad, c[3]])
    want = reference(mono12k(parts[0], parts[1], np.zeros_like(parts[2]), parts[3]))
    assert_frames_match(got, want, exact=True)
    assert nonzero(bank.counters) == {
        "stream_start": 1,
        "in_order": 1,
        "invalid": 7,
        "seq_gap": 1,
        "gap_filled": 1,
        "gap_filled_ms": 100,
    }


def test_empty_chunk_is_counted_and_takes_its_sequence_number():
    parts = pieces(3)
    c = in_order(parts)
    empty = chunk(1, c[1].ts_ms, parts[0][:0])
    bank = FrontendBank()
    got = collect(bank, [c[0], empty, dataclasses.replace(c[1], seq=2), dataclasses.replace(c[2], seq=3)])
    assert_frames_match(got, reference(mono12k(*parts)), exact=True)
    assert nonzero(bank.counters) == {"stream_start": 1, "in_order": 3, "empty": 1}


def test_chunk_order_remembers_64_sequence_numbers():
    order = ChunkOrder(0, 0.0, jitter_ms=50.0)
    for seq in range(100):
        assert order.classify(seq, seq * 100)[0] == "in_order"
        order.advance(seq, seq * 100, 100.0)
    assert order.classify(99, 9900) == ("duplicate", 0.0)
    assert order.classify(36, 3600) == ("duplicate", 0.0)
    assert order.classify(35, 3500) == ("late", 0.0)  # older than the memory
    assert order.classify(100_000, 10_000_000)[0] == "seq_gap"
    order.advance(100_000, 10_000_000, 100.0)  # a huge jump keeps the memory small
    assert order.recent == 1


# --- reading windows and frames -------------------------------------------------------------------


def small_bank(window_frames: int = 64, pad_frames: int = 6) -> FrontendBank:
    return FrontendBank(FrontendConfig(window_frames=window_frames, pad_frames=pad_frames))


def test_window_is_the_newest_frames_padded_on_both_sides():
    audio = music_like(np.random.default_rng(5), 2 * RATE, 1, RATE)
    bank = small_bank()
    bank.push(chunks_of(audio, [1000], RATE))
    want = reference(audio[:, 0])
    window = bank.window("s")
    assert window.shape == (96, 70) and window.flags.c_contiguous
    np.testing.assert_array_equal(window[:, 3:67], want[:, -64:])
    assert (window[:, :3] == LOG_SILENCE).all() and (window[:, 67:] == LOG_SILENCE).all()
    assert (bank.window("s", pad_frames=34, pad_value=0.0)[:, :17] == 0.0).all()
    assert bank.window("s", pad_frames=0).shape == (96, 64)
    assert bank.windows(["s", "s"]).shape == (2, 96, 70)


def test_young_stream_window_reads_silence_before_its_first_frame():
    audio = music_like(np.random.default_rng(6), 20 * 256 + 256, 1, RATE)
    bank = small_bank(pad_frames=0)
    bank.push(chunks_of(audio, [333], RATE))
    want = reference(audio[:, 0])
    n = want.shape[1]
    window = bank.window("s")
    assert bank.frame_count("s") == n
    assert (window[:, : 64 - n] == LOG_SILENCE).all()
    np.testing.assert_array_equal(window[:, 64 - n :], want)


def test_default_window_is_1366_frames_of_a_long_stream_and_pads_to_1400():
    audio = music_like(np.random.default_rng(7), 35 * RATE, 1, RATE)
    bank = FrontendBank()
    for begin in range(0, len(audio), 64):
        bank.push(chunks_of(audio, [6000], RATE)[begin : begin + 64])
    want = reference(audio[:, 0])
    np.testing.assert_array_equal(bank.window("s"), want[:, -1366:])
    assert bank.window("s", pad_frames=34).shape == (96, 1400)


def test_take_new_frames_ready_and_a_consumer_that_falls_behind():
    audio = music_like(np.random.default_rng(8), 4 * RATE, 1, RATE)
    want = reference(audio[:, 0])
    chunks = chunks_of(audio, [RATE // 2], RATE)
    bank = small_bank()
    bank.push(chunks[:1])  # 22 frames
    assert bank.ready(48) == [] and bank.ready(22) == ["s"]
    bank.push(chunks[1:3])  # 69 frames in all
    assert bank.ready(48) == ["s"] and bank.new_frame_count("s") == 69
    (taken,) = bank.take_new_frames(["s"])
    np.testing.assert_array_equal(taken, want[:, 5:69])  # the ring keeps 64: the oldest 5 are gone
    assert bank.new_frame_count("s") == 0 and bank.ready(1) == []
    bank.push(chunks[3:5])  # 116 frames in all
    (taken,) = bank.take_new_frames(["s"])
    np.testing.assert_array_equal(taken, want[:, 69:116])


def test_take_hop_gives_aligned_hops_for_an_incremental_model():
    audio = music_like(np.random.default_rng(11), 6 * RATE, 1, RATE)
    want = reference(audio[:, 0])
    chunks = chunks_of(audio, [RATE // 2], RATE)
    bank = FrontendBank()
    hops = []
    for begin in range(0, len(chunks), 3):
        bank.push(chunks[begin : begin + 3])
        while bank.ready(48):
            hops.append(bank.take_hop(["s"], 48)[0])
    assert len(hops) == want.shape[1] // 48
    np.testing.assert_array_equal(np.concatenate(hops, axis=1), want[:, : 48 * len(hops)])
    with pytest.raises(ValueError, match="fewer than 48"):
        bank.take_hop(["s"], 48)


def test_take_hop_of_a_consumer_that_fell_behind_skips_whole_hops():
    audio = music_like(np.random.default_rng(12), 200 * 256 + 256, 1, RATE)
    want = reference(audio[:, 0])
    bank = small_bank()
    bank.push(chunks_of(audio, [5000], RATE))
    assert bank.frame_count("s") == 200
    hop = bank.take_hop(["s"], 16)[0]  # frames 0..143 left the 64-frame ring: 9 hops skipped
    np.testing.assert_array_equal(hop, want[:, 144:160])
    assert bank.counters["frames_skipped"] == 144
    np.testing.assert_array_equal(bank.take_hop(["s"], 16)[0], want[:, 160:176])


def test_last_frames_of_many_streams():
    audio = music_like(np.random.default_rng(9), RATE, 1, RATE)
    bank = small_bank()
    bank.push(
        chunks_of(audio, [4000], RATE, stream_id="a") + chunks_of(audio[:6000], [999], RATE, stream_id="b")
    )
    out = bank.last_frames(["a", "b"], 30)
    np.testing.assert_array_equal(out[0], reference(audio[:, 0])[:, -30:])
    want_b = reference(audio[:6000, 0])
    assert (out[1][:, : 30 - want_b.shape[1]] == LOG_SILENCE).all()
    np.testing.assert_array_equal(out[1][:, 30 - want_b.shape[1] :], want_b)


def test_frame_end_time():
    bank = FrontendBank()
    bank.push([chunk(0, 10_000, pieces(1)[0])])
    assert bank.frame_end_ms("s", 0) == pytest.approx(10_000 + 512 / 12)
    assert bank.frame_end_ms("s", 10) == pytest.approx(10_000 + (10 * 256 + 512) / 12)


# --- memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, channels", [(44100, 2), (12000, 1)])
def test_memory_per_stream_does_not_grow_with_stream_length(rate, channels):
    bank = FrontendBank()
    rng = np.random.default_rng(10)
    pool = [music_like(rng, int(rng.integers(1, rate)), channels, rate) for _ in range(8)]
    seq, ts = 0, 0.0
    sizes = {}

    def feed(seconds):
        nonlocal seq, ts
        fed = 0
        while fed < seconds * rate:
            part = pool[seq % len(pool)]
            bank.push([Chunk("s", seq, int(ts), rate, channels, "s16le", part)])
            seq, ts, fed = seq + 1, ts + len(part) * 1000 / rate, fed + len(part)
            state = bank.stream("s")
            assert state.tail_len < 512 and state.span_start < 0

    def measure():
        state = bank.stream("s")
        return {
            "state": state.nbytes,
            "ring": state.ring.data.nbytes,
            "tail": state.tail.nbytes,
            "bank_buffers": bank._signal.nbytes
            + sum(t.nbytes for t in vars(bank._framer).values() if isinstance(t, torch.Tensor)),
            "resampler_delay": 0 if state.resampler is None else state.resampler.delay() < 4 * rate,
        }

    feed(40)  # past one full window
    sizes = measure()
    feed(200)
    assert measure() == sizes
    assert sizes["state"] == 96 * 1366 * 4 + 512 * 4
    assert bank.frame_count("s") > 3 * 1366
