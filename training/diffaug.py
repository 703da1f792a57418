"""Differentiable augmentation (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020): the same random colour / translation / cutout applied to every image D sees, real or fake,
differentiably, so G's gradients pass through it. Policy ``"color,translation,cutout"`` as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POLICIES = ("color", "translation", "cutout")


def _rand(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """[n, 1, 1, 1] uniform in [0, 1) on x's device."""
    return torch.rand([n, 1, 1, 1], generator=generator, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5); x [N, C, H, W] in [-1, 1]."""
    n = x.shape[0]
    x = x + (_rand(n, x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, x, generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(n, x, generator) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size (integer pixels), zero-filled."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, [n, 1, 1], generator=generator, device=x.device)
    tx = torch.randint(-sw, sw + 1, [n, 1, 1], generator=generator, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + ty + 1, 0, h + 1)  # [n, h, w] indices into the 1-px zero-padded image
    gx = torch.clamp(gx[None] + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # [n, c, h+2, w+2]
    flat = padded.flatten(2)  # [n, c, (h+2)(w+2)]
    idx = (gy * (w + 2) + gx).flatten(1)  # [n, h*w]
    return flat.gather(2, idx[:, None].expand(-1, x.shape[1], -1)).view_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random square of ``ratio`` times the image size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), [n, 1, 1], generator=generator, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), [n, 1, 1], generator=generator, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    top, left = oy - ch // 2, ox - cw // 2  # the square may hang over the border (as in the paper)
    inside = (gy[None] >= top) & (gy[None] < top + ch) & (gx[None] >= left) & (gx[None] < left + cw)  # [n, h, w]
    return x * (~inside)[:, None].to(x.dtype)


class DiffAugment(nn.Module):
    """Applies the comma-separated ``policy`` (any of color, translation, cutout) to a batch, in that order."""

    def __init__(self, policy: str = "color,translation,cutout") -> None:
        super().__init__()
        parts = tuple(p for p in policy.split(",") if p)
        unknown = set(parts) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown DiffAugment policies {sorted(unknown)}; use any of {', '.join(POLICIES)}")
        self.policy = parts

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x [N, C, H, W] in [-1, 1] -> the augmented batch, same shape (differentiable in x)."""
        for p in self.policy:
            x = {"color": color, "translation": translation, "cutout": cutout}[p](x, generator=generator)
        return x

    def extra_repr(self) -> str:
        return ",".join(self.policy)
