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


# ---- per-case evaluation and SUV baselines -----------------------------------------------------
import csv  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402

from cocoseg_monai.metrics import case_record, percent_suvmax, suv_threshold, write_evaluation  # noqa: E402


def test_case_record_on_known_masks():
    truth = np.zeros((4, 4, 2), bool)
    truth[:2, :2, 0] = True  # 4 voxels
    pred = np.zeros_like(truth)
    pred[:2, :1, 0] = True  # 2 voxels inside
    pred[3, 3, 1] = True  # 1 false positive
    r = case_record("007", pred, truth, (2.0, 2.0, 5.0))  # 20 mm^3 per voxel
    assert r["dice"] == pytest.approx(2 * 2 / (3 + 4)) and r["iou"] == pytest.approx(2 / 5)
    assert r["accuracy"] == pytest.approx(29 / 32)
    assert r["false_positive_volume_ml"] == pytest.approx(0.02) and r["false_negative_volume_ml"] == 0.0
    assert r["truth_volume_ml"] == pytest.approx(0.08) and r["has_lesion"]


def test_lesion_free_case_scores_one_only_for_an_empty_prediction():
    empty = np.zeros((3, 3, 3), bool)
    assert case_record("a", empty, empty, (1, 1, 1))["dice"] == 1.0
    fp = empty.copy()
    fp[1, 1, 1] = True
    assert case_record("b", fp, empty, (1, 1, 1))["dice"] == 0.0


def test_evaluation_files_hold_every_case_and_separate_summaries(tmp_path):
    truth = np.zeros((4, 4, 2), bool)
    truth[0, 0, 0] = True
    records = [
        case_record("001", truth, truth, (1, 1, 1)),  # perfect
        case_record("002", np.zeros_like(truth), truth, (1, 1, 1)),  # missed
        case_record("003", np.zeros_like(truth), np.zeros_like(truth), (1, 1, 1)),  # lesion-free, clean
    ]
    summary = write_evaluation(records, tmp_path, name="cocoseg")
    rows = list(csv.DictReader((tmp_path / "cocoseg_cases.csv").open()))
    assert [r["case"] for r in rows] == ["001", "002", "003"]
    assert summary["lesion_cases"]["dice"] == {"mean": 0.5, "std": 0.5, "n": 2}
    assert summary["all_cases"]["dice"]["mean"] == pytest.approx(2 / 3)
    assert (tmp_path / "cocoseg_summary.json").is_file()


def test_suv_threshold_baseline():
    pet = np.array([[1.0, 2.5], [3.9, 4.0]])
    assert suv_threshold(pet, 2.5).tolist() == [[False, True], [True, True]]
    assert suv_threshold(pet, 4.0).tolist() == [[False, False], [False, True]]


def test_percent_suvmax_contours_each_lesion_at_41_percent_of_its_own_max():
    pet = np.zeros((12, 12))
    pet[2:5, 2:5] = 4.0
    pet[3, 3] = 10.0  # lesion 1: SUVmax 10 -> contour at 4.1: only the peak
    pet[8:11, 8:11] = 2.0
    pet[9, 9] = 4.0  # lesion 2: SUVmax 4 -> contour at 1.64: the whole 3x3 block
    truth = np.zeros((12, 12), bool)
    truth[3, 3] = truth[9, 9] = True
    out = percent_suvmax(pet, truth, 0.41, margin_voxels=2)
    assert out[3, 3] and out[2:5, 2:5].sum() == 1
    assert out[8:11, 8:11].all() and out.sum() == 1 + 9


# ---- the evaluation handler's files ------------------------------------------------------------


def _evaluate(outputs: list[list[dict]], tmp_path, **settings) -> Path:
    """Run :class:`CaseEvaluationWriter` (predictions saved) over the decollated ``outputs`` of
    an evaluator, one list per iteration; returns its predictions folder."""
    from ignite.engine import Engine

    from cocoseg_monai.handlers import CaseEvaluationWriter

    engine = Engine(lambda engine, batch: batch)  # the "evaluator" puts out what it is given
    CaseEvaluationWriter(tmp_path, baselines=False, save_predictions=True, **settings).attach(engine)
    engine.run(outputs, max_epochs=1)
    return tmp_path / "predictions"


def _output_item(pred: np.ndarray, ct_file: str, case: str, affine: np.ndarray | None = None) -> dict:
    """A decollated evaluator output: one-hot prediction and label, the 2-channel input (with
    the meta of the CT it came from) and the case."""
    from monai.data import MetaTensor

    pred = torch.as_tensor(pred.astype(np.int64))
    onehot = torch.stack([1 - pred, pred]).float()
    image = MetaTensor(torch.rand(2, *pred.shape), affine=None if affine is None else torch.as_tensor(affine),
                       meta={"filename_or_obj": ct_file})  # fmt: skip
    return {"pred": onehot, "label": onehot, "image": image, "case": case}


def test_each_predicted_png_mask_is_named_after_its_own_ct_slice_whatever_the_numbering(tmp_path):
    from PIL import Image

    slices = {"patient_7_slice_9.png": 1, "patient_7_slice_12.png": 2, "patient_7_slice_100.png": 3}
    outputs = []
    for name, marker in slices.items():  # each slice's prediction marks its own pixel count
        pred = np.zeros((6, 5), bool)  # (x, y): PNG columns, rows
        pred[:marker, 0] = True
        outputs.append([_output_item(pred, f"/data/CT/{name}", "7")])
    predictions = _evaluate(outputs[::-1], tmp_path, spacing_mm=(2.0, 2.0, 3.0))
    assert sorted(p.name for p in predictions.glob("*_seg.png")) == sorted(
        n.replace(".png", "_seg.png") for n in slices
    )
    for name, marker in slices.items():
        mask = np.asarray(Image.open(predictions / name.replace(".png", "_seg.png")))
        assert mask.shape == (5, 6) and mask[0, :marker].tolist() == [255] * marker and mask.sum() == 255 * marker
    volume = nib.load(predictions / "7_seg.nii.gz")  # the case's slices stacked in slice-number order
    assert volume.get_fdata()[:, 0, :].sum(axis=0).tolist() == [1, 2, 3]


def test_predicted_volume_is_written_with_the_affine_of_its_ct(tmp_path):
    affine = np.array([[-2.0, 0, 0, 120.5], [0, 2.0, 0, -80.0], [0, 0, 3.0, -410.0], [0, 0, 0, 1]])  # x flipped
    pred = np.zeros((6, 5, 4), bool)
    pred[0, 1, 2] = True  # an asymmetric mark: voxel (0, 1, 2) lies at world (120.5, -78, -404)
    predictions = _evaluate([[_output_item(pred, "/data/CT/patient_3.nii.gz", "3", affine)]], tmp_path)
    written = nib.load(predictions / "3_seg.nii.gz")
    np.testing.assert_allclose(written.affine, affine)
    assert int(written.header["qform_code"]) == int(written.header["sform_code"]) == 1
    (voxel,) = np.argwhere(written.get_fdata() > 0)
    np.testing.assert_allclose(written.affine @ [*voxel, 1], [120.5, -78.0, -404.0, 1.0])
