"""Masks -> 0/1 foreground, refusing values that would silently become wrong labels."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

from cocoseg_monai.errors import DataError
from cocoseg_monai.transforms.meta import filename_of

__all__ = ["BinarizeMask", "BinarizeMaskd"]

_SHOW = 10


class BinarizeMask(Transform):
    """Map a mask to float32 0/1.

    Without ``label_mapping`` a mask must hold only {0, 1} (kept) or only {0, 255} (255 -> 1),
    the two encodings of the project's PNG masks; a NIfTI label must hold {0, 1}. Anything else
    (a multi-class label, a mask mixing 1 and 255, interpolated values) is an error naming the
    file and the values, unless ``label_mapping`` says how to map every value.

    Input: ``[1, *spatial]`` mask (MetaTensor from the loader, so errors can name the file).
    Output: float32 MetaTensor, same shape, values exactly 0.0 / 1.0.

    Parameters
    ----------
    label_mapping
        ``{stored value: 0 or 1}``, e.g. ``{0: 0, 1: 1, 2: 1}`` to merge classes. Keys may be
        strings (JSON/YAML) that parse as numbers. Every value present must be mapped.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, label_mapping: Mapping[Any, Any] | None = None) -> None:
        self.label_mapping: dict[float, float] | None = None
        if label_mapping is not None:
            mapping = {float(k): float(v) for k, v in label_mapping.items()}
            bad = {k: v for k, v in mapping.items() if v not in (0.0, 1.0)}
            if bad:
                raise ValueError(f"label_mapping must map to 0 or 1, got {bad}")
            self.label_mapping = mapping

    def __call__(self, img: NdarrayOrTensor) -> MetaTensor:
        x = convert_to_tensor(img, track_meta=True)
        values = {float(v) for v in torch.unique(x).tolist()}
        if self.label_mapping is None:
            if values <= {0.0, 1.0}:
                out = x.to(torch.float32)
            elif values <= {0.0, 255.0}:
                out = (x == 255).to(torch.float32)
            else:
                # either values outside {0, 1, 255}, or 1 and 255 mixed (ambiguous encoding)
                unexpected = sorted(values - {0.0, 1.0, 255.0}) or [1.0, 255.0]
                raise DataError(
                    f"mask {filename_of(img)} holds unexpected values {_fmt(unexpected)} "
                    f"(all values: {_fmt(sorted(values))}); expected {{0, 1}} or {{0, 255}}, "
                    f"or pass label_mapping={{value: 0 or 1}}"
                )
        else:
            unmapped = sorted(values - set(self.label_mapping))
            if unmapped:
                raise DataError(
                    f"mask {filename_of(img)} holds values {_fmt(unmapped)} that label_mapping "
                    f"{self.label_mapping} does not map"
                )
            out = torch.zeros_like(x, dtype=torch.float32)
            for value, target in self.label_mapping.items():
                if target:
                    out[x == value] = 1.0
        return convert_to_tensor(out, dtype=torch.float32, track_meta=True)


class BinarizeMaskd(MapTransform):
    """Dictionary form of :class:`BinarizeMask` (default key ``"label"``)."""

    backend = BinarizeMask.backend

    def __init__(
        self,
        keys: KeysCollection = "label",
        label_mapping: Mapping[Any, Any] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.binarize = BinarizeMask(label_mapping)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.binarize(d[key])
        return d


def _fmt(values: list[float]) -> str:
    shown = [int(v) if float(v).is_integer() else v for v in values[:_SHOW]]
    return str(shown) + (f" ... ({len(values) - _SHOW} more)" if len(values) > _SHOW else "")
