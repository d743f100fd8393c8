"""SUV-threshold baselines that PET/CT segmentation is compared against.

- fixed thresholds: every voxel with SUV >= 2.5 (or 4.0) is lesion;
- 41 % of SUVmax: each true lesion is segmented as the voxels, within a margin around it, at
  or above 41 % of that lesion's SUVmax (the EANM guideline's isocontour). This one needs the
  ground truth to find the lesions, so it shows segmentation quality given perfect detection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .lesion import connected_components

__all__ = ["suv_threshold", "percent_suvmax"]


def suv_threshold(pet_suv: np.ndarray, threshold: float = 2.5) -> np.ndarray:
    """Binary mask of ``pet_suv >= threshold``."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0 SUV, got {threshold}")
    return np.asarray(pet_suv) >= threshold


def percent_suvmax(
    pet_suv: np.ndarray, truth: np.ndarray, fraction: float = 0.41, margin_voxels: Sequence[int] | int = 2
) -> np.ndarray:
    """Per true lesion: voxels at or above ``fraction`` x the lesion's SUVmax, near the lesion.

    Args:
        pet_suv: PET volume in SUV, on the grid of ``truth``.
        truth: ground-truth mask; each connected component is one lesion.
        fraction: share of SUVmax (0.41: the 41 % isocontour).
        margin_voxels: how far around the lesion's bounding box the contour may extend.
    """
    pet = np.asarray(pet_suv, dtype=np.float32)
    if pet.shape != np.shape(truth):
        raise ValueError(f"pet {pet.shape} and truth {np.shape(truth)} must have the same shape")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    margin = [margin_voxels] * pet.ndim if isinstance(margin_voxels, int) else list(margin_voxels)
    labels, n = connected_components(np.asarray(truth) > 0)
    out = np.zeros(pet.shape, bool)
    for lesion in range(1, n + 1):
        where = np.nonzero(labels == lesion)
        box = tuple(
            slice(max(0, int(w.min()) - m), min(s, int(w.max()) + m + 1)) for w, m, s in zip(where, margin, pet.shape)
        )
        suv_max = float(pet[where].max())
        out[box] |= pet[box] >= fraction * suv_max
    return out
