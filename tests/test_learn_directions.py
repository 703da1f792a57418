"""training/learn_directions.py and training/labelers.py: boundary fitting, labelers on a real photo, the CLI."""

import json

import numpy as np
import pytest
import torch

from faceapp.edits import DirectionSet, apply_edits
from training.learn_directions import LearnOptions, fit_direction, learn_directions, main


def labelled_codes(n, w_dim=24, seed=0, noise=0.3):
    """Codes whose attribute is a noisy linear function of w along a hidden normal (and a correlated second one)."""
    rng = np.random.default_rng(seed)
    true = np.random.default_rng(99).normal(size=(2, w_dim))
    true[1] += true[0]  # attribute 2 correlated with attribute 1
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    w = rng.normal(size=(n, w_dim)) * 1.5 + 0.2
    scores = w @ true.T + noise * rng.normal(size=(n, 2))
    return w, scores, true


def test_fit_direction_recovers_the_normal_and_separates_held_out_codes():
    w, scores, true = labelled_codes(2000)
    normal, metrics = fit_direction(w, scores[:, 0], chosen_ratio=0.2, val_ratio=0.3)
    assert abs(np.linalg.norm(normal) - 1) < 1e-9
    assert normal @ true[0] > 0.95  # found the hidden direction, pointing to higher scores
    assert metrics["val_accuracy"] > 0.95 and metrics["val_codes"] == 2 * int(400 * 0.3)
    # fresh codes labelled by their true attribute (above / below the median): far better than chance
    w2, s2, _ = labelled_codes(1000, seed=1)
    y = s2[:, 0] > np.median(s2[:, 0])
    proj = w2 @ normal
    acc = ((proj > np.median(proj)) == y).mean()
    assert acc > 0.5 + 0.3


def test_fit_direction_on_labels_unrelated_to_w_is_near_chance():
    w, _, _ = labelled_codes(1000)
    noise = np.random.default_rng(5).normal(size=len(w))
    _, metrics = fit_direction(w, noise, chosen_ratio=0.2)
    assert metrics["val_accuracy"] < 0.75  # a fitter that leaked labels would score high here


def test_learned_set_has_scales_and_conditional_edits_hold_the_other_attribute():
    w, scores, true = labelled_codes(3000)
    opts = LearnOptions(generator=None, out="unused", chosen_ratio=0.2)
    ds = learn_directions(w, {"age": scores[:, 0], "gender": scores[:, 1]}, opts)
    assert set(ds) == {"age", "gender"}
    for d in ds.values():
        assert d.scale == pytest.approx((w @ d.vector.astype(np.float64)).std(), rel=1e-5)
        assert d.metrics["val_accuracy"] > 0.9
    ws = torch.as_tensor(w[:50, None, :].repeat(4, axis=1))
    older = apply_edits(ws, ds, {"age": 2.0}, hold=["gender"])
    g = torch.as_tensor(ds["gender"].vector, dtype=ws.dtype)
    torch.testing.assert_close(older[:, 0] @ g, ws[:, 0] @ g, atol=1e-5, rtol=0)
    assert ((older - ws)[:, 0].numpy() @ true[0]).min() > 0  # and it is older along the hidden age normal


def test_smile_and_glasses_labelers_on_a_real_photo():
    """The astronaut (scikit-image's public-domain portrait) smiles with teeth and wears no glasses."""
    from faceapp.align import align_face, detect_faces, load_image, utkface_spec
    from training.labelers import GLASSES_THRESHOLD, find_landmarks, glasses_score, smile_features, smile_score

    photo = load_image("tests/data/astronaut.jpg")
    face = detect_faces(photo, backend="dlib")[0]
    crop = np.asarray(align_face(photo, face, utkface_spec(200)).image)
    lm, _ = find_landmarks(crop)
    assert smile_score(lm) > 0.5
    f = smile_features(lm)
    assert 0.7 < f["width"] < 1.4 and f["lift"] > 0
    assert glasses_score(crop, lm) < GLASSES_THRESHOLD
    # the same face with its mouth corners pulled down (landmarks only) scores lower
    sad = lm.copy()
    sad[[48, 54], 1] += 0.15 * np.linalg.norm(lm[45] - lm[36])
    assert smile_score(sad) < smile_score(lm) - 0.5


def test_age_gender_model_round_trip(tmp_path):
    from training.labelers import AgeGenderModel

    rng = np.random.default_rng(0)
    u = rng.normal(size=128)

    def faces(n):  # descriptors that vary smoothly with age along u, and with gender along axis 1
        t, sex = rng.uniform(0, 1, n), rng.integers(0, 2, n)
        desc = 5 * t[:, None] * u + 0.05 * rng.normal(size=(n, 128))
        desc[:, 1] += np.where(sex == 1, 1.0, -1.0)
        return desc, 1 + 80 * t, sex

    desc, ages, genders = faces(600)
    m = AgeGenderModel.fit(desc, ages, genders)
    d2, a2, g2 = faces(200)  # unseen faces
    assert np.abs(m.age(d2) - a2).mean() < 3.0
    assert ((m.p_female(d2) > 0.5) == g2).mean() > 0.95
    m.save(tmp_path / "ag.safetensors")
    back = AgeGenderModel.load(tmp_path / "ag.safetensors")
    np.testing.assert_allclose(back.age(d2), m.age(d2))
    np.testing.assert_allclose(back.p_female(d2), m.p_female(d2))


def test_cli_on_a_tiny_generator_and_on_labelled_codes(tmp_path):
    from faceapp.stylegan import Generator
    from faceapp.stylegan.checkpoint import save_networks

    G = Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=32,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=256, channel_max=16),
    )
    save_networks(tmp_path / "G.safetensors", {"G_ema": G})
    out = tmp_path / "dirs"
    rc = main(
        [
            "--generator",
            str(tmp_path / "G.safetensors"),
            "--out",
            str(out),
            "--attributes",
            "smile,glasses",
            "--num-samples",
            "40",
            "--chosen-ratio",
            "0.25",
            "--glasses-model",
            "",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    ds = DirectionSet.load(out)
    assert list(ds) == ["smile", "glasses"] and ds.w_dim == 16
    assert (out / "grids" / "smile.png").is_file()
    assert json.loads((out / "options.json").read_text())["num_samples"] == 40
    report = json.loads((out / "report.json").read_text())
    assert report["glasses"]["val_codes"] == 2 * int(10 * 0.3)

    # encoded real photos: codes + scores given, no generator needed
    w, scores, true = labelled_codes(600, w_dim=16)
    np.savez(tmp_path / "codes.npz", w=w, age=scores[:, 0])
    rc = main(["--codes", str(tmp_path / "codes.npz"), "--out", str(tmp_path / "c"), "--attributes", "age"])
    assert rc == 0
    assert DirectionSet.load(tmp_path / "c")["age"].vector @ true[0] > 0.9
    assert main(["--codes", str(tmp_path / "codes.npz"), "--out", str(tmp_path / "d"), "--attributes", "smile"]) == 2
