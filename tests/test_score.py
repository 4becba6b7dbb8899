"""The scorer on hand-made cases: perfect, missed, false, shifted, split, too little overlap, daemon form."""

import pytest

from streamd.eval import score as sc


def station(stream, steps=()):
    kinds = sorted({kind for kind, _ in steps})
    chain = {"steps": [{"kind": k, "params": p} for k, p in steps], "describe": "+".join(kinds) or "clean"}
    return {
        "stream": stream,
        "file": f"{stream}.wav",
        "duration_s": 600.0,
        "degradations": kinds,
        "chain": chain,
    }


def segment(kind, track, start, end, offset=0.0, stream="s1", layer="main", speed=1.0):
    return {
        "stream": stream, "kind": kind, "track_id": track, "start_s": start, "end_s": end,
        "offset_s": offset, "speed": speed, "layer": layer,
    }  # fmt: skip


SEGMENTS = [
    segment("catalog", "A", 0.0, 120.0),
    segment("talk", "", 120.0, 150.0),
    segment("catalog", "B", 148.0, 300.0, offset=10.0),  # 2 s crossfade with the talk
    segment("talk", "", 150.0, 158.0, layer="overlay"),
    segment("unknown", "U", 300.0, 420.0),
    segment("catalog", "C", 420.0, 440.0),  # 20 s: optional
    segment("catalog", "A", 440.0, 600.0),
]
TRUTH = {"stations": [station("s1")], "segments": SEGMENTS}
NON_CATALOG_HOURS = (600 - 120 - 152 - 20 - 160) / 3600


def event(track, start, end, stream="s1", **extra):
    return {
        "stream_id": stream,
        "track_id": track,
        "start_s": start,
        "end_s": end,
        "confidence": 0.9,
        **extra,
    }


def perfect_events():
    return [
        event(s["track_id"], s["start_s"], s["end_s"], offset_s=s["offset_s"])
        for s in SEGMENTS
        if s["kind"] == "catalog"
    ]


def run(records, truth=TRUTH, **kwargs):
    return sc.score(truth, sc.parse_events(records, {"s1": 600.0, "s2": 600.0}), **kwargs)


def test_perfect_events_score_perfectly():
    report = run(perfect_events())
    overall = report["overall"]
    assert (overall["plays"], overall["optional_plays"], overall["found"]) == (3, 1, 3)
    assert overall["precision"] == overall["recall"] == overall["f1"] == 1.0
    assert overall["boundary_p95_s"] == 0.0 and overall["offset_error_p95_s"] == 0.0
    assert overall["false_events"] == 0 and overall["false_non_catalog_per_24h"] == 0.0
    assert overall["non_catalog_hours"] == pytest.approx(NON_CATALOG_HOURS, abs=1e-4)
    assert all(target["met"] for name, target in report["targets"].items() if name != "latency_median_s")
    assert report["mode"] == "offline"


def test_missed_play_lowers_recall_only():
    overall = run([e for e in perfect_events() if e["track_id"] != "B"])["overall"]
    assert (overall["found"], overall["missed"]) == (2, 1)
    assert overall["recall"] == pytest.approx(2 / 3, abs=1e-4) and overall["precision"] == 1.0
    assert overall["f1"] == pytest.approx(0.8, abs=1e-4)


def test_false_event_on_unknown_music_counts_per_non_catalog_hour():
    report = run(perfect_events() + [event("X", 310.0, 400.0)])
    overall = report["overall"]
    assert overall["false_by_class"] == {"non_catalog": 1}
    assert overall["precision"] == pytest.approx(3 / 4, abs=1e-4) and overall["recall"] == 1.0
    assert overall["false_non_catalog_per_hour"] == pytest.approx(1 / NON_CATALOG_HOURS, rel=1e-3)
    assert report["targets"]["false_non_catalog_per_24h"]["met"] is False
    assert (
        report["false_events"][0]["track_id"] == "X" and report["false_events"][0]["class"] == "non_catalog"
    )


def test_wrong_track_over_catalog_music():
    records = [e for e in perfect_events() if e["track_id"] != "B"] + [event("Z", 160.0, 290.0)]
    overall = run(records)["overall"]
    assert overall["false_by_class"] == {"wrong_track": 1} and overall["missed"] == 1


def test_shifted_boundaries_are_measured_with_sign():
    records = [dict(e, start_s=e["start_s"] + 2.0, end_s=e["end_s"] - 1.0) for e in perfect_events()]
    overall = run(records)["overall"]
    assert overall["f1"] == 1.0
    assert overall["start_error_median_s"] == 2.0 and overall["start_error_mean_s"] == 2.0
    assert overall["end_error_mean_s"] == -1.0
    assert overall["boundary_median_s"] == 1.5 and overall["boundary_p95_s"] == 2.0
    assert overall["latency_median_s"] == 2.0  # offline: event start minus play start


def test_split_event_finds_the_play_once_and_counts_the_rest_as_duplicate():
    records = [e for e in perfect_events() if e["track_id"] != "B"]
    records += [event("B", 148.0, 230.0), event("B", 232.0, 300.0)]
    overall = run(records)["overall"]
    assert overall["found"] == 3 and overall["recall"] == 1.0
    assert overall["false_by_class"] == {"duplicate": 1}
    assert overall["precision"] == pytest.approx(3 / 4, abs=1e-4)


def test_overlap_below_half_the_play_is_a_miss_and_a_false_event():
    records = [e for e in perfect_events() if e["track_id"] != "B"] + [event("B", 148.0, 220.0)]  # 72/152
    overall = run(records)["overall"]
    assert overall["missed"] == 1 and overall["false_by_class"] == {"short_overlap": 1}
    exactly_half = [e for e in perfect_events() if e["track_id"] != "B"] + [event("B", 148.0, 224.0)]
    assert run(exactly_half)["overall"]["found"] == 3


def test_optional_short_play_neither_rewards_nor_punishes():
    without_c = run([e for e in perfect_events() if e["track_id"] != "C"])["overall"]
    assert without_c["f1"] == 1.0 and without_c["events"] == 3


def test_events_on_other_streams_do_not_match():
    truth = {"stations": [station("s1"), station("s2")], "segments": SEGMENTS}
    records = perfect_events() + [event("A", 0.0, 120.0, stream="s2")]
    report = run(records, truth)
    assert report["by_station"]["s2"]["false_by_class"] == {"non_catalog": 1}
    assert report["by_station"]["s1"]["f1"] == 1.0


def test_daemon_events_merge_started_and_ended_and_measure_latency():
    records = []
    for n, e in enumerate(perfect_events()):
        started = {"type": "started", "event_id": f"e{n}", "stream_id": "s1", "track_id": e["track_id"],
                   "start_s": e["start_s"] + 3.0, "track_offset_s": e["offset_s"], "detected_s": e["start_s"] + 5.0}  # fmt: skip
        ended = {"type": "ended", "event_id": f"e{n}", "stream_id": "s1", "track_id": e["track_id"],
                 "start_s": e["start_s"] + 0.5, "end_s": e["end_s"], "track_offset_s": e["offset_s"]}  # fmt: skip
        records += [started, dict(started, detected_s=e["start_s"] + 9.0), ended]  # a redelivery
    report = run(records)
    overall = report["overall"]
    assert report["mode"] == "daemon" and overall["events"] == 4 and overall["f1"] == 1.0
    assert overall["latency_median_s"] == 5.0  # first delivery of `started`, from the play start
    assert overall["start_error_median_s"] == 0.5  # the `ended` event's refined start wins


def test_daemon_play_still_open_lasts_to_the_end_of_the_stream():
    records = [{"type": "started", "event_id": "x", "stream_id": "s1", "track_id": "A", "start_s": 441.0,
                "detected_at_s": 446.0}]  # fmt: skip
    events = sc.parse_events(records, {"s1": 600.0})
    assert events[0].end_s == 600.0
    with pytest.raises(sc.ScoreError):
        sc.parse_events(records)


def test_breakdown_by_degradation_kind():
    truth = {
        "stations": [station("s1"), station("s2", [("codec", {"codec": "mp3"}), ("noise", {"snr_db": 5})])],
        "segments": SEGMENTS + [dict(s, stream="s2") for s in SEGMENTS],
    }
    records = perfect_events() + [
        e for e in (dict(e, stream_id="s2") for e in perfect_events()) if e["track_id"] != "A"
    ]
    report = run(records, truth)
    assert set(report["by_degradation"]) == {"clean", "codec", "noise"}
    assert report["by_degradation"]["clean"]["recall"] == 1.0
    assert report["by_degradation"]["codec"]["recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert report["by_condition"]["talkover"]["plays"] == 2  # B on both stations


def test_bad_events_are_typed_errors():
    with pytest.raises(sc.ScoreError):
        sc.parse_events([{"track_id": "A", "start_s": 0, "end_s": 1}])
    with pytest.raises(sc.ScoreError):
        sc.parse_events([{"stream_id": "s1", "track_id": "A"}])
    with pytest.raises(sc.ScoreError):
        run([event("A", 0, 10, stream="nowhere")])
