"""What each event of the page does (`Handlers`), and what it returns: a named result per kind of event.

Each result knows the components it updates (`PAGE`, names of `layout.Components`, in order) and gives their
values in that order (`page()`: Gradio updates for the page); the named endpoints read its fields instead.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import gradio as gr
import numpy as np

from faceapp.edits import strength_to_years, years_edit
from faceapp.edits.presets import years_presets
from faceapp.errors import FaceAppError
from faceapp.pipeline import MODES, PASTE_METHODS, EditableFace, FaceEditor
from faceapp.web.session import Generated, Session, State, new_session, upload_root
from faceapp.web.settings import GENERATED_SIDE, TIMELINE_FRAMES, TIMELINE_SIDE
from faceapp.web.views import (
    EXACT_LATENT,
    ONE_FACE,
    done_status,
    enlarged,
    face_choices,
    face_indices,
    faces_found,
    faces_overlay,
    faithfulness_text,
    fit,
    presets,
    side_by_side,
    slider_spec,
)
from faceapp.writers import mp4_available, save_gif, save_mp4


def shown_error(message: str) -> gr.Error:
    """An error the page shows (no traceback in the server's log: it is the visitor's, not the server's)."""
    return gr.Error(message, print_exception=False)


def user_errors(fn):
    """Turn FaceAppError (bad photo, no face, ...) into a gr.Error the page shows; the server goes on.

    Works for plain handlers and for generator handlers (those that stream a preview, then the result).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except FaceAppError as e:
                raise shown_error(str(e)) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FaceAppError as e:
            raise shown_error(str(e)) from None

    return wrapper


def _picker(choices: list[str], value: str | None = None) -> dict:
    return gr.update(choices=choices, value=choices[0] if value is None else value)


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PhotoView:
    """After a photo loaded, or its faces were searched again: the faces overlay, the picker, the status."""

    PAGE: ClassVar = ("session", "faces_img", "which", "status")
    session: Session
    overlay: str | None = None  # the photo with its faces boxed and numbered
    choices: tuple[str, ...] = tuple(ONE_FACE)  # the face picker's choices (the first one picked)
    status: str = ""
    unchanged: bool = False  # the photo box was emptied for a generated / loaded face: the page stays as it is

    def page(self) -> tuple:
        if self.unchanged:
            return self.session, gr.update(), gr.update(), gr.update()
        return self.session, self.overlay, _picker(list(self.choices)), self.status


@dataclass(frozen=True)
class EditView:
    """An edit's result: the before/after pair, the result to download, the status, how faithful the inversion
    is (the crop beside its reconstruction, a text), the latent code to download."""

    PAGE: ClassVar = ("session", "compare", "download", "status", "recon", "faith", "latent_out")
    session: Session | None
    before: str | None = None  # the "before" image file
    result: str | None = None  # the edited photo (or face) file; None: no result (the buttons are off)
    status: str = ""
    recon: str | None = None  # the crop beside its reconstruction (None for an exact latent code)
    faithfulness: str = ""
    latent: str | None = None  # the latent-code file
    unchanged: bool = False  # the page stays as it is

    def page(self) -> tuple:
        if self.unchanged:
            return (self.session, *(gr.update() for _ in self.PAGE[1:]))
        compare = (self.before, self.result) if self.result is not None else None
        return (self.session, compare, gr.update(value=self.result, interactive=self.result is not None),
                self.status, self.recon, self.faithfulness,
                gr.update(value=self.latent, interactive=self.latent is not None))


@dataclass(frozen=True)
class LatentView:
    """A latent-code file loaded: the face picked, the mode (None: as it was), the status, the sliders."""

    PAGE: ClassVar = ("session", "which", "mode", "status", "sliders")
    session: Session
    face: str  # the picker's value ('Face 2')
    choices: tuple[str, ...] | None  # the picker's choices (None: as they are)
    mode: str | None
    status: str
    sliders: list

    def page(self) -> tuple:
        picker = gr.update(value=self.face) if self.choices is None else _picker(list(self.choices), self.face)
        mode = gr.update() if self.mode is None else gr.update(value=self.mode)
        return self.session, picker, mode, self.status, *self.sliders


@dataclass(frozen=True)
class GenerateView:
    """A generated face: its image file and what it is."""

    PAGE: ClassVar = ("session", "image", "gen_status")
    session: Session
    image: str
    status: str

    def page(self) -> tuple:
        return self.session, self.image, self.status


@dataclass(frozen=True)
class SentView:
    """The generated face sent to the editor: the editor's tab, its photo box and faces emptied, the status,
    the sliders (at 0)."""

    PAGE: ClassVar = ("session", "tabs", "photo", "which", "faces_img", "status", "sliders")
    session: Session
    status: str
    sliders: list

    def page(self) -> tuple:
        return (self.session, gr.Tabs(selected="edit"), None, _picker(ONE_FACE), None, self.status,
                *self.sliders)


@dataclass(frozen=True)
class TimelineFiles:
    """An aging timeline: the GIF shown, and the files to download (the GIF, the MP4 when it can be made)."""

    PAGE: ClassVar = ("timeline_img", "timeline_files")
    gif: str
    files: list[str]

    def page(self) -> tuple:
        return self.gif, self.files


def _no_progress(*args, **kwargs) -> None:
    pass


# ---------------------------------------------------------------------------------- handlers


class Handlers:
    """What each event of the page does, around one FaceEditor. Every method takes the visitor's Session (or
    None before the first event) and returns it with the outputs, so its time-to-live counts from the last use.
    """

    def __init__(self, editor: FaceEditor):
        self.editor = editor
        self.bundle = editor.bundle
        self.names = editor.direction_names
        self.presets = presets(self.bundle)
        self.years = self.bundle.years_directions  # what years convert with (curves by age: a face's own)
        self.preset_years = years_presets(self.years)  # label -> years asked (each face: its own curve)
        # sliders whose value is in years (the calibrated age slider): converted to strengths and back here
        self.in_years = {n for n in self.names if slider_spec(self.bundle, n)["years"]}

    # ---- sessions and sliders

    @staticmethod
    def session_for(session, request) -> Session:
        return session if isinstance(session, Session) else new_session(request)

    def strengths(self, values, age: float | None = None) -> dict[str, float]:
        """The sliders' values as direction strengths (a years slider converted with its calibration: for a face
        that looks `age`, with its own curve, held to the slider's range)."""
        out = {n: float(v or 0.0) for n, v in zip(self.names, values)}
        for n in self.in_years & set(out):
            out[n] = years_edit(self.years, n, out[n], age)[0]
        return out

    def slider_values(self, strengths: dict, age: float | None = None) -> list:
        """Direction strengths as the sliders show them (years for a calibrated age slider, on a face that looks
        `age`)."""
        return [round(strength_to_years(self.years, n, float(strengths.get(n, 0.0)), age), 1) + 0.0
                if n in self.in_years else float(strengths.get(n, 0.0)) for n in self.names]

    def shown(self, strengths: dict, age: float | None = None, values=None) -> str:
        """'age +30 years, smile +1' for the status line; with the sliders' `values`, a face that cannot get the
        years asked says so ('age +12 years: the most for this face (asked +30)')."""
        shown = dict(zip(self.names, self.slider_values(strengths, age)))
        asked = dict(zip(self.names, values)) if values is not None else {}
        parts = []
        for n, v in strengths.items():
            if not v or n not in shown:
                continue
            if n in self.in_years:
                part = f"{n} {shown[n]:+g} years"
                want = float(asked.get(n) or 0.0)
                if want and abs(want - shown[n]) >= 1.0:
                    part += f": the most for this face (asked {want:+g})"
                parts.append(part)
            else:
                parts.append(f"{n} {v:+g}")
        return ", ".join(parts) or "no edit"

    # ---- photo tab

    def load_photo(self, path, session, request) -> PhotoView:
        """A new photo: check it, find its faces."""
        session = self.session_for(session, request)
        if not path and session.state is State.LATENT:
            # the photo box was emptied because a generated / loaded face took its place: keep that face
            return PhotoView(session, unchanged=True)
        session.drop_upload(unless=path)  # the previous photo's file
        session.reset()
        if not path:
            return PhotoView(session, status="Upload a photo (or pick an example) to start.")
        photo = self.editor.load(path, name=Path(path).name)
        faces = self.editor.detect(photo)
        # Recorded only once it loaded: a failed load must not make a later retry delete the file it reads.
        if Path(path).is_relative_to(upload_root()):
            session.upload = path
        session.show_photo(photo, faces)
        return self._photo_view(session)

    def look_harder(self, session, request) -> PhotoView:
        """Search the photo again with every detector pass (slow); adds the faces the first pass missed."""
        session = self.session_for(session, request)
        if session.state is not State.PHOTO:
            raise shown_error("Upload a photo first.")
        before = len(session.faces)
        session.find_faces_again(self.editor.detect(session.photo, look_harder=True))
        more = len(session.faces) - before
        return self._photo_view(
            session, f" (looked harder: {more} more)" if more > 0 else " (looked harder: no more faces)")

    def _photo_view(self, session: Session, note: str = "") -> PhotoView:
        overlay = session.keep_file("faceapp-faces", ".jpg", faces_overlay(session.photo, session.faces), quality=90)
        n = len(session.faces)
        return PhotoView(session, overlay, tuple(face_choices(n)), faces_found(n) + note)

    def select_face(self, session, which) -> list:
        """The picker moved: the sliders show that face's own edit."""
        n = len(session.faces) if isinstance(session, Session) else 0
        i = face_indices(which, n)[0] if n else None
        strengths = session.edits.get(i, {}) if n else {}
        return self.slider_values(strengths, session.ages.get(i) if n else None)

    def _prepared(self, session: Session, indices, mode, progress) -> list[EditableFace]:
        if mode not in MODES:
            raise shown_error(f"Inversion mode must be one of {', '.join(MODES)}.")

        def report(fraction, message=""):
            progress(fraction, desc=message or f"Inverting ({mode})")

        report(0.0, f"Inverting ({mode})")
        return self.editor.prepare(
            session.photo, faces=indices, mode=mode, progress=report, cache=session.cache, detected=session.faces,
            ages=session.ages,  # read once per photo (a new photo empties them)
        )

    def _check_edit(self, session, paste=None) -> Session:
        if not isinstance(session, Session) or session.state is State.EMPTY:
            raise shown_error("Upload a photo first (or pick an example, or generate a face).")
        if paste is not None and paste not in PASTE_METHODS:
            raise shown_error(f"Paste-back must be one of {', '.join(PASTE_METHODS)}.")
        return session

    def edit(self, session, which, mode, paste, hold, *values, progress=None) -> Iterator[EditView]:
        """The edited photo for the sliders' values: a generator that yields a quick preview first when the
        model is large (> 256 px), then the full-resolution result."""
        session = self._check_edit(session, paste)
        progress = progress or _no_progress
        hold_names = self.names if hold else ()
        if session.state is State.LATENT:
            yield self._edit_latent(session, self.strengths(values), hold_names, values)
            return
        chosen = face_indices(which, len(session.faces))
        indices = sorted(set(chosen) | {i for i, st in session.edits.items() if any(st.values())})
        prepared = self._prepared(session, indices, mode, progress)
        session.ages.update({f.index: f.age for f in prepared})
        for i in chosen:  # years: each face by its own curve (how old it looks)
            session.edits[i] = self.strengths(values, session.ages.get(i))
        per_face = [session.edits.get(f.index, {}) for f in prepared]
        strengths = session.edits[chosen[0]]
        if self.editor.preview_resolution:
            preview = self.editor.compose(session.photo, prepared, per_face, hold=hold_names, paste=paste,
                                          preview=True)
            yield self._edit_view(session, preview, prepared, chosen, strengths, mode, note=" (preview)",
                                  values=values)
        result = self.editor.compose(session.photo, prepared, per_face, hold=hold_names, paste=paste)
        yield self._edit_view(session, result, prepared, chosen, strengths, mode, values=values)

    def _edit_view(self, session, result, prepared, chosen, strengths, mode, note="", values=None) -> EditView:
        path = session.keep_file("faceapp-edited", ".png", result, keep=4, compress_level=1)  # level 1: 3x faster
        faces = [f for f in prepared if f.index in chosen] or prepared[:1]
        f = faces[0]
        pair = side_by_side(f.aligned.image, self.editor.reconstruction(f))
        recon = session.keep_file("faceapp-recon", ".png", pair, compress_level=1)
        faith = faithfulness_text([(g.index, self.editor.faithfulness(g)) for g in faces], mode)
        latent = self._latent_file(session, f.ws, face=f.index, mode=mode)
        status = done_status(self.shown(strengths, session.ages.get(chosen[0]), values), chosen, len(session.faces),
                             note + self._short_faces(session, chosen[1:], values))
        return EditView(session, session.before, path, status, recon, faith, latent)

    def _short_faces(self, session: Session, others, values) -> str:
        """' Face 2: age +12 years, its most.' for each of `others` (face indices edited with the first) that got
        fewer years than the sliders ask."""
        if "age" not in self.in_years or values is None:
            return ""
        want = float(dict(zip(self.names, values)).get("age") or 0.0)
        notes = []
        for i in others:
            got = self.slider_values(session.edits.get(i, {}), session.ages.get(i))[self.names.index("age")]
            if want and abs(want - got) >= 1.0:
                notes.append(f" Face {i + 1}: age {got:+g} years, its most.")
        return "".join(notes)

    def _edit_latent(self, session: Session, strengths, hold, values=None) -> EditView:
        """A generated or loaded face: its exact code edited and rendered (no photo, no inversion)."""
        ws = self.editor.edit(session.latent, strengths, hold)
        result = enlarged(self.editor.render(ws), GENERATED_SIDE)
        path = session.keep_file("faceapp-edited", ".png", result, keep=4, compress_level=1)
        latent = self._latent_file(session, session.latent)
        what = session.latent_info.get("what", "this face")
        return EditView(session, session.before, path, f"Done: {self.shown(strengths, None, values)} ({what}).", None,
                        EXACT_LATENT, latent)

    def _latent_file(self, session: Session, ws, **meta) -> str:
        info = dict(meta)
        if session.state is State.PHOTO:
            info.update(photo_sha256=session.photo_digest, strengths=session.edits.get(meta.get("face"), {}))
        else:
            info.update(session.latent_info)
        return str(self.editor.save_latent(session.workdir / "faceapp-latent.npz", ws, **info))

    def edit_after_load(self, session, which, mode, paste, hold, *values, progress=None) -> Iterator[EditView]:
        """The first result after a photo loads; clearing the photo clears the result instead of erroring."""
        if not isinstance(session, Session) or session.state is State.EMPTY:
            yield EditView(session, status="Upload a photo (or pick an example).")
            return
        if session.state is State.LATENT:  # the photo box emptied itself for a generated face, shown already
            yield EditView(session, unchanged=True)
            return
        yield from self.edit(session, which, mode, paste, hold, *values, progress=progress)

    def preset(self, label, session, which) -> list:
        """A preset's slider values (the other sliders back to 0); the edit runs next."""
        if label not in self.presets:
            raise shown_error(f"no preset {label!r}")
        values = self.slider_values(self.presets[label])
        if label in self.preset_years and "age" in self.in_years:  # the years it asks; each face converts them
            values[self.names.index("age")] = self.preset_years[label]
        return values

    def reset(self, session, which) -> list:
        """Every slider of the chosen face(s) back to 0; the edit runs next."""
        return self.slider_values({})

    def timeline(self, session, which, mode, paste, hold, *values, progress=None) -> TimelineFiles:
        """An aging animation (GIF, and MP4 when imageio-ffmpeg is installed) of the chosen faces."""
        if "age" not in self.names:
            raise shown_error("This model has no age direction.")
        session = self._check_edit(session)
        progress = progress or _no_progress
        lo, hi = self.bundle.directions["age"].strength_range
        steps = dict(name="age", strengths=np.linspace(lo, hi, TIMELINE_FRAMES),
                     hold=self.names if hold else (), base=self.strengths(values))
        if session.state is State.LATENT:
            frames = [enlarged(im, GENERATED_SIDE) for im in self.editor.latent_timeline(session.latent, **steps)]
        else:
            prepared = self._prepared(session, face_indices(which, len(session.faces)), mode, progress)
            progress(0.9, desc="Rendering the timeline")
            frames = self.editor.timeline(session.photo, prepared, paste=paste, **steps)
        frames = [fit(f, TIMELINE_SIDE) for f in frames]
        gif = save_gif(frames, session.next_path("faceapp-aging", ".gif"), duration_ms=160)
        files = [str(gif)]
        if mp4_available():
            files.append(str(save_mp4(frames, session.next_path("faceapp-aging", ".mp4"), fps=6)))
        return TimelineFiles(str(gif), files)

    def load_latent(self, file, session, request) -> LatentView:
        """A latent-code file from 'Download latent code': back onto its photo's face when that photo is loaded,
        else the face alone. The edit runs next."""
        session = self.session_for(session, request)
        if not file:
            raise shown_error("Choose a .npz file saved with 'Download latent code'.")
        path = Path(file if isinstance(file, str) else getattr(file, "name", str(file)))
        ws, meta = self.editor.load_latent(path)
        strengths = {k: float(v) for k, v in (meta.get("strengths") or {}).items() if k in self.names}
        i = meta.get("face")
        if (session.state is State.PHOTO and meta.get("photo_sha256") == session.photo_digest
                and isinstance(i, int) and 0 <= i < len(session.faces)):
            mode = meta.get("mode") if meta.get("mode") in ("fast", "balanced") else "balanced"
            self.editor.remember_inversion(self.editor.align(session.photo, session.faces[i]), ws, mode,
                                           cache=session.cache, loaded_from=path.name)
            session.edits[i] = strengths
            # the sliders show the saved strengths in this face's own years, which the edit converts back
            session.ages[i] = self.bundle.face_age(session.photo, session.faces[i])
            status = f"Loaded the latent code of face {i + 1} of this photo (mode {mode}: no inversion needed)."
            return LatentView(session, face_choices(len(session.faces))[i], None, mode, status,
                              self.slider_values(strengths, session.ages[i]))
        self._show_latent(session, ws, {"what": f"latent code from {path.name}", "file": path.name})
        status = "Loaded a latent code (its photo is not loaded here: editing the face alone)."
        return LatentView(session, ONE_FACE[0], tuple(ONE_FACE), None, status, self.slider_values(strengths))

    def _show_latent(self, session: Session, ws, info: dict) -> None:
        session.show_latent(ws, info, enlarged(self.editor.render(ws), GENERATED_SIDE))

    # ---- generate tab

    def generate(self, session, seed, psi, mix_seed, mix, request) -> GenerateView:
        """A random face from `seed` (truncation `psi`; style-mixed with `mix_seed` at layers `mix` unless
        'none')."""
        session = self.session_for(session, request)
        seed, mix_seed = self._seed(seed), (None if mix == "none" else self._seed(mix_seed))
        ws = self.editor.generate(seed, truncation_psi=float(psi), mix_seed=mix_seed,
                                  mix=mix if mix != "none" else "coarse")
        desc = f"seed {seed}, ψ {float(psi):.2f}" + (f", {mix} layers from seed {mix_seed}" if mix_seed is not None
                                                     else "")
        session.generated = Generated(ws, {"what": f"generated face: {desc}", "seed": seed,
                                           "truncation_psi": float(psi), "mix_seed": mix_seed, "mix": mix})
        image = enlarged(self.editor.render(ws), GENERATED_SIDE)
        path = session.keep_file("faceapp-generated", ".png", image, keep=3, compress_level=1)
        return GenerateView(session, path, f"Generated: {desc}.")

    @staticmethod
    def _seed(value) -> int:
        try:
            seed = int(value)
        except (TypeError, ValueError):
            raise shown_error(f"A seed is a whole number, not {value!r}.") from None
        if not 0 <= seed < 2**32:
            raise shown_error(f"A seed is a whole number from 0 to {2**32 - 1}.")
        return seed

    @staticmethod
    def random_seed() -> int:
        """A fresh seed for the 'random' button."""
        return random.randrange(2**31)

    def send_to_editor(self, session, request) -> SentView:
        """'Edit this face': the generated face's exact latent goes to the editor (no inversion)."""
        session = self.session_for(session, request)
        if session.generated is None:
            raise shown_error("Generate a face first.")
        ws, info = session.generated
        self._show_latent(session, ws, info)
        return SentView(session, f"Editing the {info['what']} (its exact latent code: no inversion).",
                        self.slider_values({}))
