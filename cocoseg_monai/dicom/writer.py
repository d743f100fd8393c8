"""Writing a volume as a single-frame CT or PET series, stored the way scanners store one.

The project reads DICOM from scanners; this module writes such series from arrays, so that the
readers can be tested on data whose true values and geometry are known, and so that the phantom
(:mod:`cocoseg_monai.data.phantom`) can be delivered as DICOM.

- **Geometry.** The volume is an ``(x, y, z)`` array as nibabel and MONAI hold a NIfTI image:
  ``x`` runs along a row (the column index), ``y`` down the columns (the row index), ``z`` over the
  slices, with a RAS+ voxel-to-world affine in mm. DICOM uses LPS, the same axes with x and y
  negated. Slice ``k`` is the file with InstanceNumber ``k + 1``; its frame is
  ``volume[:, :, k].T`` (rows x columns); ImagePositionPatient is the LPS position of voxel
  ``(0, 0, k)``; ImageOrientationPatient the LPS unit vectors of the ``x`` then the ``y`` axis;
  PixelSpacing ``[row spacing, column spacing]`` (the lengths of the affine's ``y`` and ``x``
  columns). Any rotation or flip is written as it is; a slice axis that is not perpendicular to
  the slice plane (a gantry tilt) is carried by the positions.
- **CT.** Values are integer HU, stored unsigned 16-bit with RescaleIntercept -1024 and
  RescaleSlope 1 (RescaleType HU), as most CT scanners store them.
- **PET.** Values are activity concentrations (for example Bq/ml), stored signed 16-bit with
  RescaleIntercept 0 and a RescaleSlope of each slice's own, which maps the slice's largest
  absolute value to 32767 (an all-zero slice gets slope 1). The round trip error of a value is at
  most half the slice's slope. The PET attributes that give the values their meaning (Units,
  DecayCorrection, CorrectedImage, RadiopharmaceuticalInformationSequence, ...) are the caller's,
  through ``series``: a writer of test data must be able to leave them out.
- **Files.** DICOM Part 10 files with file meta information, Explicit VR Little Endian or a
  lossless compressed transfer syntax (:data:`COMPRESSED_TRANSFER_SYNTAXES`), each written
  atomically. Every slice is encoded before the first file is written, so an encoder that refuses
  the data leaves no half series behind.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, Sequence
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from cocoseg_monai.atomic import atomic_write

__all__ = [
    "COMPRESSED_TRANSFER_SYNTAXES",
    "CT_RESCALE_INTERCEPT",
    "PET_STORED_MAX",
    "MANUFACTURER",
    "write_series",
]

#: The lossless transfer syntaxes :func:`write_series` can compress to (pydicom's own RLE
#: encoder, pylibjpeg-openjpeg for JPEG 2000, pyjpegls for JPEG-LS).
COMPRESSED_TRANSFER_SYNTAXES = (RLELossless, JPEG2000Lossless, JPEGLSLossless)
#: CT: ``HU = stored + CT_RESCALE_INTERCEPT``, stored unsigned 16-bit.
CT_RESCALE_INTERCEPT = -1024
#: PET: each slice's largest absolute value is stored as this (signed 16-bit).
PET_STORED_MAX = 32767
#: Manufacturer (0008,0070) of every file written here.
MANUFACTURER = "CoCoSeg phantom"

_SOP_CLASSES = {"CT": CTImageStorage, "PT": PositronEmissionTomographyImageStorage}
_PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1")
_RESCALE = ("fixed",)
# Set by write_series from the volume, the affine, the modality and the slice index; study and
# series may not give them (per_slice may, to write an inconsistent series on purpose).
_DERIVED = frozenset({
    "SOPClassUID", "SOPInstanceUID", "Modality", "InstanceNumber", "ImageIndex", "NumberOfSlices",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceLocation",
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "RescaleIntercept", "RescaleSlope",
    "RescaleType", "PixelData",
})
# Relative tolerance on the perpendicularity of the row and column directions.
_ORTHOGONAL_TOL = 1e-6


def write_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: str | os.PathLike,
    modality: str,
    *,
    study: Mapping[str, Any],
    series: Mapping[str, Any] | None = None,
    rescale: str = "fixed",
    transfer_syntax: str | None = None,
    photometric: str = "MONOCHROME2",
    name_pattern: str = "{modality}_{index:04d}.dcm",
    per_slice: Callable[[int], Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write ``volume`` as one file per slice into ``folder``.

    Parameters
    ----------
    volume
        Real ``(x, y, z)`` array (see the module docstring for the axes). CT: integer HU in
        ``[-1024, 64511]``. PT: finite activity values.
    affine
        4 x 4 RAS+ voxel-to-world affine in mm. The ``x`` and ``y`` axes must be perpendicular
        (DICOM has no in-plane shear); the ``z`` axis must leave the slice plane.
    folder
        Output folder; created if missing. Files of the same names are replaced.
    modality
        ``"CT"`` (CT Image Storage) or ``"PT"`` (Positron Emission Tomography Image Storage).
    study
        Patient and study attributes, DICOM keyword -> value, copied onto every file: PatientName,
        PatientID, PatientSex, PatientWeight, StudyInstanceUID, StudyDate, FrameOfReferenceUID,
        ... StudyInstanceUID and FrameOfReferenceUID are generated when missing: give them to put
        several series in one study and one frame of reference.
    series
        Series attributes, copied after ``study``: SeriesInstanceUID (generated when missing),
        SeriesNumber, dates and times and, for PET, Units, DecayCorrection, CorrectedImage,
        RadiopharmaceuticalInformationSequence, ...
    rescale
        How stored values relate to ``volume``; ``"fixed"``, the scanner convention of the
        module docstring, is the only mode.
    transfer_syntax
        ``None`` for Explicit VR Little Endian, or a UID of
        :data:`COMPRESSED_TRANSFER_SYNTAXES`. pylibjpeg-openjpeg encodes JPEG 2000 with six
        wavelet resolutions and so refuses frames under 32 x 32 pixels.
    photometric
        ``"MONOCHROME2"`` or ``"MONOCHROME1"``. Only the PhotometricInterpretation attribute
        differs: the stored values are the same (MONOCHROME1 is a display instruction).
    name_pattern
        File name; ``{modality}`` and ``{index}`` (the 1-based InstanceNumber) are filled in.
    per_slice
        Called with each 0-based slice index ``k``; the attributes it returns are set on that
        slice last, over everything else (for example an AcquisitionTime per bed position, or
        deliberately wrong values to test a reader).

    Returns
    -------
    list of Path
        The files, in slice order (``z`` index 0 first).

    Raises
    ------
    ValueError
        An argument that cannot be written, named in the message: an unknown modality,
        photometric interpretation, rescale mode or transfer syntax, a volume that is not 3-D,
        CT values that are not integers in range, non-finite values, an affine DICOM cannot
        describe, a keyword that is not DICOM or that ``write_series`` sets itself, a name
        pattern that does not give one distinct plain file name per slice, or data the encoder
        of ``transfer_syntax`` refuses.

    Notes
    -----
    A value of ``None`` in ``study``, ``series`` or ``per_slice``'s result removes the attribute.
    A list of mappings given for a sequence (SQ) attribute becomes a sequence of items; floats
    given for decimal strings (DS) are written with at most the 16 characters DS allows. Every
    SOPInstanceUID is derived from the SeriesInstanceUID and the slice index, so a series written
    twice with the same given UIDs has the same UIDs.
    """
    if modality not in _SOP_CLASSES:
        raise ValueError(f"modality must be one of {tuple(_SOP_CLASSES)}, got {modality!r}")
    if photometric not in _PHOTOMETRIC:
        raise ValueError(f"photometric must be one of {_PHOTOMETRIC}, got {photometric!r}")
    if rescale not in _RESCALE:
        raise ValueError(f"rescale must be one of {_RESCALE}, got {rescale!r}")
    if transfer_syntax is not None and transfer_syntax not in COMPRESSED_TRANSFER_SYNTAXES:
        names = ", ".join(f"{uid} ({uid.name})" for uid in COMPRESSED_TRANSFER_SYNTAXES)
        raise ValueError(f"transfer_syntax must be None (Explicit VR Little Endian) or one of {names}; "
                         f"got {transfer_syntax!r}")
    volume = np.asarray(volume)
    if volume.ndim != 3 or 0 in volume.shape:
        raise ValueError(f"volume must be a non-empty 3-D (x, y, z) array, got shape {volume.shape}")
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise ValueError(f"volume must hold real numbers, got dtype {volume.dtype}")
    series = {} if series is None else series
    for where, attrs in (("study", study), ("series", series)):
        _check_keywords(attrs, where)
    names = _file_names(name_pattern, modality, volume.shape[2])
    positions, orientation, pixel_spacing, slice_spacing, normal = _geometry(affine, volume.shape[2])
    stored, slopes = _stored_values(volume.astype(np.float64), modality)

    shared = Dataset()
    for keyword, value in _defaults(modality, volume.shape, orientation, pixel_spacing, slice_spacing,
                                    photometric).items():
        _set(shared, keyword, value, "write_series")
    for where, attrs in (("study", study), ("series", series)):
        for keyword, value in attrs.items():
            _set(shared, keyword, value, where)
    series_uid = str(shared.SeriesInstanceUID)

    datasets = []
    for k in range(volume.shape[2]):
        ds = copy.deepcopy(shared)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in positions[k]]
        ds.SliceLocation = format_number_as_ds(float(positions[k] @ normal))
        ds.RescaleSlope = slopes[k]
        if modality == "PT":
            ds.ImageIndex = k + 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        if per_slice is not None:
            for keyword, value in per_slice(k).items():
                _set(ds, keyword, value, f"per_slice({k})")
        ds.file_meta = _file_meta(ds)
        if transfer_syntax is not None:
            try:
                ds.compress(transfer_syntax, generate_instance_uid=False)
            except RuntimeError as e:
                raise ValueError(f"transfer_syntax {UID(transfer_syntax).name}: the encoder refused slice "
                                 f"{k} ({ds.Rows} x {ds.Columns} pixels): {e}") from e
        datasets.append(ds)

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds, name in zip(datasets, names):
        path = out / name
        with atomic_write(path, "wb") as f:
            ds.save_as(f, enforce_file_format=True)
        paths.append(path)
    return paths


def _check_keywords(attrs: Mapping[str, Any], where: str) -> None:
    for keyword in attrs:
        if keyword not in keyword_dict:
            raise ValueError(f"{where}: {keyword!r} is not a DICOM keyword")
        if keyword in _DERIVED:
            raise ValueError(f"{where}: {keyword} is set by write_series from the volume, the affine "
                             f"and the slice index; per_slice may override it")


def _file_names(pattern: str, modality: str, n: int) -> list[str]:
    try:
        names = [pattern.format(modality=modality, index=k + 1) for k in range(n)]
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"name_pattern {pattern!r} takes only {{modality}} and {{index}}: {e}") from e
    if len(set(names)) != n:
        raise ValueError(f"name_pattern {pattern!r} gives the same name to several slices; use {{index}}")
    bad = [name for name in names if not name or Path(name).name != name or name.startswith(".")]
    if bad:
        raise ValueError(f"name_pattern {pattern!r} must give plain file names, got {bad[0]!r}")
    return names


def _geometry(affine: Any, nz: int) -> tuple[np.ndarray, list[float], list[float], float, np.ndarray]:
    """Slice positions ``(nz, 3)``, ImageOrientationPatient, PixelSpacing, the distance between
    slice planes and the slice normal, all in LPS."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ValueError(f"affine must be a finite 4 x 4 matrix, got shape {a.shape}")
    lps = np.diag([-1.0, -1.0, 1.0]) @ a[:3]
    axes, origin = lps[:, :3], lps[:, 3]
    lengths = np.linalg.norm(axes, axis=0)
    if not (lengths > 0).all():
        raise ValueError(f"affine: every axis must have a non-zero length, got {lengths.tolist()} mm")
    row_dir, col_dir = axes[:, 0] / lengths[0], axes[:, 1] / lengths[1]
    if abs(float(row_dir @ col_dir)) > _ORTHOGONAL_TOL:
        raise ValueError("affine: the x and y axes must be perpendicular (DICOM cannot store an "
                         f"in-plane shear), their directions make {np.degrees(np.arccos(row_dir @ col_dir)):.4f} deg")
    normal = np.cross(row_dir, col_dir)
    slice_spacing = abs(float(axes[:, 2] @ normal))
    if slice_spacing <= _ORTHOGONAL_TOL * lengths[2]:
        raise ValueError("affine: the z axis lies in the slice plane")
    positions = origin[None, :] + np.arange(nz)[:, None] * axes[:, 2][None, :]
    orientation = [*row_dir.tolist(), *col_dir.tolist()]
    return positions, orientation, [float(lengths[1]), float(lengths[0])], slice_spacing, normal


def _stored_values(values: np.ndarray, modality: str) -> tuple[np.ndarray, list[str]]:
    """Stored integers ``(x, y, z)`` and each slice's RescaleSlope as written (a DS string)."""
    if not np.isfinite(values).all():
        raise ValueError("volume must be finite (no NaN or infinity)")
    if modality == "CT":
        lo, hi = CT_RESCALE_INTERCEPT, CT_RESCALE_INTERCEPT + 65535
        rule = (f"volume: CT values must be integer HU in [{lo}, {hi}] (stored unsigned 16-bit with "
                f"RescaleIntercept {lo})")
        if not np.array_equal(values, np.rint(values)):
            raise ValueError(f"{rule}, got fractional values")
        if values.min() < lo or values.max() > hi:
            raise ValueError(f"{rule}, got values in [{values.min():g}, {values.max():g}]")
        return (values - CT_RESCALE_INTERCEPT).astype("<u2"), ["1"] * values.shape[2]
    stored = np.empty(values.shape, dtype="<i2")
    slopes = []
    for k in range(values.shape[2]):
        peak = float(np.abs(values[:, :, k]).max())
        # The slope a reader gets is the written decimal string: quantise with that one.
        slope = format_number_as_ds(peak / PET_STORED_MAX) if peak > 0 else "1"
        stored[:, :, k] = np.rint(values[:, :, k] / float(slope))
        slopes.append(slope)
    return stored, slopes


def _defaults(modality: str, shape: tuple[int, ...], orientation: list[float], pixel_spacing: list[float],
              slice_spacing: float, photometric: str) -> dict[str, Any]:
    """Attributes shared by every slice before ``study`` and ``series``: the required ones of the
    image's IOD, empty where DICOM allows an empty (type 2) value."""
    attrs: dict[str, Any] = {
        "SOPClassUID": _SOP_CLASSES[modality],
        "Modality": modality,
        "PatientName": "", "PatientID": "", "PatientBirthDate": "", "PatientSex": "",
        "StudyInstanceUID": generate_uid(), "StudyDate": "", "StudyTime": "",
        "ReferringPhysicianName": "", "StudyID": "", "AccessionNumber": "",
        "SeriesInstanceUID": generate_uid(), "SeriesNumber": 1, "PatientPosition": "HFS",
        "FrameOfReferenceUID": generate_uid(), "PositionReferenceIndicator": "",
        "Manufacturer": MANUFACTURER,
        "ImageOrientationPatient": [format_number_as_ds(v) for v in orientation],
        "PixelSpacing": [format_number_as_ds(v) for v in pixel_spacing],
        "SliceThickness": format_number_as_ds(slice_spacing),
        "SpacingBetweenSlices": format_number_as_ds(slice_spacing),
        "Rows": shape[1], "Columns": shape[0],
        "SamplesPerPixel": 1, "PhotometricInterpretation": photometric,
        "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
    }
    if modality == "CT":
        attrs.update(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], PixelRepresentation=0,
                     RescaleIntercept=str(CT_RESCALE_INTERCEPT), RescaleType="HU", KVP="",
                     AcquisitionNumber=1)
    else:
        attrs.update(ImageType=["ORIGINAL", "PRIMARY"], PixelRepresentation=1, RescaleIntercept="0",
                     SeriesType=["WHOLE BODY", "IMAGE"], CountsSource="EMISSION",
                     NumberOfSlices=shape[2])
    return attrs


def _set(ds: Dataset, keyword: str, value: Any, where: str) -> None:
    """Set ``keyword`` on ``ds`` (``None``: remove it), converting sequences and numbers."""
    if keyword not in keyword_dict:
        raise ValueError(f"{where}: {keyword!r} is not a DICOM keyword")
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    setattr(ds, keyword, _element_value(keyword, value, where))


def _element_value(keyword: str, value: Any, where: str) -> Any:
    vr = dictionary_VR(keyword)
    if vr == "SQ":
        if isinstance(value, (Mapping, Dataset)):
            value = [value]
        items = []
        for item in value:
            if isinstance(item, Dataset):
                items.append(item)
                continue
            if not isinstance(item, Mapping):
                raise ValueError(f"{where}: {keyword} is a sequence; give a list of keyword -> value "
                                 f"mappings, got an item {item!r}")
            ds = Dataset()
            for key, val in item.items():
                _set(ds, key, val, f"{where}: {keyword}")
            items.append(ds)
        return Sequence(items)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if vr == "DS":
        if isinstance(value, (list, tuple)):
            return [v if isinstance(v, str) else format_number_as_ds(float(v)) for v in value]
        if not isinstance(value, str):
            return format_number_as_ds(float(value))
    if isinstance(value, (list, tuple)):
        return [v.item() if isinstance(v, np.generic) else v for v in value]
    return value


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta
