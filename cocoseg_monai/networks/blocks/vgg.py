"""VGG19 feature encoder in plain torch, with taps lined up to the UNet levels as in CoCoNet."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import max_pool_2x2

__all__ = ["VGG19Encoder", "LUMINANCE_WEIGHTS", "TORCHVISION_VGG19_INDICES", "load_vgg19_weights"]

#: ITU-R BT.601 luma weights CoCoNet uses to turn VGG19's RGB first convolution into a grey one.
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)

#: Position of each convolution of VGG19 up to relu3_4 in torchvision's ``vgg19().features``.
TORCHVISION_VGG19_INDICES = {
    "conv1_1": 0,
    "conv1_2": 2,
    "conv2_1": 5,
    "conv2_2": 7,
    "conv3_1": 10,
    "conv3_2": 12,
    "conv3_3": 14,
    "conv3_4": 16,
}


class VGG19Encoder(nn.Module):
    """VGG19 convolutions up to relu3_4 on a one-channel image, tapped at H/2, H/4 and H/8.

    CoCoNet inserts one extra max-pool after conv1_1 so that the three VGG taps have the
    resolutions of UNet levels 2, 3 and 4:

    ``conv1_1 - relu - pool - conv1_2 - relu`` -> relu1_2 ``[B, f0, H/2, W/2]``;
    ``pool - conv2_1 - relu - conv2_2 - relu`` -> relu2_2 ``[B, f1, H/4, W/4]``;
    ``pool - conv3_1 .. conv3_4 (each + relu)`` -> relu3_4 ``[B, f2, H/8, W/8]``.

    Args:
        features: widths of the three VGG stages; ``(64, 128, 256)`` is VGG19 and is required to
            load pretrained weights. Smaller widths build a structurally identical toy encoder.
        in_channels: 1 (grey). Pretrained RGB weights are reduced with :data:`LUMINANCE_WEIGHTS`.
    """

    def __init__(self, features: Sequence[int] = (64, 128, 256), in_channels: int = 1) -> None:
        super().__init__()
        if len(features) != 3:
            raise ValueError(f"VGG19Encoder features must have 3 widths, got {tuple(features)}.")
        f0, f1, f2 = features
        self.features = tuple(features)
        self.conv1_1 = nn.Conv2d(in_channels, f0, 3, padding=1)
        self.conv1_2 = nn.Conv2d(f0, f0, 3, padding=1)
        self.conv2_1 = nn.Conv2d(f0, f1, 3, padding=1)
        self.conv2_2 = nn.Conv2d(f1, f1, 3, padding=1)
        self.conv3_1 = nn.Conv2d(f1, f2, 3, padding=1)
        self.conv3_2 = nn.Conv2d(f2, f2, 3, padding=1)
        self.conv3_3 = nn.Conv2d(f2, f2, 3, padding=1)
        self.conv3_4 = nn.Conv2d(f2, f2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = max_pool_2x2(F.relu(self.conv1_1(x)))
        relu1_2 = F.relu(self.conv1_2(x))
        x = max_pool_2x2(relu1_2)
        x = F.relu(self.conv2_1(x))
        relu2_2 = F.relu(self.conv2_2(x))
        x = max_pool_2x2(relu2_2)
        x = F.relu(self.conv3_1(x))
        x = F.relu(self.conv3_2(x))
        x = F.relu(self.conv3_3(x))
        relu3_4 = F.relu(self.conv3_4(x))
        return relu1_2, relu2_2, relu3_4

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Copy torchvision-format VGG19 weights (``features.N.weight`` keys) into this encoder.

        Keys beyond relu3_4 (deeper features, the classifier) are ignored. The RGB first
        convolution ``[64, 3, 3, 3]`` is reduced to grey with :data:`LUMINANCE_WEIGHTS`; an
        already grey ``[64, 1, 3, 3]`` one is taken as is.

        Raises:
            ValueError: naming every missing key and every key whose shape does not match.
        """
        missing: list[str] = []
        mismatched: list[str] = []
        new_weights: dict[str, torch.Tensor] = {}
        for name, index in TORCHVISION_VGG19_INDICES.items():
            conv = getattr(self, name)
            for param_name in ("weight", "bias"):
                key = f"features.{index}.{param_name}"
                if key not in state_dict:
                    missing.append(key)
                    continue
                value = torch.as_tensor(state_dict[key])
                target = getattr(conv, param_name)
                if name == "conv1_1" and param_name == "weight" and value.ndim == 4 and value.shape[1] == 3:
                    lum = torch.tensor(LUMINANCE_WEIGHTS, dtype=value.dtype).view(1, 3, 1, 1)
                    value = (value * lum).sum(dim=1, keepdim=True)
                if tuple(value.shape) != tuple(target.shape):
                    mismatched.append(f"{key}: expected {tuple(target.shape)}, found {tuple(value.shape)}")
                    continue
                new_weights[f"{name}.{param_name}"] = value
        if missing or mismatched:
            problems = []
            if missing:
                problems.append(f"missing keys: {', '.join(missing)}")
            if mismatched:
                problems.append(f"shape mismatches: {'; '.join(mismatched)}")
            raise ValueError(
                f"{source} is not a torchvision VGG19 state dict matching VGG19Encoder(features={self.features}): "
                + " | ".join(problems)
            )
        with torch.no_grad():
            for key, value in new_weights.items():
                module_name, param_name = key.split(".")
                getattr(getattr(self, module_name), param_name).copy_(value)


def load_vgg19_weights(encoder: VGG19Encoder, path: str | os.PathLike) -> None:
    """Load a local torchvision VGG19 checkpoint (e.g. ``vgg19-dcbb9e9d.pth``) into ``encoder``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: when the file cannot be read as a tensor state dict (truncated, not a
            checkpoint, pickled objects); a ``ValueError``, naming the file.
        ValueError: when its keys or shapes do not match; the message names the file and the
            keys at fault.
    """
    from cocoseg_monai.errors import CheckpointError
    from cocoseg_monai.networks.weights import read_checkpoint  # here: networks/__init__ imports blocks first

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VGG19 weights file not found: {path}")
    try:
        state_dict = read_checkpoint(path)  # refuses pickled objects and unreadable files, naming the file
    except CheckpointError as e:
        raise CheckpointError(f"could not read VGG19 weights: {e}") from None
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"VGG19 weights file {path} holds a {type(state_dict).__name__}, not a state dict.")
    encoder.load_torchvision_state_dict(state_dict, source=path)
