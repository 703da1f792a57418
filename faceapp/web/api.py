"""The named endpoints scripts call with gradio_client (`api_endpoints`): parameters named as on the page, plain
values and file paths back. They run the same `Handlers` as the page and read the fields of their results."""

from __future__ import annotations

import gradio as gr

from faceapp.errors import FaceAppError
from faceapp.web.handlers import Handlers, user_errors
from faceapp.web.views import ALL_FACES


def _face_choice(face) -> str:
    """The endpoints' `face` ('1' = the largest, '2', ..., or 'all') as the page's picker says it."""
    text = str(face if face not in (None, "") else "1").strip()
    if text.lower() in ("all", "all faces"):
        return ALL_FACES
    number = text.split()[-1]  # '2' or 'Face 2'
    if not number.isdigit() or int(number) < 1:
        raise FaceAppError(f"face is a face's number (1 = the largest) or 'all', not {face!r}")
    return f"Face {int(number)}"


def _face_number(choice: str) -> str:
    """The page's picker value ('Face 2', 'All faces') as the endpoints' `face` ('2', 'all')."""
    choice = choice or "Face 1"
    return "all" if choice == ALL_FACES else choice.split()[-1]


def api_endpoints(h: Handlers, ui, heavy: dict) -> None:
    """The named endpoints scripts call with gradio_client: parameters named as on the page (photo, face, mode,
    paste, hold, one per slider: age, smile, ...; seed, truncation_psi, mix_seed, mix), plain values and file
    paths back. Events of their own on a hidden trigger, so the page's events keep their outputs (gr.update
    dicts, the before/after pair) and scripts get a stable API. Each call runs in the client's own session.
    `ui`: the page's `layout.Components` (the endpoints take the page's photo, options and generate controls).

    /load_photo(photo) -> (faces overlay, number of faces, status)
    /look_harder() -> (faces overlay, number of faces, status)
    /edit(face, mode, paste, hold, age, smile, ...) -> (result, status, latent code, reconstruction, faithfulness)
    /timeline(face, mode, paste, hold, age, smile, ...) -> (GIF, [GIF, MP4])
    /load_latent(latent) -> (face, mode, status, {direction: slider value})
    /generate(seed, truncation_psi, mix_seed, mix) -> (image, status)
    /edit_generated() -> (image, status): the generated face becomes the one /edit edits
    """
    with gr.Column(visible=False):  # never shown: the endpoints' own trigger, inputs and outputs
        trigger = gr.Button()  # never clicked: scripts call the endpoints by name
        face = gr.Textbox("1", label="face")
        faces_out, count_out = gr.File(label="faces"), gr.Number(label="faces found", precision=0)
        result_out, latent_out, recon_out = gr.File(label="result"), gr.File(label="latent"), gr.File(
            label="reconstruction")
        image_out, gif_out = gr.File(label="image"), gr.File(label="timeline GIF")
        files_out = gr.File(label="timeline files", file_count="multiple")
        status_out, faith_out = gr.Textbox(label="status"), gr.Textbox(label="faithfulness")
        face_out, mode_out, edits_out = gr.Textbox(label="face"), gr.Textbox(label="mode"), gr.JSON(label="edits")
    sliders = dict(zip(h.names, ui.sliders))

    def values(edits: dict) -> list:
        return [edits.get(n, 0.0) for n in h.names]

    def load_photo(photo, session, request: gr.Request):
        """Load a photo and find its faces."""
        view = h.load_photo(photo, session, request)
        return view.session, view.overlay, len(view.session.faces), gr.update() if view.unchanged else view.status

    def look_harder(session, request: gr.Request):
        """Search the loaded photo again for faces the first pass missed (slow)."""
        view = h.look_harder(session, request)
        return view.session, view.overlay, len(view.session.faces), view.status

    def edit(session, face, mode, paste, hold, progress=gr.Progress(), **edits):
        """Edit a face of the loaded photo (or the generated / loaded face): the result at the photo's size."""
        *_, view = h.edit(session, _face_choice(face), mode, paste, hold, *values(edits), progress=progress)
        return view.session, view.result, view.status, view.latent, view.recon, view.faithfulness  # not the preview

    def timeline(session, face, mode, paste, hold, progress=gr.Progress(), **edits):
        """An aging animation of a face, the other sliders' edits held."""
        files = h.timeline(session, _face_choice(face), mode, paste, hold, *values(edits), progress=progress)
        return files.gif, files.files

    def load_latent(latent, session, request: gr.Request):
        """A latent-code file saved by /edit: back onto its photo's face when that photo is loaded, else alone."""
        view = h.load_latent(latent, session, request)
        return view.session, _face_number(view.face), view.mode, view.status, dict(zip(h.names, view.sliders))

    def generate(session, seed, truncation_psi, mix_seed, mix, request: gr.Request):
        """A random face (mix: 'none', or 'coarse' / 'middle' / 'fine' layers from mix_seed)."""
        view = h.generate(session, seed, truncation_psi, mix_seed, mix, request)
        return view.session, view.image, view.status

    def edit_generated(session, request: gr.Request):
        """The last generated face becomes the face /edit edits (its exact latent code: no inversion)."""
        view = h.send_to_editor(session, request)
        return view.session, view.session.before, view.status

    session = ui.session
    edit_inputs = [session, face, ui.mode, ui.paste, ui.hold]
    for fn, inputs, outputs, kwargs in [
        (load_photo, [ui.photo, session], [session, faces_out, count_out, status_out], None),
        (look_harder, [session], [session, faces_out, count_out, status_out], None),
        (edit, edit_inputs, [session, result_out, status_out, latent_out, recon_out, faith_out], sliders),
        (timeline, edit_inputs, [gif_out, files_out], sliders),
        (load_latent, [ui.latent_in, session], [session, face_out, mode_out, status_out, edits_out], None),
        (generate, [session, ui.seed, ui.psi, ui.mix_seed, ui.mix], [session, image_out, status_out], None),
        (edit_generated, [session], [session, image_out, status_out], None),
    ]:
        trigger.click(user_errors(fn), inputs, outputs, inputs_kwargs=kwargs, api_name=fn.__name__,
                      show_progress="hidden", **heavy)
