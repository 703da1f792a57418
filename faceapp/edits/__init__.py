"""Edits in W / W+: direction sets (load, save, import), applying them, age timelines.

    from faceapp.edits import DirectionSet, apply_edits, timeline
    directions = DirectionSet.load("bundle/directions")
    ws2 = apply_edits(ws, directions, {"age": 2.0}, hold=["gender", "glasses"])  # [N, num_ws, w_dim]
    frames = timeline(ws[:1], directions, "age")                                 # [12, num_ws, w_dim]

Strength 1 = one standard deviation of the training latents' projections on a direction (its
`scale`), so +-3 means about the same amount of change for every slider. Learning directions
lives in training/learn_directions.py. A set records the generator it was made for
(faceapp.edits.provenance); `check_directions` refuses a set made for another one. This package never
imports faceapp.inversion.

The age direction may carry a years calibration (faceapp.edits.calibration):
`years_to_strength(directions, "age", 30)` is the strength that reads as 30 years older.
"""

from faceapp.edits.apply import apply_edits, conditional_direction, edit_delta, project_out, timeline
from faceapp.edits.calibration import (
    YearsCalibration,
    YearsUnavailableError,
    fit_years_by_age,
    fit_years_calibration,
    has_years,
    strength_to_years,
    years_edit,
    years_per_strength,
    years_reach,
    years_to_strength,
)
from faceapp.edits.directions import Direction, DirectionSet, direction_scale, normalized, with_calibration
from faceapp.edits.formats import (
    from_e4e_pt,
    from_ganspace,
    from_interfacegan_npy,
    interfacegan_name,
    read_direction_file,
    to_e4e_pt,
    to_interfacegan_npy,
)
from faceapp.edits.provenance import (
    DirectionMismatchError,
    check_directions,
    generator_fingerprint,
    made_for_source,
)

__all__ = [
    "Direction",
    "YearsCalibration",
    "YearsUnavailableError",
    "DirectionMismatchError",
    "DirectionSet",
    "apply_edits",
    "check_directions",
    "conditional_direction",
    "direction_scale",
    "edit_delta",
    "fit_years_by_age",
    "fit_years_calibration",
    "from_e4e_pt",
    "from_ganspace",
    "from_interfacegan_npy",
    "generator_fingerprint",
    "has_years",
    "interfacegan_name",
    "made_for_source",
    "normalized",
    "project_out",
    "read_direction_file",
    "strength_to_years",
    "timeline",
    "to_e4e_pt",
    "to_interfacegan_npy",
    "with_calibration",
    "years_edit",
    "years_per_strength",
    "years_reach",
    "years_to_strength",
]
