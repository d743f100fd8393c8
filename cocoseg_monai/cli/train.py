"""``cocoseg train``: the original training flags (``TRAIN_FLAGS``), their bundle overrides of
``train.yaml``, the ``torchrun`` command of ``--nproc N``, and the run."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..settings import default_workers
from .common import _check_run, _device, _parse_set

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
    from ..losses import LOSS_TYPES

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
            from ..errors import DataError

            raise DataError(f"--dataset_root {root} does not exist (give --dataset_root '' for the embedded phantom data)")
        logging.getLogger(__name__).info("%s does not exist: training on the embedded phantom data set", root)
        overrides["dataset_dir"] = ""
    overrides.update(_parse_set(args.set, ("train",)))
    return overrides


def distributed_command(nproc: int, overrides: dict[str, Any], overrides_file: str | Path,
                        workflow: str = "train") -> list[str]:
    """The ``torchrun`` command of ``cocoseg train --nproc N`` (``workflow`` ``"train"``) or
    ``cocoseg infer --nproc N`` (``"inference"``); writes ``overrides`` to ``overrides_file``, the
    last config layer (after ``<workflow>.yaml`` and ``multi_gpu_<workflow>.yaml``)."""
    from ..atomic import atomic_write_json
    from ..bundle import bundle_dir, config_path

    layered = dict(overrides)
    if layered.get("device") == _device(True):
        del layered["device"]  # multi_gpu_train.yaml: cuda:LOCAL_RANK on each rank
    else:
        layered["dist_backend"] = "gloo"  # CPU processes
    atomic_write_json(overrides_file, layered)
    configs = [str(config_path(workflow)), str(config_path(f"multi_gpu_{workflow}")), str(overrides_file)]
    run_id = "training" if workflow == "train" else "run"
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "monai.bundle", "run", run_id, "--meta_file", str(bundle_dir() / "configs" / "metadata.json"),
        "--config_file", json.dumps(configs),
    ]  # fmt: skip


def _run_train(args: argparse.Namespace) -> int:
    from ..bundle import config_path, run_bundle

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
