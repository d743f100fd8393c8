"""What a phantom data set is made of: the generator version, the lesion sites, the reference
grid, :class:`PhantomConfig` (geometry and physics), the default data set and the patient ids.

Everything else in the package reads its parameters from here; nothing here draws random numbers.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cocoseg_monai.conventions import PET_PNG_SCALE

__all__ = [
    "PHANTOM_VERSION",
    "REFERENCE_SIZE",
    "REFERENCE_FOV_MM",
    "CT_HU_RANGE",
    "PET_SUV_MAX",
    "LESION_SITES",
    "PhantomConfig",
    "DEFAULT_DATASET",
    "patient_id",
]


#: Bumped whenever the same seed would draw different data; stored in ``phantom.json``.
#: 1.1: lesion centres drawn on the reference grid, so a patient has the same lesions on any grid;
#: CT noise per voxel grows on grids of smaller pixels (the reference grid's is unchanged).
PHANTOM_VERSION = "1.1"
#: The grid lesion centres are drawn on (mm, whatever the study's grid): the default data set's
#: 128 x 128 over 500 mm. Drawn there and placed in mm, a patient's lesions sit at the same place
#: on a 512 x 512 grid, over a 350 mm field, as on the default one.
REFERENCE_SIZE, REFERENCE_FOV_MM = 128, 500.0
#: CT values are integer HU clipped to this range (12-bit CT, like scanners store).
CT_HU_RANGE = (-1024, 3071)
#: Largest SUV a 16-bit PET PNG can carry; PET arrays are clipped to it so PNGs round-trip.
PET_SUV_MAX = 65535 / PET_PNG_SCALE
#: Lesion sites, in the order their weights are given in :class:`PhantomConfig`.
LESION_SITES = ("lung", "liver", "bone", "node")


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


def _centred_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS+ affine of an array whose axes point to the patient's left, anterior and superior.

    The canvas puts +X on the patient's left (the liver at -X), while RAS+ world x grows to the
    right: hence the negative x spacing (array orientation ``LAS``).
    """
    signs = (-1.0, 1.0, 1.0)
    affine = np.diag([*(g * float(s) for g, s in zip(signs, spacing)), 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * g * s for n, g, s in zip(shape, signs, spacing)]
    return affine
