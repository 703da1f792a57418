"""Fit a bundle's age profile: how much of each part of the aging change a face gets, by how old it looks.

    python -m training.age_profile --bundle models/demo --per-band 160 --out scratch/age_profile.json --threads 2

One fixed aging change does not read as the same number of years on every face: at the demo's slider end a
face of 20 read +45 years and stopped looking like itself, a face of 60 read +7. A bundle with an age estimator
and a `by_age` profile (faceapp.bundle.ModelBundle.age_scales) gives each face its own multiples of the
prototypes' t for the shape, the lightness, the band gains and the drawn lines. This script finds them:

1. draws `--per-band` UTKFace training photos from each true-age band of `--true-bands` (seeded; the held-out
   lists are never read), finds each face and reads its age with the bundle's age estimator;
2. ages each photo at the slider's end with every candidate of CANDIDATES (multiples of the bundle's t and
   drawn-line amount), as the user gets it back (the prototypes act on the photo itself), and reads the
   returned photo on the same crop: the estimated age change, and dlib's identity distance (< 0.6: the same
   person; a measure the edit does not use);
3. splits the faces by their estimated age at `--bands`; in each band, keeps the candidates that leave at least
   `--min-same` of its faces the same person (none does: those that keep the most) and picks the one with the
   largest share aged >= `--target` years (ties: the larger share still the same person, then the larger median
   change). Bands below
   `--child-below` pick among the growth candidates alone (with the bundle's growth prototypes): a child aged with
   lines reads old to the estimator, and would win, but looks like neither an adult nor the child;
4. rejuvenates the photos of true age >= `--younger-from` at each of YOUNGER_ENDS (the prototypes' t at the slider's
   younger end) and keeps the one with the largest median age drop among those leaving at least `--min-same` of
   them the same person: 'younger_end';
5. writes the profile (each band's mix held across the band, passing to the next within SWITCH_YEARS of their edge;
   read linearly between the anchors, held at the ends),
   'younger_end', the tables it chose from, and the command line, to `--out`. Put the profile into bundle.json's
   age_prototypes_options as 'by_age' (`python -m faceapp bundle ... --age-profile FILE`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.options import add_options, layered_values, opt

__all__ = ["CANDIDATES", "SWITCH_YEARS", "YOUNGER_ENDS", "AgeProfileOptions", "child_band", "choose_profile",
           "choose_younger", "main"]

#: Candidate parts, as multiples of the bundle's prototype t (slider's end) and its drawn-line amount.
#: 'late' / 'growth': the bundle's late-life / growth prototypes' t as a multiple of the age prototypes' t (when it
#: has them); 'late_shape': of the late-life prototypes' own shape change; 'hair': of the greying. Candidates with
#: growth are a child's: children grow up, they do not wrinkle, so the bands below --child-below choose among them
#: alone, and the others never do.
_AGE = {"late": 0.0, "growth": 0.0, "hair": 1.0, "cap": 1.0, "late_shape": 1.0}
_GROW = {"shape": 0.0, "light": 0.0, "gain": 0.0, "wrinkles": 0.0, "late": 0.0, "hair": 0.0, "cap": 1.0,
         "late_shape": 1.0}
CANDIDATES = {
    "gentle": {"shape": 0.8, "light": 0.8, "gain": 0.8, "wrinkles": 1.0, **_AGE},
    "even": {"shape": 1.0, "light": 1.0, "gain": 1.0, "wrinkles": 1.0, **_AGE},
    "even-fewer-lines": {"shape": 1.0, "light": 1.0, "gain": 1.0, "wrinkles": 0.67, **_AGE},
    "stronger": {"shape": 1.37, "light": 0.8, "gain": 1.2, "wrinkles": 1.0, **_AGE},
    "strongest": {"shape": 1.71, "light": 0.57, "gain": 1.43, "wrinkles": 1.33, **_AGE},
    # the band gains deepen the photo's own lines, capped at GAIN_CAP x the older group's: on training faces of 38+
    # they bought years at no identity cost where the shape and the late-life texture did not (session 35)
    "even-more-gain": {"shape": 1.0, "light": 1.0, "gain": 1.5, "wrinkles": 1.0, **_AGE},
    "stronger-more-gain": {"shape": 1.37, "light": 0.8, "gain": 1.7, "wrinkles": 1.0, **_AGE},
    "strongest-more-gain": {"shape": 1.71, "light": 0.57, "gain": 2.0, "wrinkles": 1.33, **_AGE},
    "strongest-most-gain": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE},
    # 'cap': a multiple of the gains' cap (GAIN_CAP x the older group's line energy). An old face's lines are
    # already the older group's, so at the cap its gains stop; past it they deepen further (session 35)
    "even-more-gain-deeper": {"shape": 1.0, "light": 1.0, "gain": 1.5, "wrinkles": 1.0, **_AGE, "cap": 1.5},
    "stronger-more-gain-deeper": {"shape": 1.37, "light": 0.8, "gain": 1.7, "wrinkles": 1.0, **_AGE, "cap": 1.5},
    "strongest-most-gain-deeper": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE, "cap": 1.5},
    "strongest-most-gain-deepest": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE, "cap": 2.0},
    # the late-life prototypes (sunken eyes and cheeks) on top: once no spot may deepen past LINE_PEAK x the older
    # group's lines, the 3x gain alone no longer ages faces of 47+ as far (session 36)
    "even-more-gain-late-half": {"shape": 1.0, "light": 1.0, "gain": 1.5, "wrinkles": 1.0, **_AGE, "late": 0.57},
    "stronger-more-gain-late-half": {"shape": 1.37, "light": 0.8, "gain": 1.7, "wrinkles": 1.0, **_AGE, "late": 0.57},
    "strongest-most-gain-deepest-late-quarter": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE,
                                                 "cap": 2.0, "late": 0.29},
    "strongest-most-gain-deepest-late-three-eighths": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33,
                                                       **_AGE, "cap": 2.0, "late": 0.43},
    "strongest-most-gain-deepest-late-half": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE,
                                              "cap": 2.0, "late": 0.57},
    "strongest-most-gain-deepest-late": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE,
                                         "cap": 2.0, "late": 0.86},
    # the late-life change without its shape (sunken cheeks and eyes): its texture and shading bought years on
    # training faces of 47+ at less identity cost than its shape did (session 36: late 0.57 +14.6 years at 93 % the
    # same person, against the quarter with its shape at +14.3 and 91 %)
    "strongest-most-gain-deepest-late-half-flat": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33,
                                                   **_AGE, "cap": 2.0, "late": 0.57, "late_shape": 0.0},
    "strongest-most-gain-deepest-late-flat": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE,
                                              "cap": 2.0, "late": 0.86, "late_shape": 0.0},
    "strongest-most-gain-deepest-later-flat": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33, **_AGE,
                                               "cap": 2.0, "late": 1.14, "late_shape": 0.0},
    # and with the hair silver (the bundle's greying x 1.18 = all of it): white hair, not grey, on faces of 47+
    "strongest-most-gain-deepest-late-flat-whiter": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33,
                                                     **_AGE, "cap": 2.0, "late": 0.86, "late_shape": 0.0,
                                                     "hair": 1.18},
    "strongest-most-gain-deepest-late-half-flatter": {"shape": 1.71, "light": 0.57, "gain": 3.0, "wrinkles": 1.33,
                                                      **_AGE, "cap": 2.0, "late": 0.57, "late_shape": 0.5},
    "strongest-late-half": {"shape": 1.71, "light": 0.57, "gain": 1.43, "wrinkles": 1.33, **_AGE, "late": 0.57},
    "strongest-late": {"shape": 1.71, "light": 0.57, "gain": 1.43, "wrinkles": 1.33, **_AGE, "late": 1.14},
    "strongest-late-more": {"shape": 1.71, "light": 0.57, "gain": 1.43, "wrinkles": 1.33, **_AGE, "late": 1.71},
    "strongest-late-most": {"shape": 1.71, "light": 0.57, "gain": 1.43, "wrinkles": 1.33, **_AGE, "late": 2.29},
    "grow": {**_GROW, "growth": 0.57},
    "grow-more": {**_GROW, "growth": 0.86},
    "grow-most": {**_GROW, "growth": 1.14},
    # grow-most kept 90-96 % of the training children the same person, more than the rule asks (session 38)
    "grow-further": {**_GROW, "growth": 1.29},
    "grow-further-still": {**_GROW, "growth": 1.43},
    "grow-furthest": {**_GROW, "growth": 1.71},
}

#: Candidate t magnitudes for the slider's younger end (the age prototypes at -t, for faces of --younger-from and over)
YOUNGER_ENDS = (2.0, 2.25, 2.5, 2.75)

#: years either side of a band's edge over which its mix gives way to the next band's (--child-below: growing up
#: to growing old)
SWITCH_YEARS = 2.0


@dataclass(frozen=True)
class AgeProfileOptions:
    bundle: str = opt("models/demo", "the bundle whose age prototypes, age estimator and slider are fitted")
    out: str = opt("scratch/age_profile.json", "where the profile and its table go (UTKFace-derived figures)")
    zip: str = opt(None, "UTKFace 200 px zip (default: ../shared/data/utkface/utkface-200px.zip)")
    per_band: int = opt(160, "training faces drawn from each true-age band (the demo's profile: 160, 41 min)")
    true_bands: tuple[int, ...] = opt((1, 15, 30, 45, 60, 100), "true-age band edges the faces are drawn from")
    bands: tuple[int, ...] = opt((6, 13, 38, 47), "estimated-age edges of the profile's bands (babies, children, "
                                 "then adults)")
    child_below: float = opt(13.0, "bands whose upper edge is at most this choose among the growth candidates "
                             "(with the bundle's growth prototypes), the others never do")
    min_same: float = opt(0.85, "least share of a band's faces that must stay the same person (dlib < 0.6)")
    target: float = opt(15.0, "the age change (years, estimated) whose share is maximised")
    seed: int = opt(7, "seed of the photos' order")
    threads: int = opt(2, "torch threads")
    faces: str = opt(None, "per-face measures (npz: estimated ages, age changes and identity distances per "
                     "candidate): written after measuring (default: --out with .npz); with --reuse, read instead of "
                     "measuring, to choose again under other rules")
    reuse: bool = opt(False, "choose from --faces without measuring again")
    younger_from: int = opt(40, "true age (years) from which the drawn photos also choose the slider's younger end")


def child_band(est: float, bands, child_below: float | None) -> bool:
    """Whether a face whose estimated age is `est` falls in a band (of the estimated-age edges `bands`) that chooses
    among the growth candidates: its upper edge is at most `child_below`."""
    hi = min([b for b in bands if b > est], default=np.inf)
    return child_below is not None and hi <= child_below


def choose_profile(est0: np.ndarray, change: dict[str, np.ndarray], dist: dict[str, np.ndarray], bands,
                   *, min_same: float = 0.9, target: float = 15.0,
                   child_below: float | None = None) -> tuple[dict, list[dict]]:
    """(profile, table) from each face's estimated age `est0` [N] and, per candidate name, its age change [N] and
    identity distance [N]. In each band of `bands` (estimated-age edges), the candidate with the largest share
    >= `target` among those keeping >= `min_same` the same person (none: of those keeping the most). The profile
    holds each band's mix across the band, the mix its faces were measured with, and passes to the next band's
    within SWITCH_YEARS of the edge between them (anchors at edge -/+ SWITCH_YEARS; a single band: one anchor at
    its faces' median age). With `child_below`, a band whose upper edge is at most that chooses among the growth
    candidates that `change` holds, and every other band among the rest. A candidate not measured on every face of
    a band (NaN: a fit measures each face only on the candidates its own band can choose) is not in that band's
    table."""
    edges = [-np.inf, *bands, np.inf]
    parts = {k: [] for k in ("shape", "light", "gain", "wrinkles", "late", "growth", "hair", "cap", "late_shape")}
    chosen, table = [], []  # (lo, hi, median estimated age, candidate) of each band with faces
    growing = {k for k in change if CANDIDATES[k]["growth"] > 0}
    for lo, hi in zip(edges, edges[1:]):
        m = (est0 >= lo) & (est0 < hi)
        if not m.any():
            continue
        child = child_below is not None and hi <= child_below and bool(growing)
        names = [k for k in change if (k in growing) == child and np.isfinite(change[k][m]).all()
                 and np.isfinite(dist[k][m]).all()]
        if not names:
            raise ValueError(f"no candidate was measured on every face that looks {lo:g}-{hi:g}: measure again "
                             "with these bands")
        rows = [{"band": [float(lo), float(hi)], "faces": int(m.sum()), "candidate": k,
                 "median_change": float(np.median(change[k][m])),
                 "share_target": float(np.mean(change[k][m] >= target)),
                 "same": float(np.mean(dist[k][m] < 0.6))} for k in names]
        most = max(r["same"] for r in rows)
        ok = [r for r in rows if r["same"] >= min_same] or [r for r in rows if r["same"] == most]
        # ties: the one that keeps more faces, then the one that ages them more (not the list's order)
        best = max(ok, key=lambda r: (r["share_target"], r["same"], r["median_change"]))
        for r in rows:
            r["chosen"] = r is best
        table += rows
        chosen.append((float(lo), float(hi), float(np.median(est0[m])), best["candidate"]))
    # Each band's mix over the whole band (anchored at the bands' medians and read linearly between, a face of 53
    # got a third of the mix of faces of 43 though the band of 47+ was measured with its own); the switch is
    # within SWITCH_YEARS of each edge (growing up gives way to growing old there too: a face of 20 does not grow)
    ages = []
    for i, (lo, hi, med, name) in enumerate(chosen):
        at = [lo + SWITCH_YEARS] if i > 0 else []
        at += [hi - SWITCH_YEARS] if i < len(chosen) - 1 else []
        if len(at) == 2 and at[0] >= at[1]:  # a band narrower than two switches: its middle
            at = [(lo + hi) / 2]
        for a in at or [med]:
            ages.append(a)
            for k in parts:
                parts[k].append(CANDIDATES[name][k])
    return {"ages": [round(a, 1) for a in ages], **parts}, table


def choose_younger(change: dict[float, np.ndarray], dist: dict[float, np.ndarray], *,
                   min_same: float = 0.85) -> tuple[float | None, list[dict]]:
    """(younger end, table) from each candidate t's age changes [N] and identity distances [N] (NaN: a face not
    measured): the t with the most negative median change among those keeping >= `min_same` of the faces the same
    person (none does: the one keeping the most); None without candidates or faces."""
    rows = []
    for te in sorted(change):
        ok = np.isfinite(change[te]) & np.isfinite(dist[te])
        if ok.any():
            rows.append({"t": float(te), "faces": int(ok.sum()), "median_change": float(np.median(change[te][ok])),
                         "same": float(np.mean(dist[te][ok] < 0.6))})
    if not rows:
        return None, []
    most = max(r["same"] for r in rows)
    keep = [r for r in rows if r["same"] >= min_same] or [r for r in rows if r["same"] == most]
    best = min(keep, key=lambda r: (r["median_change"], r["t"]))
    for r in rows:
        r["chosen"] = r is best
    return best["t"], rows


def main(argv=None) -> int:
    import io

    import torch
    from PIL import Image

    from faceapp.align import detect_faces
    from faceapp.bundle import load_bundle
    from faceapp.errors import NoFaceError
    from training.calibrate_years import UTKFACE_ZIP, PhotoMeter
    from training.utkface import HELDOUT_LISTS, read_name_list, utkface_names

    p = add_options(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
                    AgeProfileOptions)
    args = AgeProfileOptions(**layered_values(AgeProfileOptions, p.parse_args(argv), {"zip": str(UTKFACE_ZIP)}))
    torch.set_num_threads(args.threads)
    faces_file = Path(args.faces or Path(args.out).with_suffix(".npz"))
    t0 = time.time()
    if args.reuse:
        if not faces_file.is_file():
            print(f"error: --reuse: no per-face measures at {faces_file}", file=sys.stderr)
            return 2
        with np.load(faces_file) as f:
            est0 = f["est0"]
            change = {k[len("change/"):]: f[k] for k in f.files if k.startswith("change/")}
            dist = {k[len("dist/"):]: f[k] for k in f.files if k.startswith("dist/")}
            t_end, wrinkles = float(f["t_end"]), float(f["wrinkles"])
            younger_change = {float(k[len("ychange/"):]): f[k] for k in f.files if k.startswith("ychange/")}
            younger_dist = {float(k[len("ydist/"):]): f[k] for k in f.files if k.startswith("ydist/")}
            if "younger_from" in f.files:  # the measures' own rule, not this run's option
                args = dataclasses.replace(args, younger_from=int(f["younger_from"]))
        unknown = sorted(set(change) - set(CANDIDATES))
        if unknown:
            print(f"error: {faces_file} measures candidates this script no longer has: {unknown}", file=sys.stderr)
            return 2
        return _finish(args, argv, est0, change, dist, t_end, wrinkles, t0, younger_change, younger_dist)
    if not Path(args.zip).is_file():
        print(f"error: no UTKFace zip at {args.zip}", file=sys.stderr)
        return 2
    bundle = load_bundle(args.bundle)
    if bundle.age_prototypes is None or bundle.age_estimator is None:
        print(f"error: {args.bundle} needs age prototypes and an age estimator", file=sys.stderr)
        return 2
    candidates = {k: v for k, v in CANDIDATES.items() if (not v["late"] or bundle.age_prototypes_late is not None)
                  and (not v["growth"] or bundle.age_prototypes_growth is not None)}
    growers = any(v["growth"] > 0 for v in candidates.values())  # else children choose among the aging mixes
    end = max(abs(x) for x in bundle.directions["age"].strength_range)
    t_end = bundle.age_split(end)[1]
    meter = PhotoMeter(None, age_estimator=bundle.age_estimator)
    exclude = {n for f in HELDOUT_LISTS for n in read_name_list(f)}
    rng = np.random.default_rng(args.seed)
    est0, change, dist = [], {k: [] for k in candidates}, {k: [] for k in candidates}
    ychange, ydist = {te: [] for te in YOUNGER_ENDS}, {te: [] for te in YOUNGER_ENDS}
    with zipfile.ZipFile(args.zip) as z:
        names = [n for n in utkface_names(z) if Path(n).name not in exclude]
        names = [names[i] for i in rng.permutation(len(names))]
        edges = args.true_bands
        chosen = []
        for lo, hi in zip(edges, edges[1:]):
            chosen += [n for n in names if lo <= int(Path(n).name.split("_")[0]) < hi][: args.per_band]
        for i, n in enumerate(chosen):
            photo = Image.open(io.BytesIO(z.read(n))).convert("RGB")
            try:  # detect_faces raises on a photo it finds no face in: such a training photo is skipped
                face = detect_faces(photo)[0]
            except NoFaceError:
                continue
            m0 = meter.measure(meter.views(face, [photo]))
            # only the candidates this face's band can choose (a child is not lined, an adult does not grow): NaN
            # for the others, so growth candidates cost nothing on adults and the aging mixes nothing on children
            child = growers and child_band(float(m0["age"][0]), args.bands, args.child_below)
            mine = [k for k, v in candidates.items() if (v["growth"] > 0) == child]
            # as the editor ages a face (the prototypes act on the photo itself)
            outs = [bundle.age_photo(photo, face.landmarks68, t_end, candidates[k]) for k in mine]
            rejuvenate = int(Path(n).name.split("_")[0]) >= args.younger_from
            if rejuvenate:  # old enough to be made younger: the slider's other end
                outs += [bundle.age_photo(photo, face.landmarks68, -te) for te in YOUNGER_ENDS]
            m = meter.measure(meter.views(face, outs)) if outs else {"age": [], "desc": []}
            a0, d0 = float(m0["age"][0]), m0["desc"][0]
            est0.append(a0)
            for k in candidates:
                j = mine.index(k) if k in mine else None
                change[k].append(float(m["age"][j] - a0) if j is not None else np.nan)
                dist[k].append(float(np.linalg.norm(m["desc"][j] - d0)) if j is not None else np.nan)
            for j, te in enumerate(YOUNGER_ENDS, len(mine)):
                ychange[te].append(float(m["age"][j] - a0) if rejuvenate else np.nan)
                ydist[te].append(float(np.linalg.norm(m["desc"][j] - d0)) if rejuvenate else np.nan)
            if (i + 1) % 25 == 0:
                print(f"  {i + 1}/{len(chosen)} photos ({time.time() - t0:.0f} s)", flush=True)
    est0 = np.array(est0)
    change = {k: np.array(v) for k, v in change.items()}
    dist = {k: np.array(v) for k, v in dist.items()}
    ychange = {te: np.array(v, np.float64) for te, v in ychange.items()}
    ydist = {te: np.array(v, np.float64) for te, v in ydist.items()}
    faces_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(faces_file, est0=est0, t_end=t_end, wrinkles=bundle.wrinkles, younger_from=args.younger_from,
             **{f"change/{k}": v for k, v in change.items()}, **{f"dist/{k}": v for k, v in dist.items()},
             **{f"ychange/{te}": v for te, v in ychange.items()}, **{f"ydist/{te}": v for te, v in ydist.items()})
    return _finish(args, argv, est0, change, dist, t_end, bundle.wrinkles, t0, ychange, ydist)


def _finish(args, argv, est0, change, dist, t_end, wrinkles, t0, ychange=None, ydist=None) -> int:
    """Choose the profile (and the younger end) from the per-face measures, print their tables and write --out."""
    try:
        profile, table = choose_profile(est0, change, dist, args.bands, min_same=args.min_same, target=args.target,
                                        child_below=args.child_below)
    except ValueError as e:  # --reuse under bands the faces were not measured for
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'band':>12s} {'candidate':>19s} faces  median  >=target  same")
    for r in table:
        print(f"{r['band'][0]:5.0f}-{r['band'][1]:<6.0f} {r['candidate']:>19s} {r['faces']:5d} "
              f"{r['median_change']:+7.1f} {r['share_target']:8.0%} {r['same']:5.0%}{'  <-' if r['chosen'] else ''}")
    younger_end, ytable = choose_younger(ychange or {}, ydist or {}, min_same=args.min_same)
    for r in ytable:
        print(f"younger end t = -{r['t']:.2f}: {r['faces']} faces of {args.younger_from}+, median "
              f"{r['median_change']:+.1f} y, same {r['same']:.0%}{'  <-' if r['chosen'] else ''}")
    out = {"by_age": profile, "table": table, "options": dataclasses.asdict(args), "faces": len(est0),
           **({"younger_end": younger_end, "younger_table": ytable} if younger_end is not None else {}),
           "t_end": t_end, "wrinkles": wrinkles, "seconds": round(time.time() - t0, 1),
           "command": "python -m training.age_profile " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"profile: {json.dumps(profile)}\nwrote {args.out} ({time.time() - t0:.0f} s, {len(est0)} faces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
