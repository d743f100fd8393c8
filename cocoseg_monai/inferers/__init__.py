"""Inferers, and the cohort runner of ``inference.yaml``."""

from __future__ import annotations

from .autocast import AutocastInferer
from .cohort import CohortError, CohortInference, study_groups, study_outputs
from .tta import FlipAveragingInferer

__all__ = ["AutocastInferer", "CohortError", "CohortInference", "FlipAveragingInferer", "study_groups", "study_outputs"]
