"""What the scanners make of the anatomy: per-tissue CT (HU) and PET (SUV) values with organ
texture, then the PET chain (Poisson counts, blur, the coarse PET grid) and the CT noise.
"""

from __future__ import annotations

import math

import numpy as np

from .anatomy import Tissue
from .config import CT_HU_RANGE, PET_SUV_MAX, PhantomConfig
from .numerics import gaussian_blur, resample, smooth_field

__all__ = ["ideal_images", "pet_physics", "ct_physics"]


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


def ideal_images(tissue: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free CT (HU) and PET (SUV) from the tissue map, with organ texture."""
    hu_lut, suv_lut = _draw_tissue_values(rng)
    nx, ny, nz = tissue.shape
    field_ = smooth_field(rng, tissue.shape, (nx / 16, ny / 16, max(2, nz / 3)))
    ct = hu_lut[tissue] + _texture_lut(_HU_TEXTURE)[tissue] * field_
    field_ = smooth_field(rng, tissue.shape, (nx / 20, ny / 20, max(2, nz / 3)))
    pet = suv_lut[tissue] * np.clip(1 + _texture_lut(_SUV_TEXTURE)[tissue] * field_, 0.2, None)
    return ct.astype(np.float32), pet.astype(np.float32)


def pet_physics(suv: np.ndarray, config: PhantomConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ideal SUV (CT grid) -> Poisson counts -> blur -> coarse PET grid -> back onto the CT grid."""
    voxel_ml = float(np.prod(config.ct_spacing)) / 1000
    k = config.pet_counts_per_ml * voxel_ml  # counts per SUV unit in one CT voxel
    noisy = (rng.poisson(suv.astype(np.float64) * k) / k).astype(np.float32)
    sigma_mm = config.pet_fwhm_mm / (2 * math.sqrt(2 * math.log(2)))
    blurred = gaussian_blur(noisy, [sigma_mm / s for s in config.ct_spacing])
    coarse = np.clip(resample(blurred, config.pet_shape), 0, PET_SUV_MAX).astype(np.float32)
    fine = np.clip(resample(coarse, config.ct_shape), 0, PET_SUV_MAX).astype(np.float32)
    return fine, coarse


def ct_physics(hu: np.ndarray, rng: np.random.Generator, noise: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """Quantum noise: ``noise`` is the standard deviation range (HU) on the reference grid; a grid
    of smaller pixels has more noise per voxel (``scale``: at the same dose, the standard deviation
    grows as one over the square root of the pixel area), as a scanner's finer reconstruction has."""
    sigma = rng.uniform(*noise) * scale
    ct = hu + rng.normal(0.0, sigma, hu.shape).astype(np.float32)
    return np.clip(np.rint(ct), *CT_HU_RANGE).astype(np.float32)
