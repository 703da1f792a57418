"""faceapp web app (Gradio): upload a photo, move the sliders, get the same face older, smiling, ...

    python app.py                       # the demo bundle in models/demo/ (or a labelled stand-in)
    python app.py --model PATH|USER/REPO
    FACEAPP_MODEL=PATH python app.py    # the same, for a Hugging Face Space variable

Every step runs through faceapp.pipeline.FaceEditor. What one visitor uploads and computes lives
in that visitor's session only (a gr.State holding a `Session`); nothing of it is logged, and it
is deleted from memory and from the server's disk when the tab closes (or, at the latest, when
the state expires or the cache sweep finds it).
"""


import argparse
import functools
import hashlib
import os
import shutil
import tempfile
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent
#: Where `python app.py` looks for the demo model bundle (bundle.json + files).
DEMO_BUNDLE = ROOT / "models" / "demo"
EXAMPLES = ROOT / "examples"
#: Photos larger than this are refused before decoding (a 24 MP phone photo passes).
MAX_PIXELS = int(os.environ.get("FACEAPP_MAX_PIXELS", 40_000_000))
#: How many heavy steps (detection, inversion, timelines) run at once; 1 suits a 2-core CPU Space.
HEAVY_CONCURRENCY = int(os.environ.get("FACEAPP_CONCURRENCY", 1))
#: Seconds a session's state lives after its last use (closed tabs are cleaned at once).
SESSION_TTL = int(os.environ.get("FACEAPP_SESSION_TTL", 3600))
#: Timeline frames are downscaled to at most this side.
TIMELINE_SIDE = 512
TIMELINE_FRAMES = 10

STANDIN_NOTICE = (
    "⚠️ **Untrained stand-in model.** No trained model bundle is installed in `models/demo/`, so this page runs "
    "a tiny generator with *random* weights: results are coloured blobs, not faces. It shows that every step "
    "works (detect, align, invert, edit, paste back). For real results, convert official FFHQ weights with "
    "`python -m faceapp convert ffhq.pkl ffhq.safetensors` and start `python app.py --model ffhq.safetensors` "
    "(or put a trained bundle in `models/demo/`, or pass a Hugging Face Hub repo id: "
    "`python app.py --model user/repo`)."
)


# ---------------------------------------------------------------------------------- model


def standin_bundle_path() -> Path:
    """Where the random stand-in bundle is made (once) when no demo bundle exists."""
    base = Path(os.environ.get("FACEAPP_CACHE", Path.home() / ".cache" / "faceapp"))
    return base / "standin-64"


def resolve_model(source: str | os.PathLike | None = None, device: str = "cpu"):
    """The ModelBundle to serve: `source` if given, else models/demo/, else a labelled random stand-in."""
    from faceapp.bundle import load_bundle, make_random_bundle

    if source:
        return load_bundle(source, device=device)
    if (DEMO_BUNDLE / "bundle.json").is_file():
        return load_bundle(DEMO_BUNDLE, device=device)
    path = standin_bundle_path()
    if not (path / "bundle.json").is_file():
        make_random_bundle(path, resolution=64, seed=0)
    return load_bundle(path, device=device)


def make_editor(bundle, device: str = "cpu"):
    """The app's FaceEditor: no shared inversion cache (each session keeps its own, see `Session`)."""
    from faceapp.inversion import InvertConfig
    from faceapp.pipeline import FaceEditor

    kwargs = {}
    if bundle.untrained:  # random weights: a few steps show the flow; more would not turn blobs into faces
        kwargs["config"] = InvertConfig(
            fast_steps_no_encoder=8, balanced_w_steps_no_encoder=16, balanced_wplus_steps_no_encoder=8, pti_steps=16
        )
    return FaceEditor(bundle, device=device, max_pixels=MAX_PIXELS, cache_size=0, invert_kwargs=kwargs)


def model_notice(bundle) -> str:
    """The line under the title: what model this is (and a warning for the stand-in)."""
    if bundle.untrained:
        return STANDIN_NOTICE
    res = bundle.resolution
    enc = "with an encoder" if bundle.encoder is not None else "no encoder (fast mode optimises briefly)"
    edits = ", ".join(bundle.direction_names) or "none"
    return f"Model: **{bundle.name}** ({res}x{res}, {enc}; edits: {edits})."


# ---------------------------------------------------------------------------------- sessions


@dataclass(eq=False)
class Session:
    """One visitor's photo, faces and inversions. Lives in a gr.State; never shared or logged."""

    workdir: Path
    photo: object = None  # PIL RGB
    faces: list = field(default_factory=list)  # faceapp.align.Face, largest first
    cache: object = None  # faceapp.pipeline.InversionCache, this session's only
    upload: str | None = None  # the uploaded file in Gradio's cache
    counter: int = 0
    key: str | None = None  # the Gradio session hash, for the registry below

    def next_path(self, stem: str, suffix: str) -> Path:
        self.counter += 1
        return self.workdir / f"{stem}-{self.counter:06d}{suffix}"  # zero-padded: names sort in order

    def close(self) -> None:
        """Forget the photo and results, and delete the session's files from disk."""
        self.photo, self.faces = None, []
        if self.cache is not None:
            self.cache.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.upload:
            release_upload(self.upload)
            self.upload = None


#: sha256 of the example photos: Gradio's cached copies of those serve every visitor, so they stay.
_keep_digests: set[str] = set()


def _digest(path: str | os.PathLike) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def remove_upload(path: str) -> None:
    """Delete an uploaded photo from Gradio's cache (unless it is one of the shared example photos)."""
    if _digest(path) in _keep_digests:
        return
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))  # Gradio keeps each upload in a folder of its own
    except OSError:
        pass


_sessions: dict[str, Session] = {}  # session hash -> Session, so closing the tab can clean at once
_sessions_lock = threading.Lock()


def release_upload(path: str) -> None:
    """Delete an upload no live session uses any more.

    Gradio stores identical uploads (same bytes and name) at one path, so two visitors can share a file; it is
    deleted only when the last session holding it lets go (Gradio's delete_cache sweeps whatever is left).
    """
    with _sessions_lock:
        in_use = any(s.upload == path for s in _sessions.values())
    if not in_use:
        remove_upload(path)


def _close_session(session: Session | None) -> None:
    """gr.State's delete_callback (the state expired): forget the session everywhere."""
    if isinstance(session, Session):
        with _sessions_lock:
            if session.key and _sessions.get(session.key) is session:
                del _sessions[session.key]
        session.close()


def _new_session(request) -> Session:
    from gradio.utils import get_upload_folder

    from faceapp.pipeline import InversionCache

    # Inside Gradio's cache folder, so results are served in place (not copied) and swept with it.
    root = Path(get_upload_folder())
    root.mkdir(parents=True, exist_ok=True)
    session = Session(workdir=Path(tempfile.mkdtemp(prefix="faceapp-", dir=root)), cache=InversionCache(8))
    key = getattr(request, "session_hash", None)
    session.key = key
    if key:
        with _sessions_lock:
            old = _sessions.pop(key, None)
            _sessions[key] = session
        if old is not None and old is not session:
            old.close()
    return session


def end_session(request=None) -> None:
    """Tab closed or reloaded: drop this visitor's photo, latents and files now."""
    key = getattr(request, "session_hash", None)
    with _sessions_lock:
        session = _sessions.pop(key, None) if key else None
    _close_session(session)


# ---------------------------------------------------------------------------------- handlers


def user_errors(fn):
    """Turn FaceAppError (bad photo, no face, ...) into a gr.Error the page shows; the server goes on."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import gradio as gr

        from faceapp.errors import FaceAppError

        try:
            return fn(*args, **kwargs)
        except FaceAppError as e:
            raise gr.Error(str(e), print_exception=False) from None

    return wrapper


def face_choices(n: int) -> list[str]:
    return [f"Face {i + 1}" for i in range(n)] + (["All faces"] if n > 1 else [])


def face_indices(which: str | None, n: int) -> list[int]:
    if not which or which == "All faces":
        return list(range(n)) if which == "All faces" else [0]
    try:
        i = int(str(which).split()[-1]) - 1
    except ValueError:
        i = 0
    return [min(max(i, 0), n - 1)]


def faces_overlay(photo, faces, side: int = 640):
    """A small copy of the photo with each detected face boxed and numbered (largest = 1)."""
    from PIL import ImageDraw, ImageFont

    k = min(1.0, side / max(photo.size))
    im = photo.resize((max(1, round(photo.width * k)), max(1, round(photo.height * k))))
    draw = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 200))
    font = ImageFont.load_default(size=max(14, round(max(im.size) / 22)))
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = (v * k for v in f.box)
        draw.rectangle((x0, y0, x1, y1), outline=(255, 196, 0), width=width)
        label = str(i + 1)
        tx, ty = x0 + width, max(0, y0 - font.size - 2 * width)
        box = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((box[0] - width, box[1] - width, box[2] + width, box[3] + width), fill=(255, 196, 0))
        draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    return im


def build_demo(editor, notice: str | None = None):
    """The Gradio Blocks page around `editor` (a FaceEditor)."""
    import gradio as gr

    from faceapp.pipeline import MODES, mp4_available, save_gif, save_mp4

    bundle = editor.bundle
    names = editor.direction_names
    notice = model_notice(bundle) if notice is None else notice

    def photo_path_only(component, payload):
        """The uploaded file's path, undecoded: faceapp's loader checks size and format first, so bombs,
        truncated files and non-images get clear errors (gr.Image would open them itself)."""
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return payload.path
        return gr.Image.preprocess(component, payload)

    def _session_for(session, request) -> Session:
        return session if isinstance(session, Session) else _new_session(request)

    @user_errors
    def load_photo(path, session, request: gr.Request):
        """A new photo: check it, find its faces. Returns (session, faces gallery, face picker, status)."""
        session = _session_for(session, request)
        previous, session.upload = session.upload, None
        if previous and previous != path:
            release_upload(previous)  # the previous photo's file
        session.photo, session.faces = None, []
        session.cache.clear()
        if not path:
            status = "Upload a photo (or pick an example) to start."
            return session, None, gr.update(choices=["Face 1"], value="Face 1"), status
        photo = editor.load(path, name=Path(path).name)
        faces = editor.detect(photo)
        # Recorded only once it loaded: a failed load must not make a later retry delete the file it reads.
        if Path(path).is_relative_to(Path(_upload_root())):
            session.upload = path
        session.photo, session.faces = photo, faces
        choices = face_choices(len(faces))
        status = f"{len(faces)} face{'s' if len(faces) > 1 else ''} found" + (
            "; pick one, or all of them." if len(faces) > 1 else "."
        )
        return session, faces_overlay(photo, faces), gr.update(choices=choices, value=choices[0]), status

    def _strengths(values) -> dict[str, float]:
        return {n: float(v or 0.0) for n, v in zip(names, values)}

    def _prepared(session: Session, which, mode, progress):
        if not isinstance(session, Session) or session.photo is None:
            raise gr.Error("Upload a photo first (or pick an example).", print_exception=False)
        if mode not in MODES:
            raise gr.Error(f"Inversion mode must be one of {', '.join(MODES)}.", print_exception=False)
        indices = face_indices(which, len(session.faces))

        def report(fraction, message=""):
            progress(fraction, desc=message or f"Inverting ({mode})")

        report(0.0, f"Inverting ({mode})")
        return editor.prepare(
            session.photo, faces=indices, mode=mode, progress=report, cache=session.cache, detected=session.faces
        )

    @user_errors
    def edit(session, which, mode, hold, *values, progress=gr.Progress()):
        """The edited photo for the sliders' values (inverting the chosen faces first if needed)."""
        prepared = _prepared(session, which, mode, progress)
        strengths = _strengths(values)
        hold_names = names if hold else ()
        result = editor.compose(session.photo, prepared, strengths, hold=hold_names)
        path = session.next_path("faceapp-edited", ".png")
        result.save(path, compress_level=1)  # 3x faster than the default level, ~10% larger
        for old in sorted(session.workdir.glob("faceapp-edited-*.png"))[:-4]:
            if old != path:  # keep the last few (the page may still be fetching one)
                old.unlink(missing_ok=True)
        shown = ", ".join(f"{n} {v:+g}" for n, v in strengths.items() if v) or "no edit"
        # the session goes back out too, so its time-to-live counts from the last edit, not the upload
        return session, str(path), gr.update(value=str(path), interactive=True), f"Done: {shown}."

    def edit_after_load(session, which, mode, hold, *values, progress=gr.Progress()):
        """The first result after a photo loads; clearing the photo clears the result instead of erroring."""
        if not isinstance(session, Session) or session.photo is None:
            return session, None, gr.update(value=None, interactive=False), "Upload a photo (or pick an example)."
        return edit(session, which, mode, hold, *values, progress=progress)

    @user_errors
    def make_timeline(session, which, mode, hold, *values, progress=gr.Progress()):
        """An aging animation (GIF, and MP4 when imageio-ffmpeg is installed) of the chosen faces."""
        if "age" not in names:
            raise gr.Error("This model has no age direction.", print_exception=False)
        prepared = _prepared(session, which, mode, progress)
        progress(0.9, desc="Rendering the timeline")
        frames = editor.timeline(
            session.photo, prepared, name="age", hold=names if hold else (), base=_strengths(values),
            strengths=_timeline_strengths(bundle),
        )
        frames = [_fit(f, TIMELINE_SIDE) for f in frames]
        gif = save_gif(frames, session.next_path("faceapp-aging", ".gif"), duration_ms=160)
        files = [str(gif)]
        if mp4_available():
            files.append(str(save_mp4(frames, session.next_path("faceapp-aging", ".mp4"), fps=6)))
        return str(gif), files

    examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg")) if EXAMPLES.is_dir() else []
    _keep_digests.update(d for d in map(_digest, examples) if d)
    heavy = dict(concurrency_limit=HEAVY_CONCURRENCY, concurrency_id="heavy")

    with gr.Blocks(title="faceapp", delete_cache=(300, 1800)) as demo:
        session = gr.State(None, time_to_live=SESSION_TTL, delete_callback=_close_session)
        gr.Markdown("# faceapp\nOlder, younger, smiling, with glasses: edit a face and get it back in your photo.")
        gr.Markdown(notice, elem_id="model-notice")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                photo = gr.Image(
                    label="Your photo (before)", type="filepath", sources=["upload", "webcam"],
                    elem_id="photo", height=420,
                )
                # per instance, not a subclass: Gradio writes a .pyi stub beside the module of any subclass
                photo.preprocess = types.MethodType(photo_path_only, photo)
                if examples:
                    gr.Examples([[p] for p in examples], inputs=[photo], label="Example photos (public domain)")
            with gr.Column(scale=1):
                result = gr.Image(label="Edited (after)", type="filepath", interactive=False, elem_id="result",
                                  height=420, format="png")
                download = gr.DownloadButton("Download result", interactive=False, elem_id="download")
        status = gr.Markdown("Upload a photo (or pick an example) to start.", elem_id="status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                faces_gallery = gr.Image(label="Faces found (numbered, largest first)", type="pil",
                                         interactive=False, height=260, elem_id="faces", format="jpeg")
                which = gr.Radio(["Face 1"], value="Face 1", label="Edit which face", elem_id="which")
                mode = gr.Radio(list(MODES), value="fast", label="Inversion", info=(
                    "fast: encoder; balanced: + refinement; best: + tuning (slow on CPU)" if bundle.encoder is not None
                    else "this model has no encoder: fast = a short optimisation, balanced = a longer one, "
                    "best = + tuning (slow on CPU)"))
            with gr.Column(scale=1):
                sliders = []
                for n in names:
                    d = bundle.directions[n]
                    lo, hi = d.strength_range
                    sliders.append(gr.Slider(lo, hi, value=0.0, step=0.25, label=n.capitalize(),
                                             info=d.description or None, elem_id=f"slider-{n}"))
                if not names:
                    gr.Markdown("This model has no edit directions; results re-render the inverted face.")
                hold = gr.Checkbox(False, label="Hold the other attributes fixed (conditional edits)")
        with gr.Accordion("Aging timeline", open=False):
            timeline_btn = gr.Button("Make aging timeline", variant="primary", interactive="age" in names)
            with gr.Row():
                timeline_img = gr.Image(label="Timeline", type="filepath", interactive=False, format="gif")
                timeline_files = gr.File(label="Download", file_count="multiple")
        with gr.Accordion("About the model", open=False):
            gr.Markdown(bundle.card or "(no model card)")

        edit_inputs = [session, which, mode, hold, *sliders]
        edit_outputs = [session, result, download, status]
        photo.change(
            load_photo, [photo, session], [session, faces_gallery, which, status], api_name="load_photo", **heavy
        ).success(edit_after_load, edit_inputs, edit_outputs, api_name=False, **heavy)
        edit_event = dict(fn=edit, inputs=edit_inputs, outputs=edit_outputs, trigger_mode="always_last", **heavy)
        for s in sliders:
            s.input(**edit_event, api_name=False)  # drags and typed values; always_last drops stale ones
        which.input(**edit_event, api_name=False)
        mode.input(**edit_event, api_name=False)
        hold.input(**edit_event, api_name=False)
        # One named endpoint for scripts: the sliders' values in, the edited photo out.
        gr.Button(visible=False).click(**edit_event, api_name="edit")
        timeline_btn.click(make_timeline, edit_inputs, [timeline_img, timeline_files], api_name="timeline",
                           **{**heavy, "trigger_mode": "once"})
        def on_unload(request: gr.Request):  # the annotation makes Gradio pass the closing tab's request
            end_session(request)

        demo.unload(on_unload)
    return demo


def _upload_root() -> str:
    from gradio.utils import get_upload_folder

    return str(get_upload_folder())


def _timeline_strengths(bundle):
    import numpy as np

    lo, hi = bundle.directions["age"].strength_range
    return np.linspace(lo, hi, TIMELINE_FRAMES)


def _fit(image, side: int):
    if max(image.size) <= side:
        return image
    k = side / max(image.size)
    from PIL import Image

    return image.resize((max(round(image.width * k), 1), max(round(image.height * k), 1)), Image.LANCZOS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("FACEAPP_MODEL"),
                        help="a model bundle folder, a generator checkpoint, or a Hugging Face Hub repo id "
                        "(default: models/demo/, else an untrained stand-in)")
    parser.add_argument("--device", default=os.environ.get("FACEAPP_DEVICE", "cpu"))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)

    import torch

    from faceapp.pipeline import default_threads

    bundle = resolve_model(args.model, device=args.device)
    torch.set_num_threads(default_threads(bundle.resolution))
    editor = make_editor(bundle, device=args.device)
    demo = build_demo(editor)
    demo.queue(max_size=32, default_concurrency_limit=HEAVY_CONCURRENCY).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(EXAMPLES)],
        max_file_size=os.environ.get("FACEAPP_MAX_UPLOAD", "30mb"),  # refused by Gradio before it is stored
    )


if __name__ == "__main__":
    main()
