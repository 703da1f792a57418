"""StyleGAN2 generator (mapping + synthesis) and residual discriminator.

Constructor signatures, module names and parameter/buffer names mirror NVIDIA's
stylegan2-ada-pytorch (training/networks.py): the same kwargs build a network
whose state_dict matches an official one key for key and shape for shape.
The FFHQ config-f 1024 network and our small demo networks differ only in
their kwargs:

    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=32768, channel_max=512,
                                        num_fp16_res=4, conv_clamp=256))
    ws = G.mapping(z, c, truncation_psi=0.7)   # [N, num_ws, w_dim]
    img = G.synthesis(ws, noise_mode='const')  # [N, 3, 1024, 1024], about [-1, 1]

Every network records its constructor kwargs in `init_kwargs` (JSON-serialisable),
so `type(net)(**net.init_kwargs)` rebuilds it.
"""

from __future__ import annotations

import copy
import math

import torch

from faceapp.cuda import upfirdn2d
from faceapp.errors import FaceAppError
from faceapp.stylegan.fast_cpu import use_fast_path
from faceapp.stylegan.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MinibatchStdLayer,
    SynthesisLayer,
    ToRGBLayer,
)
from faceapp.stylegan.ops import check_shape, make_filter, normalize_2nd_moment

__all__ = [
    "MappingNetwork",
    "SynthesisBlock",
    "SynthesisNetwork",
    "Generator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "Discriminator",
    "mix_styles",
    "sample_mixing_cutoff",
    "channels_for",
]


def _jsonable(value):
    """Deep copy of a kwargs value with tuples turned into lists (JSON round-trips equal)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return copy.deepcopy(value)


def _base_dtype(t: torch.Tensor) -> torch.dtype:
    # Networks compute in fp32 (fp16 blocks aside); fp64 inputs stay fp64 for gradient checks.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_resolution(img_resolution: int) -> int:
    if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
        raise FaceAppError(
            f"img_resolution is {img_resolution}; StyleGAN2 needs a power of two >= 4 (e.g. 128, 256, 1024)."
        )
    return int(math.log2(img_resolution))


def channels_for(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> int:
    """Feature channels at `resolution`: min(channel_base // resolution, channel_max)."""
    return min(channel_base // resolution, channel_max)


def _fp16_resolution(img_resolution_log2: int, num_fp16_res: int) -> int:
    # The num_fp16_res highest resolutions use fp16; 4x4 never does.
    return max(2 ** (img_resolution_log2 + 1 - num_fp16_res), 8)


# ---------------------------------------------------------------------------------------------
# Generator.


class MappingNetwork(torch.nn.Module):
    """z (+ label c) -> w, broadcast to num_ws copies, with truncation toward w_avg."""

    def __init__(
        self,
        z_dim: int,  # Latent z dimensionality, 0 = no latent.
        c_dim: int,  # Label c dimensionality, 0 = no label.
        w_dim: int,  # Intermediate latent w dimensionality.
        num_ws: int | None,  # Number of ws to output, None = return [N, w_dim] without broadcast.
        num_layers: int = 8,  # Number of fully connected layers.
        embed_features: int | None = None,  # Label embedding size, None = w_dim.
        layer_features: int | None = None,  # Hidden layer size, None = w_dim.
        activation: str = "lrelu",  # Activation function.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of the mapping layers.
        w_avg_beta: float | None = 0.995,  # Decay of the w_avg moving average, None = no tracking.
    ):
        super().__init__()
        self.init_kwargs = _jsonable(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
            embed_features=embed_features, layer_features=layer_features, activation=activation,
            lr_multiplier=lr_multiplier, w_avg_beta=w_avg_beta,
        ))
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)

        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """Map latents to ws.

        Args:
            z: [N, z_dim] (ignored when z_dim == 0).
            c: [N, c_dim] labels (ignored when c_dim == 0).
            truncation_psi: 1 = no truncation, 0 = every w becomes w_avg.
            truncation_cutoff: truncate only the first this-many ws, None = all.
            update_emas: move w_avg toward this batch's mean w (training only).

        Returns:
            ws [N, num_ws, w_dim], or w [N, w_dim] when num_ws is None.
        """
        x = None
        if self.z_dim > 0:
            check_shape(z, [None, self.z_dim], "z")
            x = normalize_2nd_moment(z.to(_base_dtype(z)))
        if self.c_dim > 0:
            check_shape(c, [None, self.c_dim], "c")
            y = normalize_2nd_moment(self.embed(c.to(_base_dtype(c))))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # [N, w_dim] after the last layer

        if update_emas and self.w_avg_beta is not None:
            # In w_avg's dtype whatever autocast made x: lerp needs one dtype.
            self.w_avg.copy_(x.detach().to(self.w_avg.dtype).mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise FaceAppError("this mapping network tracks no w_avg, so truncation_psi must be 1.")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: [upsampling conv0,] conv1, toRGB."""

    def __init__(
        self,
        in_channels: int,  # Input channels, 0 = first (4x4) block that starts from `const`.
        out_channels: int,  # Output channels.
        w_dim: int,  # Dimensionality of w.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of image channels.
        is_last: bool,  # Last block (always has a toRGB)?
        architecture: str = "skip",  # 'orig', 'skip' or 'resnet'.
        resample_filter=(1, 3, 3, 1),  # Low-pass filter used when upsampling.
        conv_clamp: float | None = None,  # Clamp conv outputs to +-X, None = no clamp.
        use_fp16: bool = False,  # Run this block in fp16 (CUDA only)?
        fp16_channels_last: bool = False,  # Use channels_last with fp16?
        **layer_kwargs,  # Passed to SynthesisLayer (kernel_size, use_noise, activation, ...).
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise FaceAppError(f"architecture is {architecture!r}; use 'orig', 'skip' or 'resnet'.")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1

        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1

        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1

        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                force_fp32: bool = False, fused_modconv: bool | None = None,
                noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, C_in, R/2, R/2] (None for 4x4), img [N, 3, R/2, R/2] or None,
        ws [N, num_conv + num_torgb, w_dim] -> (x [N, C_out, R, R], img [N, 3, R, R])."""
        check_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim], f"ws of block b{self.resolution}")
        w_iter = iter(ws.unbind(dim=1))
        # fp16 only pays off (and is only well supported) on CUDA; CPU always runs fp32.
        on_cuda = ws.device.type == "cuda"
        use_fp16 = self.use_fp16 and not force_fp32 and on_cuda
        dtype = torch.float16 if use_fp16 else _base_dtype(ws)
        fmt = torch.channels_last if (self.channels_last and use_fp16) else torch.contiguous_format
        fast = use_fast_path(ws)
        if fast:
            fmt = torch.channels_last  # oneDNN's own layout; the layers keep it
        elif fused_modconv is None:
            # Grouped conv is faster for inference; training prefers shared weights.
            fused_modconv = (not self.training) and (dtype != torch.float16 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [N, C, 4, 4]
            x = x.contiguous(memory_format=fmt)
        else:
            check_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2],
                        f"input of block b{self.resolution}")
            x = x.to(dtype=dtype, memory_format=fmt)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)

        if img is not None:
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            if fast:  # img is a fresh tensor here; SynthesisNetwork returns it contiguous
                img = img.add_(y) if img is not None else y
            else:
                y = y.to(dtype=_base_dtype(ws), memory_format=torch.contiguous_format)
                img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class SynthesisNetwork(torch.nn.Module):
    """ws -> image: blocks b4, b8, ..., b{img_resolution}."""

    def __init__(
        self,
        w_dim: int,  # Dimensionality of w.
        img_resolution: int,  # Output resolution (power of two).
        img_channels: int,  # Number of image channels.
        channel_base: int = 32768,  # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max: int = 512,  # Maximum number of channels.
        num_fp16_res: int = 0,  # Use fp16 (on CUDA) for the N highest resolutions.
        **block_kwargs,  # Passed to SynthesisBlock (architecture, conv_clamp, resample_filter, ...).
    ):
        log2 = _check_resolution(img_resolution)
        super().__init__()
        self.init_kwargs = _jsonable(dict(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, **block_kwargs,
        ))
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: channels_for(r, channel_base, channel_max) for r in self.block_resolutions}
        fp16_resolution = _fp16_resolution(log2, num_fp16_res)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last,
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            # Consecutive blocks share a w: toRGB of block k uses the same w as conv0 of block k+1.
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False,
                fused_modconv: bool | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> img [N, img_channels, img_resolution, img_resolution], about [-1, 1].

        noise_mode: 'const' = the stored noise_const buffers (deterministic), 'random' = fresh
        noise per call, 'none' = no noise. force_fp32 disables fp16 blocks on CUDA.
        """
        check_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        ws = ws.to(_base_dtype(ws))
        img = self.run_blocks(ws, force_fp32=force_fp32, fused_modconv=fused_modconv, noise_mode=noise_mode)
        return img.contiguous()

    def run_blocks(self, ws: torch.Tensor, upto: int | None = None, **block_kwargs) -> torch.Tensor:
        """The block loop: ws [N, num_ws, w_dim] -> the running image after block b{upto} (None = the last
        block), [N, img_channels, upto, upto], in whatever memory format the blocks left it.

        Each block takes its slice of ws (consecutive blocks share one w); block_kwargs (noise_mode,
        force_fp32, fused_modconv) go to every block. `forward` is this plus the checks; `upto` is
        faceapp.stylegan.preview's early stop (blocks without a toRGB return no image: see
        preview_resolutions).
        """
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, **block_kwargs)
            if res == upto:
                break
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(torch.nn.Module):
    """StyleGAN2 generator: `mapping` (z, c -> ws) followed by `synthesis` (ws -> image)."""

    def __init__(
        self,
        z_dim: int,  # Latent z dimensionality.
        c_dim: int,  # Label dimensionality, 0 = unconditional.
        w_dim: int,  # Intermediate latent w dimensionality.
        img_resolution: int,  # Output resolution.
        img_channels: int,  # Number of image channels.
        mapping_kwargs: dict | None = None,  # Passed to MappingNetwork.
        synthesis_kwargs: dict | None = None,  # Passed to SynthesisNetwork.
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = _jsonable(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs,
        ))
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **mapping_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, noise_mode: str = "const",
                force_fp32: bool = False) -> torch.Tensor:
        """z [N, z_dim], c [N, c_dim] or None -> img [N, img_channels, R, R]."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)


def mix_styles(ws_a: torch.Tensor, ws_b: torch.Tensor, cutoff: int | torch.Tensor) -> torch.Tensor:
    """Style mixing: ws [:cutoff] from `ws_a`, ws [cutoff:] from `ws_b`.

    Args:
        ws_a, ws_b: [N, num_ws, w_dim].
        cutoff: an int for the whole batch, or a tensor [N] with one cutoff per sample
            (num_ws = no mixing for that sample).

    Returns:
        [N, num_ws, w_dim].
    """
    check_shape(ws_b, list(ws_a.shape), "ws_b")
    idx = torch.arange(ws_a.shape[1], device=ws_a.device)  # [num_ws]
    cutoff = torch.as_tensor(cutoff, device=ws_a.device).reshape(-1, 1)  # [N or 1, 1]
    take_a = (idx.unsqueeze(0) < cutoff).unsqueeze(-1)  # [N or 1, num_ws, 1]
    return torch.where(take_a, ws_a, ws_b)


def sample_mixing_cutoff(batch_size: int, num_ws: int, prob: float, device=None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample mixing cutoffs for training: with probability `prob` uniform in [1, num_ws),
    otherwise num_ws (no mixing). Returns a LongTensor [batch_size] for mix_styles()."""
    rand_dev = generator.device if generator is not None else device
    cut = torch.randint(1, max(num_ws, 2), [batch_size], device=rand_dev, generator=generator)
    mix = torch.rand([batch_size], device=rand_dev, generator=generator) < prob
    cut = torch.where(mix, cut, torch.full_like(cut, num_ws))
    return cut.to(device) if device is not None else cut


# ---------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: [fromrgb,] conv0, downsampling conv1, [skip]."""

    def __init__(
        self,
        in_channels: int,  # Input channels, 0 = first block (reads the image).
        tmp_channels: int,  # Channels of conv0.
        out_channels: int,  # Output channels.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of image channels.
        first_layer_idx: int,  # Index of this block's first layer (for freeze_layers).
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        activation: str = "lrelu",  # Activation function.
        resample_filter=(1, 3, 3, 1),  # Low-pass filter used when downsampling.
        conv_clamp: float | None = None,  # Clamp conv outputs to +-X, None = no clamp.
        use_fp16: bool = False,  # Run this block in fp16 (CUDA only)?
        fp16_channels_last: bool = False,  # Use channels_last with fp16?
        freeze_layers: int = 0,  # Freeze-D: the first this-many layers are buffers, not parameters.
    ):
        if in_channels not in (0, tmp_channels):
            raise FaceAppError(f"in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}.")
        if architecture not in ("orig", "skip", "resnet"):
            raise FaceAppError(f"architecture is {architecture!r}; use 'orig', 'skip' or 'resnet'.")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", make_filter(resample_filter))

        self.num_layers = 0

        def trainable() -> bool:
            layer_idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return layer_idx >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, trainable=trainable(),
                                 resample_filter=resample_filter, **common)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None,
                force_fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, C, R, R] (None for the first block), img [N, 3, R, R] -> (x [N, C', R/2, R/2], img)."""
        ref = x if x is not None else img
        use_fp16 = self.use_fp16 and not force_fp32 and ref.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else _base_dtype(ref)
        fmt = torch.channels_last if (self.channels_last and use_fp16) else torch.contiguous_format

        if x is not None:
            check_shape(x, [None, self.in_channels, self.resolution, self.resolution],
                        f"input of block b{self.resolution}")
            x = x.to(dtype=dtype, memory_format=fmt)

        if self.in_channels == 0 or self.architecture == "skip":
            check_shape(img, [None, self.img_channels, self.resolution, self.resolution], "image")
            img = img.to(dtype=dtype, memory_format=fmt)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head: minibatch stddev, conv, fc, out (and the projection onto cmap if conditional)."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        cmap_dim: int,  # Dimensionality of the mapped label, 0 = unconditional.
        resolution: int,  # Resolution of this block (4).
        img_channels: int,  # Number of image channels.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size: int | None = 4,  # Minibatch-std group size, None = whole batch.
        mbstd_num_channels: int = 1,  # Minibatch-std features, 0 = disable.
        activation: str = "lrelu",  # Activation function.
        conv_clamp: float | None = None,  # Clamp conv outputs to +-X, None = no clamp.
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise FaceAppError(f"architecture is {architecture!r}; use 'orig', 'skip' or 'resnet'.")
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
                      if mbstd_num_channels > 0 else None)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None,
                force_fp32: bool = False) -> torch.Tensor:
        """x [N, C, 4, 4] -> logits [N, 1]. Always fp32."""
        check_shape(x, [None, self.in_channels, self.resolution, self.resolution], "input of the epilogue")
        dtype = _base_dtype(x)
        x = x.to(dtype=dtype, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=dtype, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))  # [N, C]
        x = self.out(x)  # [N, 1] or [N, cmap_dim]
        if self.cmap_dim > 0:
            check_shape(cmap, [None, self.cmap_dim], "cmap")
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))  # [N, 1]
        return x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, cmap_dim={self.cmap_dim}"


class Discriminator(torch.nn.Module):
    """StyleGAN2 residual discriminator: image (+ label) -> realness logit [N, 1]."""

    def __init__(
        self,
        c_dim: int,  # Label dimensionality, 0 = unconditional.
        img_resolution: int,  # Input resolution (power of two).
        img_channels: int,  # Number of image channels.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        channel_base: int = 32768,  # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max: int = 512,  # Maximum number of channels.
        num_fp16_res: int = 0,  # Use fp16 (on CUDA) for the N highest resolutions.
        conv_clamp: float | None = None,  # Clamp conv outputs to +-X, None = no clamp.
        cmap_dim: int | None = None,  # Mapped label dimensionality, None = channels at 4x4.
        block_kwargs: dict | None = None,  # Passed to DiscriminatorBlock.
        mapping_kwargs: dict | None = None,  # Passed to the label MappingNetwork.
        epilogue_kwargs: dict | None = None,  # Passed to DiscriminatorEpilogue.
    ):
        log2 = _check_resolution(img_resolution)
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = _jsonable(dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp, cmap_dim=cmap_dim, block_kwargs=block_kwargs,
            mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs,
        ))
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {r: channels_for(r, channel_base, channel_max) for r in self.block_resolutions + [4]}
        fp16_resolution = _fp16_resolution(log2, num_fp16_res)

        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], resolution=res,
                                       first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution),
                                       **block_kwargs, **common)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs,
                                        **common)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, force_fp32: bool = False) -> torch.Tensor:
        """img [N, img_channels, R, R] (about [-1, 1]), c [N, c_dim] or None -> logits [N, 1]."""
        check_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], "image")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None  # [N, cmap_dim]
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}"
