"""Accuracy benchmark: CoCoSeg against MONAI peers and SUV thresholds, side by side in one run.

Each model is trained through the bundle's ``train.yaml`` (only ``network_def`` differs: same
data and split, transforms, loss, optimiser, epochs and seed), then scored on the held-out test
split through ``evaluate.yaml`` with the per-case evaluation metrics; the SUV-threshold
baselines are scored on the same cases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from .models import BENCH_MODELS, network_def

__all__ = ["BUDGETS", "run_accuracy", "format_accuracy"]

#: named sizes and budgets. ``cpu``: the default data set, about 30 minutes on a 2-core CPU;
#: ``gpu``: the same data, trained to convergence; ``toy``: seconds, for tests.
BUDGETS: dict[str, dict[str, Any]] = {
    "toy": {"patients": 5, "size": 48, "slices": 4, "toy": True,
            "train": {"max_epochs": 1, "batch_size": 4, "patch_size": [48, 48], "num_samples": 1}},
    "cpu": {"patients": None, "toy": False,
            "train": {"max_epochs": 8, "batch_size": 8, "patch_size": [128, 128], "num_samples": 1,
                      "learning_rate": 2e-3, "cpu_bf16": True, "val_freq": 2, "ema_momentum": 0.03,
                      "ema_warmup_iters": 50}},
    "gpu": {"patients": None, "toy": False,
            "train": {"max_epochs": 200, "batch_size": 16, "patch_size": [128, 128], "num_samples": 1,
                      "learning_rate": 1e-3, "val_freq": 5}},
}  # fmt: skip

_METHODS_BASELINES = ("suv2.5", "suv4.0", "suvmax41")


def _dataset(out: Path, budget: dict[str, Any]) -> str:
    """``""`` (the embedded default data set) or a small phantom set written under ``out``."""
    if budget["patients"] is None:
        return ""
    from ..data.phantom import PhantomConfig, write_dataset

    root = out / "data"
    if not (root / "phantom.json").is_file():
        write_dataset(root, budget["patients"], seed=3, fmt="png",
                      config=PhantomConfig(size=budget["size"], slices=budget["slices"]))  # fmt: skip
    return str(root)


def run_accuracy(
    out_dir: str | Path,
    models: Sequence[str] = tuple(BENCH_MODELS),
    budget: str = "cpu",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``models``; write ``<out_dir>/accuracy.json`` and return its content."""
    from ..bundle import config_path, run_bundle

    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {sorted(BUDGETS)}")
    spec = BUDGETS[budget]
    out = Path(out_dir)
    dataset = _dataset(out, spec)
    common = {"dataset_dir": dataset, "num_workers": 0 if spec["toy"] else 2, "progress_bar": False,
              "random_seed": 42, **spec["train"], **(overrides or {})}  # fmt: skip
    data_root = Path(dataset or "./data/cocoseg_phantom")
    results: dict[str, Any] = {"budget": budget, "settings": common, "models": {}, "baselines": {}}
    for name in models:
        logdir = out / name
        net = network_def(name, toy=spec["toy"])
        done = logdir / "bench_done.json"
        if done.is_file():  # a re-run (after an interruption) keeps models already done with these settings
            record = json.loads(done.read_text())
            if record.get("settings") == json.loads(json.dumps(common)) and record.get("network_def") == net:
                results["models"][name] = record["result"]
                results["baselines"] = results["baselines"] or record["baselines"]
                continue
        t0 = time.perf_counter()
        run_bundle([config_path("train")], "training", {**common, "logdir": str(logdir), "network_def": net})
        train_s = time.perf_counter() - t0
        spacing = json.loads((data_root / "phantom.json").read_text())["ct_spacing_mm"] if (data_root / "phantom.json").is_file() else None
        run_bundle(
            [config_path("train"), config_path("evaluate")], "evaluating",
            {**common, "logdir": str(logdir), "network_def": net, "eval_dir": str(logdir / "eval"),
             "eval_spacing_mm": spacing},
        )  # fmt: skip
        history = json.loads((logdir / "history.json").read_text())
        summary = json.loads((logdir / "eval" / "cocoseg_summary.json").read_text())  # the evaluated weights, whatever model
        results["models"][name] = {
            "network_def": net,
            "train_seconds": round(train_s, 1),
            "best_val_dice": history.get("best_val_dice"),
            "test": summary,
        }
        if not results["baselines"]:  # same test cases for every model: score the baselines once
            for method in _METHODS_BASELINES:
                results["baselines"][method] = json.loads((logdir / "eval" / f"{method}_summary.json").read_text())
        atomic_write_json(done, {"settings": common, "network_def": net, "result": results["models"][name],
                                 "baselines": results["baselines"]})  # fmt: skip

    atomic_write_json(out / "accuracy.json", results)
    return results


def _row(name: str, summary: dict[str, Any], extra: str) -> str:
    lesion, every = summary["lesion_cases"], summary["all_cases"]
    return (f"| {name} | {lesion['dice']['mean']:.3f} +/- {lesion['dice']['std']:.3f} "
            f"| {every['false_positive_volume_ml']['mean']:.2f} | {lesion['false_negative_volume_ml']['mean']:.2f} "
            f"| {lesion['sensitivity']['mean']:.2f} | {extra} |")  # fmt: skip


def format_accuracy(results: dict[str, Any]) -> str:
    """The results as a Markdown table (Dice over test cases with lesions, mean FP volume over all)."""
    first = next(iter(results["models"].values()), None)
    cases = first["test"]["cases"] if first else 0
    lines = [
        f"test split: {cases} cases; budget {results['budget']}, {results['settings'].get('max_epochs')} epochs",
        "",
        "| method | Dice (lesion cases) | FP volume mL (all) | FN volume mL | detection sensitivity | train time, best val Dice |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        lines.append(_row(name, r["test"], f"{r['train_seconds'] / 60:.1f} min, {r['best_val_dice']:.3f}"))
    for method, summary in results["baselines"].items():
        lines.append(_row(method, summary, "(threshold; suvmax41 is given the true lesions)" if method == "suvmax41" else "(threshold)"))
    return "\n".join(lines)
