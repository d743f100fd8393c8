"""Data discovery (paired CT / PET / mask files -> MONAI datalists) and the data a run trains on.

The phantom generator lives in :mod:`cocoseg_monai.data.phantom` and is imported from there
directly, so that importing this package stays light. The layouts' folder and file names are in
:mod:`cocoseg_monai.conventions`.
"""

from __future__ import annotations

from cocoseg_monai.data.datalist import build_datalist, load_datalist, read_spacing, split_by_patient, write_datalist
from cocoseg_monai.data.discovery import check_sizes, detect_layout, find_pairs, image_format_of
from cocoseg_monai.data.inference_data import inference_items
from cocoseg_monai.data.sampling import has_lesion, lesion_weighted_sampler
from cocoseg_monai.data.training_data import DATALIST_FILENAME, prepare_training_data
from cocoseg_monai.errors import DataError

__all__ = [
    "DATALIST_FILENAME",
    "prepare_training_data",
    "inference_items",
    "has_lesion",
    "lesion_weighted_sampler",
    "DataError",
    "build_datalist",
    "check_sizes",
    "detect_layout",
    "find_pairs",
    "image_format_of",
    "load_datalist",
    "read_spacing",
    "split_by_patient",
    "write_datalist",
]
