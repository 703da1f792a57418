"""One-click edits (the app's preset buttons; the benchmarks measure the same ones)."""

from __future__ import annotations

__all__ = ["PRESET_YEARS", "preset_years", "presets", "years_presets"]

#: The age presets in years, when the model's age direction has a years calibration.
PRESET_YEARS = {"+30 years": 30.0, "\u221220 years": -20.0}


def presets(directions) -> dict[str, dict[str, float]]:
    """One-click edits for the directions a model has: label -> {direction: strength}.

    With a years calibration of the age direction (faceapp.edits.calibration) "+30 years" is the strength
    that reads as 30 years older and "−20 years" as 20 years younger. Where that strength lies past the
    slider's range (the model cannot age that far without breaking up), the button says what the range's end
    measured instead, e.g. "Older (+9 years)", and does that: no button promises years it does not give.
    With a calibration by age (`by_age`) a preset asks for its years and each face gets them as its own curve
    says (`years_presets`, `faceapp.edits.calibration.years_edit`: a face that cannot, its slider's end): its
    label is the years when faces of some age reach them, else the most any face reaches; the strength here is
    the one for a face of unknown age. Without a calibration they are "Older" and "Younger", fractions of the
    slider range (how many years that is, nobody has measured: no years label). Other strengths are fractions of
    each direction's range.
    """
    from faceapp.edits.calibration import has_years

    have = directions
    out = {}

    def at(name, frac):
        lo, hi = have[name].strength_range
        return round(frac * (hi if frac > 0 else -lo), 2)

    if "age" in have and has_years(have, "age"):
        out.update({label: {"age": s} for label, (_, s) in _age_presets(have).items()})
    elif "age" in have:
        out["Older"] = {"age": at("age", 0.75)}
        out["Younger"] = {"age": at("age", -0.6)}
    if "smile" in have:
        out["Smile"] = {"smile": at("smile", 0.75)}
    if "glasses" in have:
        out["Glasses"] = {"glasses": at("glasses", 0.8)}
    return out


def _age_presets(directions) -> dict[str, tuple[float, float]]:
    """label -> (years asked, strength for a face of unknown age) of the calibrated age presets."""
    from faceapp.edits.calibration import strength_to_years, years_edit, years_reach

    lo, hi = directions["age"].strength_range
    cal = directions["age"].years
    ages = (cal.by_age or {}).get("ages") or [None]
    reach = [years_reach(directions, "age", a) for a in ages]  # each row's (youngest, oldest) at the slider's ends
    out = {}
    for label, y in PRESET_YEARS.items():
        best = max(r[1] for r in reach) if y > 0 else min(r[0] for r in reach)
        if (y > 0 and best >= y - 0.5) or (y < 0 and best <= y + 0.5):
            out[label] = (y, years_edit(directions, "age", y)[0])
        else:  # no face reaches it: the most any does, labelled with what it measured
            got = round(best)
            unit = "year" if abs(got) == 1 else "years"
            s = hi if y > 0 else lo
            asked = float(got) if cal.by_age else strength_to_years(directions, "age", s)
            out[f"{'Older' if y > 0 else 'Younger'} ({got:+d} {unit})".replace("-", "\u2212")] = (asked, s)
    return out


def years_presets(directions) -> dict[str, float]:
    """label -> the years each calibrated age preset asks for (faces convert them with their own curve:
    `faceapp.edits.calibration.years_edit`); {} without a years calibration."""
    from faceapp.edits.calibration import has_years

    if "age" not in directions or not has_years(directions, "age"):
        return {}
    return {label: y for label, (y, _) in _age_presets(directions).items()}


def preset_years(directions) -> list[float]:
    """The years the age presets of `directions` give (for a slider in years: its ends must hold them)."""
    return list(years_presets(directions).values())
