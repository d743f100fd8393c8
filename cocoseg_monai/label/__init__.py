"""MONAI Label integration: the datastore layout of PET/CT studies and the CoCoSeg app.

:mod:`cocoseg_monai.label.datastore`, :mod:`~cocoseg_monai.label.guard` and
:mod:`~cocoseg_monai.label.serving` need only the core package; :mod:`cocoseg_monai.label.app` and
:mod:`~cocoseg_monai.label.tasks` need MONAI Label (``pip install "cocoseg-monai[label]"``).
"""

from __future__ import annotations

from .datastore import LABEL_FOLDER, PET_FOLDER, pet_partner, prepare_datastore

__all__ = ["LABEL_FOLDER", "PET_FOLDER", "pet_partner", "prepare_datastore"]
