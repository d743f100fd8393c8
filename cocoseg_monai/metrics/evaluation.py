"""Per-case evaluation: the figures ``cocoseg eval`` reports, and the files it writes.

Each case is a patient volume (``(x, y, z)`` masks; a patient's 2D slices stacked along z) with
its voxel spacing. Per case: Dice, IoU, pixel accuracy and the autoPET lesion metrics
(:func:`~cocoseg_monai.metrics.lesion_metrics`). Summary: mean and standard deviation over all
cases and over the cases with lesions. Dice of a lesion-free case is 1 for an empty prediction
and 0 otherwise; autoPET ranks by the Dice over lesion cases (``lesion_cases``) and by the
false-positive volume over all cases.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..atomic import atomic_write, atomic_write_json
from .lesion import lesion_metrics

__all__ = ["case_record", "summarise", "write_evaluation"]

_SUMMARY_KEYS = (
    "dice",
    "iou",
    "accuracy",
    "false_positive_volume_ml",
    "false_negative_volume_ml",
    "sensitivity",
    "precision",
)


def case_record(case: str, pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, Any]:
    """All per-case figures for one patient's prediction and ground truth."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    inter, p, t = int((pred & truth).sum()), int(pred.sum()), int(truth.sum())
    union = p + t - inter
    record: dict[str, Any] = {
        "case": case,
        "has_lesion": t > 0,
        "dice": 2 * inter / (p + t) if p + t else 1.0,
        "iou": inter / union if union else 1.0,
        "accuracy": float((pred == truth).mean()),
        "truth_volume_ml": t * float(np.prod(spacing_mm)) / 1000.0,
        "pred_volume_ml": p * float(np.prod(spacing_mm)) / 1000.0,
    }
    record.update(lesion_metrics(pred, truth, spacing_mm).as_dict())
    return record


def _stats(values: Iterable[float]) -> dict[str, float | int]:
    v = [float(x) for x in values if not math.isnan(float(x))]
    if not v:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation and count of each figure over all cases and lesion-bearing cases."""
    lesion = [r for r in records if r["has_lesion"]]
    return {
        "cases": len(records),
        "cases_with_lesion": len(lesion),
        "all_cases": {k: _stats(r[k] for r in records) for k in _SUMMARY_KEYS},
        "lesion_cases": {k: _stats(r[k] for r in lesion) for k in _SUMMARY_KEYS},
    }


def write_evaluation(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, name: str = "model") -> dict:
    """Write ``<name>_cases.csv`` (one row per case) and ``<name>_summary.json``; return the summary."""
    if not records:
        raise ValueError("no cases to write")
    summary = summarise(records)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    with atomic_write(os.path.join(out_dir, f"{name}_cases.csv"), "w") as f:
        f.write(buffer.getvalue())
    atomic_write_json(os.path.join(out_dir, f"{name}_summary.json"), summary)
    return summary
