"""Reading CT and PET series from folders of DICOM files: selection, ordering, spacing, refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="pydicom (a package dependency) is not installed")

from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless  # noqa: E402

from cocoseg_monai.dicom import DicomError  # noqa: E402
from cocoseg_monai.dicom.series import find_series, load_series, read_series, select_series  # noqa: E402
from cocoseg_monai.dicom.writer import write_series  # noqa: E402

STUDY = {"PatientID": "SERIES_TEST", "PatientName": "Series^Test", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
         "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.2", "StudyDate": "20260115", "StudyTime": "090000"}


def _affine(spacing=(0.8, 0.7, 2.5), origin=(-40.0, 30.0, -100.0), rotation=None) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = (np.eye(3) if rotation is None else rotation) @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def _oblique() -> np.ndarray:
    """A rotation about z by 20 degrees and about x by 10, with the y axis flipped."""
    cz, sz, cx, sx = np.cos(np.radians(20)), np.sin(np.radians(20)), np.cos(np.radians(10)), np.sin(np.radians(10))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ rx @ np.diag([1, -1, 1])


def _ct(shape=(12, 10, 6), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, shape).astype(np.float32)


def _write(folder, volume, affine, modality="CT", series_uid="1.2.826.0.1.3680043.8.498.10", **kwargs):
    series = {"SeriesInstanceUID": series_uid, "SeriesDescription": f"{modality} test", **kwargs.pop("series", {})}
    return write_series(volume, affine, folder, modality, study=STUDY, series=series, **kwargs)


def _reversed_slices(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image with its slice axis running the other way."""
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, volume.shape[2] - 1
    return volume[:, :, ::-1], affine @ flip


def test_volume_and_affine_round_trip_for_an_oblique_series_in_shuffled_files(tmp_path):
    volume, affine = _ct(), _affine(rotation=_oblique() @ np.diag([1, 1, -1]))  # a proper rotation
    files = _write(tmp_path / "ct", volume, affine)
    # file names and instance numbers say nothing about the order: shuffle the names
    rng = np.random.default_rng(1)
    for i, f in enumerate(rng.permutation(files)):
        f.rename(f.with_name(f"x{i:03d}.tmp"))
    for i, f in enumerate(sorted((tmp_path / "ct").glob("*.tmp"))):
        f.rename(f.with_name(f"IM{(i * 7) % 13:04d}.dcm"))
    got = read_series(tmp_path / "ct", "CT")
    np.testing.assert_array_equal(got.array, volume)
    np.testing.assert_allclose(got.affine, affine, atol=1e-4)
    assert got.warnings == []


def test_slices_run_along_the_orientation_normal_whatever_the_files_order(tmp_path):
    """An affine whose slice axis runs against the row x column normal (a mirrored grid): the
    series comes back with its slices along the normal, the same voxels in the world."""
    volume, affine = _ct(), _affine(rotation=_oblique())
    assert np.linalg.det(affine[:3, :3]) < 0
    _write(tmp_path / "ct", volume, affine)
    got = read_series(tmp_path / "ct", "CT")
    expected_volume, expected_affine = _reversed_slices(volume, affine)
    np.testing.assert_array_equal(got.array, expected_volume)
    np.testing.assert_allclose(got.affine, expected_affine, atol=1e-4)


def test_geometry_agrees_with_simpleitk_series_reader(tmp_path):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (a package dependency) is not installed")
    volume, affine = _ct(), _affine(rotation=_oblique())
    _write(tmp_path / "ct", volume, affine)
    got = read_series(tmp_path / "ct", "CT")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    image = reader.Execute()
    # SimpleITK: LPS, array [z, y, x]; direction columns are the index axes
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    ras = np.diag([-1, -1, 1, 1]) @ lps
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    # the two readers may start from opposite ends of the stack: compare voxel by world position
    if not np.allclose(ras, got.affine, atol=1e-3):
        array, ras = _reversed_slices(array, ras)
    np.testing.assert_allclose(ras, got.affine, atol=1e-3)
    np.testing.assert_array_equal(array, got.array)


def test_slice_spacing_comes_from_positions_not_slice_thickness(tmp_path):
    affine = _affine(spacing=(0.9, 0.9, 1.25))
    _write(tmp_path / "ct", _ct(), affine, series={"SliceThickness": 5.0, "SpacingBetweenSlices": 5.0})
    got = read_series(tmp_path / "ct", "CT")
    assert got.spacing == pytest.approx((0.9, 0.9, 1.25), abs=1e-5)


def test_series_chosen_by_modality_and_several_candidates_listed(tmp_path):
    study = tmp_path / "study"
    _write(study / "a", _ct(seed=1), _affine(), series_uid="1.2.3.100", series={"SeriesDescription": "soft"})
    _write(study / "b", _ct(seed=2), _affine(), series_uid="1.2.3.200", series={"SeriesDescription": "lung"})
    pet = np.random.default_rng(3).uniform(0, 5000, (6, 5, 6)).astype(np.float32)
    _write(study / "c", pet, _affine(spacing=(2.0, 2.0, 2.5)), modality="PT", series_uid="1.2.3.300")
    (study / "notes.txt").write_text("not DICOM")
    found = find_series(study)
    assert sorted((s.modality, s.uid, len(s.files)) for s in found) == [
        ("CT", "1.2.3.100", 6), ("CT", "1.2.3.200", 6), ("PT", "1.2.3.300", 6)]
    with pytest.raises(DicomError, match=r"2 CT series, choose one with --ct_series.*1\.2\.3\.100.*'soft'.*6 files.*1\.2\.3\.200"):
        select_series(found, "CT", flag="--ct_series")
    chosen = load_series(select_series(found, "CT", "1.2.3.200"))
    np.testing.assert_array_equal(chosen.array, _ct(seed=2))
    assert select_series(found, "PT").uid == "1.2.3.300"
    with pytest.raises(DicomError, match=r"series 1\.2\.3\.300 is PT, not CT"):
        select_series(found, "CT", "1.2.3.300")
    with pytest.raises(DicomError, match=r"no PT series; found: .*1\.2\.3\.100"):
        select_series(find_series(study / "a"), "PT")


def test_missing_slice_refused_naming_the_neighbours(tmp_path):
    files = _write(tmp_path / "ct", _ct(), _affine())
    files[3].unlink()
    with pytest.raises(DicomError, match=rf"1 slice\(s\) missing between .*{files[2].name} and .*{files[4].name}"):
        read_series(tmp_path / "ct", "CT")


def test_repeated_file_dropped_with_a_warning(tmp_path):
    volume = _ct()
    files = _write(tmp_path / "ct", volume, _affine())
    shutil.copy(files[2], tmp_path / "ct" / "copy_of_slice_3.dcm")
    got = read_series(tmp_path / "ct", "CT")
    np.testing.assert_array_equal(got.array, volume)
    assert len(got.warnings) == 1 and "repeats the image" in got.warnings[0]


def test_two_different_images_at_one_position_refused(tmp_path):
    affine = _affine()
    files = _write(tmp_path / "ct", _ct(), affine,
                   per_slice=lambda k: {"ImagePositionPatient": _lps_position(affine, 2)} if k == 3 else {})
    with pytest.raises(DicomError, match=rf"two different images at one position.*({files[2].name}|{files[3].name})"):
        read_series(tmp_path / "ct", "CT")


def _lps_position(affine: np.ndarray, k: float) -> list[float]:
    ras = affine @ np.array([0.0, 0.0, k, 1.0])
    return [float(-ras[0]), float(-ras[1]), float(ras[2])]


def test_uneven_spacing_refused_and_rounding_accepted(tmp_path):
    affine = _affine()
    _write(tmp_path / "uneven", _ct(), affine,
           per_slice=lambda k: {"ImagePositionPatient": _lps_position(affine, 2.3)} if k == 2 else {})
    with pytest.raises(DicomError, match="uneven slice spacing"):
        read_series(tmp_path / "uneven", "CT")
    _write(tmp_path / "rounded", _ct(), affine,
           per_slice=lambda k: {"ImagePositionPatient": _lps_position(affine, k + 0.002)} if k == 2 else {})
    assert read_series(tmp_path / "rounded", "CT").spacing[2] == pytest.approx(2.5, abs=1e-6)


def test_mixed_orientation_refused(tmp_path):
    _write(tmp_path / "ct", _ct(), _affine(),
           per_slice=lambda k: {"ImageOrientationPatient": [0, 1, 0, 1, 0, 0]} if k == 1 else {})
    with pytest.raises(DicomError, match="differ in ImageOrientationPatient"):
        read_series(tmp_path / "ct", "CT")


def test_gantry_tilt_placed_by_a_sheared_affine_with_a_warning(tmp_path):
    affine = _affine()
    affine[1, 2] = 0.4  # each slice 0.4 mm further anterior-posterior: a tilted gantry
    volume = _ct()
    _write(tmp_path / "ct", volume, affine)
    got = read_series(tmp_path / "ct", "CT")
    np.testing.assert_allclose(got.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(got.array, volume)
    assert any("gantry tilt" in w for w in got.warnings)


def test_monochrome1_pet_values_are_activity_not_inverted(tmp_path):
    activity = np.random.default_rng(4).uniform(0, 20000, (8, 8, 4)).astype(np.float32)
    _write(tmp_path / "pet", activity, _affine(spacing=(4.0, 4.0, 3.0)), modality="PT", photometric="MONOCHROME1")
    got = read_series(tmp_path / "pet", "PT")
    assert str(got.headers[0].PhotometricInterpretation) == "MONOCHROME1"
    # per-slice 16-bit scaling: within half a quantisation step of each slice, never inverted
    step = activity.max(axis=(0, 1)) / 32767
    assert np.all(np.abs(got.array - activity) <= step / 2 + 1e-3)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=["rle", "jpeg2000", "jpegls"])
def test_compressed_ct_series_decoded(tmp_path, syntax):
    volume = _ct(shape=(64, 48, 3))  # JPEG 2000 needs some 32 pixels a side for its default resolutions
    _write(tmp_path / "ct", volume, _affine(), transfer_syntax=syntax)
    got = read_series(tmp_path / "ct", "CT")
    assert str(got.headers[0].file_meta.TransferSyntaxUID) == syntax
    np.testing.assert_array_equal(got.array, volume)


def test_not_a_folder_and_an_empty_folder(tmp_path):
    with pytest.raises(DicomError, match="not a folder"):
        find_series(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomError, match="no CT series; found: no CT or PET image series"):
        read_series(tmp_path / "empty", "CT")
