"""Grey hair for the age edit: where a face's hair is (GrabCut from landmarks), and greying it in the photo.

Age prototypes cannot grey hair: their groups' means differ round the head by the photos' backgrounds as much as by
hair, so their lightness change stops at the hairline. Here the hair is found in the photo itself:

- seeds: above the forehead, the pixels whose colour is far from the face's own skin (a bald head or a skin-tone
  fringe gives too few, and nothing is greyed);
- GrabCut (OpenCV's graph cut on colour models) grows them inside the head's outline, with the skin and the neck
  and clothes below the chin as background; only what is connected to the seeds is kept, or borders the face in
  the seeds' colour;
- a vertical fade: full from the nose up, gone just below the chin (long hair below it is not told from clothes).

`grey_hair` then lifts the hair's lightness towards silver (keeping its strands' contrast) and takes out its colour.
Nothing but the hair's box is touched; the skin never is.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import cv2
import numpy as np

from faceapp.align.detect import BROWS
from faceapp.align.paste import face_hull, head_hull

__all__ = ["hair_mask", "grey_hair", "SILVER_L"]

#: CIELAB lightness grey hair is lifted to (the hair's median; its strands keep their spread around it).
SILVER_L = 72.0
#: Strand contrast kept around SILVER_L (>1: light strands whiter than dark ones, salt and pepper, not a dye).
STRAND_CONTRAST = 1.3
#: A face is treated as having no hair above the forehead below this share of colour-distinct seed pixels.
MIN_SEED_SHARE = 0.15
#: Seeds differ from the face's median skin colour by more than this (CIE76 ΔE).
SEED_DELTA_E = 20.0
#: GrabCut runs with the brow-to-chin distance at about this many pixels (cost does not grow with the photo).
WORK_FACE = 90.0


def _poly(hull: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(hull).astype(np.int32)], 1)
    return m.astype(bool)


def _box(lm: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    hull = head_hull(lm, top=1.8, widen=2.0, neck=1.0)
    x0, y0 = np.maximum(np.floor(hull.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(hull.max(0)).astype(int) + 1, [w, h])
    return int(x0), int(y0), int(x1), int(y1)


#: Recent masks by (box pixels, landmarks) digest: an aging timeline's frames share one photo and one face, and
#: GrabCut is the costly step (~0.2 s for a face in a 512 px photo). Only masks are kept, never pixels.
_CACHE: OrderedDict[bytes, np.ndarray] = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def hair_mask(rgb: np.ndarray, landmarks68: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Where the face's hair is: (float32 [y1-y0, x1-x0] weights in [0, 1], (x0, y0, x1, y1) box in `rgb`).

    rgb: uint8 [H, W, 3]; landmarks68: [68, 2] photo pixels. All zeros where no hair is found above the forehead.
    The same photo and face give the same mask (GrabCut is seeded), so recent ones are reused.
    """
    lm = np.asarray(landmarks68, np.float64)
    h, w = rgb.shape[:2]
    box = _box(lm, w, h)
    x0, y0, x1, y1 = box
    key = hashlib.blake2b(np.ascontiguousarray(rgb[y0:y1, x0:x1]).tobytes() + lm.tobytes() + str(box).encode(),
                          digest_size=16).digest()
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key].copy(), box
    mask = _hair_mask(rgb, lm, box)
    with _CACHE_LOCK:
        _CACHE[key] = mask
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return mask.copy(), box


def _hair_mask(rgb: np.ndarray, lm: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """`hair_mask`'s work, uncached: the mask in `box`."""
    x0, y0, x1, y1 = box
    out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.float32)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return out
    up = lm[BROWS].mean(0) - lm[8]
    k = min(1.0, WORK_FACE / max(float(np.hypot(*up)), 1e-6))  # work scale
    roi = rgb[y0:y1, x0:x1]
    small = cv2.resize(roi, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else roi.copy()
    sh = small.shape[:2]
    p = (lm - [x0, y0]) * [small.shape[1] / (x1 - x0), small.shape[0] / (y1 - y0)]
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)

    skin = _poly(face_hull(p, forehead=0.1), sh)
    inner = cv2.erode(skin.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if inner.sum() < 16:
        return out
    skin_lab = np.median(lab[inner], 0)
    strip = _poly(face_hull(p, forehead=0.8), sh) & ~_poly(face_hull(p, forehead=0.5), sh)
    seeds = strip & (np.linalg.norm(lab - skin_lab, axis=-1) > SEED_DELTA_E)
    if strip.sum() == 0 or seeds.sum() < MIN_SEED_SHARE * strip.sum():
        return out

    # the face's frame: u towards the crown; levels in brow-to-chin units from the brows (0) to the chin (-1)
    length = max(float(np.hypot(*(p[BROWS].mean(0) - p[8]))), 1e-6)
    u = (p[BROWS].mean(0) - p[8]) / length
    ys, xs = np.mgrid[0 : sh[0], 0 : sh[1]].astype(np.float64)
    level = ((xs - p[BROWS].mean(0)[0]) * u[0] + (ys - p[BROWS].mean(0)[1]) * u[1]) / length
    mouth_level = float((p[62] - p[BROWS].mean(0)) @ u) / length

    mask = np.full(sh, cv2.GC_PR_BGD, np.uint8)
    mask[_poly(head_hull(p, top=1.4, widen=1.7, neck=0.0), sh) & (level > mouth_level)] = cv2.GC_PR_FGD
    # neck and clothes: below the chin, between the jaw's sides (long hair hangs beside them, not there)
    side = np.array([-u[1], u[0]])
    lateral = np.abs((xs - p[8][0]) * side[0] + (ys - p[8][1]) * side[1])
    mask[(level < -1.05) & (lateral < 0.4 * float(np.hypot(*(p[16] - p[0]))))] = cv2.GC_BGD
    mask[~_poly(head_hull(p, top=1.5, widen=1.85, neck=1.0), sh)] = cv2.GC_BGD  # the backdrop round the head
    mask[skin] = cv2.GC_BGD
    mask[seeds] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models' k-means from OpenCV's (per-thread) RNG: same photo, same hair
    try:
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), mask, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a colour model that cannot be fitted (e.g. a flat image): no hair found
        return out
    hair = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    # only what is connected to the seeds: a dark patch of background elsewhere is not hair
    n, labels = cv2.connectedComponents(hair, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[seeds & (hair > 0)])] = True
    # ...or that borders the face with the seeds' colour (hair on the far side, cut off from them by the frame)
    ring = cv2.dilate(skin.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~skin
    seed_lab = np.median(lab[seeds], 0)
    for i in np.unique(labels[ring & (hair > 0)]):
        part = labels == i
        if not keep[i] and part.sum() >= 0.2 * seeds.sum():
            keep[i] = np.linalg.norm(np.median(lab[part], 0) - seed_lab) < SEED_DELTA_E
    keep[0] = False
    soft = keep[labels].astype(np.float32)
    fade = np.clip((level + 1.1) / 0.6, 0.0, 1.0)  # 1 from the nose up, 0 just below the chin
    soft = cv2.GaussianBlur(soft * (fade * fade * (3 - 2 * fade)).astype(np.float32), (0, 0), 1.2)
    soft[skin] = 0.0
    if soft.shape != out.shape:
        soft = cv2.resize(soft, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(soft, 0.0, 1.0)


def grey_hair(rgb: np.ndarray, mask: np.ndarray, amount: float) -> np.ndarray:
    """`rgb` (float32 [H, W, 3] in [0, 1]) with the hair in `mask` ([H, W] weights) greyed by `amount` in [0, 1].

    Lightness moves towards SILVER_L (never darker than it was), strands keeping STRAND_CONTRAST x their spread;
    chroma falls by `amount`. A greyscale photo stays greyscale (only lightness and a zero chroma are touched).
    """
    g = float(np.clip(amount, 0.0, 1.0)) * mask
    core = mask > 0.5
    if g.max() <= 0 or not core.any():
        return rgb
    lab = cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)
    light = lab[..., 0]
    median = float(np.median(light[core]))
    silver = max(SILVER_L, median) + (light - median) * STRAND_CONTRAST
    lab[..., 0] = light + g * (np.maximum(silver, light) - light)
    lab[..., 1:] *= (1.0 - g)[..., None]
    return np.where((g > 0)[..., None], cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), rgb)  # no float error elsewhere
