"""Model bundles: everything one model needs to edit faces, in one folder.

A bundle folder holds ``bundle.json`` and the files it names::

    bundle.json            {"format": "faceapp.bundle", "version": 1, "name": ...,
                            "generator": "generator.safetensors",
                            "encoder": "encoder.safetensors" | null,
                            "directions": "directions/" | null,
                            "align": AlignSpec.to_dict(),
                            "card": "MODEL_CARD.md",
                            "untrained": false}
    generator.safetensors  our checkpoint format (G_ema, or G)
    encoder.safetensors    an Encoder4Editing, when the model has one
    directions/            a DirectionSet (safetensors + JSON)
    MODEL_CARD.md          what the model is, what it was trained on, its terms

`load_bundle` reads such a folder, a single generator checkpoint (ours, or an official
NVIDIA .pkl / rosinality .pt read by the safe importer; FFHQ crop, no encoder, no
directions), or a Hugging Face Hub repo id laid out like a folder. Only the hub path
downloads, and it says so; offline it fails with a message saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from faceapp.align import FFHQ_SPEC, AlignSpec, utkface_spec
from faceapp.errors import CheckpointError, ModelUnavailableError

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "DEFAULT_DIRECTIONS",
    "ModelBundle",
    "is_repo_id",
    "load_bundle",
    "make_random_bundle",
    "save_bundle",
]

BUNDLE_FORMAT = "faceapp.bundle"
BUNDLE_VERSION = 1
#: The edits the app shows sliders for, in this order.
DEFAULT_DIRECTIONS = ("age", "smile", "glasses", "gender")
# "user/repo" (hub ids allow letters, digits, '-', '_', '.'); a path that exists always wins.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


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
) -> ModelBundle:
    """Load a model bundle from a folder, a generator checkpoint, or a Hugging Face Hub repo id.

    Args:
        source: a bundle folder (with bundle.json), the bundle.json itself, a generator
            checkpoint file (faceapp .safetensors, NVIDIA .pkl, rosinality .pt), or a hub
            repo id such as 'user/faceapp-ffhq' whose files are laid out like a folder.
        device: where the networks go.
        revision, cache_dir: for hub repo ids (see huggingface_hub.snapshot_download).

    Raises:
        ModelUnavailableError: nothing at `source`, or a hub repo that cannot be fetched
            (offline, unknown repo) and is not in the local hub cache.
        CheckpointError: a bundle or checkpoint that is malformed.
    """
    path = Path(source)
    if path.is_dir():
        return _load_folder(path, device)
    if path.is_file():
        if path.name == "bundle.json":
            return _load_folder(path.parent, device)
        return _load_checkpoint(path, device)
    if is_repo_id(source):
        return _load_folder(_hub_snapshot(os.fspath(source), revision, cache_dir), device)
    raise ModelUnavailableError(
        f"no model at {os.fspath(source)}: give a bundle folder (with bundle.json), a generator checkpoint "
        "(.safetensors, .pkl, .pt), or a Hugging Face Hub repo id like 'user/repo'"
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


def _load_folder(root: Path, device) -> ModelBundle:
    from faceapp.stylegan.checkpoint import load_generator, load_networks

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
        import faceapp.inversion.encoder  # noqa: F401  (registers Encoder4Editing with the checkpoint loader)

        nets = load_networks(enc_path, device=device)
        encoder = nets.get("encoder") or next(iter(nets.values()))
    dir_path = _member(root, meta.get("directions"), "directions")
    if dir_path is not None:
        from faceapp.edits.directions import DirectionSet

        directions = DirectionSet.load(dir_path)
    else:
        directions = _empty_directions()
    try:
        align = AlignSpec.from_dict(meta["align"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{root / 'bundle.json'}: bad or missing 'align' spec ({e})") from None
    card_path = _member(root, meta.get("card"), "card")
    card = card_path.read_text(encoding="utf-8") if card_path is not None else ""
    files = [root / "bundle.json", gen_path] + ([enc_path] if enc_path else [])
    return ModelBundle(
        G=G,
        encoder=encoder,
        directions=directions,
        align_spec=align,
        card=card,
        root=root,
        name=str(meta.get("name") or root.name),
        meta=meta,
        model_id=_hash_files(files),
    )


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
        "No encoder and no edit directions come with a bare checkpoint: wrap it in a bundle "
        "(faceapp.bundle.save_bundle) with directions to get the sliders."
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


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


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
) -> Path:
    """Write a bundle folder (see the module doc); returns its path. bundle.json is written last."""
    from faceapp.stylegan.checkpoint import save_networks

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    save_networks(root / "generator.safetensors", {"G_ema": G})
    if encoder is not None:
        save_networks(root / "encoder.safetensors", {"encoder": encoder})
    if directions is not None and len(directions):
        if (root / "directions").exists():
            shutil.rmtree(root / "directions")
        directions.save(root / "directions")
    _atomic_write_text(root / "MODEL_CARD.md", card or f"# {name}\n")
    doc = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "name": name,
        "generator": "generator.safetensors",
        "encoder": "encoder.safetensors" if encoder is not None else None,
        "directions": "directions/" if directions is not None and len(directions) else None,
        "align": align_spec.to_dict(),
        "card": "MODEL_CARD.md",
        **(meta or {}),
    }
    _atomic_write_text(root / "bundle.json", json.dumps(doc, indent=2) + "\n")
    return root


RANDOM_CARD = """# Untrained stand-in (random weights)

This bundle was made by `faceapp.bundle.make_random_bundle`: a tiny StyleGAN2 generator with
random weights and random unit directions named {names}. It exists so that the app, the CLI
and the tests run before a trained model is available. **Its output is not a face**: it shows
that the pipeline works (detect, align, invert, edit, render, paste back), nothing more.

For real results, convert official FFHQ weights (`python -m faceapp convert ffhq.pkl ffhq.safetensors`)
and start `python app.py --model ffhq.safetensors`, or point `--model` at a trained bundle folder or
a Hugging Face Hub repo id.
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
