"""A picture of one phantom patient to look at: CT in two windows, PET, PET/CT fusion and the
lesion mask of one slice, side by side with a caption, as a PNG.

Drawn with numpy and PIL alone, so that generating a data set never needs matplotlib.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from cocoseg_monai.atomic import atomic_write
from cocoseg_monai.conventions import to_display

from .generate import PhantomStudy

__all__ = ["save_preview"]


# The window and the colour map are kept here rather than shared with cocoseg_monai.visualize:
# that module draws through matplotlib with grey maps only and has no windowing helper, and
# matplotlib's "hot" has other break points (red from 0.04 at 0, green from 0.37, blue from 0.75),
# so using it would change every fused pixel of the previews in the docs.


def _window(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a - lo) / (hi - lo), 0, 1)


def _hot(t: np.ndarray) -> np.ndarray:
    """'hot' colour map: black -> red -> yellow -> white, in equal thirds."""
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
