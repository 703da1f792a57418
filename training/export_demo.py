"""Ship a trained generator as the demo bundle: G_ema in fp16, its model card, sample grids, figures.

    python -m training.export_demo runs/demo64 --out models/demo \\
        --quality-source ../shared/data/utkface/utkface-200px.zip --grids docs/img

Measures what the card reports, on this machine: the quality measure (training/quality.py) at
truncation psi 1 and 0.7 on fixed seeds, and the time of one render (batch 1, const noise) on one CPU
thread. Writes ``<grids>/demo-samples.png`` (64 samples at psi 0.7), ``<grids>/demo-truncation.png``
(8 seeds x psi 0, 0.25, 0.5, 0.7, 1) — images the model made, which carry its non-commercial note —
and the bundle folder with generator.safetensors, bundle.json (align spec: UTKFace's template at the
model's resolution) and MODEL_CARD.md. Every file stays under 10 MB.

With ``--encoder`` (an encoder snapshot from training/train_encoder.py, trained on this generator) and
``--directions`` (a direction set folder from training/learn_directions.py, made for this generator; refused
otherwise) the bundle also holds them, in fp16 too, and the card says how they were made.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from faceapp.align import utkface_spec
from faceapp.stylegan.checkpoint import load_networks, read_header
from training.dataset import ImageArchive
from training.options import opt, parse_options
from training.projected import register
from training.quality import FaceQuality
from training.runtime import find_resume, save_grid

TRUNCATION_SWEEP = (0.0, 0.25, 0.5, 0.7, 1.0)
MAX_FILE_BYTES = 10_000_000  # "10 MB" as Hugging Face counts it for files without LFS


@torch.no_grad()
def render_ms(G, threads: int = 1, iters: int = 30) -> float:
    """Median ms of one G(z) (batch 1, noise_mode='const') on ``threads`` CPU threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        z = torch.randn(1, G.z_dim)
        for _ in range(3):
            G(z, None, noise_mode="const")
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            G(z, None, noise_mode="const")
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def grids(G, out_dir: Path) -> dict[str, str]:
    """Sample grid (psi 0.7, seeds 0..63) and truncation sweep (8 seeds x TRUNCATION_SWEEP) as PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    z = torch.randn([64, G.z_dim], generator=torch.Generator().manual_seed(0))
    samples = G(z, None, truncation_psi=0.7, noise_mode="const")
    save_grid(samples, out_dir / "demo-samples.png", 8)
    rows = [G(z[:8], None, truncation_psi=psi, noise_mode="const") for psi in TRUNCATION_SWEEP]
    sweep = torch.stack(rows, dim=1).flatten(0, 1)  # [8 seeds * 5 psi, 3, H, W], one seed per row
    save_grid(sweep, out_dir / "demo-truncation.png", len(TRUNCATION_SWEEP))
    return {"samples": str(out_dir / "demo-samples.png"), "truncation": str(out_dir / "demo-truncation.png")}


CARD = """# faceapp demo generator: UTKFace faces at {res} px

**Non-commercial research use only.** Trained on UTKFace, whose terms allow non-commercial research use only
(the copyright of each photo stays with its owner); this model and every image it generates carry the same
note.

| | |
| --- | --- |
| network | faceapp StyleGAN2 `Generator` (mapping -> W/W+ -> modulated convs): z = w = {z_dim}, \
{map_layers} mapping layers, channels min({cbase} / r, {cmax}), {num_ws} style layers, {params:.2f} M parameters, \
stored as fp16 |
| data | UTKFace aligned & cropped: {num_images:,} photos (all but the held-out ones listed in \
`training/labels/utkface-heldout-*.txt`), resized to {res} px with an area filter{mirror}; no labels |
| alignment | UTKFace's crop: five landmarks onto `faceapp.align.UTKFACE_TEMPLATE` (`utkface_spec({res})`) |
| recipe | `training/train_generator.py --recipe {recipe}`: {recipe_text} |
| training | {kimg:.0f} kimg, {hours:.1f} h of training time (evaluations excluded), {threads} |
| render time | {ms:.1f} ms per image (batch 1, one CPU thread; measured on {cpu}) |

## Quality (training/quality.py: nothing shared with the discriminator)

Fixed seeds, {num_fake} samples against {num_real} held-out real faces, both at {res} px.

| | psi 1 | psi 0.7 | real faces |
| --- | --- | --- | --- |
| dlib descriptor Fréchet distance | {fd1:.4f} | {fd07:.4f} | {floor:.4f} (floor: {num_fake} training faces) |
| dlib HOG finds a face | {hog1:.1%} | {hog07:.1%} | {hog_real:.1%} |

Sample grid (psi 0.7) and truncation sweep: `{grid_dir}/demo-samples.png`, `{grid_dir}/demo-truncation.png`.

## Limitations

A small model at a small resolution: faces are {res} px, with UTKFace's biases (its age, gender and race
mix; mostly frontal, studio-like and web photos). The app returns edits as a difference on the user's own
photo, so the result keeps the photo's resolution; the model's own renders are blurry at full size.
"""

def recipe_text(o: dict) -> str:
    """One line saying what the run's options made of its parts (from its training_options)."""
    d = {"projected": "projected discriminator on frozen ImageNet MobileNetV2 features (fixed random cross-channel "
                      "and cross-scale mixing, trainable heads at 4 scales)",
         "stylegan2": "StyleGAN2 discriminator"}[o["d_arch"]]
    loss = {"hinge": "hinge loss, no R1 / path length",
            "logistic": f"non-saturating logistic loss, R1 gamma {o['gamma']:g}, path length {o['pl_weight']:g}"}
    aug = {"diffaug": f"DiffAugment ({o['diffaug_policy']})", "ada": "ADA", "fixed": f"augmentation p {o['aug_p']}",
           "noaug": "no augmentation"}[o["aug"]]
    return (f"{d}; {aug}; {loss[o['loss']]}; Adam ({o['beta1']:g}, {o['beta2']:g}), G lr {o['glr']:g}, "
            f"D lr {o['dlr']:g}, batch {o['batch']}, style mixing {o['style_mixing']:g}, G_ema half-life "
            f"{o['ema_kimg']:g} kimg")


def threads_text(o: dict) -> str:
    dev = o.get("device", "cpu")
    return f"{o['threads']} CPU threads, no GPU" if dev == "cpu" and o.get("threads") else f"device {dev}"


def encoder_text(path: str, E) -> str:
    """The card's line on the encoder: its size and the run that trained it (from the snapshot's header)."""
    extra = read_header(path).get("extra", {})
    o = extra.get("training_options", {})
    run = (f"`training/train_encoder.py --preset {o.get('preset', '?')}`, {extra.get('step', '?')} steps of batch "
           f"{o.get('batch', '?')}" + (f", {extra['train_time_s'] / 3600:.1f} h" if extra.get("train_time_s") else ""))
    return (f"| encoder | e4e-style encoder ({sum(p.numel() for p in E.parameters()) / 1e6:.2f} M parameters, "
            f"{E.img_resolution} px input, stored as fp16): {run} |\n")


def directions_text(ds) -> str:
    """The card's line on the edit directions: each one's name and how it was learned (its source)."""
    def how(d) -> str:
        src = str(getattr(d, "source", "") or "")
        if src.startswith("learned:true-labels"):
            return "true UTKFace labels of encoded real faces"
        if src.startswith("learned:"):
            return "labelers on the generator's samples"
        return src or "?"
    return "| edit directions | " + "; ".join(f"{name}: {how(d)}" for name, d in ds.items()) + " |\n"


def export(run: str, out: str, quality_source: str, grid_dir: str, heldout: str, data: str | None = None,
           num_fake: int = 1000, notes: str = "", encoder: str | None = None, directions: str | None = None) -> dict:
    """Measure the latest snapshot of ``run`` and write the demo bundle ``out``; returns the figures.
    ``encoder`` / ``directions``: an encoder snapshot and a direction set folder to ship with it."""
    from faceapp.bundle import save_bundle
    from faceapp.edits.directions import DirectionSet
    from faceapp.inversion.encoder import load_encoder

    register()
    snap, _ = find_resume(run)
    header = read_header(snap)
    opts = header["extra"]["training_options"]
    G = load_networks(snap, names=["G_ema"])["G_ema"].float().eval()
    archive = ImageArchive(data or opts["data"], xflip=opts["mirror"])  # as trained: the floor's reference
    quality = FaceQuality.for_archive(archive, quality_source, heldout, num_fake=num_fake,
                                      cache=snap.parent / "quality-reference.npz")
    q1, q07 = quality.evaluate(G, 1.0), quality.evaluate(G, 0.7)
    ms = render_ms(G)
    figs = {
        "kimg": header["extra"]["kimg"], "train_time_s": header["extra"].get("train_time_s"),
        "fd_dlib": q1["fd_dlib"], "fd_dlib_psi0.7": q07["fd_dlib"], "fd_floor": q1["fd_floor"],
        "hog_share": q1["hog_share"], "hog_share_psi0.7": q07["hog_share"], "hog_real": q1["hog_real"],
        "render_ms_1thread": ms, "params": sum(p.numel() for p in G.parameters()), "snapshot": str(snap),
    }
    figs.update(grids(G, Path(grid_dir)))
    res = G.img_resolution
    card = CARD.format(
        res=res, z_dim=G.z_dim, map_layers=opts["map_layers"], cbase=opts["cbase"], cmax=opts["cmax"],
        num_ws=G.num_ws, params=figs["params"] / 1e6, num_images=len(archive) // (2 if opts["mirror"] else 1),
        mirror=", plus mirror images" if opts["mirror"] else "", recipe=opts["recipe"], recipe_text=recipe_text(opts),
        kimg=figs["kimg"], hours=(figs["train_time_s"] or 0) / 3600, threads=threads_text(opts), ms=ms,
        cpu=f"{platform.machine()}, {os.cpu_count()} cores", num_fake=num_fake, num_real=quality.num_real,
        fd1=figs["fd_dlib"], grid_dir=grid_dir,
        fd07=figs["fd_dlib_psi0.7"], floor=figs["fd_floor"], hog1=figs["hog_share"],
        hog07=figs["hog_share_psi0.7"], hog_real=figs["hog_real"],
    )
    E = load_encoder(encoder) if encoder else None
    ds = DirectionSet.load(directions) if directions else None
    if E is not None or ds is not None:  # one more table row each, after the render time
        rows = (encoder_text(encoder, E) if E is not None else "") + (directions_text(ds) if ds is not None else "")
        marker = "\n\n## Quality"
        card = card.replace(marker, "\n" + rows.rstrip("\n") + marker, 1)
    if notes:
        card += f"\n## Training history\n\n{notes.strip()}\n"
    root = save_bundle(out, G=G, encoder=E, directions=ds, align_spec=utkface_spec(res),
                       name=f"faceapp-demo-utkface-{res}", card=card,
                       meta={"figures": {k: v for k, v in figs.items() if isinstance(v, (int, float))}},
                       dtype=torch.float16)
    big = [p.name for p in Path(root).rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if big:
        raise SystemExit(f"bundle files over 10 MB: {big}")
    (Path(root) / "figures.json").write_text(json.dumps(figs, indent=2) + "\n")
    return figs


@dataclass(frozen=True)
class ExportOptions:
    run: str = opt(None, "run folder (its latest snapshot) or a snapshot file", positional=True)
    out: str = opt("models/demo", "the bundle folder to write")
    quality_source: str = opt(None, "zip of the original photos (UTKFace's)", required=True)
    heldout: str = opt("training/labels/utkface-heldout-fd.txt", "held-out photo names of the quality measure")
    data: str | None = opt(None, "the training archive (default: the one the run used)")
    grids: str = opt("docs/img", "folder for the sample grid and truncation sweep")
    num_fake: int = opt(1000, "generated faces of the quality measure")
    notes: str = opt("", "a file whose text goes into the card as its training history")
    encoder: str | None = opt(None, "an encoder snapshot (train_encoder.py) to ship with it")
    directions: str | None = opt(None, "a direction set folder (learn_directions.py) to ship with it")


def main(argv: list[str] | None = None) -> None:
    a = parse_options(ExportOptions, argv, description=__doc__.split("\n\n")[0])
    notes = Path(a.notes).read_text() if a.notes else ""
    figs = export(a.run, a.out, a.quality_source, a.grids, a.heldout, a.data, a.num_fake, notes,
                  encoder=a.encoder, directions=a.directions)
    print(json.dumps(figs, indent=2))


if __name__ == "__main__":
    main()
