"""Inversion: photos (aligned crops) -> StyleGAN2 W+ codes.

- losses:   perceptual losses (LPIPS from the torch cache; an offline MobileNetV2 fallback) -- `perceptual_loss`
- identity: dlib face-descriptor identity loss -- `IdentityLoss`
- encoder:  e4e encoder -- `Encoder4Editing`, `load_encoder` (our format)
- e4e_import: the official `e4e_ffhq_encode.pt` -- `import_e4e_checkpoint`
- projector: optimisation in W / W+ (NVIDIA's projector semantics) -- `project`
- pti:      pivotal tuning of a per-face copy of G -- `pivotal_tuning`
- modes:    one entry point with a quality knob -- `invert(G, target, mode='fast'|'balanced'|'best')`

Importing this package loads no model and imports no lpips (each is loaded when first asked for).
"""

from faceapp.inversion.e4e_import import import_e4e_checkpoint
from faceapp.inversion.encoder import Encoder4Editing, load_encoder
from faceapp.inversion.identity import FFHQ_CHIP_BOX, IdentityLoss
from faceapp.inversion.losses import (
    FALLBACK_KIND,
    PERCEPTUAL_KINDS,
    LPIPSLoss,
    MobileNetPerceptualLoss,
    PerceptualLoss,
    lpips_weights_cached,
    perceptual_loss,
)
from faceapp.inversion.modes import MODES, Inversion, InvertConfig, invert
from faceapp.inversion.projector import ProjectionResult, ProjectorConfig, project, w_stats
from faceapp.inversion.pti import PTIConfig, pivotal_tuning

__all__ = [
    "Encoder4Editing",
    "import_e4e_checkpoint",
    "load_encoder",
    "IdentityLoss",
    "FFHQ_CHIP_BOX",
    "PerceptualLoss",
    "LPIPSLoss",
    "MobileNetPerceptualLoss",
    "perceptual_loss",
    "lpips_weights_cached",
    "PERCEPTUAL_KINDS",
    "FALLBACK_KIND",
    "ProjectorConfig",
    "ProjectionResult",
    "project",
    "w_stats",
    "PTIConfig",
    "pivotal_tuning",
    "MODES",
    "InvertConfig",
    "Inversion",
    "invert",
]
