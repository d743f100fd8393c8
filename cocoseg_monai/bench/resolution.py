"""Resolution independence: one trained model on unseen phantom studies of other grids.

``python -m cocoseg_monai.bench resolution --run logs`` generates phantom patients of another
seed as NIfTI studies at 128, 256 and 512 pixels over the default 500 mm field of view and at 512
pixels over 350 mm (0.68 mm pixels, a clinical CT grid) and over 700 mm (a field larger than the
training one), runs the run's weights over them through
``bundle/configs/inference.yaml`` twice, and scores each label on the CT grid:

- **before** (``native``): on each CT's own grid, as inference ran before plans (the weights'
  plan with no target spacing and no padding);
- **after** (``plan``): under the run's plan: resampled to its spacing, slices padded to its
  slice size, probabilities resampled back onto the CT grid;
- ``unpadded``: the plan's spacing without the padding, to show what the padding does for a
  field of view smaller than the training one.

It prints mean per-case Dice over the patients with lesions and seconds per study for each grid and
mode, and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["GRIDS", "benchmark_resolution", "main"]

#: (name, CT pixels, field of view in mm)
GRIDS = (("128 @ 500 mm", 128, 500.0), ("256 @ 500 mm", 256, 500.0), ("512 @ 500 mm", 512, 500.0),
         ("512 @ 350 mm", 512, 350.0), ("512 @ 700 mm", 512, 700.0))  # fmt: skip
#: mode -> the plan settings it changes: before plans (each CT's own grid), the plan, the plan without padding
MODES = {"native": {"target_spacing": None, "slice_size": None}, "plan": {}, "unpadded": {"slice_size": None}}


def _variant_run(run: Path, out: Path, changes: dict) -> Path:
    """A copy of ``run``'s weights under its plan with ``changes`` (``run`` itself when none)."""
    from ..plan import DEFAULT_PLAN, load_plan, make_plan, write_plan

    if not changes:
        return run
    plan = load_plan(run / "plan.yaml")
    (out / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "models" / "model.pt", out / "models" / "model.pt")
    write_plan(out, make_plan(**{**{k: plan[k] for k in DEFAULT_PLAN}, **changes}))
    return out


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return float(2.0 * (pred & truth).sum() / total) if total else 1.0


def benchmark_resolution(
    run: str | Path,
    out: str | Path = "./bench_runs/resolution",
    patients: int = 5,
    seed: int = 2026,
    grids: Sequence[tuple[str, int, float]] = GRIDS,
    slices: int | None = None,
    modes: Sequence[str] = tuple(MODES),
    log=print,
) -> dict:
    """Score ``run``'s weights on phantom studies of each grid in each mode; returns the figures."""
    from ..bundle import config_path, run_bundle
    from ..data.phantom import DEFAULT_DATASET, write_dataset

    run, out = Path(run), Path(out)
    runs = {mode: _variant_run(run, out / f"{mode}_run", MODES[mode]) for mode in modes}
    base = DEFAULT_DATASET["config"]
    result: dict = {"run": str(run), "patients": patients, "seed": seed, "grids": {}}
    for name, size, fov in grids:
        config = dataclasses.replace(base, size=size, fov_mm=fov, slices=slices or base.slices)
        data = out / f"data_{size}_{int(fov)}"
        if not (data / "phantom.json").is_file():
            write_dataset(data, patients, seed, fmt="nifti", config=config)
        masks = {p.name: np.asarray(nib.load(p).dataobj) > 0 for p in sorted((data / "masks").glob("*.nii.gz"))}
        lesion_cases = [k for k, m in masks.items() if m.any()]
        row: dict = {"size": size, "fov_mm": fov, "spacing_mm": round(fov / size, 4), "cases_with_lesions": len(lesion_cases)}
        for mode in modes:
            pred_dir = out / f"pred_{size}_{int(fov)}_{mode}"
            t0 = time.perf_counter()
            run_bundle([config_path("inference")], run_id="run", overrides={
                "ckpt_path": str(runs[mode] / "models" / "model.pt"), "dataset_dir": str(data),
                "datalist_section": "all", "output_dir": str(pred_dir),
            })  # fmt: skip
            seconds = (time.perf_counter() - t0) / len(masks)
            dices = {}
            for case in lesion_cases:
                pred = np.asarray(nib.load(pred_dir / case.replace(".nii.gz", "_seg.nii.gz")).dataobj) > 0
                dices[case] = round(_dice(pred, masks[case]), 4)
            row[mode] = {"mean_dice": round(float(np.mean(list(dices.values()))), 4), "dice": dices,
                         "seconds_per_study": round(seconds, 2)}  # fmt: skip
            log(f"{name:>14} {mode:>6}: mean per-case Dice {row[mode]['mean_dice']:.3f} over {len(dices)} cases, "
                f"{seconds:.2f} s per study")  # fmt: skip
        result["grids"][name] = row
    return result


def format_table(result: dict) -> str:
    modes = [m for m in MODES if any(m in r for r in result["grids"].values())]
    head = "| grid | pixel (mm) | " + " | ".join(f"Dice {m} | s/study {m}" for m in modes) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(modes))]
    for name, r in result["grids"].items():
        cells = " | ".join(f"{r[m]['mean_dice']:.3f} | {r[m]['seconds_per_study']:.2f}" for m in modes)
        lines.append(f"| {name} | {r['spacing_mm']} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cocoseg_monai.bench resolution", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="./logs", help="the training run (models/model.pt and plan.yaml)")
    p.add_argument("--out", default="./bench_runs/resolution", help="studies, labels and resolution.json")
    p.add_argument("--patients", type=int, default=5)
    p.add_argument("--seed", type=int, default=2026, help="phantom seed (the default data set's is another)")
    p.add_argument("--slices", type=int, default=None, help="slices per study (default: the default data set's)")
    args = p.parse_args(argv)
    result = benchmark_resolution(args.run, args.out, args.patients, args.seed, slices=args.slices)
    print()
    print(format_table(result))
    from . import write_result

    write_result(str(Path(args.out) / "resolution.json"), result)
    return 0
