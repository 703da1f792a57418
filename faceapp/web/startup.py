"""Start-up: the model to serve (`resolve_model`), its editor (`make_editor`), the perceptual loss inversions
will use (`prepare_perceptual`), and `main` (what `python app.py` runs)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from faceapp.bundle import ModelBundle, load_bundle, make_random_bundle
from faceapp.errors import ModelUnavailableError
from faceapp.fetch import fetch_lpips, lpips_file
from faceapp.inversion import InvertConfig, losses
from faceapp.pipeline import DEMO_BUNDLE, FaceEditor, open_editor
from faceapp.web.layout import build_demo
from faceapp.web.settings import EXAMPLES, HEAVY_CONCURRENCY, MAX_PIXELS, MAX_UPLOAD

DESCRIPTION = "faceapp web app (Gradio): upload a photo, move the sliders, get the same face older, smiling, ..."
#: The stand-in's inversions: random weights, so a few steps show the flow; more would not turn blobs into faces.
STANDIN_INVERSION = InvertConfig(fast_steps_no_encoder=8, balanced_w_steps_no_encoder=16,
                                 balanced_wplus_steps_no_encoder=8, pti_steps=16)


def standin_bundle_path() -> Path:
    """Where the random stand-in bundle is made (once) when no demo bundle exists."""
    base = Path(os.environ.get("FACEAPP_CACHE", Path.home() / ".cache" / "faceapp"))
    return base / "standin-64"


def resolve_model(source: str | os.PathLike | None = None, device: str = "cpu") -> ModelBundle:
    """The ModelBundle to serve: `source` if given, else models/demo/ (DEMO_BUNDLE), else a labelled random
    stand-in."""
    if source:
        return load_bundle(source, device=device)
    if (DEMO_BUNDLE / "bundle.json").is_file():
        return load_bundle(DEMO_BUNDLE, device=device)
    path = standin_bundle_path()
    if not (path / "bundle.json").is_file():
        make_random_bundle(path, resolution=64, seed=0)
    return load_bundle(path, device=device)


def make_editor(bundle: ModelBundle, device: str = "cpu", *, threads: bool = False) -> FaceEditor:
    """The app's FaceEditor (`faceapp.pipeline.open_editor`, as the CLI's): no shared inversion cache (each session
    keeps its own, see `Session`), photos up to MAX_PIXELS, short inversions for the stand-in. `threads`: also set
    torch's CPU threads for the model's size."""
    return open_editor(bundle, device=device, config=STANDIN_INVERSION if bundle.untrained else None,
                       max_pixels=MAX_PIXELS, threads=threads)


def _online() -> bool:
    return not any(os.environ.get(k, "").strip() not in ("", "0") for k in ("HF_HUB_OFFLINE", "FACEAPP_OFFLINE"))


def prepare_perceptual(*, online: bool | None = None, download=None, say=print) -> str:
    """At start-up: make sure inversions have the best perceptual loss there is; returns what they will use.

    LPIPS's VGG16 backbone is fetched into the torch cache (`faceapp.fetch.fetch_lpips`) when it is missing and
    the app may go online (not when HF_HUB_OFFLINE or FACEAPP_OFFLINE is set); else the offline MobileNetV2
    fallback is used when its package is installed; else inversions run without the perceptual term (pixel +
    identity losses). Each case is said in the log; none is an error. `download` (tests) replaces the fetch.
    """
    if online is None:
        online = _online()
    if not losses.lpips_weights_cached("vgg") and online:
        say(f"faceapp: fetching LPIPS's VGG16 backbone into {lpips_file('vgg')} (once; set FACEAPP_OFFLINE=1 to "
            "skip) ...")
        t0 = time.perf_counter()
        try:
            if download is not None:
                download()
            else:  # a Space without internet must not hang its start-up
                fetch_lpips("vgg", progress=False, timeout=30)
            say(f"faceapp: LPIPS backbone fetched and checked in {time.perf_counter() - t0:.0f} s")
        except Exception as e:  # offline, blocked, disk full: the fallbacks below still work
            cause = e.__cause__ or e
            say(f"faceapp: could not fetch the LPIPS backbone ({type(cause).__name__}: {cause})")
    if losses.lpips_weights_cached("vgg"):
        what = "lpips-vgg"
    else:
        try:
            losses.load_mobilenet_v2_weights()
            what = "mobilenet"
        except ModelUnavailableError:
            what = "none"
    say({
        "lpips-vgg": "faceapp: perceptual loss: LPIPS (VGG16)",
        "mobilenet": "faceapp: perceptual loss: the offline MobileNetV2 fallback (LPIPS's backbone is not cached)",
        "none": "faceapp: perceptual loss: none installed; inversions use the encoder and pixel + identity losses "
                "(run `python -m faceapp fetch-lpips` with internet for LPIPS)",
    }[what])
    return what


def main(argv=None) -> None:
    """`python app.py [--model M] [--device D] [--host H] [--port P]`: serve the app."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--model", default=os.environ.get("FACEAPP_MODEL"),
                        help="a model bundle folder, a generator checkpoint, or a Hugging Face Hub repo id "
                        "(default: models/demo/, else an untrained stand-in)")
    parser.add_argument("--device", default=os.environ.get("FACEAPP_DEVICE", "cpu"))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)

    prepare_perceptual()
    editor = make_editor(resolve_model(args.model, device=args.device), device=args.device, threads=True)
    demo = build_demo(editor)
    demo.queue(max_size=64, default_concurrency_limit=HEAVY_CONCURRENCY).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(EXAMPLES)],
        max_file_size=MAX_UPLOAD,  # refused by Gradio before it is stored
    )
