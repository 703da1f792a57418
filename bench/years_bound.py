"""How far must a face change for the project's age labeler to read it N years older? (a bound, no model involved)

    python -m bench.years_bound --age-gender-model runs/labelers/age_gender.safetensors

The age labeler (training/labelers.AgeGenderModel) and the same-person test both read dlib's 128-D face
descriptor: the age is a kNN over UTKFace training descriptors, "the same person" is a descriptor distance
< 0.6. So an edit that makes the labeler read +N years must move the descriptor, and how far it must move at
least is a property of the labeler alone. For each of the held-out faces (training/labels/
utkface-heldout-eval.txt, the faces bench/edit.py measures edits on) this searches two straight paths in
descriptor space and keeps the shorter move that reaches +N years:

- along the labeler's own linear age axis (ridge regression of age on its reference descriptors);
- toward the mean of the k reference descriptors nearest the face among those at least N years older.

Printed per N: the median least move and the share of faces that some move within 0.5 / 0.6 reaches. A share
below a target's means no edit, however good its images, can meet "N years older for that share of faces,
still the same person"; an edit also changes the descriptor in other ways than these idealised moves.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

SAME_PERSON = 0.6


def age_axis(model) -> np.ndarray:
    """[128] unit vector: the labeler's references' ages regressed on their descriptors (ridge)."""
    from sklearn.linear_model import Ridge

    coef = Ridge(alpha=1.0).fit(model.ref_desc, model.ref_age).coef_
    return coef / np.linalg.norm(coef)


def least_moves(model, desc: np.ndarray, years: float, *, k: int = 10, max_move: float = 1.2,
                steps: int = 61) -> np.ndarray:
    """[N] the shortest descriptor move found (euclidean) after which model.age reads >= its age + years; inf if none.

    desc: [N, 128] descriptors. The two searched paths are in the module doc; each is sampled at `steps`
    points up to `max_move` (toward the older references: up to reaching their mean, if nearer).
    """
    desc = np.asarray(desc, np.float64)
    base = model.age(desc)
    axis = age_axis(model)
    ts = np.linspace(0.0, max_move, steps)
    out = np.full(len(desc), np.inf)
    for i, (p, a0) in enumerate(zip(desc, base)):
        along = model.age(p[None] + ts[:, None] * axis[None])
        hit = np.nonzero(along >= a0 + years)[0]
        if len(hit):
            out[i] = ts[hit[0]]
        older = model.ref_desc[model.ref_age >= a0 + years]
        if len(older) == 0:
            continue
        near = older[np.argsort(np.linalg.norm(older - p, axis=1))[:k]].mean(0)
        span = np.linalg.norm(near - p)
        fr = np.linspace(0.0, min(1.0, max_move / max(span, 1e-9)), steps)
        toward = model.age(p[None] + fr[:, None] * (near - p)[None])
        hit = np.nonzero(toward >= a0 + years)[0]
        if len(hit):
            out[i] = min(out[i], fr[hit[0]] * span)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--age-gender-model", default="runs/labelers/age_gender.safetensors")
    p.add_argument("--years", default="10,20,30")
    p.add_argument("--faces", type=int, default=50)
    args = p.parse_args(argv)
    from training.age_gender import AgeGenderModel
    from training.calibrate_years import EVAL_FACES, UTKFACE_ZIP, PhotoMeter, heldout_photos
    from training.utkface import read_name_list

    if not UTKFACE_ZIP.is_file():
        print(f"skipped: no UTKFace zip at {UTKFACE_ZIP}")
        return 0
    model = AgeGenderModel.load(args.age_gender_model)
    meter = PhotoMeter(model)
    photos = list(heldout_photos(UTKFACE_ZIP, read_name_list(EVAL_FACES)[: args.faces]))
    desc = meter.raw([im for _, im in photos])["desc"]
    print(f"{len(desc)} held-out faces, labeler {args.age_gender_model} (kNN, k={model.k}); "
          f"same person: distance < {SAME_PERSON}")
    for y in (float(v) for v in args.years.split(",")):
        m = least_moves(model, desc, y)
        near, same = 100 * np.mean(m < 0.5), 100 * np.mean(m < SAME_PERSON)
        print(f"+{y:g} years: least descriptor move median {np.median(m):.2f}; reachable within 0.5 by "
              f"{near:.0f} % of faces, within {SAME_PERSON} by {same:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
