"""FaceEditor end to end on a real photo with a tiny random bundle: align -> invert -> edit -> render -> paste."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import faceapp.inversion
from faceapp.bundle import load_bundle, make_random_bundle
from faceapp.errors import FaceAppError, ImageError, NoFaceError
from faceapp.inversion import InvertConfig
from faceapp.pipeline import FaceEditor, InversionCache, save_gif

DATA = Path(__file__).parent / "data"
# Two projection steps without the perceptual net: the flow, not the quality, is under test here.
TINY = InvertConfig(fast_steps_no_encoder=2, balanced_w_steps_no_encoder=2, balanced_wplus_steps_no_encoder=2,
                    pti_steps=2, perceptual_weight=0.0)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_random_bundle(tmp_path_factory.mktemp("b") / "bundle", resolution=32, seed=1))


@pytest.fixture(scope="module")
def photo():
    from faceapp.imageio import load_image

    return load_image(DATA / "astronaut.jpg")


@pytest.fixture(scope="module")
def faces(bundle, photo):
    return FaceEditor(bundle).detect(photo)


@pytest.fixture
def editor(bundle):
    return FaceEditor(bundle, invert_kwargs={"config": TINY})


@pytest.fixture
def count_inversions(monkeypatch):
    calls = []
    real = faceapp.inversion.invert

    def counting(*args, **kwargs):
        calls.append(kwargs.get("mode"))
        return real(*args, **kwargs)

    monkeypatch.setattr(faceapp.inversion, "invert", counting)
    return calls


def _face_box(faces, photo, i=0):
    x0, y0, x1, y1 = (int(v) for v in faces[i].box)
    return x0, y0, x1, y1


def test_edit_photo_changes_the_face_and_only_the_face(editor, photo, faces, count_inversions):
    plain = np.asarray(editor.edit_photo(photo, {}), dtype=np.int16)
    older = np.asarray(editor.edit_photo(photo, {"age": 3}), dtype=np.int16)
    orig = np.asarray(photo, dtype=np.int16)
    assert plain.shape == older.shape == orig.shape
    assert count_inversions == ["fast"]  # the second call re-used the cached inversion
    x0, y0, x1, y1 = _face_box(faces, photo)
    inside = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
    # the face was replaced by the generator's rendering, and the age edit changed that rendering
    assert np.abs(plain[inside] - orig[inside]).mean() > 10
    assert np.abs(older[inside] - plain[inside]).mean() > 2
    # far from the face the photo is untouched, pixel for pixel
    assert np.array_equal(older[:, :40], orig[:, :40]) and np.array_equal(older[-60:], orig[-60:])


def test_steps_match_an_independent_edit(editor, photo, faces):
    aligned = editor.align(photo, faces[0])
    assert aligned.image.size == (32, 32) and aligned.spec == editor.bundle.align_spec.with_size(32)
    inv = editor.invert(aligned)
    assert inv.ws.shape == (1, editor.G.num_ws, editor.G.w_dim)
    d = editor.bundle.directions["age"]
    expected_ws = inv.ws + 1.5 * d.scale * torch.from_numpy(d.vector)  # all layers, no conditions
    assert torch.allclose(editor.edit(inv.ws, {"age": 1.5}), expected_ws, atol=1e-5)
    assert editor.edit(inv.ws, {"age": 0.0}) is inv.ws  # zero strengths: the very same code
    with torch.no_grad():
        img = editor.G.synthesis(expected_ws, noise_mode="const")[0]
    ref = ((img.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    crop = editor.render(editor.edit(inv.ws, {"age": 1.5}))
    assert np.abs(np.asarray(crop, dtype=np.int16) - ref).max() <= 1
    # compose = paste_back of that rendering
    composed = editor.compose(photo, [type("F", (), {"aligned": aligned, "ws": inv.ws, "G": editor.G})()],
                              {"age": 1.5})
    assert np.array_equal(np.asarray(composed), np.asarray(editor.paste_back(photo, aligned, crop)))


def test_hold_fixes_the_other_attributes(editor):
    ws = editor.G.mapping.w_avg.view(1, 1, -1).repeat(1, editor.G.num_ws, 1)
    dirs = editor.bundle.directions
    moved = editor.edit(ws, {"age": 2.0}, hold=("gender", "smile", "age"))  # 'age' itself is dropped from hold
    delta = (moved - ws)[0, 0].double().numpy()
    for other in ("gender", "smile"):
        assert abs(delta @ dirs[other].vector.astype(np.float64)) < 1e-4
    free = (editor.edit(ws, {"age": 2.0}) - ws)[0, 0].double().numpy()
    assert abs(free @ dirs["gender"].vector.astype(np.float64)) > 1e-3  # random directions are not orthogonal


def test_cache_by_content_mode_and_bound(bundle, photo, faces, count_inversions):
    editor = FaceEditor(bundle, invert_kwargs={"config": TINY}, cache_size=1)
    a = editor.align(photo, faces[0])
    b = a.image.transpose(Image.FLIP_LEFT_RIGHT)  # another crop
    first = editor.invert(a)
    assert editor.invert(a.image.copy()) is first  # same pixels, another object: a hit
    editor.invert(a, mode="balanced")  # another mode: computed (and, cache_size 1, evicts the first)
    editor.invert(a)
    assert count_inversions == ["fast", "balanced", "fast"]
    # a caller's own cache (the app's per-session one) is used instead of the editor's
    own = InversionCache(4)
    editor.invert(b, cache=own)
    editor.invert(b, cache=own)
    assert len(own) == 1 and own.hits == 1 and count_inversions[-1] == "fast" and len(count_inversions) == 4
    assert editor.cache_key(a, "fast") != editor.cache_key(b, "fast")
    nocache = FaceEditor(bundle, invert_kwargs={"config": TINY}, cache_size=0)
    nocache.invert(a)
    nocache.invert(a)
    assert len(nocache.cache) == 0 and len(count_inversions) == 6


@pytest.mark.slow
def test_all_faces_or_the_largest(editor, photo):
    # two astronauts side by side, the right one smaller: two faces
    small = photo.resize((384, 384))
    two = Image.new("RGB", (512 + 384, 512), (90, 90, 90))
    two.paste(photo, (0, 0))
    two.paste(small, (512, 64))
    two.info["faceapp_name"] = "two.png"
    found = editor.detect(two)
    assert len(found) == 2 and found[0].box[0] < 512 <= found[1].box[0]  # largest (left) first
    base = np.asarray(two, dtype=np.int16)
    largest = np.asarray(editor.edit_photo(two, {"age": 2}, faces="largest"), dtype=np.int16)
    both = np.asarray(editor.edit_photo(two, {"age": 2}, faces="all"), dtype=np.int16)
    only_second = np.asarray(editor.edit_photo(two, {"age": 2}, faces=[1]), dtype=np.int16)
    left, right = (slice(None), slice(0, 512)), (slice(None), slice(512, None))
    assert np.abs(largest[left] - base[left]).sum() > 0 and np.array_equal(largest[right], base[right])
    assert np.abs(both[left] - base[left]).sum() > 0 and np.abs(both[right] - base[right]).sum() > 0
    assert np.array_equal(only_second[left], base[left]) and np.abs(only_second[right] - base[right]).sum() > 0
    with pytest.raises(FaceAppError, match="no face number 3"):
        editor.prepare(two, faces=[2], detected=found)


def test_timeline_frames_and_gif(editor, photo, tmp_path):
    prepared = editor.prepare(photo)
    frames = editor.timeline(photo, prepared, name="age", strengths=[-3, 0, 3])
    assert len(frames) == 3 and all(f.size == photo.size for f in frames)
    assert np.array_equal(np.asarray(frames[1]), np.asarray(editor.compose(photo, prepared, {})))
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[2]))
    path = save_gif(frames, tmp_path / "t.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 4  # forth and back: 3 + 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_progress_reports_up_to_done(editor, photo):
    seen = []
    editor.prepare(photo, mode="balanced", progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    assert seen == sorted(seen)


def test_clear_errors(editor, photo, tmp_path):
    blank = Image.new("RGB", (200, 200), (120, 120, 120))
    blank.info["faceapp_name"] = "blank.png"
    with pytest.raises(NoFaceError, match="no face found in blank.png"):
        editor.edit_photo(blank, {"age": 1})
    with pytest.raises(FaceAppError, match="unknown edit 'beard'.*age, smile, glasses, gender"):
        editor.edit_photo(photo, {"beard": 1})
    with pytest.raises(FaceAppError, match="mode must be one of"):
        editor.invert(photo.resize((32, 32)), mode="perfect")
    with pytest.raises(FaceAppError, match="cannot hold wings"):
        editor.edit(torch.zeros(1, editor.G.num_ws, editor.G.w_dim), {"age": 1}, hold=("wings",))
    small = FaceEditor(editor.bundle, max_pixels=100_000)
    with pytest.raises(ImageError, match="the limit is"):
        small.load(DATA / "astronaut.jpg")
    (tmp_path / "notes.png").write_text("not a photo")
    with pytest.raises(ImageError, match="not an image"):
        editor.edit_photo(tmp_path / "notes.png", {"age": 1})


def test_identity_loss_only_where_its_chip_box_holds(bundle, tmp_path):
    from faceapp.align import FFHQ_SPEC
    from faceapp.bundle import save_bundle
    from faceapp.inversion import IdentityLoss
    from faceapp.stylegan.networks import Generator

    assert not FaceEditor(bundle).use_identity  # a template crop at 32 px
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=128, img_channels=3,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    ffhq = load_bundle(save_bundle(tmp_path / "ffhq", G=G, align_spec=FFHQ_SPEC(128)))
    editor = FaceEditor(ffhq)
    assert editor.use_identity and isinstance(editor.identity_loss(), IdentityLoss)
    assert editor.identity_loss() is editor.identity_loss()  # built once
    assert not FaceEditor(ffhq, identity=False).use_identity
