"""Stop training on a NaN or infinite loss, before the optimizer step can spoil the weights."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from cocoseg_monai.errors import NonFiniteLossError

__all__ = ["StopOnNonFiniteLoss"]


class StopOnNonFiniteLoss:
    """Raise :class:`NonFiniteLossError` naming the epoch and iteration when the loss is not finite.

    Runs on MONAI's ``IterationEvents.LOSS_COMPLETED``, between the loss and ``backward``: the
    weights, the optimizer state and the checkpoints on disk are those of the last good step and
    the last completed epoch (``latest.pth``), from which the run can be resumed, for example with
    a lower learning rate. (Ignite's ``TerminateOnNan`` looks at the output after the optimizer
    step and ends the run quietly; this stops before the step and says where.)
    """

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = engine.state.output[CommonKeys.LOSS]
        if bool(torch.isfinite(loss).all()):
            return
        length = engine.state.epoch_length or 0
        in_epoch = (engine.state.iteration - 1) % length + 1 if length else engine.state.iteration
        raise NonFiniteLossError(
            f"training loss is {loss.detach().float().cpu().tolist()} at epoch {engine.state.epoch}, iteration "
            f"{in_epoch} of {length} (iteration {engine.state.iteration} of the run); stopped before the optimizer "
            f"step, so the weights and the checkpoints of the last completed epoch are intact: resume from "
            f"latest.pth, e.g. with a lower learning rate"
        )
