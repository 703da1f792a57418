"""Batch aging throughput: photos per minute, local engine vs Ray with 1 and 2 workers, and where a photo's time goes.

    python -m bench.batch                          # models/demo, 12 photos, strengths -2,2
    python -m bench.batch --photos 24 --engines local,ray:2 --model PATH_OR_HUB_ID

Each engine runs the real command (`python -m faceapp age DIR --out OUT --engine ...`, a fresh output folder,
Ray's own local instance on this machine's cores) on the same photos. Photos: the public-domain NASA portrait
tests/data/astronaut.jpg and variants of it (mirrored, scaled to 768 / 1024 px, padded, rotated, darker),
written to a temporary folder (the White House test photos ask not to be altered, and UTKFace is never used).

Printed per engine: wall time of the command (start-up included: model load, Ray start, workers loading the
model), photos per minute end to end, and the steady rate once started (from the manifest's per-photo seconds:
workers x 60 / mean seconds per photo; start-up = wall - photos x seconds / workers); and the mean per-photo
split from the manifest (load, detect, invert, edit = edit + render + paste-back, write). Last: a million-photo
extrapolation from the measured per-photo cost (core-hours; hours on a cluster of --cluster-cores single-threaded
workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("load", "detect", "invert", "edit", "write")


def make_photos(folder: Path, n: int) -> list[Path]:
    """`n` photos: the astronaut and variants of it, cycled."""
    src = Image.open(ROOT / "tests" / "data" / "astronaut.jpg").convert("RGB")
    variants = [
        src,
        ImageOps.mirror(src),
        src.resize((768, 768), Image.LANCZOS),
        src.resize((1024, 1024), Image.LANCZOS),
        ImageOps.expand(src, border=(128, 64), fill=(90, 100, 110)),
        src.rotate(8, resample=Image.BICUBIC, fillcolor=(128, 128, 128)),
        ImageOps.autocontrast(src.point(lambda v: int(v * 0.75))),
        ImageOps.mirror(src.resize((900, 900), Image.LANCZOS)),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"photo{i:03d}.jpg"
        variants[i % len(variants)].save(p, quality=92)
        out.append(p)
    return out


def run_engine(engine: str, photos_dir: Path, out: Path, model: str, strengths: str, mode: str) -> dict:
    """Run the age command with `engine` ('local' or 'ray:N'); its wall time and manifest records."""
    cmd = [sys.executable, "-m", "faceapp", "age", str(photos_dir), "--out", str(out), "--model", model,
           f"--strengths={strengths}", "--mode", mode, "--quiet"]
    workers = 1
    if engine.startswith("ray"):
        workers = int(engine.split(":")[1]) if ":" in engine else 1
        cmd += ["--engine", "ray", "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{engine} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {"engine": engine, "workers": workers, "wall": wall, "records": records}


def summarise(res: dict, n: int) -> dict:
    ok = [r for r in res["records"] if r["status"] == "ok"]
    per_photo = statistics.mean(r["seconds"] for r in ok)
    split = {s: statistics.mean(r["times"][s] for r in ok) for s in STAGES}
    return {
        "engine": res["engine"], "photos": len(ok), "wall_s": res["wall"],
        "photos_per_min": 60 * n / res["wall"],
        "steady_photos_per_min": res["workers"] * 60 / per_photo,
        "seconds_per_photo": per_photo, "split": split,
        # what the photos do not explain: Python + model load, and for Ray its start and the workers' model loads
        "startup_s": res["wall"] - len(ok) * per_photo / res["workers"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "demo"), help="bundle (default: models/demo)")
    ap.add_argument("--photos", type=int, default=12, help="how many photos (default 12)")
    ap.add_argument("--engines", default="local,ray:1,ray:2", help="comma-separated: local, ray:N (N workers)")
    ap.add_argument("--strengths", default="-2,2", help="age strengths per photo (default -2,2: two outputs)")
    ap.add_argument("--mode", default="fast", help="inversion mode (default fast: the encoder)")
    ap.add_argument("--cluster-cores", type=int, default=1000, help="cores of the extrapolated cluster")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f} "
          f"(1 min) before; {args.photos} photos, strengths {args.strengths}, mode {args.mode}, model {args.model}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="faceapp-bench-batch-") as tmp:
        photos_dir = Path(tmp) / "photos"
        make_photos(photos_dir, args.photos)
        for engine in args.engines.split(","):
            res = run_engine(engine, photos_dir, Path(tmp) / f"out-{engine.replace(':', '-')}", args.model,
                             args.strengths, args.mode)
            rows.append(summarise(res, args.photos))
            s = rows[-1]
            print(f"{engine:>6}: {s['photos']} photos in {s['wall_s']:.1f} s = {s['photos_per_min']:.1f} photos/min "
                  f"end to end; {s['steady_photos_per_min']:.1f} photos/min once started (start-up "
                  f"{s['startup_s']:.0f} s); {s['seconds_per_photo']:.2f} s per photo per worker: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in s["split"].items()), flush=True)
    print(f"load {os.getloadavg()[0]:.1f} (1 min) after")

    # A million photos: the per-photo cost of one single-threaded worker (the 1-worker Ray run, else the first).
    base = next((r for r in rows if r["engine"] in ("ray:1", "ray")), rows[0])
    core_hours = 1e6 * base["seconds_per_photo"] / 3600
    print(f"1,000,000 photos at {base['seconds_per_photo']:.2f} s per photo per core ({base['engine']}): "
          f"{core_hours:,.0f} core-hours; {core_hours / args.cluster_cores:.1f} h on {args.cluster_cores} cores "
          f"({args.cluster_cores} workers), {core_hours / 2:,.0f} h on this 2-core machine")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "core_hours_per_million": core_hours}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
