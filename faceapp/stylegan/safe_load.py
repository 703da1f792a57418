"""Reading official checkpoint files without executing code from them.

* `load_network_pickle`: an NVIDIA stylegan2-ada-pytorch network pickle through a restricted unpickler.
  Each network in it is reduced to `torch_utils.persistence._reconstruct_persistent_obj(meta)`, where
  meta carries the Python source of its module and the object's `__dict__`; loading such a pickle
  normally `exec`s that source. Here it becomes a `PersistentObject` (class name and state only), and
  every global that is not on the allow-list is refused.
* `load_torch_weights`: a torch.save file (rosinality .pt, e4e .pt) through torch.load(weights_only=True),
  allowing argparse.Namespace beyond containers and tensors.

Both map what goes wrong onto the faceapp.errors family: UnsafeCheckpointError naming the global a
hostile file asks for (nothing from the file is executed), CheckpointError for a file that is not
readable. faceapp.stylegan.legacy and faceapp.inversion.e4e_import read files through these two.
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

import torch

from faceapp.errors import CheckpointError, UnsafeCheckpointError

__all__ = ["PersistentObject", "checkpoint_file", "load_network_pickle", "load_torch_weights"]


class PersistentObject:
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
    return PersistentObject(meta["class_name"], state, src if isinstance(src, str) else "")


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


def checkpoint_file(path: str | os.PathLike, expected: str = "a checkpoint file") -> str:
    """`path` as a string, once it is known to be a file: CheckpointError ("checkpoint not found", or a folder
    where `expected` was wanted) otherwise."""
    where = os.fspath(path)
    if not os.path.exists(where):
        raise CheckpointError(f"checkpoint not found: {where}")
    if os.path.isdir(where):
        raise CheckpointError(f"{where} is a folder; expected {expected}")
    return where


def load_network_pickle(path: str | os.PathLike) -> object:
    """What an NVIDIA network pickle holds (usually a dict), its networks as `PersistentObject`s.

    Raises UnsafeCheckpointError for a global outside the allow-list, CheckpointError for a file
    that is not a readable pickle (or a TensorFlow-era one).
    """
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            return _NvidiaUnpickler(f, where).load()
    except (UnsafeCheckpointError, CheckpointError):
        raise
    except Exception as e:  # truncated or corrupt pickle streams raise many types
        raise CheckpointError(f"{where} is not a readable network pickle ({type(e).__name__}: {e})") from e


def load_torch_weights(path: str | os.PathLike, *, what: str = "a weights file") -> object:
    """torch.load(path, map_location='cpu', weights_only=True), allowing argparse.Namespace (the options
    some checkpoints store) beyond plain containers and tensors.

    what: how the refusal names the file ("a weights file never needs ...").
    Raises UnsafeCheckpointError naming the global a hostile file asks for, CheckpointError for a file
    torch cannot read.
    """
    where = os.fspath(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refusing to load {where}: it asks for {_offending_global(_torch_pickle_bytes(where), e)}, which "
            f"{what} never needs; nothing from the file was executed"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{where} is not a readable torch checkpoint ({type(e).__name__}: {e})") from e
