"""Which generator a direction set belongs to, and refusing sets made for another one.

A direction is a vector in one generator's W space: applied to another generator (a StyleGAN1
InterFaceGAN boundary on StyleGAN2, a set learned for another bundle's model) it moves codes
somewhere meaningless, silently, whenever the widths happen to agree (all FFHQ models have
w_dim 512). So a direction set records the generator it was made for, in its meta:

    meta["generator"] = {"family": "stylegan2", "stylegan_version": 2, "w_dim": 512, "num_ws": 18,
                         "img_resolution": 1024, "z_dim": 512,
                         "mapping_id": "<16 hex: sha256 of the mapping network's parameters>",
                         "probe": [16 floats: G.mapping of two fixed z, first 8 dims each],
                         "source": "ffhq.pkl"}

(`generator_fingerprint(G)`). `check_directions(directions, G)` compares it with a generator:
family, w_dim, num_ws, and the mapping network (equal ids, or probes within 1e-3, so the same
weights read from another file format still match). A generator grown from the set's one to a
higher resolution (the same mapping, more W+ layers on top: training/train_generator.py --init)
fits a set of W-space directions. A set with no record (older bundles) is
judged by what its directions say about themselves: widths, per-layer row counts, and the model
family implied by their `source` (`made_for_source`):

- InterFaceGAN files are named `<model>_<dataset>_<attribute>[_<space>]_boundary.npy`; the project
  published boundaries for PGGAN (`pggan_celebahq_*`) and StyleGAN **1** (`stylegan_ffhq_*`,
  `stylegan_celebahq_*`) only, so `stylegan_*` means StyleGAN1 and is refused on a StyleGAN2
  generator; `stylegan2_*` / `stylegan3_*` name those families; any other name is unknown.
- e4e's `editings/interfacegan_directions/*.pt` are for StyleGAN2 (e4e works on rosinality's
  StyleGAN2 only), and so is e4e's `ganspace_pca/ffhq_pca.pt`.
- GANSpace component files are named `<model>-<dataset>_<layer>_<estimator>_c<n>_n<samples>_w.npz`:
  `stylegan2-*` is StyleGAN2, `stylegan-*` StyleGAN1; other models (BigGAN, ...) have no W.

A mismatch raises `DirectionMismatchError` (a CheckpointError) saying what the set was made for
and what the generator is; `force=True` (the CLI's `--force-directions`) accepts it and returns
the reasons, which the caller records in the set's meta["forced"].
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import PurePath

import numpy as np

from faceapp.errors import CheckpointError

__all__ = [
    "DirectionMismatchError",
    "check_directions",
    "describe_generator",
    "generator_fingerprint",
    "made_for_source",
    "same_mapping",
    "stamped",
]

#: The family faceapp's own generators belong to (faceapp.stylegan mirrors stylegan2-ada-pytorch).
OUR_FAMILY = "stylegan2"
_VERSIONS = {"pggan": None, "stylegan": 1, "stylegan2": 2, "stylegan3": 3}
_PROBE_SEED, _PROBE_N, _PROBE_DIMS = 1234, 2, 8
_PROBE_RTOL, _PROBE_ATOL = 1e-3, 1e-4


class DirectionMismatchError(CheckpointError):
    """A direction set made for another generator than the one it is being used with."""


def _family_version(family: str | None) -> dict:
    return {"family": family, "stylegan_version": _VERSIONS.get(family)} if family else {}


def generator_fingerprint(G, *, source: str | None = None) -> dict:
    """JSON-able facts that identify generator `G` (see the module doc); `source`: its file name, for messages.

    Deterministic, leaves the global RNG alone, runs G.mapping once on two fixed z (no grad).
    """
    import torch

    params = dict(G.mapping.named_parameters())
    h = hashlib.sha256()
    for name in sorted(params):
        t = params[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    device = next(iter(params.values())).device if params else torch.device("cpu")
    z = torch.randn(_PROBE_N, int(G.z_dim), generator=torch.Generator().manual_seed(_PROBE_SEED)).to(device)
    c = torch.zeros(_PROBE_N, int(getattr(G, "c_dim", 0) or 0), device=device)
    with torch.no_grad():
        w = G.mapping(z, c if c.shape[1] else None, truncation_psi=1)[:, 0, :_PROBE_DIMS]  # [2, 8]
    fp = {
        **_family_version(OUR_FAMILY),
        "w_dim": int(G.w_dim),
        "num_ws": int(G.num_ws),
        "img_resolution": int(G.img_resolution),
        "z_dim": int(G.z_dim),
        "mapping_id": h.hexdigest()[:16],
        "probe": [float(f"{x:.7g}") for x in w.detach().cpu().double().reshape(-1).tolist()],
    }
    if source:
        fp["source"] = PurePath(str(source)).name
    return fp


def describe_generator(fp: dict) -> str:
    """'a stylegan2 generator (w_dim 512, 18 ws, 1024 px, model 1a2b3c..., from ffhq.pkl)' from a fingerprint."""
    bits = [f"w_dim {fp['w_dim']}" if fp.get("w_dim") else None,
            f"{fp['num_ws']} ws" if fp.get("num_ws") else None,
            f"{fp['img_resolution']} px" if fp.get("img_resolution") else None,
            f"model {fp['mapping_id']}" if fp.get("mapping_id") else None,
            f"from {fp['source']}" if fp.get("source") else None]
    inner = ", ".join(b for b in bits if b)
    family = {"stylegan": "StyleGAN1", "stylegan2": "StyleGAN2", "stylegan3": "StyleGAN3", "pggan": "PGGAN"}.get(
        fp.get("family"), "generator of unknown family")
    return f"a {family} generator ({inner})" if inner else f"a {family} generator"


def made_for_source(source: str) -> dict:
    """The model family a direction's `source` string implies: {'family', 'stylegan_version'} or {} (unknown).

    'interfacegan:stylegan_ffhq_age_w_boundary.npy' -> StyleGAN1; 'e4e:age.pt' -> StyleGAN2;
    'ganspace:stylegan2-ffhq_style_ipca_c80_n1000000_w.npz#20' -> StyleGAN2 (see the module doc).
    """
    kind, _, name = str(source).partition(":")
    name = PurePath(name.split("#", 1)[0]).name.lower()
    if kind == "interfacegan":
        m = re.match(r"^(pggan|stylegan3|stylegan2|stylegan)_", name)
        return _family_version(m.group(1)) if m else {}
    if kind == "e4e":
        return _family_version("stylegan2")
    if kind == "ganspace":
        if name.endswith(".pt"):  # e4e's ganspace_pca/*.pt
            return _family_version("stylegan2")
        m = re.match(r"^([a-z0-9]+)-", name)
        if m:
            return _family_version(m.group(1)) if m.group(1) in _VERSIONS else {"family": m.group(1)}
    return {}


def same_mapping(a: dict, b: dict) -> bool | None:
    """Whether two fingerprints have the same mapping network (equal ids, or probes within 1e-3); None: can't tell."""
    if a.get("mapping_id") and a.get("mapping_id") == b.get("mapping_id"):
        return True
    pa, pb = a.get("probe"), b.get("probe")
    if isinstance(pa, list) and isinstance(pb, list) and pa and len(pa) == len(pb):
        return bool(np.allclose(np.asarray(pa, float), np.asarray(pb, float), rtol=_PROBE_RTOL, atol=_PROBE_ATOL))
    if a.get("mapping_id") and b.get("mapping_id"):
        return False
    return None


def _family_reason(family: str | None, fp: dict, what: str) -> str | None:
    if family and fp.get("family") and family != fp["family"]:
        names = {"stylegan": "StyleGAN1", "stylegan2": "StyleGAN2", "stylegan3": "StyleGAN3", "pggan": "PGGAN"}
        return (f"{what} was made for {names.get(family, family)}, but the generator is "
                f"{names.get(fp['family'], fp['family'])}")
    return None


def _grown_from(recorded: dict, fp: dict, directions) -> bool:
    """Whether the generator is the set's one grown to a higher resolution (train_generator.py --init on a
    higher-resolution archive): the same mapping, more W+ layers appended above the old ones, so directions in W
    (not per-layer rows) still mean what they meant."""
    more = isinstance(recorded.get("num_ws"), int) and recorded["num_ws"] < fp["num_ws"]
    res = recorded.get("img_resolution"), fp.get("img_resolution")
    return (more and all(isinstance(r, int) for r in res) and res[0] < res[1] and same_mapping(recorded, fp) is True
            and not any(d.per_layer for d in directions.values()))


def _reasons(directions, fp: dict) -> list[str]:
    out = []
    recorded = directions.meta.get("generator") if isinstance(getattr(directions, "meta", None), dict) else None
    if isinstance(recorded, dict):
        for reason in (
            _family_reason(recorded.get("family"), fp, "the set"),
            f"the set was made for w_dim {recorded['w_dim']}, the generator has {fp['w_dim']}"
            if recorded.get("w_dim") not in (None, fp["w_dim"]) else None,
            f"the set was made for {recorded['num_ws']} ws, the generator has {fp['num_ws']}"
            if recorded.get("num_ws") not in (None, fp["num_ws"]) and not _grown_from(recorded, fp, directions)
            else None,
        ):
            if reason:
                out.append(reason)
        if not out and same_mapping(recorded, fp) is False:
            out.append(f"the set was made for {describe_generator(recorded)}, not this one")
        return out  # a recorded generator is authoritative: the directions' own hints are not re-judged
    for name, d in directions.items():
        if d.w_dim != fp["w_dim"]:
            out.append(f"direction {name!r} has width {d.w_dim}, the generator's w_dim is {fp['w_dim']}")
        elif d.per_layer and d.vector.shape[0] != fp["num_ws"]:
            out.append(f"direction {name!r} has {d.vector.shape[0]} W+ rows, the generator has {fp['num_ws']} ws")
        else:
            reason = _family_reason(made_for_source(d.source).get("family"), fp, f"direction {name!r} ({d.source})")
            if reason:
                out.append(reason)
    return out


def check_directions(directions, G_or_fingerprint, *, force: bool = False, where: str = "") -> list[str]:
    """Refuse a DirectionSet made for another generator; returns the reasons it does not fit ([] = it fits).

    G_or_fingerprint: the generator, or its `generator_fingerprint`. force: accept a mismatch (the
    reasons are returned, for the caller to record). Raises DirectionMismatchError otherwise.
    """
    fp = G_or_fingerprint if isinstance(G_or_fingerprint, dict) else generator_fingerprint(G_or_fingerprint)
    reasons = _reasons(directions, fp)
    if reasons and not force:
        prefix = f"{where}: " if where else ""
        raise DirectionMismatchError(
            f"{prefix}these directions do not belong to {describe_generator(fp)}: {'; '.join(reasons)}. Use "
            "directions made for this generator (e.g. learn them: training/learn_directions.py), or pass "
            "--force-directions (force_directions=True) to use them anyway"
        )
    return reasons


def stamped(directions, fp: dict, forced: Iterable[str] = ()):
    """A copy of `directions` whose meta records `fp` as its generator (and any reasons accepted by force)."""
    from faceapp.edits.directions import DirectionSet

    meta = {**directions.meta, "generator": dict(fp)}
    forced = list(forced)
    if forced:
        meta["forced"] = forced
    return DirectionSet(directions.values(), meta)
