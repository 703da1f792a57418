"""Putting (edited) aligned crops back into the original photo.

Two ways:

- `paste_difference` (what the app and the CLI use): the *change* the edit made, (edited
  render - reconstruction), is brought to the face's size in the photo and added to the
  original photo inside a soft mask (`edit_mask`: the face, plus hair and neck where the
  edit changed them). Features the edit moved (a widening mouth) move the photo's own pixels
  (`render_motion`); only the rest of the change is added. The photo keeps its own resolution,
  skin texture and background; a 64 px model still returns a sharp photo.
- `paste_back`: the render itself is warped over the face and alpha-blended through a
  feathered face mask (the convex hull of the jaw line and a forehead raised above the
  brows). At a model's resolution below the face's size in the photo this is blurrier.

Either way the crop is warped back with the inverse of its alignment transform, only
over the mask's bounding box (so a 12 MP photo costs what the face costs), and the
mask falls to zero at its edge and at the crop's own edge, so neither a seam nor the
crop's square can show.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from PIL import Image

from faceapp.align.crop import AlignedFace, _apply, _rescale, _translate
from faceapp.align.detect import BROWS, JAW

__all__ = [
    "BLENDS",
    "COLOURS",
    "PASTE_METHODS",
    "REGIONS",
    "colour_safe_change",
    "edit_mask",
    "face_hull",
    "face_mask",
    "head_hull",
    "paste_back",
    "paste_back_all",
    "paste_difference",
    "paste_difference_all",
    "render_motion",
]

BLENDS = ("alpha", "poisson")
#: How an edited face goes back into the photo: 'difference' (`paste_difference`) or 'render' (`paste_back`).
PASTE_METHODS = ("difference", "render")
#: What `edit_mask` covers: the face only, or the head (face + hair + neck where the edit changed them).
REGIONS = ("face", "head")
#: How `paste_difference` treats colour: 'keep' the photo's own (lightness detail and greying only) or 'add'.
COLOURS = ("keep", "add")
#: `render_motion`'s smoothing, a fraction of the render's side: a feature's motion is smooth, the flow's fine
#: structure is appearance change (wrinkles, greying) read as motion.
MOTION_SMOOTHING = 1 / 16


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
    # smoothstep-feathered, 0 on the hull and on the crop's square edge: no seam, no kink where it meets 1
    return _feathered_polygon(face_hull(lm68, forehead=forehead), size, feather)


def head_hull(lm68: np.ndarray, *, top: float = 1.0, widen: float = 1.3, neck: float = 0.55) -> np.ndarray:
    """Outline of the head, [K, 2]: the face hull widened sideways, raised into the hair and lowered
    into the neck (in the face's own frame, so a tilted head gets a tilted outline).

    top: how far above the brows it reaches (fraction of the brow-to-chin distance; 1.0 covers the
    top of the head). widen: sideways scale about the face's midline. neck: how far below the
    jaw line it reaches (same unit).
    """
    lm = np.asarray(lm68, dtype=np.float64)
    brows, jaw, chin = lm[BROWS], lm[JAW], lm[8]
    up = brows.mean(0) - chin
    length = max(float(np.hypot(*up)), 1e-6)
    u = up / length  # towards the top of the head
    v = np.array([-u[1], u[0]])  # sideways
    centre = (jaw.mean(0) + brows.mean(0)) / 2
    pts = np.concatenate([jaw, brows + up * top, jaw[3:14] - up * neck])

    def widened(p):
        along, side = (p - centre) @ u, (p - centre) @ v
        return centre + np.outer(along, u) + np.outer(side * widen, v)

    return cv2.convexHull(widened(pts).astype(np.float32))[:, 0, :].astype(np.float64)


def _feathered_polygon(hull: np.ndarray, size: int, feather: float) -> np.ndarray:
    """A filled polygon in a [size, size] crop, smoothstep-feathered inwards (0 on its edge and on the
    crop's border), float32 in [0, 1]."""
    shift = 4  # sub-pixel vertex precision for fillPoly
    binary = np.zeros((size, size), np.uint8)
    cv2.fillPoly(binary, [np.round(hull * (1 << shift)).astype(np.int32)], 255, cv2.LINE_AA, shift)
    binary = (binary >= 128).astype(np.uint8)
    binary[[0, -1], :] = 0
    binary[:, [0, -1]] = 0
    area = cv2.contourArea(hull.astype(np.float32))
    width = max(float(feather) * np.sqrt(max(area, 1.0)), 1.0)
    dist = cv2.distanceTransform(binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    t = np.clip(dist / width, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def edit_mask(
    lm68: np.ndarray,
    size: int,
    diff: np.ndarray | None = None,
    *,
    region: str = "head",
    feather: float = 0.1,
    change_range: tuple[float, float] = (3.0, 12.0),
) -> np.ndarray:
    """Where an edit goes back into the photo, float32 [size, size] in [0, 1] (crop pixels).

    region 'face': `face_mask`. region 'head': the face mask, plus the rest of the head outline
    (`head_hull`: hair, neck) wherever the edit changed the render: `diff` [size, size, 3] (edited -
    reconstruction, 0..255 units) smoothed, with changes below change_range[0] counted as none and
    above change_range[1] as full. Without `diff` the whole head outline counts.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    face = face_mask(lm68, size, feather=feather)
    if region == "face":
        return face
    head = _feathered_polygon(head_hull(lm68), size, feather=0.15)
    if diff is not None:
        change = np.abs(np.asarray(diff, np.float32)).max(axis=-1)
        sigma = max(size / 64.0, 0.5)
        change = cv2.GaussianBlur(change, (0, 0), sigma)
        lo, hi = change_range
        t = np.clip((change - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        gate = cv2.GaussianBlur((t * t * (3.0 - 2.0 * t)).astype(np.float32), (0, 0), 2 * sigma)
        head = head * gate
    return np.maximum(face, head)


def _roi_for(mask: np.ndarray, m: np.ndarray, photo_size: tuple[int, int]):
    """The photo box (x0, y0, x1, y1) that the crop's mask > 0 lands on, or None."""
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        return None
    inv = np.linalg.inv(m)
    corners = [[xs.min(), ys.min()], [xs.min(), ys.max()], [xs.max(), ys.min()], [xs.max(), ys.max()]]
    box = _apply(inv, np.array(corners, dtype=np.float64))
    x0, y0 = np.floor(box.min(0)).astype(int) - 2
    x1, y1 = np.ceil(box.max(0)).astype(int) + 3
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, photo_size[0]), min(y1, photo_size[1])
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def paste_difference(
    photo: Image.Image,
    aligned: AlignedFace,
    edited_crop: Image.Image,
    reconstruction: Image.Image,
    *,
    region: str = "head",
    feather: float = 0.1,
    mask: np.ndarray | None = None,
    colour: str = "keep",
    skin_sigma: float = 1 / 8,
    motion: bool = True,
) -> Image.Image:
    """`photo` plus the edit's change, at the photo's own resolution.

    The difference (edited_crop - reconstruction), both renders of the same face (after and before
    the edit, any one square size), is warped to the face's size in the photo and added to `photo`
    inside `edit_mask` (region 'head': the face, and hair and neck where the edit changed them).
    Where the edit changed nothing the photo stays exactly as it was, and everywhere it keeps its
    own detail (skin, hair strands, background), so the result is as sharp as the photo.

    Args:
        photo: the photo `aligned` was cut from (same size), RGB.
        aligned: from `align_face`.
        edited_crop, reconstruction: the edited render and the render of the unedited code.
        region, feather: see `edit_mask`.
        mask: optional float [S, S] mask in the renders' pixels to use instead.
        colour: 'keep' (default): the change goes back as lightness detail and desaturation only, and the
            skin keeps its own tone (`colour_safe_change`): no tint, a greyscale photo stays greyscale, grey
            hair still greys. 'add': the RGB difference as it is (colour shifts of the renders included).
        skin_sigma: with 'keep', the scale (fraction of the render's side) above which a lightness change
            on the skin counts as a tone shift and is left out.
        motion: (default) split the change into motion and appearance (`render_motion`): the photo's own pixels
            are moved as the render's features moved (a mouth that widens, a jaw that sags), and only what motion
            does not explain is added. Without it a moved feature comes back as a second, faint copy (a ghost
            mouth under a smile).

    Returns:
        A new RGB image; `photo` is left untouched.
    """
    if photo.size != aligned.photo_size:
        raise ValueError(f"photo is {photo.size}, but the face was aligned in a {aligned.photo_size} photo")
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
    edited = np.asarray(edited_crop.convert("RGB"), np.float32)
    s = edited.shape[0]
    if edited.shape[1] != s:
        raise ValueError(f"edited crop must be square, got {edited.shape[1]}x{edited.shape[0]}")
    recon_img = reconstruction.convert("RGB")
    if recon_img.size != (s, s):
        recon_img = recon_img.resize((s, s), Image.LANCZOS)
    recon = np.asarray(recon_img, np.float32)
    flow = None
    if motion:
        flow = render_motion(edited, recon)  # [S,S,2]: edited(x) ~ recon(x + flow(x))
        recon = cv2.remap(recon, *_flow_maps(flow), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = edited - recon  # [S, S, 3], 0..255 units: what motion does not explain
    m = _rescale(s / aligned.spec.size) @ aligned.matrix  # photo -> render pixels
    if mask is None:
        full = edited - np.asarray(recon_img, np.float32)  # the whole change decides where the edit reaches
        mask = edit_mask(_apply(m, aligned.face.landmarks68), s, full, region=region, feather=feather)
    mask = np.asarray(mask, np.float32)
    if mask.shape != (s, s):
        raise ValueError(f"mask must be {s}x{s} like the edited crop, got shape {mask.shape}")
    roi_box = _roi_for(mask, m, photo.size)
    if roi_box is None:
        return photo.convert("RGB") if photo.mode != "RGB" else photo.copy()
    x0, y0, x1, y1 = roi_box
    if colour == "keep":
        # [S,S,2]: lightness change (the skin's own tone shift removed) and chroma factor - 1 (<= 0)
        diff = colour_safe_change(edited, recon, _apply(m, aligned.face.landmarks68), skin_sigma=skin_sigma)
    if flow is not None:
        flow = flow * mask[..., None]  # the photo moves only where the edit goes in
    scale = np.sqrt(abs(np.linalg.det(np.linalg.inv(m)[:2, :2])))  # photo pixels per render pixel
    if scale < 0.75:  # the render is finer than the face in the photo: area-resize first (no aliasing)
        s2 = max(int(round(s * scale)), 2)
        diff = cv2.resize(diff, (s2, s2), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (s2, s2), interpolation=cv2.INTER_AREA)
        if flow is not None:
            flow = cv2.resize(flow, (s2, s2), interpolation=cv2.INTER_AREA) * (s2 / s)
        m = _rescale(s2 / s) @ m
    to_roi = _translate(-x0, -y0) @ np.linalg.inv(m)
    size = (x1 - x0, y1 - y0)
    # Cubic enlarges the (smooth) difference without a pixel grid; a zero border outside the render.
    warped = cv2.warpAffine(diff, to_roi[:2], size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(mask, to_roi[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    result = photo.convert("RGB") if photo.mode != "RGB" else photo.copy()
    if flow is not None:
        # render-pixel displacements -> photo-pixel ones (the linear part of the render -> photo map)
        flow = cv2.warpAffine(flow, to_roi[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        shift = (flow @ np.linalg.inv(m)[:2, :2].T).astype(np.float32)
        src = np.asarray(result, np.float32)
        mx, my = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        roi = cv2.remap(src, mx + shift[..., 0], my + shift[..., 1], cv2.INTER_LANCZOS4,
                        borderMode=cv2.BORDER_REFLECT_101)
    else:
        roi = np.asarray(result.crop((x0, y0, x1, y1)), np.float32)
    if colour == "keep":
        grey = _is_grey(roi)
        lab = cv2.cvtColor(roi / 255.0, cv2.COLOR_RGB2Lab)  # L 0..100, a/b about -128..127
        edited_lab = lab.copy()
        edited_lab[..., 0] += warped[..., 0] * alpha
        edited_lab[..., 1:] *= 1.0 + warped[..., 1:2] * alpha[..., None]
        # add the change, not the round trip: where nothing changed the photo stays exactly as it was
        change = (cv2.cvtColor(edited_lab, cv2.COLOR_Lab2RGB) - cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)) * 255.0
        if grey:
            change = np.repeat(change.mean(-1, keepdims=True), 3, -1)  # float error must not tint a grey photo
        roi += change
    else:
        roi += warped * alpha[..., None]
    result.paste(Image.fromarray(np.clip(np.rint(roi), 0, 255).astype(np.uint8)), (x0, y0))
    return result


def render_motion(edited: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """How an edit moved the face's features, float32 [S, S, 2] (render pixels, x then y).

    edited, reconstruction: RGB float [S, S, 3] in 0..255. The flow is dense optical flow (OpenCV's DIS) from
    the edited render to the reconstruction on their lightness, so edited(p) ~ reconstruction(p + flow(p)); it is
    smoothed over `MOTION_SMOOTHING` of the side.
    """
    s = edited.shape[0]

    def grey(rgb):
        return np.clip(cv2.cvtColor(np.ascontiguousarray(rgb, np.float32) / 255.0, cv2.COLOR_RGB2GRAY) * 255, 0, 255)

    a, b = grey(edited).astype(np.uint8), grey(reconstruction).astype(np.uint8)
    if s < 96:  # DIS's pyramid needs some pixels: work on an enlarged pair, then bring the flow back
        k = 96.0 / s
        a = cv2.resize(a, (96, 96), interpolation=cv2.INTER_CUBIC)
        b = cv2.resize(b, (96, 96), interpolation=cv2.INTER_CUBIC)
    else:
        k = 1.0
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(a, b, None)
    if k != 1.0:
        flow = cv2.resize(flow, (s, s), interpolation=cv2.INTER_AREA) / k
    flow = cv2.GaussianBlur(flow, (0, 0), max(s * MOTION_SMOOTHING, 0.5))
    return flow.astype(np.float32)


def _flow_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (x + flow_x, y + flow_y) for a [S, S, 2] flow."""
    h, w = flow.shape[:2]
    mx, my = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return mx + flow[..., 0], my + flow[..., 1]


def _is_grey(rgb: np.ndarray, tol: float = 1.0) -> bool:
    """True when an RGB array [H,W,3] (0..255) has (nearly) equal channels everywhere."""
    return bool(np.abs(rgb - rgb.mean(-1, keepdims=True)).max() <= tol)


def colour_safe_change(
    edited: np.ndarray, reconstruction: np.ndarray, lm68: np.ndarray, *, skin_sigma: float = 1 / 8
) -> np.ndarray:
    """What an edit may change of a face's colour, float32 [S, S, 2]: (lightness change, chroma factor - 1).

    edited, reconstruction: RGB float [S, S, 3] in 0..255, the two renders; lm68: landmarks in their pixels.
    Channel 0: the CIELAB lightness change (edited - reconstruction); on the skin (the face hull) its local
    mean over a Gaussian of `skin_sigma` x S is removed, so wrinkles, folds and shading stay but the skin's
    tone does not shift (no tan, no pallor). Channel 1: the chroma factor C_edited / C_reconstruction,
    capped at 1 (an edit may grey hair and brows, never colour a face) and held at 1 on the skin. The photo's
    own a*/b* are multiplied by it, so a grey photo stays grey and a face keeps its hue. Both channels are 0
    where the edit changed nothing (so they warp with a zero border).
    """
    s = edited.shape[0]
    lab_e = cv2.cvtColor(np.ascontiguousarray(edited, np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lab_r = cv2.cvtColor(np.ascontiguousarray(reconstruction, np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    d_light = lab_e[..., 0] - lab_r[..., 0]
    sigma = max(skin_sigma * s, 0.5)
    chroma_e = np.hypot(lab_e[..., 1], lab_e[..., 2])
    chroma_r = np.hypot(lab_r[..., 1], lab_r[..., 2])
    k = 4.0  # below a few units chroma is noise: a near-grey render pixel must not zero a coloured photo's
    factor = cv2.GaussianBlur((chroma_e + k) / (chroma_r + k), (0, 0), sigma)
    factor = np.minimum(factor, 1.0)
    skin = _feathered_polygon(face_hull(lm68, forehead=0.25), s, 0.15)
    d_light = d_light - skin * cv2.GaussianBlur(d_light, (0, 0), sigma)
    factor = (1.0 - skin) * (factor - 1.0)
    factor[np.abs(factor) < 1e-4] = 0.0  # float noise of an unchanged render is no change
    return np.stack([d_light, factor], -1).astype(np.float32)


def paste_difference_all(
    photo: Image.Image,
    items: Iterable[tuple[AlignedFace, Image.Image, Image.Image]],
    *,
    region: str = "head",
    feather: float = 0.1,
    colour: str = "keep",
    skin_sigma: float = 1 / 8,
    motion: bool = True,
) -> Image.Image:
    """`paste_difference` for several faces; each item is (aligned, edited_crop, reconstruction)."""
    out = photo
    for aligned, edited, recon in items:
        out = paste_difference(out, aligned, edited, recon, region=region, feather=feather, colour=colour,
                               skin_sigma=skin_sigma, motion=motion)
    return out if out is not photo else photo.copy()


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
    roi_box = _roi_for(mask, m, photo.size)
    if roi_box is None:
        return photo.copy()
    x0, y0, x1, y1 = roi_box
    inv = np.linalg.inv(m)

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
