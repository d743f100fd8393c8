"""The MONAI Label datastore of a DICOMweb server's PET/CT studies (see
:mod:`cocoseg_monai.label.dicomweb`): the CT series are the studies, labels are DICOM SEGs on the
server, and the studies with a SEG marked final (ContentLabel ``FINAL``) are what ``/train``
fine-tunes on.

What the server fetches lives in a local cache (MONAI Label's local datastore layout, so its
endpoints keep working): DICOM series under ``series/``, a study's CT as NIfTI under ``nifti/``
(what ``/datastore/image`` sends a client), training triplets (CT, PET in SUV, label) under
``train/``. Studies are added and removed on the DICOMweb server, not through this server.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from cocoseg_monai.atomic import atomic_write_nifti
from cocoseg_monai.errors import project_cause

from .dicomweb import DicomWebStudies, _value, dicom_uid
from .guard import Refused, check_volume, plain_name, public_text

__all__ = ["CoCoSegDicomWebDatastore"]

logger = logging.getLogger(__name__)

FINAL_TAG = "final"


def _http(refused: Refused) -> HTTPException:
    return HTTPException(status_code=refused.status, detail=refused.detail)


class CoCoSegDicomWebDatastore(LocalDatastore):
    """MONAI Label datastore over :class:`~cocoseg_monai.label.dicomweb.DicomWebStudies`.

    Image ids are CT SeriesInstanceUIDs. A label saved with tag ``final`` (3D Slicer's "Submit
    Label") is checked to lie on its CT's grid and stored on the DICOMweb server as a DICOM SEG
    referencing the CT series, with ContentLabel ``FINAL``; other tags are refused.
    """

    def __init__(self, studies: DicomWebStudies, max_voxels: int) -> None:
        self.studies, self.max_voxels = studies, max_voxels
        studies.cache.mkdir(parents=True, exist_ok=True)
        super().__init__(str(studies.cache), extensions=["*.nii.gz"], auto_reload=False)

    def _ask(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Refused as refused:
            raise _http(refused) from None

    def name(self) -> str:
        return f"DICOMweb {self.studies.url}"

    def description(self) -> str:
        return "CT series of a DICOMweb server, with their PET partners; labels are DICOM SEGs"

    # --- listing --------------------------------------------------------------------------------

    def list_images(self) -> list[str]:
        return self._ask(self.studies.ct_series)

    def get_labeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        if label_tag not in (None, FINAL_TAG):
            return []
        return sorted(self._ask(self.studies.segs, "FINAL"))

    def get_unlabeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        labelled = set(self.get_labeled_images(label_tag))
        return [uid for uid in self.list_images() if uid not in labelled]

    def status(self) -> dict[str, Any]:
        images, labelled = self.list_images(), self.get_labeled_images()
        return {"total": len(images), "completed": len(labelled), "label_tags": {FINAL_TAG: len(labelled)},
                "train": len(labelled)}  # fmt: skip

    def json(self) -> dict[str, Any]:
        labelled = set(self.get_labeled_images())
        return {"name": self.name(), "objects": {uid: {"image": {"id": uid}, "labels": {FINAL_TAG: {}} if uid in labelled
                                                        else {}} for uid in self.list_images()}}  # fmt: skip

    # --- one study ------------------------------------------------------------------------------

    def get_image_uri(self, image_id: str) -> str:
        """The CT series ``image_id`` as NIfTI (HU) in the cache: what a client downloads."""
        uid = self._ask(dicom_uid, image_id, "study id")
        nifti = self.studies.cache / "nifti" / uid / "ct.nii.gz"
        if not nifti.is_file():
            from cocoseg_monai.dicom.convert import convert_study

            folder = self._ask(self.studies.fetch, uid, "CT")
            try:
                convert_study(nifti.parent, ct=folder)
            except Exception as err:
                cause = project_cause(err)
                if cause is None:
                    raise
                raise HTTPException(status_code=422, detail=public_text(f"CT series {uid}: {cause}")) from None
        return str(nifti)

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        record = self._ask(self.studies.series, self._ask(dicom_uid, image_id, "study id"), "CT")
        keys = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription", "Modality", "StudyDate")
        return {k: str(_value(record, k)) for k in keys}

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        uid = self._ask(dicom_uid, label_id, "study id")
        if plain_name(label_tag, "label tag") != FINAL_TAG:
            return ""
        segs = self._ask(self.studies.segs, "FINAL")
        return self._training_item(uid, *segs[uid])["label"] if uid in segs else ""

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        return {}

    # --- labels ---------------------------------------------------------------------------------

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   label_id: str = "") -> str:
        """Store the label ``label_filename`` (NIfTI on the CT grid) as a SEG on the DICOMweb
        server; returns the SEG's SeriesInstanceUID."""
        import nibabel as nib

        from cocoseg_monai.dicom.seg import FINAL_CONTENT_LABEL, write_seg
        from cocoseg_monai.dicom.series import read_series

        try:
            uid = dicom_uid(image_id, "study id")
            if plain_name(label_tag, "label tag") != FINAL_TAG:
                raise Refused(422, f"label tag {label_tag!r}: a DICOMweb datastore keeps final labels only (tag 'final')")
            check_volume(label_filename, f"label of {uid}", self.max_voxels)
            ct = read_series(self.studies.fetch(uid, "CT"), "CT")
            label = _on_series_grid(nib.load(label_filename), ct, f"label of {uid}")
            with tempfile.TemporaryDirectory(prefix="cocoseg_seg_") as tmp:
                seg = write_seg(label, ct.headers, Path(tmp) / "seg.dcm", manual=True, content_label=FINAL_CONTENT_LABEL,
                                series_description="CoCoSeg lesions (final)")
                seg_uid = self.studies.store(seg)
        except Refused as refused:
            raise _http(refused) from None
        shutil.rmtree(self.studies.cache / "train" / uid, ignore_errors=True)  # a newer label for training
        return seg_uid

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        Path(image_filename).unlink(missing_ok=True)
        raise HTTPException(status_code=405, detail="studies are added on the DICOMweb server, not through this server")

    def remove_image(self, image_id: str) -> None:
        raise HTTPException(status_code=405, detail="studies are removed on the DICOMweb server, not through this server")

    def remove_label(self, label_id: str, label_tag: str) -> None:
        raise HTTPException(status_code=405, detail="labels (SEGs) are removed on the DICOMweb server, not through this server")

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        raise HTTPException(status_code=405, detail="study information is kept on the DICOMweb server")

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        raise HTTPException(status_code=405, detail="label information is kept on the DICOMweb server")

    # --- training -------------------------------------------------------------------------------

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """The studies with a final SEG as NIfTI triplets ``{"image", "pet", "label", "patient"}``
        (CT in HU, PET in SUV on its own grid, label on the CT grid). A study that cannot be
        converted (no PET partner, no SUV information) is left out with a warning."""
        items = []
        for uid, (study, seg_uid) in sorted(self._ask(self.studies.segs, "FINAL").items()):  # one listing for all
            try:
                items.append(self._training_item(uid, study, seg_uid))
            except HTTPException as err:
                logger.warning("left out of training: CT series %s: %s", uid, err.detail)
        return items

    def _training_item(self, ct_uid: str, study: str, seg_uid: str) -> dict[str, Any]:
        """CT series ``ct_uid`` with its final SEG ``seg_uid`` as a NIfTI triplet in the cache
        (converted once per SEG)."""
        from cocoseg_monai.dicom.convert import convert_study
        from cocoseg_monai.dicom.seg import read_seg
        from cocoseg_monai.dicom.series import read_series

        folder = self.studies.cache / "train" / ct_uid
        item = {"image": str(folder / "ct.nii.gz"), "pet": str(folder / "pet.nii.gz"),
                "label": str(folder / "label.nii.gz")}  # fmt: skip
        record = folder / f"{seg_uid}.done"
        if not record.is_file():
            ct_folder = self._ask(self.studies.fetch, ct_uid, "CT")
            pet_folder = self._ask(self.studies.fetch, self._ask(self.studies.pet_partner, ct_uid), "PT")
            seg_file = self._ask(self.studies.fetch_seg, study, seg_uid)
            try:
                ct = read_series(ct_folder, "CT")
                label = read_seg(seg_file, ct.headers)
                shutil.rmtree(folder, ignore_errors=True)
                convert_study(folder, ct=ct_folder, pet=pet_folder)
                atomic_write_nifti(folder / "label.nii.gz", label.astype(np.uint8), ct.affine)
            except Exception as err:
                cause = project_cause(err)
                if cause is None:
                    raise
                raise HTTPException(status_code=422, detail=public_text(f"CT series {ct_uid}: {cause}")) from None
            record.write_text(seg_uid)
        patient = str(_value(self._ask(self.studies.series, ct_uid, "CT"), "PatientID"))
        return {**item, "patient": patient or ct_uid}


def _on_series_grid(img: Any, series: Any, role: str) -> np.ndarray:
    """The label image ``img`` as an array on the CT series' voxel grid (its axes in the series'
    order, reoriented if stored otherwise); :class:`Refused` (422) unless its voxels coincide
    with the series' in the world within 1e-3 mm."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise Refused(422, f"{role}: a 3D volume is needed, got shape {list(data.shape)}")
    transform = ornt_transform(io_orientation(img.affine), io_orientation(series.affine))
    array = apply_orientation(data, transform)
    affine = np.asarray(img.affine) @ inv_ornt_aff(transform, data.shape)
    if array.shape != tuple(series.array.shape) or not np.allclose(affine, series.affine, rtol=0, atol=1e-3):
        raise Refused(422, f"{role}: not on its CT's grid (label {list(array.shape)}, CT {list(series.array.shape)}); "
                           "save the label on the CT it was drawn on")
    return (array > 0).astype(np.uint8)
