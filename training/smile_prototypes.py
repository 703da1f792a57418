"""Build smile prototypes: what separates closed-mouth smiles from neutral faces, in the age prototypes' format.

    python -m training.smile_prototypes --out models/demo/smile_prototypes.safetensors

The smile edit of a small generator pastes a second, 64 px mouth over the photo's own (a doubled lip line). A
smile drawn from prototypes moves the photo's own pixels instead: the mouth's corners rise and widen, the cheeks
lift and the lower lids rise, with the folds that come with it, all at the photo's resolution. Nothing is pasted,
so there is no second mouth. The smiling group shows its teeth (the landmark smile score counts the mouth's opening,
and a closed-lip smile is rarely read as one); between the photo's parted lips the prototypes' lightness difference
(the smiling group's mean teeth against the neutral group's lips) lightens what the warp opened.

1. draws UTKFace training photos (the held-out lists are never read) aged --ages, in a seeded order, finds their
   68 landmarks (dlib) and reads the landmark smile score and the inner lips' gap (training.face_labels);
2. 'young' = neutral faces with the mouth closed (score <= --neutral-max, gap <= --closed eye distances), 'old' =
   smiling ones showing their teeth (score >= --smile-min, gap >= --teeth), up to --num each;
3. builds and writes the two groups' prototypes with training.age_prototypes.build_prototypes (mean shapes,
   mean CIELAB images on the shared mean shape, band energies): faceapp.align.prototype.AgePrototypes moves a
   face from the first group towards the second by t, never past --saturate, and back (t < 0, a smile fading)
   never more than --saturate-below past the first (both stored in the file's meta).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from training.age_prototypes import write_prototypes
from training.options import add_options, layered_values, opt

__all__ = ["SmilePrototypeOptions", "main"]


@dataclass(frozen=True)
class SmilePrototypeOptions:
    out: str = opt(None, "the .safetensors file to write (e.g. a bundle's smile_prototypes)", required=True)
    zip: str = opt(None, "UTKFace 200 px zip (default: ../shared/data/utkface/utkface-200px.zip)")
    ages: tuple[int, ...] = opt((18, 70), "true ages LO,HI of the faces used (HI excluded)")
    smile_min: float = opt(1.0, "the smiling group's least landmark smile score")
    neutral_max: float = opt(-0.8, "the neutral group's greatest landmark smile score")
    closed: float = opt(0.03, "the neutral group's largest inner-lip gap, in eye distances (a closed mouth)")
    teeth: float = opt(0.08, "the smiling group's least inner-lip gap, in eye distances (teeth showing)")
    num: int = opt(600, "faces per group")
    size: int = opt(192, "canonical frame's side in px")
    seed: int = opt(7, "seed of the photos' order")
    saturate: float = opt(1.2, "a face moves at most to this multiple of the smiling group's shape difference "
                          "(a face already smiling smiles a little more, not twice as wide)")
    saturate_below: float = opt(0.2, "less smile moves a face at most this far past the neutral group's shape "
                                "(a smile fades; a neutral face is not made to frown)")
    skin_light: float = opt(0.5, "share of the lightness change outside the lips' inside (the smilers' mean folds, "
                            "added whole, read as grey smudges beside a pale face's nose)")
    mouth_chroma_power: float = opt(2.5, "inside the lips, the chroma falls this many times faster than the mean "
                                    "images say (teeth, not pink teeth)")


def main(argv=None) -> int:
    from training.calibrate_years import UTKFACE_ZIP
    from training.face_labels import find_landmarks, smile_features, smile_score
    from training.utkface import LABELS_DIR, read_name_list, read_utkface

    p = add_options(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
                    SmilePrototypeOptions)
    args = SmilePrototypeOptions(**layered_values(SmilePrototypeOptions, p.parse_args(argv),
                                                  {"zip": str(UTKFACE_ZIP)}))
    if len(args.ages) != 2 or not 0 <= args.ages[0] < args.ages[1]:
        p.error(f"--ages is LO,HI with 0 <= LO < HI, got {args.ages}")
    if not args.neutral_max < args.smile_min:
        p.error("--neutral-max must be below --smile-min")
    if not Path(args.zip).is_file():
        print(f"error: no UTKFace zip at {args.zip}", file=sys.stderr)
        return 2
    heldout = sorted(LABELS_DIR.glob("utkface-heldout-*.txt"))
    exclude = [n for f in heldout for n in read_name_list(f)]
    faces = {"young": [], "old": []}
    t0, seen = time.time(), 0
    for _name, img, age, _gender in read_utkface(args.zip, seed=args.seed, exclude=exclude):
        if all(len(v) >= args.num for v in faces.values()):
            break
        if not args.ages[0] <= age < args.ages[1]:
            continue
        lm, found = find_landmarks(img, detect=True)
        seen += 1
        if not found:
            continue
        score, gap = smile_score(lm), smile_features(lm)["open"]
        group = ("old" if score >= args.smile_min and gap >= args.teeth else
                 "young" if score <= args.neutral_max and gap <= args.closed else None)
        if group is not None and len(faces[group]) < args.num:
            faces[group].append((img, lm))
        if seen % 500 == 0:
            print(f"  {seen} faces read: {len(faces['young'])} neutral, {len(faces['old'])} smiling "
                  f"({time.time() - t0:.0f} s)", flush=True)
    counts = {"neutral": len(faces["young"]), "smiling": len(faces["old"])}
    print(f"faces: {counts} of {seen} read ({time.time() - t0:.0f} s)", flush=True)
    if min(counts.values()) < 10:
        print("error: too few faces in a group", file=sys.stderr)
        return 2
    write_prototypes(faces, args, {
        "kind": "smile", "saturate": float(args.saturate), "saturate_below": float(args.saturate_below),
        "negative_shape": 1.0, "skin_light": float(args.skin_light),
        "mouth_chroma_power": float(args.mouth_chroma_power),
        "groups": {"young": f"neutral, smile score <= {args.neutral_max}, inner-lip gap <= {args.closed}",
                   "old": f"smiling, smile score >= {args.smile_min}, inner-lip gap >= {args.teeth}"},
        "counts": counts, "built_with": "training/smile_prototypes.py"}, heldout, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
