"""training/calibrate_years.py: the measuring loop against a labeler of known slope, the labeler checks, end to end."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from faceapp.edits import DirectionSet, has_years, years_to_strength
from faceapp.errors import FaceAppError
from training.calibrate_years import calibrate, check_labeler

SLOPE = 4.0  # years per strength the stub editor's results read as


class StubEditor:
    """A FaceEditor stand-in: the 'result' of age strength s is a grey image of level 100 + SLOPE * s * k_face."""

    def __init__(self, directions):
        self.bundle = type("B", (), {"directions": directions})()

    def detect(self, photo):
        return [photo.info["k"]]

    def prepare(self, photo, faces, mode, detected):
        return [detected[0]]

    def compose(self, photo, prepared, strengths, hold=()):
        level = 100 + SLOPE * strengths.get("age", 0.0) * prepared[0]
        im = Image.new("RGB", (8, 8), (int(round(level)),) * 3)
        return im


class StubMeter:
    """Reads 'age' as the image's grey level; one face in eight is misread by 30 years (the fit must shrug)."""

    def __init__(self):
        self.calls = 0

    def views(self, face, images):
        return [np.asarray(im, np.float64) for im in images]

    def measure(self, crops):
        self.calls += 1
        age = np.array([c.mean() for c in crops])
        if self.calls % 8 == 0:
            age[-1] += 30
        return {"age": age, "p_female": np.zeros(len(crops)), "desc": np.zeros((len(crops), 128))}


def _directions():
    from faceapp.edits import Direction

    return DirectionSet([Direction("age", np.ones(8), scale=2.0)])


def _photo(k):
    im = Image.new("RGB", (8, 8), (100, 100, 100))
    im.info["k"] = k
    return im


def test_calibrate_recovers_the_slope_the_results_read_as():
    ks = np.random.default_rng(0).uniform(0.8, 1.2, 16)
    photos = [(f"f{i}.jpg", _photo(k)) for i, k in enumerate(ks)]
    cal, rows = calibrate(StubEditor(_directions()), StubMeter(), photos, [-2, -1, 0, 1, 2], progress=lambda m: None)
    assert cal.per_strength == pytest.approx(SLOPE * ks.mean(), rel=0.06)
    assert cal.n == 16 and cal.scale == 2.0
    assert cal.spread == pytest.approx(SLOPE * ks.std(), rel=0.5)
    assert rows[0]["delta_years"][2] == 0.0 and rows[0]["age0"] == 100.0
    assert cal.checks["two_fold_median_error_years"] < 1.0


def test_with_an_age_estimator_the_calibration_has_curves_by_how_old_faces_look():
    """Faces whose unedited photo reads older age more slowly (their 'k' is smaller): the by_age rows, anchored at
    the estimated ages, carry each group's own slope, and a draw per band takes faces of every true age."""
    from training.calibrate_years import draw_per_band

    ks = np.array([1.5] * 10 + [0.5] * 10)
    photos = [(f"f{i}.jpg", _photo(k)) for i, k in enumerate(ks)]

    class AgedMeter(StubMeter):  # the unedited photo reads 20 (fast agers) or 60 (slow ones)
        age_estimator = object()

        def views(self, face, images):
            return [np.asarray(im, np.float64) + (0.0 if face > 1 else 40.0) - 80.0 for im in images]

    editor = StubEditor(_directions())
    # the bundle's own estimator reads the unedited photo 5 years older than the measure: the rows are the editor's
    editor.bundle.age_estimator = lambda x: (x.float().mean(dim=(1, 2, 3)) + 1) * 127.5 + 5
    cal, rows = calibrate(editor, AgedMeter(), photos, [-2, -1, 0, 1, 2], progress=lambda m: None)
    assert rows[0]["age0"] == 20.0 and rows[0]["age_bundle"] == pytest.approx(25.0, abs=0.01)
    assert cal.by_age["ages"] == [pytest.approx(25.0, abs=0.01), pytest.approx(65.0, abs=0.01)]
    assert cal.by_age["n"] == [10, 10]
    np.testing.assert_allclose(cal.by_age["years"][0], SLOPE * 1.5 * np.array([-2, -1, 0, 1, 2]), atol=1e-2)
    np.testing.assert_allclose(cal.by_age["years"][1], SLOPE * 0.5 * np.array([-2, -1, 0, 1, 2]), atol=1e-2)
    editor.bundle.age_estimator = None  # a bundle without an estimator converts with the pooled line alone
    assert calibrate(editor, AgedMeter(), photos, [-2, -1, 0, 1, 2], progress=lambda m: None)[0].by_age is None

    names = [f"{a}_0_0_2017{i:04d}.jpg.chip.jpg" for i, a in enumerate([3, 5, 8, 20, 22, 30, 45, 70, 71, 72, 90])]
    drawn = draw_per_band(names, 2, seed=1)
    assert drawn == [n for n in names if n in drawn]  # in the list's order
    ages = [int(n.split("_")[0]) for n in drawn]
    assert sum(a < 13 for a in ages) == 2 and sum(a >= 62 for a in ages) == 2 and 30 in ages and 45 in ages
    assert draw_per_band(names, 2, seed=1) == drawn


def test_the_labeler_must_have_left_the_held_out_faces_out():
    class Labeler:
        def __init__(self, excludes, near):
            self._ex, self._near = excludes, near

        def excludes(self, names):
            return self._ex

        def nearest_distance(self, desc):
            return np.full(len(desc), self._near)

    class Meter:
        def raw(self, images):
            return {"desc": np.zeros((len(images), 128))}

    names, photos = ["a.jpg", "b.jpg"], [None, None]
    with pytest.raises(FaceAppError, match="does not record leaving.*fit-age-gender"):
        check_labeler(Labeler(False, 0.5), names)
    assert "unchecked" in check_labeler(Labeler(False, 0.5), names, allow_unchecked=True)[0]
    with pytest.raises(FaceAppError, match="fitted on 2 of the held-out photos"):
        check_labeler(Labeler(True, 0.0), names, Meter(), photos)
    assert check_labeler(Labeler(True, 0.4), names, Meter(), photos) == []
    # faces drawn from a list (--per-band): the record is checked for the whole list, and they must be in it
    seen = []

    class Recorder(Labeler):
        def excludes(self, names):
            seen.append(list(names))
            return True

    assert check_labeler(Recorder(True, 0.4), ["b.jpg"], Meter(), [None], whole=names) == [] and seen == [names]
    with pytest.raises(FaceAppError, match="not all from the held-out list"):
        check_labeler(Recorder(True, 0.4), ["z.jpg"], whole=names)


@pytest.mark.slow
def test_end_to_end_on_a_tiny_bundle_writes_a_calibration_the_cli_uses(tmp_path):
    """Real FaceEditor, real dlib descriptors and landmarks, a kNN 'labeler' on random references: the numbers
    mean nothing, but every step runs and the bundle comes out calibrated."""
    from faceapp.align import align_face, detect_faces, load_image, utkface_spec
    from faceapp.bundle import make_random_bundle
    from training.age_gender import AgeGenderModel
    from training.calibrate_years import main
    from training.utkface import name_list_digest

    photo = load_image("tests/data/astronaut.jpg")
    crop = align_face(photo, detect_faces(photo, backend="dlib")[0], utkface_spec(200)).image
    names = [f"{30 + i}_1_0_2017000{i}.jpg.chip.jpg" for i in range(2)]
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as z:
        for n in names:
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=95)
            z.writestr(f"UTKFace/{n}", buf.getvalue())
    (tmp_path / "faces.txt").write_text("\n".join(names) + "\n")
    rng = np.random.default_rng(0)
    ag = AgeGenderModel.fit(rng.normal(size=(60, 128)) * 0.1, rng.uniform(1, 90, 60), rng.integers(0, 2, 60))
    ag = AgeGenderModel(**{**ag.__dict__, "metrics": {"excluded": {"faces.txt": {"digest": name_list_digest(names)}}}})
    ag.save(tmp_path / "ag.safetensors")
    bundle = make_random_bundle(tmp_path / "bundle", resolution=32, seed=1)
    rc = main(["--bundle", str(bundle), "--age-gender-model", str(tmp_path / "ag.safetensors"), "--age-model", "",
               "--faces",
               str(tmp_path / "faces.txt"), "--zip", str(tmp_path / "u.zip"), "--strengths=-3,0,3", "--steps",
               "1", "--out", str(tmp_path / "out")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert len(doc["faces"]) == 2 and doc["calibration"]["n"] == 2
    assert (tmp_path / "out" / "calibration.png").stat().st_size > 1000
    ds = DirectionSet.load(bundle / "directions")
    assert has_years(ds, "age") and ds["age"].years.per_strength == pytest.approx(doc["calibration"]["per_strength"])
    assert years_to_strength(ds, "age", 10) == pytest.approx(10 / ds["age"].years.slope(np.sign(
        ds["age"].years.per_strength)))


@pytest.mark.slow
def test_the_age_estimator_is_the_measure_and_must_have_left_the_faces_out(tmp_path):
    """With --age-model the calibration reads ages with the estimator (a tiny random one here), and refuses one
    whose checkpoint does not record leaving the held-out faces out."""
    from faceapp.align import align_face, detect_faces, load_image, utkface_spec
    from faceapp.bundle import make_random_bundle
    from faceapp.stylegan.checkpoint import save_networks
    from training.age_estimator import AgeEstimator, register
    from training.calibrate_years import main
    from training.utkface import name_list_digest

    photo = load_image("tests/data/astronaut.jpg")
    crop = align_face(photo, detect_faces(photo, backend="dlib")[0], utkface_spec(200)).image
    names = ["40_1_0_20170001.jpg.chip.jpg"]
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as z:
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=95)
        z.writestr(f"UTKFace/{names[0]}", buf.getvalue())
    (tmp_path / "faces.txt").write_text(names[0] + "\n")
    register()
    torch.manual_seed(0)
    net = AgeEstimator(resolution=32, width_mult=0.25).eval()
    torch.nn.init.normal_(net.head.weight, std=2.0)  # a random estimator whose reading moves with the pixels
    save_networks(tmp_path / "good.safetensors", {"age": net},
                  extra={"excluded_digests": {"faces.txt": name_list_digest(names)}})
    save_networks(tmp_path / "bad.safetensors", {"age": net}, extra={"excluded_digests": {}})
    bundle = make_random_bundle(tmp_path / "bundle", resolution=32, seed=1)
    args = ["--bundle", str(bundle), "--age-gender-model", str(tmp_path / "none.safetensors"), "--faces",
            str(tmp_path / "faces.txt"), "--zip", str(tmp_path / "u.zip"), "--strengths=-3,0,3", "--steps", "1",
            "--out", str(tmp_path / "out"), "--dry-run"]
    assert main([*args, "--age-model", str(tmp_path / "bad.safetensors")]) == 2
    assert main([*args, "--age-model", str(tmp_path / "good.safetensors")]) == 0
    doc = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert "good.safetensors" in doc["calibration"]["fitted_on"] and doc["faces"][0]["age0"] > 0
