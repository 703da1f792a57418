"""Our checkpoint format: one .safetensors file holding weights plus the JSON that rebuilds the nets.

Layout of a file written by `save_networks`:

    tensors   "<net name>.<state_dict key>", e.g. "G_ema.synthesis.b4.const"
    metadata  "format"         = "faceapp.networks"
              "format_version" = "1"
              "networks"       = JSON {name: {"class": "Generator", "init_kwargs": {...}}}
              "extra"          = JSON of whatever the caller passed (training stats, provenance)

The class of each net is looked up by name in an explicit allow-list (`NETWORK_CLASSES`);
nothing in the file is ever imported or executed.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping

import torch

from faceapp.errors import CheckpointError
from faceapp.imageio import atomic_path

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "NETWORK_CLASSES",
    "register_network_class",
    "save_networks",
    "load_networks",
    "load_generator",
    "read_header",
    "is_safetensors_file",
    "network_class",
]

FORMAT_NAME = "faceapp.networks"
FORMAT_VERSION = 1

# Class name -> class. Filled lazily with the StyleGAN2 nets; other modules may add their own
# classes in code via `register_network_class` (never from a file).
NETWORK_CLASSES: dict[str, type[torch.nn.Module]] = {}

# A safetensors header bigger than this is not a real header (the format caps it at 100 MB).
_MAX_HEADER_BYTES = 100_000_000


def _builtin_classes() -> dict[str, type[torch.nn.Module]]:
    from faceapp.stylegan.age_estimator import AgeEstimator
    from faceapp.stylegan.detail import DetailNet
    from faceapp.stylegan.networks import Discriminator, Generator

    return {"Generator": Generator, "Discriminator": Discriminator, "DetailNet": DetailNet,
            "AgeEstimator": AgeEstimator}


def register_network_class(cls: type[torch.nn.Module], name: str | None = None) -> None:
    """Allow `load_networks` to rebuild `cls` (it must take JSON kwargs and set `init_kwargs`)."""
    NETWORK_CLASSES[name or cls.__name__] = cls


def network_class(name: str) -> type[torch.nn.Module]:
    """The allow-listed class called `name`; CheckpointError for anything else."""
    classes = {**_builtin_classes(), **NETWORK_CLASSES}
    if name not in classes:
        raise CheckpointError(
            f"the checkpoint asks for a network class {name!r}, which faceapp does not know "
            f"(known: {', '.join(sorted(classes))})"
        )
    return classes[name]


def _class_name_of(net: torch.nn.Module) -> str:
    name = type(net).__name__
    classes = {**_builtin_classes(), **NETWORK_CLASSES}
    if classes.get(name) is not type(net):
        raise CheckpointError(
            f"cannot save a {type(net).__module__}.{name}: only {', '.join(sorted(classes))} "
            "can be stored (register other classes with register_network_class)"
        )
    return name


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (8-byte header size, then a JSON object)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 2 <= n <= min(_MAX_HEADER_BYTES, size - 8)


def _check_readable(path: str | os.PathLike) -> None:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {os.fspath(path)}")
    if os.path.isdir(path):
        raise CheckpointError(f"{os.fspath(path)} is a folder; expected a .safetensors checkpoint file")
    if not is_safetensors_file(path):
        raise CheckpointError(
            f"{os.fspath(path)} is not a faceapp checkpoint (not a safetensors file); if it is an official "
            "StyleGAN2 .pkl or .pt, convert it first: python -m faceapp convert IN OUT.safetensors"
        )


def read_header(path: str | os.PathLike) -> dict:
    """The parsed metadata of a faceapp checkpoint: {"format", "format_version", "networks", "extra"}.

    Reads only the header, not the weights.
    """
    from safetensors import safe_open

    _check_readable(path)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{os.fspath(path)} is a damaged safetensors file: {e}") from e
    return _parse_metadata(path, meta)


def _parse_metadata(path, meta: Mapping[str, str]) -> dict:
    where = os.fspath(path)
    fmt = meta.get("format")
    if fmt != FORMAT_NAME:
        raise CheckpointError(
            f"{where} is a safetensors file but not a faceapp checkpoint (format {fmt!r}, expected "
            f"{FORMAT_NAME!r})"
        )
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{where}: format_version {meta.get('format_version')!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} was written by a newer faceapp (format version {version}; this faceapp reads up to "
            f"{FORMAT_VERSION}); upgrade faceapp"
        )
    if version < 1:
        raise CheckpointError(f"{where}: unknown format version {version}")
    try:
        networks = json.loads(meta.get("networks", ""))
        extra = json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: the network description in the header is not valid JSON ({e})") from e
    if not isinstance(networks, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("class"), str) and isinstance(v.get("init_kwargs"), dict)
        for v in networks.values()
    ):
        raise CheckpointError(f"{where}: the header's 'networks' entry is malformed")
    return {"format": fmt, "format_version": version, "networks": networks, "extra": extra}


def save_networks(
    path: str | os.PathLike,
    nets: Mapping[str, torch.nn.Module],
    extra: dict | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write `nets` (e.g. {"G": G, "D": D, "G_ema": G_ema}) to one .safetensors file.

    extra: JSON-serialisable dict stored in the header (training stats, provenance, ...).
    dtype: torch.float16 stores float32 tensors as fp16 (half the size; `load_networks` casts
        them back to float32); None keeps them as they are.
    """
    from safetensors.torch import save_file

    if not nets:
        raise CheckpointError("nothing to save: no networks given")
    if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(f"unsupported storage dtype {dtype}; use torch.float16 or None")
    described = {}
    tensors = {}
    for name, net in nets.items():
        if not name or "." in name:
            raise CheckpointError(f"network name {name!r} must be non-empty and contain no '.'")
        init_kwargs = getattr(net, "init_kwargs", None)
        if not isinstance(init_kwargs, dict):
            raise CheckpointError(f"network {name!r} has no init_kwargs dict; cannot record how to rebuild it")
        described[name] = {"class": _class_name_of(net), "init_kwargs": init_kwargs}
        for key, value in net.state_dict().items():
            t = value.detach().to("cpu")
            if dtype is not None and t.dtype == torch.float32:
                t = t.to(dtype)
            # safetensors refuses views and shared storage; a private contiguous copy is always accepted.
            tensors[f"{name}.{key}"] = t.contiguous().clone()
    try:
        metadata = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "networks": json.dumps(described, sort_keys=True),
            "extra": json.dumps(extra or {}, sort_keys=True),
        }
    except TypeError as e:
        raise CheckpointError(f"cannot save: init_kwargs or extra are not JSON-serialisable ({e})") from e
    with atomic_path(path) as tmp:  # an interrupted save never leaves a half-written checkpoint behind
        save_file(tensors, os.fspath(tmp), metadata=metadata)


def _preview(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def build_network(class_name: str, init_kwargs: dict, where: str = "checkpoint") -> torch.nn.Module:
    """Construct an allow-listed network class from its JSON kwargs (random weights)."""
    cls = network_class(class_name)
    try:
        return cls(**init_kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot build {class_name} from the stored kwargs ({e})") from e


def load_state_checked(net: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """load_state_dict(strict) with messages that name the missing/unexpected/mis-shaped keys.

    Floating tensors are cast to the dtype of the network's own tensor (fp16 storage -> float32).
    """
    own = net.state_dict()
    missing = own.keys() - state.keys()
    unexpected = state.keys() - own.keys()
    if missing:
        raise CheckpointError(f"{where}: missing weights {_preview(missing)}; the file is incomplete or "
                              "was written for a different architecture")
    if unexpected:
        raise CheckpointError(f"{where}: unexpected weights {_preview(unexpected)}; the file was written "
                              "for a different architecture")
    bad = [f"{k} {list(state[k].shape)} (expected {list(own[k].shape)})"
           for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{where}: shape mismatch: {_preview(bad, 3)}")
    cast = {k: (v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v)
            for k, v in state.items()}
    net.load_state_dict(cast, strict=True)


def load_networks(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    names: Iterable[str] | None = None,
) -> dict[str, torch.nn.Module]:
    """Load the networks of a faceapp checkpoint, in eval mode, on `device`.

    names: which nets to load (e.g. ["G_ema"]); None loads all of them.
    """
    from safetensors import safe_open

    header = read_header(path)
    where = os.fspath(path)
    available = header["networks"]
    wanted = list(available) if names is None else list(names)
    absent = [n for n in wanted if n not in available]
    if absent:
        raise CheckpointError(
            f"{where} has no network {', '.join(map(repr, absent))}; it has: {', '.join(available) or 'none'}"
        )
    out = {}
    with safe_open(where, framework="pt", device="cpu") as f:
        keys = list(f.keys())
        for name in wanted:
            desc = available[name]
            net = build_network(desc["class"], desc["init_kwargs"], where=f"{where} [{name}]")
            prefix = name + "."
            state = {k[len(prefix):]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
            load_state_checked(net, state, where=f"{where} [{name}]")
            out[name] = net.to(device).eval()
    return out


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The generator for inference: G_ema if the checkpoint has it, else G."""
    header = read_header(path)
    for name in ("G_ema", "G"):
        if name in header["networks"]:
            return load_networks(path, device=device, names=[name])[name]
    raise CheckpointError(
        f"{os.fspath(path)} holds no generator (no 'G_ema' or 'G'; it has: {', '.join(header['networks'])})"
    )
