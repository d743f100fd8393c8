"""Ignite handlers for CoCoSeg training: checkpoints, history, gradient clipping."""

from __future__ import annotations

from .checkpoint import TrainingCheckpointer
from .gradient_clip import GradientClipping
from .history import HISTORY_KEYS, HistoryWriter
from .output import stack_from_engine
from .case_evaluation import BASELINES, CaseEvaluationWriter

__all__ = [
    "TrainingCheckpointer",
    "GradientClipping",
    "HistoryWriter",
    "HISTORY_KEYS",
    "stack_from_engine",
    "CaseEvaluationWriter",
    "BASELINES",
]
