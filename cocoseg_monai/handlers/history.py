"""Per-epoch training history (``history.json``) and a one-line summary per validation."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from ..atomic import atomic_write_json

__all__ = ["HistoryWriter", "HISTORY_KEYS"]

#: The lists in ``history.json``, one value per epoch (``None`` where validation did not run).
HISTORY_KEYS = ("epoch", "train_loss", "train_dice", "val_loss", "val_dice", "val_slice_dice", "val_iou", "val_acc", "lr")


class HistoryWriter:
    """Record each epoch's metrics in ``history.json`` and log a one-line validation summary.

    ``history.json`` keeps the original project's layout, one list per quantity, plus the best
    validation Dice and its epoch::

        {"epoch": [1, 2], "train_loss": [...], "train_dice": [...], "val_loss": [...],
         "val_dice": [...], "val_slice_dice": [...], "val_iou": [...], "val_acc": [...],
         "lr": [...], "best_val_dice": 0.71, "best_epoch": 2}

    ``val_dice`` is the key metric of the bundle (Dice per case, see
    :class:`~cocoseg_monai.metrics.CaseDice`); ``val_slice_dice`` is MONAI's per-slice mean.

    Attach to the trainer after the ``ValidationHandler``, so that the validation of an epoch
    has run when the epoch is recorded. The file is rewritten atomically every epoch. The
    history travels in checkpoints (``state_dict``), so a resumed run continues the lists of
    the checkpoint's epoch rather than of whatever file is on disk.

    Args:
        logdir: folder of ``history.json``.
        evaluator: the validation engine whose ``state.metrics`` hold ``val_*`` values.
        optimizer: read for the learning rate used during each epoch.
        train_metrics: trainer metric names for ``train_loss`` and ``train_dice``.
        val_metrics: evaluator metric names for ``val_loss``, ``val_dice``, ``val_iou``, ``val_acc``.
        enabled: whether to write ``history.json`` and log the summaries. The bundle passes its
            ``is_main``: the other ranks of a distributed run keep the same record (it is
            checkpoint state, and loads on resume) silently, so that one file and one log remain.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        evaluator: Engine | None = None,
        optimizer: Any = None,
        train_metrics: Mapping[str, str] | None = None,
        val_metrics: Mapping[str, str] | None = None,
        filename: str = "history.json",
        enabled: bool = True,
    ) -> None:
        self.path = Path(logdir) / filename
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.train_metrics = dict(train_metrics or {"train_loss": "train_loss", "train_dice": "train_dice"})
        self.val_metrics = dict(
            val_metrics
            or {k: k for k in ("val_loss", "val_dice", "val_slice_dice", "val_iou", "val_acc")}
        )
        self.enabled = enabled
        self.history: dict[str, Any] = {key: [] for key in HISTORY_KEYS}
        self.history.update(best_val_dice=None, best_epoch=None)
        self._epoch_lr: float | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._remember_lr)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _remember_lr(self, engine: Engine) -> None:
        if self.optimizer is not None:
            self._epoch_lr = float(self.optimizer.param_groups[0]["lr"])

    def epoch_completed(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        record = {"epoch": epoch, "lr": self._epoch_lr}
        for key, name in self.train_metrics.items():
            record[key] = _number(engine.state.metrics.get(name))
        # MONAI's Evaluator.run(global_epoch) leaves state.epoch at the trainer's epoch.
        validated = self.evaluator is not None and self.evaluator.state.epoch == epoch and bool(self.evaluator.state.metrics)
        for key, name in self.val_metrics.items():
            record[key] = _number(self.evaluator.state.metrics.get(name)) if validated else None
        for key in HISTORY_KEYS:
            self.history[key].append(record.get(key))
        dice = record.get("val_dice")
        best = self.history["best_val_dice"]
        if dice is not None and (best is None or dice > best):
            self.history.update(best_val_dice=dice, best_epoch=epoch)
        if validated and self.enabled:
            self.logger.info(
                "epoch %d/%d val: loss %s  dice %s (per slice %s)  iou %s  acc %s  | train loss %s dice %s"
                " | best dice %s @ %s",
                epoch,
                engine.state.max_epochs,
                *(
                    _fmt(record.get(k))
                    for k in ("val_loss", "val_dice", "val_slice_dice", "val_iou", "val_acc", "train_loss", "train_dice")
                ),
                _fmt(self.history["best_val_dice"]),
                self.history["best_epoch"],
            )
        if self.enabled:
            atomic_write_json(self.path, self.history)

    def completed(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self.logger.info(
            "training finished: best validation mean Dice %s at epoch %s (history: %s)",
            _fmt(self.history["best_val_dice"]),
            self.history["best_epoch"],
            self.path,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        history = dict(state["history"])
        missing = [k for k in HISTORY_KEYS if k not in history]
        if missing:
            raise KeyError(f"checkpoint history lacks {missing}")
        self.history = history


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
