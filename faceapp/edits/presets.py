"""One-click edits (the app's preset buttons; the benchmarks measure the same ones)."""

from __future__ import annotations

__all__ = ["PRESET_YEARS", "presets"]

#: The age presets in years, when the model's age direction has a years calibration.
PRESET_YEARS = {"+30 years": 30.0, "\u221220 years": -20.0}


def presets(directions) -> dict[str, dict[str, float]]:
    """One-click edits for the directions a model has: label -> {direction: strength}.

    With a years calibration of the age direction (faceapp.edits.calibration) "+30 years" is the strength
    that reads as 30 years older and "−20 years" as 20 years younger; without one they are "Older" and
    "Younger", fractions of the slider range (how many years that is, nobody has measured: no years label).
    Other strengths are fractions of each direction's slider range.
    """
    from faceapp.edits.calibration import has_years, years_to_strength

    have = directions
    out = {}

    def at(name, frac):
        lo, hi = have[name].strength_range
        return round(frac * (hi if frac > 0 else -lo), 2)

    if "age" in have and has_years(have, "age"):
        out.update({label: {"age": years_to_strength(have, "age", y)} for label, y in PRESET_YEARS.items()})
    elif "age" in have:
        out["Older"] = {"age": at("age", 0.75)}
        out["Younger"] = {"age": at("age", -0.6)}
    if "smile" in have:
        out["Smile"] = {"smile": at("smile", 0.6)}
    if "glasses" in have:
        out["Glasses"] = {"glasses": at("glasses", 0.8)}
    return out
