"""Faces in real photos: detection + landmarks, aligned crops, blended paste-back.

    photo = load_image("group.jpg")                  # faceapp.imageio
    faces = detect_faces(photo)                      # largest first, 68 landmarks each
    aligned = align_face(photo, faces[0], FFHQ_SPEC(1024))
    ...                                              # edit aligned.image
    result = paste_back(photo, aligned, edited_crop)

Nothing is loaded at import time; detectors load on first use and stay cached.
"""

from faceapp.align.crop import (
    FFHQ_SPEC,
    TEMPLATE_KEYPOINTS,
    UTKFACE_TEMPLATE,
    AlignedFace,
    AlignSpec,
    align_face,
    crop_matrix,
    ffhq_quad,
    render_crop,
    template_spec,
    utkface_spec,
)
from faceapp.align.detect import (
    BACKENDS,
    Face,
    FaceAlignmentUnavailableWarning,
    detect_faces,
    face_alignment_weights_present,
    face_descriptor,
    five_points,
    resolve_backend,
)
from faceapp.align.paste import (
    PASTE_METHODS,
    REGIONS,
    edit_mask,
    face_hull,
    face_mask,
    head_hull,
    paste_back,
    paste_back_all,
    paste_difference,
    paste_difference_all,
)
from faceapp.imageio import load_image

__all__ = [
    "BACKENDS",
    "FFHQ_SPEC",
    "TEMPLATE_KEYPOINTS",
    "UTKFACE_TEMPLATE",
    "AlignSpec",
    "AlignedFace",
    "Face",
    "FaceAlignmentUnavailableWarning",
    "PASTE_METHODS",
    "REGIONS",
    "align_face",
    "crop_matrix",
    "detect_faces",
    "edit_mask",
    "face_alignment_weights_present",
    "face_descriptor",
    "face_hull",
    "face_mask",
    "ffhq_quad",
    "five_points",
    "head_hull",
    "load_image",
    "paste_back",
    "paste_back_all",
    "paste_difference",
    "paste_difference_all",
    "render_crop",
    "resolve_backend",
    "template_spec",
    "utkface_spec",
]
