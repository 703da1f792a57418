"""Train an e4e encoder (faceapp.inversion.encoder.Encoder4Editing) against a frozen StyleGAN2 generator.

One GPU, on a prepared archive plus the generator's own samples::

    python training/train_encoder.py --generator runs/utk128/network-snapshot-005000000.safetensors \\
        --data data/utkface-128.zip --outdir runs/enc128 --batch 8 --steps 100000

Several GPUs on one machine (the batch is split across them)::

    torchrun --standalone --nproc_per_node 4 training/train_encoder.py --generator ... --data ... --batch 32

CPU smoke test (a tiny random generator and encoder, G's own samples, a few steps)::

    python training/train_encoder.py --cpu-smoke --outdir runs/enc-smoke

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
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `training` and `faceapp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceapp.inversion.encoder import Encoder4Editing, load_encoder  # noqa: E402
from faceapp.stylegan.checkpoint import load_generator, save_networks  # noqa: E402
from training.dataset import ImageArchive, age_balance_weights  # noqa: E402
from training.train_generator import (  # noqa: E402
    DistInfo,
    ResumableSampler,
    count_params,
    exit_after_torchrun,
    gather_rng_states,
    infinite_batches,
    reduce_gradients,
    run_distributed,
    save_grid,
    set_rng_states,
    to_float_image,
)
from training.train_generator import find_resume as _find_resume  # noqa: E402

SNAPSHOT_PREFIX = "encoder-snapshot-"
STATE_PREFIX = "training-state-"


@dataclass(frozen=True)
class EncoderTrainOptions:
    """Everything an encoder training run depends on, resolved. Saved as options.json."""

    generator: str  # faceapp checkpoint of the (frozen) generator; G_ema if present
    outdir: str
    device: str  # 'cuda', 'cuda:1', 'cpu'; under torchrun each rank uses cuda:LOCAL_RANK
    data: str | None = None  # archive from prepare_dataset.py; None = G's own samples only
    seed: int = 0
    # Data.
    synthetic_fraction: float = 0.5  # share of each batch rendered by G (with known ws); 1.0 without data
    gen_psi: float = 0.8  # truncation of G's samples (real faces are closer to w_avg than raw samples)
    mirror: bool = False
    balance_age: float = 0.0  # draw real faces' age bins in proportion to count^(1-alpha) (0: off)
    workers: int = 2
    # Encoder.
    preset: str = "e4e"  # architecture preset the values below came from (see PRESETS)
    enc_resolution: int = 256  # input size of the encoder (e4e: 256; images are resized to it)
    blocks: tuple[int, ...] = (3, 4, 14, 3)  # IR-SE units per stage ((3, 4, 14, 3) = e4e's IR-SE-50)
    channels: tuple[int, ...] = (64, 128, 256, 512)
    head_channels: int | None = None  # conv width of the style heads, None = w_dim
    unit: str = "ir_se"
    init: str | None = None  # start from this faceapp checkpoint's 'encoder' (fine-tuning)
    # Optimisation.
    batch: int = 8  # total over all processes
    steps: int = 100_000
    minutes: float = 0.0  # also stop after this many minutes of training time (snapshots excluded; 0: no limit)
    lr: float = 1e-4
    # Losses (e4e's weights for FFHQ, except id).
    l2_lambda: float = 1.0
    lpips_lambda: float = 0.8
    perceptual: str = "auto"  # faceapp.inversion.losses.perceptual_loss kind
    id_lambda: float = 0.1
    delta_lambda: float = 2e-4  # L2 norm of each active delta, summed over layers
    w_lambda: float = 1.0  # L2 to the true ws on G's own samples
    adv_lambda: float = 0.1  # latent discriminator weight (0 = off)
    d_lr: float = 2e-5
    d_layers: int = 4
    r1_gamma: float = 10.0
    d_reg_every: int = 16
    loss_resolution: int = 256  # losses compare images at most this large
    # Progressive delta unlocking.
    progressive_start: int = 20_000  # steps with the base code only; 0 = start unlocking at once
    progressive_every: int = 2_000  # one more W+ layer every this many steps; 0 = all layers at once
    # Outputs.
    log_every: int = 100
    snap_every: int = 5_000
    grid: int = 8  # input | reconstruction pairs in the sample image
    resume: str | None = None


# ---------------------------------------------------------------------------------------------
# Command line.


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    d = {f.name: f.default for f in dataclasses.fields(EncoderTrainOptions)}
    p.add_argument("--generator", help="faceapp generator checkpoint (convert official files first); "
                                       "optional with --cpu-smoke")
    p.add_argument("--data", default=None, help="training archive (.zip or folder); none = G's samples only")
    p.add_argument("--outdir", required=True)
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--synthetic-fraction", type=float, default=None,
                   help=f"share of each batch from G (default {d['synthetic_fraction']}; 1 without --data)")
    p.add_argument("--gen-psi", type=float, default=d["gen_psi"])
    p.add_argument("--mirror", action="store_true")
    p.add_argument("--balance-age", type=float, default=d["balance_age"], metavar="ALPHA",
                   help="draw the real faces' age bins in proportion to count^(1-ALPHA) (as train_generator.py's "
                        "option: 0 = the data's mix, 0.5 gives old faces 1.5x their share)")
    p.add_argument("--workers", type=int, default=d["workers"])
    p.add_argument("--preset", choices=sorted(PRESETS), default=d["preset"],
                   help="e4e: the official IR-SE-50 encoder (267 M parameters with w_dim 512);\n"
                        "demo: a small one for CPU inference (8.6 M parameters for a 128 px, w_dim 512 G);\n"
                        "--blocks/--channels/--head-channels override it")
    p.add_argument("--enc-resolution", type=int, default=None, help="encoder input size (default min(G, 256))")
    p.add_argument("--blocks", type=_ints, default=d["blocks"], help="units per stage, e.g. 3,4,14,3")
    p.add_argument("--channels", type=_ints, default=d["channels"], help="stage widths, e.g. 64,128,256,512")
    p.add_argument("--head-channels", type=int, default=None, help="style head conv width (default w_dim)")
    p.add_argument("--unit", choices=["ir_se", "ir"], default=d["unit"])
    p.add_argument("--init", default=None, help="faceapp checkpoint whose 'encoder' starts the run")
    p.add_argument("--batch", type=int, default=d["batch"], help="total batch over all processes")
    p.add_argument("--steps", type=int, default=d["steps"])
    p.add_argument("--minutes", type=float, default=d["minutes"],
                   help="also stop after this many minutes of training time, summed over resumes (0: no limit)")
    p.add_argument("--lr", type=float, default=d["lr"])
    for name in ("l2_lambda", "lpips_lambda", "id_lambda", "delta_lambda", "w_lambda", "adv_lambda", "d_lr",
                 "r1_gamma"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=d[name])
    p.add_argument("--perceptual", default=d["perceptual"], help="auto | lpips-vgg | lpips-alex | mobilenet")
    p.add_argument("--d-layers", type=int, default=d["d_layers"])
    p.add_argument("--d-reg-every", type=int, default=d["d_reg_every"])
    p.add_argument("--loss-resolution", type=int, default=d["loss_resolution"])
    p.add_argument("--progressive-start", type=int, default=d["progressive_start"])
    p.add_argument("--progressive-every", type=int, default=d["progressive_every"])
    p.add_argument("--log-every", type=int, default=d["log_every"])
    p.add_argument("--snap-every", type=int, default=d["snap_every"])
    p.add_argument("--grid", type=int, default=d["grid"])
    p.add_argument("--resume", default=None, help="encoder snapshot or a run folder (its latest snapshot)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny nets on CPU for a few steps (a random 32 px generator if --generator is not given)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and network sizes, then exit")
    return p


# Architecture presets (applied where the user kept the ordinary default).
PRESETS = {
    "e4e": dict(blocks=(3, 4, 14, 3), channels=(64, 128, 256, 512), head_channels=None),
    "demo": dict(blocks=(1, 2, 2, 1), channels=(16, 32, 64, 128), head_channels=128),
}

# Tiny everything: a step takes well under a second on a 2-core CPU.
CPU_SMOKE_ARGS = dict(
    blocks=(1, 1, 1, 1), channels=(8, 16, 24, 32), head_channels=32, batch=4, steps=20, lr=1e-3,
    lpips_lambda=0.0, id_lambda=0.0, d_reg_every=4, progressive_start=4, progressive_every=2, log_every=5,
    snap_every=20, grid=4, workers=0,
)


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


def resolve_options(args: argparse.Namespace, G) -> EncoderTrainOptions:
    device = args.device or ("cpu" if args.cpu_smoke else ("cuda" if torch.cuda.is_available() else "cpu"))
    frac = args.synthetic_fraction
    if frac is None:
        frac = EncoderTrainOptions.synthetic_fraction if args.data else 1.0
    if not args.data and frac < 1:
        raise SystemExit("--synthetic-fraction below 1 needs --data (a training archive)")
    if not 0 <= frac <= 1:
        raise SystemExit("--synthetic-fraction must be in [0, 1]")
    enc_res = args.enc_resolution or min(G.img_resolution, 256)
    fields = {f.name for f in dataclasses.fields(EncoderTrainOptions)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values.update(generator=str(args.generator), outdir=str(args.outdir), device=device,
                  data=str(args.data) if args.data else None, synthetic_fraction=float(frac), enc_resolution=enc_res,
                  blocks=tuple(args.blocks), channels=tuple(args.channels))
    return EncoderTrainOptions(**values)


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


def average_buffers(module: torch.nn.Module, world_size: int) -> None:
    """BatchNorm statistics differ per rank; keep one copy (their mean), as DDP keeps rank 0's."""
    if world_size == 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world_size


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
    device = info.device
    rank0 = info.rank == 0
    outdir = Path(opts.outdir)
    if opts.batch % info.world_size != 0:
        raise SystemExit(f"--batch {opts.batch} must be a multiple of the number of processes ({info.world_size})")
    batch_gpu = opts.batch // info.world_size
    n_gen = int(round(batch_gpu * opts.synthetic_fraction))
    n_real = batch_gpu - n_gen

    torch.manual_seed(opts.seed)  # the same initial weights on every rank
    G = (load_frozen_generator(opts.generator, device) if G is None
         else G.to(device).eval().requires_grad_(False))
    E = build_encoder(opts, G).to(device).train()
    D = LatentDiscriminator(G.w_dim, opts.d_layers).to(device).train().requires_grad_(False)
    seed = opts.seed * info.world_size + info.rank  # different samples per rank from here on
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    dataset = loader = batches = sampler = None
    position = {"epoch": 0, "batches": 0}
    if n_real > 0:
        dataset = ImageArchive(opts.data, xflip=opts.mirror)
        weights = age_balance_weights(dataset.ages(), opts.balance_age) if opts.balance_age else None
        sampler = ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=opts.seed,
                                   weights=weights)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=n_real, sampler=sampler, num_workers=opts.workers, drop_last=True,
            pin_memory=device.type == "cuda", generator=torch.Generator(),
        )

    perceptual = identity = None
    if opts.lpips_lambda > 0:
        from faceapp.inversion.losses import perceptual_loss

        perceptual = perceptual_loss(opts.perceptual, device=device).requires_grad_(False)
    if opts.id_lambda > 0:
        from faceapp.inversion.identity import IdentityLoss

        identity = IdentityLoss().to(device).eval().requires_grad_(False)

    opt_E = torch.optim.Adam(E.parameters(), lr=opts.lr, betas=(0.9, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=opts.d_lr, betas=(0.9, 0.999))
    step, train_time = 0, 0.0
    if opts.resume:
        snap_path, state_path = find_resume(opts.resume)
        E = load_encoder(snap_path, device=device).train()
        opt_E = torch.optim.Adam(E.parameters(), lr=opts.lr, betas=(0.9, 0.999))
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        D.load_state_dict(state["D"])
        opt_E.load_state_dict(state["opt_E"])
        opt_D.load_state_dict(state["opt_D"])
        step = int(state["step"])
        train_time = float(state.get("train_time_s", 0.0))
        position.update(state["data_position"])
        rng = state["rng"]
        if len(rng) == info.world_size:
            set_rng_states(rng[info.rank], device)
        elif rank0:
            log(f"resuming with {info.world_size} processes from a run with {len(rng)}: RNG streams differ")
        if rank0:
            log(f"resumed from {snap_path} at step {step}")
    if loader is not None:
        batches = infinite_batches(loader, sampler, position)

    loss_res = min(G.img_resolution, opts.loss_resolution)
    # Fixed inputs for the sample grid: G's samples at fixed seeds, then the archive's first images.
    n_grid_real = min(opts.grid // 2, len(dataset)) if dataset is not None else 0
    grid_gen = opts.grid - n_grid_real
    with torch.no_grad():
        gz = torch.randn([grid_gen, G.z_dim], generator=torch.Generator().manual_seed(opts.seed + 12345))
        grid_img = G.synthesis(G.mapping(gz.to(device), None, truncation_psi=opts.gen_psi), noise_mode="const")
        if n_grid_real:
            reals = torch.stack([dataset[i][0] for i in range(n_grid_real)])
            grid_img = torch.cat([grid_img, resize(to_float_image(reals, device), G.img_resolution)])
    if rank0:
        outdir.mkdir(parents=True, exist_ok=True)

    stats_acc: dict[str, list[float]] = {}
    last: dict = {}
    snapshots: list[str] = []
    t_start = t_log = time.time()
    step_log = step
    while step < opts.steps:
        t_step = time.time()
        stage = progressive_stage(step, G.num_ws, opts.progressive_start, opts.progressive_every)
        if E.progressive_stage != (None if stage == G.num_ws - 1 else stage):
            E.set_progressive_stage(stage)
        active = stage + 1  # W+ layers 0..stage carry their own code

        # -- batch: real images and/or G's samples (with their true ws) --------------------------
        parts = []
        ws_true = None
        if n_gen:
            with torch.no_grad():
                z = torch.randn([n_gen, G.z_dim], device=device)
                ws_true = G.mapping(z, None, truncation_psi=opts.gen_psi)  # [n_gen, num_ws, w_dim]
                parts.append(G.synthesis(ws_true, noise_mode="const"))
        if n_real:
            real, _ = next(batches)
            parts.append(resize(to_float_image(real, device), G.img_resolution))
        target = torch.cat(parts)  # [B, C, R, R], G's samples first

        # -- encoder step ------------------------------------------------------------------------
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
            wl = F.mse_loss(ws[:n_gen], ws_true)
            total = total + opts.w_lambda * wl
            st["Loss/w"] = wl.item()
        if opts.adv_lambda > 0:
            adv = F.softplus(-D(ws[:, :active].reshape(-1, G.w_dim))).mean()
            total = total + opts.adv_lambda * adv
            st["Loss/adv"] = adv.item()
        st["Loss/total"] = total.item()
        opt_E.zero_grad(set_to_none=True)
        total.backward()
        reduce_gradients(E, info.world_size, sanitize=True)
        opt_E.step()
        average_buffers(E, info.world_size)

        # -- latent discriminator step: real w from G.mapping vs the encoder's codes --------------
        if opts.adv_lambda > 0:
            D.requires_grad_(True)
            with torch.no_grad():
                real_w = G.mapping(torch.randn([batch_gpu, G.z_dim], device=device), None)[:, 0]  # [B, w_dim]
            fake_w = ws.detach()[:, :active].reshape(-1, G.w_dim)
            d_loss = F.softplus(D(fake_w)).mean() + F.softplus(-D(real_w)).mean()
            st["Loss/D"] = d_loss.item()
            if step % opts.d_reg_every == 0 and opts.r1_gamma > 0:
                r1 = r1_penalty(D, real_w)
                d_loss = d_loss + opts.r1_gamma / 2 * r1 * opts.d_reg_every
                st["Loss/r1"] = r1.item()
            opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            D.requires_grad_(False)
            reduce_gradients(D, info.world_size, sanitize=True)
            opt_D.step()

        for k, v in st.items():
            stats_acc.setdefault(k, []).append(v)
        step += 1
        train_time += time.time() - t_step
        out_of_time = opts.minutes > 0 and train_time >= 60 * opts.minutes
        if info.world_size > 1:  # every rank stops at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag)
            out_of_time = bool(flag.item() > 0)
        done = step >= opts.steps or out_of_time

        if step % opts.log_every == 0 or done:
            now = time.time()
            last = {k: float(np.mean(v)) for k, v in stats_acc.items()}
            record = {"step": step, "stage": stage, "time_s": round(now - t_start, 3),
                      "train_time_s": round(train_time, 3),
                      "sec_per_step": (now - t_log) / max(step - step_log, 1), **last}
            if device.type == "cuda":
                record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            if rank0:
                with open(outdir / "stats.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            stats_acc.clear()
            t_log, step_log = now, step

        if step % opts.snap_every == 0 or done:
            rng = gather_rng_states(device, info)
            if rank0:
                tag = f"{step:07d}"
                snap = outdir / f"{SNAPSHOT_PREFIX}{tag}.safetensors"
                save_networks(snap, {"encoder": E}, extra={
                    "step": step, "progressive_stage": stage, "generator": opts.generator,
                    "train_time_s": round(train_time, 3),
                    "generator_kwargs": G.init_kwargs, "training_options": dataclasses.asdict(opts),
                })
                torch.save({"D": D.state_dict(), "opt_E": opt_E.state_dict(), "opt_D": opt_D.state_dict(),
                            "step": step, "data_position": dict(position), "rng": rng,
                            "train_time_s": train_time},
                           outdir / f"{STATE_PREFIX}{tag}.pt")
                save_grid(sample_pairs(E, G, grid_img), outdir / f"samples-{tag}.png", nrow=8)
                snapshots.append(str(snap))
        if done:
            break
    if rank0 and opts.minutes > 0 and step < opts.steps:
        log(f"stopped at step {step}: --minutes {opts.minutes:g} of training time reached")
    return {"step": step, "stats": last, "snapshots": snapshots, "E": E, "D": D, "G": G}


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
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) == parser.get_default(k):
            setattr(args, k, v)
    if args.cpu_smoke:
        for k, v in CPU_SMOKE_ARGS.items():  # only where the user kept the ordinary default
            if getattr(args, k) == parser.get_default(k):
                setattr(args, k, v)
        if args.generator is None:
            args.generator = str(Path(args.outdir) / "smoke-generator.safetensors")
            if int(os.environ.get("RANK", "0")) == 0 and not Path(args.generator).exists():
                smoke_generator(Path(args.generator), seed=args.seed)
            for _ in range(600):  # other ranks wait for rank 0 to write it
                if Path(args.generator).exists():
                    break
                time.sleep(0.1)
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
