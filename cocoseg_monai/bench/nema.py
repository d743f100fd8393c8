"""The NEMA IEC body phantom benchmark: does the model find every sphere, segment it better than
the clinical thresholds, and mark nothing else?

``python -m cocoseg_monai.bench nema [--ckpt bundle/models/model.pt] [--ratios 8 4]`` builds the
phantom (:mod:`cocoseg_monai.data.phantom.nema`: six spheres of 10 to 37 mm in a warm background,
a lung insert) on a 512 x 512 CT grid (0.98 mm, 2 mm slices) with a 4 mm PET grid, at each
sphere-to-background ratio; runs ``inference.yaml`` with the weights and their plan; and scores,
per sphere, the model against a fixed SUV >= 2.5 threshold and the 41 % isocontour of each
sphere's local SUVmax (both on the PET as resampled onto the CT grid):

- Dice of each method's mask within 15 mm of the sphere against the sphere;
- detected: the method marks at least one voxel of the sphere;
- false positives: mL marked farther than 15 mm from every sphere (the 41 % isocontour is drawn
  around each sphere only, so it has none by construction).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import write_result

__all__ = ["run_nema", "format_nema", "main"]

MARGIN_MM = 15.0


def _near(study: Any, record: dict, margin_mm: float) -> np.ndarray:
    a = study.config.ct_affine
    axes = [a[i, i] * np.arange(n) + a[i, 3] for i, n in enumerate(study.config.ct_shape)]
    cx, cy, cz = record["centre_mm"]
    d2 = (axes[0][:, None, None] - cx) ** 2 + (axes[1][None, :, None] - cy) ** 2 + (axes[2][None, None, :] - cz) ** 2
    return d2 <= (record["diameter_mm"] / 2 + margin_mm) ** 2


def _dice(mask: np.ndarray, truth: np.ndarray) -> float:
    total = mask.sum() + truth.sum()
    return float(2 * (mask & truth).sum() / total) if total else 1.0


def score_nema(study: Any, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per sphere and method: Dice near the sphere, detection; per method: false-positive mL."""
    voxel_ml = float(np.prod(study.config.ct_spacing)) / 1000.0
    near_any = np.zeros(study.config.ct_shape, bool)
    rows = []
    for record in study.records:
        sphere = study.spheres == record["sphere"]
        near = _near(study, record, MARGIN_MM)
        near_any |= near
        row = {"sphere": record["sphere"], "diameter_mm": record["diameter_mm"]}
        for name, mask in masks.items():
            row[f"{name}_dice"] = round(_dice(mask & near, sphere), 3)
            row[f"{name}_detected"] = bool((mask & sphere).any())
        rows.append(row)
    fp = {name: round(float((mask & ~near_any).sum() * voxel_ml), 3) for name, mask in masks.items()}
    return {"ratio": study.ratio, "spheres": rows, "false_positive_ml": fp}


def run_nema(ckpt: str | Path, ratios: Sequence[float] = (8.0, 4.0), seed: int = 0, cpu_bf16: bool = False
             ) -> dict[str, Any]:
    import nibabel as nib

    from ..bundle import config_path, run_bundle
    from ..data.phantom.nema import nema_body_phantom
    from ..metrics.baselines import percent_suvmax, suv_threshold
    from ..plan import find_plan
    from .inference import _cpu_name

    ckpt = Path(ckpt)
    plan = find_plan(ckpt)
    configs = [config_path("inference")] + ([plan] if plan is not None else [])
    result: dict[str, Any] = {"weights": str(ckpt), "machine": _cpu_name(), "ratios": []}
    with tempfile.TemporaryDirectory(prefix="cocoseg_nema_") as tmp:
        for ratio in ratios:
            study = nema_body_phantom(ratio, seed=seed)
            folder = Path(tmp) / f"ratio_{ratio:g}"
            folder.mkdir()
            ct, pet = folder / "nema_ct.nii.gz", folder / "nema_pet.nii.gz"
            nib.save(nib.Nifti1Image(study.ct_hu.astype(np.int16), study.config.ct_affine), str(ct))
            nib.save(nib.Nifti1Image(study.pet_suv_coarse, study.config.pet_affine), str(pet))
            run_bundle(configs, run_id="run", configure_logging=False,
                       overrides={"ckpt_path": str(ckpt), "ct": str(ct), "pet": str(pet), "output_dir": str(folder / "pred"),
                                  "cpu_bf16": cpu_bf16})  # fmt: skip
            model = np.asarray(nib.load(folder / "pred" / "nema_ct_seg.nii.gz").dataobj) > 0
            masks = {"model": model, "suv2.5": suv_threshold(study.pet_suv, 2.5),
                     "pct41": percent_suvmax(study.pet_suv, study.label, 0.41)}  # fmt: skip
            scored = score_nema(study, masks)
            scored["sphere_suvmax"] = [round(float(study.pet_suv[study.spheres == r["sphere"]].max()), 2)
                                       for r in study.records]  # fmt: skip
            result["ratios"].append(scored)
    return result


def format_nema(result: dict[str, Any]) -> str:
    lines = [f"NEMA IEC body phantom, weights {result['weights']}, {result['machine']}"]
    for r in result["ratios"]:
        lines += ["", f"spheres {r['ratio']:g}:1 (background SUV 1)", "",
                  "| sphere | diameter mm | SUVmax | model Dice | found | SUV>=2.5 Dice | found | 41 % SUVmax Dice |",
                  "|---|---|---|---|---|---|---|---|"]
        for row, suvmax in zip(r["spheres"], r["sphere_suvmax"]):
            lines.append(f"| {row['sphere']} | {row['diameter_mm']:g} | {suvmax} | {row['model_dice']:.3f} | "
                         f"{'yes' if row['model_detected'] else 'no'} | {row['suv2.5_dice']:.3f} | "
                         f"{'yes' if row['suv2.5_detected'] else 'no'} | {row['pct41_dice']:.3f} |")
        fp = r["false_positive_ml"]
        lines.append(f"\nfalse positives farther than {MARGIN_MM:g} mm from every sphere: model {fp['model']} mL, "
                     f"SUV>=2.5 {fp['suv2.5']} mL")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from ..bundle import bundle_dir

    p = argparse.ArgumentParser(prog="python -m cocoseg_monai.bench nema", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=str(bundle_dir() / "models" / "model.pt"), help="weights (their plan beside them)")
    p.add_argument("--ratios", type=float, nargs="+", default=[8.0, 4.0], help="sphere-to-background ratios")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = run_nema(args.ckpt, args.ratios, args.seed, args.bf16)
    print(format_nema(result))
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
