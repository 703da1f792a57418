"""Turn a folder or zip of photos into a training archive of aligned face crops.

    python -m training.prepare_dataset --source photos/ --dest data/mine-128.zip --resolution 128
    python -m training.prepare_dataset --source ../shared/data/utkface/utkface-200px.zip \\
        --dest data/utkface-128.zip --resolution 128 --workers 2

Each photo is loaded (EXIF orientation applied), its largest face detected with
68 landmarks and cropped the way ``--align-spec`` says (``utkface``: a similarity
transform of five keypoints onto the UTKFace template, the crop our demo model
uses; ``ffhq``: NVIDIA's FFHQ quad), at ``--resolution`` pixels. The archive is the
layout training/dataset.py reads (and NVIDIA's dataset_tool writes): PNGs plus
``dataset.json`` with

- ``attributes``: per image, what the file name said (UTKFace names
  ``<age>_<gender>_<race>_<date>.jpg`` give age, gender, race), the source file
  and the number of faces found;
- ``labels``: the class label training uses with ``--cond`` (``--label gender`` or
  ``race``), or null.

Photos that cannot be used are not dropped silently: ``<dest stem>-failures.csv``
lists each with the reason (unreadable, no face, ...). The options this ran with
go to ``<dest stem>-options.json``. Both sit beside the archive (inside it when
--dest is a folder).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from faceapp.align import (
    FFHQ_SPEC,
    AlignSpec,
    Face,
    align_face,
    detect_faces,
    load_image,
    utkface_spec,
)
from faceapp.errors import FaceAppError, ImageError, NoFaceError
from training.options import opt, parse_options
from training.utkface import parse_utkface_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
LABEL_FIELDS = ("none", "gender", "race")


@dataclass(frozen=True)
class PrepareOptions:
    """What prepare_dataset ran with (written to <dest stem>-options.json)."""

    source: str = opt(dataclasses.MISSING, "folder (recursive) or .zip of photos", required=True)
    dest: str = opt(dataclasses.MISSING, "output archive (.zip) or folder", required=True)
    resolution: int = opt(dataclasses.MISSING, "crop side in pixels (a power of two to train)", required=True)
    align_spec: str = opt("utkface", "'utkface' (template crop) or 'ffhq'", choices=["utkface", "ffhq"])
    detector: str = opt("dlib", "auto | dlib | dlib_cnn | face_alignment")
    label: str = opt("none", "class label for conditional training, from UTKFace file names", choices=LABEL_FIELDS)
    fallback_detector: str | None = opt(
        None, "second detector for photos the first finds no face in (dlib_cnn: slower, finds more)")
    detect_pad: float = opt(0.0, "mirror-pad by this fraction for detection (0.15 helps tight crops like UTKFace's)")
    min_score: float | None = opt(None, "detector confidence cut (default: the detector's; 0 keeps weak detections)")
    workers: int = opt(1, "processes; 1 = in this process")
    max_images: int | None = opt(None, "stop after this many source files (sorted order)")
    aligned: bool = opt(False, "sources already are crops in the --align-spec frame (UTKFace's own, with utkface):\n"
                               "resize only, no detection", action="store_true")
    exclude: tuple[str, ...] = opt((), "files of source file names (one per line) to leave out: held-out splits such "
                                       "as\ntraining/labels/utkface-heldout-fd.txt "
                                       "training/labels/utkface-heldout-eval.txt", nargs="+")


def list_sources(source: Path) -> list[str]:
    """Image file names in a folder (relative paths, recursive) or zip, sorted."""
    if source.is_dir():
        names = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    else:
        raise FaceAppError(f"--source {source}: not a folder or a zip archive")
    return sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("__MACOSX/"))


def make_spec(kind: str, resolution: int) -> AlignSpec:
    if kind == "utkface":
        return utkface_spec(resolution)
    if kind == "ffhq":
        return FFHQ_SPEC(resolution)
    raise FaceAppError(f"--align-spec {kind!r}: use utkface or ffhq")


_zip_cache: dict[str, zipfile.ZipFile] = {}  # one open handle per source zip per process


def _read_source(source: Path, name: str) -> bytes:
    if source.is_dir():
        return (source / name).read_bytes()
    zf = _zip_cache.get(str(source))
    if zf is None:
        zf = _zip_cache[str(source)] = zipfile.ZipFile(source)
    return zf.read(name)


@dataclass(frozen=True)
class Result:
    """The outcome for one source file: a PNG crop, or the reason there is none."""

    name: str
    png: bytes | None
    reason: str | None
    num_faces: int = 0
    detector: str | None = None  # the backend that found the face


def detect_padded(image: Image.Image, detector: str, pad: float, min_score: float | None) -> list[Face]:
    """detect_faces on a mirror-padded copy, with boxes and landmarks mapped back to ``image``.

    Tight crops (UTKFace's faces fill the frame) defeat dlib's HOG window; a margin of
    mirrored pixels around them lets it see the whole face.
    """
    p = int(round(pad * max(image.size)))
    if p <= 0:
        return detect_faces(image, backend=detector, min_score=min_score)
    padded = Image.fromarray(np.pad(np.asarray(image), ((p, p), (p, p), (0, 0)), mode="reflect"))
    padded.info.update(image.info)  # keeps the name for error messages
    faces = detect_faces(padded, backend=detector, min_score=min_score)
    return [
        dataclasses.replace(f, box=tuple(v - p for v in f.box), landmarks68=(f.landmarks68 - p).astype(np.float32))
        for f in faces
    ]


def process_one(source: Path, name: str, spec: AlignSpec, detector: str, detect_pad: float = 0.0,
                min_score: float | None = None, fallback: str | None = None, aligned: bool = False) -> Result:
    """Load, detect, align one photo. Never raises for a bad photo: the reason goes in the Result.

    ``fallback`` is a second detector tried when the first finds no face (e.g. the slower,
    more tolerant dlib_cnn behind dlib's HOG). ``aligned``: the photo already is a crop in
    the spec's frame (UTKFace's own 200 px crops and the utkface spec): only resized (area
    filter), no detection, so no photo is lost to a missed face.
    """
    try:
        image = load_image(_read_source(source, name), name=name)
    except (ImageError, OSError) as e:
        return Result(name, None, f"unreadable: {e}")
    if aligned:
        crop = image.convert("RGB").resize((spec.size, spec.size), Image.Resampling.BOX if image.width >= spec.size
                                           else Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        crop.save(buf, format="PNG", compress_level=6)
        return Result(name, buf.getvalue(), None, num_faces=1, detector="aligned")
    faces = None
    for backend in [detector] + ([fallback] if fallback else []):
        try:
            faces = detect_padded(image, backend, detect_pad, min_score)
            break
        except NoFaceError:
            continue
        except FaceAppError as e:
            return Result(name, None, f"detection failed: {e}")
    if not faces:
        return Result(name, None, "no face found")
    try:
        crop = align_face(image, faces[0], spec).image  # largest face first
    except (FaceAppError, ValueError, np.linalg.LinAlgError) as e:
        return Result(name, None, f"alignment failed: {e}", num_faces=len(faces))
    buf = io.BytesIO()
    crop.convert("RGB").save(buf, format="PNG", compress_level=6)
    return Result(name, buf.getvalue(), None, num_faces=len(faces), detector=faces[0].backend)


def _process_star(args) -> Result:
    return process_one(*args)


def sidecar_paths(dest: Path) -> tuple[Path, Path]:
    """-> (failures.csv, options.json) for an archive or folder ``dest``."""
    if dest.suffix.lower() == ".zip":
        return dest.with_name(dest.stem + "-failures.csv"), dest.with_name(dest.stem + "-options.json")
    return dest / "failures.csv", dest / "options.json"


def prepare(opts: PrepareOptions, progress: bool = True) -> dict:
    """Build the archive ``opts.dest``; return counts {'images', 'failures', 'sources'} and paths."""
    from tqdm import tqdm

    source, dest = Path(opts.source), Path(opts.dest)
    if not source.exists():
        raise FaceAppError(f"--source {source}: no such file or folder")
    if opts.label not in LABEL_FIELDS:
        raise FaceAppError(f"--label {opts.label!r}: use one of {', '.join(LABEL_FIELDS)}")
    spec = make_spec(opts.align_spec, opts.resolution)
    names = list_sources(source)
    if opts.exclude:
        leave_out = {n for f in opts.exclude for n in Path(f).read_text().splitlines() if n}
        names = [n for n in names if Path(n).name not in leave_out]
    if opts.max_images is not None:
        names = names[: opts.max_images]
    if not names:
        raise FaceAppError(f"--source {source}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")

    jobs = [(source, n, spec, opts.detector, opts.detect_pad, opts.min_score, opts.fallback_detector, opts.aligned)
            for n in names]
    if opts.workers > 1:
        pool = concurrent.futures.ProcessPoolExecutor(opts.workers)
        results = pool.map(_process_star, jobs, chunksize=8)  # in source order
    else:
        pool = None
        results = map(_process_star, jobs)

    failures_csv, options_json = sidecar_paths(dest)
    to_zip = dest.suffix.lower() == ".zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not to_zip:
        dest.mkdir(parents=True, exist_ok=True)
    zf = zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) if to_zip else None  # PNGs are compressed

    def write(arcname: str, data: bytes) -> None:
        if zf is not None:
            zf.writestr(arcname, data)
        else:
            (dest / arcname).parent.mkdir(parents=True, exist_ok=True)
            (dest / arcname).write_bytes(data)

    attributes, labels, failures = [], [], []
    try:
        for res in tqdm(results, total=len(jobs), desc="aligning", unit="img", disable=not progress):
            if res.png is None:
                failures.append((res.name, res.reason))
                continue
            idx = len(attributes)
            arcname = f"{idx // 1000:05d}/img{idx:08d}.png"
            write(arcname, res.png)
            attrs = {"source": res.name, "faces": res.num_faces, "detector": res.detector,
                     **(parse_utkface_name(res.name) or {})}
            attributes.append([arcname, attrs])
            if opts.label != "none":
                if opts.label not in attrs:
                    raise FaceAppError(f"--label {opts.label}: {res.name} has no {opts.label} in its name")
                labels.append([arcname, attrs[opts.label]])
        meta = {
            "labels": labels if opts.label != "none" else None,
            "attributes": attributes,
            "align_spec": spec.to_dict(),
        }
        write("dataset.json", json.dumps(meta).encode())
    finally:
        if zf is not None:
            zf.close()
        if pool is not None:
            pool.shutdown()

    with open(failures_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "reason"])
        w.writerows(failures)
    options_json.write_text(json.dumps(dataclasses.asdict(opts), indent=2) + "\n")
    return {"sources": len(jobs), "images": len(attributes), "failures": len(failures),
            "dest": str(dest), "failures_csv": str(failures_csv), "options_json": str(options_json)}


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(PrepareOptions, argv, description=__doc__.split("\n\n")[0])
    summary = prepare(opts)
    rate = summary["failures"] / max(summary["sources"], 1)
    print(f"{summary['images']} crops -> {summary['dest']}; {summary['failures']} failed ({rate:.1%}), "
          f"listed in {summary['failures_csv']}")
    return summary


if __name__ == "__main__":
    main()
