"""``cocoseg eval``: the original ``test_model.py`` flags over ``train.yaml`` + ``evaluate.yaml``, scoring
a training run's weights with the settings of its plan."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .common import _add_shared_flags, _check_run, _device, _parse_set


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score trained weights per case, with SUV-threshold baselines (the original test_model.py flags)",
    )
    p.add_argument("--ckpt", default="./logs/models/model.pt", help="weights (a training run's models/model.pt)")
    _add_shared_flags(p, "use_gpu")
    p.add_argument("--mode", default="eval", choices=("eval",), help="eval (the only mode)")
    p.add_argument("--dataset_root", default="", help="the data of the training run; '' = embedded phantom data")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--save_predictions", action="store_true", help="masks, and overlays/MIPs of best and worst cases")
    p.add_argument("--logdir", "--run", default="./logs/",
                   help="the training run: its plan.yaml gives the weights' settings, its datalist.json the split")
    p.add_argument("--output_dir", default=None, help="default LOGDIR/eval")
    p.add_argument("--val_ratio", type=float, default=0.2)
    p.add_argument("--random_seed", type=int, default=42)
    _add_shared_flags(p, "features")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="voxel size in mm of PNG slices (volumes in mL)")
    _add_shared_flags(p, "set")
    p.set_defaults(func=_run_eval)


def run_plan(logdir: str | Path) -> Path | None:
    """``<logdir>/plan.yaml``, the settings the run's weights were trained with; None for a folder
    that is no training run. A run made before plans is refused with the command that writes its plan."""
    from ..plan import PLAN_FILENAME, load_plan

    path = Path(logdir) / PLAN_FILENAME
    if path.is_file():
        plan = load_plan(path)  # refuses an incomplete plan, naming the keys
        logging.getLogger(__name__).info("the training run's plan %s: %s", path, plan)
        return path
    if (Path(logdir) / "config.json").is_file():
        raise SystemExit(
            f"cocoseg: the training run {logdir} has no {PLAN_FILENAME} (it was made before plans); write it with: "
            f"cocoseg plan {logdir}"
        )
    return None


def eval_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Bundle overrides of ``train.yaml`` + ``evaluate.yaml`` (+ the run's plan) for the parsed
    ``cocoseg eval`` flags; ``--features`` and ``--set`` take precedence (a contradiction of the
    plan is refused by the bundle)."""
    overrides = {
        "ckpt_path": args.ckpt,
        "device": _device(args.use_gpu),
        "dataset_dir": args.dataset_root,
        "eval_split": {"val": "validation", "test": "test"}[args.split],
        "save_predictions": args.save_predictions,
        "logdir": args.logdir,
        "val_ratio": args.val_ratio,
        "random_seed": args.random_seed,
        "eval_spacing_mm": list(args.spacing) if args.spacing else None,
        "progress_bar": False,
    }
    if args.features is not None:
        overrides["features"] = list(args.features)
    if args.output_dir:
        overrides["eval_dir"] = args.output_dir
    overrides.update(_parse_set(args.set, ("train", "evaluate")))
    return overrides


def _run_eval(args: argparse.Namespace) -> int:
    from ..bundle import config_path, run_bundle

    overrides = eval_overrides(args)  # flags and --set keys first: no file read yet
    _check_run(args.use_gpu, "eval", ckpt=args.ckpt)
    configs = [config_path("train"), config_path("evaluate")]
    plan = run_plan(args.logdir)
    if plan is not None:
        configs.append(plan)
        overrides.setdefault("val_roi_size", "$@slice_size or @patch_size")  # validated as the run validated
    run_bundle(configs, run_id="evaluating", overrides=overrides)
    return 0
