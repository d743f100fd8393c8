"""The data a training run uses: the user's folder or datalist, or the embedded default phantoms."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from .datalist import build_datalist, load_datalist, write_datalist

__all__ = ["prepare_training_data", "DATALIST_FILENAME"]

#: The split a run used, written into its log dir so that the run can be repeated exactly.
DATALIST_FILENAME = "datalist.json"

logger = logging.getLogger(__name__)


def prepare_training_data(
    dataset_dir: str | os.PathLike | None,
    logdir: str | os.PathLike,
    default_data_dir: str | os.PathLike = "./data/cocoseg_phantom",
    val_ratio: float = 0.2,
    test_ratio: float = 0.1,
    seed: int = 42,
    reuse_split: bool = False,
) -> dict[str, Any]:
    """Find (or make) the training data and fix its split in ``<logdir>/datalist.json``.

    - ``dataset_dir`` empty or ``None``: the embedded default data set (synthetic PET/CT
      phantoms) in ``default_data_dir``, generated there on first use.
    - ``dataset_dir`` an existing empty folder: the default data set is generated into it.
    - otherwise any layout :func:`~cocoseg_monai.data.build_datalist` accepts (pre-split or
      runtime-split PNG folders, NIfTI volumes, a datalist JSON), split by patient.

    Args:
        reuse_split: when resuming, take ``<logdir>/datalist.json`` as it is, so that the
            resumed run trains and validates on exactly the same cases.

    Returns:
        the datalist: ``{"training", "validation", "test", "image_format", ...}``.

    Raises:
        DataError: when ``dataset_dir`` is given (not empty) and does not exist, also when a saved
            split would be reused, or when it holds no usable data.
    """
    if dataset_dir is not None and str(dataset_dir).strip() and not Path(dataset_dir).exists():
        # refused even where a saved split would be reused: a path given is meant to be used
        raise DataError(f"dataset_dir {dataset_dir} does not exist (an empty dataset_dir means the default phantom data)")
    saved = Path(logdir) / DATALIST_FILENAME
    if reuse_split and saved.is_file():
        logger.info("reusing the split of %s", saved)
        return load_datalist(saved)
    root = _data_root(dataset_dir, Path(default_data_dir))
    datalist = build_datalist(root, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed)
    if not datalist["training"] or not datalist["validation"]:
        raise DataError(
            f"{root}: {len(datalist['training'])} training and {len(datalist['validation'])} validation items; "
            "both must be non-empty (more patients, or another val_ratio)"
        )
    write_datalist(datalist, saved)
    logger.info(
        "data %s: %d training, %d validation, %d test items (%s); split written to %s",
        root,
        len(datalist["training"]),
        len(datalist["validation"]),
        len(datalist["test"]),
        datalist["image_format"],
        saved,
    )
    return datalist


def _data_root(dataset_dir: str | os.PathLike | None, default_data_dir: Path) -> Path:
    from .phantom import make_default_dataset  # the generator is needed only here

    if dataset_dir is None or str(dataset_dir).strip() == "":
        # reuses a complete set of the same parameters and generator version, else (re)builds it
        logger.info("no dataset_dir given: the default phantom data set in %s", default_data_dir)
        make_default_dataset(default_data_dir)
        return default_data_dir
    root = Path(dataset_dir)  # it exists: prepare_training_data checked
    if root.is_dir() and not any(root.iterdir()):
        logger.info("dataset_dir %s is empty: generating the default phantom data set there", root)
        make_default_dataset(root)
    return root
