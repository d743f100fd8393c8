"""Segmentation metrics."""

from __future__ import annotations

from .case_dice import CaseDice, dice_per_case, mean_case_dice, overlap_counts
from .lesion import LesionMetrics, connected_components, lesion_metrics

__all__ = [
    "CaseDice",
    "dice_per_case",
    "mean_case_dice",
    "overlap_counts",
    "LesionMetrics",
    "connected_components",
    "lesion_metrics",
]
