"""Learn edit directions (InterFaceGAN-style) for a generator: sample, label, fit linear boundaries, save.

    python training/learn_directions.py --generator G.safetensors --out runs/directions \\
        --attributes age,gender,smile,glasses --num-samples 10000

Steps:
1. codes: z ~ N(0, I) -> w = G.mapping(z) (truncation --truncation-psi), or, with --codes FILE.npz,
   given codes (e.g. real labelled photos encoded with the encoder: arrays 'ws' [N, num_ws, w_dim] or
   'w' [N, w_dim], plus one score array per attribute);
2. labels: each code's image G.synthesis(w) is scored by training/labelers.py (age and gender from dlib
   descriptors + the linear heads of --age-gender-model; smile from landmark geometry; glasses from
   --glasses-model, or edge evidence without one);
3. per attribute, as InterFaceGAN does: sort by score, keep the top and bottom --chosen-ratio as
   positives / negatives, split off --val-ratio of them, fit a linear SVM (scikit-learn) on w, report the
   held-out accuracy and the accuracy on the remaining (middle) codes; the direction is the SVM's unit
   normal, pointing to more of the attribute (older, female, smiling, glasses);
4. scale = std of all sampled codes' projections on it (so strength 1 = one std, see faceapp.edits);
5. save the DirectionSet (directions.safetensors + directions.json) into --out, with options.json,
   report.json, samples.npz (codes and scores) and, unless --no-grids, grids/<name>.png: 8 faces x
   strengths -3..+3 (the other attributes held fixed), to check by eye.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `training` and `faceapp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceapp.edits import Direction, DirectionSet, apply_edits, direction_scale  # noqa: E402
from faceapp.errors import FaceAppError  # noqa: E402

__all__ = ["LearnOptions", "fit_direction", "grid_image", "learn_directions", "main", "render", "sample_w"]

DESCRIPTIONS = {
    "age": "older (+) / younger (-)",
    "gender": "more feminine (+) / more masculine (-)",
    "smile": "smiling (+) / not smiling (-)",
    "glasses": "glasses (+) / no glasses (-)",
}


@dataclass(frozen=True)
class LearnOptions:
    generator: str | None
    out: str
    attributes: tuple[str, ...] = ("age", "gender", "smile", "glasses")
    num_samples: int = 10000
    truncation_psi: float = 0.8
    chosen_ratio: float = 0.2
    val_ratio: float = 0.3
    svm_C: float = 1.0
    batch: int = 16
    seed: int = 0
    device: str = "cpu"
    codes: str | None = None
    age_gender_model: str = "runs/labelers/age_gender.safetensors"
    glasses_model: str | None = "runs/labelers/glasses.safetensors"
    grids: bool = True
    threads: int = 0


# ----------------------------------------------------------------------------- pieces


@torch.no_grad()
def sample_w(G, num: int, seed: int = 0, truncation_psi: float = 1.0, batch: int = 256, device="cpu") -> np.ndarray:
    """w codes [num, w_dim] (float32) from seeded z through G.mapping."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, G.z_dim, generator=gen)  # on CPU: the same codes on every device
    out = []
    for i in range(0, num, batch):
        ws = G.mapping(z[i : i + batch].to(device), None, truncation_psi=truncation_psi)  # [B, num_ws, w_dim]
        out.append(ws[:, 0].float().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def render(G, ws, batch: int = 16, device="cpu"):
    """Yield RGB uint8 images [H, W, 3] of codes ws ([N, w_dim] or [N, num_ws, w_dim])."""
    ws = torch.as_tensor(np.asarray(ws), dtype=torch.float32)
    if ws.ndim == 2:
        ws = ws.unsqueeze(1).repeat(1, G.num_ws, 1)
    for i in range(0, len(ws), batch):
        img = G.synthesis(ws[i : i + batch].to(device), noise_mode="const")  # [B, 3, H, W] ~[-1, 1]
        img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        yield from img


def fit_direction(
    w: np.ndarray,
    scores: np.ndarray,
    *,
    chosen_ratio: float = 0.2,
    val_ratio: float = 0.3,
    C: float = 1.0,
    seed: int = 0,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """InterFaceGAN's boundary: linear SVM on the top/bottom `chosen_ratio` of codes by score.

    w: [N, w_dim]; scores: [N] (higher = more of the attribute); valid: bool [N] codes whose score counts.
    Returns (unit normal [w_dim] pointing to higher scores, metrics: val_accuracy, remaining_accuracy, counts).
    """
    from sklearn.svm import LinearSVC

    w = np.asarray(w, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(scores) & (np.ones(len(scores), bool) if valid is None else np.asarray(valid, bool))
    w, scores = w[keep], scores[keep]
    order = np.argsort(-scores)
    chosen = int(len(order) * chosen_ratio)
    if chosen < 4:
        raise FaceAppError(
            f"only {len(order)} usable codes: too few to keep {chosen_ratio:.0%} at each end; "
            "sample more (--num-samples) or raise --chosen-ratio"
        )
    pos, neg, mid = order[:chosen], order[-chosen:], order[chosen:-chosen]
    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(pos), rng.permutation(neg)
    n_val = max(1, int(chosen * val_ratio))
    train = np.concatenate([pos[n_val:], neg[n_val:]])
    val = np.concatenate([pos[:n_val], neg[:n_val]])
    y = np.zeros(len(scores), int)
    y[pos] = 1
    svm = LinearSVC(C=C, max_iter=20000).fit(w[train], y[train])
    normal = svm.coef_[0] / np.linalg.norm(svm.coef_[0])
    metrics = {
        "usable_codes": int(len(scores)),
        "train_codes": int(len(train)),
        "val_codes": int(len(val)),
        "train_accuracy": float((svm.predict(w[train]) == y[train]).mean()),
        "val_accuracy": float((svm.predict(w[val]) == y[val]).mean()),
    }
    if len(mid):  # InterFaceGAN's check on the codes it did not train on: label by the midpoint of the extremes
        decision = 0.5 * (scores[order[0]] + scores[order[-1]])
        metrics["remaining_accuracy"] = float((svm.predict(w[mid]) == (scores[mid] >= decision)).mean())
    return normal, metrics


def learn_directions(w: np.ndarray, labels: dict[str, np.ndarray], opts: LearnOptions, valid=None) -> DirectionSet:
    """A DirectionSet with one direction per attribute in `labels` ({name: scores [N]}), scales measured on w."""
    dirs = []
    for name, scores in labels.items():
        normal, metrics = fit_direction(
            w,
            scores,
            chosen_ratio=opts.chosen_ratio,
            val_ratio=opts.val_ratio,
            C=opts.svm_C,
            seed=opts.seed,
            valid=valid,
        )
        dirs.append(
            Direction(
                name,
                normal,
                scale=direction_scale(normal, w),
                description=DESCRIPTIONS.get(name, ""),
                source="learned:interfacegan-svm",
                metrics=metrics,
            )
        )
        print(
            f"{name}: held-out accuracy {metrics['val_accuracy']:.3f} "
            f"(remaining {metrics.get('remaining_accuracy', float('nan')):.3f}), scale {dirs[-1].scale:.3f}"
        )
    return DirectionSet(dirs)


@torch.no_grad()
def grid_image(
    G, directions: DirectionSet, name: str, w: np.ndarray, strengths=(-3, -2, -1, 0, 1, 2, 3), hold=(), device="cpu"
):
    """PIL image: one row per code in w ([K, w_dim]), one column per strength of `name`."""
    from PIL import Image

    ws = torch.as_tensor(w, dtype=torch.float32).unsqueeze(1).repeat(1, G.num_ws, 1)  # [K, num_ws, w_dim]
    cols = [apply_edits(ws, directions, {name: s}, hold=hold) for s in strengths]
    edited = torch.stack(cols, dim=1).reshape(-1, G.num_ws, ws.shape[2])  # [K*S, num_ws, w_dim]
    imgs = list(render(G, edited, device=device))
    R = imgs[0].shape[0]
    sheet = np.zeros((len(w) * R, len(strengths) * R, 3), np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, len(strengths))
        sheet[r * R : (r + 1) * R, c * R : (c + 1) * R] = im
    return Image.fromarray(sheet)


# ----------------------------------------------------------------------------- CLI


def _labeler(opts: LearnOptions):
    from training.labelers import AgeGenderModel, FaceLabeler, GlassesModel

    ag = AgeGenderModel.load(opts.age_gender_model) if {"age", "gender"} & set(opts.attributes) else None
    glasses = None
    if "glasses" in opts.attributes and opts.glasses_model:
        if os.path.isfile(opts.glasses_model):
            glasses = GlassesModel.load(opts.glasses_model)
        else:
            print(f"note: {opts.glasses_model} not found; glasses are scored by edge evidence", file=sys.stderr)
    return FaceLabeler(opts.attributes, age_gender=ag, glasses=glasses)


def run(opts: LearnOptions) -> DirectionSet:
    from faceapp.stylegan.checkpoint import load_generator

    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "options.json").write_text(json.dumps(dataclasses.asdict(opts), indent=2) + "\n")
    G = load_generator(opts.generator, device=opts.device) if opts.generator else None
    t0 = time.time()
    if opts.codes:
        with np.load(opts.codes, allow_pickle=False) as f:
            w = f["w"] if "w" in f.files else f["ws"][:, 0]
            missing = [a for a in opts.attributes if a not in f.files]
            if missing:
                raise FaceAppError(
                    f"{opts.codes} has no scores for {', '.join(missing)} (arrays: {', '.join(f.files)})"
                )
            labels = {a: np.asarray(f[a], dtype=np.float64) for a in opts.attributes}
        valid = np.ones(len(w), bool)
    else:
        if G is None:
            raise FaceAppError("give --generator (or --codes with labelled codes)")
        w = sample_w(G, opts.num_samples, opts.seed, opts.truncation_psi, device=opts.device)
        labeler = _labeler(opts)
        scores: dict[str, list] = {}
        batch_imgs = []
        for i, img in enumerate(render(G, w, opts.batch, opts.device)):
            batch_imgs.append(img)
            if len(batch_imgs) == opts.batch or i == len(w) - 1:
                for k, v in labeler(batch_imgs).items():
                    scores.setdefault(k, []).extend(v.tolist())
                batch_imgs = []
                if (i + 1) % (opts.batch * 20) == 0:
                    print(f"  labelled {i + 1}/{len(w)} ({time.time() - t0:.0f} s)", flush=True)
        valid = np.ones(len(w), bool)  # the aligned-box landmarks always exist for generated crops
        labels = {a: np.array(scores[a]) for a in opts.attributes}
    np.savez_compressed(out / "samples.npz", w=w, **labels)
    directions = learn_directions(w, labels, opts, valid=valid)
    directions.meta.update(
        {
            "generator": os.path.basename(opts.generator) if opts.generator else None,
            "learned_with": "training/learn_directions.py",
            "num_codes": int(len(w)),
            "truncation_psi": opts.truncation_psi,
            "strength_unit": "1 = one std of the sampled codes' projections",
        }
    )
    directions.save(out)
    report = {name: d.metrics | {"scale": d.scale} for name, d in directions.items()}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if opts.grids and G is not None:
        (out / "grids").mkdir(exist_ok=True)
        pick = w[np.random.default_rng(opts.seed + 1).choice(len(w), min(8, len(w)), replace=False)]
        for name in directions:
            hold = [h for h in directions if h != name]
            grid_image(G, directions, name, pick, hold=hold, device=opts.device).save(out / "grids" / f"{name}.png")
    print(f"wrote {len(directions)} directions to {out} ({time.time() - t0:.0f} s)")
    return directions


def parse_args(argv=None) -> LearnOptions:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", help="faceapp generator checkpoint (.safetensors)")
    p.add_argument("--out", required=True, help="folder for the direction set (a bundle's directions/)")
    p.add_argument("--attributes", default="age,gender,smile,glasses")
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--truncation-psi", type=float, default=0.8)
    p.add_argument("--chosen-ratio", type=float, default=0.2, help="fraction kept at each end of the scores")
    p.add_argument("--val-ratio", type=float, default=0.3)
    p.add_argument("--svm-C", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--codes", help="labelled codes .npz ('w' or 'ws' + one score array per attribute) instead of sampling"
    )
    p.add_argument("--age-gender-model", default="runs/labelers/age_gender.safetensors")
    p.add_argument("--glasses-model", default="runs/labelers/glasses.safetensors")
    p.add_argument("--no-grids", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args(argv)
    attrs = tuple(x.strip() for x in a.attributes.split(",") if x.strip())
    return LearnOptions(
        generator=a.generator,
        out=a.out,
        attributes=attrs,
        num_samples=a.num_samples,
        truncation_psi=a.truncation_psi,
        chosen_ratio=a.chosen_ratio,
        val_ratio=a.val_ratio,
        svm_C=a.svm_C,
        batch=a.batch,
        seed=a.seed,
        device=a.device,
        codes=a.codes,
        age_gender_model=a.age_gender_model,
        glasses_model=a.glasses_model,
        grids=not a.no_grids,
        threads=a.threads,
    )


def main(argv=None) -> int:
    try:
        run(parse_args(argv))
    except FaceAppError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
