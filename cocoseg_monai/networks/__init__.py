"""CoCoSeg networks, their building blocks and parameter counting."""

from __future__ import annotations

from . import blocks, nets
from .layout import prefers_channels_last
from .nets import COCOSEG_PRESETS, CoCoSegNet, CoCoSegV2
from .parameters import ParameterCount, count_parameters, format_breakdown, parameter_breakdown
from .weights import check_checkpoint, load_weights, read_checkpoint

__all__ = [
    "blocks",
    "nets",
    "CoCoSegNet",
    "CoCoSegV2",
    "COCOSEG_PRESETS",
    "ParameterCount",
    "count_parameters",
    "parameter_breakdown",
    "format_breakdown",
    "load_weights",
    "check_checkpoint",
    "read_checkpoint",
    "prefers_channels_last",
]
