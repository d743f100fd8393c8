"""Patch-sampling maps for PET/CT: lesions, PET-avid non-lesion tissue, and the rest."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform, Transform

__all__ = ["HotspotSamplingMap", "HotspotSamplingMapd", "SAMPLING_CLASSES"]

#: Classes of the sampling map, in order: index = class value.
SAMPLING_CLASSES = ("background", "avid_non_lesion", "lesion")


class HotspotSamplingMap(Transform):
    """Class map that lets patch sampling aim at physiological uptake as hard negatives.

    In PET/CT most false positives sit on normal tracer uptake: bladder, kidneys, heart, brain.
    Uniformly drawn background patches rarely show them. With this map,
    :class:`monai.transforms.RandCropByLabelClassesd` can draw a chosen share of patches
    centred on avid voxels that are not lesion.

    Args:
        threshold: PET value (in the image's scaled units) above which a voxel counts as avid;
            with the default ``suv_max = 20`` scaling, ``2.5 / 20 = 0.125`` is SUV 2.5.

    Call with the 2-channel image ``[2, *spatial]`` (CT, PET) and the label ``[1, *spatial]``;
    returns uint8 ``[1, *spatial]``: 0 background, 1 avid non-lesion, 2 lesion.
    """

    def __init__(self, threshold: float = 0.125) -> None:
        self.threshold = threshold

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != 2 or tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise ValueError(
                f"expected image [2, *spatial] and label [1, *spatial] of the same size, "
                f"got {list(image.shape)} and {list(label.shape)}"
            )
        pet = torch.as_tensor(image[1:2])
        out = torch.zeros(label.shape, dtype=torch.uint8)
        out[pet > self.threshold] = 1
        out[torch.as_tensor(label) > 0] = 2
        return out


class HotspotSamplingMapd(MapTransform):
    """Dictionary form of :class:`HotspotSamplingMap`: writes the map to ``name``."""

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        name: str = "sampling_map",
        threshold: float = 0.125,
    ) -> None:
        super().__init__(keys=[image_key, label_key])
        self.image_key, self.label_key, self.name = image_key, label_key, name
        self.map = HotspotSamplingMap(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.name] = self.map(d[self.image_key], d[self.label_key])
        return d
