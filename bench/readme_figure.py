"""The README's before/after strip: one public-domain photo through the app's pipeline, edited each way.

    python -m bench.readme_figure --bundle models/demo --out docs/img/readme-before-after.png

The photo (default tests/data/astronaut.jpg, NASA, public domain) goes through FaceEditor as an upload
would (detect, align, invert in --mode, paste the edit back as the user gets it); the strip shows the same
square around the face, cut from the photo and from each result: photo | older | younger | smiling |
glasses: the app's one-click presets. Age is in years when the bundle's age direction is calibrated, else
in strengths. The image is what the model made of a public-domain photo: it carries the model's non-commercial note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def face_square(box, size, scale: float = 1.9) -> tuple[int, int, int, int]:
    """A square of `scale` x the face box's larger side, centred on it, kept inside the photo (w, h)."""
    x0, y0, x1, y1 = box
    side = min(scale * max(x1 - x0, y1 - y0), *size)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.1 * (y1 - y0)  # a little above centre: hair, not neck
    left = int(round(min(max(cx - side / 2, 0), size[0] - side)))
    top = int(round(min(max(cy - side / 2, 0), size[1] - side)))
    return left, top, left + int(side), top + int(side)


def edits_for(bundle) -> list[tuple[str, dict]]:
    """[(label, edits)] for the strip: the app's one-click presets (app.presets), in years where it can."""
    import importlib.util

    from faceapp.edits import has_years

    # app.py by path: `import app` from bench/ would find bench/app.py (the app benchmark) first.
    spec = importlib.util.spec_from_file_location("faceapp_app_presets", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    years = has_years(bundle.directions, "age")
    out: list[tuple[str, dict]] = [("photo", {})]
    for name, edit in app.presets(bundle).items():
        if "age" in edit:  # say how much: in years when calibrated, else the strength
            name = {"Younger": "-20 years"}.get(name, name) if years else f"{name} ({edit['age']:+g})"
        out.append((name.lower(), edit))
    return out


def main(argv=None) -> int:
    from faceapp.bundle import load_bundle
    from faceapp.imageio import load_image
    from faceapp.pipeline import FaceEditor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(ROOT / "models" / "demo"))
    p.add_argument("--photo", default=str(ROOT / "tests" / "data" / "astronaut.jpg"))
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "readme-before-after.png"))
    p.add_argument("--mode", default="balanced", help="inversion mode: fast | balanced | best")
    p.add_argument("--size", type=int, default=256, help="pixels per panel")
    a = p.parse_args(argv)

    bundle = load_bundle(a.bundle)
    editor = FaceEditor(bundle, cache_size=0)
    photo = load_image(a.photo)
    faces = editor.detect(photo)
    prepared = editor.prepare(photo, faces="largest", mode=a.mode, detected=faces)
    square = face_square(max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).box, photo.size)
    from faceapp.edits.presets import years_presets

    asked = years_presets(bundle.directions) if bundle.years_by_age else {}
    panels, labels = [], []
    for label, edits in edits_for(bundle):
        y = next((v for k, v in asked.items() if k.lower() == label), None)
        if y is not None:  # a preset in years: this face's own strength for them, labelled with what it reads
            per_face, got = editor.years_strengths(prepared, y)
            edits, label = per_face[0], f"{'older' if y > 0 else 'younger'} ({got[0]:+.0f} years)"
        labels.append(label)
        im = photo if not edits else editor.compose(photo, prepared, edits)
        panel = im.crop(square).resize((a.size, a.size), Image.Resampling.LANCZOS)
        band = Image.new("RGB", (a.size, 24), "white")
        ImageDraw.Draw(band).text((8, 5), label.replace("\u2212", "-"), fill="black")  # the default font has no U+2212
        col = Image.new("RGB", (a.size, a.size + 24), "white")
        col.paste(panel, (0, 0))
        col.paste(band, (0, a.size))
        panels.append(np.asarray(col))
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    strip.save(a.out)
    print(f"wrote {a.out}: {', '.join(labels)} ({a.mode} mode)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
