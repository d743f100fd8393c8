"""Flip test-time augmentation: the network's logits averaged over the input and its mirror images.

What 2D and 3D PET/CT entries add at inference (nnU-Net mirrors along every axis and averages
the logits): a lesion the network half-misses on one side may be found on the mirrored one.
Here the slices are mirrored left-right (the patient's sides) and, optionally, front-back; every
mirrored prediction is mirrored back before the average, so the result lies on the input's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["FlipAveragingInferer"]


class FlipAveragingInferer(Inferer):
    """Run ``inferer`` on the input and on its flips along each set of ``axes`` (spatial axes of
    the batch ``[B, C, *spatial]``: 2 is x, 3 is y); return the mean of the logits.

    Args:
        inferer: the inferer each pass goes through (e.g. MONAI's ``SliceInferer``).
        axes: the flips, each a tuple of axes; default ``((2,),)``: left-right.
        enabled: ``False`` runs ``inferer`` once, unchanged.
    """

    def __init__(self, inferer: Inferer, axes: Sequence[Sequence[int]] = ((2,),), enabled: bool = True) -> None:
        super().__init__()
        self.inferer, self.enabled = inferer, bool(enabled)
        self.axes = [tuple(int(a) for a in flip) for flip in axes]
        for flip in self.axes:
            if not flip or min(flip) < 2:
                raise ValueError(f"flip axes must be spatial axes (>= 2) of [B, C, *spatial], got {flip}")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.inferer(inputs, network, *args, **kwargs)
        if not self.enabled:
            return out
        total = out.float()
        for flip in self.axes:
            total = total + torch.flip(self.inferer(torch.flip(inputs, flip), network, *args, **kwargs), flip).float()
        return total / (1 + len(self.axes))
