"""The experiment suite: hashing baselines, metrics, head variants, frozen-trunk features, quick mode."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from streamd.dataset import default_corpus_dir
from streamd.experiments.features import WindowSet, load_trunk, recording_features
from streamd.experiments.heads import HeadNet, trained_head, window_outputs
from streamd.experiments.itq import ITQ
from streamd.experiments.ksh import KSH
from streamd.experiments.lsh import LSH
from streamd.experiments.metrics import Labels, average_precision, identification_top1, retrieval_metrics
from streamd.melspec import offline_logmel
from streamd.model.api import Fingerprinter, save_weights
from streamd.model.network import ArchConfig, HashNet


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- metrics -------------------------------------------------------------------------------------


def test_average_precision_of_a_hand_made_ranking():
    assert average_precision(np.array([1, 0, 1, 0], bool)) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision(np.array([0, 0, 1], bool)) == pytest.approx(1 / 3)
    assert average_precision(np.zeros(4, bool)) == 0.0


def test_retrieval_metrics_on_hand_made_codes():
    # 8-bit codes; the query is 0x00. Distances to the database: 0, 1, 2, 8 (no ties).
    db = np.array([[0b00000000], [0b00000001], [0b00000011], [0b11111111]], np.uint8)
    db_labels = Labels(track=np.array([0, 1, 0, 0]), offset_s=np.array([10.0, 10.0, 50.0, 11.0]))
    query = np.array([[0b00000000]], np.uint8)
    q_labels = Labels(track=np.array([0]), offset_s=np.array([10.5]))
    m = retrieval_metrics(query, q_labels, db, db_labels, np.random.default_rng(0), tolerance_s=1.5, ks=(1, 2, 4))
    # track relevance: ranks 1, 3, 4 relevant → (1 + 2/3 + 3/4) / 3; moment: ranks 1 and 4 → (1 + 2/4) / 2
    assert m["mAP_track"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m["mAP_moment"] == pytest.approx((1 + 2 / 4) / 2)
    assert m["precision_at_k"] == {"1": 1.0, "2": 0.5, "4": 0.75}


def test_identification_votes_over_a_query_run():
    hop = 1.0
    db_codes = np.packbits(np.eye(16, dtype=np.uint8), axis=-1)  # 16 codes, pairwise 2 bits apart
    db = Labels(track=np.repeat([0, 1], 8), offset_s=np.tile(np.arange(1, 9, dtype=float), 2))
    # query: track 1 from its 3rd hop on, 4 hops → catalog rows 10..13 exactly
    q_codes = db_codes[10:14]
    times = np.arange(1, 5, dtype=float)
    top1 = identification_top1(q_codes, times, np.zeros(4, int), np.ones(4, int), db_codes, db, (2.0, 4.0), hop)
    assert top1 == {"2s": 1.0, "4s": 1.0}


# --- hashing baselines ---------------------------------------------------------------------------


def _clusters(n: int, rng: np.random.Generator, classes: int = 8, dim: int = 24, spread: float = 1.0):
    centres = np.random.default_rng(123).standard_normal((classes, dim)) * 1.5
    labels = rng.integers(0, classes, n)
    return centres[labels] + spread * rng.standard_normal((n, dim)), labels


def _map(hasher, train, database, queries) -> float:
    hasher.fit(*train)
    pack = lambda x: np.packbits(hasher.encode(x), axis=-1)  # noqa: E731
    m = retrieval_metrics(pack(queries[0]), Labels(queries[1], np.zeros(len(queries[1]))),
                          pack(database[0]), Labels(database[1], np.zeros(len(database[1]))), np.random.default_rng(0))
    return m["mAP_track"]


@pytest.mark.parametrize("make", [lambda: LSH(16), lambda: ITQ(16), lambda: KSH(16, anchors=80, labelled=400, refine_steps=30)],
                         ids=["LSH", "ITQ", "KSH"])
def test_hashers_beat_chance_on_clustered_data(make):
    rng = np.random.default_rng(0)
    train, database, queries = _clusters(600, rng), _clusters(400, rng), _clusters(60, rng)
    chance = 1 / 8
    assert _map(make(), train, database, queries) > 3 * chance


def test_ksh_uses_the_labels():
    """Classes differ only in 2 of 24 dimensions, the rest is larger noise: unsupervised codes
    follow the noise, KSH follows the labels."""
    rng = np.random.default_rng(1)

    def data(n):
        labels = rng.integers(0, 4, n)
        x = rng.standard_normal((n, 24)) * 3.0
        x[:, :2] = np.array([[0, 0], [0, 4], [4, 0], [4, 4]])[labels] + 0.3 * rng.standard_normal((n, 2))
        return x, labels

    train, database, queries = data(800), data(400), data(80)
    ksh = _map(KSH(16, anchors=100, labelled=500, refine_steps=30), train, database, queries)
    lsh = _map(LSH(16), train, database, queries)
    assert ksh > lsh + 0.15


def test_itq_reduces_quantisation_error():
    x, _ = _clusters(500, np.random.default_rng(2))
    itq = ITQ(16, iterations=30).fit(x)
    errors = np.array(itq.quantisation_error)
    assert errors[-1] < 0.95 * errors[0]
    assert np.all(np.diff(errors) <= 1e-9 * errors[0])  # alternating minimisation never goes up
    with pytest.raises(ValueError):
        ITQ(64).fit(x)  # more bits than dimensions


def test_ksh_greedy_bits_fit_the_similarity():
    x, labels = _clusters(300, np.random.default_rng(3), classes=4)
    ksh = KSH(8, anchors=50, labelled=300, refine_steps=30).fit(x, labels)
    assert all(o > 0 for o in ksh.objective)  # every bit agrees with S more than it disagrees
    bits = ksh.encode(x)
    assert bits.shape == (300, 8) and set(np.unique(bits)) <= {0, 1}


# --- head variants and cached trunk features ----------------------------------------------------

SMALL = ArchConfig(window_frames=400, widths=(4, 8, 8, 16, 16), feature_dim=8, lstm1_hidden=12, lstm2_hidden=16, bits=32)


@pytest.mark.parametrize("variant", [{"rnn": "gru"}, {"rnn": "rnn", "rnn_layers": 1}, {"rnn_layers": 1},
                                     {"levels": (1, 2, 3, 4, 5), "level_mode": "concat"}, {"levels": (4,)}])
def test_head_variants_give_codes_and_embeddings(variant):
    net = HashNet(replace(SMALL, **variant), n_classes=3).eval()
    x = torch.randn(2, 96, 400) * 3 - 6
    with torch.no_grad():
        codes = net(x)
        maps = net.hop_features(net.crop_window(x)).transpose(1, 2)
        h = net.embed(maps)
    assert codes.shape == (2, 32) and torch.all(codes.abs() < 1)
    assert h.shape == (2, net.hash.in_features)
    assert torch.allclose(torch.tanh(net.hash(h)), codes)


def test_bad_variants_are_rejected():
    for bad in ({"rnn": "transformer"}, {"rnn_layers": 3}, {"level_mode": "stack"}):
        with pytest.raises(ValueError):
            replace(SMALL, **bad)


def test_cached_trunk_features_give_the_fingerprinter_codes(tmp_path):
    """HeadNet over cached hop features = the network on audio (up to float16 storage)."""
    torch.manual_seed(0)
    net = HashNet(SMALL).eval()
    weights = save_weights(tmp_path / "small.safetensors", net, {"name": "small"})
    rng = np.random.default_rng(0)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(12000 * 12) / 12000) + 0.05 * rng.standard_normal(12000 * 12)).astype(np.float32)
    expected, offsets = Fingerprinter(net).codes_for_audio(audio)
    trunk = load_trunk(weights)
    feats, informative = recording_features(trunk, audio)
    n = len(informative)
    assert n == len(expected) and feats.shape == (n + SMALL.n_steps - 1, trunk.dim)
    windows = WindowSet([feats], np.zeros(n, int), np.arange(n), np.zeros(n, int), offsets, offsets)
    relaxed = window_outputs(trained_head(trunk), windows)
    reference = Fingerprinter(net, fuse=False).relaxed_for_track_logmel(offline_logmel(torch.from_numpy(audio)))[0]
    assert torch.allclose(relaxed, reference, atol=2e-3)
    assert isinstance(trained_head(trunk), HeadNet)


# --- the suite -----------------------------------------------------------------------------------


@pytest.fixture
def corpus():
    if not (default_corpus_dir() / "manifest.csv").exists():
        pytest.skip("corpus not built (bash ../shared/corpus/build_corpus.sh --set dev)")


def test_quick_mode_end_to_end(corpus, tmp_path):
    """The whole pipeline on the QUICK sizes (~20 s): every table and plot, resumable, publishable."""
    from typer.testing import CliRunner

    from streamd.cli import app
    from streamd.experiments.runner import FIG4_VARIANTS, FIG5_VARIANTS, QUICK, run_suite

    out, docs = tmp_path / "run", tmp_path / "docs"
    results = run_suite(QUICK, out, publish_to=docs)
    assert set(results["fig4"]) == set(FIG4_VARIANTS) and set(results["fig5"]) == set(FIG5_VARIANTS)
    for r in [*results["fig4"].values(), *results["fig5"].values()]:
        assert [c["step"] for c in r["curve"]] == [10, 20]
        assert 0 <= r["test"]["mAP_moment"] <= 1 and set(r["test"]["top1"]) == {"3s", "5s", "10s"}
    methods = results["hashing"]["methods"]
    assert set(methods) == {"ours (shipped, end-to-end)", "ours (hash layer on h)", "KSH", "ITQ", "LSH"}
    assert set(methods["KSH"]) == {"16", "32", "64", "128"}
    for name in ("fig4", "fig5", "fig6_map", "fig6_precision", "bits"):
        assert (out / "img" / f"{name}.png").stat().st_size > 10_000
        assert (docs / "img" / f"experiments-quick-{name}.png").exists()
    page = (docs / "experiments.md").read_text()
    assert "QUICK MODE" in page and "<!-- END quick results -->" in page
    assert json.loads((out / "results.json").read_text())["mode"] == "quick"

    # The CLI on the same folder reuses every cached stage and rewrites the report.
    (out / "report.md").unlink()
    result = CliRunner().invoke(app, ["experiments", "--quick", "--only", "bits", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Code length" in (out / "report.md").read_text()
