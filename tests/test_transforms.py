"""Specification of the transforms: loading, orientation, intensities, masks, checks, presets."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, PILWriter
from monai.transforms import Compose
from PIL import Image

from cocoseg_monai.data import DataError
from cocoseg_monai.transforms import (
    INTENSITY_UNIT_KEY,
    UNIT_DISPLAY,
    BinarizeMask,
    BinarizeMaskd,
    CheckFinite,
    CheckSameSpatialShaped,
    DecodePNGIntensity,
    DecodePNGIntensityd,
    LoadImageChecked,
    LoadImageCheckedd,
    WindowIntensity,
    WindowIntensityd,
    get_infer_transforms,
    get_preprocess_transforms,
    get_train_transforms,
    get_val_transforms,
)

# ------------------------------------------------------------------------------------ helpers


def _save_png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def _save_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


def _png_item(tmp_path: Path, ct_hu: np.ndarray, pet_suv: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """A PNG triplet encoded as the project specifies: CT HU + 1024, PET SUV * 1000, mask 0/255."""
    item = {
        "image": _save_png(tmp_path / "CT" / "patient_001_slice_0.png", (ct_hu + 1024).astype(np.uint16)),
        "pet": _save_png(tmp_path / "PET" / "patient_001_slice_0.png", np.round(pet_suv * 1000).astype(np.uint16)),
        "patient": "001",
    }
    if mask is not None:
        item["label"] = _save_png(tmp_path / "masks" / "patient_001_slice_0.png", mask.astype(np.uint8))
    return item


def _data_error(excinfo) -> DataError:
    """The DataError behind an exception (MONAI's Compose wraps errors in RuntimeError)."""
    e: BaseException | None = excinfo.value
    while e is not None and not isinstance(e, DataError):
        e = e.__cause__
    assert e is not None, f"no DataError in the chain of {excinfo.value!r}"
    return e


def _meta(array, **meta) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32), meta=meta)


# ------------------------------------------------------------------------------------ loading


def test_png_loads_x_first_so_array_index_is_column_then_row(tmp_path):
    rows = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)  # 2 rows (H) x 3 columns (W)
    img = LoadImageChecked("png")(_save_png(tmp_path / "a.png", rows))
    assert img.shape == (1, 3, 2)  # [1, W, H]
    assert img[0, 2, 0] == 3  # column 2, row 0
    assert img[0, 0, 1] == 4  # column 0, row 1
    np.testing.assert_array_equal(img[0].numpy(), rows.T)


def test_png_orientation_is_the_same_for_ct_pet_and_mask_after_preprocessing(tmp_path):
    hu = np.array([[-1000, 0, 1000], [0, 0, 0]])
    mask = np.array([[0, 0, 255], [0, 0, 0]])
    out = get_val_transforms(ct_window=(-1000, 1000))(_png_item(tmp_path, hu, np.where(hu > 0, 20.0, 0.0), mask))
    assert out["image"].shape == (2, 3, 2) and out["label"].shape == (1, 3, 2)
    np.testing.assert_array_equal(out["image"][0].numpy(), [[0, 0.5], [0.5, 0.5], [1, 0.5]])
    np.testing.assert_array_equal(out["image"][1].numpy(), [[0, 0], [0, 0], [1, 0]])
    np.testing.assert_array_equal(out["label"][0].numpy(), [[0, 0], [0, 0], [1, 0]])


def test_prediction_saved_with_monai_pilwriter_matches_the_input_png(tmp_path):
    mask = np.zeros((5, 7), np.uint8)
    mask[1, 2:6] = 255  # asymmetric: a horizontal bar in row 1
    item = _png_item(tmp_path, np.zeros((5, 7)), np.zeros((5, 7)), mask)
    label = get_val_transforms()(item)["label"]
    writer = PILWriter(output_dtype=np.uint8)
    writer.set_data_array((label * 255).to(torch.uint8), channel_dim=0)
    writer.write(tmp_path / "pred.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "pred.png")), mask)


def test_16bit_png_keeps_16bit_values(tmp_path):
    values = np.array([[0, 1024, 40000, 65535]], np.uint16)
    img = LoadImageChecked("png")(_save_png(tmp_path / "a.png", values))
    assert img.dtype == torch.float32
    np.testing.assert_array_equal(img[0, :, 0].numpy(), [0, 1024, 40000, 65535])
    assert img.meta["mode"].startswith("I;16")


def test_colour_png_is_read_as_one_grey_channel(tmp_path):
    grey = np.array([[10, 200]], np.uint8)
    img = LoadImageChecked("png")(_save_png(tmp_path / "rgb.png", np.stack([grey] * 3, axis=-1)))
    assert img.shape == (1, 2, 1)
    np.testing.assert_array_equal(img[0, :, 0].numpy(), [10, 200])


def test_missing_file_raises_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"image file .*gone\.png does not exist"):
        LoadImageChecked("png")(str(tmp_path / "gone.png"))


def test_truncated_png_raises_naming_the_file(tmp_path):
    path = tmp_path / "CT" / "patient_001_slice_0.png"
    noise = np.random.default_rng(0).integers(0, 65535, (32, 32)).astype(np.uint16)  # incompressible
    _save_png(path, noise)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"cannot read image file .*patient_001_slice_0\.png"):
        LoadImageCheckedd(keys="image", image_format="png")({"image": str(path)})


def test_unreadable_nifti_raises_naming_the_file(tmp_path):
    path = tmp_path / "patient_001.nii.gz"
    path.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(DataError, match=r"key 'pet': cannot read image file .*patient_001\.nii\.gz"):
        LoadImageCheckedd(keys="pet", image_format="nifti")({"pet": str(path)})


def test_building_loaders_does_not_report_monais_unused_nvimagecodec_fallback(recwarn, caplog):
    import logging
    import warnings

    caplog.set_level(logging.DEBUG)
    for image_format in ("png", "nifti", "dicom"):
        get_train_transforms(image_format, patch_size=(8, 8))
        get_infer_transforms(image_format)
    assert not [str(w.message) for w in recwarn if "nvImageCodec" in str(w.message)]
    assert not [r.getMessage() for r in caplog.records if "nvImageCodec" in r.getMessage()]
    # only those two messages are dropped: another warning or record of the same modules still shows
    warnings.warn_explicit("NvImgCodecPydicomReader: something else", UserWarning, "image_reader.py", 1,
                           module="monai.data.image_reader")  # fmt: skip
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").warning("nvImageCodec: something else")
    assert [str(w.message) for w in recwarn] == ["NvImgCodecPydicomReader: something else"]
    assert [r.getMessage() for r in caplog.records if "nvImageCodec" in r.getMessage()] == ["nvImageCodec: something else"]


# ------------------------------------------------------------------------------------ intensities


def test_decode_16bit_ct_png_to_hu():
    out = DecodePNGIntensity(offset=1024, unit="HU")(_meta([[[0, 1024, 3024]]], mode="I;16"))
    np.testing.assert_array_equal(out.numpy(), [[[-1024, 0, 2000]]])
    assert out.meta[INTENSITY_UNIT_KEY] == "HU"


def test_decode_16bit_pet_png_to_suv():
    out = DecodePNGIntensity(scale=1000, unit="SUV")(_meta([[[0, 2500, 20000]]], mode="I;16"))
    np.testing.assert_allclose(out.numpy(), [[[0.0, 2.5, 20.0]]])
    assert out.meta[INTENSITY_UNIT_KEY] == "SUV"


def test_decode_8bit_png_to_display_range_without_units():
    out = DecodePNGIntensity(offset=1024, unit="HU")(_meta([[[0, 51, 255]]], mode="L"))
    np.testing.assert_allclose(out.numpy(), [[[0.0, 0.2, 1.0]]])
    assert out.meta[INTENSITY_UNIT_KEY] == UNIT_DISPLAY


def test_decode_without_bit_depth_information_raises():
    with pytest.raises(DataError, match="cannot tell the PNG bit depth"):
        DecodePNGIntensity()(torch.zeros(1, 2, 2))


def test_decode_dict_form_applies_per_key_parameters():
    d = {"image": _meta([[[1024]]], mode="I;16"), "pet": _meta([[[1000]]], mode="I;16")}
    out = DecodePNGIntensityd(keys=("image", "pet"), offset=(1024, 0), scale=(1, 1000), unit=("HU", "SUV"))(d)
    assert (out["image"].item(), out["pet"].item()) == (0.0, 1.0)


def test_window_ct_clips_and_scales_hu_to_unit_range():
    out = WindowIntensity(-1000, 1000)(torch.tensor([[-2000.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0]]))
    np.testing.assert_allclose(out.numpy(), [[0.0, 0.0, 0.5, 0.75, 1.0, 1.0]])
    assert out.dtype == torch.float32


def test_window_pet_clips_suv_at_suv_max():
    out = WindowIntensityd(keys="pet", a_min=0.0, a_max=20.0)({"pet": torch.tensor([[-1.0, 0.0, 5.0, 20.0, 35.0]])})
    np.testing.assert_allclose(out["pet"].numpy(), [[0.0, 0.0, 0.25, 1.0, 1.0]])


def test_window_leaves_8bit_display_images_unwindowed():
    display = _meta([[0.0, 0.2, 1.0]], **{INTENSITY_UNIT_KEY: UNIT_DISPLAY})
    np.testing.assert_allclose(WindowIntensity(-1000, 1000)(display).numpy(), [[0.0, 0.2, 1.0]])


def test_png_pipeline_maps_16bit_values_to_windowed_channels(tmp_path):
    hu = np.array([[-1024, -1000, 0], [500, 1000, 2000]])
    suv = np.array([[0.0, 1.0, 5.0], [10.0, 20.0, 30.0]])
    out = get_val_transforms(ct_window=(-1000, 1000))(_png_item(tmp_path, hu, suv, np.zeros((2, 3))))
    np.testing.assert_allclose(out["image"][0].numpy().T, [[0.0, 0.0, 0.5], [0.75, 1.0, 1.0]])
    np.testing.assert_allclose(out["image"][1].numpy().T, [[0.0, 0.05, 0.25], [0.5, 1.0, 1.0]], atol=1e-6)


def test_png_pipeline_scales_8bit_ct_and_pet_by_255_without_windowing(tmp_path):
    item = {
        "image": _save_png(tmp_path / "ct.png", np.array([[0, 51, 255]], np.uint8)),
        "pet": _save_png(tmp_path / "pet.png", np.array([[255, 102, 0]], np.uint8)),
        "label": _save_png(tmp_path / "m.png", np.zeros((1, 3), np.uint8)),
    }
    out = get_val_transforms()(item)
    np.testing.assert_allclose(out["image"][:, :, 0].numpy(), [[0.0, 0.2, 1.0], [1.0, 0.4, 0.0]])


def test_png_pipeline_honours_custom_encoding_and_window(tmp_path):
    ct = _save_png(tmp_path / "ct.png", np.array([[0, 100]], np.uint16))  # HU = value - 0
    pet = _save_png(tmp_path / "pet.png", np.array([[0, 100]], np.uint16))  # SUV = value / 10
    out = get_infer_transforms(ct_window=(0, 200), suv_max=20, ct_png_offset=0, pet_png_scale=10)(
        {"image": ct, "pet": pet})
    np.testing.assert_allclose(out["image"][:, :, 0].numpy(), [[0.0, 0.5], [0.0, 0.5]])


def test_concat_puts_ct_first_and_removes_pet_key(tmp_path):
    out = get_val_transforms()(_png_item(tmp_path, np.full((2, 2), 1000), np.zeros((2, 2)), np.zeros((2, 2))))
    assert "pet" not in out
    assert out["image"][0].min() == 1.0 and out["image"][1].max() == 0.0
    assert out["image"].meta["filename_or_obj"].endswith("CT/patient_001_slice_0.png")


# ------------------------------------------------------------------------------------ masks


def test_binarize_maps_255_to_1():
    np.testing.assert_array_equal(BinarizeMask()(torch.tensor([[0.0, 255.0]])).numpy(), [[0.0, 1.0]])


def test_binarize_keeps_0_1_mask():
    out = BinarizeMaskd()({"label": torch.tensor([[1.0, 0.0]])})["label"]
    np.testing.assert_array_equal(out.numpy(), [[1.0, 0.0]])
    assert out.dtype == torch.float32


def test_binarize_unexpected_values_raise_naming_file_and_values():
    mask = _meta([[0, 1, 2, 255]], filename_or_obj="/data/masks/patient_001_slice_3.png")
    with pytest.raises(DataError, match=r"patient_001_slice_3\.png holds unexpected values \[2\]"):
        BinarizeMask()(mask)


def test_binarize_mask_mixing_1_and_255_is_ambiguous():
    with pytest.raises(DataError, match=r"unexpected values \[1, 255\]"):
        BinarizeMask()(torch.tensor([[0.0, 1.0, 255.0]]))


def test_binarize_label_mapping_maps_every_value():
    out = BinarizeMask(label_mapping={"0": 0, "1": 1, "2": 1, "3": 0})(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(out.numpy(), [[0.0, 1.0, 1.0, 0.0]])


def test_binarize_label_mapping_with_unmapped_value_raises():
    with pytest.raises(DataError, match=r"values \[7\] that label_mapping"):
        BinarizeMask(label_mapping={0: 0, 1: 1})(torch.tensor([[0.0, 7.0]]))


def test_png_mask_with_unexpected_values_fails_in_the_pipeline_naming_the_mask(tmp_path):
    item = _png_item(tmp_path, np.zeros((2, 2)), np.zeros((2, 2)), np.array([[0, 128], [0, 0]]))
    with pytest.raises(RuntimeError) as excinfo:
        get_val_transforms()(item)
    assert "masks/patient_001_slice_0.png holds unexpected values [128]" in str(_data_error(excinfo))


# ------------------------------------------------------------------------------------ checks


def test_png_size_mismatch_raises_naming_files_and_shapes(tmp_path):
    item = _png_item(tmp_path, np.zeros((4, 6)), np.zeros((3, 6)), np.zeros((4, 6)))
    with pytest.raises(RuntimeError) as excinfo:
        get_val_transforms()(item)
    message = str(_data_error(excinfo))
    assert "spatial sizes differ" in message
    assert "'image' " + item["image"] + " spatial shape (6, 4)" in message
    assert "'pet' " + item["pet"] + " spatial shape (6, 3)" in message


def test_check_same_spatial_shape_passes_matching_items():
    d = {"image": torch.zeros(1, 4, 5), "label": torch.zeros(1, 4, 5)}
    assert CheckSameSpatialShaped(keys=("image", "label"))(d).keys() == d.keys()


def test_nan_in_volume_raises_naming_the_file():
    with pytest.raises(DataError, match=r"ct\.nii\.gz holds 1 NaN and 0 inf"):
        CheckFinite()(_meta([[[0.0, float("nan")]]], filename_or_obj="ct.nii.gz"))


def test_inf_in_nifti_volume_fails_the_pipeline_naming_the_file(tmp_path):
    pet = np.ones((4, 4, 2), np.float32)
    pet[0, 0, 0] = np.inf
    item = {
        "image": _save_nifti(tmp_path / "CT" / "patient_001.nii.gz", np.zeros((4, 4, 2), np.float32)),
        "pet": _save_nifti(tmp_path / "PET" / "patient_001.nii.gz", pet),
        "label": _save_nifti(tmp_path / "masks" / "patient_001.nii.gz", np.zeros((4, 4, 2), np.uint8)),
    }
    with pytest.raises(RuntimeError) as excinfo:
        get_val_transforms("nifti")(item)
    assert "key 'pet': " + item["pet"] + " holds 0 NaN and 1 inf" in str(_data_error(excinfo))


# ------------------------------------------------------------------------------------ volumes


def _volume_item(tmp_path: Path, label_shape=(8, 6, 4)) -> dict:
    """CT 8x6x4 at 1x1x2 mm; PET 4x3x2 at 2x2x4 mm over the same extent, PET value = world x."""
    ct = np.zeros((8, 6, 4), np.float32)
    pet_origin = (0.5, 0.5, 1.0)  # centre of PET voxel 0 in world mm (CT voxel centres at 0, 1, ...)
    pet = np.broadcast_to((pet_origin[0] + 2.0 * np.arange(4))[:, None, None], (4, 3, 2)).astype(np.float32)
    label = np.zeros(label_shape, np.uint8)
    label[2:4, 2:4, 1] = 1
    return {
        "image": _save_nifti(tmp_path / "CT" / "patient_001.nii.gz", ct, spacing=(1, 1, 2)),
        "pet": _save_nifti(tmp_path / "PET" / "patient_001.nii.gz", pet, spacing=(2, 2, 4), origin=pet_origin),
        "label": _save_nifti(tmp_path / "masks" / "patient_001.nii.gz", label, spacing=(1, 1, 2)),
        "patient": "001",
    }


def test_pet_is_resampled_onto_the_ct_grid(tmp_path):
    out = get_preprocess_transforms("nifti", suv_max=10.0, concat=False, axcodes=None)(_volume_item(tmp_path))
    assert out["pet"].shape == out["image"].shape == (1, 8, 6, 4)
    np.testing.assert_allclose(out["pet"].pixdim.numpy(), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(out["pet"].affine.numpy(), out["image"].affine.numpy())
    # PET = world x: linear interpolation reproduces it inside the PET extent (x = 1..6 mm)
    np.testing.assert_allclose(out["pet"][0, 1:7, 2, 1].numpy(), np.arange(1, 7) / 10.0, atol=1e-5)


def test_val_nifti_gives_whole_two_channel_volume_on_the_ct_grid(tmp_path):
    out = get_val_transforms("nifti")(_volume_item(tmp_path))
    assert out["image"].shape == (2, 8, 6, 4) and out["image"].dtype == torch.float32
    assert out["label"].shape == (1, 8, 6, 4) and out["label"].sum() == 4
    np.testing.assert_allclose(out["image"].pixdim.numpy(), [1.0, 1.0, 2.0])


def test_nifti_label_off_the_ct_grid_raises_naming_files_and_shapes(tmp_path):
    item = _volume_item(tmp_path, label_shape=(8, 6, 3))
    with pytest.raises(RuntimeError) as excinfo:
        get_val_transforms("nifti")(item)
    assert "'label' " + item["label"] + " spatial shape (8, 6, 3)" in str(_data_error(excinfo))


@pytest.mark.parametrize(
    "label_grid, label_described",
    [
        ({"spacing": (1, 1, 2), "origin": (5.0, 0.0, 0.0)}, "spacing [1.0, 1.0, 2.0] mm, origin [5.0, 0.0, 0.0] mm, axes RAS"),
        ({"spacing": (1.2, 1, 2), "origin": (0.0, 0.0, 0.0)}, "spacing [1.2, 1.0, 2.0] mm, origin [0.0, 0.0, 0.0] mm, axes RAS"),
    ],
    ids=["other-origin", "other-spacing"],
)
def test_nifti_label_of_the_ct_shape_on_another_grid_raises_naming_both_files_and_grids(tmp_path, label_grid,
                                                                                         label_described):
    item = _volume_item(tmp_path)
    _save_nifti(Path(item["label"]), nib.load(item["label"]).get_fdata().astype(np.uint8), **label_grid)
    for axcodes in ("LPS", None):
        with pytest.raises(RuntimeError) as excinfo:
            get_val_transforms("nifti", axcodes=axcodes)(item)
        message = str(_data_error(excinfo))
        assert f"'image' {item['image']} and 'label' {item['label']} have the same shape (8, 6, 4) but lie on " \
               "different grids in space" in message
        assert "'image' spacing [1.0, 1.0, 2.0] mm, origin [0.0, 0.0, 0.0] mm, axes RAS; " in message
        assert f"'label' {label_described}." in message


def test_nifti_label_on_the_ct_grid_within_header_rounding_or_stored_flipped_is_accepted(tmp_path):
    item = _volume_item(tmp_path)
    expected = get_val_transforms("nifti")(item)["label"]
    stored = nib.load(item["label"]).get_fdata().astype(np.uint8)
    _save_nifti(Path(item["label"]), stored, spacing=(1, 1, 2), origin=(1e-5, -1e-5, 0.0))  # float32 header noise
    torch.testing.assert_close(get_val_transforms("nifti")(item)["label"], expected)
    # the same voxels stored with x reversed (and an affine that says so): the same grid in space
    _save_nifti(Path(item["label"]), stored[::-1].copy(), spacing=(-1, 1, 2), origin=(7.0, 0.0, 0.0))
    torch.testing.assert_close(get_val_transforms("nifti")(item)["label"], expected)
    with pytest.raises(RuntimeError) as excinfo:  # ... unless nothing reorients it: its voxels would pair wrongly
        get_val_transforms("nifti", axcodes=None)(item)
    assert "axes LAS." in str(_data_error(excinfo))


def test_nifti_keeps_stored_voxel_order_without_axcodes(tmp_path):
    item = _volume_item(tmp_path)
    out = get_val_transforms("nifti", axcodes=None)(item)
    np.testing.assert_array_equal(out["label"][0].numpy(), nib.load(item["label"]).get_fdata())


def test_nifti_axcodes_reorients_ct_label_and_pet_together(tmp_path):
    item = _volume_item(tmp_path)  # stored RAS (positive diagonal affine)
    out = get_preprocess_transforms("nifti", suv_max=10.0, concat=False, axcodes="LPS")(item)
    stored = nib.load(item["label"]).get_fdata()
    np.testing.assert_array_equal(out["label"][0].numpy(), stored[::-1, ::-1, :])
    # PET = world x follows the flipped x axis: it now decreases along the first array axis
    np.testing.assert_allclose(out["pet"][0, 1:7, 2, 1].numpy(), np.arange(6, 0, -1) / 10.0, atol=1e-5)


def test_train_nifti_samples_2d_patches_from_slices(tmp_path):
    samples = get_train_transforms("nifti", patch_size=(4, 4), num_samples=3, augment=False)(_volume_item(tmp_path))
    assert len(samples) == 3
    for s in samples:
        assert s["image"].shape == (2, 4, 4) and s["label"].shape == (1, 4, 4)


# ------------------------------------------------------------------------------------ presets


def _lesion_png_item(tmp_path: Path) -> dict:
    mask = np.zeros((12, 10), np.uint8)
    mask[3:6, 4:7] = 255
    hu = np.linspace(-1500, 1500, 120).reshape(12, 10)
    return _png_item(tmp_path, hu, np.where(mask > 0, 8.0, 1.0), mask)


def test_train_png_gives_num_samples_patches_in_unit_range(tmp_path):
    samples = get_train_transforms(patch_size=(8, 8), num_samples=4)(_lesion_png_item(tmp_path))
    assert len(samples) == 4
    for s in samples:
        assert s["image"].shape == (2, 8, 8) and s["image"].dtype == torch.float32
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
        assert set(s["label"].unique().tolist()) <= {0.0, 1.0}


def test_train_positive_only_sampling_centres_patches_on_lesions(tmp_path):
    t = get_train_transforms(patch_size=(4, 4), num_samples=4, pos=1, neg=0, augment=False)
    for s in t(_lesion_png_item(tmp_path)):
        assert s["label"][0, 2, 2] == 1.0  # the centre of an even patch is its voxel size//2


def test_train_pads_slices_smaller_than_the_patch(tmp_path):
    samples = get_train_transforms(patch_size=(16, 16), num_samples=1)(_lesion_png_item(tmp_path))
    assert samples[0]["image"].shape == (2, 16, 16)


def test_train_transforms_are_reproducible_with_a_seed(tmp_path):
    item = _lesion_png_item(tmp_path)
    runs = []
    for _ in range(2):
        t = get_train_transforms(patch_size=(8, 8), num_samples=2)
        t.set_random_state(seed=123)
        runs.append(t(item))
    for a, b in zip(*runs):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_val_transforms_are_deterministic(tmp_path):
    item = _lesion_png_item(tmp_path)
    a, b = get_val_transforms()(item), get_val_transforms()(item)
    assert torch.equal(a["image"], b["image"])


def test_infer_transforms_need_no_label(tmp_path):
    item = _png_item(tmp_path, np.zeros((3, 5)), np.zeros((3, 5)))
    out = get_infer_transforms()(item)
    assert out["image"].shape == (2, 5, 3) and "label" not in out


def test_val_transforms_require_a_label(tmp_path):
    with pytest.raises(RuntimeError):
        get_val_transforms()(_png_item(tmp_path, np.zeros((2, 2)), np.zeros((2, 2))))


def test_unknown_image_format_raises():
    with pytest.raises(ValueError, match="image_format"):
        get_val_transforms("jpeg")


def test_presets_build_from_a_bundle_config():
    parser = ConfigParser({"train": {"_target_": "cocoseg_monai.transforms.get_train_transforms",
                                     "image_format": "nifti", "patch_size": [32, 32], "num_samples": 2,
                                     "ct_window": [-200, 300], "label_mapping": {"0": 0, "1": 1, "2": 1}}})
    assert isinstance(parser.get_parsed_content("train"), Compose)


def test_phantom_png_slice_and_nifti_slice_load_identically(tmp_path):
    from cocoseg_monai.data import find_pairs
    from cocoseg_monai.data.phantom import PhantomConfig, write_dataset

    write_dataset(tmp_path, patients=1, seed=7, fmt="both", config=PhantomConfig(size=48, slices=6))
    png_items = find_pairs(tmp_path / "png")
    volume = get_val_transforms("nifti")(find_pairs(tmp_path / "nifti")[0])  # default axcodes: LPS
    for k in (1, 3):
        item = next(i for i in png_items if i["image"].endswith(f"slice_{k + 1:04d}.png"))
        slice_ = get_val_transforms("png")(item)
        torch.testing.assert_close(slice_["image"][0], volume["image"][0, ..., k])  # CT channel
        torch.testing.assert_close(slice_["label"][0], volume["label"][0, ..., k])


def test_hotspot_sampling_map_marks_lesion_over_avid_over_background():
    from cocoseg_monai.transforms import HotspotSamplingMapd

    image = torch.zeros(2, 4, 3)
    image[1, 0, :] = 0.5  # avid PET row (SUV 10 at suv_max 20)
    image[1, 1, 0] = 0.1  # below the SUV 2.5 threshold (0.125)
    label = torch.zeros(1, 4, 3)
    label[0, 0, 2] = 1  # a lesion pixel inside the avid row
    out = HotspotSamplingMapd(threshold=0.125)({"image": image, "label": label})["sampling_map"]
    expected = torch.zeros(1, 4, 3, dtype=torch.uint8)
    expected[0, 0, :] = 1
    expected[0, 0, 2] = 2
    assert torch.equal(out, expected)


def test_train_patches_can_be_drawn_only_on_avid_non_lesion_pixels(tmp_path):
    # odds 0 : 1 : 0 -> every patch is centred on the avid, non-lesion square
    ct = np.full((32, 32), 1024, np.uint16)
    pet = np.zeros((32, 32), np.uint16)
    pet[20:24, 20:24] = 8000  # SUV 8, no lesion there
    mask = np.zeros((32, 32), np.uint8)
    mask[2:4, 2:4] = 255
    item = {k: _save_png(tmp_path / f"{k}.png", a) for k, a in (("image", ct), ("pet", pet), ("label", mask))}
    t = get_train_transforms("png", patch_size=(4, 4), num_samples=6, pos=0, hot=1, neg=0, augment=False)
    for patch in t(item):
        assert patch["image"][1].max() > 0.3 and patch["label"].sum() == 0
