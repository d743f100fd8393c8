"""The plan: every setting trained weights depend on, written beside them and applied by every consumer.

A model is its weights plus the preprocessing they were trained with. A training run writes
``<logdir>/plan.yaml``, one MONAI bundle config layer whose keys are the bundle's own top-level
keys: the network's arguments, the channel order, the CT window, the SUV range, the PNG
encodings, the target in-plane spacing and orientation, the slice size the network was trained
on, the class names, and the package version that wrote it. ``models/model.pt`` plus the plan is
a complete, portable model::

    python -m monai.bundle run --meta_file bundle/configs/metadata.json \\
        --config_file "['bundle/configs/inference.yaml','logs/plan.yaml']" \\
        --ckpt_path logs/models/model.pt --ct CT.nii.gz --pet PET.nii.gz

``inference.yaml`` also finds the plan beside its checkpoint on its own (:func:`find_plan`), and
refuses settings that contradict it (:func:`check_plan`), naming the keys. ``cocoseg infer``,
``cocoseg eval`` and the MONAI Label app read it the same way.

The defaults of a new run (:data:`DEFAULT_PLAN`) live here and nowhere else: the bundle configs
and the transforms take them from this module.

Target spacing (nnU-Net's idea, in MONAI's terms): training resamples CT, PET and label in-plane
to the plan's spacing (by default the median in-plane spacing of the training set, see
:func:`resolve_target_spacing`), keeping the slice axis as it is (the network is 2D); inference
resamples onto the same spacing and writes the label back on the CT grid.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cocoseg_monai import conventions
from cocoseg_monai.atomic import atomic_write
from cocoseg_monai.conventions import SPACING_FILENAME
from cocoseg_monai.data.datalist import read_spacing
from cocoseg_monai.errors import PlanError

__all__ = [
    "DEFAULT_PLAN",
    "PLAN_FILENAME",
    "PLAN_KEYS",
    "check_plan",
    "find_plan",
    "load_plan",
    "make_plan",
    "plan_of",
    "plan_from_run_config",
    "resolve_png_spacing",
    "resolve_target_spacing",
    "write_plan",
]

logger = logging.getLogger(__name__)

PLAN_FILENAME = "plan.yaml"
PLAN_VERSION = 1

#: The settings trained weights depend on, with the defaults of a new training run. The keys are
#: the bundle configs' own keys, so that a plan is a config layer.
DEFAULT_PLAN: dict[str, Any] = {
    # the network (CoCoSegNet's arguments)
    "features": [32, 64, 128, 256],
    "attention_kernel_size": 3,
    "share_vgg": False,
    "out_channels": 2,
    # the input: channel order, intensity scaling, PNG encodings
    "channels": ["CT", "PET"],
    "ct_window": list(conventions.DEFAULT_CT_WINDOW),
    "suv_max": conventions.DEFAULT_SUV_MAX,
    "ct_png_offset": float(conventions.CT_PNG_OFFSET),  # 16-bit CT PNG: HU = value - offset
    "pet_png_scale": conventions.PET_PNG_SCALE,  # 16-bit PET PNG: SUV = value / scale
    # the grid: volumes are reoriented so that their axial slices look like radiological PNG
    # slices as MONAI's PIL reader loads them (x: patient's right -> left, y: anterior ->
    # posterior), then resampled in-plane to target_spacing (mm; null: each file's own grid)
    "axcodes": "LPS",
    "target_spacing": None,
    # the input size: whole slices, padded to at least slice_size (pixels at target_spacing),
    # the extent the network was trained on (InstanceNorm and channel attention take their
    # statistics over the whole input); null: no padding
    "slice_size": None,
    # the output
    "class_names": ["background", "lesion"],
}
#: keys of a plan besides :data:`DEFAULT_PLAN`'s: who wrote it
PLAN_KEYS = (*DEFAULT_PLAN, "plan_version", "package_version")
#: the plan keys a setting may not contradict at inference (the rest are descriptive)
BINDING_KEYS = (
    "features", "attention_kernel_size", "share_vgg", "out_channels", "ct_window", "suv_max",
    "ct_png_offset", "pet_png_scale", "axcodes", "target_spacing", "slice_size",
)  # fmt: skip


def _version() -> str:
    from cocoseg_monai import __version__

    return __version__


def _floats(values: Sequence[Any] | None) -> list[float] | None:
    return None if values is None else [round(float(v), 6) for v in values]


def make_plan(**settings: Any) -> dict[str, Any]:
    """A complete plan: :data:`DEFAULT_PLAN` updated with ``settings`` (plan keys only), the
    versions added, numbers normalised (sequences as lists, spacings and windows as floats)."""
    unknown = sorted(set(settings) - set(DEFAULT_PLAN))
    if unknown:
        raise PlanError(f"not plan settings: {unknown}; a plan has {list(DEFAULT_PLAN)}")
    plan = {**DEFAULT_PLAN, **settings, "plan_version": PLAN_VERSION, "package_version": _version()}
    plan["features"] = [int(f) for f in plan["features"]]
    plan["ct_window"] = _floats(plan["ct_window"])
    plan["target_spacing"] = _floats(plan["target_spacing"])
    plan["slice_size"] = None if plan["slice_size"] is None else [int(s) for s in plan["slice_size"]]
    for key in ("suv_max", "ct_png_offset", "pet_png_scale"):
        plan[key] = float(plan[key])
    for key in ("attention_kernel_size", "out_channels"):
        plan[key] = int(plan[key])
    plan["share_vgg"] = bool(plan["share_vgg"])
    plan["channels"], plan["class_names"] = list(plan["channels"]), list(plan["class_names"])
    return plan


_HEADER = """\
# CoCoSeg plan: the settings the weights beside it were trained with (written by the training run).
# Layer it over a bundle config to run the weights as they were trained:
#   python -m monai.bundle run --meta_file bundle/configs/metadata.json \\
#       --config_file "['bundle/configs/inference.yaml','{path}']" --ckpt_path {weights} ...
# inference.yaml, cocoseg infer/eval and the MONAI Label app also find it beside the weights.
"""


def write_plan(logdir: str | os.PathLike, plan: Mapping[str, Any]) -> Path:
    """Write ``plan`` (see :func:`make_plan`) to ``<logdir>/plan.yaml`` atomically; returns the path."""
    path = Path(logdir) / PLAN_FILENAME
    text = _HEADER.format(path=path.as_posix(), weights=(Path(logdir) / "models" / "model.pt").as_posix())
    text += yaml.safe_dump({k: plan[k] for k in PLAN_KEYS}, sort_keys=False, default_flow_style=None)
    with atomic_write(path, "w") as f:
        f.write(text)
    logger.info("plan written to %s: target spacing %s mm, slice size %s", path, plan["target_spacing"], plan["slice_size"])
    return path


def load_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The plan in ``path``; :class:`PlanError` naming the file and any missing key."""
    path = Path(path)
    try:
        plan = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PlanError(f"cannot read the plan {path}: {err}") from None
    if not isinstance(plan, dict):
        raise PlanError(f"plan {path} must hold a mapping of settings")
    missing = [k for k in PLAN_KEYS if k not in plan]
    if missing:
        raise PlanError(f"plan {path} lacks {missing}; write it again with: cocoseg plan {path.parent}")
    return plan


def find_plan(weights: str | os.PathLike) -> Path | None:
    """The plan of the weights file ``weights``: ``plan.yaml`` in its folder or the one above
    (``<run>/models/model.pt``, ``<run>/latest.pth``, a MONAI Label model folder); None if none."""
    weights = Path(weights)
    for folder in (weights.parent, weights.parent.parent):
        if (folder / PLAN_FILENAME).is_file():
            return folder / PLAN_FILENAME
    return None


def plan_of(weights: str | os.PathLike) -> dict[str, Any]:
    """The plan found beside ``weights`` (:func:`find_plan`), else :data:`DEFAULT_PLAN` with a
    warning; a run made before plans existed gets the command that writes its plan."""
    path = find_plan(weights)
    if path is not None:
        plan = load_plan(path)
        logger.info("weights %s: plan %s (target spacing %s mm)", weights, path, plan["target_spacing"])
        return plan
    weights = Path(weights)
    for folder in (weights.parent, weights.parent.parent):
        if (folder / "config.json").is_file():
            raise PlanError(
                f"the training run {folder} has no {PLAN_FILENAME} (it was made before plans); write it with: "
                f"cocoseg plan {folder}"
            )
    logger.warning(
        "no %s beside the weights %s: running them with the configuration's settings (the defaults unless "
        "overridden); layer their plan, or give the settings they were trained with", PLAN_FILENAME, weights,
    )  # fmt: skip
    return make_plan()


def check_plan(weights: str | os.PathLike, **settings: Any) -> None:
    """:class:`PlanError` naming every key where ``settings`` contradict the plan found beside
    ``weights`` (nothing to check when there is none)."""
    path = find_plan(weights)
    if path is None:
        return
    plan = load_plan(path)
    given = make_plan(**{k: v for k, v in settings.items() if k in DEFAULT_PLAN})
    wrong = [f"{k}: {given[k]} here, {plan[k]} in the plan" for k in BINDING_KEYS if k in settings and given[k] != plan[k]]
    if wrong:
        raise PlanError(
            f"the weights {weights} were trained under {path}, and these settings contradict it: "
            + "; ".join(wrong) + ". Drop the overrides (the plan is read on its own), or layer the plan: "
            f"--config_file \"['bundle/configs/inference.yaml','{path}']\""
        )


def plan_from_run_config(logdir: str | os.PathLike) -> dict[str, Any]:
    """The plan of a run made before plans, from its ``config.json`` (the native grid: such runs
    did not resample)."""
    path = Path(logdir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PlanError(f"cannot read the run's settings {path}: {err}") from None
    known = {k: config[k] for k in ("features", "attention_kernel_size", "share_vgg", "ct_window", "suv_max") if k in config}
    roi = config.get("val_roi_size") or config.get("patch_size")
    return make_plan(**known, slice_size=roi)


def _in_plane_spacing(path: str) -> tuple[float, float] | None:
    """In-plane voxel size (mm) of the NIfTI volume ``path`` from its header, after the plan's
    reorientation (the first two axes of the LPS-oriented volume: |columns of the affine|)."""
    import nibabel as nib

    try:
        affine = nib.load(path).affine
    except Exception:  # noqa: BLE001 (unreadable files are reported by the loaders, not here)
        return None
    # the voxel size along the world's x and y axes, which LPS orientation puts first and second
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    axis_of = np.abs(affine[:3, :3]).argmax(axis=1)
    return float(lengths[axis_of[0]]), float(lengths[axis_of[1]])


def resolve_png_spacing(
    png_spacing: Any, image_format: str, recorded: Sequence[float] | None = None, items: Sequence[Mapping[str, Any]] = ()
) -> list[float] | None:
    """The pixel size (mm) of PNG slices: ``png_spacing`` as given (``[x, y]``), or with
    ``"auto"`` the data set's ``spacing.json`` (``recorded``, else found above the first item's
    ``CT/`` folder); None when unknown or the data are volumes."""
    if image_format != "png" or png_spacing in (None, "", "null"):
        return None
    if png_spacing != "auto":
        return _floats(list(png_spacing)[:2])
    if recorded is None and items:
        recorded = read_spacing(Path(str(items[0]["image"])).parent.parent)
    return _floats(list(recorded)[:2]) if recorded else None


def resolve_target_spacing(target_spacing: Any, data: Mapping[str, Any], png_spacing: Sequence[float] | None) -> list[float] | None:
    """The plan's in-plane spacing (mm) for training on ``data`` (a prepared datalist).

    ``target_spacing``: ``[x, y]`` as given; ``"auto"``: the median in-plane spacing of the
    training items (NIfTI headers; PNG slices: ``png_spacing``); None: each file's own grid.
    The data set's spacing range is logged. PNG slices of unknown pixel size are taken to be at
    the target spacing, which is then unknown (None) unless given: said once, plainly.
    """
    items = list(data.get("training", []))
    if data.get("image_format") == "png":
        spacings = [tuple(png_spacing)] if png_spacing else []
        if not png_spacing:
            logger.warning(
                "the PNG slices carry no pixel size (no %s beside them, no png_spacing given): their pixels are "
                "taken to be at the plan's spacing (%s)", SPACING_FILENAME,
                "unknown: the model runs on each file's own grid" if target_spacing in (None, "auto") else f"{target_spacing} mm",
            )  # fmt: skip
    else:
        spacings = [s for s in (_in_plane_spacing(str(i["image"])) for i in items) if s is not None]
    if spacings:
        arr = np.asarray(spacings)
        source = "the PNG pixel size" if data.get("image_format") == "png" else f"{len(spacings)} volumes"
        logger.info(
            "training data in-plane spacing (mm): x %.3g to %.3g, y %.3g to %.3g, median %.4g x %.4g (%s)",
            arr[:, 0].min(), arr[:, 0].max(), arr[:, 1].min(), arr[:, 1].max(),
            np.median(arr[:, 0]), np.median(arr[:, 1]), source,
        )  # fmt: skip
    if target_spacing in (None, "", "null"):
        return None
    if target_spacing == "auto":
        if not spacings:
            return None
        chosen = _floats(np.median(np.asarray(spacings), axis=0).tolist())
    else:
        chosen = _floats(list(target_spacing)[:2])
    logger.info("plan target spacing: %s mm in-plane", chosen)
    return chosen
