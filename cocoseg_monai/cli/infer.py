"""``cocoseg infer`` (whole-volume inference through ``inference.yaml``) and ``cocoseg convert`` (DICOM CT
and PET series to NIfTI), with the DICOM flags they share and ``dicom_options``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .common import _add_shared_flags, _check_run, _device, _parse_set
from .report import add_report_options, report_options


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
    p.add_argument("--nproc", type=int, default=1,
                   help="processes (torchrun: one per GPU, or CPU processes with gloo); each takes every N-th study")
    p.add_argument("--redo", action="store_true",
                   help="redo every study (default: skip those whose outputs are complete and were made by the same "
                   "weights and settings)")
    _add_shared_flags(p, "use_gpu")
    p.add_argument("--slice_batch", type=int, default=None, help="slices per forward pass (default: 1 on CPU, 16 on CUDA)")
    p.add_argument("--save_probabilities", action="store_true", help="also write the softmax maps")
    p.add_argument("--tta", action="store_true",
                   help="flip test-time augmentation: logits averaged with the left-right mirrored slices (2x the time)")
    _add_shared_flags(p, "features")
    p.add_argument("--png_spacing", type=float, nargs=2, default=None, metavar=("X", "Y"),
                   help="pixel size in mm of PNG slices without a spacing.json")
    _add_dicom_flags(p)
    p.add_argument("--dicom_seg", action="store_true",
                   help="DICOM input: also write the label as a DICOM SEG that references the CT series")
    p.add_argument("--report", action="store_true",
                   help="also measure each study's lesions: OUTPUT_DIR/<CT name>_report/ (lesions.csv, study.json, "
                   "report.png) and OUTPUT_DIR/cohort.csv (see cocoseg report)")
    add_report_options(p)
    _add_shared_flags(p, "set")
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
    from ..dicom.reader import DICOM_OPTIONS

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
    if args.redo:
        overrides["resume"] = False
    if args.tta:
        overrides["tta_flip"] = True
    if args.report:
        overrides["report"] = True
        overrides.update({f"report_options#{k}": v for k, v in report_options(args).items()})
        overrides["report_options#page"] = not args.no_page
    overrides.update(_parse_set(args.set, ("inference",)))
    return overrides


def _run_infer(args: argparse.Namespace) -> int:
    from ..bundle import config_path, run_bundle

    if args.nproc < 1:
        raise SystemExit(f"cocoseg infer: --nproc must be >= 1, got {args.nproc}")
    overrides = infer_overrides(args)  # flags and --set keys first: no file read yet
    _check_run(args.use_gpu, "infer", ckpt=infer_checkpoint(args))
    if args.nproc == 1:
        run_bundle([config_path("inference")], run_id="run", overrides=overrides)
        return 0
    import subprocess
    import tempfile

    from .train import distributed_command

    with tempfile.TemporaryDirectory(prefix="cocoseg_infer_") as tmp:
        cmd = distributed_command(args.nproc, overrides, Path(tmp) / "overrides.json", workflow="inference")
        logging.getLogger(__name__).info("running %s", " ".join(cmd))
        return subprocess.run(cmd, check=False).returncode


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
    from ..dicom.convert import convert_study
    from ..dicom.reader import reader_args

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
