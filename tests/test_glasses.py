"""Drawn glasses: frames fitted to the eyes' landmarks, sharp at the photo's resolution, transparent lenses, a grey
photo stays grey, nothing outside the frames' box is touched; and the editor draws them where a bundle asks."""

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.color import rgb2lab

from faceapp.align import detect_faces
from faceapp.align.glasses import draw_glasses, glasses_geometry
from faceapp.errors import CheckpointError
from faceapp.imageio import load_image

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def face():
    photo = load_image(DATA / "astronaut.jpg")
    return photo, detect_faces(photo)[0].landmarks68


def _inside(poly, pts):
    import cv2

    c = poly.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(c, (float(x), float(y)), False) > 0 for x, y in pts])


def test_lenses_sit_round_the_eyes_with_the_bridge_over_the_nose(face):
    _, lm = face
    g = glasses_geometry(lm)
    iod = float(g["iod"])
    for lens, eye in zip(g["lenses"], (lm[36:42], lm[42:48])):
        assert _inside(lens, eye).all()  # every eye landmark inside its lens
        assert np.linalg.norm(lens.mean(0) - eye.mean(0)) < 0.15 * iod
        assert 0.5 * iod < np.ptp(lens[:, 0]) < 1.0 * iod  # a lens about as wide as a real one
        assert not _inside(lens, lm[17:27]).any()  # below the brows
    mid = g["bridge"][len(g["bridge"]) // 2]
    assert abs(mid[0] - lm[27, 0]) < 0.1 * iod and mid[1] < lm[29, 1]  # over the top of the nose
    for seg, side in zip(g["temples"], (-1, 1)):
        assert (seg[1, 0] - seg[0, 0]) * side > 0.1 * iod  # towards each ear


def test_frames_are_dark_and_sharp_lenses_clear_and_the_rest_untouched(face):
    photo, lm = face
    before = np.asarray(photo)
    out = np.asarray(draw_glasses(photo, lm, 0.6))
    g = glasses_geometry(lm)
    L0, L1 = rgb2lab(before)[..., 0], rgb2lab(out)[..., 0]
    rim = np.round(g["lenses"].reshape(-1, 2)).astype(int)
    assert np.median(L1[rim[:, 1], rim[:, 0]]) < 20 < np.median(L0[rim[:, 1], rim[:, 0]])  # a dark frame
    for eye in (lm[36:42], lm[42:48]):
        x, y = np.round(eye.mean(0)).astype(int)
        assert abs(L1[y - 1:y + 2, x - 1:x + 2].mean() - L0[y - 1:y + 2, x - 1:x + 2].mean()) < 8  # clear glass
    pts = np.concatenate([g["lenses"].reshape(-1, 2), g["temples"].reshape(-1, 2)])
    x0, y0 = np.floor(pts.min(0) - 0.3 * float(g["iod"])).astype(int)
    x1, y1 = np.ceil(pts.max(0) + 0.3 * float(g["iod"])).astype(int)
    outside = np.ones(before.shape[:2], bool)
    outside[max(y0, 0):y1, max(x0, 0):x1] = False
    assert np.array_equal(out[outside], before[outside])
    # sharp: across the frame's edge lightness jumps within a pixel or two (not an upscaled blur)
    assert np.percentile(np.abs(np.diff(L1 - L0, axis=0)), 99.9) > 25
    assert np.array_equal(np.asarray(draw_glasses(photo, lm, 0.0)), before)


def test_strength_sets_the_frames_weight_and_a_grey_photo_stays_grey(face):
    photo, lm = face
    before = rgb2lab(np.asarray(photo))[..., 0]
    dark = [(rgb2lab(np.asarray(draw_glasses(photo, lm, s)))[..., 0] < before - 25).sum() for s in (0.1, 0.5, 1.0)]
    assert dark[0] < dark[1] < dark[2] and dark[2] > 1.8 * dark[0]
    grey = photo.convert("L").convert("RGB")
    out = np.asarray(draw_glasses(grey, lm, 1.0)).astype(int)
    assert np.abs(out - out.mean(-1, keepdims=True)).max() <= 1


@pytest.fixture(scope="module")
def glasses_bundle(tmp_path_factory):
    from faceapp.bundle import load_bundle, make_random_bundle

    root = make_random_bundle(tmp_path_factory.mktemp("g") / "bundle", resolution=32, seed=2)
    meta = json.loads((root / "bundle.json").read_text())
    (root / "bundle.json").write_text(json.dumps(meta | {"glasses_overlay": {"gan_share": 0.0}}))
    return root, load_bundle(root)


def test_the_editor_draws_glasses_where_the_bundle_asks(face, glasses_bundle):
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor

    photo, _ = face
    _, bundle = glasses_bundle
    hi = bundle.directions["glasses"].strength_range[1]
    assert bundle.glasses_split(hi) == (0.0, 1.0)
    assert bundle.glasses_split(hi / 2) == (0.0, pytest.approx(0.5))
    assert bundle.glasses_split(-hi) == (-hi, 0.0)  # taking glasses off is the generator's
    editor = FaceEditor(bundle, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2, perceptual_weight=0.0)})
    prepared = editor.prepare(photo)
    plain = editor.compose(photo, prepared, {"smile": 1.0})
    worn = editor.compose(photo, prepared, {"glasses": hi / 2, "smile": 1.0})
    by_hand = draw_glasses(plain, prepared[0].aligned.face.landmarks68, 0.5)
    assert np.array_equal(np.asarray(worn), np.asarray(by_hand))
    frames = editor.timeline(photo, prepared, name="glasses", strengths=[0.0, hi / 2], base={"smile": 1.0})
    assert np.array_equal(np.asarray(frames[1]), np.asarray(worn))
    assert np.array_equal(np.asarray(frames[0]), np.asarray(plain))


def test_without_the_overlay_glasses_stay_the_generators_and_bad_options_are_refused(glasses_bundle, tmp_path):
    import shutil

    from faceapp.bundle import load_bundle

    root, _ = glasses_bundle
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    meta = json.loads((copy / "bundle.json").read_text())
    meta.pop("glasses_overlay")
    (copy / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(copy).glasses_split(2.0) == (2.0, 0.0)
    for bad in ({"gan_share": 2.0}, {"colour": "red"}, [1]):
        (copy / "bundle.json").write_text(json.dumps(meta | {"glasses_overlay": bad}))
        with pytest.raises(CheckpointError, match="glasses_overlay"):
            load_bundle(copy)


def test_cli_bundle_draws_glasses_on_request(glasses_bundle, tmp_path):
    """`python -m faceapp bundle --glasses-overlay` writes the switch the editor reads; refused without a glasses
    direction (the slider it rides on)."""
    from faceapp.bundle import load_bundle
    from faceapp.cli import main as cli
    from faceapp.stylegan.checkpoint import save_networks

    _, bundle = glasses_bundle
    save_networks(tmp_path / "G.safetensors", {"G_ema": bundle.G})
    bundle.directions.save(tmp_path / "dirs")
    args = ["bundle", "--generator", str(tmp_path / "G.safetensors"), "--align", "utkface", "--glasses-overlay"]
    assert cli([*args, "--directions", str(tmp_path / "dirs"), "--out", str(tmp_path / "b")]) == 0
    b = load_bundle(tmp_path / "b")
    hi = b.directions["glasses"].strength_range[1]
    assert b.meta["glasses_overlay"] == {"gan_share": 0.0} and b.glasses_split(hi) == (0.0, 1.0)
    assert cli([*args, "--out", str(tmp_path / "c")]) != 0
    assert cli([*args[:-1], "--directions", str(tmp_path / "dirs"), "--out", str(tmp_path / "d")]) == 0
    assert load_bundle(tmp_path / "d").glasses_split(hi) == (hi, 0.0)  # without the switch: the generator's
