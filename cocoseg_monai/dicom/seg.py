"""The lesion label as a DICOM Segmentation (highdicom) that references the CT series it was
drawn on, so that viewers (3D Slicer, OHIF) and PACS take it back beside the study.

The SEG is binary, with one segment: label "lesion", category Morphologically Abnormal
Structure (SCT 49755003), type Lesion (SCT 52988006), algorithm type AUTOMATIC with the
algorithm's name, version and family (Artificial Intelligence, DCM 123110), or MANUAL for a label
a reader approved. Each frame references the CT image it lies on; frames without lesion are left
out, as the standard allows. The SEG's ContentLabel says what it is: ``COCOSEG`` for the
network's label, ``FINAL`` for a label approved for training (what the MONAI Label app trains on).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from cocoseg_monai.atomic import atomic_write
from cocoseg_monai.errors import DicomError

__all__ = ["ALGORITHM_NAME", "AUTOMATIC_CONTENT_LABEL", "FINAL_CONTENT_LABEL", "write_seg", "read_seg",
           "SaveDicomSegd"]

ALGORITHM_NAME = "CoCoSeg V2"
#: ContentLabel of the network's SEG, and of a SEG approved for training
AUTOMATIC_CONTENT_LABEL, FINAL_CONTENT_LABEL = "COCOSEG", "FINAL"


def _frames(label: np.ndarray, headers: Sequence[Any]) -> np.ndarray:
    """``(x, y, z)`` label -> ``(z, rows, columns)`` frames, one per CT slice in slice order."""
    label = np.asarray(label)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if label.shape != (cols, rows, len(headers)):
        raise DicomError(f"label of shape {label.shape} does not lie on the CT series "
                         f"({cols} columns x {rows} rows x {len(headers)} slices)")
    return np.ascontiguousarray(np.transpose(label, (2, 1, 0)) > 0)


def write_seg(label: np.ndarray, headers: Sequence[Any], path: str | os.PathLike, *,
              series_number: int = 9001, series_description: str = "CoCoSeg lesions",
              algorithm_version: str | None = None, manual: bool = False,
              content_label: str = AUTOMATIC_CONTENT_LABEL) -> Path:
    """Write ``label`` (``(x, y, z)`` on the CT grid, slices in the CT series' order; nonzero is
    lesion) as a binary DICOM SEG referencing the CT images ``headers`` (pydicom datasets in slice
    order, as :func:`~cocoseg_monai.dicom.series.load_series` returns them). Written atomically.

    ``manual``: the segment's algorithm type is MANUAL (a reader's label), without algorithm
    identification; else AUTOMATIC, by this network. ``content_label``: the SEG's ContentLabel
    (a DICOM code string: capitals, digits, ``_``, at most 16).

    Returns the path written.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from cocoseg_monai import __version__

    version = algorithm_version or __version__
    frames = _frames(label, headers)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, version=version, family=codes.cid7162.ArtificialIntelligence
    )
    kind = hd.seg.SegmentAlgorithmTypeValues
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=kind.MANUAL if manual else kind.AUTOMATIC,
        algorithm_identification=None if manual else algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=list(headers),
        pixel_array=frames.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="CoCoSeg-MONAI",
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=version,
        device_serial_number="none",
        series_description=series_description,
        content_label=content_label,
    )
    out = Path(path)
    with atomic_write(out, "wb") as f:
        seg.save_as(f)
    return out


def read_seg(path: str | os.PathLike, headers: Sequence[Any]) -> np.ndarray:
    """The lesion segment of the SEG at ``path`` as a uint8 ``(x, y, z)`` label on the CT series
    ``headers`` (slice order), empty where the SEG has no frame for a CT image.

    Raises
    ------
    DicomError
        The file is not a SEG, or references images outside the CT series.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as e:
        raise DicomError(f"{path}: not a readable DICOM Segmentation: {e}") from e
    uids = [str(ds.SOPInstanceUID) for ds in headers]
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    stray = sorted(referenced - set(uids))
    if stray:
        raise DicomError(f"{path}: references {len(stray)} image(s) outside the CT series, e.g. {stray[0]}")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], assert_missing_frames_are_empty=True,
    )
    return np.ascontiguousarray(np.transpose(pixels[..., 0], (2, 1, 0))).astype(np.uint8)


class SaveDicomSegd(MapTransform):
    """Postprocessing: write each ``key`` label (``[1, x, y, z]`` on the CT grid, after
    ``Invertd``) as a DICOM SEG beside the NIfTI label, named as MONAI's ``SaveImage`` names it
    (``<output_dir>/<CT folder name>_<postfix>.dcm``).

    The CT series is found again from the label's meta (``filename_or_obj``, the CT folder, and
    ``series_instance_uid``) and read in the same slice order as for inference.

    Raises
    ------
    DicomError
        The label does not come from a DICOM CT series.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | os.PathLike, output_postfix: str = "seg",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.output_postfix = Path(output_dir), output_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data.utils import create_file_basename

        from .series import find_series, load_series, select_series

        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {})
            source, uid = meta.get("filename_or_obj"), meta.get("series_instance_uid")
            if not source or not Path(str(source)).is_dir() or not uid:
                raise DicomError(f"key {key!r}: a DICOM SEG needs a CT read from a DICOM series folder, "
                                 f"this label comes from {source!r}")
            ct = load_series(select_series(find_series(source), "CT", str(uid), where=str(source)))
            label = d[key].detach().cpu().numpy() if hasattr(d[key], "detach") else np.asarray(d[key])
            stem = create_file_basename(self.output_postfix, str(source), self.output_dir, separate_folder=False)
            write_seg(label, ct.headers, f"{stem}.dcm")
        return d
