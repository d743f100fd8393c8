"""Dice per case: overlap counted over all of a patient's slices (or whole volume), then averaged.

PET/CT lesion segmentation is scored per study (autoPET: Dice per case over the cases that have
lesions). A per-slice mean, MONAI's ``MeanDice`` on 2D slices, weighs the thin top and bottom
slices of a lesion as much as its centre, and ignores false positives on a patient's lesion-free
slices; counting per case does neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import from_engine

__all__ = ["CaseDice", "overlap_counts", "dice_per_case", "mean_case_dice"]


def overlap_counts(pred: torch.Tensor, label: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """True positives, false positives and false negatives per class of one item.

    Args:
        pred, label: one-hot ``[C, *spatial]`` (0/1).
        include_background: count channel 0 too.

    Returns:
        float64 ``[C', 3]`` with columns (TP, FP, FN), ``C' = C`` or ``C - 1``.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred {list(pred.shape)} and label {list(label.shape)} must have the same shape")
    start = 0 if include_background else 1
    p = pred[start:].reshape(pred.shape[0] - start, -1).bool()
    g = label[start:].reshape(label.shape[0] - start, -1).bool()
    tp = (p & g).sum(1)
    fp = (p & ~g).sum(1)
    fn = (~p & g).sum(1)
    return torch.stack([tp, fp, fn], dim=1).double().cpu()


def dice_per_case(counts: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Dice of each case from its summed counts (mean over its classes that have ground truth).

    Cases without any ground-truth foreground get ``nan``: their Dice is undefined (a perfect
    empty prediction and any false positive would both be 0/0 or 0); score them by their
    false-positive volume instead.
    """
    out: dict[str, float] = {}
    for case, c in counts.items():
        tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
        has_truth = (tp + fn) > 0
        if not has_truth.any():
            out[case] = float("nan")
            continue
        dice = 2 * tp[has_truth] / (2 * tp[has_truth] + fp[has_truth] + fn[has_truth])
        out[case] = float(dice.mean())
    return out


def mean_case_dice(counts: Mapping[str, torch.Tensor]) -> float:
    """Mean of :func:`dice_per_case` over the cases with ground truth (``nan`` if there are none)."""
    values = [v for v in dice_per_case(counts).values() if v == v]
    return sum(values) / len(values) if values else float("nan")


class CaseDice(Metric):
    """Ignite metric: mean Dice per case over the cases with lesions.

    Each update takes decollated items ``(preds, labels, cases)``: one-hot predictions and
    labels ``[C, *spatial]`` and a case id per item (the datalist's ``"patient"``). The counts
    of all items of a case are summed before the case's Dice is taken, so 2D slices of one
    patient are scored as the patient's volume.

    Args:
        output_transform: engine output -> ``(preds, labels, cases)``; by default the ``pred``,
            ``label`` and ``case`` keys of the decollated output.
        include_background: score channel 0 too.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = from_engine(["pred", "label", "case"]),
        include_background: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        self.include_background = include_background
        self.counts: dict[str, torch.Tensor] = {}
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self.counts = {}

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        preds, labels, cases = output
        for pred, label, case in zip(preds, labels, cases):
            c = overlap_counts(torch.as_tensor(pred), torch.as_tensor(label), self.include_background)
            key = str(case)
            self.counts[key] = self.counts[key] + c if key in self.counts else c

    def compute(self) -> float:
        return mean_case_dice(self._all_ranks_counts())

    def _all_ranks_counts(self) -> dict[str, torch.Tensor]:
        """The counts summed over all processes of a distributed run (a case's items may be split
        between ranks by the ``DistributedSampler``); this process's own otherwise."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self.counts
        parts: list[dict[str, torch.Tensor] | None] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, self.counts)
        merged: dict[str, torch.Tensor] = {}
        for part in parts:
            for case, c in (part or {}).items():
                merged[case] = merged[case] + c if case in merged else c
        return merged
