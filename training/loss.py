"""StyleGAN2 losses: non-saturating logistic G loss, logistic D loss, lazy R1, path length.

The training loop runs up to four phases per step, each with its own backward
pass and optimiser step (lazy regularisation, StyleGAN2 paper section 3.1):

- ``Gmain``: softplus(-D(G(z)))                                  every step
- ``Greg``:  path-length penalty, weighted by ``pl_interval``    every ``pl_interval`` steps
- ``Dmain``: softplus(D(G(z))) + softplus(-D(x))                 every step
- ``Dreg``:  R1 = gamma/2 * |grad_x D(x)|^2, weighted by ``r1_interval``
                                                                 every ``r1_interval`` steps

D always sees images through the augmentation pipe (if any), reals and fakes alike.

:class:`HingeLoss` (the ``fast`` recipe, as in Projected GANs) has two phases, ``Gmain``: -mean D(G(z)) and
``Dmain``: relu(1 + D(G(z))) + relu(1 - D(x)), no regularisers. Both losses say which phases they run
through ``phases()``: (name, network 'G' or 'D', interval), so the loop needs no recipe-specific branches.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faceapp.stylegan import mix_styles, sample_mixing_cutoff


@dataclass(frozen=True)
class LossConfig:
    """Hyper-parameters of :class:`StyleGAN2Loss`."""

    r1_gamma: float = 10.0  # R1 weight; scale with resolution^2 / batch
    style_mixing_prob: float = 0.9  # chance that a G sample mixes two latents
    pl_weight: float = 2.0  # path-length penalty weight (0 disables)
    pl_batch_shrink: int = 2  # path-length pass uses batch // pl_batch_shrink samples
    pl_decay: float = 0.01  # EMA rate of the path-length target pl_mean


def map_with_mixing(G, z: torch.Tensor, c: torch.Tensor, prob: float, update_emas: bool = False) -> torch.Tensor:
    """Map z [N, z_dim] to ws [N, num_ws, w_dim]; each sample mixes in a second latent with probability ``prob``.

    With mixing, the layers from a random cutoff in [1, num_ws) onwards take their w
    from a fresh z, which keeps G from assuming adjacent styles are correlated.
    """
    ws = G.mapping(z, c, update_emas=update_emas)  # [N, num_ws, w_dim]
    if prob > 0:
        cutoff = sample_mixing_cutoff(z.shape[0], ws.shape[1], prob, device=z.device)  # [N]
        # Always map the second latent (cheap), rather than ask the GPU whether any sample mixes.
        ws = mix_styles(ws, G.mapping(torch.randn_like(z), c, update_emas=False), cutoff)
    return ws


class StyleGAN2Loss:
    """Computes each phase's loss and runs its backward pass.

    Args:
        G, D:          generator and discriminator (plain modules, not DDP-wrapped).
        config:        :class:`LossConfig`.
        augment_pipe:  applied to every image D sees, or ``None``.
        autocast_dtype: torch.float16 / torch.bfloat16 to run the main phases under
                       ``torch.autocast`` (CUDA), or ``None`` for float32. The
                       regularisers always run in float32: their double backward is
                       where low precision hurts, and they run only every few steps.
    """

    def __init__(self, G, D, config: LossConfig = LossConfig(), augment_pipe=None, autocast_dtype=None,
                 reg_intervals: tuple[int, int] = (4, 16)):
        self.reg_intervals = reg_intervals  # (path-length interval, R1 interval)
        self.G = G
        self.D = D
        self.config = config
        self.augment_pipe = augment_pipe
        self.autocast_dtype = autocast_dtype
        self._amp_enabled = True  # switched off while a regulariser runs
        self.pl_mean = torch.zeros([], device=next(G.parameters()).device)  # EMA of path lengths

    def phases(self) -> list[tuple[str, str, int]]:
        """(phase, trained network 'G'/'D', run every this many steps); a zero weight drops its regulariser."""
        pl_interval, r1_interval = self.reg_intervals
        out = [("Gmain", "G", 1)]
        if self.config.pl_weight != 0:
            out.append(("Greg", "G", pl_interval))
        out.append(("Dmain", "D", 1))
        if self.config.r1_gamma != 0:
            out.append(("Dreg", "D", r1_interval))
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.pl_mean.copy_(state["pl_mean"])

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None or not self._amp_enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False):
        """z [N, z_dim], c [N, c_dim] -> (img [N, C, H, W], ws [N, num_ws, w_dim])."""
        # The mapping network is small and w feeds every layer: keep it in float32.
        ws = map_with_mixing(self.G, z, c, self.config.style_mixing_prob, update_emas=update_emas)
        with self._autocast(z.device):
            img = self.G.synthesis(ws, noise_mode="random")
        return img.float(), ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """img [N, C, H, W] -> logits [N, 1], through the augmentation pipe."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        with self._autocast(img.device):
            logits = self.D(img, c)
        return logits.float()

    def accumulate_gradients(
        self,
        phase: str,
        real_img: torch.Tensor,
        real_c: torch.Tensor,
        gen_z: torch.Tensor,
        gen_c: torch.Tensor,
        gain: float,
        scaler: torch.amp.GradScaler | None = None,
    ) -> dict[str, torch.Tensor]:
        """Backward pass of one phase; gradients accumulate in the modules' ``.grad``.

        real_img [N, C, H, W] float in [-1, 1]; real_c, gen_c [N, c_dim]; gen_z [N, z_dim].
        ``gain`` multiplies the loss (the lazy-regularisation interval for reg phases).
        ``scaler`` scales the main phases' losses for float16. Returns scalar stats as detached
        0-dim tensors on the device (reading them is left to the caller, so no step waits
        for the GPU).
        """
        cfg = self.config
        self._amp_enabled = phase.endswith("main")  # regularisers run in float32
        stats: dict[str, torch.Tensor] = {}

        def backward(loss: torch.Tensor, scaled: bool) -> None:
            if scaled and scaler is not None:
                loss = scaler.scale(loss)
            loss.backward()

        if phase == "Gmain":
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            loss = F.softplus(-gen_logits.float()).mean()  # -log sigmoid(D(G(z)))
            backward(loss * gain, scaled=True)
            stats["Loss/G/loss"] = loss.detach()
            stats["Loss/scores/fake"] = gen_logits.detach().mean()

        elif phase == "Greg":
            if cfg.pl_weight == 0:
                return stats
            n = max(gen_z.shape[0] // cfg.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n])  # [n, C, H, W], [n, num_ws, w_dim]
            # Random image-space direction, scaled so the expected length does not depend on H*W.
            pl_noise = torch.randn_like(gen_img) / (gen_img.shape[2] * gen_img.shape[3]) ** 0.5
            (pl_grads,) = torch.autograd.grad(
                outputs=(gen_img * pl_noise).sum(), inputs=gen_ws, create_graph=True
            )  # [n, num_ws, w_dim]
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()  # [n]
            pl_mean = self.pl_mean.lerp(pl_lengths.mean().detach(), cfg.pl_decay)
            self.pl_mean.copy_(pl_mean)
            pl_penalty = (pl_lengths - pl_mean).square()  # [n]
            loss = (pl_penalty * cfg.pl_weight).mean()
            # `gen_img[:, 0, 0, 0] * 0` keeps every synthesis parameter in the graph (harmless, and
            # it makes the graph the same shape as Gmain's, which DDP-style hooks expect).
            backward((gen_img[:, 0, 0, 0] * 0).sum() + loss * gain, scaled=False)
            stats["Loss/pl_penalty"] = pl_penalty.detach().mean()
            stats["Loss/pl_mean"] = pl_mean.detach().clone()

        elif phase == "Dmain":
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c)
            real_logits = self.run_D(real_img, real_c)
            loss_fake = F.softplus(gen_logits.float()).mean()  # -log(1 - sigmoid(D(G(z))))
            loss_real = F.softplus(-real_logits.float()).mean()  # -log sigmoid(D(x))
            backward((loss_fake + loss_real) * gain, scaled=True)
            stats["Loss/D/loss"] = (loss_fake + loss_real).detach()
            stats["Loss/scores/fake"] = gen_logits.detach().mean()
            stats["Loss/scores/real"] = real_logits.detach().mean()
            stats["Loss/signs/real"] = real_logits.detach().sign().mean()

        elif phase == "Dreg":
            if cfg.r1_gamma == 0:
                return stats
            real = real_img.detach().requires_grad_(True)
            real_logits = self.run_D(real, real_c)  # [N, 1]
            (r1_grads,) = torch.autograd.grad(outputs=real_logits.sum(), inputs=real, create_graph=True)
            r1_penalty = r1_grads.square().sum([1, 2, 3])  # [N]
            loss = (r1_penalty * (cfg.r1_gamma / 2)).mean()
            backward((real_logits * 0).sum() + loss * gain, scaled=False)
            stats["Loss/r1_penalty"] = r1_penalty.detach().mean()

        else:
            raise ValueError(f"unknown phase {phase!r}; expected Gmain, Greg, Dmain or Dreg")
        return stats


class HingeLoss(StyleGAN2Loss):
    """Hinge loss without regularisers (Projected GANs; Lim & Ye 2017). D may return several logits per
    image (one per head): [N, K]; every logit is a separate hinge term."""

    def __init__(self, G, D, style_mixing_prob: float = 0.5, augment_pipe=None, autocast_dtype=None):
        super().__init__(G, D, LossConfig(r1_gamma=0.0, style_mixing_prob=style_mixing_prob, pl_weight=0.0),
                         augment_pipe=augment_pipe, autocast_dtype=autocast_dtype)

    def phases(self) -> list[tuple[str, str, int]]:
        return [("Gmain", "G", 1), ("Dmain", "D", 1)]

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, scaler=None):
        """As :meth:`StyleGAN2Loss.accumulate_gradients`, for the phases Gmain and Dmain."""
        stats: dict[str, torch.Tensor] = {}

        def backward(loss: torch.Tensor) -> None:
            (scaler.scale(loss) if scaler is not None else loss).backward()

        if phase == "Gmain":
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)  # [N, K]
            loss = -gen_logits.mean()
            backward(loss * gain)
            stats["Loss/G/loss"] = loss.detach()
            stats["Loss/scores/fake"] = gen_logits.detach().mean()
        elif phase == "Dmain":
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c)
            real_logits = self.run_D(real_img, real_c)
            loss = F.relu(1 + gen_logits).mean() + F.relu(1 - real_logits).mean()
            backward(loss * gain)
            stats["Loss/D/loss"] = loss.detach()
            stats["Loss/scores/fake"] = gen_logits.detach().mean()
            stats["Loss/scores/real"] = real_logits.detach().mean()
            stats["Loss/signs/real"] = real_logits.detach().sign().mean()
        else:
            raise ValueError(f"unknown phase {phase!r} for the hinge loss; expected Gmain or Dmain")
        return stats
