"""Projection: optimise ws so that G.synthesis(ws) reproduces a target image.

Semantics of NVIDIA's stylegan2-ada-pytorch projector (projector.py): w_avg / w_std from 10,000 mapped
samples, Gaussian noise added to w that ramps down to zero over the first 75% of the steps, a learning
rate that ramps up (5%) and down (cosine, last 25%), Adam, and (noise_mode 'const') the synthesis noise
buffers optimised as well, with the multi-scale autocorrelation regulariser and re-normalised to zero
mean / unit variance after every step. Additions: W+ as well as W, a start from any ws (an encoder's
output), an optional pixel MSE and identity term, a seed, a progress callback, and G is never modified
(the noise being optimised is a copy, substituted functionally; gradients are taken only for the
variables being optimised, so not even G's `.grad` fields change).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from faceapp.errors import FaceAppError

__all__ = ["ProjectorConfig", "ProjectionResult", "project", "w_stats", "prepare_target", "noise_buffers"]

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ProjectorConfig:
    """Optimisation knobs (defaults: NVIDIA's projector)."""

    initial_learning_rate: float = 0.1  # peak Adam learning rate (0.01-0.03 suits a refinement from an encoder)
    lr_rampup_length: float = 0.05  # fraction of the steps over which the learning rate ramps up from 0
    lr_rampdown_length: float = 0.25  # fraction of the steps, at the end, of the cosine ramp-down to 0
    initial_noise_factor: float = 0.05  # Gaussian noise added to w at step 0, times w_std (0 = none)
    noise_ramp_length: float = 0.75  # fraction of the steps over which that noise decays (quadratically) to 0
    regularize_noise_weight: float = 1e5  # weight of the noise-buffer autocorrelation penalty
    optimize_noise: bool = True  # also optimise the noise buffers (only when noise_mode == 'const')
    noise_mode: str = "const"  # synthesis noise while projecting: 'const' | 'none' | 'random'
    perceptual_weight: float = 1.0  # weight of the perceptual distance (0 = off)
    mse_weight: float = 0.0  # weight of the pixel MSE on [-1,1] images
    identity_weight: float = 0.0  # weight of the identity distance (needs `identity=`)
    w_avg_samples: int = 10_000  # mapped z samples for w_avg / w_std


@dataclass
class ProjectionResult:
    """What `project` returns.

    ws:      [N, num_ws, w_dim] the final latents (without the ramped w noise), detached.
    losses:  total loss per step (floats), `history` the same per term.
    noise:   the optimised noise buffers {name in G.synthesis: [R,R]} (empty when not optimised); G's own
             buffers are untouched, so install these only into a copy (pivotal tuning does).
    """

    ws: torch.Tensor
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    noise: dict[str, torch.Tensor] = field(default_factory=dict)


_W_STATS_CACHE: dict = {}


@torch.no_grad()
def w_stats(G: nn.Module, num_samples: int = 10_000, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_avg [w_dim], w_std scalar) of G's mapping from `num_samples` random z, as NVIDIA's projector.

    Cached per mapping network while its parameters are unchanged (in-place updates bump their versions).
    """
    if getattr(G, "c_dim", 0):
        raise FaceAppError("projection needs an unconditional generator (c_dim == 0)")
    mapping = G.mapping
    params = list(mapping.parameters())
    device = params[0].device
    key = (num_samples, seed, str(device), tuple(p._version for p in params))
    hit = _W_STATS_CACHE.get("last")
    # a weak reference: a new network that happens to get a freed one's id() is not mistaken for it
    if hit is not None and hit[0]() is mapping and hit[1] == key:
        return hit[2]
    gen = torch.Generator(device=device).manual_seed(seed)
    ws = []
    for start in range(0, num_samples, 2048):  # chunks bound the memory of a big mapping network
        z = torch.randn([min(2048, num_samples - start), G.z_dim], generator=gen, device=device)
        ws.append(mapping(z, None)[:, 0, :].float())  # [n, w_dim]
    w = torch.cat(ws)  # [num_samples, w_dim]
    w_avg = w.mean(dim=0)  # [w_dim]
    w_std = ((w - w_avg).square().sum() / num_samples).sqrt()  # scalar, as in NVIDIA's projector
    _W_STATS_CACHE["last"] = (weakref.ref(mapping), key, (w_avg, w_std))  # one entry: the generator in use
    return w_avg, w_std


def prepare_target(target: torch.Tensor, resolution: int, device: torch.device | None = None) -> torch.Tensor:
    """target [N,3,H,W] (or [3,H,W]) in [-1,1] -> [N,3,R,R] float on `device` (area down, bicubic up)."""
    if target.ndim == 3:
        target = target.unsqueeze(0)
    if target.ndim != 4 or target.shape[1] != 3:
        raise FaceAppError(f"target must be an RGB image tensor [N,3,H,W] in [-1,1], got {tuple(target.shape)}")
    target = target.detach().to(device=device, dtype=torch.float32)
    if tuple(target.shape[2:]) != (resolution, resolution):
        down = max(target.shape[2:]) > resolution
        target = F.interpolate(target, size=(resolution, resolution), mode="area" if down else "bicubic",
                               align_corners=None if down else False).clamp(-1, 1)
    return target


def noise_buffers(G: nn.Module) -> dict[str, torch.Tensor]:
    """G.synthesis's per-layer constant noise buffers {name: [R,R]} (the tensors themselves, not copies)."""
    return {name: buf for name, buf in G.synthesis.named_buffers() if name.endswith("noise_const")}


def noise_regularization(noise: dict[str, torch.Tensor]) -> torch.Tensor:
    """NVIDIA's multi-scale noise penalty: squared autocorrelation at 1-px shifts, on a pyramid down to 8 px."""
    reg = 0.0
    for buf in noise.values():
        x = buf[None, None, :, :]  # [1,1,R,R]
        while True:
            reg = reg + (x * torch.roll(x, shifts=1, dims=3)).mean() ** 2
            reg = reg + (x * torch.roll(x, shifts=1, dims=2)).mean() ** 2
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return reg


def _learning_rate(t: float, cfg: ProjectorConfig) -> float:
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown_length) if cfg.lr_rampdown_length > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if cfg.lr_rampup_length > 0:
        ramp = ramp * min(1.0, t / cfg.lr_rampup_length)
    return cfg.initial_learning_rate * ramp


def project(
    G: nn.Module,
    target: torch.Tensor,
    *,
    ws_init: torch.Tensor | None = None,
    space: str = "w+",
    num_steps: int = 1000,
    perceptual: nn.Module | None = None,
    identity: nn.Module | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    config: ProjectorConfig | None = None,
) -> ProjectionResult:
    """Optimise ws so that G.synthesis(ws) matches `target`; G is left exactly as it was.

    Args:
        G:          a Generator (mapping + synthesis), unconditional; its device is used.
        target:     [N,3,H,W] in [-1,1] (usually N = 1), resized to G.img_resolution.
        ws_init:    start: [N,num_ws,w_dim] (e.g. an encoder's output), [N,w_dim] or None = w_avg. In 'w'
                    space a W+ start is averaged over its layers.
        space:      'w+' optimises one w per layer, 'w' one w shared by all layers.
        num_steps:  optimisation steps (NVIDIA uses 1000 from w_avg; a refinement needs far fewer).
        perceptual: a PerceptualLoss (faceapp.inversion.losses); None builds perceptual_loss('auto') on G's
                    device when config.perceptual_weight > 0 (real LPIPS if cached, else the offline loss).
        identity:   an IdentityLoss, used when config.identity_weight > 0.
        seed:       seeds every random draw here (same seed, same inputs -> identical ws).
        progress:   progress(fraction in [0,1], message) after every step.
        config:     ProjectorConfig (learning rates, ramps, weights); None = NVIDIA's defaults.

    Returns:
        ProjectionResult(ws [N,num_ws,w_dim], losses per step, history per term, optimised noise).
    """
    cfg = config or ProjectorConfig()
    if space not in ("w", "w+"):
        raise ValueError(f"space must be 'w' or 'w+', not {space!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if cfg.noise_mode not in ("const", "none", "random"):
        raise ValueError(f"noise_mode must be 'const', 'none' or 'random', not {cfg.noise_mode!r}")
    device = next(G.parameters()).device
    target = prepare_target(target, G.img_resolution, device)  # [N,3,R,R]
    n = target.shape[0]
    gen = torch.Generator(device=device).manual_seed(seed)

    w_avg, w_std = w_stats(G, cfg.w_avg_samples)
    num_ws, w_dim = G.num_ws, G.w_dim
    if ws_init is None:
        start = w_avg.view(1, 1, w_dim).expand(n, num_ws if space == "w+" else 1, w_dim)
    else:
        start = ws_init.detach().to(device=device, dtype=torch.float32)
        if start.ndim == 2:
            start = start.unsqueeze(1)  # [N,1,w_dim]
        if start.ndim != 3 or start.shape[2] != w_dim or start.shape[1] not in (1, num_ws):
            raise FaceAppError(f"ws_init must be [N,{num_ws},{w_dim}] or [N,{w_dim}], got {tuple(ws_init.shape)}")
        start = start.expand(n, -1, -1)
        if space == "w":
            start = start.mean(dim=1, keepdim=True)
        elif start.shape[1] == 1:
            start = start.expand(n, num_ws, w_dim)
    w_opt = start.clone().requires_grad_(True)  # [N, num_ws or 1, w_dim]

    optimize_noise = cfg.optimize_noise and cfg.noise_mode == "const"
    noise = {}
    if optimize_noise:
        noise = {name: torch.randn(buf.shape, generator=gen, device=device).requires_grad_(True)
                 for name, buf in noise_buffers(G).items()}
    optimizer = torch.optim.Adam([w_opt, *noise.values()], betas=(0.9, 0.999), lr=cfg.initial_learning_rate)

    use_perceptual = cfg.perceptual_weight > 0
    if use_perceptual and perceptual is None:
        from faceapp.inversion.losses import perceptual_loss

        perceptual = perceptual_loss("auto", device=device)
    use_identity = cfg.identity_weight > 0
    if use_identity and identity is None:
        raise FaceAppError("identity_weight > 0 needs an IdentityLoss passed as identity=")
    with torch.no_grad():
        target_feats = perceptual.features(target) if use_perceptual else None
        target_desc = identity.descriptors(target) if use_identity else None  # [N,128]

    result = ProjectionResult(ws=start.detach())
    for step in range(num_steps):
        t = step / num_steps
        lr = _learning_rate(t, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        w_noise_scale = float(w_std) * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp_length) ** 2
        w_noise = torch.randn(w_opt.shape, generator=gen, device=device) * w_noise_scale
        ws = (w_opt + w_noise).expand(n, num_ws, w_dim)  # [N,num_ws,w_dim]
        if noise:
            img = functional_call(G.synthesis, noise, (ws,), {"noise_mode": "const"})
        else:
            img = G.synthesis(ws, noise_mode=cfg.noise_mode)  # [N,3,R,R]

        terms = {}
        if use_perceptual:
            terms["perceptual"] = cfg.perceptual_weight * perceptual.distance(perceptual.features(img),
                                                                              target_feats).sum()
        if cfg.mse_weight > 0:
            terms["mse"] = cfg.mse_weight * (img - target).square().mean(dim=(1, 2, 3)).sum()
        if use_identity:
            terms["identity"] = cfg.identity_weight * identity(img, target_desc).sum()
        if noise:
            terms["noise_reg"] = cfg.regularize_noise_weight * noise_regularization(noise)
        if not terms:
            raise FaceAppError("every loss weight is 0: nothing to optimise")
        loss = sum(terms.values())

        # gradients for the optimised tensors only: G's parameters (and their .grad) stay untouched
        grads = torch.autograd.grad(loss, [w_opt, *noise.values()])
        for var, grad in zip([w_opt, *noise.values()], grads):
            var.grad = grad
        optimizer.step()
        with torch.no_grad():
            for buf in noise.values():  # back to zero mean, unit variance (NVIDIA)
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()

        loss_value = float(loss.detach())
        result.losses.append(loss_value)
        result.history.append({k: float(v.detach()) for k, v in terms.items()})
        if progress is not None:
            progress((step + 1) / num_steps, f"projecting: step {step + 1}/{num_steps}, loss {loss_value:.4f}")

    result.ws = w_opt.detach().expand(n, num_ws, w_dim).clone()
    result.noise = {name: buf.detach().clone() for name, buf in noise.items()}
    return result
