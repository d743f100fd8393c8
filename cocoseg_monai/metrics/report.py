"""Lesion reports as files: a study's ``lesions.csv``, ``study.json`` and one-page ``report.png``
(:func:`report_study`), a cohort's ``cohort.csv`` (:func:`write_cohort`), and the inference
postprocessing step that writes them for every study segmented (:class:`LesionReportd`).

The measurements are :func:`~cocoseg_monai.metrics.quantify.quantify`'s; the page is
:func:`~cocoseg_monai.visualize.report_page.save_report_page`'s. CT and PET come as NIfTI files
(CT in HU, PET in SUV) or DICOM series folders, converted as ``cocoseg convert`` converts them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..atomic import atomic_write
from ..conventions import PET_SOURCE_KEY
from ..errors import DataError
from .quantify import StudyReport, csv_number, quantify, write_report

__all__ = [
    "COHORT_COLUMNS",
    "LesionReportd",
    "check_on_grid",
    "read_study_image",
    "report_study",
    "write_cohort",
]

#: ``cohort.csv``: one row per study
COHORT_COLUMNS = ("study", "lesion_count", "tmtv_ml", "total_tlg", "suvmax", "suvmax_lesion", "dmax_mm",
                  "dropped_components", "dropped_volume_ml", "report")  # fmt: skip
#: the files of one study's report folder
REPORT_FILES = ("lesions.csv", "study.json", "report.png")


def read_study_image(path: str | os.PathLike, modality: str, dicom: Mapping[str, Any] | None = None) -> Any:
    """The CT (``modality`` ``"CT"``, HU) or PET (``"PT"``, SUV) of a study as a nibabel image:
    a NIfTI file as stored, or a DICOM series folder read and converted by
    :mod:`cocoseg_monai.dicom` with the DICOM settings ``dicom`` (``inference.yaml``'s)."""
    import nibabel as nib

    if not Path(path).is_dir():
        if not Path(path).is_file():
            raise DataError(f"{modality} {path} does not exist")
        return nib.load(str(path))
    from ..dicom.convert import read_ct, read_pet_suv
    from ..dicom.reader import reader_args

    args = reader_args(dicom)
    if modality == "CT":
        volume = read_ct(path, args["CT"]["series_uid"])
    else:
        pet = args["PT"]
        volume, _ = read_pet_suv(path, pet["series_uid"], pet["overrides"], pet["suv"])
    return nib.Nifti1Image(volume.array, volume.affine)


def check_on_grid(label_img: Any, ct_img: Any, label_name: str, ct_name: str) -> None:
    """:class:`DataError` unless the label lies on the CT's grid: the same voxels in the world
    (shapes and affines within 1e-3 mm once both are in their closest RAS+ orientation, so a
    label stored with its axes in another order or direction is accepted)."""
    (label_shape, label_affine), (ct_shape, ct_affine) = _canonical_grid(label_img), _canonical_grid(ct_img)
    if label_shape != ct_shape or not np.allclose(label_affine, ct_affine, rtol=0, atol=1e-3):
        raise DataError(f"label {label_name} (shape {tuple(label_img.shape)}) is not on the grid of CT {ct_name} "
                        f"(shape {tuple(ct_img.shape)}): their voxels must coincide in the world within 1e-3 mm")


def _canonical_grid(img: Any) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of ``img``'s grid in its closest RAS+ orientation (as
    ``nibabel.as_closest_canonical`` would give them, without touching the data)."""
    from nibabel.orientations import inv_ornt_aff, io_orientation

    shape = tuple(int(n) for n in img.shape[:3])
    ornt = io_orientation(img.affine)
    canonical = [0, 0, 0]
    for axis, (to, _) in enumerate(ornt):
        canonical[int(to)] = shape[axis]
    return tuple(canonical), np.asarray(img.affine) @ inv_ornt_aff(ornt, shape)


def report_study(label_img: Any, pet_img: Any, out_dir: str | os.PathLike, *, ct_img: Any = None, title: str = "",
                 page: bool = True, sources: Mapping[str, str] | None = None, **options: Any) -> StudyReport:
    """Measure a study and write its report folder: ``lesions.csv``, ``study.json`` and, with
    ``page``, ``report.png``.

    Args:
        label_img, pet_img, ct_img: nibabel images (label on the CT grid, PET in SUV on its own grid,
            CT in HU; without a CT the page shows PET alone and the label's grid is not checked).
        title: the page's first line.
        sources: where the images came from, recorded in ``study.json`` (keys ``label``, ``pet``,
            ``ct``) where the images do not name a file themselves (DICOM series, a label in memory).
        options: :func:`~cocoseg_monai.metrics.quantify.quantify`'s ``connectivity``,
            ``min_volume_ml`` and ``merge_mm``.
    """
    if ct_img is not None:
        check_on_grid(label_img, ct_img, _name(label_img) or "(in memory)", _name(ct_img) or "(in memory)")
    report = quantify(label_img, pet_img, **options)
    sources = dict(sources or {})
    report.label_file = sources.get("label", report.label_file)
    report.pet_file = sources.get("pet", report.pet_file)
    report.ct_file = sources.get("ct", None if ct_img is None else _name(ct_img))
    write_report(report, out_dir)
    if page:
        from ..visualize.report_page import save_report_page

        save_report_page(report, pet_img, Path(out_dir) / "report.png", ct_img=ct_img, title=title)
    return report


def _name(img: Any) -> str | None:
    name = img.get_filename() if hasattr(img, "get_filename") else None
    return str(name) if name else None


def cohort_row(study: str, summary: Mapping[str, Any], folder: str) -> list[Any]:
    """A study's ``study.json`` (``summary``) as a row under :data:`COHORT_COLUMNS` (figures to 6
    significant digits)."""
    lesion = summary.get("suvmax_lesion")
    return [study, summary["lesion_count"], csv_number(summary["tmtv_ml"]), csv_number(summary["total_tlg"]),
            csv_number(summary.get("suvmax")), "" if lesion is None else lesion, csv_number(summary["dmax_mm"]),
            summary["dropped_components"], csv_number(summary["dropped_volume_ml"]), folder]


def write_cohort(output_dir: str | os.PathLike) -> Path:
    """Write ``<output_dir>/cohort.csv`` atomically: a header, then one row per report folder
    (``<study>_report/study.json``) in ``output_dir``, in name order; so a resumed or sharded run
    lists every study measured there."""
    out = Path(output_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COHORT_COLUMNS)
    for path in sorted(out.glob("*_report/study.json")):
        folder = path.parent.name
        writer.writerow(cohort_row(folder[: -len("_report")], json.loads(path.read_text()), folder))
    with atomic_write(out / "cohort.csv", "w") as f:
        f.write(buffer.getvalue())
    return out / "cohort.csv"


def _ras_affine(meta: Mapping[str, Any]) -> np.ndarray:
    """The RAS+ affine of a MONAI meta dict (converted when its ``space`` is LPS)."""
    from monai.data.utils import orientation_ras_lps
    from monai.utils import MetaKeys, SpaceKeys

    affine = np.asarray(meta[MetaKeys.AFFINE], dtype=np.float64)
    if str(meta.get(MetaKeys.SPACE, SpaceKeys.RAS)) == str(SpaceKeys.LPS):
        affine = np.asarray(orientation_ras_lps(affine))
    return affine


class LesionReportd(MapTransform):
    """Inference postprocessing: measure each ``key`` label (``[1, x, y, z]`` on the CT file's
    grid, after ``Invertd`` and the argmax) on its study's PET and write
    ``<output_dir>/<CT name>_report/`` (``lesions.csv``, ``study.json``, ``report.png``) and
    ``<output_dir>/cohort.csv``, a row per report folder there, rewritten after each study.

    The CT is found from the label's meta (``filename_or_obj``) and the PET from
    ``data[pet_key]`` (the PET path the inference transforms keep); both are read again on their
    own grids (DICOM folders through the DICOM settings ``dicom``), so SUV is read on the PET
    grid as the scanner made it, never the resampled PET the network saw. ``study.json`` names
    the label as ``SaveImaged`` names it with ``label_postfix``.

    Raises:
        DataError: the label is not a 3D volume (PNG slices have no study to measure), or the
            PET path is missing.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | os.PathLike, pet_key: str = PET_SOURCE_KEY,
                 dicom: Mapping[str, Any] | None = None, connectivity: int = 26, min_volume_ml: float = 0.0,
                 merge_mm: float = 0.0, page: bool = True, label_postfix: str = "seg", label_ext: str = ".nii.gz",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.pet_key, self.dicom, self.page = Path(output_dir), pet_key, dict(dicom or {}), page
        self.label_postfix, self.label_ext = label_postfix, label_ext
        self.options = {"connectivity": int(connectivity), "min_volume_ml": float(min_volume_ml),
                        "merge_mm": float(merge_mm)}  # fmt: skip

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import nibabel as nib
        from monai.data.utils import create_file_basename

        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            meta = getattr(label, "meta", {})
            source, pet_source = meta.get("filename_or_obj"), d.get(self.pet_key)
            array = np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
            if array.ndim != 4 or not source:
                raise DataError(f"key {key!r}: a lesion report needs a 3D study (CT volume or DICOM series), got an "
                                f"array of shape {array.shape} from {source!r}")
            if not pet_source:
                raise DataError(f"key {key!r}: no PET path under {self.pet_key!r} to measure {source} on")
            ct_img = read_study_image(source, "CT", self.dicom)
            pet_img = read_study_image(pet_source, "PT", self.dicom)
            label_img = nib.Nifti1Image((array[0] > 0).astype(np.uint8), _ras_affine(meta))
            check_on_grid(label_img, ct_img, f"predicted for {source}", str(source))
            study = Path(create_file_basename("", str(source), self.output_dir, separate_folder=False)).name
            label_file = create_file_basename(self.label_postfix, str(source), self.output_dir, separate_folder=False)
            folder = self.output_dir / f"{study}_report"
            report_study(label_img, pet_img, folder, ct_img=ct_img, title=study, page=self.page,
                                  sources={"label": label_file + self.label_ext, "pet": str(pet_source),
                                           "ct": str(source)}, **self.options)
            write_cohort(self.output_dir)
            d[f"{key}_report"] = str(folder)
        return d
