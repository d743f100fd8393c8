"""``python -m cocoseg_monai.bench {accuracy,speed,data,profile,inference}``: print a table, write JSON.

- ``accuracy``: CoCoSeg, its efficient preset, MONAI BasicUNet and SegResNet trained alike
  through the bundle and scored on the test split, with the SUV-threshold baselines.
- ``speed``: GFLOP per slice, inference and training rates, volume time, peak memory, and the
  share of the machine's measured matrix-multiply peak.
- ``data``: loader throughput with and without caching, next to the training step rate.
- ``profile``: where one forward pass or training step spends its time (``--onednn``: and oneDNN's).
- ``inference``: the volume inference benchmark (``python -m cocoseg_monai.bench.inference``).
- ``resolution``: a trained run's Dice and seconds per study on unseen phantom studies of other
  grids (128, 256, 512 pixels; a 350 mm field of view), before and after its plan's spacing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import write_result
from .models import BENCH_MODELS


def _models(text: str) -> list[str]:
    names = [m for m in text.split(",") if m]
    unknown = [m for m in names if m not in BENCH_MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}; choose from {','.join(BENCH_MODELS)}")
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cocoseg_monai.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)
    all_models = ",".join(BENCH_MODELS)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"

    a = sub.add_parser("accuracy", help="train and score CoCoSeg, the peers and the SUV baselines")
    a.add_argument("--budget", default="gpu" if torch.cuda.is_available() else "cpu", choices=("toy", "cpu", "gpu"),
                   help="data, widths and epochs: toy (seconds), cpu (~30 min on 2 cores), gpu (to convergence)")
    a.add_argument("--models", type=_models, default=_models(all_models), help=f"comma-separated ({all_models})")
    a.add_argument("--out", default="./bench_runs/accuracy", help="training runs and accuracy.json")
    a.add_argument("--epochs", type=int, default=None, help="override the budget's epochs")

    s = sub.add_parser("speed", help="FLOPs, inference and training rates against the matmul peak")
    s.add_argument("--models", type=_models, default=_models(all_models), help=f"comma-separated ({all_models})")
    s.add_argument("--device", default=default_device)
    s.add_argument("--size", type=int, default=512, help="inference slice size (default 512)")
    s.add_argument("--infer_batch", type=int, default=1, help="slices per inference batch")
    s.add_argument("--train_patch", type=int, default=128)
    s.add_argument("--train_batch", type=int, default=8)
    s.add_argument("--volume_slices", type=int, default=8, help="slices of the timed volume (0: skip)")
    s.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU (float16 AMP on CUDA)")
    s.add_argument("--matmul_n", type=int, default=2048)
    s.add_argument("--min_seconds", type=float, default=3.0, help="time each measurement at least this long")
    s.add_argument("--channels_last", default="auto", choices=("auto", "on", "off"),
                   help="the network's memory format, inference and training: auto (the bundle's choice, "
                   "cocoseg_monai.networks.prefers_channels_last), on (channels_last) or off (NCHW)")
    s.add_argument("--keep_freed_memory", default="on", choices=("on", "off"),
                   help="on the CPU, glibc keeps freed blocks for reuse, as the bundles do (cocoseg_monai.allocator)")
    s.add_argument("--compile", action="store_true", help="inference through torch.compile")
    s.add_argument("--no_grad", action="store_true", help="torch.no_grad (as MONAI evaluators) instead of inference_mode")
    s.add_argument("--toy", action="store_true", help="tiny widths (tests)")
    s.add_argument("--features", type=int, nargs=4, default=None, metavar="F",
                   help="CoCoSeg widths (e.g. the main job's 16 32 64 128)")
    s.add_argument("--json", default=None)

    d = sub.add_parser("data", help="loader throughput with and without caching")
    d.add_argument("--dataset_dir", default="", help="default: the embedded phantom data set")
    d.add_argument("--patch_size", type=int, default=128)
    d.add_argument("--num_samples", type=int, default=1)
    d.add_argument("--batch_size", type=int, default=8)
    d.add_argument("--num_workers", type=int, default=2)
    d.add_argument("--max_batches", type=int, default=40)
    d.add_argument("--model", default="cocoseg", help="the model whose training step is compared ('' for none)")
    d.add_argument("--bf16", action="store_true")
    d.add_argument("--toy", action="store_true")
    d.add_argument("--json", default=None)

    f = sub.add_parser("profile", help="top operators of one forward pass or training step")
    f.add_argument("--model", default="cocoseg", choices=list(BENCH_MODELS))
    f.add_argument("--size", type=int, default=512, help="slice size (with --train: patch size)")
    f.add_argument("--device", default=default_device)
    f.add_argument("--bf16", action="store_true")
    f.add_argument("--toy", action="store_true")
    f.add_argument("--rows", type=int, default=12)
    f.add_argument("--train", action="store_true", help="a training step (forward, backward, AdamW) instead")
    f.add_argument("--batch", type=int, default=8, help="patches per training step")
    f.add_argument("--features", type=int, nargs=4, default=None, metavar="F", help="CoCoSeg widths")
    f.add_argument("--channels_last", default="auto", choices=("auto", "on", "off"))
    f.add_argument("--keep_freed_memory", default="on", choices=("on", "off"))
    f.add_argument("--onednn", action="store_true",
                   help="also oneDNN's time per primitive: convolutions by direction, reorders between layouts")

    sub.add_parser("inference", help="volume inference benchmark (its own flags; see --help there)", add_help=False)
    sub.add_parser("resolution", help="a run's Dice and speed on other grids, before and after its plan "
                   "(its own flags; see --help there)", add_help=False)  # fmt: skip
    sub.add_parser("nema", help="the NEMA IEC body phantom: every sphere found, Dice against SUV thresholds, false "
                   "positives (its own flags; see --help there)", add_help=False)  # fmt: skip
    sub.add_parser("endtoend", help="a study from files to label: CoCoSeg's inference.yaml against MONAI's whole-body "
                   "CT SegResNet bundle configuration (its own flags; see --help there)", add_help=False)  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["inference"]:
        from .inference import main as inference_main

        return inference_main(argv[1:])
    if argv[:1] == ["resolution"]:
        from .resolution import main as resolution_main

        return resolution_main(argv[1:])
    if argv[:1] == ["endtoend"]:
        from .endtoend import main as endtoend_main

        return endtoend_main(argv[1:])
    if argv[:1] == ["nema"]:
        from .nema import main as nema_main

        return nema_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.bench == "accuracy":
        from .accuracy import format_accuracy, run_accuracy

        overrides = {"max_epochs": args.epochs} if args.epochs else None
        result = run_accuracy(args.out, args.models, args.budget, overrides)
        print(format_accuracy(result))
        print(f"\nwritten: {Path(args.out) / 'accuracy.json'}")
    elif args.bench == "speed":
        from .speed import format_speed, run_speed

        settings = {k: getattr(args, k) for k in ("device", "size", "infer_batch", "train_patch", "train_batch",
                                                    "volume_slices", "bf16", "matmul_n", "min_seconds", "toy",
                                                    "channels_last", "keep_freed_memory", "compile", "no_grad", "features")}  # fmt: skip
        result = run_speed(args.models, settings)
        print(format_speed(result))
        write_result(args.json, result)
    elif args.bench == "data":
        from .data import format_data, run_data

        result = run_data(args.dataset_dir, args.patch_size, args.num_samples, args.batch_size, args.num_workers,
                          args.max_batches, args.model or None, args.bf16, args.toy)  # fmt: skip
        print(format_data(result))
        write_result(args.json, result)
    else:
        from .speed import profile_model

        print(profile_model(args.model, args.size, args.device, args.bf16, args.toy, args.rows, train=args.train,
                            batch=args.batch, features=args.features, channels_last=args.channels_last,
                            keep_freed_memory=args.keep_freed_memory == "on", onednn=args.onednn))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
