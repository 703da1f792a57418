"""Output files of an edit: the latent code (.npz), the aging timeline as GIF and MP4.

Each is written atomically through `faceapp.imageio.atomic_path` (a temporary file beside the target, renamed
onto it), so a killed run never leaves half a file behind. `load_latent` reads a latent file back (no pickles).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceapp.errors import FaceAppError
from faceapp.imageio import atomic_path

__all__ = ["LATENT_FORMAT", "load_latent", "mp4_available", "save_gif", "save_latent", "save_mp4"]

#: The `format` field of a latent-code .npz file (`save_latent`).
LATENT_FORMAT = "faceapp.latent"


# ---------------------------------------------------------------------- latent-code files


def save_latent(path: str | os.PathLike, ws: torch.Tensor, *, model_id: str = "", **meta) -> Path:
    """Write a latent code as .npz (written atomically): `ws` float32 [1, num_ws, w_dim] and `meta`, a JSON
    string ({'format': LATENT_FORMAT, 'version': 1, 'model_id': ..., **meta}). No pickles: `load_latent`
    reads it with numpy's allow_pickle=False."""
    arr = ws.detach().to("cpu", torch.float32).numpy()
    if arr.ndim != 3 or arr.shape[0] != 1:
        raise ValueError(f"save_latent takes one code [1, num_ws, w_dim], got {tuple(arr.shape)}")
    info = json.dumps({"format": LATENT_FORMAT, "version": 1, "model_id": model_id, **meta})
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ws=arr, meta=np.array(info))
    return path


def load_latent(source) -> tuple[torch.Tensor, dict]:
    """(ws [1, num_ws, w_dim] float32, meta dict) from a `save_latent` file: a path, bytes or a file object.

    Raises FaceAppError when it is not such a file (any other .npz, a pickle, a truncated file).
    """
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "the file"
    try:
        data = source if not isinstance(source, (bytes, bytearray)) else io.BytesIO(source)
        with np.load(data, allow_pickle=False) as z:
            if "ws" not in z or "meta" not in z:
                raise ValueError("no ws/meta arrays")
            ws = np.asarray(z["ws"], dtype=np.float32)
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # JSONDecodeError is a ValueError
        raise FaceAppError(f"{name} is not a faceapp latent-code file (.npz from 'Download latent'): {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != LATENT_FORMAT:
        raise FaceAppError(f"{name} is an .npz, but not a faceapp latent-code file")
    if ws.ndim != 3 or ws.shape[0] != 1 or not np.isfinite(ws).all():
        raise FaceAppError(f"{name} holds a latent code of shape {ws.shape}; expected [1, num_ws, w_dim] finite")
    return torch.from_numpy(ws.copy()), meta


# ---------------------------------------------------------------------- animation files


def _bounced(frames: Sequence[Image.Image], bounce: bool) -> list[Image.Image]:
    """The frames, then (when `bounce`) back again without repeating either end: a seamless loop."""
    return list(frames) + (list(frames[-2:0:-1]) if bounce else [])


def save_gif(frames: Sequence[Image.Image], path: str | os.PathLike, *, duration_ms: int = 150,
             bounce: bool = True) -> Path:
    """Write frames as a looping GIF (forth and back when `bounce`); written atomically."""
    if not frames:
        raise ValueError("no frames to save")
    # PIL's default quantiser takes seconds per large frame; fast octree is ~50x quicker and looks the same here.
    seq = [im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
           for im in _bounced(frames, bounce)]
    path = Path(path)
    with atomic_path(path) as tmp:
        seq[0].save(tmp, format="GIF", save_all=True, append_images=seq[1:], duration=duration_ms, loop=0,
                    optimize=False)
    return path


def mp4_available() -> bool:
    """True when imageio with its ffmpeg plugin (imageio-ffmpeg) is installed."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def save_mp4(frames: Sequence[Image.Image], path: str | os.PathLike, *, fps: int = 8, bounce: bool = True) -> Path:
    """Write frames as an H.264 MP4 (needs imageio-ffmpeg; see `mp4_available`); written atomically."""
    if not mp4_available():
        raise FaceAppError("MP4 output needs the imageio-ffmpeg package; GIF works without it")
    import imageio.v2 as iio  # optional: imported only when an MP4 is written

    seq = _bounced(frames, bounce)
    path = Path(path)
    with atomic_path(path) as tmp:
        # Even sides for yuv420p; macro_block_size=1 stops imageio resizing them itself.
        w, h = (s - s % 2 for s in seq[0].size)
        with iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=7,
                            macro_block_size=1) as writer:
            for im in seq:
                writer.append_data(np.asarray(im.convert("RGB").crop((0, 0, w, h))))
    return path
