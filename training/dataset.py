"""Reading a training archive: a zip (or folder) of PNGs plus ``dataset.json``.

The layout is the one NVIDIA's ``dataset_tool.py`` writes, so archives made for
stylegan2-ada-pytorch work here and the other way round::

    archive.zip
      dataset.json            {"labels": [["00000/img00000000.png", 3], ...] | null,
                               "attributes": [["00000/img00000000.png", {"age": 23, ...}], ...]}
      00000/img00000000.png
      ...

``labels`` (optional) are the conditioning labels G and D see: an int is a class
index (one-hot encoded here), a list is a float vector. ``attributes`` is our
addition: whatever the source said about each image (UTKFace's age, gender, race),
kept for learning edit directions later; training does not use it.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from faceapp.errors import FaceAppError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class DatasetError(FaceAppError):
    """A training archive is missing, empty or inconsistent."""


class ImageArchive(torch.utils.data.Dataset):
    """Square RGB images from a zip or a folder, as uint8 tensors [C, H, W], with labels.

    Args:
        path:        a .zip archive or a directory.
        resolution:  expected image size; ``None`` takes it from the first image.
                     Every image must be square and this size.
        use_labels:  return the labels from dataset.json (zeros of width 0 if False).
        xflip:       double the dataset with horizontally mirrored copies.
        max_size:    use only the first ``max_size`` images (in sorted name order).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resolution: int | None = None,
        use_labels: bool = False,
        xflip: bool = False,
        max_size: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"dataset {self.path} does not exist; make one with training/prepare_dataset.py")
        self._zip: zipfile.ZipFile | None = None  # opened lazily, once per worker process
        self._zip_pid = os.getpid()
        if self.path.is_dir():
            names = [
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            ]
        elif zipfile.is_zipfile(self.path):
            names = self._open_zip().namelist()
        else:
            raise DatasetError(f"{self.path} is neither a folder nor a zip archive")
        self.names = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        if max_size is not None:
            self.names = self.names[:max_size]
        if not self.names:
            raise DatasetError(f"no images in {self.path}")

        meta = self._read_json("dataset.json") or {}
        self.attributes: dict[str, dict] = dict(meta.get("attributes") or [])
        self.label_dim = 0
        self._labels = np.zeros((len(self.names), 0), dtype=np.float32)
        if use_labels:
            raw = meta.get("labels")
            if not raw:
                raise DatasetError(f"{self.path} has no labels in dataset.json; train without --cond")
            by_name = dict(raw)
            missing = [n for n in self.names if n not in by_name]
            if missing:
                raise DatasetError(f"{len(missing)} images in {self.path} have no label, e.g. {missing[0]}")
            values = [by_name[n] for n in self.names]
            if all(isinstance(v, int) for v in values):
                onehot = np.zeros((len(values), max(values) + 1), dtype=np.float32)
                onehot[np.arange(len(values)), values] = 1
                self._labels = onehot
            else:
                self._labels = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
            self.label_dim = self._labels.shape[1]

        first = self._load_uint8(0)
        self.num_channels = first.shape[0]
        self.resolution = first.shape[1] if resolution is None else resolution
        if first.shape[1] != first.shape[2] or first.shape[1] != self.resolution:
            raise DatasetError(
                f"{self.path}: images must be square and {self.resolution}px; "
                f"{self.names[0]} is {first.shape[2]}x{first.shape[1]}"
            )
        self.xflip = xflip

    # -- file access ---------------------------------------------------------------------
    def _open_zip(self) -> zipfile.ZipFile:
        # One handle per process: forked DataLoader workers must not share the parent's file offset.
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def _read_bytes(self, name: str) -> bytes:
        if self.path.is_dir():
            return (self.path / name).read_bytes()
        return self._open_zip().read(name)

    def _read_json(self, name: str) -> dict | None:
        try:
            return json.loads(self._read_bytes(name))
        except (KeyError, FileNotFoundError):
            return None

    def __getstate__(self) -> dict:
        # A ZipFile handle cannot cross into DataLoader worker processes; each reopens it.
        return {**self.__dict__, "_zip": None}

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _load_uint8(self, raw_idx: int) -> np.ndarray:
        with PIL.Image.open(io.BytesIO(self._read_bytes(self.names[raw_idx]))) as img:
            arr = np.asarray(img.convert("RGB"))  # [H, W, 3]
        return arr.transpose(2, 0, 1)  # [3, H, W]

    # -- Dataset protocol ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names) * (2 if self.xflip else 1)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (image uint8 [C, H, W], label float32 [label_dim])."""
        raw_idx = idx % len(self.names)
        img = self._load_uint8(raw_idx)
        if idx >= len(self.names):  # the mirrored half
            img = img[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(self._labels[raw_idx])

    def get_label(self, idx: int) -> torch.Tensor:
        """Label float32 [label_dim] of item ``idx`` without decoding the image."""
        return torch.from_numpy(self._labels[idx % len(self.names)])

    def ages(self) -> np.ndarray:
        """float64 [len(self)]: each item's age from dataset.json's attributes (NaN where it has none)."""
        raw = np.array([float(self.attributes.get(n, {}).get("age", np.nan)) for n in self.names])
        return np.tile(raw, 2) if self.xflip else raw


AGE_BINS = (0, 3, 10, 20, 30, 40, 50, 60, 70)  # lower edges: babies, children, teens, then decades, 70+


def age_balance_weights(ages: np.ndarray, alpha: float, bins=AGE_BINS) -> np.ndarray:
    """Sampling weights float64 [N] (mean 1) that draw age bin b in proportion to count_b ** (1 - alpha).

    alpha 0 keeps the data's own mix, 1 draws every bin equally; items without an age (NaN) get weight 1
    before normalising, so they keep their share. Raises DatasetError when no item has an age.
    """
    ages = np.asarray(ages, dtype=np.float64)
    known = np.isfinite(ages)
    if not known.any():
        raise DatasetError("no image has an age in dataset.json; prepare the archive from UTKFace names "
                           "(prepare_dataset.py keeps them) or train without --balance-age")
    which = np.digitize(ages[known], bins) - 1  # bin index of each known age
    counts = np.bincount(which, minlength=len(bins)).astype(np.float64)
    w = np.ones_like(ages)
    w[known] = counts[which] ** -alpha
    w[known] *= known.sum() / w[known].sum()  # known items keep their total share
    return w / w.mean()


def write_synthetic_archive(path: str | os.PathLike, num_images: int = 64, resolution: int = 16, seed: int = 0,
                            labels: bool = False) -> Path:
    """Write a tiny archive of coloured blobs on a dark background (for tests and smoke runs).

    Every image is a soft disc of a warm colour at a random place and size on a dark
    blue background, so the data has a clear mean colour and structure a GAN can
    learn in a few steps. With ``labels``, the class (0/1) says whether the disc is in
    the left or right half.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) + 0.5
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label_list = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(num_images):
            cx, cy = rng.uniform(0.25, 0.75, size=2) * resolution
            radius = rng.uniform(0.15, 0.3) * resolution
            colour = np.array([rng.uniform(0.7, 1.0), rng.uniform(0.3, 0.6), rng.uniform(0.0, 0.2)])
            background = np.array([0.05, 0.05, 0.25])
            mask = 1 / (1 + np.exp((np.hypot(xx - cx, yy - cy) - radius) * 2))  # [H, W] soft disc
            img = background + mask[..., None] * (colour - background)  # [H, W, 3]
            buf = io.BytesIO()
            PIL.Image.fromarray((img * 255).round().astype(np.uint8)).save(buf, format="PNG")
            name = f"{i // 1000:05d}/img{i:08d}.png"
            zf.writestr(name, buf.getvalue())
            label_list.append([name, int(cx >= resolution / 2)])
        meta = {"labels": label_list if labels else None}
        zf.writestr("dataset.json", json.dumps(meta))
    return path
