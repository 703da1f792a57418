"""faceapp web app (Gradio): upload a photo, move the sliders, get the same face older, smiling, ...

    python app.py                       # the demo bundle in models/demo/ (or a labelled stand-in)
    python app.py --model PATH|USER/REPO
    FACEAPP_MODEL=PATH python app.py    # the same, for a Hugging Face Space variable

Two tabs: "Edit a photo" (upload, faces found, per-face sliders and presets, a before/after slider
on the full-resolution result, how faithful the inversion is, the latent code to download and load
again) and "Generate" (a random face from a seed, truncation, style mixing; "edit this face" sends its
exact latent to the editor). Every step runs through faceapp.pipeline.FaceEditor.

What one visitor uploads and computes lives in that visitor's session only (a gr.State holding a
`Session`); nothing of it is logged, and it is deleted from memory and from the server's disk when
the tab closes (or, at the latest, when the state expires or the cache sweep finds it).

Reading order: model and start-up, sessions, `Handlers` (what each event does), then one layout
function per tab (`edit_tab`, `generate_tab`) that also wires its events, the named endpoints scripts call
with gradio_client (`api_endpoints`: parameters named as on the page, plain values back), and `build_demo`.
"""


import argparse
import functools
import hashlib
import math
import os
import random
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
#: Bytes of inversions one session may keep (a 'best' inversion holds a tuned copy of G).
SESSION_CACHE_BYTES = int(float(os.environ.get("FACEAPP_SESSION_CACHE_MB", 256)) * 2**20)
#: Timeline frames are downscaled to at most this side.
TIMELINE_SIDE = 512
TIMELINE_FRAMES = 10
#: Generated faces are shown (and edited) at least this large.
GENERATED_SIDE = 512

STANDIN_NOTICE = (
    "⚠️ **Untrained stand-in model.** No trained model bundle is installed in `models/demo/`, so this page runs "
    "a tiny generator with *random* weights: results are coloured blobs, not faces. It shows that every step "
    "works (detect, align, invert, edit, paste back). For real results, fetch the official FFHQ model "
    "(`python -m faceapp fetch ffhq`, then `python app.py --model ffhq`), build a bundle from files you have "
    "(`python -m faceapp bundle --generator ffhq.pkl --out my-model`), put a trained bundle in `models/demo/`, "
    "or pass a Hugging Face Hub repo id: `python app.py --model user/repo`."
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


def prepare_perceptual(*, online: bool | None = None, download=None, say=print) -> str:
    """At start-up: make sure inversions have the best perceptual loss there is; returns what they will use.

    LPIPS's VGG16 backbone is fetched into the torch cache when it is missing and the app may go online (not
    when HF_HUB_OFFLINE or FACEAPP_OFFLINE is set); else the offline MobileNetV2 fallback is used when its
    package is installed; else inversions run without the perceptual term (pixel + identity losses). Each
    case is said in the log; none is an error. `download` (tests) replaces the fetch.
    """
    from faceapp.inversion import losses

    if online is None:
        online = not any(os.environ.get(k, "").strip() not in ("", "0") for k in ("HF_HUB_OFFLINE", "FACEAPP_OFFLINE"))
    if not losses.lpips_weights_cached("vgg") and online:
        import time

        target = losses.torch_cache_file("vgg16-397923af.pth")
        say(f"faceapp: fetching LPIPS's VGG16 backbone into {target} (once; set FACEAPP_OFFLINE=1 to skip) ...")
        t0 = time.perf_counter()
        try:
            (download or _download_lpips_vgg)()
            say(f"faceapp: LPIPS backbone fetched and checked in {time.perf_counter() - t0:.0f} s")
        except Exception as e:  # offline, blocked, disk full: the fallbacks below still work
            say(f"faceapp: could not fetch the LPIPS backbone ({type(e).__name__}: {e})")
    if losses.lpips_weights_cached("vgg"):
        what = "lpips-vgg"
    else:
        from faceapp.errors import ModelUnavailableError

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


def _download_lpips_vgg() -> None:
    """torchvision's ImageNet VGG16 weights into the torch cache, checked by their SHA-256 prefix."""
    import socket

    import torchvision

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a Space without internet must not hang its start-up
    try:
        torchvision.models.VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    finally:
        socket.setdefaulttimeout(old)


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
    if bundle.detail is not None:
        out = int(bundle.detail.img_resolution)
        enc += f", a detail stage to {out}x{out}"
    edits = ", ".join(bundle.direction_names) or "none"
    return f"Model: **{bundle.name}** ({res}x{res}, {enc}; edits: {edits})."


# ---------------------------------------------------------------------------------- sessions


@dataclass(eq=False)
class Session:
    """One visitor's photo, faces and inversions. Lives in a gr.State; never shared or logged."""

    workdir: Path
    photo: object = None  # PIL RGB: the uploaded photo, or a generated / loaded face's render
    faces: list = field(default_factory=list)  # faceapp.align.Face, largest first
    cache: object = None  # faceapp.pipeline.InversionCache, this session's only
    upload: str | None = None  # the uploaded file in Gradio's cache
    counter: int = 0
    key: str | None = None  # the Gradio session hash, for the registry below
    source: str = "photo"  # 'photo' (faces found and inverted) | 'latent' (a generated or loaded code, no photo)
    edits: dict = field(default_factory=dict)  # face index -> {direction: strength}: each face its own edit
    latent: object = None  # ws [1, num_ws, w_dim] when source == 'latent'
    latent_info: dict = field(default_factory=dict)  # where that code came from (seed, psi, file)
    generated: object = None  # the Generate tab's last face: (ws, info)
    before: str | None = None  # the "before" image file the comparison slider shows
    kept: bool = False  # the photo box was emptied for a generated / loaded face: its events change nothing
    photo_digest: str | None = None  # sha256 of the photo's pixels (ties a latent file to its photo)

    def next_path(self, stem: str, suffix: str) -> Path:
        self.counter += 1
        return self.workdir / f"{stem}-{self.counter:06d}{suffix}"  # zero-padded: names sort in order

    def reset(self) -> None:
        """Forget the photo or face being edited (not the Generate tab's face, nor the files)."""
        self.photo, self.faces, self.source, self.latent = None, [], "photo", None
        self.before = self.photo_digest = None
        self.edits, self.latent_info, self.kept = {}, {}, False
        if self.cache is not None:
            self.cache.clear()

    def close(self) -> None:
        """Forget the photo and results, and delete the session's files from disk."""
        self.reset()
        self.generated = None
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
    session = Session(workdir=Path(tempfile.mkdtemp(prefix="faceapp-", dir=root)),
                      cache=InversionCache(8, max_bytes=SESSION_CACHE_BYTES))
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


# ---------------------------------------------------------------------------------- small helpers


def user_errors(fn):
    """Turn FaceAppError (bad photo, no face, ...) into a gr.Error the page shows; the server goes on.

    Works for plain handlers and for generator handlers (those that stream a preview, then the result).
    """
    import inspect

    def shown(e):
        import gradio as gr

        return gr.Error(str(e), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            from faceapp.errors import FaceAppError

            try:
                yield from fn(*args, **kwargs)
            except FaceAppError as e:
                raise shown(e) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from faceapp.errors import FaceAppError

        try:
            return fn(*args, **kwargs)
        except FaceAppError as e:
            raise shown(e) from None

    return wrapper


def face_choices(n: int) -> list[str]:
    """The face picker's choices for `n` faces."""
    return [f"Face {i + 1}" for i in range(n)] + (["All faces"] if n > 1 else [])


def face_indices(which: str | None, n: int) -> list[int]:
    """The face indices the picker's value stands for (clamped to the faces there are)."""
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


def presets(bundle) -> dict[str, dict[str, float]]:
    """One-click edits for `bundle`'s directions (faceapp.edits.presets)."""
    from faceapp.edits.presets import presets as direction_presets

    return direction_presets(bundle.directions)


def slider_spec(bundle, name: str) -> dict:
    """The slider of direction `name`: {minimum, maximum, step, label, info, years}.

    The age slider is in years when the age direction has a years calibration (its strength range
    converted, widened to hold the year presets, whole years); every other slider is in strength units.
    """
    from faceapp.edits import has_years, strength_to_years
    from faceapp.edits.presets import preset_years

    d = bundle.directions[name]
    lo, hi = d.strength_range
    if name == "age" and has_years(bundle.directions, "age"):
        ends = sorted(strength_to_years(bundle.directions, "age", s) for s in (lo, hi))
        lo_y = math.floor(min(ends[0], *preset_years(bundle.directions)))
        hi_y = math.ceil(max(ends[1], *preset_years(bundle.directions)))
        return dict(minimum=lo_y, maximum=hi_y, step=1, label="Age (years)", years=True,
                    info="years older (+) / younger (-), as an age estimator reads held-out faces")
    return dict(minimum=lo, maximum=hi, step=0.25, label=name.capitalize(), info=d.description or None, years=False)


def _pixels_digest(photo) -> str:
    return hashlib.sha256(f"{photo.size}".encode() + photo.tobytes()).hexdigest()


def _fit(image, side: int):
    if max(image.size) <= side:
        return image
    k = side / max(image.size)
    from PIL import Image

    return image.resize((max(round(image.width * k), 1), max(round(image.height * k), 1)), Image.LANCZOS)


def _enlarged(image, side: int):
    """A render shown at least `side` px (a 64 px face is unreadable at its own size)."""
    from PIL import Image

    if max(image.size) >= side:
        return image
    k = side / max(image.size)
    return image.resize((round(image.width * k), round(image.height * k)), Image.LANCZOS)


def _upload_root() -> str:
    from gradio.utils import get_upload_folder

    return str(get_upload_folder())


def _timeline_strengths(bundle):
    import numpy as np

    lo, hi = bundle.directions["age"].strength_range
    return np.linspace(lo, hi, TIMELINE_FRAMES)


def photo_path_only(component, payload):
    """gr.Image's preprocess, replaced: the uploaded file's path, undecoded. faceapp's loader checks size and
    format first, so bombs, truncated files and non-images get clear errors (gr.Image would open them itself)."""
    import gradio as gr

    if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
        return payload.path
    return gr.Image.preprocess(component, payload)


# ---------------------------------------------------------------------------------- handlers


class Handlers:
    """What each event of the page does, around one FaceEditor. Every method takes the visitor's Session (or
    None before the first event) and returns it with the outputs, so its time-to-live counts from the last use.

    Outputs of an edit (`EDIT_OUTPUTS` order): session, (before, after) for the comparison slider, the result
    file to download, status text, the reconstruction image, its faithfulness text, the latent-code file.
    """

    def __init__(self, editor):
        self.editor = editor
        self.bundle = editor.bundle
        self.names = editor.direction_names
        self.presets = presets(self.bundle)
        # sliders whose value is in years (the calibrated age slider): converted to strengths and back here
        self.in_years = {n for n in self.names if slider_spec(self.bundle, n)["years"]}

    # ---- sessions

    @staticmethod
    def session_for(session, request) -> Session:
        return session if isinstance(session, Session) else _new_session(request)

    def strengths(self, values) -> dict[str, float]:
        """The sliders' values as direction strengths (a years slider converted with its calibration)."""
        from faceapp.edits import years_to_strength

        out = {n: float(v or 0.0) for n, v in zip(self.names, values)}
        for n in self.in_years & set(out):
            out[n] = years_to_strength(self.bundle.directions, n, out[n])
        return out

    def _slider_values(self, strengths: dict) -> list:
        """Direction strengths as the sliders show them (years for a calibrated age slider)."""
        from faceapp.edits import strength_to_years

        return [round(strength_to_years(self.bundle.directions, n, float(strengths.get(n, 0.0))), 1)
                if n in self.in_years else float(strengths.get(n, 0.0)) for n in self.names]

    def shown(self, strengths: dict) -> str:
        """'age +30 years, smile +1' for the status line."""
        values = dict(zip(self.names, self._slider_values(strengths)))
        parts = [f"{n} {values[n]:+g} years" if n in self.in_years else f"{n} {v:+g}"
                 for n, v in strengths.items() if v and n in values]
        return ", ".join(parts) or "no edit"

    # ---- photo tab

    def load_photo(self, path, session, request):
        """A new photo: check it, find its faces. Returns (session, faces overlay, face picker, status)."""
        import gradio as gr

        session = self.session_for(session, request)
        if not path and session.source == "latent" and session.latent is not None:
            # the photo box was emptied because a generated / loaded face took its place: keep that face
            session.kept = True
            return session, gr.update(), gr.update(), gr.update()
        previous, session.upload = session.upload, None
        if previous and previous != path:
            release_upload(previous)  # the previous photo's file
        session.reset()
        if not path:
            status = "Upload a photo (or pick an example) to start."
            return session, None, gr.update(choices=["Face 1"], value="Face 1"), status
        photo = self.editor.load(path, name=Path(path).name)
        faces = self.editor.detect(photo)
        # Recorded only once it loaded: a failed load must not make a later retry delete the file it reads.
        if Path(path).is_relative_to(Path(_upload_root())):
            session.upload = path
        self._set_photo(session, photo, faces)
        return session, self._overlay_file(session), *self._face_picker(faces)

    @staticmethod
    def _session_file(session: Session, stem: str, suffix: str, image, keep: int = 3, **save) -> str:
        """`image` saved as a file of this session's own (not handed to Gradio as a picture: Gradio caches
        pictures by content, and two visitors with identical pictures would share one file being written)."""
        path = session.next_path(stem, suffix)
        image.save(path, **save)
        for old in sorted(session.workdir.glob(f"{stem}-*{suffix}"))[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
        return str(path)

    def _overlay_file(self, session: Session) -> str:
        return self._session_file(session, "faceapp-faces", ".jpg", faces_overlay(session.photo, session.faces),
                                  quality=90)

    def _set_photo(self, session: Session, photo, faces) -> None:
        session.photo, session.faces, session.source = photo, faces, "photo"
        session.photo_digest = _pixels_digest(photo)
        before = session.next_path("faceapp-before", ".jpg")
        _fit(photo, 4096).save(before, quality=92)
        session.before = str(before)

    def _face_picker(self, faces):
        import gradio as gr

        choices = face_choices(len(faces))
        status = f"{len(faces)} face{'s' if len(faces) > 1 else ''} found" + (
            "; pick one to edit it on its own, or all of them." if len(faces) > 1 else "."
        )
        return gr.update(choices=choices, value=choices[0]), status

    def look_harder(self, session, request):
        """Search the photo again with every detector pass (slow); adds the faces the first pass missed."""
        import gradio as gr

        session = self.session_for(session, request)
        if session.photo is None or session.source != "photo":
            raise gr.Error("Upload a photo first.", print_exception=False)
        before = len(session.faces)
        faces = self.editor.detect(session.photo, look_harder=True)
        session.faces, session.edits = faces, {}  # numbers can change: the edits start again
        session.cache.clear()
        picker, status = self._face_picker(faces)
        more = len(faces) - before
        status += f" (looked harder: {more} more)" if more > 0 else " (looked harder: no more faces)"
        return session, self._overlay_file(session), picker, status

    def select_face(self, session, which):
        """The picker moved: the sliders show that face's own edit."""
        n = len(session.faces) if isinstance(session, Session) else 0
        strengths = session.edits.get(face_indices(which, n)[0], {}) if n else {}
        return self._slider_values(strengths)

    def _prepared(self, session: Session, indices, mode, progress):
        from faceapp.pipeline import MODES

        if mode not in MODES:
            raise self._error(f"Inversion mode must be one of {', '.join(MODES)}.")

        def report(fraction, message=""):
            progress(fraction, desc=message or f"Inverting ({mode})")

        report(0.0, f"Inverting ({mode})")
        return self.editor.prepare(
            session.photo, faces=indices, mode=mode, progress=report, cache=session.cache, detected=session.faces
        )

    @staticmethod
    def _error(message):
        import gradio as gr

        return gr.Error(message, print_exception=False)

    def edit(self, session, which, mode, paste, hold, *values, progress=None):
        """The edited photo for the sliders' values: a generator that yields a quick preview first when the
        model is large (> 256 px), then the full-resolution result."""
        from faceapp.pipeline import PASTE_METHODS

        if not isinstance(session, Session) or session.photo is None:
            raise self._error("Upload a photo first (or pick an example, or generate a face).")
        if paste not in PASTE_METHODS:
            raise self._error(f"Paste-back must be one of {', '.join(PASTE_METHODS)}.")
        progress = progress or (lambda *a, **k: None)
        strengths = self.strengths(values)
        hold_names = self.names if hold else ()
        if session.source == "latent":
            yield self._edit_latent(session, strengths, hold_names)
            return
        n = len(session.faces)
        chosen = face_indices(which, n)
        for i in chosen:
            session.edits[i] = dict(strengths)
        indices = sorted(set(chosen) | {i for i, st in session.edits.items() if any(st.values())})
        prepared = self._prepared(session, indices, mode, progress)
        per_face = [session.edits.get(f.index, {}) for f in prepared]
        if self.editor.preview_resolution:
            preview = self.editor.compose(session.photo, prepared, per_face, hold=hold_names, paste=paste,
                                          preview=True)
            yield self._outputs(session, preview, prepared, chosen, strengths, mode, note=" (preview)")
        result = self.editor.compose(session.photo, prepared, per_face, hold=hold_names, paste=paste)
        yield self._outputs(session, result, prepared, chosen, strengths, mode)

    def _outputs(self, session, result, prepared, chosen, strengths, mode, note=""):
        import gradio as gr

        path = self._save_result(session, result)
        faces = [f for f in prepared if f.index in chosen] or prepared[:1]
        pair, faith = self._faithfulness(session, faces, mode)
        recon = self._session_file(session, "faceapp-recon", ".png", pair, compress_level=1)
        latent = self._latent_file(session, faces[0].ws, face=faces[0].index, mode=mode)
        shown = self.shown(strengths)
        who = "all faces" if len(chosen) > 1 else (f"face {chosen[0] + 1}" if len(session.faces) > 1 else "")
        status = f"Done: {shown}" + (f" ({who})" if who else "") + f".{note}"
        return (session, (session.before, str(path)), gr.update(value=str(path), interactive=True), status,
                recon, faith, gr.update(value=str(latent), interactive=True))

    def _save_result(self, session, result):
        path = session.next_path("faceapp-edited", ".png")
        result.save(path, compress_level=1)  # 3x faster than the default level, ~10% larger
        for old in sorted(session.workdir.glob("faceapp-edited-*.png"))[:-4]:
            if old != path:  # keep the last few (the page may still be fetching one)
                old.unlink(missing_ok=True)
        return path

    def _faithfulness(self, session, faces, mode):
        """(image: the aligned crop beside its reconstruction, text: identity distance and PSNR) of `faces`."""
        from PIL import Image

        f = faces[0]
        crop, recon = f.aligned.image, self.editor.reconstruction(f)
        side = 192
        pair = Image.new("RGB", (2 * side, side))
        pair.paste(_enlarged(crop, side).resize((side, side)), (0, 0))
        pair.paste(_enlarged(recon, side).resize((side, side)), (side, 0))
        lines = []
        for g in faces:
            from faceapp.pipeline import _renders_of

            renders = _renders_of(g.inversion)
            if "faithfulness" not in renders:
                renders["faithfulness"] = self.editor.faithfulness(g)
            m = renders["faithfulness"]
            dist = m.get("identity_distance")
            verdict = "" if dist is None else (" — the same person to dlib's face recogniser" if dist < 0.6
                                               else " — dlib's face recogniser would call this another person")
            ident = f"identity distance **{dist:.2f}**{verdict}; " if dist is not None else ""
            lines.append(f"Face {g.index + 1} ({mode}): {ident}PSNR {m['psnr']:.1f} dB")
        text = ("Your face as the model saw it (left) and its reconstruction (right). " + " · ".join(lines)
                + ". Identity distance: dlib descriptors, under 0.6 is usually the same person.")
        return pair, text

    def _latent_file(self, session, ws, **meta):
        path = session.workdir / "faceapp-latent.npz"
        info = dict(meta)
        if session.source == "photo":
            info.update(photo_sha256=session.photo_digest, strengths=session.edits.get(meta.get("face"), {}))
        else:
            info.update(session.latent_info)
        return self.editor.save_latent(path, ws, **info)

    def _edit_latent(self, session, strengths, hold):
        """A generated or loaded face: its exact code edited and rendered (no photo, no inversion)."""
        import gradio as gr

        ws = self.editor.edit(session.latent, strengths, hold)
        result = _enlarged(self.editor.render(ws), GENERATED_SIDE)
        path = self._save_result(session, result)
        latent = self._latent_file(session, session.latent)
        shown = self.shown(strengths)
        what = session.latent_info.get("what", "this face")
        return (session, (session.before, str(path)), gr.update(value=str(path), interactive=True),
                f"Done: {shown} ({what}).", None, "Exact latent code: no inversion, nothing lost.",
                gr.update(value=str(latent), interactive=True))

    def edit_after_load(self, session, which, mode, paste, hold, *values, progress=None):
        """The first result after a photo loads; clearing the photo clears the result instead of erroring."""
        import gradio as gr

        if not isinstance(session, Session) or session.photo is None:
            yield (session, None, gr.update(value=None, interactive=False), "Upload a photo (or pick an example).",
                   None, "", gr.update(value=None, interactive=False))
            return
        if session.kept:  # the photo box emptied itself for a generated face, which is shown already
            session.kept = False
            yield (session, *(gr.update() for _ in range(6)))
            return
        yield from self.edit(session, which, mode, paste, hold, *values, progress=progress)

    def preset(self, label, session, which):
        """A preset's slider values (the other sliders back to 0); the edit runs next."""
        if label not in self.presets:
            raise self._error(f"no preset {label!r}")
        return self._slider_values(self.presets[label])

    def reset(self, session, which):
        """Every slider of the chosen face(s) back to 0; the edit runs next."""
        return self._slider_values({})

    def timeline(self, session, which, mode, paste, hold, *values, progress=None):
        """An aging animation (GIF, and MP4 when imageio-ffmpeg is installed) of the chosen faces."""
        from faceapp.pipeline import mp4_available, save_gif, save_mp4

        if "age" not in self.names:
            raise self._error("This model has no age direction.")
        if not isinstance(session, Session) or session.photo is None:
            raise self._error("Upload a photo first (or pick an example, or generate a face).")
        progress = progress or (lambda *a, **k: None)
        base = self.strengths(values)
        hold_names = self.names if hold else ()
        if session.source == "latent":
            from faceapp.edits import timeline as edit_timeline

            ws0 = self.editor.edit(session.latent, {k: v for k, v in base.items() if k != "age"}, hold_names)
            ws_t = edit_timeline(ws0, self.bundle.directions, name="age", strengths=_timeline_strengths(self.bundle),
                                 hold=tuple(h for h in hold_names if h != "age"))
            frames = [_enlarged(im, GENERATED_SIDE) for im in self.editor.render_many(ws_t)]
        else:
            prepared = self._prepared(session, face_indices(which, len(session.faces)), mode, progress)
            progress(0.9, desc="Rendering the timeline")
            frames = self.editor.timeline(session.photo, prepared, name="age", hold=hold_names, base=base,
                                          strengths=_timeline_strengths(self.bundle), paste=paste)
        frames = [_fit(f, TIMELINE_SIDE) for f in frames]
        gif = save_gif(frames, session.next_path("faceapp-aging", ".gif"), duration_ms=160)
        files = [str(gif)]
        if mp4_available():
            files.append(str(save_mp4(frames, session.next_path("faceapp-aging", ".mp4"), fps=6)))
        return str(gif), files

    def load_latent(self, file, session, request):
        """A latent-code file from 'Download latent code': back onto its photo's face when that photo is loaded,
        else the face alone. Returns (session, face picker, status, *slider values); the edit runs next."""
        import gradio as gr

        from faceapp.inversion import Inversion

        session = self.session_for(session, request)
        if not file:
            raise self._error("Choose a .npz file saved with 'Download latent code'.")
        path = file if isinstance(file, str) else getattr(file, "name", str(file))
        ws, meta = self.editor.load_latent(path)
        strengths = {k: float(v) for k, v in (meta.get("strengths") or {}).items() if k in self.names}
        i = meta.get("face")
        if (session.source == "photo" and session.photo is not None and meta.get("photo_sha256") == session.photo_digest
                and isinstance(i, int) and 0 <= i < len(session.faces)):
            mode = meta.get("mode") if meta.get("mode") in ("fast", "balanced") else "balanced"
            aligned = self.editor.align(session.photo, session.faces[i])
            inv = Inversion(ws=ws, G=self.editor.G, mode=mode, metrics={"loaded_from": Path(path).name})
            session.cache.put(self.editor.cache_key(aligned, mode), inv)
            session.edits[i] = strengths
            picker = gr.update(value=face_choices(len(session.faces))[i])
            status = f"Loaded the latent code of face {i + 1} of this photo (mode {mode}: no inversion needed)."
            return session, picker, gr.update(value=mode), status, *self._slider_values(strengths)
        self._set_latent(session, ws, {"what": f"latent code from {Path(path).name}", "file": Path(path).name})
        status = "Loaded a latent code (its photo is not loaded here: editing the face alone)."
        return session, gr.update(choices=["Face 1"], value="Face 1"), gr.update(), status, \
            *self._slider_values(strengths)

    def _set_latent(self, session: Session, ws, info: dict) -> None:
        previous = session.upload
        session.reset()
        session.upload = None
        if previous:
            release_upload(previous)
        session.source, session.latent, session.latent_info = "latent", ws, dict(info)
        session.photo = _enlarged(self.editor.render(ws), GENERATED_SIDE)
        before = session.next_path("faceapp-before", ".png")
        session.photo.save(before, compress_level=1)
        session.before = str(before)

    # ---- generate tab

    def generate(self, session, seed, psi, mix_seed, mix, request):
        """A random face from `seed` (truncation `psi`; style-mixed with `mix_seed` at layers `mix` unless
        'none'). Returns (session, image, status)."""
        session = self.session_for(session, request)
        seed, mix_seed = self._seed(seed), (None if mix == "none" else self._seed(mix_seed))
        ws = self.editor.generate(seed, truncation_psi=float(psi), mix_seed=mix_seed,
                                  mix=mix if mix != "none" else "coarse")
        desc = f"seed {seed}, ψ {float(psi):.2f}" + (f", {mix} layers from seed {mix_seed}" if mix_seed is not None
                                                     else "")
        session.generated = (ws, {"what": f"generated face: {desc}", "seed": seed, "truncation_psi": float(psi),
                                  "mix_seed": mix_seed, "mix": mix})
        image = _enlarged(self.editor.render(ws), GENERATED_SIDE)
        path = session.next_path("faceapp-generated", ".png")
        image.save(path, compress_level=1)
        for old in sorted(session.workdir.glob("faceapp-generated-*.png"))[:-3]:
            old.unlink(missing_ok=True)
        return session, str(path), f"Generated: {desc}."

    def _seed(self, value) -> int:
        try:
            seed = int(value)
        except (TypeError, ValueError):
            raise self._error(f"A seed is a whole number, not {value!r}.") from None
        if not 0 <= seed < 2**32:
            raise self._error(f"A seed is a whole number from 0 to {2**32 - 1}.")
        return seed

    @staticmethod
    def random_seed():
        """A fresh seed for the 'random' button."""
        return random.randrange(2**31)

    def send_to_editor(self, session, request):
        """'Edit this face': the generated face's exact latent goes to the editor (no inversion).
        Returns (session, tab, photo box, face picker, faces overlay, status, *slider values)."""
        import gradio as gr

        session = self.session_for(session, request)
        if session.generated is None:
            raise self._error("Generate a face first.")
        ws, info = session.generated
        self._set_latent(session, ws, info)
        return (session, gr.Tabs(selected="edit"), None, gr.update(choices=["Face 1"], value="Face 1"), None,
                f"Editing the {info['what']} (its exact latent code: no inversion).", *self._slider_values({}))


# ---------------------------------------------------------------------------------- layout, one tab each


def _header(notice: str):
    import gradio as gr

    gr.Markdown("# faceapp\nOlder, younger, smiling, with glasses: edit a face and get it back in your photo, "
                "at your photo's own resolution.")
    gr.Markdown(notice, elem_id="model-notice")


def edit_tab(h: Handlers, session, heavy: dict):
    """The 'Edit a photo' tab: its layout and its events. Returns the components other tabs send to."""
    import gradio as gr

    from faceapp.pipeline import MODES, PASTE_METHODS, default_mode

    bundle = h.bundle
    examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg")) if EXAMPLES.is_dir() else []
    _keep_digests.update(d for d in map(_digest, examples) if d)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            photo = gr.Image(label="Your photo", type="filepath", sources=["upload", "webcam"],
                             elem_id="photo", height=420)
            # per instance, not a subclass: Gradio writes a .pyi stub beside the module of any subclass
            photo.preprocess = types.MethodType(photo_path_only, photo)
            if examples:
                gr.Examples([[p] for p in examples], inputs=[photo], label="Example photos (public domain)")
        with gr.Column(scale=1):
            compare = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath", interactive=False,
                                     elem_id="result", height=420, max_height=420, format="png")
            with gr.Row():
                download = gr.DownloadButton("Download result", interactive=False, elem_id="download", size="md")
                latent_out = gr.DownloadButton("Download latent code (.npz)", interactive=False, size="sm",
                                               elem_id="latent-download")
                latent_in = gr.UploadButton("Load latent code", file_types=[".npz"], elem_id="latent-upload",
                                            size="sm")
    status = gr.Markdown("Upload a photo (or pick an example, or generate a face) to start.", elem_id="status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            faces_img = gr.Image(label="Faces found (numbered, largest first)", type="filepath", interactive=False,
                                 height=240, elem_id="faces")
            with gr.Row():
                which = gr.Radio(["Face 1"], value="Face 1", label="Edit which face (each keeps its own edit)",
                                 elem_id="which", scale=3)
                harder = gr.Button("Look harder for faces", elem_id="look-harder", scale=1, size="sm")
        with gr.Column(scale=1):
            with gr.Row():
                preset_buttons = [gr.Button(label, size="sm", elem_id=f"preset-{i}")
                                  for i, label in enumerate(h.presets)]
                reset = gr.Button("Reset", size="sm", variant="secondary", elem_id="reset")
            sliders = []
            for n in h.names:
                spec = slider_spec(bundle, n)
                sliders.append(gr.Slider(spec["minimum"], spec["maximum"], value=0.0, step=spec["step"],
                                         label=spec["label"], info=spec["info"], elem_id=f"slider-{n}"))
            if not h.names:
                gr.Markdown("This model has no edit directions; results re-render the inverted face.")
    with gr.Accordion("How faithful is the inversion?", open=False):
        recon = gr.Image(label="Model's view / reconstruction", type="filepath", interactive=False, height=200,
                         elem_id="reconstruction")
        faith = gr.Markdown("", elem_id="faithfulness")
    with gr.Accordion("Options", open=False):
        mode = gr.Radio(list(MODES), value=default_mode(bundle), label="Inversion", elem_id="mode", info=(
            "fast: encoder; balanced: + refinement; best: + tuning (slow on CPU)" if bundle.encoder is not None
            else "this model has no encoder: fast = a short optimisation, balanced = a longer one, "
            "best = + tuning (slow on CPU)"))
        paste = gr.Radio(list(PASTE_METHODS), value=h.editor.paste, label="Put the edit back as", elem_id="paste",
                         info="difference: the edit's change added to your photo at its resolution (sharp); "
                         "render: the model's rendering pasted over the face")
        hold = gr.Checkbox(False, label="Hold the other attributes fixed (conditional edits)")
    with gr.Accordion("Aging timeline", open=False):
        timeline_btn = gr.Button("Make aging timeline", variant="primary", interactive="age" in h.names)
        with gr.Row():
            timeline_img = gr.Image(label="Timeline", type="filepath", interactive=False, format="gif")
            timeline_files = gr.File(label="Download", file_count="multiple")

    # ---- events
    edit_inputs = [session, which, mode, paste, hold, *sliders]
    edit_outputs = [session, compare, download, status, recon, faith, latent_out]
    picker_outputs = [session, faces_img, which, status]

    def edit(session, which, mode, paste, hold, *values, progress=gr.Progress()):
        yield from h.edit(session, which, mode, paste, hold, *values, progress=progress)

    def edit_after_load(session, which, mode, paste, hold, *values, progress=gr.Progress()):
        yield from h.edit_after_load(session, which, mode, paste, hold, *values, progress=progress)

    def timeline(session, which, mode, paste, hold, *values, progress=gr.Progress()):
        return h.timeline(session, which, mode, paste, hold, *values, progress=progress)

    def load_photo(path, session, request: gr.Request):
        return h.load_photo(path, session, request)

    def look_harder(session, request: gr.Request):
        return h.look_harder(session, request)

    def load_latent(file, session, request: gr.Request):
        return h.load_latent(file, session, request)

    edit, edit_after_load, timeline = user_errors(edit), user_errors(edit_after_load), user_errors(timeline)
    load_photo, look_harder, load_latent = user_errors(load_photo), user_errors(look_harder), user_errors(load_latent)
    run_edit = dict(fn=edit, inputs=edit_inputs, outputs=edit_outputs, trigger_mode="always_last", **heavy)

    # The page's own events: none is a named endpoint (scripts have theirs, `api_endpoints`).
    photo.change(load_photo, [photo, session], picker_outputs, api_name=False, **heavy).success(
        edit_after_load, edit_inputs, edit_outputs, api_name=False, **heavy)
    gr.on([s.input for s in sliders] + [mode.input, paste.input, hold.input], **run_edit, api_name=False)
    which.input(h.select_face, [session, which], sliders, api_name=False, queue=False)
    harder.click(look_harder, [session], picker_outputs, api_name=False, **heavy).success(
        **run_edit, api_name=False)
    for label, button in zip(h.presets, preset_buttons):
        button.click(functools.partial(h.preset, label), [session, which], sliders, api_name=False,
                     queue=False).then(**run_edit, api_name=False)
    reset.click(h.reset, [session, which], sliders, api_name=False, queue=False).then(**run_edit, api_name=False)
    timeline_btn.click(timeline, edit_inputs, [timeline_img, timeline_files], api_name=False,
                       **{**heavy, "trigger_mode": "once"})
    latent_in.upload(load_latent, [latent_in, session], [session, which, mode, status, *sliders],
                     api_name=False, **heavy).success(**run_edit, api_name=False)
    return types.SimpleNamespace(photo=photo, which=which, faces_img=faces_img, status=status, sliders=sliders,
                                 run_edit=run_edit, mode=mode, paste=paste, hold=hold, latent_in=latent_in)


def generate_tab(h: Handlers, session, tabs, editor_tab, heavy: dict):
    """The 'Generate' tab (This Person Does Not Exist, with StyleGAN's controls): layout and events. Returns its
    controls (the named endpoints take them as inputs)."""
    import gradio as gr

    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**32 - 1, label="Seed", elem_id="seed")
                dice = gr.Button("Random seed", size="sm", elem_id="random-seed")
            psi = gr.Slider(0.0, 1.2, value=0.7, step=0.05, label="Truncation ψ", elem_id="psi",
                            info="lower: closer to the average face (safer); 1: the full variety")
            with gr.Row():
                mix = gr.Radio(["none", "coarse", "middle", "fine"], value="none", label="Style mixing",
                               elem_id="mix", info="coarse: pose, face shape; middle: features, hair; fine: colours")
                mix_seed = gr.Number(value=1, precision=0, minimum=0, maximum=2**32 - 1, label="from seed",
                                     elem_id="mix-seed")
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column(scale=1):
            image = gr.Image(label="A face that does not exist", type="filepath", interactive=False, height=420,
                             elem_id="generated", format="png")
            send = gr.Button("Edit this face →", variant="primary", elem_id="edit-generated")
            gen_status = gr.Markdown("", elem_id="generate-status")

    def generate(session, seed, psi, mix_seed, mix, request: gr.Request):
        return h.generate(session, seed, psi, mix_seed, mix, request)

    def send_to_editor(session, request: gr.Request):
        return h.send_to_editor(session, request)

    generate, send_to_editor = user_errors(generate), user_errors(send_to_editor)
    gen_inputs, gen_outputs = [session, seed, psi, mix_seed, mix], [session, image, gen_status]
    generate_btn.click(generate, gen_inputs, gen_outputs, api_name=False, **heavy)
    gr.on([psi.release, mix.input, seed.submit, mix_seed.submit], generate, gen_inputs, gen_outputs,
          api_name=False, trigger_mode="always_last", **heavy)
    dice.click(h.random_seed, None, seed, api_name=False, queue=False).then(
        generate, gen_inputs, gen_outputs, api_name=False, **heavy)
    send.click(send_to_editor, [session],
               [session, tabs, editor_tab.photo, editor_tab.which, editor_tab.faces_img, editor_tab.status,
                *editor_tab.sliders], api_name=False, **heavy).success(
        **editor_tab.run_edit, api_name=False)
    return types.SimpleNamespace(seed=seed, psi=psi, mix_seed=mix_seed, mix=mix)


# ---------------------------------------------------------------------------------- named endpoints (scripts)


def _plain(value):
    """A handler's output as a script wants it: an update's value (gr.update(value=...)), else the value itself."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        return value.get("value")
    return value


def _face_choice(face) -> str:
    """The endpoints' `face` ('1' = the largest, '2', ..., or 'all') as the page's picker says it."""
    text = str(face if face not in (None, "") else "1").strip()
    if text.lower() in ("all", "all faces"):
        return "All faces"
    number = text.split()[-1]  # '2' or 'Face 2'
    if not number.isdigit() or int(number) < 1:
        from faceapp.errors import FaceAppError

        raise FaceAppError(f"face is a face's number (1 = the largest) or 'all', not {face!r}")
    return f"Face {int(number)}"


def _face_number(choice) -> str:
    """The page's picker value ('Face 2', 'All faces') as the endpoints' `face` ('2', 'all')."""
    choice = _plain(choice) or "Face 1"
    return "all" if choice == "All faces" else choice.split()[-1]


def api_endpoints(h: Handlers, session, edit_ui, generate_ui, heavy: dict) -> None:
    """The named endpoints scripts call with gradio_client: parameters named as on the page (photo, face, mode,
    paste, hold, one per slider: age, smile, ...; seed, truncation_psi, mix_seed, mix), plain values and file
    paths back. Events of their own on a hidden trigger, so the page's events keep their outputs (gr.update
    dicts, the before/after pair) and scripts get a stable API. Each call runs in the client's own session.

    /load_photo(photo) -> (faces overlay, number of faces, status)
    /look_harder() -> (faces overlay, number of faces, status)
    /edit(face, mode, paste, hold, age, smile, ...) -> (result, status, latent code, reconstruction, faithfulness)
    /timeline(face, mode, paste, hold, age, smile, ...) -> (GIF, [GIF, MP4])
    /load_latent(latent) -> (face, mode, status, {direction: slider value})
    /generate(seed, truncation_psi, mix_seed, mix) -> (image, status)
    /edit_generated() -> (image, status): the generated face becomes the one /edit edits
    """
    import gradio as gr

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
    sliders = dict(zip(h.names, edit_ui.sliders))

    def values(edits: dict) -> list:
        return [edits.get(n, 0.0) for n in h.names]

    def load_photo(photo, session, request: gr.Request):
        """Load a photo and find its faces."""
        session, faces, _, status = h.load_photo(photo, session, request)
        return session, _plain(faces), len(session.faces), status

    def look_harder(session, request: gr.Request):
        """Search the loaded photo again for faces the first pass missed (slow)."""
        session, faces, _, status = h.look_harder(session, request)
        return session, faces, len(session.faces), status

    def edit(session, face, mode, paste, hold, progress=gr.Progress(), **edits):
        """Edit a face of the loaded photo (or the generated / loaded face): the result at the photo's size."""
        *_, last = h.edit(session, _face_choice(face), mode, paste, hold, *values(edits), progress=progress)
        session, (_, result), _, status, recon, faith, latent = last  # the final result, not the preview
        return session, result, status, _plain(latent), recon, faith

    def timeline(session, face, mode, paste, hold, progress=gr.Progress(), **edits):
        """An aging animation of a face, the other sliders' edits held."""
        return h.timeline(session, _face_choice(face), mode, paste, hold, *values(edits), progress=progress)

    def load_latent(latent, session, request: gr.Request):
        """A latent-code file saved by /edit: back onto its photo's face when that photo is loaded, else alone."""
        session, picker, mode, status, *slider_values = h.load_latent(latent, session, request)
        return session, _face_number(picker), _plain(mode), status, dict(zip(h.names, slider_values))

    def generate(session, seed, truncation_psi, mix_seed, mix, request: gr.Request):
        """A random face (mix: 'none', or 'coarse' / 'middle' / 'fine' layers from mix_seed)."""
        return h.generate(session, seed, truncation_psi, mix_seed, mix, request)

    def edit_generated(session, request: gr.Request):
        """The last generated face becomes the face /edit edits (its exact latent code: no inversion)."""
        session, _, _, _, _, status, *_ = h.send_to_editor(session, request)
        return session, session.before, status

    edit_inputs = [session, face, edit_ui.mode, edit_ui.paste, edit_ui.hold]
    for fn, inputs, outputs, kwargs in [
        (load_photo, [edit_ui.photo, session], [session, faces_out, count_out, status_out], None),
        (look_harder, [session], [session, faces_out, count_out, status_out], None),
        (edit, edit_inputs, [session, result_out, status_out, latent_out, recon_out, faith_out], sliders),
        (timeline, edit_inputs, [gif_out, files_out], sliders),
        (load_latent, [edit_ui.latent_in, session], [session, face_out, mode_out, status_out, edits_out], None),
        (generate, [session, generate_ui.seed, generate_ui.psi, generate_ui.mix_seed, generate_ui.mix],
         [session, image_out, status_out], None),
        (edit_generated, [session], [session, image_out, status_out], None),
    ]:
        trigger.click(user_errors(fn), inputs, outputs, inputs_kwargs=kwargs, api_name=fn.__name__,
                      show_progress="hidden", **heavy)


def build_demo(editor, notice: str | None = None):
    """The Gradio Blocks page around `editor` (a FaceEditor): a header, the two tabs, the model card."""
    import gradio as gr

    h = Handlers(editor)
    notice = model_notice(editor.bundle) if notice is None else notice
    heavy = dict(concurrency_limit=HEAVY_CONCURRENCY, concurrency_id="heavy")
    with gr.Blocks(title="faceapp", delete_cache=(300, 1800)) as demo:
        session = gr.State(None, time_to_live=SESSION_TTL, delete_callback=_close_session)
        _header(notice)
        with gr.Tabs() as tabs:
            with gr.Tab("Edit a photo", id="edit", elem_id="tab-edit"):
                editor_tab = edit_tab(h, session, heavy)
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                generate_ui = generate_tab(h, session, tabs, editor_tab, heavy)
        with gr.Accordion("About the model", open=False):
            gr.Markdown(editor.bundle.card or "(no model card)")
        api_endpoints(h, session, editor_tab, generate_ui, heavy)

        def on_unload(request: gr.Request):  # the annotation makes Gradio pass the closing tab's request
            end_session(request)

        demo.unload(on_unload)
    return demo


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

    prepare_perceptual()
    bundle = resolve_model(args.model, device=args.device)
    torch.set_num_threads(default_threads(bundle.resolution))
    editor = make_editor(bundle, device=args.device)
    demo = build_demo(editor)
    demo.queue(max_size=64, default_concurrency_limit=HEAVY_CONCURRENCY).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(EXAMPLES)],
        max_file_size=os.environ.get("FACEAPP_MAX_UPLOAD", "30mb"),  # refused by Gradio before it is stored
    )


if __name__ == "__main__":
    main()
