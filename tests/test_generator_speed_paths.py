"""The CPU inference fast path (torch.inference_mode) computes what the reference path computes.

faceapp.stylegan.layers takes a faster path for the synthesis layers under inference_mode on
the CPU (channels_last, folded gains, in-place epilogues, cached weight-derived tensors). The
reference path is the one training (autograd on) and plain no_grad run, and the one
FAST_CPU_INFERENCE = False selects: every test renders the same weights and inputs both ways.
"""

from __future__ import annotations

import contextlib
import copy
import io
import pickle

import pytest
import torch

import faceapp.stylegan.fast_cpu as fast_cpu
from faceapp.stylegan import Generator
from faceapp.stylegan.layers import SynthesisLayer

TOL = 1e-4  # max abs difference allowed against the reference path (float32)


@contextlib.contextmanager
def reference_path():
    before = fast_cpu.FAST_CPU_INFERENCE
    fast_cpu.FAST_CPU_INFERENCE = False
    try:
        yield
    finally:
        fast_cpu.FAST_CPU_INFERENCE = before


def trained_like(G: Generator, seed: int = 0) -> Generator:
    """Visible noise and non-zero biases, as in a trained network (fresh init has neither)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.2)
            elif name.endswith("bias") and ".affine." not in name and "mapping" not in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return G.eval()


def configf_tiny(res=1024, base=2048, cmax=16) -> Generator:
    # Config-f's layout (8 mapping layers, fp16 blocks, clamp 256, skip) with a few channels.
    return trained_like(Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=res, img_channels=3,
                                  mapping_kwargs=dict(num_layers=8),
                                  synthesis_kwargs=dict(channel_base=base, channel_max=cmax, num_fp16_res=4,
                                                        conv_clamp=256)))


def demo64() -> Generator:
    # The 64 px demo config being trained, exactly.
    return trained_like(Generator(z_dim=256, c_dim=0, w_dim=256, img_resolution=64, img_channels=3,
                                  mapping_kwargs=dict(num_layers=4),
                                  synthesis_kwargs=dict(channel_base=2048, channel_max=256)))


def both_paths(G, ws, **kwargs):
    with reference_path(), torch.no_grad():
        ref = G.synthesis(ws, **kwargs)
    with torch.inference_mode():
        fast = G.synthesis(ws, **kwargs)
    return ref, fast


def test_fast_path_is_taken_only_under_inference_mode_on_cpu():
    x = torch.zeros(1)
    with torch.inference_mode():
        assert fast_cpu.use_fast_path(x)
        with reference_path():
            assert not fast_cpu.use_fast_path(x)
    with torch.no_grad():  # bit-identical to what autograd sees (the projector fits such renders)
        assert not fast_cpu.use_fast_path(x)
    assert not fast_cpu.use_fast_path(x)  # autograd on: training runs the reference path
    G = configf_tiny(res=32)
    img = G(torch.randn(2, 32), None)
    img.square().mean().backward()
    assert G.synthesis.b32.conv1.weight.grad is not None


@pytest.mark.parametrize("batch", [1, 3])
def test_config_f_shaped_1024_matches_reference(batch):
    G = configf_tiny()
    ws = G.mapping(torch.randn(batch, 32, generator=torch.Generator().manual_seed(batch)), None,
                   truncation_psi=0.7)
    ref, fast = both_paths(G, ws, noise_mode="const")
    assert fast.shape == (batch, 3, 1024, 1024) and fast.is_contiguous()
    assert (fast - ref).abs().max().item() <= TOL
    assert ref.std() > 0.1  # a real image, not a constant


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("noise_mode", ["const", "none", "random"])
def test_demo64_matches_reference(batch, noise_mode):
    G = demo64()
    ws = G.mapping(torch.randn(batch, 256, generator=torch.Generator().manual_seed(3)), None)
    torch.manual_seed(7)
    with reference_path(), torch.no_grad():
        ref = G.synthesis(ws, noise_mode=noise_mode)
    torch.manual_seed(7)  # 'random' draws the same noise, in the same order, on both paths
    with torch.inference_mode():
        fast = G.synthesis(ws, noise_mode=noise_mode)
    assert (fast - ref).abs().max().item() <= TOL
    # The shared-weight layers ran oneDNN's prepacked convs, not the F.conv2d fallback.
    assert fast_cpu._PREPACK_OK == torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("fused", [None, True, False])
@pytest.mark.parametrize("batch", [1, 2])
def test_fused_and_shared_weight_forms_match_reference(fused, batch):
    G = configf_tiny(res=64, base=1024, cmax=32)
    ws = G.mapping(torch.randn(batch, 32), None)
    ref, fast = both_paths(G, ws, fused_modconv=fused)
    assert (fast - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("architecture", ["orig", "resnet"])
def test_other_architectures_match_reference(architecture):
    G = trained_like(Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                               mapping_kwargs=dict(num_layers=2),
                               synthesis_kwargs=dict(channel_base=256, channel_max=16, architecture=architecture)))
    ws = G.mapping(torch.randn(2, 16), None)
    ref, fast = both_paths(G, ws)
    assert (fast - ref).abs().max().item() <= TOL


def test_float64_fast_path_is_the_same_function():
    # In double precision only rounding separates the two paths: any algebra slip would show.
    G = configf_tiny(res=64, base=1024, cmax=32).double()
    ws = G.mapping(torch.randn(2, 32, dtype=torch.float64), None)
    for fused in (None, True, False):
        ref, fast = both_paths(G, ws, fused_modconv=fused)
        assert fast.dtype == torch.float64
        assert (fast - ref).abs().max().item() < 1e-10


@pytest.mark.parametrize("activation", ["lrelu", "linear", "relu", "sigmoid"])
@pytest.mark.parametrize("up,kernel", [(1, 3), (2, 3), (1, 1), (2, 5)])
def test_synthesis_layer_variants_match_reference(activation, up, kernel):
    layer = SynthesisLayer(6, 5, w_dim=8, resolution=8, kernel_size=kernel, up=up, activation=activation,
                           conv_clamp=0.3).eval()  # a clamp that bites
    with torch.no_grad():
        layer.noise_strength.fill_(0.5)
        layer.bias.normal_()
    x = torch.randn(2, 6, 8 // up, 8 // up)
    w = torch.randn(2, 8)
    for fused in (None, True, False):
        for gain in (1.0, 0.5**0.5):
            with reference_path(), torch.no_grad():
                ref = layer(x, w, noise_mode="const", fused_modconv=fused, gain=gain)
            with torch.inference_mode():
                fast = layer(x, w, noise_mode="const", fused_modconv=fused, gain=gain)
            assert (ref.abs() >= 0.3 * gain - 1e-6).any()  # the clamp was active
            assert (fast - ref).abs().max().item() <= 1e-5


def test_cached_weights_follow_parameter_updates():
    G = configf_tiny(res=32, base=512, cmax=16)
    ws = G.mapping(torch.randn(1, 32), None)
    with torch.inference_mode():
        G.synthesis(ws)  # fills the caches
    with torch.no_grad():  # in-place changes (an optimiser step, an EMA copy)
        G.synthesis.b16.conv0.weight.mul_(1.5)
        G.synthesis.b32.conv1.weight.add_(0.3)
        G.synthesis.b8.conv1.affine.bias.add_(0.5)  # the style affines cache their scaled weights too
        G.synthesis.b32.torgb.affine.weight.mul_(-1)
    ref, fast = both_paths(G, ws)
    assert (fast - ref).abs().max().item() <= TOL

    # The mapping network's layers (cached scaled weights) after an in-place change.
    z = torch.randn(2, 32)
    with torch.inference_mode():
        G.mapping(z, None)
    with torch.no_grad():
        G.mapping.fc3.weight.mul_(0.5)
        G.mapping.fc7.bias.add_(1.0)
        ws_ref = G.mapping(z, None)
    with torch.inference_mode():
        ws_fast = G.mapping(z, None)
    assert (ws_fast - ws_ref).abs().max().item() <= 1e-6

    # load_state_dict from another network, and a deep copy trained further.
    other = configf_tiny(res=32, base=512, cmax=16)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    G.load_state_dict(other.state_dict())
    ref, fast = both_paths(G, ws)
    with reference_path(), torch.no_grad():
        expect = other.synthesis(ws)
    assert (ref - expect).abs().max().item() == 0
    assert (fast - ref).abs().max().item() <= TOL


def test_deep_copies_and_pickles_of_a_used_generator_render_the_same():
    # The caches hold opaque oneDNN tensors: copies must start without them (PTI deep-copies G).
    G = configf_tiny(res=32, base=512, cmax=16)
    ws = G.mapping(torch.randn(2, 32), None)
    with torch.inference_mode():
        before = G.synthesis(ws)
    buf = io.BytesIO()
    pickle.dump(G, buf)
    for H in (copy.deepcopy(G), pickle.loads(buf.getvalue())):
        with torch.inference_mode():
            assert torch.equal(H.synthesis(ws), before)
        with torch.no_grad():
            H.synthesis.b16.conv1.weight.mul_(2)  # the copy's caches are its own
        with torch.inference_mode():
            assert torch.equal(G.synthesis(ws), before)
