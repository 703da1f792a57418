"""Importers for official StyleGAN2 checkpoints, on small files built here in the exact formats.

* NVIDIA stylegan2-ada-pytorch .pkl: written by pickle.dump through fake `torch_utils.persistence`
  and `dnnlib.util` modules that reduce objects exactly as the real ones do (module_src included),
  then imported in a process where those modules are NOT importable.
* rosinality stylegan2-pytorch .pt: torch.save of rosinality-named state dicts + argparse.Namespace.

Imported networks are compared with tests/ref_stylegan2.py, a naive forward written in
rosinality's conventions that shares no code with faceapp.stylegan.
"""

import argparse
import collections
import copy
import importlib.util
import io
import math
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from faceapp import cli
from faceapp.errors import CheckpointError, UnsafeCheckpointError
from faceapp.stylegan import Discriminator, Generator
from faceapp.stylegan.checkpoint import load_networks, read_header
from faceapp.stylegan.converters import convert_rosinality_discriminator, convert_rosinality_generator
from faceapp.stylegan.legacy import (
    detect_format,
    import_checkpoint,
    import_nvidia_pkl,
    import_rosinality_pt,
    load_nvidia_pkl,
    load_rosinality_pt,
)

try:
    from tests import ref_stylegan2 as ref
except ImportError:  # tests/ is on sys.path (pytest rootdir-relative import)
    import ref_stylegan2 as ref

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNELS = {4: 16, 8: 16, 16: 8, 32: 8}


def close(a, b, rel=1e-5):
    """Images agree to float32 round-off, relative to their magnitude (atol ~1e-4 for |x| ~ 10)."""
    scale = max(a.abs().max().item(), 1.0)
    err = (a - b).abs().max().item()
    assert err <= rel * scale + 1e-6, f"max abs error {err:.3g} (scale {scale:.3g})"


# ---------------------------------------------------------------------------------------------
# Writing NVIDIA-format pickles.

FAKE_PERSISTENCE = '''
"""Test double of stylegan2-ada-pytorch torch_utils/persistence.py: same reduce protocol."""
import dnnlib

_version = 6


def _reconstruct_persistent_obj(meta):
    raise RuntimeError("test double: loading must never come here")


def persistent_class(orig_class):
    """The decorator's reduce protocol: state = the module's real __dict__, module_src attached."""

    class Decorator(orig_class):
        _orig_module_src = "# (module source of %s would be here)" % orig_class.__module__
        _orig_class_name = orig_class.__name__

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                        class_name=self._orig_class_name, state=fields[2])
            return (_reconstruct_persistent_obj, (meta,), None) + tuple(fields[3:])

    Decorator.__name__ = orig_class.__name__
    return Decorator


class Persistent:
    """Pickles like a @persistent_class object: _reconstruct_persistent_obj(meta), state in meta."""

    def __init__(self, class_name, module_src, state):
        self._orig_class_name = class_name
        self._orig_module_src = module_src
        self.__dict__.update(state)

    def __reduce__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("_orig_class_name", "_orig_module_src")}
        meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                    class_name=self._orig_class_name, state=state)
        return (_reconstruct_persistent_obj, (meta,), None)
'''

FAKE_DNNLIB_UTIL = '''
class EasyDict(dict):
    """Like dnnlib.util.EasyDict: dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]
'''

# The module source NVIDIA pickles carry; importing must never execute it.
HOSTILE_SRC = textwrap.dedent('''
    import torch
    open({marker!r}, "w").write("module_src was executed")

    class Generator(torch.nn.Module):
        pass
''')

BUFFER_NAMES = ("resample_filter", "noise_const", "w_avg")


class FakeNvidia:
    """Context: fake torch_utils / dnnlib importable while pickling, gone (and unimportable) after."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, "torch_utils"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "dnnlib"), exist_ok=True)
        files = {
            "torch_utils/__init__.py": "",
            "torch_utils/persistence.py": FAKE_PERSISTENCE,
            "dnnlib/__init__.py": "from .util import EasyDict\n",
            "dnnlib/util.py": FAKE_DNNLIB_UTIL,
        }
        for rel, text in files.items():
            with open(os.path.join(self.root, rel), "w") as f:
                f.write(text)

    def __enter__(self):
        assert importlib.util.find_spec("torch_utils") is None, "a real torch_utils is importable"
        sys.path.insert(0, self.root)
        importlib.invalidate_caches()
        import dnnlib
        import torch_utils.persistence

        self.persistence, self.dnnlib = torch_utils.persistence, dnnlib
        return self

    def __exit__(self, *exc):
        sys.path.remove(self.root)
        for name in list(sys.modules):
            if name.split(".")[0] in ("torch_utils", "dnnlib"):
                del sys.modules[name]
        importlib.invalidate_caches()

    def module(self, class_name, state_dict, init_kwargs=None, module_src="", attrs=None):
        """A persistent object tree holding `state_dict` under NVIDIA's module/param/buffer names."""
        P, E = self.persistence.Persistent, self.dnnlib.EasyDict

        def node(cls_name):
            return dict(
                training=False, _parameters=collections.OrderedDict(), _buffers=collections.OrderedDict(),
                _non_persistent_buffers_set=set(), _backward_hooks=collections.OrderedDict(),
                _forward_hooks=collections.OrderedDict(), _forward_pre_hooks=collections.OrderedDict(),
                _state_dict_hooks=collections.OrderedDict(), _load_state_dict_pre_hooks=collections.OrderedDict(),
                _modules=collections.OrderedDict(), _init_args=(), _init_kwargs=E(), _cls=cls_name,
            )

        root = node(class_name)
        root["_init_kwargs"] = init_kwargs or E()
        root.update(attrs or {})
        for key, value in state_dict.items():
            *path, leaf = key.split(".")
            cur = root
            for part in path:
                cur = cur["_modules"].setdefault(part, node("Layer"))
            if leaf in BUFFER_NAMES:
                cur["_buffers"][leaf] = value.clone()
            else:
                cur["_parameters"][leaf] = torch.nn.Parameter(value.clone())
                # Real layers keep numpy gains and strings in their __dict__.
                cur.setdefault("weight_gain", np.float64(1 / math.sqrt(value[0].numel() if value.ndim else 1)))
                cur.setdefault("activation", "lrelu")

        def build(n):
            n = dict(n)
            cls_name = n.pop("_cls")
            n["_modules"] = collections.OrderedDict((k, build(v)) for k, v in n["_modules"].items())
            return P(cls_name, module_src, n)

        return build(root)


def nvidia_generator_kwargs(kwargs, E):
    """Our converter's kwargs spelled as stylegan2-ada-pytorch's train.py spells them (EasyDicts)."""
    kw = {k: v for k, v in kwargs.items() if k != "_class"}
    kw["mapping_kwargs"] = E(**kw["mapping_kwargs"])
    kw["synthesis_kwargs"] = E(**kw["synthesis_kwargs"], num_fp16_res=0, conv_clamp=None)
    return kw


def write_nvidia_pkl(path, entries, protocol=3):
    with open(path, "wb") as f:
        pickle.dump(entries, f, protocol=protocol)
    return path


@pytest.fixture(scope="module")
def weights():
    """Random rosinality-format weights and their NVIDIA-named equivalents."""
    g_sd = ref.random_generator_state(size=16, style_dim=8, n_mlp=2, channels=CHANNELS, seed=0)
    g2_sd = ref.random_generator_state(size=16, style_dim=8, n_mlp=2, channels=CHANNELS, seed=5)
    d_sd = ref.random_discriminator_state(size=16, channels=CHANNELS, seed=1)
    latent_avg = torch.randn(8, generator=torch.Generator().manual_seed(3))
    g_kwargs, g_nv = convert_rosinality_generator(g_sd, latent_avg=latent_avg)
    _, g2_nv = convert_rosinality_generator(g2_sd, latent_avg=latent_avg * 0.5)
    d_kwargs, d_nv = convert_rosinality_discriminator(d_sd)
    # NVIDIA files carry the resample filters; take them from a freshly built net.
    fresh_g = Generator(**{k: v for k, v in g_kwargs.items() if k != "_class"}).state_dict()
    fresh_d = Discriminator(**{k: v for k, v in d_kwargs.items() if k != "_class"}).state_dict()
    for nv, fresh in ((g_nv, fresh_g), (g2_nv, fresh_g), (d_nv, fresh_d)):
        nv.update({k: v for k, v in fresh.items() if k.endswith("resample_filter")})
    return dict(g_sd=g_sd, g2_sd=g2_sd, d_sd=d_sd, latent_avg=latent_avg, g_kwargs=g_kwargs, d_kwargs=d_kwargs,
                g_nv=g_nv, g2_nv=g2_nv, d_nv=d_nv)


@pytest.fixture(scope="module")
def nvidia_pkl(tmp_path_factory, weights):
    """A stylegan2-ada-pytorch network snapshot: G, D, G_ema, augment_pipe, training_set_kwargs."""
    root = tmp_path_factory.mktemp("nvidia")
    marker = root / "module_src_ran"
    src = HOSTILE_SRC.format(marker=str(marker))
    with FakeNvidia(root / "fake") as fake:
        E = fake.dnnlib.EasyDict
        g_kw = nvidia_generator_kwargs(weights["g_kwargs"], E)
        d_kw = {k: v for k, v in weights["d_kwargs"].items() if k != "_class"}
        d_kw.update(block_kwargs=E(), mapping_kwargs=E(), epilogue_kwargs=E(**d_kw["epilogue_kwargs"]),
                    num_fp16_res=0, conv_clamp=None)
        attrs = dict(z_dim=8, w_dim=8, img_resolution=16, num_ws=6)
        # A non-persistent buffer (not part of the state dict) must be ignored.
        g = fake.module("Generator", weights["g_nv"], g_kw, src, attrs)
        g.__dict__["_buffers"]["scratch"] = torch.zeros(3)
        g.__dict__["_non_persistent_buffers_set"] = {"scratch"}
        entries = dict(
            G=g,
            D=fake.module("Discriminator", weights["d_nv"], d_kw, src),
            G_ema=fake.module("Generator", weights["g2_nv"], g_kw, src, attrs),
            augment_pipe=fake.module("AugmentPipe", {"p": torch.zeros([])}, E(xflip=1.0), src),
            training_set_kwargs=E(class_name="training.dataset.ImageFolderDataset", path="ffhq16.zip",
                                  resolution=16, use_labels=False, xflip=True),
        )
        path = write_nvidia_pkl(root / "network-snapshot-000100.pkl", entries)
        only_g_ema = write_nvidia_pkl(root / "g_ema_only.pkl",
                                      dict(G_ema=entries["G_ema"], augment_pipe=None), protocol=4)
    return dict(path=path, only_g_ema=only_g_ema, marker=marker, root=root)


def test_fake_modules_are_gone(nvidia_pkl):
    assert importlib.util.find_spec("torch_utils") is None
    assert importlib.util.find_spec("dnnlib") is None
    assert "torch_utils" not in sys.modules
    data = nvidia_pkl["path"].read_bytes()
    assert b"torch_utils.persistence" in data and b"_reconstruct_persistent_obj" in data
    assert b"module_src_ran" in data  # the hostile module source really is in the file


# ---------------------------------------------------------------------------------------------
# NVIDIA pickles.


def nvidia_mapping_naive(sd, z, num_layers, lr=0.01, psi=1.0):
    """FullyConnectedLayer in NVIDIA's conventions: gains lr/sqrt(in) and lr, lrelu * sqrt(2)."""
    x = z / torch.sqrt((z**2).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(num_layers):
        w, b = sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"]
        x = torch.nn.functional.leaky_relu(x @ (w * lr / math.sqrt(w.shape[1])).t() + b * lr, 0.2) * math.sqrt(2)
    w_avg = sd["mapping.w_avg"]
    return w_avg + psi * (x - w_avg)


def test_nvidia_pkl_reproduces_reference(nvidia_pkl, weights):
    imported = import_nvidia_pkl(nvidia_pkl["path"])
    assert not nvidia_pkl["marker"].exists(), "module_src from the pickle was executed"
    nets = imported.nets
    assert set(nets) == {"G", "D", "G_ema"}
    assert imported.extra["training_set_kwargs"]["path"] == "ffhq16.zip"
    G_ema, G, D = nets["G_ema"], nets["G"], nets["D"]
    assert isinstance(G_ema, Generator) and isinstance(D, Discriminator)
    assert G_ema.init_kwargs["mapping_kwargs"]["num_layers"] == 2

    z = torch.randn(3, 8)
    with torch.no_grad():
        # Mapping against a naive computation in NVIDIA's conventions (truncation included).
        ws = G_ema.mapping(z, None, truncation_psi=0.6)
        expect = nvidia_mapping_naive(weights["g2_nv"], z, 2, psi=0.6)
        close(ws, expect[:, None].expand_as(ws))
        # Images against the independent rosinality-convention reference on the source weights.
        latent = torch.randn(3, G.num_ws, 8)
        close(G.synthesis(latent, noise_mode="const"), ref.synthesis(weights["g_sd"], latent))
        close(G_ema.synthesis(latent, noise_mode="const"), ref.synthesis(weights["g2_sd"], latent))
        img = torch.randn(4, 3, 16, 16)
        close(D(img, None), ref.discriminator(weights["d_sd"], img))


def test_nvidia_pkl_from_real_module_objects(tmp_path):
    # Pickle live torch modules through the decorator protocol, so the state is whatever this
    # torch version keeps in a Module's __dict__ (hook dicts, buffer sets, ...), not a hand-made one.
    torch.manual_seed(4)
    G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=16))
    D = Discriminator(c_dim=3, img_resolution=8, img_channels=3, channel_base=64, channel_max=16)
    with torch.no_grad():
        for p in [*G.parameters(), *D.parameters()]:
            p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.normal_()
    path = tmp_path / "live.pkl"
    with FakeNvidia(tmp_path / "fake") as fake:
        copies = {"G_ema": copy.deepcopy(G), "D": copy.deepcopy(D)}
        decorated = {}
        for net in copies.values():
            for m in net.modules():
                cls = type(m)
                m.__class__ = decorated.setdefault(cls, fake.persistence.persistent_class(cls))
            net._init_args = ()
            net._init_kwargs = fake.dnnlib.EasyDict(net.init_kwargs)
        write_nvidia_pkl(path, copies)
    nets = load_nvidia_pkl(path)
    for name, orig in (("G_ema", G), ("D", D)):
        assert type(nets[name]) is type(orig)
        for k, v in orig.state_dict().items():
            assert torch.equal(nets[name].state_dict()[k], v), (name, k)
    z, c = torch.randn(2, 8), torch.eye(3)[:2]
    with torch.no_grad():
        img = G.eval()(z, c, truncation_psi=0.5)
        assert torch.equal(nets["G_ema"](z, c, truncation_psi=0.5), img)
        assert torch.equal(nets["D"](img, c), D.eval()(img, c))


def test_nvidia_pkl_equals_in_process_network(nvidia_pkl, weights):
    G_ema = load_nvidia_pkl(nvidia_pkl["path"], names=["G_ema"])["G_ema"]
    direct = Generator(**G_ema.init_kwargs)
    direct.load_state_dict(weights["g2_nv"], strict=True)
    direct.eval()
    for k, v in direct.state_dict().items():
        assert torch.equal(G_ema.state_dict()[k], v), k
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(G_ema(z, None, truncation_psi=0.5), direct(z, None, truncation_psi=0.5))


def test_nvidia_pkl_selected_and_absent_networks(nvidia_pkl):
    nets = load_nvidia_pkl(nvidia_pkl["only_g_ema"])
    assert list(nets) == ["G_ema"]
    with pytest.raises(CheckpointError, match="has no network 'D'; it has: G_ema"):
        load_nvidia_pkl(nvidia_pkl["only_g_ema"], names=["D"])
    assert list(load_nvidia_pkl(nvidia_pkl["path"], names=["D"])) == ["D"]


@pytest.mark.parametrize("protocol", [2, 5])
def test_nvidia_pkl_other_pickle_protocols(tmp_path, weights, protocol):
    # Protocol 2 spells bytes as _codecs.encode(str, 'latin1') and builtins as __builtin__.
    with FakeNvidia(tmp_path / "fake") as fake:
        g_kw = nvidia_generator_kwargs(weights["g_kwargs"], fake.dnnlib.EasyDict)
        obj = fake.module("Generator", weights["g2_nv"], g_kw)
        path = write_nvidia_pkl(tmp_path / "g.pkl", {"G_ema": obj}, protocol=protocol)
    G = load_nvidia_pkl(path)["G_ema"]
    for k, v in weights["g2_nv"].items():
        assert torch.equal(G.state_dict()[k], v), k
    hostile = tmp_path / "evil.pkl"
    hostile.write_bytes(pickle.dumps({"G": _Evil(eval, "1 + 1")}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        load_nvidia_pkl(hostile)


def test_detect_format(nvidia_pkl, tmp_path, weights):
    assert detect_format(nvidia_pkl["path"]) == "nvidia-pkl"
    pt = tmp_path / "a.pt"
    torch.save({"g_ema": weights["g_sd"]}, pt)
    assert detect_format(pt) == "rosinality-pt"
    legacy = tmp_path / "legacy_pt.pkl"  # misleading extension: content decides
    torch.save({"g_ema": weights["g_sd"]}, legacy, _use_new_zipfile_serialization=False)
    assert detect_format(legacy) == "rosinality-pt"
    assert list(import_checkpoint(legacy).nets) == ["G_ema"]
    txt = tmp_path / "notes.pt"
    txt.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint faceapp can read"):
        detect_format(txt)


# ---------------------------------------------------------------------------------------------
# Hostile pickles: nothing may run, and the error names the offending global.


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def _touch_cmd(marker):
    return f"touch {marker}"


def _py_write(marker):
    return f"open({str(marker)!r}, 'w').write('pwned')"


def _legacy_torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _hostile_cases(marker, fake):
    P = fake.persistence.Persistent
    return {
        "os.system at top level": ({"G": _Evil(os.system, _touch_cmd(marker))}, r"(posix|os|nt)\.system"),
        "os.system in persistent state": (
            {"G_ema": P("Generator", "", {"_init_kwargs": {}, "_parameters": {},
                                          "evil": _Evil(os.system, _touch_cmd(marker))})},
            r"(posix|os|nt)\.system"),
        "builtins.eval": ({"G": _Evil(eval, _py_write(marker))}, r"builtins\.eval"),
        "builtins.exec": ({"G": _Evil(exec, _py_write(marker))}, r"builtins\.exec"),
        "subprocess": ({"D": _Evil(subprocess.call, ["touch", str(marker)])}, r"subprocess\.call"),
        # Tensor storages are nested legacy torch.save streams; a hostile one hides a global there.
        "storage bytes": ({"G": _Evil(torch.storage._load_from_bytes,
                                      _legacy_torch_bytes(_Evil(os.system, _touch_cmd(marker))))},
                          r"(posix|os|nt)\.system"),
    }


def test_hostile_nvidia_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    with FakeNvidia(tmp_path / "fake") as fake:
        cases = _hostile_cases(marker, fake)
        files = {}
        for i, (name, (obj, _)) in enumerate(cases.items()):
            files[name] = write_nvidia_pkl(tmp_path / f"evil{i}.pkl", obj)
    for name, (_, pattern) in cases.items():
        with pytest.raises(UnsafeCheckpointError, match=pattern) as info:
            import_nvidia_pkl(files[name])
        assert "nothing from" in str(info.value), name
        assert not marker.exists(), f"{name}: code from the pickle ran"


def test_persistent_id_pickle_is_refused(tmp_path):
    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage0" if isinstance(obj, torch.Tensor) else None

    path = tmp_path / "pid.pkl"
    with open(path, "wb") as f:
        PidPickler(f).dump({"G": torch.zeros(2)})
    with pytest.raises(UnsafeCheckpointError, match="persistent ids"):
        import_nvidia_pkl(path)


def test_module_src_is_never_executed(nvidia_pkl):
    # The fixture's module_src writes a marker when executed; loading every net must not create it.
    import_nvidia_pkl(nvidia_pkl["path"])
    import_checkpoint(nvidia_pkl["only_g_ema"])
    assert not nvidia_pkl["marker"].exists()


def test_corrupt_and_foreign_pickles(tmp_path, nvidia_pkl):
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(nvidia_pkl["path"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable network pickle"):
        import_nvidia_pkl(cut)
    lst = tmp_path / "list.pkl"
    lst.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="pickle of a list"):
        import_nvidia_pkl(lst)
    tf = tmp_path / "stylegan2-ffhq-config-f.pkl"
    tf.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(CheckpointError, match="TensorFlow-era") as info:
        import_nvidia_pkl(tf)
    assert not isinstance(info.value, UnsafeCheckpointError)
    empty = tmp_path / "empty_dict.pkl"
    empty.write_bytes(pickle.dumps({"foo": 1}))
    with pytest.raises(CheckpointError, match="contains no StyleGAN2 networks"):
        import_nvidia_pkl(empty)


# ---------------------------------------------------------------------------------------------
# rosinality checkpoints.


@pytest.fixture(scope="module")
def rosinality_pt(tmp_path_factory, weights):
    path = tmp_path_factory.mktemp("ros") / "stylegan2-ffhq16.pt"
    torch.save({
        "g": weights["g2_sd"], "d": weights["d_sd"], "g_ema": weights["g_sd"],
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0, 1]}]},
        "d_optim": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(size=16, latent=8, n_mlp=2, channel_multiplier=2, r1=10.0, path="lmdb"),
        "latent_avg": weights["latent_avg"],
    }, path)
    return path


def test_rosinality_reproduces_reference(rosinality_pt, weights):
    imported = import_rosinality_pt(rosinality_pt)
    assert set(imported.nets) == {"G_ema", "G", "D"}
    assert imported.extra["args"]["size"] == 16
    G, D = imported.nets["G_ema"], imported.nets["D"]
    assert G.init_kwargs["synthesis_kwargs"] == {"channel_base": 128, "channel_max": 16}
    sd = weights["g_sd"]
    z = torch.randn(4, 8)
    with torch.no_grad():
        w_ref = ref.mapping(sd, z)
        close(G.mapping(z, None)[:, 3], w_ref)
        la = weights["latent_avg"]
        close(G.mapping(z, None, truncation_psi=0.7)[:, 0], la + 0.7 * (w_ref - la))
        # Fixed noise: the stored noises.noise_i must land in the same layers.
        latent = torch.randn(4, G.num_ws, 8)
        img = G.synthesis(latent, noise_mode="const")
        assert img.shape == (4, 3, 16, 16)
        close(img, ref.synthesis(sd, latent))
        # 'none' differs from the stored noise, so noise really is wired in.
        assert (G.synthesis(latent, noise_mode="none") - img).abs().max() > 1e-3
        # z -> image end to end.
        close(G(z, None), ref.synthesis(sd, w_ref[:, None].expand(-1, G.num_ws, -1)))
        img = torch.randn(4, 3, 16, 16)
        close(D(img, None), ref.discriminator(weights["d_sd"], img))
    assert torch.equal(imported.nets["G"].synthesis.b8.conv0.weight, weights["g2_sd"]["convs.0.conv.weight"][0])


def test_rosinality_32px_default_lr_and_estimated_w_avg(tmp_path):
    channels = {4: 32, 8: 32, 16: 16, 32: 8}
    sd = ref.random_generator_state(size=32, style_dim=16, n_mlp=3, channels=channels, seed=7)
    dsd = ref.random_discriminator_state(size=32, channels=channels, seed=8)
    path = tmp_path / "train_000100.pt"
    torch.save({"g_ema": sd, "d": dsd, "args": argparse.Namespace(size=32, latent=16, n_mlp=3)}, path)
    imported = import_rosinality_pt(path)
    assert "estimated" in imported.extra["w_avg"]
    G, D = imported.nets["G_ema"], imported.nets["D"]
    assert G.init_kwargs["synthesis_kwargs"] == {"channel_base": 256, "channel_max": 32}
    with torch.no_grad():
        latent = torch.randn(2, G.num_ws, 16)
        close(G.synthesis(latent, noise_mode="const"), ref.synthesis(sd, latent))
        z = torch.randn(10000, 16, generator=torch.Generator().manual_seed(123))
        w = ref.mapping(sd, z)
        w_mean, spread = w.mean(dim=0), w.std(dim=0).max().item()
        assert (G.mapping.w_avg - w_mean).abs().max().item() < 0.1 * spread
        img = torch.randn(2, 3, 32, 32)
        close(D(img, None), ref.discriminator(dsd, img))


def test_rosinality_errors(tmp_path, weights):
    bad_args = tmp_path / "bad_args.pt"
    torch.save({"g_ema": weights["g_sd"], "args": argparse.Namespace(size=256, latent=8)}, bad_args)
    with pytest.raises(CheckpointError, match="args.size is 256 but the weights are for 16px"):
        load_rosinality_pt(bad_args)
    odd = ref.random_generator_state(size=16, channels={4: 16, 8: 12, 16: 8})  # not min(base // r, max)
    odd_path = tmp_path / "odd.pt"
    torch.save({"g_ema": odd}, odd_path)
    with pytest.raises(CheckpointError, match="channel counts"):
        load_rosinality_pt(odd_path)
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="contains no StyleGAN2 networks"):
        load_rosinality_pt(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_rosinality_pt(tmp_path / "missing.pt")
    missing_key = dict(weights["g_sd"])
    del missing_key["to_rgbs.1.conv.modulation.bias"]
    mk = tmp_path / "missing_key.pt"
    torch.save({"g_ema": missing_key}, mk)
    with pytest.raises(CheckpointError, match="to_rgbs.1.conv.modulation.bias"):
        load_rosinality_pt(mk)


def test_hostile_rosinality_pt(tmp_path, weights):
    marker = tmp_path / "pwned"
    for i, (fn, arg, pattern) in enumerate([
        (os.system, _touch_cmd(marker), r"(posix|os|nt)\.system"),
        (eval, _py_write(marker), r"builtins\.eval"),
    ]):
        path = tmp_path / f"evil{i}.pt"
        torch.save({"g_ema": weights["g_sd"], "args": _Evil(fn, arg)}, path)
        with pytest.raises(UnsafeCheckpointError, match=pattern):
            import_rosinality_pt(path)
        with pytest.raises(UnsafeCheckpointError):
            import_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# `python -m faceapp convert` in a fresh process (where the fake NVIDIA modules do not exist).


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "faceapp", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_converts_nvidia_pkl(nvidia_pkl, weights, tmp_path):
    out = tmp_path / "ffhq16.safetensors"
    r = run_cli("convert", nvidia_pkl["path"], out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "nvidia-pkl" in r.stdout and str(out) in r.stdout
    assert not nvidia_pkl["marker"].exists()
    nets = load_networks(out)
    assert set(nets) == {"G", "D", "G_ema"}
    assert read_header(out)["extra"]["source_format"] == "nvidia-pkl"
    direct = load_nvidia_pkl(nvidia_pkl["path"])
    latent = torch.randn(2, nets["G_ema"].num_ws, 8)
    with torch.no_grad():
        a = nets["G_ema"].synthesis(latent, noise_mode="const")
        assert torch.equal(a, direct["G_ema"].synthesis(latent, noise_mode="const"))
        close(a, ref.synthesis(weights["g2_sd"], latent))


def test_cli_converts_rosinality_pt_subset_fp16(rosinality_pt, weights, tmp_path, capsys):
    out = tmp_path / "ros.safetensors"
    assert cli.main(["convert", str(rosinality_pt), str(out), "--nets", "G_ema", "--fp16"]) == 0
    stdout = capsys.readouterr().out
    assert "rosinality-pt" in stdout and "fp16" in stdout
    assert list(read_header(out)["networks"]) == ["G_ema"]
    nets = load_networks(out)
    latent = torch.randn(2, nets["G_ema"].num_ws, 8)
    with torch.no_grad():
        a = nets["G_ema"].synthesis(latent, noise_mode="const")
        b = ref.synthesis(weights["g_sd"], latent)
    assert (a - b).abs().max() < 0.02 * b.abs().max()  # fp16 storage: close, not exact
    # Re-converting our own file keeps the provenance of the original.
    again = tmp_path / "again.safetensors"
    assert cli.main(["convert", str(out), str(again)]) == 0
    assert read_header(again)["extra"]["source_format"] == "rosinality-pt"


def _hostile_pkl(tmp_path, marker):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G": _Evil(os.system, _touch_cmd(marker))}))
    return evil


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, nvidia_pkl):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(os.urandom(256))
    marker = tmp_path / "pwned"
    evil = _hostile_pkl(tmp_path, marker)
    out = tmp_path / "o.safetensors"
    for args, pattern in [
        (["convert", junk, out], "not a checkpoint faceapp can read"),
        (["convert", tmp_path / "missing.pkl", out], "not found"),
        (["convert", evil, out], "system"),
        (["convert", nvidia_pkl["path"], out, "--nets", "E"], "has no network 'E'"),
        (["convert", out, out], "also the input"),
    ]:
        assert cli.main([str(a) for a in args]) == 2, args
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], err
    assert not marker.exists()
    assert not out.exists()
    with pytest.raises(SystemExit) as info:  # argparse usage errors use the same exit code
        cli.main(["convert"])
    assert info.value.code == 2


@pytest.mark.slow
def test_cli_subprocess_error_has_no_traceback(tmp_path):
    marker = tmp_path / "pwned"
    r = run_cli("convert", _hostile_pkl(tmp_path, marker), tmp_path / "o.safetensors", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: refusing to load") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and not marker.exists()
