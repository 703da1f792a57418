"""The labelers' command line: fit the age/gender and glasses models, score UTKFace photos, evaluate the scores.

    python -m training.labelers fit-age-gender --out runs/labelers/age_gender.safetensors
    python -m training.labelers fit-glasses --labels LABELS.json --out runs/labelers/glasses.safetensors
    python -m training.labelers score --out scores.json
    python -m training.labelers evaluate --scores scores.json --labels LABELS.json

The labelers themselves (the library learn_directions, calibrate_years and bench import) live in
training/face_labels.py (landmarks, smile, glasses, `FaceLabeler`), training/age_gender.py (dlib descriptors,
`AgeGenderModel`) and training/utkface.py (UTKFace's names, held-out lists and zip); this module re-exports
their public names.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceapp.errors import FaceAppError
from training.age_gender import AgeGenderModel, face_descriptors
from training.face_labels import (
    ALIGNED_FACE_BOX,
    ATTRIBUTES,
    GLASSES_THRESHOLD,
    SMILE_THRESHOLD,
    THRESHOLDS,
    FaceLabeler,
    GlassesModel,
    _eye_similarity,  # noqa: F401 (older scripts import it from here)
    _predictor,
    canonical_face,
    find_landmarks,
    glasses_features,
    glasses_hog,
    glasses_score,
    smile_features,
    smile_score,
)
from training.options import opt, parse_command
from training.utkface import (
    HELDOUT_LISTS,
    LABELS_DIR,
    UTKFACE_NAME,
    name_list_digest,
    read_name_list,
    read_utkface,
    utkface_images,
)

__all__ = [  # re-exported from their modules, so older imports keep working
    "ALIGNED_FACE_BOX",
    "ATTRIBUTES",
    "AgeGenderModel",
    "FaceLabeler",
    "GLASSES_THRESHOLD",
    "GlassesModel",
    "HELDOUT_LISTS",
    "LABELS_DIR",
    "SMILE_THRESHOLD",
    "THRESHOLDS",
    "UTKFACE_NAME",
    "canonical_face",
    "face_descriptors",
    "find_landmarks",
    "glasses_features",
    "glasses_hog",
    "glasses_score",
    "main",
    "name_list_digest",
    "read_name_list",
    "read_utkface",
    "smile_features",
    "smile_score",
]


def _descriptors_of(zip_path, num, seed, skip, net, exclude=None):
    names, ages, genders, descs = [], [], [], []
    buf_i, buf_l = [], []
    for name, img, age, gender in read_utkface(zip_path, num, seed, skip, exclude=exclude):
        lm, _ = find_landmarks(img)
        names.append(name), ages.append(age), genders.append(gender)
        buf_i.append(img), buf_l.append(lm)
        if len(buf_i) == 64:
            descs.append(face_descriptors(buf_i, buf_l, net))
            buf_i, buf_l = [], []
            print(f"  {len(names)} faces", file=sys.stderr, flush=True)
    if buf_i:
        descs.append(face_descriptors(buf_i, buf_l, net))
    return names, np.array(ages, float), np.array(genders, int), np.concatenate(descs)


# UTKFace holds some photos twice under different names; a training photo this close (descriptor distance) to a
# held-out one is taken for that photo and left out too (re-encodings of one photo: ~0; two photos of one person:
# ~0.3 and more).
DUPLICATE_DISTANCE = 0.05


def _named_descriptors(zip_path, names, net) -> np.ndarray:
    """dlib descriptors [N, 128] of the UTKFace photos called `names` (base names) in the zip."""
    want = {os.path.basename(n) for n in names}
    with zipfile.ZipFile(zip_path) as z:
        members = [n for n in z.namelist() if os.path.basename(n) in want]
    out, imgs, lms = [], [], []
    for img in utkface_images(zip_path, members):
        imgs.append(img), lms.append(find_landmarks(img)[0])
        if len(imgs) == 64:
            out.append(face_descriptors(imgs, lms, net))
            imgs, lms = [], []
    if imgs:
        out.append(face_descriptors(imgs, lms, net))
    return np.concatenate(out) if out else np.zeros((0, 128))


def _far_from(desc: np.ndarray, others: np.ndarray, distance: float = DUPLICATE_DISTANCE) -> np.ndarray:
    """bool [N]: which rows of desc [N, 128] are farther than `distance` from every row of others [M, 128]."""
    if not len(others):
        return np.ones(len(desc), bool)
    d2 = (desc**2).sum(1)[:, None] - 2 * desc @ others.T + (others**2).sum(1)[None]
    return np.sqrt(np.maximum(d2, 0.0)).min(1) > distance


def _cmd_fit_age_gender(args) -> int:
    from faceapp.inversion.dlib_resnet import load_dlib_face_resnet

    torch.set_num_threads(args.threads)
    lists = [] if args.no_exclude else [Path(p) for p in (args.exclude or HELDOUT_LISTS)]
    excluded = {p.name: read_name_list(p) for p in lists}
    drop = [n for names in excluded.values() for n in names]
    net = load_dlib_face_resnet()
    _predictor()
    cache_key = name_list_digest(drop) if drop else "none"
    if args.cache and os.path.isfile(args.cache) and str(np.load(args.cache).get("excluded", "none")) == cache_key:
        c = np.load(args.cache)
        ages, genders, desc, t_ages, t_genders, t_desc = (c[k] for k in ("a", "g", "d", "ta", "tg", "td"))
    else:
        _, ages, genders, desc = _descriptors_of(args.utkface, args.num_train, args.seed, 0, net, drop)
        _, t_ages, t_genders, t_desc = _descriptors_of(args.utkface, args.num_test, args.seed, args.num_train, net,
                                                       drop)
        if args.cache:
            np.savez(args.cache, a=ages, g=genders, d=desc, ta=t_ages, tg=t_genders, td=t_desc, excluded=cache_key)
    duplicates = 0
    if drop:  # the held-out photos' twins under other names go too
        cached = np.load(args.cache) if args.cache and os.path.isfile(args.cache) else None
        if cached is not None and "hd" in cached.files and str(cached["excluded"]) == cache_key:
            held = cached["hd"]
        else:
            held = _named_descriptors(args.utkface, drop, net)
            if args.cache:
                np.savez(args.cache, a=ages, g=genders, d=desc, ta=t_ages, tg=t_genders, td=t_desc, hd=held,
                         excluded=cache_key)
        keep, keep_t = _far_from(desc, held), _far_from(t_desc, held)
        duplicates = int((~keep).sum() + (~keep_t).sum())
        ages, genders, desc = ages[keep], genders[keep], desc[keep]
        t_ages, t_genders, t_desc = t_ages[keep_t], t_genders[keep_t], t_desc[keep_t]
    model = AgeGenderModel.fit(desc, ages, genders)
    pred_age, p_f = model.age(t_desc), model.p_female(t_desc)
    metrics = {
        "train_images": int(len(desc)),
        "test_images": int(len(t_desc)),
        "age_mae_years": float(np.abs(pred_age - t_ages).mean()),
        "age_over_40_accuracy": float(((pred_age > 40) == (t_ages > 40)).mean()),
        "gender_accuracy": float(((p_f > 0.5) == (t_genders == 1)).mean()),
        "utkface": os.path.basename(args.utkface),
        "seed": args.seed,
        # the held-out lists none of the fitted or tested photos came from (checked by AgeGenderModel.excludes)
        "excluded": {k: {"count": len(v), "digest": name_list_digest(v)} for k, v in excluded.items()},
        "excluded_duplicates": duplicates,  # photos under other names whose descriptor is a held-out photo's
    }
    model = AgeGenderModel(**{**model.__dict__, "metrics": metrics})
    model.save(args.out)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_fit_glasses(args) -> int:
    """Fit GlassesModel on UTKFace photos labelled by eye; report 5-fold held-out accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = json.loads(Path(args.labels).read_text())
    names = [n for n, t in labels.items() if "glasses" in t]
    y = np.array([int(labels[n]["glasses"]) for n in names])
    feats = np.stack([glasses_hog(img, find_landmarks(img)[0]) for img in utkface_images(args.utkface, names)])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    p = cross_val_predict(LogisticRegression(C=args.C, max_iter=5000), feats, y, cv=folds, method="predict_proba")[:, 1]
    pred = p > 0.5
    metrics = {
        "labelled_images": len(y),
        "positives": int(y.sum()),
        "cv5_accuracy": float((pred == y).mean()),
        "cv5_precision": float((pred & (y == 1)).sum() / max(pred.sum(), 1)),
        "cv5_recall": float((pred & (y == 1)).sum() / max(y.sum(), 1)),
        "majority_baseline": float(max(y.mean(), 1 - y.mean())),
    }
    if args.random_subset:
        sub = set(json.loads(Path(args.random_subset).read_text()))
        m = np.array([n in sub for n in names])
        metrics["cv5_accuracy_random_subset"] = float((pred == y)[m].mean())
        metrics["random_subset_baseline"] = float(1 - y[m].mean())
    model = GlassesModel.fit(feats, y, C=args.C)
    model = GlassesModel(model.coef, model.intercept, metrics)
    model.save(args.out)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_score(args) -> int:
    """Score UTKFace photos (all four attributes where possible) into a JSON for contact sheets / evaluation."""
    torch.set_num_threads(args.threads)
    ag = AgeGenderModel.load(args.age_gender) if args.age_gender else None
    attrs = [a for a in ATTRIBUTES if ag is not None or a in ("smile", "glasses")]
    gm = GlassesModel.load(args.glasses_model) if args.glasses_model else None
    labeler = FaceLabeler(attrs, age_gender=ag, glasses=gm)
    rows = []
    for name, img, age, gender in read_utkface(args.utkface, args.num, args.seed, args.skip):
        s = labeler([img])
        lm, _ = find_landmarks(img)
        rows.append(
            {
                "name": name,
                "true_age": age,
                "true_gender": gender,
                **{k: float(v[0]) for k, v in s.items()},
                "smile_features": smile_features(lm),
                "glasses_features": glasses_features(img, lm),
            }
        )
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"scored {len(rows)} photos -> {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    """Accuracy of the smile / glasses labelers against labels checked by eye ({name: {attr: 0|1}})."""
    truth = json.loads(Path(args.labels).read_text())
    scores = {r["name"]: r for r in json.loads(Path(args.scores).read_text())}
    report = {}
    for attr in ("smile", "glasses"):
        pairs = [(scores[n][attr], int(t[attr])) for n, t in truth.items() if attr in t and n in scores]
        if not pairs:
            continue
        s, y = np.array(pairs).T
        y = y.astype(int)
        pred = s > (args.glasses_threshold if attr == "glasses" else THRESHOLDS[attr])
        report[attr] = {
            "n": len(y),
            "positives": int(y.sum()),
            "accuracy": float((pred == y).mean()),
            "precision": float((pred & (y == 1)).sum() / max(pred.sum(), 1)),
            "recall": float((pred & (y == 1)).sum() / max((y == 1).sum(), 1)),
        }
    rows = [r for r in scores.values() if "age" in r and "true_age" in r]
    if rows:  # against UTKFace's own labels
        a, ta = np.array([r["age"] for r in rows]), np.array([r["true_age"] for r in rows])
        g, tg = np.array([r["gender"] for r in rows]), np.array([r["true_gender"] for r in rows])
        report["age"] = {
            "n": len(rows),
            "mae_years": float(np.abs(a - ta).mean()),
            "over_40_accuracy": float(((a > 40) == (ta > 40)).mean()),
        }
        report["gender"] = {"n": len(rows), "accuracy": float(((g > 0.5) == (tg == 1)).mean())}
    print(json.dumps(report, indent=2))
    return 0


UTKFACE = "../shared/data/utkface/utkface-200px.zip"


@dataclass(frozen=True)
class FitAgeGenderOptions:
    utkface: str = opt(UTKFACE, "UTKFace 200 px zip")
    out: str = opt("runs/labelers/age_gender.safetensors", "the labeler file to write")
    num_train: int = opt(3000, "photos fitted on")
    num_test: int = opt(1000, "further photos tested on")
    seed: int = opt(0, "seed of the photos' order")
    threads: int = opt(2, "torch CPU threads")
    cache: str | None = opt(None, "descriptors .npz: written once, reused on later runs")
    exclude: tuple[str, ...] | None = opt(None, "photo names never fitted or tested on (repeatable; default: both "
                                          "training/labels/utkface-heldout-*.txt lists)", action="append",
                                          metavar="LIST.txt")
    no_exclude: bool = opt(False, "leave no photos out (not for calibration)", action="store_true")


@dataclass(frozen=True)
class FitGlassesOptions:
    utkface: str = opt(UTKFACE, "UTKFace 200 px zip")
    labels: str = opt(None, 'JSON {utkface file name: {"glasses": 0|1}}', required=True)
    random_subset: str | None = opt(None, "JSON list of names drawn at random (reported apart)")
    out: str = opt("runs/labelers/glasses.safetensors", "the labeler file to write")
    C: float = opt(1.0, "the logistic regression's C")


@dataclass(frozen=True)
class ScoreOptions:
    utkface: str = opt(UTKFACE, "UTKFace 200 px zip")
    age_gender: str | None = opt(None, "age/gender labeler (fit-age-gender); without it: smile and glasses only")
    glasses_model: str | None = opt(None, "glasses labeler (fit-glasses)")
    out: str = opt(None, "the JSON file to write", required=True)
    num: int = opt(300, "photos to score")
    seed: int = opt(1, "seed of the photos' order")
    skip: int = opt(0, "leave out the first N of that order")
    threads: int = opt(2, "torch CPU threads")


@dataclass(frozen=True)
class EvaluateOptions:
    scores: str = opt(None, "the JSON written by score", required=True)
    labels: str = opt(None, "labels checked by eye (JSON)", required=True)
    glasses_threshold: float = opt(GLASSES_THRESHOLD, "0 for scores from a GlassesModel (logits)")


COMMANDS = {
    "fit-age-gender": (FitAgeGenderOptions, "fit the age/gender heads on UTKFace descriptors"),
    "fit-glasses": (FitGlassesOptions, "fit the HOG glasses classifier on photos labelled by eye"),
    "score": (ScoreOptions, "score UTKFace photos into a JSON (for checking by eye)"),
    "evaluate": (EvaluateOptions, "accuracy of smile/glasses scores against labels checked by eye"),
}
RUN = {"fit-age-gender": _cmd_fit_age_gender, "fit-glasses": _cmd_fit_glasses, "score": _cmd_score,
       "evaluate": _cmd_evaluate}


def main(argv=None) -> int:
    cmd, args = parse_command(COMMANDS, argv, description=__doc__.split("\n")[0])
    try:
        return RUN[cmd](args)
    except FaceAppError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
