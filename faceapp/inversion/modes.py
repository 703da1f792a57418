"""One entry point for inversion with a quality knob: `invert(G, target, mode='fast'|'balanced'|'best')`.

- fast:     the encoder's ws (one forward pass). Without an encoder: a short W projection from w_avg.
- balanced: the encoder's ws refined by a short W+ projection. Without an encoder: a longer projection
            from w_avg (W first, then W+ from there).
- best:     balanced, then pivotal tuning: a copy of G tuned on this face is returned with the ws
            (render edits with `Inversion.G`); the shared G is never modified.

Step counts (InvertConfig) are sized for a 2-core CPU at 128 px; a GPU or a smaller G affords more.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from faceapp.errors import FaceAppError
from faceapp.inversion.projector import Progress, ProjectorConfig, prepare_target, project, w_stats
from faceapp.inversion.pti import PTIConfig, pivotal_tuning

__all__ = ["MODES", "InvertConfig", "Inversion", "invert"]

MODES = ("fast", "balanced", "best")


@dataclass(frozen=True)
class InvertConfig:
    """Knobs of the modes (steps sized for a 2-core CPU at 128 px; see docs/INVERSION.md for timings)."""

    fast_steps_no_encoder: int = 20  # fast, no encoder: W projection steps from w_avg
    balanced_steps: int = 15  # balanced: W+ refinement steps from the encoder's ws
    balanced_w_steps_no_encoder: int = 40  # balanced, no encoder: W steps from w_avg ...
    balanced_wplus_steps_no_encoder: int = 15  # ... then W+ steps from there
    pti_steps: int = 30  # best: pivotal-tuning steps after the balanced projection
    from_avg_learning_rate: float = 0.1  # peak learning rate of a projection from w_avg (NVIDIA's)
    refine_learning_rate: float = 0.03  # peak learning rate of a W+ refinement (a start that is already close)
    refine_noise_factor: float = 0.0  # w noise at the start of a refinement (times w_std); from w_avg: 0.05
    perceptual_weight: float = 1.0  # 0 turns the perceptual loss off everywhere (projection and tuning)
    mse_weight: float = 0.5  # pixel MSE on [-1,1] images, for colour fidelity the perceptual loss lacks
    identity_weight: float = 0.1  # used only when an IdentityLoss is passed
    pti_locality_weight: float = 0.1  # PTI's locality regulariser weight
    pti: PTIConfig = field(default_factory=PTIConfig)


@dataclass
class Inversion:
    """The result of `invert`.

    ws:      [1,num_ws,w_dim] the face's latents.
    G:       the generator to render them with: a tuned copy in 'best' mode, else the shared G itself.
    mode:    'fast' | 'balanced' | 'best'.
    metrics: {'start': 'encoder' | 'w_avg', 'note': ..., 'projection_steps', 'pti_steps', 'seconds',
              'mse', 'perceptual' (+ 'perceptual_kind'), 'identity' (when an IdentityLoss is given)}:
              reconstruction errors of G(ws) against the target at G's resolution.
    """

    ws: torch.Tensor
    G: nn.Module
    mode: str
    metrics: dict = field(default_factory=dict)


def invert(
    G: nn.Module,
    target: torch.Tensor,
    *,
    mode: str = "fast",
    encoder: nn.Module | None = None,
    perceptual: nn.Module | None = None,
    identity: nn.Module | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    config: InvertConfig | None = None,
) -> Inversion:
    """Invert an aligned face crop into G's W+ space at the quality `mode` asks for.

    Args:
        G:          the shared Generator (never modified).
        target:     [1,3,H,W] in [-1,1], an aligned crop (resized to G.img_resolution).
        mode:       'fast' | 'balanced' | 'best' (module docstring).
        encoder:    an Encoder4Editing (img [N,3,H,W] in [-1,1] -> ws) or None (projection from w_avg; the
                    metrics say so).
        perceptual: a PerceptualLoss for projection and tuning; None builds perceptual_loss('auto') once
                    (never downloads) when a mode needs one.
        identity:   an IdentityLoss to add to the projection (and to report in the metrics), or None.
        seed:       seeds every random draw (same seed -> identical ws).
        progress:   progress(fraction, message).
        config:     InvertConfig; None = defaults.

    Returns:
        Inversion(ws [1,num_ws,w_dim], G (tuned copy in 'best'), mode, metrics).
    """
    if mode not in MODES:
        raise FaceAppError(f"inversion mode must be one of {', '.join(MODES)}; got {mode!r}")
    cfg = config or InvertConfig()
    t0 = time.perf_counter()
    device = next(G.parameters()).device
    target = prepare_target(target, G.img_resolution, device)  # [1,3,R,R]
    metrics: dict = {"mode": mode, "start": "encoder" if encoder is not None else "w_avg"}
    if encoder is None:
        metrics["note"] = "no encoder in this model: projection from w_avg instead of an encoder pass"

    # the stages and their share of the progress bar, planned up front
    stages: list[tuple[str, int]] = []  # (kind, steps)
    if encoder is None:
        if mode == "fast":
            stages.append(("w", cfg.fast_steps_no_encoder))
        else:
            stages += [("w", cfg.balanced_w_steps_no_encoder), ("w+", cfg.balanced_wplus_steps_no_encoder)]
    elif mode != "fast":
        stages.append(("w+", cfg.balanced_steps))
    if mode == "best":
        stages.append(("pti", cfg.pti_steps))
    stages = [(kind, steps) for kind, steps in stages if steps > 0]
    total = 1 + sum(steps for _, steps in stages)
    done = 1

    def report(kind_steps: int):
        if progress is None:
            return None
        base = done

        def sub(fraction: float, message: str):
            progress(min(1.0, (base + fraction * kind_steps) / total), message)

        return sub

    if progress is not None:
        progress(0.0, "encoding" if encoder is not None else "starting from the average face")
    if encoder is not None:
        with torch.no_grad():
            ws = encoder(target).to(torch.float32)  # [1,num_ws,w_dim]
        if tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
            raise FaceAppError(
                f"the encoder makes ws of shape {tuple(ws.shape[1:])} but G needs ({G.num_ws}, {G.w_dim}): "
                "they are not from the same model"
            )
    else:
        ws = None
    if stages and perceptual is None and cfg.perceptual_weight > 0:
        from faceapp.inversion.losses import available_perceptual_loss

        perceptual = available_perceptual_loss(device=device)
        if perceptual is None:  # none installed: pixel (+ identity) terms only, rather than an error
            cfg = replace(cfg, perceptual_weight=0.0)
            metrics["perceptual_note"] = "no perceptual loss installed: optimised without the perceptual term"

    # optimised noise is kept only where a per-face copy of G can hold it ('best'): the last projection stage
    last_projection = max((i for i, (kind, _) in enumerate(stages) if kind != "pti"), default=-1)
    noise: dict = {}
    steps_done = {"projection_steps": 0, "pti_steps": 0}
    G_out = G
    for i, (kind, steps) in enumerate(stages):
        if kind == "pti":
            if ws is None:  # every projection step count at 0: tune at the average face
                ws = _average_ws(G)
            pti_cfg = cfg.pti
            if cfg.perceptual_weight <= 0:  # no perceptual loss asked for: none in the tuning either
                pti_cfg = replace(pti_cfg, perceptual_weight=0.0, locality_perceptual_weight=0.0)
            G_out = pivotal_tuning(G, ws, target, num_steps=steps, perceptual=perceptual,
                                   locality_weight=cfg.pti_locality_weight, seed=seed + i, progress=report(steps),
                                   config=pti_cfg, noise=noise or None)
            steps_done["pti_steps"] += steps
        else:
            refine = ws is not None
            pcfg = ProjectorConfig(
                initial_learning_rate=cfg.refine_learning_rate if refine else cfg.from_avg_learning_rate,
                initial_noise_factor=cfg.refine_noise_factor if refine else 0.05,
                optimize_noise=mode == "best" and i == last_projection,
                perceptual_weight=cfg.perceptual_weight,
                mse_weight=cfg.mse_weight,
                identity_weight=cfg.identity_weight if identity is not None else 0.0,
            )
            res = project(G, target, ws_init=ws, space=kind, num_steps=steps, perceptual=perceptual,
                          identity=identity, seed=seed + i, progress=report(steps), config=pcfg)
            ws, noise = res.ws, res.noise or noise
            steps_done["projection_steps"] += steps
        done += steps
    if ws is None:  # no encoder and every step count at 0: the average face
        ws = _average_ws(G)

    metrics.update(steps_done)
    metrics.update(_reconstruction_metrics(G_out, ws, target, perceptual, identity))
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    metrics["config"] = asdict(cfg)
    if progress is not None:
        progress(1.0, f"inverted ({mode})")
    return Inversion(ws=ws.detach(), G=G_out, mode=mode, metrics=metrics)


def _average_ws(G) -> torch.Tensor:
    return w_stats(G)[0].view(1, 1, -1).expand(1, G.num_ws, G.w_dim).clone()  # [1,num_ws,w_dim]


@torch.no_grad()
def _reconstruction_metrics(G, ws, target, perceptual, identity) -> dict:
    img = G.synthesis(ws, noise_mode="const")  # [1,3,R,R]
    out = {"mse": float((img - target).square().mean())}
    if perceptual is not None:
        out["perceptual"] = float(perceptual(img, target).mean())
        out["perceptual_kind"] = getattr(perceptual, "kind", type(perceptual).__name__)
    if identity is not None:
        out["identity"] = float(identity(img, target).mean())
    return out
