"""Synthetic PET/CT torso phantoms with lesions: the project's embedded default data set.

No real patient data can be shipped, so this module draws plausible whole-torso CT (HU) and
PET (SUV) studies with labelled lesions, reproducible from a seed.  Run it as::

    python -m cocoseg_monai.data.phantom --out DIR --patients N --seed S --format png|nifti|both|dicom \
        [--size PIXELS] [--fov MM] [--slices N] [--lesion-free-fraction F] [--include-head] [--preview PNG]

Anatomy
-------
An elliptical torso whose cross-section varies smoothly along z, with subcutaneous fat, muscle,
lungs and mediastinum at the top of the volume, heart and aorta, liver, spleen and kidneys in the
middle, bowel, psoas, pelvic bones and bladder at the bottom, a spine with cortical shell all the
way up, ribs and sternum around the chest.  ``include_head`` adds a neck and a head (skull, brain)
at the very top.  The whole torso (pelvis to lung apex, about 600 mm) is always drawn into the
volume's z extent, so with few slices the anatomy is compressed along z; organs keep their true
in-plane size.  Lesions, the PET blur and all spacings are physical (mm).

Lesions sit in the lung, the liver, bone (vertebral bodies, pelvis) and lymph-node positions
(mediastinal, para-aortic, axillary).  They are unions of 1-3 ellipsoids whose surface is perturbed
by low-frequency noise, 5-50 mm across, with intended SUVmax 3-20 (some deliberately small and
faint) and a CT correlate (solid nodule, hypodense liver lesion, sclerotic or lytic bone, soft
tissue node).  A fraction of the patients (``lesion_free_fraction``) has no lesion at all.

PET physics: ideal SUV at CT resolution -> Poisson counts -> Gaussian blur (``pet_fwhm_mm``) ->
trilinear sampling onto the coarse PET grid (the NIfTI PET) -> trilinear sampling back onto the
CT grid (the PNG PET and :attr:`PhantomStudy.pet_suv`), as PNG data sets made from real PET are.
CT: tissue HU + texture + Gaussian noise (10 to 20 HU on the default 3.9 mm grid, more per voxel on
finer grids: one over the square root of the pixel area), rounded to integer HU and clipped to
[-1024, 3071].

Grids and orientation
---------------------
Arrays are indexed ``(x, y, z)`` in RAS+: x to the patient's left, y anterior, z superior; axial
slices along the last axis.  Affines are ``diag(spacing)`` with the FOV centred on the world
origin.  CT: in-plane ``fov_mm / size`` (500 / 256 = 1.95 mm), ``slice_thickness_mm`` (3 mm).
PET: per axis ``max(pet_spacing_mm, 1.5 * CT spacing)`` rounded up so a whole number of voxels
spans exactly the CT extent; both grids cover the same physical box.

Output layout (a contract with the rest of the project)
-------------------------------------------------------
* ``--format png``: ``DIR/{CT,PET,masks}/patient_{ID}_slice_{num}.png``, identical names in the
  three folders, ``ID`` the 1-based patient number zero-padded to 3 digits, ``num`` the 1-based
  slice number zero-padded to 4 digits; ``slice_0001`` is z index 0, the most inferior slice.
  PNGs are on the CT grid.  Each slice is stored in radiological display orientation: read back
  as ``np.asarray(Image.open(p))`` ``(rows, cols)``, row 0 is the most anterior row and column 0
  the patient's right (:func:`to_display`, :func:`from_display`).
* ``--format nifti``: ``DIR/{CT,PET,masks}/patient_{ID}.nii.gz``: CT int16 HU and mask uint8 on
  the CT grid, PET float32 SUV on the coarse PET grid.
* ``--format both``: ``DIR/png/...`` and ``DIR/nifti/...`` as above.
* ``--format dicom``: one folder per patient, ``DIR/dicom/patient_{ID}/``, as a PET/CT scanner
  would deliver the study (:func:`write_study_dicom`): ``CT/CT_{num}.dcm`` and ``PET/PT_{num}.dcm``,
  single-frame series of one study and frame of reference, the PET in Bq/ml; beside them
  ``dicom.json`` (UIDs, patient weight, dose, times and the SUV -> Bq/ml factor), ``label.nii.gz``
  (the mask, uint8, on the CT grid) and, to compare a DICOM reader against, the phantom's own
  ``ct.nii.gz`` and ``pet.nii.gz`` as ``--format nifti`` writes them.
* ``DIR/phantom.json``: generator parameters and, per patient, its lesions (site, diameter,
  intended and measured SUVmax, ...).

PNG intensity encoding
----------------------
* CT: 16-bit unsigned, ``value = clip(round(HU + CT_PNG_OFFSET), 0, 65535)``, ``CT_PNG_OFFSET = 1024``.
* PET: 16-bit unsigned, ``value = clip(round(SUV * PET_PNG_SCALE), 0, 65535)``,
  ``PET_PNG_SCALE = 1000.0`` (0.001 SUV per unit, at most 65.535 SUV).
* masks: 8-bit, 0 background, 255 lesion.

``round`` is :func:`numpy.rint`.  Every file is written atomically; files of other names already
in ``DIR`` are never deleted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import enum
import io
import json
import math
import os
import re
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cocoseg_monai.atomic import atomic_write, atomic_write_json, atomic_write_nifti
from cocoseg_monai.data.discovery import SPACING_FILENAME

__all__ = [
    "CT_PNG_OFFSET",
    "PET_PNG_SCALE",
    "CT_HU_RANGE",
    "PET_SUV_MAX",
    "PHANTOM_VERSION",
    "LESION_SITES",
    "Tissue",
    "PhantomConfig",
    "PhantomStudy",
    "DEFAULT_DATASET",
    "generate_patient",
    "is_lesion_free",
    "write_dataset",
    "write_study_nifti",
    "write_study_dicom",
    "make_default_dataset",
    "save_preview",
    "patient_id",
    "to_display",
    "from_display",
    "encode_ct_png",
    "encode_pet_png",
    "encode_mask_png",
    "decode_ct_png",
    "decode_pet_png",
    "main",
]

#: Bumped whenever the same seed would draw different data; stored in ``phantom.json``.
#: 1.1: lesion centres drawn on the reference grid, so a patient has the same lesions on any grid;
#: CT noise per voxel grows on grids of smaller pixels (the reference grid's is unchanged).
PHANTOM_VERSION = "1.1"
#: The grid lesion centres are drawn on (mm, whatever the study's grid): the default data set's
#: 128 x 128 over 500 mm. Drawn there and placed in mm, a patient's lesions sit at the same place
#: on a 512 x 512 grid, over a 350 mm field, as on the default one.
REFERENCE_SIZE, REFERENCE_FOV_MM = 128, 500.0
#: CT PNG: ``value = HU + CT_PNG_OFFSET``.
CT_PNG_OFFSET = 1024
#: PET PNG: ``value = SUV * PET_PNG_SCALE``.
PET_PNG_SCALE = 1000.0
#: CT values are integer HU clipped to this range (12-bit CT, like scanners store).
CT_HU_RANGE = (-1024, 3071)
#: Largest SUV a 16-bit PET PNG can carry; PET arrays are clipped to it so PNGs round-trip.
PET_SUV_MAX = 65535 / PET_PNG_SCALE
#: Lesion sites, in the order their weights are given in :class:`PhantomConfig`.
LESION_SITES = ("lung", "liver", "bone", "node")

# Canonical anatomical lengths (mm) drawn into the volume's z extent.
_TORSO_MM = 600.0  # pelvic floor to lung apex
_NECK_MM = 70.0
_HEAD_MM = 200.0


class Tissue(enum.IntEnum):
    """Labels of :attr:`PhantomStudy.tissue`, the anatomy without lesions."""

    AIR = 0  #: outside the body
    LUNG = 1
    LUNG_VESSEL = 2  #: pulmonary vessel markings inside the lungs
    FAT = 3  #: subcutaneous, mediastinal and mesenteric fat
    SOFT = 4  #: muscle and other soft tissue
    LIVER = 5
    SPLEEN = 6
    KIDNEY = 7
    BLADDER = 8
    BLOOD = 9  #: blood pool: aorta, vena cava, heart cavity
    MYOCARDIUM = 10
    BONE = 11  #: cancellous bone / marrow
    CORTICAL = 12  #: cortical bone, ribs
    BOWEL = 13
    CSF = 14  #: spinal canal
    GAS = 15  #: air inside the body: trachea, stomach and bowel gas
    BRAIN = 16


# Per-patient draws: (low, high) of a uniform, one value per patient and tissue.
_HU: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (-1000.0, -1000.0),
    Tissue.LUNG: (-870.0, -830.0),
    Tissue.LUNG_VESSEL: (-250.0, -150.0),
    Tissue.FAT: (-110.0, -90.0),
    Tissue.SOFT: (38.0, 47.0),
    Tissue.LIVER: (55.0, 63.0),
    Tissue.SPLEEN: (42.0, 50.0),
    Tissue.KIDNEY: (27.0, 35.0),
    Tissue.BLADDER: (5.0, 15.0),
    Tissue.BLOOD: (36.0, 44.0),
    Tissue.MYOCARDIUM: (40.0, 48.0),
    Tissue.BONE: (330.0, 420.0),
    Tissue.CORTICAL: (850.0, 1150.0),
    Tissue.BOWEL: (25.0, 40.0),
    Tissue.CSF: (5.0, 15.0),
    Tissue.GAS: (-1000.0, -980.0),
    Tissue.BRAIN: (30.0, 38.0),
}
_SUV: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (0.0, 0.0),
    Tissue.LUNG: (0.3, 0.45),
    Tissue.LUNG_VESSEL: (0.6, 0.9),
    Tissue.FAT: (0.25, 0.4),
    Tissue.SOFT: (0.6, 0.9),
    Tissue.LIVER: (1.8, 2.3),
    Tissue.SPLEEN: (1.6, 2.0),
    Tissue.KIDNEY: (4.0, 8.0),
    Tissue.BLADDER: (10.0, 30.0),
    Tissue.BLOOD: (1.4, 1.7),
    Tissue.MYOCARDIUM: (3.0, 6.0),
    Tissue.BONE: (0.9, 1.3),
    Tissue.CORTICAL: (0.3, 0.5),
    Tissue.BOWEL: (1.0, 1.5),
    Tissue.CSF: (0.2, 0.3),
    Tissue.GAS: (0.0, 0.0),
    Tissue.BRAIN: (7.0, 9.0),
}
# Low-frequency texture amplitude: HU (additive) and relative SUV (multiplicative).
_HU_TEXTURE: dict[Tissue, float] = {
    Tissue.LUNG: 25.0, Tissue.FAT: 6.0, Tissue.SOFT: 5.0, Tissue.LIVER: 4.0, Tissue.SPLEEN: 4.0,
    Tissue.KIDNEY: 5.0, Tissue.BONE: 40.0, Tissue.CORTICAL: 80.0, Tissue.BOWEL: 8.0,
    Tissue.BRAIN: 3.0,
}
_SUV_TEXTURE: dict[Tissue, float] = {
    Tissue.LIVER: 0.06, Tissue.SPLEEN: 0.06, Tissue.SOFT: 0.08, Tissue.KIDNEY: 0.15,
    Tissue.BOWEL: 0.35, Tissue.MYOCARDIUM: 0.15, Tissue.BONE: 0.12, Tissue.BRAIN: 0.08,
}


# ---------------------------------------------------------------------------------------------
# configuration and result


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)



@dataclass(frozen=True)
class PhantomConfig:
    """Geometry and physics of the phantom studies.

    Parameters
    ----------
    size
        CT in-plane matrix (``size x size``).
    slices
        Number of axial CT slices.
    fov_mm
        In-plane field of view; CT spacing is ``fov_mm / size``.
    slice_thickness_mm
        CT slice spacing.
    pet_spacing_mm
        Target PET voxel size; the PET grid is never finer than 1.5 x the CT spacing.
    pet_fwhm_mm
        PET resolution (Gaussian FWHM).
    pet_counts_per_ml
        Poisson counts per ml per SUV unit before the blur; sets the PET noise (about 10 % in the
        liver at the defaults).
    ct_noise_hu
        Range of the per-patient CT noise standard deviation (HU) on the reference grid (128 x 128
        over 500 mm); grids of smaller pixels get more per voxel, as at the same dose.
    lesion_free_fraction
        Fraction of patients without lesions (exact over any run of consecutive patients, up to
        rounding; see :func:`is_lesion_free`).
    max_lesions
        A lesion-bearing patient has 1..``max_lesions`` lesions.
    site_weights
        Relative frequency of the sites in :data:`LESION_SITES`.
    include_head
        Add a neck and a head (brain SUV ~8) at the top of the volume.
    """

    size: int = 256
    slices: int = 24
    fov_mm: float = 500.0
    slice_thickness_mm: float = 3.0
    pet_spacing_mm: float = 4.0
    pet_fwhm_mm: float = 6.0
    pet_counts_per_ml: float = 50.0
    ct_noise_hu: tuple[float, float] = (10.0, 20.0)
    lesion_free_fraction: float = 0.2
    max_lesions: int = 5
    site_weights: tuple[float, float, float, float] = (0.3, 0.25, 0.15, 0.3)
    include_head: bool = False

    def __post_init__(self) -> None:
        _check(isinstance(self.size, int) and self.size >= 32, f"size must be an integer >= 32, got {self.size!r}")
        _check(isinstance(self.slices, int) and self.slices >= 1, f"slices must be an integer >= 1, got {self.slices!r}")
        for name in ("fov_mm", "slice_thickness_mm", "pet_spacing_mm", "pet_fwhm_mm", "pet_counts_per_ml"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value!r}")
        _check(0.0 <= self.lesion_free_fraction <= 1.0,
               f"lesion_free_fraction must be in [0, 1], got {self.lesion_free_fraction!r}")
        _check(isinstance(self.max_lesions, int) and self.max_lesions >= 1,
               f"max_lesions must be an integer >= 1, got {self.max_lesions!r}")
        _check(len(self.site_weights) == len(LESION_SITES) and min(self.site_weights) >= 0
               and sum(self.site_weights) > 0,
               f"site_weights must be {len(LESION_SITES)} non-negative weights for {LESION_SITES}, "
               f"not all 0, got {self.site_weights!r}")
        lo, hi = self.ct_noise_hu
        _check(0 <= lo <= hi, f"ct_noise_hu must be (low, high) with 0 <= low <= high, got {self.ct_noise_hu!r}")

    @property
    def ct_shape(self) -> tuple[int, int, int]:
        """CT (and label, PNG) grid shape ``(x, y, z)``."""
        return (self.size, self.size, self.slices)

    @property
    def ct_spacing(self) -> tuple[float, float, float]:
        """CT voxel size in mm ``(x, y, z)``."""
        s = self.fov_mm / self.size
        return (s, s, float(self.slice_thickness_mm))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size of the box both grids cover."""
        return tuple(n * s for n, s in zip(self.ct_shape, self.ct_spacing))  # type: ignore[return-value]

    @property
    def pet_shape(self) -> tuple[int, int, int]:
        """Coarse PET grid shape: whole voxels, each at least the target size, spanning the extent."""
        return tuple(
            max(1, math.floor(e / max(self.pet_spacing_mm, 1.5 * s) + 1e-9))
            for e, s in zip(self.extent_mm, self.ct_spacing)
        )  # type: ignore[return-value]

    @property
    def pet_spacing(self) -> tuple[float, float, float]:
        """Coarse PET voxel size in mm ``(x, y, z)``."""
        return tuple(e / n for e, n in zip(self.extent_mm, self.pet_shape))  # type: ignore[return-value]

    @property
    def ct_affine(self) -> np.ndarray:
        """RAS+ voxel-to-world affine of the CT grid (FOV centred on the origin)."""
        return _centred_affine(self.ct_shape, self.ct_spacing)

    @property
    def pet_affine(self) -> np.ndarray:
        """RAS+ voxel-to-world affine of the coarse PET grid; same physical box as the CT."""
        return _centred_affine(self.pet_shape, self.pet_spacing)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class PhantomStudy:
    """One synthetic patient.

    Attributes
    ----------
    index
        0-based patient index; the files use :func:`patient_id` (``index + 1``, 3 digits).
    seed
        Data set seed the patient was drawn from.
    config
        The geometry and physics used.
    ct_hu
        float32 ``(x, y, z)`` CT in integer HU, on the CT grid.
    pet_suv
        float32 PET SUV resampled onto the CT grid (what the PNGs hold).
    pet_suv_coarse
        float32 PET SUV on the coarse PET grid (what the NIfTI holds).
    label
        uint8 lesion mask (0/1) on the CT grid.
    tissue
        uint8 :class:`Tissue` labels of the anatomy (lesions not included) on the CT grid.
    ct_affine, pet_affine
        RAS+ voxel-to-world affines (mm).
    lesions
        One dict per lesion: ``site``, ``location``, ``centre_mm``, ``diameter_mm``,
        ``suv_peak`` (intended), ``suv_max`` (measured on :attr:`pet_suv`), ``ct_hu``,
        ``ct_pattern``, ``voxels``, ``volume_ml``.
    """

    index: int
    seed: int
    config: PhantomConfig
    ct_hu: np.ndarray
    pet_suv: np.ndarray
    pet_suv_coarse: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    ct_affine: np.ndarray
    pet_affine: np.ndarray
    lesions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def patient_id(self) -> str:
        """File-name id, e.g. ``"001"``."""
        return patient_id(self.index)

    @property
    def lesion_free(self) -> bool:
        """True when the patient has no lesion."""
        return not self.lesions

    @property
    def body(self) -> np.ndarray:
        """Boolean body mask (everything but outside air) on the CT grid."""
        return self.tissue != Tissue.AIR

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the patient for ``phantom.json``."""
        return {
            "id": self.patient_id,
            "index": self.index,
            "lesion_free": self.lesion_free,
            "n_lesions": len(self.lesions),
            "lesion_slices": int(np.count_nonzero(self.label.any(axis=(0, 1)))),
            "lesions": self.lesions,
        }


#: The embedded default data set (read-only): PNG slices of 48 patients, 24 slices each.
DEFAULT_DATASET = types.MappingProxyType(
    {
        # 48: a 20 % validation split of 10 patients (7 with lesions), so that one hard
        # lesion no longer swings the validation Dice by 0.1, and 33 training patients
        "patients": 48,
        "seed": 20240531,
        "format": "png",
        # 128 x 128 over the 500 mm field of view (3.9 mm pixels, PET is on a 4 mm grid): whole
        # slices are cheap enough to train on a CPU, and whole-slice training matches inference.
        "config": PhantomConfig(size=128, slices=24),
    }
)


def patient_id(index: int) -> str:
    """File-name id of the 0-based patient ``index``: ``0 -> "001"``."""
    return f"{index + 1:03d}"


# ---------------------------------------------------------------------------------------------
# small numerical helpers (numpy only: deterministic on every machine)


def _centred_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS+ affine of an array whose axes point to the patient's left, anterior and superior.

    The canvas puts +X on the patient's left (the liver at -X), while RAS+ world x grows to the
    right: hence the negative x spacing (array orientation ``LAS``).
    """
    signs = (-1.0, 1.0, 1.0)
    affine = np.diag([*(g * float(s) for g, s in zip(signs, spacing)), 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * g * s for n, g, s in zip(shape, signs, spacing)]
    return affine


def _patient_streams(seed: int, index: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators for patient ``index``.

    ``spawn_key=(index,)`` is what ``SeedSequence(seed).spawn(N)[index]`` gives, so patient k does
    not depend on how many patients are drawn; separate streams per stage keep, e.g., the anatomy
    of a patient unchanged when its lesions change.
    """
    patient = np.random.SeedSequence(entropy=seed, spawn_key=(index,))
    return [np.random.default_rng(s) for s in patient.spawn(n)]


def _resample_axis(a: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Linear resampling of one axis so voxel edges line up (``align_corners=False``)."""
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = (pos - i0).astype(a.dtype).reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def _resample(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling between two grids spanning the same box."""
    for axis, n in enumerate(shape):
        a = _resample_axis(a, axis, n)
    return a


def _gaussian_blur(a: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """Separable Gaussian blur with edge replication."""
    out = a
    for axis, sigma in enumerate(sigma_vox):
        if sigma < 0.2:  # narrower than a voxel: a no-op up to rounding
            continue
        radius = max(1, int(math.ceil(3 * sigma)))
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (x / sigma) ** 2)
        kernel /= kernel.sum()
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, wk in enumerate(kernel):
            acc += np.float32(wk) * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return out


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: Sequence[int]) -> np.ndarray:
    """Unit-variance-ish random field varying over ``shape / cells`` voxels."""
    coarse = rng.standard_normal(tuple(max(2, int(c)) for c in cells)).astype(np.float32)
    f = _resample(coarse, shape)
    return (f - f.mean()) / (f.std() + 1e-6)


def _dilate(mask: np.ndarray, steps: int = 1, axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Binary dilation by a 3-voxel box along ``axes``, ``steps`` times."""
    out = mask.copy()
    for _ in range(steps):
        for axis in axes:
            grown = out.copy()
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
            out = grown
    return out


# ---------------------------------------------------------------------------------------------
# anatomy


@dataclass
class _Canvas:
    """Coordinates of the CT grid and the tissue map being painted."""

    X: np.ndarray  # (nx, 1, 1) mm, + = patient's left
    Y: np.ndarray  # (1, ny, 1) mm, + = anterior
    Z: np.ndarray  # (1, 1, nz) anatomical mm from the pelvic floor (torso compressed into z)
    tissue: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    def paint(self, mask: np.ndarray, t: Tissue) -> None:
        self.tissue[np.broadcast_to(mask, self.tissue.shape)] = t


def _zprofile(Z: np.ndarray, lo: float, hi: float, peak: float | None = None) -> np.ndarray:
    """Half-ellipse profile along z: 1 at ``peak``, falling to 0 at ``lo`` and ``hi``."""
    peak = (lo + hi) / 2 if peak is None else peak
    below = 1 - ((peak - Z) / max(peak - lo, 1e-6)) ** 2
    above = 1 - ((Z - peak) / max(hi - peak, 1e-6)) ** 2
    p = np.where(Z < peak, below, above)
    return np.sqrt(np.clip(p, 0, None)) * ((Z >= lo) & (Z <= hi))


def _ellipse(c: _Canvas, cx, cy, rx, ry, scale=1.0, angle: float = 0.0) -> np.ndarray:
    """In-plane ellipse, optionally rotated, whose radii shrink with a per-slice ``scale``."""
    dx, dy = c.X - cx, c.Y - cy
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
    # comparing with scale**2 instead of dividing keeps slices where scale is 0 empty, not NaN
    return (dx / rx) ** 2 + (dy / ry) ** 2 <= np.asarray(scale) ** 2 - 1e-9


def _capsule(c: _Canvas, p0: tuple[float, float], p1: tuple[float, float], radius: float) -> np.ndarray:
    """In-plane disc swept along the segment ``p0 -> p1`` (a vessel running obliquely)."""
    (x0, y0), (x1, y1) = p0, p1
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((c.X - x0) * vx + (c.Y - y0) * vy) / (vx * vx + vy * vy + 1e-9), 0, 1)
    return (c.X - x0 - t * vx) ** 2 + (c.Y - y0 - t * vy) ** 2 <= radius**2


def _draw_body_params(rng: np.random.Generator) -> dict[str, float]:
    return {
        "sx": rng.uniform(0.85, 1.1),  # lateral body size
        "sy": rng.uniform(0.85, 1.12),  # antero-posterior body size
        "fat": rng.uniform(0.6, 1.6),  # subcutaneous fat relative to average
        "organ": rng.uniform(0.9, 1.1),  # organ size
        "bladder": rng.uniform(0.6, 1.15),
        "heart": rng.uniform(0.9, 1.1),
        "rib_phase": rng.uniform(0, 2 * math.pi),
    }


def _torso_axes(Z: np.ndarray, p: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outer semi-axes ``a`` (lateral), ``b`` (AP) and fat thickness per slice, in mm."""
    knots = [0, 60, 150, 250, 330, 420, 520, 600]
    a = np.interp(Z, knots, [172, 176, 166, 156, 158, 168, 174, 170]) * p["sx"]
    b = np.interp(Z, knots, [112, 116, 114, 112, 114, 112, 108, 100]) * p["sy"]
    fat = np.interp(Z, knots, [22, 24, 26, 22, 18, 14, 12, 10]) * p["fat"]
    return a, b, fat


def _spine_y(bi: np.ndarray) -> np.ndarray:
    """AP position of the vertebral body centres: a fixed depth in front of the back muscles."""
    return -(bi - 50)


def _build_anatomy(shape: Sequence[int], spacing: Sequence[float], include_head: bool,
                   rng: np.random.Generator) -> _Canvas:
    """Paint the tissue map; later structures overwrite earlier ones."""
    nx, ny, nz = shape
    length = _TORSO_MM + (_NECK_MM + _HEAD_MM if include_head else 0.0)
    X = ((np.arange(nx) - (nx - 1) / 2) * spacing[0]).reshape(-1, 1, 1).astype(np.float32)
    Y = ((np.arange(ny) - (ny - 1) / 2) * spacing[1]).reshape(1, -1, 1).astype(np.float32)
    Z = ((np.arange(nz) + 0.5) / nz * length).reshape(1, 1, -1).astype(np.float32)
    c = _Canvas(X, Y, Z, np.zeros(shape, np.uint8))
    p = _draw_body_params(rng)
    torso = Z <= _TORSO_MM
    a, b, fat = _torso_axes(np.minimum(Z, _TORSO_MM), p)
    ai, bi = a - fat, b - fat  # inner (muscle) outline; organs are placed relative to it

    # body: a superellipse is closer to a torso section than an ellipse
    body = ((np.abs(X) / a) ** 2.3 + (np.abs(Y) / b) ** 2.3 <= 1) & torso
    c.paint(body, Tissue.FAT)
    c.paint(((np.abs(X) / ai) ** 2.3 + (np.abs(Y) / bi) ** 2.3 <= 1) & torso, Tissue.SOFT)
    c.regions["torso"] = body

    _paint_abdomen(c, ai, bi, p, rng)
    _paint_chest(c, ai, bi, p, rng)
    _paint_abdominal_organs(c, ai, bi, p)
    _paint_skeleton(c, ai, bi, p, spacing)
    if include_head:
        _paint_head_and_neck(c, p, spacing)
    return c


def _paint_abdomen(c: _Canvas, ai, bi, p, rng) -> None:
    # mesenteric fat between bowel loops: a thresholded random field gives the mottled look
    cavity = _ellipse(c, 0, 0.08 * bi, 0.88 * ai, 0.8 * bi, _zprofile(c.Z, 20, 440, 220))
    nx, ny, nz = c.tissue.shape
    loops = _smooth_field(rng, c.tissue.shape, (nx / 8, ny / 8, max(2, nz / 2)))
    c.paint(cavity & (loops > -0.1), Tissue.BOWEL)
    c.paint(cavity & (loops <= -0.1), Tissue.FAT)
    c.paint(cavity & (loops > 1.9) & (c.Z > 60), Tissue.GAS)  # bowel gas pockets
    # stomach in the left upper quadrant: wall, fluid, and a gas cap anteriorly
    prof = _zprofile(c.Z, 330, 440, 400)
    c.paint(_ellipse(c, 0.32 * ai, 0.3 * bi, 0.3 * ai, 0.3 * bi, prof, angle=-0.4), Tissue.SOFT)
    c.paint(_ellipse(c, 0.32 * ai, 0.3 * bi, 0.3 * ai - 5, 0.3 * bi - 5, prof, angle=-0.4), Tissue.BOWEL)
    gas = _ellipse(c, 0.32 * ai, 0.3 * bi, 0.3 * ai - 5, 0.3 * bi - 5, prof, angle=-0.4) & (c.Y > 0.42 * bi)
    c.paint(gas, Tissue.GAS)


def _paint_chest(c: _Canvas, ai, bi, p, rng) -> None:
    lungs = np.zeros(c.tissue.shape, bool)
    for side in (-1, 1):  # right lung slightly shorter: the liver dome pushes it up
        zlo = 395 if side < 0 else 380
        prof = _zprofile(c.Z, zlo, 615, 450)
        lungs |= _ellipse(c, side * 0.5 * ai, 0.02 * bi, 0.39 * ai, 0.8 * bi, prof)
    c.paint(lungs, Tissue.LUNG)
    # vessel markings: pieces of the zero level set of a random field (short curved branches),
    # denser and thicker towards the hila
    nx, ny, nz = c.tissue.shape
    f = _smooth_field(rng, c.tissue.shape, (nx / 6, ny / 6, max(2, nz)))
    g = _smooth_field(rng, c.tissue.shape, (nx / 10, ny / 10, max(2, nz)))
    hilum = np.clip(1 - np.abs(c.X) / (0.9 * ai), 0, 1)
    c.paint(lungs & (np.abs(f) < 0.05 + 0.12 * hilum) & (g > 0.2 - 1.2 * hilum), Tissue.LUNG_VESSEL)
    c.regions["lung_field"] = lungs

    mediastinum = _ellipse(c, 0, 0.12 * bi, 0.2 * ai, 0.78 * bi, _zprofile(c.Z, 390, 620, 480))
    c.paint(mediastinum, Tissue.FAT)
    c.regions["mediastinum"] = mediastinum

    h = p["heart"]
    heart_prof = _zprofile(c.Z, 385, 535, 445)
    hx, hy = 0.14 * ai, 0.28 * bi
    c.paint(_ellipse(c, hx, hy, 0.36 * ai * h, 0.5 * bi * h, heart_prof, angle=0.5), Tissue.MYOCARDIUM)
    cavity = _ellipse(c, hx, hy, 0.36 * ai * h - 11, 0.5 * bi * h - 11, heart_prof, angle=0.5)
    c.paint(cavity, Tissue.BLOOD)

    # airways: trachea down the upper mediastinum
    spine_y = _spine_y(bi)
    c.paint(_ellipse(c, 0, spine_y + 45, 9, 8) & (c.Z > 530) & (c.Z <= _TORSO_MM), Tissue.GAS)
    _paint_great_vessels(c, ai, bi, spine_y)


def _paint_great_vessels(c: _Canvas, ai, bi, spine_y) -> None:
    desc = (22.0, spine_y + 32)
    asc = (-6.0, 0.22 * bi)
    Z = c.Z
    aorta = _ellipse(c, desc[0], desc[1], 12, 12) & (Z >= 150) & (Z <= 570)
    aorta |= _ellipse(c, asc[0], asc[1], 14, 14) & (Z >= 480) & (Z <= 580)
    aorta |= _capsule(c, asc, desc, 13) & (Z > 565) & (Z <= 590)
    ivc = _ellipse(c, -24, spine_y + 34, 11, 10) & (Z >= 180) & (Z <= 420)
    # common iliac arteries diverge towards the pelvis
    lat = 8 + 45 * np.clip((150 - Z) / 90, 0, 1)
    iliac = (_ellipse(c, lat, spine_y + 34, 7, 7) | _ellipse(c, -lat, spine_y + 34, 7, 7)) & (Z >= 60) & (Z < 150)
    c.paint(aorta | ivc | iliac, Tissue.BLOOD)
    c.regions["aorta"] = aorta


def _paint_abdominal_organs(c: _Canvas, ai, bi, p) -> None:
    o = p["organ"]
    liver = _ellipse(c, -0.45 * ai, 0.1 * bi, 0.48 * ai * o, 0.7 * bi * o, _zprofile(c.Z, 270, 450, 380), angle=0.3)
    liver |= _ellipse(c, 0.05 * ai, 0.48 * bi, 0.36 * ai * o, 0.28 * bi * o, _zprofile(c.Z, 330, 435, 395))
    c.paint(liver, Tissue.LIVER)
    spleen = _ellipse(c, 0.62 * ai, -0.28 * bi, 0.2 * ai * o, 0.34 * bi * o, _zprofile(c.Z, 320, 420, 370),
                      angle=-0.5)
    c.paint(spleen, Tissue.SPLEEN)
    for side, zc in ((-1, 285), (1, 300)):
        # perirenal fat: what makes kidneys stand out on a non-contrast CT
        c.paint(_ellipse(c, side * 0.42 * ai, -0.45 * bi, 0.16 * ai * o + 10, 0.26 * bi * o + 10,
                         _zprofile(c.Z, zc - 75, zc + 75), angle=side * 0.4), Tissue.FAT)
        kidney = _ellipse(c, side * 0.42 * ai, -0.45 * bi, 0.16 * ai * o, 0.26 * bi * o,
                          _zprofile(c.Z, zc - 60, zc + 60), angle=side * 0.4)
        c.paint(kidney, Tissue.KIDNEY)
    bl = p["bladder"]
    c.paint(_ellipse(c, 0, 0.3 * bi, 0.3 * ai * bl, 0.33 * bi * bl, _zprofile(c.Z, 0, 60 + 80 * bl, 50)),
            Tissue.BLADDER)
    # psoas muscles thicken towards the pelvis
    spine_y = _spine_y(bi)
    r = 6 + 16 * np.clip((300 - c.Z) / 220, 0, 1)
    psoas = (_ellipse(c, 36 + r, spine_y + 8, r, r * 0.9) | _ellipse(c, -36 - r, spine_y + 8, r, r * 0.9))
    c.paint(psoas & (c.Z >= 70) & (c.Z <= 300), Tissue.SOFT)


def _paint_bone(c: _Canvas, outer: np.ndarray, inner: np.ndarray) -> None:
    c.paint(outer, Tissue.CORTICAL)
    c.paint(inner, Tissue.BONE)


def _paint_skeleton(c: _Canvas, ai, bi, p, spacing) -> None:
    # a cortical shell thinner than a voxel would vanish on coarse grids
    shell = max(2.5, 0.8 * spacing[0])
    Z, torso = c.Z, c.Z <= _TORSO_MM
    spine_y = _spine_y(bi)
    rv = np.interp(Z, [0, 300, 600], [19, 17, 13])  # vertebral bodies shrink upwards
    body = _ellipse(c, 0, spine_y, rv * 1.1, rv) & torso
    marrow = _ellipse(c, 0, spine_y, rv * 1.1 - shell, rv - shell) & torso
    canal_y = spine_y - rv - 9
    arch = _ellipse(c, 0, canal_y, 15, 13) & torso
    spinous = _ellipse(c, 0, canal_y - 16, 5, 10) & torso
    _paint_bone(c, body | arch | spinous, marrow)
    c.paint(_ellipse(c, 0, canal_y, 8, 7) & torso, Tissue.CSF)
    c.regions["vertebra"] = marrow

    # ribs: a band under the chest wall cut into oblique segments that shift from slice to slice
    rib_z = _zprofile(Z, 370, 620, 500) > 0
    band = _ellipse(c, 0, 0.0, 0.97 * ai, 0.95 * bi) & ~_ellipse(c, 0, 0.0, 0.97 * ai - 8, 0.95 * bi - 8)
    theta = np.arctan2(c.Y / bi, c.X / ai)
    segments = np.sin(11 * theta + 0.03 * Z + p["rib_phase"]) > 0.55
    ribs = band & segments & rib_z & (c.Y > spine_y - 10)
    c.paint(ribs, Tissue.CORTICAL)
    sternum = _ellipse(c, 0, 0.95 * bi - 8, 16, 7, _zprofile(Z, 410, 600, 500))
    _paint_bone(c, sternum, _ellipse(c, 0, 0.95 * bi - 8, 16 - shell, 7 - shell, _zprofile(Z, 410, 600, 500)))

    # pelvis: iliac wings (rotated ellipses) and femoral heads
    pelvis_marrow = np.zeros(c.tissue.shape, bool)
    for side in (-1, 1):
        prof = _zprofile(Z, 55, 200, 140)
        wing = _ellipse(c, side * 0.55 * ai, -0.35 * bi, 14, 0.42 * bi, prof, angle=side * 0.7)
        wing_m = _ellipse(c, side * 0.55 * ai, -0.35 * bi, 14 - shell, 0.42 * bi - shell, prof, angle=side * 0.7)
        head_prof = _zprofile(Z, -30, 60, 20)
        head = _ellipse(c, side * 0.62 * ai, -0.05 * bi, 24, 24, head_prof)
        head_m = _ellipse(c, side * 0.62 * ai, -0.05 * bi, 24 - shell, 24 - shell, head_prof)
        _paint_bone(c, wing | head, wing_m | head_m)
        pelvis_marrow |= wing_m | head_m
    c.regions["pelvis"] = pelvis_marrow


def _paint_head_and_neck(c: _Canvas, p, spacing) -> None:
    Z = c.Z
    neck = (Z > _TORSO_MM) & (Z <= _TORSO_MM + _NECK_MM + 20)
    s = p["sx"]
    c.paint(_ellipse(c, 0, -10, 62 * s, 58 * s) & neck, Tissue.FAT)
    c.paint(_ellipse(c, 0, -10, 56 * s, 52 * s) & neck, Tissue.SOFT)
    c.paint(_ellipse(c, 0, 22, 8, 7) & neck, Tissue.GAS)
    shell = max(2.5, 0.8 * spacing[0])
    c.paint(_ellipse(c, 0, -22, 12, 10) & neck, Tissue.CORTICAL)
    c.paint(_ellipse(c, 0, -22, 12 - shell, 10 - shell) & neck, Tissue.BONE)
    c.paint(_ellipse(c, 0, -45, 7, 6) & neck, Tissue.CSF)

    zc = _TORSO_MM + _NECK_MM + _HEAD_MM / 2
    prof = _zprofile(Z, zc - _HEAD_MM / 2, zc + _HEAD_MM / 2, zc - 10)
    c.paint(_ellipse(c, 0, 0, 76 * s, 94 * s, prof), Tissue.SOFT)  # scalp
    c.paint(_ellipse(c, 0, 0, 71 * s, 89 * s, prof * 0.99), Tissue.CORTICAL)  # skull
    c.paint(_ellipse(c, 0, 0, 71 * s - max(6, shell), 89 * s - max(6, shell), prof * 0.97), Tissue.BRAIN)


# ---------------------------------------------------------------------------------------------
# intensities


def _draw_tissue_values(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(Tissue)
    hu, suv = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t in Tissue:
        hu[t] = rng.uniform(*_HU[t])
        suv[t] = rng.uniform(*_SUV[t])
    return hu, suv


def _texture_lut(table: dict[Tissue, float]) -> np.ndarray:
    lut = np.zeros(len(Tissue), np.float32)
    for t, v in table.items():
        lut[t] = v
    return lut


def _ideal_images(tissue: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free CT (HU) and PET (SUV) from the tissue map, with organ texture."""
    hu_lut, suv_lut = _draw_tissue_values(rng)
    nx, ny, nz = tissue.shape
    field_ = _smooth_field(rng, tissue.shape, (nx / 16, ny / 16, max(2, nz / 3)))
    ct = hu_lut[tissue] + _texture_lut(_HU_TEXTURE)[tissue] * field_
    field_ = _smooth_field(rng, tissue.shape, (nx / 20, ny / 20, max(2, nz / 3)))
    pet = suv_lut[tissue] * np.clip(1 + _texture_lut(_SUV_TEXTURE)[tissue] * field_, 0.2, None)
    return ct.astype(np.float32), pet.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# lesions

_IN_PLANE = (0, 1)
_SITE_MAX_DIAMETER = {"lung": 45.0, "liver": 50.0, "bone": 30.0, "node": 35.0}


def is_lesion_free(index: int, seed: int, fraction: float) -> bool:
    """Whether the 0-based patient ``index`` of data set ``seed`` has no lesion.

    The lesion-free patients are spread evenly: among any ``N`` consecutive patients from index 0,
    at least ``floor(N * fraction)`` are lesion-free (so at least one for ``N >= 5`` at 0.2), and
    the answer for a patient does not depend on ``N``.  The seed shifts which patients they are.
    """
    if fraction <= 0:
        return False
    phase = (seed * 0.6180339887498949) % 1.0
    return math.floor((index + 1) * fraction + phase) > math.floor(index * fraction + phase)


def _draw_diameter(rng: np.random.Generator, site: str) -> float:
    # a mixture so that small lesions (hard, and common in practice) are well represented
    u = rng.uniform()
    d = rng.uniform(5, 10) if u < 0.25 else rng.uniform(10, 25) if u < 0.75 else rng.uniform(25, 50)
    return float(min(d, _SITE_MAX_DIAMETER[site]))


def _draw_suv_peak(rng: np.random.Generator, diameter: float) -> float:
    # Small lesions lose most of their peak to the blur (partial volume); give them avid uptake
    # so they stay visible.  Larger ones: a quarter faint (barely above liver), the rest
    # log-uniform over the usual range.
    if diameter >= 10 and rng.uniform() < 0.25:
        return float(rng.uniform(3.0, 4.5))
    low = 6.0 if diameter < 10 else 4.5
    return float(math.exp(rng.uniform(math.log(low), math.log(20.0))))


def _site_candidates(c: _Canvas) -> dict[str, dict[str, np.ndarray]]:
    """Per site and location, the voxels a lesion centre may be drawn from."""
    t = c.tissue
    lung = (t == Tissue.LUNG) | (t == Tissue.LUNG_VESSEL)
    soft = (t == Tissue.FAT) | (t == Tissue.SOFT) | (t == Tissue.BOWEL)
    near_aorta = _dilate(c.regions["aorta"], 4, _IN_PLANE) & ~c.regions["aorta"]
    chest_top = (c.Z > 470) & (c.Z <= _TORSO_MM)
    return {
        "lung": {"lung": lung},
        "liver": {"liver": t == Tissue.LIVER},
        "bone": {"vertebra": c.regions["vertebra"] & (t == Tissue.BONE), "pelvis": c.regions["pelvis"] & (t == Tissue.BONE)},
        "node": {
            "mediastinal": c.regions["mediastinum"] & (t == Tissue.FAT),
            "para-aortic": near_aorta & soft & (c.Z < 400),
            "axillary": _axillary(c) & soft & chest_top,
        },
    }


def _axillary(c: _Canvas) -> np.ndarray:
    # lateral chest wall, outside the lungs: between the lung field and the skin, at the sides
    lung_field = c.regions["lung_field"]
    near_lung = _dilate(lung_field, 3, _IN_PLANE) & ~lung_field
    return near_lung & (np.abs(c.Y) < 60)


def _host_mask(c: _Canvas, site: str) -> np.ndarray:
    """Where a lesion of ``site`` may extend: its organ plus one voxel in-plane, inside the body.

    Not along z: with the torso compressed into few slices, the next slice may be another organ.
    """
    t = c.tissue
    if site == "lung":
        host = _dilate((t == Tissue.LUNG) | (t == Tissue.LUNG_VESSEL), 1, _IN_PLANE)
    elif site == "liver":
        host = _dilate(t == Tissue.LIVER, 1, _IN_PLANE)
    elif site == "bone":
        host = (t == Tissue.BONE) | (t == Tissue.CORTICAL)
    else:  # nodes stay in the torso's soft tissue and fat, never in the neck above it
        host = np.isin(t, [Tissue.FAT, Tissue.SOFT, Tissue.BOWEL]) & c.regions["torso"]
    return host & (t != Tissue.AIR)


def _lesion_shape(rng: np.random.Generator, diameter: float, spacing: Sequence[float],
                  centre: Sequence[int], shape: Sequence[int]) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Irregular blob around voxel ``centre``: (box, mask in box, uptake profile in box)."""
    radii = diameter / 2 * rng.uniform(0.75, 1.25, 3)
    radii *= diameter / 2 / np.prod(radii) ** (1 / 3)  # keep the nominal equivalent diameter
    reach = 1.6 * radii.max()
    box = tuple(
        slice(max(0, ci - int(math.ceil(reach / s)) - 1), min(n, ci + int(math.ceil(reach / s)) + 2))
        for ci, s, n in zip(centre, spacing, shape)
    )
    dx, dy, dz = (
        ((np.arange(b.start, b.stop) - ci) * s).astype(np.float32).reshape(sh)
        for b, ci, s, sh in zip(box, centre, spacing, ((-1, 1, 1), (1, -1, 1), (1, 1, -1)))
    )
    ang = rng.uniform(0, math.pi)
    ca, sa = math.cos(ang), math.sin(ang)
    dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
    n_blobs = 1 if diameter < 12 else int(rng.integers(1, 4))
    rho = np.full(np.broadcast_shapes(dx.shape, dy.shape, dz.shape), np.inf, np.float32)
    for k in range(n_blobs):
        offset = np.zeros(3) if k == 0 else rng.uniform(-0.55, 0.55, 3) * radii
        scale = 1.0 if k == 0 else rng.uniform(0.5, 0.85)
        ux, uy, uz = dx - offset[0], dy - offset[1], dz - offset[2]
        norm = np.sqrt(ux**2 + uy**2 + uz**2) + 1e-6
        r = np.sqrt((ux / radii[0]) ** 2 + (uy / radii[1]) ** 2 + (uz / radii[2]) ** 2) / scale
        # low-frequency radial perturbation: lobulated rather than smooth outline
        bump = np.ones_like(r)
        for _ in range(3):
            w = rng.normal(0, 2.0, 3)
            bump += rng.uniform(0.04, 0.12) * np.cos((w[0] * ux + w[1] * uy + w[2] * uz) / norm + rng.uniform(0, 6.3))
        rho = np.minimum(rho, r / bump)
    mask = rho <= 1
    local = tuple(ci - b.start for ci, b in zip(centre, box))
    mask[local] = True  # never lose a lesion smaller than a voxel
    profile = np.clip(1 - 0.35 * rho**2, 0.6, 1.0)
    if diameter > 30 and rng.uniform() < 0.4:
        profile = np.where(rho < 0.45, 0.35, profile)  # necrotic core
    return box, mask, profile.astype(np.float32)


def _lesion_ct(rng: np.random.Generator, site: str) -> tuple[float, str]:
    if site == "lung":
        return float(rng.uniform(30, 50)), "solid nodule"
    if site == "liver":
        return float(rng.uniform(35, 45)), "hypodense"
    if site == "bone":
        if rng.uniform() < 0.5:
            return float(rng.uniform(700, 1100)), "sclerotic"
        return float(rng.uniform(60, 150)), "lytic"
    return float(rng.uniform(32, 48)), "soft tissue"


def _place_lesions(c: _Canvas, ct: np.ndarray, pet: np.ndarray, spacing: Sequence[float],
                   config: PhantomConfig, rng: np.random.Generator, ref: _Canvas,
                   reference: PhantomConfig) -> tuple[np.ndarray, list[dict], list]:
    """Draw the lesions into ``ct``/``pet`` (in place); return label, records, (box, mask) list.

    Sites, locations and centres are drawn on ``ref``, the same anatomy on the reference grid
    (:data:`REFERENCE_SIZE`), and placed by their position in mm, so that a patient has the same
    lesions on every grid; a centre outside this grid's field of view is moved to its edge."""
    label = np.zeros(c.tissue.shape, bool)
    candidates = _site_candidates(ref)
    to_voxel = np.linalg.inv(config.ct_affine) @ reference.ct_affine
    sites, locations = [], []
    for s in LESION_SITES:
        locs = {k: m for k, m in candidates[s].items() if m.any()}
        sites.append(s)
        locations.append(locs)
    weights = np.array([w if locs else 0.0 for w, locs in zip(config.site_weights, locations)])
    if weights.sum() == 0:
        return label, [], []
    n = int(rng.integers(1, config.max_lesions + 1))
    records, masks = [], []
    hosts: dict[str, np.ndarray] = {}
    for _ in range(n):
        si = int(rng.choice(len(sites), p=weights / weights.sum()))
        site, locs = sites[si], locations[si]
        loc = list(locs)[int(rng.integers(len(locs)))]
        flat = np.flatnonzero(locs[loc])
        ref_centre = np.unravel_index(int(flat[rng.integers(flat.size)]), ref.tissue.shape)
        here = (to_voxel @ np.array([*ref_centre, 1.0]))[:3]
        centre = tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(here, c.tissue.shape))
        d = _draw_diameter(rng, site)
        peak = _draw_suv_peak(rng, d)
        hu, pattern = _lesion_ct(rng, site)
        box, mask, profile = _lesion_shape(rng, d, spacing, centre, c.tissue.shape)
        if site not in hosts:
            hosts[site] = _host_mask(c, site)
        mask &= hosts[site][box]
        mask[tuple(ci - b.start for ci, b in zip(centre, box))] = True
        pet[box] = np.where(mask, np.maximum(pet[box], peak * profile), pet[box])
        ct[box] = np.where(mask, hu, ct[box])
        label[box] |= mask
        voxels = int(mask.sum())
        centre_mm = [float(v) for v in (config.ct_affine @ np.array([*centre, 1.0]))[:3]]
        records.append({
            "site": site, "location": loc, "centre_mm": [round(v, 1) for v in centre_mm],
            "centre_voxel": [int(v) for v in centre], "diameter_mm": round(d, 1),
            "suv_peak": round(peak, 2), "ct_hu": round(hu, 1), "ct_pattern": pattern,
            "voxels": voxels, "volume_ml": round(voxels * float(np.prod(spacing)) / 1000, 3),
        })
        masks.append((box, mask))
    return label, records, masks


# ---------------------------------------------------------------------------------------------
# imaging physics


def _pet_physics(suv: np.ndarray, config: PhantomConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ideal SUV (CT grid) -> Poisson counts -> blur -> coarse PET grid -> back onto the CT grid."""
    voxel_ml = float(np.prod(config.ct_spacing)) / 1000
    k = config.pet_counts_per_ml * voxel_ml  # counts per SUV unit in one CT voxel
    noisy = (rng.poisson(suv.astype(np.float64) * k) / k).astype(np.float32)
    sigma_mm = config.pet_fwhm_mm / (2 * math.sqrt(2 * math.log(2)))
    blurred = _gaussian_blur(noisy, [sigma_mm / s for s in config.ct_spacing])
    coarse = np.clip(_resample(blurred, config.pet_shape), 0, PET_SUV_MAX).astype(np.float32)
    fine = np.clip(_resample(coarse, config.ct_shape), 0, PET_SUV_MAX).astype(np.float32)
    return fine, coarse


def _ct_physics(hu: np.ndarray, rng: np.random.Generator, noise: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """Quantum noise: ``noise`` is the standard deviation range (HU) on the reference grid; a grid
    of smaller pixels has more noise per voxel (``scale``: at the same dose, the standard deviation
    grows as one over the square root of the pixel area), as a scanner's finer reconstruction has."""
    sigma = rng.uniform(*noise) * scale
    ct = hu + rng.normal(0.0, sigma, hu.shape).astype(np.float32)
    return np.clip(np.rint(ct), *CT_HU_RANGE).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# public generation API


def generate_patient(index: int, seed: int, config: PhantomConfig | None = None) -> PhantomStudy:
    """Draw one synthetic patient.

    Parameters
    ----------
    index
        0-based patient index (file id ``index + 1``).  Patient ``index`` of a ``seed`` is the
        same whatever the number of patients generated.
    seed
        Data set seed (non-negative integer).
    config
        Geometry and physics; :class:`PhantomConfig` defaults when ``None``.

    Returns
    -------
    PhantomStudy
        Byte-identical arrays for identical ``(index, seed, config)``.
    """
    config = PhantomConfig() if config is None else config
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng_anat, rng_int, rng_les, rng_ct, rng_pet = _patient_streams(int(seed), int(index), 5)
    reference = dataclasses.replace(config, size=REFERENCE_SIZE, fov_mm=REFERENCE_FOV_MM)
    anatomy_stream = copy.deepcopy(rng_anat)  # the same body, drawn again on the reference grid if needed
    canvas = _build_anatomy(config.ct_shape, config.ct_spacing, config.include_head, rng_anat)
    ref_canvas = canvas if reference == config else _build_anatomy(
        reference.ct_shape, reference.ct_spacing, config.include_head, anatomy_stream
    )
    ct, pet = _ideal_images(canvas.tissue, rng_int)
    if is_lesion_free(int(index), int(seed), config.lesion_free_fraction):
        label, lesions, masks = np.zeros(config.ct_shape, bool), [], []
    else:
        label, lesions, masks = _place_lesions(canvas, ct, pet, config.ct_spacing, config, rng_les, ref_canvas, reference)
    pixel_area, reference_area = (float(np.prod(g.ct_spacing[:2])) for g in (config, reference))
    ct_hu = _ct_physics(ct, rng_ct, config.ct_noise_hu, math.sqrt(reference_area / pixel_area))
    pet_suv, pet_coarse = _pet_physics(pet, config, rng_pet)
    for rec, (box, mask) in zip(lesions, masks):
        rec["suv_max"] = round(float(pet_suv[box][mask].max()), 2)
    return PhantomStudy(
        index=int(index), seed=int(seed), config=config, ct_hu=ct_hu, pet_suv=pet_suv,
        pet_suv_coarse=pet_coarse, label=label.astype(np.uint8), tissue=canvas.tissue,
        ct_affine=config.ct_affine, pet_affine=config.pet_affine, lesions=lesions,
    )


# ---------------------------------------------------------------------------------------------
# encoding and writing


def to_display(slice_xy: np.ndarray) -> np.ndarray:
    """An ``(x, y)`` axial slice -> ``(rows, cols)`` image: anterior at the top, patient's right
    on the left (radiological display)."""
    return np.ascontiguousarray(slice_xy[:, ::-1].T)


def from_display(image: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`: ``(rows, cols)`` image -> ``(x, y)`` slice."""
    return np.ascontiguousarray(image.T[:, ::-1])


def encode_ct_png(hu: np.ndarray) -> np.ndarray:
    """HU -> uint16 PNG values ``clip(rint(HU + CT_PNG_OFFSET), 0, 65535)``."""
    return np.clip(np.rint(hu.astype(np.float64) + CT_PNG_OFFSET), 0, 65535).astype(np.uint16)


def encode_pet_png(suv: np.ndarray) -> np.ndarray:
    """SUV -> uint16 PNG values ``clip(rint(SUV * PET_PNG_SCALE), 0, 65535)``."""
    return np.clip(np.rint(suv.astype(np.float64) * PET_PNG_SCALE), 0, 65535).astype(np.uint16)


def encode_mask_png(label: np.ndarray) -> np.ndarray:
    """Label -> uint8 0/255."""
    return np.where(label > 0, 255, 0).astype(np.uint8)


def decode_ct_png(values: np.ndarray) -> np.ndarray:
    """CT PNG values -> HU (float32)."""
    return values.astype(np.float32) - CT_PNG_OFFSET


def decode_pet_png(values: np.ndarray) -> np.ndarray:
    """PET PNG values -> SUV (float32)."""
    return (values.astype(np.float64) / PET_PNG_SCALE).astype(np.float32)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    # compress_level 1: these images are noisy, stronger compression buys little and costs time
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def _png_name(pid: str, k: int) -> str:
    return f"patient_{pid}_slice_{k + 1:04d}.png"


def _write_png_study(root: Path, study: PhantomStudy) -> list[Path]:
    written = []
    ct, pet, lab = encode_ct_png(study.ct_hu), encode_pet_png(study.pet_suv), encode_mask_png(study.label)
    for k in range(study.ct_hu.shape[2]):
        name = _png_name(study.patient_id, k)
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


# The DICOM study's acquisition: FDG injected at 09:00, the CT a few minutes before the PET, one
# PET bed position of three minutes.
_F18_HALF_LIFE_S = 6586.2
_INJECTION = dt.datetime(2026, 1, 15, 9, 0, 0)
_CT_LEAD_S = 300
_PET_FRAME_MS = 180_000
_DICOM_JSON = "dicom.json"


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
    atomic_write_json(out / _DICOM_JSON, info)
    return info


def _write_dicom_study(root: Path, study: PhantomStudy) -> list[Path]:
    folder = root / f"patient_{study.patient_id}"
    info = write_study_dicom(study, folder)
    nifti = write_study_nifti(study, folder / "ct.nii.gz", folder / "pet.nii.gz", folder / "label.nii.gz")
    return [folder / name for name in (*info["ct"]["files"], *info["pet"]["files"], _DICOM_JSON)] + nifti


_FORMATS = ("png", "nifti", "both", "dicom")
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
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
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
        (out / folder / _png_name(patient_id(i), k)).is_file()
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


# ---------------------------------------------------------------------------------------------
# preview


def _window(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a - lo) / (hi - lo), 0, 1)


def _hot(t: np.ndarray) -> np.ndarray:
    """'hot' colour map: black -> red -> yellow -> white."""
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)


def _crop_box(body: np.ndarray, margin: int = 6) -> tuple[slice, slice]:
    """Rows and columns of the body's bounding box plus a margin (the whole image if no body)."""
    if not body.any():
        return slice(None), slice(None)
    r = np.flatnonzero(body.any(axis=1))
    c = np.flatnonzero(body.any(axis=0))
    return (slice(max(0, r[0] - margin), r[-1] + margin + 1), slice(max(0, c[0] - margin), c[-1] + margin + 1))


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def save_preview(study: PhantomStudy, path: str | os.PathLike, slice_index: int | None = None,
                 suv_window: float = 8.0) -> Path:
    """Write a PNG: CT (soft-tissue window), CT (lung window), PET (inverted grey), PET/CT fusion
    and lesion outlines on CT, side by side, in display orientation.

    Parameters
    ----------
    study
        The patient.
    path
        Output PNG.
    slice_index
        0-based axial slice; default the one with the largest lesion area (the middle slice for a
        lesion-free patient).
    suv_window
        SUV shown as full black (PET) / white (fusion).
    """
    nz = study.ct_hu.shape[2]
    if slice_index is None:
        area = study.label.sum(axis=(0, 1))
        slice_index = int(np.argmax(area)) if area.any() else nz // 2
    if not 0 <= slice_index < nz:
        raise ValueError(f"slice_index must be in [0, {nz - 1}], got {slice_index}")
    ct = to_display(study.ct_hu[:, :, slice_index])
    pet = to_display(study.pet_suv[:, :, slice_index])
    lab = to_display(study.label[:, :, slice_index]) > 0
    rows, cols = _crop_box(to_display(study.body.any(axis=2)))
    ct, pet, lab = ct[rows, cols], pet[rows, cols], lab[rows, cols]

    grey = lambda a: np.repeat(a[..., None], 3, -1)  # noqa: E731
    soft = grey(_window(ct, -160, 240))
    lung = grey(_window(ct, -1350, 150))
    pet_img = grey(1 - _window(pet, 0, suv_window))
    alpha = _window(pet, 0.3, suv_window * 0.5)[..., None] * 0.85
    fusion = soft * (1 - alpha) + _hot(_window(pet, 0, suv_window)) * alpha
    overlay = soft.copy()
    overlay[lab] = overlay[lab] * 0.5 + np.array([1.0, 0.1, 0.1]) * 0.5
    overlay[_outline(lab)] = (1.0, 0.2, 0.2)
    panels = [soft, lung, pet_img, fusion, overlay]
    titles = ["CT W400/L40", "CT W1500/L-600", f"PET SUV 0-{suv_window:g}", "PET/CT", "lesion mask"]

    lesions = [
        f"{r['site']} ({r['location']}) {r['diameter_mm']:.0f} mm, SUVmax {r.get('suv_max', r['suv_peak']):.1f}"
        for r in study.lesions
    ] or ["no lesion"]
    info = [f"patient {study.patient_id}, slice {slice_index + 1}/{nz}",
            "anterior up, patient's right on the left", "", "lesions:", *lesions]
    return _contact_sheet(panels, titles, info, path)


def _contact_sheet(panels: list[np.ndarray], titles: list[str], info: list[str], path: str | os.PathLike) -> Path:
    """Lay out RGB panels in rows of three, titled, with an info panel last."""
    from PIL import Image, ImageDraw

    h, w = panels[0].shape[:2]
    zoom = max(1, round(300 / w))  # small matrices are hard to read at 1:1
    title_h, ncol = 16, 3
    cells = len(panels) + 1
    nrow = -(-cells // ncol)
    cw, ch = w * zoom, h * zoom + title_h
    sheet = Image.new("RGB", (cw * ncol, ch * nrow))
    draw = ImageDraw.Draw(sheet)
    for i, (pnl, title) in enumerate(zip(panels, titles)):
        x0, y0 = (i % ncol) * cw, (i // ncol) * ch
        tile = Image.fromarray((np.clip(pnl, 0, 1) * 255 + 0.5).astype(np.uint8)).resize((cw, h * zoom), Image.NEAREST)
        sheet.paste(tile, (x0, y0 + title_h))
        draw.text((x0 + 4, y0 + 2), title, fill=(255, 255, 255))
        draw.text((x0 + 4, y0 + title_h + 2), "R", fill=(255, 255, 0))
        draw.text((x0 + cw - 10, y0 + title_h + 2), "L", fill=(255, 255, 0))
    x0, y0 = (len(panels) % ncol) * cw, (len(panels) // ncol) * ch
    for j, line in enumerate(info):
        draw.text((x0 + 6, y0 + title_h + 4 + 14 * j), line, fill=(255, 255, 255))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------
# command line


def _positive_int(name: str, minimum: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lesion-free-fraction must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--lesion-free-fraction must be in [0, 1], got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    d = DEFAULT_DATASET
    cfg: PhantomConfig = d["config"]
    p = argparse.ArgumentParser(
        prog="python -m cocoseg_monai.data.phantom",
        description="Write synthetic PET/CT torso phantoms with lesion masks. With only --out, "
                    "this builds the project's default data set.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created; same-name files overwritten)")
    p.add_argument("--patients", type=_positive_int("--patients"), default=d["patients"],
                   help=f"number of patients (default {d['patients']})")
    p.add_argument("--seed", type=_positive_int("--seed", 0), default=d["seed"], help=f"seed (default {d['seed']})")
    p.add_argument("--format", choices=_FORMATS, default=d["format"],
                   help="png, nifti, both (png and nifti) or dicom (default png)")
    p.add_argument("--size", type=_positive_int("--size", 32), default=cfg.size,
                   help=f"CT in-plane pixels (default {cfg.size})")
    p.add_argument("--fov", type=_positive_float("--fov"), default=cfg.fov_mm,
                   help=f"in-plane field of view in mm; CT pixels are FOV / SIZE (default {cfg.fov_mm:g})")
    p.add_argument("--slices", type=_positive_int("--slices"), default=cfg.slices,
                   help=f"axial CT slices per patient (default {cfg.slices})")
    p.add_argument("--lesion-free-fraction", type=_fraction, default=cfg.lesion_free_fraction,
                   help=f"fraction of patients without lesions (default {cfg.lesion_free_fraction})")
    p.add_argument("--include-head", action="store_true", help="add neck and head at the top of the volume")
    p.add_argument("--preview", type=Path, default=None,
                   help="also write a preview PNG of the first lesion-bearing patient here")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    config = dataclasses.replace(
        DEFAULT_DATASET["config"], size=args.size, slices=args.slices, fov_mm=args.fov,
        lesion_free_fraction=args.lesion_free_fraction, include_head=args.include_head,
    )
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    t0 = time.perf_counter()
    out = write_dataset(args.out, args.patients, args.seed, args.format, config, preview=args.preview, log=log)
    log(f"wrote {args.patients} patient(s) to {out} in {time.perf_counter() - t0:.1f} s")
    if args.preview is not None:
        log(f"preview: {args.preview}" if args.preview.exists() else "no lesion-bearing patient: no preview written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
