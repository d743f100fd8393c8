"""CT / PET intensities: PNG values -> physical units -> [0, 1].

Two steps, each a MONAI-style transform:

1. :class:`DecodePNGIntensity` turns stored PNG values into physical units using the bit depth:
   16-bit CT ``HU = value - ct_png_offset`` (1024), 16-bit PET ``SUV = value / pet_png_scale``
   (1000). 8-bit PNGs are taken as already windowed display images and mapped ``value / 255`` to
   [0, 1], and flagged as such in the meta (``intensity_unit = "display"``).
2. :class:`WindowIntensity` clips a physical range (CT window in HU, ``[0, suv_max]`` SUV) and
   scales it to [0, 1] with MONAI's :class:`~monai.transforms.ScaleIntensityRange`; inputs flagged
   ``"display"`` are already on [0, 1] and pass through, which is how 8-bit data skips windowing.

NIfTI volumes are already in HU / SUV and go straight to step 2.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import TransformBackends, convert_to_tensor, ensure_tuple_rep

from cocoseg_monai.errors import DataError
from cocoseg_monai.transforms.meta import filename_of

__all__ = [
    "INTENSITY_UNIT_KEY",
    "UNIT_DISPLAY",
    "UNIT_NORMALIZED",
    "png_bit_depth",
    "DecodePNGIntensity",
    "DecodePNGIntensityd",
    "WindowIntensity",
    "WindowIntensityd",
]

#: MetaTensor meta key telling what the values mean: "HU", "SUV", "display" or "normalized"
INTENSITY_UNIT_KEY = "intensity_unit"
#: 8-bit display image already on [0, 1]; windowing skips it
UNIT_DISPLAY = "display"
#: output of windowing, on [0, 1]
UNIT_NORMALIZED = "normalized"
_ALREADY_UNIT_RANGE = (UNIT_DISPLAY, UNIT_NORMALIZED)

_8BIT_MODES = {"1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def png_bit_depth(img: Any) -> int:
    """8 or 16, from the PIL ``mode`` that :class:`~monai.data.PILReader` stores in the meta.

    Falls back to the dtype of an integer array (uint8 / uint16).

    Raises
    ------
    DataError
        The bit depth cannot be told (no PNG meta and no integer dtype), or is neither 8 nor 16.
    """
    mode = img.meta.get("mode") if isinstance(img, MetaTensor) else None
    if isinstance(mode, str):
        # Pillow opens 16-bit greyscale PNG as "I;16" (older versions: "I")
        if mode.startswith("I;16") or mode == "I":
            return 16
        if mode in _8BIT_MODES:
            return 8
        raise DataError(f"{filename_of(img)}: PIL mode {mode!r} is neither 8-bit nor 16-bit greyscale")
    dtype = img.dtype
    if dtype in (np.uint8, torch.uint8):
        return 8
    if dtype in (np.uint16, torch.uint16):
        return 16
    raise DataError(
        f"{filename_of(img)}: cannot tell the PNG bit depth (no PIL 'mode' in the meta, dtype {dtype}); "
        f"load with LoadImageChecked(image_format='png') or pass bit_depth"
    )


class DecodePNGIntensity(Transform):
    """Stored PNG values -> physical units (16-bit) or display [0, 1] (8-bit).

    Input: ``[C, *spatial]`` array/MetaTensor of PNG values (MetaTensor from
    :class:`~cocoseg_monai.transforms.LoadImageChecked`, whose PIL ``mode`` gives the bit depth).
    Output: float32 MetaTensor, same shape; 16-bit: ``value / scale - offset`` with meta
    ``intensity_unit = unit``; 8-bit: ``value / 255`` in [0, 1] with ``intensity_unit = "display"``.

    Parameters
    ----------
    offset
        Subtracted after scaling: 1024 for CT (HU = value - 1024), 0 for PET.
    scale
        Divisor: 1 for CT, 1000 for PET (SUV = value / 1000).
    unit
        Name of the physical unit written to the meta (``"HU"``, ``"SUV"``).
    bit_depth
        Force 8 or 16 instead of reading it from the meta.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, offset: float = 0.0, scale: float = 1.0, unit: str = "physical", bit_depth: int | None = None):
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if bit_depth not in (None, 8, 16):
            raise ValueError(f"bit_depth must be 8, 16 or None, got {bit_depth}")
        self.offset = float(offset)
        self.scale = float(scale)
        self.unit = unit
        self.bit_depth = bit_depth

    def __call__(self, img: NdarrayOrTensor) -> MetaTensor:
        depth = self.bit_depth or png_bit_depth(img)
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=True)
        if depth == 8:
            out, unit = x / 255.0, UNIT_DISPLAY
        else:
            out, unit = x / self.scale - self.offset, self.unit
        out = convert_to_tensor(out, track_meta=True)
        out.meta[INTENSITY_UNIT_KEY] = unit
        return out


class DecodePNGIntensityd(MapTransform):
    """Dictionary form of :class:`DecodePNGIntensity`; ``offset``, ``scale``, ``unit`` per key.

    Example: ``DecodePNGIntensityd(keys=("image", "pet"), offset=(1024, 0), scale=(1, 1000),
    unit=("HU", "SUV"))``.
    """

    backend = DecodePNGIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        offset: float | Sequence[float] = 0.0,
        scale: float | Sequence[float] = 1.0,
        unit: str | Sequence[str] = "physical",
        bit_depth: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        n = len(self.keys)
        self.decoders = [
            DecodePNGIntensity(o, s, u, bit_depth)
            for o, s, u in zip(ensure_tuple_rep(offset, n), ensure_tuple_rep(scale, n), ensure_tuple_rep(unit, n))
        ]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, decoder in self.key_iterator(d, self.decoders):
            d[key] = decoder(d[key])
        return d


class WindowIntensity(Transform):
    """Clip ``[a_min, a_max]`` (physical units) and scale it to [0, 1].

    Uses MONAI's :class:`~monai.transforms.ScaleIntensityRange` with ``clip=True``. Inputs whose
    meta says ``intensity_unit`` is ``"display"`` (8-bit PNG) or ``"normalized"`` (already
    windowed) are on [0, 1] already: they are only clipped to [0, 1], not windowed again.

    Input: ``[C, *spatial]`` array in physical units (CT HU, PET SUV) or flagged as above.
    Output: float32 MetaTensor, same shape, values in [0, 1], ``intensity_unit = "normalized"``.

    Parameters
    ----------
    a_min, a_max
        The window: CT ``(-160, 240)`` HU by default, PET ``(0, suv_max)`` SUV.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, a_min: float, a_max: float) -> None:
        if not a_max > a_min:
            raise ValueError(f"window needs a_min < a_max, got ({a_min}, {a_max})")
        self.a_min = float(a_min)
        self.a_max = float(a_max)
        self.scaler = ScaleIntensityRange(self.a_min, self.a_max, 0.0, 1.0, clip=True, dtype=np.float32)

    def __call__(self, img: NdarrayOrTensor) -> MetaTensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=True)
        if x.meta.get(INTENSITY_UNIT_KEY) in _ALREADY_UNIT_RANGE:
            out = x.clamp(0.0, 1.0)
        else:
            out = self.scaler(x)
        out = convert_to_tensor(out, dtype=torch.float32, track_meta=True)
        out.meta[INTENSITY_UNIT_KEY] = UNIT_NORMALIZED
        return out


class WindowIntensityd(MapTransform):
    """Dictionary form of :class:`WindowIntensity` (one window for all ``keys``)."""

    backend = WindowIntensity.backend

    def __init__(self, keys: KeysCollection, a_min: float, a_max: float, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = WindowIntensity(a_min, a_max)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d
