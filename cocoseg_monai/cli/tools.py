"""The smaller ``cocoseg`` subcommands: ``plan`` (the plan.yaml of a run made before plans),
``publish`` (a run's weights, plan and figures into the bundle), ``plot-history``, ``params``
(the network's parameter breakdown) and ``label-datastore``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    from ..plan import PLAN_FILENAME, plan_from_run_config, write_plan

    if (Path(args.run) / PLAN_FILENAME).is_file() and not args.force:
        raise SystemExit(f"cocoseg plan: {Path(args.run) / PLAN_FILENAME} exists (--force replaces it)")
    path = write_plan(args.run, plan_from_run_config(args.run))
    print(f"wrote {path}")
    return 0


def _add_publish_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish",
        help="ship a training run's weights and plan with the bundle, its figures in metadata.json",
        description="Copy RUN/models/model.pt and RUN/plan.yaml into the bundle's models/ folder, list the weights "
        "with their SHA-256 in the bundle's large_files.yml, and write the run's validation figures at its best "
        "epoch into metadata.json's eval_metrics.",
    )
    p.add_argument("run", help="the training run's folder")
    p.add_argument("--bundle", default=None, help="the bundle folder (default: the package's bundle/)")
    p.add_argument("--note", default="", help="where the figures come from (machine, command, date)")
    p.add_argument("--url", default="", help="where a release hosts the weights (default: none yet)")
    p.set_defaults(func=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    from ..bundle import bundle_dir
    from ..release import publish_run

    metrics = publish_run(args.run, args.bundle or bundle_dir(), note=args.note, url=args.url)
    print(json.dumps(metrics, indent=2))
    return 0


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot-history", help="plot LOGDIR/history.json to LOGDIR/training_curves.png")
    p.add_argument("logdir", help="training output folder holding history.json")
    p.add_argument("--out", default=None, help="output PNG (default LOGDIR/training_curves.png)")
    p.set_defaults(func=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    from ..visualize import plot_history

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

    from ..networks import CoCoSegNet, format_breakdown, parameter_breakdown

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
    from ..label.datastore import prepare_datastore

    try:
        prepare_datastore(args.out, args.patients, args.labelled, args.seed, args.size, args.slices, log=print)
    except ValueError as err:
        raise SystemExit(f"cocoseg label-datastore: {err}") from None
    print(f"datastore ready: monailabel start_server --app apps/cocoseg --studies {args.out} --host 127.0.0.1 --conf run logs")
    return 0
