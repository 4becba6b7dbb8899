"""Hamming search + temporal voting, and `streamd eval` end to end on a tiny synthetic corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamd.model.hashing import pack_bits
from streamd.model.matching import asymmetric_topk, hamming_topk, identify, vote

HOP = 1.024


def _codes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8), dtype=np.uint8)


def test_hamming_topk_is_exact_and_sorted():
    catalog, queries = _codes(500, 0), _codes(20, 1)
    index, distance = hamming_topk(catalog, queries, 5)
    brute = np.unpackbits(catalog[None] ^ queries[:, None], axis=-1).sum(-1)
    assert np.array_equal(distance, np.sort(brute, axis=1)[:, :5])
    assert np.array_equal(np.take_along_axis(brute, index, 1), distance)


def test_asymmetric_distance_discounts_unsure_bits():
    rng = np.random.default_rng(7)
    signs = rng.choice([-1.0, 1.0], size=(50, 64))
    catalog = pack_bits(signs)
    sure = signs[[3, 17]].copy()  # |q| = 1 everywhere: exactly the Hamming ranking and distances
    index_a, distance_a = asymmetric_topk(catalog, sure, 5)
    index_h, distance_h = hamming_topk(catalog, pack_bits(sure), 5)
    assert np.array_equal(index_a[:, 0], [3, 17]) and np.allclose(distance_a, distance_h)
    # The query is code 3 with 12 bits flipped where the model was unsure (|q| 0.05); code 9 is
    # made to differ from the query's bits in only 6 bits, but sure ones (|q| 0.9).
    unsure = rng.choice(64, 12, replace=False)
    query = 0.9 * signs[3]
    query[unsure] = -0.05 * signs[3, unsure]
    sure_bits = np.setdiff1d(np.arange(64), unsure)[:6]
    signs[9] = np.sign(query)
    signs[9, sure_bits] *= -1
    catalog = pack_bits(signs)
    assert hamming_topk(catalog, pack_bits(query[None]), 1)[0][0, 0] == 9  # Hamming: 6 < 12
    index, distance = asymmetric_topk(catalog, query[None], 3)
    assert index[0, 0] == 3 and index[0, 1] == 9 and distance[0, 0] < distance[0, 1]


def test_vote_finds_the_consistent_track_and_offset():
    rng = np.random.default_rng(2)
    m, k = 6, 4
    times = np.arange(1, m + 1) * HOP + 0.3  # query grid not aligned with the catalog's
    tracks = rng.integers(0, 50, size=(m, k))
    offsets = rng.uniform(0, 300, size=(m, k))
    distances = rng.integers(12, 24, size=(m, k))
    # Track 7 at track time 100 s + query time, found on 4 of 6 hops, at varying ranks.
    for hop in (0, 2, 3, 5):
        col = hop % k
        tracks[hop, col], offsets[hop, col], distances[hop, col] = 7, 100.0 + times[hop] + rng.uniform(-0.5, 0.5), 8
    match = vote(times, tracks, offsets, distances, HOP, 24.0)
    assert match.track == 7 and match.hops == 4
    assert abs(match.offset_s - (100.0 + times[-1])) <= HOP + 1e-9
    assert match.score > match.runner_up


def test_vote_without_close_hits_is_no_match():
    match = vote(np.array([1.0]), np.array([[3]]), np.array([[10.0]]), np.array([[40]]), HOP, 24.0)
    assert match.track == -1 and match.score == 0


def test_identify_end_to_end_on_exact_codes():
    catalog = _codes(300, 3)
    tracks = np.repeat(np.arange(3), 100)
    offsets = np.tile(np.arange(1, 101) * HOP, 3)
    query = catalog[150:155].copy()
    query[:, 0] ^= 0b1  # one flipped bit per code
    match = identify(catalog, tracks, offsets, query, np.arange(1, 6) * HOP, HOP)
    assert match.track == 1 and abs(match.offset_s - offsets[154]) < 1e-6 and match.hops == 5


@pytest.mark.timeout(300)
def test_eval_runs_on_a_tiny_corpus(tmp_path, monkeypatch):
    """The whole `streamd eval` pipeline on 3 synthetic catalog tracks and 2 non-catalog ones."""
    import torch

    from streamd import degrade
    from streamd.dataset import Split, Track, audio_cache_path, save_audio
    from streamd.evaluate import EvalConfig, evaluate, format_breakdown, format_table
    from streamd.model import Fingerprinter
    from streamd.model.network import ArchConfig, HashNet

    monkeypatch.setenv("STREAMD_CACHE", str(tmp_path))
    rng = np.random.default_rng(4)
    tracks = []
    for i in range(5):
        track = Track(f"syn__t{i}", "syn", Path("/nowhere"), 40.0, f"syn__t{i}")
        save_audio(audio_cache_path(track), degrade.synthetic_music(40 * 12000, 12000, rng) * 0.5)
        tracks.append(track)
    split = Split(train=(), val=tuple(tracks[3:]), test=tuple(tracks[:3]))
    torch.manual_seed(0)
    arch = ArchConfig(window_frames=400, widths=(4, 8, 8, 16, 16), feature_dim=8, lstm1_hidden=12, lstm2_hidden=16)
    fp = Fingerprinter(HashNet(arch))
    for asymmetric in (False, True):
        cfg = EvalConfig(queries=3, durations=(3.0, 10.0), context_s=(5.0, 8.0), asymmetric=asymmetric)
        report = evaluate(fp, split, cfg, progress=False)
        assert set(report["results"]) == {"clean/3s", "clean/10s", "degraded/3s", "degraded/10s"}
        for row in report["results"].values():
            assert row["queries"] == 3 and 0 <= row["top1"] <= 1 and 0 <= row["mAP"] <= 1
            assert row["non_catalog_decisions"] > 0 and 0 <= row["false_accept_rate"] <= 1
            assert 0 <= row["top1_peaks"] <= 1 and 0 <= row["false_accept_rate_peaks"] <= 1
            assert 0 <= row["top1_rescored"] <= 1 and 0 <= row["hit_rescored"] <= row["top1_rescored"]
            assert 0 <= row["false_accept_rate_rescored"] <= 1 and np.isfinite(row["threshold_rescored"])
        assert report["catalog"]["tracks"] == 3
        overall = report["by_degradation"]["all"]  # every degraded query, by degradation
        for d in ("3s", "10s"):
            assert overall[d]["queries"] == 3 and overall[d]["top1"] == report["results"][f"degraded/{d}"]["top1"]
            assert overall[d]["top1_peaks"] == report["results"][f"degraded/{d}"]["top1_peaks"]
            assert overall[d]["top1_rescored"] == report["results"][f"degraded/{d}"]["top1_rescored"]
        format_table(report)
        format_breakdown(report)
    codes_only = evaluate(fp, split, EvalConfig(queries=3, durations=(3.0,), context_s=(5.0, 8.0), peak_candidates=0,
                                                rescore_candidates=0), progress=False)  # fmt: skip
    for row in codes_only["results"].values():  # no candidates for the peaks or the re-scoring: the vote decides alone
        assert row["top1_peaks"] == row["top1"] and row["false_accept_rate_peaks"] == row["false_accept_rate"]
        assert row["top1_rescored"] == row["top1"] and row["hit_rescored"] == row["false_accept_rate_rescored"] == 0


def test_degraded_queries_are_grouped_by_each_step_and_snr_band():
    from streamd.degrade import Step
    from streamd.evaluate import degradation_breakdown, degradation_labels

    noisy = (Step("eq", {}), Step("noise", {"snr_db": 12.3, "color": "white", "seed": 1}))
    assert degradation_labels(noisy) == ["eq", "noise", "noise 10-15 dB", "noise white"]
    assert degradation_labels((Step("speech", {"snr_db": 20.0, "seed": 1}),)) == ["speech", "speech 15-20 dB"]
    breakdown = degradation_breakdown([
        (degradation_labels(noisy), {5.0: (False, True, False)}),
        (["eq"], {5.0: (True, True, True)}),
        ([], {5.0: (True, False, True)}),
    ])
    assert list(breakdown)[0] == "all"
    assert breakdown["all"]["5s"] == {"queries": 3, "top1": 2 / 3, "top1_peaks": 2 / 3, "top1_rescored": 2 / 3}
    assert breakdown["eq"]["5s"] == {"queries": 2, "top1": 0.5, "top1_peaks": 1.0, "top1_rescored": 0.5}
    assert breakdown["noise white"]["5s"] == {"queries": 1, "top1": 0.0, "top1_peaks": 1.0, "top1_rescored": 0.0}
    assert breakdown["none"]["5s"]["queries"] == 1


def test_the_peaks_choose_the_candidate_whose_track_plays_at_its_offset():
    """`streamd eval`'s peak check: of the voted candidates, the one whose track's peaks lie on the
    query's at its offset is chosen, even when the vote ranked it second; none when none agrees."""
    from streamd import degrade
    from streamd.evaluate import Catalog, EvalConfig, _checker, peak_choice
    from streamd.indexer import track_peaks
    from streamd.model.matching import Match

    rng = np.random.default_rng(7)
    tracks = [np.concatenate([degrade.synthetic_music(2 * 12000, 12000, rng) for _ in range(15)]) * 0.2 for _ in range(2)]
    catalog = Catalog(np.zeros((0, 8), np.uint8), np.zeros(0), np.zeros(0), ["a", "b"], [track_peaks(t) for t in tracks])
    query = tracks[1][10 * 12000 : 20 * 12000]  # track 1 from 10 s: at query time 8 s it is at 18 s
    checker = _checker(track_peaks(query), catalog)
    wrong, right = Match(0, 18.0, 5.0, 5, 4.0), Match(1, 18.3, 4.0, 4, 5.0)
    assert peak_choice([wrong, right], checker, 8.0, EvalConfig()) == right
    assert peak_choice([wrong, right], checker, 8.0, EvalConfig(peak_candidates=1)) is None
    assert peak_choice([Match(1, 5.0, 4.0, 4, 0.0)], checker, 8.0, EvalConfig()) is None  # right track, wrong offset


def test_rescoring_picks_the_candidate_whose_peaks_and_codes_follow_the_query():
    """`streamd eval`'s re-scoring: the right track wins over a better-voted wrong one when its
    peaks lie on the query's and its catalog codes along the line are the query's; with equal peak
    evidence the codes decide."""
    from streamd import degrade
    from streamd.evaluate import Catalog, EvalConfig, _checker, rescore
    from streamd.indexer import track_peaks
    from streamd.model.matching import Match

    rng = np.random.default_rng(11)
    tracks = [np.concatenate([degrade.synthetic_music(2 * 12000, 12000, rng) for _ in range(15)]) * 0.2 for _ in range(2)]
    offsets = np.arange(1, 31) * 1.0
    codes = rng.integers(0, 256, (60, 16), dtype=np.uint8)  # 30 codes per track, 128 bits
    catalog = Catalog(codes, np.repeat([0, 1], 30), np.tile(offsets, 2), ["a", "b"], [track_peaks(t) for t in tracks])
    assert np.array_equal(catalog.codes_along(1, np.array([12.2, 12.6, 30.9])), codes[[30 + 11, 30 + 12, 59]])
    query = tracks[1][10 * 12000 : 20 * 12000]  # track 1 from 10 s: at query time 8 s it is at 18 s
    times = np.array([6.0, 7.0, 8.0])
    query_codes = catalog.codes_along(1, 18.0 - (8.0 - times))
    checkers = (_checker(track_peaks(query), catalog), _checker(track_peaks(query), catalog, 8.0))
    wrong, right = Match(0, 18.0, 5.0, 5, 4.0), Match(1, 18.0, 4.0, 4, 5.0)
    best, score = rescore([wrong, right], checkers, catalog, query_codes, times, 8.0, EvalConfig())
    assert best == right and score > 1.0  # peaks agree over both windows, codes equal along the line
    assert rescore([wrong, right], checkers, catalog, query_codes, times, 8.0, EvalConfig(rescore_candidates=1))[0] == wrong
    no_peaks = (_checker(np.zeros((0, 2), np.int32), catalog),) * 2  # no verdict from the peaks: codes decide
    same_track_codes = catalog.codes_along(0, 18.0 - (8.0 - times))
    assert rescore([right, wrong], no_peaks, catalog, same_track_codes, times, 8.0, EvalConfig()) == (wrong, 0.0)
    nothing, score = rescore([Match(-1, float("nan"), 0.0, 0, 0.0)], checkers, catalog, query_codes, times, 8.0, EvalConfig())
    assert nothing.track == -1 and score == -np.inf  # no candidate track: never above a threshold
