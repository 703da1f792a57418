"""faceapp.cuda: reference ops against naive definitions, gradients, the CUDA wrappers'
autograd wiring, the lazy build, implementation selection, and CUDA-vs-reference parity."""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from faceapp.cuda import _ext
from faceapp.cuda import bias_act as ba
from faceapp.cuda import upfirdn2d as ufd
from faceapp.cuda.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from faceapp.errors import CudaOpsError

# ------------------------------------------------------------------------------------------------
# Naive definitions, written from the op descriptions with numpy loops.


def naive_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """x: [N, C, H, W] ndarray; f: [fh, fw] (a 1-D f means the outer product f f^T)."""
    x = np.asarray(x, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    n, c, h, w = x.shape
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    fh, fw = f.shape
    # 1. zero insertion
    u = np.zeros((n, c, h * upy, w * upx))
    for i in range(h):
        for j in range(w):
            u[:, :, i * upy, j * upx] = x[:, :, i, j]
    # 2. pad with zeros / crop: padded[i] = u[i - p0]
    ph, pw = h * upy + py0 + py1, w * upx + px0 + px1
    p = np.zeros((n, c, ph, pw))
    for i in range(ph):
        for j in range(pw):
            si, sj = i - py0, j - px0
            if 0 <= si < h * upy and 0 <= sj < w * upx:
                p[:, :, i, j] = u[:, :, si, sj]
    # 3. 'valid' 2-D convolution (correlation when flip_filter)
    oh, ow = ph - fh + 1, pw - fw + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            for a in range(fh):
                for b in range(fw):
                    if flip_filter:
                        y[:, :, i, j] += f[a, b] * p[:, :, i + a, j + b]
                    else:
                        y[:, :, i, j] += f[a, b] * p[:, :, i + fh - 1 - a, j + fw - 1 - b]
    # 4. keep every down-th pixel
    return y[:, :, ::downy, ::downx] * gain


def _np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


NAIVE_ACTS = {
    # name: (function(v, alpha), default gain)
    "linear": (lambda v, a: v, 1.0),
    "relu": (lambda v, a: np.maximum(v, 0.0), math.sqrt(2)),
    "lrelu": (lambda v, a: np.where(v > 0, v, a * v), math.sqrt(2)),
    "tanh": (lambda v, a: np.tanh(v), 1.0),
    "sigmoid": (lambda v, a: _np_sigmoid(v), 1.0),
    "elu": (lambda v, a: np.where(v > 0, v, np.exp(v) - 1.0), 1.0),
    "selu": (lambda v, a: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * (np.exp(v) - 1.0)), 1.0),
    "softplus": (lambda v, a: np.log1p(np.exp(v)), 1.0),
    "swish": (lambda v, a: v * _np_sigmoid(v), 1.0),
}


def naive_bias_act(x, b, dim, act, alpha=None, gain=None, clamp=None):
    x = np.asarray(x, dtype=np.float64)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + np.asarray(b, dtype=np.float64).reshape(shape)
    fn, def_gain = NAIVE_ACTS[act]
    y = fn(x, 0.2 if alpha is None else alpha) * (def_gain if gain is None else gain)
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return y


# ------------------------------------------------------------------------------------------------
# upfirdn2d reference vs naive

UPFIRDN_CASES = [
    # (N, C, H, W, filter, up, down, padding, flip, gain)
    (1, 1, 5, 6, "sep4", 1, 1, 0, False, 1.0),
    (2, 3, 4, 5, "sep4", 2, 1, (2, 1, 2, 1), False, 4.0),
    (1, 2, 6, 4, "rand3x3", 1, 1, 1, False, 1.0),
    (1, 2, 6, 4, "rand3x3", 1, 1, 1, True, 1.0),
    (2, 1, 4, 4, "rand2x5", 2, 1, (3, 1, 0, 2), False, 1.5),
    (1, 2, 8, 8, "sep4", 1, 2, (1, 1, 1, 1), False, 1.0),
    (1, 1, 7, 9, "rand3x4", 1, 2, (2, 0, 1, 3), True, 0.5),
    (1, 1, 3, 4, "sep4", 4, 1, (5, 3, 5, 3), False, 16.0),
    (1, 2, 5, 5, "rand3x3", (2, 1), (1, 2), (1, 2, 0, 1), False, 1.0),
    (1, 1, 6, 7, "rand3x3", 2, 2, (-1, 2, 1, -2), False, 1.0),  # negative padding crops
    (2, 2, 8, 8, "sep8", 1, 1, (-2, 4, 3, -1), True, 1.0),
    (1, 1, 5, 5, "sep8", 2, 1, (4, 4, 4, 4), False, -2.0),  # negative gain, separable
    (1, 1, 6, 6, None, 1, 2, 0, False, 3.0),  # no filter: plain stride + gain
    (1, 1, 4, 4, "sep4", 2, 2, (1, 2, 1, 2), True, 1.0),
    # The CPU path's transposed / strided convs: padding beyond their full output, asymmetric crops.
    (1, 2, 4, 5, "rand4x4", 2, 1, (2, 1, 2, 1), True, 4.0),
    (1, 1, 3, 3, "rand2x2", 3, 1, (6, 0, 0, 5), False, 1.0),
    (2, 1, 6, 6, "rand4x4", 1, 3, (3, 0, 2, 5), False, 1.0),
    (1, 1, 5, 4, "sep4", (3, 2), (2, 1), (0, 4, 3, -1), True, 2.0),
]


# Tiny versions of the interesting cases for gradcheck / gradgradcheck (cost ~ input x output size).
GRAD_CASES = [
    (1, 1, 3, 3, "sep4", 2, 1, (2, 1, 2, 1), False, 4.0),
    (1, 1, 3, 3, "rand2x3", 2, 1, (2, 1, 0, 2), False, 1.5),
    (1, 1, 5, 4, "rand3x2", 1, 2, (1, 0, 1, 1), True, 0.5),
    (1, 1, 4, 4, "rand3x3", 2, 2, (-1, 2, 1, -2), False, 1.0),
    (1, 1, 2, 2, "sep8", 2, 1, (4, 3, 4, 3), False, -2.0),
    (1, 2, 3, 2, "rand3x3", (2, 1), (1, 2), (1, 2, 0, 1), False, 1.0),
]


def _make_filter(kind, gen):
    if kind is None:
        return None
    if kind.startswith("sep"):
        return torch.rand(int(kind[3:]), generator=gen, dtype=torch.float64) + 0.1
    fh, fw = (int(v) for v in kind[4:].split("x"))
    return torch.randn(fh, fw, generator=gen, dtype=torch.float64)


def _case_inputs(case, seed):
    """(x float64 [n, c, h, w], filter or None, the generator they were drawn from, upfirdn2d's keyword
    arguments) of an UPFIRDN_CASES / GRAD_CASES case: x first, then the filter, from `seed`."""
    n, c, h, w, kind, up, down, padding, flip, gain = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    return x, _make_filter(kind, gen), gen, dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)


def _assert_grads(fn, inputs):
    """First and second derivatives of `fn` at `inputs` against finite differences."""
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def _norm_args(up, down, padding, **_):
    up = (up, up) if isinstance(up, int) else up
    down = (down, down) if isinstance(down, int) else down
    padding = (padding,) * 4 if isinstance(padding, int) else padding
    return up, down, padding


@pytest.mark.parametrize("case", UPFIRDN_CASES)
def test_upfirdn2d_ref_matches_naive(case):
    x, f, _, kw = _case_inputs(case, seed=1)
    y = upfirdn2d(x, f, impl="ref", **kw)
    up_, down_, pad_ = _norm_args(**kw)
    expect = naive_upfirdn2d(x.numpy(), np.ones((1, 1)) if f is None else f.numpy(), up_, down_, pad_,
                             kw["flip_filter"], kw["gain"])
    assert y.shape == expect.shape
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-10, atol=1e-10)


def test_upfirdn2d_impulse_response_is_convolution():
    # An impulse through filter2d reproduces the filter (convolution), or its 180-degree
    # rotation when flip_filter; an asymmetric odd filter tells the two apart.
    f = torch.arange(1.0, 10.0).reshape(3, 3)
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1
    y = filter2d(x, f, impl="ref")
    assert y.shape == x.shape
    torch.testing.assert_close(y[0, 0, 2:5, 2:5], f)
    yf = filter2d(x, f, flip_filter=True, impl="ref")
    torch.testing.assert_close(yf[0, 0, 2:5, 2:5], f.flip([0, 1]))


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    f8 = setup_filter(torch.arange(1.0, 9.0))
    assert f8.shape == (8,)  # 8+ taps stay separable
    torch.testing.assert_close(f8.sum(), torch.tensor(1.0))
    fg = setup_filter([1, 2], gain=4, flip_filter=True, separable=True)
    torch.testing.assert_close(fg, torch.tensor([2.0, 1.0]) / 3 * 2)  # sqrt(gain) per 1-D pass
    assert setup_filter(None).shape == (1,) or setup_filter(None).shape == (1, 1)
    raw = setup_filter([[1.0, 2.0], [3.0, 4.0]], normalize=False)
    torch.testing.assert_close(raw, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


@pytest.mark.parametrize("gain", [1.0, 2.5, -1.0])
def test_separable_equals_outer_product(gain):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    f = torch.rand(4, generator=gen, dtype=torch.float64)
    kw = dict(up=2, down=1, padding=(2, 1, 3, 0), gain=gain, impl="ref")
    torch.testing.assert_close(upfirdn2d(x, f, **kw), upfirdn2d(x, torch.outer(f, f), **kw))


# A filter keeps DC through up-sampling by k when each of its k polyphase parts sums to 1/k.
@pytest.mark.parametrize("factor,taps", [(2, [1, 3, 3, 1]), (4, [1, 1, 1, 1]), (2, [1, 2, 1])])
def test_resample_wrappers_shapes_and_dc(factor, taps):
    f = setup_filter(taps)
    x = torch.ones(2, 3, 8, 8)
    up = upsample2d(x, f, up=factor, impl="ref")
    assert up.shape == (2, 3, 8 * factor, 8 * factor)
    # Away from the zero-padded border a constant image stays constant (DC gain 1).
    torch.testing.assert_close(up[:, :, 4:-4, 4:-4], torch.ones_like(up[:, :, 4:-4, 4:-4]))
    down = downsample2d(x, f, down=factor, impl="ref")
    assert down.shape == (2, 3, 8 // factor, 8 // factor)
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.ones_like(down[:, :, 1:-1, 1:-1]))
    filt = filter2d(x, f, impl="ref")
    assert filt.shape == x.shape
    torch.testing.assert_close(filt[:, :, 2:-2, 2:-2], torch.ones_like(filt[:, :, 2:-2, 2:-2]))


def test_upsample_then_downsample_keeps_smooth_signal():
    # A low-frequency image survives 2x up then 2x down (anti-imaging + anti-aliasing) nearly intact.
    f = setup_filter([1, 3, 3, 1])
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    img = torch.sin(xx * 0.2) + torch.cos(yy * 0.15)
    x = img[None, None]
    back = downsample2d(upsample2d(x, f, impl="ref"), f, impl="ref")
    assert back.shape == x.shape
    assert (back - x)[..., 3:-3, 3:-3].abs().max() < 0.05


def test_upfirdn2d_rejects_bad_input():
    with pytest.raises(ValueError):
        upfirdn2d(torch.zeros(2, 3, 4), setup_filter([1, 1]), impl="ref")
    with pytest.raises(ValueError):
        upfirdn2d(torch.zeros(1, 1, 4, 4), setup_filter([1, 1]), up=0, impl="ref")
    with pytest.raises(ValueError):
        upfirdn2d(torch.zeros(1, 1, 4, 4), setup_filter([1, 1]), impl="fast")
    with pytest.raises(ValueError, match="empty"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), setup_filter([1] * 8), padding=-1, impl="ref")


# ------------------------------------------------------------------------------------------------
# bias_act reference vs naive

ACTS = list(ba.activation_funcs)


def test_activation_table_covers_and_defaults():
    assert set(ACTS) == set(NAIVE_ACTS)
    for name, (_, def_gain) in NAIVE_ACTS.items():
        assert ba.activation_funcs[name].def_gain == pytest.approx(def_gain)
    assert ba.activation_funcs["lrelu"].def_alpha == pytest.approx(0.2)
    assert len({s.cuda_idx for s in ba.activation_funcs.values()}) == len(ACTS)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize(
    "shape,dim,alpha,gain,clamp",
    [
        ((2, 3, 4, 5), 1, None, None, None),
        ((4, 6), 0, 0.1, 0.7, None),
        ((2, 3, 5), 2, None, 2.0, 0.8),
        ((3, 4, 2, 2), 3, 0.3, None, 0.5),
    ],
)
def test_bias_act_ref_matches_naive(act, shape, dim, alpha, gain, clamp):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    b = torch.randn(shape[dim], generator=gen, dtype=torch.float64)
    y = ba.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref")
    np.testing.assert_allclose(y.numpy(), naive_bias_act(x, b, dim, act, alpha, gain, clamp), rtol=1e-9, atol=1e-12)


def test_bias_act_defaults_and_errors():
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ba.bias_act(x, impl="ref"), x)  # linear, no bias: identity
    torch.testing.assert_close(ba.bias_act(x, act="lrelu", impl="ref"), torch.where(x > 0, x, 0.2 * x) * 2**0.5)
    with pytest.raises(ValueError, match="unknown activation"):
        ba.bias_act(x, act="gelu2", impl="ref")
    with pytest.raises(ValueError, match="bias"):
        ba.bias_act(x, torch.zeros(4), dim=1, impl="ref")


# ------------------------------------------------------------------------------------------------
# Gradients of the reference paths (float64)


@pytest.mark.parametrize("act", ACTS)
def test_bias_act_ref_gradcheck(act):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    # clamp chosen away from every |y| so the numeric derivative never straddles it
    _assert_grads(lambda x, b: ba.bias_act(x, b, act=act, gain=1.3, clamp=50.0, impl="ref"), (x, b))


@pytest.mark.parametrize("case", GRAD_CASES)
def test_upfirdn2d_ref_gradcheck(case):
    x, f, _, kw = _case_inputs(case, seed=5)
    _assert_grads(lambda x: upfirdn2d(x, f, impl="ref", **kw), (x.requires_grad_(True),))


@pytest.mark.parametrize("case", UPFIRDN_CASES)
def test_upfirdn2d_adjoint_padding(case):
    # The CUDA backward is upfirdn2d(dy, f, up=down, down=up, padding=_grad_padding(...),
    # flip_filter=not flip); check that formula against autograd of the reference path.
    x, f, gen, kw = _case_inputs(case, seed=6)
    x.requires_grad_(True)
    f = torch.ones(1, 1, dtype=torch.float64) if f is None else f
    y = upfirdn2d(x, f, impl="ref", **kw)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (dx,) = torch.autograd.grad(y, x, dy)
    up_, down_, pad_ = _norm_args(**kw)
    p = ufd._grad_padding(x.shape, y.shape, f, up_, down_, pad_)
    dx2 = upfirdn2d(dy, f, up=down_, down=up_, padding=p, flip_filter=not kw["flip_filter"], gain=kw["gain"],
                    impl="ref")
    torch.testing.assert_close(dx2, dx)


# ------------------------------------------------------------------------------------------------
# Autograd wiring of the CUDA paths, run on CPU against a stand-in for the compiled module
# that follows the kernel contract in csrc/faceapp_ops.h (derivatives written independently).

_SELU_S, _SELU_A = 1.0507009873554805, 1.6732632423543772


def _deriv_from_y(act, y, alpha, order):
    """act' or act'' as a function of the activation's output (kernel's 'y' reference)."""
    one = torch.ones_like(y)
    if act == "relu":
        return (y > 0).to(y.dtype) if order == 1 else 0 * y
    if act == "lrelu":
        return torch.where(y > 0, one, alpha * one) if order == 1 else 0 * y
    if act == "tanh":
        return 1 - y * y if order == 1 else -2 * y * (1 - y * y)
    if act == "sigmoid":
        return y * (1 - y) if order == 1 else y * (1 - y) * (1 - 2 * y)
    if act == "elu":
        return torch.where(y >= 0, one, y + 1) if order == 1 else torch.where(y >= 0, 0 * y, y + 1)
    if act == "selu":
        return (
            torch.where(y >= 0, _SELU_S * one, y + _SELU_S * _SELU_A)
            if order == 1
            else torch.where(y >= 0, 0 * y, y + _SELU_S * _SELU_A)
        )
    if act == "softplus":
        s = 1 - torch.exp(-y)  # sigmoid of the input
        return s if order == 1 else s * (1 - s)
    raise AssertionError(act)


def _deriv_from_x(act, v, order):
    if act == "linear":
        return torch.ones_like(v) if order == 1 else 0 * v
    if act == "swish":
        s = torch.sigmoid(v)
        return s + v * s * (1 - s) if order == 1 else s * (1 - s) * (2 + v * (1 - 2 * s))
    raise AssertionError(act)


class FakeOps:
    """CPU stand-in for the compiled extension, implementing the documented contract."""

    calls: list

    def __init__(self):
        self.calls = []
        self.by_idx = {s.cuda_idx: name for name, s in ba.activation_funcs.items()}

    def bias_act(self, x, b, xref, yref, dy, grad, dim, act_idx, alpha, gain, clamp):
        self.calls.append(("bias_act", grad))
        act = self.by_idx[act_idx]
        spec = ba.activation_funcs[act]
        for t in (xref, yref, dy):
            assert t.numel() == 0 or t.shape == x.shape
        bshape = [-1 if i == dim else 1 for i in range(x.ndim)]
        bias = b.reshape(bshape) if b.numel() else 0
        if grad == 0:
            out = naive_like(act, x + bias, alpha) * gain
            return out.clamp(-clamp, clamp) if clamp >= 0 else out
        if spec.ref == "y":
            d = _deriv_from_y(act, yref / gain if gain else 0 * yref, alpha, grad)
        else:
            d = _deriv_from_x(act, (xref + bias) if xref.numel() else 0 * x, grad)
        out = x * d * gain
        if grad == 2:
            out = out * dy
        if clamp >= 0:
            assert yref.numel() > 0, "clamped gradient without yref"
            out = torch.where((yref > -clamp) & (yref < clamp), out, 0 * out)
        return out

    def upfirdn2d(self, x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
        self.calls.append(("upfirdn2d", f.shape))
        assert f.ndim == 2 and f.dtype == torch.float32
        return ufd._upfirdn2d_ref(x, f, (upx, upy), (downx, downy), (px0, px1, py0, py1), flip, gain)


def naive_like(act, v, alpha):
    return torch.from_numpy(NAIVE_ACTS[act][0](v.detach().numpy(), alpha)).to(v.dtype)


class HostOps:
    """The kernels' own per-element code (csrc/faceapp_math.h) compiled for the CPU by
    csrc/host_check.cpp, behind the same interface and allocation rules as faceapp_ops.cpp."""

    def __init__(self, lib):
        self.lib = lib
        self.calls = []

    @staticmethod
    def _dtype(t):
        return {torch.float32: 0, torch.float64: 1}[t.dtype]

    @staticmethod
    def _ptr(t):
        return ctypes.c_void_p(t.data_ptr() if t.numel() else None)

    def bias_act(self, x, b, xref, yref, dy, grad, dim, act_idx, alpha, gain, clamp):
        self.calls.append(("bias_act", grad))
        assert x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        for t in (xref, yref, dy):
            assert t.numel() == 0 or (t.shape == x.shape and t.dtype == x.dtype)
            assert t.numel() == 0 or all(s1 == s2 or n == 1 for s1, s2, n in zip(t.stride(), x.stride(), x.shape))
        y = torch.empty_like(x)
        step_b = x.stride(dim) if b.numel() else 1
        rc = self.lib.faceapp_host_bias_act(
            self._dtype(x), self._ptr(x), self._ptr(b), self._ptr(xref), self._ptr(yref), self._ptr(dy),
            self._ptr(y), ctypes.c_int64(x.numel()), ctypes.c_int64(step_b), ctypes.c_int64(b.numel()),
            int(grad), int(act_idx), ctypes.c_double(alpha), ctypes.c_double(gain), ctypes.c_double(clamp),
        )  # fmt: skip
        assert rc == 0
        return y

    def upfirdn2d(self, x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
        self.calls.append(("upfirdn2d", f.shape))
        assert f.ndim == 2 and f.dtype == torch.float32
        f = f.contiguous()
        n, c, h, w = x.shape
        fh, fw = f.shape
        ow = (w * upx + px0 + px1 - fw + downx) // downx
        oh = (h * upy + py0 + py1 - fh + downy) // downy
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        y = torch.empty(n, c, oh, ow, dtype=x.dtype).contiguous(
            memory_format=torch.channels_last if cl else torch.contiguous_format
        )
        dims = (ctypes.c_int * 15)(n, c, h, w, oh, ow, fh, fw, upx, upy, downx, downy, px0, py0, int(flip))
        rc = self.lib.faceapp_host_upfirdn2d(
            self._dtype(x), self._ptr(x), ctypes.c_void_p(f.data_ptr()), self._ptr(y),
            (ctypes.c_int64 * 4)(*x.stride()), (ctypes.c_int64 * 4)(*y.stride()), dims, ctypes.c_double(gain),
        )  # fmt: skip
        assert rc == 0
        return y


def _cxx():
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    if _cxx() is None:
        pytest.skip("no C++ compiler to build csrc/host_check.cpp")
    out = tmp_path_factory.mktemp("host_check") / "host_check.so"
    src = _ext.CSRC_DIR / "host_check.cpp"
    subprocess.run([_cxx(), "-O1", "-std=c++17", "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    return ctypes.CDLL(str(out))


@pytest.fixture(params=["python", "host"])
def kernel_ops(request, monkeypatch):
    """The compiled module's stand-in: a Python model of the contract, or the kernel code itself."""
    ops = FakeOps() if request.param == "python" else HostOps(request.getfixturevalue("host_lib"))
    monkeypatch.setattr(_ext, "load", lambda: ops)
    return ops


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("clamp", [None, 0.6])
def test_bias_act_cuda_wiring(kernel_ops, act, clamp):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    spec, alpha, gain, clamp_ = ba._resolve(act, None, 1.3, clamp)
    fn_cuda = lambda x, b: ba._bias_act_cuda(1, act, alpha, gain, clamp_).apply(x, b)  # noqa: E731
    fn_ref = lambda x, b: ba._bias_act_ref(x, b, 1, spec, alpha, gain, clamp_)  # noqa: E731

    y, yr = fn_cuda(x, b), fn_ref(x, b)
    torch.testing.assert_close(y, yr)
    # first and second derivatives against the reference path's autograd
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad(y, (x, b), dy, create_graph=True)
    gr = torch.autograd.grad(yr, (x, b), dy, create_graph=True)
    for a, e in zip(g, gr):
        torch.testing.assert_close(a, e)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    gg = torch.autograd.grad((g[0] * w).sum(), (x, b, dy), allow_unused=True)
    ggr = torch.autograd.grad((gr[0] * w).sum(), (x, b, dy), allow_unused=True)
    for a, e in zip(gg, ggr):
        a = torch.zeros_like(e) if a is None and e is not None else a
        e = torch.zeros_like(a) if e is None and a is not None else e
        if a is not None:
            torch.testing.assert_close(a, e)
    assert any(c[1] == 1 for c in kernel_ops.calls) or (act == "linear" and clamp is None)
    if isinstance(kernel_ops, HostOps):
        # float32 and channels_last through the kernel code
        xs = x.detach().float().contiguous(memory_format=torch.channels_last)
        bs = b.detach().float()
        torch.testing.assert_close(fn_cuda(xs, bs), fn_ref(xs, bs), rtol=1e-5, atol=1e-5)
        xs.requires_grad_(True)
        dys = torch.randn(xs.shape).contiguous(memory_format=torch.channels_last)
        (gs,) = torch.autograd.grad(fn_cuda(xs, bs), xs, dys)
        (gsr,) = torch.autograd.grad(fn_ref(xs, bs), xs, dys)
        torch.testing.assert_close(gs, gsr, rtol=1e-5, atol=1e-5)


def test_bias_act_cuda_identity_shortcut(kernel_ops):
    # linear, no bias, gain 1, no clamp: no kernel launch, gradients still flow
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = ba._bias_act_cuda(1, "linear", 0.0, 1.0, -1.0).apply(x, None)
    torch.testing.assert_close(y, x)
    (g,) = torch.autograd.grad((y * 3).sum(), x)
    torch.testing.assert_close(g, torch.full_like(x, 3.0))
    assert kernel_ops.calls == []


@pytest.mark.parametrize("case", GRAD_CASES)
def test_upfirdn2d_cuda_wiring(kernel_ops, case):
    x, f, _, kw = _case_inputs(case, seed=8)
    x, f = x.requires_grad_(True), f.float()
    up_, down_, pad_ = _norm_args(**kw)
    fn = lambda x: ufd._upfirdn2d_cuda(up_, down_, pad_, kw["flip_filter"], float(kw["gain"])).apply(x, f)  # noqa: E731
    ref = upfirdn2d(x, f, impl="ref", **kw)
    torch.testing.assert_close(fn(x), ref)
    _assert_grads(fn, (x,))
    if f.ndim == 1:  # separable filters run as a horizontal then a vertical pass
        assert {tuple(s) for op, s in kernel_ops.calls} >= {(1, f.shape[0]), (f.shape[0], 1)}
    if isinstance(kernel_ops, HostOps):
        xs = x.detach().float().contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fn(xs), fn(xs.contiguous()), rtol=1e-5, atol=1e-5)
        ref = upfirdn2d(xs, f, impl="ref", **kw)
        torch.testing.assert_close(fn(xs), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", UPFIRDN_CASES)
def test_upfirdn2d_kernel_code_matches_naive(host_lib, monkeypatch, case):
    # The kernel arithmetic (run on the CPU) against the numpy definition, every case.
    monkeypatch.setattr(_ext, "load", lambda: HostOps(host_lib))
    x, f, _, kw = _case_inputs(case, seed=12)
    f = torch.ones(1, 1) if f is None else f.float()
    up_, down_, pad_ = _norm_args(**kw)
    flip, gain = kw["flip_filter"], kw["gain"]
    y = ufd._upfirdn2d_cuda(up_, down_, pad_, flip, float(gain)).apply(x, f)
    expect = naive_upfirdn2d(x.numpy(), f.double().numpy(), up_, down_, pad_, flip, gain)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Implementation selection and the build cache


class _CudaLike:
    """Just enough of a tensor for _ext.use_kernel: a CUDA-resident one."""

    is_cuda = True
    device = "cuda:0"


@pytest.fixture
def clean_ext(monkeypatch):
    monkeypatch.delenv(_ext.ENV_VAR, raising=False)
    _ext._reset_for_tests()
    yield
    _ext._reset_for_tests()


def test_strict_cuda_on_cpu_tensor_raises(clean_ext, monkeypatch):
    x = torch.randn(1, 2, 4, 4)
    f = setup_filter([1, 2, 1])
    with pytest.raises(CudaOpsError, match="CUDA tensor"):
        ba.bias_act(x, impl="cuda")
    with pytest.raises(CudaOpsError, match="CUDA tensor"):
        upfirdn2d(x, f, impl="cuda")
    monkeypatch.setenv(_ext.ENV_VAR, "cuda")
    with pytest.raises(CudaOpsError, match="FACEAPP_CUDA_OPS"):
        ba.bias_act(x, act="relu")
    with pytest.raises(CudaOpsError):
        upsample2d(x, f)
    # an explicit impl='ref' still wins over the environment
    assert ba.bias_act(x, act="relu", impl="ref").shape == x.shape


def test_auto_on_cpu_uses_ref_without_building(clean_ext, monkeypatch):
    def boom(**kw):
        raise AssertionError("auto mode must not build for CPU tensors")

    monkeypatch.setattr(_ext, "compile_extension", boom)
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(ba.bias_act(x, act="tanh"), torch.tanh(x))
    assert downsample2d(x, setup_filter([1, 1])).shape == (1, 2, 2, 2)
    assert _ext._module is None


def test_env_switch_and_build_failure_fallback(clean_ext, monkeypatch):
    builds = []

    def failing_build(**kw):
        builds.append(1)
        raise CudaOpsError("nvcc exploded")

    monkeypatch.setattr(_ext, "compile_extension", failing_build)
    t = _CudaLike()
    monkeypatch.setenv(_ext.ENV_VAR, "ref")
    assert _ext.use_kernel("auto", t) is False and not builds  # ref forced: no build attempt
    monkeypatch.setenv(_ext.ENV_VAR, "auto")
    with pytest.warns(RuntimeWarning, match="nvcc exploded"):
        assert _ext.use_kernel("auto", t) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call must not warn again, nor rebuild
        assert _ext.use_kernel("auto", t) is False
    assert len(builds) == 1
    with pytest.raises(CudaOpsError, match="nvcc exploded"):
        _ext.use_kernel("cuda", t)  # strict mode reports the failure
    monkeypatch.setenv(_ext.ENV_VAR, "fastest")
    with pytest.raises(CudaOpsError, match="not valid"):
        _ext.use_kernel("auto", t)


def test_auto_uses_kernel_when_build_succeeds(clean_ext, monkeypatch):
    sentinel = object()
    monkeypatch.setattr(_ext, "compile_extension", lambda **kw: sentinel)
    assert _ext.use_kernel("auto", _CudaLike()) is True
    assert _ext.load() is sentinel


def test_build_dir_keyed_by_source_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEAPP_CACHE", str(tmp_path / "cache"))
    d1 = _ext.default_build_dir()
    assert d1.parent == tmp_path / "cache" / "torch_extensions"
    assert d1.name.startswith(_ext.EXT_NAME + "-")
    assert _ext.default_build_dir() == d1  # stable
    src = tmp_path / "csrc"
    shutil.copytree(_ext.CSRC_DIR, src)
    monkeypatch.setattr(_ext, "CSRC_DIR", src)
    assert _ext.default_build_dir() == d1
    with open(src / "faceapp_ops.cu", "a") as fh:
        fh.write("\n// edited\n")
    assert _ext.default_build_dir() != d1


def test_import_builds_nothing():
    code = (
        "import sys, faceapp.cuda, faceapp.cuda.bias_act, faceapp.cuda.upfirdn2d\n"
        "from faceapp.cuda import _ext\n"
        "assert _ext._module is None\n"
        "assert 'torch.utils.cpp_extension' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _nvcc_home():
    return _ext._find_cuda_home()


_BUILD_SNIPPET = """
import sys, time
from faceapp.cuda import _ext
t0 = time.perf_counter()
mod = _ext.compile_extension(build_dir=sys.argv[1])
assert callable(mod.bias_act) and callable(mod.upfirdn2d)
import torch
assert hasattr(torch.ops.faceapp_ops, "bias_act") and hasattr(torch.ops.faceapp_ops, "upfirdn2d")
print(f"{time.perf_counter() - t0:.1f}")
"""


@pytest.mark.slow
@pytest.mark.skipif(_nvcc_home() is None, reason="nvcc not found (set CUDA_HOME); cannot compile the CUDA ops")
def test_extension_compiles_without_gpu(tmp_path):
    # In subprocesses: a process can hold only one build of the op library, and a fresh
    # process proves the cached build loads on its own.
    env = dict(os.environ)
    env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    build_dir = tmp_path / "build"

    def build():
        out = subprocess.run(
            [sys.executable, "-c", _BUILD_SNIPPET, str(build_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert out.returncode == 0, out.stderr[-4000:]
        return float(out.stdout.strip().splitlines()[-1])

    elapsed = build()
    print(f"faceapp_ops compiled in {elapsed:.1f} s")
    so = [p for p in build_dir.iterdir() if p.suffix in (".so", ".pyd")]
    assert so, "no shared library in the build dir"
    mtime = so[0].stat().st_mtime_ns
    build()  # unchanged sources: the cached library is loaded, not rebuilt
    assert so[0].stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------------------------
# CUDA kernel vs reference (needs a GPU)


@pytest.fixture
def cuda_ext():
    try:
        _ext.load()
    except CudaOpsError as e:
        pytest.fail(f"CUDA is available but the extension did not build: {e}")


@pytest.mark.cuda
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_act_cuda_parity(cuda_ext, act, clamp, channels_last):
    gen = torch.Generator().manual_seed(9)
    x = (torch.randn(3, 5, 4, 6, generator=gen, dtype=torch.float64) * 2).cuda()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b = torch.randn(5, generator=gen, dtype=torch.float64).cuda()
    x.requires_grad_(True)
    b.requires_grad_(True)
    kw = dict(act=act, gain=1.3, clamp=clamp)
    y = ba.bias_act(x, b, impl="cuda", **kw)
    yr = ba.bias_act(x, b, impl="ref", **kw)
    torch.testing.assert_close(y, yr)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (x, b), dy, create_graph=True)
    gr = torch.autograd.grad(yr, (x, b), dy, create_graph=True)
    for a, e in zip(g, gr):
        torch.testing.assert_close(a, e)
    if ba.activation_funcs[act].has_2nd_grad:
        (gg,) = torch.autograd.grad(g[0].square().sum(), x)
        (ggr,) = torch.autograd.grad(gr[0].square().sum(), x)
        torch.testing.assert_close(gg, ggr)
    # float32 and float16 storage
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-2)):
        xs, bs = x.detach().to(dtype), b.detach().to(dtype)
        torch.testing.assert_close(
            ba.bias_act(xs, bs, impl="cuda", **kw).double(),
            ba.bias_act(xs.double(), bs.double(), impl="ref", **kw),
            rtol=tol,
            atol=tol,
        )


@pytest.mark.cuda
@pytest.mark.parametrize("act", ["tanh", "swish", "softplus", "lrelu"])
def test_bias_act_cuda_gradcheck(cuda_ext, act):
    x = torch.randn(2, 3, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device="cuda", requires_grad=True)
    _assert_grads(lambda x, b: ba.bias_act(x, b, act=act, clamp=50.0, impl="cuda"), (x, b))


@pytest.mark.cuda
@pytest.mark.parametrize("case", GRAD_CASES)
def test_upfirdn2d_cuda_gradcheck(cuda_ext, case):
    x, f, _, kw = _case_inputs(case, seed=11)
    x, f = x.cuda().requires_grad_(True), f.float().cuda()
    _assert_grads(lambda x: upfirdn2d(x, f, impl="cuda", **kw), (x,))


@pytest.mark.cuda
@pytest.mark.parametrize("case", UPFIRDN_CASES)
def test_upfirdn2d_cuda_parity(cuda_ext, case):
    x, f, _, kw = _case_inputs(case, seed=10)
    x, f = x.cuda().requires_grad_(True), None if f is None else f.float().cuda()
    y = upfirdn2d(x, f, impl="cuda", **kw)
    yr = upfirdn2d(x, f, impl="ref", **kw)
    torch.testing.assert_close(y, yr)
    dy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, dy, create_graph=True)
    (gr,) = torch.autograd.grad(yr, x, dy, create_graph=True)
    torch.testing.assert_close(g, gr)
    xs = x.detach().float().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        upfirdn2d(xs, f, impl="cuda", **kw), upfirdn2d(xs, f, impl="ref", **kw), rtol=1e-5, atol=1e-5
    )
    xh = x.detach().half()
    torch.testing.assert_close(
        upfirdn2d(xh, f, impl="cuda", **kw).double(),
        upfirdn2d(xh.double(), f, impl="ref", **kw),
        rtol=1e-2,
        atol=1e-2,
    )
