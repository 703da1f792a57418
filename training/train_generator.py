"""Train a StyleGAN2 generator on an archive made by training/prepare_dataset.py.

Two recipes share one loop and one Generator (mapping -> W/W+ -> modulated convs), so everything
downstream (inversion, edits, importers, bundles) works with either:

- ``--recipe fast`` (for a CPU): a projected discriminator on frozen ImageNet MobileNetV2 features
  (training/projected.py), DiffAugment, hinge loss, no R1 / path length, a G sized for two cores.
  docs/TRAINING.md has its profile and its race against ``ada``.
- ``--recipe ada`` (the default; for GPUs): StyleGAN2 with adaptive discriminator augmentation, following
  NVIDIA's stylegan2-ada-pytorch: StyleGAN2 D, non-saturating logistic loss, lazy R1, path length.

A recipe only sets defaults (the table RECIPES); every option can still be given (e.g. the projected D with
the logistic loss). The parts it picks are built by build_discriminator / build_augment / build_loss. The
plumbing every training script shares (processes, RNG streams, the resumable data order, snapshots and
resuming) is training/runtime.py; the command line is generated from TrainOptions (training/options.py).

    python -m training.train_generator --recipe fast --data data/utkface-64.zip --outdir runs/fast64 \\
        --kimg 300 --threads 2 --quality-source ../shared/data/utkface/utkface-200px.zip
    python -m training.train_generator --data data/utkface-128.zip --outdir runs/utk128 --batch 32 --kimg 5000
    torchrun --standalone --nproc_per_node 4 -m training.train_generator --data ... --batch 64
    python -m training.train_generator --cpu-smoke --outdir runs/smoke          # tiny nets, a few steps
    python -m training.train_generator ... --resume runs/utk128                   # same options, more kimg

Outputs in --outdir: ``options.json`` (the resolved options), ``stats.jsonl`` (losses, ADA p, timing,
one line per log interval; the quality measure's lines, training/quality.py, every --quality-kimg),
``network-snapshot-<nimg>.safetensors`` (G, D and G_ema in faceapp's checkpoint format; D without the
frozen feature network), ``training-state-<nimg>.pt`` (optimisers, counters, RNG states) and
``fakes-<nimg>.png`` (G_ema at fixed seeds), plus ``reals.png``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from faceapp.stylegan import Discriminator, Generator
from training.augment import AugmentPipe, adjust_ada_p
from training.dataset import ImageArchive, age_balance_weights, write_synthetic_archive
from training.loss import HingeLoss, LossConfig, StyleGAN2Loss
from training.options import AUTO, given_options, layered_values, opt, training_parser
from training.runtime import (
    DistInfo,
    Every,
    append_stats,
    batch_per_rank,
    broadcast_weights,
    check_ranks_in_sync,
    count_params,
    default_device,
    exit_after_torchrun,
    find_resume,
    gather_rng_states,
    infinite_batches,
    load_state,
    log_stats,
    make_loader,
    out_of_time,
    prune_snapshots,
    rank0_writes,
    reduce_gradients,
    restore_progress,
    run_distributed,
    save_grid,
    save_snapshot,
    seed_rank,
    to_float_image,
)


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run depends on, resolved (no AUTO left). Saved as options.json.

    The command line is generated from these fields (``--map-layers`` for ``map_layers``); a recipe
    (RECIPES) changes the defaults.
    """

    data: str = opt(None, "training archive (.zip or folder) from prepare_dataset.py")
    outdir: str = opt(None, "run folder for snapshots, grids, logs and options.json", required=True)
    recipe: str = opt("ada", "ada (StyleGAN2-ADA, GPUs) or fast (projected D + DiffAugment, CPUs): sets defaults",
                      choices=["ada", "fast"])
    device: str = opt(AUTO, "cuda, cuda:N or cpu (default: cuda if available); torchrun ranks use cuda:LOCAL_RANK")
    threads: int = opt(0, "torch CPU threads (0: torch's default)")
    seed: int = opt(0, "random seed")
    # Data.
    cond: bool = opt(False, "condition G and D on the archive's labels")
    mirror: bool = opt(False, "add horizontally mirrored copies of the images")
    balance_age: float = opt(0.0, "draw images so that age bin b (babies, children, teens, decades, 70+) comes up "
                             "in proportion to count_b^(1-ALPHA): 0 = the data's mix, 1 = every bin equally; "
                             "0.5 lifts UTKFace's 60+ share from 11 %% to 17 %%. Needs ages in dataset.json")
    workers: int = opt(2, "DataLoader worker processes")
    # Parts a recipe picks.
    d_arch: str = opt("stylegan2", "discriminator: stylegan2 or projected", choices=["stylegan2", "projected"])
    loss: str = opt("logistic", "logistic (non-saturating + R1 + path length) or hinge (no regularisers)",
                    choices=["logistic", "hinge"])
    aug: str = opt("ada", "noaug | ada | fixed:P (ADA's pipeline at a fixed p) | diffaug")
    # Networks.
    z_dim: int = opt(512, "latent z size")
    w_dim: int = opt(512, "intermediate latent w size")
    map_layers: int = opt(2, "mapping network depth (8 in the StyleGAN2 paper; 2 is enough with ADA)")
    cbase: int = opt(16384, "channels at resolution r = min(cbase // r, cmax)")
    cmax: int = opt(512, "most channels of any layer")
    mbstd_group: int = opt(4, "minibatch-std group size in the StyleGAN2 D")
    proj_res: int = opt(AUTO, "projected D: images resized to this for the feature network (default 2x, <= 256)")
    proj_heads: int = opt(64, "projected D: width of each trainable head")
    proj_mbstd: int = opt(0, "projected D: minibatch-std group size in each head (0: off); resuming a run "
                          "made without it adds it, starting at zero")
    # Optimisation.
    batch: int = opt(32, "total batch over all processes")
    kimg: float = opt(5000.0, "train for this many thousand real images")
    minutes: float = opt(0.0, "also stop after this many minutes of training time (evaluations and snapshots "
                         "excluded; 0: no limit), e.g. to race two recipes on the same machine")
    glr: float = opt(0.0025, "G learning rate")
    dlr: float = opt(0.0025, "D learning rate")
    beta1: float = opt(0.0, "Adam beta1")
    beta2: float = opt(0.99, "Adam beta2")
    gamma: float = opt(AUTO, "R1 weight (default 0.0002 * resolution^2 / batch; 0 = off)")
    r1_interval: int = opt(16, "lazy R1 every this many steps")
    pl_weight: float = opt(2.0, "path-length weight (0 = off)")
    pl_interval: int = opt(4, "lazy path length every this many steps")
    pl_batch_shrink: int = opt(2, "path-length pass uses batch // this samples")
    pl_decay: float = opt(0.01, "EMA rate of the path-length target")
    style_mixing: float = opt(0.9, "probability that a sample mixes two latents")
    ema_kimg: float = opt(AUTO, "G_ema half-life in kimg (default batch * 10 / 32)")
    ema_rampup: float = opt(0.05, "G_ema half-life is at most this times the images seen so far (negative: off)")
    precision: str = opt(AUTO, "autocast dtype: fp32, bf16 or fp16 (default bf16 on CUDA if supported, else fp32)",
                         choices=["fp32", "bf16", "fp16"])
    # Augmentation.
    aug_p: float = opt(0.0, "starting ADA p (the p of --aug fixed:P)")
    ada_target: float = opt(0.6, "ADA's target for E[sign(D(real))]")
    ada_interval: int = opt(4, "update ADA's p every this many steps")
    ada_kimg: float = opt(500.0, "ADA's p can go 0 -> 1 in this many kimg")
    diffaug_policy: str = opt("color,translation,cutout", "DiffAugment policies for --aug diffaug")
    # Outputs.
    log_kimg: float = opt(4.0, "a stats.jsonl line every this many kimg")
    snap_kimg: float = opt(200.0, "snapshot + image grid every this many kimg (and at the end)")
    snap_dtype: str = opt("fp32", "fp32 (exact resume) or fp16: networks in fp16, optimiser moments in bf16 "
                          "(compact, e.g. to commit a run)", choices=["fp32", "fp16"])
    keep_snaps: int = opt(0, "keep only the newest N snapshots (0: all)")
    grid: int = opt(8, "sample grid is grid x grid images")
    resume: str = opt(None, "snapshot .safetensors or a run folder (its latest snapshot)")
    freeze_below: int = opt(0, "keep G's mapping and its blocks below this resolution as they are (e.g. 128 when "
                            "growing a 64 px run: only the new blocks learn, so the grown G keeps the small one's "
                            "faces, codes and edit directions and adds detail; 0: train everything)")
    init: str = opt(None, "start from this faceapp checkpoint's G/D/G_ema (fine-tuning; convert official .pkl/.pt "
                    "files first with `python -m faceapp convert`)")
    # The quality measure (training/quality.py); off without --quality-source.
    quality_source: str = opt(None, "zip of the original photos that holds the held-out ones (UTKFace's)")
    quality_heldout: str = opt("training/labels/utkface-heldout-fd.txt", "held-out photo names, one per line")
    quality_kimg: float = opt(20.0, "evaluate the quality measure every this many kimg (and at the end)")
    quality_num: int = opt(1000, "samples per evaluation")
    quality_psi: str = opt("1.0,0.7", "truncation psi values to evaluate at, comma-separated")
    quality_labeler: str = opt(None, "age/gender labeler (training/labelers.py fit-age-gender): also log the "
                               "samples' female / 60+ / under-15 shares, beside the held-out faces'")


# Defaults per recipe (over the dataclass's, which are StyleGAN2-ADA's). `fast` is sized for 2 CPU cores:
# measured in docs/TRAINING.md (profile of a step, and the race against `ada`).
RECIPES: dict[str, dict] = {
    "ada": {},
    "fast": dict(
        d_arch="projected", loss="hinge", aug="diffaug", z_dim=256, w_dim=256, map_layers=4, cbase=2048,
        cmax=256, batch=32, glr=0.0025, dlr=0.002, proj_mbstd=4, style_mixing=0.5, ema_kimg=10.0, mirror=True,
        workers=1, log_kimg=2.0, snap_kimg=20.0,
    ),
}

# Tiny everything: fits a 2-core CPU, a step takes a fraction of a second.
CPU_SMOKE_ARGS = dict(
    z_dim=32, w_dim=32, map_layers=2, cbase=512, cmax=64, batch=4, kimg=0.04, log_kimg=0.004,
    snap_kimg=0.04, grid=4, workers=0, mbstd_group=2, ada_kimg=0.1, proj_heads=16,
)


# ---------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    """The command line, one flag per TrainOptions field (every default None = 'not given')."""
    return training_parser(
        TrainOptions, __doc__.split("\n\n")[0],
        "tiny 16 px nets on CPU for a few steps (a synthetic archive if --data is not given)",
        epilog="[defaults] are the ada recipe's; --recipe fast changes some (RECIPES in this file; --dry-run shows "
               "what a command resolves to).")


def resolve_options(args: argparse.Namespace, resolution: int, base: dict | None = None,
                    log=print) -> TrainOptions:
    """Defaults < the recipe's < --cpu-smoke's < what was given; then fill in every AUTO.

    ``resolution`` is the data's. ``base``: the options a resumed run was trained with (from its
    snapshot); they replace the defaults, recipe and smoke settings, so a resumed run goes on with its
    own recipe unless an option is given again (every change is logged).
    """
    fields = {f.name: f for f in dataclasses.fields(TrainOptions)}
    given = given_options(args, TrainOptions)
    if base is not None:
        values = {k: base.get(k, f.default) for k, f in fields.items()}
        for k, v in given.items():
            if k not in ("resume", "outdir", "data") and base.get(k, fields[k].default) != v:
                log(f"resume: {k} {base.get(k)!r} -> {v!r} (given on the command line)")
        values.update(given)
    else:
        smoke = {**CPU_SMOKE_ARGS, "device": "cpu"} if args.cpu_smoke else {}
        values = layered_values(TrainOptions, args, RECIPES[given.get("recipe", TrainOptions.recipe)], smoke)
    device = values["device"] or default_device()
    if values["precision"] is None:
        cuda = torch.device(device).type == "cuda"
        values["precision"] = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    aug = values["aug"]
    if aug.startswith("fixed:"):
        try:
            values["aug"], values["aug_p"] = "fixed", float(aug.split(":", 1)[1])
        except ValueError:
            raise SystemExit(f"--aug {aug!r}: P must be a number in [0, 1], e.g. fixed:0.2") from None
    elif aug not in ("noaug", "ada", "diffaug", "fixed"):  # 'fixed' (as options.json stores it) uses --aug-p
        raise SystemExit(f"--aug {aug!r}: use noaug, ada, fixed:P or diffaug")
    if not 0 <= values["aug_p"] <= 1:
        raise SystemExit(f"augmentation probability {values['aug_p']} is not in [0, 1]")
    if values["proj_res"] is not None and (values["proj_res"] % 32 or values["proj_res"] < 32):
        raise SystemExit(f"--proj-res {values['proj_res']}: use a multiple of 32 (128 or more keeps 4x4 maps "
                         f"at MobileNetV2's coarsest tap)")
    fb = values["freeze_below"]
    if fb and (fb & (fb - 1) or not 8 <= fb <= resolution):
        raise SystemExit(f"--freeze-below {fb}: use a block resolution from 8 to the data's {resolution} (0: none)")
    if values["quality_source"] and values["cond"]:
        raise SystemExit("the quality measure samples an unconditional G: drop --quality-source with --cond")
    if values["gamma"] is None:
        values["gamma"] = 0.0 if values["loss"] == "hinge" else 0.0002 * resolution**2 / values["batch"]
    if values["ema_kimg"] is None:
        values["ema_kimg"] = values["batch"] * 10 / 32
    if values["ema_rampup"] is not None and values["ema_rampup"] < 0:
        values["ema_rampup"] = None
    if values["d_arch"] == "projected" and values["proj_res"] is None:
        values["proj_res"] = min(2 * resolution, 256)
    values.update(device=device, data=str(values["data"]), outdir=str(values["outdir"]))
    return TrainOptions(**values)



# ---------------------------------------------------------------------------------------------
# The parts a recipe picks.


def build_generator(opts: TrainOptions, resolution: int, channels: int, c_dim: int) -> Generator:
    conv_clamp = 256 if opts.precision == "fp16" else None  # keeps fp16 activations finite
    return Generator(
        z_dim=opts.z_dim, c_dim=c_dim, w_dim=opts.w_dim, img_resolution=resolution, img_channels=channels,
        mapping_kwargs=dict(num_layers=opts.map_layers),
        synthesis_kwargs=dict(channel_base=opts.cbase, channel_max=opts.cmax, conv_clamp=conv_clamp),
    )


def build_discriminator(opts: TrainOptions, resolution: int, channels: int, c_dim: int) -> torch.nn.Module:
    """--d-arch stylegan2: NVIDIA's residual D; projected: training/projected.py (frozen MobileNetV2)."""
    if opts.d_arch == "projected":
        from training.projected import ProjectedDiscriminator, register

        register()
        if c_dim:
            raise SystemExit("--d-arch projected is unconditional: drop --cond or use --d-arch stylegan2")
        return ProjectedDiscriminator(img_resolution=resolution, img_channels=channels,
                                      feature_resolution=opts.proj_res, head_channels=opts.proj_heads,
                                      seed=opts.seed, mbstd_group=opts.proj_mbstd)
    conv_clamp = 256 if opts.precision == "fp16" else None
    return Discriminator(
        c_dim=c_dim, img_resolution=resolution, img_channels=channels, channel_base=opts.cbase,
        channel_max=opts.cmax, conv_clamp=conv_clamp, epilogue_kwargs=dict(mbstd_group_size=opts.mbstd_group),
    )


def build_augment(opts: TrainOptions) -> torch.nn.Module | None:
    """--aug: ADA's pipeline (ada / fixed:P), DiffAugment (diffaug) or none (noaug)."""
    if opts.aug == "diffaug":
        from training.diffaug import DiffAugment

        return DiffAugment(opts.diffaug_policy)
    if opts.aug in ("ada", "fixed"):
        return AugmentPipe(p=opts.aug_p)
    return None


def build_loss(opts: TrainOptions, G, D, augment_pipe, autocast_dtype):
    """--loss logistic: StyleGAN2Loss (with R1 and path length, lazily); hinge: HingeLoss."""
    if opts.loss == "hinge":
        return HingeLoss(G, D, style_mixing_prob=opts.style_mixing, augment_pipe=augment_pipe,
                         autocast_dtype=autocast_dtype)
    return StyleGAN2Loss(
        G, D, LossConfig(r1_gamma=opts.gamma, style_mixing_prob=opts.style_mixing, pl_weight=opts.pl_weight,
                         pl_batch_shrink=opts.pl_batch_shrink, pl_decay=opts.pl_decay),
        augment_pipe=augment_pipe, autocast_dtype=autocast_dtype,
        reg_intervals=(opts.pl_interval, opts.r1_interval),
    )


def build_networks(opts: TrainOptions, resolution: int, channels: int, c_dim: int):
    """-> (G, D) freshly initialised (with the current torch RNG) on the CPU."""
    return (build_generator(opts, resolution, channels, c_dim),
            build_discriminator(opts, resolution, channels, c_dim))


def initial_networks(opts: TrainOptions, dataset: ImageArchive, path: str | os.PathLike | None):
    """-> (G, D, G_ema) on the CPU: fresh from ``opts``, or from a faceapp checkpoint ``path``.

    A checkpoint's own constructor kwargs win over --cbase etc. (so a converted FFHQ model
    can be fine-tuned as it is); a missing D (or one of another --d-arch) is built fresh, a
    missing G_ema copied from G.
    """
    if path is None:
        G, D = build_networks(opts, dataset.resolution, dataset.num_channels, dataset.label_dim)
        return G, D, copy.deepcopy(G)
    from faceapp.stylegan.checkpoint import load_networks
    from training.projected import register

    register()  # a run's snapshot may hold a projected D
    nets = load_networks(path, device="cpu")
    G = nets["G"] if "G" in nets else nets.get("G_ema")
    if G is None:
        raise SystemExit(f"{path} holds no generator (G or G_ema)")
    want = (dataset.resolution, dataset.num_channels, dataset.label_dim)
    grown = _growable(G, want)
    if grown:
        print(f"growing {path}'s {G.img_resolution}px generator to the data's {want[0]}px: new blocks "
              f"{', '.join(f'b{r}' for r in grown)} start by rendering its image, upsampled")
        G = grow_generator(G, want[0])
        if "G_ema" in nets:
            nets["G_ema"] = grow_generator(nets["G_ema"], want[0])
    if (G.img_resolution, G.img_channels, G.c_dim) != want:
        raise SystemExit(f"{path} makes {G.img_resolution}px, {G.img_channels}-channel images with "
                         f"c_dim {G.c_dim}; the data is {want[0]}px, {want[1]} channels, label_dim {want[2]}")
    fresh_D = build_discriminator(opts, *want)
    D = nets.get("D")
    if D is None or type(D) is not type(fresh_D):
        D = fresh_D
    elif _upgradable(D, fresh_D) or (grown and _same_weights(D, fresh_D)):
        # e.g. --proj-mbstd given to a run made without it (same weights, new parts), or a projected D
        # (which judges images resized to its feature resolution) of a run being grown
        fresh_D.load_state_dict(D.state_dict())
        D = fresh_D
        if grown:
            print(f"D: {path}'s (it judges images resized to its own feature resolution)")
    elif grown:
        D = fresh_D  # a D built for the small images: start a fresh one
    for net in (G, D):
        net.float()  # compact (fp16) snapshots train on in float32
    G_ema = nets["G_ema"].float() if "G_ema" in nets else copy.deepcopy(G)
    return G, D, G_ema


def _growable(G, want: tuple[int, int, int]) -> list[int]:
    """The block resolutions growing G to the data's `want` = (resolution, channels, label_dim) adds; [] if none."""
    res, ch, c_dim = want
    if (G.img_channels, G.c_dim) != (ch, c_dim) or res <= G.img_resolution or res % G.img_resolution:
        return []
    ratio = res // G.img_resolution
    if ratio & (ratio - 1):
        return []
    return [G.img_resolution * 2**k for k in range(1, ratio.bit_length())]


def grow_generator(G: Generator, resolution: int) -> Generator:
    """A copy of `G` at a higher `resolution` (a power-of-two multiple) that renders what G renders, upsampled.

    Every block G has keeps its weights (a block's width depends only on its resolution and the channel
    options); the new top blocks are fresh except their toRGB layers, which start at zero, so with the
    skip architecture the image is G's image through the usual upsampling filter until they learn detail.
    The grown G has more W+ layers (num_ws); G's codes extend to it by repeating their last layer
    (`extend_ws`).
    """
    new = _growable(G, (resolution, G.img_channels, G.c_dim))
    if not new:
        raise ValueError(f"cannot grow a {G.img_resolution}px generator to {resolution}px")
    if getattr(G.synthesis, f"b{G.img_resolution}").architecture != "skip":
        raise ValueError("only skip-architecture generators (StyleGAN2's default) grow")
    kwargs = copy.deepcopy(G.init_kwargs)
    kwargs["img_resolution"] = resolution
    big = Generator(**kwargs)
    own = big.state_dict()
    for k, v in G.state_dict().items():
        if k not in own or own[k].shape != v.shape:
            raise ValueError(f"{k}: {tuple(v.shape)} in the small generator, "
                             f"{tuple(own[k].shape) if k in own else 'absent'} in the grown one")
        own[k] = v.detach().clone().float()
    for r in new:
        own[f"synthesis.b{r}.torgb.weight"].zero_()
        own[f"synthesis.b{r}.torgb.bias"].zero_()
    big.load_state_dict(own)
    return big


def extend_ws(ws: torch.Tensor, num_ws: int) -> torch.Tensor:
    """ws [N, L, w_dim] -> [N, num_ws, w_dim]: a smaller G's codes for a grown one (last layer repeated)."""
    if ws.shape[1] > num_ws:
        raise ValueError(f"{ws.shape[1]} W+ layers do not fit a generator with {num_ws}")
    return torch.cat([ws, ws[:, -1:].expand(-1, num_ws - ws.shape[1], -1)], dim=1)


def frozen_parameters(G, below: int) -> set[str]:
    """Names of G's parameters that --freeze-below `below` keeps fixed: the mapping and blocks under `below` px."""
    if not below:
        return set()
    keep = {f"synthesis.b{r}." for r in G.synthesis.block_resolutions if r < below}
    return {n for n, _ in G.named_parameters() if n.startswith("mapping.") or any(n.startswith(k) for k in keep)}


def _same_weights(D, fresh_D) -> bool:
    """Whether fresh_D (same class) has exactly D's parameter and buffer names and shapes."""
    if type(D) is not type(fresh_D):
        return False
    a, b = D.state_dict(), fresh_D.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def _upgradable(D, fresh_D) -> bool:
    """Whether a loaded projected D differs from the one the options ask for only in parts that start
    neutral (its heads' minibatch-std feature), so its weights carry over into the new one."""
    old, new = dict(getattr(D, "init_kwargs", {})), dict(getattr(fresh_D, "init_kwargs", {}))
    return type(D).__name__ == "ProjectedDiscriminator" and old != new and \
        {k: v for k, v in old.items() if k != "mbstd_group"} == {k: v for k, v in new.items() if k != "mbstd_group"}


# ---------------------------------------------------------------------------------------------
# The loop.


def training_loop(opts: TrainOptions, info: DistInfo, log=print) -> dict:
    """Train G and D as ``opts`` say; return a summary (final nimg, last stats, output paths)."""
    # == Set-up: seeds, data, networks, augmentation, loss, optimisers ================================
    device, rank0, outdir = info.device, info.rank == 0, Path(opts.outdir)
    log = log if rank0 else (lambda *a: None)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    batch_gpu = batch_per_rank(opts.batch, info)
    seed_rank(opts.seed, info)  # each rank draws different z; everything else is in the snapshots

    dataset = ImageArchive(opts.data, use_labels=opts.cond, xflip=opts.mirror)
    weights = age_balance_weights(dataset.ages(), opts.balance_age) if opts.balance_age else None
    sampler, loader = make_loader(dataset, batch_gpu, info, seed=opts.seed, workers=opts.workers, weights=weights)
    if len(dataset) < opts.batch:
        raise SystemExit(f"{opts.data} has {len(dataset)} images; need at least --batch {opts.batch}")

    snap_path, state_path = find_resume(opts.resume) if opts.resume else (None, None)
    G, D, G_ema, frozen = networks_on_device(opts, dataset, snap_path or opts.init, device, log)
    augment_pipe = build_augment(opts)
    augment_pipe = augment_pipe.to(device) if augment_pipe is not None else None
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.precision]
    scaler = torch.amp.GradScaler(device.type) if opts.precision == "fp16" else None
    loss = build_loss(opts, G, D, augment_pipe, autocast_dtype)
    phases = loss.phases()  # [(phase, 'G' | 'D', interval)]
    optimisers = make_optimisers(opts, G, D, phases)

    # == Resume: counters, optimisers, loss and ADA state, data position, RNG streams ==================
    cur_nimg, batch_idx, train_time = 0, 0, 0.0
    position = {"epoch": 0, "batches": 0}  # where this rank is in the data order
    ada_acc = torch.zeros(2, device=device)  # [sum of sign(D(real)), count] since the last ADA update
    if state_path is not None:
        state = load_state(state_path)
        cur_nimg, batch_idx = restore_training_state(state, optimisers=optimisers, scaler=scaler, loss=loss,
                                                     augment_pipe=augment_pipe, ada_acc=ada_acc, log=log)
        train_time = restore_progress(state, info, position, log)
        log(f"resumed from {snap_path} at {cur_nimg / 1000:.3f} kimg")
    elif info.world_size > 1:
        broadcast_weights([G, D, G_ema])  # same initial weights everywhere (the seeds differ per rank)

    # == Outputs: the sample grid's fixed latents, reals.png, the quality measure, their schedule ======
    grid_z = torch.randn([opts.grid**2, G.z_dim], generator=torch.Generator().manual_seed(opts.seed))
    grid_c = torch.stack([dataset.get_label(i % len(dataset)) for i in range(opts.grid**2)])
    quality = start_outputs(opts, dataset, outdir, log) if rank0 else None
    quality_psis = [float(v) for v in opts.quality_psi.split(",") if v]
    total_nimg = int(round(opts.kimg * 1000))
    log_due, snap_due, quality_due = (Every(int(round(kimg * 1000)), cur_nimg)
                                      for kimg in (opts.log_kimg, opts.snap_kimg, opts.quality_kimg))
    stats_acc: dict[str, list[torch.Tensor]] = {}  # per-phase stats since the last log line (rank-local)
    last: dict = {}
    outputs: list[str] = []
    t_start = t_log = time.time()
    nimg_log = cur_nimg
    batches = infinite_batches(loader, sampler, position)

    done = cur_nimg >= total_nimg or (opts.minutes > 0 and train_time >= opts.minutes * 60)  # (a resumed run)
    while not done:
        # == Step: a batch of reals, the due loss phases, G_ema, ADA's p ================================
        t_step = time.time()
        real_img, real_c = next(batches)
        real_img, real_c = to_float_image(real_img, device), real_c.to(device)  # [B, C, H, W], [B, c_dim]
        all_z, all_c = draw_latents(dataset, len(phases), batch_gpu, G.z_dim, device)  # one batch per phase
        step_stats = run_phases(loss, phases, batch_idx, real_img, real_c, all_z, all_c, nets={"G": G, "D": D},
                                optimisers=optimisers, frozen=frozen, scaler=scaler, world_size=info.world_size)
        for st in step_stats.values():
            for k, v in st.items():
                stats_acc.setdefault(k, []).append(v)
        if "Dmain" in step_stats:  # ADA's evidence: the sign of D on reals
            ada_acc[0] += step_stats["Dmain"]["Loss/signs/real"] * batch_gpu
            ada_acc[1] += batch_gpu
        update_ema(G_ema, G, ema_beta(opts, cur_nimg))
        cur_nimg += opts.batch
        batch_idx += 1
        if opts.aug == "ada" and batch_idx % opts.ada_interval == 0:
            adjust_ada(augment_pipe, ada_acc, opts, info)
        train_time += time.time() - t_step  # training only: logging, snapshots, evaluations excluded
        done = cur_nimg >= total_nimg or out_of_time(train_time, opts.minutes, info, batch_idx, every=16)

        # == Logging: a stats.jsonl line every --log-kimg ===============================================
        if log_due(cur_nimg, force=done):
            now = time.time()
            last = {k: torch.stack(v).float().mean().item() for k, v in stats_acc.items()}
            stats_acc.clear()
            record = {
                "kimg": cur_nimg / 1000, "step": batch_idx, "time_s": round(now - t_start, 3),
                "train_time_s": round(train_time, 3),
                "sec_per_kimg": (now - t_log) / max((cur_nimg - nimg_log) / 1000, 1e-9),
                "ada_p": float(getattr(augment_pipe, "p", 0.0)), **last,
            }
            log_stats(outdir / "stats.jsonl", record, info, log)
            t_log, nimg_log = time.time(), cur_nimg

        # == Snapshot: networks, training state and a sample grid every --snap-kimg =====================
        if snap_due(cur_nimg, force=done):
            t_snap = time.time()
            rng = gather_rng_states(device, info)  # (every rank takes part)
            if rank0:
                compact = opts.snap_dtype == "fp16"
                state = training_state(optimisers=optimisers, scaler=scaler, loss=loss, augment_pipe=augment_pipe,
                                       ada_acc=ada_acc, cur_nimg=cur_nimg, batch_idx=batch_idx, position=position,
                                       train_time=train_time, rng=rng, compact=compact)
                tag = f"{cur_nimg:09d}"
                snap = save_snapshot(outdir, tag, {"G": G, "D": D, "G_ema": G_ema}, state,
                                     dtype=torch.float16 if compact else None,
                                     extra={"kimg": cur_nimg / 1000, "train_time_s": train_time,
                                            "training_options": dataclasses.asdict(opts)})
                save_grid(render_grid(G_ema, grid_z, grid_c, batch_gpu), outdir / f"fakes-{tag}.png", opts.grid)
                outputs.append(str(snap))
                if opts.keep_snaps:
                    prune_snapshots(outdir, opts.keep_snaps)
            t_log += time.time() - t_snap  # nor is writing snapshots

        # == Quality measure (rank 0) every --quality-kimg ==============================================
        if quality is not None and quality_due(cur_nimg, force=done):
            t0 = time.time()
            append_stats(outdir / "stats.jsonl", evaluate_quality(quality, G_ema, quality_psis, cur_nimg, train_time),
                         log)
            t_log += time.time() - t0  # evaluation time is not training speed

    if info.world_size > 1:
        check_ranks_in_sync([G, D, G_ema], info.world_size)
    return {"cur_nimg": cur_nimg, "batch_idx": batch_idx, "stats": last, "snapshots": outputs,
            "G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe}


# ---------------------------------------------------------------------------------------------
# Pieces of the loop, in the order it uses them.


def networks_on_device(opts: TrainOptions, dataset: ImageArchive, path, device: torch.device, log):
    """-> (G, D, G_ema, frozen): initial_networks (fresh, or from the checkpoint `path`) on `device`, gradients
    off (each phase turns its network's on); ``frozen``: the names of G's parameters --freeze-below keeps."""
    G, D, G_ema = initial_networks(opts, dataset, path)
    G, D = G.to(device).train().requires_grad_(False), D.to(device).train().requires_grad_(False)
    G_ema = G_ema.to(device).eval().requires_grad_(False)
    frozen = frozen_parameters(G, opts.freeze_below)
    if frozen:
        # G starts with G_ema's values there, so the EMA (a lerp between equal values) keeps them exactly
        ema = dict(G_ema.named_parameters())
        with torch.no_grad():
            for name, p in G.named_parameters():
                if name in frozen:
                    p.copy_(ema[name])
        log(f"frozen: G's mapping and blocks below {opts.freeze_below} px ({len(frozen)} tensors); "
            f"{sum(p.numel() for n, p in G.named_parameters() if n not in frozen):,} parameters train")
    return G, D, G_ema, frozen


def make_optimisers(opts: TrainOptions, G, D, phases) -> dict[str, torch.optim.Optimizer]:
    """One Adam per network. With lazy regularisation (a reg phase every k steps) lr and betas are
    rescaled by k / (k + 1), to match what one would get stepping every minibatch (StyleGAN2, 3.1)."""
    out = {}
    for name, module, lr in (("G", G, opts.glr), ("D", D, opts.dlr)):
        intervals = [k for _, net, k in phases if net == name and k > 1]
        ratio = intervals[0] / (intervals[0] + 1) if intervals else 1.0
        out[name] = torch.optim.Adam(module.parameters(), lr=lr * ratio,
                                     betas=(opts.beta1**ratio, opts.beta2**ratio), eps=1e-8)
    return out


def restore_training_state(state: dict, *, optimisers, scaler, loss, augment_pipe, ada_acc: torch.Tensor,
                           log=print) -> tuple[int, int]:
    """Load what `training_state` saved into the optimisers (lr and betas stay the options': a changed --glr etc.
    takes effect), the grad scaler, the loss (its path-length mean), ADA's accumulator and p.
    -> (cur_nimg, batch_idx). The data position, RNG streams and time are `runtime.restore_progress`'s."""
    for net in ("G", "D"):
        opt = optimisers[net]
        wanted = [(g["lr"], g["betas"]) for g in opt.param_groups]  # from the options, lazy-reg rescaled
        try:
            opt.load_state_dict(state[f"opt_{net}"])  # casts bf16 moments back to the params' dtype
        except ValueError as e:  # the network gained parameters (an upgraded D): its moments start afresh
            if net != "D":
                raise
            log(f"resume: D's optimiser state starts afresh ({e})")
        for g, (lr, betas) in zip(opt.param_groups, wanted):
            g["lr"], g["betas"] = lr, betas
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    loss.load_state_dict(state["loss"])
    ada_acc.copy_(state["ada_acc"])
    if augment_pipe is not None and hasattr(augment_pipe, "p"):
        augment_pipe.p = float(state["augment_p"])
    return state["cur_nimg"], state["batch_idx"]


def start_outputs(opts: TrainOptions, dataset: ImageArchive, outdir: Path, log):
    """Rank 0, before the first step: the run folder, reals.png (once per run) and the quality measure (or None)."""
    outdir.mkdir(parents=True, exist_ok=True)
    if not (outdir / "reals.png").exists():
        reals = torch.stack([dataset[i % len(dataset)][0] for i in range(opts.grid**2)])
        save_grid(reals.float() / 127.5 - 1, outdir / "reals.png", opts.grid)
    return make_quality(opts, dataset, outdir, log)


def make_quality(opts: TrainOptions, dataset: ImageArchive, outdir: Path, log):
    """The quality measure (training/quality.py) for this run, or None without --quality-source."""
    if not opts.quality_source:
        return None
    from training.quality import FaceQuality

    t0 = time.time()
    labeler = None
    if opts.quality_labeler:
        from training.age_gender import AgeGenderModel

        labeler = AgeGenderModel.load(opts.quality_labeler)
    quality = FaceQuality.for_archive(dataset, opts.quality_source, opts.quality_heldout,
                                      num_fake=opts.quality_num, cache=outdir / "quality-reference.npz",
                                      labeler=labeler)
    log(f"quality measure ready in {time.time() - t0:.0f} s: real floor FD {quality.fd_floor:.4f}, "
        f"HOG finds {quality.hog_real:.1%} of real crops at {dataset.resolution} px")
    return quality


def draw_latents(dataset: ImageArchive, num_phases: int, batch: int, z_dim: int, device: torch.device):
    """-> z [num_phases, batch, z_dim], c [num_phases, batch, c_dim]: the fakes' latents and labels (the labels of
    random images of the archive), one batch per phase."""
    all_z = torch.randn([num_phases, batch, z_dim], device=device)
    label_idx = torch.randint(len(dataset), [num_phases, batch])
    all_c = torch.stack([dataset.get_label(int(i)) for i in label_idx.flatten()])
    return all_z, all_c.view(num_phases, batch, -1).to(device)


def run_phases(loss, phases, batch_idx: int, real_img: torch.Tensor, real_c: torch.Tensor, all_z: torch.Tensor,
               all_c: torch.Tensor, *, nets: dict, optimisers: dict, frozen: set[str], scaler,
               world_size: int) -> dict[str, dict]:
    """The loss phases due at step `batch_idx` (one of interval k runs every k-th step, its loss scaled by k):
    each one's gradients, averaged over ranks, then its network's optimiser step. -> {phase: its stats}."""
    out = {}
    stepped_scaled = False
    for (phase, net, interval), gen_z, gen_c in zip(phases, all_z, all_c):
        if batch_idx % interval != 0:
            continue
        module, opt = nets[net], optimisers[net]
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        if net == "G":
            for name, p in module.named_parameters():
                if name in frozen:
                    p.requires_grad_(False)
        out[phase] = loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain=float(interval),
                                               scaler=scaler)
        module.requires_grad_(False)
        scaled = scaler is not None and phase.endswith("main")
        reduce_gradients(module, world_size, sanitize=not scaled)
        if scaled:
            scaler.step(opt)
            stepped_scaled = True
        else:
            opt.step()
    if stepped_scaled:
        scaler.update()
    return out


def ema_beta(opts: TrainOptions, cur_nimg: int) -> float:
    """G_ema's decay for this step: half-life ema_kimg, shorter early on (ramp-up) so it does not lag the
    random init."""
    ema_nimg = opts.ema_kimg * 1000
    if opts.ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * opts.ema_rampup)
    return 0.5 ** (opts.batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def adjust_ada(augment_pipe, ada_acc: torch.Tensor, opts: TrainOptions, info: DistInfo) -> None:
    """ADA: move p toward the target overfitting level r_t = E[sign(D(real))] since the last update (all ranks)."""
    acc = ada_acc.clone()
    if info.world_size > 1:
        dist.all_reduce(acc)
    if acc[1] > 0:
        r_t = float(acc[0] / acc[1])
        augment_pipe.p = adjust_ada_p(augment_pipe.p, r_t, opts.ada_target, opts.batch * opts.ada_interval,
                                      opts.ada_kimg)
    ada_acc.zero_()


def training_state(*, optimisers, scaler, loss, augment_pipe, ada_acc: torch.Tensor, cur_nimg: int, batch_idx: int,
                   position: dict, train_time: float, rng: list, compact: bool) -> dict:
    """What a training-state file holds beside the networks (`restore_training_state` and
    `runtime.restore_progress` read it back); ``compact``: Adam's moments in bfloat16."""
    return {
        "opt_G": optimiser_state(optimisers["G"], compact),
        "opt_D": optimiser_state(optimisers["D"], compact),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "cur_nimg": cur_nimg, "batch_idx": batch_idx, "data_position": dict(position),
        "train_time_s": train_time, "loss": loss.state_dict(), "ada_acc": ada_acc.cpu(),
        "augment_p": float(getattr(augment_pipe, "p", 0.0)),
        "rng": rng,
    }


def optimiser_state(opt: torch.optim.Optimizer, compact: bool) -> dict:
    """opt.state_dict(), with the moments in bfloat16 when ``compact`` (Adam's exp_avg_sq needs bf16's range)."""
    state = opt.state_dict()
    if compact:
        state["state"] = {k: {n: (t.to(torch.bfloat16) if torch.is_tensor(t) and t.is_floating_point() and t.ndim
                                  else t) for n, t in v.items()} for k, v in state["state"].items()}
    return state


@torch.no_grad()
def render_grid(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, batch: int) -> torch.Tensor:
    """z [N, z_dim], c [N, c_dim] -> images [N, C, H, W] in [-1, 1] (const noise, no truncation)."""
    dev = next(G.parameters()).device
    out = [G(zb.to(dev), cb.to(dev), noise_mode="const").cpu() for zb, cb in zip(z.split(batch), c.split(batch))]
    return torch.cat(out)


def evaluate_quality(quality, G_ema: torch.nn.Module, psis: list[float], cur_nimg: int, train_time: float) -> dict:
    """The quality measure of G_ema at each truncation psi, as a stats.jsonl record."""
    t0 = time.time()
    record = {"kimg": cur_nimg / 1000, "train_time_s": round(train_time, 3)}
    for psi in psis:
        tag = "" if psi == 1 else f"_psi{psi:g}"
        for k, v in quality.evaluate(G_ema, psi).items():  # the real side's figures carry no tag
            real_side = k == "fd_floor" or k.endswith("_real")
            record[f"Quality/{k}" if real_side else f"Quality/{k}{tag}"] = v
    record["Quality/eval_s"] = round(time.time() - t0, 1)
    return record


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    """Parse ``argv``, set up (distributed) training and run it. Returns the loop's summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is None:
        if not args.cpu_smoke:
            parser.error("--data is required (or use --cpu-smoke for a synthetic archive)")
        args.data = str(Path(args.outdir) / "synthetic-16px.zip")
        rank0_writes(args.data, lambda path: write_synthetic_archive(path, num_images=64, resolution=16,
                                                                     seed=args.seed or 0))

    resolution = ImageArchive(args.data).resolution
    base = None
    if args.resume:  # go on with the run's own options; what is given again overrides them
        from faceapp.stylegan.checkpoint import read_header

        base = read_header(find_resume(args.resume)[0])["extra"].get("training_options")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    opts = resolve_options(args, resolution, base=base, log=print if rank0 else (lambda *a: None))
    if args.dry_run:
        data = ImageArchive(opts.data, use_labels=opts.cond, xflip=opts.mirror)
        G, D, _ = initial_networks(opts, data, find_resume(opts.resume)[0] if opts.resume else opts.init)
        print(json.dumps(dataclasses.asdict(opts), indent=2))
        print(f"dataset: {len(data)} images, {data.resolution}px, {data.num_channels} channels, "
              f"label_dim {data.label_dim}")
        print(f"G: {count_params(G):,} parameters (mapping {count_params(G.mapping):,}, "
              f"synthesis {count_params(G.synthesis):,}), num_ws {G.num_ws}")
        print(f"D: {count_params(D):,} trainable parameters ({type(D).__name__})")
        return None

    return run_distributed(opts, training_loop)


if __name__ == "__main__":
    main()
    exit_after_torchrun()
