"""training/age_profile.py's choice: per estimated-age band, the candidate that ages most faces past the target
among those that keep enough of them the same person; the profile it writes is one a bundle accepts."""

from pathlib import Path

import numpy as np
import pytest

from faceapp.bundle import _check_age_profile
from training.age_profile import CANDIDATES, SWITCH_YEARS, YOUNGER_ENDS, child_band, choose_profile, choose_younger


def test_each_band_gets_the_strongest_candidate_that_keeps_its_faces():
    est0 = np.array([20.0, 22, 24, 26, 50, 52, 54, 56])
    young, old = est0 < 38, est0 >= 38
    names = list(CANDIDATES)
    change = {k: np.zeros(8) for k in names}
    dist = {k: np.full(8, 0.3) for k in names}
    # young faces: every candidate ages them past 15, the strongest ones lose them (identity distance 0.7)
    for k in names:
        change[k][young] = 20.0
    dist["strongest"][young] = 0.7
    dist["stronger"][young] = 0.7
    # old faces: only the strongest ages them past 15, and it keeps them
    change["strongest"][old] = 16.0
    profile, table = choose_profile(est0, change, dist, (38,), min_same=0.85, target=15.0)
    chosen = {(r["band"][0], r["candidate"]) for r in table if r["chosen"]}
    assert len(chosen) == 2
    young_pick = next(c for lo, c in chosen if lo < 0)
    assert young_pick not in ("strongest", "stronger")  # they lose the young faces
    assert (38.0, "strongest") in chosen
    # each band's mix over the band, not only at its faces' median: it changes within SWITCH_YEARS of the edge
    assert profile["ages"] == [38 - SWITCH_YEARS, 38 + SWITCH_YEARS]
    for age, pick in ((20.0, young_pick), (30.0, young_pick), (45.0, "strongest"), (60.0, "strongest")):
        for part in ("shape", "gain", "cap", "late_shape"):
            assert np.interp(age, profile["ages"], profile[part]) == CANDIDATES[pick][part]
    _check_age_profile(profile, root=Path("."))  # a bundle takes it


def test_a_band_no_candidate_keeps_gets_the_one_that_keeps_most():
    est0 = np.array([50.0, 60.0])
    change = {k: np.full(2, 20.0) for k in CANDIDATES}
    dist = {k: np.full(2, 0.7) for k in CANDIDATES}
    dist["gentle"][:] = [0.5, 0.7]  # keeps one of two
    _, table = choose_profile(est0, change, dist, (38,), min_same=0.85)
    assert [r["candidate"] for r in table if r["chosen"]] == ["gentle"]


def test_a_tie_goes_to_the_candidate_that_ages_more_whatever_the_list_order():
    est0 = np.array([20.0, 22, 24, 26])
    change = {k: np.array([16.0, 16, 10, 10]) for k in CANDIDATES}
    dist = {k: np.full(4, 0.3) for k in CANDIDATES}
    adults = [k for k in CANDIDATES if not CANDIDATES[k]["growth"]]
    first, last = adults[0], adults[-1]  # the same share >= 15 and the same identity
    change[last] = np.array([18.0, 19, 12, 12])
    _, table = choose_profile(est0, change, dist, (38,), min_same=0.85)
    assert [r["candidate"] for r in table if r["chosen"]] == [last]
    change[first] = np.array([18.0, 19, 13, 13])
    _, table = choose_profile(est0, change, dist, (38,), min_same=0.85)
    assert [r["candidate"] for r in table if r["chosen"]] == [first]


@pytest.mark.parametrize("bad", [{"ages": [3, 3], "shape": [1, 1]}, {"ages": [1], "shape": [5]},
                                 {"ages": [1], "late_shape": [-1]}])
def test_bad_profiles_are_refused(bad):
    from faceapp.errors import CheckpointError

    with pytest.raises(CheckpointError):
        _check_age_profile(bad, root=Path("."))


def test_children_choose_among_growth_candidates_and_no_one_else_does():
    """Below --child-below a band picks only candidates with growth (a lined child reads old to the estimator, and
    would win the plain rule); above it, growth candidates are never picked, whatever they score."""
    est0 = np.array([5.0, 7, 9, 11, 30, 32, 34, 36])
    names = list(CANDIDATES)
    change = {k: np.full(8, 30.0 if CANDIDATES[k]["growth"] == 0 else 8.0) for k in names}
    change["grow-more"][:] = 40.0  # the best of all, everywhere
    dist = {k: np.full(8, 0.3) for k in names}
    profile, table = choose_profile(est0, change, dist, (13,), min_same=0.9, target=15.0, child_below=13)
    chosen = {r["band"][1]: r["candidate"] for r in table if r["chosen"]}
    assert chosen[13.0] == "grow-more"
    assert CANDIDATES[chosen[np.inf]]["growth"] == 0
    # growing up gives way to growing old within SWITCH_YEARS of child_below, not between the bands' medians
    g = CANDIDATES["grow-more"]["growth"]
    assert profile["ages"] == [13 - SWITCH_YEARS, 13 + SWITCH_YEARS]
    assert profile["growth"] == [g, 0.0] and profile["hair"] == [0.0, 1.0]
    assert {r["candidate"] for r in table if r["band"][1] == 13.0} == {k for k in names if CANDIDATES[k]["growth"]}
    # without child_below (or without growth candidates) no band picks a growth candidate
    _, table = choose_profile(est0, change, dist, (13,), min_same=0.9, target=15.0)
    assert all(CANDIDATES[r["candidate"]]["growth"] == 0 for r in table if r["chosen"])
    plain = {k: v for k, v in change.items() if CANDIDATES[k]["growth"] == 0}
    _, table = choose_profile(est0, plain, dist, (13,), min_same=0.9, target=15.0, child_below=13)
    assert all(CANDIDATES[r["candidate"]]["growth"] == 0 for r in table if r["chosen"])
    _check_age_profile(profile, root=Path("."))


def test_reuse_chooses_again_from_saved_measures_without_measuring(tmp_path, capsys):
    """--reuse reads the per-face measures a fit wrote (no bundle, no photos) and chooses under the rule given;
    measures of a candidate the script no longer has are refused, not silently dropped."""
    import json

    from training.age_profile import main

    rng = np.random.default_rng(0)
    est0 = rng.uniform(15, 80, 40)
    names = [k for k in CANDIDATES if CANDIDATES[k]["growth"] == 0]
    change = {k: rng.uniform(0, 30, 40) for k in names}
    dist = {k: rng.uniform(0.2, 0.7, 40) for k in names}
    faces = tmp_path / "faces.npz"
    np.savez(faces, est0=est0, t_end=1.75, wrinkles=1.5, **{f"change/{k}": v for k, v in change.items()},
             **{f"dist/{k}": v for k, v in dist.items()})
    for min_same in (0.5, 0.8):
        out = tmp_path / f"p{min_same}.json"
        assert main(["--reuse", "--faces", str(faces), "--out", str(out), "--bands", "38,47",
                     "--min-same", str(min_same), "--bundle", str(tmp_path / "no-such-bundle")]) == 0
        want, _ = choose_profile(est0, change, dist, (38, 47), min_same=min_same, target=15.0, child_below=13.0)
        got = json.loads(out.read_text())
        assert got["by_age"] == want and got["t_end"] == 1.75 and got["faces"] == 40
    np.savez(faces, est0=est0, t_end=1.75, wrinkles=1.5, **{"change/retired": est0, "dist/retired": est0})
    assert main(["--reuse", "--faces", str(faces), "--out", str(tmp_path / "x.json")]) == 2
    assert "retired" in capsys.readouterr().err


def test_the_younger_end_drops_most_among_those_that_keep_faces():
    """The slider's younger end: the t whose faces read youngest among those keeping >= min_same the same person;
    faces not measured (NaN: too young to be made younger) do not count; none keeps enough: the one keeping most."""
    nan = np.nan
    change = {2.0: np.array([-8.0, -10, -12, nan]), 2.5: np.array([-12.0, -14, -16, nan]),
              3.0: np.array([-20.0, -22, -24, nan])}
    dist = {2.0: np.array([0.3, 0.4, 0.5, nan]), 2.5: np.array([0.4, 0.5, 0.55, nan]),
            3.0: np.array([0.5, 0.7, 0.8, nan])}
    t, table = choose_younger(change, dist, min_same=0.85)
    assert t == 2.5 and [r["faces"] for r in table] == [3, 3, 3]
    assert choose_younger(change, dist, min_same=0.3)[0] == 3.0
    far = {k: v + 0.15 for k, v in dist.items()}  # none keeps 85 %: the one keeping most (2.0 keeps 2 of 3)
    assert choose_younger(change, far, min_same=0.85)[0] == 2.0
    assert choose_younger({}, {})[0] is None


def test_reuse_reads_the_younger_measures(tmp_path):
    import json

    from training.age_profile import main

    rng = np.random.default_rng(1)
    est0 = rng.uniform(15, 80, 30)
    names = [k for k in CANDIDATES if CANDIDATES[k]["growth"] == 0]
    ych = {te: np.where(est0 > 40, -te * 5 + rng.normal(0, 1, 30), np.nan) for te in YOUNGER_ENDS}
    yd = {te: np.where(est0 > 40, 0.2 * te, np.nan) for te in YOUNGER_ENDS}  # identity goes as t grows
    faces = tmp_path / "faces.npz"
    np.savez(faces, est0=est0, t_end=1.75, wrinkles=1.5, younger_from=40, **{f"change/{k}": est0 for k in names},
             **{f"dist/{k}": est0 * 0 for k in names}, **{f"ychange/{te}": v for te, v in ych.items()},
             **{f"ydist/{te}": v for te, v in yd.items()})
    out = tmp_path / "p.json"
    assert main(["--reuse", "--faces", str(faces), "--out", str(out), "--younger-from", "60"]) == 0
    got = json.loads(out.read_text())
    assert got["younger_end"] == max(te for te in YOUNGER_ENDS if 0.2 * te < 0.6)
    assert got["options"]["younger_from"] == 40  # what the measures were made with, whatever this run says
    assert _check_age_profile(got["by_age"], None) is None


def test_a_band_chooses_only_among_candidates_measured_on_all_its_faces():
    """A fit measures each face only on the candidates its band can choose (NaN elsewhere): a candidate missing
    on some of a band's faces is left out of that band's table, and a band none was measured on is refused."""
    est0 = np.array([20.0, 22, 24, 50, 52, 54])
    names = [k for k in CANDIDATES if not CANDIDATES[k]["growth"]]
    change = {k: np.full(6, 10.0) for k in names}
    dist = {k: np.full(6, 0.3) for k in names}
    change["strongest"][:] = [30.0, 30, np.nan, 30, 30, 30]  # best everywhere, but not measured on one young face
    _, table = choose_profile(est0, change, dist, (38,), min_same=0.85)
    young = [r for r in table if r["band"][1] == 38.0]
    assert "strongest" not in {r["candidate"] for r in young} and len(young) == len(names) - 1
    assert {r["band"][0]: r["candidate"] for r in table if r["chosen"]}[38.0] == "strongest"
    for k in names:
        change[k][0] = np.nan
    with pytest.raises(ValueError, match="measure again"):
        choose_profile(est0, change, dist, (38,), min_same=0.85)


def test_child_band_is_the_band_choose_profile_treats_as_a_child():
    bands = (6, 13, 38, 47)
    assert [child_band(a, bands, 13.0) for a in (0.5, 5.9, 6.0, 12.9, 13.0, 40.0, 90.0)] == \
        [True, True, True, True, False, False, False]
    assert not child_band(3.0, bands, None)
    assert child_band(14.0, (20,), 25.0) and not child_band(14.0, (20,), 15.0)


def test_a_fit_measures_children_on_growth_candidates_and_adults_on_the_rest(tmp_path, monkeypatch):
    """The measuring run, with stand-ins for the bundle, the detector and the meter: a face is aged only with the
    candidates its estimated age's band can choose, the rest are NaN in the saved measures, and the profile is
    chosen from them (children among growth mixes, adults among the rest)."""
    import io
    import json
    import zipfile
    from types import SimpleNamespace

    from PIL import Image

    import faceapp.align
    import faceapp.bundle
    import training.calibrate_years
    from faceapp.errors import NoFaceError
    from training.age_profile import main

    ages = [3, 5, 8, 10, 20, 30, 40, 50, 60, 70, 99]  # the 99-year-old's photo has no face the detector finds
    zpath = tmp_path / "utk.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for i, a in enumerate(ages):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (a, 0, 0)).save(buf, "JPEG", quality=100)  # the true age in the red channel
            z.writestr(f"UTKFace/{a}_0_0_2017010{i}.jpg.chip.jpg", buf.getvalue())
    aged = []

    class Bundle:
        age_prototypes = age_prototypes_late = age_prototypes_growth = age_estimator = object()
        directions = {"age": SimpleNamespace(strength_range=(-12.0, 12.0))}
        wrinkles = 1.0

        def age_split(self, s):
            return 0.0, s / 10

        def age_photo(self, photo, lm, t, scales=None):
            aged.append((photo.getpixel((4, 4))[0], scales))
            return (photo, t, scales)

    class Meter:
        def __init__(self, *a, **k):
            pass

        def views(self, face, images):
            return images

        def measure(self, crops):
            # the photo reads its true age; an aged one +growth x 10 (children) or +shape x 10 (adults), same person
            age = []
            for c in crops:
                if isinstance(c, tuple):
                    sc = c[2] or {}
                    age.append(c[0].getpixel((4, 4))[0] + 10 * (sc.get("growth", 0) + sc.get("shape", 0)))
                else:
                    age.append(c.getpixel((4, 4))[0])
            return {"age": np.array(age, float), "desc": np.zeros((len(crops), 128))}

    monkeypatch.setattr(faceapp.bundle, "load_bundle", lambda *a, **k: Bundle())
    def detect(im):
        if im.getpixel((4, 4))[0] > 95:
            raise NoFaceError("no face found in the image")
        return [SimpleNamespace(landmarks68=None)]

    monkeypatch.setattr(faceapp.align, "detect_faces", detect)
    monkeypatch.setattr(training.calibrate_years, "PhotoMeter", Meter)
    out = tmp_path / "p.json"
    assert main(["--zip", str(zpath), "--out", str(out), "--per-band", "20", "--true-bands", "1,100"]) == 0
    growing = {k for k in CANDIDATES if CANDIDATES[k]["growth"]}
    for true_age, sc in aged:
        if sc is None:  # the younger end, on faces of 40+
            assert true_age >= 40
            continue
        kind = {k for k, v in CANDIDATES.items() if v == sc}
        assert kind and (kind <= growing) == (true_age < 13), (true_age, kind)
    with np.load(out.with_suffix(".npz")) as f:
        assert len(f["est0"]) == len(ages) - 1 and f["est0"].max() < 95  # the faceless photo skipped, not fatal
        child = f["est0"] < 13
        assert child.sum() == 4
        for k in CANDIDATES:
            measured = np.isfinite(f[f"change/{k}"])
            assert (measured == child).all() if k in growing else (measured == ~child).all()
    chosen = {r["band"][1]: r["candidate"] for r in json.loads(out.read_text())["table"] if r["chosen"]}
    assert chosen[6.0] == chosen[13.0] == "grow-furthest"  # the most growth reads oldest here
    assert CANDIDATES[chosen[np.inf]]["shape"] == max(v["shape"] for v in CANDIDATES.values())
