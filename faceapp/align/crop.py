"""Aligned face crops: the FFHQ quad crop and template (similarity) crops.

Every crop is one affine map from photo pixels to crop pixels (`AlignedFace.matrix`,
3x3, pixel centres at integer coordinates), so paste-back is its inverse. How the
crop is rendered follows NVIDIA's FFHQ recreation script: crop the quad's
neighbourhood, shrink by an integer factor when the face is much larger than the
output, reflect-pad with a blurred, median-tinted border where the quad leaves the
photo, then resample. The only differences are the filters (we warp at about the
source resolution and area-resample to the output instead of going through 4096 px).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from faceapp.align.detect import EYE_LEFT, EYE_RIGHT, MOUTH_LEFT, MOUTH_RIGHT, Face, five_points

KINDS = ("ffhq", "template")
PAD_MODES = ("blur", "reflect")
#: The keypoints a template lists, in order (see `five_points`).
TEMPLATE_KEYPOINTS = ("eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right")

#: Where faces sit in our UTKFace-trained demo's 200x200 crops, as fractions of the
#: crop side (x, y), in TEMPLATE_KEYPOINTS order: the mean of dlib's 68-point
#: landmarks over 580 UTKFace images (spread ~0.015 for the eyes, ~0.035 for nose and
#: mouth); the dataset documents its eye centres near (0.30, 0.30) and (0.685, 0.30).
#: tests/test_align.py::test_utkface_template_matches_dataset re-measures it.
UTKFACE_TEMPLATE = (
    (0.300, 0.300),
    (0.686, 0.300),
    (0.493, 0.513),
    (0.317, 0.694),
    (0.670, 0.694),
)


@dataclass(frozen=True)
class AlignSpec:
    """How a model's training faces were cropped; a model bundle carries one.

    kind: 'ffhq' (NVIDIA's eye/mouth quad) or 'template' (similarity transform of
        five keypoints onto `template`).
    size: output side in pixels (crops are square).
    template: for 'template', five (x, y) positions as fractions of the side, in
        TEMPLATE_KEYPOINTS order; (0, 0) is the crop's top-left corner, (1, 1) its
        bottom-right corner.
    pad: where the crop leaves the photo: 'blur' (FFHQ's reflect + blur + median
        tint) or 'reflect' (plain mirror).
    """

    kind: str
    size: int
    template: tuple[tuple[float, float], ...] | None = None
    pad: str = "blur"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"AlignSpec.kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 8:
            raise ValueError(f"AlignSpec.size must be an int >= 8, got {self.size!r}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"AlignSpec.pad must be one of {PAD_MODES}, got {self.pad!r}")
        if self.kind == "template":
            t = self.template
            if t is None or len(t) != len(TEMPLATE_KEYPOINTS) or any(len(p) != 2 for p in t):
                raise ValueError(f"a template AlignSpec needs {len(TEMPLATE_KEYPOINTS)} (x, y) points")
            # Normalise to tuples of floats so equal specs compare (and hash) equal.
            object.__setattr__(self, "template", tuple((float(x), float(y)) for x, y in t))
        elif self.template is not None:
            raise ValueError("an 'ffhq' AlignSpec takes no template")

    def with_size(self, size: int) -> AlignSpec:
        """The same crop at another output size."""
        return AlignSpec(self.kind, int(size), self.template, self.pad)

    def to_dict(self) -> dict:
        """A JSON-ready dict (see `from_dict`)."""
        d = {"kind": self.kind, "size": self.size, "pad": self.pad}
        if self.template is not None:
            d["template"] = [list(p) for p in self.template]
            d["template_keypoints"] = list(TEMPLATE_KEYPOINTS)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AlignSpec:
        """Inverse of `to_dict`; rejects unknown keys so typos don't pass silently."""
        known = {"kind", "size", "template", "pad", "template_keypoints"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AlignSpec fields: {sorted(unknown)}")
        if "template_keypoints" in d and tuple(d["template_keypoints"]) != TEMPLATE_KEYPOINTS:
            raise ValueError(f"template keypoints must be {list(TEMPLATE_KEYPOINTS)}")
        t = d.get("template")
        return cls(
            kind=d["kind"],
            size=int(d["size"]),
            template=None if t is None else tuple(tuple(p) for p in t),
            pad=d.get("pad", "blur"),
        )


def FFHQ_SPEC(size: int = 1024) -> AlignSpec:  # noqa: N802 (reads like the constant it stands for)
    """The FFHQ crop (as in NVIDIA's dataset) at `size` x `size`."""
    return AlignSpec("ffhq", int(size))


def template_spec(points: Sequence[Sequence[float]], size: int, *, pad: str = "blur") -> AlignSpec:
    """A template crop: five keypoints (fractions of the side, TEMPLATE_KEYPOINTS order)."""
    return AlignSpec("template", int(size), tuple(tuple(p) for p in points), pad)


def utkface_spec(size: int = 200) -> AlignSpec:
    """The crop of UTKFace's aligned 200x200 images (our demo model's), at any size."""
    return template_spec(UTKFACE_TEMPLATE, size)


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned crop and what is needed to put it back.

    matrix: float64 [3, 3], photo pixel (x, y, 1) -> crop pixel, pixel centres at integers.
    """

    image: Image.Image
    matrix: np.ndarray = field(repr=False)
    spec: AlignSpec
    face: Face
    photo_size: tuple[int, int]

    @property
    def inverse(self) -> np.ndarray:
        """[3, 3] crop pixel -> photo pixel."""
        return np.linalg.inv(self.matrix)

    @property
    def quad(self) -> np.ndarray:
        """The crop's outer corners in the photo, [4, 2]: top-left, bottom-left,
        bottom-right, top-right (for drawing where a crop came from)."""
        s = self.spec.size
        return self.to_photo(np.array([[-0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5], [s - 0.5, -0.5]]))

    @property
    def landmarks(self) -> np.ndarray:
        """The face's 68 landmarks in crop pixels, [68, 2]."""
        return self.to_crop(self.face.landmarks68)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Map [N, 2] photo pixel coordinates into the crop."""
        return _apply(self.matrix, points)

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Map [N, 2] crop pixel coordinates into the photo."""
        return _apply(self.inverse, points)


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ m[:2, :2].T + m[:2, 2]


def _affine3(a: np.ndarray) -> np.ndarray:
    m = np.eye(3)
    m[:2] = a
    return m


def _rescale(k: float) -> np.ndarray:
    """Pixel-centre coordinates of an image resized by factor k (x' = (x + .5) k - .5)."""
    return np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1.0]])


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])


def ffhq_quad(lm68: np.ndarray) -> np.ndarray:
    """FFHQ's oriented square, [4, 2]: top-left, bottom-left, bottom-right, top-right.

    Centred a tenth of the way from the eye midpoint to the mouth; half-side the
    larger of 2x the eye distance and 1.8x the eye-to-mouth distance; rotated so the
    eyes are level (NVlabs/ffhq-dataset's recreation geometry).
    """
    lm = np.asarray(lm68, dtype=np.float64)
    eye_l, eye_r = lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    mouth_avg = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    # x axis: the eye line blended with the perpendicular of the eye-to-mouth line.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping src onto dst, [3, 3]."""
    # dst = [a -b; b a] src + t, linear in (a, b, tx, ty).
    n = len(src)
    A = np.zeros((2 * n, 4))
    A[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)]
    A[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(n), np.ones(n)]
    a, b, tx, ty = np.linalg.lstsq(A, dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty], [0, 0, 1.0]])


def crop_matrix(lm68: np.ndarray, spec: AlignSpec) -> np.ndarray:
    """The [3, 3] photo -> crop map `spec` prescribes for a face with these landmarks."""
    s = spec.size
    if spec.kind == "ffhq":
        q = ffhq_quad(lm68)
        # Quad corners are the crop's outer corners, i.e. pixel centres -0.5 and s - 0.5.
        src = q[[0, 1, 3]].astype(np.float32)
        dst = np.float32([[-0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, -0.5]])
        return _affine3(cv2.getAffineTransform(src, dst))
    dst = np.asarray(spec.template, dtype=np.float64) * s - 0.5
    return _similarity(five_points(lm68), dst)


def align_face(image: Image.Image, face: Face, spec: AlignSpec) -> AlignedFace:
    """Crop `face` out of `image` the way `spec` says, at spec.size x spec.size."""
    m = crop_matrix(face.landmarks68, spec)
    crop = render_crop(image, m, spec.size, pad=spec.pad)
    return AlignedFace(image=crop, matrix=m, spec=spec, face=face, photo_size=image.size)


def render_crop(image: Image.Image, matrix: np.ndarray, size: int, *, pad: str = "blur") -> Image.Image:
    """Resample the crop `matrix` (photo -> crop, [3, 3]) defines, FFHQ-style."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    inv = np.linalg.inv(matrix)
    corners = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]])
    quad = _apply(inv, corners)  # crop corners in the photo
    qsize = size * math.sqrt(abs(np.linalg.det(inv[:2, :2])))  # quad side, photo pixels

    # Crop the neighbourhood of the quad (PIL crops lazily; cheap even at 12 MP).
    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0 = np.floor(quad.min(0)).astype(int) - border
    x1, y1 = np.ceil(quad.max(0)).astype(int) + border
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, image.width), min(y1, image.height)
    if x1 <= x0 or y1 <= y0:  # the face lies wholly outside the photo: nothing to show
        x0, y0, x1, y1 = 0, 0, image.width, image.height
    work = image.crop((x0, y0, x1, y1))
    to_work = _translate(-x0, -y0)

    # Shrink by an integer factor when the face is far larger than the output.
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        w0 = work.width
        work = work.reduce(shrink)
        to_work = _rescale(work.width / w0) @ to_work
        qsize /= shrink
        border = max(int(np.rint(qsize * 0.1)), 3)
    arr = np.asarray(work, dtype=np.uint8)

    # Pad where the quad leaves the photo: mirror, blur towards the edge, tint to the median.
    q = _apply(to_work, quad)
    h, w = arr.shape[:2]
    pads = np.array(
        [
            max(-int(np.floor(q[:, 0].min())) + border, 0),
            max(-int(np.floor(q[:, 1].min())) + border, 0),
            max(int(np.ceil(q[:, 0].max())) - w + border, 0),
            max(int(np.ceil(q[:, 1].max())) - h + border, 0),
        ]
    )
    if pads.max() > border - 4:
        pads = np.maximum(pads, int(np.rint(qsize * 0.3)))
        # cv2's reflect-101 is numpy's 'reflect'; it needs pad < size, so repeat if asked more.
        arr = _reflect_pad(arr, pads)
        if pad == "blur":
            arr = _blur_padding(arr, pads, qsize)
        to_work = _translate(pads[0], pads[1]) @ to_work

    # Warp near the source resolution, then area-resample down to the output size.
    ratio = qsize / size
    inter_size = size if ratio <= 1.0 else min(int(math.ceil(size * ratio)), max(4096, size))
    warp = _rescale(inter_size / size) @ matrix @ np.linalg.inv(to_work)
    flags = cv2.INTER_CUBIC if ratio <= 1.0 else cv2.INTER_LINEAR
    out = cv2.warpAffine(arr, warp[:2], (inter_size, inter_size), flags=flags, borderMode=cv2.BORDER_REFLECT_101)
    if inter_size != size:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return Image.fromarray(out)


def _reflect_pad(arr: np.ndarray, pads: np.ndarray) -> np.ndarray:
    left, top, right, bottom = (int(v) for v in pads)
    while left or top or right or bottom:
        h, w = arr.shape[:2]
        step = [min(left, w - 1), min(top, h - 1), min(right, w - 1), min(bottom, h - 1)]
        arr = cv2.copyMakeBorder(arr, step[1], step[3], step[0], step[2], cv2.BORDER_REFLECT_101)
        left, top, right, bottom = left - step[0], top - step[1], right - step[2], bottom - step[3]
    return arr


def _blur_padding(arr: np.ndarray, pads: np.ndarray, qsize: float) -> np.ndarray:
    """FFHQ's padding treatment: blur the mirrored border and fade it to the median colour."""
    img = arr.astype(np.float32)
    h, w = img.shape[:2]
    left, top, right, bottom = (max(float(p), 1.0) for p in pads)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    # 0 inside the photo, rising to 1 at the outer edge of the padding.
    mask = np.maximum(
        1.0 - np.minimum(xs / left, (w - 1 - xs) / right),
        1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom),
    )[..., None]
    sigma = max(qsize * 0.02, 0.5)
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img.reshape(-1, 3), axis=0) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
