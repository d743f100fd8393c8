"""CoCoSeg-MONAI: CT-PET dual-encoder lesion segmentation as MONAI software."""

from __future__ import annotations

__version__ = "0.4.0"
