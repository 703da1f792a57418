"""Benchmark inversion: seconds per face and reconstruction error per mode on held-out UTKFace faces.

    python -m bench.invert --bundle path/to/bundle              # generator + encoder of a model bundle
    python -m bench.invert --generator G.safetensors [--encoder E.safetensors]
    python -m bench.invert --random                             # an untrained demo-sized G (timings only)
    python -m bench.invert --random --faces 5 --modes fast,balanced --threads 1

Faces: the last `--faces` (default 50) files, in sorted name order, of
../shared/data/utkface/utkface-200px.zip (never used for training here; read from the zip at run time,
nothing written from them). Each 200 px crop is resized to the generator's resolution; without the
zip the benchmark says so and exits 0.

Per mode: seconds per face (wall clock, mean and median, after one warm-up inversion; and process CPU
time, the better guide on a shared machine: use --threads 1 there), and the
reconstruction of G(ws) against the face: pixel MSE on [-1,1], the perceptual distance (real LPIPS VGG
when its weights are in the torch cache, else the offline fallback; the column says which), and dlib's
identity distance (euclidean between descriptors; < 0.6 = same person to dlib), measured on the whole
crop (UTKFace crops are dlib-aligned already). With --random the generator is untrained: its figures
time the modes but say nothing of quality; every line says so.

--out DIR writes results.json and options.json there.

--pipeline (with --bundle): the issue's figures, on the photo the user gets back. Faces: the 50 of
training/labels/utkface-heldout-eval.txt (kept out of every fit and tuning; --faces N takes the first N)
and the public-domain test photos (tests/data, unedited). Each photo goes through FaceEditor (detect,
align, invert, render, the difference paste-back); per mode: seconds per face for the inversion alone
and for photo -> result, and the share of faces whose dlib descriptor distance between photo and result
at zero edit is < 0.6 (the same person), for the returned photo (difference paste-back: at zero edit it
returns the photo itself, so this share is 100 % by construction) and for the rendering pasted over
the face (paste='render': the inversion's own faithfulness, the figure that tells fast from best).
Distances are taken on the same UTKFace-style crop of the face in photo and result
(training/calibrate_years.PhotoMeter).

    python -m bench.invert --bundle models/demo --pipeline --modes fast,best --threads 1 \
        --age-gender-model runs/labelers/age_gender.safetensors
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from faceapp.imageio import from_uint8
from faceapp.inversion import MODES, IdentityLoss, InvertConfig, invert, perceptual_loss

ROOT = Path(__file__).resolve().parents[1]
UTKFACE_ZIP = ROOT.parent / "shared" / "data" / "utkface" / "utkface-200px.zip"
# The demo generator's shape (bench/generator.py's demo128 preset), for --random.
DEMO128 = dict(z_dim=256, c_dim=0, w_dim=256, img_resolution=128, img_channels=3,
               mapping_kwargs=dict(num_layers=4),
               synthesis_kwargs=dict(channel_base=8192, channel_max=256, conv_clamp=256))


def held_out_faces(zip_path: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """The last `count` .jpg members of the zip in sorted order, as (name, uint8 [200,200,3])."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith(".jpg"))[-count:]
        return [(n, np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB"))) for n in names]


def to_target(arr: np.ndarray, device) -> torch.Tensor:
    return from_uint8(arr, device)[None]  # [1,3,H,W]


def load_models(args, device):
    """(G, encoder | None, label) from --bundle / --generator / --encoder / --random, or None when absent."""
    if args.random:
        from faceapp.stylegan import Generator

        torch.manual_seed(0)
        G = Generator(**DEMO128).eval().to(device)
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(torch.randn(2048, G.z_dim, device=device), None)[:, 0].mean(0))
        return G, None, "RANDOM untrained demo-sized G (timings only; quality figures are meaningless)"
    if args.bundle:
        from faceapp.bundle import load_bundle

        b = load_bundle(args.bundle, device=device)
        return b.G, b.encoder, f"bundle {args.bundle}"
    if args.generator:
        from faceapp.inversion import load_encoder
        from faceapp.stylegan.checkpoint import load_generator

        G = load_generator(args.generator, device=device)
        encoder = load_encoder(args.encoder, device=device) if args.encoder else None
        return G, encoder, f"generator {args.generator}" + (f", encoder {args.encoder}" if args.encoder else "")
    return None


SAME_PERSON = 0.6  # dlib's threshold: descriptor distances under it are the same person


def pipeline_figures(bundle, modes, photos, meter, *, steps=None, progress=print) -> dict:
    """The issue's inversion figures on what the user gets back (see the module doc).

    photos: {set name: [(name, PIL photo)]}. Returns {mode: {set: {...figures...}}}.
    """
    from faceapp.errors import FaceAppError
    from faceapp.pipeline import EditableFace, FaceEditor

    kwargs = {}
    if steps is not None:
        kwargs["config"] = InvertConfig(fast_steps_no_encoder=steps, balanced_steps=steps,
                                        balanced_w_steps_no_encoder=steps, balanced_wplus_steps_no_encoder=steps,
                                        pti_steps=steps)
    editor = FaceEditor(bundle, cache_size=0, invert_kwargs=kwargs)
    out = {}
    for mode in modes:
        out[mode] = {}
        warm = next(iter(photos.values()))[0][1]
        editor.prepare(warm, mode=mode)  # warm-up, not timed
        for set_name, items in photos.items():
            inv_s, total_s, d_diff, d_render, failed = [], [], [], [], []
            for name, photo in items:
                try:
                    t0 = time.perf_counter()
                    faces = editor.detect(photo)
                    aligned = editor.align(photo, faces[0])
                    t1 = time.perf_counter()
                    inv = editor.invert(aligned, mode)
                    t2 = time.perf_counter()
                    prepared = [EditableFace(0, aligned, inv)]
                    returned = editor.compose(photo, prepared, {})
                    t3 = time.perf_counter()
                    rendered = editor.compose(photo, prepared, {}, paste="render")
                except FaceAppError as e:
                    failed.append(f"{name}: {e}")
                    continue
                inv_s.append(t2 - t1)
                total_s.append(t3 - t0)
                m = meter.measure(meter.views(faces[0], [photo, returned, rendered]))
                d_diff.append(float(np.linalg.norm(m["desc"][1] - m["desc"][0])))
                d_render.append(float(np.linalg.norm(m["desc"][2] - m["desc"][0])))
            n = len(inv_s)
            row = {
                "faces": n, "failed": failed,
                "invert_sec_per_face": statistics.fmean(inv_s) if n else None,
                "photo_to_result_sec_per_face": statistics.fmean(total_s) if n else None,
                "same_person_returned": float(np.mean(np.array(d_diff) < SAME_PERSON)) if n else None,
                "same_person_render": float(np.mean(np.array(d_render) < SAME_PERSON)) if n else None,
                "distance_render_median": float(np.median(d_render)) if n else None,
            }
            out[mode][set_name] = row
            if n:
                progress(f"{mode:8s} {set_name:22s} {n:3d} faces  invert {row['invert_sec_per_face']:.3f} s/face  "
                         f"photo->result {row['photo_to_result_sec_per_face']:.3f} s  same person (< 0.6) at zero "
                         f"edit: returned photo {100 * row['same_person_returned']:.0f} %, rendered face "
                         f"{100 * row['same_person_render']:.0f} % (median distance "
                         f"{row['distance_render_median']:.2f})" + (f"  [{len(failed)} failed]" if failed else ""))
            else:
                progress(f"{mode:8s} {set_name:22s} no face measured ({len(failed)} failed)")
    return out


def _run_pipeline(args, modes) -> int:
    from faceapp.bundle import load_bundle
    from training.age_gender import AgeGenderModel
    from training.calibrate_years import EVAL_FACES, PhotoMeter, heldout_photos, public_photos
    from training.utkface import read_name_list

    bundle = load_bundle(args.bundle)
    names = read_name_list(EVAL_FACES)[: args.faces]
    photos = {"utkface-heldout-eval": list(heldout_photos(args.zip, names)), "public-domain": public_photos()}
    # the meter's age model is not used for these figures (descriptors only); any fitted one will do
    meter = PhotoMeter(AgeGenderModel.load(args.age_gender_model) if args.age_gender_model else None)
    print(f"bundle {args.bundle}: {bundle.resolution} px, encoder {'yes' if bundle.encoder is not None else 'no'}; "
          f"threads {torch.get_num_threads()}; {len(names)} held-out UTKFace faces + "
          f"{len(photos['public-domain'])} public-domain photos")
    res = pipeline_figures(bundle, modes, photos, meter, steps=args.steps)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pipeline.json").write_text(json.dumps(res, indent=2))
        (out / "options.json").write_text(json.dumps(vars(args), indent=2, default=str))
        print(f"wrote {out / 'pipeline.json'}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--bundle", help="a model bundle folder (generator + encoder)")
    p.add_argument("--generator", help="a generator checkpoint (.safetensors)")
    p.add_argument("--encoder", help="an encoder checkpoint (.safetensors), with --generator")
    p.add_argument("--random", action="store_true", help="an untrained demo-sized generator (timings only)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: fast,balanced,best")
    p.add_argument("--faces", type=int, default=50, help="how many held-out faces (the last N of the zip)")
    p.add_argument("--zip", default=str(UTKFACE_ZIP), help="UTKFace 200 px zip")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared 2-core box)")
    p.add_argument("--perceptual", default="auto", help="auto | lpips-vgg | lpips-alex | mobilenet")
    p.add_argument("--no-identity", action="store_true", help="skip the dlib identity distance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for results.json and options.json")
    p.add_argument("--pipeline", action="store_true",
                   help="the issue's figures on the photo the user gets back (needs --bundle)")
    p.add_argument("--steps", type=int, default=None, help="with --pipeline: optimisation steps per stage")
    p.add_argument("--age-gender-model", default=None, help="with --pipeline: an age/gender labeler (optional)")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        p.error(f"unknown mode(s) {bad}; choose from {MODES}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from bench.generator import tune_malloc  # keep freed memory (CPU speed)

        tune_malloc()
    except Exception:  # noqa: BLE001  (a speed tweak only)
        pass
    device = torch.device(args.device)

    zip_path = Path(args.zip)
    if not zip_path.is_file():
        print(f"skipped: no face set at {zip_path} (the shared UTKFace zip); nothing to benchmark")
        return 0
    if args.pipeline:
        if not args.bundle:
            p.error("--pipeline needs --bundle")
        return _run_pipeline(args, modes)
    models = load_models(args, device)
    if models is None:
        print("no generator: pass --generator G.safetensors (or --bundle DIR), or --random for an untrained "
              "demo-sized G (timings only)")
        return 0
    G, encoder, label = models
    faces = held_out_faces(zip_path, args.faces)
    perceptual = perceptual_loss(args.perceptual, device=device)
    identity = None if args.no_identity else IdentityLoss(crop_box=(0, 0, 1, 1), metric="euclidean").to(device)
    cfg = InvertConfig()
    print(f"model: {label}; {G.img_resolution} px, num_ws {G.num_ws}, w_dim {G.w_dim}; "
          f"encoder: {'yes' if encoder is not None else 'none (projection from w_avg)'}")
    cpu = platform.processor() or platform.machine()
    print(f"faces: {len(faces)} (last of {zip_path.name}, sorted); device {device}, "
          f"threads {torch.get_num_threads()}; perceptual: {perceptual.kind}; {cpu}")

    results = {"model": label, "device": str(device), "threads": torch.get_num_threads(),
               "perceptual_kind": perceptual.kind, "faces": len(faces), "modes": {}}
    for mode in modes:
        # warm-up (allocator, first-call caches such as w_avg/w_std) on the first face, not timed
        invert(G, to_target(faces[0][1], device), mode=mode, encoder=encoder, perceptual=perceptual,
               seed=args.seed, config=cfg)
        secs, cpu_secs, mse, perc, ident = [], [], [], [], []
        for _name, arr in faces:
            target = to_target(arr, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            inv = invert(G, target, mode=mode, encoder=encoder, perceptual=perceptual, seed=args.seed, config=cfg)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            secs.append(time.perf_counter() - t0)
            cpu_secs.append(time.process_time() - c0)
            with torch.no_grad():
                img = inv.G.synthesis(inv.ws, noise_mode="const")
                tgt = torch.nn.functional.interpolate(target, size=img.shape[2:], mode="area")
                mse.append(float((img - tgt).square().mean()))
                perc.append(float(perceptual(img, tgt).mean()))
                if identity is not None:
                    ident.append(float(identity(img, tgt).mean()))
        row = {
            "sec_per_face_mean": statistics.fmean(secs), "sec_per_face_median": statistics.median(secs),
            "cpu_sec_per_face_mean": statistics.fmean(cpu_secs),
            "mse": statistics.fmean(mse), f"perceptual_{perceptual.kind}": statistics.fmean(perc),
            "identity_dlib": statistics.fmean(ident) if ident else None,
            "projection_steps": inv.metrics["projection_steps"], "pti_steps": inv.metrics["pti_steps"],
            "start": inv.metrics["start"],
        }
        results["modes"][mode] = row
        ident_txt = f"{row['identity_dlib']:.3f}" if ident else "n/a"
        print(f"{mode:9s} {row['sec_per_face_mean']:7.2f} s/face (median {row['sec_per_face_median']:.2f}, "
              f"CPU {row['cpu_sec_per_face_mean']:.2f} s)  "
              f"MSE {row['mse']:.4f}  {perceptual.kind} {row[f'perceptual_{perceptual.kind}']:.4f}  "
              f"dlib id {ident_txt}  [{row['projection_steps']} projection + {row['pti_steps']} PTI steps, "
              f"from {row['start']}]" + ("  (RANDOM G)" if args.random else ""))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        opts = {k: v for k, v in vars(args).items()}
        opts["invert_config"] = inv.metrics.get("config")
        (out / "options.json").write_text(json.dumps(opts, indent=2, default=str))
        print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
