"""Pivotal tuning (PTI, Roich et al. 2021): fine-tune a copy of G so that G(pivot) becomes the photo.

The projection's ws are the pivot. A deep copy of G has its synthesis network fine-tuned (mapping frozen)
with perceptual + L2 losses toward the target at the pivot, plus the locality regulariser: at a w sampled
near the pivot (a step from the pivot toward a random w), the tuned copy's image must stay close to the
original G's image there, so edits that move ws away from the pivot still behave as G does. The shared G
is only read (no parameter, buffer or .grad of it changes); the copy is for this face only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from faceapp.errors import FaceAppError
from faceapp.inversion.projector import Progress, noise_buffers, prepare_target

__all__ = ["PTIConfig", "pivotal_tuning"]


@dataclass(frozen=True)
class PTIConfig:
    """Fine-tuning knobs (defaults: the PTI paper's, with the locality step as a fraction of the way)."""

    learning_rate: float = 3e-4  # Adam learning rate of the synthesis weights
    perceptual_weight: float = 1.0  # perceptual distance to the target at the pivot
    l2_weight: float = 1.0  # pixel MSE to the target at the pivot
    locality_alpha: float = 0.75  # locality samples lie this fraction of the way from the pivot to a random w
    locality_every: int = 1  # apply the locality term every this-many steps
    locality_perceptual_weight: float = 1.0  # perceptual vs L2 mix inside the locality term (PTI: equal)
    locality_l2_weight: float = 1.0
    noise_mode: str = "const"  # synthesis noise while tuning (and what the tuned copy is meant to render with)


def pivotal_tuning(
    G: nn.Module,
    ws_pivot: torch.Tensor,
    target: torch.Tensor,
    *,
    num_steps: int = 350,
    perceptual: nn.Module | None = None,
    locality_weight: float = 0.1,
    seed: int = 0,
    progress: Progress | None = None,
    config: PTIConfig | None = None,
    noise: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Fine-tune a deep copy of G on one photo at its pivot; return the copy (G itself is untouched).

    Args:
        G:               the shared Generator (read only).
        ws_pivot:        [1,num_ws,w_dim] the pivot (a projection's or an encoder's ws).
        target:          [1,3,H,W] in [-1,1], resized to G.img_resolution.
        num_steps:       optimisation steps (PTI uses 350 at 1024 px).
        perceptual:      a PerceptualLoss; None builds perceptual_loss('auto') on G's device.
        locality_weight: weight of the locality regulariser (0 = off; PTI's 0.1).
        seed:            seeds the random w's of the locality term (same seed -> identical tuned weights).
        progress:        progress(fraction, message) after every step.
        config:          PTIConfig; None = defaults.
        noise:           noise buffers {name in G.synthesis: [R,R]} to install in the copy (a projection's
                         optimised noise); None keeps G's.

    Returns:
        The tuned copy of G, in eval mode with requires_grad False, on G's device.
    """
    cfg = config or PTIConfig()
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    device = next(G.parameters()).device
    target = prepare_target(target, G.img_resolution, device)  # [N,3,R,R]
    ws_pivot = ws_pivot.detach().to(device=device, dtype=torch.float32)
    if ws_pivot.ndim != 3 or tuple(ws_pivot.shape[1:]) != (G.num_ws, G.w_dim):
        raise FaceAppError(f"ws_pivot must be [N,{G.num_ws},{G.w_dim}], got {tuple(ws_pivot.shape)}")
    if perceptual is None and (cfg.perceptual_weight > 0 or cfg.locality_perceptual_weight > 0):
        from faceapp.inversion.losses import perceptual_loss

        perceptual = perceptual_loss("auto", device=device)

    G_tuned = copy.deepcopy(G).eval()
    G_tuned.requires_grad_(False)
    if noise:
        bufs = noise_buffers(G_tuned)
        for name, value in noise.items():
            if name not in bufs:
                raise FaceAppError(f"noise buffer {name!r} is not in this generator's synthesis network")
            bufs[name].copy_(value)
    params = [p for p in G_tuned.synthesis.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    gen = torch.Generator(device=device).manual_seed(seed)

    target_feats = None
    if perceptual is not None and cfg.perceptual_weight > 0:
        with torch.no_grad():
            target_feats = perceptual.features(target)

    for step in range(num_steps):
        img = G_tuned.synthesis(ws_pivot, noise_mode=cfg.noise_mode)  # [N,3,R,R]
        loss = cfg.l2_weight * (img - target).square().mean()
        if target_feats is not None:
            loss = loss + cfg.perceptual_weight * perceptual.distance(perceptual.features(img), target_feats).mean()
        if locality_weight > 0 and step % cfg.locality_every == 0:
            loss = loss + locality_weight * _locality_loss(G, G_tuned, ws_pivot, perceptual, cfg, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            loss_value = float(loss.detach())
            progress((step + 1) / num_steps, f"pivotal tuning: step {step + 1}/{num_steps}, loss {loss_value:.4f}")

    G_tuned.requires_grad_(False)
    return G_tuned


def _locality_loss(G, G_tuned, ws_pivot, perceptual, cfg: PTIConfig, gen: torch.Generator) -> torch.Tensor:
    """Distance between the tuned and the original G at a w a step from the pivot toward a random w."""
    device = ws_pivot.device
    n = ws_pivot.shape[0]
    with torch.no_grad():
        z = torch.randn([n, G.z_dim], generator=gen, device=device)
        w_rand = G.mapping(z, None)  # [N,num_ws,w_dim]
        ws_near = ws_pivot.lerp(w_rand, cfg.locality_alpha)  # [N,num_ws,w_dim]
        img_orig = G.synthesis(ws_near, noise_mode=cfg.noise_mode)
    img = G_tuned.synthesis(ws_near, noise_mode=cfg.noise_mode)
    loss = cfg.locality_l2_weight * (img - img_orig).square().mean()
    if perceptual is not None and cfg.locality_perceptual_weight > 0:
        loss = loss + cfg.locality_perceptual_weight * perceptual(img, img_orig).mean()
    return loss
