"""Benchmark edits on CPU: one slider edit (apply + render) and a 12-frame age timeline.

    python -m bench.edit --bundle path/to/bundle      # a trained bundle (its G and directions)
    python -m bench.edit                              # no bundle: RANDOM weights, labelled as such

Without --bundle the generator has the demo architecture (bench/generator.py's 'demo128': 128 px,
w_dim 256) with random weights, and the directions are random unit vectors calibrated on its latents:
the speed of an edit does not depend on the weights, but nothing rendered is a face. --preset tiny
uses the 64 px stand-in of faceapp.bundle.make_random_bundle instead.

Timed (median of --iters runs under torch.inference_mode, after warm-up), wall and process-CPU ms:
- apply: apply_edits(ws [1, num_ws, w_dim], {age, smile}, hold=[gender, glasses]);
- edit: apply + G.synthesis of the one edited code (what a slider move costs);
- timeline: faceapp.edits.timeline (12 codes) + rendering them in one batch.

--figures (with --bundle): the issue's edit figures, on the photo the user gets back. The 50 held-out
faces of training/labels/utkface-heldout-eval.txt (--faces N: the first N) and the public-domain
astronaut (the White House test photos ask not to be altered, so they are never edited here) go
through FaceEditor (fast mode unless --mode; the difference paste-back unless --paste render) and
are aged by --years (default 30, converted with the bundle's years calibration; refused without one
unless --strength S is given instead); on the same UTKFace-style crop of photo and result
(training/calibrate_years.PhotoMeter) the project's age labeler (--age-gender-model) gives the age
change and dlib's descriptors the identity distance. Printed: the share of faces whose labeler age
went up by >= 20 years and the share still the same person (< 0.6). --attribute smile=1.8,3.6,6 (or
glasses=...) adds, per strength, the share of faces its labeler reads as smiling (wearing glasses) on the
returned photo, among all and among those it did not read so at strength 0.
Grids go to --grids (default scratch/bench-edit; UTKFace-derived: never commit them): each direction at
- and + on 16 held-out faces, and an aging timeline; --docs-img DIR also writes the astronaut's.

    python -m bench.edit --bundle models/demo --figures --age-gender-model runs/labelers/age_gender.safetensors
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from faceapp.edits import Direction, DirectionSet, apply_edits, timeline


def random_demo(preset: str, seed: int = 0):
    """(G, directions, label) with random weights: the demo128 architecture or the tiny stand-in."""
    if preset == "tiny":
        from faceapp.bundle import load_bundle, make_random_bundle

        tmp = tempfile.mkdtemp(prefix="faceapp-bench-")
        b = load_bundle(make_random_bundle(Path(tmp) / "bundle", resolution=64, seed=seed))
        return b.G, b.directions, "RANDOM tiny stand-in bundle (64 px, untrained: timings only)"
    from bench.generator import PRESETS, build

    cfg = PRESETS["demo128"]
    torch.manual_seed(seed)
    G = build(cfg, torch.device("cpu"))
    with torch.no_grad():
        w = G.mapping(torch.randn(2048, G.z_dim), None)[:, 0]  # [2048, w_dim]
    rng = np.random.default_rng(seed)
    dirs = DirectionSet([Direction(n, rng.standard_normal(G.w_dim)) for n in ("age", "smile", "glasses", "gender")])
    return G, dirs.calibrated(w), "RANDOM weights, demo128 architecture (no trained bundle: timings only)"


def timed(fn, iters: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall ms and median process-CPU ms of fn()."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        wall, cpu = [], []
        for _ in range(iters):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(1000 * (time.perf_counter() - t0))
            cpu.append(1000 * (time.process_time() - c0))
    return float(np.median(wall)), float(np.median(cpu))


SAME_PERSON = 0.6
GLASSES_MODEL = "runs/labelers/glasses.safetensors"


def _sheet(rows, pad: int = 2):
    """PIL image of equally sized uint8 crops: rows of columns."""
    from PIL import Image

    h, w = rows[0][0].shape[:2]
    sheet = np.full((len(rows) * (h + pad), len(rows[0]) * (w + pad), 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return Image.fromarray(sheet)


def _true_age(name: str) -> int | None:
    from training.utkface import parse_utkface_name

    labels = parse_utkface_name(name)
    return labels["age"] if labels else None


def _face_edit(editor, prepared, strengths: dict, years: float | None):
    """`strengths`, or with `years` each prepared face's own strengths for them (its curve by age)."""
    if years is None:
        return strengths
    return editor.years_strengths(prepared, years, {k: v for k, v in strengths.items() if k != "age"})[0]


def photo_figures(editor, meter, photos, edits: dict, *, mode="fast", greyscale: int = 0, progress=print,
                  years: dict | None = None) -> dict:
    """Each edit measured on the photo the user gets back, per face, by measures the edits were not made with.

    photos: [(name, PIL)]; edits: {label: {direction: strength}}. Per face and edit: the age estimator's change
    (and the kNN labeler's, when the meter has one), dlib's identity distance to the photo, the skin tone's
    CIE76 ΔE (cheeks, nose, mouth), the detail energy of the change (training/measures.detail_energy), and the
    face's chroma; plus the time a fast-mode "+30 years" takes per face (detect, align, invert, edit, render,
    paste). `greyscale`: the first N photos also go through as greyscale photos (their faces' chroma after each
    edit). years: {label: years} for the edits that ask for years (the age presets): each face gets its own
    strength for them, as the app gives it. Returns {'faces': [{name, true_age, age0, seconds, edits: {label:
    {...}}}], 'grey': [...]}.
    """
    years = years or {}
    from faceapp.errors import FaceAppError
    from training.measures import delta_e, detail_energy

    rows, grey_rows = [], []
    t_all = time.perf_counter()
    for i, (name, photo) in enumerate(photos):
        variants = [("colour", photo)] + ([("grey", photo.convert("L").convert("RGB"))] if i < greyscale else [])
        for kind, im in variants:
            try:
                t0 = time.perf_counter()
                faces = editor.detect(im)
                prepared = editor.prepare(im, faces="largest", mode=mode, detected=faces)
                first = next(iter(edits))
                results = {first: editor.compose(im, prepared, _face_edit(editor, prepared, edits[first],
                                                                          years.get(first)))}
                seconds = time.perf_counter() - t0
                results.update({k: editor.compose(im, prepared, _face_edit(editor, prepared, v, years.get(k)))
                                for k, v in edits.items() if k != first})
            except FaceAppError as e:
                progress(f"  {name} ({kind}): {e}")
                continue
            views = meter.views(faces[0], [im, *results.values()])
            m = meter.measure(views)
            if kind == "grey":
                chroma = {k: float(m["chroma"][j + 1]) for j, k in enumerate(results)}
                grey_rows.append({"name": name, "chroma": chroma})
                continue
            row = {"name": name, "true_age": _true_age(name), "age0": float(m["age"][0]), "seconds": seconds,
                   "edits": {}}
            for j, k in enumerate(results, start=1):
                row["edits"][k] = {
                    "age_change": float(m["age"][j] - m["age"][0]),
                    "knn_age_change": float(m["age_knn"][j] - m["age_knn"][0]),
                    "distance": float(np.linalg.norm(m["desc"][j] - m["desc"][0])),
                    "skin_delta_e": delta_e(m["skin_lab"][0], m["skin_lab"][j]),
                    # the kNN labeler's P(female) before and after: an edit must not change who someone is
                    "p_female": [float(m["p_female"][0]), float(m["p_female"][j])],
                    "detail_energy": detail_energy(views[0], views[j], m["landmarks"][0]),
                }
            rows.append(row)
        if (i + 1) % 10 == 0:
            progress(f"  {i + 1}/{len(photos)} photos ({time.perf_counter() - t_all:.0f} s)")
    return {"faces": rows, "grey": grey_rows}


def summarise(fig: dict, edits: dict, *, older: str | None, younger: str | None, progress=print) -> dict:
    """Print and return the issue's figures from `photo_figures`' output."""
    rows = fig["faces"]
    out = {"faces": len(rows), "seconds_per_face_median": float(np.median([r["seconds"] for r in rows]))}
    progress(f"{len(rows)} faces; time per face (detect + align + invert + edit + render + paste): median "
             f"{out['seconds_per_face_median']:.3f} s")
    progress(f"{'edit':<16} {'faces':>5} {'age chg':>8} {'kNN chg':>8} {'>=+15':>6} {'>=+20':>6} {'same':>5} "
             f"{'dE<5':>5} {'dE med':>6} {'detail':>7} {'gender':>6}")
    for label in edits:
        sel = rows
        if label == younger:
            sel = [r for r in rows if (r["true_age"] or 0) >= 40]  # rejuvenation is measured on 40+ faces
        if not sel:
            continue
        e = [r["edits"][label] for r in sel]
        a = np.array([x["age_change"] for x in e])
        k = np.array([x["knn_age_change"] for x in e])
        d = np.array([x["distance"] for x in e])
        de = np.array([x["skin_delta_e"] for x in e])
        hf = np.array([x["detail_energy"] for x in e])
        pf = np.array([x.get("p_female", [np.nan, np.nan]) for x in e], np.float64)
        known = np.isfinite(pf).all(1)
        row = {"faces": len(e), "median_age_change": float(np.median(a)),
               "median_knn_age_change": float(np.nanmedian(k)) if np.isfinite(k).any() else None,
               "age_up_15": float(np.mean(a >= 15)), "age_up_20": float(np.mean(a >= 20)),
               "same_person": float(np.mean(d < SAME_PERSON)), "skin_delta_e_below_5": float(np.mean(de < 5)),
               "median_skin_delta_e": float(np.median(de)), "median_detail_energy": float(np.median(hf)),
               "gender_kept": float(np.mean((pf[known, 0] >= 0.5) == (pf[known, 1] >= 0.5))) if known.any() else None,
               "subset": "true age >= 40" if label == younger else "all"}
        out[label] = row
        knn = "" if row["median_knn_age_change"] is None else f"{row['median_knn_age_change']:+.1f}"
        progress(f"{label:<16} {len(e):>5} {row['median_age_change']:>+8.1f} {knn:>8} "
                 f"{100 * row['age_up_15']:>5.0f}% {100 * row['age_up_20']:>5.0f}% {100 * row['same_person']:>4.0f}% "
                 f"{100 * row['skin_delta_e_below_5']:>4.0f}% {row['median_skin_delta_e']:>6.1f} "
                 f"{row['median_detail_energy']:>7.2f} "
                 + ("" if row["gender_kept"] is None else f"{100 * row['gender_kept']:>5.0f}%"))
    if fig["grey"]:
        worst = {lab: float(max(g["chroma"][lab] for g in fig["grey"])) for lab in edits}
        out["greyscale_max_chroma"] = worst
        progress(f"greyscale photos ({len(fig['grey'])}): face chroma after each edit, worst: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in worst.items()))
    return out


def prepared_photos(editor, photos, mode="fast"):
    """(name, photo, faces, prepared) for each of `photos` ([(name, PIL)]) whose largest face the editor detects
    and prepares in `mode`; a photo it cannot (a FaceAppError: no face, ...) is skipped."""
    from faceapp.errors import FaceAppError

    for name, photo in photos:
        try:
            faces = editor.detect(photo)
            prepared = editor.prepare(photo, faces="largest", mode=mode, detected=faces)
        except FaceAppError:
            continue
        yield name, photo, faces, prepared


def attribute_figures(editor, meter, photos, name: str, strengths, *, mode="fast", progress=print) -> dict:
    """Smile or glasses on the returned photo: the labeler's share at each strength, and who stays the same person.

    photos: [(name, PIL)]. The smile labeler is the landmark one, glasses the HOG one (runs/labelers/glasses
    .safetensors, from `python -m training.labelers fit-glasses`). Returns {strength: {share, share_of_none,
    same_person}} where share_of_none is the share among the faces the labeler says do not have it at strength 0.
    """
    from training.face_labels import GlassesModel, find_landmarks, glasses_hog, smile_score

    if name == "smile":
        def score(crop, lm):
            return smile_score(lm)
    else:
        gm = GlassesModel.load(GLASSES_MODEL)

        def score(crop, lm):
            return float(gm.logit(glasses_hog(crop, lm)[None])[0])
    scores, dists = [], []
    for _n, photo, faces, prepared in prepared_photos(editor, photos, mode):
        crops = meter.views(faces[0], [editor.compose(photo, prepared, {name: float(v)} if v else {})
                                       for v in [0.0, *strengths]])
        m = meter.measure(crops)
        scores.append([score(c, find_landmarks(c)[0]) for c in crops])
        dists.append([float(np.linalg.norm(d - m["desc"][0])) for d in m["desc"]])
    sc, di = np.array(scores), np.array(dists)  # [faces, 1 + len(strengths)]
    none = sc[:, 0] <= 0
    out = {}
    for j, v in enumerate([0.0, *strengths]):
        row = {"share": float(np.mean(sc[:, j] > 0)), "share_of_none": float(np.mean(sc[none, j] > 0)),
               "same_person": float(np.mean(di[:, j] < SAME_PERSON)), "faces": int(len(sc)), "none": int(none.sum())}
        out[f"{v:g}"] = row
        progress(f"{name} {v:+5.2f}: {100 * row['share']:.0f} % of {row['faces']} faces; of the {row['none']} "
                 f"without it at 0: {100 * row['share_of_none']:.0f} %; same person {100 * row['same_person']:.0f} %")
    return out


def edit_grids(editor, meter, photos, edits: dict, timeline_edits: list, folder, *, mode="fast",
               age_years: tuple | None = None) -> list:
    """Contact sheets in `folder`: per direction one row per face of [-, photo, +], and an aging timeline.

    edits: {name: (minus strength, plus strength)}; timeline_edits: age strengths for the timeline's columns;
    age_years: (minus, plus) years for the age row instead, each face by its own curve (the app's presets).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = {n: [] for n in edits}
    tl_rows = []
    for _name, photo, faces, prepared in prepared_photos(editor, photos, mode):
        for n, (lo, hi) in edits.items():
            ends = ({n: lo}, {n: hi})
            if n == "age" and age_years is not None:
                ends = tuple(_face_edit(editor, prepared, {}, y) for y in age_years)
            ims = [editor.compose(photo, prepared, ends[0]), photo, editor.compose(photo, prepared, ends[1])]
            rows[n].append(meter.views(faces[0], ims))
        if len(tl_rows) < 4:
            ims = [editor.compose(photo, prepared, {"age": s} if s else {}) for s in timeline_edits]
            tl_rows.append(meter.views(faces[0], ims))
    written = []
    for n, r in rows.items():
        if r:
            _sheet(r).save(folder / f"grid-{n}.png")
            written.append(folder / f"grid-{n}.png")
    if tl_rows:
        _sheet(tl_rows).save(folder / "timeline-age.png")
        written.append(folder / "timeline-age.png")
    return written


def _per_face(dirs) -> bool:
    """Whether the age presets of `dirs` ask for years each face converts with its own curve (by_age)."""
    from faceapp.edits import has_years

    return has_years(dirs, "age") and dirs["age"].years.by_age is not None


def figure_edits(dirs, args) -> tuple[dict, str, str]:
    """{label: {direction: strength}} the figures measure: the app's presets (faceapp.edits.presets: "+30 years"
    and "−20 years" when the calibrated model reaches them inside its slider, else "Older (+N years)" at the
    slider's end), every direction at its slider's ends, and --strength when given; and the labels of the
    older and younger age edits."""
    from faceapp.edits import has_years, years_to_strength
    from faceapp.edits.presets import presets

    edits = {f"preset {label}": st for label, st in presets(dirs).items()}
    per_face = _per_face(dirs)
    if per_face:
        print("note: the age presets ask for years, and each face gets its own strength for them (the calibration's "
              "curve for how old it looks, held to the slider's range)")
    if args.strength is not None:
        edits[f"age {args.strength:+g}"] = {"age": args.strength}
    if has_years(dirs, "age"):
        lo, hi = dirs["age"].strength_range
        for y in (args.years, -20.0):
            st = years_to_strength(dirs, "age", y)
            if not lo <= st <= hi and not per_face:
                print(f"note: {y:+g} years needs age strength {st:+.1f}, past the slider's {lo:g}..{hi:g} (the "
                      "renders break up there): measured at the slider's end instead")
    # (with curves by age the age presets' strengths are each face's own: the slider's ends are measured apart)
    taken = [v for k, v in edits.items() if not (per_face and set(v) == {"age"} and k.startswith("preset"))]
    for n in dirs:
        for v in dirs[n].strength_range:
            if {n: v} not in taken:
                edits[f"{n} {v:+g}"] = {n: v}
    ages = [(k, v["age"]) for k, v in edits.items() if set(v) == {"age"}]
    older = next((k for k, v in ages if k.startswith("preset") and v > 0), max(ages, key=lambda kv: kv[1])[0])
    younger = next((k for k, v in ages if k.startswith("preset") and v < 0), min(ages, key=lambda kv: kv[1])[0])
    return edits, older, younger


def _run_figures(args) -> int:
    import json

    from faceapp.bundle import load_bundle
    from faceapp.errors import FaceAppError
    from faceapp.pipeline import FaceEditor
    from training.age_estimator import load_age_estimator
    from training.age_gender import AgeGenderModel
    from training.calibrate_years import EVAL_FACES, UTKFACE_ZIP, PhotoMeter, heldout_photos, public_photos
    from training.utkface import read_name_list

    if not UTKFACE_ZIP.is_file():
        print(f"skipped: no UTKFace zip at {UTKFACE_ZIP}")
        return 0
    try:
        bundle = load_bundle(args.bundle)
        if args.no_detail or args.no_prototypes:
            import dataclasses

            bundle = dataclasses.replace(bundle, detail=None if args.no_detail else bundle.detail,
                                         age_prototypes=None if args.no_prototypes else bundle.age_prototypes)
        dirs = bundle.years_directions  # (curves by age only where the bundle reads a face's age, as the app)
        if "age" not in dirs:
            raise FaceAppError(f"bundle {args.bundle} has no age direction")
        knn = AgeGenderModel.load(args.age_gender_model) if Path(args.age_gender_model).is_file() else None
        meter = PhotoMeter(knn, age_estimator=load_age_estimator(args.age_model))
    except FaceAppError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kwargs = {}
    if args.steps is not None:
        from faceapp.inversion import InvertConfig

        n = args.steps
        kwargs["config"] = InvertConfig(fast_steps_no_encoder=n, balanced_steps=n, balanced_w_steps_no_encoder=n,
                                        balanced_wplus_steps_no_encoder=n, pti_steps=n)
    editor = FaceEditor(bundle, cache_size=0, invert_kwargs=kwargs, paste=args.paste,
                        paste_kwargs={"colour": args.colour, "motion": args.motion})
    held = list(heldout_photos(UTKFACE_ZIP, read_name_list(EVAL_FACES)[: args.faces]))
    edits, older, younger = figure_edits(dirs, args)
    from faceapp.edits.presets import years_presets

    years_of = {f"preset {k}": v for k, v in years_presets(dirs).items()} if _per_face(dirs) else {}
    stage = f"detail stage {editor.detail_resolution} px" if bundle.detail else "no detail stage"
    if bundle.age_prototypes is not None:
        stage += ", age prototypes " + json.dumps(bundle.meta.get("age_prototypes_options"))
    print(f"bundle {args.bundle} ({stage}); "
          f"mode {args.mode}; paste {args.paste}, colour {args.colour}; {len(held)} held-out faces + the astronaut; "
          f"age measured by {args.age_model}" + (f", kNN second opinion {args.age_gender_model}" if knn else ""))
    record = {"bundle": args.bundle, "detail": bundle.detail is not None, "mode": args.mode, "paste": args.paste,
              "colour": args.colour, "motion": args.motion, "edits": edits, "years": years_of}
    for set_name, photos, grey in (("utkface-heldout-eval", held, 16),
                                   ("public-domain (astronaut)", public_photos(editable_only=True), 1)):
        print(f"== {set_name}")
        fig = photo_figures(editor, meter, photos, edits, mode=args.mode, greyscale=grey, years=years_of)
        record[set_name] = {"summary": summarise(fig, edits, older=older, younger=younger), "per_face": fig}
    for spec in args.attribute:
        name, _, vals = spec.partition("=")
        if name not in ("smile", "glasses") or name not in dirs:
            print(f"--attribute {spec}: smile or glasses, a direction of the bundle", file=sys.stderr)
            return 2
        record[f"attribute_{name}"] = attribute_figures(editor, meter, held, name,
                                                        [float(v) for v in vals.split(",") if v], mode=args.mode)
    if not args.no_grids:
        grid_edits = {n: tuple(dirs[n].strength_range) for n in dirs}  # each slider's ends
        grid_edits["age"] = (edits[younger]["age"], edits[older]["age"])  # the app's age presets
        tl = list(np.linspace(*dirs["age"].strength_range, 7))
        age_years = (years_of[younger], years_of[older]) if younger in years_of and older in years_of else None
        written = edit_grids(editor, meter, held[:16], grid_edits, tl, args.grids, mode=args.mode,
                             age_years=age_years)
        if args.docs_img:
            written += edit_grids(editor, meter, public_photos(editable_only=True), grid_edits, tl, args.docs_img,
                                  mode=args.mode, age_years=age_years)
        print("grids (look at them; UTKFace-derived ones stay out of git): " + ", ".join(str(w) for w in written))
    Path(args.grids).mkdir(parents=True, exist_ok=True)
    (Path(args.grids) / "figures.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {Path(args.grids) / 'figures.json'}")
    return 0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle folder / checkpoint / repo id (faceapp.bundle.load_bundle)")
    p.add_argument("--preset", choices=["demo128", "tiny"], default="demo128", help="random stand-in without --bundle")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--figures", action="store_true", help="the issue's edit figures and grids (needs --bundle)")
    p.add_argument("--years", type=float, default=30.0, help="with --figures: the age edit in years")
    p.add_argument("--strength", type=float, default=None, help="with --figures: an age strength instead of years")
    p.add_argument("--faces", type=int, default=50, help="with --figures: the first N held-out faces")
    p.add_argument("--mode", default="fast", help="with --figures: inversion mode")
    p.add_argument("--attribute", action="append", default=[], metavar="NAME=S1,S2,...",
                   help="with --figures: also smile or glasses at these strengths on the held-out faces, as "
                        "their labelers read the returned photo, e.g. smile=1.8,3.6,6")
    p.add_argument("--paste", default="difference", choices=["difference", "render"],
                   help="with --figures: how results go back into the photo (FaceEditor's paste)")
    p.add_argument("--steps", type=int, default=None, help="with --figures: optimisation steps per stage")
    p.add_argument("--age-model", default="models/age/age_estimator.safetensors",
                   help="with --figures: the age estimator (training/age_estimator.py), the project's age measure")
    p.add_argument("--age-gender-model", default="runs/labelers/age_gender.safetensors",
                   help="with --figures: the kNN age labeler, a second opinion (skipped when the file is absent)")
    p.add_argument("--colour", default="keep", choices=["keep", "add"],
                   help="with --figures: the difference paste-back's colour handling (add: as before)")
    p.add_argument("--motion", action=argparse.BooleanOptionalAction, default=False,
                   help="with --figures: the paste-back moves the photo's features as the render's moved")
    p.add_argument("--no-prototypes", action="store_true",
                   help="with --figures: leave the bundle's age prototypes out (the generator ages alone)")
    p.add_argument("--no-detail", action="store_true", help="with --figures: leave the bundle's detail stage out")
    p.add_argument("--no-grids", action="store_true", help="with --figures: figures only")
    p.add_argument("--grids", default="scratch/bench-edit", help="with --figures: folder for the grids")
    p.add_argument("--docs-img", default=None, help="with --figures: also the astronaut's grids here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.figures:
        if not args.bundle:
            p.error("--figures needs --bundle")
        raise SystemExit(_run_figures(args))

    if args.bundle:
        from faceapp.bundle import load_bundle

        b = load_bundle(args.bundle)
        G, dirs = b.G, b.directions
        label = f"bundle {args.bundle}" + (" (UNTRAINED stand-in)" if b.untrained else "")
    else:
        G, dirs, label = random_demo(args.preset)
    G = G.eval().requires_grad_(False)
    names = list(dirs)
    edit_names = [n for n in ("age", "smile") if n in dirs] or names[:1]
    hold = [n for n in ("gender", "glasses") if n in dirs and n not in edit_names]
    strengths = {n: 1.5 for n in edit_names}
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)), None)  # [1, num_ws, w_dim]

    apply_ms = timed(lambda: apply_edits(ws, dirs, strengths, hold=hold), args.iters)
    render_ms = timed(lambda: G.synthesis(ws, noise_mode="const"), args.iters)
    edit_ms = timed(lambda: G.synthesis(apply_edits(ws, dirs, strengths, hold=hold), noise_mode="const"), args.iters)
    values = np.linspace(-3, 3, args.frames)
    tl_name = "age" if "age" in dirs else names[0]
    tl_hold = [n for n in hold if n != tl_name]
    tl_ms = timed(
        lambda: G.synthesis(timeline(ws, dirs, tl_name, values, hold=tl_hold), noise_mode="const"),
        max(3, args.iters // 3),
        warmup=1,
    )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{label}")
    print(f"G: {G.img_resolution} px, w_dim {G.w_dim}, num_ws {G.num_ws}; directions: {', '.join(names)}")
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} of "
        f"{os.cpu_count()} CPU threads, load average {load:.2f}"
    )
    print(f"edit: {', '.join(f'{k}={v:+g}' for k, v in strengths.items())}, holding {', '.join(hold) or 'nothing'}")
    print(f"{'case':<34} {'wall ms':>9} {'cpu ms':>9}")
    for case, (w_ms, c_ms) in [
        ("apply_edits (1 code)", apply_ms),
        ("render (G.synthesis, 1 code)", render_ms),
        ("slider edit = apply + render", edit_ms),
        (f"timeline {args.frames} frames (total)", tl_ms),
    ]:
        print(f"{case:<34} {w_ms:>9.2f} {c_ms:>9.2f}")
    print(f"{'timeline per frame':<34} {tl_ms[0] / args.frames:>9.2f} {tl_ms[1] / args.frames:>9.2f}")


if __name__ == "__main__":
    main()
