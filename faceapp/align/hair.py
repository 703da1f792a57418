"""Grey hair for the age edit: where a face's hair is (GrabCut from landmarks), and greying it in the photo.

Age prototypes cannot grey hair: their groups' means differ round the head by the photos' backgrounds as much as by
hair, so their lightness change stops at the hairline. Here the hair is found in the photo itself:

- walks out from the forehead over the top and to the sides of the head: where the skin's colours give way is the
  hairline (skin up to the crown: a bald head, nothing greyed there), the hair's colour is read just past it, and
  the hair ends where that colour does: the backdrop beyond short hair (a window, a flag, a curtain) is not hair.
  The hair's colour is the one found over the forehead; a walk to the side that meets another is on a backdrop;
- seeds: the hair just past the hairline. GrabCut (OpenCV's graph cut on colour models) grows them inside the
  head's outline, with the skin and the neck and clothes below the chin as background; only what is connected to
  the seeds is kept, or borders the face in the seeds' colour, within the walks' reach, in the hair's colours,
  and nearer the hair's colour than the skin's;
- the person segmenter (`faceapp.align.person`, MediaPipe's selfie segmentation) draws the head's outline: what
  it calls backdrop is never hair, whatever its colour (a beige wall above blond hair). A crop too tight for the
  walks (the forehead cut by the frame: a close selfie, a dataset's face chip) takes its seeds from it: the person's
  pixels beside and above the face in other colours than the skin's and in hair's own; its hair is the head's
  region outside the face as the segmenter bounds it (no GrabCut). Without the segmenter such a crop gets no grey
  hair. Seeds are always in colours natural hair has (not a red, green or blue wall);
- a vertical fade: full from the nose up, gone just below the chin; with the segmenter, long hair that hangs
  beside the cheeks, jaw and neck (the person's pixels in the hair's colours, connected to the hair above) is kept
  down to just below the chin and fades out above the shoulders, where a top in the hair's colour may begin.

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
from faceapp.align.person import person_mask

__all__ = ["hair_mask", "grey_hair", "SILVER_L"]

#: CIELAB lightness grey hair is lifted to (the hair's median; its strands keep their spread around it).
SILVER_L = 72.0
#: Strand contrast kept around SILVER_L (>1: light strands whiter than dark ones, salt and pepper, not a dye).
STRAND_CONTRAST = 1.3
#: Hair differs from the skin's colour (the face's median, or the forehead's) by more than this (ΔE, SKIN_WEIGHTS).
SEED_DELTA_E = 20.0
#: Hair is looked for along RAYS walks from a centre RAY_CENTRE (brow-to-chin units) above the brows, spread over
#: +-RAY_SPREAD degrees from straight up (90: level with the centre), in steps of HAIRLINE_STEP up to RAY_LENGTH.
#: A walk still on skin at BALD_RADIUS (+ BALD_SIDES x the sine of its angle: a head is wider than it is tall above
#: the centre) finds no hair; a third of those that tell (not those that leave the photo first) must find it. Its
#: seeds are the HAIR_BAND past the hairline; its hair ends where the colour is CROWN_DELTA_E (CIE76) from theirs,
#: two steps in a row, and the mask fades out over CROWN_MARGIN past that; no walk's end is more than CROWN_SPREAD
#: past the median one's. Walks within TOP_SPREAD degrees of straight up give the hair's colour: one that finds
#: another is on a backdrop.
RAYS = 15
RAY_CENTRE = 0.25
RAY_SPREAD = 100.0
RAY_LENGTH = 1.6
HAIRLINE_STEP = 0.025
BALD_RADIUS = 0.65
BALD_SIDES = 0.3
HAIR_BAND = 0.12
CROWN_DELTA_E = 25.0
CROWN_MARGIN = 0.06
CROWN_SPREAD = 0.06
TOP_SPREAD = 45.0
#: Weights of CIELAB's L*, a*, b* in the distance from the skin's colour (chroma counts double).
SKIN_WEIGHTS = np.array([1.0, 2.0, 2.0], np.float32)
#: GrabCut runs with the brow-to-chin distance at about this many pixels (cost does not grow with the photo).
WORK_FACE = 90.0
#: No walk over the forehead (within TOP_SPREAD of straight up) that tells (hair found, or skin up to the crown), or
#: fewer than TELLERS in all: the crop is too tight for them, and the person segmenter's hair is used instead:
#: seeds at least TIGHT_LEVEL (brow-to-chin units; -0.5 is the nose) up.
TELLERS = 3
TIGHT_LEVEL = -0.4
#: The person segmenter's probability below which a pixel is backdrop, and above which it counts in full.
PERSON_LOW, PERSON_HIGH = 0.2, 0.5


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
    person = person_mask(small)  # [h, w] in [0, 1], None without the segmenter
    skin_lab = np.median(lab[inner], 0)
    # the face's frame: u towards the crown; levels in brow-to-chin units from the brows (0) to the chin (-1);
    # across: signed distance from the face's midline in the same unit
    length = max(float(np.hypot(*(p[BROWS].mean(0) - p[8]))), 1e-6)
    u = (p[BROWS].mean(0) - p[8]) / length
    ys, xs = np.mgrid[0 : sh[0], 0 : sh[1]].astype(np.float64)
    level = ((xs - p[BROWS].mean(0)[0]) * u[0] + (ys - p[BROWS].mean(0)[1]) * u[1]) / length
    across = ((xs - p[BROWS].mean(0)[0]) * -u[1] + (ys - p[BROWS].mean(0)[1]) * u[0]) / length
    mouth_level = float((p[62] - p[BROWS].mean(0)) @ u) / length
    brow_ends = sorted(float((p[i] - p[BROWS].mean(0)) @ np.array([-u[1], u[0]])) / length for i in (17, 26))

    # hair is less colourful than skin: dark hair on dark skin differs more in a* and b* than in lightness. The
    # forehead's own colour counts as skin too (a lit forehead is lighter than the face's median), unless it is
    # far from the face's (a fringe)
    def dist(ref):
        return np.linalg.norm((lab - ref) * SKIN_WEIGHTS, axis=-1)

    far_from_skin = dist(skin_lab) > SEED_DELTA_E
    forehead = (across > brow_ends[0]) & (across < brow_ends[1]) & (level > 0.1) & (level < 0.25)
    if forehead.sum() >= 8:
        forehead_lab = np.median(lab[forehead], 0)
        if np.linalg.norm((forehead_lab - skin_lab) * SKIN_WEIGHTS) < 2 * SEED_DELTA_E:
            far_from_skin &= dist(forehead_lab) > SEED_DELTA_E

    # Walks out from the forehead, over the top of the head and to its sides: where the skin gives way is the
    # hairline (skin up to the crown: a bald head there), the hair's colour is read just past it, and the hair
    # ends where that colour does (the backdrop beyond short hair would otherwise count as hair)
    centre = p[BROWS].mean(0) + u * RAY_CENTRE * length
    side = np.array([-u[1], u[0]])
    angles = np.radians(np.linspace(-RAY_SPREAD, RAY_SPREAD, RAYS))
    radii = np.arange(HAIRLINE_STEP, RAY_LENGTH, HAIRLINE_STEP)
    dirs = np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * side  # [RAYS, 2]
    pts = centre + dirs[:, None, :] * radii[None, :, None] * length  # [RAYS, R, 2] work px
    inside = (pts[..., 0] >= 0) & (pts[..., 0] <= sh[1] - 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= sh[0] - 1)
    blurred = cv2.GaussianBlur(lab, (0, 0), 1.0)
    along = cv2.remap(blurred, pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    hairy = cv2.remap(far_from_skin.astype(np.float32), pts[..., 0].astype(np.float32),
                      pts[..., 1].astype(np.float32), cv2.INTER_LINEAR) > 0.5
    band = int(round(HAIR_BAND / HAIRLINE_STEP))
    starts, ends, bald = np.full(RAYS, np.nan), np.full(RAYS, np.nan), np.zeros(RAYS, bool)
    refs = np.full((RAYS, 3), np.nan)
    for i in range(RAYS):
        run, start = 0, None
        for j in range(len(radii)):
            if not inside[i, j]:  # left the photo on skin: this walk cannot tell
                break
            if radii[j] > BALD_RADIUS + BALD_SIDES * abs(np.sin(angles[i])):
                bald[i] = True
                break
            run = run + 1 if hairy[i, j] else 0
            if run == 2:  # two steps in a row: not a forehead line or a shadow
                start = j - 1
                break
        if start is None:
            continue
        stop = min(start + band, len(radii))
        good = inside[i, start:stop]
        if good.sum() < 2:
            continue
        ref = refs[i] = np.median(along[i, start:stop][good], 0)
        end, off = None, 0
        for j in range(stop, len(radii)):
            if not inside[i, j]:  # the photo's edge: the hair goes on past it
                break
            off = off + 1 if np.linalg.norm(along[i, j] - ref) > CROWN_DELTA_E else 0
            if off == 2:
                end = j - 1
                break
        starts[i] = radii[start]
        ends[i] = radii[end] if end is not None else np.inf
    hair_rays = np.isfinite(starts)
    told = hair_rays | bald
    if (not told[np.abs(angles) <= np.radians(TOP_SPREAD)].any() or told.sum() < TELLERS) and person is not None:
        # a tight crop: the frame cuts the forehead, the walks over it left the photo before the hairline (those to
        # the side may have met the backdrop beside the face), so hair is what the person segmenter says is the
        # person, in other colours than the skin's and in a hair's, round the face above the nose
        beside = ~cv2.dilate(skin.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        seeds = (person > 0.5) & far_from_skin & beside & (level > TIGHT_LEVEL) & (_skull(level, across) > 0.5)
        seeds &= _hair_like(lab)
        cap = np.ones(sh, np.float32)
        return _grow(small, lab, p, skin, seeds, skin_lab, level, across, xs, ys, u, mouth_level, cap, person, out,
                     grabcut=False)
    # the hair's colour is the one found over the forehead; a walk to the side that met another colour first met
    # the backdrop beside a short cut, not hair
    top = hair_rays & (np.abs(angles) <= np.radians(TOP_SPREAD))
    if hair_rays.any():  # (too few over the forehead, e.g. a bald crown: the walks' median colour)
        hair_ref = np.median(refs[top if top.sum() >= 3 else hair_rays], 0)
        other = hair_rays & (np.linalg.norm(refs - hair_ref, axis=-1) > CROWN_DELTA_E)
        hair_rays &= ~other
        ends[other] = starts[other]
    if hair_rays.sum() < max(2, (np.isfinite(starts) | bald).sum() // 3):  # a third of the walks that could tell
        return out
    # a head of hair is a dome: a walk that ran on into a backdrop of the hair's colours is held to its
    # neighbours' (a running median of three) and near the median walk's
    finite = np.where(np.isfinite(ends), ends, RAY_LENGTH)
    padded = np.concatenate([finite[:1], finite, finite[-1:]])
    smooth = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), 0)
    limit = float(np.median(finite[hair_rays])) + CROWN_SPREAD
    ends = np.where(hair_rays, np.minimum(np.minimum(finite, smooth), limit), starts)
    # each pixel's place round the centre: rays without hair reach no further than where their skin ended
    rel = np.stack([xs - centre[0], ys - centre[1]], -1) / length
    rad = np.hypot(rel[..., 0], rel[..., 1])
    ang = np.arctan2(rel @ side, rel @ u)
    # (bald walks: nothing past their skin; walks that left the photo on skin: as far as the hair's median walk)
    reach = np.interp(ang, angles, np.where(hair_rays, ends, np.where(bald, 0.0, np.nan_to_num(
        np.where(np.isfinite(starts), starts, np.median(ends[hair_rays])), nan=0.0))))
    within = np.abs(ang) <= angles[-1]
    cap = np.where(within, np.clip((reach + CROWN_MARGIN - rad) / CROWN_MARGIN, 0.0, 1.0), 1.0).astype(np.float32)
    # seeds: the hair just past the hairline on the rays that found it
    seeds = np.zeros(sh, bool)
    seed_r0 = np.interp(ang, angles[hair_rays], starts[hair_rays])
    seeds[within & (rad >= seed_r0) & (rad < seed_r0 + HAIR_BAND) & far_from_skin & (level > 0.1)] = True
    if person is not None:
        seeds &= person > 0.5
    seeds &= _hair_like(lab)
    return _grow(small, lab, p, skin, seeds, skin_lab, level, across, xs, ys, u, mouth_level, cap, person, out)


def _grow(small, lab, p, skin, seeds, skin_lab, level, across, xs, ys, u, mouth_level, cap, person, out, *,
          grabcut: bool = True):
    """`_hair_mask`'s last step: GrabCut grows the hair's `seeds` ([h, w] bool, work scale) within the head, kept to
    the seeds' colours, the skull, `cap` (the walks' reach) and, where known, the `person` segmenter's mask; the
    mask (`out`'s shape) it returns fades out from the nose to the chin. grabcut=False (a tight crop, where the
    segmenter draws the head's outline): the head's region outside the face, as the segmenter bounds it, instead of
    GrabCut's (whose colour models take light brown hair beside tanned skin for skin)."""
    sh = seeds.shape
    if seeds.sum() < 8:
        return out
    gate = _colour_gate(lab, seeds)
    seeds &= gate > 0.5
    if not seeds.any():
        return out

    mask = np.full(sh, cv2.GC_PR_BGD, np.uint8)
    mask[_poly(head_hull(p, top=1.4, widen=1.7, neck=0.0), sh) & (level > mouth_level)] = cv2.GC_PR_FGD
    # neck and clothes: below the chin, between the jaw's sides (long hair hangs beside them, not there)
    side = np.array([-u[1], u[0]])
    lateral = np.abs((xs - p[8][0]) * side[0] + (ys - p[8][1]) * side[1])
    mask[(level < -1.05) & (lateral < 0.4 * float(np.hypot(*(p[16] - p[0]))))] = cv2.GC_BGD
    mask[~_poly(head_hull(p, top=1.5, widen=1.85, neck=1.0), sh)] = cv2.GC_BGD  # the backdrop round the head
    mask[skin] = cv2.GC_BGD
    if person is not None:
        mask[person < PERSON_LOW] = cv2.GC_BGD
    mask[seeds] = cv2.GC_FGD
    if grabcut:
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        # GrabCut seeds its colour models' k-means from OpenCV's (per-thread) RNG: same photo, same hair
        cv2.setRNGSeed(0)
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
    # GrabCut's colour models reach into a backdrop that touches the hair (a curtain, a window, a flag): keep what
    # is in the hair's own colours (the seeds' spread, per CIELAB channel) and within a skull's reach of the face
    soft *= gate * _skull(level, across) * cap
    if person is not None:  # the backdrop in the hair's colours (a beige wall behind blond hair) is not the person
        soft *= np.clip((person - PERSON_LOW) / (PERSON_HIGH - PERSON_LOW), 0.0, 1.0)
    # never what is nearer the skin's colour than the hair's (a bald crown, an ear, the neck)
    hair_lab = np.median(lab[seeds], 0)
    hairish = np.linalg.norm(lab - hair_lab, axis=-1) < 1.5 * np.linalg.norm(lab - skin_lab, axis=-1)
    soft *= hairish
    soft = soft * _smoothstep((level + 1.1) / 0.6)  # 1 from the nose up, 0 just below the chin
    if person is not None:  # long hair hanging beside the cheeks, jaw and neck (the segmenter bounds it)
        neck = (level < -0.9) & (lateral < 0.4 * float(np.hypot(*(p[16] - p[0]))))
        soft = np.maximum(soft, _hanging(soft, lab, gate, person, skin, hairish & ~neck, level, across))
    soft = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), 1.2)
    soft[skin] = 0.0
    if soft.shape != out.shape:
        soft = cv2.resize(soft, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(soft, 0.0, 1.0)


#: Long hair below the nose (with the person segmenter only): hair's pixels beside the face, connected to the hair
#: found above, kept in full down to HANG_LEVELS[0] and gone at HANG_LEVELS[1] (brow-to-chin units below the brows:
#: the chin is -1; the shoulders, where clothes begin, lie lower), no further than HANG_ACROSS from the midline.
HANG_LEVELS = (-1.15, -1.5)
HANG_ACROSS = 1.25


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


def _hanging(hair: np.ndarray, lab: np.ndarray, gate: np.ndarray, person: np.ndarray, skin: np.ndarray,
             allowed: np.ndarray, level: np.ndarray, across: np.ndarray) -> np.ndarray:
    """[H, W] weights of the long hair that hangs below the nose: pixels the segmenter calls the person, in the hair's
    colours (`gate`, hair's own, `allowed`), outside the face, within HANG_ACROSS of the midline and above
    HANG_LEVELS[1], that are connected to the hair found above (`hair` > 0.5). A dark top below the hair is
    reached only past the fade's end."""
    core = hair > 0.5
    if not core.any():
        return np.zeros_like(hair)
    face = cv2.dilate(skin.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    cand = ((person > PERSON_HIGH) & (gate > 0.5) & _hair_like(lab) & allowed & ~face & (level < 0.0)
            & (level > HANG_LEVELS[1]) & (np.abs(across) < HANG_ACROSS))
    n, labels = cv2.connectedComponents((cand | core).astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[core])] = True
    keep[0] = False
    return (keep[labels] & cand) * _smoothstep((level - HANG_LEVELS[1]) / (HANG_LEVELS[0] - HANG_LEVELS[1]))


#: Hair is kept within this many of the seeds' robust spreads (per CIELAB channel) of their median colour.
HAIR_COLOUR_SPREAD = 3.5
#: ...each at least this (L*, a*, b*): a head of hair is lit unevenly (shadowed locks are darker, not another hue).
HAIR_SPREAD_FLOOR = (12.0, 4.0, 4.0)
#: ...and within an ellipse round the skull, in brow-to-chin units: its centre this far above the brows, its
#: half-height and half-width (big hair reaches ~1 unit above the brows and ~0.9 beside the midline).
SKULL = (0.05, 1.05, 1.0)


#: Hair's own colours (CIELAB): any hue up to HAIR_NEUTRAL chroma (black, grey, white); else hues between HAIR_HUES
#: degrees (auburn to ash blond), up to HAIR_MAX_CHROMA. A red, pink, green or blue backdrop is none of them.
HAIR_NEUTRAL = 12.0
HAIR_HUES = (25.0, 105.0)
HAIR_MAX_CHROMA = 60.0


def _hair_like(lab: np.ndarray) -> np.ndarray:
    """[H, W] bool: whether each pixel's CIELAB colour (`lab` [H, W, 3]) is one natural hair has."""
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1]))
    return (chroma <= HAIR_NEUTRAL) | ((hue >= HAIR_HUES[0]) & (hue <= HAIR_HUES[1]) & (chroma <= HAIR_MAX_CHROMA))


def _colour_gate(lab: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1]: how far each pixel's CIELAB colour is within the seeds' (1 inside HAIR_COLOUR_SPREAD robust
    spreads of their median, fading to 0 at 1.5 x that)."""
    px = lab[seeds]
    med = np.median(px, 0)
    spread = np.maximum(1.4826 * np.median(np.abs(px - med), 0), HAIR_SPREAD_FLOOR)  # MAD -> sigma, with a floor
    d = np.sqrt((((lab - med) / spread) ** 2).sum(-1))
    return np.clip((1.5 * HAIR_COLOUR_SPREAD - d) / (0.5 * HAIR_COLOUR_SPREAD), 0.0, 1.0).astype(np.float32)


def _skull(level: np.ndarray, across: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1]: 1 inside the SKULL ellipse (face-frame levels and across, brow-to-chin units), fading out
    over a tenth of it."""
    up, half_h, half_w = SKULL
    r = np.sqrt(((level - up) / half_h) ** 2 + (across / half_w) ** 2)
    return np.clip((1.1 - r) / 0.1, 0.0, 1.0).astype(np.float32)


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
