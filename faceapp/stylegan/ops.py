"""Reference ops of the StyleGAN2 layers: convolution with FIR resampling, the modulated convolution,
and the small helpers the layers and networks share (shape checks, filters, pixel norm).

These follow NVIDIA's stylegan2-ada-pytorch (torch_utils/ops/conv2d_resample.py and
training/networks.py's modulated_conv2d) and are the path training, plain torch.no_grad and CUDA run.
faceapp.stylegan.fast_cpu holds the inference-only CPU form of the same maths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from faceapp.cuda import bias_act, upfirdn2d
from faceapp.errors import FaceAppError

__all__ = [
    "activation_gain",
    "check_shape",
    "filter_size",
    "padding4",
    "normalize_2nd_moment",
    "make_filter",
    "conv2d_resample",
    "modulated_conv2d",
]


def activation_gain(activation: str) -> float:
    """Default gain of an activation (sqrt(2) for lrelu/relu, 1 for linear)."""
    return float(bias_act.activation_funcs[activation].def_gain)


def make_filter(taps) -> torch.Tensor:
    """Resample-filter buffer from taps, on the current default device (so that building
    a network under `with torch.device('meta'):` allocates nothing)."""
    return upfirdn2d.setup_filter(list(taps), device=torch.get_default_device())


def check_shape(t: torch.Tensor, shape: list[int | None], name: str) -> None:
    """Raise a FaceAppError when `t` does not have `shape` (None = any size)."""
    if not isinstance(t, torch.Tensor):
        raise FaceAppError(f"{name} is {type(t).__name__}; this network needs a tensor here.")
    if t.ndim != len(shape) or any(s is not None and int(d) != s for d, s in zip(t.shape, shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise FaceAppError(
            f"{name} has shape {list(t.shape)}; this network expects {want}. "
            "Check that the latent/image was made for this generator's configuration."
        )


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` so that its mean square along `dim` is 1 (pixel norm of the latent)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ---------------------------------------------------------------------------------------------
# Convolution with resampling.


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter prepared by setup_filter(); (1, 1) for None."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return int(f.shape[0]), int(f.shape[0])
    return int(f.shape[-1]), int(f.shape[0])


def padding4(padding) -> list[int]:
    """Padding as [x_before, x_after, y_before, y_after] from an int, [x, y] or 4-list."""
    if isinstance(padding, int):
        return [padding] * 4
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return [px, px, py, py]
    return padding


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    # F.conv2d computes a correlation; flip_weight=False asks for a true convolution.
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """2D convolution with optional FIR up/downsampling (NVIDIA conv2d_resample semantics).

    Args:
        x: input [N, C_in, H, W].
        w: weight [C_out, C_in // groups, kh, kw], same dtype as x.
        f: low-pass filter from upfirdn2d.setup_filter(); None = box of size 1.
        up: integer upsampling factor (zero insertion + FIR, realised as a transposed conv).
        down: integer downsampling factor (FIR + strided conv).
        padding: padding with respect to the upsampled image: int, [x, y] or [x0, x1, y0, y1].
        groups: grouped convolution (used by the fused modulated conv, one group per sample).
        flip_weight: True = correlation like F.conv2d, False = true convolution.
        flip_filter: passed to upfirdn2d.

    Padding is applied once, up front, so the result equals "upsample, pad, filter, conv,
    filter, downsample" done naively.

    Returns:
        [N, C_out, H * up / down (for 'same' padding), W * up / down].
    """
    out_ch, in_ch_per_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = padding4(padding)

    # Extra padding that keeps the FIR filter centred after resampling.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling: filter at low cost first, then a plain 1x1 conv.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling: conv at low resolution, then upsample.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(
            x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter
        )

    # Downsampling: FIR filter then strided conv.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: a strided transposed conv does "zero-insert + conv" without the zeros' cost.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)  # [C_in, C_out, kh, kw]
        else:
            w = w.reshape(groups, out_ch // groups, in_ch_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_ch_per_group, out_ch // groups, kh, kw)
        # The transposed conv already produces (k - 1) / (k - up) extra border pixels.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        # A transposed conv convolves where conv2d correlates, hence the inverted flip.
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True,
                  flip_weight=not flip_weight)
        x = upfirdn2d.upfirdn2d(
            x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter
        )
        if down > 1:
            x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling and symmetric non-negative padding: plain conv2d.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General fallback.
    x = upfirdn2d.upfirdn2d(
        x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter
    )
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """StyleGAN2 modulated (and optionally demodulated) convolution.

    Args:
        x: input [N, C_in, H, W].
        weight: shared weight [C_out, C_in, kh, kw] (gain already applied by the caller if any).
        styles: per-sample input-channel scales [N, C_in].
        noise: optional tensor added to the output, broadcastable to [N, C_out, H', W'].
        up, down, padding, resample_filter, flip_weight: as in conv2d_resample().
        demodulate: divide each output channel by the norm of its modulated weights.
        fused_modconv: True = one grouped conv with per-sample weights; False = scale the
            activations before/after a shared-weight conv (better for large batches / training).

    Returns:
        [N, C_out, H', W'].
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    check_shape(styles, [n, in_ch], "styles")

    # fp16 could overflow in the per-sample weights; demodulation undoes any uniform scale.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        # ||W_o * s||^2 = sum_i s_i^2 * sum_k W_oik^2: a small matmul instead of squaring the
        # per-sample weights [N, C_out, C_in, kh, kw] (same value up to float rounding).
        wsq = weight.square().sum(dim=[2, 3])  # [C_out, C_in]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, C_out]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    # Fused: per-sample weights, the batch folded into the channel axis, one grouped conv.
    scale = styles.reshape(n, 1, -1, 1, 1)  # [N, 1, C_in, 1, 1]
    if demodulate:
        scale = scale * dcoefs.reshape(n, -1, 1, 1, 1)  # [N, C_out, C_in, 1, 1]
    w = weight.unsqueeze(0) * scale  # [N, C_out, C_in, kh, kw]
    x = x.reshape(1, -1, *x.shape[2:])  # [1, N * C_in, H, W]
    w = w.reshape(-1, in_ch, kh, kw)  # [N * C_out, C_in, kh, kw]
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=n, flip_weight=flip_weight)
    x = x.reshape(n, -1, *x.shape[2:])  # [N, C_out, H', W']
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
