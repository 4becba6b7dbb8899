"""`streamd eval`: how well a hash model identifies tracks it never saw in training.

Catalog: the test-split tracks (never used in training), indexed like a real catalog with
``Fingerprinter.codes_for_audio`` (one code per 1.024 s hop, clean audio).

Positive queries: a random excerpt of a test track, starting at the track start (a track change,
probability ``track_start_prob``) or anywhere, preceded by ``context`` seconds of other audio as
the daemon would hear it (non-catalog music from the validation split, or DJ talk), crossfaded
or cut. The daemon's hop grid is not aligned with the excerpt. The 3/5/10/29 s queries are the
first 3/5/10/29 s of the same excerpt: the codes of the hops whose window ends inside them.
Degraded queries run the whole query through ``degrade.random_chain(strength)`` (noise,
background music, speech, MP3/AAC, EQ, reverb, speed, gain, compression).

Silent windows: hops whose newest 3 s hold less than 2 s of sound (``informative_hops``) are
neither indexed nor searched — their codes look alike for every track.

Matching: Hamming top-k per hop + temporal-consistency voting (:mod:`streamd.model.matching`).
``top1`` = the best-voted track is the right one (no threshold). ``hit@thr`` = right track AND
score above the threshold that keeps false accepts at ``far_target`` on non-catalog music.

False accepts: validation tracks (not in the catalog) are streamed through the model clean and
degraded; every hop gives one decision over the newest D seconds. The threshold per duration is
calibrated on half of the validation tracks and the false-accept rate is reported on the other
half (decisions from one track are correlated, so treat it as an estimate).

Peaks (the daemon's second look, streamd/peaks.py, docs/decision.md "Peaks"): the ``peak_candidates``
best-voted tracks are checked against the query's spectral peaks of its newest 4 s at their voted
offsets; the best agreement of at least ``peak_min_agreement`` picks the track (``top1 + peaks``),
otherwise the vote does. A non-catalog decision is a false accept with peaks when its vote score
is above the threshold or one of its candidates agrees, so ``hit + peaks`` and ``false accepts +
peaks`` use the same thresholds as the codes alone plus that rule.

Re-scoring (``top1 rescored``, :func:`rescore`): the ``rescore_candidates`` best-voted tracks of a
deeper search (``rescore_top_k`` per hop; the right track is among 30 of them for ~99 % of
degraded 5 s queries, but the vote puts it first for ~80 %) are ranked by all the evidence at
their voted alignment at once: the peak agreement over the newest 4 s and over the whole query (up
to ``rescore_long_window_s``), less ``rescore_distance_weight`` x the Hamming distances of the
query's codes to the catalog codes along the candidate's line (mean, min and newest, in units of
K/2 bits). The best score is also computed for every non-catalog decision, and its own threshold
calibrated like the vote's (``hit rescored``: right track and score above it; ``false accepts
rescored`` on the held-out half).

By degradation (``by_degradation``): the degraded queries' top-1 grouped by each step of their
chain, the additive steps also by 5 dB SNR band and noise colour — which degradations the misses
come from (a query with several steps counts in each of their groups).

mAP (as in the paper's retrieval tables): each query's newest code ranks all catalog codes by
Hamming distance; relevant = codes of the right track within ±1.5 s of the true offset.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from streamd import degrade
from streamd.dataset import SAMPLE_RATE, Split, Track, load_audio, load_split
from streamd.decision import DecisionParams
from streamd.indexer import track_peaks
from streamd.melspec import offline_logmel
from streamd.model.api import Fingerprinter, informative_hops
from streamd.model.hashing import pack_bits
from streamd.model.matching import Match, asymmetric_topk, hamming_topk, ranked
from streamd.peaks import PeakChecker, recording_query


@dataclass(frozen=True)
class EvalConfig:
    queries: int = 100  # excerpts per condition (each gives all durations)
    durations: tuple[float, ...] = (3.0, 5.0, 10.0, 29.0)
    context_s: tuple[float, float] = (15.0, 29.0)
    track_start_prob: float = 0.25
    strength: float = 0.6
    top_k: int = 10
    max_distance_fraction: float = 0.375
    far_target: float = 0.001
    seed: int = 20261128
    offset_tolerance_s: float = 1.5
    half_hop_catalog: bool = False
    asymmetric: bool = False  # rank by asymmetric distance (relaxed query vs catalog bits)
    peak_candidates: int = 10  # best-voted tracks the peaks may choose among (0: codes only)
    peak_min_agreement: float = DecisionParams().peak_min_agreement
    rescore_candidates: int = 30  # best-voted tracks the re-scoring ranks (0: off)
    rescore_top_k: int = 50  # hits per hop of the search behind them
    rescore_distance_weight: float = 0.5
    rescore_long_window_s: float = 10.0


@dataclass
class Catalog:
    codes: np.ndarray
    tracks: np.ndarray
    offsets_s: np.ndarray
    names: list[str]
    peaks: list[np.ndarray]  # spectral peaks of each track (streamd.indexer.track_peaks)
    _by_track: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, init=False, repr=False)

    def codes_along(self, track: int, offsets_s: np.ndarray) -> np.ndarray:
        """The track's catalog codes nearest to each of ``offsets_s`` (the track has codes)."""
        if track not in self._by_track:
            rows = np.flatnonzero(self.tracks == track)
            order = np.argsort(self.offsets_s[rows], kind="stable")
            self._by_track[track] = (self.offsets_s[rows][order], self.codes[rows][order])
        offsets, codes = self._by_track[track]
        above = np.clip(np.searchsorted(offsets, offsets_s), 0, len(offsets) - 1)
        below = np.clip(above - 1, 0, None)
        return codes[np.where(np.abs(offsets[below] - offsets_s) <= np.abs(offsets[above] - offsets_s), below, above)]


def build_catalog(fp: Fingerprinter, tracks: tuple[Track, ...], half_hop: bool = False) -> Catalog:
    """Codes of every informative hop of every track (silent windows are not indexed).

    ``half_hop`` also indexes the windows ending half a hop later (the track's audio shifted by
    24 frames), which halves the worst grid misalignment between daemon and catalog and doubles
    the catalog.
    """
    codes, labels, offsets, peaks = [], [], [], []
    shifts = (0, fp.hop_frames // 2) if half_hop else (0,)
    for i, track in enumerate(tracks):
        audio = load_audio(track)
        peaks.append(track_peaks(audio))
        for shift in shifts:
            c, o, keep = track_codes(fp, audio[shift * fp.mel.hop_length :])
            codes.append(c[keep])
            labels.append(np.full(int(keep.sum()), i))
            offsets.append(o[keep] + shift * fp.mel.hop_length / fp.mel.sample_rate)
    return Catalog(np.concatenate(codes), np.concatenate(labels), np.concatenate(offsets), [t.track_id for t in tracks],
                   peaks)


@dataclass
class Query:
    track: int
    start_s: float  # track position where the excerpt starts
    speed: float
    relaxed: np.ndarray  # relaxed codes (n, K) in (−1, 1) of the hops whose window ends after the excerpt start
    times_s: np.ndarray  # query time of those window ends (seconds since the excerpt start)
    chain: degrade.DegradationChain  # what degraded the query (no steps: clean)
    excerpt_at_s: float  # where the excerpt starts in the query audio
    peaks: np.ndarray  # spectral peaks of the whole query audio


def track_relaxed(fp: Fingerprinter, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(relaxed codes (n, K), window-end times in s, informative mask) for every hop of ``audio``."""
    logmel = offline_logmel(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), fp.mel)
    relaxed, ends = fp.relaxed_for_track_logmel(logmel)
    keep = informative_hops(logmel, np.arange(1, len(ends) + 1) * fp.hop_frames)
    return relaxed.float().numpy(), ends, keep


def track_codes(fp: Fingerprinter, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, window-end times in s, informative mask) for every hop of ``audio``."""
    relaxed, ends, keep = track_relaxed(fp, audio)
    return pack_bits(relaxed), ends, keep


def search(catalog: Catalog, relaxed: np.ndarray, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Top-k catalog codes per query hop: Hamming on the bits, or asymmetric (``cfg.asymmetric``)."""
    if cfg.asymmetric:
        return asymmetric_topk(catalog.codes, relaxed, cfg.top_k)
    return hamming_topk(catalog.codes, pack_bits(relaxed), cfg.top_k)


def make_query(fp: Fingerprinter, rng: np.random.Generator, catalog_audio: list[np.ndarray], index: int,
               context_audio: list[np.ndarray], cfg: EvalConfig, degraded: bool) -> Query:
    audio = catalog_audio[index]
    excerpt_s = max(cfg.durations) + 1.5
    longest = len(audio) / SAMPLE_RATE - excerpt_s
    start_s = 0.0 if rng.random() < cfg.track_start_prob or longest <= 0 else float(rng.uniform(0, longest))
    excerpt = audio[int(start_s * SAMPLE_RATE) : int((start_s + excerpt_s) * SAMPLE_RATE)]
    context_n = int(rng.uniform(*cfg.context_s) * SAMPLE_RATE)
    if rng.random() < 0.8:
        source = context_audio[int(rng.integers(len(context_audio)))]
        at = int(rng.integers(0, max(1, len(source) - context_n)))
        context = source[at : at + context_n]
        context = np.pad(context, (0, context_n - len(context)))
    else:
        context = degrade.talk(context_n / SAMPLE_RATE, SAMPLE_RATE, rng)
    overlap = int(rng.uniform(0.0, 2.0) * SAMPLE_RATE) if rng.random() < 0.5 else 0
    query = degrade.crossfade(context, excerpt, overlap)
    excerpt_at = (context_n - overlap) / SAMPLE_RATE
    chain = degrade.DegradationChain()
    if degraded:
        chain = degrade.random_chain(rng, cfg.strength)
        backgrounds = [context_audio[int(rng.integers(len(context_audio)))]]
        query = degrade.apply(query, SAMPLE_RATE, chain, backgrounds=backgrounds)
        excerpt_at /= chain.speed_factor
    relaxed, ends, keep = track_relaxed(fp, query)
    inside = (ends > excerpt_at) & keep
    return Query(index, start_s, chain.speed_factor, relaxed[inside], ends[inside] - excerpt_at, chain, excerpt_at,
                 track_peaks(query))


def average_precision(distances: np.ndarray, relevant: np.ndarray, rng: np.random.Generator) -> float:
    if not relevant.any():
        return 0.0
    order = np.lexsort((rng.random(len(distances)), distances))
    hits = relevant[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def _decide(catalog: Catalog, relaxed: np.ndarray, times: np.ndarray, hop_s: float, cfg: EvalConfig, bits: int,
            hits: tuple[np.ndarray, np.ndarray] | None = None) -> list[Match]:
    """The best-voted tracks (``peak_candidates`` of them, at least one), best first."""
    index, distance = hits if hits is not None else search(catalog, relaxed, cfg)
    return ranked(times, catalog.tracks[index], catalog.offsets_s[index], distance, hop_s,
                  cfg.max_distance_fraction * bits, tracks_wanted=max(1, cfg.peak_candidates))  # fmt: skip


def peak_choice(candidates: list[Match], checker: PeakChecker, end_s: float, cfg: EvalConfig) -> Match | None:
    """The candidate whose track's peaks agree best with the query's newest peaks at its voted
    offset, if that agreement reaches ``peak_min_agreement`` (``end_s``: the newest hop's time in
    the query audio)."""
    best, best_agreement = None, cfg.peak_min_agreement
    for match in candidates[: cfg.peak_candidates]:
        if match.track < 0:
            continue
        agreement = checker.agreement("query", end_s, match.track, match.offset_s)
        if agreement is not None and agreement >= best_agreement:
            best, best_agreement = match, agreement
    return best


def _checker(peaks: np.ndarray, catalog: Catalog, window_s: float = 4.0) -> PeakChecker:
    return PeakChecker(recording_query({"query": peaks}), lambda track: catalog.peaks[track], window_s=window_s)


def rescore(candidates: list[Match], checkers: tuple[PeakChecker, PeakChecker], catalog: Catalog,
            codes: np.ndarray, times_s: np.ndarray, end_s: float, cfg: EvalConfig) -> tuple[Match, float]:
    """(the candidate with the most evidence at its voted alignment, its score) (module docstring,
    "Re-scoring"): peak agreement over a short and a long window (``checkers``) minus the weighted
    Hamming distances of the query's packed ``codes`` (at query times ``times_s``) to the catalog's
    along the candidate's line. ``end_s``: the newest hop's time in the query audio. The score is
    −inf when no candidate is a track."""
    best, best_score = candidates[0], -np.inf
    half_bits = 4.0 * codes.shape[1]
    for match in candidates[: cfg.rescore_candidates]:
        if match.track < 0:
            continue
        agreements = [checker.agreement("query", end_s, match.track, match.offset_s) for checker in checkers]
        along = catalog.codes_along(match.track, match.offset_s - (times_s[-1] - times_s))
        distances = np.bitwise_count(along ^ codes).sum(-1)
        score = sum(a or 0.0 for a in agreements) - cfg.rescore_distance_weight * (
            distances.mean() + distances.min() + distances[-1]) / half_bits
        if score > best_score:
            best, best_score = match, score
    return best, float(best_score)


def rescored_choice(catalog: Catalog, relaxed: np.ndarray, times_s: np.ndarray, end_s: float,
                    checkers: tuple[PeakChecker, PeakChecker], fp: Fingerprinter, cfg: EvalConfig,
                    hits: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Match, float]:
    """:func:`rescore` over the ``rescore_candidates`` best-voted tracks of a ``rescore_top_k``
    search (``hits``: that search's result for these hops, if already made)."""
    wide = replace(cfg, top_k=cfg.rescore_top_k, peak_candidates=cfg.rescore_candidates)
    candidates = _decide(catalog, relaxed, times_s, fp.hop_s, wide, fp.bits, hits)
    return rescore(candidates, checkers, catalog, pack_bits(relaxed), times_s, end_s, cfg)


def _long_checkers(peaks: np.ndarray, catalog: Catalog, cfg: EvalConfig) -> dict[float, PeakChecker]:
    """The long-window checker of each query duration (durations with the same window share one,
    and with it the agreements it has computed for a hop)."""
    windows = {d: min(d, cfg.rescore_long_window_s) for d in cfg.durations}
    by_window = {w: _checker(peaks, catalog, w) for w in set(windows.values())}
    return {d: by_window[w] for d, w in windows.items()}


class Negatives(NamedTuple):
    """Per query duration, one entry per sliding decision over non-catalog music."""

    scores: dict[float, np.ndarray]  # best vote score
    confirmed: dict[float, np.ndarray]  # the peak check confirmed one of its candidates
    rescored: dict[float, np.ndarray]  # best re-scoring score (−inf: re-scoring off)


def negative_scores(fp: Fingerprinter, catalog: Catalog, tracks: tuple[Track, ...], cfg: EvalConfig, degraded: bool,
                    rng: np.random.Generator) -> Negatives:
    """Every sliding D-second decision over non-catalog tracks: what would accept it."""
    scores: dict[float, list[float]] = {d: [] for d in cfg.durations}
    confirmed: dict[float, list[bool]] = {d: [] for d in cfg.durations}
    rescored: dict[float, list[float]] = {d: [] for d in cfg.durations}
    for track in tracks:
        audio = load_audio(track)
        if degraded:
            audio = degrade.apply(audio, SAMPLE_RATE, degrade.random_chain(rng, cfg.strength).without("speed"))
        relaxed, ends, keep = track_relaxed(fp, audio)
        index, distance = search(catalog, relaxed, cfg)
        wide = search(catalog, relaxed, replace(cfg, top_k=cfg.rescore_top_k)) if cfg.rescore_candidates else None
        peaks = track_peaks(audio)
        checker, long_checkers = _checker(peaks, catalog), _long_checkers(peaks, catalog, cfg)
        for j in range(len(relaxed)):  # hop by hop, so that a hop's peak agreements serve every duration
            for d in cfg.durations:
                m = max(1, int(d / fp.hop_s))
                if j < m - 1:
                    continue
                sl = np.arange(j - m + 1, j + 1)[keep[j - m + 1 : j + 1]]
                if len(sl) == 0:
                    continue  # dead air: no decision is taken
                candidates = _decide(catalog, relaxed[sl], ends[sl], fp.hop_s, cfg, fp.bits, (index[sl], distance[sl]))
                scores[d].append(candidates[0].score)
                confirmed[d].append(peak_choice(candidates, checker, float(ends[j]), cfg) is not None)
                rescored[d].append(rescored_choice(catalog, relaxed[sl], ends[sl], float(ends[j]), (checker, long_checkers[d]),
                                                   fp, cfg, (wide[0][sl], wide[1][sl]))[1]
                                   if wide is not None else -np.inf)  # fmt: skip
    return Negatives(*({d: np.asarray(v) for d, v in values.items()} for values in (scores, confirmed, rescored)))


SNR_STEPS = ("noise", "background", "speech")  # steps with an snr_db parameter, broken down by 5 dB bands


def degradation_labels(steps: tuple[degrade.Step, ...]) -> list[str]:
    """The groups a degraded query counts in for ``by_degradation``: each step's kind, and for the
    additive ones their 5 dB SNR band ("noise 10-15 dB") and, for noise, its colour ("noise white")."""
    labels = []
    for step in steps:
        labels.append(step.kind)
        if step.kind in SNR_STEPS:
            low = min(15, int(step.params["snr_db"] // 5) * 5)
            labels.append(f"{step.kind} {low}-{low + 5} dB")
        if step.kind == "noise":
            labels.append(f"noise {step.params['color']}")
    return labels


def degradation_breakdown(outcomes: list[tuple[list[str], dict[float, tuple[bool, bool, bool]]]]) -> dict[str, dict[str, Any]]:
    """Top-1 (codes, with the peaks, re-scored) of the degraded queries grouped by
    ``degradation_labels``: which degradations the misses come from. ``outcomes``: per query
    (labels, {duration: (top1, top1 with peaks, top1 re-scored)}). A query counts in every group it
    has a label of."""
    groups: dict[str, dict[float, list[tuple[bool, bool, bool]]]] = {}
    for labels, by_duration in outcomes:
        for label in ["all", *(labels or ["none"])]:
            for d, result in by_duration.items():
                groups.setdefault(label, {}).setdefault(d, []).append(result)
    return {
        label: {f"{d:g}s": {"queries": len(r), "top1": float(np.mean([o[0] for o in r])),
                            "top1_peaks": float(np.mean([o[1] for o in r])),
                            "top1_rescored": float(np.mean([o[2] for o in r]))} for d, r in sorted(by_duration.items())}
        for label, by_duration in sorted(groups.items(), key=lambda item: (item[0] != "all", item[0]))
    }  # fmt: skip


def right_above(match: Match, track: int, threshold: float) -> bool:
    return match.track == track and match.score > threshold


def threshold_for(scores: np.ndarray, far_target: float) -> float:
    """Smallest threshold (accept when score > threshold) whose false-accept rate is <= far_target."""
    if len(scores) == 0:
        return 0.0
    ordered = np.sort(scores)[::-1]
    allowed = int(np.floor(far_target * len(scores)))
    return float(ordered[allowed]) if allowed < len(ordered) else 0.0


def evaluate(fp: Fingerprinter, split: Split | None = None, cfg: EvalConfig = EvalConfig(), progress: bool = True) -> dict[str, Any]:
    from rich.progress import Progress

    started = time.time()
    split = split or load_split()
    rng = np.random.default_rng(cfg.seed)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("indexing test tracks", total=None)
        catalog = build_catalog(fp, split.test, cfg.half_hop_catalog)
        catalog_audio = [load_audio(t) for t in split.test]
        context_audio = [load_audio(t) for t in split.val]
        negatives = {}
        half_a, half_b = split.val[0::2], split.val[1::2]
        for degraded in (False, True):
            bar.update(task, description=f"non-catalog decisions ({'degraded' if degraded else 'clean'})")
            negatives[degraded] = (negative_scores(fp, catalog, half_a, cfg, degraded, rng),
                                   negative_scores(fp, catalog, half_b, cfg, degraded, rng))
        thresholds = {d: threshold_for(np.concatenate([negatives[c][0].scores[d] for c in (False, True)]), cfg.far_target)
                      for d in cfg.durations}  # fmt: skip
        rescored_thresholds = {d: threshold_for(np.concatenate([negatives[c][0].rescored[d] for c in (False, True)]),
                                                cfg.far_target) for d in cfg.durations}  # fmt: skip
        results: dict[str, Any] = {}
        outcomes: list[tuple[list[str], dict[float, tuple[bool, bool, bool]]]] = []
        for degraded in (False, True):
            condition = "degraded" if degraded else "clean"
            bar.update(task, description=f"{condition} queries", total=cfg.queries, completed=0)
            rows = {d: {"top1": [], "hit_at_threshold": [], "offset_ok": [], "ap": [], "top1_peaks": [],
                        "hit_peaks": [], "top1_rescored": [], "hit_rescored": []} for d in cfg.durations}  # fmt: skip
            for _ in range(cfg.queries):
                index = int(rng.integers(len(split.test)))
                query = make_query(fp, rng, catalog_audio, index, context_audio, cfg, degraded)
                checker, long_checkers = _checker(query.peaks, catalog), _long_checkers(query.peaks, catalog, cfg)
                outcome: dict[float, tuple[bool, bool, bool]] = {}
                for d in cfg.durations:
                    use = query.times_s <= d + 1e-9
                    if not use.any():
                        continue
                    relaxed, times = query.relaxed[use], query.times_s[use]
                    candidates = _decide(catalog, relaxed, times, fp.hop_s, cfg, fp.bits)
                    match = candidates[0]
                    confirmed = peak_choice(candidates, checker, query.excerpt_at_s + float(times[-1]), cfg)
                    rows[d]["top1_peaks"].append((confirmed or match).track == index)
                    rows[d]["hit_peaks"].append(confirmed.track == index if confirmed else right_above(match, index, thresholds[d]))
                    rescored, rescored_score = match, -np.inf
                    if cfg.rescore_candidates:
                        rescored, rescored_score = rescored_choice(catalog, relaxed, times, query.excerpt_at_s + float(times[-1]),
                                                                   (checker, long_checkers[d]), fp, cfg)  # fmt: skip
                    rows[d]["top1_rescored"].append(rescored.track == index)
                    rows[d]["hit_rescored"].append(rescored.track == index and rescored_score > rescored_thresholds[d])
                    true_offset = query.start_s + times[-1] * query.speed
                    right = match.track == index
                    rows[d]["top1"].append(right)
                    rows[d]["hit_at_threshold"].append(right_above(match, index, thresholds[d]))
                    rows[d]["offset_ok"].append(right and abs(match.offset_s - true_offset) <= cfg.offset_tolerance_s)
                    distances = np.bitwise_count(catalog.codes ^ pack_bits(relaxed[-1])).sum(-1)
                    relevant = (catalog.tracks == index) & (np.abs(catalog.offsets_s - true_offset) <= cfg.offset_tolerance_s)
                    rows[d]["ap"].append(average_precision(distances, relevant, rng))
                    outcome[d] = (right, (confirmed or match).track == index, rescored.track == index)
                if degraded:
                    outcomes.append((degradation_labels(query.chain.steps), outcome))
                bar.update(task, advance=1)
            for d in cfg.durations:
                held_out = negatives[degraded][1]
                fa, fa_confirmed, fa_rescored = held_out.scores[d], held_out.confirmed[d], held_out.rescored[d]
                results[f"{condition}/{d:g}s"] = {
                    "condition": condition,
                    "duration_s": d,
                    "queries": len(rows[d]["top1"]),
                    "top1": float(np.mean(rows[d]["top1"])),
                    "hit_at_threshold": float(np.mean(rows[d]["hit_at_threshold"])),
                    "offset_ok": float(np.mean(rows[d]["offset_ok"])),
                    "mAP": float(np.mean(rows[d]["ap"])),
                    "threshold": thresholds[d],
                    "false_accept_rate": float(np.mean(fa > thresholds[d])) if len(fa) else float("nan"),
                    "non_catalog_decisions": int(len(fa)),
                    "top1_peaks": float(np.mean(rows[d]["top1_peaks"])),
                    "hit_peaks": float(np.mean(rows[d]["hit_peaks"])),
                    "false_accept_rate_peaks": float(np.mean((fa > thresholds[d]) | fa_confirmed)) if len(fa) else float("nan"),
                    "top1_rescored": float(np.mean(rows[d]["top1_rescored"])),
                    "hit_rescored": float(np.mean(rows[d]["hit_rescored"])),
                    "threshold_rescored": rescored_thresholds[d],
                    "false_accept_rate_rescored": float(np.mean(fa_rescored > rescored_thresholds[d])) if len(fa) else float("nan"),
                }
    return {
        "model": fp.version,
        "bits": fp.bits,
        "catalog": {"tracks": len(split.test), "codes": int(len(catalog.codes)), "hop_s": fp.hop_s},
        "config": asdict(cfg),
        "results": results,
        "by_degradation": degradation_breakdown(outcomes),
        "wall_s": round(time.time() - started, 1),
    }


def format_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"streamd eval — {report['model']} — catalog {report['catalog']['tracks']} test tracks, {report['catalog']['codes']} codes")
    for column in ("condition", "query", "n", "top-1", "hit@thr", "offset ok", "mAP", "threshold", "false accepts",
                   "top-1 +peaks", "hit +peaks", "FA +peaks", "top-1 rescored", "hit rescored", "FA rescored"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in report["results"].values():
        table.add_row(row["condition"], f"{row['duration_s']:g} s", str(row["queries"]), f"{100 * row['top1']:.1f} %",
                      f"{100 * row['hit_at_threshold']:.1f} %", f"{100 * row['offset_ok']:.1f} %", f"{row['mAP']:.3f}",
                      f"{row['threshold']:.2f}", f"{100 * row['false_accept_rate']:.2f} % of {row['non_catalog_decisions']}",
                      *_second_look_cells(row))  # fmt: skip
    return table


def format_breakdown(report: dict[str, Any], durations: tuple[str, ...] = ("5s", "10s")) -> Any:
    """Degraded top-1 by degradation (``by_degradation``), for the given query durations."""
    from rich.table import Table

    table = Table(title="degraded queries by degradation: top-1, codes / + peaks / re-scored")
    table.add_column("degradation")
    table.add_column("n", justify="right")
    for d in durations:
        table.add_column(f"{d[:-1]} s", justify="right")
    for label, by_duration in report.get("by_degradation", {}).items():
        cells = [" / ".join(f"{100 * by_duration[d][k]:.0f}" for k in ("top1", "top1_peaks", "top1_rescored") if k in by_duration[d])
                 + " %" if d in by_duration else "" for d in durations]  # fmt: skip
        n = max((v["queries"] for v in by_duration.values()), default=0)
        table.add_row(label, str(n), *cells)
    return table


def _second_look_cells(row: dict[str, Any]) -> list[str]:
    keys = ("top1_peaks", "hit_peaks", "false_accept_rate_peaks", "top1_rescored", "hit_rescored", "false_accept_rate_rescored")
    return [f"{100 * row[key]:.{2 if key.startswith('false') else 1}f} %" if key in row else ""  # older reports lack some
            for key in keys]  # fmt: skip


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
