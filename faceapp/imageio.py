"""Loading user photos: any common format to an RGB PIL image, or a clear ImageError.

`load_image` accepts a path, raw bytes, a binary file object, a PIL image or a
uint8 numpy array. It applies the EXIF orientation (phone pictures), takes the
first frame of animations, flattens transparency onto white, scales 16-bit and
float images down to 8 bits, converts CMYK (through its ICC profile when there
is one) and refuses images that are too large *before* decoding them, so a
decompression bomb costs nothing.

`to_uint8` / `from_uint8`: the one conversion between a network's images (float [N,3,H,W] in [-1, 1]) and
8-bit pixels (uint8 [N,H,W,3], what PIL and the photo side use).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from faceapp.errors import ImageError

if TYPE_CHECKING:
    import torch

#: Default pixel limit: a 48 MP phone photo passes, a 40000x30000 bomb does not.
DEFAULT_MAX_PIXELS = 50_000_000
#: Smallest side that can hold a detectable face.
DEFAULT_MIN_SIDE = 16

ImageSource = str | os.PathLike | bytes | bytearray | BinaryIO | Image.Image | np.ndarray

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "ImageSource",
    "atomic_path",
    "from_uint8",
    "image_name",
    "load_image",
    "to_uint8",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path beside `path` (same folder, same suffix) to write to;
    when the block ends without an error it is renamed onto `path`, otherwise removed.

    A reader (or a killed run) never sees half a file. The folder is created when missing. faceapp's one way
    to write a file (images, checkpoints, bundles, direction sets, options).

        with atomic_path("out/result.png") as tmp:
            image.save(tmp)

    The block may make a folder at `tmp` instead (a whole bundle): it then replaces the folder at `path`, which
    is removed just before the rename (never half a new folder; for that instant, no folder).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():  # os.replace cannot replace a folder that has files
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def image_name(image: Image.Image, default: str = "the image") -> str:
    """The name `load_image` recorded for `image` (its file name), for error messages."""
    return str(image.info.get("faceapp_name") or default)


def _name_of(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    name = getattr(source, "name", None)  # open file objects
    if isinstance(name, str):
        return Path(name).name
    if isinstance(source, Image.Image):
        return image_name(source, Path(source.filename).name if getattr(source, "filename", "") else "the image")
    return "the uploaded image"


def _check_size(size: tuple[int, int], name: str, max_pixels: int | None, min_side: int) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{name} is {w}x{h} ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:g} MP. "
            "Resize the photo and try again."
        )
    if min(w, h) < min_side:
        raise ImageError(
            f"{name} is {w}x{h} pixels, too small to hold a face; use a photo at least "
            f"{min_side}x{min_side} pixels."
        )


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's own convert clips these at 255; scale to the full range instead.
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            hi = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
        elif mode == "I" and a.max(initial=0) <= 255:
            hi = 255.0
        else:
            hi = 65535.0
        a = np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "CMYK":
        icc = im.info.get("icc_profile")
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            except (ImageCms.PyCMSError, OSError):
                pass  # a broken profile: fall back to the plain conversion below
        return im.convert("RGB")
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        # Flatten onto white: transparent areas of a portrait are usually background.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def _from_array(a: np.ndarray, name: str) -> Image.Image:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name} has array shape {a.shape}; expected HxW, HxWx3 or HxWx4")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        elif a.dtype == np.uint16:
            a = (a >> 8).astype(np.uint8)
        else:
            raise ImageError(f"{name} has dtype {a.dtype}; expected uint8, uint16 or float in [0, 1]")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    return Image.fromarray(np.ascontiguousarray(a[..., 0] if mode == "L" else a), mode)


_pil_guard_lock = threading.Lock()


def _open_unguarded(fp) -> Image.Image:
    """Image.open without PIL's own bomb check, so ours (just after) can report WxH.

    Opening reads only the header; PIL's global limit is lifted for that moment only.
    """
    with _pil_guard_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(fp)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    name: str | None = None,
) -> Image.Image:
    """Load a photo as an upright 8-bit RGB PIL image.

    Args:
        source: a path, encoded bytes, a binary file object, a PIL image or a numpy
            array (HxW or HxWxC; uint8, uint16 or float in [0, 1]).
        max_pixels: refuse images with more pixels than this, checked from the header
            before any decoding (None: no limit of ours; PIL's own bomb guard still applies).
        min_side: refuse images whose shorter side is below this.
        name: the name to use in error messages (default: the file name).

    Returns:
        An RGB image with EXIF orientation applied; ``info["faceapp_name"]`` holds the
        name used in error messages downstream ("no face found in photo.jpg").

    Raises:
        ImageError: missing file, not an image, truncated or corrupt data, too large or
            too small.
    """
    name = name or _name_of(source)
    if isinstance(source, np.ndarray):
        im = _from_array(source, name)
        _check_size(im.size, name, max_pixels, min_side)
        im = im.convert("RGB")
        im.info["faceapp_name"] = name
        return im

    if isinstance(source, Image.Image):
        im = source
    else:
        if isinstance(source, (bytes, bytearray)):
            fp: object = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise ImageError(f"{name}: no such file ({path})")
            fp = path
        else:
            fp = source
        try:
            im = _open_unguarded(fp) if max_pixels is not None else Image.open(fp)
        except UnidentifiedImageError:
            raise ImageError(
                f"{name} is not an image file we can read (expected JPEG, PNG, WebP, BMP, TIFF or GIF)"
            ) from None
        except Image.DecompressionBombError as e:
            raise ImageError(f"{name} is too large to open safely: {e}") from None
        except OSError as e:
            raise ImageError(f"{name} cannot be opened: {e}") from None

    _check_size(im.size, name, max_pixels, min_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated GIF / WebP / multi-page TIFF: the first frame
            im.load()
            # EXIF orientation: phones store pixels sideways and a tag saying how to turn them.
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e)
        if "truncated" in msg or "broken data stream" in msg or "premature end" in msg.lower():
            raise ImageError(f"{name} is truncated or corrupt ({msg}); upload the complete file") from None
        raise ImageError(f"{name} could not be decoded ({msg})") from None
    if im is source:
        im = im.copy()  # never hand back (or later annotate) the caller's own object
    im.info["faceapp_name"] = name
    return im


def _channels_last(ndim: int) -> tuple[int, ...]:
    """permute() order [..., C, H, W] -> [..., H, W, C]."""
    return (*range(ndim - 3), ndim - 2, ndim - 1, ndim - 3)


def _channels_first(ndim: int) -> tuple[int, ...]:
    """permute() order [..., H, W, C] -> [..., C, H, W]."""
    return (*range(ndim - 3), ndim - 1, ndim - 3, ndim - 2)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (a generator's output) [N, 3, H, W] (or one, [3, H, W]) -> uint8 [N, H, W, 3] ([H, W, 3]).

    Clamped to [-1, 1], mapped by (x + 1) * 127.5 in the tensor's own dtype and rounded to the nearest integer
    (halves to even, torch.round); brought to the CPU. The array is a view in the tensor's memory order.
    """
    import torch

    x = ((img.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(*_channels_last(x.ndim)).cpu().numpy()


def from_uint8(pixels, device=None) -> torch.Tensor:
    """uint8 pixels [N, H, W, 3] (or one image, [H, W, 3]: an array or a PIL image) -> float32 [N, 3, H, W]
    ([3, H, W]) in [-1, 1]: x / 127.5 - 1, computed on `device` (default: the CPU)."""
    import torch

    a = np.asarray(pixels)
    if not a.flags.writeable:  # PIL's arrays are read-only; torch.from_numpy wants writeable memory
        a = a.copy()
    x = torch.from_numpy(a)
    return x.permute(*_channels_first(x.ndim)).to(device, torch.float32) / 127.5 - 1
