"""Importers for the official StyleGAN2 checkpoints users bring, without executing code from them.

Two formats:

* NVIDIA stylegan2-ada-pytorch network pickles (`*.pkl`): `pickle.dump` of a dict
  {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', ...}. Each network is reduced to
  `torch_utils.persistence._reconstruct_persistent_obj(meta)` where meta carries the Python
  source of its module and the object's `__dict__`. Loading such a pickle normally `exec`s that
  source; `_NvidiaUnpickler` instead keeps only the class name and state, and refuses every
  global that is not on its allow-list. Our networks use NVIDIA's names, so the collected
  parameters and buffers load into them with strict=True.
* rosinality stylegan2-pytorch checkpoints (`*.pt`): `torch.save` of {'g_ema', 'g', 'd',
  'g_optim', 'd_optim', 'args', 'latent_avg'}. Read with torch.load(weights_only=True) plus
  argparse.Namespace, and renamed onto NVIDIA's layout (see `convert_rosinality_generator`).
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from faceapp.errors import CheckpointError, UnsafeCheckpointError
from faceapp.stylegan.checkpoint import (
    build_network,
    is_safetensors_file,
    load_networks,
    load_state_checked,
    read_header,
)

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
    where = os.fspath(path)
    if not os.path.exists(where):
        raise CheckpointError(f"checkpoint not found: {where}")
    if os.path.isdir(where):
        raise CheckpointError(f"{where} is a folder; expected a checkpoint file")
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
# NVIDIA pickles: a restricted unpickler.


class _PersistentObject:
    """What a persistent NVIDIA object becomes here: its class name and state, no code."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.class_name = class_name
        self.state = state
        self.module_src = module_src  # kept only to recognise StyleGAN3 files; never executed

    def __repr__(self) -> str:
        return f"<persistent {self.class_name}>"


def _reconstruct_persistent_stub(meta):
    if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str):
        raise CheckpointError("malformed persistent object in the pickle (no class_name)")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"malformed persistent object {meta['class_name']!r} in the pickle (no state)")
    src = meta.get("module_src")
    return _PersistentObject(meta["class_name"], state, src if isinstance(src, str) else "")


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a plain dict that tolerates pickle's BUILD step."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


def _storage_from_bytes(data, where: str = "the pickle"):
    # torch.storage._load_from_bytes would torch.load these bytes with full pickle powers.
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"malformed tensor storage in {where}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note about pickle protocols
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refusing to load {where}: a tensor storage in it asks for {_offending_global(bytes(data), e)}, "
            "which is not on the allow-list; nothing from the file was executed"
        ) from None


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError("malformed tensor in the pickle (its storage is not a tensor storage)")
    if not (isinstance(storage_offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)):
        raise CheckpointError("malformed tensor in the pickle")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, *_ignored):
    # Plain tensors are all we need: the weights are copied into freshly built modules.
    if not isinstance(data, torch.Tensor):
        raise CheckpointError("malformed parameter in the pickle")
    return data.detach()


def _codecs_encode(text, encoding="latin1"):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("malformed bytes object in the pickle")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], object]:
    # numpy scalars/arrays appear in the state (e.g. weight_gain = lr / np.sqrt(n) is a float64).
    # These reconstructors only interpret raw bytes and dtype descriptions.
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch
        return {}
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    out: dict[tuple[str, str], object] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    # numpy 1.x writes numpy.core.*, numpy 2.x numpy._core.*; both name the same functions.
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = scalar
        out[(mod, "_reconstruct")] = _reconstruct
    dtypes = getattr(np, "dtypes", None)
    for dt in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(dtypes, dt):
            out[("numpy.dtypes", dt)] = getattr(dtypes, dt)
    return out


_ALLOWED_NVIDIA_GLOBALS: dict[tuple[str, str], object] | None = None


def _nvidia_globals() -> dict[tuple[str, str], object]:
    global _ALLOWED_NVIDIA_GLOBALS
    if _ALLOWED_NVIDIA_GLOBALS is None:
        allowed = {
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_stub,
            ("dnnlib.util", "EasyDict"): _EasyDict,
            ("dnnlib", "EasyDict"): _EasyDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("_codecs", "encode"): _codecs_encode,
            ("torch", "Size"): torch.Size,
        }
        for name in ("float32", "float16", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
            allowed[("torch", name)] = getattr(torch, name)
        allowed.update(_numpy_globals())
        _ALLOWED_NVIDIA_GLOBALS = allowed
    return _ALLOWED_NVIDIA_GLOBALS


class _NvidiaUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module, name):
        module, name = _py3_name(module, name)
        fn = _nvidia_globals().get((module, name))
        if fn is None and module.startswith("dnnlib.tflib"):
            raise CheckpointError(
                f"{self.where} is a TensorFlow-era StyleGAN2 pickle; convert it to a PyTorch one first "
                "(NVIDIA stylegan2-ada-pytorch's legacy.py, or rosinality's convert_weight.py), then run "
                "python -m faceapp convert on the result"
            )
        if fn is _storage_from_bytes:
            return lambda data: _storage_from_bytes(data, self.where)
        if fn is None:
            raise UnsafeCheckpointError(
                f"refusing to load {self.where}: the pickle asks for {module}.{name}, which is not on "
                "faceapp's allow-list (a StyleGAN2 network pickle never needs it); nothing from the file "
                "was executed"
            )
        return fn

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(
            f"refusing to load {self.where}: the pickle uses persistent ids, which a network pickle never "
            "does; nothing from the file was executed"
        )


def _py3_name(module: str, name: str) -> tuple[str, str]:
    # Protocol-2 pickles (torch.save's default) spell builtins as __builtin__, etc.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _pickle_globals(data: bytes) -> list[str]:
    """'module.name' of every global a pickle stream (or several back to back) refers to.

    Only disassembles (pickletools), never unpickles. STACK_GLOBAL takes its two strings from the
    stack, so string pushes and the memo are tracked just enough to name them.
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        pushed: list = []
        memo: dict = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name == "GLOBAL":
                    found.append(".".join(_py3_name(*arg.split(" ", 1))))
                elif name == "STACK_GLOBAL":
                    if len(pushed) >= 2 and all(isinstance(v, str) for v in pushed[-2:]):
                        found.append(".".join(_py3_name(pushed[-2], pushed[-1])))
                elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
                              "SHORT_BINSTRING", "BINSTRING"):
                    pushed.append(arg)
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = pushed[-1] if pushed else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(arg))
                elif op.stack_after:
                    pushed.append(None)
        except Exception:  # raw tensor bytes after the pickles of a legacy torch.save file
            break
    return found


_EXPECTED_MODULES = ("torch", "collections", "argparse", "numpy", "_codecs", "builtins.set", "builtins.frozenset")


def _offending_global(data: bytes | None, error: Exception) -> str:
    """Name the global that made a restricted load fail, for a message the user can act on."""
    if data is not None:
        for g in _pickle_globals(data):
            if not g.startswith(_EXPECTED_MODULES):
                return g
    m = re.search(r"GLOBAL ([\w.]+)", str(error))
    return m.group(1) if m else "an object outside the allow-list"


def _torch_pickle_bytes(where: str) -> bytes | None:
    # The pickle part of a torch.save file: data.pkl inside the zip, or the legacy stream itself.
    try:
        if zipfile.is_zipfile(where):
            with zipfile.ZipFile(where) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                return z.read(names[0]) if names else None
        with open(where, "rb") as f:
            return f.read(64 << 20)
    except (OSError, zipfile.BadZipFile):
        return None


def _plain(value):
    """EasyDicts -> dicts, tuples -> lists, numpy scalars -> Python numbers (JSON-safe kwargs)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _collect_tensors(obj: _PersistentObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(group) or {}, dict):
            raise CheckpointError(f"malformed network in the pickle: {prefix or '<top>'} {group} is not a dict")
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and key in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"malformed network in the pickle: {prefix}{key} is not a tensor")
            out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _PersistentObject):
            raise CheckpointError(f"malformed network in the pickle: submodule {prefix}{key} is not a module")
        _collect_tensors(child, f"{prefix}{key}.", out)


def _init_kwargs_of(obj: _PersistentObject, where: str) -> dict:
    state = obj.state
    kwargs = state.get("_init_kwargs", state.get("init_kwargs"))
    args = state.get("_init_args", ())
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where}: the pickled {obj.class_name} records no constructor kwargs")
    kwargs = _plain(kwargs)
    if args:
        import inspect

        from faceapp.stylegan.checkpoint import network_class

        try:
            bound = inspect.signature(network_class(obj.class_name)).bind_partial(*_plain(list(args)), **kwargs)
        except TypeError as e:
            raise CheckpointError(f"{where}: cannot match the pickled constructor arguments ({e})") from e
        kwargs = dict(bound.arguments)
    return kwargs


def import_nvidia_pkl(
    path: str | os.PathLike, device: torch.device | str = "cpu", names: Iterable[str] | None = None
) -> ImportedNetworks:
    """Read G / D / G_ema from an NVIDIA stylegan2-ada-pytorch network pickle, executing nothing.

    names: subset of {'G', 'D', 'G_ema'} to import; None imports those present.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        raise CheckpointError(f"checkpoint not found: {where}")
    try:
        with open(where, "rb") as f:
            data = _NvidiaUnpickler(f, where).load()
    except (UnsafeCheckpointError, CheckpointError):
        raise
    except Exception as e:  # truncated or corrupt pickle streams raise many types
        raise CheckpointError(f"{where} is not a readable network pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{where} is a pickle of a {type(data).__name__}, not a stylegan2-ada-pytorch network dict "
            "(TensorFlow-era StyleGAN2 pickles must first be converted with NVIDIA's legacy.py)"
        )
    available = {k: data[k] for k in _NET_NAMES if isinstance(data.get(k), _PersistentObject)}
    wanted = _select(available, names, where)
    nets = {}
    for name in wanted:
        obj = available[name]
        label = f"{where} [{name}]"
        if "class SynthesisInput" in obj.module_src:
            raise CheckpointError(f"{label} is a StyleGAN3 network; faceapp reads StyleGAN2 networks only")
        if obj.class_name not in ("Generator", "Discriminator"):
            raise CheckpointError(f"{label} is a {obj.class_name}, not a StyleGAN2 Generator or Discriminator")
        net = build_network(obj.class_name, _init_kwargs_of(obj, label), where=label)
        state: dict[str, torch.Tensor] = {}
        _collect_tensors(obj, "", state)
        load_state_checked(net, state, where=label)
        nets[name] = net.to(device).eval()
    extra = {"source_format": "nvidia-pkl"}
    tsk = data.get("training_set_kwargs")
    if isinstance(tsk, dict):
        plain = _plain(tsk)
        extra["training_set_kwargs"] = {
            k: v for k, v in plain.items() if isinstance(v, (str, int, float, bool, type(None)))
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
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refusing to load {where}: it asks for {_offending_global(_torch_pickle_bytes(where), e)}, which "
            "a weights file never needs; "
            "nothing from the file was executed"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{where} is not a readable torch checkpoint ({type(e).__name__}: {e})") from e
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
        _fill_missing(net, state)
        if name != "D" and latent_avg is None:
            state["mapping.w_avg"] = _estimate_w_avg(net, state, where=label)
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


def _fill_missing(net: torch.nn.Module, state: dict) -> None:
    # Fixed buffers rosinality does not store in our layout (resample filters) come from the new net.
    for key, value in net.state_dict().items():
        if key.endswith("resample_filter") and key not in state:
            state[key] = value.clone()


@torch.no_grad()
def _estimate_w_avg(G: torch.nn.Module, state: dict, where: str, n: int = 10000) -> torch.Tensor:
    # rosinality training checkpoints carry no average w; truncation needs one. Fixed seed: same file,
    # same w_avg.
    state = dict(state)
    state["mapping.w_avg"] = torch.zeros_like(G.mapping.w_avg)
    load_state_checked(G, state, where=where)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn([n, G.z_dim], generator=gen)  # [n, z_dim]
    return G.mapping(z, None)[:, 0].mean(dim=0)  # [w_dim]


def _get(sd: Mapping[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    value = sd.get(key)
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{where}: the state dict has no tensor {key!r}; not a rosinality StyleGAN2 checkpoint")
    return value.detach().to(torch.float32)


def _fit_channels(channels: dict[int, int], where: str) -> tuple[int, int]:
    """channel_base, channel_max with min(channel_base // r, channel_max) == channels[r] for every r."""
    cmax = max(channels.values())
    below = [r * c for r, c in channels.items() if c < cmax]
    base = min(below) if below else cmax * max(channels)
    if all(min(base // r, cmax) == c for r, c in channels.items()):
        return base, cmax
    raise CheckpointError(
        f"{where}: channel counts {dict(sorted(channels.items()))} do not follow StyleGAN2's "
        "min(channel_base // resolution, channel_max) rule; faceapp cannot represent this network"
    )


def _resample_filter(sd: Mapping[str, torch.Tensor], key: str, gain: float, where: str) -> list[float]:
    """The 1-D filter behind a rosinality 2-D blur kernel (k2d = outer(f, f) / sum^2 * gain)."""
    k = sd.get(key)
    if not isinstance(k, torch.Tensor):
        return [1, 3, 3, 1]
    k = k.detach().double() / gain
    f = k.sum(dim=0)  # [n]; the 2-D kernel is separable, so its column sums are the 1-D filter
    if not torch.allclose(torch.outer(f, f), k, atol=1e-6):
        raise CheckpointError(f"{where}: {key} is not a separable blur kernel")
    default = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) / 8
    if f.shape == default.shape and torch.allclose(f, default, atol=1e-6):
        return [1, 3, 3, 1]
    return [round(v, 8) for v in f.tolist()]


def convert_rosinality_generator(
    sd: Mapping[str, torch.Tensor],
    latent_avg: torch.Tensor | None = None,
    lr_mlp: float = 0.01,
    where: str = "rosinality generator",
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Rename a rosinality Generator state dict onto our Generator: (init_kwargs, state_dict).

    The two codebases compute the same function from the same stored numbers:
    EqualLinear (weight * lr_mul / sqrt(in), bias * lr_mul) == FullyConnectedLayer;
    ModulatedConv2d's 1/sqrt(fan_in) cancels in demodulation, as NVIDIA's absent one does, and
    for toRGB both scale styles by 1/sqrt(in); rosinality's upsampling conv_transpose2d with a
    stored (already flipped) kernel + blur(pad 1, 1, gain 4) is NVIDIA's up=2 path with the same
    kernel; FusedLeakyReLU == lrelu(x + b) * sqrt(2). So tensors are only renamed/reshaped:
    conv.weight [1,O,I,k,k] -> [O,I,k,k], noise.weight [1] -> [], noises.noise_i [1,1,r,r] -> [r,r],
    to_rgb bias [1,3,1,1] -> [3], input.input [1,C,4,4] -> [C,4,4], latent_avg -> mapping.w_avg.
    The returned state has no resample_filter buffers and, without latent_avg, no mapping.w_avg.
    init_kwargs carries the class under '_class'.
    """
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        n_mlp += 1
    if n_mlp == 0 or "input.input" not in sd:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 generator (no style.1.weight / input.input)")
    n_rgb = 0
    while f"to_rgbs.{n_rgb}.conv.weight" in sd:
        n_rgb += 1
    log_size = n_rgb + 2
    size = 2**log_size

    z_dim = _get(sd, "style.1.weight", where).shape[1]
    w_dim = _get(sd, f"style.{n_mlp}.weight", where).shape[0]
    hidden = _get(sd, "style.1.weight", where).shape[0]
    const = _get(sd, "input.input", where)  # [1, C, 4, 4]
    channels = {4: const.shape[1]}
    for i in range(n_rgb):
        channels[2 ** (i + 3)] = _get(sd, f"convs.{2 * i}.conv.weight", where).shape[1]
    channel_base, channel_max = _fit_channels(channels, where)
    img_channels = _get(sd, "to_rgb1.conv.weight", where).shape[1]
    resample_filter = (_resample_filter(sd, "convs.0.conv.blur.kernel", 4.0, where) if n_rgb
                       else [1, 3, 3, 1])

    synthesis_kwargs: dict = dict(channel_base=channel_base, channel_max=channel_max)
    if resample_filter != [1, 3, 3, 1]:
        synthesis_kwargs["resample_filter"] = resample_filter
    mapping_kwargs: dict = dict(num_layers=n_mlp, lr_multiplier=lr_mlp)
    if hidden != w_dim:
        mapping_kwargs["layer_features"] = hidden
    kwargs = dict(_class="Generator", z_dim=int(z_dim), c_dim=0, w_dim=int(w_dim), img_resolution=size,
                  img_channels=int(img_channels), mapping_kwargs=mapping_kwargs,
                  synthesis_kwargs=synthesis_kwargs)

    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = _get(sd, f"style.{i + 1}.weight", where)
        out[f"mapping.fc{i}.bias"] = _get(sd, f"style.{i + 1}.bias", where)
    if latent_avg is not None:
        out["mapping.w_avg"] = latent_avg.detach().to(torch.float32).reshape(-1)

    def noise(index: int, res: int) -> torch.Tensor:
        key = f"noises.noise_{index}"
        if key in sd:
            return _get(sd, key, where).reshape(res, res)
        # Early rosinality checkpoints had no stored noise: fixed, seeded stand-in for noise_mode='const'.
        return torch.randn([res, res], generator=torch.Generator().manual_seed(index))

    def styled_conv(src: str, dst: str, noise_index: int, res: int) -> None:
        out[f"{dst}.weight"] = _get(sd, f"{src}.conv.weight", where)[0]
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias", where)
        out[f"{dst}.noise_strength"] = _get(sd, f"{src}.noise.weight", where).reshape([])
        bias_key = f"{src}.activate.bias" if f"{src}.activate.bias" in sd else f"{src}.bias"
        out[f"{dst}.bias"] = _get(sd, bias_key, where).reshape(-1)
        out[f"{dst}.noise_const"] = noise(noise_index, res)

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = _get(sd, f"{src}.conv.weight", where)[0]
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias", where)
        out[f"{dst}.bias"] = _get(sd, f"{src}.bias", where).reshape(-1)

    out["synthesis.b4.const"] = const[0]
    styled_conv("conv1", "synthesis.b4.conv1", 0, 4)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for i in range(n_rgb):
        res = 2 ** (i + 3)
        styled_conv(f"convs.{2 * i}", f"synthesis.b{res}.conv0", 2 * i + 1, res)
        styled_conv(f"convs.{2 * i + 1}", f"synthesis.b{res}.conv1", 2 * i + 2, res)
        to_rgb(f"to_rgbs.{i}", f"synthesis.b{res}.torgb")
    return kwargs, out


def convert_rosinality_discriminator(
    sd: Mapping[str, torch.Tensor], where: str = "rosinality discriminator"
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Rename a rosinality (residual) Discriminator state dict onto ours: (init_kwargs, state_dict).

    convs.0 (1x1 ConvLayer) -> b{R}.fromrgb; convs.k ResBlock -> b{R/2^(k-1)}: conv1 -> conv0,
    conv2 (blur + stride-2 conv) -> conv1, skip -> skip; final_conv -> b4.conv;
    final_linear.0/1 -> b4.fc / b4.out. EqualConv2d/EqualLinear scales equal NVIDIA's weight gains,
    and (out + skip) / sqrt(2) equals NVIDIA's gain=sqrt(0.5) on both branches.
    """
    if "convs.0.0.weight" not in sd or "final_conv.0.weight" not in sd:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 discriminator (no convs.0.0.weight)")
    n_blocks = 0
    while f"convs.{n_blocks + 1}.conv1.0.weight" in sd:
        n_blocks += 1
    size = 2 ** (n_blocks + 2)
    fromrgb = _get(sd, "convs.0.0.weight", where)  # [C, img_channels, 1, 1]
    channels = {size: fromrgb.shape[0]}
    for k in range(1, n_blocks + 1):
        channels[size // 2**k] = _get(sd, f"convs.{k}.conv2.1.weight", where).shape[0]
    channel_base, channel_max = _fit_channels(channels, where)
    final_in = _get(sd, "final_conv.0.weight", where).shape[1]
    mbstd_channels = final_in - channels[4]
    resample_filter = (_resample_filter(sd, "convs.1.conv2.0.kernel", 1.0, where) if n_blocks
                       else [1, 3, 3, 1])
    block_kwargs: dict = {}
    if resample_filter != [1, 3, 3, 1]:
        block_kwargs["resample_filter"] = resample_filter
    kwargs = dict(_class="Discriminator", c_dim=0, img_resolution=size, img_channels=int(fromrgb.shape[1]),
                  architecture="resnet", channel_base=channel_base, channel_max=channel_max,
                  block_kwargs=block_kwargs,
                  epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=int(mbstd_channels)))

    out: dict[str, torch.Tensor] = {
        f"b{size}.fromrgb.weight": fromrgb,
        f"b{size}.fromrgb.bias": _get(sd, "convs.0.1.bias", where),
    }
    for k in range(1, n_blocks + 1):
        res = size // 2 ** (k - 1)
        out[f"b{res}.conv0.weight"] = _get(sd, f"convs.{k}.conv1.0.weight", where)
        out[f"b{res}.conv0.bias"] = _get(sd, f"convs.{k}.conv1.1.bias", where)
        out[f"b{res}.conv1.weight"] = _get(sd, f"convs.{k}.conv2.1.weight", where)
        out[f"b{res}.conv1.bias"] = _get(sd, f"convs.{k}.conv2.2.bias", where)
        out[f"b{res}.skip.weight"] = _get(sd, f"convs.{k}.skip.1.weight", where)
    out["b4.conv.weight"] = _get(sd, "final_conv.0.weight", where)
    out["b4.conv.bias"] = _get(sd, "final_conv.1.bias", where)
    out["b4.fc.weight"] = _get(sd, "final_linear.0.weight", where)
    out["b4.fc.bias"] = _get(sd, "final_linear.0.bias", where)
    out["b4.out.weight"] = _get(sd, "final_linear.1.weight", where)
    out["b4.out.bias"] = _get(sd, "final_linear.1.bias", where)
    return kwargs, out
