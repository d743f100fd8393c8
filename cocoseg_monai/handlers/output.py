"""Output transforms that hand engine outputs to Ignite metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["stack_from_engine"]


def stack_from_engine(keys: Sequence[str]) -> Callable[[Any], tuple[torch.Tensor, ...]]:
    """Like :func:`monai.handlers.from_engine`, but stacks the decollated items into batches.

    MONAI engines decollate their output into a list of per-item dicts; metrics such as
    ``ignite.metrics.Loss`` want ``(y_pred, y)`` batch tensors. Returns a function mapping
    ``engine.state.output`` to one stacked tensor per key.
    """

    def _stack(output: Any) -> tuple[torch.Tensor, ...]:
        items = output if isinstance(output, list) else [output]
        return tuple(torch.stack([torch.as_tensor(item[k]) for item in items]) for k in keys)

    return _stack
