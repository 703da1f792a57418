"""Calibrate a bundle's age direction in years, on held-out photos, as the project's age labeler reads them.

    python -m training.calibrate_years --bundle models/demo --age-gender-model runs/labelers/age_gender.safetensors
    python -m training.calibrate_years --bundle B --num 4 --steps 5 --dry-run     # a quick end-to-end check

For each of the held-out faces (default: the 50 of training/labels/utkface-heldout-eval.txt, read from
../shared/data/utkface/utkface-200px.zip at run time; nothing derived from them is committed):

1. the photo goes through FaceEditor as a user's would: detect, align, invert (`--mode`, default fast: the
   encoder when the bundle has one, else the short optimisation), age at each strength of `--strengths`,
   render, and the difference paste-back onto the photo (what the user gets back);
2. the labeler views the face of the photo and of each result through the same UTKFace-style crop (the
   crop of the face found in the photo, cut from both), and estimates its age (training/labelers.py: dlib
   descriptor -> k nearest UTKFace training photos);
3. per face, the change in estimated age against strength is fitted by a robust line through the origin
   (scikit-learn's HuberRegressor), then the same pooled over faces, on each side of 0, and free (intercept);
   the spread is the std of the faces' slopes (faceapp.edits.fit_years_calibration); a 2-fold check across
   faces says how far a slope fitted on half the faces misses the other half's median changes.

The calibration is written into the bundle's directions/ (the age direction's `calibration`; --dry-run
leaves the bundle alone), and into --out: calibration.json (the numbers, per-face rows), calibration.png
(the curve), options.json, and the markdown table docs/EDITS.md quotes.

The labeler must never have been fitted on these faces: its recorded held-out lists are checked
(fit-age-gender leaves both training/labels/utkface-heldout-*.txt out by default), and each face's own
descriptor must not be among its training descriptors (a distance of ~0 means that photo was fitted on).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceapp.errors import FaceAppError
from training.options import add_options, layered_values, opt, run_main
from training.utkface import LABELS_DIR

__all__ = [
    "CalibrateOptions",
    "PhotoMeter",
    "age_series",
    "calibrate",
    "heldout_photos",
    "public_photos",
    "main",
    "markdown_table",
    "plot_calibration",
]

ROOT = Path(__file__).resolve().parents[1]
UTKFACE_ZIP = ROOT.parent / "shared" / "data" / "utkface" / "utkface-200px.zip"
EVAL_FACES = LABELS_DIR / "utkface-heldout-eval.txt"
LEAK_DISTANCE = 1e-3  # a held-out photo this close to a labeler training descriptor is that very photo


def _floats(text: str) -> tuple[float, ...]:
    """'-3,0,3' -> (-3.0, 0.0, 3.0)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes numbers like -3,-1,0,1,3; got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    """'gender,glasses' -> ('gender', 'glasses')."""
    return tuple(h for h in text.split(",") if h.strip())


@dataclass(frozen=True)
class CalibrateOptions:
    bundle: str = opt(dataclasses.MISSING, "bundle folder with an age direction (its directions/ is updated)",
                      required=True)
    out: str = opt("scratch/calibration", "folder for calibration.json/.png/.md (not git)")
    age_gender_model: str = opt("runs/labelers/age_gender.safetensors",
                                "the kNN age labeler: the age measure with --age-model '', else a second opinion")
    age_model: str = opt("models/age/age_estimator.safetensors",
                         "the age estimator (training/age_estimator.py): the project's age measure")
    faces: str = opt(str(EVAL_FACES), "held-out face names, one a line")
    zip: str = opt(str(UTKFACE_ZIP), "UTKFace 200 px zip")
    num: int | None = opt(None, "only the first N faces of the list (quick checks)")
    per_band: int | None = opt(None, "draw this many faces of each true-age band of DRAW_BANDS from the list "
                               "(seeded): the by-age curves need children and old faces, which a list has few of")
    seed: int = opt(0, "seed of --per-band's draw")
    strengths: tuple[float, ...] = opt((-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0), "age strengths to measure (include 0)",
                                       type=_floats)
    mode: str = opt("fast", "inversion mode: fast | balanced | best")
    steps: int | None = opt(None, "optimisation steps per stage (default: the mode's)")
    hold: tuple[str, ...] = opt((), "directions held fixed while aging, e.g. gender,glasses", type=_names)
    write: bool = opt(True, "measure and report; leave the bundle as it is", flag="--dry-run", action="store_false")
    allow_unchecked_labeler: bool = opt(False, "accept a labeler that does not record leaving the held-out faces out",
                                        action="store_true")
    threads: int = opt(1, "torch CPU threads")
    device: str = opt("cpu", "torch device")


# ----------------------------------------------------------------------------- photos and measuring


#: Public-domain test photos (tests/data/SOURCES.md). The White House ones ask not to be altered: they are
#: measured unedited only (zero-edit identity); edits are measured and shown on the astronaut alone.
PUBLIC_PHOTOS = ("astronaut.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
PUBLIC_EDITABLE = ("astronaut.jpg",)


def public_photos(editable_only: bool = False):
    """[(name, PIL photo)] of the public-domain test photos (the editable one only, with `editable_only`)."""
    from faceapp.imageio import load_image

    names = PUBLIC_EDITABLE if editable_only else PUBLIC_PHOTOS
    return [(n, load_image(ROOT / "tests" / "data" / n)) for n in names if (ROOT / "tests" / "data" / n).is_file()]


def heldout_photos(zip_path, names):
    """Yield (name, PIL RGB photo) for each file name in `names` from the UTKFace zip (FaceAppError if absent)."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as z:
        members = {Path(n).name: n for n in z.namelist()}
        missing = [n for n in names if Path(n).name not in members]
        if missing:
            raise FaceAppError(f"{len(missing)} held-out photos are not in {zip_path}, e.g. {missing[0]}")
        for n in names:
            yield n, Image.open(io.BytesIO(z.read(members[Path(n).name]))).convert("RGB")


class PhotoMeter:
    """What the project's measures read on a face in a photo and in the results made from it.

    Each image is seen through the same UTKFace-style crop (`utkface_spec(size)`) of the face found in the
    original photo, so photo and results are compared at the same place; on it the 68 landmarks are found in
    the aligned box. Then: the age estimator (training/age_estimator.py, MobileNetV2 on the pixels: the
    project's age measure) gives 'age'; dlib's descriptor gives the identity distance (euclidean between
    descriptors; < 0.6 = the same person to dlib) and, with `age_gender` (the kNN labeler, a second opinion),
    'age_knn' and P(female); training/measures.py gives the skin tone (mean CIELAB of cheeks, nose, mouth)
    and the face's chroma. Without an estimator, 'age' is the kNN's (as before).
    """

    def __init__(self, age_gender=None, face_net=None, size: int = 200, age_estimator=None):
        from faceapp.align import utkface_spec

        if face_net is None:
            from faceapp.inversion.dlib_resnet import load_dlib_face_resnet

            face_net = load_dlib_face_resnet()
        self.age_gender, self.face_net, self.spec = age_gender, face_net, utkface_spec(size)
        self.age_estimator = age_estimator

    def views(self, face, images) -> list[np.ndarray]:
        """RGB uint8 [size, size, 3] crops of `face` (a faceapp.align.Face of the photo) from each image."""
        from faceapp.align import align_face

        return [np.asarray(align_face(im, face, self.spec).image) for im in images]

    def measure(self, crops) -> dict[str, np.ndarray]:
        """{'age': [N], 'age_knn': [N], 'p_female': [N], 'desc': [N, 128], 'skin_lab': [N, 3], 'chroma': [N],
        'landmarks': [N, 68, 2]} of labeler-view crops (NaN where a measure has no model)."""
        from training.age_gender import face_descriptors
        from training.face_labels import find_landmarks
        from training.measures import face_chroma, mean_skin_lab

        lms = [find_landmarks(c)[0] for c in crops]
        desc = face_descriptors(list(crops), lms, self.face_net)
        nan = np.full(len(desc), np.nan)
        out = {"desc": desc, "age_knn": nan, "p_female": nan, "landmarks": np.stack(lms),
               "skin_lab": np.stack([mean_skin_lab(c, lm) for c, lm in zip(crops, lms)]),
               "chroma": np.array([face_chroma(c, lm) for c, lm in zip(crops, lms)])}
        if self.age_gender is not None:
            out["age_knn"] = self.age_gender.age(desc)
            out["p_female"] = self.age_gender.p_female(desc)
        if self.age_estimator is not None:
            from faceapp.stylegan.age_estimator import estimate_ages

            out["age"] = estimate_ages(self.age_estimator, list(crops))
        else:
            out["age"] = out["age_knn"]
        return out

    def raw(self, images) -> dict[str, np.ndarray]:
        """The same for whole images that already are UTKFace crops (as the labeler was fitted on them)."""
        return self.measure([np.asarray(im) for im in images])


def age_series(editor, photo, strengths, *, mode: str = "fast", hold=(), extra: dict | None = None):
    """(Face, [PIL results]) of `photo`'s largest face aged by each strength, as the user gets them back.

    Strength 0 (with no `extra` edits) is the photo itself: the difference paste-back adds nothing.
    """
    faces = editor.detect(photo)
    prepared = editor.prepare(photo, faces="largest", mode=mode, detected=faces)
    out = []
    for s in strengths:
        edits = {**(extra or {}), "age": float(s)}
        out.append(editor.compose(photo, prepared, {k: v for k, v in edits.items() if v}, hold=hold))
    return faces[0], out


#: True-age bands of --per-band's draw (years; the last edge is past UTKFace's oldest).
DRAW_BANDS = (1, 13, 25, 38, 50, 62, 117)


def draw_per_band(names, per_band: int, seed: int = 0) -> list[str]:
    """Up to `per_band` of `names` (UTKFace file names: the true age leads) from each band of DRAW_BANDS, drawn
    with `seed`, in the list's own order."""
    from training.utkface import parse_utkface_name

    rng = np.random.default_rng(seed)
    ages = np.array([(parse_utkface_name(n) or {"age": -1})["age"] for n in names])
    keep = []
    for lo, hi in zip(DRAW_BANDS, DRAW_BANDS[1:]):
        idx = np.flatnonzero((ages >= lo) & (ages < hi))
        keep += rng.permutation(idx)[:per_band].tolist()
    return [names[i] for i in sorted(keep)]


def check_labeler(age_gender, names, meter=None, photos=None, allow_unchecked: bool = False,
                  whole=None) -> list[str]:
    """Refuse an age labeler that may have been fitted on the held-out `names`; returns notes.

    Two checks: the labeler's record of the lists it left out (fit-age-gender writes it; `whole`: the list
    `names` were drawn from), and, with `photos` (PIL UTKFace crops of `names`), that no photo's own descriptor
    is among the labeler's training descriptors.
    """
    notes = []
    if whole is not None and not set(names) <= set(whole):
        raise FaceAppError("the faces measured are not all from the held-out list")
    if not age_gender.excludes(list(whole) if whole is not None else names):
        msg = ("the age labeler does not record leaving these held-out faces out; fit it again with "
               "python -m training.labelers fit-age-gender (it leaves training/labels/utkface-heldout-*.txt out)")
        if not allow_unchecked:
            raise FaceAppError(msg + ", or pass --allow-unchecked-labeler")
        notes.append("unchecked labeler: " + msg)
    if meter is not None and photos:
        near = age_gender.nearest_distance(meter.raw(photos)["desc"])
        leaked = [n for n, d in zip(names, near) if d < LEAK_DISTANCE]
        if leaked:
            raise FaceAppError(f"the age labeler was fitted on {len(leaked)} of the held-out photos "
                               f"(e.g. {leaked[0]}); fit it again without them")
    return notes


def check_estimator(path, names, whole=None) -> None:
    """Refuse an age estimator whose checkpoint does not record leaving the held-out `names` out (`whole`: the
    recorded list they were drawn from; default the eval list)."""
    from faceapp.stylegan.checkpoint import read_header
    from training.utkface import name_list_digest

    digests = (read_header(path).get("extra") or {}).get("excluded_digests") or {}
    if name_list_digest(names) not in set(digests.values()):
        # a sub-list (--num, --per-band) of a recorded list is fine too: check against the whole list
        whole = list(whole) if whole is not None else read_name_list_default()
        if not set(names) <= set(whole) or name_list_digest(whole) not in set(digests.values()):
            raise FaceAppError(f"the age estimator {path} does not record leaving the held-out faces out; train it "
                               "with python -m training.age_estimator train (it leaves training/labels/"
                               "utkface-heldout-*.txt out)")


def read_name_list_default() -> list[str]:
    from training.utkface import read_name_list

    return read_name_list(EVAL_FACES)


# ----------------------------------------------------------------------------- the calibration


def calibrate(editor, meter, photos, strengths, *, mode="fast", hold=(), fitted_on="", progress=print):
    """(YearsCalibration, rows) from photos [(name, PIL)], measured on what the user gets back.

    rows: per face {name, age0 (labeler on the photo), delta_years [S], identity [S] (descriptor distance of
    each result to the photo), or error}.
    """
    from faceapp.edits import fit_years_by_age, fit_years_calibration

    strengths = np.asarray(strengths, dtype=np.float64)
    rows, deltas = [], []
    bundle_estimator = getattr(editor.bundle, "age_estimator", None)
    t0 = time.perf_counter()
    for i, (name, photo) in enumerate(photos):
        try:
            face, results = age_series(editor, photo, strengths, mode=mode, hold=hold)
        except FaceAppError as e:
            rows.append({"name": name, "error": str(e)})
            continue
        views = meter.views(face, [photo, *results])
        m = meter.measure(views)
        age0, ages = float(m["age"][0]), m["age"][1:]
        dist = np.linalg.norm(m["desc"][1:] - m["desc"][0], axis=1)
        deltas.append(ages - age0)
        rows.append({"name": name, "age0": round(age0, 2), "delta_years": np.round(ages - age0, 2).tolist(),
                     "identity": np.round(dist, 3).tolist()})
        if bundle_estimator is not None:  # the rows are chosen by the bundle's own reading, as the editor will
            from faceapp.stylegan.age_estimator import estimate_ages

            rows[-1]["age_bundle"] = round(float(estimate_ages(bundle_estimator, [views[0]])[0]), 2)
        progress(f"  {i + 1}: {name}: labeler age {age0:.0f}, change at {strengths.max():+g}: "
                 f"{(ages - age0)[-1]:+.1f} years ({time.perf_counter() - t0:.0f} s)")
    if not deltas:
        raise FaceAppError("no held-out face could be measured (no face found in any photo)")
    dy = np.stack(deltas)  # [F, S]
    d = editor.bundle.directions["age"]
    cal = fit_years_calibration(strengths, dy, scale=d.scale, fitted_on=fitted_on, hold=hold)
    cal = dataclasses.replace(cal, checks={**cal.checks, **two_fold_check(strengths, dy, scale=d.scale)})
    if bundle_estimator is not None:
        # by the face's estimated age as the editor reads it, with the bundle's own estimator (the measure may be
        # another); a bundle without an estimator: the pooled line
        age_b = np.array([r["age_bundle"] for r in rows if "delta_years" in r])
        cal = dataclasses.replace(cal, by_age=fit_years_by_age(strengths, dy, age_b))
    return cal, rows


def two_fold_check(strengths, dy, *, scale) -> dict:
    """How well a slope fitted on half the faces predicts the other half's median age change (years, 2 folds)."""
    from faceapp.edits import fit_years_calibration

    F = dy.shape[0]
    if F < 4:
        return {}
    rng = np.random.default_rng(0)
    order = rng.permutation(F)
    folds = (order[: F // 2], order[F // 2 :])
    errs = []
    for a, b in (folds, folds[::-1]):
        try:
            cal = fit_years_calibration(strengths, dy[a], scale=scale)
        except FaceAppError:
            continue
        pred = np.array([s * cal.slope(np.sign(s)) for s in strengths])
        errs.append(np.abs(pred - np.nanmedian(dy[b], axis=0)))
    if not errs:
        return {}
    return {"two_fold_median_error_years": round(float(np.mean(errs)), 3),
            "two_fold_max_error_years": round(float(np.max(errs)), 3)}


def plot_calibration(cal, dy, strengths, path, title: str = "") -> Path:
    """PNG of the age changes (one dot per face and strength), their median and quartiles, and the fitted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.asarray(strengths, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, size=dy.shape)
    ax.scatter((s[None] + jitter).ravel(), dy.ravel(), s=8, alpha=0.35, color="tab:gray", label="one face")
    c = cal.curve
    ax.fill_between(c["strengths"], c["p25"], c["p75"], alpha=0.25, color="tab:blue", label="quartiles")
    ax.plot(c["strengths"], c["median"], "o-", color="tab:blue", label="median")
    xs = np.linspace(s.min(), s.max(), 50)
    ax.plot(xs, [x * cal.slope(np.sign(x)) for x in xs], "-", color="tab:red",
            label=f"fit: +{cal.slope(1):.1f} / {cal.slope(-1):.1f} years per strength")
    if cal.by_age:  # the curves the editor converts years with, by how old the face looks
        cmap = plt.get_cmap("viridis")
        b = cal.by_age
        for k, (a, row) in enumerate(zip(b["ages"], b["years"])):
            ax.plot(b["strengths"], row, "--", lw=1, color=cmap(k / max(len(b["ages"]) - 1, 1)),
                    label=f"looks {a:.0f}")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("age strength")
    ax.set_ylabel("labeler's age change (years)")
    ax.set_title(title or f"years calibration, {cal.n} held-out faces (spread of slopes {cal.spread:.1f})",
                 fontsize=9)
    ax.legend(fontsize=6, loc="upper left", ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_table(cal) -> str:
    """The calibration's numbers as the markdown docs/EDITS.md quotes."""
    c = cal.curve
    lines = ["| strength | median change (years) | quartiles | faces |", "| --- | --- | --- | --- |"]
    for s, med, lo, hi, n in zip(c["strengths"], c["median"], c["p25"], c["p75"], c["count"]):
        lines.append(f"| {s:+g} | {med:+.1f} | {lo:+.1f} .. {hi:+.1f} | {n} |")
    lines.append("")
    lines.append(f"years per strength: {cal.per_strength:.2f} pooled, {cal.slope(1):.2f} older side, "
                 f"{cal.slope(-1):.2f} younger side; spread of the faces' slopes {cal.spread:.2f} "
                 f"(so +30 years reads as +30 +- {30 * cal.spread / abs(cal.slope(1)):.0f} years across faces); "
                 f"residual {cal.residual_years:.1f} years; free-fit intercept {cal.intercept:+.2f}; "
                 f"{cal.n} faces; held {', '.join(cal.hold) or 'nothing'}")
    if cal.by_age:
        b = cal.by_age
        lines += ["", "By how old the face looks (the estimator on the unedited face; median change, years):", "",
                  "| looks (median) | faces | " + " | ".join(f"{v:+g}" for v in b["strengths"]) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in b["strengths"]) + " |"]
        for a, n, row in zip(b["ages"], b["n"] or [""] * len(b["ages"]), b["years"]):
            lines.append(f"| {a:.0f} | {n} | " + " | ".join(f"{v:+.1f}" for v in row) + " |")
        lines.append("")
    if cal.checks:
        ch = cal.checks
        lines.append(f"2-fold check across faces: median change missed by {ch.get('two_fold_median_error_years')} "
                     f"years on average (max {ch.get('two_fold_max_error_years')})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def run(opts: CalibrateOptions):
    from faceapp.bundle import load_bundle
    from faceapp.edits import DirectionSet, with_calibration
    from faceapp.pipeline import FaceEditor
    from training.age_gender import AgeGenderModel
    from training.utkface import read_name_list

    torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "options.json").write_text(json.dumps(dataclasses.asdict(opts), indent=2) + "\n")
    bundle = load_bundle(opts.bundle, device=opts.device)
    if "age" not in bundle.directions:
        raise FaceAppError(f"bundle {opts.bundle} has no age direction to calibrate")
    if bundle.root is None or not (Path(bundle.root) / "directions").is_dir():
        raise FaceAppError(f"{opts.bundle} is not a bundle folder with directions/ (nothing to write the "
                           "calibration into)")
    whole = read_name_list(opts.faces)
    names = draw_per_band(whole, opts.per_band, opts.seed) if opts.per_band else whole
    if opts.num is not None:
        names = names[: opts.num]
    estimator = None
    if opts.age_model:
        from training.age_estimator import load_age_estimator

        check_estimator(opts.age_model, names, whole)
        estimator = load_age_estimator(opts.age_model)
    # the kNN labeler: the age measure without an estimator, else a second opinion (when its file is there)
    ag = AgeGenderModel.load(opts.age_gender_model) if (not estimator or Path(opts.age_gender_model).is_file()) \
        else None
    meter = PhotoMeter(ag, age_estimator=estimator)
    photos = list(heldout_photos(opts.zip, names))
    notes = []
    if ag is not None:
        notes = check_labeler(ag, names, meter, [p for _, p in photos], allow_unchecked=opts.allow_unchecked_labeler,
                              whole=whole)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    kwargs = {}
    if opts.steps is not None:
        from faceapp.inversion import InvertConfig

        n = opts.steps
        kwargs["config"] = InvertConfig(fast_steps_no_encoder=n, balanced_steps=n, balanced_w_steps_no_encoder=n,
                                        balanced_wplus_steps_no_encoder=n, pti_steps=n)
    editor = FaceEditor(bundle, device=opts.device, cache_size=0, invert_kwargs=kwargs)
    how = "encoder" if bundle.encoder is not None else "optimisation"
    print(f"calibrating {bundle.name!r} ({bundle.resolution} px, fast mode = {how}) on {len(photos)} held-out "
          f"faces from {Path(opts.faces).name}, strengths {list(opts.strengths)}, hold {list(opts.hold) or 'none'}")
    cal, rows = calibrate(editor, meter, photos, opts.strengths, mode=opts.mode, hold=opts.hold,
                          fitted_on=f"{Path(opts.faces).name} ({len(photos)} faces, mode {opts.mode}, "
                          f"age measured by {Path(opts.age_model or opts.age_gender_model).name})")
    dy = np.array([r["delta_years"] for r in rows if "delta_years" in r])
    failed = [r for r in rows if "error" in r]
    doc = {"bundle": str(opts.bundle), "calibration": cal.to_dict(), "notes": notes,
           "failed": len(failed), "faces": rows}
    (out / "calibration.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot_calibration(cal, dy, opts.strengths, out / "calibration.png")
    table = markdown_table(cal)
    (out / "calibration.md").write_text(table + "\n")
    print(table)
    if failed:
        print(f"{len(failed)} face(s) not measured, e.g. {failed[0]['name']}: {failed[0]['error']}")
    if cal.per_strength <= 0:
        print("warning: positive strengths make faces look YOUNGER to the labeler: is this an age direction "
              "pointing older?", file=sys.stderr)
    if opts.write:
        folder = Path(bundle.root) / "directions"
        with_calibration(DirectionSet.load(folder), "age", cal).save(folder)
        print(f"wrote the calibration into {folder}")
    print(f"wrote {out / 'calibration.json'}, {out / 'calibration.png'}")
    return cal


def parse_args(argv=None) -> CalibrateOptions:
    p = add_options(argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__),
                    CalibrateOptions)
    opts = CalibrateOptions(**layered_values(CalibrateOptions, p.parse_args(argv)))
    if 0.0 not in opts.strengths or len(opts.strengths) < 3:
        p.error("--strengths needs 0 (the unedited face) and at least two others")
    return opts


def main(argv=None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
