"""Find paired CT / PET / mask files on disk: the layout of a data root, the pairs of one folder,
their names and sizes (splitting them and MONAI datalists: :mod:`cocoseg_monai.data.datalist`).

Supported roots (see ``docs/DATA_PIPELINE.md``):

* ``"presplit"``: ``ROOT/{train,val[,test]}/{CT,PET,masks}/...`` (PNG slices or NIfTI volumes),
* ``"runtime"``:  ``ROOT/{CT,PET,masks}/patient_{ID}_slice_{num}.png``, split here by patient,
* ``"volumes"``:  ``ROOT/{CT,PET,masks}/patient_{ID}.nii.gz`` (or ``.nii``), split here by patient,
* ``"datalist"``: a MONAI datalist JSON ``{"training": [...], "validation": [...], "test": [...]}``.

Every datalist item is ``{"image": CT path, "pet": PET path, "label": mask path, "patient": id}``
(``"label"`` absent when masks are not required and not present). Paths are absolute strings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cocoseg_monai.conventions import (
    MODALITY_FOLDERS,
    NIFTI_SUFFIXES,
    PNG_NAME_PATTERN,
    PNG_NAME_TEMPLATE,
    SPLIT_FOLDERS,
)
from cocoseg_monai.errors import DataError

__all__ = [
    "detect_layout",
    "find_pairs",
    "check_sizes",
    "image_format_of",
    "strip_nifti_suffix",
    "patient_of",
    "preview_names",
]


_NIFTI_PATIENT = re.compile(r"^patient_(?P<patient>.+)$")
# files an OS or a file browser drops into folders; never data
_JUNK_FILES = {"thumbs.db", "desktop.ini"}
SHOWN_NAMES = 5  # how many offending names an error message lists


# ---------------------------------------------------------------------------------------------
# layout detection


def detect_layout(root: str | os.PathLike) -> str:
    """Tell which of the supported layouts ``root`` follows.

    Parameters
    ----------
    root
        A data folder, or a ``.json`` datalist file.

    Returns
    -------
    str
        ``"datalist"`` (a ``.json`` file), ``"presplit"`` (``train/`` and ``val/`` folders),
        ``"runtime"`` (``CT/``, ``PET/`` with PNG slices) or ``"volumes"`` (``CT/``, ``PET/`` with
        NIfTI volumes).

    Raises
    ------
    DataError
        ``root`` does not exist, is a non-JSON file, is ambiguous, or matches no layout.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "datalist"
        raise DataError(f"data root {root} is a file but not a .json datalist")
    has_split = (root / SPLIT_FOLDERS["training"]).is_dir()
    has_modalities = (root / MODALITY_FOLDERS["image"]).is_dir() or (root / MODALITY_FOLDERS["pet"]).is_dir()
    if has_split and has_modalities:
        raise DataError(
            f"data root {root} is ambiguous: it holds both a split folder 'train/' and modality folders "
            f"'CT/'/'PET/'; keep one layout per root"
        )
    if has_split:
        return "presplit"
    if has_modalities:
        ct_dir = root / MODALITY_FOLDERS["image"]
        fmt = _folder_format(ct_dir) if ct_dir.is_dir() else None
        if fmt is None and (root / MODALITY_FOLDERS["pet"]).is_dir():
            fmt = _folder_format(root / MODALITY_FOLDERS["pet"])
        if fmt is None:
            raise DataError(f"data root {root}: folders CT/ and PET/ hold no .png or .nii/.nii.gz files")
        return "volumes" if fmt == "nifti" else "runtime"
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    raise DataError(
        f"data root {root} follows no known layout: expected a .json datalist, folders "
        f"train/ val/ [test/] each with CT/ PET/ masks/, or folders CT/ PET/ masks/; found {found[:10]}"
    )


# ---------------------------------------------------------------------------------------------
# pairing files of one folder


def find_pairs(folder: str | os.PathLike, require_labels: bool = True) -> list[dict[str, str]]:
    """Pair the CT, PET and mask files of one ``{CT,PET,masks}`` folder.

    PNG slices must be named ``patient_{ID}_slice_{num}.png``; NIfTI volumes ``patient_{ID}.nii.gz``
    (or ``.nii``; a name without the ``patient_`` prefix is accepted and its stem is the patient
    id). The same file name must exist in each modality folder.

    Parameters
    ----------
    folder
        Folder holding ``CT/``, ``PET/`` and (unless ``require_labels`` is False) ``masks/``.
    require_labels
        When False, ``masks/`` may be absent (inference); when present it is used and checked.

    Returns
    -------
    list of dict
        ``{"image": ct, "pet": pet, ["label": mask,] "patient": id}``, absolute paths, sorted by
        patient then slice number.

    Raises
    ------
    DataError
        Missing folders, empty folders, names off the pattern, a mix of PNG and NIfTI, files
        without a partner in another modality folder (each listed with the folder it lacks), or
        partners of different sizes (:func:`check_sizes`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    keys = ["image", "pet"]
    label_dir = folder / MODALITY_FOLDERS["label"]
    if require_labels or label_dir.is_dir():
        keys.append("label")
    missing_dirs = [MODALITY_FOLDERS[k] for k in keys if not (folder / MODALITY_FOLDERS[k]).is_dir()]
    if missing_dirs:
        raise DataError(
            f"data folder {folder} lacks sub-folder(s) {missing_dirs}; expected CT/, PET/ and masks/"
            + ("" if require_labels else " (masks/ optional)")
        )

    listed: dict[str, dict[str, Path]] = {}
    formats: dict[str, str] = {}
    for key in keys:
        sub = folder / MODALITY_FOLDERS[key]
        files = _list_data_files(sub)
        if not files:
            raise DataError(f"folder {sub} is empty: expected files named {PNG_NAME_TEMPLATE} or patient_{{ID}}.nii.gz")
        formats[key] = _format_of_files(sub, files)
        _check_names(sub, files, formats[key])
        listed[key] = {f.name: f for f in files}
    if len(set(formats.values())) > 1:
        raise DataError(
            f"data folder {folder} mixes formats across modalities: "
            + ", ".join(f"{MODALITY_FOLDERS[k]}={v}" for k, v in formats.items())
        )
    _check_partners(folder, listed)

    fmt = formats["image"]
    items = []
    for name in sorted(listed["image"], key=lambda n: _sort_key(n, fmt)):
        item = {k: str(listed[k][name].resolve()) for k in keys}
        item["patient"] = patient_of(name, fmt)
        items.append(item)
    check_sizes(items, where=str(folder))
    return items


def check_sizes(items: Sequence[Mapping[str, Any]], where: str = "the data set") -> None:
    """Refuse items whose files that must be the same size are not, reading headers only.

    A PNG slice's CT, PET and mask must have the same width and height; a NIfTI mask must have its
    CT's shape (the PET has its own grid and is resampled onto the CT's). Sizes come from the file
    headers (PIL reads a PNG's size without decoding its pixels, nibabel a NIfTI header without
    its data), so that thousands of slices are checked in moments, at discovery, instead of
    failing when a file is first read, possibly a test file after a whole training run.

    Raises
    ------
    DataError
        Naming both files and their sizes of each mismatched pair (the first few, and the count),
        or a file whose header cannot be read.
    """
    mismatched = []
    for item in items:
        image = item.get("image")
        if not isinstance(image, str):
            continue
        fmt = "png" if image.lower().endswith(".png") else "nifti" if image.lower().endswith(NIFTI_SUFFIXES) else None
        if fmt is None:
            continue  # a DICOM series folder: its size is the reader's business
        partners = ("pet", "label") if fmt == "png" else ("label",)
        ct_size = _header_size(image, fmt)
        for key in partners:
            other = item.get(key)
            if isinstance(other, str) and (size := _header_size(other, fmt)) != ct_size:
                mismatched.append(f"{image} is {_format_size(ct_size)} but {other} is {_format_size(size)}")
    if mismatched:
        what = "slices" if all(str(i.get("image", "")).lower().endswith(".png") for i in items) else "files"
        raise DataError(
            f"{len(mismatched)} pair(s) of {what} in {where} differ in size where they must match: "
            f"{preview_names(mismatched)}"
        )


def _header_size(path: str, fmt: str) -> tuple[int, ...]:
    """A PNG's (width, height) or a NIfTI volume's shape (trailing 1s beyond 3D dropped), from
    the header alone."""
    try:
        if fmt == "png":
            from PIL import Image

            with Image.open(path) as img:
                return tuple(int(v) for v in img.size)
        import nibabel as nib

        shape = tuple(int(v) for v in nib.load(path).shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        return shape
    except Exception as err:  # PIL, nibabel and the file system each raise their own types
        raise DataError(f"cannot read the header of {path}: {type(err).__name__}: {err}") from None


def _format_size(size: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in size)


def image_format_of(path: str | os.PathLike) -> str:
    """``"png"`` or ``"nifti"`` from a file name's suffix, ``"dicom"`` for a folder (a DICOM
    series, or a study holding one); :class:`DataError` otherwise."""
    if Path(path).is_dir():
        return "dicom"
    name = Path(path).name.lower()
    if name.endswith(".png"):
        return "png"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    raise DataError(f"{path}: unsupported file type, expected .png, .nii or .nii.gz (or a DICOM series folder)")


def _list_data_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower() not in _JUNK_FILES
    )


def _folder_format(folder: Path) -> str | None:
    files = _list_data_files(folder)
    if not files:
        return None
    names = [f.name.lower() for f in files]
    if any(n.endswith(NIFTI_SUFFIXES) for n in names):
        return "nifti"
    if any(n.endswith(".png") for n in names):
        return "png"
    return None


def _format_of_files(folder: Path, files: Sequence[Path]) -> str:
    names = [f.name.lower() for f in files]
    n_png = sum(n.endswith(".png") for n in names)
    n_nii = sum(n.endswith(NIFTI_SUFFIXES) for n in names)
    if n_png and n_nii:
        raise DataError(f"folder {folder} mixes PNG ({n_png}) and NIfTI ({n_nii}) files; use one format per dataset")
    return "nifti" if n_nii else "png"


def _check_names(folder: Path, files: Sequence[Path], fmt: str) -> None:
    if fmt == "png":
        bad = [f.name for f in files if not PNG_NAME_PATTERN.match(f.name)]
        expected = f"{PNG_NAME_TEMPLATE} (ID: letters, digits, '-'; num: digits)"
    else:
        bad = [f.name for f in files if not f.name.lower().endswith(NIFTI_SUFFIXES)]
        expected = "patient_{ID}.nii.gz or patient_{ID}.nii"
    if bad:
        raise DataError(
            f"{len(bad)} file name(s) in {folder} do not follow the pattern {expected}: {preview_names(bad)}"
        )


def _check_partners(folder: Path, listed: Mapping[str, Mapping[str, Path]]) -> None:
    union = set().union(*(set(v) for v in listed.values()))
    problems = []
    for key, names in listed.items():
        lacking = sorted(union - set(names))
        if lacking:
            problems.append(f"{len(lacking)} file(s) missing in {MODALITY_FOLDERS[key]}/: {preview_names(lacking)}")
    if problems:
        raise DataError(
            f"unpaired files in {folder} (every name must exist in each of "
            f"{', '.join(MODALITY_FOLDERS[k] + '/' for k in listed)}): " + "; ".join(problems)
        )


def strip_nifti_suffix(name: str) -> str:
    """``name`` without its ``.nii.gz`` / ``.nii`` suffix (unchanged when it has neither)."""
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def patient_of(name: str, fmt: str) -> str:
    if fmt == "png":
        m = PNG_NAME_PATTERN.match(name)
        if m is None:  # names were checked before; this guards direct misuse
            raise DataError(f"{name} does not follow the pattern {PNG_NAME_TEMPLATE}")
        return m.group("patient")
    stem = strip_nifti_suffix(name)
    m = _NIFTI_PATIENT.match(stem)
    return m.group("patient") if m else stem


def _sort_key(name: str, fmt: str) -> tuple[str, int]:
    if fmt == "png":
        m = PNG_NAME_PATTERN.match(name)
        if m is not None:
            # numeric slice order: slice_10 after slice_9
            return m.group("patient"), int(m.group("slice"))
    return patient_of(name, fmt), 0


def preview_names(names: Sequence[str]) -> str:
    shown = ", ".join(str(n) for n in names[:SHOWN_NAMES])
    return shown + (f", ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else "")
