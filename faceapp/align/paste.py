"""Putting (edited) aligned crops back into the original photo.

The crop is warped back with the inverse of its alignment transform, only over the
face's bounding box (so a 12 MP photo costs what the face costs), and alpha-blended
through a feathered mask: the convex hull of the jaw line and a forehead raised above
the brows. The mask falls to zero at the hull's edge and at the crop's own edge, so
neither a seam nor the crop's square can show.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from PIL import Image

from faceapp.align.crop import AlignedFace, _apply, _rescale, _translate
from faceapp.align.detect import BROWS, JAW

__all__ = ["BLENDS", "face_hull", "face_mask", "paste_back", "paste_back_all"]

BLENDS = ("alpha", "poisson")


def face_hull(lm68: np.ndarray, *, forehead: float = 0.45) -> np.ndarray:
    """Outline of the face to replace, [K, 2]: jaw line plus the brows lifted into the forehead.

    forehead: how far above the brows the mask reaches, as a fraction of the
    brow-to-chin distance.
    """
    lm = np.asarray(lm68, dtype=np.float64)
    brows = lm[BROWS]
    chin = lm[8]
    up = brows.mean(0) - chin
    lifted = brows + up * forehead
    pts = np.concatenate([lm[JAW], lifted]).astype(np.float32)
    return cv2.convexHull(pts)[:, 0, :].astype(np.float64)


def face_mask(lm68: np.ndarray, size: int, *, feather: float = 0.1, forehead: float = 0.45) -> np.ndarray:
    """Feathered face mask for a square crop, float32 [size, size] in [0, 1].

    lm68: landmarks in crop pixels. feather: width of the soft edge as a fraction of
    the face size (square root of the hull area); the mask is 0 on the hull's edge
    and on the crop's border, rising smoothly to 1 inside.
    """
    hull = face_hull(lm68, forehead=forehead)
    shift = 4  # sub-pixel vertex precision for fillPoly
    binary = np.zeros((size, size), np.uint8)
    cv2.fillPoly(binary, [np.round(hull * (1 << shift)).astype(np.int32)], 255, cv2.LINE_AA, shift)
    binary = (binary >= 128).astype(np.uint8)
    binary[[0, -1], :] = 0  # the crop's square edge must fade out too
    binary[:, [0, -1]] = 0
    area = cv2.contourArea(hull.astype(np.float32))
    width = max(float(feather) * np.sqrt(max(area, 1.0)), 1.0)
    dist = cv2.distanceTransform(binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    t = np.clip(dist / width, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep: no kink where it meets 1


def paste_back(
    photo: Image.Image,
    aligned: AlignedFace,
    edited_crop: Image.Image,
    *,
    feather: float = 0.1,
    forehead: float = 0.45,
    mask: np.ndarray | None = None,
    blend: str = "alpha",
) -> Image.Image:
    """Blend `edited_crop` (the edited `aligned.image`) back into `photo` at full resolution.

    Args:
        photo: the photo `aligned` was cut from (same size), RGB.
        aligned: from `align_face`.
        edited_crop: any square size; it is mapped onto the crop's square (a 256 px
            generator output can go back over a 1024 px crop).
        feather, forehead: see `face_mask`.
        mask: optional float [S, S] mask in the edited crop's pixels to use instead.
        blend: 'alpha' (feathered mask) or 'poisson' (OpenCV's seamless clone first, so
            a crop whose colours drifted from the photo's meets it without a tone step;
            then the same feathered mask).

    Returns:
        A new RGB image; `photo` is left untouched.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if photo.size != aligned.photo_size:
        raise ValueError(f"photo is {photo.size}, but the face was aligned in a {aligned.photo_size} photo")
    crop = np.asarray(edited_crop.convert("RGB"))
    s = crop.shape[0]
    if crop.shape[1] != s:
        raise ValueError(f"edited crop must be square, got {crop.shape[1]}x{crop.shape[0]}")
    # photo -> edited-crop pixels
    m = _rescale(s / aligned.spec.size) @ aligned.matrix
    if mask is None:
        mask = face_mask(_apply(m, aligned.face.landmarks68), s, feather=feather, forehead=forehead)
    mask = np.asarray(mask, np.float32)
    if mask.shape != (s, s):
        raise ValueError(f"mask must be {s}x{s} like the edited crop, got shape {mask.shape}")

    # Where the mask lands in the photo (mask > 0 lies inside the hull and the crop).
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        return photo.copy()
    inv = np.linalg.inv(m)
    corners = [[xs.min(), ys.min()], [xs.min(), ys.max()], [xs.max(), ys.min()], [xs.max(), ys.max()]]
    box = _apply(inv, np.array(corners, dtype=np.float64))
    x0, y0 = np.floor(box.min(0)).astype(int) - 2
    x1, y1 = np.ceil(box.max(0)).astype(int) + 3
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, photo.width), min(y1, photo.height)
    if x1 <= x0 or y1 <= y0:
        return photo.copy()

    # A crop much finer than the photo's face would alias when warped down: area-resize first.
    scale = np.sqrt(abs(np.linalg.det(inv[:2, :2])))  # photo pixels per crop pixel
    if scale < 0.75:
        s2 = max(int(round(s * scale)), 2)
        crop = cv2.resize(crop, (s2, s2), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (s2, s2), interpolation=cv2.INTER_AREA)
        m = _rescale(s2 / s) @ m
    # crop -> ROI of the photo
    to_roi = _translate(-x0, -y0) @ np.linalg.inv(m)
    size = (x1 - x0, y1 - y0)
    interp = cv2.INTER_CUBIC if scale > 1.25 else cv2.INTER_LINEAR  # sharper when enlarging a small crop
    warped = cv2.warpAffine(crop, to_roi[:2], size, flags=interp, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, to_roi[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    # Only the face's box is converted and blended; the rest of the photo is copied as is.
    result = photo.convert("RGB") if photo.mode != "RGB" else photo.copy()
    roi8 = np.asarray(result.crop((x0, y0, x1, y1)))
    if blend == "poisson":
        warped = _poisson(warped, roi8, alpha)
    roi = roi8.astype(np.float32)
    roi += (warped.astype(np.float32) - roi) * alpha[..., None]
    result.paste(Image.fromarray(np.clip(np.rint(roi), 0, 255).astype(np.uint8)), (x0, y0))
    return result


def _poisson(src: np.ndarray, dst: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`src` re-toned by Poisson blending into `dst` over alpha > 0 (same-size arrays)."""
    m = 8  # seamlessClone misbehaves where the mask touches the border: pad both
    src_p = cv2.copyMakeBorder(src, m, m, m, m, cv2.BORDER_REFLECT_101)
    dst_p = cv2.copyMakeBorder(dst, m, m, m, m, cv2.BORDER_REFLECT_101)
    binary = cv2.copyMakeBorder((alpha > 0.01).astype(np.uint8) * 255, m, m, m, m, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(binary)
    if w < 3 or h < 3:
        return src
    # seamlessClone centres the mask's bounding box on this point: put it back where it was.
    out = cv2.seamlessClone(src_p, dst_p, binary, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return out[m:-m, m:-m]


def paste_back_all(
    photo: Image.Image,
    items: Iterable[tuple[AlignedFace, Image.Image]],
    *,
    feather: float = 0.1,
    forehead: float = 0.45,
    blend: str = "alpha",
) -> Image.Image:
    """Paste several edited faces into one photo; each pair is (aligned, edited_crop).

    Faces are pasted in the order given (later ones win where masks overlap).
    """
    out = photo
    for aligned, edited in items:
        out = paste_back(out, aligned, edited, feather=feather, forehead=forehead, blend=blend)
    return out if out is not photo else photo.copy()
