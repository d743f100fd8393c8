"""Drawing the training items of an epoch with more weight on those that hold lesions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..conventions import NIFTI_SUFFIXES

__all__ = ["has_lesion", "lesion_weighted_sampler"]


def has_lesion(label_path: str) -> bool:
    """Whether the mask file (PNG slice or NIfTI volume) has any foreground voxel."""
    try:
        if label_path.lower().endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            return bool(np.any(np.asarray(nib.load(label_path).dataobj)))
        from PIL import Image

        with Image.open(label_path) as img:
            return bool(np.any(np.asarray(img)))
    except Exception as err:
        raise DataError(f"cannot read mask {label_path}: {type(err).__name__}: {err}") from err


def lesion_weighted_sampler(items: Sequence[Mapping[str, Any]], lesion_weight: float) -> torch.utils.data.Sampler | None:
    """A ``WeightedRandomSampler`` that draws items with lesions ``lesion_weight`` times as often as
    items without, ``len(items)`` draws per epoch with replacement; ``None`` for weight 1 (plain
    shuffling).

    Lesions fill a few percent of a PET/CT data set's slices: weighting them up shows the network
    more lesions per epoch, as nnU-Net's foreground oversampling does, while lesion-free items
    keep teaching it where there is none. The draws come from torch's global generator, which
    :class:`~cocoseg_monai.handlers.EpochSeeder` seeds per epoch.

    Raises:
        ValueError: ``lesion_weight`` not positive. DataError: a mask cannot be read.
    """
    if not lesion_weight > 0:
        raise ValueError(f"lesion_weight must be > 0, got {lesion_weight}")
    if lesion_weight == 1:
        return None
    weights = torch.tensor([lesion_weight if has_lesion(str(i["label"])) else 1.0 for i in items], dtype=torch.double)
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(items), replacement=True)
