"""Pictures: training curves."""

from __future__ import annotations

from .curves import plot_history

__all__ = ["plot_history"]
