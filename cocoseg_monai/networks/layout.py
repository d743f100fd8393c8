"""Which memory format a network runs in: the bundle's ``channels_last`` setting."""

from __future__ import annotations

import torch
from torch import nn

from .nets import CoCoSegNet

__all__ = ["prefers_channels_last"]


def prefers_channels_last(network: nn.Module, device: torch.device | str) -> bool:
    """Whether ``network`` should run channels_last on ``device``.

    On CUDA, yes (convolutions under AMP are fastest channels_last). On the CPU, only for a
    :class:`~cocoseg_monai.networks.CoCoSegNet`, whose every layer keeps the layout (its instance
    norms included, :class:`~cocoseg_monai.networks.blocks.InstanceNorm2d`); there oneDNN runs
    its convolutions without converting each input and output: inference 1.15 to 1.4x and
    training steps 5 to 20 % faster on a 2-core AMD EPYC (``docs/BENCHMARKS.md``). MONAI's networks convert back to
    NCHW in their norms on the CPU, where channels_last costs them more than it saves.
    """
    return torch.device(device).type == "cuda" or isinstance(network, CoCoSegNet)
