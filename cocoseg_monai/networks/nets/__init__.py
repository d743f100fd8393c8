"""Networks."""

from __future__ import annotations

from .cocoseg import CoCoSegNet, CoCoSegV2

__all__ = ["CoCoSegNet", "CoCoSegV2"]
