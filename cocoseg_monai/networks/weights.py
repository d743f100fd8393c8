"""Reading weights files safely, and starting a network from saved weights (fine-tuning, serving).

Every weights or checkpoint file a user names (``--ckpt``, ``--resume_ckpt``, ``init_ckpt``,
``--vgg_weights``) is read through :func:`read_checkpoint` or checked by :func:`check_checkpoint`
first: PyTorch's weights-only unpickler, which refuses any pickled object other than tensors and
plain containers instead of running it, with the refusal answered by a
:class:`~cocoseg_monai.errors.CheckpointError` that names the file in one line. PyTorch's own
message advises retrying with ``weights_only=False``; for a file of unknown origin that is the
one thing not to do, so it is not passed on.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from cocoseg_monai.errors import CheckpointError

__all__ = ["check_checkpoint", "read_checkpoint", "load_weights"]

logger = logging.getLogger(__name__)

#: the entries of a training checkpoint that hold weights, in order of preference: the EMA
#: weights are the ones that were validated and exported
_CHECKPOINT_KEYS = ("ema", "model")

# what the weights-only unpickler names when it refuses, e.g. "Unsupported global: GLOBAL getattr"
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """The content of the weights or checkpoint file ``path``, read with ``torch.load(...,
    weights_only=True)``: tensors and plain containers only, nothing in the file is run.

    Args:
        path: the file (``torch.save`` output).
        map_location: as for :func:`torch.load`.
        mmap: map the tensors' storage instead of reading it (files of the zip format, the
            default since PyTorch 1.6; older files are read in full).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` holds pickled objects other than tensors and plain containers
            (it is refused before any of them is built), or it is no readable checkpoint
            (truncated, corrupt, another kind of file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap can only be used" in str(err)):
                raise
            return torch.load(path, map_location=map_location, weights_only=True)  # a pre-zip file
    except pickle.UnpicklingError as err:
        refused = err
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:  # torch's ways of saying "corrupt"
        refused = err
    # raised out here, not in the handlers: PyTorch's message, with its advice to retry with
    # weights_only=False, is no part of the error (not even its context)
    text = str(refused)
    if isinstance(refused, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = _REFUSED_GLOBAL.search(text)
        what = f" (it names {found.group(1).rstrip('.')})" if found else ""
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain containers{what}, "
            "which could run code when unpickled, so it was refused unread and nothing in it ran; do not load it "
            "with torch.load(weights_only=False) unless you trust where it came from"
        )
    raise CheckpointError(
        f"{path} is no readable PyTorch checkpoint (truncated, corrupt or another kind of file): "
        f"{type(refused).__name__}: {_first_line(refused)}"
    )


def check_checkpoint(path: str | os.PathLike | None) -> None:
    """Refuse ``path`` unless PyTorch's weights-only loading accepts it, before anything else
    (MONAI's ``CheckpointLoader`` in the bundle configs) loads it; nothing to do when ``path`` is
    empty. The tensors are memory-mapped, not read, so the check costs little.

    Raises:
        FileNotFoundError, CheckpointError: as :func:`read_checkpoint`.
    """
    if path is None or str(path).strip() == "":
        return
    read_checkpoint(path, mmap=True)


def load_weights(network: torch.nn.Module, path: str | os.PathLike | None) -> torch.nn.Module:
    """Load ``path`` into ``network`` (strictly) and return it; nothing to do when ``path`` is empty.

    ``path`` is a bundle ``models/model.pt`` (a plain state dict) or a training checkpoint
    (``best_model.pth``, ``latest.pth``, ...), whose ``ema`` weights are taken.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` holds pickled objects other than weights (nothing of it is
            run), or is no readable checkpoint.
        RuntimeError: naming ``path`` and the missing, unexpected or mis-shaped keys, when the
            weights belong to another architecture or width.
    """
    if path is None or str(path).strip() == "":
        return network
    path = Path(path)
    state = read_checkpoint(path)
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"
