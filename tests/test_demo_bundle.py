"""The bundled demo model in models/demo/: it loads, it is small enough for a Space repo, it draws faces."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceapp.bundle import load_bundle

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"

pytestmark = pytest.mark.skipif(not (DEMO / "bundle.json").is_file(), reason="no demo bundle in models/demo/")


def test_demo_bundle_is_small_trained_and_says_its_terms():
    for f in DEMO.rglob("*"):
        if f.is_file():
            assert f.stat().st_size <= 10 * 2**20, f"{f} is over 10 MB (a Space repo needs LFS for that)"
    b = load_bundle(DEMO)
    assert not b.untrained and b.align_spec.kind == "template" and b.resolution == b.align_spec.size
    card = (DEMO / "MODEL_CARD.md").read_text()
    assert "Non-commercial research use only" in card and "UTKFace" in card
    figures = json.loads((DEMO / "figures.json").read_text())
    assert figures["kimg"] > 0 and figures["fd_floor"] < figures["fd_dlib"]


def test_demo_generator_draws_faces_that_dlib_finds():
    from PIL import Image

    from faceapp.align import detect_faces

    b = load_bundle(DEMO)
    z = torch.randn([12, b.G.z_dim], generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        img = b.G(z, None, truncation_psi=0.7, noise_mode="const")  # [12, 3, r, r]
    found = 0
    for x in img:
        arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        big = Image.fromarray(arr).resize((200, 200), Image.Resampling.BICUBIC)
        found += bool(detect_faces(big, backend="dlib", allow_none=True))
    assert found >= 9, f"dlib found a face in only {found} of 12 samples"
    assert float(img.std()) > 0.2 and np.isfinite(img.numpy()).all()
