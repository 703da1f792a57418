"""The FaceAppError family: errors a user can act on.

Every message names the input and says what to do, e.g.
"no face found in photo.jpg" or "image is 40000x30000; the limit is 50 MP".
"""


class FaceAppError(Exception):
    """Base class of every error faceapp raises on purpose."""


class ImageError(FaceAppError):
    """An input image cannot be used (not an image, truncated, too large, ...)."""


class NoFaceError(FaceAppError):
    """No usable face was found in a photo."""


class CheckpointError(FaceAppError):
    """A checkpoint file is missing, malformed, of an unknown format, or unsafe."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked for something outside the allow-list; nothing from it was executed."""


class ModelUnavailableError(FaceAppError):
    """Model weights are not present locally and cannot be fetched (e.g. offline)."""


class CudaOpsError(FaceAppError):
    """A custom CUDA op was required (strict mode) but could not be built or run."""
