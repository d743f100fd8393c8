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
- ``cocoseg report``: per-lesion SUV and volume, TMTV, TLG and Dmax of a label on its PET.
- ``cocoseg publish RUN``: ship a run's weights and plan with the bundle, its figures in ``metadata.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .evaluate import _add_eval_parser, eval_overrides, run_plan
from .infer import _add_convert_parser, _add_infer_parser, dicom_options, infer_checkpoint, infer_overrides
from .report import _add_report_parser
from .tools import _add_label_datastore_parser, _add_params_parser, _add_plan_parser, _add_plot_parser, _add_publish_parser
from .train import TRAIN_FLAGS, _add_train_parser, _load_flag_config, distributed_command, train_overrides

__all__ = [
    "main", "build_parser", "parse_args", "train_overrides", "eval_overrides", "infer_overrides", "TRAIN_FLAGS",
    "distributed_command", "run_plan", "dicom_options", "infer_checkpoint",
]  # fmt: skip


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
    _add_publish_parser(sub)
    _add_report_parser(sub)
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
        from ..errors import project_cause

        cause = project_cause(err)
        if cause is None:
            raise
        raise SystemExit(f"cocoseg {args.command}: {cause}") from None
