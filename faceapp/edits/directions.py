"""Edit directions in W / W+ and named sets of them, stored as safetensors + JSON.

A `Direction` is a unit vector in W ([w_dim]) or a per-layer direction in W+ ([num_ws, w_dim],
unit Frobenius norm), plus what an app needs to put it on a slider:

- `scale`: W units per unit of strength. A strength of 1 moves a code by one standard deviation
  of the training latents' projections on the direction (`scale = std(w . n)`), so sliders at
  +-3 feel alike across directions. Imported directions whose latents are unknown keep scale 1
  (raw W units, the convention of InterFaceGAN and e4e) until `DirectionSet.calibrated(ws)`
  measures it.
- `layers`: (start, stop) of the W+ layers the edit touches (None: all of them).
- `strength_range`: what the UI slider offers (default -3..+3).
- `calibration`: optional, the strength in real units (years for age), fitted on held-out photos
  (faceapp.edits.calibration; `years_to_strength`).

On disk a set is a folder (the bundle's ``directions/``) holding

    directions.safetensors   one float32 tensor per direction, named by the direction
    directions.json          {"format": "faceapp.directions", "format_version": 1,
                              "w_dim": ..., "meta": {...},
                              "directions": {name: {"layers", "strength_range", "scale",
                                                    "description", "source", "metrics",
                                                    "calibration" (only when there is one)}}}

Sets written before calibrations existed load unchanged, and a set with a calibration loads in
a faceapp that does not know the key (it is ignored there), so the format version stays 1.

The JSON is meant to be read and tuned by hand (strength ranges, descriptions).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from faceapp.edits.calibration import YearsCalibration
from faceapp.errors import CheckpointError, FaceAppError
from faceapp.imageio import atomic_path

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Direction",
    "DirectionSet",
    "direction_scale",
    "normalized",
    "with_calibration",
]

FORMAT_NAME = "faceapp.directions"
FORMAT_VERSION = 1
TENSORS_FILE = "directions.safetensors"
JSON_FILE = "directions.json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_UNIT_TOL = 1e-3  # a stored vector further than this from unit norm is not one we wrote


def normalized(vector) -> np.ndarray:
    """float64 copy of `vector` ([w_dim] or [num_ws, w_dim]) scaled to unit (Frobenius) norm."""
    v = np.asarray(vector, dtype=np.float64)
    if v.ndim not in (1, 2) or v.size == 0:
        raise FaceAppError(f"a direction must be [w_dim] or [num_ws, w_dim], got shape {tuple(v.shape)}")
    if not np.all(np.isfinite(v)):
        raise FaceAppError("a direction contains NaN or infinite values")
    norm = float(np.linalg.norm(v))
    if norm < 1e-12:
        raise FaceAppError("a direction of zero length has no direction")
    return v / norm


def direction_scale(vector, ws) -> float:
    """Standard deviation of the projections of latents `ws` on the unit `vector`.

    ws: [N, w_dim] codes in W, or [N, num_ws, w_dim] in W+ (for a [w_dim] vector every layer
    is projected and the layers' projections pooled; for a [num_ws, w_dim] vector the projection
    is the Frobenius inner product). N >= 2.
    """
    v = normalized(vector)
    w = np.asarray(ws.detach().cpu() if hasattr(ws, "detach") else ws, dtype=np.float64)
    if v.ndim == 1:
        if w.shape[-1] != v.shape[0]:
            raise FaceAppError(f"latents of width {w.shape[-1]} do not match a direction of width {v.shape[0]}")
        p = w.reshape(-1, v.shape[0]) @ v
    else:
        if w.ndim == 2:  # W codes: the same w in every layer
            w = np.repeat(w[:, None, :], v.shape[0], axis=1)
        if w.shape[1:] != v.shape:
            raise FaceAppError(f"latents {tuple(w.shape)} do not match a direction of shape {tuple(v.shape)}")
        p = np.einsum("nlc,lc->n", w, v)
    if p.shape[0] < 2:
        raise FaceAppError("need at least 2 latents to measure a direction's scale")
    return float(p.std())


@dataclass(frozen=True, eq=False)
class Direction:
    """One named edit direction (see the module doc for the units).

    name:           slider name, e.g. 'age' (letters, digits, '_', '.', '+', '-').
    vector:         float32 [w_dim] unit vector in W, or [num_ws, w_dim] W+ direction of unit
                    Frobenius norm; stored normalised whatever is passed in.
    layers:         (start, stop) W+ layers the edit applies to, None = all.
    strength_range: the slider's (min, max) in strength units.
    scale:          W units per strength unit (std of the training latents' projections).
    description:    what positive strengths do, e.g. 'older (+) / younger (-)'.
    source:         provenance, e.g. 'interfacegan:stylegan_ffhq_age_w_boundary.npy'.
    metrics:        JSON-able facts from learning it (held-out accuracy, sample counts, ...).
    calibration:    None, or a years calibration as a JSON object (`YearsCalibration.to_dict()`):
                    how many years older a strength reads (see faceapp.edits.calibration).
    """

    name: str
    vector: np.ndarray = field(repr=False)
    layers: tuple[int, int] | None = None
    strength_range: tuple[float, float] = (-3.0, 3.0)
    scale: float = 1.0
    description: str = ""
    source: str = ""
    metrics: dict = field(default_factory=dict, repr=False)
    calibration: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise FaceAppError(f"direction name {self.name!r} must be 1-64 letters, digits, '_', '.', '+' or '-'")
        v = self.vector
        if hasattr(v, "detach"):  # torch tensor
            v = v.detach().cpu().double().numpy()
        object.__setattr__(self, "vector", normalized(v).astype(np.float32))
        if self.layers is not None:
            start, stop = (int(x) for x in self.layers)
            if not 0 <= start < stop:
                raise FaceAppError(
                    f"direction {self.name!r}: layers {self.layers} must be (start, stop), 0 <= start < stop"
                )
            if self.vector.ndim == 2 and stop > self.vector.shape[0]:
                raise FaceAppError(
                    f"direction {self.name!r}: layers {self.layers} exceed its {self.vector.shape[0]} rows"
                )
            object.__setattr__(self, "layers", (start, stop))
        lo, hi = (float(x) for x in self.strength_range)
        if not lo < hi:
            raise FaceAppError(f"direction {self.name!r}: strength_range {self.strength_range} must be (min, max)")
        object.__setattr__(self, "strength_range", (lo, hi))
        if not (math.isfinite(float(self.scale)) and float(self.scale) > 0):
            raise FaceAppError(f"direction {self.name!r}: scale must be a positive number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "metrics", dict(self.metrics))
        if self.calibration is not None:
            cal = self.calibration
            try:
                cal = (cal if isinstance(cal, YearsCalibration) else YearsCalibration.from_dict(cal)).to_dict()
            except (FaceAppError, TypeError) as e:
                raise FaceAppError(f"direction {self.name!r}: {e}") from e
            object.__setattr__(self, "calibration", cal)

    @property
    def years(self) -> YearsCalibration | None:
        """The years calibration (faceapp.edits.calibration), or None."""
        return None if self.calibration is None else YearsCalibration.from_dict(self.calibration)

    @property
    def w_dim(self) -> int:
        return int(self.vector.shape[-1])

    @property
    def per_layer(self) -> bool:
        """True for a W+ direction [num_ws, w_dim]."""
        return self.vector.ndim == 2

    def replace(self, **changes) -> Direction:
        """A copy with some fields changed (the vector is normalised again)."""
        return replace(self, **changes)

    def layer_mask(self, num_ws: int) -> np.ndarray:
        """bool [num_ws]: the W+ layers this direction moves."""
        if self.per_layer and self.vector.shape[0] != num_ws:
            raise FaceAppError(
                f"direction {self.name!r} has {self.vector.shape[0]} layers but the latents have {num_ws}; "
                "it was made for another generator"
            )
        mask = np.ones(num_ws, dtype=bool)
        if self.layers is not None:
            start, stop = self.layers
            if start >= num_ws:
                raise FaceAppError(f"direction {self.name!r}: layers {self.layers} are outside the {num_ws} ws")
            mask[:] = False
            mask[start : min(stop, num_ws)] = True
        if self.per_layer:
            mask &= np.linalg.norm(self.vector, axis=1) > 0
        return mask

    def expanded(self, num_ws: int) -> np.ndarray:
        """float64 [num_ws, w_dim]: the vector per W+ layer, zero outside `layers` (not renormalised)."""
        mask = self.layer_mask(num_ws)
        v = self.vector.astype(np.float64)
        full = np.array(v, copy=True) if self.per_layer else np.repeat(v[None, :], num_ws, axis=0)
        full[~mask] = 0.0
        return full

    def to_json(self) -> dict:
        out = {
            "shape": list(self.vector.shape),
            "layers": None if self.layers is None else list(self.layers),
            "strength_range": list(self.strength_range),
            "scale": self.scale,
            "description": self.description,
            "source": self.source,
            "metrics": self.metrics,
        }
        if self.calibration is not None:  # absent otherwise: files without one stay as before
            out["calibration"] = self.calibration
        return out


class DirectionSet(Mapping):
    """An ordered, read-only mapping name -> Direction, all of one w_dim, with `meta` (provenance).

    >>> ds = DirectionSet([Direction("age", v_age, scale=4.1), Direction("smile", v_smile)])
    >>> ds.save("bundle/directions"); ds = DirectionSet.load("bundle/directions")
    """

    def __init__(self, directions: Iterable[Direction] = (), meta: dict | None = None):
        self._d: dict[str, Direction] = {}
        for d in directions:
            if not isinstance(d, Direction):
                raise TypeError(f"DirectionSet holds Direction objects, not {type(d).__name__}")
            if d.name in self._d:
                raise FaceAppError(f"two directions are called {d.name!r}")
            self._d[d.name] = d
        widths = {d.w_dim for d in self._d.values()}
        if len(widths) > 1:
            raise FaceAppError(f"directions of different widths {sorted(widths)} cannot share a set")
        self.meta = dict(meta or {})

    def __getitem__(self, name: str) -> Direction:
        try:
            return self._d[name]
        except KeyError:
            raise KeyError(f"no direction {name!r}; this set has: {', '.join(self._d) or 'none'}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"DirectionSet({', '.join(self._d) or 'empty'}, w_dim={self.w_dim})"

    @property
    def w_dim(self) -> int | None:
        return next(iter(self._d.values())).w_dim if self._d else None

    def with_direction(self, direction: Direction) -> DirectionSet:
        """A new set with `direction` added (or replacing the one of the same name)."""
        items = {**self._d, direction.name: direction}
        return DirectionSet(items.values(), self.meta)

    def calibrated(self, ws, names: Iterable[str] | None = None) -> DirectionSet:
        """A new set whose directions' `scale` is measured on latents `ws` ([N, w_dim] or [N, num_ws, w_dim]),
        e.g. G.mapping(z) for a few thousand z: after it, strength 1 = one std of the projections."""
        names = set(self._d if names is None else names)
        return DirectionSet(
            [d.replace(scale=direction_scale(d.vector, ws)) if d.name in names else d for d in self._d.values()],
            self.meta,
        )

    # ------------------------------------------------------------------ storage

    def save(self, folder: str | os.PathLike) -> Path:
        """Write directions.safetensors + directions.json into `folder` (created); returns the folder."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        if folder.suffix in (".json", ".safetensors"):
            raise FaceAppError(f"{folder}: DirectionSet.save takes a folder (it writes {TENSORS_FILE} and {JSON_FILE})")
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "w_dim": self.w_dim,
            "meta": self.meta,
            "directions": {name: d.to_json() for name, d in self._d.items()},
        }
        try:
            text = json.dumps(doc, indent=2)
        except TypeError as e:
            raise FaceAppError(f"cannot save directions: meta or metrics are not JSON-serialisable ({e})") from e
        tensors = {name: np.ascontiguousarray(d.vector, dtype=np.float32) for name, d in self._d.items()}
        # each file atomically: an interrupted save never leaves half a set behind
        with atomic_path(folder / TENSORS_FILE) as tmp:
            save_file(tensors, os.fspath(tmp), metadata={"format": FORMAT_NAME})
        with atomic_path(folder / JSON_FILE) as tmp:
            tmp.write_text(text + "\n")
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> DirectionSet:
        """Read a set saved by `save`: `path` is its folder, or its directions.json / .safetensors."""
        from safetensors import safe_open

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        jpath, tpath = folder / JSON_FILE, folder / TENSORS_FILE
        for p in (jpath, tpath):
            if not p.is_file():
                raise CheckpointError(
                    f"{p} is missing; a direction set is a folder with {JSON_FILE} and {TENSORS_FILE}"
                )
        try:
            doc = json.loads(jpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{jpath} is not valid JSON ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"{jpath} is not a faceapp direction set (format {doc.get('format')!r})"
                if isinstance(doc, dict)
                else f"{jpath} is not a faceapp direction set"
            )
        if not isinstance(doc.get("format_version"), int) or doc["format_version"] > FORMAT_VERSION:
            raise CheckpointError(
                f"{jpath}: format version {doc.get('format_version')!r} is newer than this "
                f"faceapp reads ({FORMAT_VERSION}); upgrade faceapp"
            )
        entries = doc.get("directions")
        if not isinstance(entries, dict):
            raise CheckpointError(f"{jpath}: 'directions' must be an object")
        try:
            with safe_open(str(tpath), framework="numpy") as f:
                stored = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors has its own error types for damaged files
            raise CheckpointError(f"{tpath} is a damaged safetensors file: {e}") from e
        if set(stored) != set(entries):
            raise CheckpointError(
                f"{folder}: {JSON_FILE} lists {sorted(entries)} but {TENSORS_FILE} holds {sorted(stored)}"
            )
        out = []
        for name, e in entries.items():
            v = stored[name]
            if not isinstance(e, dict) or list(v.shape) != list(e.get("shape", v.shape)):
                raise CheckpointError(
                    f"{folder}: direction {name!r} has shape {list(v.shape)}, JSON says {e.get('shape')}"
                )
            n = float(np.linalg.norm(v.astype(np.float64)))
            if not abs(n - 1.0) < _UNIT_TOL:
                raise CheckpointError(f"{folder}: direction {name!r} has norm {n:.4g}, not 1; the file is damaged")
            try:
                out.append(
                    Direction(
                        name=name,
                        vector=v,
                        layers=None if e.get("layers") is None else tuple(e["layers"]),
                        strength_range=tuple(e.get("strength_range", (-3.0, 3.0))),
                        scale=e.get("scale", 1.0),
                        description=str(e.get("description", "")),
                        source=str(e.get("source", "")),
                        metrics=e.get("metrics") or {},
                        calibration=e.get("calibration"),
                    )
                )
            except (FaceAppError, TypeError, ValueError) as err:
                raise CheckpointError(f"{folder}: direction {name!r}: {err}") from err
        return cls(out, meta=doc.get("meta") or {})


def with_calibration(directions: DirectionSet, name: str, calibration: YearsCalibration | Mapping | None):
    """A copy of the DirectionSet `directions` whose `name` direction carries `calibration` (None: removed).

    Here rather than in faceapp.edits.calibration, which this module imports: that one stays a leaf.
    """
    if name not in directions:
        raise FaceAppError(f"no {name!r} direction to calibrate; this set has: {', '.join(directions) or 'none'}")
    if isinstance(calibration, YearsCalibration):
        calibration = calibration.to_dict()
    return DirectionSet(
        [d.replace(calibration=calibration) if d.name == name else d for d in directions.values()],
        directions.meta,
    )
