"""Build age prototypes (faceapp.align.prototype.AgePrototypes) from UTKFace's labelled training photos.

    python -m training.age_prototypes --out models/demo/age_prototypes.safetensors [--young 20,30 --old 60,80]

1. draws training photos (the held-out lists of training/labels are never read) in a seeded order, keeps those
   whose true age falls in --young or --old (up to --num each), and finds their 68 landmarks (dlib);
2. brings each into the eye-aligned canonical frame of --size px (faceapp.align.prototype.eye_similarity);
3. the groups' mean shapes, and the mean shape of both;
4. warps every face to that shared mean shape (a piecewise-affine warp on the landmarks) and averages
   its CIELAB image per group; per band of a difference-of-Gaussians pyramid of lightness, averages the local
   energy (|band| smoothed), which keeps where and how strongly each group has fine lines;
5. writes the file (about 1 MB, float16 images) with the groups, counts and held-out lists' digests in its
   metadata. The prototypes are averages of hundreds of faces, not any one person's photo; they carry UTKFace's
   non-commercial licence like every model trained on it.
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

import cv2
import numpy as np

from faceapp.align.prototype import AgePrototypes, _piecewise_map, eye_similarity
from training.options import add_options, layered_values, opt

__all__ = ["PrototypeOptions", "build_prototypes", "main", "write_prototypes"]

SIGMAS = (0.7, 1.5, 3.0)


@dataclass(frozen=True)
class PrototypeOptions:
    """Everything a build depends on (written into the file's metadata); the command line is generated from it."""

    out: str = opt(None, "the .safetensors file to write (e.g. a bundle's age_prototypes)", required=True)
    zip: str = opt(None, "UTKFace 200 px zip (default: ../shared/data/utkface/utkface-200px.zip)")
    young: tuple[int, ...] = opt((20, 30), "the younger group's true ages LO,HI (HI excluded)")
    old: tuple[int, ...] = opt((60, 80), "the older group's true ages LO,HI")
    num: int = opt(1000, "faces per group")
    size: int = opt(192, "canonical frame's side in px")
    seed: int = opt(5, "seed of the photos' order")
    match: bool = opt(True, "the same mix of genders and races in both groups (UTKFace's ages are not mixed alike: "
                      "its 20-29s are 27 % white, its 70+ 70 %; its 55-65s 2/3 men, its 80+ 3/5 women; unmatched, "
                      "the groups' difference changes a face's gender and ethnicity as well as its age)")


def band_energy(light: np.ndarray, sigmas=SIGMAS) -> np.ndarray:
    """[K, H, W] local energy of each difference-of-Gaussians band of a lightness image [H, W] (float)."""
    out = []
    for s in sigmas:
        band = cv2.GaussianBlur(light, (0, 0), s) - cv2.GaussianBlur(light, (0, 0), 2 * s)
        out.append(cv2.GaussianBlur(np.abs(band), (0, 0), 2 * s))
    return np.stack(out).astype(np.float32)


def build_prototypes(faces, size: int = 192, sigmas=SIGMAS, meta: dict | None = None) -> AgePrototypes:
    """AgePrototypes from faces = {'young': [(RGB uint8 [H,W,3], lm68 [68,2]), ...], 'old': [...]}."""
    canon = {}
    for group, items in faces.items():
        canon[group] = []
        for img, lm in items:
            m = eye_similarity(lm, size)
            crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
            canon[group].append((crop.astype(np.float32) / 255.0, np.asarray(lm, np.float64) @ m[:, :2].T + m[:, 2]))
    shapes = {g: np.mean([lm for _, lm in v], 0) for g, v in canon.items()}
    mean_shape = (shapes["young"] + shapes["old"]) / 2
    labs, energies = {}, {}
    for group, items in canon.items():
        lab_sum = np.zeros((size, size, 3), np.float64)
        en_sum = np.zeros((len(sigmas), size, size), np.float64)
        for crop, lm in items:
            mx, my = _piecewise_map(mean_shape, lm, size)  # mean-shape pixel -> where it is in this face
            warped = cv2.remap(crop, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            lab = cv2.cvtColor(warped, cv2.COLOR_RGB2Lab)
            lab_sum += lab
            en_sum += band_energy(lab[..., 0], sigmas)
        labs[group] = (lab_sum / len(items)).astype(np.float32)
        energies[group] = (en_sum / len(items)).astype(np.float32)
    return AgePrototypes(size=size, mean_shape=mean_shape, young_shape=shapes["young"], old_shape=shapes["old"],
                         young_lab=labs["young"], old_lab=labs["old"], young_energy=energies["young"],
                         old_energy=energies["old"], sigmas=tuple(sigmas), meta=meta or {})


def main(argv=None) -> int:
    from training.calibrate_years import UTKFACE_ZIP
    from training.face_labels import find_landmarks
    from training.utkface import LABELS_DIR, parse_utkface_name, read_name_list, read_utkface, utkface_names

    p = add_options(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
                    PrototypeOptions)
    args = PrototypeOptions(**layered_values(PrototypeOptions, p.parse_args(argv), {"zip": str(UTKFACE_ZIP)}))
    for name in ("young", "old"):
        rng = getattr(args, name)
        if len(rng) != 2 or not 0 <= rng[0] < rng[1]:
            p.error(f"--{name} is LO,HI with 0 <= LO < HI, got {rng}")
    if not Path(args.zip).is_file():
        print(f"error: no UTKFace zip at {args.zip}", file=sys.stderr)
        return 2
    heldout = sorted(LABELS_DIR.glob("utkface-heldout-*.txt"))
    exclude = [n for f in heldout for n in read_name_list(f)]
    groups = {"young": args.young, "old": args.old}
    t0 = time.time()

    def with_landmarks(img):
        lm, found = find_landmarks(img, detect=True)
        return lm if found else None

    quota = None
    if args.match:
        with zipfile.ZipFile(args.zip) as z:
            labels = [parse_utkface_name(n) for n in utkface_names(z, exclude)]
        quota = matched_quota([(x["age"], (x["gender"], x["race"])) for x in labels], groups, args.num)
    items = ((n, img, age, (gender, parse_utkface_name(n)["race"]))
             for n, img, age, gender in read_utkface(args.zip, seed=args.seed, exclude=exclude))
    faces, mix = draw_groups(items, groups, args.num, with_landmarks, quota)
    counts = {g: len(v) for g, v in faces.items()}
    print(f"faces with landmarks: {counts} ({time.time() - t0:.0f} s)", flush=True)
    if min(counts.values()) < 10:
        print("error: too few faces in a group", file=sys.stderr)
        return 2
    if mix is not None:  # faces per gender_race (UTKFace's codes: gender 0 man, 1 woman; race 0-4) in each group
        mix = {g: {f"{gd}_{r}": n for (gd, r), n in sorted(v.items())} for g, v in mix.items()}
    write_prototypes(faces, args, {"groups": groups, "counts": counts, "mix": mix,
                                   "built_with": "training/age_prototypes.py", "seed": args.seed}, heldout, t0)
    return 0


def draw_groups(items, groups: dict, num: int, landmarks, quota: dict | None = None):
    """Fill each group with up to `num` faces: ({group: [(RGB uint8, lm68 [68, 2]), ...]}, {group: {stratum: n}}).

    items: (name, RGB uint8 [H, W, 3], age, stratum), in the order faces are taken (stratum: any hashable, e.g.
    (gender, race)); groups: {name: (LO, HI)} true ages, HI excluded; landmarks(img) -> lm68 or None (no face:
    skipped). quota: {stratum: n} faces each group takes of each stratum (see `matched_quota`); the groups are then
    cut to the same count per stratum (the smaller group's, where landmarks were missing), so that they differ by
    age alone. None: the first `num` of each group in the draw's order, whatever their mix.
    """
    kept = {g: {} for g in groups}

    def room(g, stratum):
        got = kept[g]
        if quota is None:
            return sum(map(len, got.values())) < num
        return len(got.get(stratum, ())) < quota.get(stratum, 0)

    for _name, img, age, stratum in items:
        stratum = stratum if quota is not None else None  # unmatched: one pool, in the order drawn
        group = next((g for g, (lo, hi) in groups.items() if lo <= age < hi and room(g, stratum)), None)
        if group is None:
            if not any(room(g, x) for g in groups for x in (quota or [None])):
                break  # every group full
            continue
        lm = landmarks(img)
        if lm is not None:
            kept[group].setdefault(stratum, []).append((img, lm))
    if quota is not None:
        for s in quota:
            n = min(len(kept[g].get(s, ())) for g in groups)
            for g in groups:
                kept[g][s] = kept[g].get(s, [])[:n]
    faces = {g: [f for s in sorted(got, key=repr) for f in got[s]] for g, got in kept.items()}
    mix = {g: {s: len(v) for s, v in got.items()} for g, got in kept.items()} if quota is not None else None
    return faces, mix


def matched_quota(labels, groups: dict, num: int) -> dict:
    """{stratum: n}: as many faces of each stratum in every group, as many as the scarcest group has of it, scaled
    down (the same factor for all) to at most `num` per group. labels: (age, stratum) of every face to draw from."""
    avail = {g: {} for g in groups}
    for age, stratum in labels:
        for g, (lo, hi) in groups.items():
            if lo <= age < hi:
                avail[g][stratum] = avail[g].get(stratum, 0) + 1
    strata = set.intersection(*(set(v) for v in avail.values())) if avail else set()
    quota = {s: min(avail[g][s] for g in groups) for s in strata}
    k = min(1.0, num / max(sum(quota.values()), 1))
    return {s: int(n * k) for s, n in quota.items() if int(n * k) > 0}


def write_prototypes(faces, args, meta: dict, heldout, t0: float) -> AgePrototypes:
    """Build prototypes from `faces` (see `build_prototypes`) at args.size and write them to args.out, with `meta`,
    the options, the data's licence and the digests of the held-out lists left out; prints what it wrote."""
    from training.utkface import name_list_digest, read_name_list

    meta = {"source": "UTKFace training photos (non-commercial research licence)", **meta,
            "options": dataclasses.asdict(args),
            "heldout_excluded": {f.name: name_list_digest(read_name_list(f)) for f in heldout}}
    protos = build_prototypes(faces, args.size, meta=meta)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    protos.save(args.out)
    print(f"wrote {args.out} ({time.time() - t0:.0f} s): {json.dumps(meta['counts'])}")
    return protos


if __name__ == "__main__":
    sys.exit(main())
