"""A person's path through the app in headless Chromium, checked on what the page shows.

Upload a photo, see the before/after comparison, move the age slider and see the result change (the
images the page shows are fetched and compared), click a preset, use the Generate tab and send its
face to the editor. Debian's chromium driven by Playwright (no browser download). Screenshots go to
pytest's tmp folder, or to $FACEAPP_SCREENSHOTS when set.
"""

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    import app
    from faceapp.bundle import load_bundle, make_random_bundle
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor

    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "0.5"  # so closing the tab is noticed within a second
    bundle = load_bundle(make_random_bundle(tmp_path_factory.mktemp("b") / "bundle", resolution=32, seed=7))
    tiny = InvertConfig(fast_steps_no_encoder=2, perceptual_weight=0.0)
    demo = app.build_demo(FaceEditor(bundle, cache_size=0, invert_kwargs={"config": tiny}))
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                        allowed_paths=[str(app.EXAMPLES)])
    yield demo.local_url
    demo.close()
    os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    path = Path(os.environ.get("FACEAPP_SCREENSHOTS") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _text_has(page, selector, text, timeout=120_000):
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, text], timeout=timeout
    )


def _status_has(page, text, timeout=120_000):
    _text_has(page, "#status", text, timeout)


def _shown(page, selector) -> list[str]:
    """The src of every image shown inside `selector`."""
    return page.eval_on_selector_all(f"{selector} img", "els => els.map(e => e.getAttribute('src'))")


def _fetch(page, src) -> np.ndarray:
    """The pixels of an image the page shows, fetched the way the page fetched it."""
    body = page.request.get(src if src.startswith("http") else page.url.rstrip("/") + "/" + src.lstrip("/")).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16)


def _screenshot(page, path) -> np.ndarray:
    page.screenshot(path=str(path), full_page=True)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_upload_move_age_slider_and_see_the_result(app_url, browser, shots):
    from faceapp.web import session as web_session

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#photo input[type=file]", state="attached", timeout=60_000)
    assert "Untrained stand-in" in page.locator("#model-notice").inner_text()
    before = set(web_session.sessions)

    page.locator("#photo input[type=file]").set_input_files(str(DATA / "astronaut.jpg"))
    _status_has(page, "Done: no edit")
    orig = np.asarray(Image.open(DATA / "astronaut.jpg").convert("RGB"), dtype=np.int16)
    # the comparison slider shows two images: the photo before, and the result (no edit yet: the photo itself)
    page.wait_for_function("() => document.querySelectorAll('#result img').length === 2", timeout=30_000)
    first = _shown(page, "#result")
    plain = _fetch(page, first[1])
    assert plain.shape == orig.shape and np.abs(plain - orig).mean() < 1
    assert np.abs(_fetch(page, first[0]) - orig).mean() < 3

    age = page.locator("#slider-age input[type=number]")
    age.fill("2")
    age.press("Enter")
    _status_has(page, "Done: age +2")
    page.wait_for_function(
        "old => document.querySelectorAll('#result img')[1]?.getAttribute('src') !== old", arg=first[1],
        timeout=30_000)
    older = _fetch(page, _shown(page, "#result")[1])
    face = (slice(90, 160), slice(190, 260))
    assert np.abs(older[face] - orig[face]).mean() > 2  # the face changed on screen ...
    assert np.array_equal(older[:, :40], orig[:, :40])  # ... and nothing far from it
    shot = _screenshot(page, shots / "app_age_plus2.png")
    assert shot.std() > 20  # a rendered page, not a blank one

    # a preset sets the sliders (the others back to 0) and shows its edit
    page.get_by_role("button", name="Smile").click()
    _status_has(page, "Done: smile +2.25.")  # the Smile preset: 3/4 of its range
    assert page.locator("#slider-age input[type=number]").input_value() == "0"
    page.locator("#reset").click()
    _status_has(page, "Done: no edit.")

    # closing the tab ends the session: its files leave the server
    (key,) = set(web_session.sessions) - before
    workdir = web_session.sessions[key].workdir
    assert any(workdir.glob("faceapp-edited-*.png"))
    page.close()
    deadline = time.monotonic() + 30
    while workdir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workdir.exists() and key not in web_session.sessions


def test_generate_tab_and_edit_this_face(app_url, browser, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Generate").click()
    page.locator("#generate").click()
    _text_has(page, "#generate-status", "Generated: seed 0, ψ 0.70.")
    first_src = _shown(page, "#generated")[0]
    first = _fetch(page, first_src)
    assert first.shape == (512, 512, 3) and first.std() > 5  # a face-sized image with something in it
    seed = page.locator("#seed input")
    seed.fill("9")
    seed.press("Enter")
    _text_has(page, "#generate-status", "Generated: seed 9")
    page.wait_for_function("old => document.querySelector('#generated img')?.getAttribute('src') !== old",
                           arg=first_src, timeout=30_000)
    assert np.abs(_fetch(page, _shown(page, "#generated")[0]) - first).mean() > 2  # another face on screen
    _screenshot(page, shots / "app_generate.png")

    page.locator("#edit-generated").click()
    _status_has(page, "Done: no edit (generated face: seed 9")
    assert page.get_by_role("tab", name="Edit a photo").get_attribute("aria-selected") == "true"
    page.wait_for_function("() => document.querySelectorAll('#result img').length === 2", timeout=30_000)
    generated = _fetch(page, _shown(page, "#generated")[0])
    shown_before = _fetch(page, _shown(page, "#result")[0])
    assert np.abs(shown_before - generated).max() <= 2  # the editor shows that very face, not an inversion
    _screenshot(page, shots / "app_generated_in_editor.png")
    page.close()


def test_example_photo_works_with_one_click(app_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_text("Example photos (public domain)").wait_for(timeout=60_000)
    page.locator(".gallery-item, button.gallery-item, [data-testid='examples'] button").first.click()
    _status_has(page, "Done: no edit")
    assert "1 face found" not in page.locator("#status").inner_text()  # replaced by the edit's status
    page.close()
