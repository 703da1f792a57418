"""The age estimator at run time: how old a face in a photo looks (MobileNetV2 on its UTKFace-style crop).

Made by `python -m training.age_estimator` (ImageNet MobileNetV2 fine-tuned on UTKFace's true ages; it shares
nothing with dlib's identity descriptor). The project measures its edits with it, and the age edit reads it once
per face to know how far a face already is along the way (`faceapp.bundle.ModelBundle.age_profile`): a face of
20 and a face of 60 need different amounts of the same aging change to look N years older.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AgeEstimator", "load_age_estimator", "register", "estimate_ages", "face_age"]


class AgeEstimator(nn.Module):
    """MobileNetV2 age regressor. forward(img [N,3,H,W] in [-1,1], any size) -> age in years [N].

    resolution: the side the input is resized to (UTKFace crops are 200 px). max_age: bins 0..max_age.
    pretrained: start from torchvision's ImageNet weights (read from the offline package); False for a
        loaded checkpoint or a test's tiny random one. width_mult: MobileNetV2's width (1.0 = ImageNet's).
    """

    def __init__(self, resolution: int = 128, max_age: int = 100, pretrained: bool = False,
                 width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        from torchvision.models import mobilenet_v2

        self.init_kwargs = dict(resolution=int(resolution), max_age=int(max_age), pretrained=False,
                                width_mult=float(width_mult), dropout=float(dropout))
        self.resolution, self.max_age = int(resolution), int(max_age)
        net = mobilenet_v2(weights=None, width_mult=width_mult)
        if pretrained:
            from faceapp.inversion.losses import load_mobilenet_v2_weights

            net.load_state_dict(load_mobilenet_v2_weights())
        self.features = net.features
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(net.last_channel, self.max_age + 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.register_buffer("bins", torch.arange(self.max_age + 1, dtype=torch.float32))

    def logits(self, img: torch.Tensor) -> torch.Tensor:
        """img [N,3,H,W] in [-1,1] -> age-bin logits [N, max_age + 1]."""
        if img.shape[-1] != self.resolution or img.shape[-2] != self.resolution:
            img = F.interpolate(img, size=(self.resolution, self.resolution), mode="bilinear",
                                align_corners=False, antialias=True)
        x = ((img + 1) / 2 - self.mean) / self.std
        x = x.contiguous(memory_format=torch.channels_last)  # ~2x faster MobileNetV2 on CPU
        h = self.features(x).mean(dim=(2, 3))  # [N, 1280]
        return self.head(self.dropout(h))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return (self.logits(img).softmax(dim=1) * self.bins).sum(dim=1)  # [N] years


def register() -> None:
    """Let faceapp's checkpoint reader rebuild an AgeEstimator (it is one of its built-in classes now; kept for
    callers that still call it)."""
    from faceapp.stylegan.checkpoint import register_network_class

    register_network_class(AgeEstimator)


def load_age_estimator(path: str | os.PathLike, device: torch.device | str = "cpu") -> AgeEstimator:
    """The estimator stored at `path` (faceapp's safetensors format), in eval mode."""
    from faceapp.errors import ModelUnavailableError
    from faceapp.stylegan.checkpoint import load_networks

    if not Path(path).is_file():
        raise ModelUnavailableError(
            f"no age estimator at {path}: train one with `python -m training.age_estimator train` "
            "(or use the committed models/age/age_estimator.safetensors)")
    register()
    net = load_networks(path, device=device)["age"]
    return net.float().eval().requires_grad_(False)


def estimate_ages(net, images, batch: int = 64) -> np.ndarray:
    """Ages [N] (years) of UTKFace-style crops (uint8 arrays [H,W,3] or PIL images) by an age estimator `net`
    (`AgeEstimator`: images [B,3,H,W] in [-1, 1] -> ages [B])."""
    from faceapp.imageio import from_uint8

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            arr = np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)
                            for im in images[i:i + batch]])
            out.append(net(from_uint8(arr)).float().cpu().numpy())  # from [B,3,H,W]
    return np.concatenate(out) if out else np.zeros(0)


def face_age(net, photo, face) -> float:
    """The estimated age (years) of `face` (a faceapp.align.Face found in `photo`), read on the same UTKFace-style
    200 px crop as the estimator was trained and the project's measures read it."""
    from faceapp.align import align_face, utkface_spec

    crop = align_face(photo, face, utkface_spec(200)).image
    return float(estimate_ages(net, [crop])[0])
