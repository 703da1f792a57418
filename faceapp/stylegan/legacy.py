"""Importers for the official StyleGAN2 checkpoints users bring, without executing code from them.

Two formats:

* NVIDIA stylegan2-ada-pytorch network pickles (`*.pkl`): `pickle.dump` of a dict
  {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', ...}. Each network is reduced to
  `torch_utils.persistence._reconstruct_persistent_obj(meta)` where meta carries the Python
  source of its module and the object's `__dict__`. Loading such a pickle normally `exec`s that
  source; faceapp.stylegan.safe_load's restricted unpickler instead keeps only the class name and
  state, and refuses every global that is not on its allow-list. Our networks use NVIDIA's names,
  so the collected parameters and buffers load into them with strict=True.
* rosinality stylegan2-pytorch checkpoints (`*.pt`): `torch.save` of {'g_ema', 'g', 'd',
  'g_optim', 'd_optim', 'args', 'latent_avg'}. Read with torch.load(weights_only=True) plus
  argparse.Namespace (safe_load.load_torch_weights), and renamed onto NVIDIA's layout
  (faceapp.stylegan.converters: `convert_rosinality_generator`, re-exported here).

This module holds the entry points: `detect_format`, `import_checkpoint` and the per-format importers.
"""

from __future__ import annotations

import argparse
import io
import os
import pickletools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from faceapp.errors import CheckpointError
from faceapp.stylegan.checkpoint import (
    build_network,
    is_safetensors_file,
    load_networks,
    load_state_checked,
    read_header,
)
from faceapp.stylegan.converters import (
    convert_rosinality_discriminator,
    convert_rosinality_generator,
    estimate_w_avg,
    fill_missing_buffers,
    nvidia_init_kwargs,
    nvidia_state_dict,
    plain,
)
from faceapp.stylegan.safe_load import PersistentObject, checkpoint_file, load_network_pickle, load_torch_weights

__all__ = [
    "ImportedNetworks",
    "detect_format",
    "import_checkpoint",
    "import_nvidia_pkl",
    "import_rosinality_pt",
    "load_nvidia_pkl",
    "load_rosinality_pt",
    "convert_rosinality_generator",
    "convert_rosinality_discriminator",
]

# First pickle in a legacy (pre-zip) torch.save file.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_NET_NAMES = ("G", "D", "G_ema")
_ROSINALITY_NAMES = {"g_ema": "G_ema", "g": "G", "d": "D"}


@dataclass
class ImportedNetworks:
    """Networks read from a checkpoint file, plus JSON-safe facts about where they came from."""

    nets: dict[str, torch.nn.Module]
    source_format: str  # 'faceapp' | 'nvidia-pkl' | 'rosinality-pt'
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Format detection.


def detect_format(path: str | os.PathLike) -> str:
    """'faceapp', 'nvidia-pkl' or 'rosinality-pt', judged by the file's content, not its name."""
    where = checkpoint_file(path)
    if is_safetensors_file(where):
        return "faceapp"
    with open(where, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04"):
        return "rosinality-pt"  # torch.save zip archive
    if head[:1] == b"\x80" and 2 <= head[1:2][0] <= 5:
        # A pickle. Legacy torch.save files open with a pickled magic number; network pickles
        # open with a dict.
        try:
            for op, arg, _ in pickletools.genops(io.BytesIO(head)):
                if op.name in ("LONG1", "LONG4", "LONG", "INT"):
                    return "rosinality-pt" if arg == _TORCH_LEGACY_MAGIC else "nvidia-pkl"
                if op.name not in ("PROTO", "FRAME"):
                    return "nvidia-pkl"
        except Exception:  # truncated opcode at the end of the 4 KB window
            return "nvidia-pkl"
        return "nvidia-pkl"
    raise CheckpointError(
        f"{where} is not a checkpoint faceapp can read: expected a faceapp .safetensors file, an NVIDIA "
        "stylegan2-ada-pytorch .pkl or a rosinality stylegan2-pytorch .pt"
    )


def import_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu", names: Iterable[str] | None = None
) -> ImportedNetworks:
    """Read networks from any supported checkpoint (format detected from the content)."""
    fmt = detect_format(path)
    if fmt == "faceapp":
        nets = load_networks(path, device=device, names=names)
        return ImportedNetworks(nets, "faceapp", dict(read_header(path)["extra"]))
    if fmt == "nvidia-pkl":
        return import_nvidia_pkl(path, device=device, names=names)
    return import_rosinality_pt(path, device=device, names=names)


def _select(available: Mapping[str, object], names: Iterable[str] | None, where: str,
            looked_for: str = "G, D, G_ema") -> list[str]:
    if not available:
        raise CheckpointError(f"{where} contains no StyleGAN2 networks (looked for {looked_for})")
    wanted = list(available) if names is None else list(names)
    absent = [n for n in wanted if n not in available]
    if absent:
        raise CheckpointError(
            f"{where} has no network {', '.join(map(repr, absent))}; it has: {', '.join(available)}"
        )
    return wanted


# ---------------------------------------------------------------------------------------------
# NVIDIA pickles (read by the restricted unpickler of faceapp.stylegan.safe_load).


def import_nvidia_pkl(
    path: str | os.PathLike, device: torch.device | str = "cpu", names: Iterable[str] | None = None
) -> ImportedNetworks:
    """Read G / D / G_ema from an NVIDIA stylegan2-ada-pytorch network pickle, executing nothing.

    names: subset of {'G', 'D', 'G_ema'} to import; None imports those present.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        raise CheckpointError(f"checkpoint not found: {where}")
    data = load_network_pickle(where)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{where} is a pickle of a {type(data).__name__}, not a stylegan2-ada-pytorch network dict "
            "(TensorFlow-era StyleGAN2 pickles must first be converted with NVIDIA's legacy.py)"
        )
    available = {k: data[k] for k in _NET_NAMES if isinstance(data.get(k), PersistentObject)}
    wanted = _select(available, names, where)
    nets = {}
    for name in wanted:
        obj = available[name]
        label = f"{where} [{name}]"
        if "class SynthesisInput" in obj.module_src:
            raise CheckpointError(f"{label} is a StyleGAN3 network; faceapp reads StyleGAN2 networks only")
        if obj.class_name not in ("Generator", "Discriminator"):
            raise CheckpointError(f"{label} is a {obj.class_name}, not a StyleGAN2 Generator or Discriminator")
        net = build_network(obj.class_name, nvidia_init_kwargs(obj, label), where=label)
        load_state_checked(net, nvidia_state_dict(obj), where=label)
        nets[name] = net.to(device).eval()
    extra = {"source_format": "nvidia-pkl"}
    tsk = data.get("training_set_kwargs")
    if isinstance(tsk, dict):
        kwargs = plain(tsk)
        extra["training_set_kwargs"] = {
            k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, type(None)))
        }
    return ImportedNetworks(nets, "nvidia-pkl", extra)


def load_nvidia_pkl(
    path: str | os.PathLike, device: torch.device | str = "cpu", names: Iterable[str] | None = None
) -> dict[str, torch.nn.Module]:
    """Networks of an NVIDIA stylegan2-ada-pytorch pickle (see `import_nvidia_pkl`)."""
    return import_nvidia_pkl(path, device=device, names=names).nets


# ---------------------------------------------------------------------------------------------
# rosinality checkpoints.


def _read_rosinality(where: str) -> dict:
    ckpt = load_torch_weights(where)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{where} holds a {type(ckpt).__name__}, not a rosinality checkpoint dict")
    return ckpt


def _args_dict(ckpt: dict) -> dict:
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return args if isinstance(args, dict) else {}


def import_rosinality_pt(
    path: str | os.PathLike, device: torch.device | str = "cpu", names: Iterable[str] | None = None
) -> ImportedNetworks:
    """Read a rosinality stylegan2-pytorch checkpoint as our G_ema / G / D (weights only, no code).

    'g_ema' -> 'G_ema', 'g' -> 'G', 'd' -> 'D'. names: subset of those to import.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        raise CheckpointError(f"checkpoint not found: {where}")
    ckpt = _read_rosinality(where)
    args = _args_dict(ckpt)
    available = {ours: ckpt[theirs] for theirs, ours in _ROSINALITY_NAMES.items()
                 if isinstance(ckpt.get(theirs), Mapping)}
    wanted = _select(available, names, where, looked_for="g_ema, g, d")
    latent_avg = ckpt.get("latent_avg")
    latent_avg = latent_avg if isinstance(latent_avg, torch.Tensor) else None
    extra: dict = {"source_format": "rosinality-pt"}
    nets = {}
    for name in wanted:
        label = f"{where} [{name}]"
        sd = available[name]
        if name == "D":
            kwargs, state = convert_rosinality_discriminator(sd, where=label)
        else:
            lr_mlp = args.get("lr_mlp", 0.01)  # rosinality's default; a few forks made it an option
            lr_mlp = float(lr_mlp) if isinstance(lr_mlp, (int, float)) and lr_mlp > 0 else 0.01
            kwargs, state = convert_rosinality_generator(sd, latent_avg=latent_avg, lr_mlp=lr_mlp, where=label)
            if latent_avg is None:
                extra["w_avg"] = "estimated from 10000 random z (the file has no latent_avg)"
        _check_args(args, kwargs, label)
        net = build_network(kwargs.pop("_class"), kwargs, where=label)
        fill_missing_buffers(net, state)
        if name != "D" and latent_avg is None:
            state["mapping.w_avg"] = estimate_w_avg(net, state, where=label)
        load_state_checked(net, state, where=label)
        nets[name] = net.to(device).eval()
    if args:
        extra["args"] = {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return ImportedNetworks(nets, "rosinality-pt", extra)


def load_rosinality_pt(
    path: str | os.PathLike, device: torch.device | str = "cpu", names: Iterable[str] | None = None
) -> dict[str, torch.nn.Module]:
    """Networks of a rosinality stylegan2-pytorch checkpoint (see `import_rosinality_pt`)."""
    return import_rosinality_pt(path, device=device, names=names).nets


def _check_args(args: dict, kwargs: dict, where: str) -> None:
    # The weights' shapes decide; args (when present) must agree, else the file is not what it claims.
    res = kwargs["img_resolution"]
    if "size" in args and isinstance(args["size"], int) and args["size"] != res:
        raise CheckpointError(f"{where}: args.size is {args['size']} but the weights are for {res}px")
    if "latent" in args and "w_dim" in kwargs and isinstance(args["latent"], int) and args["latent"] != kwargs["w_dim"]:
        raise CheckpointError(f"{where}: args.latent is {args['latent']} but the weights have w_dim {kwargs['w_dim']}")
