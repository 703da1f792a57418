"""Take skin colour out of a bundle's edit directions, at its source: the generator's latent space.

The demo's age edit darkened faces (a tan, not aging): its direction in W shares a component with what makes
G render darker or more orange skin. This script

1. samples codes from G (psi 0.8, as learn_directions does), renders them and reads each render's skin tone:
   the mean CIELAB (L*, a*, b*) of the cheeks/nose/mouth region of the aligned crop (a fixed polygon from the
   bundle's own alignment template: its renders are aligned, no landmarks needed);
2. fits the three skin-tone directions in W by ridge regression (scikit-learn) and reports their held-out R²;
3. projects each edit direction off their span (`faceapp.edits.project_out`), optionally restricts it to the
   W+ layers given by --layers NAME=START:STOP (the coarse and middle layers carry shape, the finest ones
   colour), and measures its scale again on the same samples (strength 1 = one std of the codes' projections);
4. measures on held-back samples, for each direction before and after: the render's skin ΔE (CIE76) at the
   slider's ends, and, with --age-model, the age estimator's change at the age slider's ends;
5. writes the new set to --out (the bundle's directions/ untouched unless --out points there) with
   `metrics['colour_free']` recording what was removed, and report.json beside it.

    python -m training.colour_free_directions --bundle models/demo --out runs/dirs-colourfree \
        --layers age=0:8 --age-model runs/age/age_estimator.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceapp.imageio import to_uint8
from training.options import opt, parse_options

__all__ = ["skin_polygon", "render_skin_lab", "skin_tone_directions", "main"]


def skin_polygon(spec, size: int) -> np.ndarray:
    """[K, 2] pixels of the cheeks/nose/mouth region in a crop of `spec` (a template AlignSpec) at `size` px."""
    from faceapp.align.crop import TEMPLATE_KEYPOINTS

    if spec.kind != "template":
        raise SystemExit(f"the skin region is drawn from a template crop; this bundle's crop is {spec.kind!r}")
    t = {k: np.asarray(p, np.float64) for k, p in zip(TEMPLATE_KEYPOINTS, spec.template)}
    eye_l, eye_r, nose = t["eye_left"], t["eye_right"], t["nose_tip"]
    m_l, m_r = t["mouth_left"], t["mouth_right"]
    below = 0.35 * (nose[1] - eye_l[1])  # cheeks start a little under the eyes
    pts = np.array([eye_l + (0, below), eye_r + (0, below), m_r + (0.02, 0.03), (m_l + m_r) / 2 + (0, 0.06),
                    m_l + (-0.02, 0.03)])
    return pts * size


@torch.no_grad()
def render_skin_lab(G, ws: torch.Tensor, mask: np.ndarray, batch: int = 64, age_model=None):
    """(mean skin CIELAB [N, 3], estimated ages [N] or None) of G's renders of ws [N, num_ws, w_dim]."""
    from skimage.color import rgb2lab

    labs, ages = [], []
    for i in range(0, len(ws), batch):
        img = G.synthesis(ws[i:i + batch], noise_mode="const").clamp(-1, 1)  # [B,3,r,r]
        u8 = to_uint8(img)
        labs += [rgb2lab(im)[mask].mean(0) for im in u8]
        if age_model is not None:
            ages.append(age_model(img).numpy())
    return np.stack(labs), (np.concatenate(ages) if ages else None)


def skin_tone_directions(w: np.ndarray, lab: np.ndarray, alpha: float = 1.0):
    """(Q [w_dim, 3] orthonormal basis of the skin-tone directions, held-out R² per channel) from codes
    w [N, w_dim] and their renders' skin CIELAB [N, 3], by ridge regression on 80 % and scored on 20 %."""
    from sklearn.linear_model import Ridge

    n = len(w)
    cut = int(0.8 * n)
    r2, coefs = [], []
    for c in range(3):
        m = Ridge(alpha=alpha).fit(w[:cut], lab[:cut, c])
        r2.append(float(m.score(w[cut:], lab[cut:, c])))
        coefs.append(m.coef_)
    q, _ = np.linalg.qr(np.stack(coefs, 1))  # [w_dim, 3]
    return q, r2


def _parse_layers(items) -> dict:
    out = {}
    for it in items:
        name, _, rng = it.partition("=")
        a, _, b = rng.partition(":")
        out[name] = (int(a), int(b))
    return out


@dataclass(frozen=True)
class ColourFreeOptions:
    """The command line; written into report.json as "options"."""

    bundle: str = opt("models/demo", "the bundle whose directions are made colour-free")
    out: str = opt(None, "folder for the new direction set (+ report.json)", required=True)
    num_samples: int = opt(4000, "sampled codes the skin-tone directions are fitted on")
    eval_samples: int = opt(256, "further sampled codes the report is measured on")
    psi: float = opt(0.8, "truncation of the sampled codes")
    layers: tuple[str, ...] = opt((), "restrict a direction to these W+ layers, e.g. age=0:8", action="append",
                                  metavar="NAME=START:STOP")
    names: str = opt("", "directions to make colour-free (default: all)")
    age_model: str | None = opt(None, "age estimator: also report the age change on renders")
    seed: int = opt(0, "random seed of the sampled codes")
    threads: int = opt(1, "torch CPU threads")


def main(argv=None) -> int:
    from faceapp.bundle import load_bundle
    from faceapp.edits import DirectionSet, apply_edits, direction_scale, project_out
    from training.measures import delta_e

    args = parse_options(ColourFreeOptions, argv, description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    torch.set_num_threads(args.threads)
    import cv2

    b = load_bundle(args.bundle)
    G = b.G.eval()
    res = int(G.img_resolution)
    mask = np.zeros((res, res), np.uint8)
    cv2.fillPoly(mask, [np.round(skin_polygon(b.align_spec, res)).astype(np.int32)], 1)
    mask = mask.astype(bool)
    age_model = None
    if args.age_model:
        from training.age_estimator import load_age_estimator

        age_model = load_age_estimator(args.age_model)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        z = torch.randn(args.num_samples + args.eval_samples, G.z_dim, generator=g)
        ws = G.mapping(z, None, truncation_psi=args.psi)  # [N, num_ws, w_dim]
    fit_ws, eval_ws = ws[:args.num_samples], ws[args.num_samples:]
    lab, _ = render_skin_lab(G, fit_ws, mask)
    q, r2 = skin_tone_directions(fit_ws[:, 0].numpy(), lab)
    print(f"skin-tone directions from {len(lab)} renders: held-out R² L* {r2[0]:.2f}, a* {r2[1]:.2f}, b* {r2[2]:.2f}")
    layers = _parse_layers(args.layers)
    names = [n for n in (args.names.split(",") if args.names else b.directions) if n]
    new = []
    for d in b.directions.values():
        if d.name not in names:
            new.append(d)
            continue
        v = np.asarray(d.vector, np.float64)
        v2 = np.stack([project_out(row, list(q.T)) for row in v]) if v.ndim == 2 else project_out(v, list(q.T))
        lay = layers.get(d.name, d.layers)
        removed = float(np.linalg.norm(v - v2) / max(np.linalg.norm(v), 1e-12))
        d2 = d.replace(vector=v2 / np.linalg.norm(v2), layers=lay)
        d2 = d2.replace(scale=direction_scale(d2.vector, fit_ws.numpy()),
                        metrics={**d.metrics, "colour_free": {"skin_r2": r2, "removed_norm": round(removed, 4),
                                                              "layers": lay, "samples": args.num_samples}})
        new.append(d2)
    new_set = DirectionSet(new, b.directions.meta)
    base_lab, base_age = render_skin_lab(G, eval_ws, mask, age_model=age_model)
    report = {"skin_r2": r2, "skin_basis": q.T.round(7).tolist(), "directions": {}}
    for name in names:
        rows = {}
        for which, ds in (("before", b.directions), ("after", new_set)):
            for s in ds[name].strength_range:
                e_ws = apply_edits(eval_ws, ds, {name: s})
                lab_s, age_s = render_skin_lab(G, e_ws, mask, age_model=age_model)
                de = np.array([delta_e(a, c) for a, c in zip(base_lab, lab_s)])
                row = {"median_skin_delta_e": float(np.median(de)), "skin_delta_e_below_5": float(np.mean(de < 5)),
                       "mean_lab_change": (lab_s - base_lab).mean(0).round(2).tolist()}
                if age_s is not None:
                    row["median_age_change"] = float(np.median(age_s - base_age))
                rows[f"{which} {s:+g}"] = row
                print(f"{name:8s} {which:6s} {s:+6g}: skin ΔE median {row['median_skin_delta_e']:5.1f} "
                      f"(< 5 for {100 * row['skin_delta_e_below_5']:3.0f} %), mean ΔLab {row['mean_lab_change']}"
                      + (f", age {row['median_age_change']:+.1f} y" if age_s is not None else ""))
        report["directions"][name] = rows
    out = Path(args.out)
    new_set.save(out)
    (out / "report.json").write_text(json.dumps({**report, "options": dataclasses.asdict(args)}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
