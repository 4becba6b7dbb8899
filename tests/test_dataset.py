"""The corpus split: deterministic, grouped, roughly 70/10/20; the audio cache writes int16 atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamd.dataset import Track, group_key, load_audio, load_split, save_audio, split_tracks
from streamd.errors import StreamdError


def _tracks(ids: list[str]) -> list[Track]:
    stems: dict[str, set[str]] = {}
    for track_id in ids:
        package, _, stem = track_id.partition("__")
        stems.setdefault(package, set()).add(stem)
    return [
        Track(t, t.partition("__")[0], Path(f"/nowhere/{t}.ogg"), 60.0, group_key(t, stems[t.partition("__")[0]]))
        for t in ids
    ]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("supertuxkart-data__music_celtic", "supertuxkart-data__music_celtic_fast"),
        ("supertuxkart-data__music_farm", "supertuxkart-data__music_farm_f"),
        ("warzone2100-music__original_soundtrack_track3", "warzone2100-music__aftermath_soundtrack_track3_enhanced"),
        ("wesnoth-1.16-music__frantic", "wesnoth-1.16-music__frantic-old"),
        ("supertux-data__forest_forest", "supertux-data__forest_forest2"),
    ],
)
def test_related_recordings_share_a_group(a, b):
    ta, tb = _tracks([a, b, "x__unrelated"])[:2]
    assert ta.group == tb.group


def test_numbered_tracks_stay_apart():
    ids = ["warzone2100-music__legacy_soundtrack_track10", "warzone2100-music__original_soundtrack_track1",
           "neverball-common__track1", "neverball-common__track2", "menu__a", "other__menu"]
    groups = [t.group for t in _tracks(ids)]
    assert len(set(groups)) == len(groups)


def test_split_is_deterministic_grouped_and_sized():
    ids = [f"pkg{p}__song{i}" for p in range(5) for i in range(40)] + [f"pkg0__song{i}_fast" for i in range(10)]
    tracks = _tracks(ids)
    first, second = split_tracks(tracks), split_tracks(list(reversed(tracks)))
    assert first == second
    side = {t.track_id: name for name in ("train", "val", "test") for t in first[name]}
    assert len(side) == len(ids)
    for i in range(10):
        assert side[f"pkg0__song{i}"] == side[f"pkg0__song{i}_fast"]
    n = len(ids)
    assert abs(len(first.train) - 0.7 * n) <= 3 and abs(len(first.val) - 0.1 * n) <= 3
    assert abs(len(first.test) - 0.2 * n) <= 3


def test_real_corpus_split_if_built():
    try:
        split = load_split()
    except StreamdError:
        pytest.skip("corpus not built (bash ../shared/corpus/build_corpus.sh --set dev)")
    groups = {name: {t.group for t in split[name]} for name in ("train", "val", "test")}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    assert not (groups["val"] & groups["test"])
    assert len(split.all()) == len({t.track_id for t in split.all()})
    assert 0.6 < len(split.train) / len(split.all()) < 0.8


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(StreamdError, match="manifest.csv"):
        load_split(tmp_path)


def test_audio_cache_round_trip(tmp_path):
    track = Track("p__t", "p", tmp_path / "t.ogg", 1.0, "p__t")
    audio = np.linspace(-1, 1, 1000, dtype=np.float32)
    path = tmp_path / "audio12k" / "clean" / "p__t.npy"
    save_audio(path, audio)
    assert np.load(path).dtype == np.int16 and not list(path.parent.glob("*.tmp*"))
    assert np.allclose(load_audio(track, tmp_path), audio, atol=1e-4)
    with pytest.raises(StreamdError):
        load_audio(track, tmp_path, variant="codec0")
