"""Edits in real units: how many years older a strength of the age direction makes a face look.

A direction's strength is in its own units (1 = one std of the training latents along it, see
faceapp.edits.directions). For the age slider people want years, so a direction can carry a
*years calibration*: the age change that an age labeler reads on edited faces, fitted against
strength on held-out photos (training/calibrate_years.py). It is stored with the direction
(`Direction.calibration`, a JSON object in directions.json) as

    {"unit": "years",
     "per_strength": 6.1,            # years per strength unit: robust line through the origin, all faces
     "per_strength_pos": 6.8,        # the same fitted on strengths > 0 only (None: not fitted)
     "per_strength_neg": 5.2,        # ... and on strengths < 0 (ageing and rejuvenating saturate differently)
     "intercept": 0.4,               # years at strength 0 of a free (not through-origin) fit: a linearity check
     "spread": 1.9,                  # std of the per-face slopes (years per strength)
     "residual_years": 3.5,          # robust std of the pooled fit's residuals (years)
     "n": 50, "fitted_on": "...", "hold": ["gender"], "scale": 4.2,
     "curve": {"strengths": [...], "median": [...], "p25": [...], "p75": [...], ...},
     "checks": {...},                # e.g. how well half the faces predict the other half
     "by_age": {"ages": [6.0, 19.5, 29.8, ...],        # optional: the change by how old the face looks
                "strengths": [-12, -8, -4, 0, 4, 8, 12],
                "years": [[...], ...],                  # [ages][strengths]: median change, monotone in strength
                "n": [24, 31, ...]}}                    # faces behind each row

One line cannot say what one strength does to every face: on the demo bundle's held-out faces the slider's end
reads +30 years on a face of 25 and +11 on a face of 60, and +4 reads +2 where +12 reads +30 (the aging parts
grow faster than linearly). A calibration with `by_age` converts with the curve of faces that look as old as the
face being edited (`age=`: its estimated age in the unedited photo; read linearly between the rows, held at the
ends), and `years_edit` says what a face gets when it cannot get what was asked.

`scale` is the direction's `scale` (W units per strength) when it was fitted, so the calibration
is really "years per W unit along the direction" and survives a re-measured scale
(`DirectionSet.calibrated`). The line goes through the origin because strength 0 is the
unedited face (an age change of exactly 0).

    from faceapp.edits import years_to_strength, strength_to_years, years_edit
    s = years_to_strength(directions, "age", 30)     # strength that reads as 30 years older
    years = strength_to_years(directions, "age", s)  # == 30
    s, got = years_edit(directions, "age", 30, age=62.0)  # for a face that looks 62: the strength, and the
                                                          # years it gives (the slider's end if 30 is out of reach)

This module reads directions only through their `years` and `scale` and imports no other part of
faceapp.edits: `with_calibration` (a new DirectionSet) lives in faceapp.edits.directions, which imports this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from faceapp.errors import FaceAppError

__all__ = [
    "YEARS",
    "YearsCalibration",
    "YearsUnavailableError",
    "BY_AGE_EDGES",
    "fit_years_by_age",
    "fit_years_calibration",
    "has_years",
    "strength_to_years",
    "years_edit",
    "years_per_strength",
    "years_reach",
    "years_to_strength",
]

YEARS = "years"
_MIN_SLOPE = 1e-6  # |years per strength| below this: the direction does not move the labeler's age


class YearsUnavailableError(FaceAppError):
    """An edit asked for in years on a direction that has no years calibration."""


def _finite(x, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise FaceAppError(f"years calibration: {what} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise FaceAppError(f"years calibration: {what} must be finite, got {v}")
    return v


@dataclass(frozen=True)
class YearsCalibration:
    """Years of apparent age per strength unit of one direction (see the module doc for each field)."""

    per_strength: float
    scale: float
    per_strength_pos: float | None = None
    per_strength_neg: float | None = None
    intercept: float = 0.0
    spread: float = 0.0
    residual_years: float = 0.0
    n: int = 0
    fitted_on: str = ""
    hold: tuple[str, ...] = ()
    curve: dict = field(default_factory=dict, repr=False)
    checks: dict = field(default_factory=dict, repr=False)
    unit: str = YEARS
    by_age: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.unit != YEARS:
            raise FaceAppError(f"years calibration: unit must be {YEARS!r}, got {self.unit!r}")
        slope = _finite(self.per_strength, "per_strength")
        if abs(slope) < _MIN_SLOPE:
            raise FaceAppError("years calibration: per_strength is 0, so no strength makes any age change")
        object.__setattr__(self, "per_strength", slope)
        scale = _finite(self.scale, "scale")
        if scale <= 0:
            raise FaceAppError(f"years calibration: scale must be positive, got {scale}")
        object.__setattr__(self, "scale", scale)
        for side in ("per_strength_pos", "per_strength_neg"):
            v = getattr(self, side)
            if v is not None:
                v = _finite(v, side)
                # A side slope of the other sign (or ~0) cannot be inverted sensibly: the pooled one is used.
                object.__setattr__(self, side, v if v * slope > 0 and abs(v) >= _MIN_SLOPE else None)
        for name in ("intercept", "spread", "residual_years"):
            object.__setattr__(self, name, _finite(getattr(self, name), name))
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "fitted_on", str(self.fitted_on))
        object.__setattr__(self, "hold", tuple(str(h) for h in self.hold))
        object.__setattr__(self, "curve", dict(self.curve or {}))
        object.__setattr__(self, "checks", dict(self.checks or {}))
        if self.by_age is not None:
            object.__setattr__(self, "by_age", _checked_by_age(self.by_age))

    def slope(self, sign: float = 0.0) -> float:
        """Years per strength unit (at the fitted scale) for strengths of this sign (0: the pooled slope)."""
        if sign > 0 and self.per_strength_pos is not None:
            return self.per_strength_pos
        if sign < 0 and self.per_strength_neg is not None:
            return self.per_strength_neg
        return self.per_strength

    def curve_for(self, age: float | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(strengths [M], years [M]) at the fitted scale for a face that looks `age` years old: the by_age rows
        read linearly between their ages (held at the ends), increasing in strength; None without by_age or age."""
        if self.by_age is None or age is None or not math.isfinite(float(age)):
            return None
        b = self.by_age
        ages, table = np.asarray(b["ages"], np.float64), np.asarray(b["years"], np.float64)
        years = np.array([np.interp(float(age), ages, table[:, j]) for j in range(table.shape[1])])
        return np.asarray(b["strengths"], np.float64), years

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hold"] = list(self.hold)
        if d["by_age"] is None:
            del d["by_age"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> YearsCalibration:
        if not isinstance(d, Mapping):
            raise FaceAppError(f"a years calibration is a JSON object, not {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("per_strength", "scale") if k not in d]
        if missing:
            raise FaceAppError(f"years calibration lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in known})


def _checked_by_age(b) -> dict:
    """A by_age table checked and made strictly monotone (each row: 0 at strength 0, rising with strength)."""
    if not isinstance(b, Mapping):
        raise FaceAppError(f"years calibration: by_age is a JSON object, not {type(b).__name__}")
    try:
        ages = np.asarray(b["ages"], np.float64)
        strengths = np.asarray(b["strengths"], np.float64)
        years = np.asarray(b["years"], np.float64)
    except KeyError as e:
        raise FaceAppError(f"years calibration: by_age lacks {e.args[0]!r}") from None
    except (TypeError, ValueError):
        raise FaceAppError("years calibration: by_age's ages, strengths and years must be numbers") from None
    if ages.ndim != 1 or strengths.ndim != 1 or years.shape != (len(ages), len(strengths)) or len(ages) < 1:
        raise FaceAppError(f"years calibration: by_age's years must be [ages, strengths] = [{len(ages)}, "
                           f"{len(strengths)}], got {list(years.shape)}")
    if not (np.all(np.isfinite(ages)) and np.all(np.isfinite(strengths)) and np.all(np.isfinite(years))):
        raise FaceAppError("years calibration: by_age holds a value that is not finite")
    if np.any(np.diff(ages) <= 0) or np.any(np.diff(strengths) <= 0) or 0.0 not in strengths or len(strengths) < 2:
        raise FaceAppError("years calibration: by_age's ages and strengths must rise, strength 0 be one of them, "
                           "and another strength beside it")
    try:
        n = [int(v) for v in (b.get("n") or [])]
    except (TypeError, ValueError):
        raise FaceAppError("years calibration: by_age's n must be face counts") from None
    return {"ages": ages.tolist(), "strengths": strengths.tolist(), "years": _monotone(strengths, years).tolist(),
            "n": n}


def _monotone(strengths: np.ndarray, years: np.ndarray) -> np.ndarray:
    """[A, M] rows held at 0 at strength 0 and strictly rising away from it (a dip is a noisy median: a stronger
    edit never reads younger), so each row can be inverted."""
    out = years.astype(np.float64).copy()
    z = int(np.flatnonzero(strengths == 0)[0])
    out[:, z] = 0.0
    tiny = 1e-3  # years: a plateau still tells its strengths apart
    for j in range(z + 1, len(strengths)):
        out[:, j] = np.maximum(out[:, j], out[:, j - 1] + tiny)
    for j in range(z - 1, -1, -1):
        out[:, j] = np.minimum(out[:, j], out[:, j + 1] - tiny)
    return out


def _calibration(directions, name: str) -> tuple[object, YearsCalibration]:
    if name not in directions:
        raise FaceAppError(f"no {name!r} direction; this set has: {', '.join(directions) or 'none'}")
    d = directions[name]
    cal = getattr(d, "years", None)
    if cal is None:
        raise YearsUnavailableError(
            f"the {name!r} direction has no years calibration, so edits in years are not available; give a strength "
            f"instead (e.g. --{name} 2 / --strengths -2,2), or calibrate the model: "
            "python -m training.calibrate_years --bundle MODEL_DIR"
        )
    return d, cal


def has_years(directions, name: str = "age") -> bool:
    """Whether `directions[name]` exists and carries a years calibration."""
    return name in directions and getattr(directions[name], "years", None) is not None


def years_per_strength(directions, name: str = "age", sign: float = 0.0) -> float:
    """Years per strength unit of `directions[name]` at its current scale (strengths of `sign`; 0 = pooled)."""
    d, cal = _calibration(directions, name)
    return cal.slope(sign) * d.scale / cal.scale


def years_to_strength(directions, name: str, years: float, age: float | None = None) -> float:
    """The strength of `directions[name]` whose edit reads as `years` older (negative: younger).

    age: how old the face looks (estimated, unedited): with a by_age calibration, that face's curve is inverted
    (past its last strength, its last segment's slope carries on). Raises YearsUnavailableError when the
    direction has no calibration. Not clipped to the direction's strength_range (callers say so when it is
    outside; `years_edit` does it).
    """
    years = _finite(years, "years")
    d, cal = _calibration(directions, name)
    if years == 0:
        return 0.0
    curve = cal.curve_for(age)
    if curve is not None and np.sign(cal.per_strength) > 0:
        s, y = curve
        if y[0] <= years <= y[-1]:
            return float(np.interp(years, y, s)) * cal.scale / d.scale
        end = -1 if years > 0 else 0  # past the curve: its last segment's slope (a plateau: far past the range)
        nxt = end - 1 if end == -1 else 1
        slope = (y[end] - y[nxt]) / (s[end] - s[nxt])
        return float(s[end] + (years - y[end]) / max(slope, 1e-3)) * cal.scale / d.scale
    # The strength's sign is the age change's sign times the slope's (positive for an 'older (+)' direction).
    return years / years_per_strength(directions, name, sign=years * np.sign(cal.per_strength))


def strength_to_years(directions, name: str, strength: float, age: float | None = None) -> float:
    """The inverse of `years_to_strength`: how many years older `strength` of `directions[name]` reads (on a face
    that looks `age`, with a by_age calibration)."""
    strength = _finite(strength, "strength")
    d, cal = _calibration(directions, name)
    if strength == 0:
        return 0.0
    curve = cal.curve_for(age)
    if curve is not None and np.sign(cal.per_strength) > 0:
        s, y = curve
        x = strength * d.scale / cal.scale
        if s[0] <= x <= s[-1]:
            return float(np.interp(x, s, y))
        end, nxt = (-1, -2) if x > 0 else (0, 1)
        return float(y[end] + (x - s[end]) * (y[end] - y[nxt]) / (s[end] - s[nxt]))
    return strength * years_per_strength(directions, name, sign=strength)


def years_edit(directions, name: str, years: float, age: float | None = None) -> tuple[float, float]:
    """(strength, years it reads): the edit of `directions[name]` for `years` on a face that looks `age`, held to
    the direction's strength_range (the years it reads are then fewer than asked: the most this face gets)."""
    s = years_to_strength(directions, name, years, age)
    lo, hi = directions[name].strength_range
    s = float(np.clip(s, lo, hi))
    return s, (0.0 if s == 0 else strength_to_years(directions, name, s, age))


def years_reach(directions, name: str, age: float | None = None) -> tuple[float, float]:
    """(youngest, oldest) years the ends of `directions[name]`'s strength_range read on a face that looks `age`
    (None: the pooled calibration's)."""
    lo, hi = directions[name].strength_range
    ends = sorted(strength_to_years(directions, name, s, age) for s in (lo, hi))
    return ends[0], ends[1]


# ----------------------------------------------------------------------------- fitting


def _huber_slope(x: np.ndarray, y: np.ndarray, intercept: bool = False, epsilon: float = 1.35):
    """Robust fit y ~ a x (+ b) with scikit-learn's HuberRegressor (no L2 penalty); returns (a, b)."""
    from sklearn.linear_model import HuberRegressor

    m = HuberRegressor(epsilon=epsilon, alpha=0.0, fit_intercept=intercept, max_iter=1000)
    m.fit(x.reshape(-1, 1), y)
    return float(m.coef_[0]), float(m.intercept_) if intercept else 0.0


def fit_years_calibration(
    strengths: Sequence[float] | np.ndarray,
    delta_years,
    *,
    scale: float,
    fitted_on: str = "",
    hold: Iterable[str] = (),
    epsilon: float = 1.35,
    min_points: int = 2,
) -> YearsCalibration:
    """Fit years-vs-strength from labeler ages of edited faces.

    strengths:   [S] the strength grid every face was edited at, or [F, S] per face.
    delta_years: [F, S] labeler age of each edited face minus that of the unedited face (NaN: not measured,
                 e.g. no landmarks found).
    scale:       the direction's `scale` when the edits were made.

    Per face: a robust (Huber) line through the origin on its nonzero strengths (faces with fewer than
    `min_points` finite ones are skipped); `spread` = the std of those slopes. Pooled: the same over every
    (strength, change) pair (`per_strength`), on each side of 0 (`per_strength_pos` / `_neg`), and a
    free fit for `intercept`. `curve` holds per-strength quantiles of the changes, for a plot.
    """
    dy = np.asarray(delta_years, dtype=np.float64)
    if dy.ndim == 1:
        dy = dy[None]
    s = np.asarray(strengths, dtype=np.float64)
    if s.ndim == 1 and s.shape[0] == dy.shape[1]:
        s = np.broadcast_to(s, dy.shape)
    if s.shape != dy.shape:
        raise FaceAppError(f"strengths {s.shape} and age changes {dy.shape} do not match")
    ok = np.isfinite(dy) & np.isfinite(s)
    face_slopes = []
    for f in range(dy.shape[0]):
        m = ok[f] & (s[f] != 0)
        if m.sum() >= min_points:
            face_slopes.append(_huber_slope(s[f][m], dy[f][m], epsilon=epsilon)[0])
    if not face_slopes:
        raise FaceAppError(
            f"no face has {min_points} measured edits: cannot fit a years calibration (were landmarks found?)"
        )
    x, y = s[ok], dy[ok]
    nz = x != 0
    slope, _ = _huber_slope(x[nz], y[nz], epsilon=epsilon)
    if abs(slope) < _MIN_SLOPE:
        raise FaceAppError("the labeler's age does not change along this direction: nothing to calibrate")
    _, intercept = _huber_slope(x, y, intercept=True, epsilon=epsilon)
    sides = {}
    for key, m in (("per_strength_pos", x > 0), ("per_strength_neg", x < 0)):
        sides[key] = _huber_slope(x[m], y[m], epsilon=epsilon)[0] if m.sum() >= min_points else None
    resid = y - slope * x
    robust_std = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    grid = np.unique(x)
    q = {k: [] for k in ("p10", "p25", "median", "p75", "p90", "mean", "count")}
    for v in grid:
        ys = y[x == v]
        for k, p in (("p10", 10), ("p25", 25), ("median", 50), ("p75", 75), ("p90", 90)):
            q[k].append(round(float(np.percentile(ys, p)), 3))
        q["mean"].append(round(float(ys.mean()), 3))
        q["count"].append(int(len(ys)))
    return YearsCalibration(
        per_strength=slope,
        scale=scale,
        intercept=intercept,
        spread=float(np.std(face_slopes)),
        residual_years=robust_std,
        n=len(face_slopes),
        fitted_on=fitted_on,
        hold=tuple(hold),
        curve={"strengths": [round(float(v), 4) for v in grid], **q,
               "face_slopes": [round(v, 3) for v in face_slopes]},
        **sides,
    )


#: Estimated-age edges of fit_years_by_age's rows: children grow up, young adults wrinkle fastest, the old least.
BY_AGE_EDGES = (13.0, 25.0, 38.0, 50.0, 62.0)


def fit_years_by_age(strengths, delta_years, ages, *, edges=BY_AGE_EDGES, min_faces: int = 8) -> dict | None:
    """The by_age table of a years calibration: per band of estimated age (`edges`; a band with fewer than
    `min_faces` faces joins its neighbour), the median age change at each strength of the grid, anchored at the
    band's median age. strengths: [S] (with 0); delta_years: [F, S] (NaN: not measured); ages: [F], each face's
    estimated age unedited. None when no band has `min_faces` faces."""
    s = np.asarray(strengths, np.float64)
    dy = np.asarray(delta_years, np.float64)
    a = np.asarray(ages, np.float64)
    if dy.ndim != 2 or dy.shape != (len(a), len(s)):
        raise FaceAppError(f"age changes {dy.shape} do not match {len(a)} faces x {len(s)} strengths")
    keep = np.isfinite(a) & np.isfinite(dy).all(1)
    dy, a = dy[keep], a[keep]
    if 0.0 not in s:
        s, dy = np.append(s, 0.0), np.concatenate([dy, np.zeros((len(a), 1))], 1)
    order = np.argsort(s)
    s, dy = s[order], dy[:, order]
    band = np.searchsorted(np.asarray(edges, np.float64), a, side="right")
    groups = [np.flatnonzero(band == b) for b in range(len(edges) + 1)]
    groups = [g for g in groups if len(g)]
    merged: list[np.ndarray] = []
    for g in groups:  # a small band joins the one before it (the last, the one after: merged at the end)
        if merged and (len(merged[-1]) < min_faces or len(g) < min_faces):
            merged[-1] = np.concatenate([merged[-1], g])
        else:
            merged.append(g)
    if merged and len(merged[-1]) < min_faces and len(merged) > 1:
        merged[-2] = np.concatenate([merged[-2], merged.pop()])
    merged = [g for g in merged if len(g) >= min_faces]
    if not merged:
        return None
    table = _monotone(s, np.stack([np.median(dy[g], 0) for g in merged]))
    return {"ages": [round(float(np.median(a[g])), 2) for g in merged], "strengths": s.tolist(),
            "years": np.round(table, 3).tolist(), "n": [int(len(g)) for g in merged]}
