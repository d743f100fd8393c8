"""Splitting paired files by patient, and MONAI datalists: building, writing, loading them.

Every datalist item is ``{"image": CT path, "pet": PET path, "label": mask path, "patient": id}``
(``"label"`` absent when masks are not required and not present); the file format is in
``docs/DATA_PIPELINE.md``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cocoseg_monai.atomic import atomic_write_json
from cocoseg_monai.conventions import (
    DATALIST_SECTIONS,
    NIFTI_SUFFIXES,
    PATH_KEYS,
    PNG_NAME_PATTERN,
    SPACING_FILENAME,
    SPLIT_FOLDERS,
)
from cocoseg_monai.errors import DataError

from .discovery import SHOWN_NAMES, check_sizes, detect_layout, find_pairs, image_format_of, patient_of, preview_names

__all__ = ["split_by_patient", "build_datalist", "write_datalist", "load_datalist", "read_spacing"]


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
            f"e.g. index {no_patient[:SHOWN_NAMES]}"
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
        raise DataError(f"datalist {path} has {len(malformed)} malformed item(s): {preview_names(malformed)}")
    if missing:
        raise DataError(f"datalist {path} references {len(missing)} missing file(s): {preview_names(missing)}")
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
        return patient_of(name, "png")
    if name.lower().endswith(NIFTI_SUFFIXES):
        return patient_of(name, "nifti")
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
            f"(slices of one patient leak between splits): {preview_names(shared)}",
            stacklevel=3,
        )
