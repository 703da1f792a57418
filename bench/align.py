"""Milliseconds per photo for detect + landmarks + align + paste-back, at 1 MP and 12 MP.

    python -m bench.align [--backend dlib] [--size 1024] [--repeat 5] [--upsample 1]

The photos are tests/data/obama.jpg scaled to 1 MP (1155x866) and 12 MP (4000x3000),
widened to 4:3 by mirroring its sides, so the face grows with the photo as in a
real camera file. Prints the median of `--repeat` runs per stage.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from faceapp.align import FFHQ_SPEC, align_face, detect_faces, paste_back, resolve_backend
from faceapp.imageio import load_image

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "obama.jpg"


def make_photo(width: int, height: int) -> Image.Image:
    """The test portrait at `height`, mirrored out to `width` (4:3 like a phone photo)."""
    src = load_image(PHOTO)
    w = round(src.width * height / src.height)
    arr = np.asarray(src.resize((w, height), Image.LANCZOS))
    extra = width - w
    arr = cv2.copyMakeBorder(arr, 0, 0, extra // 2, extra - extra // 2, cv2.BORDER_REFLECT_101)
    return Image.fromarray(arr)


def bench(photo: Image.Image, args) -> dict[str, float]:
    times: dict[str, list[float]] = {"detect+landmarks": [], "align": [], "paste_back": [], "total": []}
    spec = FFHQ_SPEC(args.size)
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        faces = detect_faces(photo, backend=args.backend, upsample=args.upsample)
        t1 = time.perf_counter()
        aligned = align_face(photo, faces[0], spec)
        t2 = time.perf_counter()
        paste_back(photo, aligned, aligned.image)
        t3 = time.perf_counter()
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            times[k].append(v * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="auto")
    p.add_argument("--size", type=int, default=1024, help="FFHQ crop size")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--upsample", type=int, default=1)
    args = p.parse_args(argv)

    # Load the models outside the timings.
    detect_faces(make_photo(400, 300), backend=args.backend, allow_none=True)
    print(f"backend={resolve_backend(args.backend)} crop={args.size} upsample={args.upsample} "
          f"repeat={args.repeat} cpu={platform.processor() or platform.machine()} threads={cv2.getNumThreads()}")
    print(f"{'photo':>16} {'face px':>8} {'detect+lm':>10} {'align':>8} {'paste':>8} {'total ms':>9}")
    for label, (w, h) in (("1 MP 1155x866", (1155, 866)), ("12 MP 4000x3000", (4000, 3000))):
        photo = make_photo(w, h)
        face = detect_faces(photo, backend=args.backend, upsample=args.upsample)[0]
        r = bench(photo, args)
        print(f"{label:>16} {face.size:8.0f} {r['detect+landmarks']:10.1f} {r['align']:8.1f} "
              f"{r['paste_back']:8.1f} {r['total']:9.1f}")


if __name__ == "__main__":
    main()
