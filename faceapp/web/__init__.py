"""faceapp's web app (Gradio), started by app.py: upload a photo, move the sliders, get the same face older,
smiling, ...; or generate a face and edit that. Every step runs through faceapp.pipeline.FaceEditor.

Reading order:

    settings.py   the app's settings (environment variables, sizes)
    startup.py    the model to serve and its editor, the perceptual loss fetched at start-up, `main`
    session.py    one visitor's state (`Session`, its `State`) and the lifecycle of its files and uploads
    views.py      what the page shows, made from plain values: notices, picker choices, sliders, images, texts
    handlers.py   `Handlers`: what each event does; each returns a named result (`PhotoView`, `EditView`, ...)
                  that knows which components it updates (`PAGE`) and their values (`page()`)
    layout.py     one function per tab (`edit_tab`, `generate_tab`) with its events, and `build_demo`
    api.py        the named endpoints scripts call with gradio_client (`api_endpoints`)

faceapp itself never imports this package (docs/DESIGN.md, layers).
"""

import os

# Before Gradio is imported (by the modules of this package): no analytics unless the environment asks for them.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
