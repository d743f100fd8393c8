"""Single-modality UNet encoder built from MONAI's BasicUNet blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets.basic_unet import Down, TwoConv
from torch import nn

from .pooling import MaxPool2x2

__all__ = ["UNetEncoder"]


class UNetEncoder(nn.Module):
    """Four-level UNet encoder: ``TwoConv`` at full resolution, then ``Down`` (max-pool + ``TwoConv``).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels (1 for one modality).
        features: four output widths, one per level.
        act, norm, bias, dropout: as in :class:`monai.networks.nets.BasicUNet`.

    Input ``[B, in_channels, H, W]`` with ``H`` and ``W`` divisible by 8; output the four levels
    ``[B, f0, H, W]``, ``[B, f1, H/2, W/2]``, ``[B, f2, H/4, W/4]``, ``[B, f3, H/8, W/8]``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int],
        act: str | tuple,
        norm: str | tuple,
        bias: bool = True,
        dropout: float | tuple = 0.0,
    ) -> None:
        super().__init__()
        if len(features) != 4:
            raise ValueError(f"features must have 4 widths (one per level), got {tuple(features)}.")
        f0, f1, f2, f3 = features
        self.level1 = TwoConv(spatial_dims, in_channels, f0, act, norm, bias, dropout)
        self.level2 = Down(spatial_dims, f0, f1, act, norm, bias, dropout)
        self.level3 = Down(spatial_dims, f1, f2, act, norm, bias, dropout)
        self.level4 = Down(spatial_dims, f2, f3, act, norm, bias, dropout)
        if spatial_dims == 2:  # the same values as Down's MaxPool2d(2), faster on CPU without autograd
            for level in (self.level2, self.level3, self.level4):
                level.max_pooling = MaxPool2x2()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.level1(x)
        x2 = self.level2(x1)
        x3 = self.level3(x2)
        x4 = self.level4(x3)
        return x1, x2, x3, x4
