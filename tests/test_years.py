"""Years calibration of the age direction: fitting it, storing it with a set, converting years <-> strength."""

import json

import numpy as np
import pytest
import torch

from faceapp.edits import (
    Direction,
    DirectionSet,
    YearsCalibration,
    YearsUnavailableError,
    apply_edits,
    fit_years_by_age,
    fit_years_calibration,
    has_years,
    strength_to_years,
    with_calibration,
    years_edit,
    years_per_strength,
    years_reach,
    years_to_strength,
)
from faceapp.edits.provenance import stamped
from faceapp.errors import FaceAppError

W_DIM = 16
GRID = np.array([-3, -2, -1, 0, 1, 2, 3], float)


def synthetic_labeler_changes(n_faces=60, pos=6.0, neg=4.0, face_sd=0.8, noise=1.0, outliers=0.1, seed=0):
    """Age changes an imagined labeler reads: slope `pos` years/strength older, `neg` younger, each face's own
    slope jittered by `face_sd` (relative), Gaussian noise, and a share of wild misreadings."""
    rng = np.random.default_rng(seed)
    k = 1 + face_sd / 6 * rng.standard_normal((n_faces, 1))
    slope = np.where(GRID > 0, pos, neg) * k
    dy = GRID * slope + noise * rng.standard_normal((n_faces, len(GRID)))
    dy[:, GRID == 0] = 0.0  # the unedited face is the reference
    wild = rng.random(dy.shape) < outliers
    dy[wild] += rng.choice([-40.0, 40.0], size=wild.sum())
    return dy, k


def age_set(scale=2.0, calibration=None):
    rng = np.random.default_rng(1)
    return DirectionSet([
        Direction("age", rng.normal(size=W_DIM), scale=scale, calibration=calibration),
        Direction("gender", rng.normal(size=W_DIM), scale=1.0),
    ])


def test_fit_recovers_a_known_slope_despite_outliers():
    dy, _ = synthetic_labeler_changes(pos=5.0, neg=5.0, face_sd=0.0, outliers=0.1)
    cal = fit_years_calibration(GRID, dy, scale=2.0, fitted_on="synthetic")
    assert cal.per_strength == pytest.approx(5.0, abs=0.15)
    assert cal.per_strength_pos == pytest.approx(5.0, abs=0.25)
    assert cal.per_strength_neg == pytest.approx(5.0, abs=0.25)
    assert abs(cal.intercept) < 0.5
    # a plain least-squares line would be pulled by the +-40 year misreadings; the residual spread ignores them
    assert cal.residual_years == pytest.approx(1.0, abs=0.3)
    assert cal.n == 60 and cal.curve["strengths"] == GRID.tolist()
    assert cal.curve["median"][GRID.tolist().index(2)] == pytest.approx(10.0, abs=0.6)


def test_fit_separates_the_two_sides_and_measures_the_spread_between_faces():
    dy, k = synthetic_labeler_changes(pos=7.0, neg=3.0, face_sd=1.2, noise=0.3, outliers=0.0, seed=2)
    cal = fit_years_calibration(GRID, dy, scale=1.0)
    assert cal.per_strength_pos == pytest.approx(7.0, rel=0.05)
    assert cal.per_strength_neg == pytest.approx(3.0, rel=0.05)
    assert 3.0 < cal.per_strength < 7.0
    # each face's slope is a blend of its two sides times its own factor k: the spread is of that order
    per_face_ref = np.std(k[:, 0] * 5.0)
    assert cal.spread == pytest.approx(per_face_ref, rel=0.35)
    assert cal.spread > 0.5  # far from the 0 a fit that ignored the faces' differences would give


def test_missing_measurements_and_unusable_fits_are_clear():
    dy, _ = synthetic_labeler_changes(n_faces=5, outliers=0.0)
    dy[0, :] = np.nan  # a face whose landmarks were never found
    cal = fit_years_calibration(GRID, dy, scale=1.0)
    assert cal.n == 4
    with pytest.raises(FaceAppError, match="no face has 2 measured edits"):
        fit_years_calibration(GRID, np.full((3, 7), np.nan), scale=1.0)
    with pytest.raises(FaceAppError, match="does not change"):
        fit_years_calibration(GRID, np.zeros((3, 7)), scale=1.0)
    with pytest.raises(FaceAppError, match="do not match"):
        fit_years_calibration(GRID[:3], dy, scale=1.0)


def test_years_to_strength_follows_the_slope_and_inverts():
    cal = YearsCalibration(per_strength=6.0, scale=2.0, per_strength_pos=8.0, per_strength_neg=5.0)
    ds = age_set(scale=2.0, calibration=cal)
    assert has_years(ds, "age") and not has_years(ds, "gender") and not has_years(ds, "smile")
    assert years_to_strength(ds, "age", 10) == pytest.approx(10 / 8.0)  # older: the + side's slope
    assert years_to_strength(ds, "age", -10) == pytest.approx(-10 / 5.0)  # younger: the - side's slope
    assert years_to_strength(ds, "age", 0) == 0.0
    for years in (-25, -3, 4, 30):
        assert strength_to_years(ds, "age", years_to_strength(ds, "age", years)) == pytest.approx(years)
    # only a pooled slope: the same on both sides
    ds1 = age_set(scale=2.0, calibration=YearsCalibration(per_strength=6.0, scale=2.0))
    assert years_to_strength(ds1, "age", 30) == pytest.approx(5.0)
    assert years_to_strength(ds1, "age", -12) == pytest.approx(-2.0)


def test_calibration_is_per_w_unit_so_a_new_scale_keeps_the_years():
    """Strength 1 moves scale W units: doubling the scale halves the strength for the same years, and the
    code moves exactly as far for 30 years either way."""
    ds = age_set(scale=2.0, calibration=YearsCalibration(per_strength=6.0, scale=2.0))
    ds2 = DirectionSet([d.replace(scale=4.0) if d.name == "age" else d for d in ds.values()])
    assert years_per_strength(ds2, "age") == pytest.approx(12.0)
    s1, s2 = years_to_strength(ds, "age", 30), years_to_strength(ds2, "age", 30)
    assert s2 == pytest.approx(s1 / 2)
    ws = torch.zeros(1, 4, W_DIM, dtype=torch.float64)
    torch.testing.assert_close(apply_edits(ws, ds, {"age": s1}), apply_edits(ws, ds2, {"age": s2}))
    # DirectionSet.calibrated (re-measured scales) keeps it valid the same way
    w = np.random.default_rng(0).normal(size=(500, W_DIM)) * 3
    ds3 = ds.calibrated(w)
    d3 = ds3["age"]
    assert years_to_strength(ds3, "age", 30) * d3.scale == pytest.approx(s1 * 2.0)


def test_refused_without_calibration_with_a_message_that_says_what_to_do():
    ds = age_set()
    with pytest.raises(YearsUnavailableError, match="no years calibration.*strength.*-m training.calibrate_years"):
        years_to_strength(ds, "age", 10)
    with pytest.raises(YearsUnavailableError):
        strength_to_years(ds, "age", 1.0)
    with pytest.raises(FaceAppError, match="no 'smile' direction"):
        years_to_strength(ds, "smile", 10)


def test_bad_calibrations_are_refused():
    with pytest.raises(FaceAppError, match="per_strength is 0"):
        YearsCalibration(per_strength=0.0, scale=1.0)
    with pytest.raises(FaceAppError, match="unit"):
        YearsCalibration(per_strength=1.0, scale=1.0, unit="months")
    with pytest.raises(FaceAppError, match="direction 'age'.*lacks scale"):
        Direction("age", np.ones(W_DIM), calibration={"unit": "years", "per_strength": 3.0})
    with pytest.raises(FaceAppError, match="finite"):
        YearsCalibration(per_strength=float("nan"), scale=1.0)
    # a side slope of the wrong sign cannot be inverted: dropped, the pooled slope is used
    cal = YearsCalibration(per_strength=5.0, scale=1.0, per_strength_neg=-1.0)
    assert cal.per_strength_neg is None and cal.slope(-1) == 5.0


def test_round_trip_through_disk_and_provenance_stamp(tmp_path):
    dy, _ = synthetic_labeler_changes(outliers=0.0)
    cal = fit_years_calibration(GRID, dy, scale=2.0, fitted_on="utkface-heldout-eval.txt", hold=["gender"])
    ds = with_calibration(age_set(scale=2.0), "age", cal)
    ds = stamped(ds, {"family": "stylegan2", "w_dim": W_DIM, "num_ws": 4})  # as save_bundle does
    ds.save(tmp_path / "d")
    doc = json.loads((tmp_path / "d" / "directions.json").read_text())
    assert doc["format_version"] == 1  # readers that do not know the key still load it
    assert "calibration" in doc["directions"]["age"] and "calibration" not in doc["directions"]["gender"]
    back = DirectionSet.load(tmp_path / "d")
    assert back.meta["generator"]["w_dim"] == W_DIM
    assert back["age"].years == cal
    assert back["age"].years.hold == ("gender",)
    assert years_to_strength(back, "age", 30) == pytest.approx(years_to_strength(ds, "age", 30))
    assert back["gender"].calibration is None
    # a set written before calibrations existed (no key) loads with none
    del doc["directions"]["age"]["calibration"]
    (tmp_path / "d" / "directions.json").write_text(json.dumps(doc))
    assert not has_years(DirectionSet.load(tmp_path / "d"), "age")
    # and removing it again
    assert with_calibration(ds, "age", None)["age"].calibration is None


def by_age_changes(seed=0):
    """Age changes of 30 faces that look 20-30 (older: 1.2 s^2 years, faster than linear; younger: -0.5 s) and 30
    that look 55-65 (older: 2 s, younger: -3 s), with noise, on GRID; and each face's estimated age."""
    rng = np.random.default_rng(seed)
    young = np.where(GRID > 0, 1.2 * GRID**2, 0.5 * GRID)
    old = np.where(GRID > 0, 2.0 * GRID, 3.0 * GRID)
    dy = np.concatenate([np.tile(young, (30, 1)), np.tile(old, (30, 1))]) + 0.3 * rng.standard_normal((60, 7))
    dy[:, GRID == 0] = 0.0
    ages = np.concatenate([rng.uniform(20, 30, 30), rng.uniform(55, 65, 30)])
    return dy, ages


def test_by_age_rows_are_the_medians_of_faces_that_look_that_old():
    dy, ages = by_age_changes()
    b = fit_years_by_age(GRID, dy, ages, edges=(40.0,))
    assert b["n"] == [30, 30]
    assert b["ages"][0] == pytest.approx(25, abs=2.5) and b["ages"][1] == pytest.approx(60, abs=2.5)
    assert b["strengths"] == GRID.tolist()
    np.testing.assert_allclose(b["years"][0], np.where(GRID > 0, 1.2 * GRID**2, 0.5 * GRID), atol=0.3)
    np.testing.assert_allclose(b["years"][1], np.where(GRID > 0, 2.0 * GRID, 3.0 * GRID), atol=0.3)
    # a band with too few faces joins its neighbour; none with enough: no table
    b2 = fit_years_by_age(GRID, dy, ages, edges=(22.0, 40.0), min_faces=8)
    assert sum(b2["n"]) == 60 and all(n >= 8 for n in b2["n"])
    assert fit_years_by_age(GRID, dy[:5], ages[:5]) is None
    # a noisy dip (a stronger edit read younger) is made monotone: each row can be inverted
    dip = dy.copy()
    dip[:30, GRID.tolist().index(2)] = 0.1
    row = np.array(fit_years_by_age(GRID, dip, ages, edges=(40.0,))["years"][0])
    assert np.all(np.diff(row) > 0)


def test_years_follow_the_curve_of_a_face_that_looks_that_old():
    """With by_age, 12 years is strength 3 on a face that looks 25 (1.2 s^2 reads 10.8 at 3: a bit more) and 6 on
    one that looks 60 (2 s); between, the rows are read linearly; without an age, the pooled line."""
    dy, ages = by_age_changes()
    cal = fit_years_calibration(GRID, dy, scale=2.0)
    cal = YearsCalibration(**{**cal.to_dict(), "by_age": fit_years_by_age(GRID, dy, ages, edges=(40.0,))})
    ds = DirectionSet([Direction("age", np.ones(W_DIM), scale=2.0, strength_range=(-3.0, 3.0),
                                 calibration=cal.to_dict())])
    young, old = cal.by_age["ages"]
    assert strength_to_years(ds, "age", 3.0, age=young) == pytest.approx(10.8, abs=0.3)
    assert strength_to_years(ds, "age", 3.0, age=old) == pytest.approx(6.0, abs=0.3)
    assert strength_to_years(ds, "age", 3.0, age=(young + old) / 2) == pytest.approx(8.4, abs=0.3)
    assert strength_to_years(ds, "age", 3.0, age=90.0) == pytest.approx(6.0, abs=0.3)  # held at the ends
    assert strength_to_years(ds, "age", 1.0, age=young) == pytest.approx(1.2, abs=0.3)  # not a line
    for age in (young, old, 40.0, 5.0):
        for years in (-7.0, -1.0, 2.5, 5.5, 10.0):
            s = years_to_strength(ds, "age", years, age=age)
            assert strength_to_years(ds, "age", s, age=age) == pytest.approx(years, abs=1e-6)
    assert years_to_strength(ds, "age", 5.0) == pytest.approx(5.0 / cal.slope(1))  # no age: the pooled line
    # the years survive a new scale, as the pooled line's do
    ds2 = DirectionSet([ds["age"].replace(scale=4.0)])
    assert years_to_strength(ds2, "age", 5.0, age=old) == pytest.approx(years_to_strength(ds, "age", 5.0, age=old) / 2)
    # past the range: held to it, and the years it reads are what the face gets
    s, got = years_edit(ds, "age", 12.0, age=old)
    assert s == 3.0 and got == pytest.approx(6.0, abs=0.3)
    s, got = years_edit(ds, "age", 8.0, age=young)
    assert 2.0 < s < 3.0 and got == pytest.approx(8.0)
    assert years_edit(ds, "age", 0.0, age=old) == (0.0, 0.0)
    lo, hi = years_reach(ds, "age", age=young)
    assert lo == pytest.approx(-1.5, abs=0.3) and hi == pytest.approx(10.8, abs=0.3)
    assert years_reach(ds, "age", age=old)[0] == pytest.approx(-9.0, abs=0.3)


def test_a_bad_by_age_table_is_refused_and_a_good_one_survives_the_disk(tmp_path):
    base = {"per_strength": 2.0, "scale": 1.0}
    table = {"ages": [25.0, 60.0], "strengths": [-1.0, 0.0, 1.0], "years": [[-1.0, 0.0, 3.0], [-2.0, 0.0, 1.0]]}
    for bad, match in ((dict(table, years=[[0.0, 1.0]]), "years must be"),
                       (dict(table, strengths=[1.0, 0.0, -1.0]), "must rise"),
                       (dict(table, strengths=[-1.0, 0.5, 1.0]), "strength 0"),
                       (dict(table, years=[[-1.0, 0.0, float("nan")], [-2.0, 0.0, 1.0]]), "not finite"),
                       ({"ages": [25.0]}, "lacks 'strengths'"),
                       ("table", "JSON object")):
        with pytest.raises(FaceAppError, match=match):
            YearsCalibration(**base, by_age=bad)
    ds = with_calibration(age_set(scale=1.0), "age", YearsCalibration(**base, by_age=table))
    ds.save(tmp_path / "d")
    back = DirectionSet.load(tmp_path / "d")
    assert back["age"].years.by_age["years"] == table["years"]
    assert strength_to_years(back, "age", 1.0, age=60.0) == pytest.approx(1.0)
    # a calibration without by_age writes no key (readers before it load it as they did)
    assert "by_age" not in YearsCalibration(**base).to_dict()
