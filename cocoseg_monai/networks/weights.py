"""Starting a network from saved weights (fine-tuning, serving)."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

__all__ = ["load_weights"]

logger = logging.getLogger(__name__)

#: the entries of a training checkpoint that hold weights, in order of preference: the EMA
#: weights are the ones that were validated and exported
_CHECKPOINT_KEYS = ("ema", "model")


def load_weights(network: torch.nn.Module, path: str | os.PathLike | None) -> torch.nn.Module:
    """Load ``path`` into ``network`` (strictly) and return it; nothing to do when ``path`` is empty.

    ``path`` is a bundle ``models/model.pt`` (a plain state dict) or a training checkpoint
    (``best_model.pth``, ``latest.pth``, ...), whose ``ema`` weights are taken.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` holds pickled objects other than weights (nothing of it is run).
        RuntimeError: naming ``path`` and the missing, unexpected or mis-shaped keys, when the
            weights belong to another architecture or width.
    """
    if path is None or str(path).strip() == "":
        return network
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refuses anything that could run code
        raise ValueError(
            f"refusing to load {path}: it holds Python objects besides tensors and plain containers, "
            f"which could run code when unpickled; only weights are loaded (torch.load weights_only=True). {err}"
        ) from None
    if isinstance(state, dict):
        for key in _CHECKPOINT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"weights {path} do not fit the network (another architecture or width?): {err}") from err
    logger.info("network weights loaded from %s", path)
    return network
