"""The networks the benchmarks compare, as bundle ``network_def`` entries.

CoCoSeg V2 as published, its efficient preset, and the usual PET/CT challenge baselines: MONAI's
``BasicUNet`` and ``SegResNet`` with CT and PET stacked as two input channels (early fusion). All
are 2D, 2 input channels, 2 output classes, so they run through the same bundle workflows.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..networks.nets.cocoseg import COCOSEG_PRESETS

__all__ = ["BENCH_MODELS", "TOY_WIDTHS", "network_def", "build_network", "gflop_per_slice"]

_IO = {"spatial_dims": 2, "in_channels": 2, "out_channels": 2}

#: name -> bundle ``network_def`` (MONAI defaults for the peers)
BENCH_MODELS: dict[str, dict[str, Any]] = {
    "cocoseg": {"_target_": "cocoseg_monai.networks.CoCoSegNet", **_IO, "features": [32, 64, 128, 256]},
    "cocoseg_efficient": {
        "_target_": "cocoseg_monai.networks.CoCoSegNet",
        **_IO,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in COCOSEG_PRESETS["efficient"].items()},
    },
    "basicunet": {"_target_": "monai.networks.nets.BasicUNet", **_IO},
    "segresnet": {"_target_": "monai.networks.nets.SegResNet", **_IO, "init_filters": 16},
}

#: widths small enough for tests (seconds), per model
TOY_WIDTHS: dict[str, dict[str, Any]] = {
    "cocoseg": {"features": [4, 8, 16, 32]},
    "cocoseg_efficient": {"features": [4, 8, 16, 32]},
    "basicunet": {"features": [4, 4, 8, 16, 32, 4]},
    "segresnet": {"init_filters": 8},
}


def network_def(name: str, toy: bool = False, features: list[int] | None = None) -> dict[str, Any]:
    """The bundle ``network_def`` of model ``name`` (``toy``: tiny widths; ``features``: these
    widths, e.g. the main job's ``16 32 64 128``)."""
    if name not in BENCH_MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(BENCH_MODELS)}")
    d = copy.deepcopy(BENCH_MODELS[name])
    if toy:
        d.update(copy.deepcopy(TOY_WIDTHS[name]))
    if features:
        d["features"] = [int(f) for f in features]
    return d


def build_network(name: str, toy: bool = False, features: list[int] | None = None) -> torch.nn.Module:
    """Instantiate model ``name`` as the bundle would."""
    from monai.bundle import ConfigParser

    return ConfigParser({"net": network_def(name, toy, features)}).get_parsed_content("net")


def gflop_per_slice(name: str, size: int, toy: bool = False, features: list[int] | None = None) -> float:
    """Forward GFLOP of one ``size x size`` slice, counted by ``torch.utils.flop_counter`` on the
    meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = build_network(name, toy, features).eval()
        x = torch.zeros(1, 2, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9
