"""Degradations keep length and alignment, hit their requested levels, and replay exactly from a seed."""

import shutil

import numpy as np
import pytest

from streamd import degrade

SR = 12000


def music(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    return 0.3 * degrade.synthetic_music(int(seconds * SR), SR, np.random.default_rng(seed))


def lag_between(reference: np.ndarray, other: np.ndarray, max_lag: int = 200) -> int:
    """Lag (samples) of ``other`` behind ``reference``, from cross-correlation of a middle second."""
    segment = reference[SR : 2 * SR]
    scores = [np.dot(segment, other[SR + lag : 2 * SR + lag]) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_noise_reaches_requested_snr(color, snr_db):
    clean = music()
    noisy = degrade.add_noise(clean, SR, snr_db, color=color, seed=3)
    achieved = degrade.power_db(clean) - degrade.power_db(noisy - clean)
    assert abs(achieved - snr_db) < 0.5


def test_noise_colours_have_their_spectral_slopes():
    rng = np.random.default_rng(0)
    freqs = np.fft.rfftfreq(SR * 4, 1 / SR)
    slopes = {}
    for color in ["white", "pink", "brown"]:
        power = np.abs(np.fft.rfft(degrade.coloured_noise(SR * 4, SR, color, rng))) ** 2
        low, high = power[(freqs > 100) & (freqs < 200)].mean(), power[(freqs > 1600) & (freqs < 3200)].mean()
        slopes[color] = 10 * np.log10(high / low) / 4  # dB per octave over 4 octaves
    assert abs(slopes["white"]) < 1
    assert -4 < slopes["pink"] < -2
    assert -7 < slopes["brown"] < -5


def test_noise_reference_level_overrides_measured_power():
    quiet = 0.01 * music()
    noisy = degrade.add_noise(quiet, SR, 10.0, seed=1, ref_dbfs=-20.0)
    assert abs(degrade.power_db(noisy - quiet) - (-30.0)) < 0.1


@pytest.mark.parametrize("step", ["background", "speech"])
def test_mixed_sources_reach_requested_snr(step):
    if step == "speech" and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    clean = music(6.0)
    mixed = degrade.apply(
        clean, SR, degrade.DegradationChain((degrade.Step(step, {"snr_db": 5.0, "seed": 2}),))
    )
    other = mixed - clean
    active = np.abs(other) > 1e-4
    achieved = degrade.power_db(clean) - degrade.power_db(other[active])
    assert abs(achieved - 5.0) < 0.5
    assert np.all(np.isfinite(mixed))


def test_background_uses_given_music():
    clean, bed = music(seed=0), music(seed=1)
    chain = degrade.DegradationChain((degrade.Step("background", {"snr_db": 0.0, "seed": 4}),))
    with_bed = degrade.apply(clean, SR, chain, backgrounds=[bed])
    synthetic = degrade.apply(clean, SR, chain)
    assert not np.allclose(with_bed, synthetic)


@pytest.mark.parametrize("codec", ["mp3", "aac"])
@pytest.mark.parametrize("bitrate", [32, 128])
@pytest.mark.parametrize("encode_sr", [12000, 44100])
def test_codec_round_trip_keeps_length_and_alignment(codec, bitrate, encode_sr):
    clean = music()
    decoded = degrade.codec_roundtrip(clean, SR, codec, bitrate, encode_sr)
    assert decoded.shape == clean.shape and decoded.dtype == np.float32
    assert abs(lag_between(clean, decoded)) <= 24  # 2 ms at 12 kHz
    correlation = np.corrcoef(clean[SR:-SR], decoded[SR:-SR])[0, 1]
    assert correlation > 0.8


@pytest.mark.parametrize("factor", [0.97, 1.0, 1.03])
def test_speed_changes_duration_and_pitch_by_the_factor(factor):
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(3 * SR) / SR)).astype(np.float32)
    fast = degrade.change_speed(tone, SR, factor)
    assert len(fast) == round(len(tone) / factor)
    spectrum = np.abs(np.fft.rfft(fast[SR // 2 : -SR // 2] * np.hanning(len(fast) - SR)))
    peak_hz = np.argmax(spectrum) * SR / (len(fast) - SR)
    assert abs(peak_hz - 1000 * factor) < 2


def test_speed_maps_track_time_to_output_time():
    clicks = np.zeros(10 * SR, np.float32)
    clicks[[2 * SR, 8 * SR]] = 1.0
    fast = degrade.change_speed(clicks, SR, 1.03)
    peaks = np.sort(np.argsort(np.abs(fast))[-2:])
    assert np.allclose(peaks / SR, [2 / 1.03, 8 / 1.03], atol=0.002)


@pytest.mark.parametrize(
    "step",
    [
        degrade.Step("eq", {"bands": [{"type": "peaking", "freq_hz": 1000, "gain_db": 9, "q": 1.0}]}),
        degrade.Step("eq", {"tilt_db_per_octave": -3.0, "highpass_hz": 200, "lowpass_hz": 3000}),
        degrade.Step("reverb", {"rt60_s": 1.0, "wet": 0.5, "seed": 1}),
        degrade.Step("compress", {"threshold_db": -30, "ratio": 8, "makeup_db": 10}),
        degrade.Step("limit", {"ceiling_db": -6}),
        degrade.Step("gain", {"db": 12}),
    ],
    ids=lambda s: s.kind,
)
def test_filters_keep_length_and_alignment(step):
    clean = music()
    out = degrade.apply(clean, SR, degrade.DegradationChain((step,)))
    assert out.shape == clean.shape and np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
    assert abs(lag_between(clean, out)) <= 2


def test_eq_boosts_the_band_it_names():
    white = degrade.coloured_noise(4 * SR, SR, "white", np.random.default_rng(0)) * 0.1
    boosted = degrade.equalize(white, SR, [{"type": "peaking", "freq_hz": 1000, "gain_db": 12, "q": 2}])
    freqs = np.fft.rfftfreq(len(white), 1 / SR)
    ratio = np.abs(np.fft.rfft(boosted)) ** 2 / (np.abs(np.fft.rfft(white)) ** 2 + 1e-12)
    near, far = ratio[(freqs > 950) & (freqs < 1050)].mean(), ratio[(freqs > 4000) & (freqs < 5000)].mean()
    assert 10 < 10 * np.log10(near) < 13
    assert abs(10 * np.log10(far)) < 1


def test_limiter_holds_the_ceiling_and_compressor_reduces_dynamics():
    loud = np.concatenate([0.05 * music(2.0), 0.9 * music(2.0, seed=1)])
    limited = degrade.limit(loud * 2, SR, ceiling_db=-3)
    assert np.max(np.abs(limited)) <= degrade.db_to_amplitude(-3) + 1e-6
    squashed = degrade.compress(loud, SR, threshold_db=-30, ratio=8)
    spread = lambda x: degrade.power_db(x[2 * SR :]) - degrade.power_db(x[: 2 * SR])  # noqa: E731
    assert spread(squashed) < spread(loud) - 6


def test_compressor_bands_sum_back_to_the_input_when_idle():
    quiet = 0.01 * music()
    out = degrade.compress(quiet, SR, threshold_db=0.0, ratio=4.0)
    assert np.max(np.abs(out - quiet)) < 1e-4


def test_crossfade_lengths_and_continuity():
    a, b = np.ones(1000, np.float32), np.ones(800, np.float32)
    joined = degrade.crossfade(a, b, 200, curve="linear")
    assert len(joined) == 1600 and np.allclose(joined, 1.0)
    assert len(degrade.crossfade(a, b, 0)) == 1800


def test_random_chains_are_seeded_serialisable_and_finite():
    clean = music(3.0)
    for seed in range(8):
        chain = degrade.random_chain(
            np.random.default_rng(seed), strength=1.0, kinds=[k for k in degrade.STEPS if k != "speech"]
        )
        again = degrade.random_chain(
            np.random.default_rng(seed), strength=1.0, kinds=[k for k in degrade.STEPS if k != "speech"]
        )
        assert chain == degrade.DegradationChain.from_json(chain.to_json()) == again
        first, second = degrade.apply(clean, SR, chain), degrade.apply(clean, SR, again)
        assert np.array_equal(first, second)
        assert np.all(np.isfinite(first)) and np.max(np.abs(first)) <= 1.0
        assert len(first) == round(len(clean) / chain.speed_factor)


def test_strength_zero_is_clean_and_strength_one_degrades():
    assert degrade.random_chain(np.random.default_rng(0), strength=0.0).steps == ()
    sizes = [len(degrade.random_chain(np.random.default_rng(s), strength=1.0).steps) for s in range(20)]
    assert np.mean(sizes) > 2


def test_reseeded_chain_changes_noise_but_not_settings():
    chain = degrade.DegradationChain((degrade.Step("noise", {"snr_db": 10.0, "seed": 5}),))
    other = chain.reseeded(1)
    assert other.steps[0].params["snr_db"] == 10.0 and other.steps[0].params["seed"] != 5
    assert other == chain.reseeded(1)


def test_bad_input_is_a_typed_error():
    with pytest.raises(degrade.DegradationError):
        degrade.Step("wobble")
    with pytest.raises(degrade.DegradationError):
        degrade.apply(music(), SR, degrade.DegradationChain((degrade.Step("noise", {"snr": 3}),)))
    with pytest.raises(degrade.DegradationError):
        degrade.DegradationChain.from_dict({"nope": []})
    with pytest.raises(degrade.DegradationError):
        degrade.codec_roundtrip(music(), SR, codec="ogg")


def test_empty_and_silent_audio_pass_through():
    empty = np.zeros(0, np.float32)
    silent = np.zeros(SR, np.float32)
    chain = degrade.random_chain(
        np.random.default_rng(1), 1.0, kinds=["eq", "codec", "reverb", "noise", "compress"]
    )
    assert len(degrade.apply(empty, SR, chain.without("codec"))) == 0
    out = degrade.apply(silent, SR, chain)
    assert len(out) == SR and np.all(np.isfinite(out))
