"""Segmentation losses."""

from __future__ import annotations

from .segmentation import LOSS_TYPES, build_loss

__all__ = ["LOSS_TYPES", "build_loss"]
