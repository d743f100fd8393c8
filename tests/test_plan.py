"""The plan: written by training, complete, found beside the weights, applied at the plan's spacing,
and refused when a setting contradicts it; PNG pixel sizes read, given or assumed."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cocoseg_monai.bundle import config_path, run_bundle
from cocoseg_monai.data import DataError, build_datalist, find_pairs, read_spacing
from cocoseg_monai.data.phantom import PhantomConfig, main as phantom_main, write_dataset
from cocoseg_monai.plan import (
    DEFAULT_PLAN,
    PLAN_KEYS,
    PlanError,
    check_plan,
    find_plan,
    load_plan,
    resolve_png_spacing,
    resolve_target_spacing,
)
from cocoseg_monai.transforms import get_infer_transforms, get_val_transforms

from .conftest import TINY_FEATURES, error_chain, write_tiny_run


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_dataset(root, patients=1, seed=9, fmt="nifti", config=PhantomConfig(size=64, slices=4))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A training run's weights and plan: 12 mm pixels (the studies have 7.8 mm), slices padded to 48."""
    return write_tiny_run(tmp_path_factory.mktemp("run"), target_spacing=[12.0, 12.0], slice_size=[48, 48])


def _infer(run: Path, ct: Path, pet: Path, out: Path, configs=("inference",), **overrides) -> np.ndarray:
    run_bundle([config_path(c) if c == "inference" else c for c in configs], run_id="run", overrides={
        "ckpt_path": str(run / "models" / "model.pt"), "ct": str(ct), "pet": str(pet), "output_dir": str(out), **overrides,
    })  # fmt: skip
    (label,) = out.glob("*_seg.nii.gz")
    return label


def test_a_written_plan_is_complete_and_found_beside_the_weights(run):
    plan = load_plan(run / "plan.yaml")
    assert set(plan) == set(PLAN_KEYS)
    assert plan["features"] == list(TINY_FEATURES) and plan["target_spacing"] == [12.0, 12.0]
    assert plan["ct_window"] == DEFAULT_PLAN["ct_window"] and plan["channels"] == ["CT", "PET"]
    assert find_plan(run / "models" / "model.pt") == run / "plan.yaml"  # <run>/models/model.pt
    assert find_plan(run / "latest.pth") == run / "plan.yaml"  # a checkpoint of the run
    assert find_plan(run.parent / "elsewhere" / "model.pt") is None


def test_an_incomplete_plan_is_refused_naming_the_missing_keys(tmp_path):
    (tmp_path / "plan.yaml").write_text("features: [4, 8, 16, 32]\n")
    with pytest.raises(PlanError, match=r"lacks \[.*'ct_window'.*\]; write it again with: cocoseg plan"):
        load_plan(tmp_path / "plan.yaml")


def test_settings_that_contradict_the_plan_are_refused_naming_each_key(run, study, tmp_path):
    weights = run / "models" / "model.pt"
    check_plan(weights, features=list(TINY_FEATURES), ct_window=[-160, 240])  # agreeing settings pass
    with pytest.raises(PlanError) as err:
        check_plan(weights, ct_window=[-1000, 1000], target_spacing=None, features=list(TINY_FEATURES))
    message = str(err.value)
    assert "ct_window: [-1000.0, 1000.0] here, [-160.0, 240.0] in the plan" in message
    assert "target_spacing: None here, [12.0, 12.0] in the plan" in message and "features" not in message
    # through the bundle: the override is refused before any work
    with pytest.raises(Exception) as err:
        _infer(run, study / "CT" / "patient_001.nii.gz", study / "PET" / "patient_001.nii.gz", tmp_path,
               suv_max=10.0)  # fmt: skip
    assert "suv_max: 10.0 here, 20.0 in the plan" in error_chain(err.value)


def test_the_plan_given_as_a_layer_and_the_plan_found_give_the_same_label(run, study, tmp_path):
    ct, pet = study / "CT" / "patient_001.nii.gz", study / "PET" / "patient_001.nii.gz"
    found = np.asarray(nib.load(_infer(run, ct, pet, tmp_path / "found")).dataobj)
    layered = _infer(run, ct, pet, tmp_path / "layer", configs=("inference", str(run / "plan.yaml")))
    assert 0 < found.sum() < found.size
    np.testing.assert_array_equal(np.asarray(nib.load(layered).dataobj), found)


def test_label_is_on_the_ct_grid_whatever_the_ct_orientation_and_the_pet_grid(run, study, tmp_path):
    """CT stored left-to-right and right-to-left, PET on its own coarser grid: the label follows
    the CT file's voxel order, shape and affine, and the anatomy it marks is the same."""
    ct_path, pet = study / "CT" / "patient_001.nii.gz", study / "PET" / "patient_001.nii.gz"
    ct = nib.load(ct_path)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = ct.shape[0] - 1  # voxel i -> n-1-i: the same world positions, the other storage order
    flipped_path = tmp_path / "ct_flipped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ct.dataobj)[::-1], ct.affine @ flip), flipped_path)
    assert nib.aff2axcodes(nib.load(flipped_path).affine) != nib.aff2axcodes(ct.affine)
    label = nib.load(_infer(run, ct_path, pet, tmp_path / "a"))
    label_flipped = nib.load(_infer(run, flipped_path, pet, tmp_path / "b"))
    for got, source in ((label, ct), (label_flipped, nib.load(flipped_path))):
        assert got.shape == source.shape and got.get_data_dtype() == np.uint8
        np.testing.assert_allclose(got.affine, source.affine)
    a, b = np.asarray(label.dataobj), np.asarray(label_flipped.dataobj)[::-1]
    assert 0 < a.sum() < a.size
    np.testing.assert_array_equal(a, b)


def test_a_finer_ct_grid_of_the_same_anatomy_gives_the_network_the_same_input_at_the_plan_spacing(tmp_path):
    """The same phantom at 64 and 128 pixels over 500 mm: resampled to the plan's 12 mm, both give
    the network an input of the same size and nearly the same content."""
    inputs = []
    for size in (64, 128):
        root = tmp_path / str(size)
        write_dataset(root, patients=1, seed=9, fmt="nifti", config=PhantomConfig(size=size, slices=4))
        item = {"image": str(root / "CT" / "patient_001.nii.gz"), "pet": str(root / "PET" / "patient_001.nii.gz")}
        inputs.append(get_infer_transforms("nifti", target_spacing=[12.0, 12.0], slice_size=[48, 48])(item)["image"])
    coarse, fine = (np.asarray(x) for x in inputs)
    assert coarse.shape == fine.shape == (2, 48, 48, 4)  # 42 pixels of 12 mm, padded to 48
    for channel in (0, 1):  # CT, PET
        r = np.corrcoef(coarse[channel].ravel(), fine[channel].ravel())[0, 1]
        assert r > 0.95, (channel, r)


def test_training_writes_the_plan_with_the_median_spacing_of_its_volumes(tmp_path):
    from cocoseg_monai.cli import main

    data = tmp_path / "volumes"
    write_dataset(data, patients=4, seed=5, fmt="nifti", config=PhantomConfig(size=48, slices=4))
    logdir = tmp_path / "run"
    assert main(["train", "--dataset_root", str(data), "--logdir", str(logdir), "--epoch", "1", "--bs", "4",
                 "--num_workers", "0", "--val_ratio", "0.25", "--patch_size", "32", "32",
                 "--set", "features=[4,8,16,32]", "--set", "num_samples=2", "--set", "test_ratio=0.0",
                 "--set", "progress_bar=False"]) == 0  # fmt: skip
    plan = load_plan(logdir / "plan.yaml")
    spacing = 500.0 / 48
    assert plan["target_spacing"] == pytest.approx([spacing, spacing], abs=1e-4)
    assert plan["features"] == list(TINY_FEATURES) and plan["slice_size"] == [32, 32]
    assert json.loads((logdir / "config.json").read_text())["plan"] == str(logdir / "plan.yaml")


def test_target_spacing_auto_is_the_median_of_the_training_items(tmp_path, caplog):
    items = []
    for size in (40, 50, 80):
        root = tmp_path / str(size)
        write_dataset(root, patients=1, seed=1, fmt="nifti", config=PhantomConfig(size=size, slices=2))
        items.append({"image": str(root / "CT" / "patient_001.nii.gz")})
    data = {"training": items, "image_format": "nifti"}
    with caplog.at_level(logging.INFO, logger="cocoseg_monai.plan"):
        assert resolve_target_spacing("auto", data, None) == pytest.approx([10.0, 10.0])  # 500 / 50
    assert "training data in-plane spacing (mm): x 6.25 to 12.5, y 6.25 to 12.5, median 10 x 10 (3 volumes)" in caplog.text
    assert resolve_target_spacing([3, 4], data, None) == [3.0, 4.0]
    assert resolve_target_spacing(None, data, None) is None


def test_png_pixel_size_is_read_from_spacing_json_beside_the_slices(tmp_path):
    write_dataset(tmp_path, patients=3, seed=2, fmt="png", config=PhantomConfig(size=40, slices=2))
    assert read_spacing(tmp_path) == pytest.approx([12.5, 12.5, 3.0])
    datalist = build_datalist(tmp_path, val_ratio=0.34)
    assert datalist["spacing_mm"] == pytest.approx([12.5, 12.5, 3.0])
    assert resolve_png_spacing("auto", "png", datalist["spacing_mm"]) == [12.5, 12.5]
    assert resolve_png_spacing([2, 3], "png", datalist["spacing_mm"]) == [2.0, 3.0]  # given wins
    (tmp_path / "spacing.json").write_text('{"spacing_mm": [0, "x"]}')
    with pytest.raises(DataError, match=r"spacing\.json: 'spacing_mm' must be 2 or 3 positive numbers"):
        read_spacing(tmp_path)


def test_png_pixels_of_unknown_size_are_assumed_at_the_plan_spacing_said_once(tmp_path, caplog):
    data = {"training": [{"image": "a.png"}], "image_format": "png"}
    with caplog.at_level(logging.WARNING, logger="cocoseg_monai.plan"):
        assert resolve_target_spacing([4.0, 4.0], data, None) == [4.0, 4.0]
    assert caplog.text.count("taken to be at the plan's spacing ([4.0, 4.0] mm)") == 1
    assert resolve_png_spacing("auto", "png", None) is None


def test_png_slices_are_resampled_to_the_target_spacing(tmp_path):
    write_dataset(tmp_path, patients=1, seed=2, fmt="png", config=PhantomConfig(size=40, slices=1))
    item = find_pairs(tmp_path)[0]
    native = get_val_transforms("png")(item)
    coarse = get_val_transforms("png", target_spacing=[25.0, 25.0], png_spacing=[12.5, 12.5])(item)
    assert native["image"].shape == (2, 40, 40) and coarse["image"].shape == (2, 20, 20)
    assert set(np.unique(coarse["label"])) <= {0.0, 1.0}


def test_phantom_field_of_view_sets_the_pixel_size(tmp_path):
    assert phantom_main(["--out", str(tmp_path), "--patients", "1", "--size", "35", "--fov", "350", "--slices", "2",
                         "--format", "nifti", "--quiet"]) == 0  # fmt: skip
    zooms = nib.load(tmp_path / "CT" / "patient_001.nii.gz").header.get_zooms()
    assert zooms[:2] == pytest.approx((10.0, 10.0))
    shutil.rmtree(tmp_path)
