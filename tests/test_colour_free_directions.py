"""training/colour_free_directions.py: skin-tone directions found by regression, edits made orthogonal to them."""

import numpy as np
import pytest

from training.colour_free_directions import main, skin_polygon, skin_tone_directions


def test_skin_tone_directions_recover_a_known_linear_map():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2000, 16))
    true = np.linalg.qr(rng.standard_normal((16, 3)))[0]  # [16, 3]
    lab = w @ true @ np.diag([10.0, 4.0, 6.0]) + 0.1 * rng.standard_normal((2000, 3))
    q, r2 = skin_tone_directions(w, lab)
    assert min(r2) > 0.99
    # the same 3-D subspace: projecting the true directions onto q keeps them whole
    assert np.allclose(np.linalg.norm(q.T @ true, axis=0), 1.0, atol=1e-3)


def test_skin_polygon_covers_cheeks_nose_mouth_of_the_template():
    from faceapp.align import utkface_spec

    pts = skin_polygon(utkface_spec(200), 200)
    assert pts.shape == (5, 2)
    assert 55 < pts[:, 0].min() < pts[:, 0].max() < 145 and 70 < pts[:, 1].min() < pts[:, 1].max() < 160


@pytest.mark.slow
def test_written_directions_are_orthogonal_to_skin_tone(tmp_path):
    import json

    from faceapp.bundle import load_bundle, make_random_bundle
    from faceapp.edits import DirectionSet

    b = make_random_bundle(tmp_path / "b", resolution=32, seed=2)
    assert main(["--bundle", str(b), "--out", str(tmp_path / "out"), "--num-samples", "300",
                 "--eval-samples", "16"]) == 0
    ds = DirectionSet.load(tmp_path / "out")
    old = load_bundle(b).directions
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(rep["directions"]) == set(old)
    q = np.asarray(rep["skin_basis"])  # [3, w_dim]
    for name in old:
        d = ds[name]
        assert np.abs(q @ d.vector).max() < 1e-5  # nothing left along skin tone
        assert np.abs(q @ old[name].vector).max() > 1e-3
        assert np.isclose(np.linalg.norm(d.vector), 1.0, atol=1e-5)
        assert d.metrics["colour_free"]["removed_norm"] > 0
        assert d.scale > 0 and d.scale != old[name].scale  # measured again for the new vector
