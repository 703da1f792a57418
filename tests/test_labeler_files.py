"""The labelers' files (training/age_gender.py save_labeler / read_labeler, used by AgeGenderModel and
GlassesModel): round trips and the errors a user meets."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from faceapp.errors import CheckpointError
from training.age_gender import AgeGenderModel
from training.face_labels import GlassesModel


def test_age_gender_model_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    m = AgeGenderModel(rng.normal(size=(20, 128)), rng.uniform(1, 90, 20), 5, rng.normal(size=128),
                       rng.uniform(0.5, 2, 128), rng.normal(size=128), 0.25, {"age_mae_years": 7.5})
    path = tmp_path / "sub" / "ag.safetensors"
    m.save(path)  # the folder is made
    back = AgeGenderModel.load(path)
    desc = rng.normal(size=(3, 128))
    assert back.k == 5 and back.gender_intercept == 0.25 and back.metrics == {"age_mae_years": 7.5}
    assert np.allclose(back.age(desc), m.age(desc)) and np.allclose(back.p_female(desc), m.p_female(desc))
    with pytest.raises(CheckpointError, match="age/gender labeler not found: .*fit-age-gender --out PATH"):
        AgeGenderModel.load(tmp_path / "missing.safetensors")
    save_file({"x": np.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "other"})
    with pytest.raises(CheckpointError, match="not an age/gender labeler of this version"):
        AgeGenderModel.load(tmp_path / "other.safetensors")


def test_glasses_model_round_trip_and_errors(tmp_path):
    m = GlassesModel(np.arange(6, dtype=np.float64), -1.5, {"train_images": 10})
    path = tmp_path / "g.safetensors"
    m.save(path)
    back = GlassesModel.load(path)
    assert np.array_equal(back.coef, m.coef) and back.intercept == -1.5 and back.metrics == {"train_images": 10}
    with pytest.raises(CheckpointError, match="glasses labeler not found: .*fit-glasses --labels LABELS.json"):
        GlassesModel.load(tmp_path / "missing.safetensors")
    save_file({"coef": np.zeros(6), "intercept": np.zeros(1)}, str(tmp_path / "hog.safetensors"),
              metadata={"format": GlassesModel.FORMAT, "band": "[0, 1]", "cell": "1"})
    with pytest.raises(CheckpointError, match="other HOG settings"):
        GlassesModel.load(tmp_path / "hog.safetensors")
    save_file({"x": np.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "other"})
    with pytest.raises(CheckpointError, match="is not a glasses labeler"):
        GlassesModel.load(tmp_path / "other.safetensors")
