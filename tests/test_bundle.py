"""Model bundles: the random stand-in, folder / checkpoint / hub-snapshot loading, and clear failures."""

import json
import shutil

import numpy as np
import pytest
import torch

from faceapp.align import FFHQ_SPEC, utkface_spec
from faceapp.bundle import DEFAULT_DIRECTIONS, is_repo_id, load_bundle, make_random_bundle, save_bundle
from faceapp.errors import CheckpointError, ModelUnavailableError


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("b") / "bundle", resolution=32, seed=3)


def _render(G, seed=0):
    z = torch.from_numpy(np.random.RandomState(seed).randn(2, G.z_dim)).float()
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None), noise_mode="const")


def test_random_bundle_round_trip(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.untrained and b.resolution == 32 and b.encoder is None
    assert b.direction_names == list(DEFAULT_DIRECTIONS)
    assert b.align_spec == utkface_spec(32)
    assert "Untrained" in b.card and "python -m faceapp convert" in b.card
    for name in DEFAULT_DIRECTIONS:
        d = b.directions[name]
        assert d.vector.shape == (b.G.w_dim,) and abs(np.linalg.norm(d.vector) - 1) < 1e-5
        assert d.scale > 0  # calibrated on sampled latents: strength 1 = one std along it
    # w_avg is the mean of mapped samples (as training tracks it), not the zero it starts at
    assert b.G.mapping.w_avg.abs().sum() > 0
    # the same seed makes the same bundle; another seed another one
    again = load_bundle(make_random_bundle(bundle_dir.parent / "again", resolution=32, seed=3))
    other = load_bundle(make_random_bundle(bundle_dir.parent / "other", resolution=32, seed=4))
    assert torch.equal(_render(b.G), _render(again.G)) and not torch.equal(_render(b.G), _render(other.G))
    assert np.array_equal(b.directions["age"].vector, again.directions["age"].vector)
    assert b.model_id == load_bundle(bundle_dir).model_id != other.model_id  # a hash of the files
    # loading via bundle.json itself works too
    assert load_bundle(bundle_dir / "bundle.json").model_id == b.model_id


def test_random_bundle_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_random_bundle(tmp_path / "b", resolution=16, directions=("age",))
    assert torch.equal(torch.rand(3), expected)


def test_bundle_with_encoder_round_trip(tmp_path, bundle_dir):
    from faceapp.inversion.encoder import Encoder4Editing

    b = load_bundle(bundle_dir)
    torch.manual_seed(0)
    E = Encoder4Editing(num_ws=b.G.num_ws, w_dim=b.G.w_dim, img_resolution=32, blocks=[1, 1, 1, 1],
                        channels=[8, 8, 16, 16], head_channels=16).eval()
    save_bundle(tmp_path / "enc", G=b.G, encoder=E, directions=b.directions, align_spec=FFHQ_SPEC(32), name="e")
    b2 = load_bundle(tmp_path / "enc")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(b2.encoder(x), E(x))
    assert b2.align_spec == FFHQ_SPEC(32) and b2.name == "e" and not b2.untrained
    assert json.loads((tmp_path / "enc" / "bundle.json").read_text())["encoder"] == "encoder.safetensors"


def test_bare_checkpoint_is_a_bundle_without_edits(bundle_dir):
    b = load_bundle(bundle_dir / "generator.safetensors")
    assert b.align_spec == FFHQ_SPEC(32) and len(b.directions) == 0 and b.encoder is None
    assert torch.equal(_render(b.G), _render(load_bundle(bundle_dir).G))


def _hub_cache(tmp_path, bundle_dir, repo="someone/faceapp-tiny", commit="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face hub cache laid out as snapshot_download leaves it: blobs are plain copies here."""
    root = tmp_path / "hub"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(bundle_dir, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def offline_hub(monkeypatch, tmp_path, bundle_dir):
    from huggingface_hub import constants

    root = _hub_cache(tmp_path, bundle_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


def test_hub_repo_id_resolves_offline_from_cache(offline_hub, bundle_dir):
    b = load_bundle("someone/faceapp-tiny")
    assert b.root.parent.name == "snapshots" and b.model_id == load_bundle(bundle_dir).model_id  # same files
    assert b.direction_names == list(DEFAULT_DIRECTIONS)


def test_hub_repo_missing_offline_says_what_to_do(offline_hub):
    with pytest.raises(ModelUnavailableError, match="not in the local Hugging Face cache.*--model PATH"):
        load_bundle("someone/not-downloaded")


def test_hub_snapshot_without_bundle_json(offline_hub, tmp_path):
    snap = next((offline_hub / "models--someone--faceapp-tiny" / "snapshots").iterdir())
    (snap / "bundle.json").unlink()
    with pytest.raises(CheckpointError, match="no bundle.json"):
        load_bundle("someone/faceapp-tiny")


def test_repo_id_or_path():
    assert is_repo_id("user/repo") and is_repo_id("org-1/model.v2")
    assert not is_repo_id("models/demo/bundle.json") and not is_repo_id("just-a-name") and not is_repo_id("/abs/path")


def test_bad_bundles_fail_clearly(tmp_path, bundle_dir):
    with pytest.raises(ModelUnavailableError, match="no model at"):
        load_bundle(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="no bundle.json"):
        load_bundle(tmp_path / "empty")

    def variant(name, **changes):
        d = tmp_path / name
        shutil.copytree(bundle_dir, d)
        meta = json.loads((d / "bundle.json").read_text())
        meta.update(changes)
        (d / "bundle.json").write_text(json.dumps(meta))
        return d

    with pytest.raises(CheckpointError, match="not a faceapp bundle"):
        load_bundle(variant("fmt", format="something.else"))
    with pytest.raises(CheckpointError, match="leaves the bundle folder"):
        load_bundle(variant("escape", generator="../bundle/generator.safetensors"))
    with pytest.raises(CheckpointError, match="is missing"):
        load_bundle(variant("missing", encoder="encoder.safetensors"))
    with pytest.raises(CheckpointError, match="newer|reads up to"):
        load_bundle(variant("future", version=99))
    with pytest.raises(CheckpointError, match="align"):
        load_bundle(variant("align", align={"kind": "banana", "size": 32}))
    broken = variant("json")
    (broken / "bundle.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_bundle(broken)


def test_mistyped_bundle_json_fails_clearly(tmp_path, bundle_dir):
    def variant(name, meta_fn):
        d = tmp_path / name
        shutil.copytree(bundle_dir, d)
        meta = json.loads((d / "bundle.json").read_text())
        (d / "bundle.json").write_text(json.dumps(meta_fn(meta)))
        return d

    with pytest.raises(CheckpointError, match="must be a path string"):
        load_bundle(variant("gen5", lambda m: {**m, "generator": 5}))
    with pytest.raises(CheckpointError, match="version must be an integer"):
        load_bundle(variant("ver", lambda m: {**m, "version": "1.0"}))
    with pytest.raises(CheckpointError, match="JSON object"):
        load_bundle(variant("list", lambda m: [m]))


# ------------------------------------------------------------------ named bundles, provenance


def test_cache_dir_and_named_bundles(tmp_path, monkeypatch, bundle_dir):
    from faceapp.bundle import cache_dir, named_model_dir

    monkeypatch.delenv("FACEAPP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "faceapp"
    monkeypatch.setenv("FACEAPP_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" and named_model_dir("ffhq") == tmp_path / "cache" / "models" / "ffhq"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelUnavailableError, match="python -m faceapp fetch ffhq"):
        load_bundle("ffhq")
    shutil.copytree(bundle_dir, tmp_path / "cache" / "models" / "tiny")
    assert load_bundle("tiny").root == tmp_path / "cache" / "models" / "tiny"
    shutil.copytree(bundle_dir, tmp_path / "tiny")  # a folder of that name here wins
    assert load_bundle("tiny").root.resolve() == tmp_path / "tiny"


def test_saved_directions_record_their_generator_and_another_is_refused(tmp_path, bundle_dir):
    from faceapp.edits import DirectionMismatchError, generator_fingerprint

    b = load_bundle(bundle_dir)
    rec = b.directions.meta["generator"]
    assert rec == generator_fingerprint(b.G) and rec["w_dim"] == b.G.w_dim and rec["num_ws"] == b.G.num_ws
    other = load_bundle(make_random_bundle(tmp_path / "other", resolution=32, seed=9))  # same shapes, other weights
    assert generator_fingerprint(other.G)["mapping_id"] != rec["mapping_id"]
    with pytest.raises(DirectionMismatchError, match="--force-directions"):
        save_bundle(tmp_path / "mixed", G=other.G, directions=b.directions, align_spec=FFHQ_SPEC(32))
    assert not (tmp_path / "mixed" / "bundle.json").exists()
    save_bundle(tmp_path / "mixed", G=other.G, directions=b.directions, align_spec=FFHQ_SPEC(32),
                force_directions=True)
    mixed = load_bundle(tmp_path / "mixed")  # accepted once, on purpose: recorded, and loads after
    assert mixed.directions.meta["forced"] and mixed.directions.meta["generator"] == generator_fingerprint(other.G)


def test_fp16_bundle_halves_the_files(tmp_path, bundle_dir):
    from faceapp.edits import DirectionMismatchError

    b = load_bundle(bundle_dir)
    save_bundle(tmp_path / "full", G=b.G, align_spec=b.align_spec)
    save_bundle(tmp_path / "half", G=b.G, align_spec=b.align_spec, dtype=torch.float16)
    full, half = (tmp_path / d / "generator.safetensors" for d in ("full", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_bundle(tmp_path / "half")
    assert next(loaded.G.parameters()).dtype == torch.float32
    # Directions are checked against the weights as stored: ones made on the float32 G are not theirs.
    with pytest.raises(DirectionMismatchError):
        save_bundle(tmp_path / "half2", G=b.G, directions=b.directions, align_spec=b.align_spec,
                    dtype=torch.float16)
    assert (_render(loaded.G) - _render(b.G)).abs().max() < 0.02
    assert torch.equal(next(b.G.parameters()), next(load_bundle(bundle_dir).G.parameters()))  # b.G untouched
