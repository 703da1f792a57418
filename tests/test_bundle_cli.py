"""`python -m faceapp bundle`: a bundle from a file in each official format; provenance refusals; hostile files.

The files are built here, small, in the exact official formats: an NVIDIA stylegan2-ada-pytorch .pkl
(through the fake torch_utils/dnnlib of test_legacy_import, whose module_src would leave a marker file
if it were ever executed), a rosinality .pt, e4e's e4e_ffhq_encode.pt (test_encoder's builder), e4e
direction .pt tensors (pose [1, num_ws, w_dim] stored on 'cuda:0' as the published pose.pt is),
InterFaceGAN .npy boundaries and a GANSpace .npz.
"""

import argparse
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from faceapp import cli
from faceapp.bundle import build_bundle, load_bundle
from faceapp.edits import DirectionMismatchError, apply_edits, generator_fingerprint
from faceapp.errors import UnsafeCheckpointError
from faceapp.inversion import import_e4e_checkpoint
from faceapp.inversion.e4e_import import read_e4e_checkpoint
from faceapp.stylegan import Generator
from faceapp.stylegan.converters import convert_rosinality_generator
from faceapp.stylegan.legacy import import_checkpoint

try:
    from tests import ref_stylegan2 as ref
    from tests.test_encoder import e4e_file
    from tests.test_legacy_import import HOSTILE_SRC, FakeNvidia, nvidia_generator_kwargs, write_nvidia_pkl
except ImportError:  # tests/ is on sys.path (pytest rootdir-relative import)
    import ref_stylegan2 as ref
    from test_encoder import e4e_file
    from test_legacy_import import HOSTILE_SRC, FakeNvidia, nvidia_generator_kwargs, write_nvidia_pkl

DATA = Path(__file__).parent / "data"
NUM_WS, W_DIM, RES = 8, 8, 32  # the size of test_encoder's e4e look-alike (its decoder is 32 px)


# ---------------------------------------------------------------------------------------------
# Builders of official-format files (also used by test_fetch_ffhq.py).


def save_on_cuda(tensor, path):
    """torch.save as on a GPU machine: the storages' location is 'cuda:0' (as e4e's published pose.pt)."""
    import torch.serialization as ts

    orig = ts.location_tag
    ts.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(tensor, path)
    finally:
        ts.location_tag = orig
    return path


def nvidia_pkl_from_rosinality(path, g_sd, latent_avg, marker):
    """A stylegan2-ada-pytorch snapshot (G, G_ema, augment_pipe, training_set_kwargs) holding `g_sd`'s weights."""
    g_kwargs, g_nv = convert_rosinality_generator(g_sd, latent_avg=latent_avg)
    kwargs = {k: v for k, v in g_kwargs.items() if k != "_class"}
    fresh = Generator(**kwargs).state_dict()
    g_nv.update({k: v for k, v in fresh.items() if k.endswith("resample_filter")})
    G = Generator(**kwargs)
    with FakeNvidia(Path(path).parent / f"fake-{Path(path).stem}") as fake:
        E = fake.dnnlib.EasyDict
        attrs = dict(z_dim=G.z_dim, w_dim=G.w_dim, img_resolution=G.img_resolution, num_ws=G.num_ws)
        g = fake.module("Generator", g_nv, nvidia_generator_kwargs(g_kwargs, E), HOSTILE_SRC.format(marker=str(marker)),
                        attrs)
        write_nvidia_pkl(path, dict(G=g, G_ema=g, augment_pipe=None,
                                    training_set_kwargs=E(class_name="training.dataset.ImageFolderDataset",
                                                          path="ffhq32.zip", resolution=G.img_resolution)))
    return path


def rosinality_pt(path, g_sd, latent_avg):
    """A rosinality stylegan2-pytorch checkpoint holding `g_sd` as g_ema (and g)."""
    torch.save({"g_ema": g_sd, "g": g_sd, "latent_avg": latent_avg,
                "args": argparse.Namespace(size=RES, latent=W_DIM, n_mlp=2, channel_multiplier=2)}, path)
    return path


def unit(v):
    return v / v.norm()


def direction_files(folder, w_dim=W_DIM, num_ws=NUM_WS, seed=0):
    """e4e's age.pt / smile.pt ([1, w_dim]) and pose.pt ([1, num_ws, w_dim], equal unit rows, on 'cuda:0')."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    age, smile = unit(torch.randn(1, w_dim, generator=g)), unit(torch.randn(1, w_dim, generator=g))
    pose = unit(torch.randn(w_dim, generator=g)).repeat(1, num_ws, 1)  # [1, num_ws, w_dim], norm sqrt(num_ws)
    torch.save(age, folder / "age.pt")
    torch.save(smile, folder / "smile.pt")
    save_on_cuda(pose, folder / "pose.pt")
    return dict(age=age, smile=smile, pose=pose)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """One file in each official format, all for the same 32 px generator (and one foreign generator)."""
    root = tmp_path_factory.mktemp("official")
    marker = root / "module_src_ran"
    e4e = e4e_file(root / "e4e_ffhq_encode.pt", latent_avg_shape="full", opts_as="namespace", seed=0)
    pkl = nvidia_pkl_from_rosinality(root / "ffhq.pkl", e4e["dec"], e4e["latent_avg"], marker)
    pt = rosinality_pt(root / "stylegan2-ffhq-config-f.pt", e4e["dec"], e4e["latent_avg"])
    other_sd = ref.random_generator_state(size=RES, style_dim=W_DIM, n_mlp=2,
                                          channels={4: 16, 8: 16, 16: 16, 32: 8}, seed=7)
    other = rosinality_pt(root / "other.pt", other_sd, torch.zeros(W_DIM))
    dirs = direction_files(root / "dirs")
    rng = np.random.default_rng(3)
    smile_npy = root / "stylegan2_ffhq_smile_w_boundary.npy"
    np.save(smile_npy, (lambda v: v / np.linalg.norm(v))(rng.normal(size=(1, W_DIM))).astype(np.float32))
    sg1_npy = root / "stylegan_ffhq_age_w_boundary.npy"  # InterFaceGAN's StyleGAN1 boundary (same shape!)
    np.save(sg1_npy, (lambda v: v / np.linalg.norm(v))(rng.normal(size=(1, W_DIM))).astype(np.float32))
    comp = rng.normal(size=(4, 1, W_DIM)).astype(np.float32)
    comp /= np.linalg.norm(comp, axis=-1, keepdims=True)
    ganspace = root / "stylegan2-ffhq_style_ipca_c4_n1000_w.npz"
    np.savez(ganspace, lat_comp=comp, lat_mean=np.zeros((1, W_DIM), np.float32),
             lat_stdev=np.array([3, 2, 1, 0.5], np.float32), var_ratio=np.full(4, 0.1, np.float32))
    return dict(root=root, marker=marker, e4e=e4e, pkl=pkl, pt=pt, other=other, dirs=dirs, smile_npy=smile_npy,
                sg1_npy=sg1_npy, ganspace=ganspace, comp=comp)


def run(*args):
    return cli.main(["bundle", *map(str, args)])


# ---------------------------------------------------------------------------------------------


def test_bundle_from_every_official_format_then_edit(official, tmp_path, capsys):
    o, out = official, tmp_path / "ffhq-bundle"
    d = o["root"] / "dirs"
    assert run("--generator", o["pkl"], "--out", out, "--encoder", o["e4e"]["path"],
               "--directions", d / "age.pt", d / "smile.pt", d / "pose.pt", "--directions",
               f"grin={o['smile_npy']}", o["ganspace"]) == 0
    said = capsys.readouterr().out
    assert "encoder yes" in said and "age, smile" in said and "note:" not in said
    assert not o["marker"].exists()  # the pickle's module_src never ran

    b = load_bundle(out)
    assert b.encoder is not None and b.align_spec.kind == "ffhq" and b.resolution == RES
    assert b.direction_names[:2] == ["age", "smile"] and set(b.direction_names) == {
        "age", "smile", "pose", "grin", "pc0", "pc1", "pc2", "pc3"}
    # The generator is the pkl's, exactly.
    ref_G = import_checkpoint(o["pkl"]).nets["G_ema"]
    ws = torch.randn(2, NUM_WS, W_DIM)
    with torch.no_grad():
        torch.testing.assert_close(b.G.synthesis(ws, noise_mode="const"), ref_G.synthesis(ws, noise_mode="const"))
        img = torch.rand(1, 3, RES, RES) * 2 - 1
        torch.testing.assert_close(b.encoder(img), import_e4e_checkpoint(o["e4e"]["path"])[0](img))
    # e4e's edit, exactly: latent + factor * direction (age over all layers, pose per layer).
    dirs = o["dirs"]
    torch.testing.assert_close(apply_edits(ws, b.directions, {"age": 2.5}), ws + 2.5 * dirs["age"], atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_edits(ws, b.directions, {"pose": -1.5}), ws - 1.5 * dirs["pose"], atol=1e-5,
                               rtol=0)
    assert b.directions["pose"].per_layer and b.directions["grin"].source.startswith("interfacegan:stylegan2_")
    np.testing.assert_allclose(b.directions["pc1"].vector, o["comp"][1, 0], atol=1e-6)
    # Provenance: the set records this generator; build options and sources sit beside it.
    rec = b.directions.meta["generator"]
    assert rec["mapping_id"] == generator_fingerprint(b.G)["mapping_id"] and rec["source"] == "ffhq.pkl"
    assert rec["family"] == "stylegan2" and rec["stylegan_version"] == 2 and rec["num_ws"] == NUM_WS
    doc = json.loads((out / "bundle.json").read_text())
    assert doc["sources"]["generator"] == {"file": "ffhq.pkl", "format": "nvidia-pkl"}
    assert doc["sources"]["encoder"]["format"] == "e4e-pt" and doc["build_options"]["align"] == "ffhq"

    # `edit` runs on it: the photo comes back the same size, and older differs from no edit.
    photo = DATA / "astronaut.jpg"
    for name, extra in (("old.png", ["--age", "3"]), ("same.png", [])):
        assert cli.main(["edit", str(photo), "--model", str(out), "--out", str(tmp_path / name), *extra]) == 0
    from PIL import Image

    old, same, src = (Image.open(p) for p in (tmp_path / "old.png", tmp_path / "same.png", photo))
    assert old.size == same.size == src.size
    assert np.abs(np.asarray(old, np.int16) - np.asarray(same, np.int16)).max() > 0


def test_rosinality_pt_and_our_format_and_utkface_crop(official, tmp_path):
    o = official
    out = build_bundle(tmp_path / "b", generator=o["pt"], directions=[o["root"] / "dirs" / "age.pt"], align="utkface",
                       name="ros")
    b = load_bundle(out)
    assert b.name == "ros" and b.encoder is None and b.align_spec.kind == "template" and list(b.directions) == ["age"]
    # --calibrate: strength 1 = one std of the generator's latents along the direction.
    age = o["root"] / "dirs" / "age.pt"
    cal = load_bundle(build_bundle(tmp_path / "cal", generator=o["pt"], directions=iter([age]), calibrate=4000))
    with torch.no_grad():
        w = cal.G.mapping(torch.randn(20000, cal.G.z_dim, generator=torch.Generator().manual_seed(9)), None)[:, 0]
    v = torch.as_tensor(cal.directions["age"].vector)
    assert cal.directions["age"].scale == pytest.approx(float((w @ v).std()), rel=0.05)
    assert cal.directions["age"].scale != pytest.approx(b.directions["age"].scale, rel=0.05)
    # Our own format as input, and our own direction set folder (names its own directions).
    assert cli.main(["convert", str(o["pt"]), str(tmp_path / "g.safetensors")]) == 0
    out2 = build_bundle(tmp_path / "b2", generator=tmp_path / "g.safetensors", directions=[out / "directions"])
    assert list(load_bundle(out2).directions) == ["age"]


def test_same_weights_in_another_format_count_as_the_same_generator(official, tmp_path):
    o = official
    a = build_bundle(tmp_path / "a", generator=o["pkl"], directions=[o["root"] / "dirs" / "age.pt"])
    # The pkl's directions go onto the rosinality file of the same weights: the mapping probe matches.
    b = build_bundle(tmp_path / "b", generator=o["pt"], directions=[a / "directions"])
    assert list(load_bundle(b).directions) == ["age"]


def test_directions_for_another_generator_are_refused(official, tmp_path, capsys):
    o = official
    d = o["root"] / "dirs"
    # StyleGAN1 InterFaceGAN boundary on StyleGAN2: same [1, w_dim] shape, refused by its name.
    assert run("--generator", o["pkl"], "--out", tmp_path / "x", "--directions", o["sg1_npy"]) == 2
    err = capsys.readouterr().err
    assert "StyleGAN1" in err and "StyleGAN2" in err and "--force-directions" in err and "\n" not in err.strip()
    assert not (tmp_path / "x" / "bundle.json").exists()
    # ... unless forced; the bundle records that it was.
    assert run("--generator", o["pkl"], "--out", tmp_path / "forced", "--directions", o["sg1_npy"],
               "--force-directions") == 0
    assert "note: directions accepted with --force-directions" in capsys.readouterr().out
    forced = load_bundle(tmp_path / "forced")
    assert "StyleGAN1" in forced.directions.meta["forced"][0] and list(forced.directions) == ["age"]

    # A different w_dim, and a per-layer direction for another num_ws.
    torch.save(torch.randn(1, 2 * W_DIM), tmp_path / "wide.pt")
    with pytest.raises(DirectionMismatchError, match="width 16"):
        build_bundle(tmp_path / "y", generator=o["pkl"], directions=[tmp_path / "wide.pt"])
    torch.save(torch.randn(1, NUM_WS + 2, W_DIM), tmp_path / "pose18.pt")
    with pytest.raises(DirectionMismatchError, match="10 W\\+ rows"):
        build_bundle(tmp_path / "y", generator=o["pkl"], directions=[tmp_path / "pose18.pt"])

    # Another bundle's directions (same shapes, another model) on this generator.
    a = build_bundle(tmp_path / "a", generator=o["pkl"], directions=[d / "age.pt"])
    assert run("--generator", o["other"], "--out", tmp_path / "z", "--directions", a / "directions") == 2
    err = capsys.readouterr().err
    assert "made for a StyleGAN2 generator" in err and "from ffhq.pkl" in err


def test_load_bundle_refuses_a_set_for_another_model_unless_forced(official, tmp_path, monkeypatch):
    o = official
    out = build_bundle(tmp_path / "b", generator=o["pkl"], directions=[o["root"] / "dirs" / "age.pt"])
    jpath = out / "directions" / "directions.json"
    doc = json.loads(jpath.read_text())
    doc["meta"]["generator"].update(mapping_id="0123456789abcdef", probe=[0.5] * 16, source="someone-else.pkl")
    jpath.write_text(json.dumps(doc))
    with pytest.raises(DirectionMismatchError, match="someone-else.pkl") as info:
        load_bundle(out)
    assert "--force-directions" in str(info.value)
    assert list(load_bundle(out, force_directions=True).directions) == ["age"]
    monkeypatch.setenv("FACEAPP_FORCE_DIRECTIONS", "1")
    assert list(load_bundle(out).directions) == ["age"]
    monkeypatch.delenv("FACEAPP_FORCE_DIRECTIONS")
    doc["meta"]["generator"]["num_ws"] = 18
    jpath.write_text(json.dumps(doc))
    with pytest.raises(DirectionMismatchError, match="18 ws"):
        load_bundle(out)
    # A set without a record (an older bundle) is judged by its directions' own sources.
    del doc["meta"]["generator"]
    doc["directions"]["age"]["source"] = "interfacegan:stylegan_ffhq_age_w_boundary.npy"
    jpath.write_text(json.dumps(doc))
    with pytest.raises(DirectionMismatchError, match="StyleGAN1"):
        load_bundle(out)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payloads_in_direction_and_encoder_files_never_run(official, tmp_path, capsys):
    o = official
    marker = tmp_path / "pwned"
    with open(tmp_path / "age.pt", "wb") as f:
        pickle.dump(_Evil(marker), f, protocol=2)
    torch.save({"direction": _Evil(marker)}, tmp_path / "smile.pt")
    for name in ("age.pt", "smile.pt"):
        assert run("--generator", o["pkl"], "--out", tmp_path / "x", "--directions", tmp_path / name) == 2
        assert "nothing from it was executed" in capsys.readouterr().err
    ckpt = read_e4e_checkpoint(o["e4e"]["path"])
    torch.save({**ckpt, "opts": _Evil(marker)}, tmp_path / "e4e_evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        build_bundle(tmp_path / "y", generator=o["pkl"], encoder=tmp_path / "e4e_evil.pt")
    assert not marker.exists() and not (tmp_path / "x" / "bundle.json").exists()
    assert not o["marker"].exists()


def test_mismatched_encoder_is_refused_and_a_foreign_one_noted(official, tmp_path):
    o = official
    e4e_other = e4e_file(tmp_path / "e4e_other.pt", seed=5)  # trained against another 32 px generator
    out = build_bundle(tmp_path / "b", generator=o["pkl"], encoder=e4e_other["path"])
    assert any("another generator" in n for n in load_bundle(out).meta["notes"])
    sd = ref.random_generator_state(size=16, style_dim=W_DIM, n_mlp=2, channels={4: 16, 8: 16, 16: 8}, seed=1)
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(W_DIM)}, tmp_path / "g16.pt")  # 6 ws, not 8
    with pytest.raises(Exception, match="makes 8 codes of 8, but the generator takes 6"):
        build_bundle(tmp_path / "c", generator=tmp_path / "g16.pt", encoder=o["e4e"]["path"])


def test_bundle_cli_help_names_every_format():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        cli.main(["bundle", "--help"])
    text = buf.getvalue()
    for word in (".pkl", "rosinality", "e4e_ffhq_encode.pt", "InterFaceGAN", "GANSpace", "--force-directions"):
        assert word in text
    assert os.environ.get("FACEAPP_FORCE_DIRECTIONS") is None
