"""Importers for published edit-direction files (read without executing anything from them).

- InterFaceGAN (genforce/interfacegan) boundaries: ``.npy`` arrays [1, latent_dim], the unit normal of a
  linear SVM boundary, named ``<model>_<dataset>_<attribute>_<space>_boundary.npy`` (e.g.
  ``stylegan_ffhq_age_w_boundary.npy``; conditional ones ``..._age_c_gender_boundary.npy``). Edits move
  ``latent + distance * boundary``: distances are raw latent units.
- e4e (omertov/encoder4editing) ``editings/interfacegan_directions/{age,smile,pose}.pt``: a torch tensor
  in W, applied as ``latent + factor * direction``: age and smile are [1, 512] (every W+ layer), pose is
  [1, 18, 512] (one row per W+ layer of the 1024 px FFHQ StyleGAN2; its rows are equal and unit). The
  published files store their tensors on 'cuda:0'; they are read onto the CPU.
- GANSpace (harskish/ganspace) component files: ``.npz`` with ``lat_comp`` [n_comp, 1, w_dim] (unit rows),
  ``lat_mean`` [1, w_dim], ``lat_stdev`` [n_comp] (std of W samples' coordinates on each component),
  ``act_comp`` / ``act_mean`` / ``act_stdev`` / ``var_ratio`` (and ``random_stdevs``); a named edit is
  a component applied to a W+ layer range with a strength in stdevs. e4e ships the same thing as
  ``editings/ganspace_pca/ffhq_pca.pt``: a dict {'comp', 'mean', 'std'} (loaded with weights_only).
  e4e *sets* the coordinate to the strength; faceapp *adds* strength * stdev along the component.

Each importer returns faceapp Directions (see faceapp.edits.directions for the units): InterFaceGAN and
e4e directions keep their authors' units (scale = the stored vector's norm, so strength s = their
distance / factor s) until `DirectionSet.calibrated` measures them on a generator's latents; GANSpace
components take their ``lat_stdev`` as scale. `to_interfacegan_npy` / `to_e4e_pt` write a Direction
back in those formats (vector * scale, so the files mean the same edit to those projects' code).
`read_direction_file` reads any of them (or a faceapp direction set) by content, for the CLI.

None of these files says which generator it was made for beyond its name; see
faceapp.edits.provenance for how the name is read (InterFaceGAN's `stylegan_*` files are StyleGAN1).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from faceapp.edits.directions import Direction, DirectionSet
from faceapp.errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "from_e4e_pt",
    "from_ganspace",
    "from_interfacegan_npy",
    "interfacegan_name",
    "load_pt_safely",
    "read_direction_file",
    "to_e4e_pt",
    "to_interfacegan_npy",
]

_INTERFACEGAN_MODELS = {"pggan", "stylegan", "stylegan2", "stylegan3"}
_SPACES = {"w", "z", "wp"}


def interfacegan_name(path: str | os.PathLike) -> tuple[str, str | None]:
    """(attribute, latent space) from an InterFaceGAN file name.

    'stylegan_ffhq_age_w_boundary.npy' -> ('age', 'w'); 'stylegan_celebahq_eyeglasses_boundary.npy' ->
    ('eyeglasses', None); 'stylegan_ffhq_age_c_gender_boundary.npy' -> ('age_c_gender', None).
    """
    stem = Path(path).name
    stem = re.sub(r"\.npy$", "", stem)
    stem = re.sub(r"_boundary$", "", stem)
    parts = stem.split("_")
    if len(parts) > 2 and parts[0].lower() in _INTERFACEGAN_MODELS:
        parts = parts[2:]  # drop <model>_<dataset>
    space = None
    if len(parts) > 1 and parts[-1].lower() in _SPACES:
        space = parts.pop().lower()
    return "_".join(parts) or stem, space


def _as_w(arr: np.ndarray, where: str, w_dim: int | None) -> np.ndarray:
    """[1, D] / [D] / [L, D] / [1, L, D] / [1, L*D] -> [D] or [L, D] float64."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:  # e4e's pose.pt: [1, num_ws, w_dim]
        a = a[0]
    elif a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1 and w_dim is not None and a.shape[0] != w_dim:
        if a.shape[0] % w_dim:
            raise CheckpointError(f"{where}: a direction of {a.shape[0]} values does not fit w_dim {w_dim}")
        a = a.reshape(-1, w_dim)  # a flattened W+ boundary
    if a.ndim not in (1, 2) or a.size == 0:
        raise CheckpointError(f"{where}: expected a direction [1, w_dim], got shape {tuple(np.shape(arr))}")
    if not np.all(np.isfinite(a)) or not np.linalg.norm(a) > 0:
        raise CheckpointError(f"{where}: the direction is zero or not finite")
    return a


def _existing_file(path: str | os.PathLike, what: str = "direction") -> str:
    """`path` as a string once it is known to be a file: CheckpointError ("<what> file not found") otherwise."""
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise CheckpointError(f"{what} file not found: {where}")
    return where


def _file_direction(v: np.ndarray, *, name: str, source: str, layers, scale: float | None,
                    strength_range: tuple[float, float], description: str) -> Direction:
    """A single-direction file's vector `v` as a Direction; scale None = the vector's norm (the file's own units)."""
    return Direction(
        name=name,
        vector=v,
        layers=layers,
        scale=scale or float(np.linalg.norm(v)),
        strength_range=strength_range,
        description=description,
        source=source,
    )


def from_interfacegan_npy(
    path: str | os.PathLike,
    name: str | None = None,
    *,
    space: str | None = None,
    w_dim: int | None = None,
    layers: tuple[int, int] | None = None,
    scale: float | None = None,
    strength_range: tuple[float, float] = (-3.0, 3.0),
    description: str = "",
) -> Direction:
    """An InterFaceGAN boundary ``.npy`` ([1, w_dim]) as a Direction in W.

    name: default from the file name ('stylegan_ffhq_age_w_boundary.npy' -> 'age').
    space: the boundary's latent space when the file name does not say; a 'z' boundary is refused
        (faceapp edits in W, and a normal in Z means nothing there). w_dim: give it to read a flattened
        W+ ('wp') boundary [1, num_ws * w_dim] as a per-layer direction.
    scale: None keeps the file's own units (its norm, 1 for InterFaceGAN's unit normals), so strength s
        moves a code exactly as InterFaceGAN's distance s does.
    """
    where = _existing_file(path)
    try:
        arr = np.load(where, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # pickled object arrays land here too: refused
        raise CheckpointError(f"{where} is not a plain .npy array (InterFaceGAN boundaries are [1, 512]): {e}") from e
    guessed, file_space = interfacegan_name(where)
    space = (space or file_space or "w").lower()
    if space == "z":
        raise CheckpointError(
            f"{where} is a boundary in Z space; faceapp edits codes in W. Use the W-space boundary "
            "(…_w_boundary.npy) of the same attribute"
        )
    return _file_direction(_as_w(arr, where, w_dim), name=name or guessed, source=f"interfacegan:{Path(where).name}",
                           layers=layers, scale=scale, strength_range=strength_range, description=description)


def load_pt_safely(path: str | os.PathLike):
    """torch.load with weights_only=True: tensors and plain containers only.

    Raises UnsafeCheckpointError when the file asks for anything else (nothing from it is run),
    CheckpointError when it is missing or not a torch file.
    """
    import torch

    where = _existing_file(path)
    try:
        return torch.load(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: the file wants to run code
        raise UnsafeCheckpointError(
            f"{where} asks to load Python objects beyond tensors, so it was not loaded (nothing from it was "
            f"executed); direction files hold plain tensors — get it from a trusted source ({e})".splitlines()[0]
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{where} is not a readable torch file: {e}") from e


def from_e4e_pt(
    path: str | os.PathLike,
    name: str | None = None,
    *,
    layers: tuple[int, int] | None = None,
    scale: float | None = None,
    strength_range: tuple[float, float] = (-3.0, 3.0),
    description: str = "",
) -> Direction:
    """An e4e ``editings/interfacegan_directions/<name>.pt`` tensor [1, 512] (W) or [1, num_ws, 512] as a Direction.

    Loaded with torch.load(weights_only=True); a file that asks for anything but tensors raises
    UnsafeCheckpointError. name defaults to the file's stem ('age.pt' -> 'age'). scale: None = the
    tensor's norm, so strength s is exactly e4e's `latent + s * direction`.
    """
    import torch

    obj = load_pt_safely(path)
    where = os.fspath(path)
    if not isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a direction tensor [1, w_dim]")
    return _file_direction(_as_w(obj.detach().double().numpy(), where, None), name=name or Path(where).stem,
                           source=f"e4e:{Path(where).name}", layers=layers, scale=scale,
                           strength_range=strength_range, description=description)


def _ganspace_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(components [n, w_dim], stdevs [n]) from a GANSpace .npz or e4e's PCA .pt."""
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if "lat_comp" not in z.files:
                    raise CheckpointError(f"{path} has no 'lat_comp' (keys: {', '.join(z.files)}); not a GANSpace file")
                comp = np.asarray(z["lat_comp"], dtype=np.float64)
                std = np.asarray(z["lat_stdev"], dtype=np.float64) if "lat_stdev" in z.files else np.ones(len(comp))
        except (ValueError, OSError, EOFError) as e:
            raise CheckpointError(f"{path} is not a readable .npz file: {e}") from e
    else:
        import torch

        obj = load_pt_safely(path)
        if not (isinstance(obj, Mapping) and isinstance(obj.get("comp"), torch.Tensor)):
            raise CheckpointError(f"{path} is not a GANSpace PCA dict with 'comp', 'mean', 'std' tensors")
        comp = obj["comp"].double().numpy()
        std = obj["std"].double().numpy() if isinstance(obj.get("std"), torch.Tensor) else np.ones(len(comp))
    comp = comp.reshape(comp.shape[0], -1)
    std = std.reshape(-1)
    if std.shape[0] != comp.shape[0]:
        raise CheckpointError(f"{path}: {comp.shape[0]} components but {std.shape[0]} stdevs")
    return comp, std


def from_ganspace(
    path: str | os.PathLike,
    edits: Mapping[str, tuple[int, tuple[int, int] | None]] | None = None,
    *,
    num_components: int = 10,
    strength_range: tuple[float, float] = (-3.0, 3.0),
) -> DirectionSet:
    """GANSpace principal components as a DirectionSet.

    edits: {name: (component index, (layer start, layer stop) or None)}, e.g. GANSpace's named FFHQ
        edits such as {'wrinkles': (20, (6, 8))}. None: the first `num_components` components over
        all layers, named 'pc0', 'pc1', ...
    Each Direction's scale is the component's ``lat_stdev``, so strengths are in stdevs as in GANSpace.
    """
    where = _existing_file(path, "GANSpace")
    comp, std = _ganspace_arrays(where)
    if edits is None:
        edits = {f"pc{i}": (i, None) for i in range(min(num_components, comp.shape[0]))}
    out = []
    for name, (idx, layers) in edits.items():
        if not 0 <= int(idx) < comp.shape[0]:
            raise CheckpointError(f"{where} has {comp.shape[0]} components; {name!r} asks for component {idx}")
        s = float(std[int(idx)])
        out.append(
            Direction(
                name=name,
                vector=comp[int(idx)],
                layers=None if layers is None else tuple(layers),
                scale=s if s > 0 else 1.0,
                strength_range=strength_range,
                description=f"GANSpace component {int(idx)}",
                source=f"ganspace:{Path(where).name}#{int(idx)}",
            )
        )
    return DirectionSet(out, meta={"source": f"ganspace:{Path(where).name}"})


def read_direction_file(path: str | os.PathLike, name: str | None = None) -> DirectionSet:
    """Any supported direction file as a DirectionSet, its format judged by content (and suffix).

    - a faceapp direction set (its folder, or its directions.json / directions.safetensors): names its own;
    - ``.npy``: an InterFaceGAN boundary, named from the file name ('stylegan2_ffhq_age_w_boundary.npy' -> 'age');
    - ``.npz``: GANSpace components, named 'pc0' ... 'pc9' (use `from_ganspace` to name and layer them);
    - ``.pt`` holding a tensor: an e4e direction, named by the file's stem ('age.pt' -> 'age');
      holding a dict with 'comp': e4e's GANSpace PCA ('pc0' ...). Read with weights_only: a file that
      asks for Python objects raises UnsafeCheckpointError and nothing from it runs.

    name: the name of a single-direction file's direction (default: from its file name).
    """
    import torch

    where = os.fspath(path)
    p = Path(where)
    if p.is_dir() or p.name in ("directions.json", "directions.safetensors"):
        ds = DirectionSet.load(p)
        if name is not None:
            raise CheckpointError(f"{where} is a direction set that names its own directions; drop {name}=")
        return ds
    if not p.is_file():
        raise CheckpointError(f"direction file not found: {where}")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        if name is not None:
            raise CheckpointError(f"{where} holds GANSpace components (named pc0, pc1, ...); drop {name}=")
        return from_ganspace(p)
    if suffix == ".npy":
        return DirectionSet([from_interfacegan_npy(p, name)], meta={"source": f"interfacegan:{p.name}"})
    if suffix in (".pt", ".pth"):
        obj = load_pt_safely(p)
        if isinstance(obj, torch.Tensor):
            return DirectionSet([from_e4e_pt(p, name)], meta={"source": f"e4e:{p.name}"})
        if isinstance(obj, Mapping) and "comp" in obj:
            if name is not None:
                raise CheckpointError(f"{where} holds GANSpace components (named pc0, pc1, ...); drop {name}=")
            return from_ganspace(p)
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, neither an e4e direction tensor nor a "
                              "GANSpace PCA dict")
    raise CheckpointError(
        f"{where}: unknown direction file type {suffix or '(no suffix)'!r}; expected an InterFaceGAN .npy, an e4e "
        ".pt, a GANSpace .npz or a faceapp direction set folder"
    )


def _raw(direction: Direction) -> np.ndarray:
    v = direction.vector.astype(np.float32) * np.float32(direction.scale)
    return v.reshape(1, -1) if v.ndim == 1 else v


def to_interfacegan_npy(direction: Direction, path: str | os.PathLike) -> None:
    """Write `direction` as an InterFaceGAN-style .npy [1, w_dim] (vector * scale; W+ ones as [num_ws, w_dim])."""
    np.save(os.fspath(path), _raw(direction), allow_pickle=False)


def to_e4e_pt(direction: Direction, path: str | os.PathLike) -> None:
    """Write `direction` as an e4e-style .pt tensor [1, w_dim] (vector * scale)."""
    import torch

    torch.save(torch.from_numpy(_raw(direction)), os.fspath(path))
