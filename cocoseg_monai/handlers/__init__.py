"""Ignite handlers for CoCoSeg training: checkpoints, history, gradient clipping, non-finite loss."""

from __future__ import annotations

from .checkpoint import SchedulerPosition, TrainingCheckpointer
from .gradient_clip import GradientClipping
from .history import HISTORY_KEYS, HistoryWriter
from ..errors import NonFiniteLossError
from .nonfinite import StopOnNonFiniteLoss
from .output import stack_from_engine
from .seeding import EpochSeeder
from .case_evaluation import BASELINES, CaseEvaluationWriter

__all__ = [
    "TrainingCheckpointer",
    "SchedulerPosition",
    "GradientClipping",
    "StopOnNonFiniteLoss",
    "NonFiniteLossError",
    "HistoryWriter",
    "HISTORY_KEYS",
    "stack_from_engine",
    "EpochSeeder",
    "CaseEvaluationWriter",
    "BASELINES",
]
