"""The page: a header, one function per tab (`edit_tab`, `generate_tab`) that lays it out and wires its events,
the model card, the named endpoints (api.py), and `build_demo` around them.

The page's own events are UI-only (`api_name=False`); scripts have named endpoints of their own (api.py).
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field

import gradio as gr

from faceapp.pipeline import MODES, PASTE_METHODS, FaceEditor, default_mode
from faceapp.web.api import api_endpoints
from faceapp.web.handlers import (
    EditView,
    GenerateView,
    Handlers,
    LatentView,
    PhotoView,
    SentView,
    TimelineFiles,
    user_errors,
)
from faceapp.web.session import close_session, end_session, file_digest, keep_digests
from faceapp.web.settings import EXAMPLES, HEAVY_CONCURRENCY, SESSION_TTL
from faceapp.web.views import model_notice, slider_spec


@dataclass
class Components:
    """The page's components that events read or update, by the names handlers' results use (`PAGE`)."""

    session: gr.State
    tabs: gr.Tabs | None = None
    # the 'Edit a photo' tab
    photo: gr.Image | None = None
    compare: gr.ImageSlider | None = None
    download: gr.DownloadButton | None = None
    latent_out: gr.DownloadButton | None = None
    latent_in: gr.UploadButton | None = None
    status: gr.Markdown | None = None
    faces_img: gr.Image | None = None
    which: gr.Radio | None = None
    sliders: list[gr.Slider] = field(default_factory=list)
    recon: gr.Image | None = None
    faith: gr.Markdown | None = None
    mode: gr.Radio | None = None
    paste: gr.Radio | None = None
    hold: gr.Checkbox | None = None
    timeline_img: gr.Image | None = None
    timeline_files: gr.File | None = None
    # the 'Generate' tab
    seed: gr.Number | None = None
    psi: gr.Slider | None = None
    mix: gr.Radio | None = None
    mix_seed: gr.Number | None = None
    image: gr.Image | None = None
    gen_status: gr.Markdown | None = None

    def outputs(self, view) -> list:
        """The components a handler's result type updates, in the order of its `page()` values."""
        out = []
        for name in view.PAGE:
            value = getattr(self, name)
            out.extend(value if isinstance(value, list) else [value])
        return out


def photo_path_only(component, payload):
    """gr.Image's preprocess, replaced: the uploaded file's path, undecoded. faceapp's loader checks size and
    format first, so bombs, truncated files and non-images get clear errors (gr.Image would open them itself)."""
    if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
        return payload.path
    return gr.Image.preprocess(component, payload)


def _header(notice: str) -> None:
    gr.Markdown("# faceapp\nOlder, younger, smiling, with glasses: edit a face and get it back in your photo, "
                "at your photo's own resolution.")
    gr.Markdown(notice, elem_id="model-notice")


def _edit_layout(h: Handlers, ui: Components) -> tuple[list[gr.Button], gr.Button, gr.Button, gr.Button]:
    """The 'Edit a photo' tab's components (into `ui`); returns the buttons (presets, reset, look harder,
    timeline)."""
    bundle = h.bundle
    examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg")) if EXAMPLES.is_dir() else []
    keep_digests.update(d for d in map(file_digest, examples) if d)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            ui.photo = gr.Image(label="Your photo", type="filepath", sources=["upload", "webcam"],
                                elem_id="photo", height=420)
            # per instance, not a subclass: Gradio writes a .pyi stub beside the module of any subclass
            ui.photo.preprocess = types.MethodType(photo_path_only, ui.photo)
            if examples:
                gr.Examples([[p] for p in examples], inputs=[ui.photo], label="Example photos (public domain)")
        with gr.Column(scale=1):
            ui.compare = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath", interactive=False,
                                        elem_id="result", height=420, max_height=420, format="png")
            with gr.Row():
                ui.download = gr.DownloadButton("Download result", interactive=False, elem_id="download", size="md")
                ui.latent_out = gr.DownloadButton("Download latent code (.npz)", interactive=False, size="sm",
                                                  elem_id="latent-download")
                ui.latent_in = gr.UploadButton("Load latent code", file_types=[".npz"], elem_id="latent-upload",
                                               size="sm")
    ui.status = gr.Markdown("Upload a photo (or pick an example, or generate a face) to start.", elem_id="status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            ui.faces_img = gr.Image(label="Faces found (numbered, largest first)", type="filepath",
                                    interactive=False, height=240, elem_id="faces")
            with gr.Row():
                ui.which = gr.Radio(["Face 1"], value="Face 1", label="Edit which face (each keeps its own edit)",
                                    elem_id="which", scale=3)
                harder = gr.Button("Look harder for faces", elem_id="look-harder", scale=1, size="sm")
        with gr.Column(scale=1):
            with gr.Row():
                preset_buttons = [gr.Button(label, size="sm", elem_id=f"preset-{i}")
                                  for i, label in enumerate(h.presets)]
                reset = gr.Button("Reset", size="sm", variant="secondary", elem_id="reset")
            for n in h.names:
                spec = slider_spec(bundle, n)
                ui.sliders.append(gr.Slider(spec["minimum"], spec["maximum"], value=0.0, step=spec["step"],
                                            label=spec["label"], info=spec["info"], elem_id=f"slider-{n}"))
            if not h.names:
                gr.Markdown("This model has no edit directions; results re-render the inverted face.")
    with gr.Accordion("How faithful is the inversion?", open=False):
        ui.recon = gr.Image(label="Model's view / reconstruction", type="filepath", interactive=False, height=200,
                            elem_id="reconstruction")
        ui.faith = gr.Markdown("", elem_id="faithfulness")
    with gr.Accordion("Options", open=False):
        ui.mode = gr.Radio(list(MODES), value=default_mode(bundle), label="Inversion", elem_id="mode", info=(
            "fast: encoder; balanced: + refinement; best: + tuning (slow on CPU)" if bundle.encoder is not None
            else "this model has no encoder: fast = a short optimisation, balanced = a longer one, "
            "best = + tuning (slow on CPU)"))
        ui.paste = gr.Radio(list(PASTE_METHODS), value=h.editor.paste, label="Put the edit back as",
                            elem_id="paste", info="difference: the edit's change added to your photo at its "
                            "resolution (sharp); render: the model's rendering pasted over the face")
        ui.hold = gr.Checkbox(False, label="Hold the other attributes fixed (conditional edits)")
    with gr.Accordion("Aging timeline", open=False):
        timeline_btn = gr.Button("Make aging timeline", variant="primary", interactive="age" in h.names)
        with gr.Row():
            ui.timeline_img = gr.Image(label="Timeline", type="filepath", interactive=False, format="gif")
            ui.timeline_files = gr.File(label="Download", file_count="multiple")
    return preset_buttons, reset, harder, timeline_btn


def edit_tab(h: Handlers, ui: Components, heavy: dict) -> dict:
    """The 'Edit a photo' tab: its layout and its events. Returns how to run an edit (other tabs chain it)."""
    preset_buttons, reset, harder, timeline_btn = _edit_layout(h, ui)
    edit_inputs = [ui.session, ui.which, ui.mode, ui.paste, ui.hold, *ui.sliders]
    edit_outputs, picker_outputs = ui.outputs(EditView), ui.outputs(PhotoView)

    def edit(session, which, mode, paste, hold, *values, progress=gr.Progress()):
        for view in h.edit(session, which, mode, paste, hold, *values, progress=progress):
            yield view.page()

    def edit_after_load(session, which, mode, paste, hold, *values, progress=gr.Progress()):
        for view in h.edit_after_load(session, which, mode, paste, hold, *values, progress=progress):
            yield view.page()

    def timeline(session, which, mode, paste, hold, *values, progress=gr.Progress()):
        return h.timeline(session, which, mode, paste, hold, *values, progress=progress).page()

    def load_photo(path, session, request: gr.Request):
        return h.load_photo(path, session, request).page()

    def look_harder(session, request: gr.Request):
        return h.look_harder(session, request).page()

    def load_latent(file, session, request: gr.Request):
        return h.load_latent(file, session, request).page()

    edit, edit_after_load, timeline = user_errors(edit), user_errors(edit_after_load), user_errors(timeline)
    load_photo, look_harder, load_latent = user_errors(load_photo), user_errors(look_harder), user_errors(load_latent)
    run_edit = dict(fn=edit, inputs=edit_inputs, outputs=edit_outputs, trigger_mode="always_last", **heavy)

    # The page's own events: none is a named endpoint (scripts have theirs, `api_endpoints`).
    ui.photo.change(load_photo, [ui.photo, ui.session], picker_outputs, api_name=False, **heavy).success(
        edit_after_load, edit_inputs, edit_outputs, api_name=False, **heavy)
    gr.on([s.input for s in ui.sliders] + [ui.mode.input, ui.paste.input, ui.hold.input], **run_edit,
          api_name=False)
    ui.which.input(h.select_face, [ui.session, ui.which], ui.sliders, api_name=False, queue=False)
    harder.click(look_harder, [ui.session], picker_outputs, api_name=False, **heavy).success(
        **run_edit, api_name=False)
    for label, button in zip(h.presets, preset_buttons):
        button.click(functools.partial(h.preset, label), [ui.session, ui.which], ui.sliders, api_name=False,
                     queue=False).then(**run_edit, api_name=False)
    reset.click(h.reset, [ui.session, ui.which], ui.sliders, api_name=False, queue=False).then(
        **run_edit, api_name=False)
    timeline_btn.click(timeline, edit_inputs, ui.outputs(TimelineFiles), api_name=False,
                       **{**heavy, "trigger_mode": "once"})
    ui.latent_in.upload(load_latent, [ui.latent_in, ui.session], ui.outputs(LatentView),
                        api_name=False, **heavy).success(**run_edit, api_name=False)
    return run_edit


def generate_tab(h: Handlers, ui: Components, run_edit: dict, heavy: dict) -> None:
    """The 'Generate' tab (This Person Does Not Exist, with StyleGAN's controls): layout and events; 'Edit this
    face' sends the face to the editor and runs `run_edit`."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Row():
                ui.seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**32 - 1, label="Seed", elem_id="seed")
                dice = gr.Button("Random seed", size="sm", elem_id="random-seed")
            ui.psi = gr.Slider(0.0, 1.2, value=0.7, step=0.05, label="Truncation ψ", elem_id="psi",
                               info="lower: closer to the average face (safer); 1: the full variety")
            with gr.Row():
                ui.mix = gr.Radio(["none", "coarse", "middle", "fine"], value="none", label="Style mixing",
                                  elem_id="mix",
                                  info="coarse: pose, face shape; middle: features, hair; fine: colours")
                ui.mix_seed = gr.Number(value=1, precision=0, minimum=0, maximum=2**32 - 1, label="from seed",
                                        elem_id="mix-seed")
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column(scale=1):
            ui.image = gr.Image(label="A face that does not exist", type="filepath", interactive=False, height=420,
                                elem_id="generated", format="png")
            send = gr.Button("Edit this face →", variant="primary", elem_id="edit-generated")
            ui.gen_status = gr.Markdown("", elem_id="generate-status")

    def generate(session, seed, psi, mix_seed, mix, request: gr.Request):
        return h.generate(session, seed, psi, mix_seed, mix, request).page()

    def send_to_editor(session, request: gr.Request):
        return h.send_to_editor(session, request).page()

    generate, send_to_editor = user_errors(generate), user_errors(send_to_editor)
    gen_inputs, gen_outputs = [ui.session, ui.seed, ui.psi, ui.mix_seed, ui.mix], ui.outputs(GenerateView)
    generate_btn.click(generate, gen_inputs, gen_outputs, api_name=False, **heavy)
    gr.on([ui.psi.release, ui.mix.input, ui.seed.submit, ui.mix_seed.submit], generate, gen_inputs, gen_outputs,
          api_name=False, trigger_mode="always_last", **heavy)
    dice.click(h.random_seed, None, ui.seed, api_name=False, queue=False).then(
        generate, gen_inputs, gen_outputs, api_name=False, **heavy)
    send.click(send_to_editor, [ui.session], ui.outputs(SentView), api_name=False, **heavy).success(
        **run_edit, api_name=False)


def build_demo(editor: FaceEditor, notice: str | None = None) -> gr.Blocks:
    """The Gradio Blocks page around `editor` (a FaceEditor): a header, the two tabs, the model card."""
    h = Handlers(editor)
    notice = model_notice(editor.bundle) if notice is None else notice
    heavy = dict(concurrency_limit=HEAVY_CONCURRENCY, concurrency_id="heavy")
    with gr.Blocks(title="faceapp", delete_cache=(300, 1800)) as demo:
        ui = Components(session=gr.State(None, time_to_live=SESSION_TTL, delete_callback=close_session))
        _header(notice)
        with gr.Tabs() as ui.tabs:
            with gr.Tab("Edit a photo", id="edit", elem_id="tab-edit"):
                run_edit = edit_tab(h, ui, heavy)
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                generate_tab(h, ui, run_edit, heavy)
        with gr.Accordion("About the model", open=False):
            gr.Markdown(editor.bundle.card or "(no model card)")
        api_endpoints(h, ui, heavy)

        def on_unload(request: gr.Request):  # the annotation makes Gradio pass the closing tab's request
            end_session(request)

        demo.unload(on_unload)
    return demo
