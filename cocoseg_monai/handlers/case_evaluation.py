"""Collect an evaluator's outputs per case, score each case (model and SUV baselines), write files."""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..plan import DEFAULT_PLAN
from ..metrics import case_record, percent_suvmax, suv_threshold, write_evaluation

__all__ = ["CaseEvaluationWriter", "BASELINES"]

#: The baselines scored beside the model: name -> function of (PET in SUV, truth).
BASELINES = {
    "suv2.5": lambda pet, truth: suv_threshold(pet, 2.5),
    "suv4.0": lambda pet, truth: suv_threshold(pet, 4.0),
    "suvmax41": lambda pet, truth: percent_suvmax(pet, truth, 0.41),
}

_SLICE = re.compile(r"_slice_(\d+)\.png$")


class CaseEvaluationWriter:
    """Score every case of an evaluation run and write ``<name>_cases.csv`` / ``<name>_summary.json``.

    Each decollated output item must hold ``pred`` and ``label`` (one-hot), ``image`` (the
    2-channel input, PET in channel 1 scaled by ``suv_max``) and ``case``. 2D slices of a case
    are stacked along z in slice-number order (from the ``_slice_N.png`` file name); 3D items
    are cases of their own. Voxel spacing comes from the image's affine, or ``spacing_mm`` for
    PNG slices (which carry none; then volumes are in units of ``prod(spacing_mm)`` mm^3).

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
        self._items: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = defaultdict(list)
        self._spacing: dict[str, tuple[float, ...]] = {}
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _reset(self, engine: Engine) -> None:
        self._items.clear()
        self._spacing.clear()

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
            match = _SLICE.search(str(meta.get("filename_or_obj", "")))
            self._items[case].append((int(match.group(1)) if match else 0, arrays))
            if arrays["pred"].ndim == 3:
                self._spacing[case] = tuple(float(v) for v in torch.as_tensor(image.affine)[:3, :3].norm(dim=0))

    def _from_slices(self, case: str) -> bool:
        return self._items[case][0][1]["pred"].ndim == 2

    def _volumes(self) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for case, items in self._items.items():
            items = sorted(items, key=lambda t: t[0])
            if self._from_slices(case):
                out[case] = {k: np.stack([a[k] for _, a in items], axis=-1) for k in items[0][1]}
            else:
                out[case] = items[0][1]
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
        import gzip

        import nibabel as nib

        from ..atomic import atomic_write
        from ..visualize import save_overlay, save_pet_mip

        from PIL import Image

        pred_dir = self.output_dir / "predictions"
        for case, v in volumes.items():
            img = nib.Nifti1Image(v["pred"].astype(np.uint8), np.diag([*spacing[case], 1.0]))
            with atomic_write(pred_dir / f"{case}_seg.nii.gz", "wb") as f:
                f.write(gzip.compress(img.to_bytes(), compresslevel=1))
            numbers = sorted(n for n, _ in self._items[case]) if self._from_slices(case) else []
            for k, number in enumerate(numbers):  # the volume's z order is the slice-number order
                mask = Image.fromarray(v["pred"][..., k].T.astype(np.uint8) * 255)  # (x, y) -> rows, cols
                with atomic_write(pred_dir / f"patient_{case}_slice_{number:04d}_seg.png", "wb") as f:
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

