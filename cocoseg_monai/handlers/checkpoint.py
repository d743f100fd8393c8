"""Training checkpoints with the original project's file names, written atomically."""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..atomic import atomic_write

__all__ = ["TrainingCheckpointer", "SchedulerPosition"]


class TrainingCheckpointer:
    """Save ``latest.pth`` every epoch, ``best_model.pth`` on a better validation metric,
    ``checkpoint_epoch_N.pth`` every ``save_freq`` epochs, and the bundle's ``models/model.pt``.

    A run in which no validation gave the metric (every validation case lesion-free, so the Dice
    per case is undefined) still ends with a ``models/model.pt``: the last epoch's weights, with a
    warning, so that the evaluation and inference after it have weights to load.

    A checkpoint is a dict of state dicts, one per entry of ``save_dict`` (typically ``model``,
    ``ema``, ``optimizer``, ``scheduler``, ``trainer``, ``history``) plus ``checkpointer``
    (the best metric and its epoch). Everything in it loads with
    ``torch.load(..., weights_only=True)``, so MONAI's ``CheckpointLoader`` resumes from it with
    the same names in its ``load_dict`` (include ``"checkpointer": <this handler>`` to carry the
    best metric across a resume).

    Each checkpoint is serialised once per epoch and written to every destination through a
    temporary file and a rename: an interrupted write leaves the previous file intact.

    Args:
        logdir: output folder.
        save_dict: name -> object with ``state_dict()``.
        evaluator: validation engine; its ``state.metrics[key_metric]`` ranks epochs.
        key_metric: metric to maximise.
        save_freq: epochs between ``checkpoint_epoch_N.pth`` files; 0 for none.
        model_path: where to write the best weights as a plain state dict (the bundle's
            ``models/model.pt``); ``None`` to skip.
        model_key: the ``save_dict`` entry whose weights go to ``model_path`` (``"ema"``: the
            weights that were validated).
        enabled: whether to write checkpoints. The bundle passes its ``is_main``: the other ranks
            of a distributed run write nothing but still track the best metric (the validation
            metrics are reduced over all ranks), so their state matches the main process's.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        evaluator: Engine | None = None,
        key_metric: str = "val_dice",
        save_freq: int = 5,
        model_path: str | os.PathLike | None = None,
        model_key: str = "model",
        enabled: bool = True,
    ) -> None:
        if "checkpointer" in save_dict:
            raise ValueError("save_dict must not use the name 'checkpointer': it is this handler's own entry.")
        if model_path is not None and model_key not in save_dict:
            raise KeyError(f"model_key {model_key!r} is not in save_dict ({', '.join(save_dict)}).")
        if save_freq < 0:
            raise ValueError(f"save_freq must be >= 0, got {save_freq}.")
        self.logdir = Path(logdir)
        self.save_dict = dict(save_dict)
        self.evaluator = evaluator
        self.key_metric = key_metric
        self.save_freq = save_freq
        self.model_path = None if model_path is None else Path(model_path)
        self.model_key = model_key
        self.enabled = enabled
        self.best_metric: float | None = None
        self.best_metric_epoch: int | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._model_without_best)

    def _model_without_best(self, engine: Engine) -> None:
        """At the end of a run in which no epoch was ranked: the last weights as ``model_path``."""
        if not self.enabled or self.model_path is None or self.best_metric is not None:
            return
        self._write(self._serialise(_unwrapped(self.save_dict[self.model_key]).state_dict()), self.model_path)
        self.logger.warning(
            "no validation gave %s (are all validation cases lesion-free?): %s holds the weights of the last "
            "epoch, %d, unranked", self.key_metric, self.model_path, engine.state.epoch,
        )

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        improved = self._update_best(epoch)
        if not self.enabled:
            return
        data = self._serialise(
            {name: _unwrapped(obj).state_dict() for name, obj in self.save_dict.items()} | {"checkpointer": self.state_dict()}
        )
        self._write(data, self.logdir / "latest.pth")
        if improved:
            self._write(data, self.logdir / "best_model.pth")
            if self.model_path is not None:
                self._write(self._serialise(_unwrapped(self.save_dict[self.model_key]).state_dict()), self.model_path)
            self.logger.info("epoch %d: new best %s %.4f, saved best_model.pth", epoch, self.key_metric, self.best_metric)
        if self.save_freq and epoch % self.save_freq == 0:
            self._write(data, self.logdir / f"checkpoint_epoch_{epoch}.pth")

    def _update_best(self, epoch: int) -> bool:
        if self.evaluator is None or self.evaluator.state.epoch != epoch:
            return False  # no validation this epoch
        value = self.evaluator.state.metrics.get(self.key_metric)
        if value is None or math.isnan(float(value)):
            return False
        if self.best_metric is not None and float(value) <= self.best_metric:
            return False
        self.best_metric, self.best_metric_epoch = float(value), epoch
        return True

    @staticmethod
    def _serialise(obj: Any) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    @staticmethod
    def _write(data: bytes, path: Path) -> None:
        with atomic_write(path, "wb") as f:
            f.write(data)

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_metric_epoch": self.best_metric_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_metric = state.get("best_metric")
        self.best_metric_epoch = state.get("best_metric_epoch")


def _unwrapped(obj: Any) -> Any:
    """The module inside ``DataParallel`` / ``DistributedDataParallel`` (whose keys carry ``module.``),
    so that checkpoints load into the plain network, as MONAI's ``CheckpointLoader`` expects."""
    return obj.module if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else obj


class SchedulerPosition:
    """The position (``event_index``) of an Ignite parameter scheduler, as checkpointable state.

    Ignite's state schedulers (such as the EMA momentum warm-up of ``EMAHandler``) put their
    lambda in ``state_dict()``, which ``torch.load(..., weights_only=True)`` refuses; their
    position is all a resumed run needs to continue the schedule where it stopped.
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def state_dict(self) -> dict[str, int]:
        return {"event_index": int(self.scheduler.event_index)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.event_index = int(state["event_index"])
