"""faceapp.stylegan.safe_load.checkpoint_file: the one "is it a checkpoint file" check of the importers."""

from __future__ import annotations

import pytest

from faceapp.errors import CheckpointError
from faceapp.inversion.e4e_import import read_e4e_checkpoint
from faceapp.stylegan.legacy import detect_format
from faceapp.stylegan.safe_load import checkpoint_file


def test_missing_files_and_folders_are_refused_with_what_was_expected(tmp_path):
    missing = tmp_path / "missing.pt"
    for read in (detect_format, read_e4e_checkpoint, checkpoint_file):
        with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pt"):
            read(missing)
    with pytest.raises(CheckpointError, match="is a folder; expected a checkpoint file"):
        detect_format(tmp_path)
    with pytest.raises(CheckpointError, match="is a folder; expected an e4e .pt checkpoint file"):
        read_e4e_checkpoint(tmp_path)
    f = tmp_path / "x.bin"
    f.write_bytes(b"x")
    assert checkpoint_file(f) == str(f)
