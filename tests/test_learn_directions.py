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
    from training.face_labels import GLASSES_THRESHOLD, find_landmarks, glasses_score, smile_features, smile_score

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
    from training.age_gender import AgeGenderModel

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


# ------------------------------------------------------------------ true labels of real faces, conditional check


def _archive(path, n=200, size=16, seed=0, sources=None):
    """A training archive like prepare_dataset.py's: PNGs whose red level is the age and green the gender."""
    import io
    import zipfile

    from PIL import Image

    rng = np.random.default_rng(seed)
    ages, genders = rng.integers(1, 90, n), rng.integers(0, 2, n)
    rows = []
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            img = np.zeros((size, size, 3), np.uint8)
            img[..., 0] = int(ages[i] * 2.5)
            img[..., 1] = 60 + 120 * genders[i] + rng.integers(0, 20)
            img[..., 2] = rng.integers(0, 255)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            member = f"00000/img{i:08d}.png"
            z.writestr(member, buf.getvalue())
            src = sources[i] if sources and i < len(sources) else f"{ages[i]}_{genders[i]}_0_2017{i:05d}.jpg.chip.jpg"
            rows.append([member, {"source": src, "age": int(ages[i]), "gender": int(genders[i]), "race": 0}])
        z.writestr("dataset.json", json.dumps({"labels": None, "attributes": rows}))
    return ages, genders


def test_age_and_gender_from_true_labels_of_encoded_faces(tmp_path):
    from training.learn_directions import encode_archive, read_archive_labels

    ages, genders = _archive(tmp_path / "a.zip")
    rng = np.random.default_rng(3)
    a_true, g_true = np.linalg.qr(rng.normal(size=(24, 2)))[0].T  # orthonormal hidden age / gender axes

    def encode(x):  # a stand-in encoder: the code moves along the hidden axes with the image's red / green
        r, g = x[:, 0].mean((1, 2)).numpy(), x[:, 1].mean((1, 2)).numpy()
        w = 3 * r[:, None] * a_true + 3 * g[:, None] * g_true + 0.1 * rng.normal(size=(len(r), 24))
        return torch.as_tensor(w, dtype=torch.float32)[:, None].repeat(1, 4, 1)  # [B, num_ws=4, 24]

    members, labels, sources = read_archive_labels(tmp_path / "a.zip", ("age", "gender"))
    np.testing.assert_array_equal(labels["age"], ages)
    ws = encode_archive(tmp_path / "a.zip", members, encode, batch=64, progress=None)
    assert ws.shape == (200, 4, 24)
    opts = LearnOptions(generator=None, out="unused")
    ds = learn_directions(ws.mean(1), labels, opts)
    assert ds["age"].vector @ a_true > 0.9 and ds["gender"].vector @ g_true > 0.9  # older / more female
    assert ds["gender"].metrics["positives"] == int(genders.sum())  # every code used, by its 0/1 label
    assert ds["gender"].metrics["val_accuracy"] > 0.9 and ds["age"].metrics["val_accuracy"] > 0.9


def test_archive_with_held_out_photos_or_without_labels_is_refused(tmp_path):
    from faceapp.errors import FaceAppError
    from training.learn_directions import read_archive_labels
    from training.utkface import HELDOUT_LISTS, read_name_list

    held = read_name_list(HELDOUT_LISTS[0])
    _archive(tmp_path / "a.zip", n=20, sources=[held[3]])
    with pytest.raises(FaceAppError, match="holds 1 held-out photos.*stay out of training"):
        read_archive_labels(tmp_path / "a.zip", ("age",), heldout=held)
    import zipfile

    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        z.writestr("dataset.json", json.dumps({"labels": None}))
    with pytest.raises(FaceAppError, match="no 'attributes'"):
        read_archive_labels(tmp_path / "b.zip", ("age",))


def test_conditional_check_age_holding_gender_leaves_the_gender_score():
    """A gender 'labeler' that reads the true gender axis: aging along a direction correlated with gender moves
    it, aging with gender held does not (and still ages)."""
    from training.learn_directions import conditional_check

    w, scores, true = labelled_codes(3000, w_dim=24)
    opts = LearnOptions(generator=None, out="unused")
    ds = learn_directions(w, {"age": scores[:, 0], "gender": scores[:, 1]}, opts)

    def score(ws):
        x = ws[:, 0].double().numpy()
        return {"age": x @ true[0], "gender": 1 / (1 + np.exp(-(x @ true[1])))}

    ws = torch.as_tensor(w[:64, None].repeat(4, axis=1), dtype=torch.float32)
    rep = conditional_check(score, ds, ws, strength=2.0)
    age = rep["age|gender"]
    assert age["drift_free"] > 0.05  # the test means something: free aging changes the gender score
    # the learned gender direction is only close to the true axis, so a little drift is left
    assert age["drift_held"] < 0.1 * age["drift_free"]
    assert age["edited_change_held"] > 0.5  # and still ages
    assert rep["gender|age"]["drift_held"] < 0.1 * rep["gender|age"]["drift_free"]
    # scored along the learned gender direction itself (a linear classifier of it), holding is exact
    g = ds["gender"].vector.astype(np.float64)
    exact = conditional_check(lambda ws: {"age": ws[:, 0].double().numpy() @ true[0],
                                          "gender": ws[:, 0].double().numpy() @ g}, ds, ws)
    assert exact["age|gender"]["drift_held"] < 1e-5 < exact["age|gender"]["drift_free"]


def test_cli_real_labels_with_a_tiny_encoder(tmp_path):
    from faceapp.inversion.encoder import Encoder4Editing
    from faceapp.stylegan import Generator
    from faceapp.stylegan.checkpoint import save_networks

    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    E = Encoder4Editing(num_ws=G.num_ws, w_dim=16, img_resolution=32, blocks=(1, 1, 1, 1), channels=(8, 8, 8, 8),
                        head_channels=8)
    save_networks(tmp_path / "G.safetensors", {"G_ema": G})
    save_networks(tmp_path / "E.safetensors", {"encoder": E})
    _archive(tmp_path / "a.zip", n=60)
    out = tmp_path / "dirs"
    rc = main(["--generator", str(tmp_path / "G.safetensors"), "--encoder", str(tmp_path / "E.safetensors"),
               "--real-labels", str(tmp_path / "a.zip"), "--attributes", "age,gender,smile", "--num-samples", "40",
               "--chosen-ratio", "0.25", "--out", str(out), "--threads", "1", "--no-grids"])
    assert rc == 0
    ds = DirectionSet.load(out)
    assert list(ds) == ["age", "gender", "smile"]
    assert ds["age"].source == "learned:true-labels:a.zip" and ds["age"].metrics["real_faces"] == 60
    assert ds["smile"].source == "learned:interfacegan-svm"
    with np.load(out / "real_codes.npz") as f:
        assert f["ws"].shape == (60, G.num_ws, 16) and len(f["age"]) == 60


def test_age_labeler_leaves_held_out_photos_out_and_says_so(tmp_path):
    """read_utkface(exclude=) never yields them; the fitted model records the lists; a leaked photo is ~0 away."""
    import io
    import zipfile

    from PIL import Image

    from training.age_gender import AgeGenderModel
    from training.utkface import name_list_digest, read_utkface

    names = [f"{20 + i}_{i % 2}_0_2017{i:04d}.jpg.chip.jpg" for i in range(6)]
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as z:
        for n in names:
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (100, 50, 20)).save(buf, format="JPEG")
            z.writestr(f"UTKFace/{n}", buf.getvalue())
    held = names[1:3]
    got = [n.split("/")[-1] for n, *_ in read_utkface(tmp_path / "u.zip", exclude=held)]
    assert sorted(got) == sorted(set(names) - set(held))
    assert name_list_digest(held) == name_list_digest(["x/" + held[1], held[0]])  # order and folders do not matter

    rng = np.random.default_rng(0)
    desc = rng.normal(size=(50, 128)) * 0.2
    m = AgeGenderModel.fit(desc, rng.uniform(1, 90, 50), rng.integers(0, 2, 50))
    m = AgeGenderModel(**{**m.__dict__, "metrics": {"excluded": {"h.txt": {"count": 2,
                                                                            "digest": name_list_digest(held)}}}})
    m.save(tmp_path / "ag.safetensors")
    back = AgeGenderModel.load(tmp_path / "ag.safetensors")
    assert back.excludes(held) and not back.excludes(names[:2])
    near = back.nearest_distance(np.concatenate([desc[:2], desc[:2] + 0.5]))
    assert near[:2].max() < 1e-6 and near[2:].min() > 0.1


def test_held_out_photos_twins_under_other_names_are_found():
    """fit-age-gender drops training photos whose descriptor is a held-out photo's (UTKFace has duplicates)."""
    from training.labelers import DUPLICATE_DISTANCE, _far_from

    rng = np.random.default_rng(0)
    held = rng.normal(size=(5, 128)) * 0.05
    train = np.concatenate([rng.normal(size=(20, 128)) * 0.05,  # other people: ~0.8 away
                            held[[1, 3]] + 1e-4,  # the same photos re-encoded
                            held[[2]] + DUPLICATE_DISTANCE * 2 / np.sqrt(128)])  # just beyond the threshold
    keep = _far_from(train, held)
    assert keep[:20].all() and not keep[20] and not keep[21] and keep[22]
    assert _far_from(train, np.zeros((0, 128))).all()  # nothing held out: all kept


# ------------------------------------------------------------------ ridge fits, adults only, stored conditionals


def test_ridge_fit_recovers_the_normal_and_finds_nothing_in_noise():
    from training.learn_directions import fit_direction_ridge

    w, scores, true = labelled_codes(2000)
    normal, metrics = fit_direction_ridge(w, 30 + 10 * scores[:, 0])
    assert normal @ true[0] > 0.98 and metrics["val_r2"] > 0.8 and metrics["fit"] == "ridge"
    assert metrics["score_per_unit_w"] == pytest.approx(10, rel=0.1)  # years per unit of w along the normal
    _, noise = fit_direction_ridge(w, np.random.default_rng(5).normal(size=len(w)))
    assert noise["val_r2"] < 0.05


def test_both_fits_drop_the_codes_without_a_finite_valid_score():
    from training.learn_directions import fit_direction_ridge

    w, scores, _ = labelled_codes(400)
    s = scores[:, 0].copy()
    s[:30] = np.nan
    s[30:40] = np.inf
    valid = np.ones(len(s), bool)
    valid[40:100] = False  # 300 usable codes
    keep = slice(100, None)
    for fit in (fit_direction, fit_direction_ridge):
        normal, metrics = fit(w, s, valid=valid)
        same, same_metrics = fit(w[keep], s[keep])  # the same codes given alone: the same fit
        assert metrics["usable_codes"] == 300 and metrics == same_metrics
        assert np.array_equal(normal, same)


def test_age_min_fits_growing_old_not_growing_up_and_condition_stores_an_orthogonal_direction(tmp_path):
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.normal(size=(16, 3)))[0].T  # growing up, growing old, gender: orthonormal
    w = rng.normal(size=(3000, 16))
    t_up, t_old, t_g = w @ axes[0], w @ axes[1], w @ axes[2]
    child = t_up < -0.5
    age = np.where(child, 9 + 3 * t_up, 40 + 12 * t_old)  # children's age follows another axis
    gender = (t_g + 0.5 * t_old > 0).astype(float)  # gender correlated with the old-age axis
    np.savez(tmp_path / "codes.npz", w=w, age=age, gender=gender)
    out = tmp_path / "dirs"
    assert main(["--codes", str(tmp_path / "codes.npz"), "--out", str(out), "--attributes", "age,gender",
                 "--regress", "age", "--age-min", "18", "--condition", "age:gender",
                 "--strength-range", "age=-12:12", "--check-codes", "0"]) == 0
    ds = DirectionSet.load(out)
    age_dir, g_dir = ds["age"].vector.astype(np.float64), ds["gender"].vector.astype(np.float64)
    assert abs(age_dir @ g_dir) < 1e-6  # stored conditional on gender
    assert age_dir @ axes[1] > 0.8 and abs(age_dir @ axes[0]) < 0.1  # growing old, not growing up
    assert ds["age"].strength_range == (-12.0, 12.0) and ds["gender"].strength_range == (-3.0, 3.0)
    assert ds["age"].scale == pytest.approx((w @ age_dir).std(), rel=1e-5)
    assert ds["age"].metrics["fit"] == "ridge" and ds["age"].metrics["conditional_on"] == "gender"
    assert "holding gender" in ds["age"].source and ds["age"].source.startswith("learned:ridge")
    # Without --age-min the children's axis pulls the direction off the old-age one.
    # Two held at once: orthogonal to both (the joint projection, not one after the other).
    smile = (w @ (axes[1] + axes[2]) > 0).astype(float)
    np.savez(tmp_path / "codes3.npz", w=w, age=age, gender=gender, smile=smile)
    assert main(["--codes", str(tmp_path / "codes3.npz"), "--out", str(tmp_path / "two"), "--attributes",
                 "age,gender,smile", "--regress", "age", "--age-min", "18", "--condition", "age:gender,smile",
                 "--check-codes", "0"]) == 0
    two = DirectionSet.load(tmp_path / "two")
    for h in ("gender", "smile"):
        assert abs(two["age"].vector.astype(np.float64) @ two[h].vector.astype(np.float64)) < 1e-6
    assert main(["--codes", str(tmp_path / "codes.npz"), "--out", str(tmp_path / "all"), "--attributes", "age",
                 "--regress", "age", "--check-codes", "0"]) == 0
    assert abs(DirectionSet.load(tmp_path / "all")["age"].vector @ axes[0]) > 0.3
    # Bad flags are refused with the form they take.
    with pytest.raises(SystemExit):
        main(["--codes", str(tmp_path / "codes.npz"), "--out", str(out), "--condition", "age"])
    assert main(["--codes", str(tmp_path / "codes.npz"), "--out", str(out), "--attributes", "age",
                 "--condition", "age:gender"]) == 2
