"""faceapp's own checkpoint format: exact round trips, fp16 storage, and clear errors."""

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from faceapp.errors import CheckpointError
from faceapp.stylegan import Discriminator, Generator
from faceapp.stylegan.checkpoint import (
    FORMAT_NAME,
    load_generator,
    load_networks,
    read_header,
    save_networks,
)


def tiny_G(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    # Non-default values everywhere so a loader that silently keeps fresh weights would be caught.
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.normal_()
    return G.eval()


def tiny_D(seed=1, c_dim=0):
    torch.manual_seed(seed)
    D = Discriminator(c_dim=c_dim, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    with torch.no_grad():
        for p in D.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return D.eval()


@pytest.fixture(scope="module")
def nets():
    return {"G": tiny_G(0), "D": tiny_D(1), "G_ema": tiny_G(2)}


@pytest.fixture()
def saved(tmp_path, nets):
    path = tmp_path / "nets.safetensors"
    save_networks(path, nets, extra={"kimg": 12.5, "note": "test"})
    return path


def test_round_trip_is_bitwise_and_outputs_match(saved, nets):
    loaded = load_networks(saved)
    assert set(loaded) == {"G", "D", "G_ema"}
    for name, net in nets.items():
        assert type(loaded[name]) is type(net)
        assert loaded[name].init_kwargs == net.init_kwargs
        a, b = net.state_dict(), loaded[name].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        assert not loaded[name].training
    z = torch.randn(2, 8)
    with torch.no_grad():
        img = nets["G_ema"](z, None, truncation_psi=0.7)
        assert torch.equal(loaded["G_ema"](z, None, truncation_psi=0.7), img)
        assert torch.equal(loaded["D"](img, None), nets["D"](img, None))


def test_file_layout_and_header(saved, nets):
    header = read_header(saved)
    assert header["format"] == FORMAT_NAME and header["format_version"] == 1
    assert header["extra"] == {"kimg": 12.5, "note": "test"}
    assert header["networks"]["D"] == {"class": "Discriminator", "init_kwargs": nets["D"].init_kwargs}
    tensors = load_file(saved)
    assert torch.equal(tensors["G_ema.synthesis.b4.const"], nets["G_ema"].synthesis.b4.const)
    assert len(tensors) == sum(len(n.state_dict()) for n in nets.values())


def test_load_subset_generator_and_device(saved, nets):
    only = load_networks(saved, device="cpu", names=["D"])
    assert list(only) == ["D"]
    G = load_generator(saved, device=torch.device("cpu"))
    assert torch.equal(G.synthesis.b16.torgb.weight, nets["G_ema"].synthesis.b16.torgb.weight)
    assert G.synthesis.b4.const.device.type == "cpu"


def test_load_generator_falls_back_to_G(tmp_path, nets):
    path = tmp_path / "g.safetensors"
    save_networks(path, {"G": nets["G"]})
    assert torch.equal(load_generator(path).mapping.fc0.weight, nets["G"].mapping.fc0.weight)
    save_networks(path, {"D": nets["D"]})
    with pytest.raises(CheckpointError, match="no generator"):
        load_generator(path)


def test_conditional_discriminator_round_trip(tmp_path):
    D = tiny_D(3, c_dim=4)
    path = tmp_path / "d.safetensors"
    save_networks(path, {"D": D})
    D2 = load_networks(path)["D"]
    img, c = torch.randn(4, 3, 16, 16), torch.eye(4)
    with torch.no_grad():
        assert torch.equal(D2(img, c), D(img, c))


def test_fp16_storage(tmp_path, nets):
    path32, path16 = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_networks(path32, nets)
    save_networks(path16, nets, dtype=torch.float16)
    raw = load_file(path16)
    assert all(t.dtype == torch.float16 for t in raw.values())
    assert path16.stat().st_size < 0.6 * path32.stat().st_size
    loaded = load_networks(path16)
    for name, net in nets.items():
        for k, v in loaded[name].state_dict().items():
            ref = net.state_dict()[k]
            assert v.dtype == torch.float32
            assert torch.equal(v, ref.half().float()), k  # exactly the fp16 rounding, nothing else
    z = torch.randn(2, 8)
    with torch.no_grad():
        a = nets["G_ema"](z, None)
        b = loaded["G_ema"](z, None)
    assert not torch.equal(a, b)
    assert torch.allclose(a, b, atol=0.05 * a.abs().max().item())


# ---------------------------------------------------------------------------------------------
# Errors a user can act on.


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_networks(tmp_path / "nope.safetensors")


def test_not_safetensors(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04\x95 not a safetensors file at all" * 10)
    with pytest.raises(CheckpointError, match="python -m faceapp convert"):
        load_networks(path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a faceapp checkpoint"):
        load_networks(empty)


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: 8 + n + 10])  # header intact, tensor bytes missing
    with pytest.raises(CheckpointError):
        load_networks(cut)


def _rewrite(src, dst, meta_update=None, tensor_update=None, drop=()):
    tensors = load_file(src)
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    meta.update(meta_update or {})
    tensors.update(tensor_update or {})
    for k in drop:
        del tensors[k]
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a faceapp checkpoint"):
        load_networks(path)


def test_unknown_format_and_version(saved, tmp_path):
    with pytest.raises(CheckpointError, match="format 'something.else'"):
        load_networks(_rewrite(saved, tmp_path / "a.safetensors", {"format": "something.else"}))
    with pytest.raises(CheckpointError, match="newer faceapp"):
        load_networks(_rewrite(saved, tmp_path / "b.safetensors", {"format_version": "99"}))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_networks(_rewrite(saved, tmp_path / "c.safetensors", {"networks": "{oops"}))


def test_class_outside_allow_list(saved, tmp_path):
    header = read_header(saved)
    nets = header["networks"]
    nets["G"]["class"] = "os.system"
    path = _rewrite(saved, tmp_path / "x.safetensors", {"networks": json.dumps(nets)})
    with pytest.raises(CheckpointError, match="'os.system', which faceapp does not know"):
        load_networks(path)
    # The other nets in the same file stay loadable.
    assert list(load_networks(path, names=["D"])) == ["D"]


def test_missing_unexpected_and_misshaped_keys(saved, tmp_path):
    with pytest.raises(CheckpointError, match=r"\[G_ema\]: missing weights synthesis\.b4\.const"):
        load_networks(_rewrite(saved, tmp_path / "a.safetensors", drop=["G_ema.synthesis.b4.const"]))
    with pytest.raises(CheckpointError, match=r"unexpected weights mapping\.fc9\.weight"):
        load_networks(_rewrite(saved, tmp_path / "b.safetensors",
                               tensor_update={"G.mapping.fc9.weight": torch.zeros(8, 8)}))
    with pytest.raises(CheckpointError, match=r"shape mismatch: mapping\.fc0\.weight \[8, 9\] \(expected \[8, 8\]\)"):
        load_networks(_rewrite(saved, tmp_path / "c.safetensors",
                               tensor_update={"G.mapping.fc0.weight": torch.zeros(8, 9)}))


def test_bad_kwargs_and_missing_name(saved, tmp_path):
    nets = read_header(saved)["networks"]
    nets["D"]["init_kwargs"]["no_such_argument"] = 1
    with pytest.raises(CheckpointError, match="cannot build Discriminator"):
        load_networks(_rewrite(saved, tmp_path / "a.safetensors", {"networks": json.dumps(nets)}))
    with pytest.raises(CheckpointError, match="has no network 'E'; it has: "):
        load_networks(saved, names=["E"])


def test_save_refuses_unknown_class_and_bad_extra(tmp_path, nets):
    with pytest.raises(CheckpointError, match=r"MappingNetwork: only .*Discriminator.*Generator.* can be stored"):
        save_networks(tmp_path / "a.safetensors", {"M": nets["G"].mapping})
    with pytest.raises(CheckpointError, match="JSON"):
        save_networks(tmp_path / "b.safetensors", {"G": nets["G"]}, extra={"t": torch.zeros(1)})
    assert not list(tmp_path.iterdir())  # no half-written files left behind
