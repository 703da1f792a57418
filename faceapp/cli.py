"""Command line: `python -m faceapp <command> ...`.

Each command registers itself in `build_parser` through an `_add_<command>(subparsers)` function
and runs through a handler `(args) -> int`. A FaceAppError becomes one line on stderr and exit
code 2 (no traceback): the message already says what to do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from faceapp.errors import FaceAppError

__all__ = ["build_parser", "main"]


def _format_net(name: str, net) -> str:
    params = sum(p.numel() for p in net.parameters())
    res = getattr(net, "img_resolution", "?")
    return f"{name} ({type(net).__name__}, {res}px, {params:,} parameters)"


def _cmd_convert(args: argparse.Namespace) -> int:
    import os

    import torch

    from faceapp.errors import CheckpointError
    from faceapp.stylegan.checkpoint import save_networks
    from faceapp.stylegan.legacy import detect_format, import_checkpoint

    names = [n.strip() for n in args.nets.split(",") if n.strip()] if args.nets else None
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise CheckpointError(f"{args.output} is also the input; choose another output path")
    fmt = detect_format(args.input)
    imported = import_checkpoint(args.input, device="cpu", names=names)
    extra = dict(imported.extra)
    if fmt != "faceapp":  # re-saving our own file keeps its provenance
        extra["converted_from"] = os.path.basename(args.input)
        extra["source_format"] = fmt
    extra["convert_options"] = {"nets": names, "fp16": bool(args.fp16)}
    save_networks(args.output, imported.nets, extra=extra, dtype=torch.float16 if args.fp16 else None)
    stored = "fp16" if args.fp16 else "float32"
    print(f"read {args.input} ({fmt})")
    for name, net in imported.nets.items():
        print(f"  {_format_net(name, net)}")
    print(f"wrote {args.output} ({len(imported.nets)} network(s), {stored} weights)")
    return 0


def _add_convert(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint (NVIDIA .pkl, rosinality .pt, faceapp) to faceapp's format",
        description="Read a StyleGAN2 checkpoint without executing code from it and write faceapp's "
        ".safetensors format. The input format is detected from the file's content.",
    )
    p.add_argument("input", help="NVIDIA stylegan2-ada-pytorch .pkl, rosinality stylegan2-pytorch .pt, "
                   "or a faceapp .safetensors")
    p.add_argument("output", help="where to write the faceapp .safetensors checkpoint")
    p.add_argument("--nets", default=None,
                   help="comma-separated networks to keep, e.g. G_ema or G,D,G_ema (default: all present)")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (half the file size)")
    p.set_defaults(handler=_cmd_convert)


# ---------------------------------------------------------------------------------------------
# age / edit: photos through FaceEditor (faceapp/batch.py holds what both age engines share).


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like -2,0,2; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one strength")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(n for n in (t.strip() for t in text.split(",")) if n)


def _cmd_age(args: argparse.Namespace) -> int:
    import hashlib
    import json
    from pathlib import Path

    from tqdm import tqdm

    from faceapp.batch import (
        MANIFEST,
        AgeJob,
        age_photo,
        append_manifest,
        expand_inputs,
        make_editor,
        output_stems,
        photo_key,
        read_manifest,
    )
    from faceapp.imageio import atomic_path

    ray_engine = args.engine == "ray"
    if not ray_engine and (args.address is not None or args.workers is not None):
        raise FaceAppError("--address and --workers are for --engine ray")
    if ray_engine:
        from faceapp.batch_ray import require_ray

        require_ray(local=not args.address)  # before any work: one clear line when it is missing
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # left by a killed run
        stale.unlink(missing_ok=True)
    urls = [i for i in args.inputs if "://" in i] if ray_engine else []  # object-store inputs: Ray Data reads them
    photos, missing = expand_inputs([i for i in args.inputs if i not in urls], exclude_dir=args.out)
    if urls:
        from faceapp.batch_ray import list_urls

        found, not_found = list_urls(urls)
        photos += found
        missing += not_found
    if not photos and not missing:
        raise FaceAppError("no input photos given")
    # The Ray driver reads the model only for its options (the workers age the photos): on the CPU.
    editor = make_editor(args.model, device="cpu" if ray_engine else args.device, steps=args.steps)
    if "age" not in editor.bundle.directions:
        raise FaceAppError(f"model {editor.bundle.name!r} has no age direction")
    # (label, strength) per output: --years are converted with the model's calibration (refused without one)
    if args.years is not None:
        steps = [(f"{y:+g}y", s) for y, s in zip(args.years, _years_strengths(editor, args.years))]
    else:
        steps = [(f"{s:+g}", s) for s in args.strengths]
        _note_outside_range(editor.bundle.directions, "age", args.strengths)
    options = {
        "strengths": None if args.timeline is not None else [s for _, s in steps],
        "timeline": args.timeline,
        "mode": args.mode,
        "faces": args.faces,
        "hold": list(args.hold),
        "steps": args.steps,
        "model": editor.bundle.model_id,
    }
    if args.years is not None:  # only then: older manifests' signatures stay valid
        options["years"] = args.years
        if editor.bundle.years_by_age:  # each face's strength comes from the curves: a refit makes new outputs
            by_age = json.dumps(editor.bundle.directions["age"].years.by_age, sort_keys=True)
            options["years_curves"] = hashlib.sha256(by_age.encode()).hexdigest()[:16]
    signature = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    run_options = {**options, "model_source": str(args.model), "inputs": list(args.inputs), "signature": signature,
                   "engine": args.engine}
    with atomic_path(out / "options.json") as tmp:
        tmp.write_text(json.dumps(run_options, indent=2) + "\n")

    manifest = out / MANIFEST
    done = {
        r["input"]
        for r in read_manifest(manifest)
        if r.get("status") == "ok"
        and r.get("signature") == signature
        and all((out / o).is_file() for o in r.get("outputs", []))
    }
    stems = output_stems(photos)
    failed = skipped = made = 0
    for item, why in missing:
        append_manifest(manifest, {"input": item, "status": "failed", "error": why, "signature": signature})
        failed += 1
    timeline = None
    if args.timeline is not None:
        import numpy as np

        lo, hi = editor.bundle.directions["age"].strength_range
        timeline = tuple(float(s) for s in np.linspace(lo, hi, args.timeline))
    job = AgeJob(out=str(out.resolve()), steps=tuple(steps), timeline=timeline, faces=args.faces, mode=args.mode,
                 hold=tuple(args.hold), signature=signature, model_id=editor.bundle.model_id,
                 years=tuple(args.years) if args.years is not None and args.timeline is None else None)
    todo = []
    for photo_path in photos:
        key = photo_key(photo_path)
        if key in done:
            skipped += 1
        else:
            todo.append((photo_path, key, stems[photo_path]))
    if ray_engine:
        from faceapp.batch_ray import age_on_ray

        results = age_on_ray(todo, job, model=args.model, device=args.device, steps=args.steps,
                             address=args.address, workers=args.workers)
    else:
        results = ((key, age_photo(editor, p, job, stem=stem)) for p, key, stem in todo)
    bar = tqdm(results, total=len(todo), unit="photo", desc="aging", disable=args.quiet)
    for key, result in bar:
        bar.set_postfix_str(Path(key).name)
        append_manifest(manifest, {"input": key, "signature": signature, **result})
        if result["status"] == "ok":
            made += 1
        else:
            failed += 1
    bar.close()
    print(f"{made} photo(s) done, {skipped} already done, {failed} failed; manifest: {manifest}")
    return 1 if failed else 0


def _note_outside_range(directions, name: str, strengths) -> None:
    """Say on stderr which of `strengths` of `directions[name]` lie past its slider range (done, not refused:
    the model was not made for them, and faces may break up there)."""
    if name not in directions:
        return
    lo, hi = directions[name].strength_range
    for s in strengths:
        if not lo <= s <= hi:
            print(f"note: {name} {s:+g} is outside the model's range {lo:g}..{hi:g}: the face may not hold up there",
                  file=sys.stderr)


def _years_strengths(editor, years) -> list[float]:
    """Age strengths for `years` (each N years older; < 0 younger) from the model's calibration, for a face of
    unknown age (with curves by age each face converts them itself: `FaceEditor.years_strengths`).

    Raises YearsUnavailableError (a FaceAppError) when the age direction has no years calibration. Years the
    model's slider range cannot reach are made at the range's end, and stderr says so with what that end
    measured: past it the calibration would be extrapolated onto renders that break up (as the app's presets).
    """
    from faceapp.edits import strength_to_years, years_to_strength

    directions = editor.bundle.directions
    lo, hi = directions["age"].strength_range
    out = []
    by_age = editor.bundle.years_by_age
    for y in years:
        s = years_to_strength(directions, "age", y)
        if not lo <= s <= hi and by_age:  # each face says what it reached (the manifest)
            s = hi if s > hi else lo
        elif not lo <= s <= hi:
            end = hi if s > hi else lo
            print(f"note: {y:+g} years would need age strength {s:+.2f}, past the model's range {lo:g}..{hi:g}: "
                  f"made at {end:+g}, which reads {strength_to_years(directions, 'age', end):+.1f} years",
                  file=sys.stderr)
            s = end
        out.append(s)
    return out


def _add_model_args(p) -> None:
    from faceapp.pipeline import default_model

    p.add_argument("--model", default=default_model(),
                   help="model bundle folder, generator checkpoint or Hugging Face Hub repo id "
                   "(default: $FACEAPP_MODEL, else models/demo/)")
    from faceapp.inversion.modes import MODES

    p.add_argument("--mode", choices=MODES, default="fast",
                   help="inversion quality: fast (encoder), balanced (+ refinement), best (+ pivotal tuning)")
    p.add_argument("--faces", choices=("largest", "all"), default="all", help="which faces to edit (default: all)")
    p.add_argument("--hold", type=_names, default=(),
                   help="attributes to keep fixed while editing, e.g. gender,glasses (conditional edits)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimisation steps per inversion stage (default: the mode's own; fewer is faster and rougher)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _frame_count(text: str) -> int:
    """argparse type for --timeline: an integer of at least 2 frames."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames, not {text!r}") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"a timeline needs at least 2 frames, not {n}")
    return n


def _add_age(subparsers) -> None:
    p = subparsers.add_parser(
        "age",
        help="age every face in many photos (files, folders, globs); resumable, with a manifest",
        description="Age every face in every photo to the requested strengths (or make an aging timeline GIF "
        "per face), pasted back into the photo. Outputs go to --out as <stem>_age<+2>.png or "
        "<stem>_face<k>_aging.gif; manifest.jsonl records what was made and what failed and why. A rerun "
        "skips photos already done with the same options. Exit code 1 when any photo failed. --engine ray "
        "spreads the photos over Ray workers (this machine or a cluster); inputs may then also be object-store "
        "URLs (s3://..., gs://...) that Ray Data reads.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files, folders of photos, or glob patterns")
    p.add_argument("--out", required=True, help="output folder (created)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--strengths", type=_float_list, default=[-2.0, 2.0],
                   help="comma-separated age strengths, e.g. -2,0,2 (default: -2,2); + is older")
    g.add_argument("--years", type=_float_list, default=None, metavar="N,N,...",
                   help="instead: ages in years, e.g. 10,20,30 or -10 (younger), converted with the model's years "
                   "calibration (refused when it has none); outputs <stem>_age+10y.png")
    g.add_argument("--timeline", type=_frame_count, metavar="N", default=None,
                   help="instead: an N-frame aging GIF per face, young to old")
    _add_model_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process, one photo after another (default); ray: a pool of Ray workers, "
                   "on this machine or a cluster (pip install 'faceapp[ray]'), same outputs and manifest")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="with --engine ray: the Ray cluster to join (HOST:PORT, or auto for the one started with "
                   "`ray start` here); default: start a local Ray instance on this machine's cores")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --engine ray: N workers, each loads the model once and uses one CPU (one GPU with "
                   "--device cuda); default: one per CPU (GPU) of the cluster")
    p.set_defaults(handler=_cmd_age)


def _cmd_edit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from faceapp.batch import make_editor
    from faceapp.imageio import atomic_path

    strengths = {name: value for name, value in (args.edits or []) if value}
    for name in ("age", "smile", "glasses", "gender"):
        value = getattr(args, name)
        if value:
            strengths[name] = value
    editor = make_editor(args.model, device=args.device, steps=args.steps)
    shown = [f"{k} {v:+g}" for k, v in strengths.items() if not (k == "age" and args.years)]
    for name, value in strengths.items():
        _note_outside_range(editor.bundle.directions, name, [value])
    if args.years:
        if "age" not in editor.bundle.directions:
            raise FaceAppError(f"model {editor.bundle.name!r} has no age direction")
        from faceapp.edits import has_years

        if not has_years(editor.bundle.directions, "age"):
            _years_strengths(editor, [args.years])  # the calibration's own message
        strengths.pop("age", None)
        editor._check_strengths(strengths)  # the other edits' names, before the inversion
        photo = editor.load(args.photo)
        prepared = editor.prepare(photo, faces=args.faces, mode=args.mode)
        per_face, got = editor.years_strengths(prepared, args.years, strengths)
        said = []
        for f, st, y in zip(prepared, per_face, got):  # each face by its own curve: say what it got
            who = f"face {f.index + 1}: " if len(prepared) > 1 else ""
            limit = f" at the model's limit for this face ({args.years:+g} asked)" if abs(y - args.years) >= 0.5 \
                else ""
            said.append(f"{who}age {y:+.1f} years{limit} (strength {st['age']:+.2f})")
        shown = said + shown
        result = editor.compose(photo, prepared, per_face, hold=args.hold)
    else:
        result = editor.edit_photo(args.photo, strengths, faces=args.faces, mode=args.mode, hold=args.hold)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        result.save(tmp, format=_format_for(out))
    shown = ", ".join(shown) or "no edit (re-rendered)"
    print(f"wrote {out} ({shown})")
    return 0


def _format_for(path) -> str:
    from PIL import Image

    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise FaceAppError(f"cannot tell the image format from {path.name!r}; use .png or .jpg")
    return fmt


def _edit_pair(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=STRENGTH like smile=1.5; got {text!r}") from None


def _add_edit(subparsers) -> None:
    p = subparsers.add_parser(
        "edit",
        help="edit the faces of one photo: --age 2 --smile 1 ...",
        description="Edit a photo's faces along the model's directions and write the result.",
    )
    p.add_argument("photo", help="the photo")
    p.add_argument("--out", required=True, help="where to write the result (.png, .jpg, ...)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--age", type=float, default=0.0,
                   help="older (+) / younger (-) strength, within the model's slider range (e.g. -3..3; "
                   "the demo model: -12..12)")
    g.add_argument("--years", type=float, default=None, metavar="N",
                   help="instead of --age: N years older (N < 0: younger), converted with the model's years "
                   "calibration (refused when it has none)")
    for name, what in (("smile", "smile"), ("glasses", "glasses"), ("gender", "gender")):
        p.add_argument(f"--{name}", type=float, default=0.0,
                       help=f"{what} strength, within the model's slider range (e.g. -3..3)")
    p.add_argument("--edit", dest="edits", action="append", type=_edit_pair, metavar="NAME=STRENGTH",
                   help="any other direction of the model (repeatable)")
    _add_model_args(p)
    p.set_defaults(handler=_cmd_edit)


# ---------------------------------------------------------------------------------------------
# fetch-lpips: the LPIPS backbone, downloaded by faceapp.fetch.fetch_lpips (library code never downloads).


def _cmd_fetch_lpips(args: argparse.Namespace) -> int:
    from faceapp.fetch import fetch_lpips, lpips_file
    from faceapp.inversion.losses import lpips_weights_cached

    if lpips_weights_cached(args.net):
        print(f"already there: {lpips_file(args.net)}")
        return 0
    print(f"downloaded and checked {fetch_lpips(args.net, progress=True)}")
    return 0


def _add_fetch_lpips(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch-lpips",
        help="download the ImageNet backbone real LPIPS needs into the torch cache (needs internet)",
        description="Download torchvision's ImageNet VGG16 (or AlexNet) weights, checksum-checked, into the torch "
        "hub cache, so inversions use real LPIPS instead of the offline MobileNetV2 fallback.",
    )
    p.add_argument("--net", choices=("vgg", "alex"), default="vgg", help="which LPIPS backbone (default: vgg)")
    p.set_defaults(handler=_cmd_fetch_lpips)


# ---------------------------------------------------------------------------------------------
# bundle / fetch ffhq: a model bundle from official files (local, or downloaded by `fetch`).


def _print_bundle(path, force_directions: bool = False) -> None:
    """Load the bundle just written (the proof it works) and say what is in it."""
    from faceapp.bundle import load_bundle

    b = load_bundle(path, force_directions=force_directions)
    names = ", ".join(b.direction_names) or "none"
    print(f"wrote bundle {path}: {b.name}, {b.resolution}x{b.resolution}, "
          f"encoder {'yes' if b.encoder is not None else 'no'}, directions: {names}")
    for note in b.meta.get("notes") or []:
        print(f"note: {note}")


def _cmd_bundle(args: argparse.Namespace) -> int:
    from faceapp.bundle import build_bundle

    path = build_bundle(args.out, generator=args.generator, encoder=args.encoder, directions=args.directions,
                        align=args.align, name=args.name, force_directions=args.force_directions,
                        calibrate=args.calibrate, detail=args.detail, age_prototypes=args.age_prototypes,
                        age_prototypes_end=args.age_prototypes_end, age_gan_share=args.age_gan_share,
                        age_prototypes_younger_end=args.age_prototypes_younger_end,
                        glasses_overlay=args.glasses_overlay, smile_prototypes=args.smile_prototypes,
                        smile_prototypes_end=args.smile_prototypes_end, age_estimator=args.age_estimator,
                        age_profile=args.age_profile, age_wrinkles=args.age_wrinkles,
                        age_prototypes_late=args.age_prototypes_late,
                        age_prototypes_growth=args.age_prototypes_growth)
    _print_bundle(path, force_directions=args.force_directions)
    print(f"use it: python app.py --model {path}")
    print(f"    or: python -m faceapp edit PHOTO --model {path} --age 2 --out OUT.png")
    return 0


def _add_bundle(subparsers) -> None:
    p = subparsers.add_parser(
        "bundle",
        help="make a model bundle from a generator, an encoder and direction files you have (no network)",
        description="Make a model bundle (generator + encoder + edit directions + crop spec) from files in any "
        "supported format, read without executing code from them. Directions are named by their file "
        "(age.pt -> age; NAME=FILE to rename) and must be made for this generator: a set made for another "
        "(StyleGAN1 InterFaceGAN boundaries, another w_dim or num_ws, another model) is refused unless "
        "--force-directions.",
    )
    p.add_argument("--generator", required=True, metavar="FILE",
                   help="NVIDIA stylegan2-ada-pytorch .pkl, rosinality .pt or faceapp .safetensors")
    p.add_argument("--out", required=True, metavar="DIR", help="the bundle folder to write")
    p.add_argument("--encoder", metavar="FILE", help="e4e's e4e_ffhq_encode.pt or a faceapp encoder checkpoint")
    p.add_argument("--detail", metavar="FILE", help="an optional detail stage for this generator "
                   "(training/train_detail.py; its renders come back sharper and larger)")
    p.add_argument("--directions", nargs="+", action="extend", default=[], metavar="FILE",
                   help="direction files: e4e .pt, InterFaceGAN .npy, GANSpace .npz / ffhq_pca.pt, faceapp "
                   "direction set folders; NAME=FILE names a single direction")
    p.add_argument("--align", choices=("ffhq", "utkface"), default="ffhq",
                   help="how the model's training faces were cropped (default: ffhq, as the official weights)")
    p.add_argument("--name", default=None, help="the bundle's name (default: the generator file's stem)")
    p.add_argument("--force-directions", action="store_true",
                   help="use directions made for another generator anyway (recorded in the bundle)")
    p.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="measure each direction's strength unit on N mapping samples (strength 1 = one std); "
                   "default 0 keeps the files' own units")
    p.add_argument("--age-prototypes", metavar="FILE",
                   help="age prototypes (python -m training.age_prototypes): the age edit's wrinkles, folds and "
                   "sagging at the photo's own resolution; needs an age direction")
    p.add_argument("--age-prototypes-end", type=float, default=1.75, metavar="T",
                   help="how far the prototypes move a face at the age slider's end (1 = from the younger group's "
                   "mean to the older one's; default 1.75)")
    p.add_argument("--age-prototypes-younger-end", type=float, default=None, metavar="T",
                   help="how far they move a face at the slider's younger end (default: --age-prototypes-end)")
    p.add_argument("--age-gan-share", type=float, default=0.0, metavar="S",
                   help="the generator's share of the age edit next to the prototypes, 0..1 (default 0: a 64 px "
                   "generator's aging reads as smudges; 1 for a generator that renders age well)")
    p.add_argument("--age-wrinkles", type=float, default=None, metavar="W",
                   help="share of the older group's missing fine-line energy the age prototypes draw at the slider's "
                   "end, 0..5 (default 1.5; 0: none drawn)")
    p.add_argument("--age-prototypes-late", metavar="FILE",
                   help="late-life prototypes (python -m training.age_prototypes --young 55,66 --old 80,120): a "
                   "second change for faces the age profile gives a 'late' part")
    p.add_argument("--age-prototypes-growth", metavar="FILE",
                   help="growth prototypes (python -m training.age_prototypes --young 3,12 --old 22,32): children "
                   "the age profile gives a 'growth' part grow up rather than wrinkle")
    p.add_argument("--age-estimator", metavar="FILE",
                   help="an age estimator (python -m training.age_estimator): with --age-profile each face is aged "
                   "by the parts its estimated age calls for")
    p.add_argument("--age-profile", metavar="FILE",
                   help="the age profile (python -m training.age_profile's JSON): the aging parts by estimated age")
    p.add_argument("--glasses-overlay", action="store_true",
                   help="the glasses edit draws frames on the photo, fitted to the landmarks (for a small generator "
                   "that cannot add glasses; needs a glasses direction for the slider)")
    p.add_argument("--smile-prototypes", metavar="FILE",
                   help="smile prototypes (python -m training.smile_prototypes): the smile moves the photo's own "
                   "mouth and cheeks instead of pasting the generator's mouth over it; needs a smile direction")
    p.add_argument("--smile-prototypes-end", type=float, default=1.0, metavar="T",
                   help="how far they move a face at the smile slider's end (1 = from the neutral group's mean to "
                   "the smiling one's; default 1)")
    p.set_defaults(handler=_cmd_bundle)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from faceapp.bundle import named_model_dir
    from faceapp.fetch import fetch_ffhq

    path = fetch_ffhq(args.out, generator=args.generator, encoder=args.e4e, no_encoder=args.no_encoder,
                      base_url=args.base_url, progress=not args.quiet)
    _print_bundle(path)
    model = "ffhq" if args.out is None or path.resolve() == named_model_dir("ffhq").resolve() else str(path)
    print(f"use it: python app.py --model {model}")
    return 0


def _add_fetch(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch",
        help="download the official FFHQ StyleGAN2 generator, e4e encoder and directions, and bundle them",
        description="Download NVIDIA's FFHQ StyleGAN2 generator, e4e's FFHQ encoder and e4e's age / smile / pose "
        "directions into faceapp's cache (resumable, size/checksum-checked where known), convert them with the "
        "safe importers and write the bundle 'ffhq' (python app.py --model ffhq). Offline, it says what to "
        "download by hand and where to put it.",
    )
    p.add_argument("what", choices=("ffhq",), help="what to fetch (ffhq: the official FFHQ StyleGAN2 files)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="bundle folder (default: the cache's models/ffhq, found by --model ffhq)")
    p.add_argument("--generator", metavar="FILE", help="use this ffhq.pkl (or .pt) instead of downloading it")
    p.add_argument("--e4e", metavar="FILE", help="use this e4e_ffhq_encode.pt instead of downloading it")
    p.add_argument("--no-encoder", action="store_true", help="build the bundle without the e4e encoder")
    p.add_argument("--base-url", default=None, metavar="URL",
                   help="fetch every file as URL/<file name> (a mirror; default: $FACEAPP_FETCH_BASE_URL, else "
                   "the official URLs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_fetch)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per faceapp command."""
    parser = argparse.ArgumentParser(prog="faceapp", description="Open-source FaceApp: StyleGAN2 face editing.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_convert(subparsers)
    _add_age(subparsers)
    _add_edit(subparsers)
    _add_fetch_lpips(subparsers)
    _add_bundle(subparsers)
    _add_fetch(subparsers)
    return parser


def _join_negative_lists(argv: list[str]) -> list[str]:
    """`--strengths -2,0,2` -> `--strengths=-2,0,2` (argparse would take -2,0,2 for an option); also --years."""
    import re

    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--strengths", "--years") and i + 1 < len(argv) and re.match(r"^-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 some photos failed (age), 2 usage error or FaceAppError)."""
    args = build_parser().parse_args(_join_negative_lists(sys.argv[1:] if argv is None else list(argv)))
    try:
        return int(args.handler(args) or 0)
    except FaceAppError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output path that cannot be written (a folder, no permission, disk full, ...)
        print(f"error: {e.filename or ''}: {e.strerror or e}" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
