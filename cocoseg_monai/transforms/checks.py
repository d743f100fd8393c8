"""Content checks that fail early with the offending file named: non-finite voxels, size mismatch."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from cocoseg_monai.data.discovery import DataError
from cocoseg_monai.transforms.meta import filename_of

__all__ = ["CheckFinite", "CheckFinited", "CheckSameSpatialShaped"]


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
    """Raise unless all ``keys`` have the same spatial shape (channel dimension excluded).

    Used after loading PNG slices (CT, PET and mask must be the same size) and after resampling
    PET onto the CT grid (the label must be on that grid too). Dictionary only: it compares items.

    Input/output: ``{key: [C, *spatial]}``, unchanged.

    Raises
    ------
    DataError
        Naming every key with its file and spatial shape.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shapes = {key: tuple(int(s) for s in d[key].shape[1:]) for key in self.key_iterator(d)}
        if len(set(shapes.values())) > 1:
            detail = "; ".join(f"{key!r} {filename_of(d[key])} spatial shape {shape}" for key, shape in shapes.items())
            raise DataError(f"spatial sizes differ where they must match: {detail}")
        return d
