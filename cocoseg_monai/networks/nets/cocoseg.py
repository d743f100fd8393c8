"""CoCoSeg V2: dual UNet + frozen VGG19 encoders with four-way channel-attention fusion."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

from ..blocks import (
    ChannelAttention,
    FusionConv,
    UNetEncoder,
    VGG19Encoder,
    load_vgg19_weights,
    replace_instance_norms,
    stack_streams,
)

__all__ = ["CoCoSegNet", "CoCoSegV2", "COCOSEG_PRESETS"]

logger = logging.getLogger(__name__)

_VGG19_WIDTHS = (64, 128, 256)

#: Named ``CoCoSegNet`` option sets. ``"v2"`` is CoCoSeg V2 as published (480.9 GFLOP per
#: 512x512 slice). ``"efficient"`` keeps the architecture with half the widths, 1x1 query/key/value
#: projections in the channel attention and one frozen VGG19 shared by CT and PET: 72.1 GFLOP per
#: 512x512 slice (6.7x fewer) and 2.3M parameters; its VGG widths no longer match ImageNet VGG19,
#: so it runs with random frozen VGG features. ``docs/BENCHMARKS.md`` has the Dice of both.
COCOSEG_PRESETS: dict[str, dict] = {
    "v2": {},
    "efficient": {"features": (16, 32, 64, 128), "attention_kernel_size": 1, "share_vgg": True},
}


class CoCoSegNet(nn.Module):
    """CoCoSeg V2 for CT-PET lesion segmentation (after CoCoNet, Liu et al., IJCV 2024).

    One image with two channels goes in (channel 0 CT, channel 1 PET, each scaled to [0, 1]);
    per-pixel logits come out. Inside:

    ============  =====================================  =================================
    level (res)   per modality (CT and PET separately)   fused
    ============  =====================================  =================================
    L1 (H)        UNet ``f0``                            none: CT and PET L1 are skips
    L2 (H/2)      UNet ``f1`` + VGG relu1_2 (``f1``)     CAM on 4 streams, cat, conv -> ``f1``
    L3 (H/4)      UNet ``f2`` + VGG relu2_2 (``f2``)     CAM on 4 streams, cat, conv -> ``f2``
    L4 (H/8)      UNet ``f3`` + VGG relu3_4 (``f3``)     CAM on 4 streams, cat, conv -> ``f3``
    ============  =====================================  =================================

    The decoder starts from fused L4; at each level it upsamples (bilinear x2, then a 3x3
    conv to that level's width), applies the level's channel attention (one CAM per level,
    shared by the fusion streams and the decoder as in CoCoNet), concatenates the fused skip
    (at L1 the CT and PET features), and runs two conv blocks. A 1x1 conv gives the logits.

    The UNet encoders and decoder use MONAI's BasicUNet blocks (conv 3x3 + norm + act). The
    VGG19 encoders are frozen by default (``freeze_vgg=True``), as in the original: their
    purpose is fixed ImageNet features. Without ``vgg_weights`` they are randomly initialised
    and the constructor logs a warning saying so.

    Sizes of the default network: 13.42M parameters, 8.77M trainable, 4.65M frozen in the two
    VGG19 encoders (2.32M each; ``share_vgg=True`` keeps one, 2.32M).

    Args:
        spatial_dims: 2 (the VGG19 encoders are 2D).
        in_channels: 2 (CT, PET).
        out_channels: number of classes (2: background, lesion).
        features: UNet widths of the four levels; ``(32, 64, 128, 256)`` is CoCoSeg V2. The VGG
            widths follow ``features[1:]`` so that a shared CAM sees equal streams; loading
            pretrained VGG19 weights requires ``features[1:] == (64, 128, 256)``. Small widths
            such as ``(4, 8, 16, 32)`` build a structurally identical toy model for tests.
        act: activation, MONAI layer-factory form.
        norm: normalisation, MONAI layer-factory form; InstanceNorm as in V2.
        bias: whether convolutions have a bias.
        dropout: dropout probability in the conv blocks.
        vgg_weights: path to a local torchvision-format VGG19 state dict (for example
            ``~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth``); ``None`` leaves the VGG
            encoders randomly initialised.
        freeze_vgg: keep the VGG encoders' weights fixed (``requires_grad=False``).
        share_vgg: one VGG encoder for both modalities instead of one each (same function when
            frozen and pretrained, half the memory). Off by default, as in the original.
        attention_kernel_size: kernel of the CAM projections; 3 as in CoCoNet, 1 is cheaper.

    Every layer keeps a channels_last input channels_last (``net.to(memory_format=
    torch.channels_last)``; the bundle's ``channels_last`` setting), which on the CPU runs
    inference 1.15 to 1.4x and training steps 3 to 28 % faster than NCHW; labels agree with
    NCHW's to floating-point rounding (``docs/BENCHMARKS.md``).

    Input ``[B, 2, H, W]`` of any ``H, W``: sizes that are not multiples of 8 (or below 16) are
    zero-padded internally and the logits cropped back. Output ``[B, out_channels, H, W]``.

    Example::

        >>> net = CoCoSegNet(features=(4, 8, 16, 32))
        >>> net(torch.rand(2, 2, 96, 80)).shape
        torch.Size([2, 2, 96, 80])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        out_channels: int = 2,
        features: Sequence[int] = (32, 64, 128, 256),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.01, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple = 0.0,
        vgg_weights: str | os.PathLike | None = None,
        freeze_vgg: bool = True,
        share_vgg: bool = False,
        attention_kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"CoCoSegNet is a 2D network (VGG19 is 2D); got spatial_dims={spatial_dims}.")
        if in_channels != 2:
            raise ValueError(f"CoCoSegNet takes one 2-channel image (CT, PET); got in_channels={in_channels}.")
        if out_channels < 1:
            raise ValueError(f"out_channels must be at least 1, got {out_channels}.")
        features = tuple(int(f) for f in features)
        if len(features) != 4:
            raise ValueError(f"features must have 4 widths (levels L1..L4), got {features}.")
        f0, f1, f2, f3 = features
        vgg_features = (f1, f2, f3)
        if vgg_weights is not None and vgg_features != _VGG19_WIDTHS:
            raise ValueError(
                f"pretrained VGG19 weights need features[1:] == {_VGG19_WIDTHS}, got features={features}."
            )

        self.out_channels = out_channels
        self.features = features

        self.ct_encoder = UNetEncoder(spatial_dims, 1, features, act, norm, bias, dropout)
        self.pet_encoder = UNetEncoder(spatial_dims, 1, features, act, norm, bias, dropout)

        self.vgg_ct = VGG19Encoder(vgg_features)
        # Registering one module under both names shares its parameters: parameters() and
        # optimisers see them once, state dicts keep both key sets (each loads the same tensor).
        self.vgg_pet = self.vgg_ct if share_vgg else VGG19Encoder(vgg_features)
        self._init_vgg(vgg_weights, freeze_vgg, share_vgg)

        # One CAM per level: L2..L4 serve the fusion streams and the decoder; L1 the decoder only.
        self.attention = nn.ModuleList(
            [ChannelAttention(spatial_dims, f, attention_kernel_size) for f in features]
        )
        self.fusion = nn.ModuleList(
            [FusionConv(spatial_dims, f, 4, act, norm, bias, dropout) for f in (f1, f2, f3)]
        )
        self.up = nn.ModuleList(
            [_up_block(spatial_dims, c_in, c_out, act, norm, bias, dropout) for c_in, c_out in ((f3, f2), (f2, f1), (f1, f0))]
        )
        self.decode = nn.ModuleList(
            [
                TwoConv(spatial_dims, 2 * f2, f2, act, norm, bias, dropout),
                TwoConv(spatial_dims, 2 * f1, f1, act, norm, bias, dropout),
                TwoConv(spatial_dims, 3 * f0, f0, act, norm, bias, dropout),
            ]
        )
        self.head = Convolution(spatial_dims, f0, out_channels, kernel_size=1, conv_only=True, bias=True)
        replace_instance_norms(self)  # channels_last stays channels_last through the norms on the CPU

    def _init_vgg(self, vgg_weights: str | os.PathLike | None, freeze: bool, shared: bool) -> None:
        encoders = [self.vgg_ct] if shared else [self.vgg_ct, self.vgg_pet]
        if vgg_weights is not None:
            for encoder in encoders:
                load_vgg19_weights(encoder, vgg_weights)
        for p in self.vgg_ct.parameters():
            p.requires_grad_(not freeze)
        for p in self.vgg_pet.parameters():
            p.requires_grad_(not freeze)
        state = "frozen" if freeze else "trainable"
        count = "one shared VGG19 encoder" if shared else "two VGG19 encoders (CT, PET)"
        if vgg_weights is None:
            logger.warning(
                "CoCoSegNet: %s randomly initialised (no vgg_weights given) and %s; "
                "pass vgg_weights=<torchvision vgg19 .pth> for ImageNet features.",
                count,
                state,
            )
        else:
            logger.info("CoCoSegNet: %s loaded from %s and %s.", count, os.fspath(vgg_weights), state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 2:
            raise ValueError(f"CoCoSegNet expects [B, 2, H, W] (CT, PET), got {list(x.shape)}.")
        h, w = x.shape[-2], x.shape[-1]
        pad_h, pad_w = _padding(h), _padding(w)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [0, pad_w, 0, pad_h])
        ct, pet = x[:, 0:1], x[:, 1:2]

        c1, c2, c3, c4 = self.ct_encoder(ct)
        p1, p2, p3, p4 = self.pet_encoder(pet)
        vc2, vc3, vc4 = self.vgg_ct(ct)
        vp2, vp3, vp4 = self.vgg_pet(pet)

        # Four-way fusion: the level's CAM runs once on the four streams stacked on the batch axis.
        s2 = self.fusion[0](stack_streams(self.attention[1](torch.cat([c2, vc2, p2, vp2], 0)), 4))
        s3 = self.fusion[1](stack_streams(self.attention[2](torch.cat([c3, vc3, p3, vp3], 0)), 4))
        s4 = self.fusion[2](stack_streams(self.attention[3](torch.cat([c4, vc4, p4, vp4], 0)), 4))

        d3 = self.decode[0](torch.cat([self.attention[2](self.up[0](s4)), s3], 1))
        d2 = self.decode[1](torch.cat([self.attention[1](self.up[1](d3)), s2], 1))
        d1 = self.decode[2](torch.cat([self.attention[0](self.up[2](d2)), c1, p1], 1))
        logits = self.head(d1)
        if pad_h > 0 or pad_w > 0:
            logits = logits[:, :, :h, :w]
        return logits


def _padding(size: int) -> int:
    """Zero padding that makes ``size`` a multiple of 8 and at least 16.

    Three 2x poolings need a multiple of 8; InstanceNorm needs more than one value per channel
    at H/8 when training, hence at least 16.
    """
    return max(16, (size + 7) // 8 * 8) - size


def _up_block(
    spatial_dims: int, in_channels: int, out_channels: int, act: str | tuple, norm: str | tuple, bias: bool, dropout: float | tuple
) -> UpSample:
    """Bilinear x2 upsampling followed by a 3x3 conv block to ``out_channels``."""
    # UpSample's own in/out channels are those of the interpolation; post_conv changes the width.
    return UpSample(
        spatial_dims,
        in_channels,
        in_channels,
        scale_factor=2,
        mode="nontrainable",
        pre_conv=None,
        post_conv=Convolution(spatial_dims, in_channels, out_channels, act=act, norm=norm, dropout=dropout, bias=bias),
        interp_mode="bilinear",
        align_corners=False,
    )


CoCoSegV2 = CoCoSegNet
