"""Segmentation metrics."""

from __future__ import annotations

from .case_dice import CaseDice, dice_per_case, mean_case_dice, overlap_counts
from .baselines import percent_suvmax, suv_threshold
from .evaluation import case_record, summarise, write_evaluation
from .lesion import LesionMetrics, connected_components, lesion_metrics

__all__ = [
    "CaseDice",
    "dice_per_case",
    "mean_case_dice",
    "overlap_counts",
    "LesionMetrics",
    "connected_components",
    "lesion_metrics",
    "case_record",
    "summarise",
    "write_evaluation",
    "suv_threshold",
    "percent_suvmax",
]
