"""Train an e4e encoder (faceapp.inversion.encoder.Encoder4Editing) against a frozen StyleGAN2 generator.

One GPU, on a prepared archive plus the generator's own samples::

    python -m training.train_encoder --generator runs/utk128/network-snapshot-005000000.safetensors \\
        --data data/utkface-128.zip --outdir runs/enc128 --batch 8 --steps 100000

Several GPUs on one machine (the batch is split across them)::

    torchrun --standalone --nproc_per_node 4 -m training.train_encoder --generator ... --data ... --batch 32

CPU smoke test (a tiny random generator and encoder, G's own samples, a few steps)::

    python -m training.train_encoder --cpu-smoke --outdir runs/enc-smoke

Resume exactly where a snapshot left off: ``--resume runs/enc128`` (same options, more --steps if you like).

The losses are e4e's (Tov et al. 2021): pixel L2, perceptual (LPIPS), identity, an L2 penalty on the
per-layer deltas, and a latent discriminator on the predicted w codes (non-saturating, R1 on real w
from G.mapping) that keeps them in W; the deltas are unlocked progressively (W+ layer k may differ
from the base code from step progressive_start + (k - 1) * progressive_every on). On G's own samples the
true ws are known and an extra L2 on the codes (--w-lambda) speeds training up.

Outputs in --outdir: ``options.json``, ``stats.jsonl`` (one line per --log-every steps),
``encoder-snapshot-<step>.safetensors`` ({"encoder": E} in faceapp's checkpoint format),
``training-state-<step>.pt`` (latent D, optimisers, counters, RNG states; for --resume) and
``samples-<step>.png`` (pairs: input | reconstruction).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceapp.inversion.encoder import Encoder4Editing, load_encoder
from faceapp.stylegan.checkpoint import load_generator, save_networks
from training.dataset import ImageArchive, age_balance_weights
from training.options import AUTO, layered_values, opt, training_parser
from training.runtime import (
    STATE_PREFIX,
    DistInfo,
    average_buffers,
    batch_per_rank,
    count_params,
    default_device,
    exit_after_torchrun,
    gather_rng_states,
    infinite_batches,
    load_state,
    log_stats,
    make_loader,
    out_of_time,
    rank0_writes,
    reduce_gradients,
    restore_progress,
    run_distributed,
    save_grid,
    save_snapshot,
    seed_rank,
    to_float_image,
)
from training.runtime import find_resume as _find_resume

SNAPSHOT_PREFIX = "encoder-snapshot-"

# Architecture presets over the defaults (which are e4e's); --blocks/--channels/--head-channels win over them.
PRESETS = {
    "e4e": {},  # the official IR-SE-50 encoder: blocks (3, 4, 14, 3), channels (64, 128, 256, 512), heads w_dim wide
    "demo": dict(blocks=(1, 2, 2, 1), channels=(16, 32, 64, 128), head_channels=128),
}


@dataclass(frozen=True)
class EncoderTrainOptions:
    """Everything an encoder training run depends on, resolved (no AUTO left). Saved as options.json.

    The command line is generated from these fields (``--d-lr`` for ``d_lr``); --preset and --cpu-smoke
    change the defaults.
    """

    generator: str = opt(None, "faceapp generator checkpoint (convert official files first); G_ema if present; "
                               "optional with --cpu-smoke")
    outdir: str = opt(None, "run folder for snapshots, sample images, logs and options.json", required=True)
    device: str = opt(AUTO, "cuda, cuda:N or cpu (default: cuda if available; cpu with --cpu-smoke); torchrun ranks "
                            "use cuda:LOCAL_RANK")
    data: str | None = opt(None, "training archive (.zip or folder) from prepare_dataset.py; none = G's samples only")
    seed: int = opt(0, "random seed")
    # Data.
    synthetic_fraction: float = opt(AUTO, "share of each batch rendered by G, with known ws (default 0.5; 1 without "
                                          "--data)")
    gen_psi: float = opt(0.8, "truncation of G's samples (real faces are closer to w_avg than raw samples)")
    mirror: bool = opt(False, "add horizontally mirrored copies of the real images")
    balance_age: float = opt(0.0, "draw the real faces' age bins in proportion to count^(1-ALPHA) (as "
                                  "train_generator's option: 0 = the data's mix, 0.5 gives old faces 1.5x their "
                                  "share)", metavar="ALPHA")
    workers: int = opt(2, "DataLoader worker processes")
    # Encoder.
    preset: str = opt("e4e", "e4e: the official IR-SE-50 encoder (267 M parameters with w_dim 512);\n"
                             "demo: a small one for CPU inference (8.6 M parameters for a 128 px, w_dim 512 G);\n"
                             "--blocks/--channels/--head-channels override it", choices=sorted(PRESETS))
    enc_resolution: int = opt(AUTO, "encoder input size; images are resized to it (default min(G, 256); e4e: 256)")
    blocks: tuple[int, ...] = opt((3, 4, 14, 3), "units per stage, e.g. 3,4,14,3 (e4e's IR-SE-50)")
    channels: tuple[int, ...] = opt((64, 128, 256, 512), "stage widths, e.g. 64,128,256,512")
    head_channels: int | None = opt(None, "style head conv width (default w_dim)")
    unit: str = opt("ir_se", "residual unit: ir_se (with squeeze-excitation) or ir", choices=["ir_se", "ir"])
    init: str | None = opt(None, "faceapp checkpoint whose 'encoder' starts the run (fine-tuning)")
    # Optimisation.
    batch: int = opt(8, "total batch over all processes")
    steps: int = opt(100_000, "train for this many steps")
    minutes: float = opt(0.0, "also stop after this many minutes of training time, summed over resumes (snapshots "
                              "excluded; 0: no limit)")
    lr: float = opt(1e-4, "encoder learning rate (Adam)")
    # Losses (e4e's weights for FFHQ, except id).
    l2_lambda: float = opt(1.0, "weight of the pixel L2 loss")
    lpips_lambda: float = opt(0.8, "weight of the perceptual loss")
    perceptual: str = opt("auto", "perceptual loss: auto | lpips-vgg | lpips-alex | mobilenet")
    id_lambda: float = opt(0.1, "weight of the identity loss (dlib face descriptors)")
    delta_lambda: float = opt(2e-4, "weight of the L2 norm of each active delta, summed over layers")
    w_lambda: float = opt(1.0, "weight of the L2 to the true ws on G's own samples")
    adv_lambda: float = opt(0.1, "weight of the latent discriminator's loss (0 = off)")
    d_lr: float = opt(2e-5, "latent discriminator learning rate")
    d_layers: int = opt(4, "latent discriminator depth")
    r1_gamma: float = opt(10.0, "R1 weight of the latent discriminator")
    d_reg_every: int = opt(16, "lazy R1 every this many steps")
    loss_resolution: int = opt(256, "losses compare images at most this large")
    # Progressive delta unlocking.
    progressive_start: int = opt(20_000, "steps with the base code only; 0 = start unlocking at once")
    progressive_every: int = opt(2_000, "one more W+ layer every this many steps; 0 = all layers at once")
    # Outputs.
    log_every: int = opt(100, "a stats.jsonl line every this many steps")
    snap_every: int = opt(5_000, "snapshot + sample image every this many steps (and at the end)")
    grid: int = opt(8, "input | reconstruction pairs in the sample image")
    resume: str | None = opt(None, "encoder snapshot or a run folder (its latest snapshot)")


# Tiny everything: a step takes well under a second on a 2-core CPU.
CPU_SMOKE_ARGS = dict(
    blocks=(1, 1, 1, 1), channels=(8, 16, 24, 32), head_channels=32, batch=4, steps=20, lr=1e-3,
    lpips_lambda=0.0, id_lambda=0.0, d_reg_every=4, progressive_start=4, progressive_every=2, log_every=5,
    snap_every=20, grid=4, workers=0,
)


# ---------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    """The command line, one flag per EncoderTrainOptions field (every default None = 'not given')."""
    return training_parser(EncoderTrainOptions, __doc__.split("\n\n")[0], "tiny nets on CPU for a few steps (a "
                           "random 32 px generator if --generator is not given)")


def resolve_options(args: argparse.Namespace, G) -> EncoderTrainOptions:
    """Defaults (e4e's) < --cpu-smoke's < the --preset's < what was given; then fill in every AUTO (from G, the
    generator of --generator)."""
    smoke = CPU_SMOKE_ARGS if args.cpu_smoke else {}
    values = layered_values(EncoderTrainOptions, args, smoke, PRESETS[args.preset or EncoderTrainOptions.preset])
    device = values["device"] or ("cpu" if args.cpu_smoke else default_device())
    frac = values["synthetic_fraction"]
    if frac is None:
        frac = 0.5 if values["data"] else 1.0
    if not values["data"] and frac < 1:
        raise SystemExit("--synthetic-fraction below 1 needs --data (a training archive)")
    if not 0 <= frac <= 1:
        raise SystemExit("--synthetic-fraction must be in [0, 1]")
    values.update(generator=str(values["generator"]), outdir=str(values["outdir"]), device=device,
                  data=str(values["data"]) if values["data"] else None, synthetic_fraction=float(frac),
                  enc_resolution=values["enc_resolution"] or min(G.img_resolution, 256),
                  blocks=tuple(values["blocks"]), channels=tuple(values["channels"]))
    return EncoderTrainOptions(**values)


def smoke_generator(path: Path, seed: int = 0) -> Path:
    """Write a tiny random 32 px generator (num_ws 8, w_dim 32) with an estimated w_avg."""
    from faceapp.stylegan import Generator

    torch.manual_seed(seed)
    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=32))
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(torch.randn(2000, 32), None)[:, 0].mean(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_networks(path, {"G_ema": G}, extra={"note": "random generator for train_encoder --cpu-smoke"})
    return path


# ---------------------------------------------------------------------------------------------
# Pieces of the loop.


class LatentDiscriminator(torch.nn.Module):
    """e4e's latent-code discriminator: an MLP w [N, w_dim] -> logit [N, 1] (LeakyReLU 0.2)."""

    def __init__(self, w_dim: int, num_layers: int = 4):
        super().__init__()
        layers: list[torch.nn.Module] = []
        for _ in range(num_layers - 1):
            layers += [torch.nn.Linear(w_dim, w_dim), torch.nn.LeakyReLU(0.2)]
        layers.append(torch.nn.Linear(w_dim, 1))
        self.mlp = torch.nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.mlp(w)


def progressive_stage(step: int, num_ws: int, start: int, every: int) -> int:
    """Number of W+ layers (after the first) whose deltas are trained at `step`."""
    if every <= 0:
        return num_ws - 1 if step >= start else 0
    if step < start:
        return 0
    return min(num_ws - 1, 1 + (step - start) // every)


def r1_penalty(D: torch.nn.Module, real_w: torch.Tensor) -> torch.Tensor:
    """Mean over samples of |d D(w) / d w|^2 at real codes."""
    real_w = real_w.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real_w).sum(), real_w, create_graph=True)
    return grad.square().sum(dim=1).mean()


def find_resume(path: str) -> tuple[Path, Path]:
    """Encoder snapshot or run folder -> (snapshot, training-state file beside it)."""
    return _find_resume(path, SNAPSHOT_PREFIX, STATE_PREFIX)


def build_encoder(opts: EncoderTrainOptions, G) -> Encoder4Editing:
    """A fresh encoder for G (current torch RNG), or the 'encoder' of --init; w_avg = G's."""
    if opts.init:
        E = load_encoder(opts.init)
        if E.w_dim == G.w_dim and E.num_ws < G.num_ws:  # G was grown to a higher resolution (train_generator)
            from faceapp.inversion.encoder import grow_encoder

            print(f"--init {opts.init}: its encoder makes {E.num_ws} codes, the generator takes {G.num_ws}: "
                  f"the new layers' heads start as copies of its last one")
            E = grow_encoder(E, G.num_ws)
        if (E.num_ws, E.w_dim) != (G.num_ws, G.w_dim):
            raise SystemExit(f"--init {opts.init}: its encoder makes {E.num_ws} codes of {E.w_dim}; "
                             f"the generator takes {G.num_ws} of {G.w_dim}")
        return E
    E = Encoder4Editing(num_ws=G.num_ws, w_dim=G.w_dim, img_resolution=opts.enc_resolution,
                        img_channels=G.img_channels, blocks=opts.blocks, channels=opts.channels,
                        head_channels=opts.head_channels, unit=opts.unit)
    with torch.no_grad():
        E.w_avg.copy_(G.mapping.w_avg.reshape(1, -1).expand(G.num_ws, -1))
    return E


def load_frozen_generator(path: str, device) -> torch.nn.Module:
    G = load_generator(path, device=device).eval().requires_grad_(False)
    if G.c_dim != 0:
        raise SystemExit(f"{path} is a conditional generator (c_dim {G.c_dim}); the encoder needs an unconditional one")
    if not torch.any(G.mapping.w_avg != 0):
        raise SystemExit(f"{path}: the generator's w_avg is all zeros (never tracked); the encoder starts from it")
    return G


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    if img.shape[-1] == size:
        return img
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# ---------------------------------------------------------------------------------------------
# The loop.


def training_loop(opts: EncoderTrainOptions, info: DistInfo, log=print, G=None) -> dict:
    """Train the encoder as `opts` say; return a summary (step, last stats, snapshots, E, D).

    G: the generator of opts.generator if already loaded (it is frozen and moved to the device).
    """
    # == Set-up: networks (the same initial weights on every rank), seeds, data, losses, optimisers ===
    device, rank0, outdir = info.device, info.rank == 0, Path(opts.outdir)
    log = log if rank0 else (lambda *a: None)
    batch_gpu = batch_per_rank(opts.batch, info)
    n_gen = int(round(batch_gpu * opts.synthetic_fraction))
    n_real = batch_gpu - n_gen

    torch.manual_seed(opts.seed)  # the same initial weights on every rank
    G = (load_frozen_generator(opts.generator, device) if G is None
         else G.to(device).eval().requires_grad_(False))
    E = build_encoder(opts, G).to(device).train()
    D = LatentDiscriminator(G.w_dim, opts.d_layers).to(device).train().requires_grad_(False)
    seed_rank(opts.seed, info)  # different samples per rank from here on

    dataset = loader = batches = sampler = None
    position = {"epoch": 0, "batches": 0}  # where this rank is in the data order
    if n_real > 0:
        dataset = ImageArchive(opts.data, xflip=opts.mirror)
        weights = age_balance_weights(dataset.ages(), opts.balance_age) if opts.balance_age else None
        sampler, loader = make_loader(dataset, n_real, info, seed=opts.seed, workers=opts.workers, weights=weights)
    perceptual, identity = image_losses(opts, device)
    opt_E = torch.optim.Adam(E.parameters(), lr=opts.lr, betas=(0.9, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=opts.d_lr, betas=(0.9, 0.999))

    # == Resume: the encoder, latent D, optimisers, step, data position, RNG streams ==================
    step, train_time = 0, 0.0
    if opts.resume:
        snap_path, state_path = find_resume(opts.resume)
        E = load_encoder(snap_path, device=device).train()
        opt_E = torch.optim.Adam(E.parameters(), lr=opts.lr, betas=(0.9, 0.999))
        state = load_state(state_path)
        D.load_state_dict(state["D"])
        opt_E.load_state_dict(state["opt_E"])
        opt_D.load_state_dict(state["opt_D"])
        step = int(state["step"])
        train_time = restore_progress(state, info, position, log)
        log(f"resumed from {snap_path} at step {step}")
    if loader is not None:
        batches = infinite_batches(loader, sampler, position)

    # == Outputs: the sample image's fixed inputs ======================================================
    loss_res = min(G.img_resolution, opts.loss_resolution)
    grid_img = sample_inputs(G, dataset, opts, device)
    if rank0:
        outdir.mkdir(parents=True, exist_ok=True)
    stats_acc: dict[str, list[float]] = {}
    last: dict = {}
    snapshots: list[str] = []
    t_start = t_log = time.time()
    step_log = step
    while step < opts.steps:
        # == Step: a batch, the encoder's losses and step, the latent discriminator's step ============
        t_step = time.time()
        stage = progressive_stage(step, G.num_ws, opts.progressive_start, opts.progressive_every)
        if E.progressive_stage != (None if stage == G.num_ws - 1 else stage):
            E.set_progressive_stage(stage)
        active = stage + 1  # W+ layers 0..stage carry their own code

        target, ws_true = draw_batch(G, batches, n_gen, n_real, opts.gen_psi, device)
        total, ws, st = encoder_losses(E, G, D, target, ws_true, stage, opts, perceptual=perceptual,
                                       identity=identity, loss_res=loss_res)
        opt_E.zero_grad(set_to_none=True)
        total.backward()
        reduce_gradients(E, info.world_size, sanitize=True)
        opt_E.step()
        average_buffers(E, info.world_size)
        if opts.adv_lambda > 0:
            st.update(latent_d_step(D, opt_D, G, ws.detach()[:, :active].reshape(-1, G.w_dim), step, opts,
                                    batch_gpu, info.world_size))

        for k, v in st.items():
            stats_acc.setdefault(k, []).append(v)
        step += 1
        train_time += time.time() - t_step
        done = step >= opts.steps or out_of_time(train_time, opts.minutes, info, step)

        # == Logging: a stats.jsonl line every --log-every steps =======================================
        if step % opts.log_every == 0 or done:
            now = time.time()
            last = {k: float(np.mean(v)) for k, v in stats_acc.items()}
            record = {"step": step, "stage": stage, "time_s": round(now - t_start, 3),
                      "train_time_s": round(train_time, 3),
                      "sec_per_step": (now - t_log) / max(step - step_log, 1), **last}
            log_stats(outdir / "stats.jsonl", record, info, log)
            stats_acc.clear()
            t_log, step_log = now, step

        # == Snapshot: the encoder, training state and sample pairs every --snap-every steps ============
        if step % opts.snap_every == 0 or done:
            rng = gather_rng_states(device, info)  # (every rank takes part)
            if rank0:
                tag = f"{step:07d}"
                state = {"D": D.state_dict(), "opt_E": opt_E.state_dict(), "opt_D": opt_D.state_dict(),
                         "step": step, "data_position": dict(position), "rng": rng, "train_time_s": train_time}
                snap = save_snapshot(outdir, tag, {"encoder": E}, state, snapshot_prefix=SNAPSHOT_PREFIX, extra={
                    "step": step, "progressive_stage": stage, "generator": opts.generator,
                    "train_time_s": round(train_time, 3),
                    "generator_kwargs": G.init_kwargs, "training_options": dataclasses.asdict(opts),
                })
                save_grid(sample_pairs(E, G, grid_img), outdir / f"samples-{tag}.png", nrow=8)
                snapshots.append(str(snap))
        if done:
            break
    if opts.minutes > 0 and step < opts.steps:
        log(f"stopped at step {step}: --minutes {opts.minutes:g} of training time reached")
    return {"step": step, "stats": last, "snapshots": snapshots, "E": E, "D": D, "G": G}


# ---------------------------------------------------------------------------------------------
# Pieces of the loop, in the order it uses them.


def image_losses(opts: EncoderTrainOptions, device: torch.device):
    """-> (perceptual, identity): the frozen image losses the options weigh (None where their weight is 0)."""
    perceptual = identity = None
    if opts.lpips_lambda > 0:
        from faceapp.inversion.losses import perceptual_loss

        perceptual = perceptual_loss(opts.perceptual, device=device).requires_grad_(False)
    if opts.id_lambda > 0:
        from faceapp.inversion.identity import IdentityLoss

        identity = IdentityLoss().to(device).eval().requires_grad_(False)
    return perceptual, identity


@torch.no_grad()
def sample_inputs(G, dataset, opts: EncoderTrainOptions, device: torch.device) -> torch.Tensor:
    """The sample image's fixed inputs [grid, C, R, R]: G's samples at fixed seeds, then the archive's first
    images (up to half of them)."""
    n_grid_real = min(opts.grid // 2, len(dataset)) if dataset is not None else 0
    gz = torch.randn([opts.grid - n_grid_real, G.z_dim], generator=torch.Generator().manual_seed(opts.seed + 12345))
    grid_img = G.synthesis(G.mapping(gz.to(device), None, truncation_psi=opts.gen_psi), noise_mode="const")
    if n_grid_real:
        reals = torch.stack([dataset[i][0] for i in range(n_grid_real)])
        grid_img = torch.cat([grid_img, resize(to_float_image(reals, device), G.img_resolution)])
    return grid_img


def draw_batch(G, batches, n_gen: int, n_real: int, psi: float, device: torch.device):
    """-> (target [B, C, R, R] in [-1, 1]: G's `n_gen` samples first, then `n_real` real images; ws_true
    [n_gen, num_ws, w_dim] of G's samples, or None)."""
    parts = []
    ws_true = None
    if n_gen:
        with torch.no_grad():
            z = torch.randn([n_gen, G.z_dim], device=device)
            ws_true = G.mapping(z, None, truncation_psi=psi)  # [n_gen, num_ws, w_dim]
            parts.append(G.synthesis(ws_true, noise_mode="const"))
    if n_real:
        real, _ = next(batches)
        parts.append(resize(to_float_image(real, device), G.img_resolution))
    return torch.cat(parts), ws_true


def encoder_losses(E, G, D, target: torch.Tensor, ws_true: torch.Tensor | None, stage: int,
                   opts: EncoderTrainOptions, *, perceptual, identity, loss_res: int):
    """e4e's losses of E on `target` at progressive `stage` -> (total loss, ws [B, num_ws, w_dim], stats)."""
    active = stage + 1
    w, deltas = E.codes(target)  # [B, w_dim], [B, num_ws, w_dim]
    ws = E.w_avg.unsqueeze(0) + w.unsqueeze(1) + deltas
    recon = G.synthesis(ws, noise_mode="const")
    rec_s, tgt_s = resize(recon, loss_res), resize(target, loss_res)
    st: dict[str, float] = {}
    l2 = F.mse_loss(rec_s, tgt_s)
    total = opts.l2_lambda * l2
    st["Loss/l2"] = l2.item()
    if perceptual is not None:
        lp = perceptual(rec_s, tgt_s).mean()
        total = total + opts.lpips_lambda * lp
        st["Loss/lpips"] = lp.item()
    if identity is not None:
        idl = identity(recon, target).mean()
        total = total + opts.id_lambda * idl
        st["Loss/id"] = idl.item()
    if stage > 0:
        delta = deltas[:, 1:active].norm(dim=2).mean(dim=0).sum()  # sum over layers of mean |delta_i|
        total = total + opts.delta_lambda * delta
        st["Loss/delta"] = delta.item()
    if ws_true is not None and opts.w_lambda > 0:
        wl = F.mse_loss(ws[: len(ws_true)], ws_true)
        total = total + opts.w_lambda * wl
        st["Loss/w"] = wl.item()
    if opts.adv_lambda > 0:
        adv = F.softplus(-D(ws[:, :active].reshape(-1, G.w_dim))).mean()
        total = total + opts.adv_lambda * adv
        st["Loss/adv"] = adv.item()
    st["Loss/total"] = total.item()
    return total, ws, st


def latent_d_step(D, opt_D, G, fake_w: torch.Tensor, step: int, opts: EncoderTrainOptions, batch: int,
                  world_size: int) -> dict[str, float]:
    """One step of the latent discriminator: real w from G.mapping vs the encoder's codes `fake_w` [N, w_dim]
    (non-saturating; lazy R1 on the real ones). -> its stats."""
    st = {}
    D.requires_grad_(True)
    with torch.no_grad():
        real_w = G.mapping(torch.randn([batch, G.z_dim], device=fake_w.device), None)[:, 0]  # [B, w_dim]
    d_loss = F.softplus(D(fake_w)).mean() + F.softplus(-D(real_w)).mean()
    st["Loss/D"] = d_loss.item()
    if step % opts.d_reg_every == 0 and opts.r1_gamma > 0:
        r1 = r1_penalty(D, real_w)
        d_loss = d_loss + opts.r1_gamma / 2 * r1 * opts.d_reg_every
        st["Loss/r1"] = r1.item()
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    D.requires_grad_(False)
    reduce_gradients(D, world_size, sanitize=True)
    opt_D.step()
    return st


@torch.no_grad()
def sample_pairs(E, G, images: torch.Tensor) -> torch.Tensor:
    """images [K, C, R, R] -> [2K, C, R, R]: each input followed by its reconstruction."""
    was_training = E.training
    E.eval()
    recon = G.synthesis(E(images), noise_mode="const")
    E.train(was_training)
    return torch.stack([images, recon], dim=1).flatten(0, 1).cpu()


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    """Parse `argv`, set up (distributed) training and run it. Returns the loop's summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cpu_smoke and args.generator is None:
        args.generator = str(Path(args.outdir) / "smoke-generator.safetensors")
        rank0_writes(args.generator, lambda path: smoke_generator(path, seed=args.seed or 0))
    if args.generator is None:
        parser.error("--generator is required (or use --cpu-smoke)")

    G = load_frozen_generator(args.generator, "cpu")
    opts = resolve_options(args, G)
    if args.dry_run:
        torch.manual_seed(opts.seed)
        E = build_encoder(opts, G)
        print(json.dumps(dataclasses.asdict(opts), indent=2))
        print(f"generator: {G.img_resolution}px, num_ws {G.num_ws}, w_dim {G.w_dim}")
        if opts.data:
            data = ImageArchive(opts.data, xflip=opts.mirror)
            print(f"dataset: {len(data)} images, {data.resolution}px")
        print(f"encoder: {count_params(E):,} parameters (body {count_params(E.body):,}, "
              f"heads {count_params(E.styles):,}), input {E.img_resolution}px")
        print(f"latent D: {count_params(LatentDiscriminator(G.w_dim, opts.d_layers)):,} parameters")
        return None

    return run_distributed(opts, training_loop, G=G)


if __name__ == "__main__":
    main()
    exit_after_torchrun()
