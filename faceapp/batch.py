"""Batch aging, shared by both engines of `python -m faceapp age` (faceapp/cli.py: local; faceapp/batch_ray.py:
Ray workers): the editor set-up, input expansion, output names, the manifest, and `age_photo`, which ages one
photo into its outputs. Both engines call the same `age_photo`, so they write the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from faceapp.errors import FaceAppError

__all__ = ["IMAGE_SUFFIXES", "MANIFEST", "AgeJob", "age_photo", "append_manifest", "expand_inputs", "make_editor",
           "output_stems", "photo_key", "read_manifest"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MANIFEST = "manifest.jsonl"


def make_editor(model: str | None, *, device: str = "cpu", steps: int | None = None):
    """The batch FaceEditor for `model` (a bundle folder, a generator checkpoint or a Hub repo id): the CLI's and
    the app's one set-up, `faceapp.pipeline.open_editor` (no inversion cache: each photo is inverted once; torch
    threads for the model's size; `steps`, when given, for every optimisation stage of the inversion).
    ModelUnavailableError when `model` is None.
    """
    from faceapp.pipeline import open_editor

    return open_editor(model, device=device, steps=steps)


def expand_inputs(items: Sequence[str], exclude_dir=None) -> tuple[list, list[tuple[str, str]]]:
    """Files, folders (their image files, sorted) and globs -> (photo paths, [(item, why) that matched nothing]).

    Results of `age` inside `exclude_dir` (the output folder: `*_age+2.png`, `*_age+30y.png`, `*_aging.gif`) are
    skipped, so a run
    whose output folder is also an input never takes its own results as new photos.
    """
    import glob
    import re
    from pathlib import Path

    photos, missing, seen = [], [], set()
    skip = Path(exclude_dir).resolve() if exclude_dir is not None else None

    def add(p: Path):
        key = p.resolve()
        if skip is not None and key.is_relative_to(skip) and re.search(r"_age[+-][\d.]+y?\.png$|_aging\.gif$", p.name):
            return
        if key not in seen:
            seen.add(key)
            photos.append(p)

    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                missing.append((item, "folder holds no image files"))
            for q in found:
                add(q)
        elif p.is_file():
            add(p)
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                missing.append((item, "pattern matches no file"))
            for q in found:
                add(q)
        else:
            missing.append((item, "no such file or folder"))
    return photos, missing


def _atomic_save(image_or_frames, path, *, gif: bool = False) -> None:
    """Write to a temporary name beside `path`, then rename: a killed run never leaves half a file."""
    import os
    import time

    from faceapp.imageio import atomic_path
    from faceapp.writers import save_gif

    if gif:
        save_gif(image_or_frames, path)  # atomic itself
        return
    with atomic_path(path) as tmp:
        image_or_frames.save(tmp, format="PNG")
        delay = float(os.environ.get("FACEAPP_TEST_SLEEP", "0") or 0)  # test hook: widen the kill window
        if delay:
            time.sleep(delay)


def read_manifest(path) -> list[dict]:
    """The manifest's records; a line cut short by a killed run is skipped."""
    import json

    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def append_manifest(path, record: dict) -> None:
    import json
    import os

    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:  # a previous run killed mid-line: start on a fresh line
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def output_stems(photos) -> dict:
    """Output name stem per photo: the file stem, plus a short path hash where two inputs share a stem."""
    import hashlib
    from collections import Counter
    from pathlib import PurePosixPath
    from urllib.parse import urlsplit

    def stem(p) -> str:  # a Path, or an object-store URL (a str)
        return PurePosixPath(urlsplit(p).path).stem if isinstance(p, str) else p.stem

    counts = Counter(stem(p) for p in photos)
    return {
        p: stem(p) if counts[stem(p)] == 1 else f"{stem(p)}-{hashlib.sha256(photo_key(p).encode()).hexdigest()[:6]}"
        for p in photos
    }


@dataclass(frozen=True)
class AgeJob:
    """What every photo of one `age` run gets: where to write, which outputs, how to invert.

    Plain data (picklable): the Ray engine ships it to its workers, so both engines age a photo with the
    same `age_photo` call and write the same pixels.
    """

    out: str
    steps: tuple[tuple[str, float], ...]  # (output label, age strength) per output image
    timeline: tuple[float, ...] | None  # strengths of an aging GIF instead of `steps`
    faces: str
    mode: str
    hold: tuple[str, ...]
    signature: str  # of the options that change outputs: a rerun skips photos recorded with the same one
    model_id: str
    years: tuple[float, ...] | None = None  # per output of `steps`: years asked, each face by its own curve


def age_photo(editor, source, job: AgeJob, *, stem: str, name: str | None = None) -> dict:
    """Age one photo into its outputs in `job.out` (atomic writes); returns its manifest record's result part.

    source: a path or the photo's encoded bytes; name: its file name for messages (default: the path's).
    The result is {status: ok, faces, outputs} or {status: failed, error}, plus seconds and times (seconds per
    stage: load, detect, invert (align + inversion), edit (edit + render + paste-back), write). Never raises
    for a bad photo: the error is recorded instead.
    """
    import time
    from pathlib import Path

    times = dict.fromkeys(("load", "detect", "invert", "edit", "write"), 0.0)
    t0 = last = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal last
        now = time.perf_counter()
        times[stage] += now - last
        last = now

    out = Path(job.out)
    try:
        photo = editor.load(source, name=name)
        lap("load")
        found = editor.detect(photo)
        lap("detect")
        prepared = editor.prepare(photo, faces=job.faces, mode=job.mode, detected=found)
        lap("invert")
        outputs, got = [], {}
        if job.timeline is None:
            for k, (label, s) in enumerate(job.steps):
                edit = {"age": s}
                if job.years is not None:  # each face by its own curve; the manifest says what each got
                    edit, years = editor.years_strengths(prepared, job.years[k])
                    got[f"{stem}_age{label}.png"] = [round(y, 1) for y in years]
                image = editor.compose(photo, prepared, edit, hold=job.hold)
                lap("edit")
                _atomic_save(image, out / f"{stem}_age{label}.png")
                lap("write")
                outputs.append(f"{stem}_age{label}.png")
        else:
            for f in prepared:
                frames = editor.timeline(photo, [f], name="age", strengths=job.timeline, hold=job.hold)
                frames = [_around_face(fr, f.aligned) for fr in frames]
                lap("edit")
                _atomic_save(frames, out / f"{stem}_face{f.index + 1}_aging.gif", gif=True)
                lap("write")
                outputs.append(f"{stem}_face{f.index + 1}_aging.gif")
        record = {"status": "ok", "faces": len(prepared), "outputs": outputs}
        if got:
            record["years"] = got  # per output, per face (largest first): the years its edit reads
    except FaceAppError as e:
        record = {"status": "failed", "error": str(e)}
    except Exception as e:  # an unforeseen bug must not stop a batch: record it and go on
        record = {"status": "failed", "error": f"internal error: {type(e).__name__}: {e}"}
    record["seconds"] = round(time.perf_counter() - t0, 3)
    record["times"] = {k: round(v, 4) for k, v in times.items()}
    return record


def photo_key(photo) -> str:
    """A photo's manifest key: a local file's resolved path, an object-store URL as given."""
    return photo if isinstance(photo, str) else str(photo.resolve())



def _around_face(frame, aligned, side: int = 512):
    """The neighbourhood of one face in a full frame (the crop's square, 1.5x), at most `side` px."""
    import numpy as np
    from PIL import Image

    q = aligned.quad
    c, half = q.mean(0), (q.max(0) - q.min(0)).max() * 0.75
    x0, y0 = np.maximum(np.floor(c - half), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(c + half), frame.size).astype(int)
    crop = frame.crop((int(x0), int(y0), int(x1), int(y1)))
    if max(crop.size) > side:
        k = side / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * k)), max(1, round(crop.height * k))), Image.LANCZOS)
    return crop


