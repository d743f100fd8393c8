"""``cocoseg report``: a PET reader's lesion measurements from a label and its PET, written as
``lesions.csv`` and ``study.json`` (see :mod:`cocoseg_monai.metrics.quantify`)."""

from __future__ import annotations

import argparse

import numpy as np


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="measure the lesions of a label on its PET: volume, SUVmax/mean/peak, TLG, TMTV, Dmax",
        description="Lesions are the 3D connected components of the label on its own grid; SUV is read on the "
        "PET's own grid. Writes OUT/lesions.csv (one row per lesion) and OUT/study.json (the study's totals and "
        "the definitions used), and prints one line per lesion.",
    )
    p.add_argument("--pet", required=True, help="PET NIfTI in SUV, on its own grid")
    p.add_argument("--label", required=True, help="lesion label NIfTI (lesions > 0), usually on the CT grid")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ct", default=None, help="CT NIfTI: checks that the label lies on the CT grid")
    p.add_argument("--connectivity", type=int, default=26, choices=(6, 26),
                   help="neighbours that join voxels into one lesion (default 26)")
    p.add_argument("--min_volume_ml", type=float, default=0.0, help="drop components smaller than this (default 0)")
    p.set_defaults(func=_run_report)


def _check_on_ct_grid(label_img, label_path: str, ct_path: str) -> None:
    import nibabel as nib

    from ..errors import DataError

    ct_img = nib.load(ct_path)
    same_shape = tuple(label_img.shape[:3]) == tuple(ct_img.shape[:3])
    if not (same_shape and np.allclose(label_img.affine, ct_img.affine, rtol=0, atol=1e-3)):
        raise DataError(f"label {label_path} (shape {tuple(label_img.shape)}) is not on the grid of CT {ct_path} "
                        f"(shape {tuple(ct_img.shape)}): shapes and affines must match within 1e-3")


def _run_report(args: argparse.Namespace) -> int:
    import nibabel as nib

    from ..metrics.quantify import quantify, write_report

    label_img = nib.load(args.label)
    if args.ct:
        _check_on_ct_grid(label_img, args.label, args.ct)
    report = quantify(label_img, nib.load(args.pet), connectivity=args.connectivity, min_volume_ml=args.min_volume_ml)
    csv_path, json_path = write_report(report, args.out)
    for record in report.lesions:
        print(record.summary())
    suvmax = "-" if report.suvmax is None else f"{report.suvmax:.2f} (lesion {report.suvmax_lesion})"
    print(f"{report.lesion_count} lesions, TMTV {report.tmtv_ml:.2f} mL, total TLG {report.total_tlg:.2f}, "
          f"SUVmax {suvmax}, Dmax {report.dmax_mm:.1f} mm, {report.dropped_components} components dropped")
    print(f"wrote {csv_path} and {json_path}")
    return 0
