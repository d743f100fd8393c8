"""Multi-stream feature fusion: shared channel attention on each stream, concatenation, reduction."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution

__all__ = ["stack_streams", "FusionConv"]


def stack_streams(x: torch.Tensor, num_streams: int) -> torch.Tensor:
    """Turn streams stacked on the batch axis into streams concatenated on the channel axis.

    ``[S * B, C, *spatial]`` (stream-major, as made by ``torch.cat(streams, dim=0)``) becomes
    ``[B, S * C, *spatial]`` with stream 0's channels first: the same result as
    ``torch.cat(streams, dim=1)``. Running a shared module once on the batch-stacked streams
    is cheaper than once per stream. The result keeps ``x``'s memory format (channels_last stays
    channels_last).
    """
    return torch.cat(x.chunk(num_streams, 0), 1)


class FusionConv(Convolution):
    """Reduce ``num_streams`` concatenated streams of ``channels`` each back to ``channels``.

    A 3x3 convolution + norm + activation (MONAI :class:`~monai.networks.blocks.Convolution`),
    ``[B, num_streams * channels, *spatial] -> [B, channels, *spatial]``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_streams: int,
        act: str | tuple,
        norm: str | tuple,
        bias: bool = True,
        dropout: float | tuple = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims, num_streams * channels, channels, act=act, norm=norm, dropout=dropout, bias=bias, padding=1
        )
