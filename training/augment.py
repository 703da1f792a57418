"""Adaptive discriminator augmentation (ADA): a differentiable augmentation pipe.

Follows the 'bgc' set of Karras et al., "Training Generative Adversarial Networks
with Limited Data" (2020): pixel blitting (xflip, rotate90, integer translation),
general geometric transforms (isotropic scale, rotation, anisotropic scale,
fractional translation) and colour transforms (brightness, contrast, luma flip,
hue rotation, saturation). Every transform is applied to each image independently
with probability ``p``; the discriminator sees both reals and fakes through the
same pipe, so as long as ``p`` stays below ~0.8 the augmentations do not leak into
the generator.

Geometry is one 3x3 homogeneous matrix per image applied with
``torch.nn.functional.affine_grid`` / ``grid_sample`` (reflection padding, bilinear);
colour is one 4x4 matrix per image acting on (r, g, b, 1). Both are differentiable
with respect to the image, which is what lets G learn through D(aug(G(z))).
NVIDIA's reference resamples through a 2x upsampling with a wavelet filter; we
use plain bilinear sampling, which is simpler and good enough at our resolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Matrix builders. All take/return batched [N, k, k] float tensors.


def _eye(n: int, k: int, device: torch.device) -> torch.Tensor:
    return torch.eye(k, device=device).expand(n, k, k).clone()


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """[N] offsets -> [N, 3, 3] translation matrices."""
    m = _eye(tx.shape[0], 3, tx.device)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """[N] factors -> [N, 3, 3] scaling matrices."""
    m = _eye(sx.shape[0], 3, sx.device)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """[N] angles (radians) -> [N, 3, 3] rotation matrices."""
    m = _eye(theta.shape[0], 3, theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0] = c
    m[:, 0, 1] = -s
    m[:, 1, 0] = s
    m[:, 1, 1] = c
    return m


def translate3d(t: torch.Tensor) -> torch.Tensor:
    """[N, 3] offsets -> [N, 4, 4] colour translation matrices."""
    m = _eye(t.shape[0], 4, t.device)
    m[:, :3, 3] = t
    return m


def scale3d(s: torch.Tensor) -> torch.Tensor:
    """[N, 3] factors -> [N, 4, 4] colour scaling matrices."""
    m = _eye(s.shape[0], 4, s.device)
    m[:, 0, 0] = s[:, 0]
    m[:, 1, 1] = s[:, 1]
    m[:, 2, 2] = s[:, 2]
    return m


def rotate3d(axis: tuple[float, float, float], theta: torch.Tensor) -> torch.Tensor:
    """Rotation by [N] angles about a fixed unit axis (Rodrigues) -> [N, 4, 4]."""
    n = theta.shape[0]
    x, y, z = axis
    k = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], device=theta.device)  # cross-product matrix
    c = torch.cos(theta).view(n, 1, 1)
    s = torch.sin(theta).view(n, 1, 1)
    r = torch.eye(3, device=theta.device) + s * k + (1 - c) * (k @ k)  # [N, 3, 3]
    m = _eye(n, 4, theta.device)
    m[:, :3, :3] = r
    return m


# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Which transforms are on (a multiplier on p; 0 disables) and their strengths.

    Defaults are the 'bgc' configuration of ADA.
    """

    xflip: float = 1.0  # horizontal flip
    rotate90: float = 1.0  # rotation by a multiple of 90 degrees
    xint: float = 1.0  # integer translation
    xint_max: float = 0.125  # max integer translation, fraction of image size
    scale: float = 1.0  # isotropic scaling
    rotate: float = 1.0  # arbitrary rotation
    aniso: float = 1.0  # anisotropic scaling
    xfrac: float = 1.0  # fractional translation
    scale_std: float = 0.2  # log2 standard deviation of isotropic scaling
    rotate_max: float = 1.0  # max rotation, fraction of a full turn /2 (1 = +-180 deg)
    aniso_std: float = 0.2  # log2 standard deviation of anisotropic scaling
    xfrac_std: float = 0.125  # std of fractional translation, fraction of image size
    brightness: float = 1.0
    contrast: float = 1.0
    lumaflip: float = 1.0
    hue: float = 1.0
    saturation: float = 1.0
    brightness_std: float = 0.2  # additive, in [-1, 1] image units
    contrast_std: float = 0.5  # log2 std
    hue_max: float = 1.0  # fraction of +-180 degrees
    saturation_std: float = 1.0  # log2 std


BGC = AugmentConfig()


class AugmentPipe(torch.nn.Module):
    """Augments a batch of images [N, C, H, W] in [-1, 1]; ``p`` is a float the training loop tunes.

    ``p`` is a plain Python float, not a buffer, so reading it never waits for the GPU.

    ``forward`` draws its randomness from the global torch RNG (so a training run
    seeded once is reproducible and resumable) or from ``generator`` if given.
    """

    def __init__(self, config: AugmentConfig = BGC, p: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.p = float(p)

    def _prob(self, n: int, mult: float, device, generator, p: float | None = None) -> torch.Tensor:
        """[N] bool mask: which images get this transform."""
        prob = (self.p if p is None else p) * mult
        return torch.rand(n, device=device, generator=generator) < prob

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """images [N, C, H, W] -> augmented [N, C, H, W] (same dtype and device)."""
        p = self.p
        if p <= 0:
            return images
        cfg = self.config
        n, c, h, w = images.shape
        dev = images.device

        def rand(*shape):
            return torch.rand(*shape, device=dev, generator=generator)

        def randn(*shape):
            return torch.randn(*shape, device=dev, generator=generator)

        def pick(mask, value, identity):
            return torch.where(mask, value, torch.full_like(value, identity))

        # --- geometry, in normalised coordinates ([-1, 1] across the image) --------------
        # G maps output coordinates to input coordinates (what grid_sample needs); composing
        # the inverse transforms in reverse order is unnecessary since every distribution
        # below is symmetric under inversion.
        geometry = any(m > 0 for m in (cfg.xflip, cfg.rotate90, cfg.xint, cfg.scale, cfg.rotate, cfg.aniso,
                                        cfg.xfrac))
        colour = c == 3 and any(m > 0 for m in (cfg.brightness, cfg.contrast, cfg.lumaflip, cfg.hue,
                                                 cfg.saturation))  # colour transforms are RGB-only
        G = _eye(n, 3, dev)
        if cfg.xflip > 0:
            flip = torch.floor(rand(n) * 2)
            flip = pick(self._prob(n, cfg.xflip, dev, generator), flip, 0)
            G = G @ scale2d(1 - 2 * flip, torch.ones_like(flip))
        if cfg.rotate90 > 0:
            quarter = torch.floor(rand(n) * 4)
            quarter = pick(self._prob(n, cfg.rotate90, dev, generator), quarter, 0)
            G = G @ rotate2d(-math.pi / 2 * quarter)
        if cfg.xint > 0:
            t = (rand(n, 2) * 2 - 1) * cfg.xint_max
            t = pick(self._prob(n, cfg.xint, dev, generator)[:, None].expand(n, 2), t, 0)
            # Round to whole pixels: one pixel is 2/W in normalised units.
            tx = torch.round(t[:, 0] * w) * 2 / w
            ty = torch.round(t[:, 1] * h) * 2 / h
            G = G @ translate2d(tx, ty)
        if cfg.scale > 0:
            s = torch.exp2(randn(n) * cfg.scale_std)
            s = pick(self._prob(n, cfg.scale, dev, generator), s, 1)
            G = G @ scale2d(s, s)
        # Rotation is applied twice (before and after anisotropic scaling), each time with
        # p_rot chosen so that P(at least one) = p, as in ADA.
        p_rot = 1 - math.sqrt(max(1 - min(p * cfg.rotate, 1.0), 0.0))
        if cfg.rotate > 0:
            theta = (rand(n) * 2 - 1) * math.pi * cfg.rotate_max
            theta = pick(self._prob(n, 1.0, dev, generator, p=p_rot), theta, 0)
            G = G @ rotate2d(-theta)
        if cfg.aniso > 0:
            s = torch.exp2(randn(n) * cfg.aniso_std)
            s = pick(self._prob(n, cfg.aniso, dev, generator), s, 1)
            G = G @ scale2d(s, 1 / s)
        if cfg.rotate > 0:
            theta = (rand(n) * 2 - 1) * math.pi * cfg.rotate_max
            theta = pick(self._prob(n, 1.0, dev, generator, p=p_rot), theta, 0)
            G = G @ rotate2d(-theta)
        if cfg.xfrac > 0:
            t = randn(n, 2) * cfg.xfrac_std * 2  # *2: fraction of size -> normalised units
            t = pick(self._prob(n, cfg.xfrac, dev, generator)[:, None].expand(n, 2), t, 0)
            G = G @ translate2d(t[:, 0], t[:, 1])

        if geometry:
            grid = F.affine_grid(G[:, :2, :].to(images.dtype), [n, c, h, w], align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # --- colour: 4x4 matrix on homogeneous (r, g, b, 1) ----------------------------------
        if not colour:
            return images
        C = _eye(n, 4, dev)
        luma_axis = (1 / math.sqrt(3),) * 3
        if cfg.brightness > 0:
            b = randn(n) * cfg.brightness_std
            b = pick(self._prob(n, cfg.brightness, dev, generator), b, 0)
            C = translate3d(b[:, None].expand(n, 3)) @ C
        if cfg.contrast > 0:
            s = torch.exp2(randn(n) * cfg.contrast_std)
            s = pick(self._prob(n, cfg.contrast, dev, generator), s, 1)
            C = scale3d(s[:, None].expand(n, 3)) @ C
        v = torch.tensor([*luma_axis, 0.0], device=dev)  # [4] luma axis, homogeneous
        vvt = torch.outer(v, v)  # [4, 4] projector onto the luma axis
        if cfg.lumaflip > 0:
            # Householder reflection across the plane orthogonal to the luma axis.
            f = torch.floor(rand(n) * 2)
            f = pick(self._prob(n, cfg.lumaflip, dev, generator), f, 0)
            C = (torch.eye(4, device=dev) - 2 * vvt * f.view(n, 1, 1)) @ C
        if cfg.hue > 0:
            theta = (rand(n) * 2 - 1) * math.pi * cfg.hue_max
            theta = pick(self._prob(n, cfg.hue, dev, generator), theta, 0)
            C = rotate3d(luma_axis, theta) @ C
        if cfg.saturation > 0:
            s = torch.exp2(randn(n) * cfg.saturation_std)
            s = pick(self._prob(n, cfg.saturation, dev, generator), s, 1)
            # Keep the luma component, scale the chroma components.
            sat = vvt + (torch.eye(4, device=dev) - vvt) * s.view(n, 1, 1)  # [N, 4, 4]
            sat[:, 3, 3] = 1  # the homogeneous coordinate is not chroma
            C = sat @ C

        C = C.to(images.dtype)
        flat = images.reshape(n, 3, h * w)  # [N, 3, HW]
        flat = C[:, :3, :3] @ flat + C[:, :3, 3:]
        return flat.reshape(n, 3, h, w)


def adjust_ada_p(p: float, sign_mean: float, target: float, batch_images: int, ada_kimg: float) -> float:
    """One ADA update of p from the overfitting heuristic r_t = E[sign(D(real))].

    ``batch_images`` is how many images went through D since the last update; p moves
    by at most that many images' worth of ``1 / (ada_kimg * 1000)``, so it can go from
    0 to 1 in ``ada_kimg`` thousand images. It rises when r_t > target (D is
    overconfident on reals, i.e. overfitting) and falls otherwise, clamped at 0.
    """
    step = math.copysign(1.0, sign_mean - target) * batch_images / (ada_kimg * 1000)
    if sign_mean == target:
        step = 0.0
    return max(p + step, 0.0)
