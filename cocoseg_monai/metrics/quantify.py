"""A PET reader's lesion measurements: per lesion (volume, SUVmax, SUVmean, SUVpeak, TLG, centroid,
extent, slices) and per study (lesion count, TMTV, total TLG, the study's SUVmax and where, Dmax).

Lesions are the 3D connected components of ``label > 0`` on the label's own grid, so volumes,
centroids and extents are those of the segmentation as drawn. SUV is read on the PET's own grid,
so SUVmax is a voxel value the scanner produced and not an interpolated one: each PET voxel belongs
to the lesion whose label voxel covers the PET voxel's centre (nearest-neighbour sampling of the
label through both affines). A lesion smaller than a PET voxel may cover no PET voxel centre; it
then takes the PET voxel nearest its centroid, and its record says so (``pet_nearest_centroid``).

SUVpeak follows PERCIST: the highest mean SUV in a 1 cm^3 sphere (radius 6.2035 mm) centred on a
PET voxel of the lesion, averaging every PET voxel of the image whose centre lies in the sphere.

Example::

    report = quantify(nib.load("label.nii.gz"), nib.load("pet.nii.gz"))
    write_report(report, "out/")  # out/lesions.csv, out/study.json
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write, atomic_write_json
from ..errors import DataError
from .lesion import connected_components, renumber

__all__ = [
    "SUVPEAK_RADIUS_MM",
    "LesionRecord",
    "StudyReport",
    "merge_components",
    "quantify",
    "write_report",
]

SUVPEAK_RADIUS_MM = 10.0 * (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
"""Radius of a 1 cm^3 sphere in mm (6.2035 mm): the PERCIST SUVpeak sphere."""

CONNECTIVITIES = (6, 26)
CSV_COLUMNS = (
    "id", "voxels", "volume_ml", "suvmax", "suvmean", "suvpeak", "tlg",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
    "extent_i_mm", "extent_j_mm", "extent_k_mm", "first_slice", "last_slice",
    "suvmax_x_mm", "suvmax_y_mm", "suvmax_z_mm", "pet_voxels", "pet_nearest_centroid",
)  # fmt: skip


def csv_number(value: float | None) -> str:
    """A figure as the CSV tables write it: 6 significant digits, empty for ``None``."""
    return "" if value is None else f"{value:.6g}"


@dataclass
class LesionRecord:
    """One lesion: a connected component of the label.

    Attributes
    ----------
    id
        1-based, in the order the components' first voxels come in the label array (C order).
    voxels, volume_ml
        Label voxels and their volume (voxels x label voxel volume).
    suvmax, suvmean, suvpeak
        SUV statistics on the PET grid (see the module docstring).
    tlg
        Total lesion glycolysis, ``suvmean * volume_ml``.
    centroid_mm
        Centre of the label voxels in patient (world, RAS+) mm.
    extent_mm
        Bounding-box size along the label's three axes, in mm.
    slices
        First and last index (0-based) on the label's third axis.
    suvmax_mm
        World (RAS+) position of the PET voxel holding the SUVmax.
    pet_voxels
        Number of PET voxels the SUV statistics were read on.
    pet_nearest_centroid
        True when the lesion covered no PET voxel centre and the PET voxel nearest its centroid
        was used instead (``pet_voxels`` is then 1).
    """

    id: int
    voxels: int
    volume_ml: float
    suvmax: float
    suvmean: float
    suvpeak: float
    tlg: float
    centroid_mm: tuple[float, float, float]
    extent_mm: tuple[float, float, float]
    slices: tuple[int, int]
    suvmax_mm: tuple[float, float, float]
    pet_voxels: int
    pet_nearest_centroid: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the record (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def csv_row(self) -> list[Any]:
        """The record as a row under :data:`CSV_COLUMNS` (figures to 6 significant digits;
        ``study.json`` keeps them whole)."""
        return [self.id, self.voxels, *map(csv_number, (self.volume_ml, self.suvmax, self.suvmean, self.suvpeak,
                                                        self.tlg, *self.centroid_mm, *self.extent_mm)),
                *self.slices, *map(csv_number, self.suvmax_mm), self.pet_voxels, int(self.pet_nearest_centroid)]

    def summary(self) -> str:
        """One line for the console."""
        x, y, z = self.centroid_mm
        return (f"lesion {self.id}: {self.volume_ml:.2f} mL, SUVmax {self.suvmax:.2f}, SUVmean {self.suvmean:.2f}, "
                f"SUVpeak {self.suvpeak:.2f}, TLG {self.tlg:.2f}, at ({x:.1f}, {y:.1f}, {z:.1f}) mm, "
                f"slices {self.slices[0]}-{self.slices[1]}" + (" (PET voxel nearest centroid)"
                                                                if self.pet_nearest_centroid else ""))


@dataclass
class StudyReport:
    """The study's lesions and totals.

    Attributes
    ----------
    lesions
        One :class:`LesionRecord` per kept component.
    tmtv_ml
        Total metabolic tumour volume: the sum of the lesions' volumes.
    total_tlg
        Sum of the lesions' TLG.
    suvmax, suvmax_lesion, suvmax_mm
        The study's highest lesion SUVmax, the lesion holding it and its world position
        (``None`` without lesions).
    dmax_mm
        Largest distance between two lesion centroids (0 for fewer than two lesions).
    dropped_components, dropped_volume_ml
        Components smaller than ``min_volume_ml``, left out of everything above.
    definitions
        How each figure is measured, in words and settings.
    label_file, pet_file, ct_file
        Where the images came from (``None`` for in-memory images, or not given).
    lesion_map, label_affine
        The lesions on the label grid (voxel value = lesion id, 0 elsewhere, dropped components
        included as 0) and that grid's affine: what the report page draws (not in ``to_json``).
    """

    lesions: list[LesionRecord]
    tmtv_ml: float
    total_tlg: float
    suvmax: float | None
    suvmax_lesion: int | None
    suvmax_mm: tuple[float, float, float] | None
    dmax_mm: float
    dropped_components: int
    dropped_volume_ml: float
    definitions: dict[str, Any] = field(default_factory=dict)
    label_file: str | None = None
    pet_file: str | None = None
    ct_file: str | None = None
    lesion_map: np.ndarray | None = field(default=None, repr=False)
    label_affine: np.ndarray | None = field(default=None, repr=False)

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the report (what ``study.json`` holds)."""
        return {
            "label_file": self.label_file,
            "pet_file": self.pet_file,
            "ct_file": self.ct_file,
            "lesion_count": self.lesion_count,
            "tmtv_ml": self.tmtv_ml,
            "total_tlg": self.total_tlg,
            "suvmax": self.suvmax,
            "suvmax_lesion": self.suvmax_lesion,
            "suvmax_mm": None if self.suvmax_mm is None else list(self.suvmax_mm),
            "dmax_mm": self.dmax_mm,
            "dropped_components": self.dropped_components,
            "dropped_volume_ml": self.dropped_volume_ml,
            "definitions": self.definitions,
            "lesions": [r.to_json() for r in self.lesions],
        }


def merge_components(components: np.ndarray, n: int, spacing_mm: tuple[float, float, float], merge_mm: float,
                     connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Join the components of ``components`` (1..n) whose voxels come within ``merge_mm`` of each
    other: the foreground is grown by ``merge_mm / 2`` (a Euclidean distance map in mm, so
    anisotropic voxels are handled), components that the grown foreground connects become one,
    and the result is renumbered in the C order of the first voxels. Voxels are not added: only
    ids change. Returns the new ``(components, n)``."""
    import SimpleITK as sitk

    if n < 2 or merge_mm <= 0:
        return components, n
    mask = sitk.GetImageFromArray((components > 0).astype(np.uint8))
    mask.SetSpacing([float(v) for v in reversed(spacing_mm)])  # SimpleITK's axes are the array's reversed
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False,
                                                                   squaredDistance=False, useImageSpacing=True))
    grown, _ = connected_components(distance <= merge_mm / 2.0, connectivity == 26)
    # each component takes the grown component of its voxels (all of them fall in one)
    joined = np.zeros(n + 1, np.int32)
    joined[components.ravel()] = grown.ravel()
    joined[0] = 0
    merged = joined[components]
    return renumber(merged)


def _filename(img: Any) -> str | None:
    name = img.get_filename() if hasattr(img, "get_filename") else None
    return str(name) if name else None


def _volume_3d(img: Any, name: str, what: str) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:  # a 3D volume saved with a trailing time axis
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{what} {name} must be a 3D volume, got shape {data.shape}")
    return data


def _world_box(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """World (mm) bounding box of a grid's voxels, edges included."""
    corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in shape])))
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def _to_index(affine_inv: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine_inv[:3, :3].T + affine_inv[:3, 3]


def _sphere_offsets(pet_affine: np.ndarray, radius_mm: float) -> np.ndarray:
    """PET index offsets whose voxel centres lie within ``radius_mm`` of a voxel centre."""
    rot = pet_affine[:3, :3]
    n = int(math.ceil(radius_mm / np.linalg.svd(rot, compute_uv=False).min()))
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    dist = np.linalg.norm(grid @ rot.T, axis=1)
    return grid[dist <= radius_mm * (1 + 1e-9)]


def _suvpeak(pet: np.ndarray, centres: np.ndarray, offsets: np.ndarray, chunk: int = 4096) -> float:
    """Highest mean of ``pet`` over the sphere ``offsets`` around each of ``centres`` (voxels
    outside the image are left out of the mean)."""
    shape = np.array(pet.shape)
    best = -np.inf
    for start in range(0, len(centres), chunk):
        pts = centres[start:start + chunk, None, :] + offsets[None, :, :]
        inside = np.all((pts >= 0) & (pts < shape), axis=2)
        vals = pet[tuple(np.clip(pts, 0, shape - 1).transpose(2, 0, 1))]
        means = np.where(inside, vals, 0.0).sum(axis=1) / inside.sum(axis=1)
        best = max(best, float(means.max()))
    return best


def _voxels_by_component(components: np.ndarray, n: int) -> list[np.ndarray]:
    """Voxel indices ``(k, 3)`` of each component 0..n, in one pass over the foreground (not one
    pass over the volume per lesion)."""
    flat = np.flatnonzero(components)
    values = components.flat[flat]
    order = np.argsort(values, kind="stable")
    bounds = np.searchsorted(values[order], np.arange(n + 2))
    coords = np.stack(np.unravel_index(flat[order], components.shape), axis=1)
    return [coords[bounds[c]:bounds[c + 1]] for c in range(n + 1)]


def _definitions(connectivity: int, min_volume_ml: float, merge_mm: float) -> dict[str, Any]:
    merged = (f"; components whose voxels come within {merge_mm:g} mm of each other are one lesion"
              if merge_mm > 0 else "")
    return {
        "lesion": f"3D connected component of label > 0 on the label grid, {connectivity}-connectivity{merged}; "
                  f"components under {min_volume_ml:g} mL dropped",
        "connectivity": connectivity,
        "min_volume_ml": min_volume_ml,
        "merge_mm": merge_mm,
        "volume": "label voxel count x label voxel volume (|det affine| mm^3 / 1000), mL",
        "suv_grid": "PET's own grid: a PET voxel belongs to the lesion whose label voxel covers its centre "
                    "(nearest-neighbour through both affines); a lesion covering no PET voxel centre takes the PET "
                    "voxel nearest its centroid",
        "suvmax": "highest SUV of the lesion's PET voxels",
        "suvmean": "mean SUV of the lesion's PET voxels",
        "suvpeak": f"PERCIST: highest mean SUV in a 1 cm^3 sphere (radius {SUVPEAK_RADIUS_MM:.4f} mm) centred on a "
                   "PET voxel of the lesion, over all PET voxels whose centres lie within the radius",
        "suvpeak_radius_mm": SUVPEAK_RADIUS_MM,
        "tlg": "SUVmean x volume (mL)",
        "tmtv": "sum of the lesion volumes (mL)",
        "dmax": "largest distance between two lesion centroids (mm); 0 for fewer than two lesions",
        "centroid": "mean position of the lesion's label voxels, patient (world, RAS+) mm",
        "extent": "bounding-box size along the label's axes (mm)",
        "slices": "first and last label slice (0-based index on the label's third axis)",
    }


def quantify(label_img: Any, pet_img: Any, *, connectivity: int = 26, min_volume_ml: float = 0.0,
             merge_mm: float = 0.0) -> StudyReport:
    """Measure the lesions of ``label_img`` on ``pet_img``.

    Parameters
    ----------
    label_img
        nibabel image of the lesion label (any integer or boolean type; lesions are ``> 0``), RAS+
        affine in mm, usually on the CT grid.
    pet_img
        nibabel image of the PET in SUV on its own grid, RAS+ affine in mm.
    connectivity
        6 (faces) or 26 (default; faces, edges and corners): which neighbours join voxels into one lesion.
    min_volume_ml
        Components smaller than this are dropped (and counted in the report). Default 0: every
        component counts, as TMTV is defined (the sum over all lesions).
    merge_mm
        Components whose voxels come within this distance are one lesion (see
        :func:`merge_components`), for a segmentation that splits one lesion into fragments.
        Default 0: no merging, each connected component is a lesion.

    Returns
    -------
    StudyReport

    Raises
    ------
    DataError
        The label or PET is not 3D, or the two grids do not overlap in world space.
    """
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")
    for name, value in (("min_volume_ml", min_volume_ml), ("merge_mm", merge_mm)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    label_file, pet_file = _filename(label_img), _filename(pet_img)
    label_name, pet_name = label_file or "(in memory)", pet_file or "(in memory)"
    label = _volume_3d(label_img, label_name, "label") > 0
    pet = _volume_3d(pet_img, pet_name, "PET").astype(np.float64)
    la, pa = np.asarray(label_img.affine, float), np.asarray(pet_img.affine, float)
    (llo, lhi), (plo, phi) = _world_box(la, label.shape), _world_box(pa, pet.shape)
    if np.any(llo >= phi) or np.any(plo >= lhi):
        raise DataError(f"label {label_name} (shape {label.shape}) and PET {pet_name} (shape {pet.shape}) do not "
                        f"overlap in world space: label spans {np.round(llo, 1).tolist()}..{np.round(lhi, 1).tolist()} "
                        f"mm, PET {np.round(plo, 1).tolist()}..{np.round(phi, 1).tolist()} mm")

    spacing = np.linalg.norm(la[:3, :3], axis=0)
    components, n = merge_components(*connected_components(label, connectivity == 26), tuple(spacing), merge_mm, connectivity)
    voxel_ml = abs(float(np.linalg.det(la[:3, :3]))) / 1000.0
    counts = np.bincount(components.ravel(), minlength=n + 1)
    kept = [c for c in range(1, n + 1) if counts[c] * voxel_ml >= min_volume_ml]
    dropped = [c for c in range(1, n + 1) if counts[c] * voxel_ml < min_volume_ml]
    lesion_ids = np.zeros(n + 1, np.int32)  # component -> lesion id (0: dropped)
    lesion_ids[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)

    # the lesions on the PET grid: sample the component labels at the PET voxel centres, within the
    # PET sub-box that the label's foreground can reach
    pet_components = np.zeros(pet.shape, np.int32)
    pa_inv, la_inv = np.linalg.inv(pa), np.linalg.inv(la)
    if kept:
        fg = np.argwhere(components > 0)
        corners = np.array(list(itertools.product(*zip(fg.min(axis=0) - 0.5, fg.max(axis=0) + 0.5))))
        reach = _to_index(pa_inv @ la, corners)
        lo = np.clip(np.floor(reach.min(axis=0)).astype(int), 0, np.array(pet.shape))
        hi = np.clip(np.ceil(reach.max(axis=0)).astype(int) + 1, 0, np.array(pet.shape))
        if np.all(hi > lo):
            ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
            at = np.floor(_to_index(la_inv @ pa, ijk.reshape(-1, 3)) + 0.5).astype(np.int64)
            inside = np.all((at >= 0) & (at < np.array(label.shape)), axis=1)
            sampled = np.zeros(len(at), np.int32)
            sampled[inside] = components[tuple(at[inside].T)]
            pet_components[tuple(slice(a, b) for a, b in zip(lo, hi))] = sampled.reshape(ijk.shape[:3])

    sphere = _sphere_offsets(pa, SUVPEAK_RADIUS_MM)
    records: list[LesionRecord] = []
    label_voxels, pet_voxels = _voxels_by_component(components, n), _voxels_by_component(pet_components, n)
    for lesion_id, c in enumerate(kept, start=1):
        vox = label_voxels[c]
        centroid = la[:3, :3] @ vox.mean(axis=0) + la[:3, 3]
        pet_vox = pet_voxels[c]
        nearest = len(pet_vox) == 0
        if nearest:
            at = np.floor(_to_index(pa_inv, centroid[None]) + 0.5).astype(np.int64)
            pet_vox = np.clip(at, 0, np.array(pet.shape) - 1)
        values = pet[tuple(pet_vox.T)]
        top = int(np.argmax(values))
        suvmean = float(values.mean())
        volume = float(len(vox) * voxel_ml)
        records.append(LesionRecord(
            id=lesion_id, voxels=int(len(vox)), volume_ml=volume,
            suvmax=float(values[top]), suvmean=suvmean, suvpeak=_suvpeak(pet, pet_vox, sphere),
            tlg=suvmean * volume,
            centroid_mm=tuple(float(v) for v in centroid),
            extent_mm=tuple(float(v) for v in (vox.max(axis=0) - vox.min(axis=0) + 1) * spacing),
            slices=(int(vox[:, 2].min()), int(vox[:, 2].max())),
            suvmax_mm=tuple(float(v) for v in pa[:3, :3] @ pet_vox[top] + pa[:3, 3]),
            pet_voxels=int(len(pet_vox)), pet_nearest_centroid=nearest,
        ))

    hottest = max(records, key=lambda r: r.suvmax, default=None)
    centroids = np.array([r.centroid_mm for r in records]).reshape(-1, 3)
    dmax = float(np.linalg.norm(centroids[:, None] - centroids[None], axis=2).max()) if len(records) > 1 else 0.0
    return StudyReport(
        lesions=records,
        tmtv_ml=float(sum(r.volume_ml for r in records)),
        total_tlg=float(sum(r.tlg for r in records)),
        suvmax=None if hottest is None else hottest.suvmax,
        suvmax_lesion=None if hottest is None else hottest.id,
        suvmax_mm=None if hottest is None else hottest.suvmax_mm,
        dmax_mm=dmax,
        dropped_components=len(dropped),
        dropped_volume_ml=float(sum(counts[c] for c in dropped) * voxel_ml),
        definitions=_definitions(connectivity, float(min_volume_ml), float(merge_mm)),
        label_file=label_file,
        pet_file=pet_file,
        lesion_map=lesion_ids[components],
        label_affine=la,
    )


def write_report(report: StudyReport, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/lesions.csv`` (a header, then one row per lesion) and ``out_dir/study.json``
    (:meth:`StudyReport.to_json`), each atomically. Returns the two paths."""
    out = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(r.csv_row() for r in report.lesions)
    csv_path, json_path = out / "lesions.csv", out / "study.json"
    with atomic_write(csv_path, "w") as f:
        f.write(buffer.getvalue())
    atomic_write_json(json_path, report.to_json())
    return csv_path, json_path
