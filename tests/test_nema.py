"""The NEMA IEC body phantom: its published geometry on the generator's grids, and the scoring of
the NEMA benchmark."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cocoseg_monai.bench.nema import score_nema
from cocoseg_monai.data.phantom.nema import NEMA_SPHERE_DIAMETERS_MM, nema_body_phantom, nema_config


@pytest.fixture(scope="module")
def phantom():
    return nema_body_phantom(4.0, nema_config(size=256))  # 1.95 mm pixels, 2 mm slices, PET 4 mm


def test_the_spheres_have_the_published_diameters_volumes_and_ring(phantom):
    assert [r["diameter_mm"] for r in phantom.records] == list(NEMA_SPHERE_DIAMETERS_MM)
    voxel_ml = float(np.prod(phantom.config.ct_spacing)) / 1000
    for record in phantom.records:
        exact = math.pi / 6 * record["diameter_mm"] ** 3 / 1000
        drawn = (phantom.spheres == record["sphere"]).sum() * voxel_ml
        assert drawn == pytest.approx(exact, rel=0.12)  # voxelisation of a 10 mm sphere on 2 mm voxels: a few %
        assert math.hypot(*record["centre_mm"][:2]) == pytest.approx(57.2, abs=0.01)
    assert phantom.config.pet_spacing == pytest.approx((4.0, 4.0, 4.0))


def test_activity_is_the_ratio_in_the_spheres_one_in_the_background_none_in_the_lung(phantom):
    from cocoseg_monai.data.phantom.nema import LUNG_INSERT_DIAMETER_MM

    # noise-free check on the ideal values: the blurred PET's means follow them
    largest = phantom.spheres == 6
    assert phantom.pet_suv[largest].max() == pytest.approx(4.0, rel=0.2)
    a = phantom.config.ct_affine
    x = a[0, 0] * np.arange(phantom.config.ct_shape[0]) + a[0, 3]
    y = a[1, 1] * np.arange(phantom.config.ct_shape[1]) + a[1, 3]
    z_index = int(np.argmax(phantom.label.sum(axis=(0, 1))))
    r2 = x[:, None] ** 2 + y[None, :] ** 2
    lung = r2 <= (LUNG_INSERT_DIAMETER_MM / 2 - 8) ** 2  # well inside the insert, away from the blur
    assert phantom.pet_suv[:, :, z_index][lung].mean() < 0.2
    assert phantom.ct_hu[:, :, z_index][lung].mean() == pytest.approx(-800, abs=30)
    background = (phantom.ct_hu > -100) & (phantom.ct_hu < 100) & (phantom.spheres == 0)
    assert np.median(phantom.pet_suv[background]) == pytest.approx(1.0, abs=0.1)


def test_the_nema_score_of_the_truth_is_perfect_and_of_a_stray_voxel_a_false_positive(phantom):
    truth = phantom.label > 0
    stray = truth.copy()
    stray[5, 5, 5] = True  # far from every sphere
    scored = score_nema(phantom, {"truth": truth, "stray": stray, "nothing": np.zeros_like(truth)})
    assert all(row["truth_dice"] == 1.0 and row["truth_detected"] for row in scored["spheres"])
    assert all(not row["nothing_detected"] and row["nothing_dice"] == 0.0 for row in scored["spheres"])
    assert scored["false_positive_ml"]["truth"] == 0.0
    assert scored["false_positive_ml"]["stray"] == pytest.approx(np.prod(phantom.config.ct_spacing) / 1000, abs=5e-4)  # to 0.001 mL
