"""bench/readme_figure.py: the README's before/after strip, on the random stand-in bundle."""

import numpy as np
from PIL import Image

from faceapp.bundle import make_random_bundle


def test_face_square_stays_inside_the_photo(bench_script):
    fig = bench_script("readme_figure")
    assert fig.face_square((10, 10, 30, 30), (100, 80)) == (1, 0, 39, 38)
    left, top, right, bottom = fig.face_square((80, 60, 100, 80), (100, 80))  # at the corner: shifted in
    assert right <= 100 and bottom <= 80 and right - left == bottom - top == 38
    assert fig.face_square((0, 0, 90, 90), (100, 80)) == (5, 0, 85, 80)  # never bigger than the photo


def test_strip_shows_the_photo_then_each_edit(tmp_path, bench_script):
    fig = bench_script("readme_figure")
    bundle = make_random_bundle(tmp_path / "b")
    out = tmp_path / "strip.png"
    assert fig.main(["--bundle", str(bundle), "--out", str(out), "--mode", "fast", "--size", "64"]) == 0
    strip = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert strip.shape == (64 + 24, 5 * 64, 3)  # photo, older, younger, smiling, glasses; a label band under each
    panels = [strip[:64, i * 64:(i + 1) * 64] for i in range(5)]
    for edited in panels[1:]:  # every edit changed the face (the stand-in's directions are random, not nothing)
        assert np.abs(edited - panels[0]).mean() > 0.5
    assert np.abs(panels[1] - panels[2]).mean() > 0.5  # older and younger differ
