"""Shipping a training run's weights with the bundle, as the MONAI model zoo has it.

:func:`publish_run` copies a run's ``models/model.pt`` and its ``plan.yaml`` into the bundle's
``models/`` folder, lists the weights with their SHA-256 in the bundle's ``large_files.yml`` (the
file the zoo's tools read to fetch large files from a release), and writes the run's measured
figures into ``metadata.json``'s ``eval_metrics``, so that no figure there is typed by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from cocoseg_monai.atomic import atomic_write, atomic_write_json
from cocoseg_monai.errors import DataError
from cocoseg_monai.plan import PLAN_FILENAME, load_plan

__all__ = ["LARGE_FILES", "sha256", "run_metrics", "publish_run"]

#: the zoo's list of large files, in the bundle's root
LARGE_FILES = "large_files.yml"
#: the weights' path in the bundle, as the zoo names it
MODEL_PATH = "models/model.pt"


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_metrics(run: str | os.PathLike) -> dict[str, Any]:
    """The validation figures of a run's ``history.json`` at its best epoch (the epoch whose
    weights ``models/model.pt`` holds)."""
    path = Path(run) / "history.json"
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: no readable training history: {e}") from e
    best = history.get("best_epoch")
    if best is None:
        raise DataError(f"{path}: no epoch was ranked (no validation Dice): nothing to publish")
    i = history["epoch"].index(best)
    return {
        "val_mean_dice_per_case": round(float(history["val_dice"][i]), 4),
        "val_mean_dice_per_slice": round(float(history["val_slice_dice"][i]), 4),
        "val_mean_iou_per_slice": round(float(history["val_iou"][i]), 4),
        "best_epoch": int(best),
        "epochs": int(history["epoch"][-1]),
    }


def publish_run(run: str | os.PathLike, bundle: str | os.PathLike, note: str = "", url: str = "") -> dict[str, Any]:
    """Ship the run's weights and plan in ``bundle`` and record its figures; returns the
    ``eval_metrics`` written. ``note`` says where the figures come from (machine, command);
    ``url`` is where a release hosts the weights (empty until one does: the committed file
    serves)."""
    run, bundle = Path(run), Path(bundle)
    weights, plan = run / MODEL_PATH, run / PLAN_FILENAME
    for path in (weights, plan):
        if not path.is_file():
            raise DataError(f"{path} does not exist: publish a finished training run")
    load_plan(plan)  # complete and readable, or refused here
    metrics = {**run_metrics(run), **({"note": note} if note else {})}
    models = bundle / "models"
    models.mkdir(parents=True, exist_ok=True)
    for source in (weights, plan):
        with open(source, "rb") as src, atomic_write(models / source.name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    digest = sha256(models / weights.name)
    with atomic_write(bundle / LARGE_FILES, "w") as f:
        f.write(
            "# Large files of the bundle, as the MONAI model zoo lists them: a release hosts them at `url`\n"
            "# (empty until one does; the weights are committed too), and the zoo's tools check a download\n"
            "# against the hash. Written by `cocoseg publish`.\n"
            "large_files:\n"
            f'  - path: "{MODEL_PATH}"\n'
            f'    url: "{url}"\n'
            f'    hash_val: "{digest}"\n'
            '    hash_type: "sha256"\n'
        )
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["eval_metrics"] = metrics
    atomic_write_json(meta_path, meta, indent=4)
    return metrics
