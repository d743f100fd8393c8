"""The lesions: which patients have none, where the others' lesions sit (lung, liver, bone, lymph
nodes), their size, shape, uptake and CT look, and how they are drawn into the ideal images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .anatomy import TORSO_MM, Canvas, Tissue
from .config import LESION_SITES, PhantomConfig
from .numerics import dilate

__all__ = ["is_lesion_free", "place_lesions"]


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


def _site_candidates(c: Canvas) -> dict[str, dict[str, np.ndarray]]:
    """Per site and location, the voxels a lesion centre may be drawn from."""
    t = c.tissue
    lung = (t == Tissue.LUNG) | (t == Tissue.LUNG_VESSEL)
    soft = (t == Tissue.FAT) | (t == Tissue.SOFT) | (t == Tissue.BOWEL)
    near_aorta = dilate(c.regions["aorta"], 4, _IN_PLANE) & ~c.regions["aorta"]
    chest_top = (c.Z > 470) & (c.Z <= TORSO_MM)
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


def _axillary(c: Canvas) -> np.ndarray:
    # lateral chest wall, outside the lungs: between the lung field and the skin, at the sides
    lung_field = c.regions["lung_field"]
    near_lung = dilate(lung_field, 3, _IN_PLANE) & ~lung_field
    return near_lung & (np.abs(c.Y) < 60)


def _host_mask(c: Canvas, site: str) -> np.ndarray:
    """Where a lesion of ``site`` may extend: its organ plus one voxel in-plane, inside the body.

    Not along z: with the torso compressed into few slices, the next slice may be another organ.
    """
    t = c.tissue
    if site == "lung":
        host = dilate((t == Tissue.LUNG) | (t == Tissue.LUNG_VESSEL), 1, _IN_PLANE)
    elif site == "liver":
        host = dilate(t == Tissue.LIVER, 1, _IN_PLANE)
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


def place_lesions(c: Canvas, ct: np.ndarray, pet: np.ndarray, spacing: Sequence[float],
                   config: PhantomConfig, rng: np.random.Generator, ref: Canvas,
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
