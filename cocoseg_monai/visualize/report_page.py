"""One PNG page per study for a PET reader: a coronal PET MIP with every lesion outlined and
numbered, the three largest lesions in axial PET/CT fusion, and the lesion table beneath, with
the same numbers and colours as ``lesions.csv``.

Every panel is drawn in patient coordinates (mm, RAS+): each image is brought to its nearest
axis-aligned orientation (``nibabel.as_closest_canonical``) and placed by its voxel centres, so
the CT, the PET and the label line up whatever their grids. Display is radiological: the
patient's right on the viewer's left, anterior (axial) and superior (coronal) at the top.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CT_WINDOW_HU", "MAX_TABLE_ROWS", "lesion_colour", "report_figure", "save_report_page"]

CT_WINDOW_HU = (-160.0, 240.0)
"""Soft-tissue window (level 40, width 400 HU) of the fusion panels."""

MAX_TABLE_ROWS = 20
"""Lesions listed on the page: the largest, in id order (all are in lesions.csv)."""

_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a6cee3", "#f781bf", "#a65628", "#66c2a5",
            "#ffd92f")  # fmt: skip


def lesion_colour(lesion_id: int) -> str:
    """The colour of lesion ``lesion_id`` on the page (outline, number and table row)."""
    return _COLOURS[(lesion_id - 1) % len(_COLOURS)]


class _Grid:
    """An image on its nearest axis-aligned RAS+ grid: array ``(x, y, z)`` and each axis's voxel
    centres in mm."""

    def __init__(self, array: np.ndarray, affine: np.ndarray) -> None:
        import nibabel as nib

        img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array), np.asarray(affine, float)))
        self.array = np.asanyarray(img.dataobj)
        a = img.affine
        self.centres = [a[i, i] * np.arange(n) + a[i, 3] for i, n in enumerate(self.array.shape)]

    def extent(self, first: int, second: int) -> tuple[float, float, float, float]:
        """imshow extent (edges, mm) of a plane spanned by axes ``first`` (columns) and ``second`` (rows)."""
        edges = []
        for axis in (first, second):
            c = self.centres[axis]
            step = c[1] - c[0] if len(c) > 1 else 1.0
            edges += [c[0] - step / 2, c[-1] + step / 2]
        return tuple(edges)  # type: ignore[return-value]

    def index(self, axis: int, mm: float) -> int:
        return int(np.argmin(np.abs(self.centres[axis] - mm)))


def _outline(ax: Any, xs: np.ndarray, ys: np.ndarray, mask_2d: np.ndarray, colour: str, width: float) -> None:
    """Outline ``mask_2d`` on ``ax``, its voxel centres at ``xs`` (first axis) and ``ys`` (second), in mm."""
    if not mask_2d.any():
        return
    padded = np.pad(mask_2d.astype(np.float32), 1)
    sx = xs[1] - xs[0] if len(xs) > 1 else 1.0
    sy = ys[1] - ys[0] if len(ys) > 1 else 1.0
    xs = np.concatenate([[xs[0] - sx], xs, [xs[-1] + sx]])
    ys = np.concatenate([[ys[0] - sy], ys, [ys[-1] + sy]])
    ax.contour(xs, ys, padded.T, levels=[0.5], colors=[colour], linewidths=width)


def _number(ax: Any, x: float, y: float, lesion_id: int, size: float) -> None:
    ax.annotate(str(lesion_id), (x, y), xytext=(6, 6), textcoords="offset points", color=lesion_colour(lesion_id),
                fontsize=size, fontweight="bold", bbox={"boxstyle": "round,pad=0.1", "fc": "black", "ec": "none",
                                                        "alpha": 0.6})  # fmt: skip


def _mip_panel(ax: Any, report: Any, pet: _Grid, lesions: _Grid) -> None:
    mip = pet.array.max(axis=1)  # over anterior-posterior: (x, z)
    vmax = float(np.percentile(mip, 99.5)) or 1.0
    ax.imshow(mip.T, origin="lower", extent=pet.extent(0, 2), cmap="gray_r", vmin=0, vmax=vmax,
              interpolation="bilinear")
    coords = np.argwhere(lesions.array > 0)
    ids = lesions.array[tuple(coords.T)]
    for record in report.lesions:
        own = coords[ids == record.id]
        lo, hi = own.min(axis=0), own.max(axis=0)
        box = np.zeros((hi[0] - lo[0] + 1, hi[2] - lo[2] + 1), bool)
        box[own[:, 0] - lo[0], own[:, 2] - lo[2]] = True
        _outline(ax, lesions.centres[0][lo[0]:hi[0] + 1], lesions.centres[2][lo[2]:hi[2] + 1], box,
                 lesion_colour(record.id), 1.0)
        _number(ax, record.centroid_mm[0], record.centroid_mm[2], record.id, 7)
    ax.set_title(f"PET coronal MIP (SUV 0-{vmax:.1f})", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _fusion_rgba(pet_slice: np.ndarray, suv_window: float) -> np.ndarray:
    """PET slice ``(x, y)`` as an RGBA overlay ``(y, x, 4)``: the hot colour map, opacity rising
    with SUV (0 at SUV 0, 0.75 at the top of the window), so the CT shows through cold tissue."""
    from matplotlib import colormaps

    level = np.clip(pet_slice.T / suv_window, 0.0, 1.0)
    rgba = colormaps["hot"](level)
    rgba[..., 3] = 0.75 * level
    return rgba


def _body_box(ct: _Grid, ct_slice: np.ndarray, fallback: tuple[float, ...], margin_mm: float = 15.0
              ) -> tuple[float, ...]:
    """The view (mm) of the body in an axial CT slice (above -500 HU, a margin around it), square."""
    inside = np.argwhere(ct_slice > -500)
    if inside.size == 0:
        return fallback
    xs, ys = ct.centres[0][inside[:, 0]], ct.centres[1][inside[:, 1]]
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half = max(xs.max() - xs.min(), ys.max() - ys.min()) / 2 + margin_mm
    return (cx - half, cx + half, cy - half, cy + half)


def _axial_panel(ax: Any, record: Any, report: Any, ct: _Grid | None, pet: _Grid, lesions: _Grid,
                 suv_window: float) -> None:
    z = record.centroid_mm[2]
    k = lesions.index(2, z)
    view = lesions.extent(0, 1)
    if ct is not None:
        ct_slice = ct.array[:, :, ct.index(2, z)]
        ax.imshow(ct_slice.T, origin="lower", extent=ct.extent(0, 1), cmap="gray",
                  vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], interpolation="bilinear")
        ax.imshow(_fusion_rgba(pet.array[:, :, pet.index(2, z)], suv_window), origin="lower", extent=pet.extent(0, 1),
                  interpolation="nearest")
        view = _body_box(ct, ct_slice, view)
        what = "PET/CT"
    else:
        ax.imshow(pet.array[:, :, pet.index(2, z)].T, origin="lower", extent=pet.extent(0, 1), cmap="gray_r",
                  vmin=0, vmax=suv_window, interpolation="bilinear")
        what = "PET"
    plane, xs, ys = lesions.array[:, :, k], lesions.centres[0], lesions.centres[1]
    for other in report.lesions:
        if other.id != record.id:
            _outline(ax, xs, ys, plane == other.id, lesion_colour(other.id), 0.6)
    _outline(ax, xs, ys, plane == record.id, "cyan", 1.4)
    _number(ax, record.centroid_mm[0], record.centroid_mm[1], record.id, 8)
    ax.set_title(f"lesion {record.id}: axial {what} at z = {lesions.centres[2][k]:.1f} mm "
                 f"({record.volume_ml:.2f} mL, SUVmax {record.suvmax:.1f})", fontsize=7)
    ax.set_xlim(*view[:2])
    ax.set_ylim(*view[2:])
    ax.set_xticks([])
    ax.set_yticks([])


def _table(ax: Any, report: Any) -> None:
    ax.axis("off")
    if not report.lesions:
        ax.text(0.5, 0.9, "no lesions", ha="center", va="top", fontsize=10, transform=ax.transAxes)
        return
    columns = ("lesion", "volume mL", "SUVmax", "SUVmean", "SUVpeak", "TLG", "centroid x, y, z (mm)", "slices")
    widths = np.array([0.7, 1.0, 1.0, 1.0, 1.0, 1.0, 2.4, 0.9])
    largest = sorted(report.lesions, key=lambda r: -r.volume_ml)[:MAX_TABLE_ROWS]
    shown = sorted(largest, key=lambda r: r.id)
    rows = [[str(r.id), f"{r.volume_ml:.2f}", f"{r.suvmax:.2f}", f"{r.suvmean:.2f}", f"{r.suvpeak:.2f}", f"{r.tlg:.2f}",
             ", ".join(f"{v:.1f}" for v in r.centroid_mm), f"{r.slices[0]}-{r.slices[1]}"] for r in shown]
    height = min(1.0, 0.05 * (len(rows) + 1))  # rows of at most 5 % of the panel, from its top
    table = ax.table(cellText=rows, colLabels=columns, cellLoc="center", bbox=[0.04, 1.0 - height, 0.92, height])
    for (_, col), cell in table.get_celld().items():
        cell.set_width(0.92 * widths[col] / widths.sum())
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for i, record in enumerate(shown, start=1):
        table[i, 0].get_text().set_color(lesion_colour(record.id))
        table[i, 0].get_text().set_fontweight("bold")
    if len(report.lesions) > len(shown):
        ax.text(0.5, -0.04, f"the {len(shown)} largest of {len(report.lesions)} lesions; all are in lesions.csv",
                ha="center", fontsize=7, transform=ax.transAxes)


def save_report_page(report: Any, pet_img: Any, path: str | os.PathLike, ct_img: Any = None, title: str = "",
                     dpi: int = 110) -> Path:
    """Write the report page of ``report`` (a :class:`~cocoseg_monai.metrics.quantify.StudyReport`
    with its ``lesion_map``) as a PNG at ``path`` (935 x 1210 pixels at the default ``dpi``), atomically.

    Args:
        pet_img: nibabel PET image in SUV (its own grid), as measured.
        ct_img: nibabel CT image in HU; without it the axial panels show PET alone.
        title: first line of the page (the study's name).
    """
    from .overlay import _figure_to_png

    return _figure_to_png(report_figure(report, pet_img, ct_img=ct_img, title=title, dpi=dpi), path, dpi)


def report_figure(report: Any, pet_img: Any, ct_img: Any = None, title: str = "", dpi: int = 110) -> Any:
    """The matplotlib figure of :func:`save_report_page` (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report.lesion_map is None or report.label_affine is None:
        raise ValueError("the report carries no lesion map: make it with cocoseg_monai.metrics.quantify.quantify")
    pet = _Grid(np.asanyarray(pet_img.dataobj).astype(np.float32).reshape(pet_img.shape[:3]), pet_img.affine)
    ct = None if ct_img is None else _Grid(np.asanyarray(ct_img.dataobj).reshape(ct_img.shape[:3]), ct_img.affine)
    lesions = _Grid(report.lesion_map, report.label_affine)
    largest = sorted(report.lesions, key=lambda r: -r.volume_ml)[:3]
    suv_window = max(5.0, float(np.percentile(pet.array, 99.9)))

    fig = plt.figure(figsize=(8.5, 11.0), dpi=dpi)
    grid = fig.add_gridspec(4, 2, height_ratios=(1, 1, 1, 1.4), width_ratios=(1.1, 1), hspace=0.25, wspace=0.05,
                            left=0.03, right=0.97, top=0.90, bottom=0.04)
    suvmax = "-" if report.suvmax is None else f"{report.suvmax:.2f} (lesion {report.suvmax_lesion})"
    fig.suptitle(f"{title}\n" if title else "", fontsize=11, y=0.995, va="top")
    fig.text(0.5, 0.955, f"{report.lesion_count} lesions   TMTV {report.tmtv_ml:.2f} mL   total TLG {report.total_tlg:.2f}"
             f"   SUVmax {suvmax}   Dmax {report.dmax_mm:.1f} mm", ha="center", fontsize=9)
    definitions = report.definitions
    fig.text(0.5, 0.935, f"{definitions.get('connectivity', '?')}-connected components, min volume "
             f"{definitions.get('min_volume_ml', 0):g} mL, merge within {definitions.get('merge_mm', 0):g} mm; "
             f"{report.dropped_components} smaller components dropped; SUV read on the PET grid",
             ha="center", fontsize=7, color="dimgray")
    _mip_panel(fig.add_subplot(grid[0:3, 0], label="mip"), report, pet, lesions)
    for row in range(3):
        ax = fig.add_subplot(grid[row, 1], label=f"axial{row + 1}")
        if row < len(largest):
            _axial_panel(ax, largest[row], report, ct, pet, lesions, suv_window)
        else:
            ax.axis("off")
    _table(fig.add_subplot(grid[3, :], label="table"), report)
    return fig
