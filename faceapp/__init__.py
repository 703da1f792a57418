"""faceapp: edit faces in photos with StyleGAN2 (age, smile, glasses, ...)."""

from faceapp.errors import FaceAppError

__version__ = "0.1.0"
__all__ = ["FaceAppError", "__version__"]
