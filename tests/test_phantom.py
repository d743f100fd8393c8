"""Tests of the synthetic PET/CT phantom generator (``cocoseg_monai.data.phantom``).

Small grids keep the whole file to a few seconds: 128 x 128 x 24 for the physics, 64 x 64 x 8 for
file I/O.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from cocoseg_monai.conventions import (
    CT_PNG_OFFSET,
    PET_PNG_SCALE,
    decode_ct_png,
    decode_pet_png,
    from_display,
    to_display,
)
from cocoseg_monai.data import phantom
from cocoseg_monai.data.phantom import (
    PhantomConfig,
    Tissue,
    generate_patient,
    is_lesion_free,
    main,
    save_preview,
    write_dataset,
)

SEED = 7
PHYSICS = PhantomConfig(size=128, slices=24)
IO = PhantomConfig(size=64, slices=8)
PNG_NAME = re.compile(r"^patient_(\d{3})_slice_(\d{4})\.png$")


@pytest.fixture(scope="module")
def studies() -> list[phantom.PhantomStudy]:
    return [generate_patient(i, SEED, PHYSICS) for i in range(4)]


@pytest.fixture(scope="module")
def io_studies() -> list[phantom.PhantomStudy]:
    return [generate_patient(i, SEED, IO) for i in range(6)]


def _dilate(mask: np.ndarray, steps: int, axes: tuple[int, ...]) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        for axis in axes:
            grown = out.copy()
            lo, hi = [slice(None)] * 3, [slice(None)] * 3
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
            out = grown
    return out


def _interior(mask: np.ndarray, in_plane: int = 2, through_plane: int = 1) -> np.ndarray:
    """Erode so the PET blur from neighbouring tissues does not reach the voxels kept."""
    out = ~_dilate(~mask, in_plane, (0, 1))
    return out & ~_dilate(~mask, through_plane, (2,))


def _tissue_mean(study: phantom.PhantomStudy, tissue: Tissue, image: np.ndarray, interior: bool = False) -> float:
    mask = (study.tissue == tissue) & (study.label == 0)
    if interior:
        mask = _interior(mask)
    assert mask.sum() >= 10, f"{tissue.name}: too few voxels to test"
    return float(image[mask].mean())


# ---------------------------------------------------------------------------------------------
# intensities


#: expected mean CT (HU) and PET (SUV) per tissue, (low, high); None: not checked
TISSUE_RANGES = {
    Tissue.AIR: ((-1010, -985), None),
    Tissue.LUNG: ((-900, -800), (0.2, 0.7)),
    Tissue.FAT: ((-120, -80), None),
    Tissue.SOFT: ((20, 60), (0.4, 1.1)),
    Tissue.LIVER: ((45, 70), (1.5, 2.6)),
    Tissue.BLOOD: ((30, 50), (1.1, 2.0)),
    Tissue.KIDNEY: ((20, 40), (2.5, 9.0)),
    Tissue.BLADDER: ((0, 20), (6.0, 32.0)),
    Tissue.BONE: ((300, 500), None),
    Tissue.CORTICAL: ((700, 1300), None),
}


@pytest.mark.parametrize("tissue", [t for t, (hu, _) in TISSUE_RANGES.items() if hu], ids=lambda t: t.name)
def test_ct_hu_per_tissue(studies, tissue: Tissue) -> None:
    low, high = TISSUE_RANGES[tissue][0]
    for s in studies:
        assert low <= _tissue_mean(s, tissue, s.ct_hu) <= high, f"patient {s.patient_id} {tissue.name}"


def test_ct_is_integer_hu_with_noise(studies) -> None:
    s = studies[0]
    assert s.ct_hu.dtype == np.float32
    assert np.array_equal(s.ct_hu, np.rint(s.ct_hu))
    liver = _interior(s.tissue == Tissue.LIVER)
    assert 5 < s.ct_hu[liver].std() < 30  # noise present, tissue still recognisable


@pytest.mark.parametrize("tissue", [t for t, (_, suv) in TISSUE_RANGES.items() if suv], ids=lambda t: t.name)
def test_pet_suv_per_tissue(studies, tissue: Tissue) -> None:
    low, high = TISSUE_RANGES[tissue][1]
    for s in studies:
        assert low <= _tissue_mean(s, tissue, s.pet_suv, interior=True) <= high, f"patient {s.patient_id} {tissue.name}"


def test_pet_non_negative_and_zero_in_air(studies) -> None:
    for s in studies:
        assert s.pet_suv.min() >= 0 and s.pet_suv_coarse.min() >= 0
        far_air = _interior(s.tissue == Tissue.AIR, in_plane=6, through_plane=0)
        assert s.pet_suv[far_air].max() < 0.05


def test_myocardium_and_brain_are_avid() -> None:
    s = generate_patient(0, SEED, PhantomConfig(size=128, slices=30, include_head=True))
    brain = _tissue_mean(s, Tissue.BRAIN, s.pet_suv, interior=True)
    assert 5.5 < brain < 10
    heart = (s.tissue == Tissue.MYOCARDIUM) & (s.label == 0)
    assert np.percentile(s.pet_suv[heart], 90) > 2.5
    # the head sits above the torso
    z = np.arange(s.tissue.shape[2])
    brain_z = z[(s.tissue == Tissue.BRAIN).any(axis=(0, 1))]
    lung_z = z[(s.tissue == Tissue.LUNG).any(axis=(0, 1))]
    assert brain_z.min() > lung_z.max()


def test_no_head_by_default(studies) -> None:
    assert not any((s.tissue == Tissue.BRAIN).any() for s in studies)


def test_anatomy_order_along_z(studies) -> None:
    z = np.arange(PHYSICS.slices)
    for s in studies:
        centre = {t: (z * (s.tissue == t).sum(axis=(0, 1))).sum() / (s.tissue == t).sum()
                  for t in (Tissue.LUNG, Tissue.LIVER, Tissue.KIDNEY, Tissue.BLADDER)}
        assert centre[Tissue.LUNG] > centre[Tissue.LIVER] > centre[Tissue.KIDNEY] > centre[Tissue.BLADDER]
        assert centre[Tissue.LUNG] > PHYSICS.slices / 2 > centre[Tissue.BLADDER]


def test_display_orientation(studies) -> None:
    s = studies[0]
    k = int(np.argmax((s.tissue == Tissue.LIVER).sum(axis=(0, 1))))
    image = to_display(s.tissue[:, :, k])
    rows, cols = np.indices(image.shape)
    # liver on the patient's right = image left; spine posterior = image bottom
    assert cols[image == Tissue.LIVER].mean() < image.shape[1] / 2
    assert rows[image == Tissue.BONE].mean() > image.shape[0] / 2
    assert np.array_equal(from_display(image), s.tissue[:, :, k])


# ---------------------------------------------------------------------------------------------
# lesions and labels


def test_lesions(studies) -> None:
    lesions = [les for s in studies for les in s.lesions]
    assert lesions, "no lesion drawn in 4 patients"
    for s in studies:
        assert s.label.dtype == np.uint8 and set(np.unique(s.label)) <= {0, 1}
        assert not (s.label.astype(bool) & ~s.body).any(), f"patient {s.patient_id}: label outside the body"
        assert bool(s.label.any()) == bool(s.lesions)
    for les in lesions:
        assert les["site"] in phantom.LESION_SITES
        assert 3.0 <= les["suv_peak"] <= 20.0
        assert les["voxels"] >= 1 and 5 <= les["diameter_mm"] <= 50
        if les["diameter_mm"] >= 15:  # big enough for the blur to keep most of the peak
            assert 2.0 <= les["suv_max"] <= 25.0, les


def test_lesions_change_the_ct(studies) -> None:
    for s in studies:
        for les in s.lesions:
            centre = tuple(les["centre_voxel"])
            assert s.label[centre] == 1
            if les["site"] == "lung":  # a solid nodule is far denser than lung
                assert s.ct_hu[centre] > -300


def test_lesion_free_patients(io_studies) -> None:
    free = [s for s in io_studies if s.lesion_free]
    assert free, "no lesion-free patient among 6 at fraction 0.2"
    assert all(not s.label.any() for s in free)
    assert any(s.label.any() for s in io_studies)


@pytest.mark.parametrize("seed", range(20))
def test_lesion_free_rule(seed: int) -> None:
    for n in (5, 7, 12):
        assert sum(is_lesion_free(i, seed, 0.2) for i in range(n)) >= int(n * 0.2)
    assert not any(is_lesion_free(i, seed, 0.0) for i in range(10))
    assert all(is_lesion_free(i, seed, 1.0) for i in range(10))


def test_same_seed_same_arrays_different_seed_different(io_studies) -> None:
    again = generate_patient(2, SEED, IO)
    first = io_studies[2]
    for name in ("ct_hu", "pet_suv", "pet_suv_coarse", "label", "tissue"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert first.lesions == again.lesions
    other = generate_patient(2, SEED + 1, IO)
    assert not np.array_equal(first.ct_hu, other.ct_hu)
    assert not np.array_equal(first.pet_suv, other.pet_suv)


# ---------------------------------------------------------------------------------------------
# files


def _corners(img: nib.Nifti1Image) -> np.ndarray:
    lo = img.affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    hi = img.affine @ np.array([*(np.array(img.shape) - 0.5), 1.0])
    return np.stack([lo[:3], hi[:3]])


def test_nifti_grids_and_contents(tmp_path: Path, io_studies) -> None:
    write_dataset(tmp_path, 2, SEED, "nifti", IO)
    s = io_studies[1]
    ct = nib.load(tmp_path / "CT" / "patient_002.nii.gz")
    pet = nib.load(tmp_path / "PET" / "patient_002.nii.gz")
    mask = nib.load(tmp_path / "masks" / "patient_002.nii.gz")
    ct_zooms, pet_zooms = np.array(ct.header.get_zooms()), np.array(pet.header.get_zooms())
    assert np.allclose(ct_zooms, IO.ct_spacing)
    assert (pet_zooms > ct_zooms).all(), (pet_zooms, ct_zooms)
    assert np.allclose(_corners(ct), _corners(pet)), "CT and PET must cover the same box"
    assert nib.aff2axcodes(ct.affine) == ("L", "A", "S")
    assert nib.aff2axcodes(ct.affine) == nib.aff2axcodes(pet.affine)
    assert np.allclose(np.abs(np.diag(ct.affine)[:3]), IO.ct_spacing)
    assert ct.get_data_dtype() == np.int16 and mask.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(ct.dataobj), s.ct_hu.astype(np.int16))
    assert np.array_equal(np.asarray(mask.dataobj), s.label)
    assert np.array_equal(np.asarray(pet.dataobj, dtype=np.float32), s.pet_suv_coarse)
    assert mask.shape == ct.shape == IO.ct_shape and pet.shape == IO.pet_shape


def test_liver_lies_on_the_patients_right_in_world_coordinates(io_studies) -> None:
    # RAS+ world: +x is the patient's right. A mirrored affine would put the liver at x < 0.
    s = next(st for st in io_studies if (st.tissue == Tissue.LIVER).any())
    ijk = np.argwhere(s.tissue == Tissue.LIVER).mean(axis=0)
    x_world = (s.ct_affine @ np.array([*ijk, 1.0]))[0]
    assert x_world > 20.0, x_world


def test_png_round_trip_and_names(tmp_path: Path, io_studies) -> None:
    write_dataset(tmp_path, 3, SEED, "png", IO)
    names = {f: sorted(p.name for p in (tmp_path / f).iterdir()) for f in ("CT", "PET", "masks")}
    assert names["CT"] == names["PET"] == names["masks"]
    assert len(names["CT"]) == 3 * IO.slices
    parsed = [PNG_NAME.match(n) for n in names["CT"]]
    assert all(parsed), names["CT"]
    assert {m.group(1) for m in parsed} == {"001", "002", "003"}
    assert {m.group(2) for m in parsed} == {f"{k:04d}" for k in range(1, IO.slices + 1)}

    for s in io_studies[:3]:
        for k in range(IO.slices):
            name = f"patient_{s.patient_id}_slice_{k + 1:04d}.png"
            ct = np.asarray(Image.open(tmp_path / "CT" / name))
            pet = np.asarray(Image.open(tmp_path / "PET" / name))
            mask = np.asarray(Image.open(tmp_path / "masks" / name))
            assert ct.shape == pet.shape == mask.shape == (IO.size, IO.size)
            assert mask.dtype == np.uint8
            assert np.array_equal(decode_ct_png(ct), to_display(np.rint(s.ct_hu[:, :, k])))
            expected_pet = np.clip(np.rint(s.pet_suv[:, :, k].astype(np.float64) * PET_PNG_SCALE), 0, 65535)
            assert np.array_equal(pet.astype(np.int64), to_display(expected_pet).astype(np.int64))
            assert np.abs(decode_pet_png(pet) - to_display(s.pet_suv[:, :, k])).max() <= 0.5 / PET_PNG_SCALE + 1e-6
            assert np.array_equal(mask, to_display(s.label[:, :, k]) * np.uint8(255))
    assert CT_PNG_OFFSET == 1024 and PET_PNG_SCALE == 1000.0


def test_patients_do_not_depend_on_count(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 2, SEED, "png", IO)
    write_dataset(tmp_path / "b", 4, SEED, "png", IO)
    name = "patient_002_slice_0005.png"
    for folder in ("CT", "PET", "masks"):
        assert (tmp_path / "a" / folder / name).read_bytes() == (tmp_path / "b" / folder / name).read_bytes()


def test_phantom_json(tmp_path: Path, io_studies) -> None:
    write_dataset(tmp_path, 6, SEED, "png", IO)
    meta = json.loads((tmp_path / "phantom.json").read_text())
    for key, value in (("seed", SEED), ("patients", 6), ("size", 64), ("slices", 8), ("format", "png"),
                       ("version", phantom.PHANTOM_VERSION)):
        assert meta[key] == value, key
    assert np.allclose(meta["ct_spacing_mm"], IO.ct_spacing)
    assert [c["id"] for c in meta["cases"]] == [f"{i:03d}" for i in range(1, 7)]
    for case, s in zip(meta["cases"], io_studies):
        assert case["n_lesions"] == len(s.lesions) == len(case["lesions"])
        for les in case["lesions"]:
            assert {"site", "diameter_mm", "suv_max", "suv_peak"} <= set(les)


def test_existing_files_are_kept(tmp_path: Path) -> None:
    (tmp_path / "CT").mkdir()
    (tmp_path / "CT" / "notes.txt").write_text("keep me")
    (tmp_path / "other.bin").write_bytes(b"x")
    stale = tmp_path / "CT" / "patient_099_slice_0001.png"
    stale.write_bytes(b"old")
    with pytest.warns(UserWarning, match="earlier run"):
        write_dataset(tmp_path, 1, SEED, "png", IO)
    assert (tmp_path / "CT" / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "other.bin").exists() and stale.exists()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="patients"):
        write_dataset("unused", 0, SEED, "png", IO)
    with pytest.raises(ValueError, match="fmt"):
        write_dataset("unused", 1, SEED, "jpeg", IO)
    with pytest.raises(ValueError, match="size"):
        PhantomConfig(size=8)
    with pytest.raises(ValueError, match="lesion_free_fraction"):
        PhantomConfig(lesion_free_fraction=1.5)
    with pytest.raises(ValueError, match="seed"):
        generate_patient(0, -1, IO)


def test_output_path_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(NotADirectoryError, match=str(target)):
        write_dataset(target, 1, SEED, "png", IO)


# ---------------------------------------------------------------------------------------------
# command line, preview, default data set


def test_cli_both_formats_with_preview(tmp_path: Path, capsys) -> None:
    preview = tmp_path / "preview.png"
    rc = main(["--out", str(tmp_path / "d"), "--patients", "2", "--seed", "3", "--format", "both",
               "--size", "64", "--slices", "6", "--preview", str(preview)])
    assert rc == 0
    assert "wrote 2 patient(s)" in capsys.readouterr().out
    d = tmp_path / "d"
    assert len(list((d / "png" / "CT").glob("*.png"))) == 12
    assert sorted(p.name for p in (d / "nifti" / "PET").iterdir()) == ["patient_001.nii.gz", "patient_002.nii.gz"]
    meta = json.loads((d / "phantom.json").read_text())
    assert meta["format"] == "both" and meta["seed"] == 3
    img = Image.open(preview)
    assert img.mode == "RGB" and img.width > 64


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--patients", "0"], "--patients must be >= 1"),
        (["--patients", "two"], "--patients must be an integer"),
        (["--format", "jpeg"], "invalid choice"),
        (["--lesion-free-fraction", "2"], "--lesion-free-fraction must be in [0, 1]"),
        (["--size", "16"], "--size must be >= 32"),
    ],
)
def test_cli_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as err:
        main(["--out", str(tmp_path), *argv])
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_runs_as_python_m(tmp_path: Path) -> None:
    """``python -m cocoseg_monai.data.phantom`` is the documented command line."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cocoseg_monai.data.phantom", "--out", str(tmp_path), "--patients", "1",
         "--size", "32", "--slices", "2", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "phantom.json").read_text())["patients"] == 1


def test_save_preview(tmp_path: Path, io_studies) -> None:
    s = next(s for s in io_studies if s.lesions)
    path = save_preview(s, tmp_path / "p.png")
    img = np.asarray(Image.open(path))
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 10
    with pytest.raises(ValueError, match="slice_index"):
        save_preview(s, tmp_path / "q.png", slice_index=IO.slices)


def test_default_dataset_parameters() -> None:
    d = phantom.DEFAULT_DATASET
    assert d["format"] == "png" and 40 <= d["patients"] <= 64
    assert isinstance(d["config"], PhantomConfig)
    with pytest.raises(TypeError):
        d["patients"] = 1  # read-only


def test_make_default_dataset_reuses_a_complete_set(tmp_path: Path, monkeypatch) -> None:
    small = types.MappingProxyType({"patients": 2, "seed": SEED, "format": "png", "config": IO})
    # make_default_dataset reads DEFAULT_DATASET where it is defined, in the writing module
    monkeypatch.setattr(phantom.writing, "DEFAULT_DATASET", small)
    out = phantom.make_default_dataset(tmp_path)
    probe = out / "CT" / "patient_001_slice_0001.png"
    probe.write_bytes(b"marker")  # a rebuild would overwrite it
    phantom.make_default_dataset(tmp_path)
    assert probe.read_bytes() == b"marker"
    phantom.make_default_dataset(tmp_path, overwrite=True)
    assert probe.read_bytes() != b"marker"


def test_a_patient_has_the_same_lesions_on_any_grid_and_field_of_view():
    """Lesion centres are drawn on the reference grid and placed in mm: the same patient at 64 or
    192 pixels, over 500 or 350 mm, has its lesions at the same place (within a voxel)."""
    import dataclasses

    from cocoseg_monai.data.phantom import DEFAULT_DATASET, generate_patient

    base = dataclasses.replace(DEFAULT_DATASET["config"], slices=8)
    studies = [generate_patient(2, 11, dataclasses.replace(base, size=n, fov_mm=fov)) for n, fov in ((64, 500.0), (192, 500.0), (160, 350.0))]
    reference = studies[0].lesions
    assert reference
    for study in studies[1:]:
        assert [(l["site"], l["diameter_mm"]) for l in study.lesions] == [(l["site"], l["diameter_mm"]) for l in reference]
        for lesion, ref in zip(study.lesions, reference):
            assert np.abs(np.subtract(lesion["centre_mm"], ref["centre_mm"])).max() <= 500.0 / 64
