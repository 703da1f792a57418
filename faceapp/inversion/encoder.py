"""e4e encoder: an IR-SE ResNet with a feature pyramid whose heads predict W+ codes.

Architecture, module names and parameter/buffer names follow the public encoder4editing project
(Tov et al. 2021; models/encoders/psp_encoders.py `Encoder4Editing`, helpers.py `bottleneck_IR_SE`,
`GradualStyleBlock`), so the encoder half of the official `e4e_ffhq_encode.pt` loads into this class
with strict=True (see faceapp.inversion.e4e_import, which imports this module, never the reverse).
The official network and our small CPU encoders differ only in their kwargs:

    E = Encoder4Editing(num_ws=18)                                   # official FFHQ e4e (256 px input)
    E = Encoder4Editing(num_ws=12, img_resolution=128, blocks=[1, 2, 2, 1],
                        channels=[16, 32, 64, 128], head_channels=128)   # the demo preset: 8.6 M parameters
    ws = E(img)  # img [N, 3, H, W] in [-1, 1] -> ws [N, num_ws, w_dim], w_avg included

How the codes are made (as in e4e): the body's stage outputs c1 (R/4), c2 (R/8), c3 (R/16) form a
feature pyramid (p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1)). Head 0 reads c3 and
gives the base code w; head i >= 1 gives a delta for W+ layer i, read from c3 (i < coarse_ind),
p2 (i < middle_ind) or p1. ws[:, i] = w_avg[i] + w + delta_i. During training only the first
`progressive_stage` deltas are active (progressive delta unlocking); None means all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from faceapp.errors import CheckpointError, FaceAppError
from faceapp.stylegan.checkpoint import register_network_class
from faceapp.stylegan.networks import _jsonable

__all__ = [
    "Encoder4Editing",
    "EqualLinear",
    "GradualStyleBlock",
    "grow_encoder",
    "SEModule",
    "BottleneckIR",
    "upsample_add",
    "load_encoder",
    "register_encoder_class",
]

# The official FFHQ e4e: IR-SE-50 (units per stage) and its stage widths.
E4E_BLOCKS = (3, 4, 14, 3)
E4E_CHANNELS = (64, 128, 256, 512)


class EqualLinear(nn.Module):
    """rosinality's EqualLinear without activation: y = x @ (W * lr_mul / sqrt(in)).T + b * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_dim], float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, lr_mul={self.lr_mul}"


class SEModule(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(mean over H, W)))) with 1x1 convs."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))  # [N, C, 1, 1]
        return x * s


class BottleneckIR(nn.Module):
    """ArcFace's improved residual unit: BN, conv3x3, PReLU, conv3x3 (stride), BN [, SE] + shortcut.

    The shortcut is a strided identity (MaxPool2d(1, stride)) when the width stays the same, else a
    strided 1x1 conv + BN.
    """

    def __init__(self, in_channel: int, depth: int, stride: int, se_reduction: int | None = None):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        layers = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se_reduction is not None:
            layers.append(SEModule(depth, se_reduction))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """Map a [N, in_c, s, s] feature map to a code [N, out_dim]: log2(s) stride-2 conv3x3 + LeakyReLU(0.01)
    down to 1x1, then an EqualLinear."""

    def __init__(self, in_c: int, out_c: int, spatial: int, out_dim: int | None = None):
        super().__init__()
        if spatial < 2 or spatial & (spatial - 1):
            raise FaceAppError(f"a style head needs a power-of-two feature size >= 2, got {spatial}")
        self.out_c = out_c
        self.spatial = spatial
        num_pools = int(math.log2(spatial))
        modules: list[nn.Module] = [nn.Conv2d(in_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(num_pools - 1):
            modules += [nn.Conv2d(out_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*modules)
        self.linear = EqualLinear(out_c, out_c if out_dim is None else out_dim, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)  # [N, out_c, 1, 1]
        return self.linear(x.reshape(-1, self.out_c))  # [N, out_dim]


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize x (align_corners=True) to y's size and add y (the FPN top-down step)."""
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """e4e encoder: image -> W+ codes (a base w plus per-layer deltas, plus w_avg)."""

    def __init__(
        self,
        num_ws: int,  # W+ layers to predict: G.num_ws (18 for a 1024 px StyleGAN2).
        w_dim: int = 512,  # Dimensionality of w.
        img_resolution: int = 256,  # Input size the network is built for (power of two >= 16); other sizes are resized.
        img_channels: int = 3,  # Input channels.
        blocks: Sequence[int] = E4E_BLOCKS,  # Residual units in each of the 4 stages ((3, 4, 14, 3) = IR-SE-50).
        channels: Sequence[int] = E4E_CHANNELS,  # Width of each stage; the stem has channels[0].
        head_channels: int | None = None,  # Conv width of the style heads, None = w_dim (as e4e).
        unit: str = "ir_se",  # 'ir_se' (e4e) or 'ir' (no squeeze-and-excitation).
        se_reduction: int = 16,  # Squeeze-and-excitation channel reduction.
        coarse_ind: int = 3,  # Heads [1, coarse_ind) read c3, [coarse_ind, middle_ind) p2, the rest p1.
        middle_ind: int = 7,
        progressive_stage: int | None = None,  # Deltas in use (layers 1..stage), None = all (inference).
    ):
        super().__init__()
        register_encoder_class()  # an encoder that exists can be saved (see register_encoder_class)
        blocks, channels = [int(b) for b in blocks], [int(c) for c in channels]
        if len(blocks) != 4 or len(channels) != 4 or min(blocks) < 1 or min(channels) < 1:
            raise FaceAppError(f"blocks {blocks} and channels {channels} must each list 4 positive numbers")
        if img_resolution < 16 or img_resolution & (img_resolution - 1):
            raise FaceAppError(f"img_resolution is {img_resolution}; the encoder needs a power of two >= 16")
        if unit not in ("ir_se", "ir"):
            raise FaceAppError(f"unit is {unit!r}; use 'ir_se' or 'ir'")
        if num_ws < 1 or not (1 <= coarse_ind <= middle_ind):
            raise FaceAppError(f"need num_ws >= 1 and 1 <= coarse_ind <= middle_ind (got {num_ws}, "
                               f"{coarse_ind}, {middle_ind})")
        head_channels = w_dim if head_channels is None else int(head_channels)
        self.init_kwargs = _jsonable(dict(
            num_ws=num_ws, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, blocks=blocks,
            channels=channels, head_channels=head_channels, unit=unit, se_reduction=se_reduction,
            coarse_ind=coarse_ind, middle_ind=middle_ind, progressive_stage=progressive_stage,
        ))
        self.num_ws = num_ws
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.style_count = num_ws
        self.coarse_ind = coarse_ind
        self.middle_ind = middle_ind
        self.progressive_stage = self._check_stage(progressive_stage)

        self.input_layer = nn.Sequential(
            nn.Conv2d(img_channels, channels[0], (3, 3), 1, 1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.PReLU(channels[0]),
        )
        se = se_reduction if unit == "ir_se" else None
        units = []
        in_c = channels[0]
        for depth, count in zip(channels, blocks):
            # The first unit of a stage halves the resolution (as get_block(..., stride=2)).
            units.append(BottleneckIR(in_c, depth, 2, se_reduction=se))
            units += [BottleneckIR(depth, depth, 1, se_reduction=se) for _ in range(count - 1)]
            in_c = depth
        self.body = nn.Sequential(*units)
        # Indices of the last unit of stages 2, 3 and 4 (6, 20, 23 in IR-SE-50).
        ends = [sum(blocks[: k + 1]) - 1 for k in range(4)]
        self.tap_c1, self.tap_c2, self.tap_c3 = ends[1], ends[2], ends[3]

        top = channels[3]
        self.styles = nn.ModuleList()
        for i in range(num_ws):
            # Feature size the head reads: c3 = R/16, p2 = R/8, p1 = R/4.
            spatial = img_resolution // (16 if i < coarse_ind else 8 if i < middle_ind else 4)
            self.styles.append(GradualStyleBlock(top, head_channels, spatial, out_dim=w_dim))
        self.latlayer1 = nn.Conv2d(channels[2], top, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(channels[1], top, kernel_size=1, stride=1, padding=0)
        # Average w of the generator, added to every code (e4e's latent_avg). [num_ws, w_dim]
        self.register_buffer("w_avg", torch.zeros([num_ws, w_dim]))

    # -- progressive training -------------------------------------------------------------------
    def _check_stage(self, stage: int | None) -> int | None:
        if stage is not None and not (0 <= int(stage) <= self.num_ws - 1):
            raise FaceAppError(f"progressive_stage {stage} is outside 0..{self.num_ws - 1} (or None for all)")
        return None if stage is None or int(stage) == self.num_ws - 1 else int(stage)

    def set_progressive_stage(self, stage: int | None) -> None:
        """Use the deltas of W+ layers 1..stage (0 = the base w only; None = all, as at inference).

        Recorded in init_kwargs, so a snapshot saved mid-training rebuilds with the same stage.
        """
        self.progressive_stage = self._check_stage(stage)
        self.init_kwargs["progressive_stage"] = self.progressive_stage

    @property
    def num_active_deltas(self) -> int:
        return self.num_ws - 1 if self.progressive_stage is None else self.progressive_stage

    # -- forward --------------------------------------------------------------------------------
    def prepare(self, img: torch.Tensor) -> torch.Tensor:
        """img [N, C, H, W] -> [N, C, R, R] at this encoder's resolution (antialiased resize if needed)."""
        if img.ndim != 4 or img.shape[1] != self.img_channels:
            raise FaceAppError(
                f"the encoder takes images [N, {self.img_channels}, H, W] in [-1, 1]; got shape {list(img.shape)}"
            )
        if tuple(img.shape[2:]) != (self.img_resolution, self.img_resolution):
            img = F.interpolate(img, size=(self.img_resolution, self.img_resolution), mode="bilinear",
                                align_corners=False, antialias=True)
        return img

    def features(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """img [N, C, R, R] -> (c1 [N, ch1, R/4, R/4], c2 [N, ch2, R/8, R/8], c3 [N, ch3, R/16, R/16])."""
        x = self.input_layer(img)
        c1 = c2 = None
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == self.tap_c1:
                c1 = x
            elif i == self.tap_c2:
                c2 = x
        return c1, c2, x

    def codes(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """img [N, C, H, W] in [-1, 1] -> (w [N, w_dim], deltas [N, num_ws, w_dim]), both without w_avg.

        deltas[:, 0] and the deltas of layers beyond the progressive stage are zero.
        """
        c1, c2, c3 = self.features(self.prepare(img))
        w = self.styles[0](c3)  # [N, w_dim]
        zero = torch.zeros_like(w)
        deltas = [zero]
        features = c3
        p2 = None
        for i in range(1, self.num_ws):
            if i > self.num_active_deltas:
                deltas.append(zero)
                continue
            if i == self.coarse_ind:
                p2 = features = upsample_add(c3, self.latlayer1(c2))  # FPN middle level
            elif i == self.middle_ind:
                if p2 is None:  # coarse_ind == middle_ind
                    p2 = upsample_add(c3, self.latlayer1(c2))
                features = upsample_add(p2, self.latlayer2(c1))  # FPN fine level
            deltas.append(self.styles[i](features))
        return w, torch.stack(deltas, dim=1)  # [N, w_dim], [N, num_ws, w_dim]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [N, C, H, W] in [-1, 1] -> ws [N, num_ws, w_dim] (w_avg + w + per-layer deltas)."""
        w, deltas = self.codes(img)
        return self.w_avg.to(w.dtype).unsqueeze(0) + w.unsqueeze(1) + deltas

    def extra_repr(self) -> str:
        return (f"num_ws={self.num_ws}, w_dim={self.w_dim}, img_resolution={self.img_resolution}, "
                f"progressive_stage={self.progressive_stage}")


def grow_encoder(E: Encoder4Editing, num_ws: int) -> Encoder4Editing:
    """A copy of E that predicts `num_ws` W+ layers (more than E does), for a generator grown to a higher resolution.

    The new heads start as copies of E's last one, so at first the codes are E's with the last layer repeated
    (what a grown generator takes for E's codes); they read the fine pyramid level like E's last head.
    """
    if num_ws < E.num_ws:
        raise FaceAppError(f"an encoder of {E.num_ws} W+ layers cannot grow to {num_ws}")
    kwargs = dict(E.init_kwargs)
    kwargs.update(num_ws=num_ws, progressive_stage=None)
    if E.middle_ind > E.num_ws - 1:  # E's last head read p2 or c3: so do the new ones
        kwargs["middle_ind"] = max(kwargs["middle_ind"], num_ws)
        if E.coarse_ind > E.num_ws - 1:
            kwargs["coarse_ind"] = max(kwargs["coarse_ind"], num_ws)
    big = Encoder4Editing(**kwargs)
    own = big.state_dict()
    for k, v in E.state_dict().items():
        if k != "w_avg":
            own[k] = v.detach().clone()
    last = E.num_ws - 1
    for i in range(E.num_ws, num_ws):
        for k, v in E.styles[last].state_dict().items():
            own[f"styles.{i}.{k}"] = v.detach().clone()
    w_avg = E.w_avg.detach()
    own["w_avg"] = torch.cat([w_avg, w_avg[-1:].expand(num_ws - E.num_ws, -1)], dim=0)
    big.load_state_dict(own)
    big.set_progressive_stage(E.progressive_stage)
    return big.train(E.training)


def register_encoder_class() -> None:
    """Let faceapp's checkpoint format store and rebuild `Encoder4Editing` (idempotent, cheap).

    Called by `Encoder4Editing.__init__` (so any encoder built in this process can be saved) and by
    `load_encoder`; call it yourself before `checkpoint.load_networks` on a file holding an encoder.
    Nothing registers at import time.
    """
    register_network_class(Encoder4Editing)


def load_encoder(path, device: torch.device | str = "cpu") -> Encoder4Editing:
    """The Encoder4Editing stored in a faceapp checkpoint (its net 'encoder', or its only net), eval mode.

    For the official `e4e_ffhq_encode.pt` use `faceapp.inversion.e4e_import.import_e4e_checkpoint`.

    Raises:
        CheckpointError: not a faceapp checkpoint, or it holds no encoder.
    """
    from faceapp.stylegan.checkpoint import load_networks, read_header

    register_encoder_class()
    nets = read_header(path)["networks"]
    name = "encoder" if "encoder" in nets else next(iter(nets), None)
    if name is None or nets[name]["class"] != "Encoder4Editing":
        held = ", ".join(f"{k} ({v['class']})" for k, v in nets.items()) or "nothing"
        raise CheckpointError(f"{path} holds no Encoder4Editing (it has: {held})")
    return load_networks(path, device=device, names=[name])[name]
