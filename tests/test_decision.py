"""Decision logic on synthetic store answers: one event pair per play, right boundaries, no events by chance."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from streamd.config import load_config
from streamd.decision import ENDED, STARTED, DecisionParams, Play, PlayEvent, Tracker, decide
from streamd.store.codes import flip_random_bits
from streamd.synthetic_matches import Matches, Segment, SyntheticCatalog, hop_times

HOP = DecisionParams().hop_s
CATALOG = SyntheticCatalog(n_tracks=200, n_codes=40_000, seed=0)


def run(segments: list[Segment], end_s: float, seed: int = 0, params: DecisionParams | None = None, **kw):
    rng = np.random.default_rng(seed)
    m = CATALOG.matches(rng, hop_times(0.0, end_s), segments, **kw)
    return m, decide(m.times, m.track_ids, m.offsets, m.distances, params)


def events_of(m: Matches, params: DecisionParams | None = None, stream_id: str = "s") -> list[PlayEvent]:
    tracker = Tracker(params)
    events = []
    for i in range(len(m.times)):
        events += tracker.update([stream_id], m.times[i : i + 1], m.track_ids[i : i + 1], m.offsets[i : i + 1],
                                 m.distances[i : i + 1])  # fmt: skip
    return events + tracker.flush(stream_id)


def tid(track: int) -> str:
    return CATALOG.track_ids[track]


def assert_play(play: Play, seg: Segment, start_tol: float = 2 * HOP, end_tol: float = 3 * HOP) -> None:
    """Boundaries within a couple of hops; the end more loosely, as each miss at the end of a play
    (10 % of hops by default) moves its last hit one hop earlier."""
    assert play.track_id == tid(seg.track)
    assert abs(play.start_s - seg.start_s) <= start_tol, (play, seg)
    assert abs(play.end_s - seg.end_s) <= end_tol, (play, seg)


def test_one_play_gives_one_started_and_one_ended_event_with_its_boundaries():
    seg = Segment(3, 60.0, 60.0 + CATALOG.durations[3])
    m, _ = run([seg], seg.end_s + 60.0)
    events = events_of(m)
    assert [e.type for e in events] == [STARTED, ENDED]
    started, ended = events[0].play, events[1].play
    assert started.end_s is None and started.detected_s < ended.last_hit_s
    assert_play(ended, seg, start_tol=HOP)
    assert ended.track_offset_s == pytest.approx(0.0, abs=HOP)
    assert started.origin_s == ended.origin_s  # what the event id is built from does not move
    # context (2 s) + min_hits hops + a miss or two
    assert 0.0 < started.detected_s - seg.start_s <= 2.0 + (DecisionParams().min_hits + 2) * HOP
    assert 0.5 < ended.confidence <= 1.0 and ended.hits > 0.8 * (seg.end_s - seg.start_s) / HOP * 0.9


def test_play_from_mid_track_is_bounded_by_its_first_hit():
    seg = Segment(5, 100.0, 190.0, track_offset_s=70.0, context_s=2.5, hit_prob=1.0)  # no miss at the start
    _, plays = run([seg], 250.0, seed=1)
    assert len(plays) == 1
    assert_play(plays[0], seg)
    assert plays[0].track_offset_s == pytest.approx(70.0, abs=2 * HOP)


def test_a_stream_that_opens_mid_track_does_not_start_before_its_audio():
    """A model that matches after ~1 s of a track would put the start of a mid-track play at
    first hit − start_context_s, before the stream's first sample; the audio start bounds it,
    offline (decide) and in the daemon's batched update."""
    seg = Segment(5, 0.0, 90.0, track_offset_s=70.0, context_s=0.5, hit_prob=1.0)
    m = CATALOG.matches(np.random.default_rng(2), hop_times(0.0, 120.0), [seg])
    unbounded = decide(m.times, m.track_ids, m.offsets, m.distances)
    assert len(unbounded) == 1 and unbounded[0].start_s < -1.0  # the start this floor corrects
    (play,) = decide(m.times, m.track_ids, m.offsets, m.distances, audio_start_s=0.0)
    assert play.start_s == 0.0
    tracker = Tracker()
    events = []
    for i in range(len(m.times)):
        events += tracker.update(["s"], m.times[i : i + 1], m.track_ids[i : i + 1], m.offsets[i : i + 1],
                                 m.distances[i : i + 1], audio_start_s=[0.0])  # fmt: skip
    assert [(e.type, e.play.start_s) for e in events] == [(STARTED, 0.0), (ENDED, 0.0)]
    state = tracker.export_state("s")
    restored = Tracker()
    restored.restore_state("s", json.loads(json.dumps(state)))
    assert restored.export_state("s") == state


@pytest.mark.parametrize("speed", [0.97, 1.03])
def test_speed_changed_plays_are_one_play_with_the_fitted_speed(speed: float):
    seg = Segment(11, 40.0, 40.0 + CATALOG.durations[11] / speed, speed=speed)
    _, plays = run([seg], seg.end_s + 40.0, seed=2)
    assert len(plays) == 1
    assert_play(plays[0], seg)
    assert plays[0].speed == pytest.approx(speed, abs=0.01)


def test_back_to_back_plays_and_a_crossfade():
    a = Segment(20, 30.0, 130.0)
    b = Segment(21, 130.0, 230.0, track_offset_s=15.0, context_s=2.5)  # cut in mid-track, no gap
    c = Segment(22, 226.0, 330.0)  # 4 s crossfade from b
    _, plays = run([a, b, c], 380.0, seed=3)
    assert [p.track_id for p in plays] == [tid(20), tid(21), tid(22)]
    assert_play(plays[0], a)
    assert_play(plays[1], b, end_tol=4.0 + HOP)  # fading out, b is matched on fewer hops: ends early
    assert_play(plays[2], c)


def test_a_play_ends_at_most_a_crossfade_after_the_next_play_starts():
    """The old track keeps matching for a few s after the cut (its audio fills most of the window):
    when the next play is already open, the old one's end is bounded by that play's start plus
    ``max_overlap_s`` instead of last hit + ``end_bias_s``; with no play after it, it is not."""
    params = dataclasses.replace(DecisionParams(), min_hits=5)
    lingering = Segment(20, 30.0, 133.0, hit_prob=1.0)  # cut at 130 s, matched until 133 s
    following = Segment(21, 130.0, 230.0, hit_prob=1.0, context_s=2.5)
    _, plays = run([lingering, following], 280.0, seed=3, params=params, share_overlaps=False)
    assert [p.track_id for p in plays] == [tid(20), tid(21)]
    first, second = plays
    assert first.last_hit_s > 132.0
    assert first.end_s == pytest.approx(second.start_s + params.max_overlap_s)
    assert first.end_s < first.last_hit_s + params.end_bias_s
    assert abs(first.end_s - 130.0) < abs(first.last_hit_s + params.end_bias_s - 130.0)
    _, alone = run([lingering], 280.0, seed=3, params=params, share_overlaps=False)
    assert alone[0].end_s == pytest.approx(alone[0].last_hit_s + params.end_bias_s)


def test_the_same_track_twice_is_two_plays():
    first = Segment(7, 20.0, 120.0)
    again = Segment(7, 120.0, 220.0)  # back to back, from the beginning again
    later = Segment(7, 300.0, 360.0, track_offset_s=40.0, context_s=2.5)
    _, plays = run([first, again, later], 400.0, seed=4)
    assert len(plays) == 3
    for play, seg in zip(plays, (first, again, later), strict=True):
        assert_play(play, seg)


def test_misses_shorter_than_the_hysteresis_do_not_split_a_play_and_longer_ones_do():
    p = DecisionParams()
    gap = p.end_after_misses // 2 * HOP  # a dropout of a few hops without any match
    before = Segment(9, 50.0, 100.0)
    after = Segment(9, 100.0 + gap, 160.0, track_offset_s=50.0 + gap, context_s=0.0)
    _, plays = run([before, after], 200.0, seed=5)
    assert len(plays) == 1
    assert plays[0].start_s == pytest.approx(50.0, abs=HOP) and plays[0].end_s == pytest.approx(160.0, abs=2 * HOP)

    long_gap = (p.end_after_misses + 6) * HOP
    after = Segment(9, 100.0 + long_gap, 170.0, track_offset_s=50.0 + long_gap, context_s=0.0)
    _, plays = run([before, after], 200.0, seed=5)
    assert len(plays) == 2
    assert plays[0].end_s == pytest.approx(100.0, abs=2 * HOP)


def test_a_repeated_passage_at_another_alignment_does_not_start_a_second_play():
    seg = Segment(13, 30.0, 150.0)
    chorus = Segment(13, 30.0, 150.0, track_offset_s=40.0, hit_prob=0.6, bit_error=0.15)  # same audio 40 s later
    _, plays = run([seg, chorus], 200.0, seed=6, share_overlaps=False)
    assert [p.track_id for p in plays] == [tid(13)]
    assert_play(plays[0], seg)


def test_a_loop_at_another_alignment_never_opens_a_second_play_of_the_track():
    """Issue 11: a loop-based track (the same audio every 5 s) is matched at two alignments, and
    the play misses a few hops in a row now and then; a second play of the track must not open
    while the first one is open (it did whenever the first missed ``min_hits`` hops in a row)."""
    seg = Segment(13, 30.0, 150.0, hit_prob=0.5)
    loop = Segment(13, 30.0, 150.0, track_offset_s=5.0, hit_prob=0.5)
    for seed in range(12):
        m = CATALOG.matches(np.random.default_rng(seed), hop_times(0.0, 200.0), [seg, loop], share_overlaps=False)
        open_plays = set()
        for e in events_of(m):
            if e.type == STARTED:
                assert e.play.track_id not in {track for track, _ in open_plays}, (seed, e.play)
                open_plays.add((e.play.track_id, e.play.origin_s))
            else:
                open_plays.discard((e.play.track_id, e.play.origin_s))


def test_a_play_opened_at_a_wrong_alignment_hands_over_to_the_right_one():
    """A loop-based track: a passage repeated 8 s later matches first and opens the play, while
    the true alignment (played from the start) builds up as a candidate. When the wrong one fades,
    the true one continues the same play: one started and one ended event, with the true
    alignment's boundaries in the ended one."""
    true = Segment(13, 30.0, 150.0, context_s=6.0)
    ghost = Segment(13, 30.0, 80.0, track_offset_s=8.0, context_s=1.0, hit_prob=1.0)
    m = CATALOG.matches(np.random.default_rng(7), hop_times(0.0, 200.0), [true, ghost], share_overlaps=False)
    events = events_of(m)
    assert [e.type for e in events] == [STARTED, ENDED]
    started, ended = (e.play for e in events)
    assert started.origin_s == ended.origin_s and started.occurrence == ended.occurrence  # one play id
    assert started.origin_s == pytest.approx(30.0 - 8.0, abs=2 * HOP)  # opened at the ghost's alignment
    assert_play(ended, true)
    assert ended.track_offset_s == pytest.approx(0.0, abs=HOP)


def test_a_hand_over_keeps_the_start_of_the_airing_it_continues():
    """The play opens at one alignment of a loop-based track; half-way through, another alignment
    builds up and, when the first fades, takes the play over. The airing began at the first
    alignment's hits: the ended play starts there, not where the successor's own hits began (the
    first 30 s of the play were lost this way on a simulated station, docs/decision.md)."""
    first = Segment(13, 30.0, 100.0)
    later = Segment(13, 60.0, 150.0, track_offset_s=38.0, context_s=1.0)
    m = CATALOG.matches(np.random.default_rng(3), hop_times(0.0, 200.0), [first, later], share_overlaps=False)
    events = events_of(m)
    assert [e.type for e in events] == [STARTED, ENDED]
    started, ended = (e.play for e in events)
    assert started.origin_s == ended.origin_s  # one play id
    assert first.start_s <= ended.start_s <= first.start_s + first.context_s + HOP  # the first alignment's first hit
    assert abs(ended.end_s - later.end_s) <= 3 * HOP


def test_the_same_music_in_two_recordings_is_one_play_of_the_closer_one():
    """Two catalog recordings of one piece (a tempo variant, a remaster) match from the same hop:
    only the more confident one is reported; with ``rival_window_s`` 0 both were."""
    right = Segment(21, 40.0, 120.0, bit_error=0.06)
    variant = Segment(22, 40.0, 120.0, track_offset_s=5.0, bit_error=0.14)
    m = CATALOG.matches(np.random.default_rng(8), hop_times(0.0, 160.0), [right, variant], share_overlaps=False)
    plays = decide(m.times, m.track_ids, m.offsets, m.distances)
    assert [p.track_id for p in plays] == [tid(21)]
    assert_play(plays[0], right)
    both = decide(m.times, m.track_ids, m.offsets, m.distances, DecisionParams(rival_window_s=0.0))
    assert sorted(p.track_id for p in both) == [tid(21), tid(22)]


def test_a_recording_at_another_tempo_loses_to_the_one_that_fits_speed_1_even_if_closer():
    """The variant's matches are closer in code but advance 6 % too fast (another tempo): the
    choice between the two waits until their speed is fitted, and the one inside the speed
    tolerance is reported. Before that wait, the more confident variant won."""
    right = Segment(21, 40.0, 140.0, bit_error=0.14)
    variant = Segment(22, 40.0, 140.0, speed=1.06, bit_error=0.06)
    m = CATALOG.matches(np.random.default_rng(9), hop_times(0.0, 180.0), [right, variant], share_overlaps=False)
    plays = decide(m.times, m.track_ids, m.offsets, m.distances)
    assert [p.track_id for p in plays] == [tid(21)]
    assert plays[0].detected_s - right.start_s >= 16 * HOP  # it waited for the speed fit
    assert_play(plays[0], right)


def test_a_tempo_variant_first_matched_a_hop_later_is_still_a_rival():
    """Hops are 1.024 s apart, so two recordings that begin to match one hop apart had first hits
    more than 1 s apart: ``rival_window_s`` (1.5 s) must cover a hop, or both are reported."""
    right = Segment(21, 40.0, 140.0, bit_error=0.14, hit_prob=1.0, context_s=2.0)
    variant = Segment(22, 40.0, 140.0, speed=1.077, bit_error=0.06, hit_prob=1.0, context_s=2.0 + HOP)
    m = CATALOG.matches(np.random.default_rng(9), hop_times(0.0, 180.0), [right, variant], share_overlaps=False)
    playing = (m.times >= right.start_s)[:, None]
    first_hit = {tid(t): m.times[(playing & (m.track_ids == tid(t))).any(axis=1)][0] for t in (21, 22)}
    assert first_hit[tid(22)] - first_hit[tid(21)] == pytest.approx(HOP)
    plays = decide(m.times, m.track_ids, m.offsets, m.distances)
    assert [p.track_id for p in plays] == [tid(21)]
    assert_play(plays[0], right)


def test_rivals_whose_first_matches_jitter_wait_for_a_longer_fit():
    """A track's first matches are often a second off (the model sees a partial window), which
    over 16 hops tilts a slope by several percent: here both recordings' slopes lie outside the
    tolerance at 16 hops, the variant's less so. Both keep waiting while either is outside, up
    to 32 hops, and the longer fit tells them apart."""
    right = Segment(21, 40.0, 140.0, bit_error=0.10, hit_prob=1.0)
    variant = Segment(22, 40.0, 140.0, speed=1 / 1.077, bit_error=0.08, hit_prob=1.0)
    m = CATALOG.matches(np.random.default_rng(4), hop_times(0.0, 180.0), [right, variant], share_overlaps=False)
    early = (m.times < right.start_s + right.context_s + 4.0)[:, None]
    offsets = m.offsets + np.where(early & (m.track_ids == tid(21)), 1.5, 0.0)
    offsets += np.where(early & (m.track_ids == tid(22)), -1.0, 0.0)
    plays = decide(m.times, m.track_ids, offsets, m.distances)
    assert [p.track_id for p in plays] == [tid(21)]
    assert plays[0].detected_s - right.start_s >= 2 * 16 * HOP
    assert_play(plays[0], right)


def test_a_first_match_one_passage_off_does_not_keep_the_true_line_from_forming():
    """The first hop of a play matches the track 3.1 s off as well as (a little worse) at the
    true offset, and a repeat 2.5 s off keeps matching on every hop (a loop, the neighbours of a
    hit). The two lines come within the merge radius on the second hop: the one with more
    evidence survives, not the older one, so the play has the true alignment, not the repeat's."""
    seg = Segment(7, 50.0, 130.0, hit_prob=1.0, bit_error=0.08, context_s=2.0)
    m = CATALOG.matches(np.random.default_rng(3), hop_times(0.0, 160.0), [seg])
    ids, offsets, distances = m.track_ids.copy(), m.offsets.copy(), m.distances.copy()
    rows = np.flatnonzero((m.track_ids == tid(7)).any(axis=1))
    for i, row in enumerate(rows):
        true = seg.offset_at(m.times[row])
        ids[row, np.flatnonzero(ids[row] == tid(7))] = None  # only the three matches below
        ids[row, :3] = tid(7)
        if i == 0:  # the first hop: the wrong line is the closer match
            offsets[row, :3], distances[row, :3] = [true + 3.1, true, true + 2.5], [14, 16, 20]
        else:
            offsets[row, :3], distances[row, :3] = [true, true + 2.5, true - 10.0], [5, 14, 20]
    (play,) = decide(m.times, ids, offsets, distances)
    assert play.track_id == tid(7)
    assert play.origin_s == pytest.approx(seg.start_s, abs=HOP)  # not the repeat's, 2.5 s earlier
    assert_play(play, seg)


def test_a_play_resumed_at_its_alignment_after_a_long_dropout_gets_a_new_id():
    """Issue 11: a dropout longer than the hysteresis ends the play; the track resuming at the same
    alignment is a second play with the same origin, numbered by ``occurrence`` so that the
    two do not share a play id."""
    from streamd.events import build_event

    gap = (DecisionParams().end_after_misses + 6) * HOP
    before = Segment(9, 50.0, 100.0)
    after = Segment(9, 100.0 + gap, 170.0, track_offset_s=50.0 + gap, context_s=0.0)
    m = CATALOG.matches(np.random.default_rng(5), hop_times(0.0, 200.0), [before, after])
    ended = [e for e in events_of(m) if e.type == ENDED]
    assert len(ended) == 2 and ended[0].play.origin_s == pytest.approx(ended[1].play.origin_s, abs=1.0)
    assert [e.play.occurrence for e in ended] == [0, 1]
    ids = {build_event(e, stream_epoch_ms=1.79e12, model_version="m", catalog_name="c", catalog_version=1)["play_id"]
           for e in ended}  # fmt: skip
    assert len(ids) == 2


def test_a_tracker_restored_from_its_exported_state_decides_exactly_the_same():
    """The hand-over state (daemon restarts, rebalances) holds the whole tracker: open plays,
    candidates, hop clock and ended-play memory, through a JSON round trip."""
    gap = (DecisionParams().end_after_misses + 6) * HOP  # ends the play; it resumes at its alignment
    segments = [Segment(3, 10.0, 60.0), Segment(3, 60.0 + gap, 120.0, track_offset_s=50.0 + gap, context_s=0.0),
                Segment(9, 118.0, 190.0, track_offset_s=20.0, context_s=2.5)]  # fmt: skip
    m = CATALOG.matches(np.random.default_rng(11), hop_times(0.0, 200.0), segments)
    reference = events_of(m)
    assert [e.play.occurrence for e in reference if e.type == ENDED] == [0, 1, 0]
    for cut in range(2, len(m.times), 3):  # cuts in every phase: forming, open, ended, resumed plays
        tracker = Tracker()
        events = []
        for i in range(cut):
            events += tracker.update_one("s", m.times[i], m.track_ids[i], m.offsets[i], m.distances[i])
        state = json.loads(json.dumps(tracker.export_state("s"), allow_nan=False))
        restored = Tracker()
        restored.restore_state("s", state)
        for i in range(cut, len(m.times)):
            events += restored.update_one("s", m.times[i], m.track_ids[i], m.offsets[i], m.distances[i])
        assert events + restored.flush("s") == reference, cut


@pytest.mark.parametrize("stuck_prob", [0.0, 0.5])
def test_a_day_of_unknown_audio_gives_no_event(stuck_prob: float):
    rng = np.random.default_rng(7)
    m = CATALOG.chance_matches(rng, hop_times(0.0, 86_400.0), k=10, stuck_prob=stuck_prob)
    assert decide(m.times, m.track_ids, m.offsets, m.distances) == []


def test_state_per_stream_stays_bounded():
    p = DecisionParams(max_candidates=8)
    tracker = Tracker(p)
    rng = np.random.default_rng(8)
    m = CATALOG.chance_matches(rng, hop_times(0.0, 3600.0), k=20)
    for i in range(len(m.times)):
        tracker.update_one("s", m.times[i], m.track_ids[i], m.offsets[i], m.distances[i])
        assert len(tracker._streams["s"].candidates) <= p.max_candidates


def test_batched_update_over_many_streams_equals_one_stream_at_a_time():
    streams = {}
    for n in range(6):
        segs = [Segment(30 + n, 20.0 + 7 * n, 120.0 + 5 * n), Segment(40 + n, 150.0, 260.0, speed=1.02)]
        streams[f"stream-{n}"] = run(segs, 300.0, seed=10 + n)
    tracker = Tracker()
    batched: list[PlayEvent] = []
    ids = list(streams)
    for i in range(len(streams[ids[0]][0].times)):
        ms = [streams[s][0] for s in ids]
        batched += tracker.update(
            ids,
            [m.times[i] + 1000.0 * k for k, m in enumerate(ms)],  # streams need not share a clock
            np.stack([m.track_ids[i] for m in ms]),
            np.stack([m.offsets[i] for m in ms]),
            np.stack([m.distances[i] for m in ms]),
        )
    assert tracker.n_streams == len(ids) and tracker.n_open_plays == 0
    for k, s in enumerate(ids):
        expected = [dataclasses.replace(p, stream_id=s) for p in streams[s][1]]
        got = [e.play for e in batched if e.type == ENDED and e.play.stream_id == s]
        shifted = [
            dataclasses.replace(p, **{f: getattr(p, f) - 1000.0 * k for f in (
                "start_s", "end_s", "origin_s", "first_hit_s", "last_hit_s", "detected_s")})
            for p in got
        ]  # fmt: skip
        assert len(shifted) == len(expected) == 2
        for a, b in zip(shifted, expected, strict=True):
            assert a.track_id == b.track_id and a.hits == b.hits
            assert a.start_s == pytest.approx(b.start_s, abs=1e-6) and a.end_s == pytest.approx(b.end_s, abs=1e-6)
        starts = [e for e in batched if e.type == STARTED and e.play.stream_id == s]
        assert len(starts) == 2


def test_flush_and_reset_end_open_plays_at_their_last_hit():
    seg = Segment(50, 10.0, 200.0)
    m, _ = run([seg], 80.0, seed=12)
    for close in ("flush", "reset"):
        tracker = Tracker()
        events = []
        for i in range(len(m.times)):
            events += tracker.update_one("s", m.times[i], m.track_ids[i], m.offsets[i], m.distances[i])
        assert [e.type for e in events] == [STARTED]
        assert len(tracker.open_plays("s")) == 1 and tracker.open_plays("other") == []
        closed = getattr(tracker, close)("s")
        assert [e.type for e in closed] == [ENDED]
        assert closed[0].play.end_s == pytest.approx(closed[0].play.last_hit_s + tracker.params.end_bias_s)
        assert closed[0].play.last_hit_s > 75.0
        assert tracker.n_streams == 0 and getattr(tracker, close)("s") == []


def test_bad_rows_are_ignored_and_time_must_advance():
    tracker = Tracker()
    ids = [None, "", "t00001", "t00002", "t00003"]
    offsets = [1.0, 2.0, float("nan"), 5.0, 6.0]
    distances = [3, 3, 3, -1, 65]
    assert tracker.update_one("s", 10.0, ids, offsets, distances) == []
    assert tracker._streams["s"].candidates == []
    good = ["t00004"] * 5
    for i in range(tracker.params.min_hits + 3):
        tracker.update_one("s", 10.0 + HOP * (i + 1), good, [20.0 + HOP * i] * 5, [2] * 5)
    assert len(tracker.open_plays()) == 1
    assert tracker.update_one("s", 10.0, good, [0.0] * 5, [0] * 5) == []  # stale hop: ignored
    with pytest.raises(ValueError):
        tracker.update(["a", "b"], [1.0], [["x"]], [[1.0]], [[1]])


def test_confidence_is_in_range_and_far_codes_do_not_start_plays():
    near = run([Segment(60, 10.0, 100.0, bit_error=0.02, hit_prob=1.0)], 120.0, seed=13)[1]
    assert len(near) == 1 and 0.85 <= near[0].confidence <= 1.0
    far = Segment(60, 10.0, 100.0, bit_error=0.3, hit_prob=1.0)  # ~19 of 64 bits wrong: chance level
    assert run([far], 120.0, seed=13)[1] == []
    lenient = DecisionParams(min_confidence=0.0, min_evidence=0.0, max_distance_ratio=0.5)
    weak = run([far], 120.0, seed=13, params=lenient)[1]  # chance matches crowd it out: misses, splits
    assert weak and all(0.0 <= p.confidence < 0.5 for p in weak)


def test_params_come_from_the_config():
    config = load_config(overrides={"daemon.min_hits": 6, "daemon.end_after_misses": 3}, environ={})
    params = DecisionParams.from_config(config)
    assert params.min_hits == 6 and params.end_after_misses == 3
    assert params.hop_s == pytest.approx(48 * 256 / 12000) and params.code_bits == config.model.bits == 128
    defaults = DecisionParams.from_config(load_config(environ={}))
    assert defaults == DecisionParams(code_bits=128)  # the core's defaults, with the shipped model's K


def test_plays_are_not_split_when_chance_matches_of_the_same_track_are_everywhere():
    """20 tracks and k = 50: each hop brings 2.5 chance matches of every track, some of them near a
    playing track's line; they must not grow into a parallel hypothesis that splits the play."""
    catalog = SyntheticCatalog(n_tracks=20, n_codes=1_000_000, seed=1)
    rng = np.random.default_rng(14)
    segments, t = [], 20.0
    for i in range(100):
        track = i % 20
        segments.append(Segment(track, t, t + 100.0, track_offset_s=float(rng.uniform(0, 20)),
                                speed=float(rng.uniform(0.97, 1.03)), hit_prob=0.9))  # fmt: skip
        t += 130.0
    m = catalog.matches(rng, hop_times(0.0, t), segments, k=50)
    plays = decide(m.times, m.track_ids, m.offsets, m.distances)
    per_segment = [
        [p for p in plays if p.track_id == catalog.track_ids[s.track] and p.start_s < s.end_s and p.end_s > s.start_s]
        for s in segments
    ]
    assert [len(found) for found in per_segment] == [1] * len(segments)
    assert len(plays) <= len(segments) + 1  # at most one chance play in ~1 h of chance-heavy gaps


# --- verification: stream codes against the catalog code a play's line predicts ---------------------


class CodedStation:
    """A tiny real catalog (CodeTable of random 64-bit codes, one per hop of each track) and a
    station whose hop codes are the catalog code at the played offset with a few bits flipped,
    random codes elsewhere; its matches come from searching the table, as in the daemon."""

    BITS = 64

    def __init__(self, plays: list[tuple[int, float, float, float]], end_s: float, seed: int = 0, flips: int = 6):
        from streamd.store.catalog import Track
        from streamd.store.table import CodeTable, SearchSettings

        rng = np.random.default_rng(seed)
        offsets = (np.arange(300) + 1) * HOP
        self.track_codes = [rng.integers(0, 256, (len(offsets), self.BITS // 8), dtype=np.uint8) for _ in range(20)]
        self.table = CodeTable.build(self.BITS, [Track(f"t{i}", c, offsets.astype(np.float32))
                                                 for i, c in enumerate(self.track_codes)], SearchSettings())  # fmt: skip
        self.times = hop_times(0.0, end_s)
        self.codes = rng.integers(0, 256, (len(self.times), self.BITS // 8), dtype=np.uint8)
        for track, start_s, end, offset_s in plays:  # (track, stream start, stream end, track offset at start)
            for i in np.flatnonzero((self.times > start_s) & (self.times <= end)):
                row = int(round((offset_s + self.times[i] - start_s) / HOP)) - 1
                if row >= 0:  # before the track's first catalog code the hop keeps its random code
                    self.codes[i] = flip_random_bits(self.track_codes[track][row : row + 1], flips, rng)[0]
        hits = self.table.search(self.codes, 10)
        self.track_ids, self.offsets, self.distances = hits.track_ids, hits.offsets, hits.distances.copy()

    def hide(self, start_s: float, end_s: float) -> None:
        """The search finds nothing in [start_s, end_s) (talk-over, noise), the codes are unchanged."""
        self.distances[(self.times >= start_s) & (self.times < end_s)] = -1

    def muffle(self, track: int, start_s: float, offset_s: float, from_s: float, to_s: float, flips: int) -> None:
        """Hops in [from_s, to_s) of a play of ``track`` (stream start, track offset there) get
        its codes with ``flips`` bits flipped: the track under a DJ's voice, too far for the
        search and for verification, closer than chance. The search misses them."""
        rng = np.random.default_rng(int(from_s * 1000))
        for i in np.flatnonzero((self.times >= from_s) & (self.times < to_s)):
            row = int(round((offset_s + self.times[i] - start_s) / HOP)) - 1
            if row >= 0:  # as in the constructor: before the track's first code the hop stays random
                self.codes[i] = flip_random_bits(self.track_codes[track][row : row + 1], flips, rng)[0]
        self.hide(from_s, to_s)

    def decide(self, params: DecisionParams, verify: bool = True) -> list[Play]:
        return decide(self.times, self.track_ids, self.offsets, self.distances, params,
                      codes=self.codes if verify else None, catalog=self.table if verify else None)  # fmt: skip


VERIFY = DecisionParams(code_bits=CodedStation.BITS, boundary_distance_ratio=0.0)  # the strict walks alone


def test_the_look_back_finds_the_start_of_a_play_the_search_matched_late():
    """From the track's beginning, but the search misses its first 12 s: without verification the
    first hit is too far into the track to be taken for a start from 0 and the start is late; the
    look back verifies the hops before it down to offset 0."""
    station = CodedStation([(3, 50.0, 130.0, 0.0)], 180.0)
    station.hide(0.0, 62.0)
    late, = station.decide(VERIFY, verify=False)
    assert late.start_s > 55.0  # first hit − start_context_s
    play, = station.decide(VERIFY)
    assert play.track_id == "t3" and abs(play.start_s - 50.0) <= HOP and play.track_offset_s == pytest.approx(0.0, abs=HOP)


def test_the_look_back_bounds_a_mid_track_start_where_the_codes_stop_verifying():
    station = CodedStation([(5, 50.0, 130.0, 60.0)], 180.0, seed=1)
    station.hide(0.0, 56.0)
    params = dataclasses.replace(VERIFY, start_context_s=1.0)  # these codes verify from a play's first hop
    blind, = station.decide(params, verify=False)
    play, = station.decide(params)
    assert abs(blind.start_s - 55.0) <= HOP  # first hit − 1 s
    assert abs(play.start_s - 50.0) <= HOP and play.track_offset_s == pytest.approx(60.0, abs=HOP)


def test_verified_hops_move_a_play_end_by_at_most_the_gap_after_its_last_hit():
    """The search loses the play 5 hops before its end while the codes still verify: the end moves
    verify_gap_hops hops later, no more; the random codes after the play do not keep it open."""
    station = CodedStation([(7, 20.0, 100.0, 0.0)], 160.0, seed=2)
    station.hide(100.0 - 5 * HOP, 160.0)
    blind, = station.decide(VERIFY, verify=False)
    play, = station.decide(VERIFY)
    assert play.last_hit_s - blind.last_hit_s == pytest.approx(VERIFY.verify_gap_hops * HOP, abs=1e-6)
    assert play.end_s - blind.end_s == pytest.approx(VERIFY.verify_gap_hops * HOP, abs=1e-6)
    off = dataclasses.replace(VERIFY, verify_max_distance_ratio=0.0)
    assert station.decide(off) == [blind]  # ratio 0 turns verification off


# The default ratio; these codes lie close from a play's first hop on, so the start context is a
# hop, not the real model's 4.5 s (docs/decision.md, "Change points").
CHANGE_POINTS = dataclasses.replace(VERIFY, boundary_distance_ratio=DecisionParams().boundary_distance_ratio,
                                    boundary_start_context_s=1.0, boundary_end_bias_s=0.0)  # fmt: skip


def test_change_points_find_a_start_and_an_end_under_talk_over():
    """A play from the track's beginning with a DJ over its first 12 s and its last 8 s: the codes
    there lie 24 of 64 bits from the catalog's (verification needs <= 20, chance is ~32). The
    strict walks leave the start at the first hit − start_context_s and the end at the last hit;
    the change points put both where the track's codes begin and stop."""
    station = CodedStation([(3, 50.0, 130.0, 0.0)], 180.0, seed=4)
    station.muffle(3, 50.0, 0.0, 50.0, 62.0, flips=24)
    station.muffle(3, 50.0, 0.0, 122.0, 130.0, flips=24)
    strict, = station.decide(VERIFY)
    assert strict.start_s > 55.0 and strict.end_s < 126.0
    play, = station.decide(CHANGE_POINTS)
    assert play.track_id == "t3" and abs(play.start_s - 50.0) <= HOP and play.track_offset_s == pytest.approx(0.0, abs=HOP)
    assert abs(play.end_s - 130.0) <= 1.5 * HOP
    assert (play.first_hit_s, play.last_hit_s) == (strict.first_hit_s, strict.last_hit_s)  # the hits are the same


def test_a_change_point_bounds_an_excerpt_that_begins_a_few_seconds_into_its_track():
    """An excerpt from offset 5 s after other audio: its first hit lies within from_start_max_s of
    the track's beginning, so without change points its start is the line's origin, 5 s early; the
    random codes before it stop the walk back."""
    station = CodedStation([(6, 40.0, 120.0, 5.0)], 160.0, seed=5)
    station.hide(0.0, 44.0)
    old, = station.decide(VERIFY)
    assert old.start_s < 36.5  # the origin, 35 s
    play, = station.decide(CHANGE_POINTS)
    assert abs(play.start_s - 40.0) <= 1.5 * HOP and play.track_offset_s == pytest.approx(5.0, abs=1.5 * HOP)


def test_change_points_do_not_stretch_a_play_over_chance_codes():
    """A plain play with random codes around it: the change points move its boundaries by at most
    a hop, and a change-point ratio of 0 gives exactly the strict walks' plays."""
    station = CodedStation([(2, 30.0, 110.0, 20.0)], 170.0, seed=6)
    plain, = station.decide(VERIFY)
    play, = station.decide(CHANGE_POINTS)
    assert abs(play.start_s - 30.0) <= 1.5 * HOP and abs(play.end_s - 110.0) <= 1.5 * HOP
    assert station.decide(dataclasses.replace(CHANGE_POINTS, boundary_distance_ratio=0.0)) == [plain]


def test_a_verifying_tracker_restored_from_its_state_decides_exactly_the_same():
    """The code history travels with the state: a play that starts after a restore looks back as far."""
    station = CodedStation([(3, 30.0, 90.0, 0.0), (8, 90.0, 150.0, 40.0)], 170.0, seed=3)
    station.hide(0.0, 42.0)
    station.hide(90.0, 97.0)

    def feed(tracker, rows):
        events = []
        for i in rows:
            events += tracker.update(["s"], station.times[i : i + 1], station.track_ids[i : i + 1], station.offsets[i : i + 1],
                                     station.distances[i : i + 1], codes=station.codes[i : i + 1])  # fmt: skip
        return events

    whole = Tracker(VERIFY, station.table)
    reference = feed(whole, range(len(station.times))) + whole.flush("s")
    plays = [e.play for e in reference if e.type == ENDED]
    assert [p.track_id for p in plays] == ["t3", "t8"]
    assert abs(plays[0].start_s - 30.0) <= HOP  # found by the look back
    for cut in (20, 41, 44, 60, 95, 99, 120):
        first = Tracker(VERIFY, station.table)
        events = feed(first, range(cut))
        state = json.loads(json.dumps(first.export_state("s"), allow_nan=False))
        assert len(state["history"]) == min(cut, VERIFY.verify_history_hops)
        restored = Tracker(VERIFY, station.table)
        restored.restore_state("s", state)
        events += feed(restored, range(cut, len(station.times)))
        assert events + restored.flush("s") == reference, cut


def test_code_table_codes_at_gives_the_nearest_code_within_the_tolerance():
    station = CodedStation([], 10.0)
    codes, found = station.table.codes_at("t2", np.array([HOP, 2.4 * HOP, 2.6 * HOP, 2.5 * HOP, 0.2, 400.0]), 0.45 * HOP)
    assert found.tolist() == [True, True, True, False, False, False]
    assert all(np.array_equal(codes[i], station.track_codes[2][row]) for i, row in ((0, 0), (1, 1), (2, 2)))
    assert station.table.codes_at("unknown", np.array([1.0]), 1.0)[1].tolist() == [False]


class TruthPeaks:
    """A :class:`~streamd.decision.PeakCheck` stand-in: agreement 0.8 where the stream plays the
    track near the offset asked (from ``delay_s`` into the segment), a chance level elsewhere."""

    def __init__(self, segments: list[Segment], delay_s: float = 3.0, chance: float = 0.15) -> None:
        self.segments, self.delay_s, self.chance, self.calls = segments, delay_s, chance, 0

    def agreement(self, stream_id: str, t: float, track_id, offset_s: float) -> float | None:
        self.calls += 1
        for seg in self.segments:
            if (tid(seg.track) == track_id and seg.start_s + self.delay_s <= t <= seg.end_s
                    and abs(seg.offset_at(t) - offset_s) <= 1.5):  # fmt: skip
                return 0.8
        return self.chance


PEAKS = DecisionParams(peak_hits=4)


def test_peaks_that_confirm_a_line_start_the_play_after_peak_hits_hits():
    seg = Segment(3, 60.0, 160.0, hit_prob=1.0)
    m = CATALOG.matches(np.random.default_rng(12), hop_times(0.0, 200.0), [seg])
    (slow,) = decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS)  # no peak checker: min_hits
    (fast,) = decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS, peaks=TruthPeaks([seg]))
    first_hit = seg.start_s + seg.context_s
    assert fast.detected_s - first_hit <= (PEAKS.peak_hits + 1) * HOP
    assert slow.detected_s - first_hit >= (PEAKS.min_hits - 1) * HOP
    assert_play(fast, seg) and fast.origin_s == pytest.approx(slow.origin_s, abs=HOP)
    (off,) = decide(m.times, m.track_ids, m.offsets, m.distances, DecisionParams(peak_hits=0), peaks=TruthPeaks([seg]))
    assert off.detected_s == slow.detected_s  # peak_hits 0: the checker is not asked


def test_a_short_consistent_run_starts_only_if_the_peaks_agree():
    """Non-catalog music that resembles a catalog track for a few seconds gives a line of 6-7
    consistent hits (docs/decision.md): below ``min_hits`` no play, and peaks at chance level
    (the highest seen on real stations is ~0.25) keep it that way; only agreeing peaks start it."""
    run = Segment(7, 50.0, 58.0, hit_prob=1.0, context_s=0.0)
    m = CATALOG.matches(np.random.default_rng(13), hop_times(0.0, 120.0), [run])
    chance = TruthPeaks([], chance=0.3)
    assert decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS, peaks=chance) == []
    assert chance.calls >= 3  # the line did ask, from its fourth hit on
    assert len(decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS, peaks=TruthPeaks([run], 0.0))) == 1


def test_a_long_consistent_run_that_the_peaks_contradict_does_not_start():
    """Another piece that resembles a catalog passage for 20 s: ``min_hits`` consistent hits, but the
    stream's peaks agree at chance level, so no play; with the veto off, or without a verdict from
    the peaks, the codes alone start it."""
    run = Segment(7, 50.0, 70.0, hit_prob=1.0, context_s=0.0)
    m = CATALOG.matches(np.random.default_rng(16), hop_times(0.0, 120.0), [run])
    contradicting = TruthPeaks([], chance=0.12)
    assert decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS, peaks=contradicting) == []
    no_veto = dataclasses.replace(PEAKS, peak_veto_below=0.0)
    assert len(decide(m.times, m.track_ids, m.offsets, m.distances, no_veto, peaks=contradicting)) == 1
    assert len(decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS, peaks=NoVerdict())) == 1


class NoVerdict:
    """Peaks that never give a verdict (a quiet stream, a catalog without peaks)."""

    def agreement(self, stream_id: str, t: float, track_id, offset_s: float) -> float | None:
        return None


def test_peaks_carry_a_play_over_a_dropout_of_the_search():
    """Talk-over or noise hides the track from the search for longer than ``end_after_misses`` hops;
    the peaks still agree at the line's offset, so the play goes on instead of ending and restarting."""
    gap = (DecisionParams().end_after_misses + 8) * HOP
    before = Segment(5, 40.0, 100.0, hit_prob=1.0)
    after = Segment(5, 100.0 + gap, 180.0, track_offset_s=60.0 + gap, context_s=0.0, hit_prob=1.0)
    m = CATALOG.matches(np.random.default_rng(14), hop_times(0.0, 220.0), [before, after])
    assert len(decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS)) == 2
    whole = Segment(5, 40.0, 180.0)
    (play,) = decide(m.times, m.track_ids, m.offsets, m.distances, PEAKS, peaks=TruthPeaks([whole]))
    assert_play(play, whole)


def test_a_play_started_on_its_peaks_at_a_loop_repeat_is_realigned():
    """A loop-based track: a repeat 6 s away matches first, and its peaks agree too (it is the same
    music), so it starts after 4 hits; the true alignment, matched closer, gathers more evidence
    before the play has ``min_hits`` hits and takes it over — one play, reported at the true
    alignment (the repeat still matches now and then, so it would not have faded)."""
    true = Segment(13, 30.0, 150.0, context_s=2.0, hit_prob=1.0, bit_error=0.03)
    ghost = Segment(13, 30.0, 40.0, track_offset_s=6.0, context_s=0.5, hit_prob=1.0, bit_error=0.15)
    fading = Segment(13, 40.0, 150.0, track_offset_s=16.0, context_s=0.0, hit_prob=0.3, bit_error=0.15)
    m = CATALOG.matches(np.random.default_rng(15), hop_times(0.0, 200.0), [true, ghost, fading], share_overlaps=False)
    events = events_of_peaks(m, TruthPeaks([true, ghost, fading], delay_s=0.5))
    assert [e.type for e in events] == [STARTED, ENDED]
    started, ended = (e.play for e in events)
    assert started.origin_s == pytest.approx(30.0 - 6.0, abs=2 * HOP)  # opened at the repeat
    assert ended.track_offset_s == pytest.approx(0.0, abs=HOP) and ended.origin_s == started.origin_s
    assert_play(ended, true)


def events_of_peaks(m: Matches, peaks: TruthPeaks, stream_id: str = "s") -> list[PlayEvent]:
    tracker = Tracker(PEAKS, peaks=peaks)
    events = []
    for i in range(len(m.times)):
        events += tracker.update_one(stream_id, m.times[i], m.track_ids[i], m.offsets[i], m.distances[i])
    return events + tracker.flush(stream_id)
