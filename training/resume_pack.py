"""Pack a training run's latest snapshot into small files that can live in git, and unpack it again.

A run that spans several machines (the demo generator is trained on 2-core CPUs, 2.5 h at a time) carries
what it needs to go on in the repository: G, D (trainable parts only: the projected D's frozen
MobileNetV2 is never stored) and G_ema in fp16, Adam's moments in bfloat16, counters and RNG states,
every file at most 10 MB (a Hugging Face Space repo takes that without LFS).

    python -m training.resume_pack pack runs/demo64 training/resume/demo64
    python -m training.resume_pack unpack training/resume/demo64 runs/demo64
    python -m training.train_generator --resume runs/demo64 --outdir runs/demo64 --data data/utkface-64.zip

Unpacking writes a network snapshot and a training state that ``--resume`` reads (the run goes on with
the options stored in the snapshot; give an option again to change it). The resumed run is
close to, not bit-identical with, an uninterrupted one (fp16 weights, bf16 moments).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from faceapp.stylegan.checkpoint import load_networks, read_header, save_networks
from training.options import add_options, layered_values, opt
from training.projected import register
from training.runtime import SNAPSHOT_PREFIX, STATE_PREFIX, find_resume


@dataclass(frozen=True)
class PackOptions:
    run: str = opt(None, "run folder (its latest snapshot) or a snapshot file", positional=True)
    out: str = opt(None, "pack folder to write", positional=True)


@dataclass(frozen=True)
class UnpackOptions:
    pack: str = opt(None, "pack folder", positional=True)
    run: str = opt(None, "run folder to write", positional=True)

PACK_FORMAT = "faceapp-resume-pack"
MAX_FILE_BYTES = 10 * 2**20


def _moments(opt_state: dict, key: str) -> dict[str, torch.Tensor]:
    return {f"{i}": s[key].to(torch.bfloat16).contiguous() for i, s in opt_state["state"].items() if key in s}


def pack(run: str | Path, out: str | Path) -> dict:
    """Write the latest snapshot of ``run`` (a run folder or a snapshot file) as a pack folder ``out``."""
    from safetensors.torch import save_file

    register()
    snap, state_path = find_resume(str(run))
    final = Path(out).resolve()
    if final == snap.parent.resolve() or final in snap.parent.resolve().parents:
        raise SystemExit(f"{out} holds the run itself: pack into another folder")
    if final.exists() and not (final / "pack.json").is_file():
        raise SystemExit(f"{out} exists and is not a resume pack: not replacing it")
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))  # swapped in when complete
    try:
        extra = read_header(snap)["extra"]
        nets = load_networks(snap)
        for name, net in nets.items():
            save_networks(out / f"{name}.safetensors", {name: net}, extra=extra, dtype=torch.float16)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        small = {k: v for k, v in state.items() if k not in ("opt_G", "opt_D")}
        for net in ("G", "D"):
            opt = state[f"opt_{net}"]
            for key in ("exp_avg", "exp_avg_sq"):
                save_file(_moments(opt, key), out / f"opt_{net}.{key}.safetensors")
            small[f"opt_{net}"] = {"param_groups": opt["param_groups"],
                                   "step": {i: s["step"] for i, s in opt["state"].items()}}
        torch.save(small, out / "state.pt")
        options = extra.get("training_options", {})
        doc = {"format": PACK_FORMAT, "version": 1, "snapshot": snap.name, "kimg": state["cur_nimg"] / 1000,
               "train_time_s": state.get("train_time_s"), "options": options}
        (out / "pack.json").write_text(json.dumps(doc, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    big = [p.name for p in out.iterdir() if p.stat().st_size > MAX_FILE_BYTES]
    if big:
        shutil.rmtree(out)
        raise SystemExit(f"pack files over 10 MB: {big}; use a smaller network or shard further")
    if final.exists():
        shutil.rmtree(final)
    out.rename(final)
    return doc


def unpack(pack_dir: str | Path, run: str | Path) -> Path:
    """Rebuild ``run``/network-snapshot-*.safetensors + training-state-*.pt from a pack; returns the snapshot."""
    from safetensors.torch import load_file

    register()
    pack_dir, run = Path(pack_dir), Path(run)
    doc = json.loads((pack_dir / "pack.json").read_text())
    if doc.get("format") != PACK_FORMAT:
        raise SystemExit(f"{pack_dir}: not a resume pack (pack.json format {doc.get('format')!r})")
    nets, extra = {}, None
    for name in ("G", "D", "G_ema"):
        path = pack_dir / f"{name}.safetensors"
        nets[name] = load_networks(path)[name].float()
        extra = read_header(path)["extra"]
    state = torch.load(pack_dir / "state.pt", map_location="cpu", weights_only=True)
    for net in ("G", "D"):
        small = state[f"opt_{net}"]
        m = load_file(pack_dir / f"opt_{net}.exp_avg.safetensors")
        v = load_file(pack_dir / f"opt_{net}.exp_avg_sq.safetensors")
        state[f"opt_{net}"] = {
            "param_groups": small["param_groups"],
            "state": {i: {"step": step, "exp_avg": m[f"{i}"].float(), "exp_avg_sq": v[f"{i}"].float()}
                      for i, step in small["step"].items()},
        }
    run.mkdir(parents=True, exist_ok=True)
    tag = f"{state['cur_nimg']:09d}"
    snap = run / f"{SNAPSHOT_PREFIX}{tag}.safetensors"
    save_networks(snap, nets, extra=extra)
    torch.save(state, run / f"{STATE_PREFIX}{tag}.pt")
    return snap


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    add_options(sub.add_parser("pack", help="run folder (or snapshot) -> pack folder"), PackOptions)
    add_options(sub.add_parser("unpack", help="pack folder -> run folder that --resume reads"), UnpackOptions)
    ns = p.parse_args(argv)
    cls = PackOptions if ns.cmd == "pack" else UnpackOptions
    args = cls(**layered_values(cls, ns))
    if ns.cmd == "pack":
        doc = pack(args.run, args.out)
        print(f"packed {doc['snapshot']} ({doc['kimg']:.1f} kimg) into {args.out}")
    else:
        print(f"unpacked into {unpack(args.pack, args.run)}")


if __name__ == "__main__":
    main()
