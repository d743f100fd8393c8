"""Reading MetaTensor metadata: the file an array came from, for error messages."""

from __future__ import annotations

from typing import Any

from monai.data import MetaTensor

__all__ = ["filename_of"]


def filename_of(img: Any, default: str = "<array without file name>") -> str:
    """The source file of ``img`` (MetaTensor meta ``filename_or_obj``), for error messages."""
    if isinstance(img, MetaTensor):
        name = img.meta.get("filename_or_obj")
        if name:
            return str(name)
    return default
