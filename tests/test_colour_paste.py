"""The colour-keeping difference paste-back: an edit adds lightness detail and greying, never a tint or a tan."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from faceapp.align import align_face, detect_faces, paste_difference
from faceapp.align.crop import _apply, _rescale
from faceapp.bundle import load_bundle, make_random_bundle
from faceapp.imageio import load_image
from training.measures import delta_e, face_chroma, face_mask_of, mean_skin_lab

DATA = Path(__file__).parent / "data"
S = 64  # render size in these tests


@pytest.fixture(scope="module")
def setup():
    photo = load_image(DATA / "astronaut.jpg")
    face = detect_faces(photo)[0]
    spec = load_bundle(make_random_bundle(Path(__import__("tempfile").mkdtemp()) / "b", resolution=32)).align_spec
    aligned = align_face(photo, face, spec)
    lm = _apply(_rescale(S / spec.size) @ aligned.matrix, face.landmarks68)  # landmarks in render pixels
    return photo, face, aligned, lm


def _renders(lm, tint=(0, 0, 0), light=0.0, stripes=0.0):
    """(edited, reconstruction) S px renders: a flat skin colour; the edit adds a tint, a uniform lightness
    step and thin dark lines (wrinkle-like) over the face."""
    recon = np.full((S, S, 3), (180, 140, 120), np.float32)
    edited = recon + np.asarray(tint, np.float32) + light
    if stripes:
        rows = np.zeros((S, S), np.float32)
        rows[::4] = 1
        face = np.zeros((S, S), np.uint8)
        cv2.fillPoly(face, [np.round(lm[:17]).astype(np.int32)], 1)
        edited -= (stripes * rows * face)[..., None]
    clip = lambda a: Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))  # noqa: E731
    return clip(edited), clip(recon)


def test_tint_and_tan_stay_out_of_the_skin_but_detail_goes_in(setup):
    photo, face, aligned, lm = setup
    lm_photo = face.landmarks68
    before = np.asarray(photo)
    # a tan: darker and more orange everywhere, plus wrinkle-like lines
    edited, recon = _renders(lm, tint=(10, -5, -25), light=-30, stripes=40)
    added = np.asarray(paste_difference(photo, aligned, edited, recon, colour="add"))
    kept = np.asarray(paste_difference(photo, aligned, edited, recon, colour="keep"))
    lab0 = mean_skin_lab(before, lm_photo)
    assert delta_e(lab0, mean_skin_lab(added, lm_photo)) > 15  # the plain difference carries the tan
    assert delta_e(lab0, mean_skin_lab(kept, lm_photo)) < 3  # the colour-keeping one does not
    # ... but it keeps the lines: the change has as much fine structure as the plain one's
    def band(a):
        g = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32) - cv2.cvtColor(before, cv2.COLOR_RGB2GRAY)
        return np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean()
    assert band(kept) > 0.7 * band(added) > 0


def test_a_grey_photo_stays_grey(setup):
    photo, face, aligned, lm = setup
    grey = photo.convert("L").convert("RGB")
    edited, recon = _renders(lm, tint=(30, 0, -30), light=-20, stripes=30)
    out = np.asarray(paste_difference(grey, aligned, edited, recon))
    assert face_chroma(out, face.landmarks68) < 1.5
    assert np.abs(out.astype(int) - np.asarray(grey).astype(int)).max() > 5  # and it did change


def test_greying_is_kept_outside_the_skin(setup):
    """A render that desaturates the hair greys the photo's hair; chroma never rises."""
    photo, face, aligned, lm = setup
    recon = np.full((S, S, 3), (120, 80, 40), np.float32)  # brown hair everywhere
    edited = np.full((S, S, 3), (92, 85, 78), np.float32)  # the same lightness, greyer
    out = np.asarray(paste_difference(photo, aligned, Image.fromarray(edited.astype(np.uint8)),
                                      Image.fromarray(recon.astype(np.uint8)), colour="keep"))
    chroma = lambda a: np.hypot(*rgb2lab(a)[..., 1:].transpose(2, 0, 1))  # noqa: E731
    c0, c1 = chroma(np.asarray(photo)), chroma(out)
    assert c1.max() <= c0.max() + 1.0  # no new colour anywhere
    # where the plain difference reaches outside the face (hair, sides of the head): clearly greyer
    added = np.asarray(paste_difference(photo, aligned, Image.fromarray(edited.astype(np.uint8)),
                                        Image.fromarray(recon.astype(np.uint8)), colour="add"))
    reached = np.abs(added.astype(int) - np.asarray(photo).astype(int)).max(-1) > 10
    hair = reached & ~face_mask_of(face.landmarks68, reached.shape)
    assert hair.sum() > 200
    assert c1[hair].mean() < 0.8 * c0[hair].mean()
    # and on the cheeks, nose and mouth the face keeps its own colour
    lab0, lab1 = mean_skin_lab(np.asarray(photo), face.landmarks68), mean_skin_lab(out, face.landmarks68)
    assert delta_e(lab0, lab1) < 2


def test_an_edit_never_adds_colour(setup):
    """A render that turns from grey to orange: the photo's chroma may not rise anywhere (the factor is capped
    at 1), though the plain difference would colour it."""
    photo, face, aligned, lm = setup
    recon = Image.new("RGB", (S, S), (128, 128, 128))
    edited = Image.new("RGB", (S, S), (170, 120, 70))  # about the same lightness, strongly coloured
    chroma = lambda a: np.hypot(*rgb2lab(a)[..., 1:].transpose(2, 0, 1))  # noqa: E731
    c0 = chroma(np.asarray(photo))
    kept = chroma(np.asarray(paste_difference(photo, aligned, edited, recon, colour="keep")))
    added = chroma(np.asarray(paste_difference(photo, aligned, edited, recon, colour="add")))
    assert (added - c0).max() > 10  # the difference itself carries colour ...
    assert (kept - c0).max() < 1.5  # ... which the colour-keeping paste leaves out


def _texture(seed=0, shift=0):
    """An S px render of smooth random texture (something optical flow can follow), moved `shift` px right."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.uniform(60, 200, (S + 16, S + 16, 3)).astype(np.float32), (0, 0), 1.5)
    return Image.fromarray(np.clip(big[8:-8, 8 - shift:8 - shift + S], 0, 255).astype(np.uint8))


@pytest.mark.parametrize("colour", ["keep", "add"])
def test_motion_moves_the_photos_own_pixels(setup, colour):
    """A render whose features moved (a mouth widening, a jaw sagging) moves the photo's pixels by as much at the
    photo's scale, instead of adding a faint second copy; where the edit changed nothing the photo is untouched."""
    photo, face, aligned, lm = setup
    recon, edited = _texture(), _texture(shift=2)
    before = np.asarray(photo).astype(np.float32)
    out = np.asarray(paste_difference(photo, aligned, edited, recon, colour=colour, motion=True)).astype(np.float32)
    plain = np.asarray(paste_difference(photo, aligned, edited, recon, colour=colour, motion=False)).astype(np.float32)
    m = _rescale(S / aligned.spec.size) @ aligned.matrix
    scale = np.sqrt(abs(np.linalg.det(np.linalg.inv(m)[:2, :2])))  # photo px per render px
    expected = np.linalg.inv(m)[:2, :2] @ np.array([2.0, 0.0])  # the render's motion, in photo pixels
    cx, cy = np.round(face.landmarks68[30]).astype(int)  # nose tip: deep inside the mask
    r = int(round(10 * scale))
    grey = lambda a: cv2.cvtColor(a[cy - r:cy + r, cx - r:cx + r], cv2.COLOR_RGB2GRAY)  # noqa: E731
    win = cv2.createHanningWindow((2 * r, 2 * r), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(grey(before), grey(out), win)
    assert np.hypot(dx - expected[0], dy - expected[1]) < 0.35 * np.linalg.norm(expected)
    (px, py), _ = cv2.phaseCorrelate(grey(before), grey(plain), win)
    assert np.hypot(px, py) < 0.25 * np.linalg.norm(expected)  # the plain paste moves nothing ...
    shifted = cv2.warpAffine(before, np.float32([[1, 0, expected[0]], [0, 1, expected[1]]]), before.shape[1::-1])
    patch = (slice(cy - r, cy + r), slice(cx - r, cx + r))
    err = lambda a: np.abs(a[patch] - shifted[patch]).mean()  # noqa: E731
    assert err(out) < 0.5 * err(plain)  # ... it paints a second copy where motion moves the photo's own pixels
    lm_box = cv2.boundingRect(np.round(face.landmarks68).astype(np.int32))
    assert np.array_equal(out[:lm_box[1] - 2 * r], before[:lm_box[1] - 2 * r])  # far above the face: untouched


def test_motion_with_no_change_leaves_the_photo_as_it_was(setup):
    photo, face, aligned, lm = setup
    same = _texture()
    out = paste_difference(photo, aligned, same, same, motion=True)
    assert np.array_equal(np.asarray(out), np.asarray(photo))
