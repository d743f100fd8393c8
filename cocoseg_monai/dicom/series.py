"""Reading a CT or PET series from a folder of DICOM files, as the standard has it.

- **Finding series.** Every file under the folder is read up to its pixel data; files that are
  not DICOM, and DICOM objects that are not CT or PET images (structured reports, SEGs, DICOMDIRs),
  are passed over. Image files are grouped by SeriesInstanceUID and selected by Modality (``CT``,
  ``PT``); when a folder holds several series of the modality, the error lists them (UID,
  description, number of files) and the caller chooses one by UID.
- **Ordering and spacing.** Slices are ordered by their ImagePositionPatient projected onto the
  normal of ImageOrientationPatient (the cross product of its row and column directions), never
  by InstanceNumber or file name. The slice spacing is the distance between those positions:
  SliceThickness is the reconstructed thickness, which overlapping or gapped reconstructions set
  apart from the spacing.
- **Refused, naming the files:** slices of different orientation, matrix or pixel spacing; two
  different images at one position; a gap where slices are missing; spacing that varies by more
  than :data:`SPACING_TOLERANCE` of the step (the volume would be placed wrongly); multi-frame
  objects (one file per slice is what CT and PET scanners write).
- **Warned, since the data is still placed correctly:** a file that repeats an image already read
  (same SOPInstanceUID, or the same pixels at the same position), which is dropped; positions that
  step sideways as well as along the normal (a gantry tilt), which the affine then carries.
- **Pixel values.** Stored values times each slice's own RescaleSlope plus its RescaleIntercept
  (PET scanners scale every slice separately). MONOCHROME1 is a display instruction and is not
  applied: the values are HU or activity either way. Compressed transfer syntaxes (RLE, JPEG
  2000, JPEG-LS, JPEG) are decoded by pydicom's own RLE decoder and the pylibjpeg, openjpeg and
  pyjpegls plugins.

The volume comes out as MONAI and nibabel hold a NIfTI image: an ``(x, y, z)`` array where ``x``
runs along a row (the column index), ``y`` down the columns (the row index) and ``z`` over the
ordered slices, with a RAS+ voxel-to-world affine in mm (DICOM's LPS with the first two axes
negated).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cocoseg_monai.errors import DicomError

from .common import attribute

__all__ = [
    "IMAGE_SOP_CLASSES",
    "SPACING_TOLERANCE",
    "SeriesInfo",
    "SeriesVolume",
    "find_series",
    "select_series",
    "load_series",
    "read_series",
]

#: SOP classes read as images, by modality (single-frame CT and PET; the enhanced multi-frame
#: classes are recognised so that they are refused by name rather than passed over)
IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
#: largest departure of a slice from the regular grid, as a fraction of the slice step, that is
#: taken as rounding in the positions rather than as uneven spacing
SPACING_TOLERANCE = 0.01
#: largest difference between two slices' orientation cosines taken as the same orientation
_ORIENTATION_TOLERANCE = 1e-4
_HEADER_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber",
    "StudyInstanceUID", "FrameOfReferenceUID", "NumberOfFrames",
)


@dataclass
class SeriesInfo:
    """One series found in a folder: its identity and its files (in no particular order)."""

    uid: str
    modality: str
    description: str
    number: int | None
    study_uid: str
    frame_of_reference_uid: str
    files: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        """One line for error messages: UID, modality, description and number of files."""
        return f"{self.uid} ({self.modality}, {self.description or 'no description'!r}, {len(self.files)} files)"


@dataclass
class SeriesVolume:
    """A series read into one volume.

    Attributes
    ----------
    array
        float32 ``(x, y, z)`` values after each slice's rescale (HU, Bq/ml, ...).
    affine
        4 x 4 RAS+ voxel-to-world affine (mm).
    headers
        The slices' datasets in slice order, pixel data removed.
    files
        The slices' files in slice order.
    info
        The series as found.
    warnings
        What was accepted but worth knowing (duplicates dropped, gantry tilt).
    """

    array: np.ndarray
    affine: np.ndarray
    headers: list[Any]
    files: list[Path]
    info: SeriesInfo
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm ``(x, y, z)``: the lengths of the affine's columns."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def _files_under(folder: Path) -> Iterable[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and name.upper() != "DICOMDIR":
                yield Path(root, name)


def find_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """The CT and PET image series in the files under ``folder`` (searched recursively).

    Raises
    ------
    DicomError
        ``folder`` is not a folder.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    if not root.is_dir():
        raise DicomError(f"{root}: not a folder of DICOM files")
    series: dict[str, SeriesInfo] = {}
    for path in _files_under(root):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue  # not a DICOM file (or not a readable one): a folder may hold notes, exports, ...
        if str(ds.get("SOPClassUID", "")) not in IMAGE_SOP_CLASSES or "SeriesInstanceUID" not in ds:
            continue
        uid = str(ds.SeriesInstanceUID)
        if uid not in series:
            number = ds.get("SeriesNumber", None)
            series[uid] = SeriesInfo(
                uid=uid,
                modality=str(ds.get("Modality", "")),
                description=str(ds.get("SeriesDescription", "")),
                number=int(number) if number not in (None, "") else None,
                study_uid=str(ds.get("StudyInstanceUID", "")),
                frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
            )
        series[uid].files.append(path)
    return sorted(series.values(), key=lambda s: (s.modality, s.number if s.number is not None else -1, s.uid))


def select_series(series: Sequence[SeriesInfo], modality: str, uid: str | None = None,
                  where: str = "", flag: str = "series_uid") -> SeriesInfo:
    """The one series of ``modality`` (``"CT"`` or ``"PT"``) in ``series``, or the one whose UID is
    ``uid``.

    Raises
    ------
    DicomError
        None of that modality, several without ``uid`` (listing them, and ``flag`` to choose),
        or ``uid`` not among them.
    """
    candidates = [s for s in series if s.modality == modality]
    found = "; ".join(s.describe() for s in series) or "no CT or PET image series"
    prefix = f"{where}: " if where else ""
    if uid:
        chosen = [s for s in series if s.uid == uid]
        if not chosen:
            raise DicomError(f"{prefix}no series with SeriesInstanceUID {uid}; found: {found}")
        if chosen[0].modality != modality:
            raise DicomError(f"{prefix}series {uid} is {chosen[0].modality}, not {modality}")
        return chosen[0]
    if not candidates:
        raise DicomError(f"{prefix}no {modality} series; found: {found}")
    if len(candidates) > 1:
        listed = "; ".join(s.describe() for s in candidates)
        raise DicomError(f"{prefix}{len(candidates)} {modality} series, choose one with {flag}: {listed}")
    return candidates[0]


def _vector(ds: Any, keyword: str, n: int, path: Path) -> np.ndarray:
    value = attribute(ds, keyword, str(path))
    try:
        v = np.array([float(x) for x in value], dtype=np.float64)
    except (TypeError, ValueError):
        v = np.array([])
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise DicomError(f"{path}: DICOM attribute {keyword} must hold {n} numbers, got {value!r}")
    return v


def _check_same(files: Sequence[Path], values: Sequence[Any], what: str, same: Any) -> None:
    for ds_path, value in zip(files[1:], values[1:]):
        if not same(value, values[0]):
            raise DicomError(f"slices of one series differ in {what}: {files[0]} has {_show(values[0])}, "
                             f"{ds_path} has {_show(value)}")


def _show(value: Any) -> str:
    return str([round(float(v), 6) for v in value]) if isinstance(value, np.ndarray) else str(value)


def _decode(ds: Any, path: Path) -> np.ndarray:
    try:
        stored = ds.pixel_array
    except Exception as e:  # pydicom raises RuntimeError/NotImplementedError/ValueError by case
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise DicomError(f"{path}: cannot decode the pixel data (transfer syntax {name}): {e}") from e
    if stored.ndim != 2:
        raise DicomError(f"{path}: expected one greyscale frame, got pixel data of shape {stored.shape}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def _order(headers: list[Any], files: list[Path], normal: np.ndarray, warnings: list[str]) -> tuple[list[Any], list[Path], np.ndarray]:
    """Slices sorted along ``normal``; repeats of an image dropped (warned), two images at one
    position refused."""
    positions = [_vector(ds, "ImagePositionPatient", 3, p) for ds, p in zip(headers, files)]
    order = np.argsort([float(pos @ normal) for pos in positions], kind="stable")
    headers, files = [headers[i] for i in order], [files[i] for i in order]
    positions = np.array([positions[i] for i in order])
    keep = [0]
    for i in range(1, len(headers)):
        j = keep[-1]
        if np.linalg.norm(positions[i] - positions[j]) > 1e-3:
            keep.append(i)
            continue
        a, b = headers[i], headers[j]
        if str(a.get("SOPInstanceUID", "")) == str(b.get("SOPInstanceUID", "")) or np.array_equal(
            _decode(a, files[i]), _decode(b, files[j])
        ):
            warnings.append(f"{files[i]} repeats the image of {files[j]} (same position and "
                            f"{'SOPInstanceUID' if a.get('SOPInstanceUID') == b.get('SOPInstanceUID') else 'pixels'}); "
                            "it was left out")
            continue
        raise DicomError(f"two different images at one position {_show(positions[i])}: {files[j]} and {files[i]}")
    return [headers[i] for i in keep], [files[i] for i in keep], positions[keep]


def _slice_step(positions: np.ndarray, normal: np.ndarray, files: Sequence[Path], ds0: Any,
                warnings: list[str]) -> np.ndarray:
    """The world vector from one slice to the next; refuses gaps and uneven spacing."""
    if len(positions) == 1:
        thickness = float(ds0.get("SpacingBetweenSlices", 0) or ds0.get("SliceThickness", 0) or 0)
        if not thickness > 0:
            raise DicomError(f"{files[0]}: a single slice without SpacingBetweenSlices or SliceThickness "
                             "has no slice spacing")
        return normal * thickness
    along = (positions - positions[0]) @ normal
    gaps = np.diff(along)
    step = float(np.median(gaps))
    # each slice's departure from the regular grid through the first and last slice
    n = len(positions)
    regular = along[0] + (along[-1] - along[0]) * np.arange(n) / (n - 1)
    off = np.abs(along - regular)
    if off.max() > SPACING_TOLERANCE * step:
        k = int(np.argmax(np.abs(gaps - step)))
        ratio = gaps[k] / step
        if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
            raise DicomError(f"{round(ratio) - 1} slice(s) missing between {files[k]} and {files[k + 1]} "
                             f"({gaps[k]:.3f} mm apart where the series steps {step:.3f} mm)")
        raise DicomError(f"uneven slice spacing: {files[k]} and {files[k + 1]} are {gaps[k]:.3f} mm apart "
                         f"where the series steps {step:.3f} mm; the slices cannot be placed on one grid")
    vector = (positions[-1] - positions[0]) / (n - 1)
    sideways = np.linalg.norm(vector - (vector @ normal) * normal)
    if sideways > 1e-3 * abs(step):
        angle = np.degrees(np.arctan2(sideways, abs(vector @ normal)))
        warnings.append(f"the slices step {sideways:.3f} mm sideways per slice (a gantry tilt of "
                        f"{angle:.2f} degrees); the affine is sheared to place them correctly")
    return vector


def load_series(info: SeriesInfo) -> SeriesVolume:
    """Read the files of ``info`` into one ordered, rescaled volume (see the module docstring).

    Raises
    ------
    DicomError
        Naming the files: multi-frame objects, mixed orientation, matrix or pixel spacing,
        different images at one position, missing slices, uneven spacing, undecodable pixels.
    """
    import pydicom

    if not info.files:
        raise DicomError(f"series {info.uid} has no files")
    headers, files = [], []
    for path in info.files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as e:
            raise DicomError(f"{path}: cannot read the DICOM file: {e}") from e
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DicomError(f"{path}: multi-frame {IMAGE_SOP_CLASSES.get(str(ds.SOPClassUID), 'image')} "
                             "is not supported; export the series as one file per slice")
        headers.append(ds)
        files.append(Path(path))
    orientations = [_vector(ds, "ImageOrientationPatient", 6, p) for ds, p in zip(headers, files)]
    _check_same(files, orientations, "ImageOrientationPatient",
                lambda a, b: np.abs(a - b).max() <= _ORIENTATION_TOLERANCE)
    _check_same(files, [(int(attribute(ds, "Rows", str(p))), int(attribute(ds, "Columns", str(p))))
                                 for ds, p in zip(headers, files)], "matrix (Rows, Columns)", lambda a, b: a == b)
    pixel = [_vector(ds, "PixelSpacing", 2, p) for ds, p in zip(headers, files)]
    _check_same(files, pixel, "PixelSpacing", lambda a, b: np.abs(a - b).max() <= 1e-4 * max(a.max(), 1.0))
    row_dir, col_dir = orientations[0][:3], orientations[0][3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 or abs(row_dir @ col_dir) > 1e-3:
        raise DicomError(f"{files[0]}: ImageOrientationPatient {_show(orientations[0])} is not two unit, "
                         "orthogonal directions")
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    warnings: list[str] = []
    headers, files, positions = _order(headers, files, normal, warnings)
    step = _slice_step(positions, normal, files, headers[0], warnings)
    row_spacing, col_spacing = pixel[0]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # x: along a row, one column to the next
    lps[:3, 1] = col_dir * row_spacing  # y: down a column, one row to the next
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    array = np.empty((int(headers[0].Columns), int(headers[0].Rows), len(headers)), dtype=np.float32)
    for k, (ds, path) in enumerate(zip(headers, files)):
        array[:, :, k] = _decode(ds, path).T
        del ds.PixelData  # the headers are kept; the pixels live in the array
    return SeriesVolume(array=array, affine=affine, headers=headers, files=files, info=info, warnings=warnings)


def read_series(folder: str | os.PathLike, modality: str, uid: str | None = None,
                flag: str = "series_uid") -> SeriesVolume:
    """:func:`find_series`, :func:`select_series` and :func:`load_series` in one call."""
    return load_series(select_series(find_series(folder), modality, uid, where=str(folder), flag=flag))
