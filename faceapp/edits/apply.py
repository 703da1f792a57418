"""Applying edits to W+ codes: sliders, layer ranges, conditional (held-fixed) edits, timelines.

    ws2 = apply_edits(ws, directions, {"age": 2.0, "smile": -1.0}, hold=["gender", "glasses"])

Each strength is in the direction's units (1 = one std of the training latents' projections,
see faceapp.edits.directions). `hold` names attributes that must not change: every edited
direction is first replaced by its *conditional* direction, the component orthogonal to the span
of the held directions (InterFaceGAN's projection), so a linear classifier of a held attribute
scores the edited code exactly as the original.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from faceapp.edits.directions import Direction
from faceapp.errors import FaceAppError

__all__ = ["apply_edits", "conditional_direction", "edit_delta", "project_out", "timeline"]

_DEGENERATE = 1e-6  # a conditional direction shorter than this lies in the span of its conditions


def project_out(n: np.ndarray, conditions: Sequence[np.ndarray]) -> np.ndarray:
    """n minus its orthogonal projection onto span(conditions); vectors [D], float64, not renormalised.

    One condition: the closed form n - (n.c) c / |c|^2. Two: the 2x2 Gram system solved in closed
    form. More (or two nearly parallel ones): least squares, which also copes with conditions that
    are linearly dependent.
    """
    n = np.asarray(n, dtype=np.float64)
    cs = [np.asarray(c, dtype=np.float64) for c in conditions if np.linalg.norm(c) > 0]
    if not cs:
        return n.copy()
    if len(cs) == 1:
        c = cs[0]
        return n - (n @ c) / (c @ c) * c
    if len(cs) == 2:
        c1, c2 = cs
        g11, g12, g22 = c1 @ c1, c1 @ c2, c2 @ c2
        det = g11 * g22 - g12 * g12
        if det > 1e-12 * g11 * g22:  # not (nearly) parallel
            b1, b2 = n @ c1, n @ c2
            a1 = (g22 * b1 - g12 * b2) / det
            a2 = (g11 * b2 - g12 * b1) / det
            return n - a1 * c1 - a2 * c2
    C = np.stack(cs, axis=1)  # [D, k]
    coef, *_ = np.linalg.lstsq(C, n, rcond=None)
    return n - C @ coef


def _vector(d) -> np.ndarray:
    return (d.vector if isinstance(d, Direction) else np.asarray(d)).astype(np.float64)


def _overlaps(a: Direction, b: Direction) -> bool:
    """False when two directions move disjoint W+ layer ranges (then they cannot interact)."""
    if a.layers is None or b.layers is None:
        return True
    return a.layers[0] < b.layers[1] and b.layers[0] < a.layers[1]


def conditional_direction(d, others: Iterable, num_ws: int | None = None):
    """The direction `d` with every direction in `others` held fixed (InterFaceGAN's projection).

    d, others: Direction objects, or plain vectors [w_dim] / [num_ws, w_dim].
    For W directions the result is d - proj_span(others) d, renormalised. When any of them is
    per-layer ([num_ws, w_dim]) the projection is done layer by layer (each layer's row of d against
    the rows of the others in that layer; W directions count in the layers they apply to), which
    needs `num_ws` unless a per-layer vector already tells it. Conditions whose layer range is
    disjoint from d's are skipped.

    Returns the same kind as `d`: a Direction (same name, scale, layers, range; the held names in
    its `source`) or a float64 unit vector. Raises FaceAppError when d lies in the span of the
    held directions (nothing of it is left to edit).
    """
    others = [
        o
        for o in others
        if not (isinstance(d, Direction) and isinstance(o, Direction) and (o.name == d.name or not _overlaps(d, o)))
    ]
    if not others:
        return d
    vecs = [_vector(o) for o in others]
    n = _vector(d)
    per_layer = n.ndim == 2 or any(v.ndim == 2 for v in vecs)
    layer_gain = 1.0
    if not per_layer:
        for v in vecs:
            if v.shape != n.shape:
                raise FaceAppError(f"cannot hold a direction of width {v.shape[-1]} fixed against one of {n.shape[-1]}")
        out = project_out(n, vecs)
    else:
        L = num_ws or next(v.shape[0] for v in [n, *vecs] if v.ndim == 2)

        def rows(x, v):
            if isinstance(x, Direction):
                return x.expanded(L)
            return np.repeat(v[None], L, axis=0) if v.ndim == 1 else v

        n_full = rows(d, n)
        c_full = [rows(o, v) for o, v in zip(others, vecs)]
        for c in c_full:
            if c.shape != n_full.shape:
                raise FaceAppError(f"cannot hold a direction of shape {c.shape} fixed against one of {n_full.shape}")
        out = np.stack([project_out(n_full[l], [c[l] for c in c_full]) for l in range(L)])
        # A W direction spread over k layers has Frobenius norm sqrt(k): fold that into the scale so the
        # per-layer result moves each layer as far as the W direction would.
        layer_gain = float(np.linalg.norm(n_full))
    norm = float(np.linalg.norm(out))
    if norm < _DEGENERATE:
        what = d.name if isinstance(d, Direction) else "the direction"
        held = ", ".join(o.name for o in others if isinstance(o, Direction)) or "the held directions"
        raise FaceAppError(f"cannot edit {what} while holding {held} fixed: it lies in their span")
    out = out / norm
    if not isinstance(d, Direction):
        return out
    held = [o.name for o in others if isinstance(o, Direction)]
    return d.replace(
        vector=out,
        scale=d.scale * layer_gain,
        source=(d.source + " " if d.source else "") + f"[holding {', '.join(held)}]",
    )


def edit_delta(direction: Direction, strength: float, num_ws: int) -> np.ndarray:
    """float64 [num_ws, w_dim]: what `strength` of `direction` adds to one code's ws."""
    return float(strength) * direction.scale * direction.expanded(num_ws)


def _check_ws(ws) -> torch.Tensor:
    if not isinstance(ws, torch.Tensor):
        ws = torch.as_tensor(np.asarray(ws))
    if ws.ndim != 3:
        raise FaceAppError(f"ws must be [N, num_ws, w_dim], got shape {tuple(ws.shape)}")
    return ws


def _resolve(directions: Mapping[str, Direction], names: Iterable[str], what: str) -> list[Direction]:
    out = []
    for name in names:
        if name not in directions:
            raise FaceAppError(f"unknown {what} {name!r}; available: {', '.join(directions) or 'none'}")
        out.append(directions[name])
    return out


def apply_edits(
    ws: torch.Tensor,
    directions: Mapping[str, Direction],
    strengths: Mapping[str, float],
    *,
    hold: Iterable[str] = (),
) -> torch.Tensor:
    """Edited codes: ws + sum_k strength_k * scale_k * n_k over the layers each edit applies to.

    ws:        [N, num_ws, w_dim] (torch; numpy is converted) — the result has its dtype and device.
    strengths: {name: strength}; zero strengths are skipped, so all-zero returns an exact copy.
    hold:      names of directions whose attributes must stay as they are; each edited direction is
               orthogonalised against all of them (a held name may also be edited: it is then not
               held for itself).
    """
    ws = _check_ws(ws)
    active = {k: float(v) for k, v in strengths.items() if float(v) != 0.0}
    edits = _resolve(directions, active, "edit")
    held = _resolve(directions, dict.fromkeys(hold), "held attribute")
    num_ws = ws.shape[1]
    delta = np.zeros(ws.shape[1:], dtype=np.float64)  # [num_ws, w_dim]
    for d in edits:
        if d.w_dim != ws.shape[2]:
            raise FaceAppError(
                f"direction {d.name!r} has width {d.w_dim} but the codes have w_dim {ws.shape[2]}; "
                "it was made for another generator"
            )
        cond = conditional_direction(d, held, num_ws=num_ws) if held else d
        delta += edit_delta(cond, active[d.name], num_ws)
    if not edits:
        return ws.clone()
    return ws + torch.as_tensor(delta, dtype=ws.dtype, device=ws.device)


def timeline(
    ws: torch.Tensor,
    directions: Mapping[str, Direction],
    name: str = "age",
    strengths: Sequence[float] | np.ndarray | None = None,
    hold: Iterable[str] = (),
) -> torch.Tensor:
    """Codes along one direction for an animation, e.g. young to old: [T, num_ws, w_dim].

    ws: one code, [1, num_ws, w_dim] or [num_ws, w_dim]. strengths: T values (default 12 from -3 to +3).
    """
    if isinstance(ws, torch.Tensor) and ws.ndim == 2:
        ws = ws.unsqueeze(0)
    ws = _check_ws(ws)
    if ws.shape[0] != 1:
        raise FaceAppError(f"timeline takes one code [1, num_ws, w_dim], got {ws.shape[0]}")
    strengths = np.linspace(-3.0, 3.0, 12) if strengths is None else np.asarray(strengths, dtype=np.float64)
    d = _resolve(directions, [name], "edit")[0]
    held = _resolve(directions, [h for h in dict.fromkeys(hold) if h != name], "held attribute")
    num_ws = ws.shape[1]
    cond = conditional_direction(d, held, num_ws=num_ws) if held else d
    unit = torch.as_tensor(edit_delta(cond, 1.0, num_ws), dtype=ws.dtype, device=ws.device)  # [num_ws, w_dim]
    t = torch.as_tensor(strengths, dtype=ws.dtype, device=ws.device).reshape(-1, 1, 1)  # [T, 1, 1]
    return ws + t * unit  # [T, num_ws, w_dim]
