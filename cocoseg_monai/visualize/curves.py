"""Training curves from ``history.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["plot_history"]


def plot_history(history_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Plot loss, Dice, IoU/accuracy and learning rate per epoch to a PNG.

    Args:
        history_path: a ``history.json`` written by training.
        out: the PNG; default ``training_curves.png`` beside ``history_path``.

    Returns:
        the PNG path.

    Raises:
        FileNotFoundError / ValueError: naming the file when it is missing or not a history.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_write

    history_path = Path(history_path)
    if not history_path.is_file():
        raise FileNotFoundError(f"no training history at {history_path}")
    try:
        h = json.loads(history_path.read_text(encoding="utf-8"))
        epochs = h["epoch"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{history_path} is not a training history.json: {e}") from e
    out = Path(out) if out is not None else history_path.with_name("training_curves.png")

    def series(key: str) -> tuple[list[int], list[float]]:
        pairs = [(e, v) for e, v in zip(epochs, h.get(key, [])) if v is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = (
        ("loss", ("train_loss", "val_loss")),
        ("Dice", ("train_dice", "val_dice")),
        ("validation IoU / accuracy", ("val_iou", "val_acc")),
        ("learning rate", ("lr",)),
    )
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            x, y = series(key)
            if y:
                ax.plot(x, y, marker="o" if len(y) < 30 else None, ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if h.get("best_val_dice") is not None:
        axes[1].axvline(h["best_epoch"], color="grey", ls="--", lw=0.8)
        axes[1].set_title(f"Dice (best val {h['best_val_dice']:.3f} @ {h['best_epoch']})")
    axes[3].set_yscale("log")
    fig.tight_layout()
    with atomic_write(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out
