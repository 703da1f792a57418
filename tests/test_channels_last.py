"""channels_last is a speed-up only: the frozen MobileNetV2's outputs and gradients are the same numbers."""

import pytest
import torch

import faceapp.inversion.losses as losses
import training.projected as projected


@pytest.fixture
def formats(monkeypatch):
    def use(channels_last: bool):
        monkeypatch.setattr(projected, "CHANNELS_LAST", channels_last)
        monkeypatch.setattr(losses, "CHANNELS_LAST", channels_last)
    return use


def test_projected_discriminator_same_logits_and_gradients(formats):
    torch.manual_seed(0)
    D = projected.ProjectedDiscriminator(img_resolution=32, feature_resolution=64).eval()
    img = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    out = {}
    for cl in (False, True):
        formats(cl)
        img.grad = None
        logits = D(img)
        logits.sum().backward()
        out[cl] = (logits.detach(), img.grad.clone())
    assert torch.allclose(out[False][0], out[True][0], atol=1e-4, rtol=1e-4)
    assert torch.allclose(out[False][1], out[True][1], atol=1e-5, rtol=1e-3)


def test_perceptual_loss_same_distance_and_gradients(formats):
    torch.manual_seed(0)
    loss = losses.perceptual_loss("mobilenet").eval()
    a = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    b = torch.rand(2, 3, 64, 64) * 2 - 1
    out = {}
    for cl in (False, True):
        formats(cl)
        a.grad = None
        d = loss(a, b)
        d.sum().backward()
        out[cl] = (d.detach(), a.grad.clone())
    assert torch.allclose(out[False][0], out[True][0], atol=1e-5, rtol=1e-4)
    assert torch.allclose(out[False][1], out[True][1], atol=1e-6, rtol=1e-3)
