"""StyleGAN2 networks: Generator (mapping + synthesis) and Discriminator.

Mirrors NVIDIA stylegan2-ada-pytorch so official weights load with strict=True.
"""

from faceapp.stylegan.networks import (
    Discriminator,
    Generator,
    MappingNetwork,
    SynthesisNetwork,
    mix_styles,
    sample_mixing_cutoff,
)

__all__ = [
    "Discriminator",
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "mix_styles",
    "sample_mixing_cutoff",
]
