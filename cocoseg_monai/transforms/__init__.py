"""MONAI-style transforms for paired CT / PET / mask data (array ``Foo`` + dictionary ``Food``).

Conventions (see ``docs/DATA_PIPELINE.md``): ``"image"`` = CT, ``"pet"`` = PET, ``"label"`` =
mask; after preprocessing ``"image"`` is float32 ``[2, *spatial]`` (CT, PET) in [0, 1] and
``"label"`` float32 ``[1, *spatial]`` 0/1; spatial axes ``(x, y[, z])`` (PNG: ``[.., W, H]``).
"""

from __future__ import annotations

from cocoseg_monai.transforms.checks import (
    CheckFinite,
    CheckFinited,
    CheckGeometryd,
    CheckOverlapd,
    CheckSameSpatialShaped,
)
from cocoseg_monai.transforms.intensity import (
    INTENSITY_UNIT_KEY,
    UNIT_DISPLAY,
    UNIT_NORMALIZED,
    DecodePNGIntensity,
    DecodePNGIntensityd,
    WindowIntensity,
    WindowIntensityd,
    png_bit_depth,
)
from cocoseg_monai.transforms.io import IMAGE_FORMATS, LoadImageChecked, LoadImageCheckedd, make_reader
from cocoseg_monai.transforms.label import BinarizeMask, BinarizeMaskd
from cocoseg_monai.transforms.sampling import SAMPLING_CLASSES, HotspotSamplingMap, HotspotSamplingMapd
from cocoseg_monai.transforms.spacing import AntiAlias, AntiAliasd
from cocoseg_monai.transforms.presets import (
    DEFAULT_CT_PNG_OFFSET,
    DEFAULT_CT_WINDOW,
    DEFAULT_PET_PNG_SCALE,
    DEFAULT_SUV_MAX,
    get_infer_transforms,
    get_preprocess_transforms,
    get_train_transforms,
    get_val_transforms,
)

__all__ = [
    "AntiAlias",
    "AntiAliasd",
    "SAMPLING_CLASSES",
    "HotspotSamplingMap",
    "HotspotSamplingMapd",
    "BinarizeMask",
    "BinarizeMaskd",
    "CheckFinite",
    "CheckFinited",
    "CheckSameSpatialShaped",
    "CheckOverlapd",
    "CheckGeometryd",
    "DEFAULT_CT_PNG_OFFSET",
    "DEFAULT_CT_WINDOW",
    "DEFAULT_PET_PNG_SCALE",
    "DEFAULT_SUV_MAX",
    "DecodePNGIntensity",
    "DecodePNGIntensityd",
    "IMAGE_FORMATS",
    "INTENSITY_UNIT_KEY",
    "LoadImageChecked",
    "LoadImageCheckedd",
    "UNIT_DISPLAY",
    "UNIT_NORMALIZED",
    "WindowIntensity",
    "WindowIntensityd",
    "get_infer_transforms",
    "get_preprocess_transforms",
    "get_train_transforms",
    "get_val_transforms",
    "make_reader",
    "png_bit_depth",
]
