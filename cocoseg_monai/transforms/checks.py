"""Content checks that fail early with the offending file named: non-finite voxels, size or grid
mismatch, volumes apart, missing geometry."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from cocoseg_monai.errors import DataError
from cocoseg_monai.transforms.meta import filename_of

__all__ = ["CheckFinite", "CheckFinited", "CheckSameSpatialShaped", "CheckOverlapd", "CheckGeometryd"]


class CheckFinite(Transform):
    """Raise when an image holds NaN or inf; otherwise return it unchanged.

    Input/output: any array or tensor ``[C, *spatial]`` (typically a loaded NIfTI volume).

    Raises
    ------
    DataError
        Naming the file and the count of NaN and inf voxels.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = torch.as_tensor(img)
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            n_nan = int(torch.isnan(x).sum())
            n_inf = int(torch.isinf(x).sum())
            raise DataError(
                f"{filename_of(img)} holds {n_nan} NaN and {n_inf} inf voxel(s) out of {x.numel()}; "
                f"fix or drop this file"
            )
        return img


class CheckFinited(MapTransform):
    """Dictionary form of :class:`CheckFinite`; the error also names the key."""

    backend = CheckFinite.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = CheckFinite()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                self.check(d[key])
            except DataError as e:
                raise DataError(f"key {key!r}: {e}") from None
        return d


class CheckSameSpatialShaped(MapTransform):
    """Raise unless all ``keys`` have the same spatial shape (channel dimension excluded) and,
    where they are volumes placed in the world by their files, the same grid there (affine).

    Used after loading PNG slices (CT, PET and mask must be the same size), after reorienting
    a NIfTI label with its CT (it must lie on the CT's grid: a label of the right shape but
    another origin, spacing or direction marks the wrong voxels), and after resampling PET onto
    the CT grid. Dictionary only: it compares items.

    Affines are compared only between volumes (3 spatial dimensions) that come from a file whose
    header places them (a MetaTensor with ``filename_or_obj``, not both of ``qform_code`` and
    ``sform_code`` 0); PNG slices carry no geometry. Two affines match when their direction and
    spacing parts differ by at most ``rtol`` of the largest entry and their origins by at most
    ``voxel_tol`` of the smallest voxel size (the rounding of a header's float32 fields).

    Input/output: ``{key: [C, *spatial]}``, unchanged.

    Raises
    ------
    DataError
        Naming every key with its file and spatial shape, or both files with the spacing, origin
        and axis directions of their affines (as stored in the file where the meta keeps that).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, keys: KeysCollection, rtol: float = 1e-4, voxel_tol: float = 1e-3, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.rtol = rtol
        self.voxel_tol = voxel_tol

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shapes = {key: tuple(int(s) for s in d[key].shape[1:]) for key in self.key_iterator(d)}
        if len(set(shapes.values())) > 1:
            detail = "; ".join(f"{key!r} {filename_of(d[key])} spatial shape {shape}" for key, shape in shapes.items())
            raise DataError(f"spatial sizes differ where they must match: {detail}")
        placed = {key: affine for key in shapes if (affine := _placed_affine(d[key])) is not None}
        if len(placed) > 1:
            (ref_key, ref), *others = placed.items()
            for key, affine in others:
                if not self._same_grid(ref, affine):
                    raise DataError(
                        f"{ref_key!r} {filename_of(d[ref_key])} and {key!r} {filename_of(d[key])} have the same shape "
                        f"{shapes[key]} but lie on different grids in space: {ref_key!r} {_describe(d[ref_key])}; "
                        f"{key!r} {_describe(d[key])}. The label must be stored on its CT's grid (same origin, "
                        "spacing and directions)"
                    )
        return d

    def _same_grid(self, a: np.ndarray, b: np.ndarray) -> bool:
        linear_a, linear_b = a[:3, :3], b[:3, :3]
        scale = float(np.abs(linear_a).max())
        smallest_voxel = float(np.linalg.norm(linear_a, axis=0).min())
        return bool(
            np.abs(linear_a - linear_b).max() <= self.rtol * scale
            and np.abs(a[:3, 3] - b[:3, 3]).max() <= self.voxel_tol * smallest_voxel
        )


def _placed_affine(img: Any) -> np.ndarray | None:
    """The float64 4x4 affine of a volume whose file places it in the world; None otherwise."""
    if not isinstance(img, MetaTensor) or img.ndim != 4 or not img.meta.get("filename_or_obj"):
        return None
    codes = [img.meta.get(name) for name in ("qform_code", "sform_code")]
    if all(c is not None for c in codes) and all(int(c) == 0 for c in codes):
        return None  # no geometry in the file (CheckGeometryd refuses such images where it matters)
    affine = np.asarray(torch.as_tensor(img.affine, dtype=torch.float64).cpu())
    return affine if affine.shape == (4, 4) else None


def _describe(img: MetaTensor) -> str:
    """Spacing, origin and axis directions of ``img``'s affine as its file stores it (the meta's
    ``original_affine``, before any reorientation), else of its current one."""
    import nibabel as nib

    stored = img.meta.get("original_affine")
    affine = np.asarray(stored if stored is not None else img.affine, dtype=np.float64)
    spacing = [round(float(v), 4) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    origin = [round(float(v), 4) for v in affine[:3, 3]]
    return f"spacing {spacing} mm, origin {origin} mm, axes {''.join(nib.aff2axcodes(affine))}"


class CheckOverlapd(MapTransform):
    """Raise unless the volumes of ``keys`` overlap in world space.

    Resampling PET onto a CT grid it does not overlap gives a PET image of padding only: a
    silent failure. The extent of each volume is its voxel corners mapped through its affine
    (MetaTensor ``affine``); the boxes must intersect over at least ``min_fraction`` of the
    smaller box's volume.

    Input/output: ``{key: MetaTensor [C, *spatial]}``, unchanged.

    Raises
    ------
    DataError
        Naming the files and their world extents in mm.
    """

    def __init__(self, keys: KeysCollection, min_fraction: float = 0.01, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_fraction = min_fraction

    @staticmethod
    def _box(img: Any) -> torch.Tensor:
        affine = torch.as_tensor(img.affine, dtype=torch.float64)
        shape = [int(s) for s in img.shape[1:]]
        corners = torch.cartesian_prod(*[torch.tensor([-0.5, s - 0.5], dtype=torch.float64) for s in shape])
        world = corners @ affine[: len(shape), : len(shape)].T + affine[: len(shape), -1]
        return torch.stack([world.min(0).values, world.max(0).values])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        boxes = {k: self._box(d[k]) for k in keys}
        lo = torch.stack([b[0] for b in boxes.values()]).max(0).values
        hi = torch.stack([b[1] for b in boxes.values()]).min(0).values
        overlap = torch.clamp(hi - lo, min=0).prod()
        smallest = min(float((b[1] - b[0]).prod()) for b in boxes.values())
        if smallest <= 0 or float(overlap) < self.min_fraction * smallest:
            detail = "; ".join(
                f"{k!r} {filename_of(d[k])} spans {[round(float(v), 1) for v in b[0]]}..{[round(float(v), 1) for v in b[1]]} mm"
                for k, b in boxes.items()
            )
            raise DataError(f"volumes do not overlap in space: {detail}")
        return d


class CheckGeometryd(MapTransform):
    """Raise when a NIfTI volume is not one-channel ``spatial_dims``-D or carries no usable
    spatial information.

    A file whose ``qform_code`` and ``sform_code`` are both 0 has no position or orientation in
    world space, and one with a zero or negative voxel size has no spacing: PET cannot be placed
    on the CT grid from either. Readers that do not report these header fields are not checked.

    Input/output: ``{key: MetaTensor [C, *spatial]}``, unchanged.

    Raises
    ------
    DataError
        Naming the key, the file and what is wrong.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int | None = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            shape = tuple(d[key].shape)
            if self.spatial_dims is not None and (len(shape) != self.spatial_dims + 1 or shape[0] != 1):
                raise DataError(
                    f"{key!r} {filename_of(d[key])}: expected one {self.spatial_dims}D volume, got an image of "
                    f"{shape[0]} channel(s) and spatial shape {list(shape[1:])}"
                )
            meta = getattr(d[key], "meta", {})
            codes = [meta.get(name) for name in ("qform_code", "sform_code")]
            if all(c is not None for c in codes) and all(int(c) == 0 for c in codes):
                raise DataError(
                    f"{key!r} {filename_of(d[key])} has no spatial information (qform_code and sform_code are 0): "
                    "its position and spacing relative to the other images are unknown"
                )
            pixdim = meta.get("pixdim")
            ndim = len(d[key].shape) - 1
            if pixdim is not None and min(float(v) for v in list(pixdim)[1 : ndim + 1]) <= 0:
                raise DataError(f"{key!r} {filename_of(d[key])} has no valid voxel spacing (pixdim {list(pixdim)})")
        return d
