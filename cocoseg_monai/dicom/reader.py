"""A MONAI :class:`~monai.data.ImageReader` for DICOM series folders: ``LoadImage`` of a folder
gives the CT in HU or the PET in SUV through the same conversion as ``cocoseg convert``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from cocoseg_monai.errors import DicomError

from .convert import read_ct, read_pet_suv
from .series import SeriesVolume
from .suv import SUV_KINDS, SUVOverrides

__all__ = ["DICOM_OPTIONS", "DicomSeriesReader", "reader_args"]

#: the DICOM settings of inference (``inference.yaml``'s ``dicom``, ``cocoseg infer``'s flags)
DICOM_OPTIONS = ("ct_series", "pet_series", "weight_kg", "dose_mbq", "injection_time", "height_m", "sex", "suv")


def reader_args(options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The :class:`DicomSeriesReader` arguments of the CT and of the PET (keys ``"CT"``,
    ``"PT"``) from the DICOM settings ``options`` (keys of :data:`DICOM_OPTIONS`; empty or None
    values are not set)."""
    given = {k: v for k, v in dict(options or {}).items() if v not in (None, "")}
    unknown = sorted(set(given) - set(DICOM_OPTIONS))
    if unknown:
        raise ValueError(f"unknown DICOM setting(s) {unknown}; known: {list(DICOM_OPTIONS)}")
    fields = {k: given[k] for k in ("weight_kg", "dose_mbq", "injection_time", "height_m", "sex") if k in given}
    return {
        "CT": {"modality": "CT", "series_uid": given.get("ct_series")},
        "PT": {"modality": "PT", "series_uid": given.get("pet_series"), "suv": given.get("suv", "bw"),
               "overrides": SUVOverrides(**fields) if fields else None},
    }


class DicomSeriesReader(ImageReader):
    """Read one CT or PET series from a folder (see :mod:`cocoseg_monai.dicom.series`).

    Output array ``(x, y, z)`` float32 with the RAS+ affine in the meta (``space`` RAS), as
    MONAI's NIfTI reader gives, plus ``series_instance_uid`` and, for PET, ``suv_factor``.

    Parameters
    ----------
    modality
        ``"CT"`` (values in HU) or ``"PT"`` (values in SUV).
    series_uid
        The SeriesInstanceUID to read where the folder holds several series of the modality.
    overrides
        PET only: values that replace or supply the header's weight, dose, injection time.
    suv
        PET only: ``"bw"`` (body weight) or ``"lbm"`` (lean body mass, SUL).
    """

    def __init__(self, modality: str = "CT", series_uid: str | None = None,
                 overrides: SUVOverrides | None = None, suv: str = "bw") -> None:
        super().__init__()
        if modality not in ("CT", "PT"):
            raise ValueError(f"modality must be 'CT' or 'PT', got {modality!r}")
        if suv not in SUV_KINDS:
            raise ValueError(f"suv must be one of {SUV_KINDS}, got {suv!r}")
        self.modality, self.series_uid, self.overrides, self.suv = modality, series_uid or None, overrides, suv

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        """A series is a folder."""
        return all(os.path.isdir(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str] | str, **kwargs: Any) -> tuple[SeriesVolume, float | None]:
        paths = ensure_tuple(data)
        if len(paths) != 1:
            raise DicomError(f"one series folder at a time, got {len(paths)}: {list(paths)}")
        if self.modality == "CT":
            return read_ct(paths[0], self.series_uid), None
        volume, suv = read_pet_suv(paths[0], self.series_uid, self.overrides, self.suv)
        return volume, suv.factor

    def get_data(self, img: tuple[SeriesVolume, float | None]) -> tuple[np.ndarray, dict]:
        volume, factor = img
        meta: dict[str, Any] = {
            MetaKeys.AFFINE: volume.affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: volume.affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(volume.array.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            "series_instance_uid": volume.info.uid,
        }
        if factor is not None:
            meta["suv_factor"] = float(factor)
        return volume.array, meta
