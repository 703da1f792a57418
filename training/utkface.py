"""UTKFace: its file names (the labels), the held-out name lists, and reading photos from its zip.

UTKFace names its photos `<age>_<gender>_<race>_<date>.jpg[.chip.jpg]` (gender 0 = male, 1 = female; race
0..4); `UTKFACE_NAME` is the one pattern for that, matched against a file's base name (`parse_utkface_name`).
In utkface-200px.zip it accepts 23,704 of the 23,707 photos; the 3 it refuses have no race field.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "HELDOUT_LISTS",
    "LABELS_DIR",
    "UTKFACE_NAME",
    "name_list_digest",
    "parse_utkface_name",
    "read_name_list",
    "read_utkface",
    "utkface_images",
    "utkface_names",
]

#: <age>_<gender>_<race>_ at the start of a base name (use `parse_utkface_name`, which takes the base name).
UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_")

#: Photos kept out of every fit and every tuning (training/labels/): the FD reference set and the 50 faces the
#: issue's figures and the years calibration are measured on. fit-age-gender leaves them out by default.
LABELS_DIR = Path(__file__).resolve().parent / "labels"
HELDOUT_LISTS = (LABELS_DIR / "utkface-heldout-eval.txt", LABELS_DIR / "utkface-heldout-fd.txt")


def parse_utkface_name(name: str) -> dict | None:
    """'dir/23_1_2_2017….jpg.chip.jpg' -> {'age': 23, 'gender': 1, 'race': 2}; None if not that pattern."""
    m = UTKFACE_NAME.match(os.path.basename(name))
    if m is None:
        return None
    return {"age": int(m.group(1)), "gender": int(m.group(2)), "race": int(m.group(3))}


def read_name_list(path: str | os.PathLike) -> list[str]:
    """UTKFace file names, one a line ('#' comments and blank lines skipped), as in training/labels/*.txt."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [t for t in (line.split("#", 1)[0].strip() for line in lines) if t]


def name_list_digest(names) -> str:
    """16 hex digits of sha256 over the sorted base names: identifies a held-out list whatever its order."""
    text = "\n".join(sorted({os.path.basename(n) for n in names}))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def utkface_names(z: zipfile.ZipFile, exclude=None) -> list[str]:
    """Sorted members of UTKFace's open zip that are .jpg photos with a UTKFace name, less `exclude` (base names)."""
    drop = {os.path.basename(n) for n in exclude} if exclude else set()
    return sorted(
        n
        for n in z.namelist()
        if parse_utkface_name(n) and n.lower().endswith(".jpg") and os.path.basename(n) not in drop
    )


def read_utkface(
    zip_path: str | os.PathLike, num: int | None = None, seed: int = 0, skip: int = 0, exclude=None
):
    """Yield (name, RGB uint8 [H,W,3], age, gender) from UTKFace's zip, in a seeded random order.

    skip: leave out the first `skip` of that order (disjoint train / evaluation draws with one seed).
    exclude: file names (base names) never yielded, removed before the order is drawn (held-out photos).
    """
    with zipfile.ZipFile(zip_path) as z:
        names = utkface_names(z, exclude)
        order = np.random.default_rng(seed).permutation(len(names))[skip:]
        if num is not None:
            order = order[:num]
        for i in order:
            labels = parse_utkface_name(names[i])
            img = np.asarray(Image.open(io.BytesIO(z.read(names[i]))).convert("RGB"))
            yield names[i], img, labels["age"], labels["gender"]


def utkface_images(zip_path: str | os.PathLike, names):
    """Yield RGB uint8 [H,W,3] of the zip's members `names` (full member names), in that order."""
    with zipfile.ZipFile(zip_path) as z:
        for n in names:
            yield np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB"))
