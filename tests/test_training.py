"""Generator training (training/train_generator.py), its losses, the archive reader and prepare_dataset.

Everything runs tiny 16 px networks on CPU for a handful of steps.
"""

import csv
import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceapp.align import Face, utkface_spec
from faceapp.errors import NoFaceError
from faceapp.stylegan.checkpoint import load_generator
from training import prepare_dataset as prep
from training.augment import adjust_ada_p
from training.dataset import DatasetError, ImageArchive, write_synthetic_archive
from training.train_generator import main

REPO = Path(__file__).resolve().parents[1]
BATCH = 4  # the --cpu-smoke batch


def kimg(steps: int) -> str:
    return str(steps * BATCH / 1000)


def train(data, outdir, steps, *extra):
    """Run the CLI in-process for ``steps`` steps of the CPU smoke config; return the loop summary."""
    return main(["--cpu-smoke", "--data", str(data), "--outdir", str(outdir), "--kimg", kimg(steps),
                 "--grid", "2", *map(str, extra)])


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """32 synthetic 16 px images (warm discs on dark blue), with left/right class labels."""
    return write_synthetic_archive(tmp_path_factory.mktemp("data") / "blobs.zip", num_images=32,
                                   resolution=16, seed=0, labels=True)


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The archive reader.


def test_archive_reads_images_labels_and_mirrors(blobs, tmp_path):
    ds = ImageArchive(blobs, use_labels=True)
    assert len(ds) == 32 and ds.resolution == 16 and ds.num_channels == 3 and ds.label_dim == 2
    img, label = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16)
    assert label.sum() == 1  # one-hot of an int class
    # Background is dark blue, the disc warm: the mean colour is bluish-dark with a red cast.
    assert img[2].float().mean() > 20

    mirrored = ImageArchive(blobs, xflip=True)
    assert len(mirrored) == 64
    assert torch.equal(mirrored[32][0], mirrored[0][0].flip(-1))

    # Worker processes each open the zip themselves and read the same bytes.
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)
    assert torch.equal(torch.cat([b[0] for b in loader]), torch.stack([ds[i][0] for i in range(32)]))

    # The same archive unpacked to a folder reads the same.
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(blobs).extractall(folder)
    assert torch.equal(ImageArchive(folder)[5][0], ds[5][0])

    with pytest.raises(DatasetError, match="32px.*is 16x16"):
        ImageArchive(blobs, resolution=32)
    with pytest.raises(DatasetError, match="does not exist"):
        ImageArchive(tmp_path / "missing.zip")


# ---------------------------------------------------------------------------------------------
# The losses, on toy networks whose gradients are known in closed form.


class _ToyMapping(torch.nn.Module):
    def __init__(self, z_dim, w_dim, num_ws):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(z_dim, w_dim))
        self.num_ws = num_ws

    def forward(self, z, c, update_emas=False):
        return (z @ self.weight).unsqueeze(1).repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]


class _ToySynthesis(torch.nn.Module):
    """img = sum of the ws, as a 1-channel square image: d img / d ws[l] is the identity."""

    def __init__(self, size):
        super().__init__()
        self.size = size
        self.scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, ws, noise_mode="random"):
        return (ws.sum(1) * self.scale).view(-1, 1, self.size, self.size)


class _ToyG(torch.nn.Module):
    def __init__(self, size=16, num_ws=3):
        super().__init__()
        self.mapping = _ToyMapping(size * size, size * size, num_ws)
        self.synthesis = _ToySynthesis(size)


class _LinearD(torch.nn.Module):
    def __init__(self, size=16):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(size * size) * 0.1)
        self.bias = torch.nn.Parameter(torch.zeros([]))

    def forward(self, img, c):
        return (img.flatten(1) @ self.weight + self.bias).unsqueeze(1)  # [N, 1]


def _toy_loss(**cfg):
    from training.loss import LossConfig, StyleGAN2Loss

    G, D = _ToyG(), _LinearD()
    return G, D, StyleGAN2Loss(G, D, LossConfig(style_mixing_prob=0.0, **cfg))


def test_r1_penalty_of_a_linear_D_is_its_weight_norm():
    G, D, loss = _toy_loss(r1_gamma=4.0)
    reals, c, z = torch.randn(8, 1, 16, 16), torch.zeros(8, 0), torch.randn(8, 256)
    st = loss.accumulate_gradients("Dreg", reals, c, z, c, gain=16.0)
    w = D.weight.detach()
    assert st["Loss/r1_penalty"].item() == pytest.approx(w.square().sum().item(), rel=1e-5)
    # d/dw [gain * gamma/2 * |w|^2] = gain * gamma * w
    assert torch.allclose(D.weight.grad, 16.0 * 4.0 * w, rtol=1e-5)


def test_logistic_losses_and_their_directions():
    G, D, loss = _toy_loss()
    reals, c, z = torch.randn(8, 1, 16, 16), torch.zeros(8, 0), torch.randn(8, 256)
    with torch.no_grad():
        D.weight.zero_()  # D says 0 to everything: both losses are log 2 per term
    st = loss.accumulate_gradients("Dmain", reals, c, z, c, gain=1.0)
    assert st["Loss/D/loss"].item() == pytest.approx(2 * math.log(2))
    assert D.bias.grad.item() == pytest.approx(0.0, abs=1e-6)  # the two terms balance
    assert G.mapping.weight.grad is None  # D's phase leaves G alone
    D.bias.grad = None
    st = loss.accumulate_gradients("Gmain", reals, c, z, c, gain=1.0)
    assert st["Loss/G/loss"].item() == pytest.approx(math.log(2))
    # G's loss falls as D's score of fakes rises: the gradient on D's bias is -sigmoid(0).
    assert D.bias.grad.item() == pytest.approx(-0.5)


def test_path_length_mean_tracks_the_jacobian_norm():
    # With img = sum(ws), |J^T y| = |y| for image-space noise y of unit expected norm,
    # so path lengths are ~1 and pl_mean moves 1% of the way there per call.
    G, D, loss = _toy_loss(pl_decay=0.01, pl_batch_shrink=2)
    c, z = torch.zeros(64, 0), torch.randn(64, 256)
    st = loss.accumulate_gradients("Greg", torch.zeros(64, 1, 16, 16), c, z, c, gain=4.0)
    assert st["Loss/pl_mean"].item() == pytest.approx(0.01, rel=0.1)
    assert loss.pl_mean.item() == st["Loss/pl_mean"].item()
    # The penalty (|J^T y| - pl_mean)^2 pulls the Jacobian's scale down toward pl_mean.
    assert G.synthesis.scale.grad.item() > 0


# ---------------------------------------------------------------------------------------------
# Training.


def test_dry_run_prints_options_and_network_sizes(blobs, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(blobs, out, 1, "--dry-run") is None
    text = capsys.readouterr().out
    opts = json.loads(text[: text.index("}") + 1])
    assert opts["batch"] == BATCH and opts["device"] == "cpu" and opts["precision"] == "fp32"
    assert opts["gamma"] == pytest.approx(0.0002 * 16**2 / BATCH)  # the auto R1 weight
    assert "G: " in text and "D: " in text and "parameters" in text and "num_ws 6" in text
    assert not out.exists()  # nothing written


def _mean_colour_distance(G, target):  # target [3]
    with torch.no_grad():
        z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(1))
        img = G(z, None, noise_mode="const")  # [64, 3, 16, 16]
    return (img.mean([0, 2, 3]) - target).norm().item()


def _real_fake_gap(G, D, reals):
    with torch.no_grad():
        z = torch.randn(len(reals), G.z_dim, generator=torch.Generator().manual_seed(2))
        return (D(reals, None).mean() - D(G(z, None, noise_mode="const"), None).mean()).item()


def test_a_few_steps_teach_D_the_data_and_move_G_towards_it(blobs, tmp_path):
    ds = ImageArchive(blobs)
    reals = torch.stack([ds[i][0] for i in range(len(ds))]).float() / 127.5 - 1  # [32, 3, 16, 16]
    target = reals.mean([0, 2, 3])
    start = train(blobs, tmp_path / "init", 0, "--aug", "noaug")  # 0 steps: the initial networks
    end = train(blobs, tmp_path / "run", 8, "--aug", "noaug")
    before = _mean_colour_distance(start["G"], target)
    after = _mean_colour_distance(end["G"], target)
    assert after < 0.75 * before, (before, after)
    gap_before = _real_fake_gap(start["G"], start["D"], reals)
    gap_after = _real_fake_gap(end["G"], end["D"], reals)
    assert gap_after > gap_before + 0.5, (gap_before, gap_after)
    assert all(torch.isfinite(p).all() for p in end["G"].parameters())


RESUME_ARGS = ("--pl-interval", "2", "--r1-interval", "3", "--aug", "ada", "--log-kimg", kimg(1))


@pytest.fixture(scope="module")
def straight_run(blobs, tmp_path_factory):
    """5 steps in one go, with lazy regularisers and ADA (p updated after step 4) in the mix."""
    out = tmp_path_factory.mktemp("straight")
    return out, train(blobs, out, 5, *RESUME_ARGS)


def test_resume_reproduces_the_next_steps_exactly(blobs, straight_run, tmp_path):
    _, a = straight_run
    out = tmp_path / "resumed"
    train(blobs, out, 3, *RESUME_ARGS)
    b = train(blobs, out, 5, *RESUME_ARGS, "--resume", out)
    assert b["cur_nimg"] == a["cur_nimg"] == 5 * BATCH and b["batch_idx"] == 5
    assert b["augment_pipe"].p == a["augment_pipe"].p
    for name in ("G", "D", "G_ema"):
        pa, pb = params(a[name]), params(b[name])
        assert pa.keys() == pb.keys()
        for k in pa:
            assert torch.equal(pa[k], pb[k]), f"{name}.{k} differs after resume"


def test_outputs_and_snapshot_load_in_faceapp(straight_run):
    out, summary = straight_run
    snap = out / "network-snapshot-000000020.safetensors"
    assert summary["snapshots"] == [str(snap)]
    assert (out / "training-state-000000020.pt").exists()
    for name in ("reals.png", "fakes-000000020.png"):
        assert Image.open(out / name).size == (32, 32)  # 2x2 grid of 16 px images
    opts = json.loads((out / "options.json").read_text())
    assert opts["pl_interval"] == 2 and opts["aug"] == "ada"
    records = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert {"Loss/G/loss", "Loss/D/loss", "ada_p", "sec_per_kimg"} <= records[0].keys()
    assert "Loss/r1_penalty" in records[0] and "Loss/pl_penalty" in records[0]  # step 0 runs both regs

    G = load_generator(snap, device="cpu")
    z = torch.randn(3, G.z_dim)
    img = G(z, None, noise_mode="const")
    assert img.shape == (3, 3, 16, 16)
    assert torch.equal(img, summary["G_ema"](z, None, noise_mode="const"))


def test_ada_p_follows_the_sign_of_D_on_reals(straight_run):
    # p after step 4 is one ADA update from 0 with r_t = mean of sign(D(real)) over steps 1-4.
    out, _ = straight_run
    records = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    r_t = float(np.mean([r["Loss/signs/real"] for r in records[:4]]))
    expected = adjust_ada_p(0.0, r_t, 0.6, batch_images=4 * BATCH, ada_kimg=0.1)
    assert [r["ada_p"] for r in records[:3]] == [0.0, 0.0, 0.0]
    assert records[3]["ada_p"] == pytest.approx(expected)


def test_init_fine_tunes_from_a_checkpoint(blobs, straight_run, tmp_path):
    # The checkpoint's architecture wins over --cbase; training starts from its weights.
    out, summary = straight_run
    snap = out / "network-snapshot-000000020.safetensors"
    run = train(blobs, tmp_path / "ft", 1, "--init", snap, "--cbase", "1024", "--aug", "noaug")
    assert run["G"].init_kwargs == summary["G"].init_kwargs
    moved = [(p - q).abs().max().item() for p, q in zip(run["G"].parameters(), summary["G"].parameters())]
    assert 0 < max(moved) < 0.1  # one step away from the checkpoint, not a fresh init
    assert json.loads((tmp_path / "ft" / "options.json").read_text())["init"] == str(snap)


@pytest.mark.slow
def test_bf16_autocast_step(blobs, tmp_path):
    # CPU autocast exercises the same dtype plumbing as CUDA's.
    out = train(blobs, tmp_path / "bf16", 1, "--precision", "bf16", "--aug", "fixed:0.5")
    assert all(torch.isfinite(p).all() for p in out["G"].parameters())
    assert out["G"].synthesis.b4.const.dtype == torch.float32  # weights stay float32


@pytest.mark.slow
def test_two_process_gloo_run(blobs, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train_generator", "--cpu-smoke", "--data", str(blobs),
           "--outdir", str(out), "--kimg", kimg(2), "--grid", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "network-snapshot-000000008.safetensors").exists()
    records = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2


# ---------------------------------------------------------------------------------------------
# prepare_dataset.


def _photo(path: Path, eyes=((30, 40), (70, 40))) -> None:
    """A 100x100 grey 'photo' with a red dot at the left eye and a blue one at the right."""
    arr = np.full((100, 100, 3), 128, np.uint8)
    for (x, y), colour in zip(eyes, [(255, 0, 0), (0, 0, 255)]):
        arr[y - 3 : y + 4, x - 3 : x + 4] = colour
    Image.fromarray(arr).save(path, format="PNG")  # lossless, whatever the name says


def _fake_detector(image, backend="auto", min_score=None, **_):
    """Landmarks from the dots _photo draws (wherever they are); 'no face' for an all-grey image."""
    arr = np.asarray(image)
    if (arr == 128).all():
        raise NoFaceError("no face found in the image")
    def centroid(mask):
        ys, xs = np.nonzero(mask)
        return np.array([xs.mean(), ys.mean()])

    eye_l = centroid((arr[..., 0] > 200) & (arr[..., 2] < 50))  # the red dot
    eye_r = centroid((arr[..., 2] > 200) & (arr[..., 0] < 50))  # the blue dot
    lm = np.zeros((68, 2), np.float32) + (eye_l + eye_r) / 2
    lm[36:42], lm[42:48] = eye_l, eye_r
    lm[30] = eye_l + (20, 15)  # nose tip
    lm[48], lm[54] = eye_l + (5, 30), eye_l + (35, 30)  # mouth corners
    x0, y0 = eye_l - 20
    return [Face(box=(x0, y0, x0 + 80, y0 + 80), score=1.0, landmarks68=lm, backend=backend)]


def test_prepare_dataset_crops_keeps_labels_and_lists_failures(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    src.mkdir()
    _photo(src / "23_1_2_20170116174525125.jpg.chip.jpg")
    _photo(src / "61_0_0_20170117191439283.jpg.chip.jpg")
    Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(src / "40_1_3_201701.jpg", format="PNG")
    (src / "45_0_1_2017.jpg").write_bytes(b"not a jpeg")  # unreadable
    (src / "notes.txt").write_text("ignored: not an image")
    monkeypatch.setattr(prep, "detect_faces", _fake_detector)

    dest = tmp_path / "out" / "faces-32.zip"
    summary = prep.main(["--source", str(src), "--dest", str(dest), "--resolution", "32", "--label", "gender"])
    assert summary["sources"] == 4 and summary["images"] == 2 and summary["failures"] == 2

    with open(tmp_path / "out" / "faces-32-failures.csv") as fh:
        failures = {r["source"]: r["reason"] for r in csv.DictReader(fh)}
    assert failures["40_1_3_201701.jpg"] == "no face found"
    assert failures["45_0_1_2017.jpg"].startswith("unreadable")
    opts = json.loads((tmp_path / "out" / "faces-32-options.json").read_text())
    assert opts["resolution"] == 32 and opts["align_spec"] == "utkface" and opts["label"] == "gender"

    ds = ImageArchive(dest, use_labels=True)
    assert len(ds) == 2 and ds.resolution == 32
    attrs = [ds.attributes[n] for n in ds.names]
    assert [(a["age"], a["gender"], a["race"]) for a in attrs] == [(23, 1, 2), (61, 0, 0)]
    assert attrs[0]["source"] == "23_1_2_20170116174525125.jpg.chip.jpg"
    assert ds.get_label(0).tolist() == [0, 1] and ds.get_label(1).tolist() == [1, 0]  # gender one-hot
    meta = json.loads(zipfile.ZipFile(dest).read("dataset.json"))
    assert meta["align_spec"] == utkface_spec(32).to_dict()

    # The crop follows the template: the red dot lands at the template's left eye.
    crop = ds[0][0].numpy().transpose(1, 2, 0).astype(int)  # [32, 32, 3]
    ex, ey = (np.array(utkface_spec(32).template[0]) * 32 - 0.5).round().astype(int)
    r, g, b = crop[ey, ex]
    assert r > 180 and g < 100 and b < 100, crop[ey, ex]


def test_prepare_dataset_reads_zips_pads_for_detection_and_falls_back(tmp_path, monkeypatch):
    src = tmp_path / "photos.zip"
    with zipfile.ZipFile(src, "w") as zf:
        buf = io.BytesIO()
        _photo(buf)
        zf.writestr("a/7_0_4_2017.jpg", buf.getvalue())
    seen = []

    def detector(image, backend="auto", **kw):
        seen.append((backend, image.size))
        if backend == "dlib":
            raise NoFaceError("HOG misses it")
        return _fake_detector(image, backend=backend, **kw)

    monkeypatch.setattr(prep, "detect_faces", detector)
    dest = tmp_path / "faces"  # a folder this time
    # With padding the detector sees a larger image; landmarks come back in photo pixels.
    prep.main(["--source", str(src), "--dest", str(dest), "--resolution", "32", "--detect-pad", "0.2",
               "--fallback-detector", "dlib_cnn"])
    assert seen == [("dlib", (140, 140)), ("dlib_cnn", (140, 140))]
    assert (dest / "failures.csv").exists() and (dest / "options.json").exists()
    ds = ImageArchive(dest)
    attrs = ds.attributes[ds.names[0]]
    assert attrs["age"] == 7 and attrs["detector"] == "dlib_cnn"
    # The landmarks were shifted back: the red dot is still at the template's left eye.
    crop = ds[0][0].numpy().transpose(1, 2, 0).astype(int)
    ex, ey = (np.array(utkface_spec(32).template[0]) * 32 - 0.5).round().astype(int)
    assert crop[ey, ex, 0] > 180 and crop[ey, ex, 2] < 100


def test_prepare_dataset_on_a_real_photo(tmp_path):
    # dlib's HOG detector on public-domain test photos: obama.jpg has one face, group.jpg four.
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("obama.jpg", "group.jpg"):
        (src / name).write_bytes((REPO / "tests" / "data" / name).read_bytes())
    summary = prep.main(["--source", str(src), "--dest", str(tmp_path / "f.zip"), "--resolution", "64",
                         "--align-spec", "ffhq", "--workers", "2"])  # through the process pool
    assert summary["images"] == 2 and summary["failures"] == 0
    ds = ImageArchive(tmp_path / "f.zip")
    faces = {ds.attributes[n]["source"]: ds.attributes[n]["faces"] for n in ds.names}
    assert faces == {"group.jpg": 4, "obama.jpg": 1}
    assert "age" not in ds.attributes[ds.names[0]]  # not a UTKFace name: no labels invented
