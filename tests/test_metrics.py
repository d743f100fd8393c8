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


# ---- lesion-level metrics (autoPET) ------------------------------------------------------------
import numpy as np  # noqa: E402

from cocoseg_monai.metrics import connected_components, lesion_metrics  # noqa: E402


def _two_lesions() -> np.ndarray:
    truth = np.zeros((4, 10, 10), bool)
    truth[1:3, 1:3, 1:3] = True  # lesion A: 8 voxels
    truth[1, 7:9, 7:9] = True  # lesion B: 4 voxels
    return truth


def test_connected_components_are_fully_connected_in_3d():
    mask = np.zeros((5, 5, 5), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner-touching: one component with 26-connectivity
    mask[4, 4, 4] = True  # separate
    assert connected_components(mask)[1] == 2


def test_fp_and_fn_volumes_in_ml_with_anisotropic_spacing():
    truth = _two_lesions()
    pred = np.zeros_like(truth)
    pred[1:3, 1:3, 1:2] = True  # touches lesion A (partially): neither FP nor FN volume
    pred[3, 5, 5] = True  # 1-voxel false positive, away from everything
    spacing = (3.0, 2.0, 4.0)  # 24 mm^3 per voxel = 0.024 mL
    m = lesion_metrics(pred, truth, spacing)
    assert m.false_positive_volume_ml == pytest.approx(1 * 0.024)
    assert m.false_negative_volume_ml == pytest.approx(4 * 0.024)  # lesion B missed entirely
    assert (m.true_lesions, m.detected_lesions) == (2, 1) and m.sensitivity == 0.5
    assert (m.predicted_components, m.true_positive_components) == (2, 1) and m.precision == 0.5


def test_empty_prediction_misses_every_lesion():
    m = lesion_metrics(np.zeros((4, 10, 10), bool), _two_lesions(), (1.0, 1.0, 1.0))
    assert m.false_positive_volume_ml == 0.0 and m.false_negative_volume_ml == pytest.approx(12 / 1000)
    assert m.sensitivity == 0.0 and math.isnan(m.precision)


def test_empty_ground_truth_counts_all_prediction_as_false_positive():
    pred = np.zeros((2, 5, 5), bool)
    pred[0, :2, :2] = True
    m = lesion_metrics(pred, np.zeros_like(pred), (2.0, 1.0, 1.0))
    assert m.false_positive_volume_ml == pytest.approx(4 * 2 / 1000) and m.false_negative_volume_ml == 0.0
    assert math.isnan(m.sensitivity) and m.precision == 0.0


def test_lesion_metrics_refuse_mismatched_shapes_and_spacing():
    with pytest.raises(ValueError, match="same shape"):
        lesion_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        lesion_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), (1, 1))
