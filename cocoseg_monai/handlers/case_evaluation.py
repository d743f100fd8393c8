"""Collect an evaluator's outputs per case, score each case (model and SUV baselines), write files."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..conventions import PNG_NAME_PATTERN
from ..metrics import case_record, percent_suvmax, suv_threshold, write_evaluation
from ..plan import DEFAULT_PLAN

__all__ = ["CaseEvaluationWriter", "BASELINES"]

#: The baselines scored beside the model: name -> function of (PET in SUV, truth).
BASELINES = {
    "suv2.5": lambda pet, truth: suv_threshold(pet, 2.5),
    "suv4.0": lambda pet, truth: suv_threshold(pet, 4.0),
    "suvmax41": lambda pet, truth: percent_suvmax(pet, truth, 0.41),
}

#: the suffix of a written mask's name: ``<CT file name without .png>_seg.png``, ``<case>_seg.nii.gz``
MASK_SUFFIX = "_seg"


class _Item(NamedTuple):
    """One decollated output item: its slice number (0 for a volume, or a file name off the
    slice pattern), the name of its CT file, its arrays."""

    number: int
    ct_name: str
    arrays: dict[str, np.ndarray]


class CaseEvaluationWriter:
    """Score every case of an evaluation run and write ``<name>_cases.csv`` / ``<name>_summary.json``.

    Each decollated output item must hold ``pred`` and ``label`` (one-hot), ``image`` (the
    2-channel input, PET in channel 1 scaled by ``suv_max``) and ``case``. 2D slices of a case
    are stacked along z in slice-number order (from the ``_slice_N.png`` file name); 3D items
    are cases of their own. Voxel spacing comes from the image's affine, or ``spacing_mm`` for
    PNG slices (which carry none; then volumes are in units of ``prod(spacing_mm)`` mm^3).

    Predicted masks (``save_predictions``) go to ``<output_dir>/predictions``: a volume's as
    ``<case>_seg.nii.gz`` with the affine of the array the network saw (the CT's, as reoriented
    and resampled by the transforms), so that it overlays the CT in any viewer; a PNG slice's as
    ``<CT file name>_seg.png`` (``patient_7_slice_12.png`` -> ``patient_7_slice_12_seg.png``,
    whatever the numbering) and its case's slices stacked as ``<case>_seg.nii.gz`` of
    ``spacing_mm`` voxels.

    Args:
        output_dir: where the files go.
        suv_max: the PET scaling of the transforms (PET channel x suv_max = SUV).
        spacing_mm: voxel size for PNG slices.
        baselines: also score :data:`BASELINES` (files ``suv2.5_*``, ``suv4.0_*``, ``suvmax41_*``).
        save_predictions: also write each case's predicted mask (NIfTI, and for PNG slices a
            0/255 PNG per slice named like its CT slice) and overlays and PET MIPs of the best
            and the worst lesion case.
        name: file prefix of the model's results.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        suv_max: float = DEFAULT_PLAN["suv_max"],
        spacing_mm: Sequence[float] | None = None,
        baselines: bool = True,
        save_predictions: bool = False,
        name: str = "cocoseg",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.suv_max = suv_max
        self.spacing_mm = tuple(spacing_mm) if spacing_mm else None
        self.baselines = baselines
        self.save_predictions = save_predictions
        self.name = name
        self.summary: dict[str, Any] = {}
        self._items: dict[str, list[_Item]] = defaultdict(list)
        self._spacing: dict[str, tuple[float, ...]] = {}
        self._affine: dict[str, np.ndarray] = {}
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _reset(self, engine: Engine) -> None:
        self._items.clear()
        self._spacing.clear()
        self._affine.clear()

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            image = item["image"]
            case = str(item["case"])
            arrays = {
                "pred": torch.as_tensor(item["pred"]).argmax(0).cpu().numpy().astype(bool),
                "truth": torch.as_tensor(item["label"]).argmax(0).cpu().numpy().astype(bool),
                "ct": torch.as_tensor(image[0]).float().cpu().numpy(),
                "pet_suv": torch.as_tensor(image[1]).float().cpu().numpy() * self.suv_max,
            }
            meta = getattr(image, "meta", {})
            ct_name = Path(str(meta.get("filename_or_obj", ""))).name
            match = PNG_NAME_PATTERN.match(ct_name)
            self._items[case].append(_Item(int(match.group("slice")) if match else 0, ct_name, arrays))
            if arrays["pred"].ndim == 3:
                affine = _ras_affine(image)
                self._affine[case] = affine
                self._spacing[case] = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))

    def _from_slices(self, case: str) -> bool:
        return self._items[case][0].arrays["pred"].ndim == 2

    def _slices(self, case: str) -> list[_Item]:
        """A case's items in z order: slice-number order (stable for names off the pattern)."""
        return sorted(self._items[case], key=lambda item: item.number)

    def _volumes(self) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for case, items in self._items.items():
            if self._from_slices(case):
                items = self._slices(case)
                out[case] = {k: np.stack([item.arrays[k] for item in items], axis=-1) for k in items[0].arrays}
            else:
                out[case] = items[0].arrays
        return out

    def _finish(self, engine: Engine) -> None:
        volumes = self._volumes()
        spacing = {c: self._spacing.get(c, self.spacing_mm or (1.0, 1.0, 1.0)) for c in volumes}
        methods = {self.name: lambda v: v["pred"]}
        if self.baselines:
            methods.update({n: (lambda v, f=f: f(v["pet_suv"], v["truth"])) for n, f in BASELINES.items()})
        for method, predict in methods.items():
            records = [case_record(c, predict(v), v["truth"], spacing[c]) for c, v in sorted(volumes.items())]
            self.summary[method] = write_evaluation(records, self.output_dir, name=method)
            if method == self.name and self.save_predictions:
                self._save_pictures(records, volumes, spacing)
        for method, s in self.summary.items():
            d = s["lesion_cases"]["dice"]
            self.logger.info(
                "%-9s Dice %.3f +/- %.3f over %d lesion cases; FP volume %.2f mL, FN volume %.2f mL, sensitivity %.2f",
                method,
                d["mean"],
                d["std"],
                d["n"],
                s["all_cases"]["false_positive_volume_ml"]["mean"],
                s["all_cases"]["false_negative_volume_ml"]["mean"],
                s["lesion_cases"]["sensitivity"]["mean"],
            )

    def _save_pictures(self, records: list[dict], volumes: dict, spacing: dict) -> None:
        from PIL import Image

        from ..atomic import atomic_write, atomic_write_nifti
        from ..visualize import save_overlay, save_pet_mip

        pred_dir = self.output_dir / "predictions"
        for case, v in volumes.items():
            # a volume: the affine of its array, so that the mask lies on its CT in world space;
            # stacked PNG slices carry no geometry: their voxel size only
            affine = self._affine.get(case, np.diag([*spacing[case], 1.0]))
            atomic_write_nifti(pred_dir / f"{case}{MASK_SUFFIX}.nii.gz", v["pred"].astype(np.uint8), affine)
            if not self._from_slices(case):
                continue
            for k, item in enumerate(self._slices(case)):  # the volume's z order
                mask = Image.fromarray(v["pred"][..., k].T.astype(np.uint8) * 255)  # (x, y) -> rows, cols
                name = f"{Path(item.ct_name).stem}{MASK_SUFFIX}.png" if item.ct_name else f"{case}_{k + 1}{MASK_SUFFIX}.png"
                with atomic_write(pred_dir / name, "wb") as f:
                    mask.save(f, format="PNG")
        lesion = sorted((r for r in records if r["has_lesion"]), key=lambda r: r["dice"])
        for tag, r in (("worst", lesion[0]), ("best", lesion[-1])) if lesion else ():
            v = volumes[r["case"]]
            k = int(v["truth"].sum(axis=(0, 1)).argmax())
            title = f"{tag} case {r['case']} slice {k + 1} Dice {r['dice']:.2f}"
            pet = np.clip(v["pet_suv"][..., k] / self.suv_max, 0, 1)
            out = pred_dir / f"overlay_{tag}_{r['case']}.png"
            save_overlay(v["ct"][..., k], pet, v["truth"][..., k], v["pred"][..., k], out, title=title)
            save_pet_mip(v["pet_suv"], v["pred"], pred_dir / f"mip_{tag}_{r['case']}.png", spacing_mm=spacing[r["case"]])


def _ras_affine(image: Any) -> np.ndarray:
    """The float64 voxel-to-world affine of ``image`` (a MetaTensor) in NIfTI's RAS+ world (MONAI
    keeps an LPS affine for images read in that space)."""
    affine = np.asarray(torch.as_tensor(image.affine, dtype=torch.float64).cpu())
    if str(getattr(image, "meta", {}).get("space", "RAS")).upper() == "LPS":
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return affine
