"""One-click edits (the app's preset buttons; the benchmarks measure the same ones)."""

from __future__ import annotations

__all__ = ["PRESET_YEARS", "preset_years", "presets"]

#: The age presets in years, when the model's age direction has a years calibration.
PRESET_YEARS = {"+30 years": 30.0, "\u221220 years": -20.0}


def presets(directions) -> dict[str, dict[str, float]]:
    """One-click edits for the directions a model has: label -> {direction: strength}.

    With a years calibration of the age direction (faceapp.edits.calibration) "+30 years" is the strength
    that reads as 30 years older and "−20 years" as 20 years younger. Where that strength lies past the
    slider's range (the model cannot age that far without breaking up), the button says what the range's end
    measured instead, e.g. "Older (+9 years)", and does that: no button promises years it does not give.
    Without a calibration they are "Older" and "Younger", fractions of the slider range (how many years that
    is, nobody has measured: no years label). Other strengths are fractions of each direction's range.
    """
    from faceapp.edits.calibration import has_years, strength_to_years, years_to_strength

    have = directions
    out = {}

    def at(name, frac):
        lo, hi = have[name].strength_range
        return round(frac * (hi if frac > 0 else -lo), 2)

    if "age" in have and has_years(have, "age"):
        lo, hi = have["age"].strength_range
        for label, y in PRESET_YEARS.items():
            s = years_to_strength(have, "age", y)
            if lo <= s <= hi:
                out[label] = {"age": s}
            else:  # the range's end, labelled with what it measured
                end = hi if s > hi else lo
                got = round(strength_to_years(have, "age", end))
                unit = "year" if abs(got) == 1 else "years"
                out[f"{'Older' if y > 0 else 'Younger'} ({got:+d} {unit})".replace("-", "\u2212")] = {"age": end}
    elif "age" in have:
        out["Older"] = {"age": at("age", 0.75)}
        out["Younger"] = {"age": at("age", -0.6)}
    if "smile" in have:
        out["Smile"] = {"smile": at("smile", 0.75)}
    if "glasses" in have:
        out["Glasses"] = {"glasses": at("glasses", 0.8)}
    return out


def preset_years(directions) -> list[float]:
    """The years the age presets of `directions` give (for a slider in years: its ends must hold them)."""
    from faceapp.edits.calibration import strength_to_years

    return [strength_to_years(directions, "age", st["age"]) for st in presets(directions).values()
            if set(st) == {"age"}]
