"""The NEMA NU 2 / IEC 61675-1 body phantom ("NEMA IEC body phantom"), built from its published
dimensions, on the phantom generator's grids and through its PET and CT physics.

Geometry (mm; patient coordinates RAS+, the phantom lying on its flat side):

- body: a torso-shaped cylinder of 180 mm interior length; its cross-section is a half circle of
  radius 147 mm (anterior) on a 294 x 77 mm base whose two lower corners are rounded with radius
  77 mm (posterior), 294 mm wide and 224 mm deep; walls 3 mm of PMMA;
- six fillable spheres of inner diameters 10, 13, 17, 22, 28 and 37 mm with 1 mm walls, their
  centres on a circle of radius 57.2 mm (diameter 114.4 mm) around the lung insert's axis, 60
  degrees apart, in one transverse plane 70 mm from the lid (z = 0 here);
- a lung insert: a cylinder of 50 mm diameter along the axis, centred in the cross-section,
  filled with low-density material (about -800 HU) and no activity.

Activity: background SUV 1 (warm water) and the spheres at ``ratio`` times it (8:1 and 4:1 are
the standard's two settings); no activity in the lung insert or walls. The PET goes through
:func:`~cocoseg_monai.data.phantom.physics.pet_physics` (Poisson counts, Gaussian blur of the
configuration's FWHM, the coarser PET grid), the CT through its quantum noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import PhantomConfig
from .physics import ct_physics, pet_physics

__all__ = ["NEMA_SPHERE_DIAMETERS_MM", "NemaStudy", "nema_body_phantom", "nema_config"]

NEMA_SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
SPHERE_RING_RADIUS_MM = 57.2
LUNG_INSERT_DIAMETER_MM = 50.0
BODY_RADIUS_MM, CORNER_RADIUS_MM, BODY_LENGTH_MM = 147.0, 77.0, 180.0
LID_TO_SPHERES_MM = 70.0
WALL_MM, SPHERE_WALL_MM = 3.0, 1.0
HU = {"air": -1000.0, "water": 0.0, "pmma": 120.0, "lung": -800.0}
#: the cross-section's centre (where the lung insert sits) above the base's line, mm
CENTRE_Y_MM = (BODY_RADIUS_MM - CORNER_RADIUS_MM) / 2.0


def nema_config(size: int = 512, slices: int = 90, pet_spacing_mm: float = 4.0, **kwargs: float) -> PhantomConfig:
    """The grids of the standard's acquisition as this project writes them: CT ``size x size``
    over 500 mm with 2 mm slices (180 mm), PET at ``pet_spacing_mm`` in every direction."""
    return PhantomConfig(size=size, slices=slices, slice_thickness_mm=2.0, pet_spacing_mm=pet_spacing_mm, **kwargs)


@dataclass
class NemaStudy:
    """A NEMA body phantom study: CT (HU) and PET (SUV, fine = on the CT grid, coarse = the PET
    grid), the spheres' label (1..6 by sphere, on the CT grid) and each sphere's record."""

    config: PhantomConfig
    ratio: float
    ct_hu: np.ndarray
    pet_suv: np.ndarray
    pet_suv_coarse: np.ndarray
    spheres: np.ndarray
    records: list[dict]

    @property
    def label(self) -> np.ndarray:
        return (self.spheres > 0).astype(np.uint8)


def _world(config: PhantomConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = config.ct_affine
    i, j, k = (np.arange(n, dtype=np.float64) for n in config.ct_shape)
    return (a[0, 0] * i + a[0, 3])[:, None, None], (a[1, 1] * j + a[1, 3])[None, :, None], (a[2, 2] * k + a[2, 3])[None, None, :]


def _inside_body(x: np.ndarray, y: np.ndarray, shrink: float = 0.0) -> np.ndarray:
    """Inside the torso cross-section (y measured from the base's line, anterior +), ``shrink`` mm in."""
    r, c = BODY_RADIUS_MM - shrink, CORNER_RADIUS_MM - shrink
    top = (y >= 0) & (x**2 + y**2 <= r**2)
    flat = BODY_RADIUS_MM - CORNER_RADIUS_MM
    base = (y < 0) & (y >= -c) & ((np.abs(x) <= flat) | ((np.abs(x) - flat) ** 2 + y**2 <= c**2))
    return top | base


def nema_body_phantom(ratio: float = 8.0, config: PhantomConfig | None = None, seed: int = 0) -> NemaStudy:
    """The phantom with spheres at ``ratio`` x background, on ``config``'s grids (default:
    :func:`nema_config`)."""
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio!r}")
    config = nema_config() if config is None else config
    rng = np.random.default_rng(seed)
    x, y_world, z = _world(config)
    y = y_world + CENTRE_Y_MM  # the lung insert (and the sphere ring) at y_world = 0
    z_lid = LID_TO_SPHERES_MM  # the spheres' plane at z = 0, the lid 70 mm above it
    along = (z <= z_lid) & (z >= z_lid - BODY_LENGTH_MM)
    outer = _inside_body(x, y, 0.0) & (z <= z_lid + WALL_MM) & (z >= z_lid - BODY_LENGTH_MM - WALL_MM)
    water = _inside_body(x, y, WALL_MM) & along
    lung = (x**2 + y_world**2 <= (LUNG_INSERT_DIAMETER_MM / 2) ** 2) & along
    hu = np.full(config.ct_shape, HU["air"], np.float32)
    suv = np.zeros(config.ct_shape, np.float32)
    hu[np.broadcast_to(outer, config.ct_shape)] = HU["pmma"]
    water_b = np.broadcast_to(water, config.ct_shape)
    hu[water_b], suv[water_b] = HU["water"], 1.0
    lung_b = np.broadcast_to(lung & water, config.ct_shape)
    hu[lung_b], suv[lung_b] = HU["lung"], 0.0
    spheres = np.zeros(config.ct_shape, np.uint8)
    records = []
    voxel_ml = float(np.prod(config.ct_spacing)) / 1000.0
    for number, diameter in enumerate(NEMA_SPHERE_DIAMETERS_MM, start=1):
        angle = math.radians(90.0 + 60.0 * (number - 1))
        cx, cy = SPHERE_RING_RADIUS_MM * math.cos(angle), SPHERE_RING_RADIUS_MM * math.sin(angle)
        distance = np.sqrt((x - cx) ** 2 + (y_world - cy) ** 2 + z**2)
        shell = np.broadcast_to(distance <= diameter / 2 + SPHERE_WALL_MM, config.ct_shape)
        inner = np.broadcast_to(distance <= diameter / 2, config.ct_shape)
        hu[shell], suv[shell] = HU["pmma"], 0.0
        hu[inner], suv[inner] = HU["water"], float(ratio)
        spheres[inner] = number
        records.append({"sphere": number, "diameter_mm": diameter, "centre_mm": [round(cx, 2), round(cy, 2), 0.0],
                        "volume_ml": round(math.pi / 6 * diameter**3 / 1000, 3), "voxels": int(inner.sum()),
                        "voxel_volume_ml": round(int(inner.sum()) * voxel_ml, 3), "suv": float(ratio)})  # fmt: skip
    pet_fine, pet_coarse = pet_physics(suv, config, rng)
    pixel_area = float(np.prod(config.ct_spacing[:2]))
    ct = ct_physics(hu, rng, config.ct_noise_hu, math.sqrt((500.0 / 128) ** 2 / pixel_area))
    return NemaStudy(config=config, ratio=float(ratio), ct_hu=ct, pet_suv=pet_fine, pet_suv_coarse=pet_coarse,
                     spheres=spheres, records=records)
