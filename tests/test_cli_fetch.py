"""`python -m faceapp fetch-lpips`: the one download place says what it did, or why it could not."""

import urllib.error

import torch
import torchvision

from faceapp import cli


def test_offline_download_fails_with_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert cli.main(["fetch-lpips"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not download") and "vgg16-397923af.pth" in err and "internet" in err
    assert "\n" not in err and not (tmp_path / "checkpoints" / "vgg16-397923af.pth").exists()


def test_cached_weights_are_not_fetched_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert cli.main(["fetch-lpips", "--net", "alex"]) == 0
    assert "already there" in capsys.readouterr().out


def test_the_file_name_is_what_the_loss_looks_for():
    from faceapp.inversion.losses import _TORCHVISION_FILES

    assert torchvision.models.VGG16_Weights.IMAGENET1K_V1.url.endswith(_TORCHVISION_FILES["vgg"])
    assert torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url.endswith(_TORCHVISION_FILES["alex"])


def test_fetch_lpips_gives_the_stalled_start_up_a_timeout_and_restores_it(tmp_path, monkeypatch):
    """The app's start-up fetches through the same function with a timeout; the socket default comes back."""
    import socket
    from types import SimpleNamespace

    import pytest

    from faceapp import fetch
    from faceapp.errors import ModelUnavailableError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    seen = []

    def offline(**kwargs):
        seen.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("unreachable")

    vgg = torchvision.models.VGG16_Weights.IMAGENET1K_V1
    monkeypatch.setattr(fetch, "_lpips_weights", lambda net: SimpleNamespace(url=vgg.url, get_state_dict=offline))
    before = socket.getdefaulttimeout()
    with pytest.raises(ModelUnavailableError, match="could not download .*vgg16-397923af.pth.*internet"):
        fetch.fetch_lpips("vgg", progress=False, timeout=7)
    assert seen == [7] and socket.getdefaulttimeout() == before
    assert fetch.lpips_file("vgg") == tmp_path / "checkpoints" / "vgg16-397923af.pth"
