"""Fused bias + activation + gain + clamp.

Same semantics as NVIDIA stylegan2-ada-pytorch's ``torch_utils.ops.bias_act``:
``y = clamp(act(x + b) * gain, -clamp, clamp)``. The reference path is plain
PyTorch (autograd gives any order of derivative); the CUDA path is one fused
kernel with hand-written first and second derivatives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faceapp.cuda import _ext


@dataclass(frozen=True)
class ActivationSpec:
    """How one activation behaves.

    func:          the activation itself, ``func(x, alpha) -> Tensor``.
    def_alpha:     default ``alpha`` (only lrelu uses it).
    def_gain:      default ``gain``; sqrt(2) for the ReLU family keeps the
                   variance of a He-initialised layer's output at 1.
    cuda_idx:      the activation's number in the kernel (csrc/faceapp_ops.h).
    ref:           what the kernel's backward reads: 'y' (the output suffices,
                   saves memory), 'x' (needs the input) or '' (constant slope).
    has_2nd_grad:  False where the second derivative is zero almost everywhere.
    """

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    cuda_idx: int
    ref: str
    has_2nd_grad: bool


activation_funcs: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, a: x, 0.0, 1.0, 1, "", False),
    "relu": ActivationSpec(lambda x, a: F.relu(x), 0.0, math.sqrt(2), 2, "y", False),
    "lrelu": ActivationSpec(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2), 3, "y", False),
    "tanh": ActivationSpec(lambda x, a: torch.tanh(x), 0.0, 1.0, 4, "y", True),
    "sigmoid": ActivationSpec(lambda x, a: torch.sigmoid(x), 0.0, 1.0, 5, "y", True),
    "elu": ActivationSpec(lambda x, a: F.elu(x), 0.0, 1.0, 6, "y", True),
    "selu": ActivationSpec(lambda x, a: F.selu(x), 0.0, 1.0, 7, "y", True),
    "softplus": ActivationSpec(lambda x, a: F.softplus(x), 0.0, 1.0, 8, "y", True),
    "swish": ActivationSpec(lambda x, a: torch.sigmoid(x) * x, 0.0, 1.0, 9, "x", True),
}


def _resolve(act: str, alpha, gain, clamp) -> tuple[ActivationSpec, float, float, float]:
    """Fill in defaults; clamp < 0 means 'no clamp' (what the kernel expects)."""
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def _check_bias(x: torch.Tensor, b: torch.Tensor | None, dim: int) -> None:
    if b is None:
        return
    if not (0 <= dim < x.ndim):
        raise ValueError(f"dim={dim} is out of range for a {x.ndim}-D tensor")
    if b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias must be 1-D with {x.shape[dim]} elements (x.shape[{dim}]); got shape {tuple(b.shape)}")


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Add a bias, apply an activation, scale by a gain and clamp, in one op.

    Args:
        x:      input tensor of any shape.
        b:      1-D bias with ``x.shape[dim]`` elements, or None for no bias.
        dim:    the dimension of ``x`` the bias runs along (1 = channels of NCHW).
        act:    one of ``activation_funcs``: 'linear', 'relu', 'lrelu', 'tanh',
                'sigmoid', 'elu', 'selu', 'softplus', 'swish'.
        alpha:  slope of lrelu's negative part; None = the activation's default (0.2).
        gain:   output scale; None = the activation's default (sqrt(2) for
                relu/lrelu, 1 otherwise).
        clamp:  clamp the output to [-clamp, clamp]; None = no clamping.
        impl:   'auto' (kernel for CUDA tensors when it builds, else reference),
                'ref' (pure PyTorch) or 'cuda' (kernel or CudaOpsError).
                The env var FACEAPP_CUDA_OPS overrides 'auto'.

    Returns:
        A tensor with the shape and dtype of ``x``.
    """
    _check_bias(x, b, dim)
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if _ext.use_kernel(impl, x):
        return _bias_act_cuda(dim, act, alpha, gain, clamp).apply(x, b)
    return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)


def _bias_act_ref(x, b, dim, spec: ActivationSpec, alpha: float, gain: float, clamp: float) -> torch.Tensor:
    """Pure PyTorch version; autograd provides every derivative."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# --------------------------------------------------------------------------------------------------
# CUDA path. One autograd.Function class per distinct configuration, cached, so that
# the scalar arguments are baked in rather than threaded through ctx.

_cuda_cache: dict[tuple, type[torch.autograd.Function]] = {}


def _bias_act_cuda(dim: int, act: str, alpha: float, gain: float, clamp: float):
    key = (dim, act, alpha, gain, clamp)
    if key in _cuda_cache:
        return _cuda_cache[key]
    spec = activation_funcs[act]
    empty = torch.empty([0])

    def run(x, b, xref, yref, dy, grad: int):
        # The kernel wants dense tensors; empty tensors stand for "absent".
        e = torch.empty([0], device=x.device, dtype=x.dtype)

        def opt(t):  # saved placeholders are empty CPU tensors: keep every argument on x's device
            return e if t is None or t.numel() == 0 else t

        return _ext.load().bias_act(
            x,
            opt(None if b is None else b.to(x.dtype).contiguous()),
            opt(xref),
            opt(yref),
            opt(dy),
            grad,
            dim,
            spec.cuda_idx,
            alpha,
            gain,
            clamp,
        )

    def fmt(x: torch.Tensor):
        # Keep channels_last inputs channels_last (StyleGAN runs some layers that way).
        if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        return torch.contiguous_format

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):  # x: [..., C at dim, ...], b: [C] or None
            ctx.memory_format = fmt(x)
            x = x.contiguous(memory_format=ctx.memory_format)
            trivial = act == "linear" and b is None and gain == 1.0 and clamp < 0
            y = x if trivial else run(x, b, None, None, None, 0)
            ctx.save_for_backward(
                x if spec.ref == "x" or spec.has_2nd_grad else empty,
                b if b is not None and (spec.ref == "x" or spec.has_2nd_grad) else empty,
                # The clamp's gradient mask needs y whatever the activation.
                y if spec.ref == "y" or clamp >= 0 else empty,
            )
            ctx.has_b = b is not None
            return y

        @staticmethod
        def backward(ctx, dy):
            dy = dy.contiguous(memory_format=ctx.memory_format)
            x, b, y = ctx.saved_tensors
            b = b if ctx.has_b and b.numel() > 0 else None
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy
                if act != "linear" or gain != 1.0 or clamp >= 0:
                    dx = BiasActCudaGrad.apply(dy, x, b, y)
            if ctx.needs_input_grad[1]:
                db = dx.sum([i for i in range(dx.ndim) if i != dim])
            return dx, db

    class BiasActCudaGrad(torch.autograd.Function):
        """dx = dy * act'(x + b) * gain (masked by the clamp); differentiable once more."""

        @staticmethod
        def forward(ctx, dy, x, b, y):
            ctx.memory_format = fmt(dy)
            ctx.has_b = b is not None
            dx = run(dy, b, x, y, None, 1)
            ctx.save_for_backward(dy if spec.has_2nd_grad else empty, x, b if b is not None else empty, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx):
            d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
            dy, x, b, y = ctx.saved_tensors
            b = b if ctx.has_b else None
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActCudaGrad.apply(d_dx, x, b, y)
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = run(d_dx, b, x, y, dy, 2)
            if spec.has_2nd_grad and ctx.needs_input_grad[2]:
                d_b = d_x.sum([i for i in range(d_x.ndim) if i != dim])
            return d_dy, d_x, d_b, None

    _cuda_cache[key] = BiasActCuda
    return BiasActCuda
