"""faceapp web app (Gradio): upload a photo, move the sliders, get the same face older, smiling, ...

    python app.py                       # the demo bundle in models/demo/ (or a labelled stand-in)
    python app.py --model PATH|USER/REPO
    FACEAPP_MODEL=PATH python app.py    # the same, for a Hugging Face Space variable

Two tabs: "Edit a photo" (upload, faces found, per-face sliders and presets, a before/after slider
on the full-resolution result, how faithful the inversion is, the latent code to download and load
again) and "Generate" (a random face from a seed, truncation, style mixing; "edit this face" sends its
exact latent to the editor). Every step runs through faceapp.pipeline.FaceEditor.

What one visitor uploads and computes lives in that visitor's session only; nothing of it is logged, and
it is deleted from memory and from the server's disk when the tab closes (or, at the latest, when the
state expires or the cache sweep finds it).

The app is the package faceapp/web/ (its __init__ gives the reading order); this file starts it and keeps
the names scripts and tests use (`build_demo`, `resolve_model`, `make_editor`, ...).
"""

from faceapp.web.handlers import Handlers
from faceapp.web.layout import build_demo
from faceapp.web.session import Session, end_session
from faceapp.web.session import sessions as _sessions  # bench/app.py counts and closes the live sessions
from faceapp.web.settings import EXAMPLES, GENERATED_SIDE, MAX_PIXELS, TIMELINE_FRAMES, TIMELINE_SIDE
from faceapp.web.startup import DEMO_BUNDLE, main, make_editor, prepare_perceptual, resolve_model
from faceapp.web.views import model_notice, presets, slider_spec

__all__ = [
    "DEMO_BUNDLE",
    "EXAMPLES",
    "GENERATED_SIDE",
    "MAX_PIXELS",
    "TIMELINE_FRAMES",
    "TIMELINE_SIDE",
    "Handlers",
    "Session",
    "_sessions",
    "build_demo",
    "end_session",
    "main",
    "make_editor",
    "model_notice",
    "prepare_perceptual",
    "presets",
    "resolve_model",
    "slider_spec",
]

if __name__ == "__main__":
    main()
