"""The hash network: shapes, exact streaming, weights round trip, track indexing, a tiny overfit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from streamd.config import ModelConfig
from streamd.model import Fingerprinter, load_fingerprinter
from streamd.model.api import ModelLoadError, save_weights
from streamd.model.hashing import hamming, pack_bits, pack_bits_on_device, unpack_bits
from streamd.model.losses import bit_balance, nt_xent, quantisation
from streamd.model.network import LOG_FLOOR, ArchConfig, HashNet


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests run beside other jobs on 2 cores; one thread avoids OpenMP spin-waiting under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = ArchConfig(window_frames=400, widths=(4, 8, 8, 16, 16), feature_dim=8, lstm1_hidden=12, lstm2_hidden=16, bits=32)


def _randomised(arch: ArchConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> HashNet:
    """A network in eval mode with non-trivial batch-norm statistics (as after training).

    Exactness tests run in float64: there the streaming and full-window paths must agree to
    ~1e-12, far below any real difference, while float32 rounding alone is ~1e-5.
    """
    torch.manual_seed(seed)
    net = HashNet(arch).to(dtype)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def _logmel(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3.0 - 6.0).to(dtype)


def test_default_geometry_matches_the_daemon():
    arch = ArchConfig()
    assert arch.hop_frames == 48 and arch.window_frames == 1366 and arch.bits == 64
    assert arch.n_steps == 27 and arch.input_frames == 1358 <= arch.window_frames
    assert arch.freq_bins(5) == 1


def test_full_window_shapes_and_range():
    fp = Fingerprinter(_randomised(SMALL))
    windows = _logmel(3, 96, SMALL.window_frames)
    relaxed = fp.relaxed_for_logmel(windows)
    assert relaxed.shape == (3, 32) and relaxed.abs().max() < 1
    codes = fp.codes_for_logmel(windows)
    assert codes.dtype == np.uint8 and codes.shape == (3, 4)
    assert np.array_equal(codes, np.packbits(relaxed.numpy() > 0, axis=-1))


def test_frames_older_than_the_input_span_are_ignored():
    fp = Fingerprinter(_randomised(SMALL))
    windows = _logmel(2, 96, SMALL.window_frames)
    changed = windows.clone()
    changed[..., : SMALL.window_frames - SMALL.input_frames] += 5.0
    assert torch.allclose(fp.relaxed_for_logmel(windows), fp.relaxed_for_logmel(changed), atol=1e-6)
    changed[..., -48:] += 5.0
    assert not torch.allclose(fp.relaxed_for_logmel(windows), fp.relaxed_for_logmel(changed), atol=1e-6)


@pytest.mark.parametrize(
    ("arch", "dtype", "atol"),
    [(SMALL, torch.float64, 1e-10), (ArchConfig(), torch.float64, 1e-10), (ArchConfig(), torch.float32, 5e-4),
     (ArchConfig(context_hops=3), torch.float64, 1e-10), (ArchConfig(context_hops=3, hop_parts=3), torch.float64, 1e-10)],
    ids=["small-f64", "default-f64", "default-f32", "context3-f64", "context3-parts3-f64"],
)
def test_streaming_equals_full_window(arch, dtype, atol):
    """Slots at different phases, one reset midway: each hop's code equals the full-window code."""
    net = _randomised(arch, seed=3, dtype=dtype)
    fp = Fingerprinter(net)
    hops = arch.n_steps + 4
    n_streams = 3
    streams = _logmel(n_streams, 96, hops * arch.hop_frames, seed=4, dtype=dtype)
    encoder = fp.streaming(max_streams=6)
    slot_of = [5, 0, 2]
    started = [0, 2, 5]  # stream i starts feeding at hop started[i]
    checked = {0, 1, 2, 5, 9, 10, 14, arch.n_steps - 1, arch.n_steps, arch.n_steps + 3}  # windows compared
    for hop in range(hops):
        active = [i for i in range(n_streams) if hop >= started[i]]
        if hop == 9:  # stream 0 is reset: it starts afresh from here
            encoder.reset(slot_of[0])
            started[0] = 9
        frames = torch.stack([streams[i, :, (hop - started[i]) * 48 : (hop - started[i] + 1) * 48] for i in active])
        relaxed = encoder.advance_relaxed(torch.tensor([slot_of[i] for i in active]), frames)
        if hop not in checked:
            continue
        history = [streams[i, :, : (hop - started[i] + 1) * 48] for i in active]
        windows = torch.stack(
            [torch.nn.functional.pad(h, (arch.window_frames - h.shape[-1], 0), value=LOG_FLOOR) if h.shape[-1] < arch.window_frames else h[:, -arch.window_frames :] for h in history]
        )
        full = fp.relaxed_for_logmel(windows)
        assert torch.allclose(relaxed, full, atol=atol), (hop, (relaxed - full).abs().max())
        if dtype == torch.float64 or full.abs().min() > 10 * atol:  # sign is unambiguous
            assert np.array_equal(pack_bits(relaxed), pack_bits(full)), hop


def test_short_context_reads_only_its_newest_hops():
    """A 3-hop context: the code depends on the newest 3·48 + overhead frames of the window only."""
    arch = ArchConfig(context_hops=3)
    assert arch.n_steps == 3 and arch.input_frames == 3 * 48 + arch.overhead_frames
    fp = Fingerprinter(_randomised(arch, seed=8, dtype=torch.float64))
    windows = _logmel(2, 96, arch.window_frames, seed=9, dtype=torch.float64)
    changed = windows.clone()
    changed[..., : arch.window_frames - arch.input_frames] += 5.0
    changed_inside = windows.clone()
    changed_inside[..., -arch.input_frames] += 5.0
    assert torch.equal(fp.relaxed_for_logmel(windows), fp.relaxed_for_logmel(changed))
    assert not torch.allclose(fp.relaxed_for_logmel(windows), fp.relaxed_for_logmel(changed_inside))
    with pytest.raises(ValueError):
        ArchConfig(context_hops=40)  # more hops than a 29 s window holds


@pytest.mark.parametrize("arch", [SMALL, ArchConfig(context_hops=3), ArchConfig(context_hops=3, hop_parts=4)],
                         ids=["small", "context3", "context3-parts4"])
def test_advancing_several_hops_at_once_equals_hop_by_hop(arch):
    """advance_hops over k hops (k differing between calls, slots at different phases) gives the
    codes and leaves the state that k single-hop advances do."""
    fp = Fingerprinter(_randomised(arch, seed=21, dtype=torch.float64))
    frames = _logmel(2, 96, 48 * 12, seed=22, dtype=torch.float64)
    one_by_one, batched = fp.streaming(3), fp.streaming(3)
    slots = torch.tensor([2, 0])
    expected = [one_by_one.advance_relaxed(slots, frames[..., h * 48 : (h + 1) * 48]) for h in range(12)]
    got, hop = [], 0
    for k in (1, 4, 2, 5):  # 12 hops in calls of different sizes
        codes = batched.advance_hops_relaxed(slots, frames[..., hop * 48 : (hop + k) * 48])
        assert codes.shape == (2, k, arch.bits)
        got += [codes[:, j] for j in range(k)]
        hop += k
    for h, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert torch.allclose(want, have, atol=1e-10), h
    after = _logmel(2, 96, 48, seed=23, dtype=torch.float64)  # the state left behind is the same too
    assert torch.allclose(one_by_one.advance_relaxed(slots, after), batched.advance_relaxed(slots, after), atol=1e-10)
    packed = batched.advance_hops(slots, _logmel(2, 96, 96, seed=24, dtype=torch.float64))
    assert packed.shape == (2, 2, arch.bits // 8) and packed.dtype == np.uint8


@pytest.mark.parametrize("shape", [(3, 8, 48, 50), (2, 5, 7, 9), (1, 4, 3, 3), (2, 3, 6, 11)])
@pytest.mark.parametrize("pools", [(2, 2), (3, 3), (1, 2), (2, 1), (3, 2)])
def test_separable_max_pool_equals_max_pool2d(shape, pools):
    from streamd.model.network import separable_max_pool

    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    for layout in (torch.contiguous_format, torch.channels_last):
        y = x.contiguous(memory_format=layout)
        assert torch.equal(separable_max_pool(y, *pools), torch.nn.functional.max_pool2d(y, pools))


def test_streaming_rejects_bad_input():
    encoder = Fingerprinter(_randomised(SMALL)).streaming(2)
    with pytest.raises(ValueError):
        encoder.advance(torch.tensor([0, 0]), _logmel(2, 96, 48))
    with pytest.raises(ValueError):
        encoder.advance(torch.tensor([0]), _logmel(1, 96, 47))
    with pytest.raises(ValueError):
        encoder.advance(torch.tensor([0]), _logmel(1, 96, 96))  # one hop per advance()
    with pytest.raises(ValueError):
        encoder.advance_hops(torch.tensor([0]), _logmel(1, 96, 100))  # not whole hops


def test_codes_for_audio_matches_windows_and_offsets():
    fp = Fingerprinter(_randomised(SMALL, seed=5))
    audio = np.random.default_rng(0).standard_normal(12000 * 8).astype(np.float32) * 0.1
    codes, offsets = fp.codes_for_audio(audio)
    n_frames = 1 + (len(audio) - 512) // 256
    assert len(codes) == n_frames // 48 and codes.shape[1] == 4
    assert np.allclose(offsets, np.arange(1, len(codes) + 1) * 48 * 256 / 12000)
    from streamd.melspec import offline_logmel

    logmel = offline_logmel(torch.from_numpy(audio))
    for k in (0, 3, len(codes) - 1):
        end = (k + 1) * 48
        window = torch.nn.functional.pad(logmel[:, :end], (max(0, SMALL.window_frames - end), 0), value=LOG_FLOOR)
        assert np.array_equal(fp.codes_for_logmel(window[None, :, -SMALL.window_frames :])[0], codes[k])


def test_chunked_track_trunk_equals_one_pass():
    fp = Fingerprinter(_randomised(SMALL, seed=6, dtype=torch.float64))
    logmel = _logmel(96, 48 * 30, seed=7, dtype=torch.float64)
    one, _ = fp.relaxed_for_track_logmel(logmel, chunk_hops=1000)
    chunked, _ = fp.relaxed_for_track_logmel(logmel, chunk_hops=7)
    assert torch.allclose(one, chunked, atol=1e-10)


def test_safetensors_round_trip(tmp_path):
    net = _randomised(SMALL, seed=8)
    path = save_weights(tmp_path / "m.safetensors", net, {"name": "test-model", "training": {"steps": 3}})
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    fp = load_fingerprinter(ModelConfig(weights=str(path), bits=32, device="cpu"))
    assert fp.bits == 32 and fp.hop_frames == 48 and fp.window_frames == SMALL.window_frames
    assert fp.version.startswith("test-model-") and len(fp.version) == len("test-model-") + 8
    windows = _logmel(2, 96, SMALL.window_frames)
    assert np.array_equal(fp.codes_for_logmel(windows), Fingerprinter(net).codes_for_logmel(windows))
    with pytest.raises(ModelLoadError):
        load_fingerprinter(ModelConfig(weights=str(path), bits=64, device="cpu"))
    with pytest.raises(ModelLoadError):
        load_fingerprinter(ModelConfig(weights=str(tmp_path / "missing.safetensors")))
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError):
        load_fingerprinter(ModelConfig(weights=str(tmp_path / "bad.safetensors")))


def test_bits_pack_big_endian_and_hamming():
    relaxed = np.array([[0.5, -0.2, -1, 0.1, -0.1, -0.1, -0.1, -0.1, 0.9] + [-0.5] * 7])
    codes = pack_bits(relaxed)
    assert codes.tolist() == [[0b10010000, 0b10000000]]
    assert unpack_bits(codes, 16).tolist() == [(relaxed[0] > 0).astype(int).tolist()]
    assert hamming(codes, np.zeros_like(codes)).tolist() == [3]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_packing_on_the_device_equals_numpy_packbits(dtype):
    """The GPU path packs codes with torch before the copy; it must give np.packbits' bytes."""
    relaxed = torch.randn(4, 3, 128, generator=torch.Generator().manual_seed(5)).to(dtype)
    relaxed[0, 0, :8] = 0.0  # exactly zero is a 0 bit in both
    packed = pack_bits_on_device(relaxed)
    assert packed.dtype == torch.uint8 and packed.shape == (4, 3, 16)
    assert np.array_equal(packed.numpy(), np.packbits(relaxed.float().numpy() > 0, axis=-1))


def test_losses_behave():
    q = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert quantisation(q) == 0 and quantisation(q * 0.5) > 0
    balanced = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert bit_balance(balanced) == 0 and bit_balance(torch.ones(4, 2)) > 0.5
    assert bit_balance(torch.tensor([[1.0, 1.0], [-1.0, -1.0]])) > 0.5  # correlated bits
    queries = torch.randn(8, 16)
    aligned, accuracy = nt_xent(queries, queries + 0.01 * torch.randn(8, 16), torch.arange(8), torch.zeros(8, dtype=torch.long))
    shuffled, _ = nt_xent(queries, torch.randn(8, 16), torch.arange(8), torch.zeros(8, dtype=torch.long))
    assert aligned < shuffled and accuracy == 1.0


def test_tiny_overfit_reduces_the_loss():
    """A few steps on two synthetic 'tracks' make the paired codes agree (no real data)."""
    from streamd.train import LossWeights, TrainConfig, compute_losses

    torch.manual_seed(0)
    arch = replace(SMALL, selection="cosine")
    cfg = TrainConfig(arch=arch, loss=LossWeights())
    cfg = replace(cfg, views=replace(cfg.views, windows=2))
    net = HashNet(arch, n_classes=2)
    frames = arch.overhead_frames + arch.hop_frames * (arch.n_steps + 1)
    reference = _logmel(4, 96, frames, seed=9)
    batch = {"query": reference + 0.3 * torch.randn_like(reference), "reference": reference, "track": torch.tensor([0, 1, 0, 1])}
    assert reference.shape[-1] < 500  # keep it tiny
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss, _ = compute_losses(net, batch, cfg)
        first = float(loss.detach()) if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.8 * first


def test_fused_inference_form_is_the_same_function():
    net = _randomised(ArchConfig(), seed=11, dtype=torch.float64)
    windows = _logmel(2, 96, 1366, seed=12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(net(windows), net.fused_for_inference()(windows), atol=1e-10)


def test_fused_inference_form_stays_on_the_network_device():
    """A network loaded onto a GPU must stay there when its blocks are fused (the fused convolutions
    were once created on the CPU). The meta device stands in for the GPU here: copying a meta
    tensor into a CPU one raises, so a block built on the CPU fails this test."""
    net = HashNet(ArchConfig(bits=128)).to("meta")
    fp = Fingerprinter(net)
    assert {p.device.type for p in fp.net.parameters()} == {"meta"}
    assert all(block.conv.weight.dtype == torch.float32 for block in fp.net.blocks)


def test_informative_hops_skip_silence():
    from streamd.model.api import informative_hops

    logmel = torch.full((96, 48 * 10), LOG_FLOOR)
    logmel[:, 48 * 4 :] = -5.0  # sound from hop 4 on
    ends = np.arange(1, 11) * 48
    assert informative_hops(logmel, ends).tolist() == [False] * 5 + [True] * 5


def test_negative_queue_adds_negatives_and_stays_bounded():
    from streamd.train import NegativeQueue

    queue = NegativeQueue(5)
    for _ in range(3):
        queue.push(torch.randn(2, 8))
    assert queue.get().shape == (5, 8) and torch.allclose(queue.get().norm(dim=1), torch.ones(5))
    queries = torch.randn(4, 8)
    references = queries + 0.01 * torch.randn(4, 8)
    plain, _ = nt_xent(queries, references, torch.arange(4), torch.zeros(4, dtype=torch.long))
    more, _ = nt_xent(queries, references, torch.arange(4), torch.zeros(4, dtype=torch.long), extra_negatives=queue.get())
    assert more >= plain


def test_resized_encoder_keeps_stream_state():
    fp = Fingerprinter(_randomised(SMALL, seed=13))
    encoder = fp.streaming(2)
    frames = _logmel(2, 96, 48 * 5, seed=14)
    for hop in range(4):
        encoder.advance_relaxed(torch.tensor([0, 1]), frames[..., hop * 48 : (hop + 1) * 48])
    bigger = encoder.resized(5)
    last = frames[..., 4 * 48 :]
    assert torch.equal(bigger.advance_relaxed(torch.tensor([0, 1]), last), encoder.advance_relaxed(torch.tensor([0, 1]), last))
    assert bigger.max_streams == 5


def test_precise_batchnorm_averages_over_batches():
    from streamd.train import precise_batchnorm

    net = HashNet(SMALL)
    frames = SMALL.overhead_frames + SMALL.hop_frames * SMALL.n_steps
    batches = [{"query": _logmel(2, 96, frames, seed=s), "reference": _logmel(2, 96, frames, seed=s + 50)} for s in range(3)]
    calibrated = precise_batchnorm(net, batches)
    assert not calibrated.training and net.blocks[0].bn.running_mean.abs().max() == 0  # original untouched
    first = calibrated.blocks[0].bn
    # Block 1 sees the same normalised input distribution in every batch: its mean is the average.
    with torch.no_grad():
        conv_out = torch.cat([net.blocks[0].conv(net.normalise(b[v]).unsqueeze(1)) for b in batches for v in ("query", "reference")])
    assert torch.allclose(first.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-4)
    assert first.momentum == 0.1


def test_warm_start_keeps_what_fits_and_refuses_another_trunk():
    """A one-layer head warm-started from a two-layer model: trunk and LSTM1 copied, hash layer fresh;
    a model with other conv widths is refused."""
    from streamd.errors import StreamdError
    from streamd.train import warm_start

    torch.manual_seed(0)
    source = HashNet(ArchConfig(), n_classes=5)
    target = HashNet(replace(ArchConfig(), rnn_layers=1), n_classes=7)
    fresh = warm_start(target, source.state_dict())
    own, given = target.state_dict(), source.state_dict()
    assert all(torch.equal(own[k], given[k]) for k in own if k.startswith(("blocks.", "lstm1.", "projections.")))
    assert {"hash.weight", "hash.bias"} <= set(fresh) and any(k.startswith("classifier.") for k in fresh)
    assert not any(k.startswith(("blocks.", "lstm1.")) for k in fresh)
    other = HashNet(replace(ArchConfig(), widths=(16, 16, 32, 64, 128)), n_classes=5)
    with pytest.raises(StreamdError, match="conv trunk"):
        warm_start(other, source.state_dict())


def test_hop_parts_see_timing_inside_a_hop_and_warm_start_from_whole_hop_means():
    """With hop_parts 3, levels keep gcd(3, columns per hop) part means apart; a model warm-started
    from whole-hop means computes the same codes before training, and can then see what the
    whole-hop mean hides: the order of the columns inside a hop."""
    from streamd.train import warm_start

    arch = ArchConfig(context_hops=3)
    parted = replace(arch, hop_parts=3)
    assert [parted.parts_per_hop(level) for level in parted.levels] == [3, 3, 3, 1]
    with pytest.raises(ValueError):
        ArchConfig(hop_parts=0)
    source = _randomised(arch, seed=31, dtype=torch.float64)
    target = HashNet(parted).double()
    assert warm_start(target, source.state_dict()) == []
    target.eval()
    windows = _logmel(3, 96, arch.window_frames, seed=32, dtype=torch.float64)
    assert torch.allclose(source(windows), target(windows), atol=1e-12)

    # Level 2 (12 columns per hop): swap the first and last third of a hop. The whole-hop mean
    # cannot tell; the parts can, once the projection weighs them differently (training).
    fmap = torch.randn(2, arch.channels(2), arch.freq_bins(2), 2 * 12, dtype=torch.float64)
    swapped = fmap.clone()
    swapped[..., 12:16], swapped[..., 20:24] = fmap[..., 20:24], fmap[..., 12:16]
    assert torch.allclose(source.level_features(0, fmap), source.level_features(0, swapped), atol=1e-12)
    with torch.no_grad():
        target.projections[0].weight[:, : target.projections[0].weight.shape[1] // 3] *= 3.0
    parted_features, parted_swapped = target.level_features(0, fmap), target.level_features(0, swapped)
    assert torch.allclose(parted_features[:, 0], parted_swapped[:, 0], atol=1e-12)  # the other hop
    assert not torch.allclose(parted_features[:, 1], parted_swapped[:, 1], atol=1e-6)
