"""Upsample, FIR-filter and downsample 2-D images in one op.

Same semantics as NVIDIA stylegan2-ada-pytorch's ``torch_utils.ops.upfirdn2d``.
For each image of ``x`` ([N, C, H, W]):

1. upsample by inserting ``up - 1`` zeros after each pixel;
2. pad with zeros (negative padding crops);
3. convolve with the FIR filter ``f`` (true convolution, i.e. the filter is
   flipped, unless ``flip_filter``), keeping only outputs whose footprint lies
   inside the padded image;
4. downsample by keeping every ``down``-th pixel.

The gradient of this op is the same op with ``up``/``down`` swapped, the
filter flipped and the padding adjusted, which is how the CUDA path's backward
(of any order) is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceapp.cuda import _ext


def _parse_scaling(s) -> tuple[int, int]:
    if isinstance(s, int):
        s = (s, s)
    sx, sy = (int(v) for v in s)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {s}")
    return sx, sy


def _parse_padding(p) -> tuple[int, int, int, int]:
    if isinstance(p, int):
        p = (p, p)
    p = [int(v) for v in p]
    if len(p) == 2:
        px, py = p
        p = [px, px, py, py]
    if len(p) != 4:
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1]; got {p}")
    return p[0], p[1], p[2], p[3]


def _get_filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Filter width and height (1, 1 for None, i.e. no filtering)."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(
    f,
    device: torch.device = torch.device("cpu"),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn a list/array/tensor of taps into a filter tensor for ``upfirdn2d``.

    Args:
        f:            taps: None (= [1]), a scalar, a 1-D or a 2-D array-like.
        device:       where the result lives.
        normalize:    divide by the sum so the filter preserves DC.
        flip_filter:  flip the taps (correlation instead of convolution).
        gain:         overall scale of the 2-D filter (each 1-D pass gets its sqrt).
        separable:    keep a 1-D filter 1-D (applied along x then y); None = only
                      for 1-D filters of 8 taps or more, where it is faster.

    Returns:
        float32 tensor, [fw] (separable) or [fh, fw].
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError("separable=True needs a 1-D filter")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="auto") -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of images.

    Args:
        x:            [N, C, H, W] images.
        f:            [fw] separable or [fh, fw] filter (see ``setup_filter``); None = identity.
        up:           integer upsampling factor, int or (x, y).
        down:         integer downsampling factor, int or (x, y).
        padding:      in upsampled pixels: int, [x, y] or [x0, x1, y0, y1]; negative crops.
        flip_filter:  correlate instead of convolve.
        gain:         overall scale of the result (upsampling by k needs k**2 to keep DC).
        impl:         'auto' | 'ref' | 'cuda', see ``faceapp.cuda``.

    Returns:
        [N, C, (H*up_y + py0 + py1 - fh) // down_y + 1, (W*up_x + px0 + px1 - fw) // down_x + 1].
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a 4-D [N, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = _get_filter_size(f)
    up_xy = _parse_scaling(up)
    down_xy = _parse_scaling(down)
    pad = _parse_padding(padding)
    if x.shape[3] * up_xy[0] + pad[0] + pad[1] < fw or x.shape[2] * up_xy[1] + pad[2] + pad[3] < fh:
        raise ValueError(
            f"upfirdn2d: a {tuple(x.shape[2:])} image with up={up_xy}, padding={pad} is smaller than "
            f"the {fh}x{fw} filter, which would leave an empty output"
        )
    if _ext.use_kernel(impl, x):
        return _upfirdn2d_cuda(up_xy, down_xy, pad, bool(flip_filter), float(gain)).apply(x, f)
    return _upfirdn2d_ref(x, f, up_xy, down_xy, pad, bool(flip_filter), float(gain))


def _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain) -> torch.Tensor:
    """Pure PyTorch version from (transposed) depthwise convs; autograd provides every derivative.

    Never materialises the zero-inserted image: upsampling is a stride-`up` transposed conv
    (which skips the zeros), downsampling a stride-`down` conv (which skips the discarded
    outputs), and padding goes into the conv where it can. This is what runs on CPU.
    """
    c = x.shape[1]
    f = f.to(dtype=x.dtype, device=x.device)
    if f.ndim == 2:
        return _fir_pass(x, f * gain, c, up, down, padding, flip_filter)
    # Separable: the horizontal pass carries the gain (sqrt per pass would fail for gain < 0).
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    x = _fir_pass(x, (f * gain)[None, :], c, (upx, 1), (downx, 1), (px0, px1, 0, 0), flip_filter)
    return _fir_pass(x, f[:, None], c, (1, upy), (1, downy), (0, 0, py0, py1), flip_filter)


def _pad_or_crop(x: torch.Tensor, px0: int, px1: int, py0: int, py1: int) -> torch.Tensor:
    # F.pad crops where the amounts are negative.
    return F.pad(x, [px0, px1, py0, py1]) if (px0, px1, py0, py1) != (0, 0, 0, 0) else x


def _fir_pass(x, f, c, up, down, padding, flip_filter) -> torch.Tensor:
    """One upfirdn2d with a 2-D filter f [fh, fw] (gain included) on [N, c, H, W]."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    fh, fw = f.shape
    if upx > 1 or upy > 1:
        # Zero insertion + true convolution with f = a transposed conv with f unflipped. Its full
        # output starts fw - 1 - px0 (fh - 1 - py0) samples before ours and ends fw - upx - px1
        # (fh - upy - py1) after: symmetric crops go into the conv's padding, the rest into F.pad.
        k = f.flip([0, 1]) if flip_filter else f
        cx0, cx1, cy0, cy1 = fw - 1 - px0, fw - upx - px1, fh - 1 - py0, fh - upy - py1
        sx, sy = max(min(cx0, cx1), 0), max(min(cy0, cy1), 0)
        x = F.conv_transpose2d(x, k[None, None].expand(c, 1, fh, fw), stride=(upy, upx), padding=(sy, sx),
                               groups=c)
        x = _pad_or_crop(x, sx - cx0, sx - cx1, sy - cy0, sy - cy1)
        return x[:, :, ::downy, ::downx] if downx > 1 or downy > 1 else x
    # conv2d correlates, so flip the taps for a true convolution; a strided conv computes only
    # the outputs that downsampling keeps.
    k = f if flip_filter else f.flip([0, 1])
    sx, sy = max(min(px0, px1), 0), max(min(py0, py1), 0)
    x = _pad_or_crop(x, px0 - sx, px1 - sx, py0 - sy, py1 - sy)
    return F.conv2d(x, k[None, None].expand(c, 1, fh, fw), stride=(downy, downx), padding=(sy, sx), groups=c)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="auto") -> torch.Tensor:
    """Filter [N, C, H, W] images with ``f``; by default the output has the input's size."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="auto") -> torch.Tensor:
    """Upsample [N, C, H, W] images by ``up`` with the anti-imaging filter ``f``, keeping DC.

    By default the output is [N, C, H*up_y, W*up_x].
    """
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="auto") -> torch.Tensor:
    """Downsample [N, C, H, W] images by ``down`` after the anti-aliasing filter ``f``.

    By default the output is [N, C, H // down_y, W // down_x].
    """
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def _grad_padding(in_shape, out_shape, f, up, down, padding) -> tuple[int, int, int, int]:
    """Padding of the adjoint op: upfirdn2d(dy, f, up=down, down=up, padding=this, flip_filter=not flip)
    maps dL/dy ([N, C, OH, OW]) back to dL/dx ([N, C, H, W])."""
    _, _, ih, iw = in_shape
    _, _, oh, ow = out_shape
    upx, upy = up
    downx, downy = down
    px0, _, py0, _ = padding
    fw, fh = _get_filter_size(f)
    # Output pixel o read zero-inserted input position o*down - p0 + k; the adjoint reads
    # the zero-inserted gradient with the reversed filter, hence fw - 1 - p0 in front,
    # and at the back whatever makes the result exactly iw (ih) long.
    return (
        fw - px0 - 1,
        iw * upx - ow * downx + px0 - upx + 1,
        fh - py0 - 1,
        ih * upy - oh * downy + py0 - upy + 1,
    )


# --------------------------------------------------------------------------------------------------
# CUDA path. One autograd.Function class per configuration; its backward is the same op
# with up/down swapped, the filter flipped and the padding adjusted, so it is itself
# differentiable (to any order).

_cuda_cache: dict[tuple, type[torch.autograd.Function]] = {}


def _upfirdn2d_cuda(up, down, padding, flip_filter: bool, gain: float):
    key = (up, down, padding, flip_filter, gain)
    if key in _cuda_cache:
        return _cuda_cache[key]
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding

    class Upfirdn2dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f):  # x: [N, C, H, W], f: [fw] or [fh, fw]
            ctx.in_shape = x.shape
            f = f.to(device=x.device, dtype=torch.float32)
            mod = _ext.load()
            if f.ndim == 1:
                # Separable: a horizontal pass (carrying the gain), then a vertical one.
                y = mod.upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, px0, px1, 0, 0, flip_filter, gain)
                y = mod.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, py0, py1, flip_filter, 1.0)
            else:
                y = mod.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
            ctx.save_for_backward(f)
            return y

        @staticmethod
        def backward(ctx, dy):  # dy: [N, C, OH, OW]
            (f,) = ctx.saved_tensors
            dx = None
            if ctx.needs_input_grad[0]:
                p = _grad_padding(ctx.in_shape, dy.shape, f, up, down, padding)
                dx = _upfirdn2d_cuda(down, up, p, not flip_filter, gain).apply(dy, f)  # [N, C, H, W]
            return dx, None

    _cuda_cache[key] = Upfirdn2dCuda
    return Upfirdn2dCuda
