"""Model bundles: everything one model needs to edit faces, in one folder.

A bundle folder holds ``bundle.json`` and the files it names::

    bundle.json            {"format": "faceapp.bundle", "version": 1, "name": ...,
                            "generator": "generator.safetensors",
                            "encoder": "encoder.safetensors" | null,
                            "detail": "detail.safetensors" (optional),
                            "age_prototypes": "age_prototypes.safetensors" (optional),
                            "age_prototypes_options": {"t_per_strength": .., "gan_share": ..,
                                                       "t_per_strength_younger": .. (optional),
                                                       "hair_grey": 0..1 (optional),
                                                       "wrinkles": 0..5 (optional: drawn fine lines),
                                                       "by_age": {"ages": [..], "shape": [..], "light": [..],
                                                                  "gain": [..], "wrinkles": [..]} (optional:
                                                                  the face's age profile, needs age_estimator)},
                            "age_estimator": "age_estimator.safetensors" (optional: how old each face looks,
                                             faceapp.stylegan.age_estimator),
                            "age_prototypes_late": "age_prototypes_late.safetensors" (optional: a second,
                                             late-life change, used as by_age's 'late' part says),
                            "age_prototypes_growth": "age_prototypes_growth.safetensors" (optional: children's
                                             growth, used as by_age's 'growth' part says),
                            "glasses_overlay": {"gan_share": 0..1} (optional: the glasses edit draws
                                               frames on the photo, faceapp.align.glasses),
                            "smile_prototypes": "smile_prototypes.safetensors" (optional),
                            "smile_prototypes_options": {"t_per_strength": .., "gan_share": ..},
                            "directions": "directions/" | null,
                            "align": AlignSpec.to_dict(),
                            "card": "MODEL_CARD.md",
                            "untrained": false}
    generator.safetensors  our checkpoint format (G_ema, or G)
    encoder.safetensors    an Encoder4Editing, when the model has one
    detail.safetensors     an optional detail stage (faceapp.stylegan.detail.DetailNet): G's render ->
                           a sharper, larger face; bundles without one (official FFHQ) render as G does
    age_prototypes.safetensors  optional age prototypes (faceapp.align.prototype.AgePrototypes): the age
                           edit's wrinkles, folds, sagging and greying at the photo's own resolution
    age_prototypes_late.safetensors  optional late-life prototypes (the same format: e.g. faces aged 55-65 against
                           80+), applied after the age prototypes by t x the face's by_age 'late' multiple
    age_prototypes_growth.safetensors  optional growth prototypes (the same format: children against young
                           adults): a child grows up rather than wrinkles, by t x the face's by_age 'growth' multiple
    age_estimator.safetensors  optional age estimator (MobileNetV2, training/age_estimator.py): with
                           age_prototypes_options' by_age, older faces get more of the aging change and
                           younger ones less, so "+N years" reads about N years on any face
    smile_prototypes.safetensors  optional smile prototypes (the same format, training/smile_prototypes.py):
                           the smile moves the photo's own mouth and cheeks (no second mouth pasted over it)
    directions/            a DirectionSet (safetensors + JSON)
    MODEL_CARD.md          what the model is, what it was trained on, its terms

`load_bundle` reads such a folder, a single generator checkpoint (ours, or an official
NVIDIA .pkl / rosinality .pt read by the safe importer; FFHQ crop, no encoder, no
directions), the name of a bundle in faceapp's cache (`ffhq`, written by
`python -m faceapp fetch ffhq` into `cache_dir()/models/ffhq/`), or a Hugging Face Hub repo id
laid out like a folder. Only the hub path downloads, and it says so; offline it fails with a
message saying what to do.

`build_bundle` (the CLI's `python -m faceapp bundle`) makes a bundle from files in any
supported format: a generator (NVIDIA .pkl, rosinality .pt, ours), an encoder (e4e's
`e4e_ffhq_encode.pt` or ours) and direction files (e4e .pt, InterFaceGAN .npy, GANSpace, ours).
The direction set records the generator it belongs to (faceapp.edits.provenance) and both
`build_bundle` and `load_bundle` refuse directions made for another generator unless forced.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from faceapp.align import FFHQ_SPEC, AlignSpec, utkface_spec
from faceapp.errors import CheckpointError, ModelUnavailableError
from faceapp.imageio import atomic_path

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "DEFAULT_DIRECTIONS",
    "ModelBundle",
    "build_bundle",
    "cache_dir",
    "is_repo_id",
    "load_bundle",
    "make_random_bundle",
    "named_model_dir",
    "save_bundle",
]

BUNDLE_FORMAT = "faceapp.bundle"
BUNDLE_VERSION = 1
#: The edits the app shows sliders for, in this order.
DEFAULT_DIRECTIONS = ("age", "smile", "glasses", "gender")
# "user/repo" (hub ids allow letters, digits, '-', '_', '.'); a path that exists always wins.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# A bundle in faceapp's cache is named like 'ffhq' (no slash, no path).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")
#: Set to 1 to load bundles whose directions were made for another generator (as force_directions=True).
FORCE_DIRECTIONS_ENV = "FACEAPP_FORCE_DIRECTIONS"


def cache_dir() -> Path:
    """faceapp's cache folder: $FACEAPP_CACHE, else $XDG_CACHE_HOME/faceapp, else ~/.cache/faceapp.

    It holds `downloads/` (files fetched by `python -m faceapp fetch`) and `models/<name>/` (bundles
    that `load_bundle(name)` finds by name).
    """
    env = os.environ.get("FACEAPP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "faceapp"


def named_model_dir(name: str) -> Path:
    """Where the bundle called `name` lives in the cache (`cache_dir()/models/<name>`); it may not exist."""
    if not _MODEL_NAME.fullmatch(name):
        raise ModelUnavailableError(f"{name!r} is not a model name (letters, digits, '_', '.', '-')")
    return cache_dir() / "models" / name


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A loaded model: generator, optional encoder, edit directions, the crop it expects.

    G: the generator (eval mode). encoder: an Encoder4Editing or None (then the fast
    inversion mode falls back to optimisation). directions: a DirectionSet (may be
    empty). align_spec: how the model's training faces were cropped. card: the model
    card's text. root: the folder it came from (None if built in memory). meta: the
    rest of bundle.json. model_id: a short content hash (cache keys, logs).
    """

    G: torch.nn.Module
    encoder: torch.nn.Module | None
    directions: object  # faceapp.edits.DirectionSet
    align_spec: AlignSpec
    card: str = ""
    root: Path | None = None
    name: str = "model"
    meta: dict = field(default_factory=dict)
    model_id: str = ""
    detail: torch.nn.Module | None = None  # the optional detail stage (faceapp.stylegan.detail.DetailNet)
    age_prototypes: object = None  # optional faceapp.align.prototype.AgePrototypes
    smile_prototypes: object = None  # optional, the same class: neutral -> smiling
    age_estimator: torch.nn.Module | None = None  # optional faceapp.stylegan.age_estimator.AgeEstimator
    age_prototypes_late: object = None  # optional AgePrototypes: a second, late-life change (by_age's 'late')
    age_prototypes_growth: object = None  # optional AgePrototypes: children -> young adults (by_age's 'growth')

    def age_split(self, strength: float) -> tuple[float, float]:
        """An age strength as (the generator's share of it, the prototypes' t): with age prototypes the photo
        is aged by both, as bundle.json's age_prototypes_options say (t_per_strength_younger, when given, for
        negative strengths); without, (strength, 0)."""
        if self.age_prototypes is None or not strength:
            return float(strength), 0.0
        opts = self.meta.get("age_prototypes_options") or {}
        per = opts.get("t_per_strength", 0.0)
        if strength < 0:
            per = opts.get("t_per_strength_younger", per)
        return float(strength) * float(opts.get("gan_share", 1.0)), float(strength) * float(per)

    def smile_split(self, strength: float) -> tuple[float, float]:
        """A smile strength as (the generator's share of it, the smile prototypes' t): with smile prototypes the
        photo's own mouth moves by t = strength x smile_prototypes_options' t_per_strength (t < 0: a smile fades)
        and the generator gets its gan_share (default 0); without them the strength is the generator's alone."""
        if self.smile_prototypes is None or not strength:
            return float(strength), 0.0
        opts = self.meta.get("smile_prototypes_options") or {}
        return (float(strength) * float(opts.get("gan_share", 0.0)),
                float(strength) * float(opts.get("t_per_strength", 0.0)))

    def glasses_split(self, strength: float) -> tuple[float, float]:
        """A glasses strength as (the generator's share of it, the drawn frames' weight in [0, 1]): with bundle.json's
        glasses_overlay a positive strength draws frames (faceapp.align.glasses), their weight growing to 1 at the
        slider's end, and the generator gets glasses_overlay's gan_share of it (default 0); a negative strength (and
        any strength without the overlay) goes to the generator alone."""
        opts = self.meta.get("glasses_overlay")
        if not opts or strength <= 0 or self.directions is None or "glasses" not in self.directions:
            return float(strength), 0.0
        hi = float(self.directions["glasses"].strength_range[1])
        weight = min(float(strength) / hi, 1.0) if hi > 0 else 1.0
        return float(strength) * float(opts.get("gan_share", 0.0)), weight

    @property
    def hair_grey(self) -> float:
        """How grey the age prototypes turn the hair at full strength (bundle.json's age_prototypes_options
        'hair_grey'; default faceapp.align.prototype.HAIR_GREY)."""
        from faceapp.align.prototype import HAIR_GREY

        return float((self.meta.get("age_prototypes_options") or {}).get("hair_grey", HAIR_GREY))

    @property
    def uses_face_age(self) -> bool:
        """True when the age edit depends on how old each face looks (an age estimator and a by_age profile)."""
        opts = self.meta.get("age_prototypes_options") or {}
        return self.age_prototypes is not None and self.age_estimator is not None and bool(opts.get("by_age"))

    @property
    def years_by_age(self) -> bool:
        """True when the age direction's years calibration converts by how old each face looks (`by_age` curves)
        and the bundle has the age estimator that reads it."""
        d = self.directions["age"] if "age" in self.directions else None
        cal = getattr(d, "years", None)
        return self.age_estimator is not None and cal is not None and cal.by_age is not None

    @property
    def years_directions(self):
        """The directions years are converted with: `directions`, less the age calibration's curves by age when
        the bundle has no estimator to read a face's age (then every face, and every label, uses the pooled
        line)."""
        d = self.directions["age"] if "age" in self.directions else None
        cal = getattr(d, "years", None)
        if cal is None or cal.by_age is None or self.years_by_age:
            return self.directions
        from faceapp.edits import with_calibration

        pooled = cal.to_dict()
        pooled.pop("by_age", None)
        return with_calibration(self.directions, "age", pooled)

    def face_age(self, photo, face) -> float | None:
        """How old `face` (a faceapp.align.Face of `photo`) looks to the bundle's age estimator, read on its
        UTKFace-style crop, in years; None when neither the age edit nor the years calibration uses it."""
        if not (self.uses_face_age or self.years_by_age):
            return None
        from faceapp.align import align_face, utkface_spec
        from faceapp.stylegan.age_estimator import estimate_ages

        # the same 200 px UTKFace-style crop the estimator was trained on and the project's measures read
        crop = align_face(photo, face, utkface_spec(200)).image
        return float(estimate_ages(self.age_estimator, [crop])[0])

    def age_scales(self, age: float | None) -> dict[str, float] | None:
        """The aging change's parts ({'shape', 'light', 'gain', 'wrinkles', 'hair'}, multiples of the prototypes' t
        (hair: of the greying), 'cap': of the band gains' cap (`faceapp.align.prototype.GAIN_CAP`), 'late' and
        'growth': the late-life and growth prototypes' t as multiples of it, 'late_shape': of the late-life
        prototypes' own shape change) for a
        face that looks `age` years old: the by_age profile read linearly between its ages (held at its ends); None
        without a profile or an age."""
        profile = (self.meta.get("age_prototypes_options") or {}).get("by_age")
        if age is None or not np.isfinite(age) or not profile or not self.uses_face_age:
            return None
        return {k: float(np.interp(float(age), profile["ages"], profile[k])) for k in AGE_PARTS if k in profile}

    def age_photo(self, photo, landmarks68, t: float, scales: dict | None = None):
        """`photo` (PIL) with the face at `landmarks68` ([68, 2] photo px) aged by the age prototypes' t, with the
        bundle's grey hair and drawn lines and the parts' multiples `scales` (`age_scales`; 'hair' scales the
        greying); first, where scales give a 'growth' part, grown up by the growth prototypes at t x that part;
        last, where they give a 'late' part, by the late-life prototypes at t x that part (their shape change x the
        'late_shape' part, default 1). What the editor and the profile fit use."""
        sc = scales or {}
        growth = float(sc.get("growth", 0.0)) * t
        if growth > 0 and self.age_prototypes_growth is not None:  # a child grows up: no greying, no drawn lines
            photo = self.age_prototypes_growth.apply(photo, landmarks68, growth, hair=0.0, wrinkles=0.0)
        hair = min(self.hair_grey * float(sc.get("hair", 1.0)), 1.0) if t > 0 else self.hair_grey  # 1: silver
        parts = {k: v for k, v in sc.items() if k not in ("late", "growth")} if scales is not None else None
        photo = self.age_prototypes.apply(photo, landmarks68, t, hair=hair, wrinkles=self.wrinkles, scales=parts)
        late = float(sc.get("late", 0.0)) * t
        if late > 0 and self.age_prototypes_late is not None:  # older faces: the late-life change too
            # 'late_shape': the share of the late-life shape change (its sunken cheeks cost identity before years)
            late_sc = {"shape": float(sc["late_shape"])} if "late_shape" in sc else None
            photo = self.age_prototypes_late.apply(photo, landmarks68, late, hair=0.0, wrinkles=0.0, scales=late_sc)
        return photo

    @property
    def wrinkles(self) -> float:
        """How much of the missing fine-line energy the age prototypes draw at full strength (bundle.json's
        age_prototypes_options 'wrinkles'; default faceapp.align.prototype.WRINKLES; 0: none drawn)."""
        from faceapp.align.prototype import WRINKLES

        return float((self.meta.get("age_prototypes_options") or {}).get("wrinkles", WRINKLES))

    @property
    def untrained(self) -> bool:
        """True for a random stand-in (see `make_random_bundle`): its results are noise, not faces."""
        return bool(self.meta.get("untrained", False))

    @property
    def resolution(self) -> int:
        return int(self.G.img_resolution)

    @property
    def direction_names(self) -> list[str]:
        """Directions in display order: DEFAULT_DIRECTIONS first, then any others."""
        names = list(self.directions.keys()) if self.directions is not None else []
        return [n for n in DEFAULT_DIRECTIONS if n in names] + [n for n in names if n not in DEFAULT_DIRECTIONS]


def is_repo_id(source: str | os.PathLike) -> bool:
    """Whether `source` reads as a Hugging Face Hub repo id ('user/repo') and is not a local path."""
    s = os.fspath(source)
    return bool(_REPO_ID.fullmatch(s)) and not Path(s).exists()


def _empty_directions():
    from faceapp.edits.directions import DirectionSet

    return DirectionSet(())


def _hash_files(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        if p.is_file():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def load_bundle(
    source: str | os.PathLike,
    device: torch.device | str = "cpu",
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_directions: bool | None = None,
) -> ModelBundle:
    """Load a model bundle from a folder, a generator checkpoint, a cached bundle's name, or a hub repo id.

    Args:
        source: a bundle folder (with bundle.json), the bundle.json itself, a generator
            checkpoint file (faceapp .safetensors, NVIDIA .pkl, rosinality .pt), the name of a
            bundle in faceapp's cache such as 'ffhq' (see `cache_dir`; `python -m faceapp fetch
            ffhq` writes it), or a hub repo id such as 'user/faceapp-ffhq' whose files are laid
            out like a folder. A path that exists always wins.
        device: where the networks go.
        revision, cache_dir: for hub repo ids (see huggingface_hub.snapshot_download).
        force_directions: load directions made for another generator anyway (None: the
            FACEAPP_FORCE_DIRECTIONS environment variable, off unless '1').

    Raises:
        ModelUnavailableError: nothing at `source`, or a hub repo that cannot be fetched
            (offline, unknown repo) and is not in the local hub cache.
        DirectionMismatchError: the bundle's directions were made for another generator.
        CheckpointError: a bundle or checkpoint that is malformed.
    """
    if force_directions is None:
        force_directions = os.environ.get(FORCE_DIRECTIONS_ENV, "") == "1"
    path = Path(source)
    if path.is_dir():
        return _load_folder(path, device, force_directions)
    if path.is_file():
        if path.name == "bundle.json":
            return _load_folder(path.parent, device, force_directions)
        return _load_checkpoint(path, device)
    name = os.fspath(source)
    if _MODEL_NAME.fullmatch(name):
        named = named_model_dir(name)
        if (named / "bundle.json").is_file():
            return _load_folder(named, device, force_directions)
        hint = " (python -m faceapp fetch ffhq makes it)" if name == "ffhq" else ""
        raise ModelUnavailableError(
            f"no model at {name}: not a file or folder here, and no bundle named {name!r} in {named.parent}{hint}; "
            "give a bundle folder, a generator checkpoint (.safetensors, .pkl, .pt) or a hub repo id like 'user/repo'"
        )
    if is_repo_id(source):
        return _load_folder(_hub_snapshot(name, revision, cache_dir), device, force_directions)
    raise ModelUnavailableError(
        f"no model at {name}: give a bundle folder (with bundle.json), a generator checkpoint "
        "(.safetensors, .pkl, .pt), a cached bundle's name (e.g. ffhq), or a Hugging Face Hub repo id like 'user/repo'"
    )


def _hub_snapshot(repo_id: str, revision: str | None, cache_dir) -> Path:
    """Fetch (or find in the local hub cache) the snapshot of `repo_id`; the one place that downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise ModelUnavailableError(
            f"model {repo_id!r} is not in the local Hugging Face cache and cannot be downloaded now "
            f"({type(e).__name__}). Connect to the internet (and unset HF_HUB_OFFLINE), or download the "
            "bundle elsewhere and pass its folder with --model PATH"
        ) from None
    except HfHubHTTPError as e:
        raise ModelUnavailableError(
            f"could not fetch model {repo_id!r} from the Hugging Face Hub: {e}. Check the repo id "
            "(and a token for private repos), or pass a local bundle folder with --model PATH"
        ) from None
    except OSError as e:  # DNS failures, refused connections, read-only cache
        raise ModelUnavailableError(
            f"could not fetch model {repo_id!r} from the Hugging Face Hub ({e}); pass a local bundle folder instead"
        ) from None
    folder = Path(folder)
    if not (folder / "bundle.json").is_file():
        raise CheckpointError(f"hub repo {repo_id!r} has no bundle.json at its top; it is not a faceapp model bundle")
    return folder


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelUnavailableError(f"{path.parent} is not a model bundle: it has no bundle.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def _member(root: Path, rel: str | None, what: str) -> Path | None:
    if rel is None:
        return None
    if not isinstance(rel, str):
        raise CheckpointError(f"{root / 'bundle.json'}: {what} must be a path string, not {rel!r}")
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()):  # bundle.json must not point outside its folder
        raise CheckpointError(f"{root / 'bundle.json'}: {what} path {rel!r} leaves the bundle folder")
    if not p.exists():
        raise CheckpointError(f"{root / 'bundle.json'} names {what} {rel!r}, but {p} is missing")
    return p


def _load_folder(root: Path, device, force_directions: bool = False) -> ModelBundle:
    from faceapp.stylegan.checkpoint import load_generator

    meta = _read_json(root / "bundle.json")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{root / 'bundle.json'} must hold a JSON object, not {type(meta).__name__}")
    if not isinstance(meta.get("version", 0), int):
        raise CheckpointError(f"{root / 'bundle.json'}: version must be an integer, not {meta['version']!r}")
    if meta.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{root / 'bundle.json'} is not a faceapp bundle (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > BUNDLE_VERSION:
        raise CheckpointError(
            f"{root / 'bundle.json'} is bundle version {meta['version']}; this faceapp reads up to "
            f"{BUNDLE_VERSION}. Update faceapp."
        )
    gen_path = _member(root, meta.get("generator"), "generator")
    if gen_path is None:
        raise CheckpointError(f"{root / 'bundle.json'} names no generator")
    G = load_generator(gen_path, device=device)
    encoder = None
    enc_path = _member(root, meta.get("encoder"), "encoder")
    if enc_path is not None:
        from faceapp.inversion.encoder import load_encoder

        encoder = load_encoder(enc_path, device=device)
        if (encoder.num_ws, encoder.w_dim) != (G.num_ws, G.w_dim):
            raise CheckpointError(
                f"{root}: the encoder makes {encoder.num_ws} codes of {encoder.w_dim}, but the generator takes "
                f"{G.num_ws} of {G.w_dim}; they do not belong together"
            )
    detail = None
    det_path = _member(root, meta.get("detail"), "detail")
    if det_path is not None:
        detail = _load_detail(det_path, G, device)
    protos = None
    proto_path = _member(root, meta.get("age_prototypes"), "age_prototypes")
    if proto_path is not None:
        from faceapp.align.prototype import AgePrototypes

        protos = AgePrototypes.load(proto_path)
        _check_prototype_options(meta.get("age_prototypes_options"), root)
    age_net = None
    age_path = _member(root, meta.get("age_estimator"), "age_estimator")
    if age_path is not None:
        from faceapp.stylegan.age_estimator import AgeEstimator
        from faceapp.stylegan.checkpoint import load_networks

        net = load_networks(age_path, device=device).get("age")
        if not isinstance(net, AgeEstimator):
            raise CheckpointError(f"{age_path} holds no age estimator")
        age_net = net.float().eval().requires_grad_(False)
    late_protos = None
    late_path = _member(root, meta.get("age_prototypes_late"), "age_prototypes_late")
    if late_path is not None:
        from faceapp.align.prototype import AgePrototypes

        late_protos = AgePrototypes.load(late_path)
    growth_protos = None
    growth_path = _member(root, meta.get("age_prototypes_growth"), "age_prototypes_growth")
    if growth_path is not None:
        from faceapp.align.prototype import AgePrototypes

        growth_protos = AgePrototypes.load(growth_path)
    smile_protos = None
    smile_path = _member(root, meta.get("smile_prototypes"), "smile_prototypes")
    if smile_path is not None:
        from faceapp.align.prototype import AgePrototypes

        smile_protos = AgePrototypes.load(smile_path)
        _check_prototype_options(meta.get("smile_prototypes_options"), root, key="smile_prototypes_options")
    _check_glasses_overlay(meta.get("glasses_overlay"), root)
    dir_path = _member(root, meta.get("directions"), "directions")
    if dir_path is not None:
        from faceapp.edits.directions import DirectionSet
        from faceapp.edits.provenance import check_directions

        directions = DirectionSet.load(dir_path)
        check_directions(directions, G, force=force_directions, where=str(dir_path))
    else:
        directions = _empty_directions()
    try:
        align = AlignSpec.from_dict(meta["align"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{root / 'bundle.json'}: bad or missing 'align' spec ({e})") from None
    card_path = _member(root, meta.get("card"), "card")
    card = card_path.read_text(encoding="utf-8") if card_path is not None else ""
    files = [root / "bundle.json", gen_path] + [p for p in (enc_path, det_path, proto_path, smile_path, age_path,
                                                            late_path, growth_path) if p]
    return ModelBundle(
        G=G,
        encoder=encoder,
        detail=detail,
        age_prototypes=protos,
        smile_prototypes=smile_protos,
        age_estimator=age_net,
        age_prototypes_late=late_protos,
        age_prototypes_growth=growth_protos,
        directions=directions,
        align_spec=align,
        card=card,
        root=root,
        name=str(meta.get("name") or root.name),
        meta=meta,
        model_id=_hash_files(files),
    )


AGE_PARTS = ("shape", "light", "gain", "wrinkles", "late", "growth", "hair", "cap", "late_shape")


def _check_age_profile(profile, root) -> None:
    """age_prototypes_options' by_age: {'ages': increasing years in [0, 120], and for some of AGE_PARTS a list as
    long of multiples in [0, 4]}."""
    import math

    try:
        ages = [float(a) for a in profile["ages"]]
        ok = (isinstance(profile, dict) and set(profile) <= {"ages", *AGE_PARTS} and len(profile) > 1
              and 1 <= len(ages) <= 32 and all(0 <= a <= 120 for a in ages)
              and all(b > a for a, b in zip(ages, ages[1:])))
        for k in AGE_PARTS:
            if k in profile:
                vals = [float(v) for v in profile[k]]
                ok = ok and len(vals) == len(ages) and all(math.isfinite(v) and 0.0 <= v <= 4.0 for v in vals)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"{root / 'bundle.json'}: age_prototypes_options' by_age must be {{'ages': [increasing "
                              f"years], 'shape'/'light'/'gain'/'wrinkles'/'late'/'growth'/'hair'/'cap'/'late_shape': "
                              f"[as many multiples in 0..4]}}, got {profile!r}")


def _check_prototype_options(opts, root, key: str = "age_prototypes_options") -> None:
    """bundle.json's age_prototypes_options: {'t_per_strength': finite, 'gan_share': in [0, 1],
    't_per_strength_younger': finite (optional), 'hair_grey': in [0, 1] (optional), 'wrinkles': in [0, 5] (optional),
    'by_age': an age profile (optional, `_check_age_profile`)}."""
    import math

    ok = isinstance(opts, dict) and set(opts) <= {"t_per_strength", "gan_share", "t_per_strength_younger", "hair_grey",
                                                  "wrinkles", "by_age"}
    if ok and "by_age" in opts:
        _check_age_profile(opts["by_age"], root)
    try:
        ok = ok and all(math.isfinite(float(v)) for k, v in opts.items() if k != "by_age")
        ok = ok and 0.0 <= float(opts.get("gan_share", 1.0)) <= 1.0
        ok = ok and 0.0 <= float(opts.get("hair_grey", 0.0)) <= 1.0
        ok = ok and 0.0 <= float(opts.get("wrinkles", 0.0)) <= 5.0
        ok = ok and all(abs(float(opts.get(k, 0))) < 10 for k in ("t_per_strength", "t_per_strength_younger"))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"{root / 'bundle.json'}: {key} must be {{'t_per_strength': number, "
                              f"'gan_share': 0..1}}, got {opts!r}")


def _check_glasses_overlay(opts, root) -> None:
    """bundle.json's glasses_overlay: absent, null, or {'gan_share': in [0, 1] (optional)}."""
    if opts is None:
        return
    ok = isinstance(opts, dict) and set(opts) <= {"gan_share"}
    try:
        ok = ok and 0.0 <= float(opts.get("gan_share", 0.0)) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"{root / 'bundle.json'}: glasses_overlay must be {{'gan_share': 0..1}} or absent, "
                              f"got {opts!r}")


def _load_detail(path: Path, G, device) -> torch.nn.Module:
    """The bundle's detail stage; it must take G's renders."""
    from faceapp.stylegan.checkpoint import load_networks
    from faceapp.stylegan.detail import DetailNet

    nets = load_networks(path, device=device)
    net = nets.get("detail")
    if not isinstance(net, DetailNet):
        raise CheckpointError(f"{path} holds no detail network (it has: {', '.join(nets) or 'nothing'})")
    if net.in_resolution != int(G.img_resolution):
        raise CheckpointError(f"{path}: the detail stage takes {net.in_resolution} px renders, but the generator "
                              f"renders {G.img_resolution} px; they do not belong together")
    return net.float().eval().requires_grad_(False)


def _load_checkpoint(path: Path, device) -> ModelBundle:
    """A bare generator checkpoint (e.g. converted FFHQ weights): FFHQ crop, no encoder, no directions."""
    from faceapp.stylegan.legacy import import_checkpoint

    imported = import_checkpoint(path, device=device)
    G = imported.nets.get("G_ema") or imported.nets.get("G")
    if G is None:
        raise CheckpointError(f"{path} holds no generator (it has: {', '.join(imported.nets) or 'nothing'})")
    G = G.to(device).eval()
    card = (
        f"Generator from `{path.name}` ({imported.source_format}), {G.img_resolution}x{G.img_resolution}. "
        "No encoder and no edit directions come with a bare checkpoint: wrap it in a bundle with directions "
        "to get the sliders (python -m faceapp bundle --generator FILE --directions age.pt ... --out DIR)."
    )
    return ModelBundle(
        G=G,
        encoder=None,
        directions=_empty_directions(),
        align_spec=FFHQ_SPEC(int(G.img_resolution)),
        card=card,
        root=path.parent,
        name=path.stem,
        meta={"source_format": imported.source_format},
        model_id=_hash_files([path]),
    )


def _rounded(net: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A float32 copy of ``net`` whose float tensors went through ``dtype`` (what loading a stored copy gives).

    Rebuilt from its init_kwargs and state dict, as loading does (no inference caches carried over)."""
    state = {k: (v.to(dtype).float() if v.dtype == torch.float32 else v) for k, v in net.state_dict().items()}
    out = type(net)(**net.init_kwargs)
    out.load_state_dict(state)
    return out.to(next(net.parameters()).device).eval()


def save_bundle(
    path: str | os.PathLike,
    *,
    G: torch.nn.Module,
    align_spec: AlignSpec,
    encoder: torch.nn.Module | None = None,
    directions=None,
    name: str = "model",
    card: str = "",
    meta: dict | None = None,
    force_directions: bool = False,
    dtype: torch.dtype | None = None,
    detail: torch.nn.Module | None = None,
    age_prototypes=None,
    age_prototypes_options: dict | None = None,
    smile_prototypes=None,
    smile_prototypes_options: dict | None = None,
    age_estimator: torch.nn.Module | None = None,
    age_prototypes_late=None,
    age_prototypes_growth=None,
) -> Path:
    """Write a bundle folder (see the module doc); returns its path. bundle.json is written last.

    ``detail``: an optional detail stage (`DetailNet` taking G's renders), stored as detail.safetensors.
    ``age_prototypes``: optional `AgePrototypes`, stored as age_prototypes.safetensors, used as
    ``age_prototypes_options`` say ({'t_per_strength', 'gan_share'}, see `ModelBundle.age_split`);
    ``smile_prototypes`` likewise (smile_prototypes.safetensors, `ModelBundle.smile_split`).
    ``age_estimator``: an optional `AgeEstimator`, stored as age_estimator.safetensors (float32): with a by_age
    profile in ``age_prototypes_options`` each face is aged by its own share (`ModelBundle.age_scales`);
    ``age_prototypes_late``: optional late-life `AgePrototypes` (age_prototypes_late.safetensors), the profile's 'late';
    ``age_prototypes_growth``: optional growth `AgePrototypes` (age_prototypes_growth.safetensors), its 'growth'.

    ``dtype=torch.float16`` stores the networks' float32 tensors in half precision (half the size;
    loading casts them back to float32), as the demo bundle does to keep every file under 10 MB.

    The directions are checked against G (faceapp.edits.provenance.check_directions: refused with
    DirectionMismatchError when made for another generator, unless force_directions) and saved
    with G's fingerprint in their meta, so that `load_bundle` can tell later.
    """
    from faceapp.stylegan.checkpoint import save_networks

    if dtype is not None:  # fingerprint the weights as they will load: rounded to the storage dtype
        G, encoder = (None if net is None else _rounded(net, dtype) for net in (G, encoder))
    if directions is not None and len(directions):
        from faceapp.edits.provenance import check_directions, generator_fingerprint, stamped

        fp = generator_fingerprint(G, source=(meta or {}).get("sources", {}).get("generator", {}).get("file"))
        forced = check_directions(directions, fp, force=force_directions)
        directions = stamped(directions, fp, forced)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    save_networks(root / "generator.safetensors", {"G_ema": G}, dtype=dtype)
    if encoder is not None:
        save_networks(root / "encoder.safetensors", {"encoder": encoder}, dtype=dtype)
    if detail is not None:
        save_networks(root / "detail.safetensors", {"detail": detail}, dtype=dtype)
    if age_prototypes is not None:
        _check_prototype_options(age_prototypes_options, root)
        with atomic_path(root / "age_prototypes.safetensors") as tmp:
            age_prototypes.save(tmp)
    if age_estimator is not None:
        save_networks(root / "age_estimator.safetensors", {"age": age_estimator})
    if age_prototypes_late is not None:
        with atomic_path(root / "age_prototypes_late.safetensors") as tmp:
            age_prototypes_late.save(tmp)
    if age_prototypes_growth is not None:
        with atomic_path(root / "age_prototypes_growth.safetensors") as tmp:
            age_prototypes_growth.save(tmp)
    if smile_prototypes is not None:
        _check_prototype_options(smile_prototypes_options, root, key="smile_prototypes_options")
        with atomic_path(root / "smile_prototypes.safetensors") as tmp:
            smile_prototypes.save(tmp)
    if directions is not None and len(directions):
        if (root / "directions").exists():
            shutil.rmtree(root / "directions")
        directions.save(root / "directions")
    with atomic_path(root / "MODEL_CARD.md") as tmp:
        tmp.write_text(card or f"# {name}\n", encoding="utf-8")
    doc = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "name": name,
        "generator": "generator.safetensors",
        "encoder": "encoder.safetensors" if encoder is not None else None,
        **({"detail": "detail.safetensors"} if detail is not None else {}),
        **({"age_prototypes": "age_prototypes.safetensors", "age_prototypes_options": dict(age_prototypes_options)}
           if age_prototypes is not None else {}),
        **({"age_estimator": "age_estimator.safetensors"} if age_estimator is not None else {}),
        **({"age_prototypes_late": "age_prototypes_late.safetensors"} if age_prototypes_late is not None else {}),
        **({"age_prototypes_growth": "age_prototypes_growth.safetensors"} if age_prototypes_growth is not None
           else {}),
        **({"smile_prototypes": "smile_prototypes.safetensors",
            "smile_prototypes_options": dict(smile_prototypes_options)} if smile_prototypes is not None else {}),
        "directions": "directions/" if directions is not None and len(directions) else None,
        "align": align_spec.to_dict(),
        "card": "MODEL_CARD.md",
        **(meta or {}),
    }
    with atomic_path(root / "bundle.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return root


def _read_generator(path: Path, device) -> tuple[torch.nn.Module, str]:
    """(G_ema or G, source format) from any supported generator checkpoint."""
    from faceapp.stylegan.legacy import import_checkpoint

    imported = import_checkpoint(path, device=device)
    G = imported.nets.get("G_ema") or imported.nets.get("G")
    if G is None:
        raise CheckpointError(f"{path} holds no generator (it has: {', '.join(imported.nets) or 'nothing'})")
    return G.eval(), imported.source_format


def _read_encoder(path: Path, G, device) -> tuple[torch.nn.Module, str, list[str]]:
    """(encoder, source format, notes) from e4e's .pt or a faceapp checkpoint; it must fit G."""
    from faceapp.stylegan.checkpoint import is_safetensors_file

    notes = []
    if is_safetensors_file(path):
        from faceapp.inversion.encoder import load_encoder

        E, fmt = load_encoder(path, device=device), "faceapp"
    else:
        from faceapp.edits.provenance import generator_fingerprint, same_mapping
        from faceapp.inversion.e4e_import import import_e4e_checkpoint

        E, G_e4e = import_e4e_checkpoint(path, device=device)
        fmt = "e4e-pt"
        if (G_e4e.num_ws, G_e4e.w_dim) == (G.num_ws, G.w_dim):
            if not same_mapping(generator_fingerprint(G_e4e), generator_fingerprint(G)):
                notes.append(
                    f"the encoder {path.name} was trained against another generator (its mapping network differs "
                    "from this one's): its codes are only a starting point; use --mode balanced or best"
                )
        del G_e4e
    if (E.num_ws, E.w_dim) != (G.num_ws, G.w_dim):
        raise CheckpointError(
            f"{path}: the encoder makes {E.num_ws} codes of {E.w_dim}, but the generator takes {G.num_ws} of "
            f"{G.w_dim}; use an encoder trained for this generator"
        )
    return E.eval(), fmt, notes


def _direction_arg(spec: str | os.PathLike) -> tuple[str | None, Path]:
    """'age.pt' -> (None, age.pt); 'older=age.pt' -> ('older', age.pt) (when no file is called 'older=age.pt')."""
    text = os.fspath(spec)
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name and os.sep not in name and not Path(text).exists():
        return name, Path(rest)
    return None, Path(text)


def build_bundle(
    out: str | os.PathLike,
    *,
    generator: str | os.PathLike,
    encoder: str | os.PathLike | None = None,
    directions: Iterable[str | os.PathLike] = (),
    align: str = "ffhq",
    name: str | None = None,
    card: str | None = None,
    force_directions: bool = False,
    calibrate: int = 0,
    device: torch.device | str = "cpu",
    extra_meta: dict | None = None,
    detail: str | os.PathLike | None = None,
    age_prototypes: str | os.PathLike | None = None,
    age_prototypes_end: float = 1.75,
    age_gan_share: float = 0.0,
    age_prototypes_younger_end: float | None = None,
    glasses_overlay: bool = False,
    smile_prototypes: str | os.PathLike | None = None,
    smile_prototypes_end: float = 1.0,
    age_estimator: str | os.PathLike | None = None,
    age_profile: str | os.PathLike | None = None,
    age_wrinkles: float | None = None,
    age_prototypes_late: str | os.PathLike | None = None,
    age_prototypes_growth: str | os.PathLike | None = None,
) -> Path:
    """Make a bundle folder at `out` from files in any supported format; returns `out`.

    Args:
        generator: NVIDIA stylegan2-ada-pytorch .pkl, rosinality .pt or a faceapp .safetensors
            (G_ema is taken when there is one), read by the importers that execute nothing.
        encoder: e4e's `e4e_ffhq_encode.pt` or a faceapp checkpoint holding an Encoder4Editing;
            it must make G's num_ws codes of G's w_dim.
        directions: files read by `faceapp.edits.read_direction_file` (e4e .pt, InterFaceGAN .npy,
            GANSpace .npz / e4e's ffhq_pca.pt, faceapp direction set folders); each single
            direction is named by its file ('age.pt' -> 'age'), or 'NAME=FILE' names it.
            Pickle payloads are refused (UnsafeCheckpointError) and never run.
        align: 'ffhq' (FFHQ's quad crop, as the official weights) or 'utkface' (the demo's template crop).
        force_directions: accept directions made for another generator (recorded in their meta).
        calibrate: when > 0, measure each direction's scale on that many G.mapping samples, so
            strength 1 = one std of the latents along it (default 0: the files' own units).
        detail: an optional detail stage (a faceapp checkpoint holding a `DetailNet` trained on G's renders,
            training/train_detail.py); it must take G's resolution.
        age_prototypes: optional age prototypes (faceapp.align.prototype.AgePrototypes, made by
            training/age_prototypes.py); they need an age direction. At the age slider's end the prototypes move the
            face by t = age_prototypes_end (at its younger end by age_prototypes_younger_end, default the same), and
            the generator gets age_gan_share of the slider's strength.
        age_estimator: an optional age estimator (faceapp checkpoint of an AgeEstimator, training/age_estimator.py),
            with age_profile: a JSON file holding a by_age profile (training/age_profile.py's output, or the profile
            alone), so each face gets the aging parts its estimated age calls for (`ModelBundle.age_scales`); its
            'younger_end', when there and age_prototypes_younger_end is not given, is the younger end's t.
        age_wrinkles: the age prototypes' drawn-line amount (default faceapp.align.prototype.WRINKLES).
        age_prototypes_late: optional late-life prototypes (training/age_prototypes.py with older groups), applied
            after the age prototypes as the profile's 'late' part says.
        age_prototypes_growth: optional growth prototypes (training/age_prototypes.py with children against young
            adults), applied before them as the profile's 'growth' part says.

    Raises:
        DirectionMismatchError: a direction file made for another generator (see faceapp.edits.provenance).
        CheckpointError / UnsafeCheckpointError: a file that cannot be read, or refuses to be.
    """
    from faceapp.edits.directions import DirectionSet
    from faceapp.edits.formats import read_direction_file
    from faceapp.edits.provenance import check_directions, generator_fingerprint, stamped

    if align not in ("ffhq", "utkface"):
        raise CheckpointError(f"align must be 'ffhq' or 'utkface', not {align!r}")
    directions = list(directions)
    gen_path = Path(generator)
    G, gen_fmt = _read_generator(gen_path, device)
    res = int(G.img_resolution)
    fp = generator_fingerprint(G, source=gen_path.name)
    notes: list[str] = []
    E = None
    sources: dict = {"generator": {"file": gen_path.name, "format": gen_fmt}}
    if encoder is not None:
        E, enc_fmt, enc_notes = _read_encoder(Path(encoder), G, device)
        notes += enc_notes
        sources["encoder"] = {"file": Path(encoder).name, "format": enc_fmt}
    merged: dict = {}
    forced: list[str] = []
    sources["directions"] = []
    for spec in directions:
        dname, dpath = _direction_arg(spec)
        ds = read_direction_file(dpath, dname)
        forced += check_directions(ds, fp, force=force_directions, where=str(dpath))
        for d in ds.values():
            if d.name in merged:
                raise CheckpointError(
                    f"two direction files give a direction called {d.name!r}; rename one with NAME=FILE"
                )
            merged[d.name] = d
        sources["directions"].append({"file": dpath.name, "names": list(ds)})
    direction_set = DirectionSet(merged.values()) if merged else None
    if direction_set is not None and calibrate > 0:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            z = torch.randn(int(calibrate), G.z_dim, device=device)
            c = torch.zeros(int(calibrate), G.c_dim, device=device) if G.c_dim else None
            direction_set = direction_set.calibrated(G.mapping(z, c)[:, 0])
    if direction_set is not None:
        direction_set = stamped(direction_set, fp, forced)
    if forced:
        notes.append("directions accepted with --force-directions: " + "; ".join(forced))
    name = name or gen_path.stem
    options = {
        "generator": os.fspath(generator), "encoder": None if encoder is None else os.fspath(encoder),
        "directions": [os.fspath(d) for d in directions], "align": align, "force_directions": bool(force_directions),
        "calibrate": int(calibrate),
    }
    meta = {"sources": sources, "build_options": options, "notes": notes, **(extra_meta or {})}
    if glasses_overlay:
        if direction_set is None or "glasses" not in direction_set:
            raise CheckpointError("drawn glasses go with a glasses direction (its slider): give one with --directions")
        meta["glasses_overlay"] = {"gan_share": 0.0}
        options["glasses_overlay"] = True
    spec = FFHQ_SPEC(res) if align == "ffhq" else utkface_spec(res)
    if card is None:
        card = _build_card(name, G, fp, sources, align, notes)
    det = None
    if detail is not None:
        det = _load_detail(Path(detail), G, device)
        sources["detail"] = {"file": Path(detail).name, "format": "faceapp"}
        options["detail"] = os.fspath(detail)
    protos, proto_opts = None, None
    if age_prototypes is not None:
        from faceapp.align.prototype import AgePrototypes

        if direction_set is None or "age" not in direction_set:
            raise CheckpointError("age prototypes go with an age direction: give one with --directions")
        protos = AgePrototypes.load(age_prototypes)
        end = max(abs(x) for x in direction_set["age"].strength_range)
        proto_opts = {"t_per_strength": round(float(age_prototypes_end) / end, 6), "gan_share": float(age_gan_share)}
        if age_prototypes_younger_end is not None:
            proto_opts["t_per_strength_younger"] = round(float(age_prototypes_younger_end) / end, 6)
        if age_wrinkles is not None:
            proto_opts["wrinkles"] = float(age_wrinkles)
        if age_profile is not None:
            try:
                doc = json.loads(Path(age_profile).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{age_profile}: not a readable age profile ({e})") from None
            proto_opts["by_age"] = doc.get("by_age", doc) if isinstance(doc, dict) else doc
            younger = doc.get("younger_end") if isinstance(doc, dict) else None
            if age_prototypes_younger_end is None and younger is not None:  # the profile fit chose the younger end
                if not isinstance(younger, (int, float)) or not 0 < float(younger) < 10:
                    raise CheckpointError(f"{age_profile}: younger_end must be a number in (0, 10), not {younger!r}")
                proto_opts["t_per_strength_younger"] = round(float(younger) / end, 6)
            if age_estimator is None:
                raise CheckpointError("an age profile goes with an age estimator (--age-estimator): it reads each "
                                      "face's age")
            options["age_profile"] = os.fspath(age_profile)
        _check_prototype_options(proto_opts, Path(out))
        sources["age_prototypes"] = {"file": Path(age_prototypes).name, "format": "faceapp"}
        options |= {"age_prototypes": os.fspath(age_prototypes), "age_prototypes_end": float(age_prototypes_end),
                    "age_gan_share": float(age_gan_share), "age_prototypes_younger_end": age_prototypes_younger_end}
    smile_protos, smile_opts = None, None
    if smile_prototypes is not None:
        from faceapp.align.prototype import AgePrototypes

        if direction_set is None or "smile" not in direction_set:
            raise CheckpointError("smile prototypes go with a smile direction (its slider): give one with --directions")
        smile_protos = AgePrototypes.load(smile_prototypes)
        hi = float(direction_set["smile"].strength_range[1])
        smile_opts = {"t_per_strength": round(float(smile_prototypes_end) / hi, 6), "gan_share": 0.0}
        _check_prototype_options(smile_opts, Path(out), key="smile_prototypes_options")
        sources["smile_prototypes"] = {"file": Path(smile_prototypes).name, "format": "faceapp"}
        options |= {"smile_prototypes": os.fspath(smile_prototypes),
                    "smile_prototypes_end": float(smile_prototypes_end)}
    stages = {}  # the age edit's optional stages, read like the age prototypes
    for key, path, what in (("age_prototypes_late", age_prototypes_late, "late-life prototypes go after"),
                            ("age_prototypes_growth", age_prototypes_growth, "growth prototypes go with")):
        if path is None:
            continue
        from faceapp.align.prototype import AgePrototypes

        if protos is None:
            raise CheckpointError(f"{what} age prototypes: give --age-prototypes too")
        stages[key] = AgePrototypes.load(path)
        sources[key] = {"file": Path(path).name, "format": "faceapp"}
        options[key] = os.fspath(path)
    age_net = None
    if age_estimator is not None:
        from faceapp.stylegan.age_estimator import AgeEstimator
        from faceapp.stylegan.checkpoint import load_networks

        age_net = load_networks(Path(age_estimator), device=device).get("age")
        if not isinstance(age_net, AgeEstimator):
            raise CheckpointError(f"{age_estimator} holds no age estimator")
        sources["age_estimator"] = {"file": Path(age_estimator).name, "format": "faceapp"}
        options["age_estimator"] = os.fspath(age_estimator)
    return save_bundle(out, G=G, align_spec=spec, encoder=E, directions=direction_set, name=name, card=card,
                       meta=meta, detail=det, age_prototypes=protos, age_prototypes_options=proto_opts,
                       smile_prototypes=smile_protos, smile_prototypes_options=smile_opts, age_estimator=age_net,
                       **stages)


def _build_card(name: str, G, fp: dict, sources: dict, align: str, notes: list[str]) -> str:
    lines = [
        f"# {name}",
        "",
        "Made by `python -m faceapp bundle` from files the user supplied; faceapp did not train it.",
        "",
        f"- generator: `{sources['generator']['file']}` ({sources['generator']['format']}), "
        f"{G.img_resolution}x{G.img_resolution}, w_dim {G.w_dim}, {G.num_ws} ws, model id {fp['mapping_id']}",
        f"- encoder: `{sources['encoder']['file']}` ({sources['encoder']['format']})" if "encoder" in sources
        else "- encoder: none (the fast inversion mode optimises instead)",
    ]
    for d in sources.get("directions", []):
        lines.append(f"- directions from `{d['file']}`: {', '.join(d['names'])}")
    lines.append(f"- crop: {align}")
    lines += ["", "The terms of the original files apply (see where they came from)."]
    lines += [f"\nNote: {n}" for n in notes]
    return "\n".join(lines) + "\n"


RANDOM_CARD = """# Untrained stand-in (random weights)

This bundle was made by `faceapp.bundle.make_random_bundle`: a tiny StyleGAN2 generator with
random weights and random unit directions named {names}. It exists so that the app, the CLI
and the tests run before a trained model is available. **Its output is not a face**: it shows
that the pipeline works (detect, align, invert, edit, render, paste back), nothing more.

For real results, get the official FFHQ weights, encoder and directions as one bundle
(`python -m faceapp fetch ffhq`, then `python app.py --model ffhq`), build one from files you have
(`python -m faceapp bundle --generator ffhq.pkl --encoder e4e_ffhq_encode.pt --directions age.pt ...`;
a bare generator converted with `python -m faceapp convert ffhq.pkl ffhq.safetensors` has no sliders),
or point `--model` at a trained bundle folder or a Hugging Face Hub repo id.
"""


def make_random_bundle(
    path: str | os.PathLike,
    *,
    resolution: int = 64,
    seed: int = 0,
    align: AlignSpec | None = None,
    directions: Iterable[str] = DEFAULT_DIRECTIONS,
    w_dim: int = 64,
    name: str = "untrained-stand-in",
) -> Path:
    """Write a tiny random bundle (untrained G, random unit directions, no encoder) to `path`.

    Used by tests and, labelled as such, by the app when no trained bundle is installed.
    Deterministic in `seed`; the global RNG is left as it was.

    Args:
        resolution: the generator's output side (a power of two, 16..1024).
        align: the crop spec recorded in the bundle (default: UTKFace's template crop).
        directions: names of the random directions (each a unit vector in W, all layers,
            strengths -3..3).
    """
    from faceapp.edits.directions import Direction, DirectionSet
    from faceapp.stylegan.networks import Generator

    names = tuple(directions)
    config = dict(
        z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=int(resolution), img_channels=3,
        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=64),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(**config).eval()
        with torch.no_grad():  # w_avg as training would track it, so truncation and projection start sensibly
            z_ws = G.mapping(torch.randn(2048, G.z_dim), None)[:, 0]  # [2048, w_dim]
            G.mapping.w_avg.copy_(z_ws.mean(0))
    rng = np.random.default_rng(seed)
    dirs = [
        Direction(
            name=n,
            vector=rng.standard_normal(w_dim),
            layers=None,
            strength_range=(-3.0, 3.0),
            description=f"random unit vector standing in for '{n}' (untrained)",
            source="random",
        )
        for n in names
    ]
    # Strength 1 = one std of the sampled latents along each direction, as for learned directions.
    direction_set = DirectionSet(dirs, meta={"untrained": True}).calibrated(z_ws)
    return save_bundle(
        path,
        G=G,
        align_spec=align if align is not None else utkface_spec(int(resolution)),
        directions=direction_set,
        name=name,
        card=RANDOM_CARD.format(names=", ".join(names)),
        meta={"untrained": True, "seed": int(seed)},
    )
