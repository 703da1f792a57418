"""The ADA augmentation pipe (training/augment.py) and the p controller."""

import dataclasses
import math

import pytest
import torch

from training.augment import BGC, AugmentConfig, AugmentPipe, adjust_ada_p

GEOMETRY = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def only(*names: str) -> AugmentConfig:
    """The bgc config with every transform off except ``names``."""
    return dataclasses.replace(BGC, **{n: (1.0 if n in names else 0.0) for n in GEOMETRY + COLOUR})


def images(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1  # [N, 3, H, W] in [-1, 1]


def test_p_zero_is_identity():
    x = images()
    assert torch.equal(AugmentPipe(p=0.0)(x), x)


def test_p_one_changes_every_image_keeps_shape_and_passes_gradients():
    x = images().requires_grad_(True)
    y = AugmentPipe(p=1.0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    per_image_change = (y - x).abs().flatten(1).mean(1)  # [N]
    assert (per_image_change > 1e-3).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every image gets a gradient


def test_same_seed_same_augmentation():
    x = images()
    pipe = AugmentPipe(p=0.7)
    a = pipe(x, generator=torch.Generator().manual_seed(3))
    b = pipe(x, generator=torch.Generator().manual_seed(3))
    c = pipe(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_xflip_only_mirrors():
    x = images(n=32)
    y = AugmentPipe(only("xflip"), p=1.0)(x, generator=torch.Generator().manual_seed(0))
    flipped = 0
    for xi, yi in zip(x, y):
        same = torch.allclose(yi, xi, atol=1e-5)
        mirrored = torch.allclose(yi, xi.flip(-1), atol=1e-5)
        assert same or mirrored
        flipped += mirrored
    assert 4 <= flipped <= 28  # each image is mirrored with probability 1/2


def test_rotate90_only_gives_quarter_turns():
    x = images(n=16)
    y = AugmentPipe(only("rotate90"), p=1.0)(x, generator=torch.Generator().manual_seed(0))
    for xi, yi in zip(x, y):
        assert any(torch.allclose(yi, torch.rot90(xi, k, dims=(1, 2)), atol=1e-5) for k in range(4))


def test_integer_translation_moves_by_whole_pixels():
    # An interior pixel of a random image lands on the pixel grid again: the output is a
    # shifted copy (up to the reflected border).
    x = images(n=8, size=32)
    y = AugmentPipe(only("xint"), p=1.0)(x, generator=torch.Generator().manual_seed(0))
    for xi, yi in zip(x, y):
        ok = False
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                shifted = torch.roll(xi, (dy, dx), dims=(1, 2))
                if torch.allclose(yi[:, 8:24, 8:24], shifted[:, 8:24, 8:24], atol=1e-5):
                    ok = True
        assert ok


def test_geometry_keeps_a_flat_image_flat():
    # Reflection padding: no black borders appear, whatever the transform.
    x = torch.full((8, 3, 16, 16), 0.3)
    y = AugmentPipe(only(*GEOMETRY), p=1.0)(x)
    assert torch.allclose(y, x, atol=1e-5)


def test_brightness_adds_one_offset_per_image():
    x = images()
    y = AugmentPipe(only("brightness"), p=1.0)(x)
    d = (y - x).flatten(1)  # [N, 3HW]
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-5)
    assert d[:, 0].std() > 0.05  # offsets differ between images


def test_contrast_scales_about_zero():
    x = images()
    y = AugmentPipe(only("contrast"), p=1.0)(x)
    ratio = (y.flatten(1) / x.flatten(1))  # [N, 3HW]
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-3)


def test_luma_flip_negates_luma_or_keeps_it_and_keeps_chroma():
    x = images(n=16)
    y = AugmentPipe(only("lumaflip"), p=1.0)(x)
    luma_x, luma_y = x.mean(1), y.mean(1)  # [N, H, W]; luma axis is (1, 1, 1)/sqrt(3)
    chroma_x, chroma_y = x - luma_x[:, None], y - luma_y[:, None]
    assert torch.allclose(chroma_x, chroma_y, atol=1e-5)
    for lx, ly in zip(luma_x, luma_y):
        assert torch.allclose(ly, lx, atol=1e-5) or torch.allclose(ly, -lx, atol=1e-5)


@pytest.mark.parametrize("name", ["hue", "saturation"])
def test_hue_and_saturation_keep_luma(name):
    x = images()
    y = AugmentPipe(only(name), p=1.0)(x)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-3)


def test_hue_rotation_keeps_chroma_length():
    x = images()
    y = AugmentPipe(only("hue"), p=1.0)(x)
    cx = x - x.mean(1, keepdim=True)
    cy = y - y.mean(1, keepdim=True)
    assert torch.allclose(cx.norm(dim=1), cy.norm(dim=1), atol=1e-4)


def test_each_transform_fires_with_probability_p():
    # With p = 0.25, about a quarter of the images get a brightness offset.
    x = images(n=400, size=4)
    y = AugmentPipe(only("brightness"), p=0.25)(x, generator=torch.Generator().manual_seed(0))
    changed = ((y - x).abs().flatten(1).amax(1) > 1e-6).float().mean().item()
    assert 0.18 < changed < 0.32


def test_ada_p_moves_up_when_d_overfits_and_down_otherwise():
    step = 64 * 4 / (500 * 1000)  # batch 64, every 4 steps, ada_kimg 500
    assert adjust_ada_p(0.2, sign_mean=0.9, target=0.6, batch_images=256, ada_kimg=500) == pytest.approx(0.2 + step)
    assert adjust_ada_p(0.2, sign_mean=0.1, target=0.6, batch_images=256, ada_kimg=500) == pytest.approx(0.2 - step)
    assert adjust_ada_p(0.0, sign_mean=0.1, target=0.6, batch_images=256, ada_kimg=500) == 0.0  # clamped
    # From 0 to 1 in ada_kimg thousand images when D keeps overfitting.
    p = 0.0
    for _ in range(math.ceil(500_000 / 256)):
        p = adjust_ada_p(p, 1.0, 0.6, 256, 500)
    assert p == pytest.approx(1.0, abs=step)
