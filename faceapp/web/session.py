"""One visitor's state and the lifecycle of its files.

What one visitor uploads and computes lives in that visitor's `Session` only (a gr.State holds it); nothing of
it is logged, and it is deleted from memory and from the server's disk when the tab closes (`end_session`), or
at the latest when the state expires (`close_session`) or Gradio's cache sweep finds it.

A session is in one `State` at a time: EMPTY (nothing to edit), PHOTO (an uploaded photo and its faces) or
LATENT (a generated face or a loaded latent code, edited exactly: no photo, no inversion). `show_photo`,
`show_latent` and `reset` are the only ways between them.
"""

from __future__ import annotations

import enum
import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from gradio.utils import get_upload_folder
from PIL import Image

from faceapp.align import Face
from faceapp.pipeline import InversionCache
from faceapp.web.settings import SESSION_CACHE_BYTES
from faceapp.web.views import fit, pixels_digest


class State(enum.Enum):
    """What a session holds to edit."""

    EMPTY = "empty"  # nothing yet (or the photo box was emptied)
    PHOTO = "photo"  # an uploaded photo: its faces found, each inverted when it is edited
    LATENT = "latent"  # a generated face or a loaded latent code: its exact code edited, no photo


class Generated(NamedTuple):
    """The Generate tab's last face."""

    ws: torch.Tensor  # [1, num_ws, w_dim]
    info: dict  # what it is ('what': 'generated face: seed 7, ...') and how it was made (seed, psi, mix)


def _new_cache() -> InversionCache:
    return InversionCache(8, max_bytes=SESSION_CACHE_BYTES)


@dataclass(eq=False)
class Session:
    """One visitor's photo, faces and inversions. Lives in a gr.State; never shared or logged."""

    workdir: Path  # this session's files (results, overlays), inside Gradio's cache folder
    cache: InversionCache = field(default_factory=_new_cache)  # this session's inversions, its only
    key: str | None = None  # the Gradio session hash, for the registry below
    state: State = State.EMPTY
    photo: Image.Image | None = None  # PHOTO: the uploaded photo; LATENT: the code's render (enlarged)
    faces: list[Face] = field(default_factory=list)  # PHOTO: the faces found, largest first
    edits: dict[int, dict[str, float]] = field(default_factory=dict)  # face index -> its own {direction: strength}
    ages: dict[int, float | None] = field(default_factory=dict)  # face index -> how old it looks (years' curves)
    photo_digest: str | None = None  # PHOTO: sha256 of the photo's pixels (ties a latent file to its photo)
    latent: torch.Tensor | None = None  # LATENT: ws [1, num_ws, w_dim]
    latent_info: dict = field(default_factory=dict)  # LATENT: where that code came from (seed, psi, file)
    before: str | None = None  # the "before" image file the comparison slider shows
    generated: Generated | None = None  # the Generate tab's last face (kept across the states)
    upload: str | None = None  # the uploaded file in Gradio's cache, while this session uses it
    counter: int = 0

    # ---- files

    def next_path(self, stem: str, suffix: str) -> Path:
        self.counter += 1
        return self.workdir / f"{stem}-{self.counter:06d}{suffix}"  # zero-padded: names sort in order

    def keep_file(self, stem: str, suffix: str, image: Image.Image, keep: int = 3, **save) -> str:
        """`image` saved as a file of this session's own; only the last `keep` of `stem` stay (the page may still
        be fetching one). Not handed to Gradio as a picture: Gradio caches pictures by content, and two visitors
        with identical pictures would share one file being written."""
        path = self.next_path(stem, suffix)
        image.save(path, **save)
        for old in sorted(self.workdir.glob(f"{stem}-*{suffix}"))[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
        return str(path)

    def drop_upload(self, unless: str | None = None) -> None:
        """Let go of the uploaded file (deleted when no other session holds it), unless it is `unless`."""
        previous, self.upload = self.upload, None
        if previous and previous != unless:
            release_upload(previous)

    # ---- states

    def reset(self) -> None:
        """EMPTY: forget the photo or face being edited (not the Generate tab's face, nor the files)."""
        self.state, self.photo, self.faces, self.latent = State.EMPTY, None, [], None
        self.before = self.photo_digest = None
        self.edits, self.ages, self.latent_info = {}, {}, {}
        self.cache.clear()

    def show_photo(self, photo: Image.Image, faces: list[Face]) -> None:
        """PHOTO: `photo` and its faces (found by the editor) to edit."""
        self.state, self.photo, self.faces = State.PHOTO, photo, faces
        self.photo_digest = pixels_digest(photo)
        before = self.next_path("faceapp-before", ".jpg")
        fit(photo, 4096).save(before, quality=92)
        self.before = str(before)

    def find_faces_again(self, faces: list[Face]) -> None:
        """PHOTO, its faces found again: numbers can change, so the edits (and inversions) start again."""
        self.faces, self.edits, self.ages = faces, {}, {}
        self.cache.clear()

    def show_latent(self, ws: torch.Tensor, info: dict, image: Image.Image) -> None:
        """LATENT: the code ws [1, num_ws, w_dim] (from `info`), shown as `image`; the photo and its upload go."""
        self.drop_upload()
        self.reset()
        self.state, self.latent, self.latent_info, self.photo = State.LATENT, ws, dict(info), image
        before = self.next_path("faceapp-before", ".png")
        image.save(before, compress_level=1)
        self.before = str(before)

    def close(self) -> None:
        """Forget the photo and results, and delete the session's files from disk."""
        self.reset()
        self.generated = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.upload:
            release_upload(self.upload)
            self.upload = None


# ---------------------------------------------------------------------------------- uploads and the registry

#: sha256 of the example photos: Gradio's cached copies of those serve every visitor, so they stay.
keep_digests: set[str] = set()
#: The live sessions by Gradio session hash, so closing the tab can clean at once.
sessions: dict[str, Session] = {}
_sessions_lock = threading.Lock()


def file_digest(path: str | os.PathLike) -> str | None:
    """sha256 of a file's bytes (None when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def upload_root() -> Path:
    """Gradio's cache folder, where uploads (and the sessions' folders) are."""
    return Path(get_upload_folder())


def remove_upload(path: str) -> None:
    """Delete an uploaded photo from Gradio's cache (unless it is one of the shared example photos)."""
    if file_digest(path) in keep_digests:
        return
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))  # Gradio keeps each upload in a folder of its own
    except OSError:
        pass


def release_upload(path: str) -> None:
    """Delete an upload no live session uses any more.

    Gradio stores identical uploads (same bytes and name) at one path, so two visitors can share a file; it is
    deleted only when the last session holding it lets go (Gradio's delete_cache sweeps whatever is left).
    """
    with _sessions_lock:
        in_use = any(s.upload == path for s in sessions.values())
    if not in_use:
        remove_upload(path)


def new_session(request) -> Session:
    """A new session for the visitor of `request` (a gr.Request; its session hash keys the registry)."""
    # Inside Gradio's cache folder, so results are served in place (not copied) and swept with it.
    root = upload_root()
    root.mkdir(parents=True, exist_ok=True)
    key = getattr(request, "session_hash", None)
    session = Session(workdir=Path(tempfile.mkdtemp(prefix="faceapp-", dir=root)), key=key)
    if key:
        with _sessions_lock:
            old = sessions.pop(key, None)
            sessions[key] = session
        if old is not None and old is not session:
            old.close()
    return session


def close_session(session: Session | None) -> None:
    """gr.State's delete_callback (the state expired): forget the session everywhere."""
    if isinstance(session, Session):
        with _sessions_lock:
            if session.key and sessions.get(session.key) is session:
                del sessions[session.key]
        session.close()


def end_session(request=None) -> None:
    """Tab closed or reloaded: drop this visitor's photo, latents and files now."""
    key = getattr(request, "session_hash", None)
    with _sessions_lock:
        session = sessions.pop(key, None) if key else None
    close_session(session)
