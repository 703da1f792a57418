"""Building blocks of the StyleGAN2 generator and discriminator.

Layer, parameter and buffer names, shapes and init/gain conventions follow
NVIDIA's stylegan2-ada-pytorch (training/networks.py), so that an official
state_dict loads into these modules with ``strict=True``. Weights are stored
unscaled (N(0, 1) / lr_multiplier) and the equalised-learning-rate gains are
applied at run time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from faceapp.cuda import bias_act, upfirdn2d
from faceapp.errors import FaceAppError

__all__ = [
    "normalize_2nd_moment",
    "make_filter",
    "conv2d_resample",
    "modulated_conv2d",
    "FullyConnectedLayer",
    "Conv2dLayer",
    "SynthesisLayer",
    "ToRGBLayer",
    "MinibatchStdLayer",
    "modulated_conv2d_fast",
    "use_fast_path",
]


def _def_gain(activation: str) -> float:
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


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter prepared by setup_filter(); (1, 1) for None."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return int(f.shape[0]), int(f.shape[0])
    return int(f.shape[-1]), int(f.shape[0])


def _padding4(padding) -> list[int]:
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
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)

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


# ---------------------------------------------------------------------------------------------
# Inference fast path.
#
# Under torch.inference_mode on the CPU (the app's renders, the bench), the synthesis layers
# compute the same function (to float rounding) with fewer passes over memory: channels_last
# activations (oneDNN's native layout: no reorder around each conv, and depthwise FIR convs
# 2-3x faster), the bias and the activation gain folded into the conv, noise / activation /
# clamp applied in place to the conv's fresh output, toRGB as one batched matmul, and the
# shared-weight (non-fused) modulated conv where modulating the weights would cost more than
# scaling the activations. Training (autograd on), plain torch.no_grad and CUDA run the
# reference path above, so that code which renders a target under no_grad and then fits it
# with autograd on (the projector's tests) sees bit-identical images. Tests set
# FAST_CPU_INFERENCE = False to get the reference path under inference_mode too.

FAST_CPU_INFERENCE = True

# act(x) * g == act(x * g) for g > 0: the gain can go into the weights and bias.
_HOMOGENEOUS_ACTS = ("linear", "relu", "lrelu")


def use_fast_path(x: torch.Tensor) -> bool:
    """Whether the layers take the inference fast path for input `x`."""
    return (FAST_CPU_INFERENCE and x.device.type == "cpu" and torch.is_inference_mode_enabled()
            and x.dtype in (torch.float32, torch.float64))


def _fir_depthwise(f: torch.Tensor, channels: int, gain: float, dtype: torch.dtype) -> torch.Tensor:
    """upfirdn2d's FIR filter as a depthwise conv2d (correlation) weight [C, 1, fh, fw]."""
    if f.ndim == 1:  # separable taps: upfirdn2d applies them along x then y
        f = torch.outer(f, f)
    f = (f.to(dtype) * gain).flip([0, 1])
    return f[None, None].expand(channels, 1, *f.shape)


def _padded_conv2d(x, w, bias, padding, groups):
    """conv2d with [x0, x1, y0, y1] padding (negative crops): the symmetric part inside the conv."""
    px0, px1, py0, py1 = padding
    sx, sy = max(min(px0, px1), 0), max(min(py0, py1), 0)
    if (px0 - sx, px1 - sx, py0 - sy, py1 - sy) != (0, 0, 0, 0):
        x = F.pad(x, [px0 - sx, px1 - sx, py0 - sy, py1 - sy])
    return F.conv2d(x, w, bias, padding=(sy, sx), groups=groups)


class _FastCache(dict):
    """A module's memo of derived tensors. Copies and pickles start empty: the contents are
    derived data, and oneDNN's prepacked weights are opaque tensors that cannot be copied."""

    def __deepcopy__(self, memo):
        return _FastCache()

    def __reduce__(self):
        return _FastCache, ()


def _fast_cache(module: torch.nn.Module) -> _FastCache:
    cache = module.__dict__.get("_fast_cache")
    if not isinstance(cache, _FastCache):
        cache = module.__dict__["_fast_cache"] = _FastCache()
    return cache


def _derived(cache: dict | None, name: str, src: torch.Tensor, extra, fn):
    """fn(), memoised in `cache` until `src` (a parameter) changes: in-place updates (optimiser
    steps, load_state_dict, EMA copies) bump its _version, .to() / new storage its data_ptr."""
    if cache is None:
        return fn()
    key = (src.data_ptr(), src._version, src.device, extra)
    hit = cache.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = fn()
    cache[name] = (key, value)
    return value


def _prepacked_conv(x, w, bias, padding, cache, src, extra, up: int = 1):
    """Shared-weight conv (up = 1) or stride-`up` transposed conv with the weight reordered once
    into oneDNN's blocked layout (what torch.compile's freezing does): F.conv2d reorders it on
    every call, and for small inputs falls back to a slower im2col path. None where oneDNN's
    (private) ops are unavailable or the padding is not symmetric."""
    global _PREPACK_OK
    px0, px1, py0, py1 = padding
    if not _PREPACK_OK or cache is None or px0 != px1 or py0 != py1 or px0 < 0 or py0 < 0:
        return None
    pad, stride, one, size = [py0, px0], [up, up], [1, 1], list(x.shape)
    ops = torch.ops.mkldnn

    def pack():
        if up == 1:
            return ops._reorder_convolution_weight(w, pad, one, one, 1, size)
        return ops._reorder_convolution_transpose_weight(w, pad, [0, 0], stride, one, 1, size)

    try:
        packed = _derived(cache, f"packed{up}", src, (extra, tuple(size)), pack)
        if up == 1:
            return ops._convolution_pointwise(x, packed, bias, pad, one, one, 1, "none", [], None)
        return ops._convolution_transpose_pointwise(x, packed, bias, pad, [0, 0], stride, one, 1, "none", [], None)
    except (AttributeError, RuntimeError, NotImplementedError):  # private ops: absent or changed
        _PREPACK_OK = False
        return None


_PREPACK_OK = torch.backends.mkldnn.is_available()


def modulated_conv2d_fast(x, weight, styles, bias=None, noise=None, up: int = 1, padding: int = 0,
                          resample_filter=None, demodulate: bool = True, flip_weight: bool = True,
                          fused_modconv: bool | None = None, gain: float = 1,
                          cache: dict | None = None, act: str = "linear", act_gain: float = 1,
                          clamp: float | None = None) -> torch.Tensor:
    """Inference-only modulated_conv2d (autograd off, in place) with its layer's epilogue:
    `clamp(act((modulated_conv2d(x, ...) + bias) * gain + noise) * act_gain)`, `noise` already
    multiplied by gain. Works in the layout of `x` (channels_last for speed); fused_modconv=None
    picks the cheaper of the fused and shared-weight forms. `cache` (a dict owned by the
    caller) keeps the weight-derived tensors between calls."""
    n, in_ch, h, w_in = x.shape
    out_ch, _, kh, kw = weight.shape
    check_shape(styles, [n, in_ch], "styles")
    src, dt = weight, x.dtype
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    styles = styles.to(dt)
    out_h, out_w = h * up, w_in * up
    if fused_modconv is None:
        # Fused modulates O*I*k*k weights per sample; shared-weight scales the input and the
        # output instead. The grouped conv also runs slower than one batched conv when n > 1.
        fused_modconv = n == 1 and out_ch * in_ch * kh * kw < in_ch * h * w_in + out_ch * out_h * out_w

    def conv_layout():
        # The weight as the conv takes it: conv2d [O, I, k, k] correlating, or (up > 1)
        # conv_transpose2d [I, O, k, k] convolving; flip_weight=False asks for a true convolution.
        w = src.to(dt)
        if up > 1:
            w = w.transpose(0, 1)
        if (up > 1) == flip_weight and (kh > 1 or kw > 1):
            w = w.flip([2, 3])
        # In x's layout: a conv copies a weight whose memory format differs from its input's.
        return w.contiguous(memory_format=fmt)

    dcoefs = None
    if demodulate:
        wsq = _derived(cache, "wsq", src, dt, lambda: src.to(dt).square().sum(dim=[2, 3]))  # [C_out, C_in]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, C_out]
    b = bias.to(dt) * gain if bias is not None else None

    groups = 1
    if fused_modconv:
        scale = styles.reshape(n, 1, in_ch) * (dcoefs.reshape(n, out_ch, 1) * gain if demodulate else gain)
        if n == 1:  # modulate straight into the conv's layout
            scale = scale[0].t() if up > 1 else scale[0]
            w = _derived(cache, "layout", src, (dt, fmt), conv_layout) * scale.reshape(*scale.shape, 1, 1)
        else:  # batch folded into channels: x [1, N * C_in, H, W], one group per sample
            w = (src.to(dt).unsqueeze(0) * scale.reshape(n, out_ch, in_ch, 1, 1))
            if up > 1:
                w = w.transpose(1, 2)
            w = w.reshape(n * w.shape[1], w.shape[2], kh, kw)
            if (up > 1) == flip_weight and (kh > 1 or kw > 1):
                w = w.flip([2, 3])
            x = x.contiguous().reshape(1, n * in_ch, h, w_in)
            b = b.repeat(n) if b is not None else None
            groups = n
    else:
        x = x * styles.reshape(n, in_ch, 1, 1)
        w = _derived(cache, "shared", src, (dt, fmt, gain), lambda: conv_layout() * gain)
    # With demodulation on the shared-weight path the bias comes after the per-sample scale.
    conv_bias = b if (fused_modconv or not demodulate) else None

    if up == 1:
        y = None
        if not fused_modconv and dt == torch.float32 and fmt == torch.channels_last:
            y = _prepacked_conv(x, w, conv_bias, _padding4(padding), cache, src, (fmt, gain))
        if y is None:
            y = _padded_conv2d(x, w, conv_bias, _padding4(padding), groups)
    else:
        # conv2d_resample's up path: a stride-`up` transposed conv, then the FIR filter.
        fw, fh = _filter_size(resample_filter)
        px0, px1, py0, py1 = _padding4(padding)
        px0 += (fw + up - 1) // 2 - (kw - 1)
        px1 += (fw - up) // 2 - (kw - up)
        py0 += (fh + up - 1) // 2 - (kh - 1)
        py1 += (fh - up) // 2 - (kh - up)
        pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
        y = None
        if not fused_modconv and dt == torch.float32 and fmt == torch.channels_last:
            y = _prepacked_conv(x, w, None, [pxt, pxt, pyt, pyt], cache, src, (fmt, gain), up=up)
        if y is None:
            y = F.conv_transpose2d(x, w, stride=up, padding=[pyt, pxt], groups=groups)
        c = int(y.shape[1])
        fir = _derived(cache, "fir", resample_filter, (c, up, y.dtype),
                       lambda: _fir_depthwise(resample_filter, c, up**2, y.dtype))
        y = _padded_conv2d(y, fir, conv_bias, [px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], int(y.shape[1]))

    if groups > 1:  # undo the batch folding (a reshape even of an unchanged shape can restride
        y = y.reshape(n, out_ch, *y.shape[2:])  # size-1 dims and turn oneDNN off channels_last)
    d = dcoefs.reshape(n, out_ch, 1, 1) if demodulate and not fused_modconv else None
    b = b.reshape(1, out_ch, 1, 1) if b is not None and conv_bias is None else None
    if noise is not None:
        noise = noise.to(y.dtype)
    # The epilogue makes several in-place passes: over row bands small enough to stay in the
    # core's cache they cost about one pass over memory instead of several. Single-threaded
    # only: with more threads every band would be an OpenMP region of its own, and each one
    # waits for a thread that another process may hold (a loaded 2-core box ran 10x slower).
    rows = y.shape[2]
    if y.is_contiguous(memory_format=torch.channels_last) and torch.get_num_threads() == 1:
        rows = max(1, _EPILOGUE_BYTES // max(1, y[:, :, :1].numel() * y.element_size()))
    for r0 in range(0, y.shape[2], rows):
        band = y[:, :, r0:r0 + rows] if rows < y.shape[2] else y
        if d is not None and b is not None:
            torch.addcmul(b, band, d, out=band)
        elif d is not None:
            band.mul_(d)
        elif b is not None:
            band.add_(b)
        if noise is not None:
            band.add_(noise[..., r0:r0 + rows, :] if rows < y.shape[2] else noise)
        _activation_(band, act, act_gain, clamp)
    return y


_EPILOGUE_BYTES = 1 << 21  # row band of the in-place epilogue: about a core's L2


def _activation_(x: torch.Tensor, act: str, gain: float, clamp: float | None) -> None:
    """bias_act's activation, gain and clamp, in place on a tensor nobody else holds."""
    if act == "lrelu":
        F.leaky_relu_(x, bias_act.activation_funcs["lrelu"].def_alpha)
    elif act == "relu":
        x.relu_()
    elif act != "linear":
        x.copy_(bias_act.activation_funcs[act].func(x, bias_act.activation_funcs[act].def_alpha))
    if gain != 1:
        x.mul_(gain)
    if clamp is not None:
        x.clamp_(-clamp, clamp)


# ---------------------------------------------------------------------------------------------
# Layers.


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
            cache = _fast_cache(self)
            w, b = _derived(cache, "wb", self.weight, (x.dtype, self.bias._version if self.bias is not None else -1),
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
        self.act_gain = _def_gain(activation)

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
        self.act_gain = _def_gain(activation)

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
        fold = act_gain if (self.activation in _HOMOGENEOUS_ACTS and act_gain > 0) else 1.0
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=torch.float32) * (self.noise_strength * fold)
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * (self.noise_strength * fold)  # [R, R]
        return modulated_conv2d_fast(x, self.weight, styles, bias=self.bias, noise=noise, up=self.up,
                                  padding=self.padding, resample_filter=self.resample_filter,
                                  flip_weight=(self.up == 1), fused_modconv=fused_modconv, gain=fold,
                                  cache=_fast_cache(self), act=self.activation,
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
