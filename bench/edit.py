"""Benchmark edits on CPU: one slider edit (apply + render) and a 12-frame age timeline.

    python bench/edit.py --bundle path/to/bundle      # a trained bundle (its G and directions)
    python bench/edit.py                              # no bundle: RANDOM weights, labelled as such

Without --bundle the generator has the demo architecture (bench/generator.py's 'demo128': 128 px,
w_dim 256) with random weights, and the directions are random unit vectors calibrated on its latents:
the speed of an edit does not depend on the weights, but nothing rendered is a face. --preset tiny
uses the 64 px stand-in of faceapp.bundle.make_random_bundle instead.

Timed (median of --iters runs under torch.inference_mode, after warm-up), wall and process-CPU ms:
- apply: apply_edits(ws [1, num_ws, w_dim], {age, smile}, hold=[gender, glasses]);
- edit: apply + G.synthesis of the one edited code (what a slider move costs);
- timeline: faceapp.edits.timeline (12 codes) + rendering them in one batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceapp.edits import Direction, DirectionSet, apply_edits, timeline  # noqa: E402


def random_demo(preset: str, seed: int = 0):
    """(G, directions, label) with random weights: the demo128 architecture or the tiny stand-in."""
    if preset == "tiny":
        from faceapp.bundle import load_bundle, make_random_bundle

        tmp = tempfile.mkdtemp(prefix="faceapp-bench-")
        b = load_bundle(make_random_bundle(Path(tmp) / "bundle", resolution=64, seed=seed))
        return b.G, b.directions, "RANDOM tiny stand-in bundle (64 px, untrained: timings only)"
    from bench.generator import PRESETS, build

    cfg = PRESETS["demo128"]
    torch.manual_seed(seed)
    G = build(cfg, torch.device("cpu"))
    with torch.no_grad():
        w = G.mapping(torch.randn(2048, G.z_dim), None)[:, 0]  # [2048, w_dim]
    rng = np.random.default_rng(seed)
    dirs = DirectionSet([Direction(n, rng.standard_normal(G.w_dim)) for n in ("age", "smile", "glasses", "gender")])
    return G, dirs.calibrated(w), "RANDOM weights, demo128 architecture (no trained bundle: timings only)"


def timed(fn, iters: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall ms and median process-CPU ms of fn()."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        wall, cpu = [], []
        for _ in range(iters):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(1000 * (time.perf_counter() - t0))
            cpu.append(1000 * (time.process_time() - c0))
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle folder / checkpoint / repo id (faceapp.bundle.load_bundle)")
    p.add_argument("--preset", choices=["demo128", "tiny"], default="demo128", help="random stand-in without --bundle")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.bundle:
        from faceapp.bundle import load_bundle

        b = load_bundle(args.bundle)
        G, dirs = b.G, b.directions
        label = f"bundle {args.bundle}" + (" (UNTRAINED stand-in)" if b.untrained else "")
    else:
        G, dirs, label = random_demo(args.preset)
    G = G.eval().requires_grad_(False)
    names = list(dirs)
    edit_names = [n for n in ("age", "smile") if n in dirs] or names[:1]
    hold = [n for n in ("gender", "glasses") if n in dirs and n not in edit_names]
    strengths = {n: 1.5 for n in edit_names}
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)), None)  # [1, num_ws, w_dim]

    apply_ms = timed(lambda: apply_edits(ws, dirs, strengths, hold=hold), args.iters)
    render_ms = timed(lambda: G.synthesis(ws, noise_mode="const"), args.iters)
    edit_ms = timed(lambda: G.synthesis(apply_edits(ws, dirs, strengths, hold=hold), noise_mode="const"), args.iters)
    values = np.linspace(-3, 3, args.frames)
    tl_name = "age" if "age" in dirs else names[0]
    tl_hold = [n for n in hold if n != tl_name]
    tl_ms = timed(
        lambda: G.synthesis(timeline(ws, dirs, tl_name, values, hold=tl_hold), noise_mode="const"),
        max(3, args.iters // 3),
        warmup=1,
    )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{label}")
    print(f"G: {G.img_resolution} px, w_dim {G.w_dim}, num_ws {G.num_ws}; directions: {', '.join(names)}")
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} of "
        f"{os.cpu_count()} CPU threads, load average {load:.2f}"
    )
    print(f"edit: {', '.join(f'{k}={v:+g}' for k, v in strengths.items())}, holding {', '.join(hold) or 'nothing'}")
    print(f"{'case':<34} {'wall ms':>9} {'cpu ms':>9}")
    for case, (w_ms, c_ms) in [
        ("apply_edits (1 code)", apply_ms),
        ("render (G.synthesis, 1 code)", render_ms),
        ("slider edit = apply + render", edit_ms),
        (f"timeline {args.frames} frames (total)", tl_ms),
    ]:
        print(f"{case:<34} {w_ms:>9.2f} {c_ms:>9.2f}")
    print(f"{'timeline per frame':<34} {tl_ms[0] / args.frames:>9.2f} {tl_ms[1] / args.frames:>9.2f}")


if __name__ == "__main__":
    main()
