"""Age prototypes at the photo's resolution: shape moves the photo's own pixels, detail deepens the photo's own
lines, tone and colour stay the person's (grey photos stay grey), and the file format refuses what it should."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from faceapp.align import detect_faces
from faceapp.align.paste import head_hull
from faceapp.align.prototype import AgePrototypes, eye_similarity
from faceapp.errors import CheckpointError
from faceapp.imageio import load_image
from training.age_prototypes import band_energy, build_prototypes, draw_groups, matched_quota
from training.measures import delta_e, face_chroma, mean_skin_lab

DATA = Path(__file__).parent / "data"
S = 96  # canonical side in these tests


@pytest.fixture(scope="module")
def face():
    photo = load_image(DATA / "astronaut.jpg")
    lm = detect_faces(photo)[0].landmarks68
    m = eye_similarity(lm, S)
    return photo, lm, lm @ m[:, :2].T + m[:, 2]


def _protos(lm_canon, *, shift=None, light=0.0, stripe=0.0, gain=(1.0, 1.0, 1.0), chroma=1.0):
    """Synthetic prototypes: flat skin-coloured means; the older group differs as asked."""
    young_lab = np.zeros((S, S, 3), np.float32)
    young_lab[...] = (60.0, 15.0, 20.0)
    old_lab = young_lab.copy()
    old_lab[..., 0] += light
    old_lab[..., 1:] *= chroma
    if stripe:
        old_lab[int(S * 0.62) : int(S * 0.62) + 2, :, 0] -= stripe  # a thin dark line across the cheeks
    energy = np.ones((3, S, S), np.float32)
    old_shape = lm_canon.copy()
    if shift is not None:
        old_shape[48:68] += shift  # the mouth
    return AgePrototypes(size=S, mean_shape=lm_canon, young_shape=lm_canon, old_shape=old_shape, young_lab=young_lab,
                         old_lab=old_lab, young_energy=energy, old_energy=energy * np.asarray(gain)[:, None, None])


def _outside_head(photo, lm):
    mask = np.ones(photo.size[::-1], bool)
    hull = head_hull(lm, top=0.8, widen=1.2, neck=0.3)
    x0, y0 = np.floor(hull.min(0)).astype(int) - 3
    x1, y1 = np.ceil(hull.max(0)).astype(int) + 3
    mask[max(y0, 0):y1, max(x0, 0):x1] = False
    return mask


def test_zero_strength_and_no_difference_change_nothing(face):
    photo, lm, lmc = face
    p = _protos(lmc)
    assert np.array_equal(np.asarray(p.apply(photo, lm, 0.0)), np.asarray(photo))
    # identical groups: nothing to move towards (drawn lines aside: they bring the older group's line energy to skin
    # that lacks it, whatever the younger group's; tested below)
    out = np.asarray(p.apply(photo, lm, 1.5, hair=0.0, wrinkles=0.0)).astype(int)
    assert np.abs(out - np.asarray(photo).astype(int)).max() <= 2


def test_shape_moves_the_photos_own_pixels(face):
    photo, lm, lmc = face
    out = np.asarray(_protos(lmc, shift=(0.0, 3.0)).apply(photo, lm, 1.0, hair=0.0)).astype(np.float32)
    before = np.asarray(photo).astype(np.float32)
    m = eye_similarity(lm, S)
    expected = np.linalg.inv(m[:, :2]) @ np.array([0.0, 3.0])  # 3 canonical px down, in photo px
    cx, cy = np.round(lm[48:68].mean(0)).astype(int)
    r = int(np.ptp(lm[48:68, 0]) * 0.45)
    grey = lambda a: cv2.cvtColor(a[cy - r:cy + r, cx - r:cx + r], cv2.COLOR_RGB2GRAY)  # noqa: E731
    (dx, dy), _ = cv2.phaseCorrelate(grey(before), grey(out), cv2.createHanningWindow((2 * r, 2 * r), cv2.CV_32F))
    assert np.hypot(dx - expected[0], dy - expected[1]) < 0.35 * np.linalg.norm(expected)
    outside = _outside_head(photo, lm)
    assert np.array_equal(out[outside], before[outside])  # nothing outside the head moved


def test_detail_deepens_the_photos_own_lines_without_a_tone_change(face, monkeypatch):
    import faceapp.align.prototype as proto_mod

    # the gains alone: no drawn lines, no cap and no peak limit (these flat prototypes' older group has less line
    # energy than the photo's own skin, which the cap and the peaks would leave as it is; they have their own tests)
    monkeypatch.setattr(proto_mod, "GAIN_CAP", 0.0)
    monkeypatch.setattr(proto_mod, "LINE_PEAK", 0.0)
    monkeypatch.setattr(proto_mod, "LINE_PEAK_FINEST", 0.0)
    photo, lm, lmc = face
    before = np.asarray(photo)
    out = np.asarray(_protos(lmc, gain=(2.0, 2.0, 2.0)).apply(photo, lm, 1.0, hair=0.0, wrinkles=0.0))
    hull = cv2.convexHull(lm[:27].astype(np.float32))[:, 0].astype(np.int32)
    inside = np.zeros(before.shape[:2], np.uint8)
    cv2.fillPoly(inside, [hull], 1)
    light = lambda a: rgb2lab(a)[..., 0].astype(np.float32)  # noqa: E731
    e0, e1 = band_energy(light(before))[:, inside > 0].mean(1), band_energy(light(out))[:, inside > 0].mean(1)
    assert (e1 > 1.4 * e0).all()  # every band of the photo's own detail, stronger
    assert delta_e(mean_skin_lab(before, lm), mean_skin_lab(out, lm)) < 1.5


def test_a_darker_older_group_is_no_tan_but_its_lines_go_in(face):
    photo, lm, lmc = face
    before = np.asarray(photo)
    out = np.asarray(_protos(lmc, light=-20.0, stripe=25.0).apply(photo, lm, 1.0, hair=0.0))
    assert delta_e(mean_skin_lab(before, lm), mean_skin_lab(out, lm)) < 2.5  # the skin keeps its tone
    m = eye_similarity(lm, S)
    inv = cv2.invertAffineTransform(m)
    y = S * 0.62 + 1
    line = np.array([[S * 0.45, y], [S * 0.55, y]]) @ inv[:, :2].T + inv[:, 2]  # the stripe, in the photo
    x, yy = np.round(line.mean(0)).astype(int)
    d = rgb2lab(out)[..., 0] - rgb2lab(before)[..., 0]
    assert d[yy - 1:yy + 2, x - 2:x + 3].mean() < -3  # ... and the line is there


def test_greying_only_ever_lowers_chroma_and_a_grey_photo_stays_grey(face):
    photo, lm, lmc = face
    p = _protos(lmc, chroma=0.3)
    before, out = np.asarray(photo), np.asarray(p.apply(photo, lm, 1.0))
    c = lambda a: np.hypot(*rgb2lab(a)[..., 1:].transpose(2, 0, 1))  # noqa: E731
    assert (c(out) <= c(before) + 1.0).all()
    hair = np.round(lm[19] + (lm[19] - lm[30]) * 0.5).astype(int)  # above the brows: off the skin
    assert c(out)[hair[1], hair[0]] < c(before)[hair[1], hair[0]] - 2
    grey = photo.convert("L").convert("RGB")
    assert face_chroma(np.asarray(p.apply(grey, lm, 1.0)), lm) < 0.5
    # the 'hair' part scales the colour that fades (a child's: 0, nothing fades; half: about half the fade)
    kw = {"hair": 0.0, "wrinkles": 0.0}
    at = (hair[1], hair[0])

    def fade(scales):  # chroma lost above the brows
        return c(before)[at] - c(np.asarray(p.apply(photo, lm, 1.0, scales=scales, **kw)))[at]

    assert abs(fade({"hair": 0.0})) < 0.5 and fade({}) > 2
    assert 0.2 * fade({}) < fade({"hair": 0.5}) < 0.8 * fade({})


def test_file_round_trip_and_refusals(face, tmp_path):
    photo, lm, lmc = face
    p = _protos(lmc, light=-5.0, gain=(1.5, 1.0, 0.8))
    p.save(tmp_path / "p.safetensors")
    q = AgePrototypes.load(tmp_path / "p.safetensors")
    assert np.allclose(q.old_lab, p.old_lab, atol=0.05) and np.allclose(q.old_shape, p.old_shape)
    assert np.abs(np.asarray(q.apply(photo, lm, 1.0)).astype(int) - np.asarray(p.apply(photo, lm, 1.0))).max() <= 2
    with pytest.raises(CheckpointError, match="not found"):
        AgePrototypes.load(tmp_path / "missing.safetensors")
    (tmp_path / "text.safetensors").write_text("not a tensor file")
    with pytest.raises(CheckpointError):
        AgePrototypes.load(tmp_path / "text.safetensors")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"), metadata={"format": "something"})
    with pytest.raises(CheckpointError, match="not an age prototypes file"):
        AgePrototypes.load(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        AgePrototypes(size=S, mean_shape=lmc[:60], young_shape=lmc, old_shape=lmc, young_lab=p.young_lab,
                      old_lab=p.old_lab, young_energy=p.young_energy, old_energy=p.old_energy)


def test_build_averages_shapes_and_energies(face):
    """build_prototypes on faces whose landmarks are known: the group means are the landmarks' means, and a
    group made of one face has that face's own band energy (in the mean shape, here its own)."""
    photo, lm, _ = face
    img = np.asarray(photo)
    shifted = lm.copy()
    shifted[48:68, 1] += 4.0
    p = build_prototypes({"young": [(img, lm)], "old": [(img, lm), (img, shifted)]}, size=S)
    m = eye_similarity(lm, S)
    canon = lambda pts: pts @ m[:, :2].T + m[:, 2]  # noqa: E731
    assert np.allclose(p.young_shape, canon(lm), atol=1e-3)
    assert np.allclose(p.old_shape, (canon(lm) + canon(shifted)) / 2, atol=1e-3)
    assert np.allclose(p.mean_shape, (p.young_shape + p.old_shape) / 2)
    assert p.young_energy.shape == (3, S, S) and (p.young_energy >= 0).all()
    # one face per group, the same face: the two groups' images match where the warp is the identity
    q = build_prototypes({"young": [(img, lm)], "old": [(img, lm)]}, size=S)
    assert np.allclose(q.young_lab, q.old_lab) and np.allclose(q.young_energy, q.old_energy)


def test_groups_are_drawn_with_the_same_mix_of_genders_and_races():
    """UTKFace's age groups are not mixed alike (its 70+ are 70 % white, its 20-29s 27 %): matched draws take as
    many faces of each stratum into every group as the scarcest group has, scaled to `num`, skip faces without
    landmarks (then cut the other group to match) and keep the draw's order; unmatched draws take the first `num`."""
    groups = {"young": (20, 30), "old": (80, 120)}
    # strata: young has 30 of "a" and 10 of "b"; old has 6 of "a", 20 of "b" and 5 of "c" (which young lacks)
    labels = [(25, "a")] * 30 + [(25, "b")] * 10 + [(85, "a")] * 6 + [(85, "b")] * 20 + [(85, "c")] * 5 + [(50, "a")]
    assert matched_quota(labels, groups, 100) == {"a": 6, "b": 10}
    assert matched_quota(labels, groups, 8) == {"a": 3, "b": 5}  # scaled by 8 / 16, rounded down
    rng = np.random.default_rng(0)
    items = [(f"i{k}", k, age, st) for k, (age, st) in enumerate(labels)]
    items = [items[i] for i in rng.permutation(len(items))]
    no_face = {31}  # a young "b" (images 30..39) whose landmarks are not found
    landmarks = lambda img: None if img in no_face else np.full((68, 2), float(img))  # noqa: E731
    faces, mix = draw_groups(iter(items), groups, 100, landmarks, matched_quota(labels, groups, 100))
    # young has 9 "b" with landmarks: old is cut to 9 as well; "c" is in one group only, so in neither
    assert mix == {"young": {"a": 6, "b": 9}, "old": {"a": 6, "b": 9}}
    stratum = {img: st for _, img, _, st in items}
    for g, (lo, hi) in groups.items():
        imgs = [img for img, lm in faces[g]]
        assert all(lm[0, 0] == img for img, lm in faces[g]) and not set(imgs) & no_face
        for st in "ab":  # each stratum's faces are the first drawn of it
            order = [img for _, img, age, s in items if lo <= age < hi and s == st and img not in no_face]
            assert sorted(i for i in imgs if stratum[i] == st) == sorted(order[: mix[g][st]])
    plain, none = draw_groups(iter(items), groups, 8, landmarks)
    assert none is None
    for g, (lo, hi) in groups.items():
        first = [img for _, img, age, _ in items if lo <= age < hi and img not in no_face][:8]
        assert [img for img, _ in plain[g]] == first


@pytest.fixture(scope="module")
def proto_bundle(face, tmp_path_factory):
    """A tiny random bundle with synthetic age prototypes (an older group with a lower mouth and stronger
    detail) that age the photo alone (gan_share 0), t = 0.1 per strength unit."""
    import json

    from faceapp.bundle import load_bundle, make_random_bundle

    photo, lm, lmc = face
    root = make_random_bundle(tmp_path_factory.mktemp("b") / "bundle", resolution=32, seed=1)
    _protos(lmc, shift=(0.0, 2.0), gain=(1.6, 1.3, 1.0)).save(root / "age_prototypes.safetensors")
    meta = json.loads((root / "bundle.json").read_text())
    meta |= {"age_prototypes": "age_prototypes.safetensors",
             "age_prototypes_options": {"t_per_strength": 0.1, "gan_share": 0.0}}
    (root / "bundle.json").write_text(json.dumps(meta))
    return load_bundle(root)


def test_the_editor_ages_photos_with_the_bundles_prototypes(face, proto_bundle):
    """compose and timeline give the generator its share of age (none here) and the prototypes t = 0.1 x strength:
    the same pixels as aging the strength-0 result by hand; other edits are untouched."""
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor

    photo, lm, _ = face
    editor = FaceEditor(proto_bundle, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2,
                                                                            perceptual_weight=0.0)})
    prepared = editor.prepare(photo)
    assert proto_bundle.age_split(6.0) == (0.0, pytest.approx(0.6))
    plain = editor.compose(photo, prepared, {"smile": 1.0})
    aged = editor.compose(photo, prepared, {"age": 6.0, "smile": 1.0})
    by_hand = proto_bundle.age_prototypes.apply(plain, prepared[0].aligned.face.landmarks68, 0.6)
    assert np.array_equal(np.asarray(aged), np.asarray(by_hand))
    assert np.abs(np.asarray(aged).astype(int) - np.asarray(plain)).max() > 10  # and it did something
    frames = editor.timeline(photo, prepared, name="age", strengths=[0.0, 6.0], base={"smile": 1.0})
    assert np.array_equal(np.asarray(frames[0]), np.asarray(plain))
    assert np.array_equal(np.asarray(frames[1]), np.asarray(aged))


def test_bad_prototype_options_are_refused(face, proto_bundle, tmp_path):
    import json
    import shutil

    from faceapp.bundle import load_bundle

    root = tmp_path / "b"
    shutil.copytree(proto_bundle.root, root)
    meta = json.loads((root / "bundle.json").read_text())
    meta["age_prototypes_options"] = {"t_per_strength": "lots", "gan_share": 2}
    (root / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="age_prototypes_options"):
        load_bundle(root)


def test_cli_bundle_takes_age_prototypes(face, proto_bundle, tmp_path):
    """`python -m faceapp bundle --age-prototypes`: stored, loaded back, t at the age slider's end as asked; refused
    without an age direction."""
    from faceapp.bundle import load_bundle
    from faceapp.cli import main as cli
    from faceapp.stylegan.checkpoint import save_networks

    save_networks(tmp_path / "G.safetensors", {"G_ema": proto_bundle.G})
    proto_bundle.directions.save(tmp_path / "dirs")
    args = ["bundle", "--generator", str(tmp_path / "G.safetensors"), "--align", "utkface",
            "--age-prototypes", str(proto_bundle.root / "age_prototypes.safetensors"), "--age-prototypes-end", "1.5",
            "--age-gan-share", "0.25", "--age-prototypes-younger-end", "2.0"]
    assert cli([*args, "--directions", str(tmp_path / "dirs"), "--out", str(tmp_path / "b")]) == 0
    b = load_bundle(tmp_path / "b")
    end = max(abs(x) for x in b.directions["age"].strength_range)
    gan, t = b.age_split(end)
    assert t == pytest.approx(1.5) and gan == pytest.approx(0.25 * end)
    assert b.age_split(-end) == (pytest.approx(-0.25 * end), pytest.approx(-2.0))
    assert np.allclose(b.age_prototypes.old_shape, proto_bundle.age_prototypes.old_shape)
    assert cli([*args, "--out", str(tmp_path / "c")]) != 0  # no directions: no age direction to go with


def test_the_app_names_the_age_prototypes(proto_bundle):
    import dataclasses

    from faceapp.web.views import model_notice

    trained = dataclasses.replace(proto_bundle, meta={**proto_bundle.meta, "untrained": False})
    assert "age prototypes" in model_notice(trained)
    assert "age prototypes" not in model_notice(dataclasses.replace(trained, age_prototypes=None))
    assert "estimated age" not in model_notice(trained)  # no age estimator: every face aged alike


def test_a_turned_face_gets_less_of_the_frontal_change(face):
    """The astronaut faces the camera (the whole shape change); with the nose tip moved towards one jaw edge, as
    on a face in profile, the shape change fades out (a frontal warp would fold the far cheek)."""
    from faceapp.align.prototype import _frontal

    photo, lm, lmc = face
    assert _frontal(lmc) == 1.0
    turned = lmc.copy()
    width = lmc[16, 0] - lmc[0, 0]
    turned[30, 0] = (lmc[0, 0] + lmc[16, 0]) / 2 + 0.35 * width
    assert _frontal(turned) == pytest.approx(0.25)
    turned[30, 0] = (lmc[0, 0] + lmc[16, 0]) / 2 - 0.45 * width
    assert _frontal(turned) == 0.0


def test_a_turned_faces_near_side_gets_the_whole_change(face):
    """`_near_side`: all ones for a frontal face; for one turned (nose towards the image's right jaw edge) the right
    (far) side gets `_frontal` of the change and the left (near) side all of it."""
    from faceapp.align.prototype import _frontal, _near_side

    _, _, lmc = face
    assert (_near_side(lmc, S) == 1.0).all()
    turned = lmc.copy()
    width = lmc[16, 0] - lmc[0, 0]
    turned[30, 0] = (lmc[0, 0] + lmc[16, 0]) / 2 + 0.35 * width
    w = _near_side(turned, S)
    row = w[S // 2]
    assert row[int(lmc[0, 0])] == pytest.approx(1.0)
    assert row[-1] == pytest.approx(_frontal(turned)) and row[int(lmc[16, 0])] < 0.3
    assert np.all(np.diff(row) <= 1e-6)  # falling from the near side to the far side
    turned[30, 0] = (lmc[0, 0] + lmc[16, 0]) / 2 - 0.45 * width  # the other way, fully in profile
    w = _near_side(turned, S)[S // 2]
    assert w[int(lmc[16, 0])] == pytest.approx(1.0) and w[0] == pytest.approx(0.0)


def test_drawn_lines_follow_the_older_faces_folds_keep_the_tone_and_repeat(face):
    """Where the older group has more fine-line energy than the photo's skin, lines are drawn (older only): they
    run along the older mean face's folds (horizontal stripes here), leave the skin's tone and a grey photo's
    greyness alone, come out the same twice, and `wrinkles=0` draws none."""
    photo, lm, lmc = face
    old_lab = np.zeros((S, S, 3), np.float32)
    old_lab[...] = (60.0, 15.0, 20.0)
    old_lab[(np.arange(S) % 6) < 2, :, 0] -= 8.0  # the older mean face: horizontal folds everywhere
    young_lab = np.repeat(old_lab.mean((0, 1), keepdims=True), S, 0).repeat(S, 1)
    energy = np.full((3, S, S), 0.5, np.float32)
    p = AgePrototypes(size=S, mean_shape=lmc, young_shape=lmc, old_shape=lmc, young_lab=young_lab, old_lab=young_lab,
                      young_energy=energy, old_energy=energy * 12.0)  # the older group: 12x the line energy
    p_folds = AgePrototypes(size=S, mean_shape=lmc, young_shape=lmc, old_shape=lmc, young_lab=young_lab,
                            old_lab=old_lab, young_energy=energy, old_energy=energy * 12.0)
    plain = np.asarray(p.apply(photo, lm, 1.0, hair=0.0, wrinkles=0.0))
    drawn = np.asarray(p.apply(photo, lm, 1.0, hair=0.0, wrinkles=1.5))
    assert np.array_equal(drawn, np.asarray(p.apply(photo, lm, 1.0, hair=0.0, wrinkles=1.5)))  # seeded
    assert np.array_equal(np.asarray(p.apply(photo, lm, -1.0, hair=0.0, wrinkles=1.5)),
                          np.asarray(p.apply(photo, lm, -1.0, hair=0.0, wrinkles=0.0)))  # younger: none
    cheek = (slice(int(lm[29, 1]) - 8, int(lm[29, 1]) + 8), slice(int(lm[2, 0]) + 6, int(lm[31, 0]) - 4))
    light = lambda a: rgb2lab(a)[..., 0].astype(np.float32)  # noqa: E731
    change = light(drawn) - light(plain)
    # round texture where the older mean face has no folds (pores, spots), faint: WRINKLE_ROUND of the amplitude
    assert change[cheek].std() > 0.15
    assert delta_e(mean_skin_lab(plain, lm), mean_skin_lab(drawn, lm)) < 1.5  # and no tone came with them
    # with folds in the older mean face, the lines run along them: lightness varies across (y) more than along (x)
    folds = (light(np.asarray(p_folds.apply(photo, lm, 1.0, hair=0.0, wrinkles=1.5)))
             - light(np.asarray(p_folds.apply(photo, lm, 1.0, hair=0.0, wrinkles=0.0))))  # the drawn lines alone
    m = eye_similarity(lm, S)
    turn = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    assert abs(turn) < 10  # the astronaut's face is upright, so canonical horizontal is the photo's
    d = folds[cheek]
    assert d.std() > 0.8 and d.std() > 2 * change[cheek].std()  # lines along folds go in whole
    gy, gx = np.abs(np.diff(d, axis=0)).mean(), np.abs(np.diff(d, axis=1)).mean()
    assert gy > 1.3 * gx
    grey = photo.convert("L").convert("RGB")
    assert face_chroma(np.asarray(p.apply(grey, lm, 1.0, wrinkles=1.5)), lm) < 0.5


def test_scales_move_each_part_by_its_own_multiple_of_t(face):
    """scales={'shape': 2} at t moves the face as t x 2 does (prototypes that differ by shape alone), scales are
    ignored when younger, and {'shape': 0} leaves the features where they were."""
    photo, lm, lmc = face
    p = _protos(lmc, shift=(0.0, 2.0))
    kw = {"hair": 0.0, "wrinkles": 0.0}
    assert np.array_equal(np.asarray(p.apply(photo, lm, 0.75, scales={"shape": 2.0}, **kw)),
                          np.asarray(p.apply(photo, lm, 1.5, **kw)))
    assert np.array_equal(np.asarray(p.apply(photo, lm, -0.75, scales={"shape": 2.0}, **kw)),
                          np.asarray(p.apply(photo, lm, -0.75, **kw)))
    still = np.asarray(p.apply(photo, lm, 1.5, scales={"shape": 0.0}, **kw)).astype(int)
    assert np.abs(still - np.asarray(photo)).max() <= 2


def test_a_bundles_age_profile_ages_each_face_by_its_own_estimated_age(face, proto_bundle, tmp_path):
    """A bundle with an age estimator and a by_age profile: prepare() reads each face's age once, on the
    estimator's UTKFace-style crop; compose ages it with the profile's parts read at that age; bad profiles and
    estimator files are refused."""
    import dataclasses
    import json
    import shutil

    import torch

    from faceapp.align import align_face, utkface_spec
    from faceapp.bundle import load_bundle
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor
    from faceapp.stylegan.age_estimator import AgeEstimator, estimate_ages
    from faceapp.stylegan.checkpoint import save_networks

    photo, lm, _ = face
    root = tmp_path / "b"
    shutil.copytree(proto_bundle.root, root)
    torch.manual_seed(0)
    net = AgeEstimator(resolution=32, width_mult=0.25).eval()
    save_networks(root / "age_estimator.safetensors", {"age": net})
    meta = json.loads((root / "bundle.json").read_text())
    profile = {"ages": [0, 100], "shape": [0.0, 2.0], "wrinkles": [0.0, 1.0]}
    meta["age_estimator"] = "age_estimator.safetensors"
    meta["age_prototypes_options"] |= {"by_age": profile}
    (root / "bundle.json").write_text(json.dumps(meta))
    b = load_bundle(root)
    assert b.uses_face_age and b.age_scales(25.0) == {"shape": 0.5, "wrinkles": 0.25}
    from faceapp.web.views import model_notice

    assert "estimated age" in model_notice(dataclasses.replace(b, meta={**b.meta, "untrained": False}))
    assert b.age_scales(150.0) == {"shape": 2.0, "wrinkles": 1.0} and b.age_scales(None) is None
    assert b.age_scales(float("nan")) is None  # an unreadable age: every part as the bundle's t says
    editor = FaceEditor(b, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2, perceptual_weight=0.0)})
    prepared = editor.prepare(photo)
    crop = align_face(photo, prepared[0].aligned.face, utkface_spec(200)).image
    age = float(estimate_ages(b.age_estimator, [crop])[0])
    assert prepared[0].age == pytest.approx(age) and 0 < age < 100
    plain = editor.compose(photo, prepared, {})
    aged = editor.compose(photo, prepared, {"age": 6.0})
    by_hand = b.age_prototypes.apply(plain, lm, 0.6, scales={"shape": age / 50, "wrinkles": age / 100})
    assert np.array_equal(np.asarray(aged), np.asarray(by_hand))
    # with late-life prototypes and a 'late' part, they follow, by t x the face's 'late' multiple
    _protos(face[2], shift=(0.0, 1.0), gain=(1.3, 1.2, 1.0)).save(root / "late.safetensors")
    meta_late = {**meta, "age_prototypes_late": "late.safetensors",
                 "age_prototypes_options": {**meta["age_prototypes_options"],
                                            "by_age": {**profile, "late": [0.0, 1.0]}}}
    (root / "bundle.json").write_text(json.dumps(meta_late))
    bl = load_bundle(root)
    editor_l = FaceEditor(bl, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2, perceptual_weight=0.0)})
    aged_l = editor_l.compose(photo, prepared, {"age": 6.0})
    sc = bl.age_scales(age)
    by_hand_l = bl.age_prototypes_late.apply(bl.age_prototypes.apply(plain, lm, 0.6, scales=sc), lm,
                                             0.6 * age / 100, hair=0.0, wrinkles=0.0)
    assert sc["late"] == pytest.approx(age / 100)
    assert np.array_equal(np.asarray(aged_l), np.asarray(by_hand_l))
    assert not np.array_equal(np.asarray(aged_l), np.asarray(aged))
    # a child: growth prototypes first (no greying, no drawn lines), then the age prototypes' parts, with the
    # greying and the fading colour scaled by the 'hair' part (0 here: a child's hair and lips keep their colour)
    _protos(face[2], shift=(0.0, -1.5), light=-4.0).save(root / "growth.safetensors")
    child = {"ages": [0, 100], "shape": [0.0, 2.0], "growth": [1.0, 0.0], "hair": [0.0, 1.0]}
    meta_g = {**meta, "age_prototypes_growth": "growth.safetensors",
              "age_prototypes_options": {**meta["age_prototypes_options"], "by_age": child}}
    (root / "bundle.json").write_text(json.dumps(meta_g))
    bg = load_bundle(root)
    assert "children grow up" in model_notice(dataclasses.replace(bg, meta={**bg.meta, "untrained": False}))
    assert "children grow up" not in model_notice(dataclasses.replace(b, meta={**b.meta, "untrained": False}))
    editor_g = FaceEditor(bg, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2, perceptual_weight=0.0)})
    aged_g = editor_g.compose(photo, prepared, {"age": 6.0})
    sc = bg.age_scales(age)
    grown = bg.age_prototypes_growth.apply(plain, lm, 0.6 * (1 - age / 100), hair=0.0, wrinkles=0.0)
    by_hand_g = bg.age_prototypes.apply(grown, lm, 0.6, hair=bg.hair_grey * age / 100, wrinkles=bg.wrinkles,
                                        scales={"shape": sc["shape"], "hair": sc["hair"]})
    assert np.array_equal(np.asarray(aged_g), np.asarray(by_hand_g))
    assert not np.array_equal(np.asarray(aged_g), np.asarray(aged))
    younger_g = editor_g.compose(photo, prepared, {"age": -6.0})  # younger: no growth, as before
    assert np.array_equal(np.asarray(younger_g), np.asarray(editor.compose(photo, prepared, {"age": -6.0})))
    (root / "bundle.json").write_text(json.dumps(meta))
    unscaled = b.age_prototypes.apply(plain, lm, 0.6)
    assert not np.array_equal(np.asarray(aged), np.asarray(unscaled))  # the profile made a difference
    # without an estimator the profile is not used
    assert not dataclasses.replace(b, age_estimator=None).uses_face_age
    for bad in ({"ages": [50, 10], "shape": [1, 1]}, {"ages": [10, 50], "shape": [1]},
                {"ages": [10, 50], "shape": [1, 9]}, {"ages": [10, 50], "colour": [1, 1]}, {"ages": [10, 50]}):
        meta["age_prototypes_options"]["by_age"] = bad
        (root / "bundle.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="by_age"):
            load_bundle(root)
    meta["age_prototypes_options"]["by_age"] = profile
    (root / "bundle.json").write_text(json.dumps(meta))
    (root / "age_estimator.safetensors").write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        load_bundle(root)


def test_cli_bundle_takes_an_age_estimator_profile_and_line_amount(face, proto_bundle, tmp_path):
    """`faceapp bundle --age-estimator --age-profile --age-wrinkles`: stored and loaded back (the profile as
    training/age_profile.py writes it); a profile without an estimator is refused."""
    import json

    import torch

    from faceapp.bundle import load_bundle
    from faceapp.cli import main as cli
    from faceapp.stylegan.age_estimator import AgeEstimator
    from faceapp.stylegan.checkpoint import save_networks

    save_networks(tmp_path / "G.safetensors", {"G_ema": proto_bundle.G})
    proto_bundle.directions.save(tmp_path / "dirs")
    torch.manual_seed(0)
    save_networks(tmp_path / "age.safetensors", {"age": AgeEstimator(resolution=32, width_mult=0.25).eval()})
    profile = {"ages": [30.0, 60.0], "shape": [0.8, 1.7], "wrinkles": [1.0, 1.3]}
    (tmp_path / "profile.json").write_text(json.dumps({"by_age": profile, "table": []}))
    args = ["bundle", "--generator", str(tmp_path / "G.safetensors"), "--align", "utkface", "--directions",
            str(tmp_path / "dirs"), "--age-prototypes", str(proto_bundle.root / "age_prototypes.safetensors"),
            "--age-wrinkles", "0.5", "--age-profile", str(tmp_path / "profile.json")]
    assert cli([*args, "--age-estimator", str(tmp_path / "age.safetensors"), "--out", str(tmp_path / "b")]) == 0
    b = load_bundle(tmp_path / "b")
    assert b.uses_face_age and b.wrinkles == 0.5
    assert b.age_scales(45.0) == {"shape": pytest.approx(1.25), "wrinkles": pytest.approx(1.15)}
    assert cli([*args, "--out", str(tmp_path / "c")]) != 0  # a profile needs an estimator to read ages
    late = ["--age-prototypes-late", str(proto_bundle.root / "age_prototypes.safetensors")]
    assert cli([*args, *late, "--age-estimator", str(tmp_path / "age.safetensors"), "--out", str(tmp_path / "d")]) == 0
    assert load_bundle(tmp_path / "d").age_prototypes_late is not None
    no_protos = args[:7]  # bundle --generator G --align utkface --directions D: no age prototypes
    assert cli([*no_protos, *late, "--out", str(tmp_path / "e")]) != 0  # late-life prototypes go after age ones
    growth = ["--age-prototypes-growth", str(proto_bundle.root / "age_prototypes.safetensors")]
    est = ["--age-estimator", str(tmp_path / "age.safetensors")]
    assert cli([*args, *growth, *est, "--out", str(tmp_path / "f")]) == 0
    assert load_bundle(tmp_path / "f").age_prototypes_growth is not None
    assert load_bundle(tmp_path / "d").age_prototypes_growth is None
    assert cli([*no_protos, *growth, "--out", str(tmp_path / "g")]) != 0
    # the profile fit's younger end becomes the slider's younger end, unless one is given
    end = max(abs(x) for x in b.directions["age"].strength_range)
    (tmp_path / "profile.json").write_text(json.dumps({"by_age": profile, "younger_end": 2.5}))
    assert cli([*args, *est, "--out", str(tmp_path / "h")]) == 0
    assert load_bundle(tmp_path / "h").age_split(-end)[1] == pytest.approx(-2.5)
    assert cli([*args, *est, "--age-prototypes-younger-end", "2.0", "--out", str(tmp_path / "i")]) == 0
    assert load_bundle(tmp_path / "i").age_split(-end)[1] == pytest.approx(-2.0)
    (tmp_path / "profile.json").write_text(json.dumps({"by_age": profile, "younger_end": "far"}))
    assert cli([*args, *est, "--out", str(tmp_path / "j")]) != 0


def test_the_shape_change_never_folds_the_mesh_and_keeps_the_mouths_move(face):
    """Older lips are thinner: pushed far enough, the lips' thin triangles turn over and the warp folds the photo.
    `_without_folds` scales the mouth's own change of shape down first (the mouth still moves as a whole), then
    the whole change; a change that folds nothing is left alone."""
    from scipy.spatial import Delaunay

    from faceapp.align.prototype import FOLD_FLOOR, _border, _without_folds

    _, _, lmc = face
    ok = lmc + np.array([0.0, 1.0])  # everything down a pixel: nothing folds
    assert np.array_equal(_without_folds(lmc, ok, S), ok)
    folded = lmc.copy()
    folded[48:68] += (0.0, 1.5)  # the mouth moves down...
    folded[49:54, 1] += 2.0 * np.ptp(lmc[48:68, 1])  # ... and its upper lip through the lower one
    fixed = _without_folds(lmc, folded, S)
    pts = np.vstack([lmc, _border(S)])
    tri = Delaunay(pts).simplices

    def areas(p):
        a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    a0 = areas(pts)
    assert (areas(np.vstack([folded, _border(S)])) / a0 < 0).any()  # it did fold
    assert (areas(np.vstack([fixed, _border(S)])) / a0 >= FOLD_FLOOR - 1e-9).all()  # and now does not
    assert np.allclose((fixed - lmc)[48:68].mean(0), (folded - lmc)[48:68].mean(0))  # the mouth still moved down
    assert np.array_equal(fixed[:48], folded[:48])  # nothing else was touched


def _face_energy(photo, lm):
    """img -> mean lightness band energy inside the face outline (landmarks 0-26) of `photo`'s face at `lm`."""
    hull = cv2.convexHull(lm[:27].astype(np.float32))[:, 0].astype(np.int32)
    inside = np.zeros(photo.size[::-1], np.uint8)
    cv2.fillPoly(inside, [hull], 1)
    return lambda img: band_energy(rgb2lab(np.asarray(img))[..., 0].astype(np.float32))[:, inside > 0].mean()


def test_already_lined_skin_is_not_deepened_past_the_cap(face, monkeypatch):
    """The band gains (older group's energy / younger's, to the power t) stop where the skin's own line energy would
    pass GAIN_CAP x the older group's: deepened, but not into gashes."""
    import faceapp.align.prototype as proto_mod

    photo, lm, lmc = face
    p = _protos(lmc, gain=(4.0, 4.0, 4.0))  # the older group: 4x the line energy of the younger (4 L units)
    energy = _face_energy(photo, lm)
    kw = {"hair": 0.0, "wrinkles": 0.0}
    monkeypatch.setattr(proto_mod, "GAIN_CAP", 0.0)
    free = energy(p.apply(photo, lm, 1.0, **kw))
    monkeypatch.setattr(proto_mod, "GAIN_CAP", 1.0)
    capped = energy(p.apply(photo, lm, 1.0, **kw))
    before = energy(photo)
    assert before < capped < free


def test_a_profiles_cap_part_lets_old_lines_deepen_further(face, monkeypatch):
    """scales' 'cap' multiplies GAIN_CAP in the fine bands (an old face's lines already are the older group's, so at
    the cap its gains stop): cap 2 deepens the lines past cap 1, no deeper than no cap at all; the coarse band
    (folds and shading, which past the cap turned into gashes and blotches) keeps GAIN_CAP whatever the part says;
    making younger ignores it; a bundle's profile may carry it (0..4)."""
    import faceapp.align.prototype as proto_mod
    from faceapp.bundle import _check_age_profile

    photo, lm, lmc = face
    is_fine = [sg < proto_mod.CAP_SIGMA_MAX for sg in AgePrototypes.sigmas]  # bands of 0.7, 1.5, 3 px
    assert is_fine[0] and not is_fine[-1]
    fine = _protos(lmc, gain=tuple(4.0 if f else 1.0 for f in is_fine))  # the older group: 4x the fine bands' energy
    coarse = _protos(lmc, gain=tuple(1.0 if f else 4.0 for f in is_fine))  # ... 4x in the coarse ones alone
    energy = _face_energy(photo, lm)
    kw = {"hair": 0.0, "wrinkles": 0.0}
    monkeypatch.setattr(proto_mod, "GAIN_CAP", 1.0)
    capped = fine.apply(photo, lm, 1.0, scales={"cap": 1.0}, **kw)
    doubled = fine.apply(photo, lm, 1.0, scales={"cap": 2.0}, **kw)
    young = fine.apply(photo, lm, -1.0, scales={"cap": 2.0}, **kw)
    np.testing.assert_array_equal(np.asarray(young), np.asarray(fine.apply(photo, lm, -1.0, **kw)))
    coarse_1, coarse_2 = (np.asarray(coarse.apply(photo, lm, 1.0, scales={"cap": c}, **kw)) for c in (1.0, 2.0))
    np.testing.assert_array_equal(coarse_1, coarse_2)
    monkeypatch.setattr(proto_mod, "GAIN_CAP", 0.0)
    free = fine.apply(photo, lm, 1.0, **kw)
    assert energy(photo) < energy(capped) < energy(doubled) <= energy(free)
    assert not np.array_equal(coarse_1, np.asarray(coarse.apply(photo, lm, 1.0, **kw)))  # the coarse band is capped
    _check_age_profile({"ages": [20, 60], "gain": [1.0, 3.0], "cap": [1.0, 2.0]}, root=Path("."))
    with pytest.raises(CheckpointError, match="cap"):
        _check_age_profile({"ages": [20, 60], "cap": [1.0, 5.0]}, root=Path("."))


def test_no_spot_deepens_past_the_line_peak(face, monkeypatch):
    """A dark stroke on the cheek (a young face's fold edge, a blotch), under large gains past the cap (an old face's
    mix): each band adds at most about LINE_PEAK x the older group's line energy at any pixel (LINE_PEAK_FINEST in
    the finest band), where without the limit the stroke turns into a gash; the skin's fine detail still deepens."""
    import dataclasses

    import faceapp.align.prototype as proto_mod

    photo, lm, lmc = face
    rgb = np.asarray(photo).copy()
    # a 3 px dark stroke down the left cheek, between the eye's outer corner and the mouth's corner
    (xa, ya), (xb, yb) = lm[36], lm[48]
    cv2.line(rgb, (int(xa - 4), int(ya + 12)), (int(xb - 6), int(yb - 4)), (90, 60, 50), 3)
    stroked = Image.fromarray(rgb)
    ones = np.ones((3, S, S), np.float32)
    p = dataclasses.replace(_protos(lmc), young_energy=0.25 * ones, old_energy=ones)  # older lines: 1 L, 4x
    kw = {"hair": 0.0, "wrinkles": 0.0, "scales": {"gain": 3.0, "cap": 2.0}}
    light = lambda img: rgb2lab(np.asarray(img))[..., 0]  # noqa: E731
    l0 = light(stroked)
    limited = p.apply(stroked, lm, 1.0, **kw)
    # the bands' limits at a pixel: peak x 1 L + 0.05 each; 1 L of slack for the 8-bit round trip
    bound = sum((proto_mod.LINE_PEAK_FINEST if sg < proto_mod.FINEST_SIGMA else proto_mod.LINE_PEAK) + 0.05
                for sg in p.sigmas) + 1.0
    monkeypatch.setattr(proto_mod, "LINE_PEAK", 0.0)
    monkeypatch.setattr(proto_mod, "LINE_PEAK_FINEST", 0.0)
    free = p.apply(stroked, lm, 1.0, **kw)
    assert (l0 - light(limited)).max() < bound < (l0 - light(free)).max() - 2.0
    energy = _face_energy(photo, lm)
    assert energy(photo) < energy(p.apply(photo, lm, 1.0, **kw))  # lines still deepen, only no further than that


def test_grey_hair_moves_with_the_pixels_the_shape_change_moves(face, monkeypatch):
    """Hair is found on the unedited photo. A jaw that widens with age carries the cheek's skin out onto where
    the hair was: that skin keeps its colour (not greyed into a pale rim down the face), while hair the warp did
    not reach greys as before."""
    import dataclasses

    from faceapp.align import hair as hair_mod
    from faceapp.align.paste import face_hull
    from training.measures import face_mask_of

    photo, lm, lmc = face
    rgb = np.asarray(photo)

    def stand_in(image, landmarks):  # all of the head's box outside the unedited face is "hair"
        h, w = image.shape[:2]
        box = (0, 0, w, h)
        mask = np.ones((h, w), np.float32)
        hull = cv2.convexHull(face_hull(np.asarray(landmarks), forehead=0.3).astype(np.float32))
        cv2.fillPoly(mask, [np.round(hull[:, 0]).astype(np.int32)], 0.0)
        return mask, box

    monkeypatch.setattr(hair_mod, "hair_mask", stand_in)
    wide = lmc.copy()
    centre = lmc[27:36].mean(0)
    wide[2:15, 0] += 0.12 * (lmc[2:15, 0] - centre[0])  # the cheeks and jaw 12 % wider
    p = dataclasses.replace(_protos(lmc), old_shape=wide)
    chroma = lambda img: np.hypot(*rgb2lab(np.asarray(img))[..., 1:].transpose(2, 0, 1))  # noqa: E731
    plain = p.apply(photo, lm, 1.0, hair=0.0, wrinkles=0.0)
    greyed = p.apply(photo, lm, 1.0, hair=1.0, wrinkles=0.0)
    c0, c_plain, c_grey = chroma(photo), chroma(plain), chroma(greyed)
    hair = stand_in(rgb, lm)[0] > 0.5
    # skin carried out past the face's old outline: much more colourful than the wall or hair that was there
    carried = hair & (c_plain > c0 + 8.0) & ~face_mask_of(lm, hair.shape)
    assert carried.sum() > 30
    assert np.median(c_grey[carried] / c_plain[carried]) > 0.8  # it keeps its colour (the mask as found: 0.46)
    untouched = hair & (np.abs(c_plain - c0) < 0.5) & (c0 > 6.0)  # hair the warp left where it was
    assert untouched.sum() > 100 and np.median(c_grey[untouched] / c0[untouched]) < 0.5


def test_a_profiles_late_shape_part_scales_only_the_late_life_shape_change(face):
    from types import SimpleNamespace

    from faceapp.bundle import ModelBundle

    photo, lm, lmc = face
    before = np.asarray(photo).astype(int)

    def age(late, **sc):  # the bundle's age_photo with no-op age prototypes and the given late-life ones
        b = SimpleNamespace(age_prototypes=_protos(lmc), age_prototypes_late=late, age_prototypes_growth=None,
                            hair_grey=0.0, wrinkles=0.0)
        return np.asarray(ModelBundle.age_photo(b, photo, lm, 1.0, {"late": 1.0, **sc})).astype(int)

    moved = _protos(lmc, shift=(0.0, 3.0))  # the late-life change is a shape change alone
    assert np.abs(age(moved) - before).max() > 40  # its default: the whole shape change
    assert np.abs(age(moved, late_shape=1.0) - age(moved)).max() == 0
    assert np.abs(age(moved, late_shape=0.0) - before).max() <= 2  # none of it
    half = np.abs(age(moved, late_shape=0.5) - before).sum()
    assert 0 < half < np.abs(age(moved) - before).sum()
    lined = _protos(lmc, stripe=8.0)  # a change in lightness alone keeps all of it, whatever the shape's share
    assert np.abs(age(lined, late_shape=0.0) - before).max() > 3
    assert np.array_equal(age(lined, late_shape=0.0), age(lined))


def test_smile_prototypes_part_the_lips_whole(face):
    """The fold guard is for aging: a smile's lips part and stretch (that is the edit), so smile prototypes keep the
    mouth change their shapes say, where age prototypes with the same shapes get a tamer one; a change that folds
    nothing is the same for both. Drawn lines and the gains' cap are aging's too."""
    import dataclasses

    _, _, lmc = face
    folding = lmc.copy()
    folding[49:54, 1] += 2.0 * np.ptp(lmc[48:68, 1])  # the upper lip through the lower one
    gentle = lmc.copy()
    gentle[48:68, 1] += 1.0

    def maps(old, kind):
        p = dataclasses.replace(_protos(lmc), old_shape=old, meta={"kind": kind} if kind else {})
        return p.fields(lmc, 1.0)["map_y"]

    assert np.abs(maps(folding, "smile") - maps(folding, None)).max() > 1.0
    assert np.array_equal(maps(gentle, "smile"), maps(gentle, None))
    # nor do smiles get the aging's drawn lines or its cap on the band gains
    smile = dataclasses.replace(_protos(lmc), old_shape=gentle, meta={"kind": "smile"})
    assert not [k for k in smile.fields(lmc, 1.0) if k.startswith("wr_")]
    assert [k for k in dataclasses.replace(smile, meta={}).fields(lmc, 1.0) if k.startswith("wr_")]


def test_the_eyes_openings_keep_the_persons_own_irises(face):
    """The groups' means inside the eyes' openings average irises, whites and lids (a child's big irises against an
    adult's whites): added to a photo that clouds the iris grey. The lightness change skips the openings and keeps
    the lids and the skin round them."""
    photo, lm, lmc = face
    p = _protos(lmc)
    yy, xx = np.mgrid[0:S, 0:S]
    for idx in (slice(36, 42), slice(42, 48)):  # the older mean is much lighter over each eye and round it
        c = lmc[idx].mean(0)
        p.old_lab[..., 0][(xx - c[0]) ** 2 + (yy - c[1]) ** 2 < 12.0 ** 2] += 25.0
    light = p.fields(lmc, 1.0)["light"]
    before = rgb2lab(np.asarray(photo))[..., 0]
    after = rgb2lab(np.asarray(p.apply(photo, lm, 1.0, hair=0.0, wrinkles=0.0)))[..., 0]
    width = np.linalg.norm(lmc[39] - lmc[36])
    for idx in (slice(36, 42), slice(42, 48)):
        c = lmc[idx].mean(0)
        ci, cj = np.round(c[::-1]).astype(int)
        assert abs(light[ci, cj]) < 0.5  # the opening: no change
        above = np.round(c[::-1] - [0.55 * width, 0]).astype(int)  # the upper lid, under the brow
        assert light[above[0], above[1]] > 3
        x, y = np.round(lm[idx].mean(0)).astype(int)  # in the photo: the iris keeps its lightness
        iris = (slice(y - 1, y + 2), slice(x - 1, x + 2))
        assert np.abs(after[iris] - before[iris]).max() < 1.5


def test_a_face_too_big_for_the_frame_is_drawn_smaller_so_the_mesh_does_not_fold(face):
    """A baby's wide cheeks or a close turned head put landmarks past the canonical frame's edge; the mesh between
    them and the frame's fixed edge points then folds, and the edit shows a straight seam. `fit_zoom` draws such a
    face smaller in the frame (a face that fits is left as it is)."""
    from faceapp.align.prototype import _piecewise_map, _zoomed, fit_zoom

    photo, lm, lmc = face
    assert fit_zoom(lmc, S) == 1.0  # the astronaut fits
    big = lmc.copy()
    c = lmc[27:36].mean(0)
    big[:17] = c + 1.6 * (lmc[:17] - c)  # the jaw far wider and longer: past the frame's edge
    assert big.max() > S - 1 or big.min() < 0
    z = fit_zoom(big, S)
    assert 0.5 < z < 1.0
    assert np.abs(_zoomed(big, S, z) - (S - 1) / 2).max() <= (S - 1) / 2 - 0.05 * S + 1e-6

    def folded(dst):  # share of the frame where the map to the mean shape turns over (Jacobian < 0)
        mx, my = _piecewise_map(dst, lmc, S)
        jac = np.gradient(mx, axis=1) * np.gradient(my, axis=0) - np.gradient(mx, axis=0) * np.gradient(my, axis=1)
        return float((jac < -0.2).mean())

    assert folded(big) > 0.01 and folded(_zoomed(big, S, z)) == 0.0
    # the edit of such a face runs through and changes the face, not the frame's edge
    p = _protos(lmc, light=-10.0, gain=(2.0, 2.0, 2.0))
    big_photo_lm = lm.copy()
    cp = lm[27:36].mean(0)
    big_photo_lm[:17] = cp + 1.6 * (lm[:17] - cp)
    out = np.asarray(p.apply(photo, big_photo_lm, 1.0, hair=0.0, wrinkles=0.0), np.float32)
    assert np.isfinite(out).all() and np.abs(out - np.asarray(photo, np.float32)).mean() > 0.1


def test_an_edit_done_on_the_photo_alone_renders_nothing(face, proto_bundle, monkeypatch):
    """With the generator's share of an edit at nothing (age prototypes, gan_share 0) the difference paste-back's two
    renders would be of one code: compose and timeline make none, and return the photo aged by the prototypes."""
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor

    photo, _, _ = face
    editor = FaceEditor(proto_bundle, paste="difference",
                        invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2, perceptual_weight=0.0)})
    prepared = editor.prepare(photo)
    renders = []
    real = editor.render_many
    monkeypatch.setattr(editor, "render_many", lambda *a, **k: renders.append(1) or real(*a, **k))
    lm = prepared[0].aligned.face.landmarks68
    aged = editor.compose(photo, prepared, {"age": 6.0})
    assert renders == []
    assert np.array_equal(np.asarray(aged), np.asarray(proto_bundle.age_prototypes.apply(photo, lm, 0.6)))
    frames = editor.timeline(photo, prepared, name="age", strengths=[0.0, 6.0])
    assert renders == [] and np.array_equal(np.asarray(frames[1]), np.asarray(aged))
    assert np.array_equal(np.asarray(frames[0]), np.asarray(photo.convert("RGB")))
    editor.compose(photo, prepared, {"age": 6.0, "smile": 1.0})  # the generator's smile: rendered
    assert renders


def test_younger_paints_no_moustache_and_no_marker_brows(face):
    """The age groups' means differ at the brows and round the mouth by facial hair (grey in the older group, darker
    and sharper in the younger): reversed, that drew a moustache on every face and marker-thick brows.
    Younger keeps there what the skin round it gets; older still greys them; the cheek's change is untouched."""
    photo, lm, lmc = face
    p = _protos(lmc)
    yy, xx = np.mgrid[0:S, 0:S]
    lip = 0.5 * (lmc[33] + lmc[51])  # the moustache's place
    goatee = lmc[57] + 0.2 * (lmc[8] - lmc[57])
    brows = [lmc[17:22].mean(0) + [0, 1.0], lmc[22:27].mean(0) + [0, 1.0]]
    cheek = 0.5 * (lmc[3] + lmc[48])  # a control with the same difference
    spots = [lip, goatee, *brows, cheek]
    for c in spots:
        disk = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < 3.0 ** 2
        p.old_lab[..., 0][disk] += 20.0  # the older group's hair is grey here
        p.young_energy[:, disk] = 3.0  # and the younger group's is dark and sharp
    younger, older = p.fields(lmc, -1.0), p.fields(lmc, 1.0)

    def at(a, c):
        return float(a[int(round(c[1])), int(round(c[0]))])

    assert at(younger["light"], cheek) < -3  # the control: the reversed difference goes in
    assert at(younger["gain0"], cheek) > 1.5
    for c in (lip, goatee, *brows):  # (each was -17.5 L and a gain of 2.9 before)
        assert at(younger["light"], c) > -3, c  # no dark moustache, no darker brows
        assert at(younger["gain0"], c) < 1.3, c  # and no sharper ones
        assert at(older["light"], c) > 8, c  # older: the grey stays
    before = rgb2lab(np.asarray(photo))[..., 0]
    after = rgb2lab(np.asarray(p.apply(photo, lm, -1.0, hair=0.0)))[..., 0]
    x, y = np.round(0.5 * (lm[33] + lm[51])).astype(int)
    assert after[y - 1:y + 2, x - 1:x + 2].mean() > before[y - 1:y + 2, x - 1:x + 2].mean() - 1.5


def test_younger_paints_no_eyeliner(face):
    """The younger group's mean has its women's eyeliner and mascara: reversed, every face's lids came back ringed
    dark (the astronaut's 6.6 L darker with the demo's prototypes, a median 9 L darker than the cheeks on held-out
    faces). Younger only lightens the lids; older keeps the groups' difference there; a cheek control gets it."""
    photo, lm, lmc = face
    p = _protos(lmc)
    yy, xx = np.mgrid[0:S, 0:S]
    rims = []
    for idx in (slice(36, 42), slice(42, 48)):
        c = lmc[idx].mean(0)
        rims.append(c + [0.0, -0.9 * (lmc[idx][:, 1].max() - lmc[idx][:, 1].min()) - 1.0])  # the upper lid's edge
    cheek = 0.5 * (lmc[3] + lmc[48])
    for c in (*rims, cheek):
        disk = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < 2.0 ** 2
        p.old_lab[..., 0][disk] += 15.0  # the younger group's lids (and the control) are darker
        p.young_energy[:, disk] = 3.0  # and sharper
    younger, older = p.fields(lmc, -1.0), p.fields(lmc, 1.0)

    def at(a, c):
        return float(a[int(round(c[1])), int(round(c[0]))])

    assert at(younger["light"], cheek) < -3 and at(younger["gain0"], cheek) > 1.5  # the control
    for c in rims:
        assert at(younger["light"], c) > -0.5, c  # no dark rim
        assert at(younger["gain0"], c) < 1.05, c  # no sharper lashes
        assert at(older["light"], c) > 5, c  # older: the difference stays
    # the demo's prototypes on the astronaut at the Younger preset's t: her lids keep their lightness
    demo = AgePrototypes.load(Path(__file__).parents[1] / "models" / "demo" / "age_prototypes.safetensors")
    out = demo.apply(photo, lm, -2.75)
    before, after = rgb2lab(np.asarray(photo))[..., 0], rgb2lab(np.asarray(out))[..., 0]
    ring = np.zeros(before.shape, bool)
    for idx in (slice(36, 42), slice(42, 48)):
        c = lm[idx].mean(0)
        outer, inner = np.zeros(before.shape, np.uint8), np.zeros(before.shape, np.uint8)
        cv2.fillPoly(outer, [np.round(c + 2.2 * (lm[idx] - c)).astype(np.int32)], 1)
        cv2.fillPoly(inner, [np.round(c + 1.3 * (lm[idx] - c)).astype(np.int32)], 1)
        ring |= outer.astype(bool) & ~inner.astype(bool)
    assert (after - before)[ring].mean() > -2.0
