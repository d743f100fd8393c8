"""Networks."""

from __future__ import annotations

from .cocoseg import COCOSEG_PRESETS, CoCoSegNet, CoCoSegV2

__all__ = ["CoCoSegNet", "CoCoSegV2", "COCOSEG_PRESETS"]
