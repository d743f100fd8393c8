"""The ``cocoseg`` command line.

Subcommands:

- ``cocoseg train``: the original project's training command line (``main.py --train``), same
  flags and defaults. It translates the flags into overrides of ``bundle/configs/train.yaml``
  and runs that bundle workflow: there is no second training loop.
- ``cocoseg eval``: the original ``test_model.py`` surface (``--ckpt``, ``--use_gpu``, ``--mode eval``,
  ``--dataset_root``, ``--split val|test``, ``--save_predictions``) over ``evaluate.yaml``.
- ``cocoseg infer``: whole-volume inference through ``bundle/configs/inference.yaml`` (CT and
  PET NIfTI on their own grids in, a label volume on the CT grid out).
- ``cocoseg plot-history LOGDIR``: training curves (loss, Dice, IoU, accuracy, learning rate)
  from ``LOGDIR/history.json`` to ``LOGDIR/training_curves.png``.
- ``cocoseg label-datastore OUT``: a MONAI Label datastore of phantom PET/CT studies, to try the
  MONAI Label app (``apps/cocoseg``) at once.
- ``cocoseg params``: parameter breakdown of the network (total, trainable, frozen, per part)
  and optionally its FLOPs per slice, as the original project's ``measure_model.py`` printed.
- ``cocoseg plan RUN``: write the ``plan.yaml`` of a training run made before plans.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .settings import default_workers

__all__ = ["main", "build_parser", "parse_args", "train_overrides", "eval_overrides", "infer_overrides", "TRAIN_FLAGS"]

#: The original training flags: name -> (bundle key, default). ``use_gpu`` maps to ``device``.
TRAIN_FLAGS: dict[str, tuple[str, Any]] = {
    "epoch": ("max_epochs", 500),
    "lr": ("learning_rate", 1e-4),
    "bs": ("batch_size", 8),
    "dataset_root": ("dataset_dir", "./dataset"),
    "logdir": ("logdir", "./logs/"),
    "use_gpu": ("device", False),
    "val_ratio": ("val_ratio", 0.2),
    "random_seed": ("random_seed", 42),
    "loss_type": ("loss_type", "combined"),
    "dice_weight": ("dice_weight", 0.5),
    "ce_weight": ("ce_weight", 0.5),
    "val_freq": ("val_freq", 1),
    "save_freq": ("save_freq", 5),
    "num_workers": ("num_workers", default_workers()),  # 4, at most the CPUs this process may use
    "resume": ("resume", False),
    "resume_ckpt": ("resume_ckpt", "./logs/latest.pth"),
    # beyond the original flags: the loss parameters its advice names, and the patch size
    "tversky_alpha": ("tversky_alpha", 0.6),
    "tversky_beta": ("tversky_beta", 0.4),
    "focal_alpha": ("focal_alpha", 1.0),
    "focal_gamma": ("focal_gamma", 2.0),
    "patch_size": ("patch_size", [96, 96]),
    "vgg_weights": ("vgg_weights", None),
}


def _add_train_parser(sub: argparse._SubParsersAction, defaults: dict[str, Any]) -> None:
    from .losses import LOSS_TYPES

    p = sub.add_parser(
        "train",
        help="train through the bundle's training workflow (the original main.py --train flags)",
        description="Train CoCoSeg V2. Flags keep the original project's names and defaults; values from "
        "--config JSON sit between the defaults and the flags given here.",
    )
    d = {k: v for k, (_, v) in TRAIN_FLAGS.items()}
    p.add_argument("--epoch", type=int, default=d["epoch"], help="number of epochs (500)")
    p.add_argument("--lr", type=float, default=d["lr"], help="learning rate (1e-4)")
    p.add_argument("--bs", type=int, default=d["bs"], help="batch size (8)")
    p.add_argument(
        "--dataset_root",
        default=d["dataset_root"],
        help="data folder (layout A, B, NIfTI volumes) or datalist JSON; '' = embedded phantom data. "
        "Not given: ./dataset if it exists, else the embedded phantom data; a folder given must exist.",
    )
    p.add_argument("--logdir", default=d["logdir"], help="output folder (./logs/)")
    p.add_argument("--use_gpu", action="store_true", help="train on CUDA (AMP and channels_last on)")
    p.add_argument("--val_ratio", type=float, default=d["val_ratio"], help="validation share of patients (0.2)")
    p.add_argument("--random_seed", type=int, default=d["random_seed"], help="seed of split and training (42)")
    p.add_argument("--loss_type", default=d["loss_type"], choices=LOSS_TYPES, help="loss (combined)")
    p.add_argument("--dice_weight", type=float, default=d["dice_weight"], help="Dice weight in combined (0.5)")
    p.add_argument("--ce_weight", type=float, default=d["ce_weight"], help="CE weight in combined (0.5)")
    p.add_argument("--val_freq", type=int, default=d["val_freq"], help="validate every N epochs (1)")
    p.add_argument("--save_freq", type=int, default=d["save_freq"], help="checkpoint_epoch_N.pth every N epochs (5)")
    p.add_argument("--num_workers", type=int, default=d["num_workers"],
                   help=f"data loader workers (4, at most the usable CPUs: {d['num_workers']} here)")
    p.add_argument("--resume", action="store_true", help="resume from --resume_ckpt")
    p.add_argument("--resume_ckpt", default=d["resume_ckpt"], help="checkpoint to resume (./logs/latest.pth)")
    p.add_argument("--tversky_alpha", type=float, default=d["tversky_alpha"], help="Tversky false-positive weight")
    p.add_argument("--tversky_beta", type=float, default=d["tversky_beta"], help="Tversky false-negative weight")
    p.add_argument("--focal_alpha", type=float, default=d["focal_alpha"], help="focal loss scale")
    p.add_argument("--focal_gamma", type=float, default=d["focal_gamma"], help="focal loss focusing power")
    p.add_argument("--patch_size", type=int, nargs=2, default=d["patch_size"], metavar=("H", "W"))
    p.add_argument("--vgg_weights", default=d["vgg_weights"], help="local torchvision VGG19 .pth")
    p.add_argument("--config", default=None, metavar="FILE.json", help="JSON file of flag values")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel processes on this machine: torchrun with multi_gpu_train.yaml (one per GPU with "
        "--use_gpu, NCCL; else CPU processes, gloo). --bs is per process.",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other bundle override, VALUE in YAML syntax (e.g. --set features=[16,32,64,128])",
    )
    p.set_defaults(func=_run_train, **defaults)


def _device(use_gpu: bool) -> str:
    """The bundle's ``device`` for the original ``--use_gpu`` flag (CPU without it, as before)."""
    return "$torch.device('cuda')" if use_gpu else "$torch.device('cpu')"


def _check_run(use_gpu: bool, command: str, ckpt: str | None = None) -> None:
    """Fail before any work when ``--use_gpu`` has no CUDA device, or the checkpoint ``ckpt`` does
    not exist or holds pickled objects other than weights (a CheckpointError, answered in one line)."""
    import torch

    from .networks.weights import check_checkpoint

    if use_gpu and not torch.cuda.is_available():
        raise SystemExit(f"cocoseg {command}: --use_gpu given but torch sees no CUDA device")
    if ckpt is not None and not Path(ckpt).is_file():
        raise SystemExit(f"cocoseg {command}: checkpoint {ckpt} not found")
    check_checkpoint(ckpt)


def _load_flag_config(path: str) -> dict[str, Any]:
    """Read a ``--config`` JSON of flag values; unknown keys are an error naming them."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"cocoseg train: --config file {path} not found") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"cocoseg train: --config file {path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise SystemExit(f"cocoseg train: --config file {path} must hold a JSON object of flag values")
    unknown = sorted(set(values) - set(TRAIN_FLAGS) - {"set"})
    if unknown:
        raise SystemExit(
            f"cocoseg train: unknown key(s) {', '.join(unknown)} in {path}; known: {', '.join(TRAIN_FLAGS)}"
        )
    return values


def _parse_set(items: Sequence[str], configs: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` overrides; a KEY that none of the bundle ``configs`` has is refused,
    naming it and the closest known keys (a typo would otherwise be silently ignored)."""
    import difflib

    import yaml
    from monai.bundle import ConfigParser

    from .bundle import config_path

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"cocoseg: --set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    if out:
        parser = ConfigParser()
        parser.read_config([str(config_path(c)) for c in configs])
        for key in out:
            if key not in parser:
                known = list(parser.get().keys())
                close = difflib.get_close_matches(key.split("#")[0], known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SystemExit(f"cocoseg: --set {key}: no such key in {', '.join(configs)}{hint}")
    return out


def train_overrides(args: argparse.Namespace, explicit: set[str] | None = None) -> dict[str, Any]:
    """Bundle overrides for the parsed ``cocoseg train`` flags.

    Args:
        args: parsed flags (after ``--config`` values were applied as defaults).
        explicit: flags the user set (command line or ``--config``); decides whether a missing
            default ``./dataset`` falls back to the embedded data (not given) or is an error (given,
            even when it is the default's value).

    Raises:
        DataError: ``--dataset_root`` was given and does not exist (only ``''`` means the
            embedded phantom data).
    """
    explicit = explicit or set()
    overrides: dict[str, Any] = {}
    for flag, (key, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if flag == "use_gpu":
            overrides[key] = _device(value)
            continue
        if flag == "patch_size":
            value = list(value)
        overrides[key] = value
    root = overrides["dataset_dir"]
    if root and not Path(root).exists():
        if "dataset_root" in explicit:
            from .errors import DataError

            raise DataError(f"--dataset_root {root} does not exist (give --dataset_root '' for the embedded phantom data)")
        logging.getLogger(__name__).info("%s does not exist: training on the embedded phantom data set", root)
        overrides["dataset_dir"] = ""
    overrides.update(_parse_set(args.set, ("train",)))
    return overrides


def distributed_command(nproc: int, overrides: dict[str, Any], overrides_file: str | Path) -> list[str]:
    """The ``torchrun`` command of ``cocoseg train --nproc N``; writes ``overrides`` to ``overrides_file``,
    the last config layer (after ``train.yaml`` and ``multi_gpu_train.yaml``)."""
    from .atomic import atomic_write_json
    from .bundle import bundle_dir, config_path

    layered = dict(overrides)
    if layered.get("device") == _device(True):
        del layered["device"]  # multi_gpu_train.yaml: cuda:LOCAL_RANK on each rank
    else:
        layered["dist_backend"] = "gloo"  # CPU processes
    atomic_write_json(overrides_file, layered)
    configs = [str(config_path("train")), str(config_path("multi_gpu_train")), str(overrides_file)]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "monai.bundle", "run", "training", "--meta_file", str(bundle_dir() / "configs" / "metadata.json"),
        "--config_file", json.dumps(configs),
    ]  # fmt: skip


def _run_train(args: argparse.Namespace) -> int:
    from .bundle import config_path, run_bundle

    if args.nproc < 1:
        raise SystemExit(f"cocoseg train: --nproc must be >= 1, got {args.nproc}")
    overrides = train_overrides(args, explicit=args._explicit)  # flags and --set keys first: no file read yet
    _check_run(args.use_gpu, "train", ckpt=args.resume_ckpt if args.resume else None)
    if args.nproc == 1:
        run_bundle([config_path("train")], run_id="training", overrides=overrides)
        return 0
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cocoseg_train_") as tmp:
        cmd = distributed_command(args.nproc, overrides, Path(tmp) / "overrides.json")
        logging.getLogger(__name__).info("running %s", " ".join(cmd))
        return subprocess.run(cmd, check=False).returncode


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score trained weights per case, with SUV-threshold baselines (the original test_model.py flags)",
    )
    p.add_argument("--ckpt", default="./logs/models/model.pt", help="weights (a training run's models/model.pt)")
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--mode", default="eval", choices=("eval",), help="eval (the only mode)")
    p.add_argument("--dataset_root", default="", help="the data of the training run; '' = embedded phantom data")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--save_predictions", action="store_true", help="masks, and overlays/MIPs of best and worst cases")
    p.add_argument("--logdir", "--run", default="./logs/",
                   help="the training run: its plan.yaml gives the weights' settings, its datalist.json the split")
    p.add_argument("--output_dir", default=None, help="default LOGDIR/eval")
    p.add_argument("--val_ratio", type=float, default=0.2)
    p.add_argument("--random_seed", type=int, default=42)
    p.add_argument("--features", type=int, nargs=4, default=None, metavar="F",
                   help="the widths of weights without a plan (a run's plan.yaml gives them)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="voxel size in mm of PNG slices (volumes in mL)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other bundle override")
    p.set_defaults(func=_run_eval)


def run_plan(logdir: str | Path) -> Path | None:
    """``<logdir>/plan.yaml``, the settings the run's weights were trained with; None for a folder
    that is no training run. A run made before plans is refused with the command that writes its plan."""
    from .plan import PLAN_FILENAME, load_plan

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
    from .bundle import config_path, run_bundle

    overrides = eval_overrides(args)  # flags and --set keys first: no file read yet
    _check_run(args.use_gpu, "eval", ckpt=args.ckpt)
    configs = [config_path("train"), config_path("evaluate")]
    plan = run_plan(args.logdir)
    if plan is not None:
        configs.append(plan)
        overrides.setdefault("val_roi_size", "$@slice_size or @patch_size")  # validated as the run validated
    run_bundle(configs, run_id="evaluating", overrides=overrides)
    return 0


def _add_infer_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="segment CT/PET volumes through the bundle's inference workflow",
        description="Whole-volume inference: PET is resampled onto the CT grid, the network runs over the "
        "axial slices, and the label is written on the CT grid with the CT's affine.",
    )
    p.add_argument("--ckpt", default=None, help="weights (default: RUN/models/model.pt); their plan.yaml is found beside "
                   "them or one folder up")
    p.add_argument("--run", default="./logs", help="the training run whose weights and plan to use (default ./logs)")
    p.add_argument("--ct", default="", help="CT of one study: NIfTI (HU) or a DICOM series folder")
    p.add_argument("--pet", default="", help="PET of that study: NIfTI (SUV) or a DICOM series folder (converted to SUV)")
    p.add_argument("--dataset_root", default="", help="{CT,PET} folder of NIfTI volumes or PNG slices, or a datalist JSON")
    p.add_argument("--split", default="test", help="datalist section to run (test, validation, training, all)")
    p.add_argument("--output_dir", default="./predictions")
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--slice_batch", type=int, default=None, help="slices per forward pass (default: 1 on CPU, 16 on CUDA)")
    p.add_argument("--save_probabilities", action="store_true", help="also write the softmax maps")
    p.add_argument("--features", type=int, nargs=4, default=None, metavar="F",
                   help="the widths of weights without a plan (a run's plan.yaml gives them)")
    p.add_argument("--png_spacing", type=float, nargs=2, default=None, metavar=("X", "Y"),
                   help="pixel size in mm of PNG slices without a spacing.json")
    _add_dicom_flags(p)
    p.add_argument("--dicom_seg", action="store_true",
                   help="DICOM input: also write the label as a DICOM SEG that references the CT series")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other bundle override")
    p.set_defaults(func=_run_infer)


def _add_dicom_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DICOM series", "choosing series and supplying what a PET header lacks")
    g.add_argument("--ct_series", default=None, metavar="UID", help="the CT SeriesInstanceUID where a folder holds several")
    g.add_argument("--pet_series", default=None, metavar="UID", help="the PET SeriesInstanceUID where a folder holds several")
    g.add_argument("--weight_kg", type=float, default=None, help="patient weight (replaces PatientWeight)")
    g.add_argument("--dose_mbq", type=float, default=None, help="injected activity in MBq (replaces RadionuclideTotalDose)")
    g.add_argument("--injection_time", default=None, metavar="HH:MM:SS",
                   help="injection time (replaces the radiopharmaceutical start time)")
    g.add_argument("--suv", default="bw", choices=("bw", "lbm"),
                   help="bw: body-weight SUV (default); lbm: lean-body-mass SUL (Janmahasatian)")
    g.add_argument("--height_m", type=float, default=None, help="SUL: patient height in m (replaces PatientSize)")
    g.add_argument("--sex", default=None, choices=("M", "F"), help="SUL: patient sex (replaces PatientSex)")


def dicom_options(args: argparse.Namespace) -> dict[str, Any]:
    """The DICOM settings (``inference.yaml``'s ``dicom``) of the parsed flags."""
    from .dicom.reader import DICOM_OPTIONS

    return {k: getattr(args, k) for k in DICOM_OPTIONS if getattr(args, k) not in (None, "")}


def infer_checkpoint(args: argparse.Namespace) -> str:
    """The weights ``cocoseg infer`` runs: ``--ckpt``, else ``<run>/models/model.pt``."""
    return args.ckpt or str(Path(args.run) / "models" / "model.pt")


def infer_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Bundle overrides of ``inference.yaml`` for the parsed ``cocoseg infer`` flags.

    The weights' settings come from their plan, which ``inference.yaml`` finds beside them;
    ``--features`` and ``--set`` override (a contradiction of the plan is refused by the bundle).
    """
    if args.slice_batch is not None and args.slice_batch < 1:
        raise SystemExit(f"cocoseg infer: --slice_batch must be >= 1, got {args.slice_batch}")
    overrides = {
        "ckpt_path": infer_checkpoint(args),
        "ct": args.ct,
        "pet": args.pet,
        "dataset_dir": args.dataset_root,
        "datalist_section": args.split,
        "output_dir": args.output_dir,
        "device": _device(args.use_gpu),
        "save_probabilities": args.save_probabilities,
    }
    if args.features is not None:
        overrides["features"] = list(args.features)
    if args.slice_batch is not None:
        overrides["slice_batch"] = args.slice_batch
    if args.png_spacing is not None:
        overrides["png_spacing"] = list(args.png_spacing)
    for key, value in dicom_options(args).items():
        overrides[f"dicom#{key}"] = value
    if args.dicom_seg:
        overrides["dicom_seg"] = True
    overrides.update(_parse_set(args.set, ("inference",)))
    return overrides


def _run_infer(args: argparse.Namespace) -> int:
    from .bundle import config_path, run_bundle

    overrides = infer_overrides(args)  # flags and --set keys first: no file read yet
    _check_run(args.use_gpu, "infer", ckpt=infer_checkpoint(args))
    run_bundle([config_path("inference")], run_id="run", overrides=overrides)
    return 0


def _add_convert_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="DICOM CT and PET series to NIfTI: CT in HU, PET in SUV (QIBA rules)",
        description="Read the CT and/or PET series of a study (folders of DICOM files; both may name one "
        "study folder) and write OUT/ct.nii.gz (HU), OUT/pet.nii.gz (SUV, float32, on the PET's own grid) and "
        "OUT/conversion.json (the SUV factor, every header value used, the decay time, warnings).",
    )
    p.add_argument("--ct", default=None, help="folder holding the CT series")
    p.add_argument("--pet", default=None, help="folder holding the PET series")
    p.add_argument("--out", required=True, help="output folder")
    _add_dicom_flags(p)
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .dicom.convert import convert_study
    from .dicom.reader import reader_args

    options = dicom_options(args)
    pet_args = reader_args(options)["PT"]
    record = convert_study(args.out, args.ct, args.pet, ct_series=args.ct_series, pet_series=args.pet_series,
                           overrides=pet_args["overrides"], kind=pet_args["suv"])
    for key in ("ct", "pet"):
        if key in record:
            r = record[key]
            extra = f", SUV factor {r['suv']['factor']:.6g}" if key == "pet" else ""
            print(f"{key}: {Path(args.out) / r['file']} {r['shape']} at {r['spacing_mm']} mm from "
                  f"{r['slices']} slices of series {r['series_instance_uid']}{extra}")
    for warning in record["warnings"]:
        print(f"warning: {warning}")
    print(f"record: {Path(args.out) / 'conversion.json'}")
    return 0


def _add_plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="write the plan.yaml of a training run made before plans (from its config.json)",
        description="Runs made before plans recorded their settings in config.json only. This writes RUN/plan.yaml "
        "from it: the network widths and options, the CT window and SUV range, the window size, and no target "
        "spacing (such runs trained on each file's own grid).",
    )
    p.add_argument("run", help="the training run's folder (holding config.json)")
    p.add_argument("--force", action="store_true", help="replace an existing plan.yaml")
    p.set_defaults(func=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from .plan import PLAN_FILENAME, plan_from_run_config, write_plan

    if (Path(args.run) / PLAN_FILENAME).is_file() and not args.force:
        raise SystemExit(f"cocoseg plan: {Path(args.run) / PLAN_FILENAME} exists (--force replaces it)")
    path = write_plan(args.run, plan_from_run_config(args.run))
    print(f"wrote {path}")
    return 0


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot-history", help="plot LOGDIR/history.json to LOGDIR/training_curves.png")
    p.add_argument("logdir", help="training output folder holding history.json")
    p.add_argument("--out", default=None, help="output PNG (default LOGDIR/training_curves.png)")
    p.set_defaults(func=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    from .visualize import plot_history

    out = plot_history(Path(args.logdir) / "history.json", args.out)
    print(out)
    return 0


def _add_params_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="print the network's parameter breakdown (and FLOPs per slice)")
    p.add_argument("--features", type=int, nargs=4, default=(32, 64, 128, 256), metavar="F", help="UNet widths L1..L4")
    p.add_argument("--out_channels", type=int, default=2)
    p.add_argument("--share_vgg", action="store_true", help="one shared VGG19 encoder for CT and PET")
    p.add_argument("--trainable_vgg", action="store_true", help="do not freeze the VGG19 encoders")
    p.add_argument("--attention_kernel_size", type=int, default=3, choices=(1, 3, 5))
    p.add_argument("--vgg_weights", default=None, help="local torchvision VGG19 state dict (.pth)")
    p.add_argument("--flops", type=int, default=0, metavar="SIZE", help="also count FLOPs of one SIZExSIZE slice")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_params)


def _run_params(args: argparse.Namespace) -> int:
    import torch

    from .networks import CoCoSegNet, format_breakdown, parameter_breakdown

    net = CoCoSegNet(
        out_channels=args.out_channels,
        features=args.features,
        vgg_weights=args.vgg_weights,
        freeze_vgg=not args.trainable_vgg,
        share_vgg=args.share_vgg,
        attention_kernel_size=args.attention_kernel_size,
    )
    parts = parameter_breakdown(net)
    result: dict = {name: c.as_dict() for name, c in parts.items()}
    if args.flops > 0:
        from torch.utils.flop_counter import FlopCounterMode

        net.eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 2, args.flops, args.flops))
        result["gflop_per_slice"] = {"size": args.flops, "gflop": counter.get_total_flops() / 1e9}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_breakdown(parts))
        if args.flops > 0:
            print(f"forward FLOPs per {args.flops}x{args.flops} slice: {result['gflop_per_slice']['gflop']:.1f} GFLOP")
    return 0


def _add_label_datastore_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label-datastore",
        help="write phantom PET/CT studies as a MONAI Label datastore",
        description="Write phantom PET/CT studies (NIfTI) as a MONAI Label datastore: CTs in OUT, PET "
        "partners in OUT/pet, lesion labels of the first --labelled studies in OUT/labels/final.",
    )
    p.add_argument("out", type=Path, help="the studies folder (created; same-name files overwritten)")
    p.add_argument("--patients", type=int, default=6, help="number of studies (default 6)")
    p.add_argument("--labelled", type=int, default=4, help="how many get a final label (default 4)")
    p.add_argument("--seed", type=int, default=None, help="phantom seed (default: the default data set's)")
    p.add_argument("--size", type=int, default=None, help="CT in-plane pixels (default: the default data set's)")
    p.add_argument("--slices", type=int, default=None, help="axial slices (default: the default data set's)")
    p.set_defaults(func=_run_label_datastore)


def _run_label_datastore(args: argparse.Namespace) -> int:
    from .label.datastore import prepare_datastore

    try:
        prepare_datastore(args.out, args.patients, args.labelled, args.seed, args.size, args.slices, log=print)
    except ValueError as err:
        raise SystemExit(f"cocoseg label-datastore: {err}") from None
    print(f"datastore ready: monailabel start_server --app apps/cocoseg --studies {args.out} --host 127.0.0.1 --conf run logs")
    return 0


def build_parser(train_defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The ``cocoseg`` parser; ``train_defaults`` (from ``--config``) replace the train flags' defaults."""
    parser = argparse.ArgumentParser(prog="cocoseg", description="CoCoSeg-MONAI: CT-PET lesion segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub, train_defaults or {})
    _add_eval_parser(sub)
    _add_infer_parser(sub)
    _add_convert_parser(sub)
    _add_plot_parser(sub)
    _add_label_datastore_parser(sub)
    _add_params_parser(sub)
    _add_plan_parser(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; for ``train``, values of ``--config FILE.json`` become the defaults.

    ``args._explicit`` holds the names of the flags set on the command line or in the file (a
    flag typed with its default value is set all the same).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    file_values: dict[str, Any] = {}
    if argv[:1] == ["train"]:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config", default=None)
        config = pre.parse_known_args(argv[1:])[0].config
        if config:
            file_values = _load_flag_config(config)
    args = build_parser(train_defaults=file_values).parse_args(argv)
    if args.command == "train":
        # parsed again with every default replaced by a marker: a flag that does not hold it was typed
        unset = object()
        typed = build_parser(train_defaults=dict.fromkeys(TRAIN_FLAGS, unset)).parse_args(argv)
        args._explicit = {k for k in TRAIN_FLAGS if getattr(typed, k) is not unset} | set(file_values)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:  # the project's own errors are answered in one line, others in full
        from .errors import project_cause

        cause = project_cause(err)
        if cause is None:
            raise
        raise SystemExit(f"cocoseg {args.command}: {cause}") from None


if __name__ == "__main__":
    sys.exit(main())
