"""Aging at the photo's own resolution from age prototypes (shape + texture), after Burt & Perrett (1995) and
Tiddeman, Burt & Perrett (2001).

An `AgePrototypes` file holds, in one eye-aligned canonical frame of `size` px, what separates a group of older
faces from a group of younger ones (made by training/age_prototypes.py from labelled photos):

- the mean 68-landmark shape of each group (the older face's sagging jaw, lower brows, thinner lips);
- the mean CIELAB image of each group, every face warped to one shared mean shape first (folds, eye bags,
  greying at the hairline line up and survive the average);
- per band of a difference-of-Gaussians pyramid of lightness, the mean local energy of each group (wrinkles: where
  and how much fine structure older skin has; an average image blurs them away, their energy does not).

`AgePrototypes.apply(photo, landmarks68, t)` moves a face by `t` times that difference (t = 1: from the younger
group's mean to the older one's; t < 0 makes it younger), in the photo itself:

1. shape: the photo's pixels are moved as the landmarks move (one piecewise-affine warp, only inside the head;
   aging never shrinks a triangle of the landmarks' mesh past FOLD_FLOOR, so the warp never folds the photo);
2. lightness: the prototypes' lightness difference is added on the face, with its local mean taken out on the skin
   (folds and shading, no tan or pallor), but not inside the eyes' openings (the person's own irises); a turned
   face's far side gets less of it and of the shape change (`_near_side`);
3. detail: each band of the photo's own lightness, at the photo's resolution, is scaled by the prototypes'
   energy ratio (older: the person's own lines deepen, never past GAIN_CAP x the older group's energy over a
   region, nor any one spot much past LINE_PEAK x its lines there; younger: they smooth out);
4. colour: chroma is only ever scaled down (greying hair and brows), never on the skin, so the person keeps their
   skin tone and a greyscale photo stays greyscale;
5. hair (older only): the hair found round the face (`faceapp.align.hair`) turns silver, more the older the edit;
6. lines (older only): where the skin has less fine-line energy than the older group's even after step 3 (smooth,
   young or blurred skin), new fine lines are drawn along the older mean face's own fold directions (forehead
   lines, nasolabial folds, arcs under the eyes), at the photo's resolution.

A face too big for the canonical frame (a baby's cheeks, a close turned head) is drawn smaller in it (`fit_zoom`):
past the frame's edge the mesh would fold and show a seam. Nothing but the face's box is touched, so a 12 MP photo
costs what its face costs. A bundle may give each face its
own multiples of t for the parts of the change (`apply(scales=...)`, `faceapp.bundle.ModelBundle.age_scales`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from faceapp.errors import CheckpointError

__all__ = ["PROTOTYPE_FORMAT", "AgePrototypes"]

PROTOTYPE_FORMAT = "faceapp.age_prototypes"
#: Canonical frame: the eye centres' positions as fractions of the side (the labelers' eye-aligned frame).
CANON_EYES = ((0.35, 0.40), (0.65, 0.40))
_SHAPES = ("mean_shape", "young_shape", "old_shape")
#: On the skin the prototypes' lightness difference loses its local mean over this fraction of the frame.
LIGHT_SIGMA = 1 / 16
#: The shape warp's displacement is smoothed over this fraction of the frame: no kink where triangles meet (a
#: face in profile folds its far-side triangles).
SHAPE_SIGMA = 1 / 48
#: Younger (t < 0) moves the shape only this share of the way: past the younger group's mean, the reversed aging
#: vector is a caricature (big eyes, a small chin), not a younger face.
YOUNGER_SHAPE = 0.5
#: Younger (t < 0) adds this share of the reversed lightness difference. Reversed, it also darkens brows and lashes
#: (like make-up) and pales the chin a little; at 0.5, faces aged 40+ read −10.6 years instead of −13.7.
YOUNGER_LIGHT = 1.0
#: Hair greying at full strength (0: none, 1: silver with no colour left), reached at t = HAIR_FULL_T and growing
#: as (t / HAIR_FULL_T) ** 1.5 before it: a timeline greys gradually, at the temples' pace rather than at once.
HAIR_GREY = 0.85
HAIR_FULL_T = 1.5
#: Older (t > 0): where the older group's skin has more fine-line energy than the photo's skin keeps after its own
#: lines are deepened (smooth, young or blurred skin), new lines are drawn: band-limited noise stretched along the
#: older prototype's own fold directions, this share of the missing energy at t = WRINKLE_FULL_T (growing with t).
WRINKLES = 1.5
WRINKLE_FULL_T = 1.75
#: Older: a band's gain never takes the skin's own line energy past this multiple of the older group's (0: no cap);
#: an age profile's 'cap' part multiplies it (faces that look old: their lines are already the older group's).
GAIN_CAP = 2.0
#: ... in the bands finer than this (canonical px sigma): lines and pores. The coarse band's folds and shading, let
#: past the cap too, turned a nasolabial shadow into a black gash and a cheek's uneven tone into dark blotches.
CAP_SIGMA_MAX = 2.0
#: Older: at any one pixel a band adds at most about this multiple of the older group's line energy there (tanh).
#: The cap above is on a region's energy and let single spots through: at the old faces' 3x gain a young fold's
#: smooth edge turned into a black gash beside the nose, and a blotchy cheek's uneven tone into dark smudges.
LINE_PEAK = 1.0
#: ... in bands finer than FINEST_SIGMA (canonical px): pores and fine crinkles, which carry most of an old face's
#: added years (the estimator's +13.5 years at 2 on training faces of 47+ against +12.1 at 1) and are thin.
LINE_PEAK_FINEST = 2.0
FINEST_SIGMA = 1.0
#: Drawn lines where the older prototype's folds have no clear direction (round noise: pores and spots) get only this
#: share of the amplitude that lines along a clear fold get: at 1, smooth or blurred skin came back crazed like
#: dried mud, a net of light and dark cracks over the cheeks (and a pale patch on a brightly lit one).
WRINKLE_ROUND = 0.3
#: The drawn lines' length along their direction, in units of their band's width.
WRINKLE_STRETCH = 3.0


def eye_similarity(lm68: np.ndarray, size: float) -> np.ndarray:
    """2x3 similarity mapping photo pixels to the canonical frame of side `size` (eye centres onto CANON_EYES)."""
    lm = np.asarray(lm68, np.float64)
    src = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    dst = np.asarray(CANON_EYES) * size
    a = complex(*(dst[1] - dst[0])) / complex(*(src[1] - src[0]))  # rotation and scale as one complex factor
    t = complex(*dst[0]) - a * complex(*src[0])
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])


def _border(size: int) -> np.ndarray:
    """Fixed points on the frame's edge, [8, 2]: the warp is the identity there."""
    e, h = size - 1, (size - 1) / 2
    return np.array([[0, 0], [e, 0], [0, e], [e, e], [h, 0], [0, h], [e, h], [h, e]], np.float64)


def _piecewise_map(dst_pts: np.ndarray, src_pts: np.ndarray, size: int, step: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps [size, size] (float32 x, y) taking each pixel of the `dst_pts` geometry to `src_pts`'.

    The map is piecewise affine over the Delaunay triangles of the points (plus fixed points on the frame's edge):
    SciPy's piecewise-linear interpolation of the source positions, evaluated every `step` px and enlarged
    bilinearly (exact, since the map is linear inside each triangle but for the few pixels on a triangle's edge).
    """
    return _piecewise_maps(dst_pts, [src_pts], size, step)[0]


def _piecewise_maps(dst_pts: np.ndarray, srcs: list[np.ndarray], size: int,
                    step: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """`_piecewise_map(dst_pts, src, ...)` for each src of `srcs` ([68, 2] each), with one triangulation and one
    interpolation pass for all (the same triangles: the same maps, at a fraction of the cost)."""
    from scipy.interpolate import LinearNDInterpolator

    border = _border(size)
    values = np.concatenate([np.vstack([np.asarray(src, np.float64), border]) for src in srcs], axis=1)
    interp = LinearNDInterpolator(np.vstack([dst_pts, border]), values)
    n = (size - 1) // step + 2
    coarse = np.arange(n, dtype=np.float64) * step
    gx, gy = np.meshgrid(np.clip(coarse, 0, size - 1), np.clip(coarse, 0, size - 1))
    grid = np.stack([gx, gy], -1)
    allsrc = interp(gx, gy)  # [n, n, 2 * len(srcs)]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for k in range(len(srcs)):
        src = allsrc[..., 2 * k:2 * k + 2]
        bad = ~np.isfinite(src).all(-1)  # outside the hull (cannot happen inside the border points, but be safe)
        src[bad] = grid[bad]
        disp = (src - grid).astype(np.float32)
        # enlarge the displacement (not the positions): pixel i of the full grid is coarse index i / step
        dx = cv2.remap(disp[..., 0], xs / step, ys / step, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        dy = cv2.remap(disp[..., 1], xs / step, ys / step, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append((xs + dx, ys + dy))
    return out


@dataclass(frozen=True)
class AgePrototypes:
    """What separates older faces from younger ones, in a canonical frame of `size` px (see the module doc).

    mean_shape, young_shape, old_shape: [68, 2] landmarks in canonical pixels. young_lab, old_lab: [size, size, 3]
    mean CIELAB images (L 0..100) in mean_shape's geometry. young_energy, old_energy: [K, size, size] mean local
    energy of each lightness band (`sigmas`: the K bands' inner Gaussian sigmas in canonical pixels; a band is
    G(sigma) - G(2 sigma)). meta: groups, counts, sources.
    """

    size: int
    mean_shape: np.ndarray = field(repr=False)
    young_shape: np.ndarray = field(repr=False)
    old_shape: np.ndarray = field(repr=False)
    young_lab: np.ndarray = field(repr=False)
    old_lab: np.ndarray = field(repr=False)
    young_energy: np.ndarray = field(repr=False)
    old_energy: np.ndarray = field(repr=False)
    sigmas: tuple[float, ...] = (0.7, 1.5, 3.0)
    meta: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        s, k = int(self.size), len(self.sigmas)
        want = {"mean_shape": (68, 2), "young_shape": (68, 2), "old_shape": (68, 2), "young_lab": (s, s, 3),
                "old_lab": (s, s, 3), "young_energy": (k, s, s), "old_energy": (k, s, s)}
        for name, shape in want.items():
            a = np.asarray(getattr(self, name), np.float32)
            if a.shape != shape:
                raise CheckpointError(f"age prototypes: {name} has shape {a.shape}, expected {shape}")
            if not np.isfinite(a).all():
                raise CheckpointError(f"age prototypes: {name} holds non-finite values")
            object.__setattr__(self, name, a)
        if s < 32 or k == 0 or any(not 0 < x < s / 4 for x in self.sigmas):
            raise CheckpointError(f"age prototypes: size {s} / band sigmas {self.sigmas} out of range")

    # ------------------------------------------------------------------ storage

    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors file (float16 images, float32 shapes) with the metadata as JSON."""
        from safetensors.numpy import save_file

        tensors = {n: getattr(self, n).astype(np.float32) for n in _SHAPES}
        for n in ("young_lab", "old_lab", "young_energy", "old_energy"):
            tensors[n] = getattr(self, n).astype(np.float16)
        meta = {"format": PROTOTYPE_FORMAT, "size": str(self.size), "sigmas": json.dumps(list(self.sigmas)),
                "meta": json.dumps(self.meta)}
        save_file(tensors, os.fspath(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AgePrototypes:
        """Read a file written by `save` (only tensors and JSON: nothing in it is executed)."""
        from safetensors import SafetensorError, safe_open

        if not os.path.isfile(path):
            raise CheckpointError(f"age prototypes not found: {path} (make them with python -m "
                                  "training.age_prototypes)")
        try:
            with safe_open(os.fspath(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != PROTOTYPE_FORMAT:
                    raise CheckpointError(f"{path} is not an age prototypes file (format {meta.get('format')!r})")
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            size, sigmas, extra = int(meta["size"]), tuple(json.loads(meta["sigmas"])), json.loads(meta["meta"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: not a readable age prototypes file ({e})") from e
        missing = [n for n in (*_SHAPES, "young_lab", "old_lab", "young_energy", "old_energy") if n not in arrays]
        if missing:
            raise CheckpointError(f"{path}: age prototypes lack {', '.join(missing)}")
        return cls(size=size, sigmas=tuple(float(x) for x in sigmas), meta=extra,
                   **{n: arrays[n] for n in (*_SHAPES, "young_lab", "old_lab", "young_energy", "old_energy")})

    # ------------------------------------------------------------------ the edit

    def progress(self, lm_canon: np.ndarray) -> float:
        """Where a face's shape lies between the groups' mean shapes (0: the first group's, 1: the second's), its
        landmarks' offset from the first projected on the groups' difference (canonical px, [68, 2])."""
        d = (self.old_shape - self.young_shape).astype(np.float64)
        return float(((np.asarray(lm_canon, np.float64) - self.young_shape) * d).sum() / max((d * d).sum(), 1e-9))

    def effective_t(self, lm_canon: np.ndarray, t: float) -> float:
        """t, or with meta 'saturate' = S (smile prototypes) at most what takes the face to S x the second group's
        difference: a face already smiling smiles a little more, not twice as wide; t < 0 at most to
        -'saturate_below' (default 0.2): a smile fades to neutral, a neutral face barely changes."""
        cap = self.meta.get("saturate")
        if cap is None or t == 0:
            return t
        if t < 0:  # back towards the first group, and at most `floor` past it (a smile fades; no frown drawn)
            floor = -float(self.meta.get("saturate_below", 0.2))
            return float(max(t, min(floor - self.progress(lm_canon), 0.0)))
        return float(min(t, max(float(cap) - self.progress(lm_canon), 0.0)))

    def fields(self, lm_canon: np.ndarray, t: float, scales: dict | None = None,
               zoom: float = 1.0) -> dict[str, np.ndarray]:
        """The edit in the canonical frame for a face with landmarks `lm_canon` [68, 2] (canonical px), strength t.

        zoom < 1 (`fit_zoom`): the face is drawn that much smaller about the frame's centre, so that a face too big
        for the frame (a baby's, a close turned head) keeps its landmarks inside it; the maps are in that geometry.
        Returns float32 [size, size] maps in the aged face's geometry: 'map_x', 'map_y' (where each pixel comes
        from in the face before the edit), 'light' (lightness to add), 'gain0'.. (each band's gain) and 'chroma'
        (chroma factor <= 1); plus 'skin' (the face's skin region, for reference).
        """
        from faceapp.align.paste import _feathered_polygon, face_hull

        s = self.size
        t = self.effective_t(np.asarray(lm_canon, np.float64), t)  # measured at the prototypes' own scale
        lm = _zoomed(np.asarray(lm_canon, np.float64), s, zoom)
        # a turned face: its near side gets the whole (frontal) shape and lightness change, its far side less
        near = _near_side(lm, s)
        # older only: each part of the change may move by its own multiple of t (a face's age profile)
        sc = {k: float(v) for k, v in (scales or {}).items()} if t > 0 else {}
        back_shape = float(self.meta.get("negative_shape", YOUNGER_SHAPE))  # t < 0: the share of shape change
        at_lm = cv2.remap(near, lm[:, 0:1].astype(np.float32), lm[:, 1:2].astype(np.float32), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)  # [68, 1]: the weight at each landmark
        target = lm + t * (sc.get("shape", 1.0) if t > 0 else back_shape) * at_lm * zoom * (self.old_shape -
                                                                                            self.young_shape)
        if self.meta.get("kind") != "smile":  # a smile's lips part and stretch: that is the edit, not a fold
            target = _without_folds(lm, target, s)
        # where each aged pixel comes from in the face, and in the prototypes' mean shape: one triangulation
        (map_x, map_y), (px, py) = _piecewise_maps(target, [lm, self.mean_shape], s)
        gx, gy = _grid(s)
        window = _window(s)  # every change fades out before the frame's edge: no seam where it ends
        map_x = gx + window * cv2.GaussianBlur(map_x - gx, (0, 0), s * SHAPE_SIGMA * zoom)
        map_y = gy + window * cv2.GaussianBlur(map_y - gy, (0, 0), s * SHAPE_SIGMA * zoom)

        def proto(a):
            return cv2.remap(np.ascontiguousarray(a), px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        young, old = proto(self.young_lab), proto(self.old_lab)
        skin = _feathered_polygon(face_hull(target, forehead=0.25), s, 0.15)
        # smile prototypes: the inside of the lips is not skin (teeth the smile shows there are lighter and lose the
        # lips' red); age prototypes keep the lips' inside with the skin, as they were tuned
        mouth = _feathered_polygon(target[60:68], s, 0.15) if self.meta.get("kind") == "smile" else np.zeros_like(skin)
        skin = skin * (1.0 - mouth)
        d_light = old[..., 0] - young[..., 0]
        hair_zones = None
        # folds and shading, not tone: on the skin the local mean goes, and what is left averages to zero there
        d_light = d_light - skin * cv2.GaussianBlur(d_light, (0, 0), s * LIGHT_SIGMA * zoom)
        d_light = d_light - skin * (float((d_light * skin).sum()) / max(float(skin.sum()), 1e-6))
        if self.meta.get("kind") != "smile":
            # the eyes' openings hold the person's own irises: the groups' mean there averages irises, whites and
            # lids of eyes open by different amounts (a child's big irises against an adult's whites), and added
            # to a photo it clouds the iris pale grey. The lids, bags and folds round the eyes keep the change.
            d_light = d_light * (1.0 - _eye_openings(target, s))
            if t < 0:
                # younger: the groups' means differ at the brows and round the mouth by facial hair (young men's
                # dark moustaches, stubble and brows, old ones' grey), and reversed that paints a dark moustache on
                # every face and marker-thick brows. There the face keeps its own hair: the lightness darkens at most
                # as the skin round it does (the zone's value read from its surroundings), and no band gain passes 1
                # (below).
                hair_zones = _hair_zones(target, s)
                out_zone = 1.0 - hair_zones
                sigma = s / 16
                around = (cv2.GaussianBlur(d_light * out_zone, (0, 0), sigma)
                          / np.maximum(cv2.GaussianBlur(out_zone, (0, 0), sigma), 1e-3))
                d_light = d_light - hair_zones * np.maximum(d_light - around, 0.0)
                # the lids round the eyes: the young group's mean has its women's eyeliner and mascara, which
                # reversed drew dark rims round every face's eyes (a median 9 L darker than its cheeks). There the
                # change only lightens (fewer shadows under the eyes), and the lashes are not sharpened (below)
                rims = _eye_openings(target, s, grow=EYE_RIM_GROW, feather=0.15)
                d_light = d_light - rims * np.maximum(d_light, 0.0)
                hair_zones = np.maximum(hair_zones, rims)
        # lightness only on the face: around it the groups' means differ by their photos' backgrounds and hair
        # (lighter in older people's photos), which would draw a light rim round the head, not age
        face = _feathered_polygon(face_hull(target, forehead=0.45), s, 0.2)
        light_t = t * sc.get("light", 1.0) if t > 0 else t * YOUNGER_LIGHT
        # meta 'skin_light' (smile prototypes): the share of the lightness change outside the lips' inside; the
        # smilers' mean folds, added whole, read as grey smudges beside a pale face's nose
        share = float(self.meta.get("skin_light", 1.0))
        d_light = d_light * (mouth + (1.0 - mouth) * share)
        out = {"map_x": map_x, "map_y": map_y, "light": (light_t * d_light * near * window * face).astype(np.float32),
               "skin": skin}
        eps = 0.05  # energy floor (L units): a flat region must not get an enormous gain
        for k in range(len(self.sigmas)):
            ratio = (proto(self.old_energy[k]) + eps) / (proto(self.young_energy[k]) + eps)
            gain = np.clip(ratio, 0.25, 4.0) ** (t * sc.get("gain", 1.0))
            if hair_zones is not None:  # younger: the brows and a moustache are not sharpened into marker strokes
                gain = gain - hair_zones * np.maximum(gain - 1.0, 0.0)
            out[f"gain{k}"] = 1.0 + window * (gain - 1.0)
        if t > 0 and self.meta.get("kind") != "smile":  # aging only: drawn lines and the gains' cap
            out.update(self._wrinkle_fields(old[..., 0], target, proto, window * near))
        c_young, c_old = np.hypot(young[..., 1], young[..., 2]), np.hypot(old[..., 1], old[..., 2])
        ratio = (c_old + 4.0) / (c_young + 4.0)
        ratio = (mouth * cv2.GaussianBlur(ratio, (0, 0), s / 96)
                 + (1.0 - mouth) * cv2.GaussianBlur(ratio, (0, 0), s / 16))
        # meta 'mouth_chroma_power' (smile prototypes): teeth lose the lips' red faster than the mean image says
        power = 1.0 + mouth * (float(self.meta.get("mouth_chroma_power", 1.0)) - 1.0)
        # the colour that fades with age (lips, brows) follows the greying's multiple ('hair': 0 for a child)
        factor = np.minimum(ratio, 1.0) ** (max(t, 0.0) * power * sc.get("hair", 1.0))
        out["chroma"] = (1.0 - window * (1.0 - factor) * (1.0 - skin)).astype(np.float32)
        return out

    def _wrinkle_fields(self, old_light: np.ndarray, target: np.ndarray, proto, weight: np.ndarray) -> dict:
        """Canonical maps for drawn lines: 'wr_skin' (where: the skin, less brows, eyes and lips), 'wr_c', 'wr_s'
        (the older prototype's fold direction as coherence x (cos, sin) of twice the line's angle) and 'wr_target{k}'
        (the older group's band energy), all in the aged face's geometry."""
        from faceapp.align.paste import _feathered_polygon, face_hull

        s = self.size
        skin = _feathered_polygon(face_hull(target, forehead=0.35), s, 0.15)
        lift = 0.06 * float(target[8, 1] - target[27, 1])
        for idx in (range(17, 22), range(22, 27), range(36, 42), range(42, 48), range(48, 60)):
            poly = target[list(idx)]
            if len(poly) == 5:  # a brow: closed by the same line a little lower
                poly = np.vstack([poly, poly[::-1] + [0.0, lift]])
            skin = skin * (1.0 - _feathered_polygon(poly, s, 0.35))
        # the mean older face's folds (forehead lines, nasolabial folds, arcs under the eyes) give the lines' way:
        # the structure tensor of its lightness band, whose lines run across its gradient
        band = cv2.GaussianBlur(old_light, (0, 0), 1.5) - cv2.GaussianBlur(old_light, (0, 0), 3.0)
        gx, gy = cv2.Sobel(band, cv2.CV_32F, 1, 0), cv2.Sobel(band, cv2.CV_32F, 0, 1)
        jxx, jxy, jyy = (cv2.GaussianBlur(a, (0, 0), s / 48) for a in (gx * gx, gx * gy, gy * gy))
        coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / (jxx + jyy + 1e-6)
        # twice the line's angle = twice the gradient's + pi
        c2, s2 = -(jxx - jyy), -2 * jxy
        norm = np.hypot(c2, s2) + 1e-9
        out = {"wr_skin": (skin * weight).astype(np.float32),
               "wr_c": (coherence * c2 / norm).astype(np.float32), "wr_s": (coherence * s2 / norm).astype(np.float32)}
        for k in range(len(self.sigmas)):
            out[f"wr_target{k}"] = proto(self.old_energy[k]).astype(np.float32)
        return out

    def apply(self, photo: Image.Image, landmarks68: np.ndarray, t: float, *, hair: float | None = None,
              wrinkles: float | None = None, scales: dict | None = None) -> Image.Image:
        """`photo` with the face at `landmarks68` ([68, 2] photo pixels) aged by t (t < 0: younger); RGB out.

        t = 0 returns an unchanged copy. The face's change stays inside a feathered head outline (face, hairline,
        neck); with t > 0 the hair round it also greys, up to `hair` (0..1; default HAIR_GREY for age prototypes,
        0 for smile prototypes; 0: hair untouched) and fine lines are drawn where the skin lacks the older group's
        (`wrinkles`: the share of the missing line energy drawn at t = WRINKLE_FULL_T; default WRINKLES for age
        prototypes, 0 for smile prototypes). scales (t > 0 only): {'shape', 'light', 'gain', 'wrinkles'} multiples
        of t for each part of the change, 'hair' of the colour that fades (lips, brows; the hair's greying is `hair`),
        'cap' of GAIN_CAP in the fine bands (how deep they may take the skin's own lines; CAP_SIGMA_MAX) (default 1;
        `faceapp.bundle.ModelBundle.age_scales` gives a face's).
        """
        from faceapp.align.paste import _feathered_polygon, head_hull

        rgb = photo.convert("RGB")
        if t == 0:
            return rgb.copy() if rgb is photo else rgb
        lm = np.asarray(landmarks68, np.float64)
        s = self.size
        m = eye_similarity(lm, s)  # photo -> canonical
        lmc = lm @ m[:, :2].T + m[:, 2]
        # the bands' and lines' widths are the prototypes' own, in photo px at the face's own scale
        scale = 1.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
        zoom = fit_zoom(lmc, s)
        if zoom < 1.0:  # a face too big for the frame is drawn smaller in it: the mesh must not fold at its edge
            m = np.hstack([zoom * m[:, :2], (zoom * m[:, 2] + (1.0 - zoom) * (s - 1) / 2)[:, None]])
        inv = cv2.invertAffineTransform(m)
        f = self.fields(lmc, t, scales, zoom=zoom)
        # The head's box in the photo: everything happens there.
        hull = head_hull(lm, top=0.8, widen=1.2, neck=0.3)
        w, h = rgb.size
        x0, y0 = np.maximum(np.floor(hull.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(hull.max(0)).astype(int) + 3, [w, h])
        if x1 - x0 < 4 or y1 - y0 < 4:
            return rgb.copy()
        # Each ROI pixel's canonical position, and the canonical fields read there (they are smooth).
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        cx = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(np.float32)
        cy = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(np.float32)

        def at(a):  # zero outside the canonical frame: every field is passed as a change from "no edit"
            return cv2.remap(np.ascontiguousarray(a, np.float32), cx, cy, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)

        # 1. shape: canonical displacement -> photo displacement (the similarity's linear part)
        dx, dy = at(f["map_x"] - _grid(s)[0]), at(f["map_y"] - _grid(s)[1])
        sx = xs + (inv[0, 0] * dx + inv[0, 1] * dy)
        sy = ys + (inv[1, 0] * dx + inv[1, 1] * dy)
        src = np.asarray(rgb, np.float32) / 255.0
        roi0 = src[y0:y1, x0:x1]
        sx, sy = sx.astype(np.float32), sy.astype(np.float32)
        moved = cv2.remap(src, sx, sy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        lab = cv2.cvtColor(np.clip(moved, 0, 1), cv2.COLOR_RGB2Lab)
        # 2. lightness; 3. the photo's own bands, at its own scale (canonical sigma x photo px per canonical px)
        light = lab[..., 0]
        cap_part = float((scales or {}).get("cap", 1.0)) if t > 0 else 1.0
        delta = at(f["light"])
        for k, sigma in enumerate(self.sigmas):
            sg = max(sigma * scale, 0.5)
            band = cv2.GaussianBlur(light, (0, 0), sg) - cv2.GaussianBlur(light, (0, 0), 2 * sg)
            gain = at(f[f"gain{k}"] - 1.0)  # outside the canonical frame: gain 1
            gain_cap = GAIN_CAP * (cap_part if sigma < CAP_SIGMA_MAX else 1.0)
            if t > 0 and gain_cap and f"wr_target{k}" in f:
                # skin already as lined as the older group's is not deepened past GAIN_CAP x their energy: an old
                # face's own folds would turn into black gashes
                own = cv2.GaussianBlur(np.abs(band), (0, 0), 2 * sg)
                cap = np.maximum(gain_cap * at(f[f"wr_target{k}"]) / (own + 0.05), 1.0) - 1.0
                gain = np.minimum(gain, cap)
            add = gain * band
            peak = LINE_PEAK_FINEST if sigma < FINEST_SIGMA else LINE_PEAK
            if t > 0 and peak and f"wr_target{k}" in f:
                # no one spot deepens past PEAK x the older group's lines there: a smooth fold's edge or a blotchy
                # cheek's tone, multiplied by the gain, became a black gash or a dark smudge (tanh: small ones pass)
                limit = peak * at(f[f"wr_target{k}"]) + 0.05
                add = limit * np.tanh(add / limit)
            delta += add
        lab[..., 0] = light + delta
        if wrinkles is None:
            wrinkles = 0.0 if self.meta.get("kind") == "smile" else WRINKLES
        if t > 0 and wrinkles > 0 and "wr_skin" in f:
            rho = np.arctan2(m[1, 0], m[0, 0])  # the similarity's rotation: photo angle a is canonical angle a + rho
            c, sn = at(f["wr_c"]), at(f["wr_s"])
            c, sn = c * np.cos(2 * rho) + sn * np.sin(2 * rho), sn * np.cos(2 * rho) - c * np.sin(2 * rho)
            amount = wrinkles * min(t / WRINKLE_FULL_T, 1.5) * float((scales or {}).get("wrinkles", 1.0))
            lab[..., 0] += _draw_lines(lab[..., 0], at(f["wr_skin"]), c, sn,
                                       [at(f[f"wr_target{k}"]) for k in range(len(self.sigmas))],
                                       [max(sg * scale, 0.5) for sg in self.sigmas], amount)
        # 4. chroma only down, never on the skin; greying fades out over a wide band so that greyed hair inside
        # the head's outline meets the hair outside it without an edge
        side = max(x1 - x0, y1 - y0)
        alpha = _feathered_polygon(hull - [x0, y0], side, 0.12)[: y1 - y0, : x1 - x0]
        grey_alpha = _feathered_polygon(hull - [x0, y0], side, 0.35)[: y1 - y0, : x1 - x0]
        lab[..., 1:] *= 1.0 + (grey_alpha * at(f["chroma"] - 1.0))[..., None]
        out = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
        roi = roi0 + (out - roi0) * alpha[..., None]
        if _is_grey(roi0):  # float error must not tint a greyscale photo
            roi = np.repeat(roi.mean(-1, keepdims=True), 3, -1)
        result = rgb.copy()
        result.paste(Image.fromarray(np.clip(np.rint(roi * 255), 0, 255).astype(np.uint8)), (int(x0), int(y0)))
        if hair is None:
            hair = 0.0 if self.meta.get("kind") == "smile" else HAIR_GREY
        if t > 0 and hair > 0:
            result = _grey_hair(rgb, result, lm, float(hair) * min(t / HAIR_FULL_T, 1.0) ** 1.5,
                                moved=(int(x0), int(y0), sx, sy, alpha))
        return result


def _grey_hair(before: Image.Image, after: Image.Image, lm: np.ndarray, amount: float,
               moved: tuple | None = None) -> Image.Image:
    """`after` with the hair found in `before` (the unedited photo, whose face is at `lm`) greyed by `amount`.

    moved: (x0, y0, sx, sy, alpha) when `after`'s pixels in the box at (x0, y0) came from `before` at (sx, sy)
    (float32 [h, w] photo px; the shape change), blended by alpha [h, w]: the hair mask moves with its pixels.
    Without it, a jaw that widens with age carried the cheek's skin onto where the hair had been, and that skin
    was greyed into a pale rim down the side of the face."""
    from faceapp.align.hair import grey_hair, hair_mask

    mask, (x0, y0, x1, y1) = hair_mask(np.asarray(before), lm)
    if mask.size == 0 or mask.max() <= 0:
        return after
    if moved is not None:
        rx, ry, sx, sy, alpha = moved
        rh, rw = sx.shape
        bx0, by0, bx1, by1 = min(x0, rx), min(y0, ry), max(x1, rx + rw), max(y1, ry + rh)  # both boxes
        canvas = np.zeros((by1 - by0, bx1 - bx0), np.float32)
        canvas[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] = mask
        pulled = cv2.remap(canvas, sx - bx0, sy - by0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        inner = canvas[ry - by0:ry - by0 + rh, rx - bx0:rx - bx0 + rw]
        canvas[ry - by0:ry - by0 + rh, rx - bx0:rx - bx0 + rw] = inner + (pulled - inner) * alpha
        mask, (x0, y0, x1, y1) = canvas, (bx0, by0, bx1, by1)
    box = np.asarray(after.crop((x0, y0, x1, y1)), np.float32) / 255.0
    out = grey_hair(box, mask, amount)
    if _is_grey(box):
        out = np.repeat(out.mean(-1, keepdims=True), 3, -1)
    after.paste(Image.fromarray(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)), (x0, y0))
    return after


#: The shape change may shrink a triangle of the landmarks' mesh to this share of its area, no further: past it the
#: thin triangles of the lips (older lips are thinner) turn over and the warp folds the photo (a pale wedge under the
#: lower lip).
FOLD_FLOOR = 0.2


def _without_folds(src: np.ndarray, dst: np.ndarray, size: int) -> np.ndarray:
    """`dst` [68, 2], or the nearest tamer landmarks under which no triangle of `src`'s mesh (Delaunay, with the
    frame's fixed border points) keeps less than FOLD_FLOOR of its area or turns over: first the mouth's own change
    of shape is scaled down (the mouth still moves as a whole), then, if that is not enough, the whole change."""
    from scipy.spatial import Delaunay

    border = _border(size)
    pts = np.vstack([src, border])
    tri = Delaunay(pts).simplices

    def areas(p):
        a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    a0 = areas(pts)
    keep = np.abs(a0) > 1e-9

    def folds(d):
        return bool((areas(np.vstack([src + d, border]))[keep] / a0[keep] < FOLD_FLOOR).any())

    disp = np.asarray(dst, np.float64) - src
    if not folds(disp):
        return dst
    mouth = disp[48:68].mean(0)
    for alpha in (0.75, 0.5, 0.25, 0.0):
        d = disp.copy()
        d[48:68] = mouth + alpha * (disp[48:68] - mouth)
        if not folds(d):
            return src + d
    for beta in np.linspace(0.9, 0.0, 10):
        if not folds(beta * d):
            return src + beta * d
    return src.copy()


def _band(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sigma) - cv2.GaussianBlur(a, (0, 0), 2 * sigma)


def _line_kernel(sigma: float, angle: float, stretch: float) -> np.ndarray:
    """A Gaussian kernel `stretch` times longer along `angle` (radians, image x to y) than across it."""
    half = int(np.ceil(3 * sigma * stretch))
    ys, xs = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    along, across = xs * np.cos(angle) + ys * np.sin(angle), -xs * np.sin(angle) + ys * np.cos(angle)
    k = np.exp(-0.5 * ((along / (sigma * stretch)) ** 2 + (across / sigma) ** 2))
    return (k / k.sum()).astype(np.float32)


def _draw_lines(light: np.ndarray, where: np.ndarray, c2: np.ndarray, s2: np.ndarray, targets, sigmas,
                amount: float, seed: int = 0) -> np.ndarray:
    """Lightness [H, W] to add: in each band (photo-px `sigmas`), fine lines where `targets` (the older group's band
    energy [H, W]) exceeds the photo's own (`light`), `amount` x the shortfall, on `where` [H, W] in [0, 1].

    The lines are white noise stretched along the local direction ((c2, s2): coherence x (cos, sin) of twice the
    line's angle; where the direction is unclear the noise stays round, like pores and spots, and fainter by
    WRINKLE_ROUND), then band-passed.
    Each band is made where its sigma is ~1.2 px and enlarged, so a large photo costs what a small one does. Seeded:
    the same face gets the same lines, and a timeline's lines deepen rather than flicker.
    """
    h, w = light.shape
    out = np.zeros((h, w), np.float32)
    angles = np.arange(4) * np.pi / 4
    for k, sg in enumerate(sigmas):
        own = cv2.GaussianBlur(np.abs(_band(light, sg)), (0, 0), 2 * sg)
        amp = amount * np.maximum(targets[k] - own, 0.0) * where
        if float(amp.max()) < 1e-3:
            continue
        f = max(sg / 1.2, 1.0)
        hs, ws = max(int(np.ceil(h / f)), 1), max(int(np.ceil(w / f)), 1)
        sd = sg / f
        z = np.random.default_rng(seed + k).standard_normal((5, hs, ws)).astype(np.float32)
        if f > 1:
            cs, ss = (cv2.resize(a, (ws, hs), interpolation=cv2.INTER_AREA) for a in (c2, s2))
        else:
            cs, ss = c2, s2
        coh, th2 = np.clip(np.hypot(cs, ss), 0.0, 1.0), np.arctan2(ss, cs)
        wts = np.stack([np.maximum(np.cos(th2 - 2 * a), 0.0) ** 2 for a in angles])
        wts /= wts.sum(0) + 1e-6
        lines = sum(wts[i] * _unit_band(cv2.filter2D(z[i], -1, _line_kernel(sd, angles[i], WRINKLE_STRETCH)), sd)
                    for i in range(4))
        lines = lines / np.sqrt((wts ** 2).sum(0) + 1e-6)  # independent fields mixed: keep unit strength
        tex = ((1 - coh) * _unit_band(z[4], sd) + coh * lines) / np.sqrt((1 - coh) ** 2 + coh ** 2)
        tex = tex * (WRINKLE_ROUND + (1.0 - WRINKLE_ROUND) * coh)
        if f > 1:
            tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_CUBIC)
        out += amp * tex
    return out


def _unit_band(a: np.ndarray, sigma: float) -> np.ndarray:
    """`a`'s difference-of-Gaussians band at `sigma`, scaled to a mean absolute value of 1."""
    b = _band(a, sigma)
    return b / max(float(np.abs(b).mean()), 1e-6)


#: A face whose landmarks come nearer the canonical frame's edge than this fraction of it is drawn smaller.
FRAME_MARGIN = 0.05


def fit_zoom(lm: np.ndarray, size: int, margin: float = FRAME_MARGIN) -> float:
    """1, or the scale about the frame's centre that brings canonical landmarks `lm` [68, 2] within `margin` x
    `size` of the frame's edge. Outside the frame the prototypes' mesh (landmarks and the frame's fixed edge
    points) folds, and the edit shows a straight seam there."""
    c = (size - 1) / 2
    reach = float(np.abs(np.asarray(lm, np.float64) - c).max())
    room = c - margin * size
    return 1.0 if reach <= room else float(room / reach)


def _zoomed(lm: np.ndarray, size: int, zoom: float) -> np.ndarray:
    """Landmarks [68, 2] scaled by `zoom` about the frame's centre."""
    c = (size - 1) / 2
    return lm if zoom == 1.0 else c + zoom * (lm - c)


#: Younger: the lids within this many times the eyes' openings (about their centres) keep their own darkness.
EYE_RIM_GROW = 2.6


def _eye_openings(lm: np.ndarray, size: int, grow: float = 1.25, feather: float = 0.4) -> np.ndarray:
    """[size, size] float32: 1 inside the eyes' openings (landmarks 36-41, 42-47, each grown `grow` x about its
    centre so the iris at the lids' margin is inside), feathered to 0 at the grown outline (over `feather` x the
    square root of its area)."""
    from faceapp.align.paste import _feathered_polygon

    out = np.zeros((size, size), np.float32)
    for idx in (slice(36, 42), slice(42, 48)):
        poly = np.asarray(lm[idx], np.float64)
        c = poly.mean(0)
        out = np.maximum(out, _feathered_polygon(c + grow * (poly - c), size, feather))
    return out


def _hair_zones(lm: np.ndarray, size: int) -> np.ndarray:
    """[size, size] float32: 1 over the brows (landmarks 17-21, 22-26, closed a little below themselves) and round
    the mouth (a moustache's and a goatee's place, not the lips), feathered: where the age groups' mean images
    differ by facial hair rather than by skin."""
    from faceapp.align.paste import _feathered_polygon

    lm = np.asarray(lm, np.float64)
    drop = 0.08 * float(lm[8, 1] - lm[27, 1])  # a brow's thickness, from the face's height
    out = np.zeros((size, size), np.float32)
    for idx in (slice(17, 22), slice(22, 27)):
        brow = lm[idx]
        c = brow.mean(0)
        brow = c + 1.15 * (brow - c)  # past the brow's ends
        out = np.maximum(out, _feathered_polygon(np.vstack([brow - [0.0, drop], brow[::-1] + [0.0, 1.5 * drop]]),
                                                 size, 0.25))
    # round the mouth, where a moustache and a goatee grow: from a little above the nose's base (31-35) out past the
    # mouth's corners and down to half way from the lower lip to the chin, less the lips themselves (48-59)
    gap = float(lm[51, 1] - lm[33, 1])
    width = float(lm[54, 0] - lm[48, 0])
    chin = 0.5 * float(lm[8, 1] - lm[57, 1])
    ring = np.vstack([lm[31:36] - [0.0, 0.4 * gap], lm[54] + [0.5 * width, 0.0], lm[56:59] + [0.0, chin],
                      lm[48] - [0.5 * width, 0.0]])
    lips = _feathered_polygon(lm[48:60], size, 0.2)
    return np.maximum(out, _feathered_polygon(ring, size, 0.2) * (1.0 - lips))


def _frontal(lm: np.ndarray) -> float:
    """1 for a face seen from the front, falling to 0 for one in profile: how much of the shape change to make.

    The prototypes' shape and lightness changes are frontal: on a turned face the far side's landmarks crowd
    together, the warp folds there and the lightness change lands on the background (a wedge by the far cheek).
    Yaw = the nose tip's offset from the jaw's middle, in jaw widths: |yaw| up to 0.2 gets the whole change, 0.4
    and more none.
    """
    width = max(float(lm[16, 0] - lm[0, 0]), 1e-6)
    yaw = abs(float(lm[30, 0] - (lm[0, 0] + lm[16, 0]) / 2)) / width
    return float(np.clip((0.4 - yaw) / 0.2, 0.0, 1.0))


def _near_side(lm: np.ndarray, size: int, ramp: float = 0.15) -> np.ndarray:
    """[size, size] float32 weights for a face with canonical landmarks `lm`: 1 everywhere for a frontal face; for a
    turned one, 1 on its near side and `_frontal(lm)` on its far side (the side its nose points to, where the
    landmarks crowd), ramping over +-`ramp` jaw widths round the nose's line."""
    frontal = _frontal(lm)
    if frontal >= 1.0:
        return np.ones((size, size), np.float32)
    width = max(float(lm[16, 0] - lm[0, 0]), 1e-6)
    far = np.sign(float(lm[30, 0] - (lm[0, 0] + lm[16, 0]) / 2)) or 1.0
    xs = np.arange(size, dtype=np.float64)
    r = np.clip(0.5 - far * (xs - float(lm[30, 0])) / (2 * ramp * width), 0.0, 1.0)  # 1: near side
    r = r * r * (3.0 - 2.0 * r)
    return np.broadcast_to((frontal + (1.0 - frontal) * r).astype(np.float32), (size, size)).copy()


def _window(size: int, edge: float = 0.1) -> np.ndarray:
    """[size, size] float32: 1 inside, falling smoothly to 0 over the outer `edge` of the frame on every side."""
    r = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / max(edge * size, 1.0), 0.0, 1.0)
    r = r * r * (3.0 - 2.0 * r)
    return np.outer(r, r).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


def _is_grey(rgb: np.ndarray, tol: float = 1.0 / 255) -> bool:
    return bool(np.abs(rgb - rgb.mean(-1, keepdims=True)).max() <= tol)
