"""Gradient-norm clipping for MONAI's SupervisedTrainer."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipping"]


class GradientClipping:
    """Clip the global gradient norm after ``backward`` and before ``optimizer.step``.

    Runs on MONAI's ``IterationEvents.BACKWARD_COMPLETED``. Under AMP the gradients are
    unscaled first, so ``max_norm`` applies to the true gradients (the GradScaler then skips the
    unscale it would otherwise do in ``step``).

    Args:
        max_norm: largest allowed L2 norm of all gradients together; ``0`` disables clipping.
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        if max_norm < 0:
            raise ValueError(f"max_norm must be >= 0, got {max_norm}.")
        self.max_norm = max_norm

    def attach(self, engine: Engine) -> None:
        if self.max_norm > 0:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        params = [p for group in engine.optimizer.param_groups for p in group["params"] if p.grad is not None]
        engine.state.grad_norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
