"""Ready-made transform chains for training, validation and inference.

Each function returns a :class:`monai.transforms.Compose` and takes only plain arguments, so a
MONAI bundle can build it::

    train_transforms:
      _target_: cocoseg_monai.transforms.get_train_transforms
      image_format: png
      patch_size: [96, 96]
      num_samples: 4

Outputs (``"image"`` channel 0 = CT, channel 1 = PET, both float32 in [0, 1]; ``"label"`` float32
0/1; spatial axes ``(x, y[, z])``, i.e. a PNG of H rows x W columns gives ``[.., W, H]``):

============  ====================================  =========================================
function      PNG slices                             NIfTI volumes
============  ====================================  =========================================
train         list of ``num_samples`` patches        list of ``num_samples`` 2D patches cut
              ``[2, *patch_size]`` / ``[1, ...]``    from axial slices (last axis)
val           whole slice ``[2, W, H]``              whole volume ``[2, X, Y, Z]`` on the CT grid
infer         as val, ``"label"`` optional           as val, ``"label"`` optional
============  ====================================  =========================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CopyItemsd,
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    GaussianSmoothd,
    Orientationd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResampleToMatchd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    SqueezeDimd,
    Zoomd,
)

from cocoseg_monai.plan import DEFAULT_PLAN
from cocoseg_monai.transforms.checks import CheckFinited, CheckGeometryd, CheckOverlapd, CheckSameSpatialShaped
from cocoseg_monai.transforms.intensity import DecodePNGIntensityd, WindowIntensityd
from cocoseg_monai.conventions import CT_KEY, LABEL_KEY, PET_KEY, PET_SOURCE_KEY
from cocoseg_monai.transforms.io import IMAGE_FORMATS, VOLUME_FORMATS, LoadImageCheckedd
from cocoseg_monai.transforms.label import BinarizeMaskd
from cocoseg_monai.transforms.sampling import SAMPLING_CLASSES, HotspotSamplingMapd
from cocoseg_monai.transforms.spacing import AntiAliasd

__all__ = [
    "DEFAULT_CT_WINDOW",
    "DEFAULT_SUV_MAX",
    "DEFAULT_CT_PNG_OFFSET",
    "DEFAULT_PET_PNG_SCALE",
    "DEFAULT_AXCODES",
    "get_preprocess_transforms",
    "get_train_transforms",
    "get_val_transforms",
    "get_infer_transforms",
]

# The defaults are the plan's (cocoseg_monai.plan.DEFAULT_PLAN): a trained model's plan overrides them.
DEFAULT_CT_WINDOW = tuple(DEFAULT_PLAN["ct_window"])
DEFAULT_SUV_MAX = DEFAULT_PLAN["suv_max"]
DEFAULT_CT_PNG_OFFSET = DEFAULT_PLAN["ct_png_offset"]
DEFAULT_PET_PNG_SCALE = DEFAULT_PLAN["pet_png_scale"]
#: NIfTI volumes are reoriented so that their axial slices have the orientation of a radiological
#: PNG slice as MONAI's PIL reader loads it (x: patient's right -> left, y: anterior -> posterior).
#: A network trained on PNG slices then sees volumes the same way, and vice versa.
DEFAULT_AXCODES = DEFAULT_PLAN["axcodes"]

CT, PET, LABEL = CT_KEY, PET_KEY, LABEL_KEY
SAMPLING_MAP = "sampling_map"


def get_preprocess_transforms(
    image_format: str = "png",
    *,
    require_label: bool = True,
    ct_window: Sequence[float] = DEFAULT_CT_WINDOW,
    suv_max: float = DEFAULT_SUV_MAX,
    ct_png_offset: float = DEFAULT_CT_PNG_OFFSET,
    pet_png_scale: float = DEFAULT_PET_PNG_SCALE,
    label_mapping: Mapping[Any, Any] | None = None,
    concat: bool = True,
    axcodes: str | None = DEFAULT_AXCODES,
    target_spacing: Sequence[float] | None = None,
    png_spacing: Sequence[float] | None = None,
    dicom: Mapping[str, Any] | None = None,
) -> Compose:
    """Load, check, align, resample and normalise one datalist item (deterministic).

    Input: ``{"image": CT path, "pet": PET path, "label": mask path, ...}``.
    Output: ``{"image": float32 [2, *spatial] in [0, 1], "label": float32 [1, *spatial] 0/1}`` with
    the ``"pet"`` key removed (``concat=False`` keeps ``"image"`` = CT ``[1, ...]`` and ``"pet"``
    ``[1, ...]`` separate). NIfTI PET is resampled onto the CT grid (bilinear, border padding).

    Parameters
    ----------
    image_format
        ``"png"`` (slices), ``"nifti"`` (volumes) or ``"dicom"`` (CT and PET series folders,
        read in HU and SUV by :class:`~cocoseg_monai.dicom.reader.DicomSeriesReader`; a label
        is read by its suffix).
    require_label
        False: ``"label"`` may be absent (inference); when present it is processed.
    ct_window
        CT window in HU mapped to [0, 1].
    suv_max
        PET SUV mapped to 1; ``[0, suv_max]`` is kept.
    ct_png_offset
        16-bit CT PNG: HU = value - ct_png_offset.
    pet_png_scale
        16-bit PET PNG: SUV = value / pet_png_scale.
    label_mapping
        See :class:`~cocoseg_monai.transforms.BinarizeMask`.
    concat
        Stack CT and PET into a 2-channel ``"image"``.
    axcodes
        NIfTI only: reorient CT and label to these axis codes first (MONAI ``Orientationd``).
        The default ``"LPS"`` gives slices in radiological display orientation (``x`` = column
        from the patient's right, ``y`` = row from anterior), the way a radiological PNG is read,
        so PNG-trained models apply to volumes. Inference inverts it to write predictions in the
        CT file's voxel order. None keeps the stored voxel order.
    target_spacing
        In-plane pixel size ``(x, y)`` in mm (the plan's) that CT, PET and label are resampled
        to; the slice axis is kept. NIfTI: CT and label by MONAI ``Spacingd`` (bilinear,
        nearest) after reorientation, then PET straight from its own grid onto the resampled CT
        grid. PNG: ``Zoomd`` by ``png_spacing / target_spacing``. Images that get coarser are
        low-passed first (:class:`~cocoseg_monai.transforms.spacing.AntiAliasd`). None: each
        file's own grid.
    png_spacing
        PNG pixel size ``(x, y)`` in mm (a data set's ``spacing.json``); None: the pixels are
        taken to be at ``target_spacing`` (no resampling).
    dicom
        ``"dicom"`` only: series choice and SUV settings (see
        :func:`~cocoseg_monai.dicom.reader.reader_args`).
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    ct_min, ct_max = _pair(ct_window, "ct_window")
    no_label = not require_label
    if image_format == "dicom":
        from cocoseg_monai.dicom.reader import reader_args

        args = reader_args(dicom)
        t: list[Any] = [
            LoadImageCheckedd(keys=CT, image_format="dicom", reader_args=args["CT"]),
            LoadImageCheckedd(keys=PET, image_format="dicom", reader_args=args["PT"]),
            LoadImageCheckedd(keys=LABEL, image_format=None, allow_missing_keys=no_label),
        ]
    else:
        t = [
            LoadImageCheckedd(keys=(CT, PET), image_format=image_format),
            LoadImageCheckedd(keys=LABEL, image_format=image_format, allow_missing_keys=no_label),
        ]
    if image_format == "png":
        t += [
            CheckSameSpatialShaped(keys=(CT, PET, LABEL), allow_missing_keys=no_label),
            DecodePNGIntensityd(
                keys=(CT, PET), offset=(ct_png_offset, 0.0), scale=(1.0, pet_png_scale), unit=("HU", "SUV")
            ),
        ]
        zoom = _png_zoom(png_spacing, target_spacing)
        if zoom is not None:
            sigma = [max(0.0, (1.0 / z - 1.0) / 2.0) for z in zoom]  # see transforms.spacing
            if max(sigma) > 0:
                t.append(GaussianSmoothd(keys=(CT, PET), sigma=sigma))
            t += [
                Zoomd(keys=(CT, PET), zoom=zoom, mode="bilinear", keep_size=False, align_corners=False),
                Zoomd(keys=LABEL, zoom=zoom, mode="nearest", keep_size=False, allow_missing_keys=no_label),
            ]
    else:
        t += [
            CheckFinited(keys=(CT, PET, LABEL), allow_missing_keys=no_label),
            CheckGeometryd(keys=(CT, PET)),  # one 3D volume each, placed in the world by its affine
            CheckGeometryd(keys=LABEL, spatial_dims=3, allow_missing_keys=no_label),
            CheckOverlapd(keys=(CT, PET)),  # else the resampled PET would be padding only
        ]
        if axcodes is not None:
            # PET needs no reorientation: it is resampled onto the (reoriented) CT grid below
            t += [
                Orientationd(keys=CT, axcodes=axcodes, labels=None),  # None: honour the meta "space"
                Orientationd(keys=LABEL, axcodes=axcodes, labels=None, allow_missing_keys=no_label),
            ]
        # the label must lie on the CT's grid, not only have its shape: compared in one orientation,
        # so that a label stored with its axes in another order or direction is still accepted
        t.append(CheckSameSpatialShaped(keys=(CT, LABEL), allow_missing_keys=no_label))
        if target_spacing is not None:
            pixdim = (*_spacing(target_spacing), 0.0)  # 0: the slice spacing is kept
            t += [
                AntiAliasd(keys=(CT, PET), target_spacing=pixdim[:2]),  # low-pass where the grid gets coarser
                Spacingd(keys=CT, pixdim=pixdim, mode="bilinear", padding_mode="border", dtype=np.float32),
                Spacingd(keys=LABEL, pixdim=pixdim, mode="nearest", allow_missing_keys=no_label),
            ]
        t += [
            # PET is usually reconstructed on a coarser grid; the label is defined on the CT grid
            ResampleToMatchd(keys=PET, key_dst=CT, mode="bilinear", padding_mode="border", dtype=np.float32),
            CheckSameSpatialShaped(keys=(CT, PET, LABEL), allow_missing_keys=no_label),
        ]
    t += [
        WindowIntensityd(keys=CT, a_min=ct_min, a_max=ct_max),
        WindowIntensityd(keys=PET, a_min=0.0, a_max=float(suv_max)),
        BinarizeMaskd(keys=LABEL, label_mapping=label_mapping, allow_missing_keys=no_label),
    ]
    if concat:
        t += [ConcatItemsd(keys=(CT, PET), name=CT, dim=0), DeleteItemsd(keys=PET)]
    t.append(EnsureTyped(keys=(CT, PET, LABEL), dtype=torch.float32, allow_missing_keys=True))
    return Compose(t)


def get_train_transforms(
    image_format: str = "png",
    *,
    patch_size: Sequence[int] = (96, 96),
    num_samples: int = 4,
    pos: float = 1.0,
    neg: float = 1.0,
    hot: float = 0.0,
    hot_suv: float = 2.5,
    suv_max: float = DEFAULT_SUV_MAX,
    augment: bool = True,
    rot90_prob: float = 0.0,
    **settings: Any,
) -> Compose:
    """Preprocessing, lesion / hard-negative / background 2D patch sampling and augmentation.

    Output: a list of ``num_samples`` dicts ``{"image": float32 [2, *patch_size] in [0, 1],
    "label": float32 [1, *patch_size] 0/1}`` per input item (MONAI's ``Dataset`` and
    ``list_data_collate`` flatten them into the batch).

    Patch centres are drawn with :class:`~monai.transforms.RandCropByLabelClassesd` from a
    :class:`~cocoseg_monai.transforms.HotspotSamplingMapd`: on a lesion pixel, on a PET-avid
    non-lesion pixel (SUV above ``hot_suv``: bladder, kidneys, heart, the usual false positives)
    or on any other pixel, with relative odds ``pos : hot : neg``; a class absent from an image
    is skipped. Images smaller than ``patch_size`` are zero-padded first. For NIfTI the patch is
    ``[*patch_size, 1]`` (one axial slice) squeezed to 2D. ``augment`` adds a random left-right
    flip, a small affine (rotation up to 15 degrees, scale +-10 %), per-channel intensity
    scale/shift and Gaussian noise, then clips back to [0, 1]; 90-degree turns
    (``rot90_prob``), which axial anatomy never shows, are off by default.

    Parameters
    ----------
    image_format, suv_max
        See :func:`get_preprocess_transforms`; ``settings`` are its other keyword arguments
        (intensity scaling, orientation, spacing).
    patch_size
        2D patch ``(x, y)``.
    num_samples
        Patches per item.
    pos, hot, neg
        Relative odds of lesion-, avid-non-lesion- and background-centred patches.
    hot_suv
        SUV above which a non-lesion pixel counts as avid (a hard negative).
    augment
        Add the random augmentations.
    rot90_prob
        Probability of a random 90-degree turn in the augmentation.
    """
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 2:
        raise ValueError(f"patch_size must be 2D (x, y), got {patch_size}")
    keys = (CT, LABEL)
    t: list[Any] = list(
        get_preprocess_transforms(image_format, require_label=True, suv_max=suv_max, **settings).transforms
    )
    if min(pos, hot, neg) < 0 or pos + hot + neg <= 0:
        raise ValueError(f"pos, hot, neg must be >= 0 and not all 0, got {pos}, {hot}, {neg}")
    volume = image_format != "png"
    crop = (*patch, 1) if volume else patch
    t += [
        SpatialPadd(keys=keys, spatial_size=(*patch, -1) if volume else patch),  # -1: keep the slices
        HotspotSamplingMapd(image_key=CT, label_key=LABEL, name=SAMPLING_MAP, threshold=hot_suv / suv_max),
        RandCropByLabelClassesd(
            keys=keys,
            label_key=SAMPLING_MAP,
            spatial_size=crop,
            ratios=[neg, hot, pos],
            num_classes=len(SAMPLING_CLASSES),
            num_samples=num_samples,
            warn=False,  # lesion-free slices are common: skipping the lesion class is expected
        ),
        DeleteItemsd(keys=SAMPLING_MAP),
    ]
    if volume:
        t.append(SqueezeDimd(keys=keys, dim=-1))
    if augment:
        t += [
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandRotate90d(keys=keys, prob=rot90_prob, max_k=3, spatial_axes=(0, 1)),
            RandAffined(
                keys=keys,
                prob=0.3,
                rotate_range=(np.pi / 12,),
                scale_range=(0.1, 0.1),
                mode=("bilinear", "nearest"),  # nearest keeps the label 0/1
                padding_mode="zeros",
            ),
            RandScaleIntensityd(keys=CT, factors=0.1, prob=0.5, channel_wise=True),
            RandShiftIntensityd(keys=CT, offsets=0.05, prob=0.5, channel_wise=True),
            RandGaussianNoised(keys=CT, prob=0.2, mean=0.0, std=0.01),
            # identity map with clip=True: MONAI's clamp, keeping the [0, 1] contract after jitter
            ScaleIntensityRanged(keys=CT, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        ]
    t.append(EnsureTyped(keys=keys, dtype=torch.float32))
    return Compose(t)


def get_val_transforms(image_format: str = "png", **settings: Any) -> Compose:
    """Whole slices (PNG, ``[2, W, H]``) or whole volumes on the CT grid (NIfTI, ``[2, X, Y, Z]``),
    resampled in-plane to ``target_spacing`` when given.

    ``"label"`` is required. ``settings``: the keyword arguments of
    :func:`get_preprocess_transforms` (intensity scaling, orientation, spacing).
    """
    return get_preprocess_transforms(image_format, require_label=True, **settings)


def get_infer_transforms(image_format: str = "png", *, slice_size: Sequence[int] | None = None,
                         **settings: Any) -> Compose:
    """As :func:`get_val_transforms`, with ``"label"`` optional (processed when present), and
    each slice padded with zeros (air, no uptake after scaling) to at least ``slice_size``
    pixels, the extent the network was trained on.

    ``"image"`` keeps the CT's meta (``filename_or_obj``, ``affine``) and the record of every
    spatial step, which ``Invertd`` follows back to write predictions on the CT grid; the PET's
    path is kept as ``"pet_source"`` (for the lesion report, which reads SUV on the PET's grid).
    ``settings``: the keyword arguments of :func:`get_preprocess_transforms`.
    """
    t = (CopyItemsd(keys=PET, names=PET_SOURCE_KEY),
         *get_preprocess_transforms(image_format, require_label=False, **settings).transforms)
    if slice_size is not None:
        size = tuple(int(n) for n in slice_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"slice_size must be 2 positive integers (x, y), got {slice_size}")
        spatial = (*size, -1) if image_format in VOLUME_FORMATS else size
        t = (*t[:-1], SpatialPadd(keys=(CT, LABEL), spatial_size=spatial, allow_missing_keys=True), t[-1])
    return Compose(list(t))


def _spacing(value: Sequence[float]) -> tuple[float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) != 2 or not min(vals) > 0:
        raise ValueError(f"target_spacing must be 2 positive numbers (x, y) in mm, got {value}")
    return vals  # type: ignore[return-value]


def _png_zoom(png_spacing: Sequence[float] | None, target_spacing: Sequence[float] | None) -> tuple[float, float] | None:
    """Zoom factors from PNG pixels to the target spacing; None when either is unknown or they agree."""
    if png_spacing is None or target_spacing is None:
        return None
    zoom = tuple(p / t for p, t in zip(_spacing(png_spacing[:2]), _spacing(target_spacing)))
    return None if all(abs(z - 1.0) < 1e-3 for z in zoom) else zoom  # type: ignore[return-value]


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) != 2 or not vals[0] < vals[1]:
        raise ValueError(f"{name} must be (low, high) with low < high, got {value}")
    return vals  # type: ignore[return-value]
