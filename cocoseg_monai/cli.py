"""The ``cocoseg`` command line.

Subcommands:

- ``cocoseg params``: parameter breakdown of the network (total, trainable, frozen, per part)
  and optionally its FLOPs per slice, as the original project's ``measure_model.py`` printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocoseg", description="CoCoSeg-MONAI: CT-PET lesion segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_params_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
