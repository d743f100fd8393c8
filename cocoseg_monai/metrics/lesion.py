"""Lesion-level metrics of PET/CT challenges (autoPET): FP/FN volume and detection.

Definitions (Gatidis et al., the autoPET challenge):

- false-positive volume: total volume of the predicted connected components that do not
  overlap the ground truth at all;
- false-negative volume: total volume of the ground-truth connected components that the
  prediction does not touch at all;
- detection sensitivity: share of ground-truth lesions (components) touched by the prediction;
- detection precision: share of predicted components that touch a ground-truth lesion.

Components are 3D, fully connected (26-neighbourhood), found with SimpleITK. Volumes are in
millilitres from the voxel spacing in millimetres, so anisotropic voxels count correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["LesionMetrics", "connected_components", "lesion_metrics"]


@dataclass(frozen=True)
class LesionMetrics:
    """Lesion-level results for one case (volumes in mL; ratios ``nan`` when undefined)."""

    false_positive_volume_ml: float
    false_negative_volume_ml: float
    true_lesions: int
    detected_lesions: int
    predicted_components: int
    true_positive_components: int

    @property
    def sensitivity(self) -> float:
        """Detected / true lesions; ``nan`` for a case without lesions."""
        return self.detected_lesions / self.true_lesions if self.true_lesions else float("nan")

    @property
    def precision(self) -> float:
        """Predicted components touching a lesion / predicted components; ``nan`` if none predicted."""
        return self.true_positive_components / self.predicted_components if self.predicted_components else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "sensitivity": self.sensitivity, "precision": self.precision}


def connected_components(mask: np.ndarray, full: bool = True) -> tuple[np.ndarray, int]:
    """Label the connected components of a 2D or 3D binary ``mask`` (SimpleITK's ``ConnectedComponent``).

    Args:
        full: neighbours across edges and corners join voxels too (8 in 2D, 26 in 3D); False:
            faces only (4 in 2D, 6 in 3D).

    Returns:
        ``(labels, n)``: int32 labels of ``mask``'s shape, 0 background and 1..n the components
        numbered in the C order of their first voxel (whatever order SimpleITK gives them).
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"connected_components needs a 2D or 3D mask, got shape {mask.shape}")
    # the array's axes reach SimpleITK reversed, which connectivity does not mind
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask > 0).astype(np.uint8))
    return renumber(sitk.GetArrayFromImage(sitk.ConnectedComponent(image, full)).astype(np.int32))


def renumber(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber the positive ids of ``labels`` 1..n in the C order of their first voxel."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    lookup = np.zeros(int(flat.max(initial=0)) + 1, np.int32)
    lookup[ids[np.argsort(first)]] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lookup[labels], int(ids.size)


def lesion_metrics(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> LesionMetrics:
    """autoPET lesion-level metrics of one case.

    Args:
        pred, truth: binary masks of the same 2D or 3D shape.
        spacing_mm: voxel size per axis in mm, one value per axis (stack a patient's 2D slices
            into a volume and give the slice spacing as the third value to get true volumes).

    Raises:
        ValueError: when the shapes differ or the spacing does not match the dimensions.
    """
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} must have the same shape")
    if len(spacing_mm) != pred.ndim or min(spacing_mm) <= 0:
        raise ValueError(f"spacing_mm {tuple(spacing_mm)} does not fit a {pred.ndim}D mask")
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0

    pred_labels, n_pred = connected_components(pred)
    true_labels, n_true = connected_components(truth)
    # components of each mask that overlap the other mask
    pred_hits = np.unique(pred_labels[truth & (pred_labels > 0)])
    true_hits = np.unique(true_labels[pred & (true_labels > 0)])
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    true_sizes = np.bincount(true_labels.ravel(), minlength=n_true + 1)
    fp_voxels = pred_sizes[1:].sum() - pred_sizes[pred_hits].sum()
    fn_voxels = true_sizes[1:].sum() - true_sizes[true_hits].sum()
    return LesionMetrics(
        false_positive_volume_ml=float(fp_voxels) * voxel_ml,
        false_negative_volume_ml=float(fn_voxels) * voxel_ml,
        true_lesions=n_true,
        detected_lesions=int(true_hits.size),
        predicted_components=n_pred,
        true_positive_components=int(pred_hits.size),
    )
