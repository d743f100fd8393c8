"""The studies an inference run processes: one CT/PET pair, a folder of volumes, or a datalist."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from .datalist import load_datalist
from .discovery import detect_layout, find_pairs

__all__ = ["inference_items"]


def inference_items(
    dataset_dir: str | os.PathLike | None = None,
    ct: str | os.PathLike | None = None,
    pet: str | os.PathLike | None = None,
    section: str = "test",
) -> list[dict[str, Any]]:
    """Datalist items ``{"image": CT, "pet": PET, "patient": id}`` to run inference on.

    Give either ``ct`` and ``pet`` (one study: NIfTI files on their own grids, or DICOM series
    folders, which may be one study folder holding both), or ``dataset_dir``: a
    ``{CT,PET}`` folder of NIfTI volumes (masks optional), or a datalist JSON whose ``section``
    is used (all sections when ``section`` is ``"all"``).

    Raises:
        DataError: naming what is missing or empty.
    """
    if ct or pet:
        if not (ct and pet):
            raise DataError(f"give both ct and pet (got ct={ct!r}, pet={pet!r})")
        for key, path in (("ct", ct), ("pet", pet)):
            if not Path(path).exists():
                raise DataError(f"{key} {path} does not exist")
        if Path(ct).is_dir() != Path(pet).is_dir():
            raise DataError(f"give ct and pet both as NIfTI files or both as DICOM folders (got ct={ct!r}, pet={pet!r})")
        return [{"image": str(ct), "pet": str(pet), "patient": Path(ct).name.split(".")[0]}]
    if not dataset_dir:
        raise DataError("nothing to infer: give dataset_dir (a folder or datalist JSON) or ct and pet")
    if detect_layout(dataset_dir) == "datalist":
        datalist = load_datalist(dataset_dir, require_labels=False)
        sections = ("training", "validation", "test") if section == "all" else (section,)
        items = [dict(i) for s in sections for i in datalist.get(s, [])]
    else:
        items = find_pairs(dataset_dir, require_labels=False)
    if not items:
        raise DataError(f"no studies to infer in {dataset_dir} (section {section!r})")
    return items
