"""What the page shows, made from plain values (no Gradio here): the model notice, the face picker's choices,
the faces overlay, the sliders and presets, the images' sizes, the status and faithfulness texts."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from faceapp.align import Face
from faceapp.edits import has_years, years_reach
from faceapp.edits.presets import preset_years
from faceapp.edits.presets import presets as direction_presets

STANDIN_NOTICE = (
    "⚠️ **Untrained stand-in model.** No trained model bundle is installed in `models/demo/`, so this page runs "
    "a tiny generator with *random* weights: results are coloured blobs, not faces. It shows that every step "
    "works (detect, align, invert, edit, paste back). For real results, fetch the official FFHQ model "
    "(`python -m faceapp fetch ffhq`, then `python app.py --model ffhq`), build a bundle from files you have "
    "(`python -m faceapp bundle --generator ffhq.pkl --out my-model`), put a trained bundle in `models/demo/`, "
    "or pass a Hugging Face Hub repo id: `python app.py --model user/repo`."
)
#: The face picker's value that stands for every face.
ALL_FACES = "All faces"
#: The face picker when there is one face (or none yet).
ONE_FACE = ["Face 1"]
#: Faithfulness of a generated or loaded face: its exact code is edited.
EXACT_LATENT = "Exact latent code: no inversion, nothing lost."


def model_notice(bundle) -> str:
    """The line under the title: what model this is (and a warning for the stand-in)."""
    if bundle.untrained:
        return STANDIN_NOTICE
    res = bundle.resolution
    enc = "with an encoder" if bundle.encoder is not None else "no encoder (fast mode optimises briefly)"
    if bundle.detail is not None:
        out = int(bundle.detail.img_resolution)
        enc += f", a detail stage to {out}x{out}"
    if bundle.age_prototypes is not None:
        fitted = ", as much as your face's estimated age calls for" if bundle.uses_face_age else ""
        profile = (bundle.meta.get("age_prototypes_options") or {}).get("by_age") or {}
        if fitted and bundle.age_prototypes_growth is not None and any(profile.get("growth", [])):
            fitted += "; children grow up instead"
        enc += f", age prototypes (wrinkles and grey hair at your photo's resolution{fitted})"
    if bundle.smile_prototypes is not None:
        enc += ", smile prototypes (your own mouth moves)"
    if bundle.meta.get("glasses_overlay"):
        enc += ", drawn glasses"
    edits = ", ".join(bundle.direction_names) or "none"
    return f"Model: **{bundle.name}** ({res}x{res}, {enc}; edits: {edits})."


# ---------------------------------------------------------------------------------- faces


def face_choices(n: int) -> list[str]:
    """The face picker's choices for `n` faces."""
    return [f"Face {i + 1}" for i in range(n)] + ([ALL_FACES] if n > 1 else [])


def face_indices(which: str | None, n: int) -> list[int]:
    """The face indices the picker's value stands for (clamped to the faces there are)."""
    if not which or which == ALL_FACES:
        return list(range(n)) if which == ALL_FACES else [0]
    try:
        i = int(str(which).split()[-1]) - 1
    except ValueError:
        i = 0
    return [min(max(i, 0), n - 1)]


def faces_found(n: int) -> str:
    """The status after faces were found."""
    return f"{n} face{'s' if n > 1 else ''} found" + (
        "; pick one to edit it on its own, or all of them." if n > 1 else "."
    )


def faces_overlay(photo: Image.Image, faces: Sequence[Face], side: int = 640) -> Image.Image:
    """A small copy of the photo with each detected face boxed and numbered (largest = 1)."""
    k = min(1.0, side / max(photo.size))
    im = photo.resize((max(1, round(photo.width * k)), max(1, round(photo.height * k))))
    draw = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 200))
    font = ImageFont.load_default(size=max(14, round(max(im.size) / 22)))
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = (v * k for v in f.box)
        draw.rectangle((x0, y0, x1, y1), outline=(255, 196, 0), width=width)
        label = str(i + 1)
        tx, ty = x0 + width, max(0, y0 - font.size - 2 * width)
        box = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((box[0] - width, box[1] - width, box[2] + width, box[3] + width), fill=(255, 196, 0))
        draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    return im


# ---------------------------------------------------------------------------------- sliders


def presets(bundle) -> dict[str, dict[str, float]]:
    """One-click edits for `bundle`'s directions (faceapp.edits.presets)."""
    return direction_presets(bundle.years_directions)


def slider_spec(bundle, name: str) -> dict:
    """The slider of direction `name`: {minimum, maximum, step, label, info, years}.

    The age slider is in years when the age direction has a years calibration (its strength range
    converted, widened to hold the year presets, whole years; with curves by age, the span of the faces that
    reach furthest: each face gets at most its own curve's end); every other slider is in strength units.
    """
    dirs = bundle.years_directions  # (curves by age only where the bundle can read a face's age)
    d = dirs[name]
    lo, hi = d.strength_range
    if name == "age" and has_years(dirs, "age"):
        by_age = d.years.by_age
        ends = [years_reach(dirs, "age", a) for a in ((by_age or {}).get("ages") or [None])]
        lo_y = math.floor(min(*(e[0] for e in ends), *preset_years(dirs)))
        hi_y = math.ceil(max(*(e[1] for e in ends), *preset_years(dirs)))
        info = "years older (+) / younger (-), as an age estimator reads held-out faces"
        if by_age:
            info += " that look as old as yours (a face that cannot get them gets its most)"
        return dict(minimum=lo_y, maximum=hi_y, step=1, label="Age (years)", years=True, info=info)
    return dict(minimum=lo, maximum=hi, step=0.25, label=name.capitalize(), info=d.description or None, years=False)


# ---------------------------------------------------------------------------------- images


def pixels_digest(photo: Image.Image) -> str:
    """sha256 of a photo's size and pixels (ties a latent file to its photo)."""
    return hashlib.sha256(f"{photo.size}".encode() + photo.tobytes()).hexdigest()


def fit(image: Image.Image, side: int) -> Image.Image:
    """`image` shrunk to at most `side` px (as it is when it fits)."""
    if max(image.size) <= side:
        return image
    k = side / max(image.size)
    return image.resize((max(round(image.width * k), 1), max(round(image.height * k), 1)), Image.LANCZOS)


def enlarged(image: Image.Image, side: int) -> Image.Image:
    """A render shown at least `side` px (a 64 px face is unreadable at its own size)."""
    if max(image.size) >= side:
        return image
    k = side / max(image.size)
    return image.resize((round(image.width * k), round(image.height * k)), Image.LANCZOS)


def side_by_side(crop: Image.Image, recon: Image.Image, side: int = 192) -> Image.Image:
    """The aligned crop (left) beside its reconstruction (right), each `side` px."""
    pair = Image.new("RGB", (2 * side, side))
    pair.paste(enlarged(crop, side).resize((side, side)), (0, 0))
    pair.paste(enlarged(recon, side).resize((side, side)), (side, 0))
    return pair


# ---------------------------------------------------------------------------------- texts


def faithfulness_text(measures: Sequence[tuple[int, dict]], mode: str) -> str:
    """The faithfulness line of faces [(face index, FaceEditor.faithfulness measures)] inverted in `mode`."""
    lines = []
    for index, m in measures:
        dist = m.get("identity_distance")
        verdict = "" if dist is None else (" — the same person to dlib's face recogniser" if dist < 0.6
                                           else " — dlib's face recogniser would call this another person")
        ident = f"identity distance **{dist:.2f}**{verdict}; " if dist is not None else ""
        lines.append(f"Face {index + 1} ({mode}): {ident}PSNR {m['psnr']:.1f} dB")
    return ("Your face as the model saw it (left) and its reconstruction (right). " + " · ".join(lines)
            + ". Identity distance: dlib descriptors, under 0.6 is usually the same person.")


def done_status(shown: str, chosen: Sequence[int], n_faces: int, note: str = "") -> str:
    """'Done: age +2 (face 2).' after an edit of faces `chosen` of a photo with `n_faces`."""
    who = "all faces" if len(chosen) > 1 else (f"face {chosen[0] + 1}" if n_faces > 1 else "")
    return f"Done: {shown}" + (f" ({who})" if who else "") + f".{note}"
