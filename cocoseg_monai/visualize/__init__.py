"""Pictures: training curves, slice overlays, PET MIPs with lesions."""

from __future__ import annotations

from .curves import plot_history
from .overlay import save_overlay, save_pet_mip

__all__ = ["plot_history", "save_overlay", "save_pet_mip"]
