"""Tests of the DICOM series writer (``cocoseg_monai.dicom.writer``) and of the phantom's DICOM
output (``write_study_dicom``, ``--format dicom``).

Files are read back with pydicom alone, so the writer is checked against the standard, not
against the project's own reader. Volumes are small (32 x 32 x 4) so the file takes seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom import uid

from cocoseg_monai.data.phantom import PhantomConfig, generate_patient, main, write_study_dicom
from cocoseg_monai.dicom.writer import COMPRESSED_TRANSFER_SYNTAXES, write_series

SEED = 5
SMALL = PhantomConfig(size=32, slices=4)
LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def study():
    return generate_patient(0, SEED, SMALL)


def _read(paths: list[Path]) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """The datasets in InstanceNumber order and the volume rebuilt from them, ``(x, y, z)``."""
    datasets = sorted((pydicom.dcmread(p) for p in paths), key=lambda ds: int(ds.InstanceNumber))
    volume = np.stack([ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets], -1)
    return datasets, volume


def _pet_values(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Activity-like values (Bq/ml), one slice all zeros."""
    values = np.random.default_rng(seed).gamma(2.0, 3000.0, shape)
    values[:, :, 1] = 0.0
    return values


def _check_geometry(datasets: list[pydicom.Dataset], affine: np.ndarray) -> None:
    """The position, orientation and spacing tags are those of ``affine``, worked out by hand."""
    lps = LPS @ affine[:3]
    di, dj, dk = (np.linalg.norm(lps[:, c]) for c in range(3))
    for k, ds in enumerate(datasets):
        assert np.allclose([float(v) for v in ds.ImagePositionPatient], lps @ [0, 0, k, 1], atol=1e-6)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        assert np.allclose(iop[:3], lps[:, 0] / di, atol=1e-9) and np.allclose(iop[3:], lps[:, 1] / dj, atol=1e-9)
        assert np.allclose([float(v) for v in ds.PixelSpacing], [dj, di], rtol=1e-9)
        assert float(ds.SliceThickness) == pytest.approx(dk) and float(ds.SpacingBetweenSlices) == pytest.approx(dk)
        assert int(ds.InstanceNumber) == k + 1


def _affine_from_tags(datasets: list[pydicom.Dataset]) -> np.ndarray:
    """The RAS+ affine a reader builds from the tags (an independent check of the round trip)."""
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    first, second = (np.array([float(v) for v in ds.ImagePositionPatient]) for ds in datasets[:2])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * col_spacing, iop[3:] * row_spacing
    lps[:3, 2], lps[:3, 3] = second - first, first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _oblique_affine() -> np.ndarray:
    """Rotated about a skew axis, the y and z axes flipped, anisotropic voxels, off centre."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    angle = np.radians(27.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, -1.3, -2.5])
    affine[:3, 3] = [12.5, -40.0, 113.0]
    return affine


# ---------------------------------------------------------------------------------------------
# CT


def test_ct_round_trip_axis_aligned(tmp_path: Path, study) -> None:
    paths = write_series(study.ct_hu, study.ct_affine, tmp_path, "CT", study={"PatientID": "P1"})
    assert [p.name for p in paths] == [f"CT_{k:04d}.dcm" for k in range(1, SMALL.slices + 1)]
    assert not [p for p in tmp_path.iterdir() if p not in paths]  # no temporary file left
    datasets, volume = _read(paths[::-1])
    assert np.array_equal(volume, study.ct_hu)
    _check_geometry(datasets, study.ct_affine)
    assert np.allclose(_affine_from_tags(datasets), study.ct_affine, atol=1e-6)
    for p, ds in zip(paths, datasets):
        assert p.read_bytes()[128:132] == b"DICM"  # Part 10: preamble and prefix
        assert ds.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == uid.CTImageStorage and ds.Modality == "CT"
        assert (ds.Rows, ds.Columns) == (SMALL.size, SMALL.size)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 0)
        assert (float(ds.RescaleIntercept), float(ds.RescaleSlope), ds.RescaleType) == (-1024.0, 1.0, "HU")
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Manufacturer == "CoCoSeg phantom"
        assert ds.PatientID == "P1"
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) for ds in datasets}) == 1


def test_ct_oblique_flipped_geometry(tmp_path: Path) -> None:
    hu = np.random.default_rng(1).integers(-1024, 3072, (7, 5, 3)).astype(np.float32)
    affine = _oblique_affine()
    datasets, volume = _read(write_series(hu, affine, tmp_path, "CT", study={}))
    assert np.array_equal(volume, hu)
    assert (datasets[0].Rows, datasets[0].Columns) == (5, 7)
    _check_geometry(datasets, affine)
    assert np.allclose(_affine_from_tags(datasets), affine, atol=1e-6)


def test_gantry_tilt_is_carried_by_the_positions(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[1, 2] = 0.5  # each slice steps 0.5 mm anterior: the slice axis is not the normal
    datasets, _ = _read(write_series(np.zeros((4, 4, 3)), affine, tmp_path, "CT", study={}))
    assert np.allclose(_affine_from_tags(datasets), affine, atol=1e-9)
    assert float(datasets[0].SpacingBetweenSlices) == pytest.approx(2.0)  # between the planes


# ---------------------------------------------------------------------------------------------
# PET


def test_pet_values_within_half_a_step(tmp_path: Path) -> None:
    values = _pet_values((6, 5, 4))
    paths = write_series(values, np.diag([-4.0, -4.0, 3.0, 1.0]), tmp_path, "PT", study={},
                         series={"Units": "BQML", "DecayCorrection": "START"})
    datasets, volume = _read(paths)
    for k, ds in enumerate(datasets):
        slope = float(ds.RescaleSlope)
        assert ds.SOPClassUID == uid.PositronEmissionTomographyImageStorage and ds.Modality == "PT"
        assert (ds.PixelRepresentation, float(ds.RescaleIntercept), ds.Units) == (1, 0.0, "BQML")
        assert (int(ds.ImageIndex), int(ds.NumberOfSlices)) == (k + 1, 4)
        assert len(str(ds.RescaleSlope)) <= 16  # a valid DS
        peak = values[:, :, k].max()
        if peak == 0:
            assert slope == 1.0 and not ds.pixel_array.any()
        else:
            assert ds.pixel_array.max() == 32767 and slope == pytest.approx(peak / 32767, rel=1e-12)
        assert np.abs(volume[:, :, k] - values[:, :, k]).max() <= slope / 2 * (1 + 1e-9)


def test_phantom_study_as_dicom(tmp_path: Path, study) -> None:
    info = write_study_dicom(study, tmp_path)
    assert json.loads((tmp_path / "dicom.json").read_text()) == info
    ct, ct_volume = _read([tmp_path / f for f in info["ct"]["files"]])
    pet, pet_volume = _read([tmp_path / f for f in info["pet"]["files"]])
    # stored as a scanner stores axial images: rows anterior to posterior, the y axis reversed
    assert [float(v) for v in ct[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert np.array_equal(ct_volume[:, ::-1], study.ct_hu)
    for datasets, affine, rows in ((ct, study.ct_affine, SMALL.size), (pet, study.pet_affine, SMALL.pet_shape[1])):
        flip = np.eye(4)
        flip[1, 1], flip[1, 3] = -1, rows - 1
        assert np.allclose(_affine_from_tags(datasets), affine @ flip, atol=1e-6)

    ds = pet[0]
    assert ds.Units == "BQML" and ds.DecayCorrection == "START"
    assert list(ds.CorrectedImage) == ["ATTN", "DECY", "SCAT", "DTIM", "RAN", "NORM"]
    drug = ds.RadiopharmaceuticalInformationSequence[0]
    assert drug.Radiopharmaceutical == "Fludeoxyglucose" and float(drug.RadionuclideHalfLife) == 6586.2
    assert drug.RadionuclideCodeSequence[0].CodeValue == "C-111A1"
    assert drug.RadiopharmaceuticalStartDateTime == "20260115090000.00"
    assert float(drug.RadionuclideTotalDose) == info["radionuclide_total_dose_bq"]
    assert 50 <= float(ds.PatientWeight) <= 110 and ds.PatientSex in ("M", "F")
    # body-weight SUV from the tags alone, the way a reader computes it
    start = dt.datetime.strptime(drug.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S.%f")
    series = dt.datetime.strptime(ds.SeriesDate + ds.SeriesTime, "%Y%m%d%H%M%S.%f")
    assert 60 * 60 <= (series - start).total_seconds() <= 75 * 60
    decayed = float(drug.RadionuclideTotalDose) * 2 ** (-(series - start).total_seconds() / 6586.2)
    suv = pet_volume[:, ::-1] * float(ds.PatientWeight) * 1000 / decayed
    steps = np.array([float(d.RescaleSlope) for d in pet]) * float(ds.PatientWeight) * 1000 / decayed
    assert (np.abs(suv - study.pet_suv_coarse).max(axis=(0, 1)) <= steps / 2 * (1 + 1e-6)).all()
    assert info["suv_to_bqml"] == pytest.approx(decayed / (float(ds.PatientWeight) * 1000), rel=1e-12)
    for a, b in ((ct[0], ds), (ct[-1], pet[-1])):
        assert a.StudyInstanceUID == b.StudyInstanceUID and a.FrameOfReferenceUID == b.FrameOfReferenceUID
        assert a.PatientID == b.PatientID == "PHANTOM_001"
    assert ct[0].SeriesInstanceUID != ds.SeriesInstanceUID


def test_scan_time(tmp_path: Path, study) -> None:
    info = write_study_dicom(study, tmp_path, scan_time=dt.datetime(2026, 1, 15, 11, 0, 0, 123456))
    assert info["pet"]["series_time"] == "2026-01-15T11:00:00.120000"
    assert pydicom.dcmread(tmp_path / info["pet"]["files"][0]).SeriesTime == "110000.12"
    with pytest.raises(ValueError, match="scan_time"):
        write_study_dicom(study, tmp_path, scan_time=dt.datetime(2026, 1, 15, 8, 0))


# ---------------------------------------------------------------------------------------------
# transfer syntaxes, photometric interpretation, per-slice attributes


@pytest.mark.parametrize("syntax", [uid.RLELossless, uid.JPEG2000Lossless, uid.JPEGLSLossless], ids=lambda u: u.name)
@pytest.mark.parametrize("modality", ["CT", "PT"])
def test_compressed_transfer_syntaxes_are_lossless(tmp_path: Path, study, syntax, modality: str) -> None:
    volume = study.ct_hu if modality == "CT" else _pet_values((32, 33, 3))
    affine = study.ct_affine if modality == "CT" else np.diag([-4.0, -4.0, 3.0, 1.0])
    plain = _read(write_series(volume, affine, tmp_path / "plain", modality, study={}))[0]
    packed = _read(write_series(volume, affine, tmp_path / "packed", modality, study={}, transfer_syntax=syntax))[0]
    for a, b in zip(plain, packed):
        assert b.file_meta.TransferSyntaxUID == syntax
        assert np.array_equal(a.pixel_array, b.pixel_array) and a.pixel_array.dtype == b.pixel_array.dtype
        assert a.RescaleSlope == b.RescaleSlope
    assert syntax in COMPRESSED_TRANSFER_SYNTAXES


def test_monochrome1_changes_only_the_tag(tmp_path: Path, study) -> None:
    m2 = _read(write_series(study.ct_hu, study.ct_affine, tmp_path / "m2", "CT", study={}))[0]
    m1 = _read(write_series(study.ct_hu, study.ct_affine, tmp_path / "m1", "CT", study={},
                            photometric="MONOCHROME1"))[0]
    for a, b in zip(m2, m1):
        assert (a.PhotometricInterpretation, b.PhotometricInterpretation) == ("MONOCHROME2", "MONOCHROME1")
        assert np.array_equal(a.pixel_array, b.pixel_array)


def test_attributes_uids_and_per_slice(tmp_path: Path) -> None:
    hu = np.zeros((4, 4, 3))
    affine = np.eye(4)
    study = {"PatientWeight": 72.123456789012345, "StudyInstanceUID": "1.2.3", "PatientSex": "F",
             "OtherPatientIDsSequence": [{"PatientID": "X", "TypeOfPatientID": "TEXT"}]}
    series = {"SeriesInstanceUID": "1.2.3.4", "SeriesNumber": 7}
    per_slice = lambda k: {"AcquisitionTime": f"1000{k:02d}", "PatientSex": None}  # noqa: E731
    first = _read(write_series(hu, affine, tmp_path / "a", "CT", study=study, series=series, per_slice=per_slice))[0]
    again = _read(write_series(hu, affine, tmp_path / "b", "CT", study=study, series=series))[0]
    other = _read(write_series(hu, affine, tmp_path / "c", "CT", study=study))[0]
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in again]
    assert not {ds.SOPInstanceUID for ds in first} & {ds.SOPInstanceUID for ds in other}
    assert [ds.AcquisitionTime for ds in first] == ["100000", "100001", "100002"]
    assert "PatientSex" not in first[0] and again[0].PatientSex == "F"
    weight = first[0].PatientWeight  # a float too long for a DS is shortened to 16 characters
    assert len(str(weight)) == 16 and float(weight) == pytest.approx(72.123456789012345, rel=1e-13)
    assert int(first[0].SeriesNumber) == 7
    assert first[0].StudyInstanceUID == "1.2.3" and first[0].OtherPatientIDsSequence[0].PatientID == "X"
    names = write_series(hu, affine, tmp_path / "d", "CT", study={}, name_pattern="IM{index}")
    assert [p.name for p in names] == ["IM1", "IM2", "IM3"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modality": "MR"}, "modality"),
        ({"photometric": "RGB"}, "photometric"),
        ({"rescale": "global"}, "rescale"),
        ({"transfer_syntax": "1.2.840.10008.1.2.4.50"}, "transfer_syntax"),
        ({"volume": np.zeros((4, 4))}, "volume"),
        ({"volume": np.full((4, 4, 2), 0.5)}, "CT values must be integer"),
        ({"volume": np.full((4, 4, 2), -2000.0)}, r"\[-1024, 64511\]"),
        ({"volume": np.full((4, 4, 2), np.nan), "modality": "PT"}, "finite"),
        ({"affine": np.array([[1, 0.2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])}, "perpendicular"),
        ({"affine": np.diag([1.0, 1.0, 0.0, 1.0])}, "affine"),
        ({"study": {"PatientNam": "x"}}, "'PatientNam' is not a DICOM keyword"),
        ({"series": {"RescaleSlope": 2}}, "series: RescaleSlope is set by write_series"),
        ({"name_pattern": "slice.dcm"}, "name_pattern"),
        ({"name_pattern": "{slice}.dcm"}, "name_pattern"),
        ({"name_pattern": "../{index}.dcm"}, "name_pattern"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"volume": np.zeros((4, 4, 2)), "affine": np.eye(4), "folder": tmp_path / "out", "modality": "CT",
            "study": {}} | kwargs
    with pytest.raises(ValueError, match=message):
        write_series(args.pop("volume"), args.pop("affine"), args.pop("folder"), args.pop("modality"), **args)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_dicom_layout_is_deterministic(tmp_path: Path, study) -> None:
    argv = ["--format", "dicom", "--patients", "2", "--seed", str(SEED), "--size", "32", "--slices", "4", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no file of the run reported as foreign
        assert main(["--out", str(tmp_path / "a"), *argv]) == 0
        assert main(["--out", str(tmp_path / "b"), *argv]) == 0
    root = tmp_path / "a" / "dicom"
    assert sorted(p.name for p in root.iterdir()) == ["patient_001", "patient_002"]
    patient = root / "patient_001"
    assert sorted(p.name for p in patient.iterdir()) == [
        "CT", "PET", "ct.nii.gz", "dicom.json", "label.nii.gz", "pet.nii.gz"]
    assert len(list((patient / "CT").glob("CT_*.dcm"))) == SMALL.slices
    assert len(list((patient / "PET").glob("PT_*.dcm"))) == SMALL.pet_shape[2]
    label = nib.load(patient / "label.nii.gz")
    assert label.get_data_dtype() == np.uint8 and np.allclose(label.affine, study.ct_affine)
    assert np.array_equal(np.asarray(label.dataobj), study.label)
    assert np.array_equal(np.asarray(nib.load(patient / "ct.nii.gz").dataobj), study.ct_hu.astype(np.int16))
    assert json.loads((tmp_path / "a" / "phantom.json").read_text())["format"] == "dicom"
    for p in sorted(root.rglob("*")):
        twin = tmp_path / "b" / "dicom" / p.relative_to(root)
        assert p.is_dir() or p.read_bytes() == twin.read_bytes(), p  # same UIDs, same bytes
    info = json.loads((patient / "dicom.json").read_text())
    other = json.loads((root / "patient_002" / "dicom.json").read_text())
    assert info["study_instance_uid"] != other["study_instance_uid"]
    assert pydicom.dcmread(patient / info["ct"]["files"][0]).StudyInstanceUID == info["study_instance_uid"]

    stale = patient / "CT" / "CT_0099.dcm"  # from a run with more slices: would join the series
    stale.write_bytes(b"old")
    with pytest.warns(UserWarning, match="earlier run"):
        main(["--out", str(tmp_path / "a"), *argv])
