"""Find paired CT / PET / mask files on disk and turn them into MONAI datalists.

Supported roots (see ``docs/DATA_PIPELINE.md``):

* ``"presplit"``: ``ROOT/{train,val[,test]}/{CT,PET,masks}/...`` (PNG slices or NIfTI volumes),
* ``"runtime"``:  ``ROOT/{CT,PET,masks}/patient_{ID}_slice_{num}.png``, split here by patient,
* ``"volumes"``:  ``ROOT/{CT,PET,masks}/patient_{ID}.nii.gz`` (or ``.nii``), split here by patient,
* ``"datalist"``: a MONAI datalist JSON ``{"training": [...], "validation": [...], "test": [...]}``.

Every datalist item is ``{"image": CT path, "pet": PET path, "label": mask path, "patient": id}``
(``"label"`` absent when masks are not required and not present). Paths are absolute strings.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cocoseg_monai.atomic import atomic_write_json
from cocoseg_monai.conventions import (
    DATALIST_SECTIONS,
    MODALITY_FOLDERS,
    NIFTI_SUFFIXES,
    PATH_KEYS,
    PNG_NAME_PATTERN,
    PNG_NAME_TEMPLATE,
    SPACING_FILENAME,
    SPLIT_FOLDERS,
)
from cocoseg_monai.errors import DataError

__all__ = [
    "MODALITY_FOLDERS",
    "SPLIT_FOLDERS",
    "DATALIST_SECTIONS",
    "PNG_NAME_PATTERN",
    "PNG_NAME_TEMPLATE",
    "detect_layout",
    "find_pairs",
    "split_by_patient",
    "build_datalist",
    "write_datalist",
    "load_datalist",
    "image_format_of",
    "NIFTI_SUFFIXES",
    "SPACING_FILENAME",
    "read_spacing",
    "strip_nifti_suffix",
    "check_sizes",
]


_NIFTI_PATIENT = re.compile(r"^patient_(?P<patient>.+)$")
# files an OS or a file browser drops into folders; never data
_JUNK_FILES = {"thumbs.db", "desktop.ini"}
_SHOW = 5  # how many offending names an error message lists


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
        item["patient"] = _patient_of(name, fmt)
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
            f"{_preview(mismatched)}"
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
            f"{len(bad)} file name(s) in {folder} do not follow the pattern {expected}: {_preview(bad)}"
        )


def _check_partners(folder: Path, listed: Mapping[str, Mapping[str, Path]]) -> None:
    union = set().union(*(set(v) for v in listed.values()))
    problems = []
    for key, names in listed.items():
        lacking = sorted(union - set(names))
        if lacking:
            problems.append(f"{len(lacking)} file(s) missing in {MODALITY_FOLDERS[key]}/: {_preview(lacking)}")
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


def _patient_of(name: str, fmt: str) -> str:
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
    return _patient_of(name, fmt), 0


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(str(n) for n in names[:_SHOW])
    return shown + (f", ... ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")


# ---------------------------------------------------------------------------------------------
# splitting


def split_by_patient(
    items: Sequence[Mapping[str, Any]],
    val_ratio: float = 0.2,
    test_ratio: float = 0.0,
    seed: int = 42,
) -> dict[str, list[dict[str, Any]]]:
    """Split datalist items by patient, so that all slices of one patient land in one split.

    The split depends only on the set of patient ids and ``seed``: ids are sorted, then shuffled
    with ``numpy.random.default_rng(seed)``. Split sizes are ``round(n * ratio)`` patients (half
    up), at least one for each ratio > 0; training keeps the rest and must keep at least one.

    Parameters
    ----------
    items
        Datalist items, each with a ``"patient"`` key.
    val_ratio
        Fraction of patients for validation, in (0, 1).
    test_ratio
        Fraction of patients for test, in [0, 1); ``val_ratio + test_ratio < 1``.
    seed
        Seed of the shuffle.

    Returns
    -------
    dict
        ``{"training": [...], "validation": [...], "test": [...]}``; items keep their input order
        within a split. ``"test"`` is empty when ``test_ratio == 0``.

    Raises
    ------
    DataError
        Ratios out of range, items without ``"patient"``, or too few patients for the split.
    """
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"val_ratio must be in (0, 1), got {val_ratio}")
    if not 0.0 <= test_ratio < 1.0:
        raise DataError(f"test_ratio must be in [0, 1), got {test_ratio}")
    if val_ratio + test_ratio >= 1.0:
        raise DataError(f"val_ratio + test_ratio must be < 1 to leave training data, got {val_ratio} + {test_ratio}")
    no_patient = [i for i, item in enumerate(items) if "patient" not in item]
    if no_patient:
        raise DataError(
            f"{len(no_patient)} item(s) lack the 'patient' key needed to split by patient, "
            f"e.g. index {no_patient[:_SHOW]}"
        )

    patients = sorted({str(item["patient"]) for item in items})
    n = len(patients)
    n_val = _split_size(n, val_ratio)
    n_test = _split_size(n, test_ratio)
    needed = 1 + (val_ratio > 0) + (test_ratio > 0)
    if n - n_val - n_test < 1:
        raise DataError(
            f"too few patients ({n}) to split with val_ratio={val_ratio}, test_ratio={test_ratio}: "
            f"need at least {needed} patients (one per split)"
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [patients[i] for i in order]
    assignment = {p: "validation" for p in shuffled[:n_val]}
    assignment.update({p: "test" for p in shuffled[n_val : n_val + n_test]})
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in DATALIST_SECTIONS}
    for item in items:
        out[assignment.get(str(item["patient"]), "training")].append(dict(item))
    return out


def _split_size(n: int, ratio: float) -> int:
    if ratio <= 0:
        return 0
    return max(1, math.floor(n * ratio + 0.5))


# ---------------------------------------------------------------------------------------------
# datalists


def build_datalist(
    root: str | os.PathLike,
    val_ratio: float = 0.2,
    test_ratio: float = 0.0,
    seed: int = 42,
    require_labels: bool = True,
) -> dict[str, Any]:
    """Build a datalist for any supported layout.

    Parameters
    ----------
    root
        Data folder or ``.json`` datalist (see :func:`detect_layout`).
    val_ratio, test_ratio, seed
        Used only for layouts split here (``"runtime"``, ``"volumes"``); see :func:`split_by_patient`.
    require_labels
        When False, masks may be absent everywhere (inference). ``test/`` never requires masks.

    Returns
    -------
    dict
        ``{"training": [...], "validation": [...], "test": [...], "layout": str,
        "image_format": "png" | "nifti"}`` (plus ``"split"`` with the ratios and seed when split
        here). A pre-split root keeps its split; a datalist JSON is loaded and checked.
    """
    layout = detect_layout(root)
    root = Path(root)
    if layout == "datalist":
        datalist = load_datalist(root, require_labels=require_labels)
        datalist["layout"] = "datalist"  # where the items come from now, whatever the JSON says
        for section in DATALIST_SECTIONS:
            check_sizes(datalist[section], where=f"{root} [{section}]")
    elif layout == "presplit":
        if not (root / SPLIT_FOLDERS["validation"]).is_dir():
            raise DataError(f"pre-split data root {root} has train/ but no val/ folder")
        datalist = {
            "training": find_pairs(root / SPLIT_FOLDERS["training"], require_labels),
            "validation": find_pairs(root / SPLIT_FOLDERS["validation"], require_labels),
            "test": (
                find_pairs(root / SPLIT_FOLDERS["test"], require_labels=False)
                if (root / SPLIT_FOLDERS["test"]).is_dir()
                else []
            ),
            "layout": layout,
        }
        _warn_shared_patients(root, datalist)
    else:
        items = find_pairs(root, require_labels)
        datalist = dict(split_by_patient(items, val_ratio, test_ratio, seed))
        datalist["layout"] = layout
        datalist["split"] = {"val_ratio": val_ratio, "test_ratio": test_ratio, "seed": seed}
    datalist.setdefault("image_format", _datalist_format(datalist, source=root))
    if datalist["image_format"] == "png" and "spacing_mm" not in datalist:
        spacing = read_spacing(root.parent if layout == "datalist" else root)
        if spacing is not None:
            datalist["spacing_mm"] = spacing
    return datalist


def read_spacing(folder: str | os.PathLike) -> list[float] | None:
    """The pixel size of the PNG slices under ``folder``, from its ``spacing.json``
    (``{"spacing_mm": [x, y]}``, or ``[x, y, z]`` with the slice spacing); None without one.

    ``x`` is the size of a pixel along a PNG row (a column step), ``y`` along a column (a row step).

    Raises:
        DataError: naming the file, when it is unreadable or its values are not positive numbers.
    """
    path = Path(folder) / SPACING_FILENAME
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text()).get("spacing_mm")
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(f"{path}: cannot read the pixel size ({err}); expected {{\"spacing_mm\": [x, y]}}") from None
    ok = isinstance(values, list) and len(values) in (2, 3)
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
    if not ok:
        raise DataError(f"{path}: 'spacing_mm' must be 2 or 3 positive numbers in mm, got {values!r}")
    return [float(v) for v in values]


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike, relative: bool = True) -> None:
    """Write ``datalist`` to ``path`` as JSON, atomically.

    Parameters
    ----------
    datalist
        As returned by :func:`build_datalist`.
    path
        Destination ``.json`` file; its folder is created if missing.
    relative
        Store paths inside the JSON's folder relative to it (portable; resolved again by
        :func:`load_datalist`); paths elsewhere stay absolute.
    """
    path = Path(path)
    base = path.parent.resolve()
    out: dict[str, Any] = {}
    for key, value in datalist.items():
        if key in DATALIST_SECTIONS:
            out[key] = [_relativise(item, base) if relative else dict(item) for item in value]
        else:
            out[key] = value
    atomic_write_json(path, out)


def load_datalist(path: str | os.PathLike, require_labels: bool = True) -> dict[str, Any]:
    """Load a datalist JSON and check that every file it names exists.

    Relative paths of ``"image"``, ``"pet"`` and ``"label"`` are resolved against the JSON's
    folder, as :func:`monai.data.load_decathlon_datalist` does. That function is not called
    because it treats any other value (such as ``"patient": "001"``) as a path when a file of that
    name happens to exist, and leaves missing ``"pet"`` paths unresolved, which would hide the real
    path from the error below.

    Parameters
    ----------
    path
        The ``.json`` file.
    require_labels
        ``"training"`` and ``"validation"`` items must have ``"label"`` unless this is False;
        ``"test"`` items never need one.

    Returns
    -------
    dict
        The JSON content with absolute paths; ``"training"``, ``"validation"`` and ``"test"``
        always present (possibly empty) and items carrying ``"patient"`` (derived from the CT
        file name when absent).

    Raises
    ------
    DataError
        Missing file, invalid JSON, malformed items, or referenced files that do not exist (each
        named with its section, index and key).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"datalist {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"datalist {path} is not readable JSON: {e}") from e
    if not isinstance(raw, dict):
        raise DataError(f"datalist {path} must hold a JSON object with 'training'/'validation'/'test' lists")
    if not any(raw.get(s) for s in DATALIST_SECTIONS):
        raise DataError(f"datalist {path} has no items under 'training', 'validation' or 'test'")
    base = path.parent
    out: dict[str, Any] = dict(raw)
    malformed: list[str] = []
    missing: list[str] = []
    for section in DATALIST_SECTIONS:
        entries = raw.get(section, [])
        if not isinstance(entries, list):
            raise DataError(f"datalist {path}: '{section}' must be a list, got {type(entries).__name__}")
        needs = ["image", "pet"] + (["label"] if require_labels and section != "test" else [])
        items = []
        for i, entry in enumerate(entries):
            where = f"{section}[{i}]"
            if not isinstance(entry, dict):
                malformed.append(f"{where} is a {type(entry).__name__}, not an object with image/pet/label")
                continue
            item = dict(entry)
            for key in needs:
                if key not in item:
                    malformed.append(f"{where} lacks key {key!r}")
            for key in PATH_KEYS:
                if key not in item:
                    continue
                if not isinstance(item[key], str):
                    malformed.append(f"{where}[{key!r}] must be one path string, got {type(item[key]).__name__}")
                    continue
                item[key] = os.path.normpath(os.path.join(base, item[key]))
                if not os.path.isfile(item[key]):
                    missing.append(f"{where}[{key!r}] = {item[key]}")
            if "patient" not in item and isinstance(item.get("image"), str):
                item["patient"] = _patient_from_path(item["image"])
            items.append(item)
        out[section] = items
    if malformed:
        raise DataError(f"datalist {path} has {len(malformed)} malformed item(s): {_preview(malformed)}")
    if missing:
        raise DataError(f"datalist {path} references {len(missing)} missing file(s): {_preview(missing)}")
    return out


def _relativise(item: Mapping[str, Any], base: Path) -> dict[str, Any]:
    out = dict(item)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str):
            p = Path(value).resolve()
            if p.is_relative_to(base):
                out[key] = p.relative_to(base).as_posix()
    return out


def _patient_from_path(path: str) -> str:
    name = Path(path).name
    if PNG_NAME_PATTERN.match(name):
        return _patient_of(name, "png")
    if name.lower().endswith(NIFTI_SUFFIXES):
        return _patient_of(name, "nifti")
    return Path(name).stem


def _datalist_format(datalist: Mapping[str, Any], source: Path) -> str:
    formats = {
        image_format_of(item["image"])
        for s in DATALIST_SECTIONS
        for item in datalist.get(s, [])
        if isinstance(item.get("image"), str)
    }
    if len(formats) > 1:
        raise DataError(f"{source} mixes PNG and NIfTI images across splits; use one format per dataset")
    if not formats:
        raise DataError(f"{source} yields no items")
    return formats.pop()


def _warn_shared_patients(root: Path, datalist: Mapping[str, Any]) -> None:
    seen: dict[str, set[str]] = {}
    for section in DATALIST_SECTIONS:
        for item in datalist.get(section, []):
            seen.setdefault(item["patient"], set()).add(section)
    shared = sorted(p for p, s in seen.items() if len(s) > 1)
    if shared:
        warnings.warn(
            f"pre-split data root {root}: {len(shared)} patient(s) appear in more than one split "
            f"(slices of one patient leak between splits): {_preview(shared)}",
            stacklevel=3,
        )
