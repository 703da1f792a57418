"""Smile prototypes: a positive smile moves the photo's own mouth (the generator gets none of it, so no second
mouth is pasted), a negative one stays the generator's; the bundle and `faceapp bundle` store and refuse them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceapp.align import detect_faces
from faceapp.align.prototype import AgePrototypes, eye_similarity
from faceapp.errors import CheckpointError
from faceapp.imageio import load_image

DATA = Path(__file__).parent / "data"
S = 96


@pytest.fixture(scope="module")
def face():
    photo = load_image(DATA / "astronaut.jpg")
    return photo, detect_faces(photo)[0].landmarks68


def _smile_protos(lm_canon):
    """Synthetic smile prototypes: the smiling group's mouth corners sit 3 canonical px higher and wider."""
    lab = np.zeros((S, S, 3), np.float32)
    lab[...] = (60.0, 15.0, 20.0)
    smiling = lm_canon.copy()
    smiling[48] += (-2.0, -3.0)
    smiling[54] += (2.0, -3.0)
    energy = np.ones((3, S, S), np.float32)
    return AgePrototypes(size=S, mean_shape=lm_canon, young_shape=lm_canon, old_shape=smiling, young_lab=lab,
                         old_lab=lab, young_energy=energy, old_energy=energy, meta={"kind": "smile"})


@pytest.fixture(scope="module")
def smile_bundle(face, tmp_path_factory):
    from faceapp.bundle import load_bundle, make_random_bundle

    photo, lm = face
    m = eye_similarity(lm, S)
    root = make_random_bundle(tmp_path_factory.mktemp("s") / "bundle", resolution=32, seed=3)
    _smile_protos(lm @ m[:, :2].T + m[:, 2]).save(root / "smile_prototypes.safetensors")
    meta = json.loads((root / "bundle.json").read_text())
    meta |= {"smile_prototypes": "smile_prototypes.safetensors",
             "smile_prototypes_options": {"t_per_strength": 0.25, "gan_share": 0.0}}
    (root / "bundle.json").write_text(json.dumps(meta))
    return load_bundle(root)


def test_a_smile_moves_the_photos_own_mouth_corners_up(face, smile_bundle):
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor

    photo, _ = face
    assert smile_bundle.smile_split(4.0) == (0.0, pytest.approx(1.0))
    assert smile_bundle.smile_split(-4.0) == (0.0, pytest.approx(-1.0))  # less smile: the prototypes' too
    editor = FaceEditor(smile_bundle, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2,
                                                                            perceptual_weight=0.0)})
    prepared = editor.prepare(photo)
    lm = prepared[0].aligned.face.landmarks68
    plain = editor.compose(photo, prepared, {"age": 1.0})
    smiling = editor.compose(photo, prepared, {"smile": 4.0, "age": 1.0})
    by_hand = smile_bundle.smile_prototypes.apply(plain, lm, 1.0, hair=0.0)
    assert np.array_equal(np.asarray(smiling), np.asarray(by_hand))
    # the corners moved up, as the landmarks found on the result say
    moved = detect_faces(smiling)[0].landmarks68
    assert (moved[[48, 54], 1] < lm[[48, 54], 1] - 0.5).all()
    assert np.abs(moved[27:31] - lm[27:31]).max() < 1.5  # the nose bridge stays where it was
    frames = editor.timeline(photo, prepared, name="smile", strengths=[0.0, 4.0], base={"age": 1.0})
    assert np.array_equal(np.asarray(frames[1]), np.asarray(smiling))
    assert np.array_equal(np.asarray(frames[0]), np.asarray(plain))


def test_bad_smile_options_are_refused_and_the_cli_stores_them(face, smile_bundle, tmp_path):
    from faceapp.bundle import load_bundle
    from faceapp.cli import main as cli
    from faceapp.stylegan.checkpoint import save_networks

    root = tmp_path / "b"
    shutil.copytree(smile_bundle.root, root)
    meta = json.loads((root / "bundle.json").read_text())
    (root / "bundle.json").write_text(json.dumps(meta | {"smile_prototypes_options": {"gan_share": 3}}))
    with pytest.raises(CheckpointError, match="smile_prototypes_options"):
        load_bundle(root)
    save_networks(tmp_path / "G.safetensors", {"G_ema": smile_bundle.G})
    smile_bundle.directions.save(tmp_path / "dirs")
    args = ["bundle", "--generator", str(tmp_path / "G.safetensors"), "--align", "utkface", "--smile-prototypes",
            str(smile_bundle.root / "smile_prototypes.safetensors"), "--smile-prototypes-end", "1.2"]
    assert cli([*args, "--directions", str(tmp_path / "dirs"), "--out", str(tmp_path / "c")]) == 0
    b = load_bundle(tmp_path / "c")
    hi = b.directions["smile"].strength_range[1]
    assert b.smile_split(hi) == (0.0, pytest.approx(1.2))
    assert cli([*args, "--out", str(tmp_path / "d")]) != 0  # no smile direction for the slider


def test_a_smiling_face_smiles_a_little_more_and_a_neutral_one_does_not_frown(face):
    """With 'saturate', t stops where the face reaches that multiple of the groups' shape difference; t < 0 stops
    'saturate_below' past the neutral group's shape."""
    _, lm = face
    m = eye_similarity(lm, S)
    p = _smile_protos(lm @ m[:, :2].T + m[:, 2])
    neutral = p.young_shape
    smiling = p.young_shape + 1.0 * (p.old_shape - p.young_shape)
    assert p.progress(neutral) == pytest.approx(0.0, abs=1e-9) and p.progress(smiling) == pytest.approx(1.0)
    assert p.effective_t(smiling, 1.0) == 1.0  # no cap: as asked
    p.meta.update(saturate=1.2, saturate_below=0.2)
    assert p.effective_t(neutral, 1.0) == pytest.approx(1.0)
    assert p.effective_t(smiling, 1.0) == pytest.approx(0.2)  # already smiling: a little more
    assert p.effective_t(smiling, -2.0) == pytest.approx(-1.2)  # a smile fades to just past neutral
    assert p.effective_t(neutral, -2.0) == pytest.approx(-0.2)  # a neutral face barely changes
    assert p.effective_t(neutral + 3 * (p.old_shape - p.young_shape), 0.5) == 0.0  # past the cap: nothing


def test_the_app_names_smile_prototypes_and_drawn_glasses(smile_bundle):
    import dataclasses

    from faceapp.web.views import model_notice

    trained = dataclasses.replace(smile_bundle, meta={**smile_bundle.meta, "untrained": False})
    assert "smile prototypes" in model_notice(trained) and "drawn glasses" not in model_notice(trained)
    plain = dataclasses.replace(trained, smile_prototypes=None,
                                meta={**trained.meta, "glasses_overlay": {"gan_share": 0.0}})
    assert "smile prototypes" not in model_notice(plain) and "drawn glasses" in model_notice(plain)


def test_skin_light_scales_the_folds_outside_the_lips(face):
    """meta 'skin_light' scales the prototypes' lightness change outside the lips' inside: a dark fold line of the
    smiling group across the cheeks is drawn whole at 1 and not at all at 0."""
    import dataclasses

    from skimage.color import rgb2lab

    photo, lm = face
    m = eye_similarity(lm, S)
    p = _smile_protos(lm @ m[:, :2].T + m[:, 2])
    old = p.old_lab.copy()
    row = int(S * 0.62)
    old[row:row + 2, :, 0] -= 25.0  # a thin dark line across the cheeks
    p = dataclasses.replace(p, old_lab=old, old_shape=p.young_shape.copy(), meta={"kind": "smile"})
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    x, y = np.round(np.array([S * 0.3, row + 1.0]) @ inv[:, :2].T + inv[:, 2]).astype(int)  # on the cheek

    def dark(q):
        d = rgb2lab(np.asarray(q.apply(photo, lm, 1.0, hair=0.0)))[..., 0] - rgb2lab(np.asarray(photo))[..., 0]
        return d[y - 1:y + 2, x - 2:x + 3].mean()

    whole = dark(p)
    none = dark(dataclasses.replace(p, meta={"kind": "smile", "skin_light": 0.0}))
    assert whole < -3 and abs(none) < 0.5


def test_the_build_script_groups_by_the_landmark_smile_and_writes_a_file(face, tmp_path, monkeypatch):
    """`python -m training.smile_prototypes` on a tiny UTKFace-style zip of face crops: faces go to the neutral or the
    smiling group by the landmark smile score and the lips' gap (here stubbed to alternate), and the file holds the
    saturation knobs; too few faces in a group is refused with exit 2 and no file."""
    import io
    import zipfile

    from training import face_labels, smile_prototypes

    photo, lm = face
    x, y = lm.mean(0).astype(int)
    crop = photo.crop((x - 110, y - 120, x + 110, y + 100)).resize((200, 200))
    z = tmp_path / "utk.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i in range(20):
            buf = io.BytesIO()
            crop.save(buf, "JPEG")
            f.writestr(f"UTKFace/{25 + i}_1_0_201701{i:04d}.jpg.chip.jpg", buf.getvalue())
    state = {"n": 0, "smiling": False, "all_neutral": False}

    def fake_score(lm68):  # alternate: neutral, smiling, neutral, ...
        state["smiling"] = state["n"] % 2 == 1 and not state["all_neutral"]
        state["n"] += 1
        return 2.0 if state["smiling"] else -2.0

    monkeypatch.setattr(face_labels, "smile_score", fake_score)
    monkeypatch.setattr(face_labels, "smile_features",
                        lambda lm68: {"width": 1.0, "lift": 0.1, "open": 0.1 if state["smiling"] else 0.0})
    out = tmp_path / "smile.safetensors"
    args = ["--zip", str(z), "--out", str(out), "--num", "10", "--size", "64", "--ages", "18,70"]
    assert smile_prototypes.main(args) == 0
    p = AgePrototypes.load(out)
    assert p.meta["counts"] == {"neutral": 10, "smiling": 10} and p.meta["kind"] == "smile"
    assert p.meta["saturate"] == 1.2 and p.meta["saturate_below"] == 0.2 and p.meta["skin_light"] == 0.5
    assert "utkface-heldout-eval.txt" in p.meta["heldout_excluded"]
    state["all_neutral"] = True  # no smiling group
    assert smile_prototypes.main([*args[:3], str(tmp_path / "none.safetensors"), *args[4:]]) == 2
    assert not (tmp_path / "none.safetensors").exists()


def test_smile_prototypes_never_grey_the_hair(face):
    """Only age greys hair: smile prototypes' apply leaves it alone by default."""
    _, lm = face
    photo, _ = face
    m = eye_similarity(lm, S)
    p = _smile_protos(lm @ m[:, :2].T + m[:, 2])
    assert np.array_equal(np.asarray(p.apply(photo, lm, 1.0)), np.asarray(p.apply(photo, lm, 1.0, hair=0.0)))
