"""The detail stage: DetailNet, its place in bundles and FaceEditor, and its trainer on a tiny UTKFace-like zip."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from faceapp.bundle import load_bundle, make_random_bundle, save_bundle
from faceapp.errors import CheckpointError
from faceapp.pipeline import FaceEditor
from faceapp.stylegan.checkpoint import load_networks, save_networks
from faceapp.stylegan.detail import DetailNet

DATA = Path(__file__).parent / "data"


def test_untrained_detail_stage_is_bicubic_upsampling():
    net = DetailNet(in_resolution=16, scale=4, channels=8, blocks=1, up_channels=8).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    ref = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(net(x), ref, atol=1e-6)
    with pytest.raises(ValueError):
        DetailNet(scale=3)


def test_detail_round_trip_and_learns_something(tmp_path):
    torch.manual_seed(0)
    net = DetailNet(in_resolution=8, scale=2, channels=8, blocks=1, up_channels=8)
    # a task bicubic upsampling cannot do: a sharp checkerboard from its blurred half-size version
    y = torch.ones(4, 3, 16, 16)
    y[:, :, ::2, ::2] = -1
    y[:, :, 1::2, 1::2] = -1
    x = F.avg_pool2d(y, 2) + 0.1 * torch.randn(4, 3, 8, 8)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    first = None
    for _ in range(150):
        loss = (net(x) - y).abs().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    save_networks(tmp_path / "d.safetensors", {"detail": net})
    back = load_networks(tmp_path / "d.safetensors")["detail"]
    assert isinstance(back, DetailNet) and torch.allclose(back(x), net(x), atol=1e-5)


@pytest.fixture(scope="module")
def bundle_with_detail(tmp_path_factory):
    root = tmp_path_factory.mktemp("b")
    plain = load_bundle(make_random_bundle(root / "plain", resolution=32, seed=3))
    torch.manual_seed(1)
    detail = DetailNet(in_resolution=32, scale=2, channels=8, blocks=1, up_channels=8)
    torch.nn.init.normal_(detail.tail.weight, std=0.05)  # not plain bicubic: its output must show
    path = save_bundle(root / "detail", G=plain.G, align_spec=plain.align_spec, directions=plain.directions,
                       detail=detail, name="with-detail")
    return plain, load_bundle(path), detail


def test_bundle_loads_its_detail_stage_and_the_editor_renders_through_it(bundle_with_detail):
    from faceapp.imageio import load_image

    plain, b, detail = bundle_with_detail
    assert plain.detail is None and isinstance(b.detail, DetailNet)
    assert b.model_id != plain.model_id  # the detail stage is part of what the model is
    ed = FaceEditor(b)
    assert ed.detail_resolution == 64 and ed.resolution == 32
    ws = ed.generate(seed=5)
    img = np.asarray(ed.render(ws), np.float32)
    with torch.no_grad():
        ref = detail(b.G.synthesis(ws, noise_mode="const"))[0].permute(1, 2, 0).clamp(-1, 1)
    assert img.shape == (64, 64, 3)
    assert np.abs(img - ((ref.numpy() + 1) * 127.5)).max() <= 1.0
    # the whole pipeline on a photo: no edit is the photo itself; an edit changes the face
    photo = load_image(DATA / "astronaut.jpg")
    from faceapp.inversion import InvertConfig

    ed = FaceEditor(b, invert_kwargs={"config": InvertConfig(fast_steps_no_encoder=2, perceptual_weight=0.0)})
    prepared = ed.prepare(photo)
    assert np.array_equal(np.asarray(ed.compose(photo, prepared, {})), np.asarray(photo))
    older = np.asarray(ed.compose(photo, prepared, {"age": 3}), np.int16)
    assert np.abs(older - np.asarray(photo, np.int16)).max() > 5


def test_a_detail_stage_for_another_generator_is_refused(bundle_with_detail, tmp_path):
    plain, b, _ = bundle_with_detail
    wrong = DetailNet(in_resolution=64, scale=2, channels=8, blocks=1, up_channels=8)
    path = save_bundle(tmp_path / "wrong", G=plain.G, align_spec=plain.align_spec, detail=wrong)
    with pytest.raises(CheckpointError, match="takes 64 px renders"):
        load_bundle(path)


def _tiny_utkface_zip(path: Path, n: int = 12) -> Path:
    """A zip laid out like UTKFace's: <age>_<gender>_<race>_<stamp>.jpg.chip.jpg, 200 px (random faces)."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (200, 200, 3), np.uint8)).save(buf, "JPEG")
            z.writestr(f"UTKFace/{20 + i}_0_0_2017010{i:02d}.jpg.chip.jpg", buf.getvalue())
    return path


@pytest.mark.slow
def test_train_detail_makes_pairs_trains_and_resumes(tmp_path, monkeypatch):
    from faceapp.inversion.encoder import Encoder4Editing
    from training import train_detail

    plain = load_bundle(make_random_bundle(tmp_path / "plain", resolution=32, seed=3))
    E = Encoder4Editing(num_ws=plain.G.num_ws, w_dim=plain.G.w_dim, img_resolution=32, blocks=[1, 1, 1, 1],
                        channels=[8, 8, 8, 8])
    E.w_avg.copy_(plain.G.mapping.w_avg)
    bpath = save_bundle(tmp_path / "b", G=plain.G, encoder=E, align_spec=plain.align_spec)
    z = _tiny_utkface_zip(tmp_path / "utk.zip")
    pairs = train_detail.make_pairs(bpath, z, tmp_path / "pairs.npz", batch=4)
    data = np.load(pairs)
    assert data["renders"].shape == (12, 32, 32, 3) and len(data["names"]) == 12
    out = tmp_path / "run"
    args = ["train", "--input", "render", "--pairs", str(pairs), "--zip", str(z), "--out", str(out), "--channels",
            "8", "--blocks", "1", "--batch", "4", "--epochs", "2", "--snapshot-minutes", "100"]
    monkeypatch.setattr(train_detail, "_heldout_names", lambda: ([], {}))
    assert train_detail.main(args) == 0  # 2 epochs x 3 steps
    net = load_networks(out / "detail.safetensors")["detail"]
    assert isinstance(net, DetailNet) and net.img_resolution == 64
    log = [line for line in (out / "log.jsonl").read_text().splitlines() if line]
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 6
    # a rerun of a finished run resumes at its end and does no more steps
    assert train_detail.main(args) == 0
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 6
    assert len([line for line in (out / "log.jsonl").read_text().splitlines() if line]) == len(log)


def test_cli_bundle_takes_a_detail_stage(bundle_with_detail, tmp_path):
    from faceapp.cli import main as cli

    plain, _, detail = bundle_with_detail
    save_networks(tmp_path / "G.safetensors", {"G_ema": plain.G})
    save_networks(tmp_path / "detail.safetensors", {"detail": detail})
    assert cli(["bundle", "--generator", str(tmp_path / "G.safetensors"), "--detail",
                str(tmp_path / "detail.safetensors"), "--align", "utkface", "--out", str(tmp_path / "b")]) == 0
    b = load_bundle(tmp_path / "b")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(b.detail(x), detail(x), atol=1e-5)
    assert b.meta["sources"]["detail"]["file"] == "detail.safetensors"


def test_evaluate_compares_with_bicubic(tmp_path, monkeypatch):
    import json

    import training.utkface as utkface
    from training import train_detail

    z = _tiny_utkface_zip(tmp_path / "utk.zip", n=4)
    (tmp_path / "held.txt").write_text("20_0_0_201701000.jpg.chip.jpg\n21_0_0_201701001.jpg.chip.jpg\n")
    monkeypatch.setattr(utkface, "HELDOUT_LISTS", (tmp_path / "held.txt",))
    net = DetailNet(in_resolution=16, scale=2, channels=8, blocks=1, up_channels=8)  # untrained: bicubic itself
    save_networks(tmp_path / "d.safetensors", {"detail": net})
    assert train_detail.main(["evaluate", "--model", str(tmp_path / "d.safetensors"), "--zip", str(z),
                              "--json", str(tmp_path / "e.json")]) == 0
    row = json.loads((tmp_path / "e.json").read_text())["held.txt"]
    assert row["faces"] == 2 and row["detail"]["l1"] == pytest.approx(row["bicubic"]["l1"], rel=1e-4)
    assert row["bicubic"]["l1"] > 0.05  # random pixels: upsampling cannot restore them


def test_the_app_names_the_detail_stage(bundle_with_detail):
    import app

    plain, b, _ = bundle_with_detail
    assert "a detail stage to 64x64" in app.model_notice(b)
    assert "detail stage" not in app.model_notice(plain)


def test_train_detail_init_starts_from_a_trained_stage(tmp_path, monkeypatch):
    from training import train_detail

    # photo inputs need no pairs file: the zip's photos, the held-out ones left out
    monkeypatch.setattr(train_detail, "_heldout_names", lambda: (["20_0_0_201701000.jpg.chip.jpg"], {}))
    z = _tiny_utkface_zip(tmp_path / "utk.zip", n=5)
    torch.manual_seed(3)
    start = DetailNet(in_resolution=16, scale=2, channels=8, blocks=1)
    torch.nn.init.normal_(start.tail.weight, std=0.1)
    save_networks(tmp_path / "start.safetensors", {"detail": start})
    base = ["train", "--in-resolution", "16", "--zip", str(z), "--channels", "8", "--blocks", "1",
            "--batch", "2", "--init", str(tmp_path / "start.safetensors")]
    assert train_detail.main([*base, "--out", str(tmp_path / "a"), "--epochs", "0"]) == 0  # no step: a copy
    back = load_networks(tmp_path / "a" / "detail.safetensors")["detail"]
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(back(x), start(x), atol=1e-2)  # fp16 storage
        assert not torch.allclose(back(x), F.interpolate(x, scale_factor=2, mode="bicubic"), atol=1e-2)
    with pytest.raises(SystemExit, match="not"):
        train_detail.main([*base, "--out", str(tmp_path / "b"), "--epochs", "0", "--blocks", "2"])
    # the adversarial fine-tune: the projected D trains beside it and its state resumes with the run's
    assert train_detail.main([*base, "--out", str(tmp_path / "c"), "--epochs", "1", "--adv-weight", "0.1"]) == 0
    state = torch.load(tmp_path / "c" / "state.pt", weights_only=True)
    assert state["step"] == 2 and "D" in state and "D_opt" in state  # 4 training photos, batch 2
    from faceapp.stylegan.checkpoint import read_header

    assert read_header(tmp_path / "c" / "detail.safetensors")["extra"]["pairs"] == 4
