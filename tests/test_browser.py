"""A person's path through the app in headless Chromium: upload, move the age slider, see the result.

Debian's chromium driven by Playwright (no browser download). Screenshots go to pytest's tmp folder, or to
$FACEAPP_SCREENSHOTS when set.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

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


def _status_has(page, text, timeout=120_000):
    page.wait_for_function(
        "t => (document.querySelector('#status')?.innerText || '').includes(t)", arg=text, timeout=timeout
    )


def test_upload_move_age_slider_and_see_the_result(app_url, browser, tmp_path):
    import app

    shots = Path(os.environ.get("FACEAPP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#photo input[type=file]", state="attached", timeout=60_000)
    assert "Untrained stand-in" in page.locator("#model-notice").inner_text()
    before = set(app._sessions)

    page.locator("#photo input[type=file]").set_input_files(str(DATA / "astronaut.jpg"))
    _status_has(page, "Done: no edit")
    first = page.locator("#result img").get_attribute("src")
    assert first and "faceapp-edited" in first

    age = page.locator("#slider-age input[type=number]")
    age.fill("2")
    age.press("Enter")
    _status_has(page, "Done: age +2")
    page.wait_for_function(
        "old => document.querySelector('#result img')?.getAttribute('src') !== old", arg=first, timeout=30_000
    )
    shot = shots / "app_age_plus2.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one

    # closing the tab ends the session: its files leave the server
    (key,) = set(app._sessions) - before
    workdir = app._sessions[key].workdir
    assert any(workdir.glob("faceapp-edited-*.png"))
    page.close()
    deadline = time.monotonic() + 30
    while workdir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workdir.exists() and key not in app._sessions


def test_example_photo_works_with_one_click(app_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_text("Example photos (public domain)").wait_for(timeout=60_000)
    page.locator(".gallery-item, button.gallery-item, [data-testid='examples'] button").first.click()
    _status_has(page, "Done: no edit")
    assert "1 face found" not in page.locator("#status").inner_text()  # replaced by the edit's status
    page.close()
