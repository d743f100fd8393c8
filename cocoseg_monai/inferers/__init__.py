"""Inferers."""

from __future__ import annotations

from .autocast import AutocastInferer

__all__ = ["AutocastInferer"]
