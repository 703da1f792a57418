"""What a person sees change on a returned photo, measured with nothing an edit was trained on.

- skin tone: the mean CIELAB colour of the central face region (cheeks, nose, mouth; from dlib's 68
  landmarks) and its CIE76 distance (ΔE) between photo and result (scikit-image's colour conversions);
  a just-noticeable difference is about 2.
- greyness: the mean CIELAB chroma of the face (a greyscale photo has 0; < 1.5 still reads grey).
- detail: the energy of the change's Laplacian band inside the face, at the photo's resolution: sharp new
  lines (wrinkles, strands of grey hair) have it, a smooth tint has almost none.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["skin_mask", "face_mask_of", "mean_skin_lab", "delta_e", "face_chroma", "detail_energy"]

#: landmarks around the cheeks, nose and mouth (dlib's 68-point order): the jaw beside the cheeks, the nose
#: bridge, the lower lip; their hull, shrunk towards its centre, leaves out eyes, brows, hair and background.
SKIN_POINTS = (1, 2, 3, 13, 14, 15, 28, 57)
SKIN_SHRINK = 0.85


def _poly_mask(points: np.ndarray, shape) -> np.ndarray:
    hull = cv2.convexHull(points.astype(np.float32))[:, 0, :]
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(hull).astype(np.int32)], 1)
    return mask.astype(bool)


def skin_mask(lm68: np.ndarray, shape) -> np.ndarray:
    """Bool [H, W]: the central face region (cheeks, nose, mouth) of a face with landmarks lm68 [68, 2]."""
    pts = np.asarray(lm68, np.float64)[list(SKIN_POINTS)]
    c = pts.mean(0)
    return _poly_mask(c + (pts - c) * SKIN_SHRINK, shape)


def face_mask_of(lm68: np.ndarray, shape) -> np.ndarray:
    """Bool [H, W]: the face (jaw line and brows)."""
    return _poly_mask(np.asarray(lm68, np.float64)[:27], shape)


def mean_skin_lab(img: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    """Mean CIELAB (L*, a*, b*) [3] of the central face region of RGB uint8 img [H, W, 3]."""
    from skimage.color import rgb2lab

    lab = rgb2lab(np.asarray(img)[..., :3])
    return lab[skin_mask(lm68, img.shape[:2])].mean(0)


def delta_e(lab_a: np.ndarray, lab_b: np.ndarray) -> float:
    """CIE76 colour difference between two CIELAB colours [3]."""
    from skimage.color import deltaE_cie76

    return float(deltaE_cie76(np.asarray(lab_a, np.float64), np.asarray(lab_b, np.float64)))


def face_chroma(img: np.ndarray, lm68: np.ndarray) -> float:
    """Mean CIELAB chroma sqrt(a*^2 + b*^2) over the face of RGB uint8 img [H, W, 3]."""
    from skimage.color import rgb2lab

    lab = rgb2lab(np.asarray(img)[..., :3])
    m = face_mask_of(lm68, img.shape[:2])
    return float(np.hypot(lab[..., 1], lab[..., 2])[m].mean())


def detail_energy(before: np.ndarray, after: np.ndarray, lm68: np.ndarray, sigma: float = 1.0) -> float:
    """Mean squared Laplacian band (of a Gaussian, `sigma` px) of the luminance change after - before inside
    the face (RGB uint8 [H, W, 3] of the same size, at the photo's resolution); 8-bit units squared."""
    grey = lambda im: cv2.cvtColor(np.ascontiguousarray(im[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)  # noqa: E731
    change = grey(after) - grey(before)
    band = cv2.Laplacian(cv2.GaussianBlur(change, (0, 0), sigma), cv2.CV_32F)
    return float(np.mean(band[face_mask_of(lm68, change.shape)] ** 2))

