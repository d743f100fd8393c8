"""Specification of data discovery: layouts, pairing, patient-level splits and datalists."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from cocoseg_monai.data import (
    DataError,
    build_datalist,
    detect_layout,
    find_pairs,
    load_datalist,
    split_by_patient,
    write_datalist,
)

MODALITIES = ("CT", "PET", "masks")


def _png_folder(folder: Path, patients=("001", "002"), slices=(0, 1), modalities=MODALITIES) -> Path:
    """Tiny valid PNG triplets: patient_{p}_slice_{s}.png in each modality folder."""
    for m in modalities:
        (folder / m).mkdir(parents=True, exist_ok=True)
        for p in patients:
            for s in slices:
                arr = np.zeros((3, 4), np.uint8 if m == "masks" else np.uint16)
                Image.fromarray(arr).save(folder / m / f"patient_{p}_slice_{s}.png")
    return folder


def _nifti_folder(folder: Path, patients=("001", "002"), suffix=".nii.gz", modalities=MODALITIES) -> Path:
    for m in modalities:
        (folder / m).mkdir(parents=True, exist_ok=True)
        for p in patients:
            nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), folder / m / f"patient_{p}{suffix}")
    return folder


def _items(patients, slices_per_patient=3):
    return [{"image": f"{p}_{s}", "pet": f"{p}_{s}", "label": f"{p}_{s}", "patient": p}
            for p in patients for s in range(slices_per_patient)]


# ------------------------------------------------------------------------------------ layouts


def test_detect_layout_presplit(tmp_path):
    _png_folder(tmp_path / "train")
    _png_folder(tmp_path / "val")
    assert detect_layout(tmp_path) == "presplit"


def test_detect_layout_runtime_for_png_modality_folders(tmp_path):
    _png_folder(tmp_path)
    assert detect_layout(tmp_path) == "runtime"


def test_detect_layout_volumes_for_nifti_modality_folders(tmp_path):
    _nifti_folder(tmp_path)
    assert detect_layout(tmp_path) == "volumes"


def test_detect_layout_datalist_for_json_file(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text("{}")
    assert detect_layout(path) == "datalist"


def test_detect_layout_missing_root_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        detect_layout(tmp_path / "nowhere")


def test_detect_layout_unknown_folder_raises_listing_contents(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no known layout.*images"):
        detect_layout(tmp_path)


# ------------------------------------------------------------------------------------ pairing


def test_find_pairs_png_items_have_contract_keys_and_absolute_paths(tmp_path):
    _png_folder(tmp_path, patients=("007",), slices=(0,))
    (item,) = find_pairs(tmp_path)
    assert set(item) == {"image", "pet", "label", "patient"}
    assert item["patient"] == "007"
    for key, folder in (("image", "CT"), ("pet", "PET"), ("label", "masks")):
        assert Path(item[key]).is_absolute()
        assert Path(item[key]) == (tmp_path / folder / "patient_007_slice_0.png").resolve()


def test_find_pairs_sorts_by_patient_then_numeric_slice(tmp_path):
    _png_folder(tmp_path, patients=("B-2", "A1"), slices=(10, 2, 9))
    order = [(i["patient"], Path(i["image"]).name.split("_slice_")[1]) for i in find_pairs(tmp_path)]
    assert order == [("A1", "2.png"), ("A1", "9.png"), ("A1", "10.png"),
                     ("B-2", "2.png"), ("B-2", "9.png"), ("B-2", "10.png")]


def test_find_pairs_nifti_volumes_one_item_per_patient(tmp_path):
    _nifti_folder(tmp_path, patients=("001", "002"))
    items = find_pairs(tmp_path)
    assert [i["patient"] for i in items] == ["001", "002"]
    assert items[0]["pet"].endswith("PET/patient_001.nii.gz")


def test_find_pairs_accepts_uncompressed_nii(tmp_path):
    _nifti_folder(tmp_path, patients=("x1",), suffix=".nii")
    assert find_pairs(tmp_path)[0]["patient"] == "x1"


def test_find_pairs_without_masks_when_labels_not_required(tmp_path):
    _png_folder(tmp_path, modalities=("CT", "PET"))
    items = find_pairs(tmp_path, require_labels=False)
    assert len(items) == 4 and all("label" not in i for i in items)


def test_find_pairs_missing_masks_folder_raises_when_labels_required(tmp_path):
    _png_folder(tmp_path, modalities=("CT", "PET"))
    with pytest.raises(DataError, match=r"lacks sub-folder\(s\) \['masks'\]"):
        find_pairs(tmp_path)


def test_find_pairs_missing_partner_names_file_and_folder(tmp_path):
    _png_folder(tmp_path)
    (tmp_path / "PET" / "patient_002_slice_1.png").unlink()
    with pytest.raises(DataError, match=r"1 file\(s\) missing in PET/: patient_002_slice_1\.png"):
        find_pairs(tmp_path)


def test_find_pairs_extra_mask_without_ct_and_pet_is_reported(tmp_path):
    _png_folder(tmp_path)
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "masks" / "patient_003_slice_0.png")
    with pytest.raises(DataError) as err:
        find_pairs(tmp_path)
    assert "missing in CT/: patient_003_slice_0.png" in str(err.value)
    assert "missing in PET/: patient_003_slice_0.png" in str(err.value)


def test_find_pairs_empty_modality_folder_raises(tmp_path):
    _png_folder(tmp_path, modalities=("CT", "PET"))
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"masks is empty"):
        find_pairs(tmp_path)


def test_find_pairs_bad_png_names_raise_with_expected_pattern(tmp_path):
    _png_folder(tmp_path)
    for m in MODALITIES:
        Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / m / "scan_1.png")
    with pytest.raises(DataError, match=r"scan_1\.png") as err:
        find_pairs(tmp_path)
    assert "patient_{ID}_slice_{num}.png" in str(err.value)


def test_find_pairs_id_with_underscore_is_a_bad_name(tmp_path):
    _png_folder(tmp_path, patients=("a_b",))
    with pytest.raises(DataError, match="patient_a_b_slice_0.png"):
        find_pairs(tmp_path)


def test_find_pairs_ignores_hidden_files(tmp_path):
    _png_folder(tmp_path)
    (tmp_path / "CT" / ".DS_Store").write_bytes(b"junk")
    assert len(find_pairs(tmp_path)) == 4


def test_find_pairs_mixed_png_and_nifti_raises(tmp_path):
    _png_folder(tmp_path)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "CT" / "patient_001.nii.gz")
    with pytest.raises(DataError, match="mixes PNG"):
        find_pairs(tmp_path)


def test_find_pairs_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_pairs(tmp_path / "nope")


# ------------------------------------------------------------------------------------ splits


def test_split_keeps_each_patient_in_one_split(tmp_path):
    split = split_by_patient(_items([f"{i:03d}" for i in range(10)]), val_ratio=0.2, test_ratio=0.2, seed=0)
    patients = {s: {i["patient"] for i in items} for s, items in split.items()}
    assert not patients["training"] & patients["validation"]
    assert not patients["training"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    assert sum(len(v) for v in split.values()) == 30
    assert (len(patients["training"]), len(patients["validation"]), len(patients["test"])) == (6, 2, 2)


def test_split_same_seed_same_split_whatever_the_listing_order():
    items = _items([f"{i:03d}" for i in range(10)])
    a = split_by_patient(items, seed=7)
    b = split_by_patient(list(reversed(items)), seed=7)
    for section in a:
        assert {i["patient"] for i in a[section]} == {i["patient"] for i in b[section]}


def test_split_different_seed_different_split():
    items = _items([f"{i:03d}" for i in range(20)])
    val = {seed: {i["patient"] for i in split_by_patient(items, seed=seed)["validation"]} for seed in (1, 2)}
    assert val[1] != val[2]


def test_split_small_ratio_still_gives_one_patient():
    split = split_by_patient(_items(["a", "b", "c"]), val_ratio=0.01, test_ratio=0.01)
    assert [len({i["patient"] for i in split[s]}) for s in ("training", "validation", "test")] == [1, 1, 1]


def test_split_zero_test_ratio_gives_empty_test():
    assert split_by_patient(_items(["a", "b"]), val_ratio=0.5)["test"] == []


def test_split_too_few_patients_raises():
    with pytest.raises(DataError, match=r"too few patients \(2\).*at least 3"):
        split_by_patient(_items(["a", "b"]), val_ratio=0.2, test_ratio=0.2)


@pytest.mark.parametrize(
    "val_ratio, test_ratio, message",
    [(0.0, 0.0, "val_ratio"), (1.0, 0.0, "val_ratio"), (0.2, -0.1, "test_ratio"), (0.2, 1.0, "test_ratio"),
     (0.5, 0.5, r"val_ratio \+ test_ratio")],
)
def test_split_invalid_ratios_raise(val_ratio, test_ratio, message):
    with pytest.raises(DataError, match=message):
        split_by_patient(_items(["a", "b", "c"]), val_ratio=val_ratio, test_ratio=test_ratio)


def test_split_items_without_patient_raise():
    with pytest.raises(DataError, match="'patient'"):
        split_by_patient([{"image": "x"}])


# ------------------------------------------------------------------------------------ datalists


def test_build_datalist_presplit_keeps_given_split(tmp_path):
    _png_folder(tmp_path / "train", patients=("001", "002"))
    _png_folder(tmp_path / "val", patients=("003",))
    _png_folder(tmp_path / "test", patients=("004",), modalities=("CT", "PET"))
    dl = build_datalist(tmp_path)
    assert {i["patient"] for i in dl["training"]} == {"001", "002"}
    assert {i["patient"] for i in dl["validation"]} == {"003"}
    assert {i["patient"] for i in dl["test"]} == {"004"}
    assert "label" not in dl["test"][0]
    assert (dl["layout"], dl["image_format"]) == ("presplit", "png")


def test_build_datalist_presplit_without_test_folder_has_empty_test(tmp_path):
    _png_folder(tmp_path / "train", patients=("001",))
    _png_folder(tmp_path / "val", patients=("002",))
    assert build_datalist(tmp_path)["test"] == []


def test_build_datalist_presplit_with_nifti_volumes(tmp_path):
    _nifti_folder(tmp_path / "train", patients=("001",))
    _nifti_folder(tmp_path / "val", patients=("002",))
    dl = build_datalist(tmp_path)
    assert dl["image_format"] == "nifti"
    assert dl["validation"][0]["label"].endswith("val/masks/patient_002.nii.gz")


def test_build_datalist_presplit_without_val_raises(tmp_path):
    _png_folder(tmp_path / "train")
    with pytest.raises(DataError, match="no val/"):
        build_datalist(tmp_path)


def test_build_datalist_presplit_warns_about_patient_in_two_splits(tmp_path):
    _png_folder(tmp_path / "train", patients=("001",))
    _png_folder(tmp_path / "val", patients=("001",))
    with pytest.warns(UserWarning, match="001"):
        build_datalist(tmp_path)


def test_build_datalist_runtime_splits_by_patient(tmp_path):
    _png_folder(tmp_path, patients=[f"{i:03d}" for i in range(5)], slices=(0, 1, 2))
    dl = build_datalist(tmp_path, val_ratio=0.2, seed=3)
    assert (dl["layout"], dl["image_format"]) == ("runtime", "png")
    assert len(dl["validation"]) == 3 and len({i["patient"] for i in dl["validation"]}) == 1
    assert len(dl["training"]) == 12
    assert dl["split"] == {"val_ratio": 0.2, "test_ratio": 0.0, "seed": 3}


def test_build_datalist_volumes_splits_patients(tmp_path):
    _nifti_folder(tmp_path, patients=("1", "2", "3", "4"))
    dl = build_datalist(tmp_path, val_ratio=0.25, test_ratio=0.25)
    assert [len(dl[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    assert dl["layout"] == "volumes"


def test_write_datalist_stores_paths_relative_to_the_json(tmp_path):
    _png_folder(tmp_path / "data")
    dl = build_datalist(tmp_path / "data")
    write_datalist(dl, tmp_path / "datalist.json")
    raw = json.loads((tmp_path / "datalist.json").read_text())
    assert raw["training"][0]["image"].startswith("data/CT/patient_")


def test_load_datalist_resolves_relative_paths_and_round_trips(tmp_path):
    _png_folder(tmp_path / "data")
    dl = build_datalist(tmp_path / "data")
    write_datalist(dl, tmp_path / "datalist.json")
    loaded = load_datalist(tmp_path / "datalist.json")
    for section in ("training", "validation", "test"):
        assert loaded[section] == dl[section]


def test_build_datalist_from_json_file(tmp_path):
    _png_folder(tmp_path / "data")
    (tmp_path / "dl.json").write_text(json.dumps({"training": [
        {"image": "data/CT/patient_001_slice_0.png", "pet": "data/PET/patient_001_slice_0.png",
         "label": "data/masks/patient_001_slice_0.png"}]}))
    dl = build_datalist(tmp_path / "dl.json")
    assert dl["layout"] == "datalist" and dl["image_format"] == "png"
    assert dl["training"][0]["patient"] == "001"  # derived from the file name
    assert dl["validation"] == [] and dl["test"] == []


def test_load_datalist_missing_files_raise_naming_key_and_file(tmp_path):
    _png_folder(tmp_path / "data")
    (tmp_path / "dl.json").write_text(json.dumps({"validation": [
        {"image": "data/CT/patient_001_slice_0.png", "pet": "data/PET/gone.png",
         "label": "data/masks/patient_001_slice_0.png", "patient": "001"}]}))
    with pytest.raises(DataError, match=r"validation\[0\]\['pet'\] = .*data/PET/gone\.png"):
        load_datalist(tmp_path / "dl.json")


def test_load_datalist_item_without_label_raises_when_labels_required(tmp_path):
    _png_folder(tmp_path / "data")
    item = {"image": "data/CT/patient_001_slice_0.png", "pet": "data/PET/patient_001_slice_0.png"}
    (tmp_path / "dl.json").write_text(json.dumps({"training": [item]}))
    with pytest.raises(DataError, match=r"training\[0\] lacks key 'label'"):
        load_datalist(tmp_path / "dl.json")
    assert "label" not in load_datalist(tmp_path / "dl.json", require_labels=False)["training"][0]


def test_load_datalist_missing_json_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_datalist(tmp_path / "none.json")


# ------------------------------------------------------------------------------------ sizes


def test_png_mask_of_another_size_in_the_test_split_is_refused_at_discovery_naming_both_files(tmp_path):
    _png_folder(tmp_path / "train", patients=("001",))
    _png_folder(tmp_path / "val", patients=("002",))
    _png_folder(tmp_path / "test", patients=("003",))
    bad = tmp_path / "test" / "masks" / "patient_003_slice_1.png"
    Image.fromarray(np.zeros((3, 5), np.uint8)).save(bad)  # 5 wide, the CT 4
    with pytest.raises(DataError) as err:
        build_datalist(tmp_path)
    assert str(err.value) == (
        f"1 pair(s) of slices in {tmp_path / 'test'} differ in size where they must match: "
        f"{(tmp_path / 'test' / 'CT' / 'patient_003_slice_1.png').resolve()} is 4x3 but {bad.resolve()} is 5x3"
    )


def test_png_pet_of_another_size_is_refused_at_discovery(tmp_path):
    _png_folder(tmp_path, patients=("001", "002"))
    Image.fromarray(np.zeros((6, 4), np.uint16)).save(tmp_path / "PET" / "patient_002_slice_0.png")
    with pytest.raises(DataError, match=r"CT/patient_002_slice_0\.png is 4x3 but .*PET/patient_002_slice_0\.png is 4x6"):
        find_pairs(tmp_path)


def test_nifti_mask_must_have_the_ct_shape_but_pet_has_its_own_grid(tmp_path):
    _nifti_folder(tmp_path, patients=("001", "002"))
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 1), np.float32), np.eye(4)), tmp_path / "PET" / "patient_001.nii.gz")
    assert len(find_pairs(tmp_path)) == 2  # PET is resampled onto the CT grid
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.uint8), np.eye(4)), tmp_path / "masks" / "patient_002.nii.gz")
    with pytest.raises(DataError, match=r"CT/patient_002\.nii\.gz is 4x4x2 but .*masks/patient_002\.nii\.gz is 4x4x3"):
        find_pairs(tmp_path)


def test_datalist_json_pairs_are_checked_for_size_too(tmp_path):
    _png_folder(tmp_path / "data", patients=("001", "002"))
    Image.fromarray(np.zeros((2, 4), np.uint8)).save(tmp_path / "data" / "masks" / "patient_002_slice_1.png")
    items = [{"image": f"data/CT/{n}", "pet": f"data/PET/{n}", "label": f"data/masks/{n}"}
             for n in ("patient_001_slice_0.png", "patient_002_slice_1.png")]  # fmt: skip
    (tmp_path / "dl.json").write_text(json.dumps({"training": items[:1], "validation": items[1:]}))
    with pytest.raises(DataError, match=r"\[validation\] differ in size .*masks/patient_002_slice_1\.png is 4x2"):
        build_datalist(tmp_path / "dl.json")


def test_sizes_are_read_from_the_headers_without_decoding_pixels(tmp_path, monkeypatch):
    from nibabel.arrayproxy import ArrayProxy
    from PIL import ImageFile

    _png_folder(tmp_path / "png", patients=[f"{i:03d}" for i in range(4)], slices=range(5))
    _nifti_folder(tmp_path / "nifti", patients=("001", "002"))

    def decode(self, *args, **kwargs):
        raise AssertionError("pixels decoded at discovery")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    monkeypatch.setattr(ArrayProxy, "_get_scaled", decode)
    monkeypatch.setattr(ArrayProxy, "_get_unscaled", decode)
    assert len(find_pairs(tmp_path / "png")) == 20 and len(find_pairs(tmp_path / "nifti")) == 2
