"""Lesion measurements (:mod:`cocoseg_monai.metrics.quantify`) on constructed volumes whose answers
are known in closed form, on phantom studies, and through ``cocoseg report``."""

from __future__ import annotations

import csv
import itertools
import json
import math

import nibabel as nib
import numpy as np
import pytest

from cocoseg_monai.errors import DataError
from cocoseg_monai.metrics.quantify import SUVPEAK_RADIUS_MM, quantify, write_report


def _affine(spacing: float, origin: float | tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _centres_mm(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World position of every voxel centre, shape ``(*shape, 3)``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _spheres(shape, affine, spheres) -> tuple[np.ndarray, np.ndarray]:
    """Label (uint8) and PET (background 1) with each ``(centre_mm, radius_mm, suv)`` drawn in."""
    world = _centres_mm(shape, affine)
    label, pet = np.zeros(shape, np.uint8), np.ones(shape, np.float32)
    for centre, radius, suv in spheres:
        inside = np.linalg.norm(world - np.asarray(centre, float), axis=-1) <= radius
        label[inside], pet[inside] = 1, suv
    return label, pet


LABEL_AFFINE = _affine(2.0, -32.0)  # 2 mm voxels, voxel 16 at the world origin
SPHERE = ((0.0, 0.0, 0.0), 10.0, 5.0)  # larger than the 6.2 mm SUVpeak sphere


def test_the_suvpeak_radius_is_that_of_a_one_millilitre_sphere():
    assert SUVPEAK_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)
    assert 4 / 3 * math.pi * SUVPEAK_RADIUS_MM**3 == pytest.approx(1000.0)


def test_a_uniform_sphere_on_the_label_grid_has_exact_suv_and_its_voxel_volume():
    label, pet = _spheres((32, 32, 32), LABEL_AFFINE, [SPHERE])
    report = quantify(nib.Nifti1Image(label, LABEL_AFFINE), nib.Nifti1Image(pet, LABEL_AFFINE))
    assert report.lesion_count == 1
    lesion = report.lesions[0]
    assert lesion.suvmax == 5.0 and lesion.suvmean == 5.0 and lesion.suvpeak == 5.0
    assert lesion.voxels == int(label.sum())
    assert lesion.volume_ml == pytest.approx(label.sum() * 0.008)
    assert lesion.volume_ml == pytest.approx(4 / 3 * math.pi * 10.0**3 / 1000, rel=0.05)
    assert lesion.tlg == pytest.approx(5.0 * lesion.volume_ml)
    assert lesion.centroid_mm == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    assert lesion.extent_mm == pytest.approx((22.0, 22.0, 22.0))  # 11 voxels of 2 mm across
    assert lesion.slices == (11, 21)
    assert lesion.pet_voxels == lesion.voxels and not lesion.pet_nearest_centroid
    assert report.tmtv_ml == lesion.volume_ml and report.total_tlg == lesion.tlg and report.dmax_mm == 0.0


def test_suv_is_read_on_a_coarser_pet_grid_and_volume_on_the_label_grid():
    label, _ = _spheres((32, 32, 32), LABEL_AFFINE, [SPHERE])
    pet_affine = _affine(4.0, (-33.5, -29.5, -31.5))  # voxel centres at 0.5 mm off the label's
    _, pet = _spheres((17, 16, 16), pet_affine, [SPHERE])
    fine = quantify(nib.Nifti1Image(label, LABEL_AFFINE), nib.Nifti1Image(label.astype(np.float32), LABEL_AFFINE))
    report = quantify(nib.Nifti1Image(label, LABEL_AFFINE), nib.Nifti1Image(pet, pet_affine))
    lesion = report.lesions[0]
    assert lesion.suvmax == 5.0  # PET voxels lie fully inside: a value the scanner grid holds
    assert lesion.volume_ml == fine.lesions[0].volume_ml == pytest.approx(label.sum() * 0.008)
    assert 1.0 < lesion.suvmean <= 5.0
    assert 0 < lesion.pet_voxels < lesion.voxels  # fewer, larger PET voxels
    index = np.linalg.solve(pet_affine, [*lesion.suvmax_mm, 1.0])[:3]  # a PET voxel centre, holding 5
    assert index == pytest.approx(np.round(index)) and pet[tuple(np.round(index).astype(int))] == 5.0


def test_two_spheres_give_count_tmtv_dmax_and_the_hotter_suvmax():
    shape = (48, 32, 32)
    affine = _affine(2.0, (-48.0, -32.0, -32.0))
    label, pet = _spheres(shape, affine, [((-24.0, 0.0, 0.0), 8.0, 4.0), ((22.0, 2.0, 0.0), 6.0, 8.0)])
    report = quantify(nib.Nifti1Image(label, affine), nib.Nifti1Image(pet, affine))
    assert report.lesion_count == 2
    assert report.dmax_mm == pytest.approx(math.dist((-24, 0, 0), (22, 2, 0)), abs=1.0)  # half a voxel
    assert report.tmtv_ml == pytest.approx(sum(r.volume_ml for r in report.lesions))
    assert report.tmtv_ml == pytest.approx(label.sum() * 0.008)
    hot = next(r for r in report.lesions if r.suvmax == 8.0)
    assert report.suvmax == 8.0 and report.suvmax_lesion == hot.id
    assert math.dist(report.suvmax_mm, (22.0, 2.0, 0.0)) <= 6.0


@pytest.mark.parametrize("connectivity, corner, edge", [(26, 1, 1), (6, 2, 2)])
def test_connectivity_decides_whether_touching_voxels_are_one_lesion(connectivity, corner, edge):
    affine = _affine(2.0, 0.0)
    counts = []
    for second in ((2, 2, 2), (2, 2, 1)):  # touching at a corner, along an edge
        label = np.zeros((4, 4, 4), np.uint8)
        label[1, 1, 1] = label[second] = 1
        report = quantify(nib.Nifti1Image(label, affine), nib.Nifti1Image(label.astype(np.float32), affine),
                          connectivity=connectivity)
        counts.append(report.lesion_count)
    assert counts == [corner, edge]


def test_suvpeak_of_a_hot_spot_smaller_than_the_peak_sphere_is_the_mean_around_the_hottest_voxel():
    shape, affine = (15, 15, 15), _affine(2.0, 0.0)
    pet = np.ones(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    hot = (7, 7, 7)
    pet[hot], label[hot] = 10.0, 1
    for axis, step in itertools.product(range(3), (-1, 1)):
        neighbour = list(hot)
        neighbour[axis] += step
        pet[tuple(neighbour)], label[tuple(neighbour)] = 6.0, 1
    # by hand: the voxels whose centres lie within 6.2035 mm of the hottest voxel's centre
    # (2 mm grid: i^2 + j^2 + k^2 <= 9), i.e. the 7 hot voxels and the rest at background 1
    within = [d for d in itertools.product(range(-3, 4), repeat=3) if 4 * sum(v * v for v in d) <= 6.2035**2]
    expected = (10.0 + 6 * 6.0 + (len(within) - 7) * 1.0) / len(within)
    report = quantify(nib.Nifti1Image(label, affine), nib.Nifti1Image(pet, affine))
    lesion = report.lesions[0]
    assert len(within) == 123
    assert lesion.suvpeak == pytest.approx(expected)
    assert lesion.suvmax == 10.0 and lesion.suvmean == pytest.approx(46.0 / 7)


def test_a_lesion_smaller_than_a_pet_voxel_takes_the_pet_voxel_nearest_its_centroid():
    label = np.zeros((32, 32, 32), np.uint8)
    label[17, 17, 17] = 1  # world (2, 2, 2): no 8 mm PET voxel centre falls in this 2 mm voxel
    pet_affine = _affine(8.0, -36.0)  # centres at -36 + 8 i: 4 is nearest to 2
    pet = np.ones((9, 9, 9), np.float32)
    pet[5, 5, 5] = 7.0  # the PET voxel centred at (4, 4, 4)
    lesion = quantify(nib.Nifti1Image(label, LABEL_AFFINE), nib.Nifti1Image(pet, pet_affine)).lesions[0]
    assert lesion.pet_nearest_centroid and lesion.pet_voxels == 1
    assert lesion.suvmax == lesion.suvmean == 7.0 and lesion.suvmax_mm == (4.0, 4.0, 4.0)


def test_components_below_the_minimum_volume_are_dropped_and_counted():
    affine = _affine(2.0, (-48.0, -32.0, -32.0))
    label, pet = _spheres((48, 32, 32), affine, [((-24.0, 0.0, 0.0), 8.0, 4.0), ((22.0, 2.0, 0.0), 4.0, 8.0)])
    small = (label * (_centres_mm(label.shape, affine)[..., 0] > 0)).sum() * 0.008
    report = quantify(nib.Nifti1Image(label, affine), nib.Nifti1Image(pet, affine), min_volume_ml=1.0)
    assert report.lesion_count == 1 and report.dropped_components == 1
    assert report.dropped_volume_ml == pytest.approx(small) and small < 1.0
    assert report.suvmax == 4.0 and report.definitions["min_volume_ml"] == 1.0


def test_an_empty_label_gives_a_report_without_lesions():
    label = np.zeros((8, 8, 8), np.uint8)
    report = quantify(nib.Nifti1Image(label, LABEL_AFFINE), nib.Nifti1Image(label.astype(np.float32), LABEL_AFFINE))
    assert report.lesion_count == 0 and report.lesions == []
    assert report.tmtv_ml == 0.0 and report.total_tlg == 0.0 and report.dmax_mm == 0.0
    assert report.suvmax is None and report.suvmax_mm is None
    json.dumps(report.to_json())


def test_a_pet_that_does_not_overlap_the_label_is_refused():
    label, pet = _spheres((32, 32, 32), LABEL_AFFINE, [SPHERE])
    with pytest.raises(DataError, match="do not overlap"):
        quantify(nib.Nifti1Image(label, LABEL_AFFINE), nib.Nifti1Image(pet, _affine(2.0, 500.0)))


def test_a_label_that_is_not_3d_is_refused_with_its_shape():
    label = np.zeros((8, 8, 8, 2), np.uint8)
    with pytest.raises(DataError, match=r"3D volume, got shape \(8, 8, 8, 2\)"):
        quantify(nib.Nifti1Image(label, LABEL_AFFINE), nib.Nifti1Image(np.ones((8, 8, 8), np.float32), LABEL_AFFINE))


def test_phantom_lesion_volumes_match_the_reported_lesions(tmp_path):
    """The phantom's label is the union of its lesions' masks on the CT grid, and volumes are read
    on that grid, so there is no partial volume: a clearly separated lesion's volume matches
    exactly, up to the record's rounding (0.001 mL), except where the host-organ clip split off a
    stray voxel; the tolerance is therefore one CT voxel (0.183 mL). Lesions that overlap or touch
    another merge into one component and are left out of the comparison."""
    from cocoseg_monai.data.phantom import PhantomConfig, generate_patient, write_study_nifti

    config = PhantomConfig(size=64, slices=8)
    compared = 0
    for index in range(8):
        study = generate_patient(index, 0, config)
        ct, pet, label = (tmp_path / f"{name}_{index}.nii.gz" for name in ("ct", "pet", "label"))
        write_study_nifti(study, ct, pet, label)
        report = quantify(nib.load(label), nib.load(pet))
        voxel_ml = abs(np.linalg.det(study.ct_affine[:3, :3])) / 1000
        assert report.tmtv_ml == pytest.approx(study.label.sum() * voxel_ml)
        for record in study.lesions:
            centre = np.array(record["centre_mm"])
            others = [r for r in study.lesions if r is not record]
            if any(np.linalg.norm(centre - r["centre_mm"]) <= (record["diameter_mm"] + r["diameter_mm"]) / 2 + 10
                   for r in others):
                continue  # may touch or overlap another lesion
            nearest = min(report.lesions, key=lambda r: np.linalg.norm(np.array(r.centroid_mm) - centre))
            assert np.linalg.norm(np.array(nearest.centroid_mm) - centre) <= record["diameter_mm"] / 2
            assert nearest.volume_ml == pytest.approx(record["volume_ml"], abs=voxel_ml + 1e-3)
            compared += 1
    assert compared >= 6


def test_write_report_writes_one_csv_row_per_lesion_and_the_study_json(tmp_path):
    affine = _affine(2.0, (-48.0, -32.0, -32.0))
    label, pet = _spheres((48, 32, 32), affine, [((-24.0, 0.0, 0.0), 8.0, 4.0), ((22.0, 2.0, 0.0), 6.0, 8.0)])
    report = quantify(nib.Nifti1Image(label, affine), nib.Nifti1Image(pet, affine))
    csv_path, json_path = write_report(report, tmp_path / "out")
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["id"]) for r in rows] == [1, 2]
    assert float(rows[1]["suvmax"]) == pytest.approx(report.lesions[1].suvmax, rel=1e-6)
    assert rows[0]["volume_ml"] == f"{report.lesions[0].volume_ml:.6g}"
    study = json.loads(json_path.read_text())
    assert study["lesion_count"] == 2 and study["tmtv_ml"] == pytest.approx(report.tmtv_ml)
    assert study["definitions"]["connectivity"] == 26 and len(study["lesions"]) == 2
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left


def _write(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


def test_cocoseg_report_writes_the_files_and_prints_a_line_per_lesion(tmp_path, capsys):
    from cocoseg_monai.cli import main

    label, pet = _spheres((32, 32, 32), LABEL_AFFINE, [SPHERE])
    args = ["report", "--pet", _write(tmp_path / "pet.nii.gz", pet, LABEL_AFFINE),
            "--label", _write(tmp_path / "label.nii.gz", label, LABEL_AFFINE),
            "--ct", _write(tmp_path / "ct.nii.gz", np.zeros(label.shape, np.int16), LABEL_AFFINE),
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lesion 1:" in out and "SUVmax 5.00" in out and "1 lesions" in out
    assert (tmp_path / "out" / "lesions.csv").is_file() and (tmp_path / "out" / "study.json").is_file()


def test_cocoseg_report_refuses_a_label_off_the_ct_grid_naming_both_files(tmp_path):
    from cocoseg_monai.cli import main

    label, pet = _spheres((32, 32, 32), LABEL_AFFINE, [SPHERE])
    label_path = _write(tmp_path / "label.nii.gz", label, LABEL_AFFINE)
    ct_path = _write(tmp_path / "ct.nii.gz", np.zeros((32, 32, 32), np.int16), _affine(2.0, -30.0))
    with pytest.raises(SystemExit) as raised:
        main(["report", "--pet", _write(tmp_path / "pet.nii.gz", pet, LABEL_AFFINE), "--label", label_path,
              "--ct", ct_path, "--out", str(tmp_path / "out")])
    message = str(raised.value)
    assert label_path in message and ct_path in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_phantom_lesion_suvmax_is_a_pet_voxel_at_or_above_the_records_interpolated_maximum():
    """The phantom records each lesion's SUVmax on the CT grid, where the PET reaches it by
    (linear) interpolation from the scanner's coarser grid; the report reads SUVmax on that
    coarser grid itself. Interpolation only lowers maxima, so the report's SUVmax is at least the
    record's, and the excess is the smoothing of one interpolation step: within 20 % for lesions
    at least three PET voxels across (17.6 mm on the default grids; smaller lesions also lose the
    PET voxel holding their maximum to a neighbour, partial volume in the other direction).
    Lesions that may touch another are left out of the comparison."""
    from cocoseg_monai.data.phantom import PhantomConfig, generate_patient

    config = PhantomConfig(size=128, slices=16)  # the default grids: CT 3.9 mm, PET 5.9 mm in-plane
    min_diameter = 3 * config.pet_spacing[0]
    ratios = []
    for index in range(10):
        study = generate_patient(index, 0, config)
        if not study.lesions:
            continue
        report = quantify(nib.Nifti1Image(study.label, study.ct_affine),
                          nib.Nifti1Image(study.pet_suv_coarse, study.pet_affine))
        for record in study.lesions:
            centre = np.array(record["centre_mm"])
            others = [r for r in study.lesions if r is not record]
            if record["diameter_mm"] < min_diameter or any(
                    np.linalg.norm(centre - r["centre_mm"]) <= (record["diameter_mm"] + r["diameter_mm"]) / 2 + 10
                    for r in others):
                continue
            nearest = min(report.lesions, key=lambda r: np.linalg.norm(np.array(r.centroid_mm) - centre))
            ratios.append(nearest.suvmax / record["suv_max"])
    assert len(ratios) >= 8
    assert min(ratios) >= 0.995 and max(ratios) <= 1.2, ratios  # 0.995: the record's rounding to 0.01
