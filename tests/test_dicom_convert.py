"""A phantom study from DICOM: `cocoseg convert` gives back the phantom's HU and SUV, and
`cocoseg infer` on the series folders writes the label and the same label as a DICOM SEG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("highdicom", reason="highdicom (a package dependency) is not installed")

from cocoseg_monai.cli import main  # noqa: E402
from cocoseg_monai.data.phantom import PhantomConfig, generate_patient, write_study_dicom, write_study_nifti  # noqa: E402
from cocoseg_monai.dicom.seg import read_seg  # noqa: E402
from cocoseg_monai.dicom.series import read_series  # noqa: E402

from .conftest import write_tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, object, dict]:
    root = tmp_path_factory.mktemp("dicom_study")
    study = generate_patient(2, seed=11, config=PhantomConfig(size=48, slices=6))
    record = write_study_dicom(study, root / "study")
    write_study_nifti(study, root / "study" / "ct.nii.gz", root / "study" / "pet.nii.gz")
    return root / "study", study, record


def _canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj), img.affine


def test_convert_gives_back_the_phantom_ct_exactly_and_its_suv_to_1e3(phantom, tmp_path, capsys):
    folder, study, record = phantom
    assert main(["convert", "--ct", str(folder / "CT"), "--pet", str(folder / "PET"), "--out", str(tmp_path)]) == 0
    assert "SUV factor" in capsys.readouterr().out
    # the converted volumes hold the phantom's voxels at the phantom's places in the world
    ct, ct_affine = _canonical(tmp_path / "ct.nii.gz")
    ref_ct, ref_ct_affine = _canonical(folder / "ct.nii.gz")
    np.testing.assert_array_equal(ct, ref_ct)
    np.testing.assert_allclose(ct_affine, ref_ct_affine, atol=1e-4)
    pet, pet_affine = _canonical(tmp_path / "pet.nii.gz")
    ref_pet, ref_pet_affine = _canonical(folder / "pet.nii.gz")
    np.testing.assert_allclose(pet_affine, ref_pet_affine, atol=1e-4)
    assert pet.dtype == np.float32
    # 16-bit storage with each slice's own scale: each voxel within half a quantisation step of its
    # slice (the only loss), which is 1e-3 relative wherever the uptake is above 1/65 of the
    # slice's maximum (a 2 % margin below)
    step = ref_pet.max(axis=(0, 1), keepdims=True) / 32767
    error = np.abs(pet - ref_pet)
    assert np.all(error <= step / 2 * 1.001 + 1e-7)
    visible = ref_pet > ref_pet.max(axis=(0, 1), keepdims=True) / 50
    assert np.all(error[visible] <= 1e-3 * ref_pet[visible])
    conversion = json.loads((tmp_path / "conversion.json").read_text())
    suv = conversion["pet"]["suv"]
    assert suv["factor"] == pytest.approx(1 / record["suv_to_bqml"], rel=1e-6)
    assert suv["units"] == "BQML" and suv["kind"] == "bw"
    assert suv["tags"]["PatientWeight"] == pytest.approx(record["patient_weight_kg"])
    assert conversion["ct"]["series_instance_uid"] == record["ct"]["series_instance_uid"]
    assert conversion["pet"]["spacing_mm"] == pytest.approx(list(study.config.pet_spacing), abs=1e-5)


def test_one_study_folder_holds_both_series(phantom, tmp_path):
    folder, study, _ = phantom
    assert main(["convert", "--ct", str(folder), "--pet", str(folder), "--out", str(tmp_path)]) == 0
    ct, _ = _canonical(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(ct, _canonical(folder / "ct.nii.gz")[0])


def test_pet_alone_and_a_missing_weight_named_then_supplied(phantom, tmp_path):
    folder, _, record = phantom
    broken = tmp_path / "pet"
    shutil.copytree(folder / "PET", broken)
    import pydicom

    for f in broken.iterdir():
        ds = pydicom.dcmread(f)
        del ds.PatientWeight
        ds.save_as(f)
    with pytest.raises(SystemExit, match=r"^cocoseg convert: .*PatientWeight \(0010,1030\) is missing.*--weight_kg"):
        main(["convert", "--pet", str(broken), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written for a refused study
    weight = record["patient_weight_kg"]
    assert main(["convert", "--pet", str(broken), "--out", str(tmp_path / "out"), "--weight_kg", str(weight)]) == 0
    assert not (tmp_path / "out" / "ct.nii.gz").exists()
    pet, _ = _canonical(tmp_path / "out" / "pet.nii.gz")
    ref, _ = _canonical(folder / "pet.nii.gz")
    np.testing.assert_allclose(pet, ref, atol=ref.max() / 32767)


def test_nothing_to_convert_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="nothing to convert"):
        main(["convert", "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A training run's layout with tiny random weights and their plan."""
    return write_tiny_run(tmp_path_factory.mktemp("run"), target_spacing=[7.0, 7.0], slice_size=[64, 64])


def test_infer_on_series_folders_writes_the_label_and_a_seg_with_the_same_frames(phantom, run, tmp_path):
    folder, _, _ = phantom
    out = tmp_path / "dicom"
    assert main(["infer", "--run", str(run), "--ct", str(folder / "CT"), "--pet", str(folder / "PET"),
                 "--output_dir", str(out), "--dicom_seg"]) == 0
    label_img = nib.load(out / "CT_seg.nii.gz")
    label = np.asarray(label_img.dataobj)
    ct = read_series(folder / "CT", "CT")
    assert label.shape == ct.array.shape
    np.testing.assert_allclose(label_img.affine, ct.affine, atol=1e-4)
    assert 0 < label.sum() < label.size  # the tiny random network marks some voxels, not all
    seg = read_seg(out / "CT_seg.dcm", ct.headers)
    np.testing.assert_array_equal(seg, label)
    import pydicom

    ds = pydicom.dcmread(out / "CT_seg.dcm")
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == ct.headers[0].StudyInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.info.uid
    segment = ds.SegmentSequence[0]
    assert segment.SegmentLabel == "lesion" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "CoCoSeg V2"
    # the same study converted to NIfTI first gives the same label, voxel for voxel in the world
    converted = tmp_path / "nifti"
    assert main(["convert", "--ct", str(folder / "CT"), "--pet", str(folder / "PET"), "--out", str(converted)]) == 0
    assert main(["infer", "--run", str(run), "--ct", str(converted / "ct.nii.gz"), "--pet", str(converted / "pet.nii.gz"),
                 "--output_dir", str(tmp_path / "from_nifti")]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "from_nifti" / "ct_seg.nii.gz").dataobj), label)


def test_dicom_seg_of_nifti_input_is_refused_naming_the_input(phantom, run, tmp_path):
    folder, _, _ = phantom
    with pytest.raises(SystemExit, match=r"DICOM SEG needs a CT read from a DICOM series folder.*ct\.nii\.gz"):
        main(["infer", "--run", str(run), "--ct", str(folder / "ct.nii.gz"), "--pet", str(folder / "pet.nii.gz"),
              "--output_dir", str(tmp_path), "--dicom_seg"])
