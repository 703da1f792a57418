"""Train the detail stage (faceapp.stylegan.detail.DetailNet): G's 64 px render -> a 128 px face.

    python -m training.train_detail train --out runs/detail --epochs 1          # resumable
    python -m training.train_detail pairs --bundle models/demo --out runs/detail/pairs.npz   # for --input render
    python -m training.train_detail evaluate --model runs/detail/detail.safetensors   # against bicubic

`pairs` encodes every UTKFace training photo (both held-out lists of training/labels/ left out) with the
bundle's encoder at G's resolution and renders the code with G: the detail stage's input is what G makes of a
real face, artefacts and all, and its target is that real face at `--scale` times G's resolution. Stored:
renders (uint8 [N,r,r,3]) and the photos' names (runs/, never committed: UTKFace-derived).

`train` learns from `--input photo` pairs by default: the input is the real photo itself brought down to G's
resolution exactly as G's training archive was made (Pillow's box filter), the target the same photo at the
higher resolution. Measured first with `--input render` (G's render of the encoded photo as input): the
encoder's reconstruction differs from the photo (another face, often younger), so the L1-optimal output
hedges, and the network learned to blur its input, wrinkles included. From true pairs it learns to sharpen
what the input holds, which on an edited render is the edit's folds and grey hair; the conditioning
augmentation covers G's softer renders.

It fits DetailNet with L1 + the offline MobileNetV2 perceptual distance (faceapp.inversion.losses; the
target's features without gradient) and, with --adv-weight > 0, the projected discriminator's hinge loss
(training/projected.py). The input is augmented (conditioning augmentation, as in cascaded diffusion): a
random Gaussian blur and noise, so that the network learns to add detail to renders a little unlike the
reconstructions it trained on (edited ones). Snapshots (fp16 safetensors) and a resume state every
--snapshot-minutes; rerun the same command to go on.
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

from faceapp.imageio import from_uint8, to_uint8
from training.age_estimator import DEFAULT_ZIP, _heldout_names, load_utkface_arrays
from training.options import opt, parse_command

__all__ = ["make_pairs", "train", "condition_augment", "main"]


@torch.no_grad()  # not inference_mode: G's cached weight derivations track versions
def make_pairs(bundle_path, zip_path, out, *, batch: int = 64, threads: int = 1, limit: int | None = None) -> Path:
    """Encode + render every training photo; writes {renders uint8 [N,r,r,3], names} to `out` (.npz)."""
    from faceapp.bundle import load_bundle

    torch.set_num_threads(threads)
    b = load_bundle(bundle_path)
    if b.encoder is None:
        raise SystemExit(f"{bundle_path} has no encoder: the pairs need G's render of encoded photos")
    G, E, r = b.G.eval(), b.encoder.eval(), b.resolution
    held, _ = _heldout_names()
    names, imgs, _ages = load_utkface_arrays(zip_path, r, exclude=held)
    if limit:
        names, imgs = names[:limit], imgs[:limit]
    renders = np.empty_like(imgs)
    t0 = time.time()
    for i in range(0, len(imgs), batch):
        x = from_uint8(imgs[i:i + batch])  # [B,3,r,r]
        y = G.synthesis(E(x), noise_mode="const")
        renders[i:i + batch] = to_uint8(y)
        if i % (batch * 40) == 0:
            print(f"  {i}/{len(imgs)} encoded ({time.time() - t0:.0f} s)", flush=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, renders=renders, names=np.array(names), bundle=str(bundle_path), model_id=b.model_id)
    print(f"wrote {out}: {len(names)} pairs ({time.time() - t0:.0f} s)")
    return out


def condition_augment(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """x [N,3,r,r] in [-1,1]: with probability p each, a Gaussian blur (sigma 0.3..1.0 px) and noise (std
    0..0.04), so the network does not rely on the exact pixels of reconstructions."""
    n = x.shape[0]
    sig = 0.3 + 0.7 * torch.rand(n, generator=g)
    blur = torch.rand(n, generator=g) < p
    k = torch.arange(-2, 3, dtype=torch.float32)
    kern = torch.exp(-0.5 * (k[None] / sig[:, None]) ** 2)
    kern = kern / kern.sum(1, keepdim=True)  # [N,5]
    xb = x.reshape(1, n * 3, *x.shape[2:])
    kh = kern.repeat_interleave(3, 0)  # [N*3,5]
    xb = F.conv2d(F.pad(xb, (2, 2, 0, 0), mode="reflect"), kh.view(n * 3, 1, 1, 5), groups=n * 3)
    xb = F.conv2d(F.pad(xb, (0, 0, 2, 2), mode="reflect"), kh.view(n * 3, 1, 5, 1), groups=n * 3)
    x = torch.where(blur.view(n, 1, 1, 1), xb.view_as(x), x)
    noisy = torch.rand(n, generator=g) < p
    std = 0.04 * torch.rand(n, generator=g) * noisy
    return x + std.view(n, 1, 1, 1) * torch.randn(x.shape, generator=g)


def train(args) -> int:
    from faceapp.inversion.losses import perceptual_loss
    from faceapp.stylegan.checkpoint import save_networks
    from faceapp.stylegan.detail import DetailNet
    from training.runtime import Snapshotter, cosine_warmup, load_state, save_state

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held, digests = _heldout_names()
    if args.input == "render":
        data = np.load(args.pairs)
        renders, names = data["renders"], [str(n) for n in data["names"]]
        r, pairs_id = renders.shape[1], str(data["model_id"])
        if set(names) & {Path(h).name for h in held}:
            raise SystemExit(f"{args.pairs} holds held-out photos: make the pairs again with this script")
    else:  # photo inputs need no pairs file: every training photo of the zip, at G's resolution
        r, pairs_id = args.in_resolution, None
        names, _, _ = load_utkface_arrays(args.zip, 1, exclude=held, progress=None)
    R = r * args.scale
    print(f"{len(names)} pairs ({args.input} inputs); reading the targets at {R} px")
    tnames, targets, _ = load_utkface_arrays(args.zip, R, include=names, progress=None)
    order = {n: i for i, n in enumerate(tnames)}
    targets = targets[[order[n] for n in names]]  # same order as the renders
    if args.input == "photo":  # the photo at G's resolution, made as G's training archive was
        pnames, renders, _ = load_utkface_arrays(args.zip, r, include=names, progress=None, resample="box")
        order = {n: i for i, n in enumerate(pnames)}
        renders = renders[[order[n] for n in names]]
    n = len(names)

    torch.manual_seed(args.seed)
    net = DetailNet(in_resolution=r, scale=args.scale, channels=args.channels, blocks=args.blocks).train()
    if args.init:  # fine-tune a trained detail stage (e.g. with the adversarial loss added)
        from faceapp.stylegan.checkpoint import load_networks

        init = load_networks(args.init)["detail"]
        if init.init_kwargs != net.init_kwargs:
            raise SystemExit(f"--init {args.init} is a {init.init_kwargs} network, not {net.init_kwargs}")
        net.load_state_dict({k: v.float() for k, v in init.state_dict().items()})
    net = net.to(memory_format=torch.channels_last)
    percep = perceptual_loss("mobilenet").eval()
    percep.features_net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99))
    D = D_opt = None
    if args.adv_weight > 0:
        from training.projected import ProjectedDiscriminator, register

        register()
        D = ProjectedDiscriminator(img_resolution=R, feature_resolution=args.d_resolution).train()
        D_opt = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.0, 0.99))
    steps_per_epoch = n // args.batch
    total = steps_per_epoch * args.epochs
    step, spent = 0, 0.0
    st = load_state(out / "state.pt")
    if st is not None:
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        if D is not None and "D" in st:
            D.load_state_dict(st["D"])
            D_opt.load_state_dict(st["D_opt"])
        step, spent = int(st["step"]), float(st["spent"])
        print(f"resumed at step {step}/{total} ({spent / 60:.1f} min spent)")

    def snapshot(final: bool = False) -> None:
        state = {"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "spent": spent}
        if D is not None:
            state.update(D=D.state_dict(), D_opt=D_opt.state_dict())
        save_state(out / "state.pt", state)
        extra = {"trained_with": "training/train_detail.py", "steps": step, "epochs": step / steps_per_epoch,
                 "train_minutes": round(spent / 60, 1), "pairs": n, "pairs_model_id": pairs_id,
                 "excluded_digests": digests, "options": {"cmd": "train", **dataclasses.asdict(args)}, "final": final,
                 "note": "trained on UTKFace: non-commercial research use only"}
        save_networks(out / "detail.safetensors", {"detail": net.eval()}, extra=extra, dtype=torch.float16)
        net.train()

    (out / "options.json").write_text(json.dumps({"cmd": "train", **dataclasses.asdict(args)}, indent=2) + "\n")
    log = open(out / "log.jsonl", "a")
    snaps = Snapshotter(args.snapshot_minutes)
    t_start = time.time() - spent
    hist = []
    while step < total:
        epoch, k = divmod(step, steps_per_epoch)
        perm = np.random.default_rng([args.seed, epoch]).permutation(n)  # (seed, epoch): exact resume
        idx = np.sort(perm[k * args.batch:(k + 1) * args.batch])
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        x = from_uint8(renders[idx])  # [B,3,r,r]
        y = from_uint8(targets[idx])  # [B,3,R,R]
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        y = torch.where(flip.view(-1, 1, 1, 1), y.flip(3), y)
        x = condition_augment(x, g)
        for gr in opt.param_groups:
            gr["lr"] = args.lr * cosine_warmup(step, total)
        fake = net(x)
        l1 = (fake - y).abs().mean()
        with torch.no_grad():  # the target needs no gradient: one trunk pass saved
            fy = percep.features(y.contiguous(memory_format=torch.channels_last))
        lp = percep.distance(percep.features(fake.contiguous(memory_format=torch.channels_last)), fy).mean()
        loss = l1 + args.percep_weight * lp
        row = {"l1": l1.item(), "percep": lp.item()}
        if D is not None and step >= args.adv_start:
            # hinge: D on real targets vs the network's output, then the network against D
            d_loss = F.relu(1 - D(y)).mean() + F.relu(1 + D(fake.detach())).mean()
            D_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            D_opt.step()
            g_adv = -D(fake).mean()
            loss = loss + args.adv_weight * g_adv
            row.update(d=d_loss.item(), g_adv=g_adv.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        spent = time.time() - t_start
        hist.append(row)
        if step % 25 == 0:
            mean = {k: float(np.mean([h[k] for h in hist if k in h])) for k in hist[-1]}
            hist = []
            log.write(json.dumps({"step": step, "minutes": round(spent / 60, 2), **mean}) + "\n")
            log.flush()
            print(f"step {step}/{total} epoch {step / steps_per_epoch:.2f} "
                  + " ".join(f"{k} {v:.4f}" for k, v in mean.items())
                  + f" {spent / 60:.1f} min ({spent / step * 1000 / args.batch:.1f} ms/pair)", flush=True)
        if snaps.after_step(snapshot, spent, args.minutes):
            break
    snapshot(final=step >= total)
    print(f"wrote {out / 'detail.safetensors'} at step {step} ({spent / 60:.1f} min)")
    return 0


@torch.no_grad()
def evaluate(args) -> int:
    """The detail stage against bicubic upsampling on the held-out photos: L1 and the perceptual distance to the
    real photo at the output resolution, the input being the photo at G's resolution (box-filtered)."""
    from faceapp.inversion.losses import perceptual_loss
    from faceapp.stylegan.checkpoint import load_networks
    from training.utkface import HELDOUT_LISTS, read_name_list

    torch.set_num_threads(args.threads)
    net = load_networks(args.model)["detail"].float().eval()
    percep = perceptual_loss("mobilenet").eval()
    r, R = net.in_resolution, net.img_resolution
    out = {}
    for p in HELDOUT_LISTS:
        names = read_name_list(p)[: args.num]
        n1, low, _ = load_utkface_arrays(args.zip, r, include=names, progress=None, resample="box")
        n2, high, _ = load_utkface_arrays(args.zip, R, include=names, progress=None)
        assert n1 == n2
        x = from_uint8(low)
        y = from_uint8(high)
        row = {}
        for what, fn in (("bicubic", lambda t: F.interpolate(t, size=(R, R), mode="bicubic", align_corners=False)),
                         ("detail", net)):
            l1 = pd = 0.0
            for i in range(0, len(x), 64):
                o = fn(x[i:i + 64]).clamp(-1, 1)
                l1 += float((o - y[i:i + 64]).abs().mean(dim=(1, 2, 3)).sum())
                pd += float(percep(o, y[i:i + 64]).sum())
            row[what] = {"l1": l1 / len(x), "perceptual": pd / len(x)}
        out[p.name] = {"faces": len(x), **row}
        print(f"{p.name} ({len(x)} faces): bicubic L1 {row['bicubic']['l1']:.4f} perceptual "
              f"{row['bicubic']['perceptual']:.4f}; detail L1 {row['detail']['l1']:.4f} perceptual "
              f"{row['detail']['perceptual']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


@dataclass(frozen=True)
class PairsOptions:
    bundle: str = opt("models/demo", "the bundle that encodes and renders the photos")
    zip: str = opt(str(DEFAULT_ZIP), "UTKFace 200 px zip")
    out: str = opt("runs/detail/pairs.npz", "the pairs file to write")
    threads: int = opt(1, "torch CPU threads")
    limit: int | None = opt(None, "only the first N training photos")


@dataclass(frozen=True)
class DetailTrainOptions:
    """`train`'s command line (options.json and the model's header, with "cmd")."""

    pairs: str = opt("runs/detail/pairs.npz", "with --input render: the `pairs` file")
    in_resolution: int = opt(64, "with --input photo: G's resolution")
    zip: str = opt(str(DEFAULT_ZIP), "UTKFace 200 px zip")
    out: str = opt("runs/detail", "run folder")
    input: str = opt("photo", "photo: the real photo at G's resolution (default); render: G's render of its code",
                     choices=["photo", "render"])
    scale: int = opt(2, "upscaling factor")
    channels: int = opt(40, "the detail network's channels")
    blocks: int = opt(4, "the detail network's blocks")
    batch: int = opt(16, "photos per step")
    epochs: int = opt(1, "passes over the training photos")
    lr: float = opt(5e-4, "learning rate")
    percep_weight: float = opt(1.0, "weight of the perceptual loss (beside L1)")
    adv_weight: float = opt(0.0, "weight of the adversarial loss (0: no discriminator)")
    adv_start: int = opt(0, "step at which the adversarial loss starts")
    d_resolution: int = opt(128, "the projected D's feature resolution")
    init: str | None = opt(None, "start from this detail stage (fine-tuning)")
    seed: int = opt(0, "random seed")
    threads: int = opt(1, "torch CPU threads")
    minutes: float = opt(0, "stop (resumably) after this much training time")
    snapshot_minutes: float = opt(5, "minutes between snapshots")


@dataclass(frozen=True)
class DetailEvaluateOptions:
    model: str = opt("models/demo/detail.safetensors", "the detail stage to evaluate")
    zip: str = opt(str(DEFAULT_ZIP), "UTKFace 200 px zip")
    num: int = opt(500, "the first N of each held-out list")
    threads: int = opt(1, "torch CPU threads")
    json: str | None = opt(None, "write the results to this JSON file")


COMMANDS = {"pairs": (PairsOptions, "encode + render the training photos (the detail stage's inputs)"),
            "train": (DetailTrainOptions, "fit the detail stage (resumable)"),
            "evaluate": (DetailEvaluateOptions, "the detail stage against bicubic upsampling on the held-out photos")}


def main(argv=None) -> int:
    cmd, args = parse_command(COMMANDS, argv, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if cmd == "evaluate":
        return evaluate(args)
    if cmd == "pairs":
        make_pairs(args.bundle, args.zip, args.out, threads=args.threads, limit=args.limit)
        return 0
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
