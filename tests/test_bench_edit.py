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


def test_summary_counts_faces_whose_gender_the_edit_kept(bench_script):
    """The labeler's P(female) crossing 0.5 between the photo and the result is a face whose gender the edit
    changed; faces measured without a labeler (NaN) are left out of that share, and no labeler at all gives None."""
    edit = bench_script("edit")

    def face(p0, p1, change=16.0):
        return {"name": "x", "true_age": 30, "age0": 30.0, "seconds": 0.1,
                "edits": {"older": {"age_change": change, "knn_age_change": change, "distance": 0.3,
                                    "skin_delta_e": 1.0, "detail_energy": 5.0, "p_female": [p0, p1]}}}

    rows = [face(0.9, 0.8), face(0.2, 0.6), face(0.7, 0.4), face(0.1, 0.1), face(float("nan"), float("nan"))]
    out = edit.summarise({"faces": rows, "grey": []}, {"older": {}}, older="older", younger=None,
                         progress=lambda s: None)
    assert out["older"]["gender_kept"] == 0.5 and out["older"]["faces"] == 5
    nan = float("nan")
    out = edit.summarise({"faces": [face(nan, nan)], "grey": []}, {"older": {}}, older="older", younger=None,
                         progress=lambda s: None)
    assert out["older"]["gender_kept"] is None
