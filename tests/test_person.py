"""The person segmenter (MediaPipe selfie segmentation run with LiteRT) the hair finder uses: it covers the person
and not the backdrop, it refuses a model file that is not the one shipped, and without LiteRT the caller is told
and goes on without it."""

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from faceapp.align import detect_faces, person
from faceapp.align.paste import face_hull, head_hull
from faceapp.imageio import load_image

DATA = Path(__file__).parent / "data"


def _inside(hull, shape):
    import cv2

    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(hull).astype(np.int32)], 1)
    return m.astype(bool)


#: these run the model (or LiteRT itself); the one without LiteRT runs everywhere
needs_litert = pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                                  reason="ai-edge-litert is not installed")


@pytest.fixture()
def fresh(monkeypatch):
    """person.py's interpreter made anew for this test (and the shared one restored after)."""
    monkeypatch.setattr(person, "_STATE", {})
    return person


@needs_litert
def test_the_person_is_covered_and_the_backdrop_is_not(fresh):
    photo = load_image(DATA / "astronaut.jpg")
    lm = detect_faces(photo)[0].landmarks68
    rgb = np.asarray(photo)
    p = fresh.person_mask(rgb)
    assert p.shape == rgb.shape[:2] and p.dtype == np.float32 and 0.0 <= p.min() and p.max() <= 1.0
    face = _inside(face_hull(lm, forehead=0.0), p.shape)
    assert p[face].mean() > 0.9
    up = lm[17:27].mean(0) - lm[8]
    crown = np.round(lm[17:27].mean(0) + 0.45 * up).astype(int)  # her hair above the forehead
    assert p[crown[1] - 3:crown[1] + 4, crown[0] - 3:crown[0] + 4].min() > 0.5
    # the wall above and beside her head (the flag and the shuttle are further out)
    wall = ~_inside(head_hull(lm, top=1.2, widen=1.8, neck=0.0), p.shape)
    wall[int(lm[8][1]):] = False
    assert (p[wall] < 0.2).mean() > 0.9
    # the same photo at another size: the same answer, scaled
    half = fresh.person_mask(rgb[::2, ::2].copy())
    assert np.abs(half - p[::2, ::2]).mean() < 0.05


@needs_litert
def test_a_model_file_that_is_not_the_shipped_one_is_refused(fresh, tmp_path, monkeypatch, caplog):
    altered = tmp_path / "selfie_segmentation.tflite"
    data = bytearray(fresh.MODEL_FILE.read_bytes())
    data[-100] ^= 0xFF
    altered.write_bytes(bytes(data))
    monkeypatch.setattr(fresh, "MODEL_FILE", altered)
    with caplog.at_level(logging.WARNING, logger="faceapp.align.person"):
        assert not fresh.available()
        assert fresh.person_mask(np.zeros((40, 40, 3), np.uint8)) is None
    assert "missing or altered" in caplog.text


def test_without_litert_the_caller_is_told_and_gets_none(fresh, monkeypatch, caplog):
    import builtins

    real = builtins.__import__

    def no_litert(name, *a, **k):
        if name.startswith("ai_edge_litert"):
            raise ImportError("no LiteRT here")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with caplog.at_level(logging.WARNING, logger="faceapp.align.person"):
        assert fresh.person_mask(np.zeros((40, 40, 3), np.uint8)) is None
    assert "pip install ai-edge-litert" in caplog.text


@needs_litert
def test_a_runtime_that_cannot_run_the_model_is_told_and_gets_none(fresh, monkeypatch, caplog):
    """The model's transposed convolutions are a MediaPipe custom op that LiteRT runs in its XNNPACK delegate; a
    LiteRT build without it fails to prepare the model. The hair finder then goes on without the segmenter."""
    from ai_edge_litert import interpreter

    class NoDelegate(interpreter.Interpreter):
        def allocate_tensors(self):
            raise RuntimeError("Encountered unresolved custom op: Convolution2DTransposeBias.")

    monkeypatch.setattr(interpreter, "Interpreter", NoDelegate)
    with caplog.at_level(logging.WARNING, logger="faceapp.align.person"):
        assert fresh.person_mask(np.zeros((40, 40, 3), np.uint8)) is None
    assert "Convolution2DTransposeBias" in caplog.text and "without it" in caplog.text
