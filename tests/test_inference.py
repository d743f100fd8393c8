"""Whole-volume inference through bundle/configs/inference.yaml."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cocoseg_monai.bundle import config_path, run_bundle
from cocoseg_monai.data import DataError, find_pairs, inference_items
from cocoseg_monai.data.phantom import PhantomConfig, write_dataset
from cocoseg_monai.networks import CoCoSegNet
from cocoseg_monai.plan import load_plan, make_plan, write_plan
from cocoseg_monai.transforms import get_infer_transforms

from .conftest import TINY_FEATURES, error_chain, tiny_network


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path, CoCoSegNet]:
    root = tmp_path_factory.mktemp("volumes")
    write_dataset(root, patients=1, seed=5, fmt="nifti", config=PhantomConfig(size=48, slices=6))
    net = tiny_network()
    ckpt = root / "model.pt"
    torch.save(net.state_dict(), ckpt)
    return root, ckpt, net


def _infer(root: Path, ckpt: Path, out: Path, **overrides) -> None:
    run_bundle(
        [config_path("inference")],
        run_id="run",
        overrides={
            "ckpt_path": str(ckpt),
            "ct": str(root / "CT" / "patient_001.nii.gz"),
            "pet": str(root / "PET" / "patient_001.nii.gz"),
            "features": list(TINY_FEATURES),
            "output_dir": str(out),
            **overrides,
        },
    )


def test_label_is_written_on_the_ct_grid_with_the_ct_affine(study, tmp_path):
    root, ckpt, _ = study
    _infer(root, ckpt, tmp_path)
    ct = nib.load(root / "CT" / "patient_001.nii.gz")
    pet = nib.load(root / "PET" / "patient_001.nii.gz")
    seg = nib.load(tmp_path / "patient_001_seg.nii.gz")
    assert pet.shape != ct.shape  # PET on its own, coarser grid
    assert seg.shape == ct.shape and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, ct.affine)


def test_label_equals_the_network_run_slice_by_slice(study, tmp_path):
    root, ckpt, net = study
    _infer(root, ckpt, tmp_path, slice_batch=1, cpu_bf16=False)  # compared with the fp32 network, voxel for voxel
    item = find_pairs(root, require_labels=False)[0]
    image = get_infer_transforms("nifti")(item)["image"]  # [2, X, Y, Z], LPS
    with torch.no_grad():
        lps = torch.stack([net(image[None, ..., z]).argmax(1)[0] for z in range(image.shape[-1])], -1)
    expected = lps.numpy()[:, ::-1, :]  # LPS -> the file's LAS: flip the second axis
    seg = np.asarray(nib.load(tmp_path / "patient_001_seg.nii.gz").dataobj)
    assert 0 < seg.sum() < seg.size  # both classes present: the comparison means something
    np.testing.assert_array_equal(seg, expected)


def test_probability_maps_are_written_when_asked(study, tmp_path):
    root, ckpt, _ = study
    _infer(root, ckpt, tmp_path, save_probabilities=True)
    prob = nib.load(tmp_path / "patient_001_prob.nii.gz")
    data = np.asarray(prob.dataobj)
    assert data.shape[:3] == nib.load(root / "CT" / "patient_001.nii.gz").shape and data.shape[-1] == 2
    np.testing.assert_allclose(data.sum(-1), 1.0, atol=1e-5)


def test_empty_input_folder_is_refused(tmp_path):
    for folder in ("CT", "PET"):
        (tmp_path / folder).mkdir()
    with pytest.raises(DataError):
        inference_items(tmp_path)


def test_ct_without_pet_is_refused_naming_both(tmp_path):
    with pytest.raises(DataError, match="ct=.*pet="):
        inference_items(ct=str(tmp_path / "ct.nii.gz"))


def test_ct_and_pet_that_do_not_overlap_are_refused_naming_both(study, tmp_path):
    root, _, _ = study
    pet = nib.load(root / "PET" / "patient_001.nii.gz")
    moved = pet.affine.copy()
    moved[2, 3] += 2000.0  # two metres up: no overlap with the CT
    far = tmp_path / "pet_far.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(pet.dataobj), moved), far)
    item = {"image": str(root / "CT" / "patient_001.nii.gz"), "pet": str(far)}
    with pytest.raises(RuntimeError) as err:
        get_infer_transforms("nifti")(item)
    assert re.search(r"DataError: volumes do not overlap in space: .*patient_001.*pet_far", error_chain(err.value))


def test_checkpoint_with_other_output_channels_is_refused_naming_the_head(study, tmp_path):
    root, _, _ = study
    ckpt = tmp_path / "three_classes.pt"
    torch.save(CoCoSegNet(features=TINY_FEATURES, out_channels=3).state_dict(), ckpt)
    with pytest.raises(RuntimeError) as err:
        _infer(root, ckpt, tmp_path / "out")
    assert "size mismatch for head.conv.weight" in error_chain(err.value)


def test_cocoseg_infer_runs_the_weights_under_their_plan(study, tmp_path):
    from cocoseg_monai.cli import infer_overrides, main, parse_args

    root, ckpt, _ = study
    run = tmp_path / "run"  # a training run's layout: no --features, the widths come from its plan
    (run / "models").mkdir(parents=True)
    shutil.copy(ckpt, run / "models" / "model.pt")
    write_plan(run, make_plan(features=list(TINY_FEATURES), target_spacing=[7.0, 7.0], slice_size=[64, 64]))
    argv = ["infer", "--run", str(run), "--ct", str(root / "CT" / "patient_001.nii.gz"),
            "--pet", str(root / "PET" / "patient_001.nii.gz"), "--output_dir", str(tmp_path), "--slice_batch", "2"]
    overrides = infer_overrides(parse_args(argv))
    assert overrides["ckpt_path"] == str(run / "models" / "model.pt") and "features" not in overrides
    assert main(argv) == 0
    seg = nib.load(tmp_path / "patient_001_seg.nii.gz")
    ct = nib.load(root / "CT" / "patient_001.nii.gz")
    assert seg.shape == ct.shape
    np.testing.assert_allclose(seg.affine, ct.affine)
    # a setting that contradicts the plan is refused, naming it
    with pytest.raises(SystemExit, match=r"features: \[8, 8, 8, 8\] here, \[4, 8, 16, 32\] in the plan"):
        main([*argv, "--features", "8", "8", "8", "8"])


def test_a_run_made_before_plans_gets_the_command_that_writes_its_plan(study, tmp_path):
    from cocoseg_monai.cli import main

    root, ckpt, _ = study
    run = tmp_path / "old_run"
    (run / "models").mkdir(parents=True)
    shutil.copy(ckpt, run / "models" / "model.pt")
    (run / "config.json").write_text(json.dumps({"features": list(TINY_FEATURES), "ct_window": [-1000.0, 1000.0],
                                                 "patch_size": [64, 64]}))  # fmt: skip
    argv = ["infer", "--run", str(run), "--ct", str(root / "CT" / "patient_001.nii.gz"),
            "--pet", str(root / "PET" / "patient_001.nii.gz"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=f"has no plan.yaml .*cocoseg plan {re.escape(str(run))}"):
        main(argv)
    assert main(["plan", str(run)]) == 0
    plan = load_plan(run / "plan.yaml")
    assert plan["features"] == list(TINY_FEATURES) and plan["ct_window"] == [-1000.0, 1000.0]
    assert plan["target_spacing"] is None and plan["slice_size"] == [64, 64]  # old runs trained on each file's grid
    assert main(argv) == 0 and (tmp_path / "out" / "patient_001_seg.nii.gz").is_file()


def test_cocoseg_infer_names_a_missing_checkpoint(tmp_path):
    from cocoseg_monai.cli import main

    with pytest.raises(SystemExit, match="nowhere.pt"):
        main(["infer", "--ckpt", str(tmp_path / "nowhere.pt"), "--ct", "a", "--pet", "b"])


def test_pet_without_spatial_information_is_refused_naming_it(study, tmp_path):
    root, _, _ = study
    pet = nib.load(root / "PET" / "patient_001.nii.gz")
    bare = nib.Nifti1Image(np.asarray(pet.dataobj), None)
    bare.header.set_qform(None, code=0)
    bare.header.set_sform(None, code=0)
    path = tmp_path / "pet_bare.nii.gz"
    nib.save(bare, path)
    item = {"image": str(root / "CT" / "patient_001.nii.gz"), "pet": str(path)}
    with pytest.raises(RuntimeError) as err:
        get_infer_transforms("nifti")(item)
    assert re.search(r"DataError: 'pet' .*pet_bare.nii.gz has no spatial information", error_chain(err.value))


def test_png_slice_folder_gives_one_0_255_mask_per_slice_matching_the_network(tmp_path):
    from PIL import Image

    data = tmp_path / "png"
    write_dataset(data, patients=1, seed=5, fmt="png", config=PhantomConfig(size=40, slices=3))
    net = CoCoSegNet(features=TINY_FEATURES).eval()
    with torch.no_grad():
        net.head.conv.bias.copy_(torch.tensor([0.0, -0.02]))
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    out = tmp_path / "pred"
    run_bundle(
        [config_path("inference")],
        run_id="run",
        overrides={"ckpt_path": str(ckpt), "dataset_dir": str(data), "features": list(TINY_FEATURES),
                   "output_dir": str(out), "cpu_bf16": False},  # compared with the fp32 network
    )
    items = find_pairs(data, require_labels=False)
    assert len(list(out.glob("*_seg.png"))) == len(items) == 3
    for item in items:
        written = np.asarray(Image.open(out / Path(item["image"]).name.replace(".png", "_seg.png")))
        with torch.no_grad():
            pred = net(get_infer_transforms("png")(item)["image"][None]).argmax(1)[0].numpy()
        assert written.shape == np.asarray(Image.open(item["image"])).shape  # rows, cols of the CT slice
        np.testing.assert_array_equal(written, pred.T.astype(np.uint8) * 255)  # (x, y) -> (rows, cols)


def test_slice_batch_size_does_not_change_the_volume_label(study, tmp_path):
    root, ckpt, _ = study
    _infer(root, ckpt, tmp_path / "one", slice_batch=1)
    _infer(root, ckpt, tmp_path / "six", slice_batch=6)
    one = np.asarray(nib.load(tmp_path / "one" / "patient_001_seg.nii.gz").dataobj)
    six = np.asarray(nib.load(tmp_path / "six" / "patient_001_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(one, six)


def test_interrupted_prediction_write_keeps_the_previous_label(study, tmp_path, monkeypatch):
    root, ckpt, _ = study
    _infer(root, ckpt, tmp_path)
    label = tmp_path / "patient_001_seg.nii.gz"
    before = label.read_bytes()

    def half_then_fail(img, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x1f\x8b half a volume")  # the writer dies mid-file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", half_then_fail)
    with pytest.raises(RuntimeError) as err:
        _infer(root, ckpt, tmp_path, resume=False)  # redo the complete study
    assert "No space left on device" in error_chain(err.value)
    assert label.read_bytes() == before
    # no temporary left; the study's record is gone, so a rerun redoes it
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cocoseg_done", "cohort_summary.json", "patient_001_seg.nii.gz"]
    assert not list((tmp_path / ".cocoseg_done").iterdir())


def test_flip_tta_writes_the_label_of_the_averaged_logits(study, tmp_path):
    root, ckpt, net = study
    _infer(root, ckpt, tmp_path, tta_flip=True, cpu_bf16=False)
    item = find_pairs(root, require_labels=False)[0]
    image = get_infer_transforms("nifti")(item)["image"]  # [2, X, Y, Z], LPS
    with torch.no_grad():
        slices = [image[None, ..., z] for z in range(image.shape[-1])]
        lps = torch.stack([((net(s) + net(s.flip(2)).flip(2)) / 2).argmax(1)[0] for s in slices], -1)
    seg = np.asarray(nib.load(tmp_path / "patient_001_seg.nii.gz").dataobj)
    assert 0 < seg.sum() < seg.size
    np.testing.assert_array_equal(seg, lps.numpy()[:, ::-1, :])  # LPS -> the file's LAS
