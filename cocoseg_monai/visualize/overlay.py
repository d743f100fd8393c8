"""Pictures of results: slice overlays (CT, PET, truth, prediction) and PET MIPs with lesions.

Arrays follow the transforms' convention: 2D slices ``(x, y)`` with x from the patient's right
to left and y from anterior to posterior (``LPS``, how MONAI loads a radiological PNG), volumes
``(x, y, z)`` with z from inferior to superior. Pictures are drawn in radiological display:
anterior (or superior) at the top, the patient's right on the left.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_overlay", "save_pet_mip"]


def _figure_to_png(fig, path: str | os.PathLike, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    from ..atomic import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
    return path


def _display(slice_xy: np.ndarray) -> np.ndarray:
    return np.asarray(slice_xy, dtype=np.float32).T  # (x, y) -> rows y (anterior first), cols x


def save_overlay(
    ct: np.ndarray,
    pet: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray | None,
    path: str | os.PathLike,
    title: str = "",
    panel_px: int = 256,
) -> Path:
    """Write CT | PET | CT + truth | CT + prediction side by side (truth green, prediction red).

    Args:
        ct, pet: 2D slices scaled to [0, 1] (the transforms' output channels).
        truth, pred: 2D binary masks, or ``None`` to leave that panel out.
        path: the PNG; its size is ``panel_px`` x panels wide and ``panel_px`` high.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, a in (("pet", pet), ("truth", truth), ("pred", pred)):
        if a is not None and np.shape(a) != np.shape(ct):
            raise ValueError(f"{name} shape {np.shape(a)} differs from ct shape {np.shape(ct)}")
    panels = [("CT", _display(ct), "gray", None), ("PET", _display(pet), "gray_r", None)]
    for name, mask, colour in (("truth", truth, (0.1, 0.9, 0.1)), ("prediction", pred, (1.0, 0.15, 0.1))):
        if mask is not None:
            panels.append((f"CT + {name}", _display(ct), "gray", (_display(mask) > 0, colour)))
    dpi = 100
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_px * len(panels) / dpi, panel_px / dpi), dpi=dpi)
    for i, (ax, (label, image, cmap, overlay)) in enumerate(zip(np.atleast_1d(axes), panels)):
        ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        if overlay is not None:
            mask, colour = overlay
            rgba = np.zeros((*mask.shape, 4), np.float32)
            rgba[mask] = (*colour, 0.55)
            ax.imshow(rgba, interpolation="nearest")
        ax.set_title(f"{title}: {label}" if title and i == 0 else label, fontsize=7, color="white", pad=2)
        ax.axis("off")
    fig.patch.set_facecolor("black")
    fig.subplots_adjust(0, 0, 1, 0.92, 0.01, 0)
    return _figure_to_png(fig, path, dpi)


def save_pet_mip(
    pet: np.ndarray,
    pred: np.ndarray | None,
    path: str | os.PathLike,
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    title: str = "",
    height_px: int = 512,
) -> Path:
    """Coronal maximum-intensity projection of PET with the predicted lesions in red.

    Args:
        pet: volume ``(x, y, z)`` (SUV or scaled to [0, 1]).
        pred: binary volume of the same shape, or ``None``.
        spacing_mm: voxel size, so that the picture keeps the true aspect ratio.
        height_px: picture height; the width follows from the aspect ratio.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pet = np.asarray(pet, dtype=np.float32)
    if pet.ndim != 3:
        raise ValueError(f"pet must be a volume (x, y, z), got shape {pet.shape}")
    if pred is not None and np.shape(pred) != pet.shape:
        raise ValueError(f"pred shape {np.shape(pred)} differs from pet shape {pet.shape}")
    mip = pet.max(axis=1).T[::-1]  # (z, x): superior at the top, patient's right on the left
    vmax = float(np.percentile(mip, 99.5)) or 1.0
    aspect = spacing_mm[2] / spacing_mm[0]
    width_px = max(1, int(round(height_px * mip.shape[1] / (mip.shape[0] * aspect))))
    dpi = 100
    fig = plt.figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mip, cmap="gray_r", vmin=0, vmax=vmax, aspect="auto", interpolation="bilinear")
    if pred is not None:
        lesion = (np.asarray(pred) > 0).max(axis=1).T[::-1]
        rgba = np.zeros((*lesion.shape, 4), np.float32)
        rgba[lesion] = (1.0, 0.1, 0.1, 0.6)
        ax.imshow(rgba, aspect="auto", interpolation="nearest")
    if title:
        ax.text(0.02, 0.98, title, transform=ax.transAxes, va="top", fontsize=8)
    ax.axis("off")
    return _figure_to_png(fig, path, dpi)
