"""A phantom study as a PET/CT scanner delivers it: a CT and a PET series in DICOM, with the
patient, dose and times that body-weight SUV needs, and ``dicom.json`` recording what was written.

The series themselves are written by :func:`cocoseg_monai.dicom.writer.write_series`; this module
decides what goes into them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cocoseg_monai.atomic import atomic_write_json

from .config import PHANTOM_VERSION
from .generate import PhantomStudy

__all__ = ["DICOM_JSON", "write_study_dicom"]


# The DICOM study's acquisition: FDG injected at 09:00, the CT a few minutes before the PET, one
# PET bed position of three minutes.
_F18_HALF_LIFE_S = 6586.2
_INJECTION = dt.datetime(2026, 1, 15, 9, 0, 0)
_CT_LEAD_S = 300
_PET_FRAME_MS = 180_000
DICOM_JSON = "dicom.json"


def _dicom_uid(study: PhantomStudy, what: str) -> str:
    """A UID that the same patient of the same data set (seed, index, configuration) always gets."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[
        "cocoseg_monai.data.phantom", PHANTOM_VERSION, str(study.seed), str(study.index),
        json.dumps(study.config.to_dict(), sort_keys=True), what,
    ])


def _da(t: dt.datetime) -> str:
    return f"{t:%Y%m%d}"


def _tm(t: dt.datetime) -> str:
    return f"{t:%H%M%S}.{t.microsecond // 10_000:02d}"


def _series_times(t: dt.datetime) -> dict[str, str]:
    """SeriesDate/Time, AcquisitionDate/Time and ContentDate/Time, all ``t``."""
    return {f"{what}{part}": f(t) for what in ("Series", "Acquisition", "Content")
            for part, f in (("Date", _da), ("Time", _tm))}


def _rows_anterior_first(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels at the same places with the ``y`` axis reversed: the phantom's ``y`` runs
    posterior to anterior, a scanner's image rows run anterior to posterior."""
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1.0, array.shape[1] - 1
    return array[:, ::-1, :], affine @ flip


def write_study_dicom(study: PhantomStudy, folder: str | os.PathLike, *, transfer_syntax: str | None = None,
                      scan_time: dt.datetime | None = None) -> dict[str, Any]:
    """Write one study as a PET/CT scanner delivers it: a CT and a PET series in DICOM.

    ``folder/CT/CT_{num}.dcm`` holds :attr:`PhantomStudy.ct_hu` (HU) on the CT grid and
    ``folder/PET/PT_{num}.dcm`` :attr:`PhantomStudy.pet_suv_coarse` on the coarse PET grid, as
    activity concentration (Units ``BQML``) decay-corrected to the series start:
    ``Bq/ml = SUV * decayed_dose / weight_g``, ``decayed_dose = dose * 2 ** (-(series_time -
    injection_time) / half_life)``, which is what a body-weight SUV computed from the files undoes.
    Both series share one study, one frame of reference and the patient attributes; the files are
    written by :func:`cocoseg_monai.dicom.writer.write_series` (number ``num`` = InstanceNumber,
    slice ``z`` index + 1). The images are stored as a scanner stores an axial series, row 0 the
    most anterior and column 0 the patient's right (ImageOrientationPatient ``1\\0\\0\\0\\1\\0``),
    so viewers show them upright: a reader returns the phantom's arrays with the ``y`` axis
    reversed and an affine that says so. ``folder/dicom.json`` records what was written (see
    Returns).

    The patient is drawn from its own stream, ``default_rng([seed, index, 7])``, which leaves the
    images unchanged: weight 50-110 kg, height 1.55-1.95 m, sex, an FDG dose of 3.3-4.1 MBq/kg
    injected at 09:00:00 on 2026-01-15 (F-18, half-life 6586.2 s) and the PET series 60-75 min
    later; the CT series (and the study time) 5 min before it. Every UID is derived from the
    generator version, the seed, the index and the configuration, so a rerun writes the same UIDs.

    PET is stored 16-bit with each slice's own RescaleSlope (the slice's largest value at 32767):
    the SUV read back from the files differs from :attr:`PhantomStudy.pet_suv_coarse` by at most
    half a quantisation step of its slice, ``SUVmax_slice / 65534`` (0.001 at SUV 65). CT values are
    integer HU and round-trip exactly.

    Parameters
    ----------
    study
        The patient, from :func:`generate_patient`.
    folder
        The patient's folder; created if missing. Files of the same names are replaced.
    transfer_syntax
        ``None`` (Explicit VR Little Endian) or a lossless syntax of
        :data:`cocoseg_monai.dicom.writer.COMPRESSED_TRANSFER_SYNTAXES`. JPEG 2000 needs frames of
        at least 32 x 32 pixels (the PET grid of ``size`` 32 is smaller): the encoder's refusal
        is a ValueError, after the CT series is written.
    scan_time
        Start of the PET series (SeriesTime, AcquisitionTime, the decay reference), used to the
        hundredth of a second the DICOM times carry; must be after the injection. Default: the
        drawn time.

    Returns
    -------
    dict
        JSON-ready, also written to ``folder/dicom.json``: the patient attributes, the UIDs, the
        dose, times (ISO 8601), ``decayed_dose_bq`` and ``suv_to_bqml`` (the factor from SUV to
        the stored activity), the transfer syntax and, per series (``"ct"``, ``"pet"``), its UID,
        time, shape and files relative to ``folder``.
    """
    from pydicom.uid import UID, ExplicitVRLittleEndian

    from cocoseg_monai.dicom.writer import write_series

    rng = np.random.default_rng([study.seed, study.index, 7])
    weight_kg = round(float(rng.uniform(50.0, 110.0)), 1)
    height_m = round(float(rng.uniform(1.55, 1.95)), 2)
    sex = "MF"[int(rng.integers(2))]
    dose_bq = round(weight_kg * float(rng.uniform(3.3e6, 4.1e6)), -5)
    uptake_s = int(rng.integers(60 * 60, 75 * 60 + 1))
    if scan_time is None:
        pet_time = _INJECTION + dt.timedelta(seconds=uptake_s)
    elif not isinstance(scan_time, dt.datetime) or scan_time <= _INJECTION:
        raise ValueError(f"scan_time must be a datetime after the injection at {_INJECTION.isoformat()}, "
                         f"got {scan_time!r}")
    else:
        pet_time = scan_time.replace(microsecond=scan_time.microsecond // 10_000 * 10_000)
    ct_time = pet_time - dt.timedelta(seconds=_CT_LEAD_S)
    decayed_bq = dose_bq * 2.0 ** (-(pet_time - _INJECTION).total_seconds() / _F18_HALF_LIFE_S)
    suv_to_bqml = decayed_bq / (weight_kg * 1000.0)
    # One static frame, decay-corrected to its start: the factor is the frame's mean decay, and
    # the reference time the moment the activity equals that mean.
    lam = math.log(2.0) / _F18_HALF_LIFE_S
    frame_s = _PET_FRAME_MS / 1000.0
    decay_factor = lam * frame_s / -math.expm1(-lam * frame_s)
    frame_reference_ms = math.log(decay_factor) / lam * 1000.0

    pid = study.patient_id
    shared = {
        "PatientName": f"PHANTOM^{pid}", "PatientID": f"PHANTOM_{pid}", "PatientSex": sex,
        "PatientWeight": weight_kg, "PatientSize": height_m,
        "StudyInstanceUID": _dicom_uid(study, "study"), "StudyDate": _da(ct_time), "StudyTime": _tm(ct_time),
        "StudyID": pid, "StudyDescription": "PET/CT whole body (CoCoSeg phantom)",
        "FrameOfReferenceUID": _dicom_uid(study, "frame of reference"),
        "ManufacturerModelName": "cocoseg_monai.data.phantom", "SoftwareVersions": PHANTOM_VERSION,
    }
    ct_series = {
        "SeriesInstanceUID": _dicom_uid(study, "CT series"), "SeriesNumber": 1,
        "SeriesDescription": "CT whole body", **_series_times(ct_time),
        "KVP": 120, "ConvolutionKernel": "STANDARD", "WindowCenter": 40, "WindowWidth": 400,
    }
    pet_series = {
        "SeriesInstanceUID": _dicom_uid(study, "PET series"), "SeriesNumber": 2,
        "SeriesDescription": "PET whole body AC", **_series_times(pet_time),
        "Units": "BQML", "DecayCorrection": "START",
        "CorrectedImage": ["ATTN", "DECY", "SCAT", "DTIM", "RAN", "NORM"],
        "DecayFactor": decay_factor, "FrameReferenceTime": frame_reference_ms,
        "ActualFrameDuration": _PET_FRAME_MS,
        "RadiopharmaceuticalInformationSequence": [{
            "Radiopharmaceutical": "Fludeoxyglucose",
            "RadiopharmaceuticalStartTime": _tm(_INJECTION),
            "RadiopharmaceuticalStartDateTime": _da(_INJECTION) + _tm(_INJECTION),
            "RadionuclideTotalDose": dose_bq, "RadionuclideHalfLife": _F18_HALF_LIFE_S,
            "RadionuclidePositronFraction": 0.9673,
            "RadionuclideCodeSequence": [
                {"CodeValue": "C-111A1", "CodingSchemeDesignator": "SRT", "CodeMeaning": "^18^Fluorine"}],
            "RadiopharmaceuticalCodeSequence": [
                {"CodeValue": "C-B1031", "CodingSchemeDesignator": "SRT", "CodeMeaning": "Fluorodeoxyglucose F^18^"}],
        }],
    }
    out = Path(folder)
    ct_hu, ct_affine = _rows_anterior_first(study.ct_hu, study.ct_affine)
    ct_files = write_series(ct_hu, ct_affine, out / "CT", "CT", study=shared, series=ct_series,
                            transfer_syntax=transfer_syntax)
    pet_bqml, pet_affine = _rows_anterior_first(study.pet_suv_coarse.astype(np.float64) * suv_to_bqml,
                                                study.pet_affine)
    pet_files = write_series(pet_bqml, pet_affine, out / "PET", "PT", study=shared, series=pet_series,
                             transfer_syntax=transfer_syntax)
    syntax = UID(transfer_syntax or ExplicitVRLittleEndian)
    info = {
        "patient_id": shared["PatientID"], "patient_name": shared["PatientName"], "patient_sex": sex,
        "patient_weight_kg": weight_kg, "patient_size_m": height_m,
        "study_instance_uid": shared["StudyInstanceUID"],
        "frame_of_reference_uid": shared["FrameOfReferenceUID"],
        "radiopharmaceutical": "Fludeoxyglucose", "radionuclide_total_dose_bq": dose_bq,
        "radionuclide_half_life_s": _F18_HALF_LIFE_S, "injection_time": _INJECTION.isoformat(),
        "decay_correction": "START", "decayed_dose_bq": decayed_bq, "suv_to_bqml": suv_to_bqml,
        "transfer_syntax": str(syntax), "transfer_syntax_name": syntax.name,
        "ct": {"series_instance_uid": ct_series["SeriesInstanceUID"], "series_time": ct_time.isoformat(),
               "shape": list(study.ct_hu.shape), "units": "HU",
               "files": [p.relative_to(out).as_posix() for p in ct_files]},
        "pet": {"series_instance_uid": pet_series["SeriesInstanceUID"], "series_time": pet_time.isoformat(),
                "shape": list(study.pet_suv_coarse.shape), "units": "BQML",
                "decay_factor": decay_factor, "frame_reference_time_ms": frame_reference_ms,
                "files": [p.relative_to(out).as_posix() for p in pet_files]},
    }
    atomic_write_json(out / DICOM_JSON, info)
    return info
