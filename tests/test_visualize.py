"""Pictures: overlays and PET MIPs exist with the expected size and show the masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cocoseg_monai.data.phantom import PhantomConfig, generate_patient
from cocoseg_monai.visualize import save_overlay, save_pet_mip


@pytest.fixture(scope="module")
def patient():
    config = PhantomConfig(size=64, slices=8)
    return next(p for p in (generate_patient(i, seed=3, config=config) for i in range(10)) if p.label.any())


def test_overlay_has_one_panel_per_image_of_the_requested_size(tmp_path, patient):
    k = int(patient.label.sum(axis=(0, 1)).argmax())
    ct = np.clip((patient.ct_hu[:, :, k] + 1000) / 2000, 0, 1)
    pet = np.clip(patient.pet_suv[:, :, k] / 20, 0, 1)
    mask = patient.label[:, :, k]
    out = save_overlay(ct, pet, mask, mask, tmp_path / "overlay.png", title="001", panel_px=128)
    with Image.open(out) as img:
        assert img.size == (4 * 128, 128)
        rgb = np.asarray(img.convert("RGB")).astype(int)
    # the truth panel holds green pixels, the prediction panel red ones
    truth_panel, pred_panel = rgb[:, 256:384], rgb[:, 384:]
    assert ((truth_panel[..., 1] - truth_panel[..., 0]) > 80).any()
    assert ((pred_panel[..., 0] - pred_panel[..., 1]) > 80).any()


def test_overlay_without_masks_has_two_panels(tmp_path):
    out = save_overlay(np.zeros((20, 30)), np.ones((20, 30)), None, None, tmp_path / "o.png", panel_px=64)
    with Image.open(out) as img:
        assert img.size == (128, 64)


def test_overlay_refuses_mismatched_shapes_naming_them(tmp_path):
    with pytest.raises(ValueError, match=r"pred shape \(3, 3\)"):
        save_overlay(np.zeros((4, 4)), np.zeros((4, 4)), None, np.zeros((3, 3)), tmp_path / "x.png")


def test_pet_mip_keeps_aspect_ratio_and_marks_lesions(tmp_path, patient):
    spacing = tuple(abs(float(v)) for v in np.diag(patient.ct_affine)[:3])
    out = save_pet_mip(patient.pet_suv, patient.label, tmp_path / "mip.png", spacing_mm=spacing, height_px=200)
    x_mm, z_mm = patient.pet_suv.shape[0] * spacing[0], patient.pet_suv.shape[2] * spacing[2]
    with Image.open(out) as img:
        assert img.size[1] == 200 and img.size[0] == pytest.approx(200 * x_mm / z_mm, abs=2)
        rgb = np.asarray(img.convert("RGB")).astype(int)
    assert ((rgb[..., 0] - rgb[..., 1]) > 80).any() == bool(patient.label.any())


def test_overlay_shows_anterior_at_the_top_and_the_patients_right_on_the_left(tmp_path):
    from cocoseg_monai.conventions import to_display

    # a slice as the phantom holds it, (x, y) with x to the patient's left and y anterior, grey
    # with a white mark in its anterior-right corner only; to_display defines where that is shown
    las = np.full((40, 20), 0.5, np.float32)  # wider than deep: a missing or swapped transpose would show
    las[2:8, 15:19] = 1.0  # x 2..7: the patient's right; y 15..18: anterior
    display = to_display(las)
    np.testing.assert_array_equal(np.argwhere(display == 1.0).min(0), [1, 2])  # rows 1..4 (top),
    np.testing.assert_array_equal(np.argwhere(display == 1.0).max(0), [4, 7])  # cols 2..7 (left)
    # the transforms hold that slice as MONAI loads the PNG to_display gives: y from anterior (LP)
    lps = las[:, ::-1]
    out = save_overlay(lps, np.zeros_like(lps), None, None, tmp_path / "o.png", panel_px=160)
    with Image.open(out) as img:
        ct_panel = np.asarray(img.convert("L")).astype(int)[:, :160]
    grey = abs(ct_panel - 128) < 20  # the drawn slice on a black figure (and the title's anti-aliasing)
    drawn_rows, drawn_cols = np.nonzero(grey.sum(1) > 40)[0], np.nonzero(grey.sum(0) > 20)[0]
    top, bottom, left, right = drawn_rows.min(), drawn_rows.max() + 1, drawn_cols.min(), drawn_cols.max() + 1
    assert (right - left) / (bottom - top) == pytest.approx(2.0, abs=0.1)  # 40 wide, 20 high
    inside = ct_panel[top:bottom, left:right]
    rows, cols = np.nonzero(inside > 230)
    # back in slice pixels (20 x 40): where `display` has its mark, give or take the resampling
    scale_r, scale_c = (bottom - top) / 20, (right - left) / 40
    assert 1 - 0.5 <= rows.min() / scale_r and (rows.max() + 1) / scale_r <= 5 + 0.5
    assert 2 - 0.5 <= cols.min() / scale_c and (cols.max() + 1) / scale_c <= 8 + 0.5
