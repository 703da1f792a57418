"""The detail stage: a cascaded super-resolution network after the generator.

A small generator renders faces at 64 px; a difference of two such renders carries shading, not wrinkles or
grey hair. `DetailNet` maps a render [N,3,r,r] to [N,3,r*scale,r*scale], trained (training/train_detail.py) on
pairs whose input is G's render of an encoded training photo (so it knows G's domain, artefacts included) and
whose target is that real photo at the higher resolution. It adds the detail a real face of that look has at
that size: on an aged render, wrinkles and grey strands; on a young one, smooth skin. The edit then goes
back into the photo as detail(G(ws')) - detail(G(ws)) (faceapp.align.paste_difference), where the detail
both renders share cancels and the edit's own detail stays.

As in cascaded diffusion and StyleGAN-XL's super-resolution stages, the network is conditioned on the
low-resolution image only; its output is the bicubic upsampling of the input plus a learned residual, so an
untrained (zero-initialised last layer) DetailNet is exactly bicubic upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DetailNet"]


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class DetailNet(nn.Module):
    """Super-resolution stage: render [N,3,r,r] in [-1,1] -> [N,3,r*scale,r*scale] in ~[-1,1].

    Args:
        in_resolution: the generator's resolution r (the network itself is fully convolutional).
        scale: upsampling factor, a power of two (2: 64 -> 128 px).
        channels: width of the residual blocks at the input resolution.
        blocks: number of residual blocks at the input resolution.
        up_channels: width after each x2 pixel-shuffle step.
    """

    def __init__(self, in_resolution: int = 64, scale: int = 2, channels: int = 40, blocks: int = 4,
                 up_channels: int = 32):
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        self.init_kwargs = dict(in_resolution=int(in_resolution), scale=int(scale), channels=int(channels),
                                blocks=int(blocks), up_channels=int(up_channels))
        self.in_resolution, self.scale = int(in_resolution), int(scale)
        self.img_resolution = self.in_resolution * self.scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(channels) for _ in range(blocks)])
        ups, c = [], channels
        for _ in range(scale.bit_length() - 1):
            ups += [nn.Conv2d(c, up_channels * 4, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2)]
            c = up_channels
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as plain bicubic upsampling
        nn.init.zeros_(self.tail.bias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [N,3,r,r] in [-1,1] -> [N,3,r*scale,r*scale]."""
        x = img.contiguous(memory_format=torch.channels_last)
        h = self.head(x)
        h = self.up(self.body(h) + h)
        base = F.interpolate(img, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.tail(h)
