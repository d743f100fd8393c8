"""Phantom studies on disk: the PNG and NIfTI study writers, :func:`write_dataset` (every format,
``spacing.json``, ``phantom.json``), the warning about earlier runs' files, and
:func:`make_default_dataset` with its check for a complete data set already there.

The file names and PNG encodings are the project's (:mod:`cocoseg_monai.conventions`), not this
package's: discovery reads what is written here by the same rules.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cocoseg_monai.atomic import atomic_write, atomic_write_json, atomic_write_nifti
from cocoseg_monai.conventions import (
    CT_PNG_OFFSET,
    PET_PNG_SCALE,
    SPACING_FILENAME,
    encode_ct_png,
    encode_mask_png,
    encode_pet_png,
    png_slice_name,
    to_display,
)

from .anatomy import Tissue
from .config import DEFAULT_DATASET, PHANTOM_VERSION, PhantomConfig, patient_id
from .dicom_study import DICOM_JSON, write_study_dicom
from .generate import PhantomStudy, generate_patient
from .preview import save_preview

__all__ = ["FORMATS", "write_study_nifti", "write_dataset", "make_default_dataset"]


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    # compress_level 1: these images are noisy, stronger compression buys little and costs time
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def _write_png_study(root: Path, study: PhantomStudy) -> list[Path]:
    written = []
    ct, pet, lab = encode_ct_png(study.ct_hu), encode_pet_png(study.pet_suv), encode_mask_png(study.label)
    for k in range(study.ct_hu.shape[2]):
        name = png_slice_name(study.patient_id, k + 1)
        for folder, vol in (("CT", ct), ("PET", pet), ("masks", lab)):
            path = root / folder / name
            _write_png(path, to_display(vol[:, :, k]))
            written.append(path)
    return written


def write_study_nifti(study: PhantomStudy, ct: str | os.PathLike, pet: str | os.PathLike,
                      label: str | os.PathLike | None = None) -> list[Path]:
    """Write one study as NIfTI: CT (HU, int16), PET (SUV, float32, on its own coarser grid) and,
    unless ``label`` is ``None``, the lesion mask (uint8, on the CT grid). Returns the paths."""
    items = [(ct, study.ct_hu.astype(np.int16), study.ct_affine),
             (pet, study.pet_suv_coarse.astype(np.float32), study.pet_affine)]
    if label is not None:
        items.append((label, study.label.astype(np.uint8), study.ct_affine))
    for path, arr, affine in items:
        atomic_write_nifti(Path(path), arr, affine)
    return [Path(path) for path, _, _ in items]


def _write_nifti_study(root: Path, study: PhantomStudy) -> list[Path]:
    name = f"patient_{study.patient_id}.nii.gz"
    return write_study_nifti(study, root / "CT" / name, root / "PET" / name, root / "masks" / name)


def _write_dicom_study(root: Path, study: PhantomStudy) -> list[Path]:
    folder = root / f"patient_{study.patient_id}"
    info = write_study_dicom(study, folder)
    nifti = write_study_nifti(study, folder / "ct.nii.gz", folder / "pet.nii.gz", folder / "label.nii.gz")
    return [folder / name for name in (*info["ct"]["files"], *info["pet"]["files"], DICOM_JSON)] + nifti


#: the values of ``fmt`` (``--format``)
FORMATS = ("png", "nifti", "both", "dicom")
_OWN_NAME = re.compile(r"^patient_[0-9]{3}(_slice_[0-9]{4}\.png|\.nii\.gz)$")
# --format dicom: the patient folders, and the files of one beside its series folders
_OWN_PATIENT = re.compile(r"^patient_[0-9]{3}$")
_OWN_PATIENT_FILE = re.compile(r"^((ct|pet|label)\.nii\.gz|dicom\.json)$")


def _own_files(root: Path, layout: str) -> list[Path]:
    """The files under ``root`` that a reader of ``layout`` ("png", "nifti" or "dicom") takes as data."""
    if layout != "dicom":
        return [p for folder in ("CT", "PET", "masks") if (root / folder).is_dir()
                for p in (root / folder).iterdir() if _OWN_NAME.match(p.name)]
    patients = [d for d in root.iterdir() if d.is_dir() and _OWN_PATIENT.match(d.name)] if root.is_dir() else []
    # a series folder is read whole, whatever its files are called (an atomic write's
    # temporary files start with ".")
    return [p for d in patients for p in d.iterdir() if _OWN_PATIENT_FILE.match(p.name)] + [
        p for d in patients for series in ("CT", "PET") if (d / series).is_dir()
        for p in (d / series).iterdir() if p.is_file() and not p.name.startswith(".")
    ]


def _warn_foreign_files(roots: dict[str, Path], written: set[Path], log: Callable[[str], None]) -> None:
    """Files of our naming pattern that this run did not write would be read as data."""
    stale = sorted(p for layout, root in roots.items() for p in _own_files(root, layout) if p not in written)
    if stale:
        msg = (f"{len(stale)} file(s) from an earlier run are left in the output folder and will be "
               f"read as data, e.g. {stale[0]}; delete them or use a fresh --out folder")
        warnings.warn(msg, stacklevel=3)
        log("warning: " + msg)


def write_dataset(out_dir: str | os.PathLike, patients: int, seed: int, fmt: str = "png",
                  config: PhantomConfig | None = None, preview: str | os.PathLike | None = None,
                  log: Callable[[str], None] | None = None) -> Path:
    """Generate ``patients`` studies and write them in the documented layout.

    Parameters
    ----------
    out_dir
        Output folder; created if missing.  Existing files of the same names are overwritten,
        nothing else is deleted.
    patients
        Number of patients (>= 1), ids ``001`` .. ``patients``.
    seed
        Data set seed (non-negative integer).
    fmt
        ``"png"``, ``"nifti"``, ``"both"`` (png and nifti) or ``"dicom"``.
    config
        Geometry and physics; :class:`PhantomConfig` defaults when ``None``.
    preview
        If given, :func:`save_preview` of the first lesion-bearing patient is written there.
    log
        Called with progress lines (``None``: silent).

    Returns
    -------
    Path
        ``out_dir``.
    """
    config = PhantomConfig() if config is None else config
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not isinstance(patients, (int, np.integer)) or patients < 1:
        raise ValueError(f"patients must be an integer >= 1, got {patients!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a folder")
    log = log or (lambda _msg: None)
    roots = {"png": {"png": out}, "nifti": {"nifti": out}, "both": {"png": out / "png", "nifti": out / "nifti"},
             "dicom": {"dicom": out / "dicom"}}[fmt]
    written: set[Path] = set()
    records = []
    preview_done = preview is None
    t0 = time.perf_counter()
    for i in range(int(patients)):
        study = generate_patient(i, int(seed), config)
        if "png" in roots:
            written.update(_write_png_study(roots["png"], study))
        if "nifti" in roots:
            written.update(_write_nifti_study(roots["nifti"], study))
        if "dicom" in roots:
            written.update(_write_dicom_study(roots["dicom"], study))
        if not preview_done and study.lesions:
            save_preview(study, preview)
            preview_done = True
        records.append(study.summary())
        log(f"patient {study.patient_id}: {len(study.lesions)} lesion(s) "
            f"[{time.perf_counter() - t0:.1f} s]")
    _warn_foreign_files(roots, written, log)
    if "png" in roots:  # PNG carries no pixel size: say it where discovery reads it
        atomic_write_json(roots["png"] / SPACING_FILENAME, {"spacing_mm": [round(s, 6) for s in config.ct_spacing]})
    meta = {
        "generator": "cocoseg_monai.data.phantom",
        "version": PHANTOM_VERSION,
        "seed": int(seed),
        "patients": int(patients),
        "format": fmt,
        "size": config.size,
        "slices": config.slices,
        "ct_spacing_mm": list(config.ct_spacing),
        "pet_spacing_mm": list(config.pet_spacing),
        "pet_shape": list(config.pet_shape),
        "png_encoding": {"ct_offset": CT_PNG_OFFSET, "pet_scale": PET_PNG_SCALE, "mask": "0/255"},
        "tissue_labels": {t.name: int(t) for t in Tissue},
        "config": config.to_dict(),
        "lesion_free_patients": sum(r["lesion_free"] for r in records),
        "cases": records,
    }
    atomic_write_json(out / "phantom.json", meta)  # last: its presence marks a complete data set
    return out


def _dataset_is_complete(out: Path, spec: dict[str, Any]) -> bool:
    try:
        meta = json.loads((out / "phantom.json").read_text())
    except (OSError, ValueError):
        return False
    cfg: PhantomConfig = spec["config"]
    same = (meta.get("version") == PHANTOM_VERSION and meta.get("seed") == spec["seed"]
            and meta.get("patients") == spec["patients"] and meta.get("format") == spec["format"]
            and meta.get("config") == cfg.to_dict())
    if not same or not (out / SPACING_FILENAME).is_file():
        return False
    return all(
        (out / folder / png_slice_name(patient_id(i), k + 1)).is_file()
        for i in range(spec["patients"]) for k in range(cfg.slices) for folder in ("CT", "PET", "masks")
    )


def make_default_dataset(out_dir: str | os.PathLike, overwrite: bool = False,
                         log: Callable[[str], None] | None = None) -> Path:
    """Build the embedded default data set (:data:`DEFAULT_DATASET`) in ``out_dir``.

    A complete data set of the same parameters and generator version already there is reused
    unless ``overwrite``.  Returns ``out_dir``.
    """
    out = Path(out_dir)
    spec = dict(DEFAULT_DATASET)
    if not overwrite and _dataset_is_complete(out, spec):
        (log or (lambda _m: None))(f"default phantom data set already complete in {out}")
        return out
    return write_dataset(out, spec["patients"], spec["seed"], spec["format"], spec["config"], log=log)
