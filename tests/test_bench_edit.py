"""bench/edit.py: the photos its figures and grids are measured on."""

from __future__ import annotations

from faceapp.errors import ImageError, NoFaceError


class FakeEditor:
    """Detects a face in every photo but 'empty'; preparing 'broken' fails."""

    def __init__(self):
        self.prepared = []

    def detect(self, photo):
        if photo == "empty":
            raise NoFaceError("no face in empty")
        return [f"face of {photo}"]

    def prepare(self, photo, *, faces, mode, detected):
        assert faces == "largest" and detected == [f"face of {photo}"]
        if photo == "broken":
            raise ImageError("cannot prepare broken")
        self.prepared.append((photo, mode))
        return f"prepared {photo}"


def test_prepared_photos_skip_those_the_editor_cannot_prepare(bench_script):
    edit = bench_script("edit")
    editor = FakeEditor()
    photos = [("a", "pa"), ("b", "empty"), ("c", "broken"), ("d", "pd")]
    got = list(edit.prepared_photos(editor, photos, mode="balanced"))
    assert got == [("a", "pa", ["face of pa"], "prepared pa"), ("d", "pd", ["face of pd"], "prepared pd")]
    assert editor.prepared == [("pa", "balanced"), ("pd", "balanced")]
