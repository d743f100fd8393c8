"""CT and PET series to the volumes the network reads: CT in HU, PET in SUV on its own grid.

:func:`read_ct` and :func:`read_pet_suv` are what every consumer uses (``cocoseg convert``, the
inference reader, the MONAI Label app), so a study gives the same values whichever way it comes
in. :func:`convert_study` writes them as NIfTI with a record of everything the conversion used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cocoseg_monai.atomic import atomic_write_json, atomic_write_nifti
from cocoseg_monai.errors import DicomError

from .series import SeriesVolume, read_series
from .suv import SUV_KINDS, SUVOverrides, SUVResult, suv_factor

__all__ = ["read_ct", "read_pet_suv", "series_record", "convert_study"]



def read_ct(folder: str | os.PathLike, series_uid: str | None = None) -> SeriesVolume:
    """The CT series in ``folder`` (the one of that UID when given), in HU."""
    return read_series(folder, "CT", series_uid, flag="--ct_series")


def read_pet_suv(folder: str | os.PathLike, series_uid: str | None = None, overrides: SUVOverrides | None = None,
                 kind: str = "bw") -> tuple[SeriesVolume, SUVResult]:
    """The PET series in ``folder`` converted to SUV (``kind``: body weight or lean body mass),
    on the PET's own grid, and how the SUV factor was found."""
    if kind not in SUV_KINDS:
        raise DicomError(f"SUV kind must be one of {SUV_KINDS}, got {kind!r}")
    volume = read_series(folder, "PT", series_uid, flag="--pet_series")
    result = suv_factor(volume.headers, overrides, kind=kind, where=str(folder))
    volume.array = (volume.array.astype(np.float64) * result.factor).astype(np.float32)
    return volume, result


def series_record(volume: SeriesVolume) -> dict[str, Any]:
    """JSON-ready description of a series as read: identity, grid and warnings."""
    ds = volume.headers[0]
    return {
        "folder": str(Path(volume.files[0]).parent),
        "series_instance_uid": volume.info.uid,
        "series_description": volume.info.description,
        "study_instance_uid": volume.info.study_uid,
        "frame_of_reference_uid": volume.info.frame_of_reference_uid,
        "modality": volume.info.modality,
        "slices": len(volume.files),
        "shape": list(volume.array.shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "slice_thickness_mm": float(ds.get("SliceThickness", 0) or 0) or None,
        "affine_ras": [[round(float(v), 6) for v in row] for row in volume.affine],
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")),
        "manufacturer": str(ds.get("Manufacturer", "")),
        "warnings": list(volume.warnings),
    }


def _integral_int16(array: np.ndarray) -> bool:
    return bool(np.all(np.rint(array) == array) and array.min() >= -32768 and array.max() <= 32767)


def convert_study(out_dir: str | os.PathLike, ct: str | os.PathLike | None = None, pet: str | os.PathLike | None = None,
                  *, ct_series: str | None = None, pet_series: str | None = None,
                  overrides: SUVOverrides | None = None, kind: str = "bw") -> dict[str, Any]:
    """Write ``OUT/ct.nii.gz`` (HU), ``OUT/pet.nii.gz`` (SUV, float32, the PET's own grid) and
    ``OUT/conversion.json`` (the record returned) from the CT and/or PET series in the folders
    given (they may be one study folder).

    Everything is read and checked before anything is written; each file is written atomically.

    Raises
    ------
    DicomError
        Neither folder given, or what :func:`read_ct` and :func:`read_pet_suv` refuse.
    """
    from cocoseg_monai import __version__

    if not ct and not pet:
        raise DicomError("nothing to convert: give a CT folder, a PET folder or both")
    record: dict[str, Any] = {"converter": "cocoseg_monai.dicom", "version": __version__, "warnings": []}
    outputs = []
    if ct:
        ct_volume = read_ct(ct, ct_series)
        array = ct_volume.array.astype(np.int16) if _integral_int16(ct_volume.array) else ct_volume.array
        outputs.append(("ct.nii.gz", array, ct_volume.affine))
        record["ct"] = {**series_record(ct_volume), "file": "ct.nii.gz", "units": "HU"}
        record["warnings"] += [f"CT: {w}" for w in ct_volume.warnings]
    if pet:
        pet_volume, suv = read_pet_suv(pet, pet_series, overrides, kind)
        outputs.append(("pet.nii.gz", pet_volume.array, pet_volume.affine))
        record["pet"] = {**series_record(pet_volume), "file": "pet.nii.gz",
                         "units": "SUV body weight" if kind == "bw" else "SUL (lean body mass)", "suv": suv.to_json()}
        record["warnings"] += [f"PET: {w}" for w in (*pet_volume.warnings, *suv.warnings)]
    if ct and pet:
        for key, name in (("study_instance_uid", "StudyInstanceUID"), ("frame_of_reference_uid", "FrameOfReferenceUID")):
            if record["ct"][key] != record["pet"][key]:
                record["warnings"].append(
                    f"CT and PET differ in {name} ({record['ct'][key]} and {record['pet'][key]}): they are placed "
                    "in the world by their own positions, which is right only if both come from one PET/CT scan"
                )
    out = Path(out_dir)
    for name, array, affine in outputs:
        atomic_write_nifti(out / name, array, affine)
    atomic_write_json(out / "conversion.json", record)
    return record
