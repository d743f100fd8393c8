"""Per-case Dice on hand-made masks with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from cocoseg_monai.metrics import CaseDice, dice_per_case, mean_case_dice, overlap_counts


def _onehot(mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - mask, mask]).float()


def test_overlap_counts_on_known_masks():
    pred = torch.tensor([[1, 1, 0], [0, 0, 0]])
    label = torch.tensor([[0, 1, 1], [1, 0, 0]])
    counts = overlap_counts(_onehot(pred), _onehot(label))
    assert counts.tolist() == [[1.0, 1.0, 2.0]]  # TP, FP, FN of the lesion class


def test_case_dice_sums_slices_before_dividing():
    # slice 1: perfect 8-pixel lesion; slice 2: 2-pixel sliver missed. Per slice: (1 + 0) / 2.
    s1 = torch.zeros(4, 4)
    s1[:2, :] = 1
    s2 = torch.zeros(4, 4)
    s2[3, :2] = 1
    metric = CaseDice()
    metric.update(([_onehot(s1), _onehot(torch.zeros(4, 4))], [_onehot(s1), _onehot(s2)], ["007", "007"]))
    # per case: TP 8, FP 0, FN 2 -> 16 / 18
    assert metric.compute() == pytest.approx(16 / 18)


def test_cases_without_lesion_are_left_out_of_the_mean():
    lesion = torch.zeros(4, 4)
    lesion[1:3, 1:3] = 1
    counts = {
        "a": overlap_counts(_onehot(lesion), _onehot(lesion)),  # Dice 1
        "b": overlap_counts(_onehot(torch.zeros(4, 4)), _onehot(lesion)),  # missed: Dice 0
        "c": overlap_counts(_onehot(lesion), _onehot(torch.zeros(4, 4))),  # no lesion: undefined
    }
    per_case = dice_per_case(counts)
    assert per_case["a"] == 1.0 and per_case["b"] == 0.0 and math.isnan(per_case["c"])
    assert mean_case_dice(counts) == 0.5


def test_no_lesion_anywhere_gives_nan():
    counts = {"a": overlap_counts(_onehot(torch.zeros(3, 3)), _onehot(torch.zeros(3, 3)))}
    assert math.isnan(mean_case_dice(counts))


def test_reset_forgets_previous_epoch():
    lesion = torch.ones(2, 2)
    metric = CaseDice()
    metric.update(([_onehot(lesion)], [_onehot(lesion)], ["x"]))
    metric.reset()
    metric.update(([_onehot(torch.zeros(2, 2))], [_onehot(lesion)], ["x"]))
    assert metric.compute() == 0.0


def test_shape_mismatch_is_refused_naming_shapes():
    with pytest.raises(ValueError, match=r"\[2, 3, 3\].*\[2, 4, 4\]"):
        overlap_counts(torch.zeros(2, 3, 3), torch.zeros(2, 4, 4))
