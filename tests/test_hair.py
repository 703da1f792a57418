"""Grey hair for the age edit: the hair is found round the face (and nowhere else), greying lifts and desaturates
it without touching the skin, a grey photo stays grey, and a head with no hair above the forehead is left alone."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from faceapp.align import detect_faces
from faceapp.align.hair import grey_hair, hair_mask
from faceapp.align.paste import face_hull, head_hull
from faceapp.align.prototype import HAIR_FULL_T, AgePrototypes
from faceapp.imageio import load_image

DATA = Path(__file__).parent / "data"
DEMO_PROTOTYPES = Path(__file__).parents[1] / "models" / "demo" / "age_prototypes.safetensors"


@pytest.fixture(scope="module")
def face():
    photo = load_image(DATA / "astronaut.jpg")
    return photo, detect_faces(photo)[0].landmarks68


def _inside(hull, shape):
    import cv2

    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(hull).astype(np.int32)], 1)
    return m.astype(bool)


def _full_mask(photo, lm):
    rgb = np.asarray(photo)
    m, (x0, y0, x1, y1) = hair_mask(rgb, lm)
    full = np.zeros(rgb.shape[:2], np.float32)
    full[y0:y1, x0:x1] = m
    return full


def test_hair_is_found_round_the_face_and_nowhere_else(face):
    photo, lm = face
    full = _full_mask(photo, lm)
    up = lm[17:27].mean(0) - lm[8]  # brows minus chin: towards the crown
    crown = np.round(lm[17:27].mean(0) + 0.45 * up).astype(int)
    assert full[crown[1] - 3:crown[1] + 4, crown[0] - 3:crown[0] + 4].min() > 0.5  # the hair above the forehead
    skin = _inside(face_hull(lm, forehead=0.0), full.shape)
    assert full[skin].max() < 0.05  # never the face
    far = ~_inside(head_hull(lm, top=1.0, widen=1.6, neck=0.3), full.shape)
    assert (full[far] > 0.5).mean() < 0.01  # not the flag, the shuttle or the suit
    hair = full > 0.5
    assert 0.3 < hair.sum() / skin.sum() < 3.0  # a head of hair, not a speck and not the background


def test_greying_lifts_and_desaturates_the_hair_only(face):
    photo, lm = face
    full = _full_mask(photo, lm)
    rgb = np.asarray(photo, np.float32) / 255
    out = grey_hair(rgb, full, 0.85)
    lab0, lab1 = rgb2lab(rgb), rgb2lab(np.clip(out, 0, 1))
    hair = full > 0.9
    assert lab1[hair, 0].mean() > lab0[hair, 0].mean() + 15  # lighter: silver, not dyed black
    c0, c1 = np.hypot(lab0[..., 1], lab0[..., 2]), np.hypot(lab1[..., 1], lab1[..., 2])
    assert c1[hair].mean() < 0.3 * c0[hair].mean()  # and its colour is gone
    # strands keep their contrast (not a flat silver cap)
    assert lab1[hair, 0].std() > 0.8 * lab0[hair, 0].std()
    untouched = full == 0
    assert np.array_equal(out[untouched], rgb[untouched])
    assert np.array_equal(grey_hair(rgb, full, 0.0), rgb)


def test_a_grey_photo_stays_grey_and_a_bald_head_is_left_alone(face):
    photo, lm = face
    grey = photo.convert("L").convert("RGB")
    protos = AgePrototypes.load(DEMO_PROTOTYPES)
    out = np.asarray(protos.apply(grey, lm, HAIR_FULL_T)).astype(int)
    assert np.abs(out - out.mean(-1, keepdims=True)).max() <= 1
    # paint the whole head above the brows (the hair, also beside the face) in the forehead's own colour: no hair
    rgb = np.asarray(photo).copy()
    band = _inside(head_hull(lm, top=1.6, widen=2.0, neck=0.0), rgb.shape[:2]) & \
        ~_inside(face_hull(lm, forehead=0.3), rgb.shape[:2])
    rgb[band] = np.median(rgb[_inside(face_hull(lm, forehead=0.0), rgb.shape[:2])], 0)
    m, _ = hair_mask(rgb, lm)
    assert m.max() == 0.0


def test_age_edit_greys_more_with_strength_and_not_younger(face):
    photo, lm = face
    protos = AgePrototypes.load(DEMO_PROTOTYPES)
    hair = _full_mask(photo, lm) > 0.9
    chroma = lambda im: np.hypot(*rgb2lab(np.asarray(im))[hair][:, 1:].T).mean()  # noqa: E731
    c = [chroma(protos.apply(photo, lm, t)) for t in (0.0, 0.5 * HAIR_FULL_T, HAIR_FULL_T)]
    assert c[0] > c[1] + 1 > c[2] + 2  # greyer as the edit grows
    plain = chroma(protos.apply(photo, lm, HAIR_FULL_T, hair=0.0))
    assert plain > c[2] + 3  # the greying is the hair step's, not the prototypes' chroma
    younger = np.asarray(protos.apply(photo, lm, -1.0))
    assert np.array_equal(younger, np.asarray(protos.apply(photo, lm, -1.0, hair=0.0)))  # younger: no hair step


def test_the_bundle_says_how_grey_and_the_editor_obeys(face, tmp_path):
    """bundle.json's age_prototypes_options.hair_grey reaches the editor (0: the hair is left as it was); a value
    outside 0..1 is refused."""
    import json
    import shutil

    from faceapp.bundle import load_bundle, make_random_bundle
    from faceapp.errors import CheckpointError
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor

    photo, _ = face
    root = make_random_bundle(tmp_path / "b", resolution=32, seed=4)
    shutil.copy(DEMO_PROTOTYPES, root / "age_prototypes.safetensors")
    meta = json.loads((root / "bundle.json").read_text())
    opts = {"t_per_strength": 0.25, "gan_share": 0.0}
    results = {}
    for grey in (None, 0.0):
        o = opts if grey is None else opts | {"hair_grey": grey}
        (root / "bundle.json").write_text(json.dumps(meta | {"age_prototypes": "age_prototypes.safetensors",
                                                             "age_prototypes_options": o}))
        bundle = load_bundle(root)
        editor = FaceEditor(bundle, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2,
                                                                          perceptual_weight=0.0)})
        prepared = editor.prepare(photo)
        plain = editor.compose(photo, prepared, {})
        results[grey] = np.asarray(editor.compose(photo, prepared, {"age": 6.0}))
        lm = prepared[0].aligned.face.landmarks68
        assert np.array_equal(results[grey], np.asarray(bundle.age_prototypes.apply(plain, lm, 1.5, hair=grey)))
    hair = _full_mask(photo, lm) > 0.9
    c = lambda a: np.hypot(*rgb2lab(a)[hair][:, 1:].T).mean()  # noqa: E731
    assert c(results[0.0]) > c(results[None]) + 3  # the default greys; 0 does not
    (root / "bundle.json").write_text(json.dumps(meta | {"age_prototypes": "age_prototypes.safetensors",
                                                         "age_prototypes_options": opts | {"hair_grey": 2.0}}))
    with pytest.raises(CheckpointError, match="age_prototypes_options"):
        load_bundle(root)


def test_masks_are_reused_for_the_same_photo_and_face_only(face, monkeypatch):
    """An aging timeline asks for one face's hair once per frame: the second ask is served from the cache (GrabCut
    not run again), a changed photo or face is not, and a caller changing its copy changes nothing cached."""
    from faceapp.align import hair

    photo, lm = face
    rgb = np.asarray(photo)
    hair._CACHE.clear()
    calls = []
    real = hair._hair_mask
    monkeypatch.setattr(hair, "_hair_mask", lambda *a: calls.append(1) or real(*a))
    m1, box = hair_mask(rgb, lm)
    m1[:] = 0.0  # the caller's copy
    m2, _ = hair_mask(rgb, lm)
    assert len(calls) == 1 and m2.max() > 0.5
    other = rgb.copy()
    other[box[1]:box[1] + 10, box[0]:box[2]] = 0  # the same face in another photo
    hair_mask(other, lm)
    hair_mask(rgb, lm + 1.0)
    assert len(calls) == 3


def _face_frame(lm, shape):
    """Each pixel's level (brow-to-chin units above the brows) and signed distance across the face's midline."""
    b = lm[17:27].mean(0)
    up = b - lm[8]
    length = np.hypot(*up)
    u = up / length
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    return ((xs - b[0]) * u[0] + (ys - b[1]) * u[1]) / length, ((xs - b[0]) * -u[1] + (ys - b[1]) * u[0]) / length


@pytest.mark.parametrize("backdrop", [(40, 50, 110), (200, 170, 60), (235, 235, 235)])
def test_the_backdrop_beyond_short_hair_is_not_hair(face, backdrop):
    """Short hair with the backdrop right above it (a flag, a curtain, a window): the hair is greyed, the backdrop
    is not. The astronaut's hair is cut at 0.7 brow-to-chin units above her brows and 0.75 beside her midline,
    and everything beyond is painted one colour of a backdrop."""
    photo, lm = face
    rgb = np.asarray(photo).copy()
    level, across = _face_frame(lm, rgb.shape[:2])
    beyond = (level > 0.0) & (((level - 0.0) / 0.7) ** 2 + (across / 0.75) ** 2 > 1.0)
    rgb[beyond] = backdrop
    full = _full_mask(Image.fromarray(rgb), lm)
    short = ~beyond & (level > 0.45) & (np.abs(across) < 0.4)  # the hair left above her forehead
    assert (full[short] > 0.5).mean() > 0.8
    assert (full[beyond & (level > 0.0)] > 0.5).mean() < 0.02  # at most a sliver of the backdrop


def test_a_bald_crown_with_hair_at_the_sides_greys_the_sides_only(face):
    """Skin over the top of the head, hair left beside it: the sides are hair, the crown is not."""
    photo, lm = face
    rgb = np.asarray(photo).copy()
    level, across = _face_frame(lm, rgb.shape[:2])
    skin = np.median(rgb[_inside(face_hull(lm, forehead=0.0), rgb.shape[:2])], 0)
    crown = (level > 0.2) & (np.abs(across) < 0.45)
    rgb[crown] = skin
    full = _full_mask(Image.fromarray(rgb), lm)
    assert (full[crown] > 0.5).mean() < 0.02
    sides = (level > 0.1) & (level < 0.5) & (np.abs(across) > 0.65) & (np.abs(across) < 0.8)
    assert (full[sides] > 0.5).mean() > 0.5


def _tight_crop(photo, lm, top):
    """The photo cut `top` brow-to-chin units above the brows, 1.1 either side of the face and just below the chin
    (a close selfie, a dataset's face chip): (uint8 crop, landmarks in it)."""
    b, length = lm[17:27].mean(0), float(np.hypot(*(lm[17:27].mean(0) - lm[8])))
    x0, x1 = int(lm[:, 0].mean() - 1.1 * length), int(lm[:, 0].mean() + 1.1 * length)
    y0, y1 = int(b[1] - top * length), int(lm[8][1] + 0.1 * length)
    return np.asarray(photo)[y0:y1, x0:x1].copy(), lm - [x0, y0]


@pytest.mark.parametrize("top", [0.1, 0.0])
def test_a_tight_crop_greys_the_hair_beside_the_temples(face, top, monkeypatch):
    """A crop that cuts the forehead leaves the walks no hairline to find: the person segmenter's head outline
    gives the hair beside the temples, and the backdrop beyond it is left alone. Without the segmenter no hair is
    found there (nothing is greyed rather than a guess)."""
    pytest.importorskip("ai_edge_litert")
    from faceapp.align import hair, person

    photo, lm = face
    crop, lmc = _tight_crop(photo, lm, top)
    hair._CACHE.clear()
    m, (x0, y0, x1, y1) = hair_mask(crop, lmc)
    full = np.zeros(crop.shape[:2], np.float32)
    full[y0:y1, x0:x1] = m
    level, across = _face_frame(lmc, crop.shape[:2])
    temples = (level > -0.15) & (level < top) & (np.abs(across) > 0.6) & (np.abs(across) < 0.75)
    assert (full[temples] > 0.5).mean() > 0.6
    assert full[_inside(face_hull(lmc, forehead=0.0), full.shape)].max() < 0.05
    # the wall beside her hair (which ends 0.85 from her midline), at the height of her eyes and above
    wall = (level > -0.3) & (np.abs(across) > 0.95)
    assert wall.sum() > 50 and (full[wall] > 0.5).mean() < 0.02
    hair._CACHE.clear()
    monkeypatch.setattr(person, "_STATE", {"it": None})
    assert hair_mask(crop, lmc)[0].max() == 0.0


def _long_hair(photo, lm, colour=None, end=1.7):
    """The astronaut with long hair: her own hair's pixels (or a `colour`, RGB) drawn beside her face down to `end`
    brow-to-chin units below the brows (past the chin, over her suit's dark collar), and a dark top from there
    down, touching it. (uint8 photo, where the long hair is beside her jaw, where the top is)."""
    import cv2

    rgb = np.asarray(photo).copy()
    level, across = _face_frame(lm, rgb.shape[:2])
    face = cv2.dilate(_inside(face_hull(lm, forehead=0.1), rgb.shape[:2]).astype(np.uint8), np.ones((9, 9), np.uint8))
    neck = (level < -0.9) & (np.abs(across) < 0.5)
    long = (level < 0.1) & (level > -end) & (np.abs(across) < 0.95) & ~face.astype(bool) & ~neck
    rng = np.random.default_rng(0)
    out = rgb.astype(np.float32)
    if colour is not None:  # her hair dyed `colour`, its strands' light and shade kept
        own = _full_mask(photo, lm) > 0.3
        shade = out[own].mean(-1, keepdims=True)
        out[own] = np.asarray(colour, np.float32) * shade / np.median(shade)
    # strands: her hair's pixels, shuffled and softened
    own = out[(level > 0.4) & (level < 0.7) & (np.abs(across) < 0.4)]
    strands = own[rng.integers(0, len(own), long.sum())]
    top = (level <= -end) & (level > -2.3) & (np.abs(across) < 1.3)
    out[long] = strands
    out = np.where(long[..., None], cv2.GaussianBlur(out, (0, 0), 1.0), out)
    out[top] = (20, 20, 24)
    beside = long & (level < -0.7) & (level > -1.1) & (np.abs(across) > 0.6)
    return out.clip(0, 255).astype(np.uint8), beside, top


@pytest.mark.parametrize("colour", [None, (35, 28, 25)])
def test_long_hair_greys_down_to_the_shoulders_and_a_dark_top_does_not(face, colour, monkeypatch):
    """Long hair hanging beside the cheeks and jaw is hair too (with the person segmenter): it greys with the
    crown, not only the hair above the nose. The dark top it falls onto is not hair, even in the hair's own colour
    (near-black hair on a black top). Without the segmenter the hair below the nose is left as it was."""
    pytest.importorskip("ai_edge_litert")
    from faceapp.align import hair, person

    photo, lm = face
    rgb, beside, top = _long_hair(photo, lm, colour)
    hair._CACHE.clear()
    full = _full_mask(Image.fromarray(rgb), lm)
    assert (full[beside] > 0.5).mean() > 0.7
    assert (full[top] > 0.5).mean() < 0.01
    assert full[_inside(face_hull(lm, forehead=0.0), full.shape)].max() < 0.05
    hair._CACHE.clear()
    monkeypatch.setattr(person, "_STATE", {"it": None})
    assert (_full_mask(Image.fromarray(rgb), lm)[beside] > 0.5).mean() < 0.1


def test_a_top_in_the_hair_colour_touching_it_above_the_shoulders_is_not_hair(face, monkeypatch):
    """Near-black long hair ending 1.35 brow-to-chin units below the brows on a black top that touches it there:
    one region to the segmenter (here a stand-in that calls the whole head and top the person, so that only the
    hair finder's own rule decides) and to the hair's colours. The hair beside the jaw greys; the top gets at
    most the faint tail of the fade above the shoulders."""
    from faceapp.align import hair

    photo, lm = face
    rgb, beside, top = _long_hair(photo, lm, (35, 28, 25), end=1.35)

    def stand_in(image):  # `image`: the hair finder's box round the face, at its work scale
        x0, y0, x1, y1 = hair._box(lm, rgb.shape[1], rgb.shape[0])
        lv, ac = _face_frame((lm - [x0, y0]) * image.shape[1] / (x1 - x0), image.shape[:2])
        return ((lv < 1.0) & (np.abs(ac) < 1.35)).astype(np.float32)  # the head, its hair and the top

    monkeypatch.setattr(hair, "person_mask", stand_in)
    hair._CACHE.clear()
    full = _full_mask(Image.fromarray(rgb), lm)
    hair._CACHE.clear()
    assert (full[beside] > 0.5).mean() > 0.7
    assert (full[top] > 0.5).mean() < 0.01 and full[top].mean() < 0.05
    assert full[top & (_face_frame(lm, full.shape)[0] < -1.5)].max() < 0.01  # past the fade: nothing


def test_the_wall_above_her_crown_is_not_hair(face):
    """Above the astronaut's crown the wall's beige lies within her hair's highlights, so the walks' colour tests
    let a patch of it through (a fifth of the wall band below greyed, a white cap above her hair); the person
    segmenter's head outline keeps it out. Her hair reaches 0.88 brow-to-chin units above the brows."""
    pytest.importorskip("ai_edge_litert")
    photo, lm = face
    full = _full_mask(photo, lm)
    level, across = _face_frame(lm, full.shape)
    wall = (level > 0.9) & (np.abs(across) < 0.6)
    assert wall.sum() > 1000 and (full[wall] > 0.5).mean() < 0.01
    crown = (level > 0.5) & (level < 0.75) & (np.abs(across) < 0.4)
    assert (full[crown] > 0.5).mean() > 0.9  # the hair below it still is


def test_hair_colours_are_told_from_a_coloured_backdrop():
    """Seeds are kept to colours natural hair has (a tight crop's person segmenter can take a red or green backdrop
    for the person): black, brown, blond, auburn, grey and white hair pass; a red, pink, green or blue wall not."""
    import cv2

    from faceapp.align.hair import _hair_like

    def lab(rgb):
        return cv2.cvtColor(np.array([[rgb]], np.float32) / 255.0, cv2.COLOR_RGB2Lab)

    hair = {"black": (20, 16, 14), "dark brown": (60, 40, 28), "brown": (110, 75, 45), "blond": (200, 170, 110),
            "ash blond": (170, 160, 130), "auburn": (140, 60, 30), "ginger": (190, 100, 50), "grey": (150, 150, 150),
            "white": (235, 235, 230)}
    walls = {"red": (200, 30, 40), "pink": (230, 120, 170), "green": (120, 190, 90), "blue": (60, 90, 200),
             "purple": (120, 60, 150), "orange": (250, 140, 0)}
    passed = {k: bool(_hair_like(lab(c))[0, 0]) for k, c in {**hair, **walls}.items()}
    assert all(passed[k] for k in hair) and not any(passed[k] for k in walls), passed
