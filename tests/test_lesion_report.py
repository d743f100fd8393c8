"""Lesion reports as files: the merge rule, the one-page picture (its numbers and colours match
the table), DICOM input to ``cocoseg report``, and ``cocoseg infer --report`` with ``cohort.csv``."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from cocoseg_monai.cli import main
from cocoseg_monai.errors import DataError
from cocoseg_monai.metrics.quantify import quantify
from cocoseg_monai.metrics.report import check_on_grid, report_study
from cocoseg_monai.visualize.report_page import lesion_colour, report_figure

from .conftest import write_tiny_run
from .test_quantify import _affine, _spheres

AFFINE = _affine(2.0, (-48.0, -32.0, -32.0))  # 48 x 32 x 32 voxels of 2 mm
TWO = [((-10.0, 0.0, 0.0), 6.0, 4.0), ((10.0, 0.0, 0.0), 6.0, 8.0)]  # surfaces 8 mm apart (voxel centres -4, +4)


@pytest.mark.parametrize("merge_mm, count", [(0.0, 2), (6.0, 2), (8.0, 1), (10.0, 1)])
def test_merge_joins_components_whose_voxels_come_within_the_distance(merge_mm, count):
    label, pet = _spheres((48, 32, 32), AFFINE, TWO)
    report = quantify(nib.Nifti1Image(label, AFFINE), nib.Nifti1Image(pet, AFFINE), merge_mm=merge_mm)
    assert report.lesion_count == count
    assert report.tmtv_ml == pytest.approx(label.sum() * 0.008)  # merging adds no voxel
    assert report.definitions["merge_mm"] == merge_mm
    assert (f"within {merge_mm:g} mm" in report.definitions["lesion"]) == (merge_mm > 0)
    if count == 1:
        only = report.lesions[0]
        assert only.suvmax == 8.0 and only.voxels == label.sum() and report.dmax_mm == 0.0
    else:
        assert report.dmax_mm == pytest.approx(20.0)


def test_merge_rejects_a_negative_distance():
    label, pet = _spheres((48, 32, 32), AFFINE, TWO)
    with pytest.raises(ValueError, match="merge_mm must be a number >= 0"):
        quantify(nib.Nifti1Image(label, AFFINE), nib.Nifti1Image(pet, AFFINE), merge_mm=-1.0)


def _ct(label: np.ndarray) -> np.ndarray:
    """A CT of the label's shape: soft tissue in a box, air around it."""
    ct = np.full(label.shape, -1000, np.int16)
    ct[4:-4, 4:-4, :] = 40
    return ct


def test_the_page_numbers_each_lesion_in_its_table_colour(tmp_path):
    import matplotlib.pyplot as plt

    spheres = [((-30.0, 0.0, 0.0), 5.0, 4.0), ((0.0, 0.0, 10.0), 7.0, 9.0), ((26.0, 4.0, -10.0), 4.0, 6.0)]
    label, pet = _spheres((48, 32, 32), AFFINE, spheres)
    pet_affine = _affine(4.0, (-47.0, -31.0, -31.0))  # a coarser PET grid, as scanners make it
    pet_img = nib.Nifti1Image(pet[::2, ::2, ::2].copy(), pet_affine)
    ct_img = nib.Nifti1Image(_ct(label), AFFINE)
    report = quantify(nib.Nifti1Image(label, AFFINE), pet_img)
    assert report.lesion_count == 3
    fig = report_figure(report, pet_img, ct_img=ct_img, title="two spheres")
    try:
        axes = {ax.get_label(): ax for ax in fig.axes}
        numbers = {t.get_text(): t.get_color() for t in axes["mip"].texts}
        assert numbers == {str(r.id): lesion_colour(r.id) for r in report.lesions}
        table = axes["table"].tables[0]
        rows = [(table[i, 0].get_text().get_text(), table[i, 0].get_text().get_color()) for i in range(1, 4)]
        assert rows == [(str(r.id), lesion_colour(r.id)) for r in report.lesions]
        assert [table[i, 2].get_text().get_text() for i in range(1, 4)] == [f"{r.suvmax:.2f}" for r in report.lesions]
        # the three largest lesions, largest first, each in its axial panel
        largest = sorted(report.lesions, key=lambda r: -r.volume_ml)
        titles = [axes[f"axial{k}"].get_title() for k in (1, 2, 3)]
        assert [t.split(":")[0] for t in titles] == [f"lesion {r.id}" for r in largest]
        assert all("PET/CT" in t for t in titles)
    finally:
        plt.close(fig)


def test_report_study_writes_the_three_files_and_an_empty_label_gives_zero_lesions(tmp_path):
    label, pet = _spheres((48, 32, 32), AFFINE, [])
    ct_img = nib.Nifti1Image(_ct(label), AFFINE)
    report = report_study(nib.Nifti1Image(label, AFFINE), nib.Nifti1Image(pet, AFFINE), tmp_path / "r",
                          ct_img=ct_img, title="empty")
    assert report.lesion_count == 0 and report.tmtv_ml == 0.0 and report.suvmax is None
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["lesions.csv", "report.png", "study.json"]
    assert list(csv.reader((tmp_path / "r" / "lesions.csv").open()))[1:] == []
    from PIL import Image

    assert Image.open(tmp_path / "r" / "report.png").size == (935, 1210)


def test_a_label_stored_in_another_axis_order_is_on_the_ct_grid_and_a_shifted_one_is_not():
    ct = nib.Nifti1Image(np.zeros((10, 12, 5), np.int16), AFFINE)
    # new index (i, j, k) is the CT's (9 - i, k, j): axes 2 and 3 swapped, axis 1 reversed, same voxels
    reorder = np.array([[-1, 0, 0, 9], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    check_on_grid(nib.Nifti1Image(np.zeros((10, 5, 12), np.uint8), AFFINE @ reorder), ct, "a", "b")
    shifted = nib.Nifti1Image(np.zeros((10, 12, 5), np.uint8), _affine(2.0, (-47.0, -32.0, -32.0)))
    with pytest.raises(DataError, match=r"label a .* is not on the grid of CT b"):
        check_on_grid(shifted, ct, "a", "b")
    with pytest.raises(DataError, match=r"label a \(shape \(10, 5, 12\)\)"):
        check_on_grid(nib.Nifti1Image(np.zeros((10, 5, 12), np.uint8), AFFINE), ct, "a", "b")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two phantom studies as a {CT,PET,masks} NIfTI folder, the first also as DICOM series."""
    from cocoseg_monai.data.phantom import PhantomConfig, generate_patient, write_study_dicom, write_study_nifti

    root = tmp_path_factory.mktemp("report_studies")
    config = PhantomConfig(size=48, slices=8)
    for index in (1, 2):
        study = generate_patient(index, seed=5, config=config)
        name = f"patient_{index:03d}.nii.gz"
        write_study_nifti(study, root / "nifti" / "CT" / name, root / "nifti" / "PET" / name,
                          root / "nifti" / "masks" / name)
        if index == 1:
            write_study_dicom(study, root / "dicom")
    return root


def test_cocoseg_report_on_dicom_series_matches_the_report_on_their_nifti(studies, tmp_path):
    pytest.importorskip("highdicom", reason="highdicom (a package dependency) is not installed")
    label = str(studies / "nifti" / "masks" / "patient_001.nii.gz")
    assert main(["report", "--ct", str(studies / "dicom" / "CT"), "--pet", str(studies / "dicom" / "PET"),
                 "--label", label, "--out", str(tmp_path / "dicom")]) == 0
    assert main(["report", "--ct", str(studies / "nifti" / "CT" / "patient_001.nii.gz"),
                 "--pet", str(studies / "nifti" / "PET" / "patient_001.nii.gz"), "--label", label,
                 "--out", str(tmp_path / "nifti")]) == 0
    from_dicom, from_nifti = (json.loads((tmp_path / k / "study.json").read_text()) for k in ("dicom", "nifti"))
    assert from_dicom["lesion_count"] == from_nifti["lesion_count"] > 0
    assert from_dicom["tmtv_ml"] == pytest.approx(from_nifti["tmtv_ml"], rel=1e-6)
    for a, b in zip(from_dicom["lesions"], from_nifti["lesions"]):
        # the DICOM PET holds the SUV in 16 bits per slice: within half a step (1e-3 relative)
        for key in ("suvmax", "suvmean", "suvpeak"):
            assert a[key] == pytest.approx(b[key], rel=1e-3)
        assert a["centroid_mm"] == pytest.approx(b["centroid_mm"], abs=1e-3)
    assert from_dicom["pet_file"] == str(studies / "dicom" / "PET") and from_dicom["ct_file"].endswith("CT")
    assert (tmp_path / "dicom" / "report.png").is_file()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_tiny_run(tmp_path_factory.mktemp("run"), target_spacing=[7.0, 7.0], slice_size=[64, 64])


def test_infer_report_writes_a_report_per_study_beside_its_label_and_a_cohort_table(studies, run, tmp_path):
    out = tmp_path / "pred"
    assert main(["infer", "--run", str(run), "--dataset_root", str(studies / "nifti"), "--output_dir", str(out),
                 "--report", "--min_volume_ml", "0.01"]) == 0
    rows = list(csv.DictReader((out / "cohort.csv").open()))
    assert [r["study"] for r in rows] == ["patient_001", "patient_002"]
    for row in rows:
        folder = out / row["report"]
        assert folder.name == f"{row['study']}_report"
        assert sorted(p.name for p in folder.iterdir()) == ["lesions.csv", "report.png", "study.json"]
        study = json.loads((folder / "study.json").read_text())
        # the report measures the label written beside it, on the PET file's own grid
        seg = out / f"{row['study']}_seg.nii.gz"
        assert study["label_file"] == str(seg)
        assert study["pet_file"] == str(studies / "nifti" / "PET" / f"{row['study']}.nii.gz")
        direct = quantify(nib.load(seg), nib.load(study["pet_file"]), min_volume_ml=0.01)
        assert study["lesion_count"] == direct.lesion_count == int(row["lesion_count"])
        assert study["tmtv_ml"] == pytest.approx(direct.tmtv_ml) and float(row["tmtv_ml"]) == pytest.approx(direct.tmtv_ml, rel=1e-5)
        assert study["definitions"]["min_volume_ml"] == 0.01
    assert any(int(r["lesion_count"]) > 0 for r in rows)  # the tiny random network marks some voxels


def test_infer_report_on_png_slices_is_refused_naming_what_it_needs(tiny_data, run, tmp_path):
    with pytest.raises(SystemExit, match="a lesion report needs a 3D study"):
        main(["infer", "--run", str(run), "--dataset_root", str(tiny_data), "--output_dir", str(tmp_path),
              "--report", "--png_spacing", "3.9", "3.9"])


def test_the_report_transform_reads_an_lps_affine_as_ras():
    from monai.data.utils import orientation_ras_lps

    from cocoseg_monai.metrics.report import _ras_affine

    ras = _affine(2.0, (-48.0, -32.0, -32.0))
    assert np.allclose(_ras_affine({"affine": ras, "space": "RAS"}), ras)
    assert np.allclose(_ras_affine({"affine": np.asarray(orientation_ras_lps(ras)), "space": "LPS"}), ras)


def test_the_figures_do_not_depend_on_how_label_and_pet_are_stored():
    """A scanner or converter may store the axes in another order or direction: the same voxels
    in the world give the same measurements (ids follow the label's array order)."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    spheres = [((-30.0, 0.0, 0.0), 5.0, 4.0), ((0.0, 0.0, 10.0), 7.0, 9.0), ((26.0, 4.0, -10.0), 4.0, 6.0)]
    label, pet = _spheres((48, 32, 32), AFFINE, spheres)
    label_img, pet_img = nib.Nifti1Image(label, AFFINE), nib.Nifti1Image(pet[::2, ::2, ::2].copy(), _affine(4.0, -47.0))

    def stored(img, codes):
        return img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(codes)))

    a = quantify(label_img, pet_img)
    b = quantify(stored(label_img, ("P", "L", "I")), stored(pet_img, ("S", "P", "R")))
    assert (a.lesion_count, a.tmtv_ml, a.suvmax, a.total_tlg) == pytest.approx((b.lesion_count, b.tmtv_ml, b.suvmax,
                                                                                b.total_tlg))
    assert a.dmax_mm == pytest.approx(b.dmax_mm)
    assert sorted(r.suvpeak for r in a.lesions) == pytest.approx(sorted(r.suvpeak for r in b.lesions))
    np.testing.assert_allclose(sorted(r.centroid_mm for r in a.lesions), sorted(r.centroid_mm for r in b.lesions),
                               atol=1e-6)
