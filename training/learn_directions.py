"""Learn edit directions (InterFaceGAN-style) for a generator: sample, label, fit linear boundaries, save.

    python -m training.learn_directions --generator G.safetensors --out runs/directions \\
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
   With --regress ATTR the attribute is fitted instead by ridge regression of its score on every code (the
   direction of steepest increase: it uses all codes, not only the extremes); --age-min N fits age on the
   codes that score at least N years (growing up is not the same change as growing old); --condition
   age:gender stores age's conditional direction (InterFaceGAN's projection: orthogonal to gender's;
   age:gender,glasses to both);
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

from faceapp.edits import Direction, DirectionSet, apply_edits, direction_scale
from faceapp.errors import FaceAppError
from faceapp.imageio import from_uint8, to_uint8
from training.options import add_options, layered_values, opt, run_main

__all__ = [
    "LearnOptions",
    "conditional_check",
    "encode_archive",
    "fit_direction",
    "fit_direction_binary",
    "fit_direction_ridge",
    "grid_image",
    "learn_directions",
    "main",
    "read_archive_labels",
    "render",
    "sample_w",
]

DESCRIPTIONS = {
    "age": "older (+) / younger (-)",
    "gender": "more feminine (+) / more masculine (-)",
    "smile": "smiling (+) / not smiling (-)",
    "glasses": "glasses (+) / no glasses (-)",
}


def _names(text: str) -> tuple[str, ...]:
    """'age, gender' -> ('age', 'gender')."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _condition(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected EDITED:HELD, e.g. age:gender; got {text!r}")
    return parts[0], parts[1]


def _strength_range(text: str) -> tuple[str, float, float]:
    try:
        name, span = text.split("=")
        lo, hi = (float(x) for x in span.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=LO:HI, e.g. age=-12:12; got {text!r}") from None
    return name, lo, hi


@dataclass(frozen=True)
class LearnOptions:
    """Everything a run depends on; saved as options.json. The command line is generated from these fields
    (``--num-samples`` for ``num_samples``; ``flag=`` where the flag reads otherwise)."""

    generator: str | None = opt(dataclasses.MISSING, "faceapp generator checkpoint (.safetensors)")
    out: str = opt(dataclasses.MISSING, "folder for the direction set (a bundle's directions/)", required=True)
    attributes: tuple[str, ...] = opt(("age", "gender", "smile", "glasses"), "attributes to learn, comma-separated",
                                      type=_names)
    num_samples: int = opt(10000, "codes sampled from G and labelled")
    truncation_psi: float = opt(0.8, "truncation of the sampled codes")
    chosen_ratio: float = opt(0.2, "fraction kept at each end of the scores")
    val_ratio: float = opt(0.3, "fraction of the kept codes held out to report the SVM's accuracy")
    svm_C: float = opt(1.0, "the linear SVM's C")
    batch: int = opt(16, "renders per batch")
    seed: int = opt(0, "random seed")
    device: str = opt("cpu", "torch device")
    codes: str | None = opt(None, "labelled codes .npz ('w' or 'ws' + one score array per attribute) instead of "
                            "sampling")
    age_gender_model: str = opt("runs/labelers/age_gender.safetensors", "age/gender labeler (training/labelers.py)")
    glasses_model: str | None = opt("runs/labelers/glasses.safetensors", "glasses labeler (training/labelers.py)")
    grids: bool = opt(True, "no grids/<name>.png", flag="--no-grids", action="store_false")
    threads: int = opt(0, "torch CPU threads (0: torch's default)")
    bundle: str | None = opt(None, "bundle folder: its generator and encoder (instead of --generator)")
    real_labels: str | None = opt(None, "training archive whose dataset.json attributes hold true labels (UTKFace "
                                  "age, gender)", metavar="ARCHIVE")
    real_attributes: tuple[str, ...] = opt(("age", "gender"), "attributes learned from the true labels",
                                           type=_names)
    encoder: str | None = opt(None, "encoder checkpoint that encodes the archive's faces (default: the bundle's)")
    real_num: int | None = opt(None, "use this many of the archive's faces (random)")
    real_steps: int | None = opt(None, "optimisation steps per face without an encoder")
    real_batch: int = opt(32, "archive faces encoded per batch")
    check_codes: int = opt(32, "sampled codes for the conditional-edit check (0: none)")
    heldout_lists: tuple[str, ...] | None = opt(None, None)  # None: training/labels/utkface-heldout-*.txt (not a flag)
    regress: tuple[str, ...] = opt((), "attributes fitted by ridge regression on their scores instead of the SVM "
                                   "on the extremes, e.g. age", type=_names)
    ridge_alpha: float = opt(1.0, "ridge regression's alpha")
    age_min: float | None = opt(None, "fit age on codes scored at least this many years")
    condition: tuple[tuple[str, str], ...] = opt(
        (), "store EDITED's direction orthogonal to HELD's (e.g. age:gender, or age:gender,glasses for both at "
        "once); repeatable", type=_condition, action="append", metavar="EDITED:HELD")
    base: str | None = opt(None, "start from this direction set (e.g. a bundle's directions/): the learned attributes "
                           "replace its ones, the rest are kept (and --condition may name them)", metavar="DIRS")
    strength_ranges: tuple[tuple[str, float, float], ...] = opt(
        (), "the slider's range of a direction in strength units (e.g. age=-12:12); repeatable",
        flag="--strength-range", type=_strength_range, action="append", metavar="NAME=LO:HI")


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
        img = to_uint8(img)
        yield from img


def _usable_codes(w: np.ndarray, scores: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(w [M, D], scores [M]) as float64: the codes whose score is finite and, given `valid` (bool [N]), valid."""
    w = np.asarray(w, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(scores) & (np.ones(len(scores), bool) if valid is None else np.asarray(valid, bool))
    return w[keep], scores[keep]


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

    w, scores = _usable_codes(w, scores, valid)
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


def fit_direction_binary(
    w: np.ndarray, labels: np.ndarray, *, val_ratio: float = 0.3, C: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Linear SVM on every code by its 0/1 label (true labels need no top/bottom selection).

    w: [N, D]; labels: [N] in {0, 1}. Returns (unit normal [D] pointing to label 1, metrics).
    """
    from sklearn.model_selection import train_test_split
    from sklearn.svm import LinearSVC

    w = np.asarray(w, dtype=np.float64)
    y = np.asarray(labels)
    keep = np.isfinite(y.astype(np.float64))
    w, y = w[keep], y[keep].astype(int)
    if set(np.unique(y)) != {0, 1} or min((y == 0).sum(), (y == 1).sum()) < 4:
        raise FaceAppError(f"binary labels need at least 4 codes of each class (got {np.bincount(y, minlength=2)})")
    tr, va = train_test_split(np.arange(len(y)), test_size=val_ratio, random_state=seed, stratify=y)
    svm = LinearSVC(C=C, max_iter=20000).fit(w[tr], y[tr])
    normal = svm.coef_[0] / np.linalg.norm(svm.coef_[0])
    return normal, {
        "usable_codes": int(len(y)),
        "train_codes": int(len(tr)),
        "val_codes": int(len(va)),
        "positives": int(y.sum()),
        "train_accuracy": float((svm.predict(w[tr]) == y[tr]).mean()),
        "val_accuracy": float((svm.predict(w[va]) == y[va]).mean()),
        "majority_baseline": float(max(y.mean(), 1 - y.mean())),
    }


def fit_direction_ridge(
    w: np.ndarray,
    scores: np.ndarray,
    *,
    val_ratio: float = 0.3,
    alpha: float = 1.0,
    seed: int = 0,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Ridge regression of the scores on the codes; its unit coefficient vector is the direction.

    w: [N, D]; scores: [N] (e.g. years); valid: bool [N]. Where the SVM on the extremes finds what
    separates the two ends, this is the direction along which the score grows fastest on average, over
    every code. Returns (unit vector [D] pointing to higher scores, metrics: held-out R^2 and correlation,
    units of score per unit of w along the direction, counts).
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    w, y = _usable_codes(w, scores, valid)
    if len(y) < 10 or np.ptp(y) == 0:
        raise FaceAppError(f"ridge regression needs at least 10 codes with varied scores (got {len(y)})")
    tr, va = train_test_split(np.arange(len(y)), test_size=val_ratio, random_state=seed)  # shuffled
    model = Ridge(alpha=alpha).fit(w[tr], y[tr])
    norm = float(np.linalg.norm(model.coef_))
    if norm < 1e-12:
        raise FaceAppError("the scores do not depend on the codes (ridge coefficients are zero)")
    pred = model.predict(w[va])
    return model.coef_ / norm, {
        "usable_codes": int(len(y)),
        "train_codes": int(len(tr)),
        "val_codes": int(len(va)),
        "fit": "ridge",
        "val_r2": float(model.score(w[va], y[va])),
        "val_corr": float(np.corrcoef(pred, y[va])[0, 1]),
        "score_per_unit_w": norm,
    }


def _is_binary(scores) -> bool:
    v = np.asarray(scores, dtype=np.float64)
    return bool(np.isin(v[np.isfinite(v)], (0.0, 1.0)).all())


def learn_directions(
    w: np.ndarray,
    labels: dict[str, np.ndarray],
    opts: LearnOptions,
    valid=None,
    *,
    scale_codes: np.ndarray | None = None,
    source: str = "learned:interfacegan-svm",
) -> DirectionSet:
    """A DirectionSet with one direction per attribute in `labels` ({name: scores [N]}).

    w: [N, w_dim] (a W direction) or [N, num_ws, w_dim] (a per-layer W+ direction). 0/1 labels (true
    labels such as gender) are fitted on every code (`fit_direction_binary`), scores on their extremes
    (`fit_direction`). Scales are measured on `scale_codes` (default: w), e.g. G's samples, so that strength
    1 means the same for directions learned from real codes and from samples.
    """
    dirs = []
    w = np.asarray(w, dtype=np.float64)
    flat = w.reshape(len(w), -1)  # [N, D]
    for name, scores in labels.items():
        scores = np.asarray(scores, dtype=np.float64)
        use = np.ones(len(flat), bool) if valid is None else np.asarray(valid, bool)
        if name == "age" and opts.age_min is not None:
            use = use & (scores >= opts.age_min)
        if name in opts.regress:
            normal, metrics = fit_direction_ridge(flat, scores, val_ratio=opts.val_ratio, alpha=opts.ridge_alpha,
                                                  seed=opts.seed, valid=use)
            if name == "age" and opts.age_min is not None:
                metrics["age_min"] = float(opts.age_min)
        elif _is_binary(scores):
            keep = use
            normal, metrics = fit_direction_binary(flat[keep], np.asarray(scores)[keep], val_ratio=opts.val_ratio,
                                                   C=opts.svm_C, seed=opts.seed)
        else:
            normal, metrics = fit_direction(
                flat,
                scores,
                chosen_ratio=opts.chosen_ratio,
                val_ratio=opts.val_ratio,
                C=opts.svm_C,
                seed=opts.seed,
                valid=use,
            )
        normal = normal.reshape(w.shape[1:])
        dirs.append(
            Direction(
                name,
                normal,
                scale=direction_scale(normal, w if scale_codes is None else scale_codes),
                description=DESCRIPTIONS.get(name, ""),
                source=(source.replace("interfacegan-svm", "ridge") if "interfacegan-svm" in source else
                        f"{source}:ridge") if name in opts.regress else source,
                metrics=metrics,
            )
        )
        if "val_accuracy" in metrics:
            print(f"{name}: held-out accuracy {metrics['val_accuracy']:.3f} "
                  f"(remaining {metrics.get('remaining_accuracy', float('nan')):.3f}), scale {dirs[-1].scale:.3f}")
        else:
            print(f"{name}: ridge, held-out R^2 {metrics['val_r2']:.3f} (correlation {metrics['val_corr']:.3f}) "
                  f"on {metrics['usable_codes']} codes, scale {dirs[-1].scale:.3f}")
    return DirectionSet(dirs)


def conditional_check(
    score, directions: DirectionSet, ws, pairs=(("age", "gender"), ("gender", "age")), strength: float = 2.0
) -> dict:
    """How far a held attribute drifts when another is edited, with and without holding it.

    score: callable(ws [N, num_ws, w_dim]) -> {attribute: [N] scores} (e.g. render + labelers).
    ws:    [N, num_ws, w_dim] codes to edit. For each (edited, held) pair present in `directions`:
    {'edited', 'held', 'strength', 'drift_free', 'drift_held' (mean |score change| of `held` at +-strength),
    'edited_change_held' (mean signed change of `edited`'s own score at +strength, holding)}.
    """
    ws = torch.as_tensor(np.asarray(ws), dtype=torch.float32)
    base = score(ws)
    out = {}
    for edited, held in pairs:
        if edited not in directions or held not in directions:
            continue
        row = {"edited": edited, "held": held, "strength": strength}
        for key, hold in (("free", ()), ("held", (held,))):
            drift, own = [], []
            for sign in (-1.0, 1.0):
                s = score(apply_edits(ws, directions, {edited: sign * strength}, hold=hold))
                drift.append(np.abs(np.asarray(s[held]) - np.asarray(base[held])))
                if sign > 0 and edited in s:
                    own.append(np.asarray(s[edited]) - np.asarray(base[edited]))
            row[f"drift_{key}"] = float(np.mean(drift))
            if own:
                row[f"edited_change_{key}"] = float(np.mean(own))
        out[f"{edited}|{held}"] = row
    return out


def read_archive_labels(archive, attributes, heldout=None) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    """(image members, {attribute: float [N]}, source names) of a training archive's labelled images.

    archive: prepare_dataset.py's zip (dataset.json `attributes`: [[member, {age, gender, race, source}], ...]).
    Images lacking any of `attributes` are skipped. heldout: photo names that must not be in it (refused).
    """
    import zipfile

    with zipfile.ZipFile(archive) as z:
        try:
            meta = json.loads(z.read("dataset.json"))
        except KeyError:
            raise FaceAppError(f"{archive} has no dataset.json: make it with training/prepare_dataset.py") from None
    rows = meta.get("attributes") or []
    if not rows:
        raise FaceAppError(f"{archive}: dataset.json has no 'attributes' (true labels) to learn from")
    members, sources, values = [], [], {a: [] for a in attributes}
    for member, attrs in rows:
        if not isinstance(attrs, dict) or any(attrs.get(a) is None for a in attributes):
            continue
        members.append(member)
        sources.append(os.path.basename(str(attrs.get("source", member))))
        for a in attributes:
            values[a].append(float(attrs[a]))
    if not members:
        raise FaceAppError(f"{archive}: no image has all of {', '.join(attributes)}")
    if heldout:
        leaked = sorted(set(sources) & {os.path.basename(n) for n in heldout})
        if leaked:
            raise FaceAppError(f"{archive} holds {len(leaked)} held-out photos (e.g. {leaked[0]}): they must stay "
                               "out of training and tuning; rebuild it with prepare_dataset.py --exclude")
    return members, {a: np.asarray(v) for a, v in values.items()}, sources


def encode_archive(archive, members, encode, *, batch: int = 32, progress=print) -> np.ndarray:
    """Codes ws [N, num_ws, w_dim] (float32) of the archive's `members`.

    encode: callable(img [B, 3, H, W] float in [-1, 1]) -> ws [B, num_ws, w_dim] (an encoder, or an inversion).
    """
    import io
    import time
    import zipfile

    from PIL import Image

    out = []
    t0 = time.perf_counter()
    with zipfile.ZipFile(archive) as z:
        for i in range(0, len(members), batch):
            imgs = [np.asarray(Image.open(io.BytesIO(z.read(m))).convert("RGB")) for m in members[i : i + batch]]
            x = from_uint8(np.stack(imgs))  # [B, 3, H, W]
            with torch.no_grad():
                out.append(encode(x).float().cpu().numpy())
            done = min(i + batch, len(members))
            if progress and (done == len(members) or (i // batch) % 20 == 0):
                progress(f"  encoded {done}/{len(members)} ({time.perf_counter() - t0:.0f} s)")
    return np.concatenate(out)


def _real_encoder(G, encoder, opts: LearnOptions):
    """encode(img) for encode_archive: the encoder, or one fast-mode inversion per face without one."""
    if encoder is not None:
        encoder = encoder.eval()
        return lambda x: encoder(x.to(opts.device))
    from faceapp.inversion import InvertConfig, invert

    cfg = InvertConfig() if opts.real_steps is None else InvertConfig(fast_steps_no_encoder=opts.real_steps)
    cfg = dataclasses.replace(cfg, perceptual_weight=0.0)  # pixel loss only: the fallback is for a first look

    def encode(x):
        with torch.enable_grad():
            return torch.cat([invert(G, xi[None].to(opts.device), mode="fast", config=cfg).ws.detach()
                              for xi in x])

    return encode


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
    from training.age_gender import AgeGenderModel
    from training.face_labels import FaceLabeler, GlassesModel

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
    encoder = None
    if opts.bundle:
        from faceapp.bundle import load_bundle

        b = load_bundle(opts.bundle, device=opts.device)
        G, encoder = b.G, b.encoder
    else:
        G = load_generator(opts.generator, device=opts.device) if opts.generator else None
    if opts.encoder:
        from faceapp.inversion import load_encoder

        encoder = load_encoder(opts.encoder, device=opts.device)
    t0 = time.time()
    real_attrs = tuple(a for a in opts.attributes if a in opts.real_attributes) if opts.real_labels else ()
    sample_attrs = tuple(a for a in opts.attributes if a not in real_attrs)
    real_set = None
    if real_attrs:
        real_set = _learn_from_real(G, encoder, real_attrs, opts, out)
    if not sample_attrs:
        directions = real_set
    else:
        directions = _learn_from_samples(G, dataclasses.replace(opts, attributes=sample_attrs), out, t0)
        if real_set is not None:
            for d in real_set.values():
                directions = directions.with_direction(d)
    directions = DirectionSet([directions[a] for a in opts.attributes], directions.meta)
    if opts.base:
        base = DirectionSet.load(opts.base)
        learned = directions
        directions = DirectionSet([learned[n] if n in learned else d for n, d in base.items()]
                                  + [d for n, d in learned.items() if n not in base], base.meta | learned.meta)
    directions = _conditioned(directions, G, opts)
    meta = {
        "generator": os.path.basename(opts.generator or opts.bundle or "") or None,
        "learned_with": "training/learn_directions.py",
        "truncation_psi": opts.truncation_psi,
        "strength_unit": "1 = one std of the sampled codes' projections",
        "real_labels": {a: os.path.basename(opts.real_labels) for a in real_attrs} or None,
    }
    if opts.base:  # the base set's provenance stays; say what was learned anew on top of it
        meta = {"relearned": list(opts.attributes), "relearned_from": opts.codes or "samples"}
    directions.meta.update(meta)
    directions.save(out)
    report = {name: d.metrics | {"scale": d.scale, "source": d.source} for name, d in directions.items()}
    if G is not None and opts.check_codes and {"age", "gender"} <= set(directions):
        try:
            labeler = _labeler(dataclasses.replace(opts, attributes=("age", "gender")))
        except FaceAppError as e:
            print(f"note: no conditional check ({e})", file=sys.stderr)
        else:
            ws = torch.as_tensor(sample_w(G, opts.check_codes, opts.seed + 7, opts.truncation_psi, device=opts.device))
            ws = ws.unsqueeze(1).repeat(1, G.num_ws, 1)

            def score(codes):
                return labeler(list(render(G, codes, opts.batch, opts.device)))

            report["conditional"] = conditional_check(score, directions, ws)
            for row in report["conditional"].values():
                print(f"conditional: {row['edited']} +-{row['strength']:g}: {row['held']} score drifts "
                      f"{row['drift_free']:.3f} free, {row['drift_held']:.3f} holding it")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if opts.grids and G is not None:
        (out / "grids").mkdir(exist_ok=True)
        with torch.no_grad():
            pick = sample_w(G, 8, opts.seed + 1, opts.truncation_psi, device=opts.device)
        for name in directions:
            hold = [h for h in directions if h != name]
            grid_image(G, directions, name, pick, hold=hold, device=opts.device).save(out / "grids" / f"{name}.png")
    print(f"wrote {len(directions)} directions to {out} ({time.time() - t0:.0f} s)")
    return directions


def _conditioned(directions: DirectionSet, G, opts: LearnOptions) -> DirectionSet:
    """`directions` with opts.condition's directions made conditional (rescaled on G's samples, or on
    --codes) and opts.strength_ranges applied."""
    from faceapp.edits import conditional_direction

    for edited, held in opts.condition:
        missing = [n for n in (edited, *held.split(",")) if n not in directions]
        if missing:
            raise FaceAppError(f"--condition {edited}:{held}: no {' or '.join(missing)} direction was learned")
    scale_codes = None
    if opts.condition:
        if G is not None:
            scale_codes = sample_w(G, 4096, opts.seed + 3, opts.truncation_psi, device=opts.device)
        elif opts.codes:
            with np.load(opts.codes, allow_pickle=False) as f:
                scale_codes = f["w"] if "w" in f.files else f["ws"][:, 0]
        else:
            raise FaceAppError("--condition rescales the direction on G's samples: give --generator or --bundle "
                               "(or --codes)")
    for edited, held in opts.condition:
        d = conditional_direction(directions[edited], [directions[h] for h in held.split(",")])
        d = d.replace(scale=direction_scale(d.vector, scale_codes),
                      metrics=d.metrics | {"conditional_on": held})
        directions = directions.with_direction(d)
    for name, lo, hi in opts.strength_ranges:
        if name not in directions:
            raise FaceAppError(f"--strength-range {name}: no {name} direction was learned")
        directions = directions.with_direction(directions[name].replace(strength_range=(lo, hi)))
    return directions


def _learn_from_real(G, encoder, attrs, opts: LearnOptions, out: Path) -> DirectionSet:
    """Directions for `attrs` from the archive's true labels of its faces' codes (see the module doc)."""
    from training.utkface import HELDOUT_LISTS, read_name_list

    lists = HELDOUT_LISTS if opts.heldout_lists is None else opts.heldout_lists
    heldout = [n for p in lists for n in read_name_list(p)]
    members, labels, sources = read_archive_labels(opts.real_labels, attrs, heldout)
    if opts.real_num is not None and opts.real_num < len(members):
        pick = np.sort(np.random.default_rng(opts.seed).choice(len(members), opts.real_num, replace=False))
        members, sources = [members[i] for i in pick], [sources[i] for i in pick]
        labels = {a: v[pick] for a, v in labels.items()}
    if G is None and encoder is None:
        raise FaceAppError("--real-labels needs --encoder or --bundle (or --generator to invert the faces)")
    how = "the encoder" if encoder is not None else "fast-mode optimisation (no encoder: slow)"
    print(f"encoding {len(members)} labelled faces of {opts.real_labels} with {how}")
    ws = encode_archive(opts.real_labels, members, _real_encoder(G, encoder, opts), batch=opts.real_batch)
    np.savez_compressed(out / "real_codes.npz", ws=ws, sources=np.array(sources), **labels)
    scale_codes = None
    if G is not None:  # strength 1 = one std of G's own samples, like the directions learned from samples
        scale_codes = sample_w(G, 4096, opts.seed + 3, opts.truncation_psi, device=opts.device)
    codes = ws.mean(1)  # [N, w_dim]: one W code per face (the encoder's layers differ a little)
    ds = learn_directions(codes, labels, opts, scale_codes=scale_codes,
                          source=f"learned:true-labels:{os.path.basename(opts.real_labels)}")
    for d in ds.values():
        d.metrics["real_faces"] = int(len(members))
        d.metrics["encoded_with"] = "encoder" if encoder is not None else "fast-optimisation"
    return ds


def _learn_from_samples(G, opts: LearnOptions, out: Path, t0: float) -> DirectionSet:
    """Directions for opts.attributes from sampled codes scored by the labelers (or from --codes)."""
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
    directions.meta["num_codes"] = int(len(w))
    return directions


def build_parser() -> argparse.ArgumentParser:
    """The command line, one flag per LearnOptions field declared with a help text (training/options.py)."""
    return add_options(argparse.ArgumentParser(description=__doc__.split("\n")[0]), LearnOptions)


def parse_args(argv=None) -> LearnOptions:
    return LearnOptions(**layered_values(LearnOptions, build_parser().parse_args(argv), {"generator": None}))


def main(argv=None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
