"""Train a StyleGAN2 generator (with ADA) on an archive made by training/prepare_dataset.py.

One GPU::

    python training/train_generator.py --data data/utkface-128.zip --outdir runs/utk128 --batch 32 --kimg 5000

Several GPUs on one machine (the batch is split across them)::

    torchrun --standalone --nproc_per_node 4 training/train_generator.py --data ... --batch 64

CPU smoke test (tiny nets on a synthetic 16 px archive, a few steps)::

    python training/train_generator.py --cpu-smoke --outdir runs/smoke

Resume exactly where a snapshot left off (same options, more kimg if you like)::

    python training/train_generator.py --data ... --outdir runs/utk128 --resume runs/utk128

Outputs in --outdir: ``options.json`` (the resolved options), ``stats.jsonl`` (losses,
ADA p, timing, one line per log interval), ``network-snapshot-<nimg>.safetensors``
(+ its ``.json``; G, D and G_ema in faceapp's checkpoint format),
``training-state-<nimg>.pt`` (optimisers, counters, RNG states) and
``fakes-<nimg>.png`` (G_ema at fixed seeds), plus ``reals.png``.

The algorithm is StyleGAN2 (Karras et al. 2020) with adaptive discriminator
augmentation (Karras et al. 2020, "limited data"), following the structure of
NVIDIA's stylegan2-ada-pytorch training loop.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
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

if __package__ in (None, ""):  # run as a script: make `training` and `faceapp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceapp.stylegan import Discriminator, Generator  # noqa: E402
from training.augment import AugmentPipe, adjust_ada_p  # noqa: E402
from training.dataset import ImageArchive, write_synthetic_archive  # noqa: E402
from training.loss import LossConfig, StyleGAN2Loss  # noqa: E402

SNAPSHOT_PREFIX = "network-snapshot-"
STATE_PREFIX = "training-state-"


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run depends on, resolved (no 'auto' left). Saved as options.json."""

    data: str  # training archive (.zip or folder) from prepare_dataset.py
    outdir: str  # where snapshots, grids, logs and options.json go
    device: str  # 'cuda', 'cuda:1', 'cpu'; under torchrun each rank uses cuda:LOCAL_RANK
    seed: int = 0
    # Data.
    cond: bool = False  # condition G and D on the archive's labels
    mirror: bool = False  # add horizontally mirrored copies of the images
    workers: int = 2  # DataLoader worker processes
    # Networks.
    z_dim: int = 512
    w_dim: int = 512
    map_layers: int = 2  # mapping network depth (8 in the StyleGAN2 paper; 2 is enough with ADA)
    cbase: int = 16384  # channels at resolution r = min(cbase // r, cmax)
    cmax: int = 512
    mbstd_group: int = 4  # minibatch-std group size in D
    # Optimisation.
    batch: int = 32  # total batch over all GPUs
    kimg: float = 5000.0  # train for this many thousand real images
    glr: float = 0.0025
    dlr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    gamma: float = 1.0  # R1 weight (auto: 0.0002 * resolution^2 / batch)
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    ema_kimg: float = 10.0  # G_ema half-life in kimg (auto: batch * 10 / 32)
    ema_rampup: float | None = 0.05  # half-life is at most ema_rampup * images seen so far; None = off
    precision: str = "fp32"  # 'fp32', 'bf16' or 'fp16' (torch.autocast; auto = bf16 on CUDA)
    # Augmentation.
    aug: str = "ada"  # 'noaug', 'ada' or 'fixed'
    aug_p: float = 0.0  # starting p (the fixed p with aug='fixed')
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    # Outputs.
    log_kimg: float = 4.0  # write a stats.jsonl line every this many kimg
    snap_kimg: float = 200.0  # snapshot + image grid every this many kimg (and at the end)
    grid: int = 8  # sample grid is grid x grid images
    resume: str | None = None  # snapshot file or run folder (latest snapshot)
    init: str | None = None  # faceapp checkpoint whose G/D/G_ema start the run (fine-tuning)


# ---------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    f = {f.name: f for f in dataclasses.fields(TrainOptions)}
    d = {k: v.default for k, v in f.items()}
    p.add_argument("--data", help="training archive (.zip or folder); optional with --cpu-smoke")
    p.add_argument("--outdir", required=True, help="run folder for snapshots, grids, logs, options.json")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--cond", action="store_true", help="condition on the archive's labels")
    p.add_argument("--mirror", action="store_true", help="add x-flipped copies of the data")
    p.add_argument("--workers", type=int, default=d["workers"])
    p.add_argument("--z-dim", type=int, default=d["z_dim"])
    p.add_argument("--w-dim", type=int, default=d["w_dim"])
    p.add_argument("--map-layers", type=int, default=d["map_layers"])
    p.add_argument("--cbase", type=int, default=d["cbase"])
    p.add_argument("--cmax", type=int, default=d["cmax"])
    p.add_argument("--mbstd-group", type=int, default=d["mbstd_group"])
    p.add_argument("--batch", type=int, default=d["batch"], help="total batch over all GPUs")
    p.add_argument("--kimg", type=float, default=d["kimg"], help="training length in thousands of real images")
    p.add_argument("--glr", type=float, default=d["glr"])
    p.add_argument("--dlr", type=float, default=d["dlr"])
    p.add_argument("--gamma", type=float, default=None, help="R1 weight (default 0.0002 * res^2 / batch)")
    p.add_argument("--r1-interval", type=int, default=d["r1_interval"])
    p.add_argument("--pl-weight", type=float, default=d["pl_weight"])
    p.add_argument("--pl-interval", type=int, default=d["pl_interval"])
    p.add_argument("--style-mixing", type=float, default=d["style_mixing"])
    p.add_argument("--ema-kimg", type=float, default=None, help="G_ema half-life (default batch * 10 / 32)")
    p.add_argument("--ema-rampup", type=float, default=d["ema_rampup"], help="negative = off")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast dtype; auto = bf16 on CUDA (fp32 if unsupported), fp32 on CPU")
    p.add_argument("--aug", default="ada", help="noaug | ada | fixed:P (e.g. fixed:0.2)")
    p.add_argument("--ada-target", type=float, default=d["ada_target"])
    p.add_argument("--ada-kimg", type=float, default=d["ada_kimg"])
    p.add_argument("--log-kimg", type=float, default=d["log_kimg"])
    p.add_argument("--snap-kimg", type=float, default=d["snap_kimg"])
    p.add_argument("--grid", type=int, default=d["grid"])
    p.add_argument("--resume", default=None, help="snapshot .safetensors or a run folder (its latest snapshot)")
    p.add_argument("--init", default=None,
                   help="start from this faceapp checkpoint's G/D/G_ema (fine-tuning; convert official\n"
                        ".pkl/.pt files first with `python -m faceapp convert`)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny 16 px nets on CPU for a few steps (a synthetic archive if --data is not given)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and network sizes, then exit")
    return p


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_options(args: argparse.Namespace, resolution: int) -> TrainOptions:
    """Fill in the 'auto' values of the parsed arguments; ``resolution`` is the data's."""
    device = args.device or ("cpu" if args.cpu_smoke else default_device())
    dev_type = torch.device(device).type
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if dev_type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if args.aug == "noaug" or args.aug == "ada":
        aug, aug_p = args.aug, 0.0
    elif args.aug.startswith("fixed:"):
        aug, aug_p = "fixed", float(args.aug.split(":", 1)[1])
    else:
        raise SystemExit(f"--aug {args.aug!r}: use noaug, ada or fixed:P")
    gamma = args.gamma if args.gamma is not None else 0.0002 * resolution**2 / args.batch
    ema_kimg = args.ema_kimg if args.ema_kimg is not None else args.batch * 10 / 32
    ema_rampup = args.ema_rampup if args.ema_rampup is not None and args.ema_rampup >= 0 else None
    return TrainOptions(
        data=str(args.data), outdir=str(args.outdir), device=device, seed=args.seed, cond=args.cond,
        mirror=args.mirror, workers=args.workers, z_dim=args.z_dim, w_dim=args.w_dim,
        map_layers=args.map_layers, cbase=args.cbase, cmax=args.cmax, mbstd_group=args.mbstd_group,
        batch=args.batch, kimg=args.kimg, glr=args.glr, dlr=args.dlr, gamma=gamma,
        r1_interval=args.r1_interval, pl_weight=args.pl_weight, pl_interval=args.pl_interval,
        style_mixing=args.style_mixing, ema_kimg=ema_kimg, ema_rampup=ema_rampup, precision=precision,
        aug=aug, aug_p=aug_p, ada_target=args.ada_target, ada_kimg=args.ada_kimg, log_kimg=args.log_kimg,
        snap_kimg=args.snap_kimg, grid=args.grid, resume=args.resume, init=args.init,
    )


# Tiny everything: fits a 2-core CPU, a step takes a fraction of a second.
CPU_SMOKE_ARGS = dict(
    z_dim=32, w_dim=32, map_layers=2, cbase=512, cmax=64, batch=4, kimg=0.04, log_kimg=0.004,
    snap_kimg=0.04, grid=4, workers=0, mbstd_group=2, ada_kimg=0.1,
)


# ---------------------------------------------------------------------------------------------
# Set-up helpers.


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group if WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(0, 1, torch.device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, dev)


def build_networks(opts: TrainOptions, resolution: int, channels: int, c_dim: int):
    """-> (G, D) freshly initialised (with the current torch RNG) on the CPU."""
    conv_clamp = 256 if opts.precision == "fp16" else None  # keeps fp16 activations finite
    G = Generator(
        z_dim=opts.z_dim, c_dim=c_dim, w_dim=opts.w_dim, img_resolution=resolution, img_channels=channels,
        mapping_kwargs=dict(num_layers=opts.map_layers),
        synthesis_kwargs=dict(channel_base=opts.cbase, channel_max=opts.cmax, conv_clamp=conv_clamp),
    )
    D = Discriminator(
        c_dim=c_dim, img_resolution=resolution, img_channels=channels, channel_base=opts.cbase,
        channel_max=opts.cmax, conv_clamp=conv_clamp,
        epilogue_kwargs=dict(mbstd_group_size=opts.mbstd_group),
    )
    return G, D


def initial_networks(opts: TrainOptions, dataset: ImageArchive, path: str | os.PathLike | None):
    """-> (G, D, G_ema) on the CPU: fresh from ``opts``, or from a faceapp checkpoint ``path``.

    A checkpoint's own constructor kwargs win over --cbase etc. (so a converted FFHQ model
    can be fine-tuned as it is); a missing D is built fresh, a missing G_ema copied from G.
    """
    if path is None:
        G, D = build_networks(opts, dataset.resolution, dataset.num_channels, dataset.label_dim)
        return G, D, copy.deepcopy(G)
    from faceapp.stylegan.checkpoint import load_networks

    nets = load_networks(path, device="cpu")
    G = nets["G"] if "G" in nets else nets.get("G_ema")
    if G is None:
        raise SystemExit(f"{path} holds no generator (G or G_ema)")
    want = (dataset.resolution, dataset.num_channels, dataset.label_dim)
    if (G.img_resolution, G.img_channels, G.c_dim) != want:
        raise SystemExit(f"{path} makes {G.img_resolution}px, {G.img_channels}-channel images with "
                         f"c_dim {G.c_dim}; the data is {want[0]}px, {want[1]} channels, label_dim {want[2]}")
    D = nets["D"] if "D" in nets else build_networks(opts, *want)[1]
    G_ema = nets["G_ema"] if "G_ema" in nets else copy.deepcopy(G)
    return G, D, G_ema


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class ResumableSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler that can start mid-epoch, so a resumed run sees the same images in order.

    The order of an epoch depends only on (seed, epoch); ``skip`` drops the indices
    this rank already consumed before the snapshot.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return self.num_samples - self.skip


def infinite_batches(loader: torch.utils.data.DataLoader, sampler: ResumableSampler, position: dict):
    """Yield batches forever; ``position`` ({'epoch', 'batches'}) tracks what was consumed."""
    while True:
        sampler.set_epoch(position["epoch"])
        sampler.skip = position["batches"] * loader.batch_size
        for batch in loader:
            position["batches"] += 1
            yield batch
        position["epoch"] += 1
        position["batches"] = 0


def to_float_image(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N, C, H, W] in 0..255 -> float32 [N, C, H, W] in [-1, 1]."""
    return img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def reduce_gradients(module: torch.nn.Module, world_size: int, sanitize: bool) -> None:
    """Average gradients over ranks in one all_reduce; optionally replace NaN/Inf by finite values.

    We synchronise by hand instead of wrapping modules in DistributedDataParallel: the
    R1 and path-length terms need torch.autograd.grad with create_graph=True, which DDP
    does not support, and each phase trains only half of the networks.
    """
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    if world_size > 1:
        dist.all_reduce(flat)
        flat /= world_size
    if sanitize:
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def check_ranks_in_sync(modules: list[torch.nn.Module], world_size: int) -> None:
    """Raise if the ranks' weights differ (they must: every rank applies the same averaged gradients)."""
    sums = torch.stack([torch.stack([p.detach().double().sum() for p in m.parameters()]).sum() for m in modules])
    gathered = [torch.zeros_like(sums) for _ in range(world_size)]
    dist.all_gather(gathered, sums)
    if not all(torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"ranks diverged: weight sums per rank {[g.tolist() for g in gathered]}")


def get_rng_states(device: torch.device) -> dict:
    """RNG states of torch (CPU and this CUDA device), numpy and python, as plain tensors/lists."""
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def run_distributed(opts, loop, **kwargs):
    """Join the torchrun group (if any), write options.json on rank 0, run `loop(opts, info, log, **kwargs)`."""
    info = init_distributed(opts.device)
    if info.rank == 0:
        Path(opts.outdir).mkdir(parents=True, exist_ok=True)
        (Path(opts.outdir) / "options.json").write_text(json.dumps(dataclasses.asdict(opts), indent=2) + "\n")
    try:
        return loop(opts, info, log=print if info.rank == 0 else (lambda *a: None), **kwargs)
    finally:
        if info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def gather_rng_states(device, info) -> list:
    """Every rank's RNG states (a list indexed by rank), so a resumed run continues each rank's streams."""
    rng = get_rng_states(device)
    if info.world_size == 1:
        return [rng]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, rng)
    return gathered


def find_resume(path: str, snapshot_prefix: str = SNAPSHOT_PREFIX,
                state_prefix: str = STATE_PREFIX) -> tuple[Path, Path]:
    """Snapshot file or run folder -> (network snapshot, training-state file beside it)."""
    p = Path(path)
    if p.is_dir():
        snaps = sorted(p.glob(f"{snapshot_prefix}*.safetensors"))
        if not snaps:
            raise SystemExit(f"--resume {path}: no {snapshot_prefix}*.safetensors in that folder")
        p = snaps[-1]
    if not p.exists():
        raise SystemExit(f"--resume {path}: no such file")
    state = p.with_name(p.name.replace(snapshot_prefix, state_prefix)).with_suffix(".pt")
    if not state.exists():
        raise SystemExit(f"--resume {path}: the training state {state.name} is missing beside it")
    return p, state


# ---------------------------------------------------------------------------------------------
# The loop.


def training_loop(opts: TrainOptions, info: DistInfo, log=print) -> dict:
    """Train G and D as ``opts`` say; return a summary (final nimg, last stats, output paths)."""
    from faceapp.stylegan.checkpoint import save_networks

    device = info.device
    rank0 = info.rank == 0
    outdir = Path(opts.outdir)
    if opts.batch % info.world_size != 0:
        raise SystemExit(f"--batch {opts.batch} must be a multiple of the number of processes ({info.world_size})")
    batch_gpu = opts.batch // info.world_size

    # Seeding: each rank draws different z; everything else is in the snapshots.
    torch.manual_seed(opts.seed * info.world_size + info.rank)
    np.random.seed(opts.seed * info.world_size + info.rank)
    random.seed(opts.seed * info.world_size + info.rank)

    dataset = ImageArchive(opts.data, use_labels=opts.cond, xflip=opts.mirror)
    sampler = ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=opts.seed)
    if len(dataset) < opts.batch:
        raise SystemExit(f"{opts.data} has {len(dataset)} images; need at least --batch {opts.batch}")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_gpu, sampler=sampler, num_workers=opts.workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=False,
        generator=torch.Generator(),  # its own RNG, so creating an iterator leaves the global one alone
    )
    position = {"epoch": 0, "batches": 0}

    snap_path = state_path = None
    if opts.resume:
        snap_path, state_path = find_resume(opts.resume)
        G, D, G_ema = initial_networks(opts, dataset, snap_path)
    else:
        G, D, G_ema = initial_networks(opts, dataset, opts.init)
    G, D = G.to(device).train().requires_grad_(False), D.to(device).train().requires_grad_(False)
    G_ema = G_ema.to(device).eval().requires_grad_(False)
    augment_pipe = None
    if opts.aug != "noaug":
        augment_pipe = AugmentPipe(p=opts.aug_p).to(device)

    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.precision]
    scaler = torch.amp.GradScaler(device.type) if opts.precision == "fp16" else None
    loss = StyleGAN2Loss(
        G, D,
        LossConfig(r1_gamma=opts.gamma, style_mixing_prob=opts.style_mixing, pl_weight=opts.pl_weight,
                   pl_batch_shrink=opts.pl_batch_shrink, pl_decay=opts.pl_decay),
        augment_pipe=augment_pipe, autocast_dtype=autocast_dtype,
    )

    # Lazy regularisation: the main loss and its regulariser take turns on one optimiser, so
    # lr and betas are rescaled to match what one would get stepping every minibatch.
    phases = []  # (name, module, optimiser, interval)
    for name, module, lr, reg_interval in [("G", G, opts.glr, opts.pl_interval), ("D", D, opts.dlr, opts.r1_interval)]:
        ratio = reg_interval / (reg_interval + 1)
        opt = torch.optim.Adam(module.parameters(), lr=lr * ratio,
                               betas=(opts.beta1**ratio, opts.beta2**ratio), eps=1e-8)
        phases.append((name + "main", module, opt, 1))
        phases.append((name + "reg", module, opt, reg_interval))
    opt_G, opt_D = phases[0][2], phases[2][2]

    cur_nimg, batch_idx = 0, 0
    ada_acc = torch.zeros(2, device=device)  # [sum of sign(D(real)), count] since the last ADA update
    if opts.resume:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        cur_nimg, batch_idx = state["cur_nimg"], state["batch_idx"]
        position.update(state["data_position"])
        loss.pl_mean.copy_(state["pl_mean"])
        ada_acc.copy_(state["ada_acc"])
        if augment_pipe is not None:
            augment_pipe.p = float(state["augment_p"])
        rng = state["rng"]
        if len(rng) == info.world_size:
            set_rng_states(rng[info.rank], device)
        elif rank0:
            log(f"resuming with {info.world_size} processes from a run with {len(rng)}: RNG streams differ")
        if rank0:
            log(f"resumed from {snap_path} at {cur_nimg / 1000:.3f} kimg")
    elif info.world_size > 1:
        # Same initial weights everywhere (the seeds differ per rank).
        for module in (G, D, G_ema):
            for t in itertools.chain(module.parameters(), module.buffers()):
                dist.broadcast(t.data, src=0)

    grid_z = torch.randn([opts.grid**2, G.z_dim], generator=torch.Generator().manual_seed(opts.seed))
    grid_c = torch.stack([dataset.get_label(i % len(dataset)) for i in range(opts.grid**2)])
    if rank0:
        outdir.mkdir(parents=True, exist_ok=True)
        if not (outdir / "reals.png").exists():
            reals = torch.stack([dataset[i % len(dataset)][0] for i in range(opts.grid**2)])
            save_grid(reals.float() / 127.5 - 1, outdir / "reals.png", opts.grid)

    total_nimg = int(round(opts.kimg * 1000))
    log_nimg = max(int(round(opts.log_kimg * 1000)), 1)
    snap_nimg = max(int(round(opts.snap_kimg * 1000)), 1)
    next_log = (cur_nimg // log_nimg + 1) * log_nimg
    next_snap = (cur_nimg // snap_nimg + 1) * snap_nimg
    stats_acc: dict[str, list[torch.Tensor]] = {}  # per-phase stats since the last log line (rank-local)
    last = {}
    outputs: list[str] = []
    t_start = t_log = time.time()
    nimg_log = cur_nimg
    batches = infinite_batches(loader, sampler, position)

    while cur_nimg < total_nimg:
        real_img, real_c = next(batches)
        real_img = to_float_image(real_img, device)  # [B, C, H, W]
        real_c = real_c.to(device)  # [B, c_dim]
        all_z = torch.randn([len(phases), batch_gpu, G.z_dim], device=device)  # one z batch per phase
        label_idx = torch.randint(len(dataset), [len(phases), batch_gpu])
        all_c = torch.stack([dataset.get_label(int(i)) for i in label_idx.flatten()])
        all_c = all_c.view(len(phases), batch_gpu, -1).to(device)  # [phases, B, c_dim]

        stepped_scaled = False
        for (phase, module, opt, interval), gen_z, gen_c in zip(phases, all_z, all_c):
            if batch_idx % interval != 0:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            gain = float(interval)
            st = loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain=gain, scaler=scaler)
            module.requires_grad_(False)
            scaled = scaler is not None and phase.endswith("main")
            reduce_gradients(module, info.world_size, sanitize=not scaled)
            if scaled:
                scaler.step(opt)
                stepped_scaled = True
            else:
                opt.step()
            for k, v in st.items():
                stats_acc.setdefault(k, []).append(v)
            if phase == "Dmain":
                ada_acc[0] += st["Loss/signs/real"] * batch_gpu
                ada_acc[1] += batch_gpu
        if stepped_scaled:
            scaler.update()

        # G_ema: half-life ema_kimg, shorter early on (ramp-up) so it does not lag the random init.
        ema_nimg = opts.ema_kimg * 1000
        if opts.ema_rampup is not None:
            ema_nimg = min(ema_nimg, cur_nimg * opts.ema_rampup)
        update_ema(G_ema, G, 0.5 ** (opts.batch / max(ema_nimg, 1e-8)))

        cur_nimg += opts.batch
        batch_idx += 1

        # ADA: move p toward the target overfitting level r_t.
        if opts.aug == "ada" and batch_idx % opts.ada_interval == 0:
            acc = ada_acc.clone()
            if info.world_size > 1:
                dist.all_reduce(acc)
            if acc[1] > 0:
                r_t = float(acc[0] / acc[1])
                augment_pipe.p = adjust_ada_p(augment_pipe.p, r_t, opts.ada_target,
                                              opts.batch * opts.ada_interval, opts.ada_kimg)
            ada_acc.zero_()

        done = cur_nimg >= total_nimg
        if cur_nimg >= next_log or done:
            now = time.time()
            last = {k: torch.stack(v).float().mean().item() for k, v in stats_acc.items()}
            record = {
                "kimg": cur_nimg / 1000, "step": batch_idx, "time_s": round(now - t_start, 3),
                "sec_per_kimg": (now - t_log) / max((cur_nimg - nimg_log) / 1000, 1e-9),
                "ada_p": augment_pipe.p if augment_pipe is not None else 0.0, **last,
            }
            if device.type == "cuda":
                record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            if rank0:
                with open(outdir / "stats.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            stats_acc.clear()
            t_log, nimg_log = now, cur_nimg
            next_log = (cur_nimg // log_nimg + 1) * log_nimg

        if cur_nimg >= next_snap or done:
            rng = gather_rng_states(device, info)
            if rank0:
                tag = f"{cur_nimg:09d}"
                snap = outdir / f"{SNAPSHOT_PREFIX}{tag}.safetensors"
                save_networks(snap, {"G": G, "D": D, "G_ema": G_ema},
                              extra={"kimg": cur_nimg / 1000, "training_options": dataclasses.asdict(opts)})
                torch.save({
                    "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "cur_nimg": cur_nimg, "batch_idx": batch_idx, "data_position": dict(position),
                    "pl_mean": loss.pl_mean.cpu(), "ada_acc": ada_acc.cpu(),
                    "augment_p": augment_pipe.p if augment_pipe is not None else 0.0,
                    "rng": rng,
                }, outdir / f"{STATE_PREFIX}{tag}.pt")
                save_grid(render_grid(G_ema, grid_z, grid_c, batch_gpu), outdir / f"fakes-{tag}.png", opts.grid)
                outputs.append(str(snap))
            next_snap = (cur_nimg // snap_nimg + 1) * snap_nimg

    if info.world_size > 1:
        check_ranks_in_sync([G, D, G_ema], info.world_size)
    return {"cur_nimg": cur_nimg, "batch_idx": batch_idx, "stats": last, "snapshots": outputs,
            "G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe}


@torch.no_grad()
def render_grid(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, batch: int) -> torch.Tensor:
    """z [N, z_dim], c [N, c_dim] -> images [N, C, H, W] in [-1, 1] (const noise, no truncation)."""
    dev = next(G.parameters()).device
    out = [G(zb.to(dev), cb.to(dev), noise_mode="const").cpu() for zb, cb in zip(z.split(batch), c.split(batch))]
    return torch.cat(out)


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """images [N, C, H, W] in [-1, 1] -> a PNG grid with ``nrow`` images per row."""
    import torchvision.utils

    torchvision.utils.save_image(images.clamp(-1, 1), path, nrow=nrow, normalize=True, value_range=(-1, 1),
                                 padding=0)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    """Parse ``argv``, set up (distributed) training and run it. Returns the loop's summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        # Smoke defaults apply only where the user left the option at its ordinary default.
        for k, v in CPU_SMOKE_ARGS.items():
            if getattr(args, k) == parser.get_default(k):
                setattr(args, k, v)
    if args.data is None:
        if not args.cpu_smoke:
            parser.error("--data is required (or use --cpu-smoke for a synthetic archive)")
        args.data = str(Path(args.outdir) / "synthetic-16px.zip")
        if not Path(args.data).exists() and int(os.environ.get("RANK", "0")) == 0:
            write_synthetic_archive(args.data, num_images=64, resolution=16, seed=args.seed)
        elif not Path(args.data).exists():
            # Other ranks wait for rank 0 to write it.
            for _ in range(600):
                if Path(args.data).exists():
                    break
                time.sleep(0.1)

    resolution = ImageArchive(args.data).resolution
    opts = resolve_options(args, resolution)
    if args.dry_run:
        data = ImageArchive(opts.data, use_labels=opts.cond, xflip=opts.mirror)
        G, D, _ = initial_networks(opts, data, find_resume(opts.resume)[0] if opts.resume else opts.init)
        print(json.dumps(dataclasses.asdict(opts), indent=2))
        print(f"dataset: {len(data)} images, {data.resolution}px, {data.num_channels} channels, "
              f"label_dim {data.label_dim}")
        print(f"G: {count_params(G):,} parameters (mapping {count_params(G.mapping):,}, "
              f"synthesis {count_params(G.synthesis):,}), num_ws {G.num_ws}")
        print(f"D: {count_params(D):,} parameters")
        return None

    return run_distributed(opts, training_loop)


if __name__ == "__main__":
    main()
