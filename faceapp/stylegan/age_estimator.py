"""The age estimator at run time: how old a face looks (MobileNetV2 on its UTKFace-style crop).

Made by `python -m training.age_estimator` (ImageNet MobileNetV2 fine-tuned on UTKFace's true ages; it shares
nothing with dlib's identity descriptor). The project measures its edits with it, and the age edit reads it once
per face to know how far a face already is along the way (`faceapp.bundle.ModelBundle.face_age` and
`age_scales`): a face of 20 and a face of 60 need different amounts of the same aging change to look N years older.
A network beside the generator and the detail stage: the checkpoint reader rebuilds it from its JSON kwargs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AgeEstimator", "estimate_ages"]


class AgeEstimator(nn.Module):
    """MobileNetV2 age regressor. forward(img [N,3,H,W] in [-1,1], any size) -> age in years [N].

    resolution: the side the input is resized to (UTKFace crops are 200 px). max_age: bins 0..max_age.
    pretrained: a torchvision MobileNetV2 state dict to start from (training passes the ImageNet one,
        faceapp.inversion.losses.load_mobilenet_v2_weights); False for a loaded checkpoint or a test's tiny random
        one. width_mult: MobileNetV2's width (1.0 = ImageNet's).
    """

    def __init__(self, resolution: int = 128, max_age: int = 100, pretrained: bool | dict = False,
                 width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        from torchvision.models import mobilenet_v2

        self.init_kwargs = dict(resolution=int(resolution), max_age=int(max_age), pretrained=False,
                                width_mult=float(width_mult), dropout=float(dropout))
        self.resolution, self.max_age = int(resolution), int(max_age)
        net = mobilenet_v2(weights=None, width_mult=width_mult)
        if isinstance(pretrained, dict):
            net.load_state_dict(pretrained)
        elif pretrained:
            raise ValueError("pretrained takes MobileNetV2's state dict (faceapp.inversion.losses."
                             "load_mobilenet_v2_weights()), not True")
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
