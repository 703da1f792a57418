"""The MobileNetV2 age estimator: its head's arithmetic, that it learns ages, storage, and its trainer."""

import io
import zipfile

import numpy as np
import pytest
import torch

from faceapp.errors import ModelUnavailableError
from faceapp.stylegan.checkpoint import save_networks
from training.age_estimator import (
    AgeEstimator,
    age_loss,
    augment,
    estimate_ages,
    load_age_estimator,
    main,
    register,
    soft_targets,
)


def test_soft_targets_and_expectation():
    t = soft_targets(torch.tensor([0, 30, 150]), max_age=100)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert t.argmax(1).tolist() == [0, 30, 100]  # past max_age: the last bin
    net = AgeEstimator(resolution=32, max_age=100, width_mult=0.25).eval()
    x = torch.rand(2, 3, 40, 40) * 2 - 1  # any size: resized inside
    with torch.no_grad():
        p = net.logits(x).softmax(1)
        assert torch.allclose(net(x), (p * torch.arange(101.0)).sum(1), atol=1e-4)


def test_it_learns_ages_from_pixels():
    """Faces stand-in: the age is written as the brightness of the image's top half; a few steps of the real
    loss must bring the mean error well below that of always answering the mean age."""
    torch.manual_seed(0)
    net = AgeEstimator(resolution=32, max_age=100, width_mult=0.25, dropout=0.0).train()
    ages = torch.randint(5, 95, (64,))
    x = torch.zeros(64, 3, 32, 32)
    x[:, :, :16] = (ages.float() / 100 * 2 - 1).view(-1, 1, 1, 1)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(120):
        loss = age_loss(net, x, ages)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        mae = (net(x) - ages).abs().mean().item()
    baseline = (ages.float() - ages.float().mean()).abs().mean().item()
    assert mae < 0.35 * baseline


def test_augment_keeps_range_and_makes_some_greyscale():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 16, 16)
    y = augment(x, g)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    grey = (y.max(1).values - y.min(1).values).amax(dim=(1, 2)) < 1e-4
    assert 0.1 < grey.float().mean() < 0.3  # about 20 %


def test_store_and_load(tmp_path):
    register()
    net = AgeEstimator(resolution=32, width_mult=0.25).eval()
    save_networks(tmp_path / "a.safetensors", {"age": net})
    back = load_age_estimator(tmp_path / "a.safetensors")
    imgs = [np.random.default_rng(i).integers(0, 255, (48, 48, 3), np.uint8) for i in range(3)]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        assert np.allclose(estimate_ages(back, imgs), net(x).numpy(), atol=1e-3)
    with pytest.raises(ModelUnavailableError, match="train one"):
        load_age_estimator(tmp_path / "missing.safetensors")


@pytest.mark.slow
def test_trainer_runs_and_resumes(tmp_path, monkeypatch):
    import training.age_estimator as ae

    rng = np.random.default_rng(0)
    z = tmp_path / "utk.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i in range(8):
            buf = io.BytesIO()
            from PIL import Image

            Image.fromarray(rng.integers(0, 255, (200, 200, 3), np.uint8)).save(buf, "JPEG")
            f.writestr(f"UTKFace/{10 + 5 * i}_1_2_2017010{i}.jpg.chip.jpg", buf.getvalue())
    monkeypatch.setattr(ae, "_heldout_names", lambda: (["10_1_2_20170100.jpg.chip.jpg"], {"x": "0"}))
    out = tmp_path / "age.safetensors"
    args = ["train", "--zip", str(z), "--out", str(out), "--resolution", "32", "--batch", "3", "--epochs", "2",
            "--threads", "1"]
    assert main(args) == 0  # 7 photos (one held out) -> 2 steps an epoch
    st = torch.load(out.with_suffix(".state.pt"), weights_only=True)
    assert st["step"] == 4
    from faceapp.stylegan.checkpoint import read_header

    extra = read_header(out)["extra"]
    assert extra["train_photos"] == 7 and extra["excluded_digests"] == {"x": "0"} and extra["final"]
    assert main(args) == 0 and torch.load(out.with_suffix(".state.pt"), weights_only=True)["step"] == 4
    bal = tmp_path / "bal.safetensors"
    assert main([*args[:4], str(bal), *args[5:], "--balance-age", "0.5"]) == 0
    assert read_header(bal)["extra"]["options"]["balance_age"] == 0.5


def test_balanced_draws_bring_the_rare_old_faces_up():
    """--balance-age: alpha 1 draws each age bin alike (10 faces of 85 among 90 of 25: about half the draws),
    alpha 0 keeps the data's mix (a plain permutation); an epoch's order depends only on (seed, epoch)."""
    from training.age_estimator import draw_probabilities, epoch_order

    ages = np.array([25] * 90 + [85] * 10)
    old = ages == 85
    p1, p05 = draw_probabilities(ages, 1.0), draw_probabilities(ages, 0.5)
    assert p1.sum() == pytest.approx(1.0) and p1[old].sum() == pytest.approx(0.5)
    assert p05[old].sum() == pytest.approx(np.sqrt(10) / (np.sqrt(10) + np.sqrt(90)))
    draws = np.concatenate([epoch_order(100, 0, e, p1) for e in range(50)])
    assert 0.45 < old[draws].mean() < 0.55
    assert np.array_equal(np.sort(epoch_order(100, 0, 3)), np.arange(100))
    assert np.array_equal(epoch_order(100, 0, 3, p1), epoch_order(100, 0, 3, p1))
    assert not np.array_equal(epoch_order(100, 0, 3, p1), epoch_order(100, 0, 4, p1))
