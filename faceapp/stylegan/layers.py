"""Building blocks of the StyleGAN2 generator and discriminator: the layer modules.

Layer, parameter and buffer names, shapes and init/gain conventions follow
NVIDIA's stylegan2-ada-pytorch (training/networks.py), so that an official
state_dict loads into these modules with ``strict=True``. Weights are stored
unscaled (N(0, 1) / lr_multiplier) and the equalised-learning-rate gains are
applied at run time.

The maths they run lives beside them: faceapp.stylegan.ops (the reference ops: conv2d_resample,
modulated_conv2d, ...) and faceapp.stylegan.fast_cpu (the CPU inference fast path the synthesis
layers take under torch.inference_mode).
"""

from __future__ import annotations

import math

import torch

from faceapp.cuda import bias_act
from faceapp.errors import FaceAppError
from faceapp.stylegan.fast_cpu import (
    HOMOGENEOUS_ACTS,
    derived,
    fast_cache,
    modulated_conv2d_fast,
    use_fast_path,
)
from faceapp.stylegan.ops import activation_gain, check_shape, conv2d_resample, make_filter, modulated_conv2d

__all__ = [
    "FullyConnectedLayer",
    "Conv2dLayer",
    "SynthesisLayer",
    "ToRGBLayer",
    "MinibatchStdLayer",
]


class FullyConnectedLayer(torch.nn.Module):
    """Linear layer with equalised learning rate and a fused bias + activation."""

    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Add a bias before the activation?
        activation: str = "linear",  # 'linear', 'relu', 'lrelu', ...
        lr_multiplier: float = 1,  # Learning-rate multiplier (weights stored divided by it).
        bias_init: float = 0,  # Initial bias value (1 for the style affines).
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fast_path(x):  # the scaled weight and bias, kept until the parameters change
            cache = fast_cache(self)
            w, b = derived(cache, "wb", self.weight, (x.dtype, self.bias._version if self.bias is not None else -1),
                            lambda: self._scaled(x.dtype))
        else:
            w, b = self._scaled(x.dtype)
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act.bias_act(x, b, act=self.activation)

    def _scaled(self, dtype):
        w = self.weight.to(dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        return w, b

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(torch.nn.Module):
    """Conv with equalised learning rate, optional FIR resampling, bias, activation and clamp."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        kernel_size: int,  # Width and height of the kernel.
        bias: bool = True,  # Add a bias before the activation?
        activation: str = "linear",  # 'linear', 'relu', 'lrelu', ...
        up: int = 1,  # Integer upsampling factor.
        down: int = 1,  # Integer downsampling factor.
        resample_filter=(1, 3, 3, 1),  # Low-pass filter used when resampling.
        conv_clamp: float | None = None,  # Clamp the output to +-X, None = no clamp.
        channels_last: bool = False,  # Store the weight in channels_last format?
        trainable: bool = True,  # False = weight/bias are buffers (Freeze-D).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = activation_gain(activation)

        fmt = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=fmt)
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_t is not None:
                self.register_buffer("bias", bias_t)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # Upsampling layers use a true convolution (matches the official weights).
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        k = self.weight.shape[-1]
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={k}, activation={self.activation}, "
                f"up={self.up}, down={self.down}")


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv + noise + bias + activation: one style input of the generator."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Dimensionality of w.
        resolution: int,  # Output resolution of this layer.
        kernel_size: int = 3,  # Kernel size.
        up: int = 1,  # Integer upsampling factor.
        use_noise: bool = True,  # Add per-pixel noise?
        activation: str = "lrelu",  # Activation function.
        resample_filter=(1, 3, 3, 1),  # Low-pass filter used when upsampling.
        conv_clamp: float | None = None,  # Clamp the output to +-X, None = no clamp.
        channels_last: bool = False,  # Store the weight in channels_last format?
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=fmt)
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool | None = True, gain: float = 1) -> torch.Tensor:
        """x [N, C_in, R/up, R/up], w [N, w_dim] -> [N, C_out, R, R].

        fused_modconv None = the faster form on the inference fast path, fused otherwise."""
        if noise_mode not in ("random", "const", "none"):
            raise FaceAppError(f"noise_mode is {noise_mode!r}; use 'const', 'random' or 'none'.")
        in_res = self.resolution // self.up
        check_shape(x, [None, self.in_channels, in_res, in_res], f"input of the {self.resolution}px layer")
        styles = self.affine(w)  # [N, C_in]
        if use_fast_path(x):
            return self._forward_fast(x, styles, noise_mode, fused_modconv, gain)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=torch.float32) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength  # [R, R]

        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv is not False)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def _forward_fast(self, x, styles, noise_mode, fused_modconv, gain):
        act_gain = self.act_gain * gain
        fold = act_gain if (self.activation in HOMOGENEOUS_ACTS and act_gain > 0) else 1.0
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=torch.float32) * (self.noise_strength * fold)
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * (self.noise_strength * fold)  # [R, R]
        return modulated_conv2d_fast(x, self.weight, styles, bias=self.bias, noise=noise, up=self.up,
                                  padding=self.padding, resample_filter=self.resample_filter,
                                  flip_weight=(self.up == 1), fused_modconv=fused_modconv, gain=fold,
                                  cache=fast_cache(self), act=self.activation,
                                  act_gain=act_gain / fold,
                                  clamp=self.conv_clamp * gain if self.conv_clamp is not None else None)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, resolution={self.resolution}, up={self.up}, "
                f"activation={self.activation}")


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv (no demodulation) from features to image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=fmt)
        )
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool | None = True) -> torch.Tensor:
        """x [N, C_in, R, R], w [N, w_dim] -> [N, img_channels, R, R]."""
        styles = self.affine(w) * self.weight_gain  # [N, C_in]
        if use_fast_path(x) and self.weight.shape[-1] == 1:
            return self._forward_fast(x, styles)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv is not False)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def _forward_fast(self, x, styles):
        # A 1x1 modulated conv is a per-sample matmul over channels: one baddbmm with the bias.
        n, c, h, w = x.shape
        wmod = self.weight.to(x.dtype).reshape(1, -1, c) * styles.to(x.dtype).reshape(n, 1, c)  # [N, O, I]
        b = self.bias.to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            y = torch.baddbmm(b.reshape(1, 1, -1), x.permute(0, 2, 3, 1).reshape(n, h * w, c), wmod.transpose(1, 2))
            y = y.reshape(n, h, w, -1).permute(0, 3, 1, 2)  # [N, O, H, W], channels_last
        else:
            y = torch.baddbmm(b.reshape(1, -1, 1), wmod, x.reshape(n, c, h * w)).reshape(n, -1, h, w)
        return y.clamp_(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"


class MinibatchStdLayer(torch.nn.Module):
    """Append the mean over features of the per-group stddev as extra channels."""

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C + num_channels, H, W]."""
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise FaceAppError(
                f"batch size {n} is not a multiple of the minibatch-std group size {g}; "
                "use a batch that is a multiple of it or set mbstd_group_size accordingly."
            )
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]; sample i is in group i % (N/G)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n, F, c, H, W] stddev over the group
        y = y.mean(dim=[2, 3, 4])  # [n, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
