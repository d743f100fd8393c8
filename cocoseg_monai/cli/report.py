"""``cocoseg report``: a PET reader's lesion measurements from a label and its PET (NIfTI files or
DICOM series folders), written as ``lesions.csv``, ``study.json`` and a one-page ``report.png``
(see :mod:`cocoseg_monai.metrics.quantify` and :mod:`cocoseg_monai.metrics.report`)."""

from __future__ import annotations

import argparse
from typing import Any

#: the lesion-definition options of ``cocoseg report`` and ``cocoseg infer --report``
REPORT_OPTIONS = ("connectivity", "min_volume_ml", "merge_mm")


def add_report_options(p: argparse.ArgumentParser) -> None:
    """The flags that define a lesion (shared by ``cocoseg report`` and ``cocoseg infer``)."""
    g = p.add_argument_group("lesion report", "what counts as one lesion")
    g.add_argument("--connectivity", type=int, default=26, choices=(6, 26),
                   help="neighbours that join voxels into one lesion: 26 (faces, edges, corners; default) or 6 (faces)")
    g.add_argument("--min_volume_ml", type=float, default=0.0,
                   help="drop components smaller than this (default 0: TMTV sums every lesion)")
    g.add_argument("--merge_mm", type=float, default=0.0,
                   help="components closer than this many mm are one lesion (default 0: no merging)")
    g.add_argument("--no_page", action="store_true", help="skip the one-page picture (report.png)")


def report_options(args: argparse.Namespace) -> dict[str, Any]:
    """``quantify`` keyword arguments of the parsed flags, checked."""
    for name in ("min_volume_ml", "merge_mm"):
        value = getattr(args, name)
        if not value >= 0:
            raise SystemExit(f"cocoseg {args.command}: --{name} must be >= 0, got {value}")
    return {k: getattr(args, k) for k in REPORT_OPTIONS}


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    from .infer import _add_dicom_flags

    p = sub.add_parser(
        "report",
        help="measure the lesions of a label on its PET: volume, SUVmax/mean/peak, TLG, TMTV, Dmax, and a report page",
        description="Lesions are the 3D connected components of the label on its own grid; SUV is read on the "
        "PET's own grid. Writes OUT/lesions.csv (one row per lesion), OUT/study.json (the study's totals and "
        "the definitions used) and OUT/report.png (coronal PET MIP with the lesions numbered, the three largest "
        "in axial PET/CT, the table), and prints one line per lesion. CT and PET may be DICOM series folders "
        "(converted as cocoseg convert does: CT in HU, PET in SUV).",
    )
    p.add_argument("--pet", required=True, help="PET: NIfTI in SUV on its own grid, or a DICOM series folder")
    p.add_argument("--label", required=True, help="lesion label NIfTI (lesions > 0), on the CT grid")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ct", default=None, help="CT: NIfTI in HU or a DICOM series folder; checks that the label lies "
                   "on its grid and gives the page its PET/CT fusion")
    p.add_argument("--title", default=None, help="the page's first line (default: the label's file name)")
    add_report_options(p)
    _add_dicom_flags(p)
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    import nibabel as nib

    from ..data.discovery import strip_nifti_suffix
    from ..metrics.report import read_study_image, report_study
    from .infer import dicom_options

    options = report_options(args)
    dicom = dicom_options(args)
    ct_img = read_study_image(args.ct, "CT", dicom) if args.ct else None
    pet_img = read_study_image(args.pet, "PT", dicom)
    sources = {"pet": str(args.pet), **({"ct": str(args.ct)} if args.ct else {})}
    title = args.title if args.title is not None else strip_nifti_suffix(Path(args.label).name)
    report = report_study(nib.load(args.label), pet_img, args.out, ct_img=ct_img, title=title, page=not args.no_page,
                          sources=sources, **options)
    for record in report.lesions:
        print(record.summary())
    suvmax = "-" if report.suvmax is None else f"{report.suvmax:.2f} (lesion {report.suvmax_lesion})"
    print(f"{report.lesion_count} lesions, TMTV {report.tmtv_ml:.2f} mL, total TLG {report.total_tlg:.2f}, "
          f"SUVmax {suvmax}, Dmax {report.dmax_mm:.1f} mm, {report.dropped_components} components dropped")
    print(f"wrote {', '.join(str(Path(args.out) / f) for f in ('lesions.csv', 'study.json'))}"
          + ("" if args.no_page else f" and {Path(args.out) / 'report.png'}"))
    return 0
