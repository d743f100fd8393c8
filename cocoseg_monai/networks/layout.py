"""Which memory format a network runs in: the bundle's ``channels_last`` setting."""

from __future__ import annotations

import pydoc

import torch
from torch import nn

from .nets import CoCoSegNet

__all__ = ["prefers_channels_last"]


def prefers_channels_last(network: nn.Module | type | str, device: torch.device | str) -> bool:
    """Whether ``network`` should run channels_last on ``device``.

    ``network`` is a module, its class, or a bundle ``_target_`` (``"@network_def#_target_"``):
    the configs pass the target so that deciding the layout never builds the network (a check
    that runs before ``set_determinism`` would otherwise draw its initial weights unseeded).

    On CUDA, yes (convolutions under AMP are fastest channels_last). On the CPU, only for a
    :class:`~cocoseg_monai.networks.CoCoSegNet`, whose every layer keeps the layout (its instance
    norms included, :class:`~cocoseg_monai.networks.blocks.InstanceNorm2d`); there oneDNN runs
    its convolutions without converting each input and output (``docs/BENCHMARKS.md``). MONAI's
    networks convert back to NCHW in their norms on the CPU, where channels_last costs them more
    than it saves.
    """
    if torch.device(device).type == "cuda":
        return True
    return issubclass(_network_class(network), CoCoSegNet)


def _network_class(network: nn.Module | type | str) -> type:
    if isinstance(network, type):
        return network
    if not isinstance(network, str):
        return type(network)
    from monai.bundle import ConfigComponent  # short names (``SegResNet``) as the bundle resolves them

    found = pydoc.locate(ConfigComponent({"_target_": network}).resolve_module_name())
    if not isinstance(found, type):
        raise ValueError(f"network '{network}' names no class (a bundle network_def's _target_ is expected)")
    return found
