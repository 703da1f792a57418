"""e4e encoder: shapes, progressive stages, our checkpoint format, and import of e4e's .pt files.

The import is checked against a naive forward written here from e4e's published architecture
(plain torch.nn.functional over the raw state dict with e4e's key names), on a tiny file built in
e4e's exact format (encoder.* / decoder.* keys, latent_avg, opts).
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tests.ref_stylegan2 as ref
from faceapp.errors import CheckpointError, FaceAppError, UnsafeCheckpointError
from faceapp.inversion.e4e_import import encoder_kwargs_from_state, import_e4e_checkpoint
from faceapp.inversion.encoder import Encoder4Editing, load_encoder
from faceapp.stylegan import Generator
from faceapp.stylegan.checkpoint import load_networks, read_header, save_networks

SMALL = dict(blocks=[1, 1, 2, 1], channels=[8, 12, 16, 24], head_channels=16)


def small_encoder(num_ws=8, w_dim=8, img_resolution=32, **kw):
    return Encoder4Editing(num_ws=num_ws, w_dim=w_dim, img_resolution=img_resolution, **{**SMALL, **kw})


def randomise(E, seed=0):
    """Random weights everywhere, including BatchNorm statistics and PReLU slopes (eval mode matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in E.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name == "w_avg":
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return E.eval()


# ---------------------------------------------------------------------------------------------
# A naive e4e forward in e4e's names (independent of faceapp.inversion.encoder).


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        training=False, eps=1e-5)


def prelu(x, weight):
    return torch.where(x >= 0, x, x * weight.reshape(1, -1, 1, 1))


def ir_se_unit(x, sd, p, stride):
    """bottleneck_IR_SE: res = BN, conv3x3, PReLU, conv3x3/stride, BN, SE; + shortcut."""
    if p + ".shortcut_layer.0.weight" in sd:
        short = bn(F.conv2d(x, sd[p + ".shortcut_layer.0.weight"], stride=stride), sd, p + ".shortcut_layer.1")
    else:
        short = x[:, :, ::stride, ::stride]  # MaxPool2d(kernel 1, stride)
    r = bn(x, sd, p + ".res_layer.0")
    r = F.conv2d(r, sd[p + ".res_layer.1.weight"], padding=1)
    r = prelu(r, sd[p + ".res_layer.2.weight"])
    r = F.conv2d(r, sd[p + ".res_layer.3.weight"], stride=stride, padding=1)
    r = bn(r, sd, p + ".res_layer.4")
    s = r.mean(dim=[2, 3], keepdim=True)
    s = torch.sigmoid(F.conv2d(torch.relu(F.conv2d(s, sd[p + ".res_layer.5.fc1.weight"])),
                               sd[p + ".res_layer.5.fc2.weight"]))
    return r * s + short


def style_head(x, sd, p):
    """GradualStyleBlock: stride-2 conv3x3 + leaky_relu(0.01) down to 1x1, then EqualLinear (lr_mul 1)."""
    k = 0
    while f"{p}.convs.{2 * k}.weight" in sd:
        x = F.leaky_relu(F.conv2d(x, sd[f"{p}.convs.{2 * k}.weight"], sd[f"{p}.convs.{2 * k}.bias"], stride=2,
                                  padding=1), 0.01)
        k += 1
    assert x.shape[2:] == (1, 1)
    w = sd[p + ".linear.weight"]
    return x.flatten(1) @ (w / math.sqrt(w.shape[1])).t() + sd[p + ".linear.bias"]


def naive_e4e(sd, img, latent_avg, stage=None, coarse=3, middle=7):
    """e4e Encoder4Editing forward + latent_avg from a state dict with e4e's key names."""
    x = prelu(bn(F.conv2d(img, sd["input_layer.0.weight"], padding=1), sd, "input_layer.1"),
              sd["input_layer.2.weight"])
    taps, i, prev = [], 0, x.shape[1]
    while f"body.{i}.res_layer.1.weight" in sd:
        depth = sd[f"body.{i}.res_layer.1.weight"].shape[0]
        # A new stage starts where the width changes, or at unit 0; its first unit has stride 2.
        first = i == 0 or depth != prev
        if first and i > 0:
            taps.append(x)
        x = ir_se_unit(x, sd, f"body.{i}", 2 if first else 1)
        prev, i = depth, i + 1
    c1, c2, c3 = taps[1], taps[2], x
    n = 0
    while f"styles.{n}.linear.weight" in sd:
        n += 1
    stage = n - 1 if stage is None else stage
    w0 = style_head(c3, sd, "styles.0")
    w = w0.unsqueeze(1).repeat(1, n, 1)
    feats = c3
    up = lambda a, b: F.interpolate(a, size=b.shape[2:], mode="bilinear", align_corners=True) + b  # noqa: E731
    for j in range(1, min(stage + 1, n)):
        if j == coarse:
            p2 = feats = up(c3, F.conv2d(c2, sd["latlayer1.weight"], sd["latlayer1.bias"]))
        elif j == middle:
            feats = up(p2, F.conv2d(c1, sd["latlayer2.weight"], sd["latlayer2.bias"]))
        w[:, j] = w[:, j] + style_head(feats, sd, f"styles.{j}")
    return w + latent_avg


def close(a, b, tol=1e-5):
    err = (a - b).abs().max().item()
    scale = b.abs().max().item()
    assert err <= tol * max(scale, 1.0), (err, scale)


# ---------------------------------------------------------------------------------------------
# Shapes and stages.


def test_official_layout_names_and_size():
    with torch.device("meta"):  # 267 M parameters: shapes only
        E = Encoder4Editing(num_ws=18)
    sd = E.state_dict()
    assert sum(p.numel() for p in E.parameters()) == 267_136_704  # e4e's IR-SE-50 encoder
    for key, shape in [
        ("input_layer.0.weight", (64, 3, 3, 3)), ("input_layer.2.weight", (64,)),
        ("body.0.res_layer.5.fc1.weight", (4, 64, 1, 1)), ("body.3.shortcut_layer.0.weight", (128, 64, 1, 1)),
        ("body.23.res_layer.3.weight", (512, 512, 3, 3)), ("styles.0.convs.6.weight", (512, 512, 3, 3)),
        ("styles.17.convs.10.weight", (512, 512, 3, 3)), ("styles.17.linear.weight", (512, 512)),
        ("latlayer1.weight", (512, 256, 1, 1)), ("latlayer2.weight", (512, 128, 1, 1)), ("w_avg", (18, 512)),
    ]:
        assert tuple(sd[key].shape) == shape, key
    assert "styles.0.convs.8.weight" not in sd and "styles.3.convs.8.weight" in sd  # 16 vs 32 px heads
    assert "styles.7.convs.10.weight" in sd and "styles.6.convs.10.weight" not in sd
    assert "body.24.res_layer.1.weight" not in sd and "body.1.shortcut_layer.0.weight" not in sd
    kw = encoder_kwargs_from_state(sd)
    assert kw["blocks"] == [3, 4, 14, 3] and kw["img_resolution"] == 256
    assert (kw["coarse_ind"], kw["middle_ind"], kw["se_reduction"]) == (3, 7, 16)


def test_shapes_stages_and_resizing():
    E = randomise(small_encoder(num_ws=12, w_dim=16, img_resolution=64))
    img = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ws = E(img)
        assert ws.shape == (3, 12, 16)
        w, deltas = E.codes(img)
        assert w.shape == (3, 16) and deltas.shape == (3, 12, 16)
        assert torch.equal(deltas[:, 0], torch.zeros(3, 16))
        close(ws, E.w_avg + w[:, None] + deltas)
        assert (deltas[:, 1:].abs().amax(-1) > 0).all()  # every layer has its own delta at inference
        # Stage k: only layers 1..k differ from the base code.
        E.set_progressive_stage(4)
        ws4 = E(img)
        assert torch.equal(ws4[:, :5], ws[:, :5])
        close(ws4[:, 5:], (E.w_avg[5:] + w[:, None]).expand(3, 7, 16))
        assert E.init_kwargs["progressive_stage"] == 4
        E.set_progressive_stage(0)
        close(E(img) - E.w_avg, w[:, None].expand(3, 12, 16))
        E.set_progressive_stage(None)
        assert torch.equal(E(img), ws)
        # Other input sizes are resized (antialiased) to the encoder's own.
        big = torch.rand(3, 3, 100, 100) * 2 - 1
        small = F.interpolate(big, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        assert torch.equal(E(big), E(small))
    with pytest.raises(FaceAppError, match="images"):
        E(torch.zeros(1, 1, 64, 64))
    with pytest.raises(FaceAppError, match="progressive_stage 12"):
        E.set_progressive_stage(12)
    with pytest.raises(FaceAppError, match="power of two"):
        small_encoder(img_resolution=48)


def test_gradients_reach_every_active_head():
    E = small_encoder(num_ws=8, w_dim=8, img_resolution=32).train()
    E.set_progressive_stage(3)
    E(torch.randn(2, 3, 32, 32)).square().sum().backward()
    grads = {i: E.styles[i].linear.weight.grad for i in range(8)}
    assert all(grads[i] is not None and grads[i].abs().sum() > 0 for i in range(4))
    assert all(grads[i] is None for i in range(4, 8))
    assert E.latlayer1.weight.grad.abs().sum() > 0 and E.latlayer2.weight.grad is None


def test_checkpoint_round_trip(tmp_path):
    E = randomise(small_encoder(num_ws=6, w_dim=8, img_resolution=32, unit="ir"), seed=3)
    E.set_progressive_stage(2)
    path = tmp_path / "enc.safetensors"
    save_networks(path, {"encoder": E}, extra={"note": "test"})
    assert read_header(path)["networks"]["encoder"]["class"] == "Encoder4Editing"
    E2 = load_networks(path)["encoder"]
    assert isinstance(E2, Encoder4Editing) and E2.progressive_stage == 2 and not E2.training
    assert E2.init_kwargs == E.init_kwargs
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(E2(img), E(img))


def test_no_import_cycle_and_no_import_time_registration(tmp_path):
    """encoder.py never imports e4e_import; importing either registers nothing; load_encoder works cold."""
    import ast

    import faceapp.inversion.encoder as enc_mod

    tree = ast.parse(Path(enc_mod.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("e4e_import" in (m or "") for m in imported)

    E = randomise(small_encoder(num_ws=6, w_dim=8, img_resolution=32), seed=4)
    path = tmp_path / "enc.safetensors"
    save_networks(path, {"encoder": E})
    code = (
        "import sys\n"
        "import faceapp.inversion.encoder, faceapp.inversion.e4e_import\n"
        "from faceapp.stylegan.checkpoint import NETWORK_CLASSES, load_networks\n"
        "from faceapp.errors import CheckpointError\n"
        "assert 'Encoder4Editing' not in NETWORK_CLASSES, 'registered at import time'\n"
        "try:\n"
        f"    load_networks({str(path)!r}); raise SystemExit('loaded an unregistered class')\n"
        "except CheckpointError:\n"
        "    pass\n"
        "from faceapp.inversion import load_encoder\n"
        f"E = load_encoder({str(path)!r})\n"
        "assert type(E).__name__ == 'Encoder4Editing' and E.num_ws == 6 and not E.training\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
    # e4e_import alone, in a fresh process, pulls in the encoder module (one direction only).
    subprocess.run([sys.executable, "-c", "import sys, faceapp.inversion.e4e_import as m; "
                    "assert 'faceapp.inversion.encoder' in sys.modules"], check=True,
                   cwd=Path(__file__).parent.parent)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=128, channel_max=8))
    save_networks(tmp_path / "g.safetensors", {"G_ema": G})
    with pytest.raises(CheckpointError, match="holds no Encoder4Editing"):
        load_encoder(tmp_path / "g.safetensors")


# ---------------------------------------------------------------------------------------------
# e4e .pt import.


def e4e_file(path, *, latent_avg_shape="full", opts_as="dict", seed=0, extra=None):
    """A tiny e4e_ffhq_encode.pt look-alike: 32 px rosinality decoder (num_ws 8, w_dim 8), small encoder."""
    dec = ref.random_generator_state(size=32, style_dim=8, n_mlp=2, channels={4: 16, 8: 16, 16: 16, 32: 8},
                                     seed=seed)
    E = randomise(small_encoder(num_ws=8, w_dim=8, img_resolution=32), seed=seed + 1)
    enc = {k: v for k, v in E.state_dict().items() if k != "w_avg"}
    latent_avg = torch.randn(8, generator=torch.Generator().manual_seed(seed + 2))
    stored = {"full": latent_avg.repeat(8, 1), "flat": latent_avg, "row": latent_avg[None]}[latent_avg_shape]
    opts = dict(encoder_type="Encoder4Editing", input_nc=3, output_size=1024, stylegan_size=32,
                dataset_type="ffhq_encode", start_from_latent_avg=True, lpips_lambda=0.8, w_discriminator_lambda=0.1,
                progressive_steps=[0, 20000], device="cuda:0")
    ckpt = {
        "state_dict": {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"decoder.{k}": v for k, v in dec.items()}},
        "latent_avg": stored,
        "opts": argparse.Namespace(**opts) if opts_as == "namespace" else opts,
        **(extra or {}),
    }
    torch.save(ckpt, path)
    return dict(path=path, enc=enc, dec=dec, latent_avg=latent_avg)


@pytest.mark.parametrize("latent_avg_shape,opts_as", [("full", "dict"), ("flat", "namespace"), ("row", "dict")])
def test_e4e_import_matches_naive_forward(tmp_path, latent_avg_shape, opts_as):
    f = e4e_file(tmp_path / "e4e.pt", latent_avg_shape=latent_avg_shape, opts_as=opts_as,
                 extra={"discriminator_state_dict": {"0.weight": torch.zeros(2, 2)}})
    E, G = import_e4e_checkpoint(f["path"])
    assert isinstance(E, Encoder4Editing) and not E.training
    assert (E.num_ws, E.w_dim, E.img_resolution) == (8, 8, 32) and E.progressive_stage is None
    assert E.init_kwargs["blocks"] == SMALL["blocks"] and E.init_kwargs["channels"] == SMALL["channels"]
    assert G.num_ws == 8 and G.img_resolution == 32
    torch.testing.assert_close(G.mapping.w_avg, f["latent_avg"])
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ws = E(img)
        close(ws, naive_e4e(f["enc"], img, f["latent_avg"]))
        # Stages as e4e's ProgressiveStage: the naive forward with the same stage.
        E.set_progressive_stage(5)
        close(E(img), naive_e4e(f["enc"], img, f["latent_avg"], stage=5))
        # The decoder renders the codes as the rosinality reference does.
        close(G.synthesis(ws, noise_mode="const"), ref.synthesis(f["dec"], ws), tol=1e-4)


def test_e4e_import_without_latent_avg(tmp_path):
    # Trained with start_from_latent_avg=False: e4e adds nothing to the codes; G's w_avg is estimated.
    f = e4e_file(tmp_path / "e4e.pt")
    ckpt = torch.load(f["path"], weights_only=True)
    del ckpt["latent_avg"]
    ckpt["opts"]["start_from_latent_avg"] = False
    torch.save(ckpt, tmp_path / "noavg.pt")
    E, G = import_e4e_checkpoint(tmp_path / "noavg.pt")
    assert torch.equal(E.w_avg, torch.zeros(8, 8))
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        close(E(img), naive_e4e(f["enc"], img, torch.zeros(8)))
        w = G.mapping(torch.randn(4000, 8, generator=torch.Generator().manual_seed(1)), None)[:, 0]
    assert (G.mapping.w_avg - w.mean(0)).norm() < 0.1 * w.std(0).norm()
    ckpt["opts"]["start_from_latent_avg"] = True
    torch.save(ckpt, tmp_path / "noavg2.pt")
    with pytest.raises(CheckpointError, match="no latent_avg"):
        import_e4e_checkpoint(tmp_path / "noavg2.pt")


def test_e4e_import_refuses_hostile_and_foreign_files(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    good = e4e_file(tmp_path / "good.pt")
    ckpt = torch.load(good["path"], weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({**ckpt, "opts": Evil()}, evil)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system") as info:
        import_e4e_checkpoint(evil)
    assert "nothing from the file was executed" in str(info.value) and not marker.exists()

    psp = tmp_path / "psp.pt"
    torch.save({**ckpt, "opts": {**ckpt["opts"], "encoder_type": "GradualStyleEncoder"}}, psp)
    with pytest.raises(CheckpointError, match="GradualStyleEncoder"):
        import_e4e_checkpoint(psp)
    missing = tmp_path / "missing.pt"
    sd = dict(ckpt["state_dict"])
    del sd["encoder.styles.5.linear.bias"]
    torch.save({**ckpt, "state_dict": sd}, missing)
    with pytest.raises(CheckpointError, match="styles.5.linear.bias"):
        import_e4e_checkpoint(missing)
    wrong_size = tmp_path / "size.pt"
    torch.save({**ckpt, "opts": {**ckpt["opts"], "stylegan_size": 1024}}, wrong_size)
    with pytest.raises(CheckpointError, match="stylegan_size is 1024"):
        import_e4e_checkpoint(wrong_size)
    other = tmp_path / "other.pt"
    torch.save({"g_ema": {}}, other)
    with pytest.raises(CheckpointError, match="not an e4e checkpoint"):
        import_e4e_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        import_e4e_checkpoint(tmp_path / "nope.pt")


# ---------------------------------------------------------------------------------------------
# training/train_encoder.py on a tiny random generator (CPU, a few steps).


@pytest.fixture(scope="module")
def smoke_gen(tmp_path_factory):
    from training.train_encoder import smoke_generator

    return smoke_generator(tmp_path_factory.mktemp("gen") / "G.safetensors", seed=0)


@pytest.fixture(scope="module")
def blobs32(tmp_path_factory):
    from training.dataset import write_synthetic_archive

    return write_synthetic_archive(tmp_path_factory.mktemp("data") / "blobs32.zip", num_images=16, resolution=32)


def train_enc(gen, outdir, steps, *extra):
    from training.train_encoder import main

    return main(["--cpu-smoke", "--generator", str(gen), "--outdir", str(outdir), "--steps", str(steps),
                 *map(str, extra)])


def recon_mse(E, G):
    """Pixel MSE of G(E(x)) on 16 fixed samples of G (the encoder in eval mode)."""
    with torch.no_grad():
        z = torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(7))
        img = G.synthesis(G.mapping(z, None, truncation_psi=0.8), noise_mode="const")
        E.eval()
        return (G.synthesis(E(img), noise_mode="const") - img).square().mean().item()


def test_train_encoder_dry_run(smoke_gen, tmp_path, capsys):
    out = tmp_path / "dry"
    assert train_enc(smoke_gen, out, 5, "--dry-run") is None
    text = capsys.readouterr().out
    opts = json.loads(text[: text.index("\n}") + 2])
    assert opts["device"] == "cpu" and opts["enc_resolution"] == 32 and opts["synthetic_fraction"] == 1.0
    assert opts["blocks"] == [1, 1, 1, 1] and opts["lpips_lambda"] == 0.0
    assert "num_ws 8" in text and "encoder: " in text and "latent D: " in text
    assert not out.exists()
    # A preset picks the architecture (over the smoke defaults); explicit flags win over both.
    train_enc(smoke_gen, out, 5, "--dry-run", "--preset", "demo", "--channels", "8,16,24,32")
    text = capsys.readouterr().out
    opts = json.loads(text[: text.index("\n}") + 2])
    assert (opts["preset"], opts["blocks"], opts["channels"], opts["head_channels"]) == (
        "demo", [1, 2, 2, 1], [8, 16, 24, 32], 128)


def test_a_few_steps_lower_the_reconstruction_error(smoke_gen, tmp_path):
    start = train_enc(smoke_gen, tmp_path / "s0", 0)  # 0 steps: the initial encoder
    end = train_enc(smoke_gen, tmp_path / "s1", 20)
    before, after = recon_mse(start["E"], start["G"]), recon_mse(end["E"], end["G"])
    assert after < 0.7 * before, (before, after)  # 0.97 -> 0.58 here
    assert end["E"].progressive_stage is None  # all 7 deltas unlocked at step index 4 + 6 * 2
    records = [json.loads(line) for line in (tmp_path / "s1" / "stats.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == [1, 3, 6, 7]  # stage of the last step before 5, 10, 15, 20
    assert records[-1]["Loss/l2"] < records[0]["Loss/l2"]
    assert {"Loss/w", "Loss/adv", "Loss/D", "Loss/r1", "Loss/delta"} <= records[0].keys()


def test_resume_reproduces_the_next_steps_and_snapshots_load(smoke_gen, blobs32, tmp_path):
    # Real images and G's samples mixed; the progressive stage changes (step 4) and R1 runs (steps 0, 4) after
    # the resume point.
    args = ("--data", blobs32, "--synthetic-fraction", "0.5", "--log-every", "1", "--snap-every", "3")
    a = train_enc(smoke_gen, tmp_path / "straight", 5, *args)
    train_enc(smoke_gen, tmp_path / "resumed", 3, *args)
    b = train_enc(smoke_gen, tmp_path / "resumed", 5, *args, "--resume", tmp_path / "resumed")
    assert a["step"] == b["step"] == 5
    for name in ("E", "D"):
        pa, pb = a[name].state_dict(), b[name].state_dict()
        assert pa.keys() == pb.keys()
        for k in pa:
            assert torch.equal(pa[k], pb[k]), f"{name}.{k} differs after resume"

    out = tmp_path / "straight"
    snap = out / "encoder-snapshot-0000005.safetensors"
    assert a["snapshots"] == [str(out / "encoder-snapshot-0000003.safetensors"), str(snap)]
    assert (out / "training-state-0000005.pt").exists()
    assert Image.open(out / "samples-0000005.png").size == (8 * 32, 32)  # 4 pairs of 32 px images
    assert json.loads((out / "options.json").read_text())["synthetic_fraction"] == 0.5
    header = read_header(snap)
    assert header["extra"]["step"] == 5 and header["extra"]["progressive_stage"] == 1  # step index 4
    E = load_networks(snap)["encoder"]
    assert E.progressive_stage == 1
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(E(img), a["E"].eval()(img))


def test_minutes_limit_stops_at_a_snapshot_and_resume_adds_up_the_time(smoke_gen, tmp_path):
    out = tmp_path / "timed"
    res = train_enc(smoke_gen, out, 100000, "--minutes", "0.0005", "--snap-every", "1000")  # 30 ms of training
    assert 0 < res["step"] < 100000  # stopped by the clock, with a snapshot of where it stopped
    assert res["snapshots"] == [str(out / f"encoder-snapshot-{res['step']:07d}.safetensors")]
    t1 = read_header(res["snapshots"][0])["extra"]["train_time_s"]
    assert t1 >= 0.03
    res2 = train_enc(smoke_gen, out, 100000, "--minutes", "0.001", "--snap-every", "1000", "--resume", out)
    assert res2["step"] > res["step"]
    assert read_header(res2["snapshots"][-1])["extra"]["train_time_s"] >= max(t1, 0.06)  # summed over resumes


@pytest.mark.slow
def test_two_process_gloo_run(smoke_gen, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train_encoder", "--cpu-smoke", "--generator", str(smoke_gen),
           "--outdir", str(out), "--steps", "3", "--log-every", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=repo,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "encoder-snapshot-0000003.safetensors").exists()
    assert [json.loads(line)["step"] for line in (out / "stats.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_balance_age_reaches_the_encoders_sampler_and_needs_ages(smoke_gen, blobs32, tmp_path, monkeypatch):
    import zipfile

    import training.runtime as runtime

    seen = []

    class Recording(runtime.ResumableSampler):
        def __init__(self, *a, weights=None, **k):
            super().__init__(*a, weights=weights, **k)
            seen.append(self.weights)

    monkeypatch.setattr(runtime, "ResumableSampler", Recording)  # make_loader's

    aged = tmp_path / "aged.zip"
    with zipfile.ZipFile(blobs32) as zin, zipfile.ZipFile(aged, "w") as zout:
        names = sorted(n for n in zin.namelist() if n.endswith(".png"))
        for n in names:
            zout.writestr(n, zin.read(n))
        attrs = [[n, {"age": 70 if i < 2 else 25}] for i, n in enumerate(names)]
        zout.writestr("dataset.json", json.dumps({"labels": None, "attributes": attrs}))
    res = train_enc(smoke_gen, tmp_path / "b", 2, "--data", aged, "--synthetic-fraction", "0.5",
                    "--balance-age", "1.0")
    assert res["step"] == 2
    assert json.loads((tmp_path / "b" / "options.json").read_text())["balance_age"] == 1.0
    (w,) = seen  # the 2 old faces (of 16) weigh 7x each young one: old and young bins drawn equally
    assert w is not None and w[0] / w[5] == pytest.approx(7.0)
    seen.clear()
    train_enc(smoke_gen, tmp_path / "plain", 1, "--data", aged, "--synthetic-fraction", "0.5")
    assert seen == [None]
    with pytest.raises(Exception, match="no image has an age"):
        train_enc(smoke_gen, tmp_path / "c", 2, "--data", blobs32, "--synthetic-fraction", "0.5",
                  "--balance-age", "0.5")


# the last head reads p1 (10 layers), p2 (6: the new 7th would read p1 unless moved) or c3 (2: the new 4th, p2)
@pytest.mark.parametrize("num_ws", [10, 6, 2])
def test_grown_encoder_repeats_its_last_code_until_the_new_heads_learn(num_ws):
    from faceapp.inversion.encoder import grow_encoder
    from training.train_generator import extend_ws

    E = randomise(small_encoder(num_ws=num_ws, w_dim=16, img_resolution=32), seed=5).eval()
    big = grow_encoder(E, num_ws + 2).eval()
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        close(big(img), extend_ws(E(img), num_ws + 2))
        big.styles[num_ws + 1].linear.bias.add_(1.0)  # the new heads are copies, not E's own head
        out = big(img)
        close(out[:, : num_ws + 1], extend_ws(E(img), num_ws + 1))
        assert (out[:, -1] - E(img)[:, -1]).abs().min() > 0.5
    assert big.init_kwargs["num_ws"] == num_ws + 2 and E.num_ws == num_ws
    with pytest.raises(FaceAppError, match="cannot grow"):
        grow_encoder(E, num_ws - 1)


def test_train_encoder_init_grows_an_encoder_for_a_grown_generator(smoke_gen, tmp_path, capsys):
    from faceapp.stylegan.checkpoint import load_generator
    from training.train_generator import grow_generator

    first = train_enc(smoke_gen, tmp_path / "small", 2)
    enc = sorted((tmp_path / "small").glob("encoder-snapshot-*.safetensors"))[-1]
    G = load_generator(smoke_gen)
    big = grow_generator(G, 2 * G.img_resolution)
    gen2 = tmp_path / "G2.safetensors"
    save_networks(gen2, {"G_ema": big})
    capsys.readouterr()
    out = train_enc(gen2, tmp_path / "big", 1, "--init", enc)
    assert "the new layers' heads start as copies" in capsys.readouterr().out
    assert out["E"].num_ws == big.num_ws == first["E"].num_ws + 2
