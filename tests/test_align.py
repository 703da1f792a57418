"""faceapp.align on real public-domain photos (tests/data/SOURCES.md).

Detection + landmarks, FFHQ and template crops, inverse warp and feathered paste-back.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faceapp.align import (
    FFHQ_SPEC,
    UTKFACE_TEMPLATE,
    AlignSpec,
    FaceAlignmentUnavailableWarning,
    align_face,
    crop_matrix,
    detect_faces,
    face_hull,
    face_mask,
    ffhq_quad,
    five_points,
    paste_back,
    paste_back_all,
    render_crop,
    resolve_backend,
    template_spec,
    utkface_spec,
)
from faceapp.align import detect as detect_mod
from faceapp.align.detect import Face
from faceapp.errors import ImageError, NoFaceError
from faceapp.imageio import load_image

DATA = Path(__file__).parent / "data"
UTKFACE_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "utkface" / "utkface-200px.zip"

# Pupil centres read off the photos by eye (zoomed, on a pixel grid): (left, right) in image x order.
EYES = {
    "astronaut": ((202, 100), (245, 102)),
    "obama": ((350, 167), (432, 167)),
    "biden": ((218, 131), (265, 142)),
}


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {n: load_image(DATA / f"{n}.jpg") for n in ("astronaut", "obama", "biden", "obama2", "group")}


@pytest.fixture(scope="module")
def faces(photos) -> dict[str, list[Face]]:
    return {n: detect_faces(im, backend="dlib") for n, im in photos.items()}


def _psnr(a, b, where=None) -> float:
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if where is not None:
        d = d[where]
    return float(10 * np.log10(255.0**2 / max(d.mean(), 1e-12)))


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("name", sorted(EYES))
def test_landmarks_land_on_the_eyes(faces, name):
    fs = faces[name]
    assert len(fs) == 1, f"{name}: expected one face, got {len(fs)}"
    f = fs[0]
    assert f.landmarks68.shape == (68, 2) and f.landmarks68.dtype == np.float32
    left, right = np.array(EYES[name], float)
    tol = 0.12 * np.linalg.norm(right - left)  # ~5-10 px
    assert np.linalg.norm(f.eye_left - left) < tol
    assert np.linalg.norm(f.eye_right - right) < tol
    x0, y0, x1, y1 = f.box
    assert x0 < left[0] < right[0] < x1 and y0 < left[1] < y1
    # Mouth below the nose below the eyes, chin lowest.
    lm = f.landmarks68
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:60, 1].mean() < lm[8, 1]


def test_group_photo_all_faces_sorted_and_filterable(photos, faces):
    fs = faces["group"]
    assert len(fs) == 4
    sizes = [f.size for f in fs]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > 150 and sizes[-1] < 100
    # Every face has its eyes inside its own box.
    for f in fs:
        x0, y0, x1, y1 = f.box
        for e in (f.eye_left, f.eye_right):
            assert x0 < e[0] < x1 and y0 < e[1] < y1
    big = detect_faces(photos["group"], backend="dlib", min_size=100)
    assert [f.size for f in big] == sizes[:2]
    assert len(detect_faces(photos["group"], backend="dlib", max_faces=3)) == 3
    with pytest.raises(NoFaceError, match=r"no face found in group\.jpg \(at least 500 px\)"):
        detect_faces(photos["group"], backend="dlib", min_size=500)
    assert detect_faces(photos["group"], backend="dlib", min_size=500, allow_none=True) == []


def test_low_confidence_detections_are_filtered(photos):
    # HOG also fires weakly on the astronaut's mission patch; the default score cut drops it.
    everything = detect_faces(photos["astronaut"], backend="dlib", min_score=-math.inf)
    default = detect_faces(photos["astronaut"], backend="dlib")
    assert len(default) == 1 and len(everything) >= len(default)
    assert min(f.score for f in everything) <= min(f.score for f in default)


def test_no_face_and_tiny_images_raise_clear_errors(tmp_path, photos):
    nobody = tmp_path / "curtains.jpg"
    photos["obama"].crop((0, 300, 120, 900)).save(nobody)  # flag and curtain, no face
    with pytest.raises(NoFaceError, match=r"no face found in curtains\.jpg"):
        detect_faces(load_image(nobody), backend="dlib")
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (90, 60, 50)).save(dot)
    with pytest.raises(ImageError, match="dot.png is 1x1"):
        load_image(dot)
    with pytest.raises(NoFaceError):  # a 1-pixel image handed straight to the detector
        detect_faces(Image.new("RGB", (1, 1)), backend="dlib")
    with pytest.raises(ValueError, match="unknown face backend"):
        detect_faces(photos["obama"], backend="haar")


def test_face_alignment_offline_fails_over_to_dlib_with_one_warning(monkeypatch, tmp_path, photos):
    # An empty hub cache and no network: exactly the situation on an offline machine.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import urllib.error

    import face_alignment.api
    import face_alignment.detection.sfd.sfd_detector as sfd

    def offline(*a, **k):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(sfd, "load_state_dict_from_url", offline)
    monkeypatch.setattr(face_alignment.api, "load_file_from_url", offline)
    detect_mod._reset_backend_cache()
    try:
        assert not detect_mod.face_alignment_weights_present()
        assert resolve_backend("auto") == "dlib"  # auto never tries to download
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = detect_faces(photos["obama"], backend="face_alignment")
            second = detect_faces(photos["biden"], backend="face_alignment")
        fa_warnings = [w for w in caught if issubclass(w.category, FaceAlignmentUnavailableWarning)]
        assert len(fa_warnings) == 1
        msg = str(fa_warnings[0].message)
        assert "could not be downloaded" in msg and "Using dlib" in msg
        assert first[0].backend == "dlib" and second[0].backend == "dlib"
        np.testing.assert_allclose(first[0].eye_left, EYES["obama"][0], atol=10)
    finally:
        detect_mod._reset_backend_cache()


def test_face_alignment_adapter_maps_boxes_and_landmarks(monkeypatch, photos):
    """Our adapter around a loaded FaceAlignment model (its weights can't be had offline).

    The stand-in answers with the face-alignment 1.5 call signatures; the adapter must
    detect on a downscaled copy and hand full-resolution boxes to the landmark network.
    """
    seen = {}

    class Detector:
        def detect_from_image(self, rgb):
            seen["detect_shape"] = rgb.shape
            return [np.array([50.0, 40.0, 90.0, 80.0, 0.99])]  # in the downscaled copy

    class FakeFA:
        face_detector = Detector()

        def get_landmarks_from_image(self, rgb, detected_faces=None, return_bboxes=False):
            seen["landmark_shape"] = rgb.shape
            seen["boxes"] = detected_faces
            lm = np.tile(np.asarray(detected_faces[0][:2]), (68, 1))
            return [lm], None, detected_faces

    monkeypatch.setattr(detect_mod, "_fa_model", FakeFA())
    monkeypatch.setattr(detect_mod, "_fa_device", "cpu")
    monkeypatch.setattr(detect_mod, "_fa_failed", None)
    im = photos["obama"]  # 720x900
    (f,) = detect_faces(im, backend="face_alignment", max_detect_side=450)
    assert seen["detect_shape"] == (450, 360, 3) and seen["landmark_shape"] == (900, 720, 3)
    np.testing.assert_allclose(f.box, (100, 80, 180, 160))
    np.testing.assert_allclose(f.landmarks68[0], (100, 80))
    assert f.backend == "face_alignment" and f.score == pytest.approx(0.99)


@pytest.mark.slow
def test_dlib_cnn_detector_agrees_with_hog(photos, faces):
    cnn = detect_faces(photos["biden"], backend="dlib_cnn", upsample=0)
    assert len(cnn) == 1 and cnn[0].backend == "dlib_cnn"
    np.testing.assert_allclose(cnn[0].eye_left, faces["biden"][0].eye_left, atol=6)


@pytest.mark.parametrize("turn", [90, 45])
def test_sideways_or_tilted_photo_found_with_rotations(photos, faces, turn):
    # A sideways phone photo without an EXIF tag, or a strongly tilted head.
    im = photos["obama"].rotate(turn, resample=Image.BICUBIC, expand=True)
    assert detect_faces(im, backend="dlib", allow_none=True, fallback=False) == []
    (f,) = detect_faces(im, backend="dlib", rotations=(-45, 45, -90, 90, 180))
    assert f.angle == -turn
    a = align_face(photos["obama"], faces["obama"][0], FFHQ_SPEC(256))
    b = align_face(im, f, FFHQ_SPEC(256))
    assert np.abs(a.landmarks - b.landmarks).mean() < 1.5
    assert _psnr(a.image, b.image, face_mask(a.landmarks, 256) > 0.5) > 28


def test_selfie_already_cropped_to_the_face_is_found(photos, faces):
    # A crop tighter than UTKFace's (public-domain astronaut): HOG alone needs a margin around the face.
    tight = tuple(((x - 0.5) * 1.6 + 0.5, (y - 0.5) * 1.6 + 0.5) for x, y in UTKFACE_TEMPLATE)
    crop = align_face(photos["astronaut"], faces["astronaut"][0], template_spec(tight, 300)).image
    assert detect_faces(crop, backend="dlib", allow_none=True, fallback=False) == []
    (f,) = detect_faces(crop, backend="dlib")
    # its landmarks are where the crop put the eyes (the padding was mapped back out)
    expected = np.array(tight[:2]) * 300 - 0.5
    np.testing.assert_allclose(np.stack([f.eye_left, f.eye_right]), expected, atol=300 * 0.04)


def test_look_harder_finds_a_small_face_the_first_pass_missed(photos):
    head = photos["astronaut"].crop((130, 20, 320, 230))
    canvas = Image.new("RGB", (400, 240), (120, 120, 120))
    canvas.paste(head, (10, 15))
    canvas.paste(head.resize((57, 63), Image.LANCZOS), (260, 60))  # a face of ~27 px
    (big,) = detect_faces(canvas, backend="dlib")  # one found: no fallback runs
    found = detect_faces(canvas, backend="dlib", look_harder=True)
    assert len(found) == 2 and found[0].box == big.box  # the first pass's face, not found twice
    x0, y0, x1, y1 = found[1].box
    assert 250 < (x0 + x1) / 2 < 330 and 60 < (y0 + y1) / 2 < 125


# ---------------------------------------------------------------- geometry


def _synthetic_landmarks() -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[36:42] = (100, 100)  # eye on the image's left
    lm[42:48] = (160, 100)
    lm[48] = (110, 170)
    lm[54] = (150, 170)
    return lm


def test_ffhq_quad_geometry_matches_the_recreation_formula():
    lm = _synthetic_landmarks()
    # eye_to_eye (60, 0), eye_to_mouth (0, 70): x = (60, 0) + (70, 0) -> unit (1, 0),
    # half side max(2 * 60, 1.8 * 70) = 126, centre eye_avg + 0.1 * (0, 70) = (130, 107).
    q = ffhq_quad(lm)
    np.testing.assert_allclose(q, [[4, -19], [4, 233], [256, 233], [256, -19]], atol=1e-9)
    m = crop_matrix(lm, FFHQ_SPEC(252))
    img = Image.new("RGB", (300, 300))
    f = Face(box=(90, 90, 170, 180), score=1.0, landmarks68=lm.astype(np.float32))
    np.testing.assert_allclose(align_face(img, f, FFHQ_SPEC(252)).quad, q, atol=1e-6)
    np.testing.assert_allclose(m[:2, :2], np.eye(2), atol=1e-6)  # 252 px quad -> 252 px crop
    np.testing.assert_allclose(m @ [130, 107, 1], [125.5, 125.5, 1], atol=1e-4)

    # Rotating, scaling and moving the face moves the quad with it: same crop coordinates.
    th = np.deg2rad(33)
    rot = 1.7 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    lm2 = lm @ rot.T + (40, -7)
    for spec in (FFHQ_SPEC(256), utkface_spec(256)):
        a = crop_matrix(lm, spec)
        b = crop_matrix(lm2, spec)
        pts = np.array([[100.0, 100], [130, 170], [80, 200]])
        pa = pts @ a[:2, :2].T + a[:2, 2]
        pb = (pts @ rot.T + (40, -7)) @ b[:2, :2].T + b[:2, 2]
        np.testing.assert_allclose(pa, pb, atol=1e-4)


def test_render_crop_pixel_convention_is_exact(photos):
    im = photos["obama"]
    # A pure integer shift must reproduce PIL's crop exactly (pixel centres at integers).
    m = np.array([[1.0, 0, -300], [0, 1, -120], [0, 0, 1]])
    out = render_crop(im, m, 200)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(im.crop((300, 120, 500, 320))))
    # Halving: the same as area-resizing that region.
    half = np.array([[0.5, 0, -150 - 0.25], [0, 0.5, -60 - 0.25], [0, 0, 1]])
    ref = im.crop((300, 120, 700, 520)).resize((200, 200), Image.BOX)
    assert _psnr(render_crop(im, half, 200), ref) > 40


def test_template_crop_puts_keypoints_on_the_template(photos, faces):
    spec = utkface_spec(200)
    a = align_face(photos["obama"], faces["obama"][0], spec)
    assert a.image.size == (200, 200)
    kp = five_points(a.landmarks)
    target = np.array(UTKFACE_TEMPLATE) * 200 - 0.5
    # Least squares over 5 points: the eyes land within a few pixels of (60, 60), (137, 60).
    assert np.abs(kp[:2] - target[:2]).max() < 6
    assert np.abs(kp - target).mean() < 4
    # A custom template at another size.
    spec2 = template_spec([(0.35, 0.4), (0.65, 0.4), (0.5, 0.55), (0.38, 0.7), (0.62, 0.7)], 96)
    a2 = align_face(photos["obama"], faces["obama"][0], spec2)
    assert a2.image.size == (96, 96)
    np.testing.assert_allclose(five_points(a2.landmarks)[:2].mean(0), (0.5 * 96 - 0.5, 0.4 * 96 - 0.5), atol=3)


def test_align_spec_round_trips_through_json_and_validates():
    for spec in (FFHQ_SPEC(1024), utkface_spec(128), template_spec(UTKFACE_TEMPLATE, 64, pad="reflect")):
        back = AlignSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and hash(back) == hash(spec)
    assert utkface_spec(64).with_size(256) == utkface_spec(256)
    with pytest.raises(ValueError, match="kind"):
        AlignSpec("arcface", 112)
    with pytest.raises(ValueError, match="5 \\(x, y\\) points"):
        AlignSpec("template", 112, ((0.3, 0.3),))
    with pytest.raises(ValueError, match="size"):
        FFHQ_SPEC(0)
    with pytest.raises(ValueError, match="unknown AlignSpec fields"):
        AlignSpec.from_dict({"kind": "ffhq", "size": 256, "sise": 3})


@pytest.mark.parametrize("spec", [FFHQ_SPEC(256), utkface_spec(256)], ids=["ffhq", "template"])
@pytest.mark.parametrize("angle", [15, -20])
def test_crop_of_rotated_copy_equals_crop_of_original(photos, faces, spec, angle):
    for name in ("astronaut", "obama", "biden"):
        im = photos[name]
        a = align_face(im, faces[name][0], spec)
        rot = im.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128))
        (fr,) = detect_faces(rot, backend="dlib")
        b = align_face(rot, fr, spec)
        assert np.abs(a.landmarks - b.landmarks).mean() < 2.5, name
        inside = face_mask(a.landmarks, spec.size) > 0.5
        assert _psnr(a.image, b.image, inside) > 28, name


def test_exif_rotated_phone_photo_gives_the_same_crop(tmp_path, photos, faces):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    photos["obama"].transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    im = load_image(path)
    a = align_face(photos["obama"], faces["obama"][0], FFHQ_SPEC(256))
    b = align_face(im, detect_faces(im, backend="dlib")[0], FFHQ_SPEC(256))
    assert _psnr(a.image, b.image) > 30


def test_face_near_the_border_is_padded_not_black(photos, faces):
    # Cut the photo right through the face: the quad leaves the photo on two sides.
    im = photos["obama"].crop((330, 130, 720, 900))
    (f,) = detect_faces(im, backend="dlib", upsample=1)
    a = align_face(im, f, FFHQ_SPEC(256))
    arr = np.asarray(a.image).astype(float)
    left = arr[:, :20]  # outside the photo: mirrored, blurred, tinted
    assert left.mean() > 40 and left.std(axis=(0, 1)).max() < arr.std(axis=(0, 1)).max()
    reflect = align_face(im, f, AlignSpec("ffhq", 256, pad="reflect"))
    assert not np.array_equal(np.asarray(reflect.image), np.asarray(a.image))


# ---------------------------------------------------------------- paste-back


@pytest.mark.parametrize("spec", [FFHQ_SPEC(512), utkface_spec(256)], ids=["ffhq", "template"])
def test_unedited_crop_pastes_back_to_the_same_photo(photos, faces, spec):
    for name in ("obama", "astronaut"):
        im = photos[name]
        a = align_face(im, faces[name][0], spec)
        out = paste_back(im, a, a.image)
        assert out.size == im.size and out is not im
        changed = np.abs(np.asarray(out, int) - np.asarray(im, int)).sum(-1) > 0
        assert changed.sum() > 2000  # it did paste something
        assert _psnr(out, im, changed) > 33, name  # ... and that something is the face itself
        assert _psnr(out, im) > 45


def test_paste_back_mask_is_confined_and_feathered(photos, faces):
    im = photos["obama"]
    a = align_face(im, faces["obama"][0], FFHQ_SPEC(256))
    gray = Image.new("RGB", (256, 256), (128, 128, 128))
    out = np.asarray(paste_back(im, a, gray), float)
    src = np.asarray(im, float)
    diff = np.abs(out - src).sum(-1)

    # The face is replaced in its middle ...
    nose = faces["obama"][0].landmarks68[30].round().astype(int)
    np.testing.assert_allclose(out[nose[1], nose[0]], 128, atol=2)
    # ... nothing changes outside the face outline (jaw + forehead; no square shows) ...
    hull = np.zeros(diff.shape, np.uint8)
    cv2.fillPoly(hull, [face_hull(faces["obama"][0].landmarks68).round().astype(np.int32)], 1)
    hull = cv2.dilate(hull, np.ones((5, 5), np.uint8))
    assert diff[hull == 0].max() == 0
    assert (diff[hull == 1] > 0).mean() > 0.9
    # ... and nothing along the crop's own square edge.
    edge = a.to_photo(np.array([[t, e] for t in np.linspace(0, 255, 64) for e in (0, 255)]
                               + [[e, t] for t in np.linspace(0, 255, 64) for e in (0, 255)]))
    edge = edge[(edge[:, 0] >= 0) & (edge[:, 1] >= 0) & (edge[:, 0] < im.width - 1) & (edge[:, 1] < im.height - 1)]
    assert diff[edge[:, 1].round().astype(int), edge[:, 0].round().astype(int)].max() == 0

    # The alpha ramps smoothly: 0 on the crop border, 1 inside, small steps between neighbours.
    m = face_mask(a.landmarks, 256)
    assert m[0].max() == m[-1].max() == m[:, 0].max() == m[:, -1].max() == 0
    assert m.max() == 1.0 and (m == 1.0).sum() > 0.15 * m.size
    assert max(np.abs(np.diff(m, axis=0)).max(), np.abs(np.diff(m, axis=1)).max()) < 0.2


def test_edited_crop_of_another_size_and_many_faces(photos, faces):
    im = photos["group"]
    fs = faces["group"]
    aligned = [align_face(im, f, FFHQ_SPEC(256)) for f in fs]
    # A generator's 128 px output pasted over 256 px crops; inverted colours show every face.
    edited = [Image.fromarray(255 - np.asarray(a.image)).resize((128, 128)) for a in aligned]
    out = np.asarray(paste_back_all(im, zip(aligned, edited)), float)
    src = np.asarray(im, float)
    for f in fs:
        n = f.landmarks68[30].round().astype(int)
        assert np.abs(out[n[1], n[0]] - src[n[1], n[0]]).mean() > 40
    # Between the faces (the top corners of the canvas) nothing moved.
    assert np.array_equal(out[:40, :40], src[:40, :40]) and np.array_equal(out[:40, -40:], src[:40, -40:])
    # The unedited crops put back together reproduce the group photo.
    same = paste_back_all(im, [(a, a.image) for a in aligned])
    assert _psnr(same, im) > 40
    with pytest.raises(ValueError, match="aligned in a"):
        paste_back(im.resize((100, 100)), aligned[0], aligned[0].image)


# ---------------------------------------------------------------- the demo template, measured


@pytest.mark.slow
@pytest.mark.skipif(not UTKFACE_ZIP.is_file(), reason="UTKFace zip not present")
def test_utkface_template_matches_dataset():
    """UTKFACE_TEMPLATE is where dlib finds the keypoints in UTKFace's own crops."""
    pts = []
    with zipfile.ZipFile(UTKFACE_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))[::200][:100]
        for n in names:
            fs = detect_faces(load_image(z.read(n), name=os.path.basename(n)), backend="dlib", allow_none=True)
            if fs:
                pts.append((five_points(fs[0].landmarks68) + 0.5) / 200)
    assert len(pts) > 80
    mean = np.mean(pts, axis=0)
    np.testing.assert_allclose(mean[:2], np.array(UTKFACE_TEMPLATE)[:2], atol=0.01)  # eyes
    np.testing.assert_allclose(mean, np.array(UTKFACE_TEMPLATE), atol=0.025)


def test_poisson_blend_absorbs_a_tone_shift(photos, faces):
    im = photos["obama"]
    a = align_face(im, faces["obama"][0], FFHQ_SPEC(256))
    brighter = Image.fromarray(np.clip(np.asarray(a.image, int) + 40, 0, 255).astype(np.uint8))
    src = np.asarray(im, float)
    d_alpha = np.abs(np.asarray(paste_back(im, a, brighter), float) - src).sum(-1)
    d_poisson = np.abs(np.asarray(paste_back(im, a, brighter, blend="poisson"), float) - src).sum(-1)
    changed = d_alpha > 0
    assert d_alpha[changed].mean() > 60  # alpha keeps the edit's tone ...
    assert d_poisson[changed].mean() < 20  # ... Poisson matches it to the surroundings
    near = cv2.dilate(changed.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (d_poisson[~near] == 0).all()
    assert _psnr(paste_back(im, a, a.image, blend="poisson"), im) > 45
    with pytest.raises(ValueError, match="blend"):
        paste_back(im, a, a.image, blend="laplacian")


def _nvidia_ffhq_reference(img: Image.Image, lm: np.ndarray, output_size: int, transform_size: int = 1024):
    """NVlabs/ffhq-dataset's recreate_aligned_images steps, written out plainly (PIL + scipy)
    as an independent reference for our cv2 implementation."""
    import scipy.ndimage

    q = ffhq_quad(lm)  # its geometry is checked against the formula above
    qsize = np.hypot(*(q[3] - q[0]))
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink))), Image.LANCZOS)
        q, qsize = q / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(q[:, 0].min())), int(np.floor(q[:, 1].min())),
            int(np.ceil(q[:, 0].max())), int(np.ceil(q[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.width), min(crop[3] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        q = q - crop[0:2]
    pad = (int(np.floor(q[:, 0].min())), int(np.floor(q[:, 1].min())),
           int(np.ceil(q[:, 0].max())), int(np.ceil(q[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.width + border, 0), max(pad[3] - img.height + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = a.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                          1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
        blur = qsize * 0.02
        a += (scipy.ndimage.gaussian_filter(a, [blur, blur, 0]) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB")
        q = q + pad[:2]
    img = img.transform((transform_size, transform_size), Image.QUAD, (q + 0.5).flatten(), Image.BILINEAR)
    return img.resize((output_size, output_size), Image.LANCZOS)


@pytest.mark.parametrize("case, size", [("obama", 256), ("obama", 64), ("cut", 256)])
def test_ffhq_crop_matches_nvidia_recreation(photos, faces, case, size):
    im, f = photos["obama"], faces["obama"][0]
    if case == "cut":  # face at the photo's corner: the reflect-pad-blur path
        im = im.crop((330, 130, 720, 900))
        (f,) = detect_faces(im, backend="dlib")
    ours = align_face(im, f, FFHQ_SPEC(size)).image
    ref = _nvidia_ffhq_reference(im, f.landmarks68, size)
    assert _psnr(ours, ref) > 35  # measured 38-47 dB; only the resampling filters differ
