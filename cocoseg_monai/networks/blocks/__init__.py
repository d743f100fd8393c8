"""Building blocks of the CoCoSeg networks."""

from __future__ import annotations

from .channel_attention import ChannelAttention
from .fusion import FusionConv, stack_streams
from .norm import InstanceNorm2d, is_channels_last, replace_instance_norms
from .unet_encoder import UNetEncoder
from .vgg import LUMINANCE_WEIGHTS, TORCHVISION_VGG19_INDICES, VGG19Encoder, load_vgg19_weights

__all__ = [
    "ChannelAttention",
    "FusionConv",
    "stack_streams",
    "InstanceNorm2d",
    "is_channels_last",
    "replace_instance_norms",
    "UNetEncoder",
    "VGG19Encoder",
    "load_vgg19_weights",
    "LUMINANCE_WEIGHTS",
    "TORCHVISION_VGG19_INDICES",
]
