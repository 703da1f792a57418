"""Where the person is in a photo: MediaPipe's selfie segmentation (a 250 KB TFLite model shipped with faceapp), for
telling hair from the backdrop behind it.

Hair and a backdrop can share a colour (dark hair before a dark wall, blond hair before a beige one), and a tight
crop (a close selfie, a dataset's face chip) shows no forehead-to-crown walk to find the hair's end along. A person
segmenter trained on selfies knows the head's outline, hair included, whatever its colour.

The model runs with LiteRT (`ai-edge-litert`, Google's TFLite runtime). Where that package is not installed (it has
no wheels for some platforms) `person_mask` returns None and the hair finder goes on without it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import cv2
import numpy as np

__all__ = ["MODEL_FILE", "MODEL_SHA256", "person_mask", "available"]

MODEL_FILE = Path(__file__).with_name("models") / "selfie_segmentation.tflite"
MODEL_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"
#: The model's input side (it takes the photo stretched to a square, as MediaPipe's own graph feeds it).
SIDE = 256

_log = logging.getLogger(__name__)
_LOCK = threading.Lock()  # a LiteRT interpreter is not thread-safe: the app's workers share one, in turn
_STATE: dict = {}


def _interpreter():
    """The shared interpreter, made on first use; None (once logged) where LiteRT or the model is missing."""
    if "it" in _STATE:
        return _STATE["it"]
    it = None
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        _log.warning("ai-edge-litert is not installed: grey hair is found without the person segmenter "
                     "(pip install ai-edge-litert)")
    else:
        data = MODEL_FILE.read_bytes() if MODEL_FILE.is_file() else b""
        if hashlib.sha256(data).hexdigest() != MODEL_SHA256:
            _log.warning("%s is missing or altered: grey hair is found without the person segmenter", MODEL_FILE)
        else:
            try:  # its transposed convolutions are MediaPipe's custom op, which LiteRT runs in its XNNPACK delegate
                it = Interpreter(model_content=data, num_threads=1)
                it.allocate_tensors()
            except (RuntimeError, ValueError) as e:
                _log.warning("LiteRT cannot run the person segmenter here (%s): grey hair is found without it", e)
                it = None
    _STATE["it"] = it
    return it


def available() -> bool:
    """Whether `person_mask` can run here (LiteRT installed, the model file intact)."""
    with _LOCK:
        return _interpreter() is not None


def person_mask(rgb: np.ndarray) -> np.ndarray | None:
    """float32 [H, W] in [0, 1]: how likely each pixel of `rgb` (uint8 [H, W, 3]) is part of a person (hair,
    face, body); None where the segmenter cannot run. ~8 ms on one core, whatever the photo's size."""
    if not available():
        return None
    h, w = rgb.shape[:2]
    x = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    x = (x.astype(np.float32) / 255.0)[None]  # [1, 256, 256, 3], RGB in [0, 1]
    with _LOCK:
        it = _interpreter()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        p = it.get_tensor(it.get_output_details()[0]["index"])[0, ..., 0].copy()  # [256, 256]
    return np.clip(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0).astype(np.float32)
