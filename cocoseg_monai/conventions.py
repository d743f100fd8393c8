"""The data conventions that the generator, discovery, transforms, writers and the plan share,
written once: datalist keys and folder names, the slice file names, the PNG encodings and the
display orientation of a slice, and the default intensity scaling.

Nothing here imports the rest of the project, so every module may import it.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "CT_KEY",
    "PET_KEY",
    "LABEL_KEY",
    "PATH_KEYS",
    "PET_SOURCE_KEY",
    "MODALITY_FOLDERS",
    "SPLIT_FOLDERS",
    "DATALIST_SECTIONS",
    "PNG_NAME_TEMPLATE",
    "PNG_NAME_PATTERN",
    "NIFTI_SUFFIXES",
    "SPACING_FILENAME",
    "CT_PNG_OFFSET",
    "PET_PNG_SCALE",
    "MASK_PNG_VALUE",
    "DEFAULT_CT_WINDOW",
    "DEFAULT_SUV_MAX",
    "png_slice_name",
    "to_display",
    "from_display",
    "encode_ct_png",
    "encode_pet_png",
    "encode_mask_png",
    "decode_ct_png",
    "decode_pet_png",
]

# ---- datalists and folders ------------------------------------------------------------------
#: datalist keys: the CT (MONAI's "image"), the PET, the lesion mask
CT_KEY, PET_KEY, LABEL_KEY = "image", "pet", "label"
PATH_KEYS: tuple[str, ...] = (CT_KEY, PET_KEY, LABEL_KEY)
#: inference: the PET's path, kept after the PET is loaded, resampled and stacked into "image"
PET_SOURCE_KEY = "pet_source"
#: datalist key -> folder name of that modality
MODALITY_FOLDERS: dict[str, str] = {CT_KEY: "CT", PET_KEY: "PET", LABEL_KEY: "masks"}
#: datalist section -> folder name in a pre-split root
SPLIT_FOLDERS: dict[str, str] = {"training": "train", "validation": "val", "test": "test"}
DATALIST_SECTIONS: tuple[str, ...] = ("training", "validation", "test")

# ---- file names -----------------------------------------------------------------------------
#: a PNG slice; its mask in ``masks/`` has the same name
PNG_NAME_TEMPLATE = "patient_{ID}_slice_{num}.png"
PNG_NAME_PATTERN = re.compile(r"^patient_(?P<patient>[A-Za-z0-9-]+)_slice_(?P<slice>[0-9]+)\.png$")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: beside PNG slices (in the data root): their pixel size, ``{"spacing_mm": [x, y]}`` or ``[x, y, z]``
SPACING_FILENAME = "spacing.json"


def png_slice_name(patient: str, number: int) -> str:
    """The file name of slice ``number`` (1-based, 4 digits as the generator writes them) of
    ``patient``, e.g. ``patient_007_slice_0012.png``."""
    return f"patient_{patient}_slice_{number:04d}.png"


# ---- PNG encodings --------------------------------------------------------------------------
#: 16-bit CT PNG: value = HU + offset (HU -1024..64511)
CT_PNG_OFFSET = 1024
#: 16-bit PET PNG: value = SUV x scale (SUV 0..65.535 in steps of 0.001)
PET_PNG_SCALE = 1000.0
#: lesion pixels of a mask PNG (background 0)
MASK_PNG_VALUE = 255


def to_display(slice_xy: np.ndarray) -> np.ndarray:
    """An ``(x, y)`` axial slice -> ``(rows, cols)`` image: anterior at the top, patient's right
    on the left (radiological display), as a PNG slice is stored."""
    return np.ascontiguousarray(slice_xy[:, ::-1].T)


def from_display(image: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`: ``(rows, cols)`` image -> ``(x, y)`` slice."""
    return np.ascontiguousarray(image.T[:, ::-1])


def encode_ct_png(hu: np.ndarray) -> np.ndarray:
    """HU -> uint16 PNG values ``clip(rint(HU + CT_PNG_OFFSET), 0, 65535)``."""
    return np.clip(np.rint(hu.astype(np.float64) + CT_PNG_OFFSET), 0, 65535).astype(np.uint16)


def encode_pet_png(suv: np.ndarray) -> np.ndarray:
    """SUV -> uint16 PNG values ``clip(rint(SUV * PET_PNG_SCALE), 0, 65535)``."""
    return np.clip(np.rint(suv.astype(np.float64) * PET_PNG_SCALE), 0, 65535).astype(np.uint16)


def encode_mask_png(label: np.ndarray) -> np.ndarray:
    """Label -> uint8 0 / :data:`MASK_PNG_VALUE`."""
    return np.where(label > 0, MASK_PNG_VALUE, 0).astype(np.uint8)


def decode_ct_png(values: np.ndarray) -> np.ndarray:
    """CT PNG values -> HU (float32)."""
    return values.astype(np.float32) - CT_PNG_OFFSET


def decode_pet_png(values: np.ndarray) -> np.ndarray:
    """PET PNG values -> SUV (float32)."""
    return (values.astype(np.float64) / PET_PNG_SCALE).astype(np.float32)


# ---- intensity scaling (the plan's defaults) ------------------------------------------------
#: CT soft-tissue window (level 40 HU, width 400 HU): hypodense liver lesions (~15 HU below the
#: liver) and nodes in fat stay apart after scaling; air and lung clip to 0, bone to 1
DEFAULT_CT_WINDOW = (-160.0, 240.0)
#: PET SUV mapped to 1
DEFAULT_SUV_MAX = 20.0
