"""`python -m faceapp age` / `edit`: good and bad photos, the manifest, resuming, and a SIGKILLed run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceapp import cli, pipeline
from faceapp.bundle import make_random_bundle

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
FAST = ["--steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_random_bundle(tmp_path_factory.mktemp("m") / "bundle", resolution=32, seed=2))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with one good photo and three bad ones (and a note that is not an image file at all)."""
    d = tmp_path_factory.mktemp("photos")
    shutil.copy(DATA / "astronaut.jpg", d / "astronaut.jpg")
    (d / "notes.png").write_text("this is text, named .png")
    (d / "broken.jpg").write_bytes((DATA / "astronaut.jpg").read_bytes()[:6000])
    Image.new("RGB", (160, 120), (128, 128, 128)).save(d / "blank.png")
    (d / "README.txt").write_text("not a photo: ignored when the folder is expanded")
    return d


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_folder_with_good_and_bad_photos(model, photos, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["age", str(photos), str(tmp_path / "nope" / "*.jpg"), "--out", str(out), "--model", model,
                   "--strengths", "-2,0,2", *FAST])
    assert rc == 1  # some photos failed
    by_name = {Path(r["input"]).name: r for r in _manifest(out)}
    assert set(by_name) == {"astronaut.jpg", "notes.png", "broken.jpg", "blank.png", "*.jpg"}
    ok = by_name["astronaut.jpg"]
    assert ok["status"] == "ok" and ok["faces"] == 1
    assert ok["outputs"] == ["astronaut_age-2.png", "astronaut_age+0.png", "astronaut_age+2.png"]
    imgs = [np.asarray(Image.open(out / o), dtype=np.int16) for o in ok["outputs"]]
    assert all(i.shape == (512, 512, 3) for i in imgs)
    assert np.abs(imgs[0] - imgs[2]).sum() > 0 and np.abs(imgs[1] - imgs[2]).sum() > 0  # strengths differ
    assert "not an image" in by_name["notes.png"]["error"]
    assert "truncated" in by_name["broken.jpg"]["error"]
    assert "no face found in blank.png" in by_name["blank.png"]["error"]
    assert "matches no file" in by_name["*.jpg"]["error"]
    assert all(r["status"] == "failed" for n, r in by_name.items() if n != "astronaut.jpg")
    options = json.loads((out / "options.json").read_text())
    assert options["strengths"] == [-2.0, 0.0, 2.0] and options["mode"] == "fast"
    assert "1 photo(s) done, 0 already done, 4 failed" in capsys.readouterr().out

    # A rerun redoes nothing that finished (the bad ones fail again, and say so again).
    before = {o: (out / o).stat().st_mtime_ns for o in ok["outputs"]}
    rc = cli.main(["age", str(photos), "--out", str(out), "--model", model, "--strengths", "-2,0,2", *FAST])
    assert rc == 1
    assert {o: (out / o).stat().st_mtime_ns for o in ok["outputs"]} == before
    assert "0 photo(s) done, 1 already done, 3 failed" in capsys.readouterr().out
    # Other options are another job: done again.
    rc = cli.main(["age", str(photos / "astronaut.jpg"), "--out", str(out), "--model", model, "--strengths", "1",
                   *FAST])
    assert rc == 0 and (out / "astronaut_age+1.png").is_file()


@pytest.mark.slow
def test_timeline_gif_per_face_and_glob(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DATA / "astronaut.jpg", src / "a.jpg")
    out = tmp_path / "out"
    assert cli.main(["age", str(src / "*.jpg"), "--out", str(out), "--model", model, "--timeline", "4", *FAST]) == 0
    (rec,) = _manifest(out)
    assert rec["outputs"] == ["a_face1_aging.gif"]
    with Image.open(out / "a_face1_aging.gif") as gif:
        assert gif.n_frames == 6  # 4 frames forth, 2 back
        first = np.asarray(gif.convert("RGB"), dtype=np.int16)
        gif.seek(3)
        last = np.asarray(gif.convert("RGB"), dtype=np.int16)
        assert max(gif.size) <= 512 and np.abs(first - last).sum() > 0


@pytest.mark.slow
def test_same_stem_in_two_folders_gets_two_outputs(model, tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        shutil.copy(DATA / "astronaut.jpg", tmp_path / d / "me.jpg")
    out = tmp_path / "out"
    assert cli.main(["age", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(out), "--model", model,
                     "--strengths", "2", *FAST]) == 0
    names = sorted(o for r in _manifest(out) for o in r["outputs"])
    assert len(names) == 2 and names[0] != names[1] and all(n.startswith("me-") for n in names)


def test_edit_command(model, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["edit", str(DATA / "astronaut.jpg"), "--age", "2", "--smile", "-1", "--out", str(out),
                     "--model", model, "--steps", "1"]) == 0
    assert Image.open(out).size == (512, 512) and "age +2, smile -1" in capsys.readouterr().out
    assert cli.main(["edit", str(DATA / "astronaut.jpg"), "--edit", "beard=1", "--out", str(out),
                     "--model", model, "--steps", "1"]) == 2
    assert "unknown edit 'beard'" in capsys.readouterr().err


def test_no_model_says_what_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("FACEAPP_MODEL", raising=False)
    monkeypatch.setattr(pipeline, "DEMO_BUNDLE", tmp_path / "no-demo")  # no models/demo/ bundle either
    assert cli.main(["edit", str(DATA / "astronaut.jpg"), "--age", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "no model: pass --model" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_without_half_files(model, tmp_path):
    """SIGKILL while the second photo's output is being written; the rerun finishes the job."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(DATA / "astronaut.jpg", src / f"{name}.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "faceapp", "age", str(src), "--out", str(out), "--model", model,
           "--strengths", "2", *FAST]
    env = {**os.environ, "FACEAPP_TEST_SLEEP": "1.5", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        # wait until a.jpg is recorded and b's output exists only as its temporary file
        while time.monotonic() < deadline:
            if list(out.glob(".b_age+2.tmp-*.png")):
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached the second photo")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (out / "a_age+2.png").is_file() and not (out / "b_age+2.png").exists()
    assert [Path(r["input"]).name for r in _manifest(out)] == ["a.jpg"]
    a_made = (out / "a_age+2.png").stat().st_mtime_ns

    env.pop("FACEAPP_TEST_SLEEP")
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 photo(s) done, 1 already done, 0 failed" in done.stdout
    assert (out / "a_age+2.png").stat().st_mtime_ns == a_made  # not redone
    assert sorted(p.name for p in out.iterdir()) == [
        "a_age+2.png", "b_age+2.png", "c_age+2.png", "manifest.jsonl", "options.json"
    ]  # no temporary files left behind
    assert [Path(r["input"]).name for r in _manifest(out)] == ["a.jpg", "b.jpg", "c.jpg"]
    for name in "abc":
        Image.open(out / f"{name}_age+2.png").load()  # complete files


def test_output_folder_inside_the_input_is_not_taken_as_input(model, tmp_path):
    d = tmp_path / "same"
    d.mkdir()
    shutil.copy(DATA / "astronaut.jpg", d / "astronaut.jpg")
    for _ in range(2):
        assert cli.main(["age", str(d), "--out", str(d), "--model", model, "--strengths", "2", *FAST]) == 0
    inputs = [Path(r["input"]).name for r in _manifest(d)]
    assert inputs == ["astronaut.jpg"] and sorted(p.name for p in d.glob("*.png")) == ["astronaut_age+2.png"]


@pytest.mark.parametrize("frames", ["0", "-3", "x"])
def test_bad_timeline_is_a_usage_error(model, tmp_path, frames, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["age", str(DATA / "astronaut.jpg"), "--out", str(tmp_path), "--model", model, "--timeline", frames])
    assert e.value.code == 2 and "--timeline" in capsys.readouterr().err


def test_unwritable_output_is_one_clear_line(model, tmp_path, capsys):
    out = tmp_path / "a-folder.png"
    out.mkdir()  # a folder where the output file should go
    rc = cli.main(["edit", str(DATA / "astronaut.jpg"), "--age", "1", "--out", str(out), "--model", model,
                   "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- --years

YEARS_PER_STRENGTH = 8.0  # the calibration's slope: 10 years = strength 1.25


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory):
    """The random bundle with a years calibration on its age direction (older side 8, younger 5 years/strength)."""
    from faceapp.edits import DirectionSet, YearsCalibration, with_calibration

    root = make_random_bundle(tmp_path_factory.mktemp("cal") / "bundle", resolution=32, seed=2)
    ds = DirectionSet.load(root / "directions")
    cal = YearsCalibration(per_strength=6.0, per_strength_pos=YEARS_PER_STRENGTH, per_strength_neg=5.0,
                           scale=ds["age"].scale, n=3, fitted_on="test")
    with_calibration(ds, "age", cal).save(root / "directions")
    return str(root)


def test_age_years_are_the_strengths_the_calibration_says(calibrated_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["age", str(DATA / "astronaut.jpg"), "--out", str(out), "--model", calibrated_model,
                   "--years", "-10,10,30", *FAST])
    assert rc == 0
    (rec,) = _manifest(out)
    assert rec["outputs"] == ["astronaut_age-10y.png", "astronaut_age+10y.png", "astronaut_age+30y.png"]
    # what each face's edit reads, per output (+30 held to the slider's end, which reads 3 x 8)
    assert rec["years"] == {"astronaut_age-10y.png": [-10.0], "astronaut_age+10y.png": [10.0],
                            "astronaut_age+30y.png": [3 * YEARS_PER_STRENGTH]}
    options = json.loads((out / "options.json").read_text())
    assert options["years"] == [-10.0, 10.0, 30.0]
    # +30 years = strength 3.75 lies past the -3..3 slider range: made at its end, and said so
    assert options["strengths"] == pytest.approx([-10 / 5.0, 10 / YEARS_PER_STRENGTH, 3.0])
    # +10 years is exactly the result of that strength given directly
    ref = tmp_path / "ref"
    assert cli.main(["age", str(DATA / "astronaut.jpg"), "--out", str(ref), "--model", calibrated_model,
                     "--strengths", "1.25", *FAST]) == 0
    a = np.asarray(Image.open(out / "astronaut_age+10y.png"))
    b = np.asarray(Image.open(ref / "astronaut_age+1.25.png"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.asarray(Image.open(out / "astronaut_age+30y.png")))
    err = capsys.readouterr().err
    assert "past the model's range" in err and f"made at +3, which reads {3 * YEARS_PER_STRENGTH:+.1f} years" in err


def test_edit_years_and_its_refusals(calibrated_model, model, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["edit", str(DATA / "astronaut.jpg"), "--years", "-10", "--out", str(out),
                     "--model", calibrated_model, "--steps", "1"]) == 0
    assert "age -10.0 years (strength -2.00)" in capsys.readouterr().out
    ref = tmp_path / "ref.png"
    assert cli.main(["edit", str(DATA / "astronaut.jpg"), "--age", "-2", "--out", str(ref),
                     "--model", calibrated_model, "--steps", "1"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(ref)))
    # past the slider's end: made at the end, and the summary says what that reads, not the years asked
    far = tmp_path / "far.png"
    assert cli.main(["edit", str(DATA / "astronaut.jpg"), "--years", "30", "--out", str(far),
                     "--model", calibrated_model, "--steps", "1"]) == 0
    said = capsys.readouterr().out
    assert f"age {3 * YEARS_PER_STRENGTH:+.1f} years at the model's limit for this face (+30 asked) (strength +3.00)" \
        in said and "age +30" not in said
    # a model whose age direction has no calibration: one clear line, nothing written
    missing = tmp_path / "none.png"
    assert cli.main(["edit", str(DATA / "astronaut.jpg"), "--years", "10", "--out", str(missing),
                     "--model", model, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "no years calibration" in err and "python -m training.calibrate_years" in err and not missing.exists()
    assert cli.main(["age", str(DATA / "astronaut.jpg"), "--out", str(tmp_path / "o"), "--model", model,
                     "--years", "10", *FAST]) == 2
    assert "no years calibration" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["age", "--years", "10", "--strengths", "1"], ["age", "--years", "10",
                                  "--timeline", "3"], ["edit", "--years", "10", "--age", "1"]])
def test_years_and_strengths_are_mutually_exclusive(calibrated_model, tmp_path, argv, capsys):
    cmd, *opts = argv
    with pytest.raises(SystemExit) as e:
        cli.main([cmd, str(DATA / "astronaut.jpg"), "--out", str(tmp_path / "o.png"), "--model", calibrated_model,
                  *opts])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_strengths_past_the_slider_range_are_done_and_said(model, tmp_path, capsys):
    photo = str(DATA / "astronaut.jpg")
    assert cli.main(["edit", photo, "--smile", "2", "--out", str(tmp_path / "in.png"), "--model", model,
                     "--steps", "1"]) == 0
    assert "outside the model's range" not in capsys.readouterr().err
    assert cli.main(["edit", photo, "--smile", "5", "--age", "-1", "--out", str(tmp_path / "past.png"),
                     "--model", model, "--steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: smile +5 is outside the model's range -3..3" in err and "age" not in err
    assert (tmp_path / "past.png").is_file()
    assert cli.main(["age", photo, "--out", str(tmp_path / "o"), "--model", model, "--strengths", "-4,1",
                     *FAST]) == 0
    err = capsys.readouterr().err
    assert "note: age -4 is outside the model's range -3..3" in err and "age +1" not in err
