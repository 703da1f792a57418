"""The CPU inference fast path of the synthesis layers.

Under torch.inference_mode on the CPU (the app's renders, the bench), the synthesis layers
compute the same function (to float rounding) with fewer passes over memory: channels_last
activations (oneDNN's native layout: no reorder around each conv, and depthwise FIR convs
2-3x faster), the bias and the activation gain folded into the conv, noise / activation /
clamp applied in place to the conv's fresh output, toRGB as one batched matmul, and the
shared-weight (non-fused) modulated conv where modulating the weights would cost more than
scaling the activations. Training (autograd on), plain torch.no_grad and CUDA run the
reference path (faceapp.stylegan.ops), so that code which renders a target under no_grad and
then fits it with autograd on (the projector's tests) sees bit-identical images. Tests set
FAST_CPU_INFERENCE = False here to get the reference path under inference_mode too.

The layers (faceapp.stylegan.layers) ask `use_fast_path(x)` and then call `modulated_conv2d_fast`
with a per-module `fast_cache`; `derived` memoises weight-derived tensors in it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceapp.cuda import bias_act
from faceapp.stylegan.ops import check_shape, filter_size, padding4

__all__ = [
    "FAST_CPU_INFERENCE",
    "HOMOGENEOUS_ACTS",
    "use_fast_path",
    "modulated_conv2d_fast",
    "fast_cache",
    "derived",
]

FAST_CPU_INFERENCE = True

# act(x) * g == act(x * g) for g > 0: the gain can go into the weights and bias.
HOMOGENEOUS_ACTS = ("linear", "relu", "lrelu")


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


def fast_cache(module: torch.nn.Module) -> _FastCache:
    cache = module.__dict__.get("_fast_cache")
    if not isinstance(cache, _FastCache):
        cache = module.__dict__["_fast_cache"] = _FastCache()
    return cache


def derived(cache: dict | None, name: str, src: torch.Tensor, extra, fn):
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
        packed = derived(cache, f"packed{up}", src, (extra, tuple(size)), pack)
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
        wsq = derived(cache, "wsq", src, dt, lambda: src.to(dt).square().sum(dim=[2, 3]))  # [C_out, C_in]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, C_out]
    b = bias.to(dt) * gain if bias is not None else None

    groups = 1
    if fused_modconv:
        scale = styles.reshape(n, 1, in_ch) * (dcoefs.reshape(n, out_ch, 1) * gain if demodulate else gain)
        if n == 1:  # modulate straight into the conv's layout
            scale = scale[0].t() if up > 1 else scale[0]
            w = derived(cache, "layout", src, (dt, fmt), conv_layout) * scale.reshape(*scale.shape, 1, 1)
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
        w = derived(cache, "shared", src, (dt, fmt, gain), lambda: conv_layout() * gain)
    # With demodulation on the shared-weight path the bias comes after the per-sample scale.
    conv_bias = b if (fused_modconv or not demodulate) else None

    if up == 1:
        y = None
        if not fused_modconv and dt == torch.float32 and fmt == torch.channels_last:
            y = _prepacked_conv(x, w, conv_bias, padding4(padding), cache, src, (fmt, gain))
        if y is None:
            y = _padded_conv2d(x, w, conv_bias, padding4(padding), groups)
    else:
        # conv2d_resample's up path: a stride-`up` transposed conv, then the FIR filter.
        fw, fh = filter_size(resample_filter)
        px0, px1, py0, py1 = padding4(padding)
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
        fir = derived(cache, "fir", resample_filter, (c, up, y.dtype),
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
