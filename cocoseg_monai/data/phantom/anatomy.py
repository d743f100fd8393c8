"""The anatomy of a phantom patient: the :class:`Tissue` labels and the painting of the tissue map
(body outline, chest, abdominal organs, great vessels, skeleton and, optionally, neck and head).

The whole torso is drawn into the volume's z extent; in-plane sizes are true millimetres. Later
structures overwrite earlier ones, so the painting order is part of the anatomy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .numerics import smooth_field

__all__ = ["Tissue", "Canvas", "TORSO_MM", "build_anatomy"]


# Canonical anatomical lengths (mm) drawn into the volume's z extent.
TORSO_MM = 600.0  # pelvic floor to lung apex
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


@dataclass
class Canvas:
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


def _ellipse(c: Canvas, cx, cy, rx, ry, scale=1.0, angle: float = 0.0) -> np.ndarray:
    """In-plane ellipse, optionally rotated, whose radii shrink with a per-slice ``scale``."""
    dx, dy = c.X - cx, c.Y - cy
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
    # comparing with scale**2 instead of dividing keeps slices where scale is 0 empty, not NaN
    return (dx / rx) ** 2 + (dy / ry) ** 2 <= np.asarray(scale) ** 2 - 1e-9


def _capsule(c: Canvas, p0: tuple[float, float], p1: tuple[float, float], radius: float) -> np.ndarray:
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


def build_anatomy(shape: Sequence[int], spacing: Sequence[float], include_head: bool,
                   rng: np.random.Generator) -> Canvas:
    """Paint the tissue map; later structures overwrite earlier ones."""
    nx, ny, nz = shape
    length = TORSO_MM + (_NECK_MM + _HEAD_MM if include_head else 0.0)
    X = ((np.arange(nx) - (nx - 1) / 2) * spacing[0]).reshape(-1, 1, 1).astype(np.float32)
    Y = ((np.arange(ny) - (ny - 1) / 2) * spacing[1]).reshape(1, -1, 1).astype(np.float32)
    Z = ((np.arange(nz) + 0.5) / nz * length).reshape(1, 1, -1).astype(np.float32)
    c = Canvas(X, Y, Z, np.zeros(shape, np.uint8))
    p = _draw_body_params(rng)
    torso = Z <= TORSO_MM
    a, b, fat = _torso_axes(np.minimum(Z, TORSO_MM), p)
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


def _paint_abdomen(c: Canvas, ai, bi, p, rng) -> None:
    # mesenteric fat between bowel loops: a thresholded random field gives the mottled look
    cavity = _ellipse(c, 0, 0.08 * bi, 0.88 * ai, 0.8 * bi, _zprofile(c.Z, 20, 440, 220))
    nx, ny, nz = c.tissue.shape
    loops = smooth_field(rng, c.tissue.shape, (nx / 8, ny / 8, max(2, nz / 2)))
    c.paint(cavity & (loops > -0.1), Tissue.BOWEL)
    c.paint(cavity & (loops <= -0.1), Tissue.FAT)
    c.paint(cavity & (loops > 1.9) & (c.Z > 60), Tissue.GAS)  # bowel gas pockets
    # stomach in the left upper quadrant: wall, fluid, and a gas cap anteriorly
    prof = _zprofile(c.Z, 330, 440, 400)
    c.paint(_ellipse(c, 0.32 * ai, 0.3 * bi, 0.3 * ai, 0.3 * bi, prof, angle=-0.4), Tissue.SOFT)
    c.paint(_ellipse(c, 0.32 * ai, 0.3 * bi, 0.3 * ai - 5, 0.3 * bi - 5, prof, angle=-0.4), Tissue.BOWEL)
    gas = _ellipse(c, 0.32 * ai, 0.3 * bi, 0.3 * ai - 5, 0.3 * bi - 5, prof, angle=-0.4) & (c.Y > 0.42 * bi)
    c.paint(gas, Tissue.GAS)


def _paint_chest(c: Canvas, ai, bi, p, rng) -> None:
    lungs = np.zeros(c.tissue.shape, bool)
    for side in (-1, 1):  # right lung slightly shorter: the liver dome pushes it up
        zlo = 395 if side < 0 else 380
        prof = _zprofile(c.Z, zlo, 615, 450)
        lungs |= _ellipse(c, side * 0.5 * ai, 0.02 * bi, 0.39 * ai, 0.8 * bi, prof)
    c.paint(lungs, Tissue.LUNG)
    # vessel markings: pieces of the zero level set of a random field (short curved branches),
    # denser and thicker towards the hila
    nx, ny, nz = c.tissue.shape
    f = smooth_field(rng, c.tissue.shape, (nx / 6, ny / 6, max(2, nz)))
    g = smooth_field(rng, c.tissue.shape, (nx / 10, ny / 10, max(2, nz)))
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
    c.paint(_ellipse(c, 0, spine_y + 45, 9, 8) & (c.Z > 530) & (c.Z <= TORSO_MM), Tissue.GAS)
    _paint_great_vessels(c, ai, bi, spine_y)


def _paint_great_vessels(c: Canvas, ai, bi, spine_y) -> None:
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


def _paint_abdominal_organs(c: Canvas, ai, bi, p) -> None:
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


def _paint_bone(c: Canvas, outer: np.ndarray, inner: np.ndarray) -> None:
    c.paint(outer, Tissue.CORTICAL)
    c.paint(inner, Tissue.BONE)


def _paint_skeleton(c: Canvas, ai, bi, p, spacing) -> None:
    # a cortical shell thinner than a voxel would vanish on coarse grids
    shell = max(2.5, 0.8 * spacing[0])
    Z, torso = c.Z, c.Z <= TORSO_MM
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


def _paint_head_and_neck(c: Canvas, p, spacing) -> None:
    Z = c.Z
    neck = (Z > TORSO_MM) & (Z <= TORSO_MM + _NECK_MM + 20)
    s = p["sx"]
    c.paint(_ellipse(c, 0, -10, 62 * s, 58 * s) & neck, Tissue.FAT)
    c.paint(_ellipse(c, 0, -10, 56 * s, 52 * s) & neck, Tissue.SOFT)
    c.paint(_ellipse(c, 0, 22, 8, 7) & neck, Tissue.GAS)
    shell = max(2.5, 0.8 * spacing[0])
    c.paint(_ellipse(c, 0, -22, 12, 10) & neck, Tissue.CORTICAL)
    c.paint(_ellipse(c, 0, -22, 12 - shell, 10 - shell) & neck, Tissue.BONE)
    c.paint(_ellipse(c, 0, -45, 7, 6) & neck, Tissue.CSF)

    zc = TORSO_MM + _NECK_MM + _HEAD_MM / 2
    prof = _zprofile(Z, zc - _HEAD_MM / 2, zc + _HEAD_MM / 2, zc - 10)
    c.paint(_ellipse(c, 0, 0, 76 * s, 94 * s, prof), Tissue.SOFT)  # scalp
    c.paint(_ellipse(c, 0, 0, 71 * s, 89 * s, prof * 0.99), Tissue.CORTICAL)  # skull
    c.paint(_ellipse(c, 0, 0, 71 * s - max(6, shell), 89 * s - max(6, shell), prof * 0.97), Tissue.BRAIN)
