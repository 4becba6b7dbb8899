"""The daemon's pipeline without Kafka: recognize on a generated file, state hand-over, slot growth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from daemon_doubles import BOUNDARY_CALIBRATION, ProjectionFingerprinter
from daemon_helpers import catalog_searcher, corpus_tracks
from store_doubles import write_wav

from streamd import dataset, protocol
from streamd.config import load_config
from streamd.daemon import state as stream_state
from streamd.daemon.pipeline import pipeline_from_config
from streamd.daemon.recognize import chunks_of, recognize_chunks
from streamd.ingest import stream_chunks
from streamd.store.table import CodeTable, SearchSettings

SR = 12000


def program(corpus_dir):
    """silence 5 s | catalog track A from 20 s, 60 s | unknown 30 s | catalog track B from 0, 50 s."""
    catalog, unknown = corpus_tracks(4, 1)
    a, b = dataset.load_audio(catalog[1]), dataset.load_audio(catalog[2])
    u = dataset.load_audio(unknown[0])
    parts = [np.zeros(5 * SR, np.float32), a[20 * SR : 80 * SR], u[10 * SR : 40 * SR], b[: 50 * SR]]
    truth = [(catalog[1].track_id, 5.0, 65.0), (catalog[2].track_id, 95.0, 145.0)]
    return catalog, np.concatenate(parts), truth


def chunks(audio, sid="s", start_ms=0):
    for record in stream_chunks(audio, SR, sid, 500, fmt="f32le", start_ts_ms=start_ms):
        yield protocol.decode(record.key, record.value, record.headers)


def test_recognize_finds_the_catalog_plays_of_a_file(corpus_dir, tmp_path):
    catalog, audio, truth = program(corpus_dir)
    fp = ProjectionFingerprinter()
    searcher = catalog_searcher(fp, catalog)
    path = write_wav(tmp_path / "station.wav", audio)
    config = load_config(overrides=BOUNDARY_CALIBRATION)
    pipeline = pipeline_from_config(config, fp, searcher, shed_lag_s=np.inf, max_lag_s=np.inf)
    lines = recognize_chunks(pipeline, chunks_of(path, "station"))
    assert all(set(line) == {"track_id", "start_s", "end_s", "offset_s", "confidence", "stream_id"} for line in lines)
    for track, start, end in truth:
        found = [x for x in lines if x["track_id"] == track and min(x["end_s"], end) - max(x["start_s"], start) > 0.5 * (end - start)]
        # the test fingerprinter may split a play (it is a weak hash); its pieces must cover the play
        assert found, (track, lines)
        assert abs(min(x["start_s"] for x in found) - start) < 3 and abs(max(x["end_s"] for x in found) - end) < 3, found


def test_state_hand_over_continues_the_stream_exactly(corpus_dir):
    """A second pipeline restored from the first's state document (through JSON) and warmed up on
    the audio before the cut — from a chunk that is not on the first one's hop grid — decides
    exactly what an uninterrupted pipeline decides: the open play ends once under its id, and
    every later event is the same (ids, boundaries, hits)."""
    catalog, audio, truth = program(corpus_dir)
    fp = ProjectionFingerprinter()
    searcher = catalog_searcher(fp, catalog)
    config = load_config()
    all_chunks = list(chunks(audio, start_ms=1_700_000_000_000))

    def pipeline():
        return pipeline_from_config(config, fp, searcher, shed_lag_s=np.inf, max_lag_s=np.inf)

    def summary(decisions):
        return [(d.document["event_id"], d.document["start_s"], d.document["end_s"], d.document["hits"])
                for d in decisions]  # fmt: skip

    uninterrupted = pipeline()
    reference = summary(uninterrupted.feed(all_chunks) + uninterrupted.end_all())
    for cut, warm_chunks in ((90, 63), (233, 65)):  # 45 s and 116 s: inside plays
        first = pipeline()
        before = first.feed(all_chunks[:cut])
        assert first.tracker.open_plays("s"), f"no play open at chunk {cut}"
        document = stream_state.decode(stream_state.encode(first.export("s")))
        second = pipeline()
        second.restore(document)
        assert not second.feed(all_chunks[cut - warm_chunks : cut], warm=True)
        after = second.feed(all_chunks[cut:]) + second.end_all()
        assert summary(before + after) == reference, cut


def test_encoder_slots_grow_without_changing_codes():
    fp = ProjectionFingerprinter()
    rng = np.random.default_rng(0)
    table = CodeTable.build(64, [], SearchSettings())
    from streamd.daemon.pipeline import TableSearcher

    small = pipeline_from_config(load_config(), fp, TableSearcher(table), initial_slots=2)
    big = pipeline_from_config(load_config(), fp, TableSearcher(table), initial_slots=64)
    audios = {f"s{i}": (0.1 * rng.standard_normal(SR * 4)).astype(np.float32) for i in range(5)}
    import time

    now = int(time.time() * 1000)
    for p in (small, big):
        for sid, a in audios.items():
            p.push(list(chunks(a, sid, now)))
    assert small.encoder.max_streams >= 5
    ready = sorted(small.bank.ready(48))
    assert ready == sorted(big.bank.ready(48)) and len(ready) == 5
    frames_small = small.bank.take_hop(ready, 48)
    frames_big = big.bank.take_hop(ready, 48)
    codes_small = small.encoder.advance(torch.tensor([small.streams[s].slot for s in ready]), torch.from_numpy(frames_small))
    codes_big = big.encoder.advance(torch.tensor([big.streams[s].slot for s in ready]), torch.from_numpy(frames_big))
    assert np.array_equal(codes_small, codes_big)


def test_a_round_encodes_at_most_max_batch_windows_per_call_with_the_same_codes():
    """``model.max_batch`` caps every encoder call (the daemon's heap reuse rests on it: batch
    buffers recur in a few sizes); cutting a round into calls changes no code."""
    import time

    from streamd.daemon.pipeline import TableSearcher

    fp = ProjectionFingerprinter()
    rng = np.random.default_rng(2)
    audios = {f"s{i}": (0.1 * rng.standard_normal(SR * 6)).astype(np.float32) for i in range(7)}
    now = int(time.time() * 1000)
    codes, calls = {}, {}
    for max_batch in (10, 4096):
        pipeline = pipeline_from_config(load_config(), fp, TableSearcher(CodeTable.build(64, [], SearchSettings())),
                                        max_batch=max_batch, batch_split=1)  # fmt: skip
        sizes, advance = [], pipeline.encoder.advance_hops
        pipeline.encoder.advance_hops = lambda slots, frames, advance=advance, sizes=sizes: (
            sizes.append(frames.shape[0] * frames.shape[-1] // 48) or advance(slots, frames))
        seen = []
        pipeline.tracker.update = lambda ids, times, *rest, seen=seen: seen.append((list(ids), rest[-1].copy())) or []
        for sid, audio in audios.items():
            pipeline.push(list(chunks(audio, sid, now)))
        while pipeline.bank.ready(pipeline.hop):
            pipeline.step()
        calls[max_batch] = sizes
        codes[max_batch] = {sid: [row.tobytes() for ids, rows in seen for s, row in zip(ids, rows, strict=True) if s == sid]
                            for sid in audios}  # fmt: skip  # each stream's codes in the order decided
    assert max(calls[10]) <= 10 and len(calls[10]) > len(calls[4096]) and max(calls[4096]) > 10
    assert sum(calls[10]) == sum(calls[4096]) == sum(len(c) for c in codes[10].values())
    assert codes[10] == codes[4096]


def test_catching_up_several_hops_at_once_decides_as_hop_by_hop(corpus_dir):
    """With the shipped model: a file fed all at once (up to CATCH_UP_HOPS hops per stream per
    batch, the way recognize and warm-up run) searches the same codes and decides the same events
    as the same audio fed one 500 ms chunk at a time (one hop per batch)."""
    from streamd.daemon.pipeline import CATCH_UP_HOPS
    from streamd.model import load_fingerprinter

    catalog, audio, truth = program(corpus_dir)
    config = load_config()
    fp = load_fingerprinter(config.model)
    searcher = catalog_searcher(fp, catalog)

    class Recording:
        """The catalog, noting every batch of codes searched."""

        def __init__(self):
            self.codes = []

        def search(self, codes, k):
            self.codes.append(np.array(codes))
            return searcher.search(codes, k)

        def __getattr__(self, name):
            return getattr(searcher, name)

    def run(feeds):
        recording = Recording()
        pipeline = pipeline_from_config(config, fp, recording, shed_lag_s=np.inf, max_lag_s=np.inf)
        decisions = [d for feed in feeds for d in pipeline.feed(feed)] + pipeline.end_all()
        events = [(d.document["event_id"], d.document["track_id"], d.document["start_s"], d.document["end_s"]) for d in decisions]
        return np.concatenate(recording.codes), events, max(len(c) for c in recording.codes)

    all_chunks = list(chunks(audio, start_ms=1_700_000_000_000))
    codes_at_once, events_at_once, biggest_batch = run([all_chunks])
    codes_one_by_one, events_one_by_one, _ = run([[c] for c in all_chunks])
    assert biggest_batch == CATCH_UP_HOPS  # one stream, several hops per batch
    assert np.array_equal(codes_at_once, codes_one_by_one)
    assert events_at_once == events_one_by_one
    assert {e[1] for e in events_at_once} == {track for track, _, _ in truth}


def test_split_batches_give_the_same_codes_as_one_batch():
    """``batch_split``: a batch of many streams run as parts on several threads gives exactly the
    codes of one batch (the parts advance disjoint encoder slots)."""
    from streamd.daemon.pipeline import MIN_SPLIT_ROWS, TableSearcher
    from streamd.model import load_fingerprinter

    config = load_config()
    fp = load_fingerprinter(config.model)
    table = TableSearcher(CodeTable.build(fp.bits, [], SearchSettings()))
    rng = np.random.default_rng(1)
    n = 3 * MIN_SPLIT_ROWS + 5
    hops = [[(0.1 * rng.standard_normal((n, 96, 48))).astype(np.float32)] for _ in range(3)]
    results = {}
    for split in (1, 3):
        pipeline = pipeline_from_config(config, fp, table, batch_split=split, initial_slots=n)
        slots = torch.arange(n)
        results[split] = [pipeline._advance(slots, torch.from_numpy(h[0])) for h in hops]
        assert (pipeline._split_pool is None) == (split == 1)
        pipeline.close()
    for one, parts in zip(results[1], results[3], strict=True):
        assert one.shape == (n, 1, fp.bits // 8)
        assert np.array_equal(one, parts)



def test_catch_up_batches_of_few_streams_are_split_too():
    """A catch-up batch (few streams, several hops each) has as many windows as a wide one: it is
    split by rows, across its streams, and still gives exactly the codes of one batch."""
    from streamd.daemon.pipeline import MIN_SPLIT_ROWS, TableSearcher
    from streamd.model import load_fingerprinter

    config = load_config()
    fp = load_fingerprinter(config.model)
    table = TableSearcher(CodeTable.build(fp.bits, [], SearchSettings()))
    rng = np.random.default_rng(2)
    n, k = MIN_SPLIT_ROWS // 2 + 3, 4  # fewer streams than MIN_SPLIT_ROWS, 2 parts' worth of windows
    frames = [(0.1 * rng.standard_normal((n, 96, k * fp.hop_frames))).astype(np.float32) for _ in range(2)]
    results, calls = {}, {}
    for split in (1, 2):
        pipeline = pipeline_from_config(config, fp, table, batch_split=split, initial_slots=n)
        encoder, seen = pipeline.encoder, []
        advance = encoder.advance_hops
        encoder.advance_hops = lambda slots, x, advance=advance, seen=seen: seen.append(len(slots)) or advance(slots, x)
        results[split] = [pipeline._advance(torch.arange(n), torch.from_numpy(f)) for f in frames]
        calls[split] = seen
        pipeline.close()
    assert calls[1] == [n, n]
    assert sorted(calls[2]) == sorted([n // 2, n - n // 2] * 2)
    for one, parts in zip(results[1], results[2], strict=True):
        assert one.shape == (n, k, fp.bits // 8)
        assert np.array_equal(one, parts)

def test_the_peaks_of_a_stream_are_those_of_the_whole_recording(corpus_dir):
    """What the pipeline hands the peak check — peaks of the frames its front end holds, chunked
    as they came — equals the peaks of the whole recording's offline frames (away from the newest
    edge, where frames that would decide a peak do not exist yet); frames that have left the ring
    give no answer."""
    from streamd.melspec import offline_logmel
    from streamd.peaks import PeakParams, extract, frame_at

    _, audio, _ = program(corpus_dir)
    fp = ProjectionFingerprinter()
    pipeline = pipeline_from_config(load_config(), fp, catalog_searcher(fp, []), shed_lag_s=np.inf, max_lag_s=np.inf)
    epoch = 1_795_000_000.0  # stream times are capture epoch seconds
    pipeline.feed(list(chunks(audio[: 60 * SR], start_ms=int(epoch * 1000))))
    whole = extract(offline_logmel(torch.from_numpy(audio[: 60 * SR])))
    t = epoch + 55.0
    got, end = pipeline._stream_peaks("s", t - 4.0, t)
    assert end == pytest.approx(frame_at(55.0))
    edge = int(frame_at(55.0)) - PeakParams().time_radius
    inside = lambda p, lo, hi: {tuple(x) for x in p.tolist() if lo <= x[0] < hi}  # noqa: E731
    lo = int(np.ceil(frame_at(51.0)))
    assert len(inside(got, lo, edge)) > 50 and inside(got, lo, edge) == inside(whole, lo, edge)
    assert pipeline._stream_peaks("s", epoch + 5.0, epoch + 9.0) is None  # out of the 29 s ring
    assert pipeline._stream_peaks("other", t - 4.0, t) is None


def test_a_catalog_with_peaks_detects_plays_earlier(corpus_dir):
    """The same station through the same pipeline, the catalog indexed with and without peaks:
    with them, plays are detected after ``peak_hits`` hits instead of ``min_hits``, and the same
    plays are reported."""
    from streamd.decision import STARTED

    catalog, audio, truth = program(corpus_dir)
    fp = ProjectionFingerprinter()
    config = load_config(overrides=BOUNDARY_CALIBRATION)
    detected, plays = {}, {}
    epoch = 1_795_000_000.0  # as in the daemon: capture epoch seconds
    for peaks in (False, True):
        pipeline = pipeline_from_config(config, fp, catalog_searcher(fp, catalog, peaks=peaks), shed_lag_s=np.inf,
                                        max_lag_s=np.inf)  # fmt: skip
        decisions = pipeline.feed(list(chunks(audio, start_ms=int(epoch * 1000)))) + pipeline.end_all()
        detected[peaks] = {d.event.play.track_id: d.event.play.detected_s - epoch for d in decisions
                           if d.event.type == STARTED}  # fmt: skip
        plays[peaks] = {d.event.play.track_id for d in decisions if d.event.type == STARTED}
        assert pipeline.peaks.checks > 0 if peaks else pipeline.peaks.checks == 0
    assert plays[True] == plays[False] == {track for track, _, _ in truth}
    for track, start, _ in truth:
        assert detected[True][track] <= detected[False][track] - 3 * 1.024, (track, detected)
        assert detected[True][track] - start <= 8.0, (track, detected)  # 6.3 s each when written


def test_peak_checks_decide_the_same_on_epoch_times_as_from_zero(corpus_dir):
    """The daemon's stream times are capture epoch seconds, ``streamd recognize``'s seconds from 0:
    the frames a peak check reads must not depend on it (float noise of ~1e-7 s once moved the
    window by a frame, and the daemon reported plays the offline run did not)."""
    catalog, audio, _ = program(corpus_dir)
    fp = ProjectionFingerprinter()
    searcher = catalog_searcher(fp, catalog, peaks=True)
    config = load_config(overrides=BOUNDARY_CALIBRATION)
    runs = {}
    for epoch_ms in (0, 1_795_932_600_123):
        pipeline = pipeline_from_config(config, fp, searcher, shed_lag_s=np.inf, max_lag_s=np.inf)
        answers = []
        checker = pipeline.peaks

        def recording(stream_id, t, track_id, offset_s, _check=checker.agreement, _epoch=epoch_ms / 1000,
                      _answers=answers):
            value = _check(stream_id, t, track_id, offset_s)
            _answers.append((round(t - _epoch, 6), track_id, value))
            return value

        pipeline.tracker.peaks.agreement = recording
        decisions = pipeline.feed(list(chunks(audio, start_ms=epoch_ms))) + pipeline.end_all()
        runs[epoch_ms] = (answers, [(d.event.type, d.event.play.track_id, round(d.event.play.start_s - epoch_ms / 1000, 4))
                                    for d in decisions])  # fmt: skip
    (zero_answers, zero_events), (epoch_answers, epoch_events) = runs.values()
    assert len(zero_answers) >= 5 and zero_answers == epoch_answers
    assert zero_events == epoch_events
