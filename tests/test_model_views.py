"""Training views: exact shapes for every fill, and the query equals the catalog reference where
both hear the same track audio (no degradation, no grid shift)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamd.model.network import ArchConfig
from streamd.model.views import ViewConfig, ViewMaker

ARCH = ArchConfig(window_frames=400, widths=(4, 8, 8, 16, 16), feature_dim=8, lstm1_hidden=12, lstm2_hidden=16)


@pytest.fixture()
def tracks(tmp_path, monkeypatch):
    from streamd import degrade
    from streamd.dataset import Track, audio_cache_path, save_audio

    monkeypatch.setenv("STREAMD_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        track = Track(f"syn__t{i}", "syn", Path("/nowhere"), 30.0, f"syn__t{i}")
        save_audio(audio_cache_path(track), degrade.synthetic_music(30 * 12000, 12000, rng) * 0.5)
        out.append(track)
    return tuple(out)


def test_batches_have_exact_shapes_even_for_the_longest_fills(tracks):
    views = ViewConfig(items=2, windows=3, max_fill_s=40.0, min_fill_s=3.0, partial_prob=1.0, codec_prob=0.0)
    maker = ViewMaker(tracks, ARCH, views)
    for step in range(6):
        batch = maker.batch(np.random.default_rng(step), np.array([0, 2]))
        frames = ARCH.overhead_frames + ARCH.hop_frames * (ARCH.n_steps + views.windows - 1)
        assert batch["query"].shape == batch["reference"].shape == (2, 96, frames)
        assert torch.isfinite(batch["query"]).all()


def test_query_matches_reference_inside_the_fill(tracks):
    views = ViewConfig(items=2, windows=3, shift_hops=0.0, degrade_prob=0.0, codec_prob=0.0, speed_prob=0.0,
                       partial_prob=1.0, crossfade_prob=0.0, min_fill_s=5.0, max_fill_s=6.0)
    maker = ViewMaker(tracks, ARCH, views)
    batch = maker.batch(np.random.default_rng(7), np.array([0, 1]))
    query, reference = batch["query"], batch["reference"]
    end = query.shape[-1] - ARCH.hop_frames * (views.windows - 1)  # window 0 ends here
    inside = int((float(batch["fill_s"].min()) - 0.1) * 12000 / 256) - 2
    assert torch.equal(query[..., end - inside :], reference[..., end - inside :])
    # Before the fill the query hears something else (another track, talk, noise or silence).
    assert not torch.equal(query[..., : end - inside - 48], reference[..., : end - inside - 48])


def test_degrade_probabilities_reach_the_chain(tracks, monkeypatch):
    from streamd import degrade

    seen = []
    real = degrade.random_chain

    def spy(rng, strength, kinds=None, probabilities=None):
        seen.append(probabilities)
        return real(rng, strength, kinds=kinds, probabilities=probabilities)

    monkeypatch.setattr(degrade, "random_chain", spy)
    views = ViewConfig(items=2, windows=3, degrade_prob=1.0, codec_prob=0.0, degrade_probabilities={"speech": 0.0, "noise": 1.0})
    ViewMaker(tracks, ARCH, views).batch(np.random.default_rng(1), np.array([0, 1]))
    assert seen and all(p["speech"] == 0.0 and p["noise"] == 1.0 and p["compress"] == views.compress_prob for p in seen)


@pytest.mark.parametrize("bad", [{"noize": 0.5}, {"noise": 1.5}])
def test_degrade_probabilities_are_checked(bad):
    from streamd.errors import StreamdError

    with pytest.raises(StreamdError, match="degrade_probabilities"):
        ViewConfig(degrade_probabilities=bad)
