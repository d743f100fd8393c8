"""The MONAI Label tasks of the CoCoSeg app: its datastore, inference and fine-tuning.

:class:`CoCoSegDatastore` takes plain names only and checks every file before it is stored;
:class:`CoCoSegInferTask` runs the bundle's ``configs/inference.yaml`` on a study (or an uploaded
CT) with its PET partner; :class:`CoCoSegTrainTask` fine-tunes the served weights with the bundle's
``configs/train.yaml`` and serves the run's best weights. What they share comes from
:mod:`cocoseg_monai.label.serving`; :mod:`cocoseg_monai.label.app` puts them behind the server.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask

from cocoseg_monai.bundle import run_bundle
from cocoseg_monai.data.datalist import split_by_patient, write_datalist
from cocoseg_monai.data.discovery import strip_nifti_suffix
from cocoseg_monai.errors import DataError, error_chain, project_cause

from .datastore import pet_partner
from .guard import NIFTI_SUFFIXES, Refused, check_train_request, check_volume, plain_name, public_text, volume_suffix
from .serving import LABELS, MODEL_NAME, TRAIN_DEFAULTS, _remove, _Serving

__all__ = ["CoCoSegDatastore", "CoCoSegInferTask", "CoCoSegTrainTask", "run_bundle_workflow"]

logger = logging.getLogger(__name__)

#: label files a client may save (3D Slicer saves NIfTI, or NRRD when asked); NRRD is stored as NIfTI
LABEL_SUFFIXES = (*NIFTI_SUFFIXES, ".seg.nrrd", ".nrrd")


def _refusal(refused: Refused) -> HTTPException:
    return HTTPException(status_code=refused.status, detail=refused.detail)


def run_bundle_workflow(config: str, bundle: Path, overrides: Mapping[str, Any]) -> None:
    """Run the ``run`` workflow of the bundle's ``configs/<config>.yaml`` with ``overrides``,
    leaving the server's logging as it is."""
    run_bundle([bundle / "configs" / f"{config}.yaml"], "run", {"bundle_root": str(bundle), **overrides},
               bundle=bundle, configure_logging=False)


def _http_error(error: Exception, what: str, folders: Mapping[str, Path]) -> HTTPException:
    """The HTTP error for a failed workflow: 422 for data the pipeline refuses, with its reason;
    server paths in the message become names (see :func:`~cocoseg_monai.label.guard.public_text`)."""
    cause = project_cause(error)
    if cause is not None:
        return HTTPException(status_code=422, detail=public_text(f"{what}: {cause}", folders))
    root = error_chain(error)[-1]
    return HTTPException(status_code=500, detail=public_text(f"{what} failed: {type(root).__name__}: {root}", folders))


class CoCoSegDatastore(LocalDatastore):
    """MONAI Label's local datastore that takes plain names only and checks files before storing.

    Every image id and label tag that reaches it (from any endpoint: read, write, info, delete)
    must be a plain name (:func:`~cocoseg_monai.label.guard.plain_name`), so nothing outside the
    studies folder can be named. An uploaded image must be a NIfTI volume within the server's
    voxel limit, read from its header, and may not replace an existing study. A label must
    belong to a study, be NIfTI or NRRD (stored as NIfTI) and lie on its CT's grid (same size).
    Refused uploads are removed at once. Answers name studies by id, never by server path.
    """

    def __init__(self, serving: _Serving, **kwargs: Any) -> None:
        self.serving = serving
        super().__init__(str(serving.studies), extensions=[f"*{s}" for s in NIFTI_SUFFIXES], **kwargs)

    def _name(self, value: Any, what: str) -> str:
        try:
            return plain_name(value, what)
        except Refused as refused:
            raise _refusal(refused) from None

    def _study(self, image_id: str) -> Path:
        uri = super().get_image_uri(self._name(image_id, "study id"))
        if not uri:
            raise HTTPException(status_code=404, detail=f"no study {image_id!r} in the datastore")
        return Path(uri)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            suffix = volume_suffix(Path(image_filename).name, "uploaded image")
            image_id = plain_name(image_id or Path(image_filename).name[: -len(suffix)], "study id")
            if super().get_image_uri(image_id):
                raise Refused(409, f"study {image_id!r} exists; the server does not replace studies")
            check_volume(image_filename, f"image {image_id}", self.serving.max_voxels)
        except Refused as refused:
            _remove(image_filename)
            raise _refusal(refused) from None
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        stored = label_filename
        try:
            image_id = plain_name(image_id, "study id")
            label_tag = plain_name(label_tag, "label tag")
            study = super().get_image_uri(image_id)
            if not study:
                raise Refused(404, f"no study {image_id!r} in the datastore")
            role = f"label of {image_id} ({label_tag})"
            suffix = volume_suffix(Path(label_filename).name, role, LABEL_SUFFIXES)
            shape = check_volume(label_filename, role, self.serving.max_voxels)
            ct_shape = check_volume(study, f"CT of {image_id}", self.serving.max_voxels)
            if shape != ct_shape:
                raise Refused(422, f"{role}: size {list(shape)} differs from its CT's {list(ct_shape)}")
            if suffix.lower() not in NIFTI_SUFFIXES:
                stored = _nrrd_to_nifti(label_filename)
        except Refused as refused:
            _remove(label_filename, stored if stored != label_filename else None)
            raise _refusal(refused) from None
        try:
            return super().save_label(image_id, stored, label_tag, label_info)
        finally:
            if stored != label_filename:
                _remove(stored)

    def remove_image(self, image_id: str) -> None:
        self._study(image_id)
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        super().remove_label(self._name(label_id, "study id"), self._name(label_tag, "label tag"))

    def get_image_uri(self, image_id: str) -> str:
        return super().get_image_uri(self._name(image_id, "study id"))

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        return super().get_label_uri(self._name(label_id, "study id"), self._name(label_tag, "label tag"))

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        info = super().get_image_info(self._name(image_id, "study id"))
        info.pop("path", None)  # ids, not server paths, in answers
        return info

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        info = super().get_label_info(self._name(label_id, "study id"), self._name(label_tag, "label tag"))
        info.pop("path", None)
        return info

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self._study(image_id)
        super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        super().update_label_info(self._name(label_id, "study id"), self._name(label_tag, "label tag"), info)


def _nrrd_to_nifti(path: str) -> str:
    """A NIfTI copy (``.nii.gz``, same geometry) of the NRRD label ``path``, in the temporary folder."""
    import SimpleITK as sitk

    fd, out = tempfile.mkstemp(prefix="cocoseg_label_", suffix=".nii.gz")
    os.close(fd)
    try:
        sitk.WriteImage(sitk.ReadImage(str(path)), out, useCompression=True)
    except RuntimeError:
        _remove(out)
        raise Refused(400, f"label {Path(path).name}: not a readable NRRD volume") from None
    return out


def _check_readable(path: Path, role: str) -> None:
    """400 unless the volume ``path`` reads through to its first voxel (catches truncated files)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        img.dataobj[(0,) * len(img.shape)]  # reads through the (gzip) data stream up to the first voxel
    except Exception as err:  # nibabel raises several types for unreadable files
        raise HTTPException(status_code=400, detail=public_text(f"{role} is not a readable NIfTI volume: {err}"))


class CoCoSegInferTask(InferTask):
    """Lesion segmentation of a CT study with its PET partner, by the bundle's inference workflow.

    The request's ``image`` is the CT: the path of a datastore study, or of an uploaded file
    (``uploaded: True``) together with ``pet``, the study id of the PET partner in the PET
    folder. The result is the lesion label on the CT's grid, as ``configs/inference.yaml``
    writes it, and in its JSON ``report``, the study's lesion measurements (``study.json`` of
    :mod:`cocoseg_monai.metrics.report`: lesion count, TMTV, total TLG, SUVmax, Dmax, each
    lesion's figures and the definitions used).
    """

    def __init__(self, serving: _Serving) -> None:
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=dict(LABELS),
            dimension=3,
            description="CoCoSeg V2 PET/CT lesion segmentation (2D network over axial slices)",
            config={"pet": ""},
        )
        self.serving = serving

    def is_valid(self) -> bool:
        return True

    def _pet_of(self, ct: Path, uploaded: bool, request: Mapping[str, Any]) -> Path:
        given = request.get("pet") or ""
        if given:  # a study id of the datastore's PET folder
            name = plain_name(given, "PET partner")
            folder = self.serving.studies / self.serving.pet_folder
            found = next((folder / (name + s) for s in NIFTI_SUFFIXES if (folder / (name + s)).is_file()), None)
            if found is None:
                raise Refused(404, f"PET partner {name!r} not found in {self.serving.pet_folder}/")
            return found
        if uploaded:
            raise Refused(
                400, f'an uploaded CT needs its PET partner: give params {{"pet": <study id in {self.serving.pet_folder}/>}}'
            )  # fmt: skip
        try:
            return pet_partner(ct, self.serving.studies, self.serving.pet_folder)
        except DataError as err:
            raise Refused(404, self.serving.public(str(err))) from None

    def __call__(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            return self._infer(request)
        except Refused as refused:
            raise _refusal(refused) from None

    def _infer(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if request.get("pet_folder"):
            return self._infer_dicomweb(request)
        t0 = time.perf_counter()
        uploaded = bool(request.get("uploaded"))
        ct = Path(str(request.get("image") or ""))
        if not ct.is_file():
            raise Refused(404, f"image {ct.name!r} not found")
        role = "uploaded CT" if uploaded else f"CT {ct.name}"
        check_volume(ct, role, self.serving.max_voxels)
        _check_readable(ct, role)
        pet = self._pet_of(ct, uploaded, request)
        check_volume(pet, f"PET {pet.name}", self.serving.max_voxels)
        _check_readable(pet, f"PET {pet.name}")
        what = f"inference on {'the uploaded CT' if uploaded else ct.name} with PET {pet.name}"
        result, report, _ = self._run(ct, pet, request, what)
        latency = time.perf_counter() - t0
        logger.info("%s: %.2f s", what, latency)
        pet_id = strip_nifti_suffix(pet.name)
        return result, {"label_names": dict(LABELS), "pet": pet_id, "report": report,
                        "latencies": {"total": round(latency, 3)}}

    def _infer_dicomweb(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """A CT series of the DICOMweb server with its PET partner (the app fetched both): the
        label, and the same label stored on the server as a SEG referencing the CT series."""
        t0 = time.perf_counter()
        ct, pet = Path(str(request["image"])), Path(str(request["pet_folder"]))
        ct_uid, pet_uid = str(request["ct_series"]), str(request["pet_series"])
        what = f"inference on CT series {ct_uid} with PET series {pet_uid}"
        result, report, seg = self._run(ct, pet, request, what, dicom={"ct_series": ct_uid, "pet_series": pet_uid})
        try:
            seg_uid = self.serving.remote.store(seg)
        except BaseException:
            _remove(result)  # no answer goes out: MONAI Label will not delete it
            raise
        finally:
            _remove(seg)
        latency = time.perf_counter() - t0
        logger.info("%s: %.2f s, SEG %s", what, latency, seg_uid)
        return result, {"label_names": dict(LABELS), "ct_series": ct_uid, "pet_series": pet_uid, "seg_series": seg_uid,
                        "report": report, "latencies": {"total": round(latency, 3)}}  # fmt: skip

    def _run(self, ct: Path, pet: Path, request: Mapping[str, Any], what: str, dicom: Mapping[str, str] | None = None
             ) -> tuple[str, dict[str, Any], str | None]:
        """Run ``inference.yaml`` on one study; the label (a temporary file MONAI Label deletes
        once sent), the study's lesion report and, for DICOM input, the SEG (a temporary file)."""
        if not self.serving.weights.is_file():
            raise Refused(
                503, f"no weights served yet: start the server with --conf weights PATH or train first (POST /train/{MODEL_NAME})"
            )  # fmt: skip
        overrides: dict[str, Any] = {
            **self.serving.network,  # the bundle reads the plan beside the weights and refuses what contradicts it
            "ct": str(ct.resolve()),
            "pet": str(pet.resolve()),
            "ckpt_path": str(self.serving.weights.resolve()),
            "report": True,  # the study's lesion measurements come back with the label
            "report_options#page": False,
        }
        for key, value in (dicom or {}).items():
            overrides[f"dicom#{key}"] = value
        overrides["dicom_seg"] = dicom is not None
        if request.get("device"):
            overrides["device"] = _device(request["device"])
        if self.serving.slice_batch:
            overrides["slice_batch"] = self.serving.slice_batch
        with tempfile.TemporaryDirectory(prefix="cocoseg_infer_") as out:
            overrides["output_dir"] = out
            try:
                run_bundle_workflow("inference", self.serving.bundle, overrides)
            except Exception as err:
                raise _http_error(err, what, self.serving.folders) from err
            written = sorted(Path(out).glob("*_seg.nii.gz"))
            reports = sorted(Path(out).glob("*_report/study.json"))
            segs = sorted(Path(out).glob("*_seg.dcm"))
            if len(written) != 1 or len(reports) != 1 or len(segs) != (dicom is not None):
                raise Refused(500, f"inference wrote {len(written)} labels, {len(reports)} reports and {len(segs)} SEGs")
            report = study_summary(json.loads(reports[0].read_text()))
            # MONAI Label deletes the returned file once it has been sent
            result = _keep(written[0], ".nii.gz")
            seg = _keep(segs[0], ".dcm") if segs else None
        return result, report, seg


def study_summary(study: Mapping[str, Any]) -> dict[str, Any]:
    """A study's lesion report (``study.json``) as the ``/infer`` answer carries it: the figures
    and definitions, without the server's file paths."""
    return {k: v for k, v in study.items() if not k.endswith("_file")}


def _keep(path: Path, suffix: str) -> str:
    """Move ``path`` out of a temporary folder into a temporary file of its own."""
    fd, kept = tempfile.mkstemp(prefix="cocoseg_", suffix=suffix)
    os.close(fd)
    shutil.move(str(path), kept)
    return kept


def _device(value: Any) -> torch.device:
    """A device of this machine named by a request (``cpu``, ``cuda``, ``cuda:N``); :class:`Refused` otherwise."""
    text = str(value)
    try:
        device = torch.device(text)
    except RuntimeError:
        raise Refused(400, f"device {text[:40]!r} is not a device name") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count():
        return device
    raise Refused(400, f"device {text!r} is not available on this server")


class CoCoSegTrainTask(TrainTask):
    """Fine-tune the served weights on the datastore's studies with final labels, through the
    bundle's training workflow; the run's best weights (EMA, by validation Dice) are then served.

    Each run writes its bundle outputs (``history.json``, ``latest.pth``, ``best_model.pth``,
    TensorBoard; no periodic checkpoints) to ``<model_dir>/runs/<time>/``. A study without a PET
    partner is left out with a warning.
    """

    def __init__(self, serving: _Serving) -> None:
        super().__init__("Fine-tune CoCoSeg on the studies with final labels (bundle train.yaml)")
        self.serving = serving

    def config(self) -> dict[str, Any]:
        return {**TRAIN_DEFAULTS, "max_epochs": min(TRAIN_DEFAULTS["max_epochs"], self.serving.max_epochs)}

    def stats(self) -> dict[str, Any]:
        runs = sorted((self.serving.model_dir / "runs").glob("*/history.json"))
        if not runs:
            return {}
        history = json.loads(runs[-1].read_text())
        return {"run": runs[-1].parent.name, "epochs": len(history.get("epoch", [])),
                "best_val_dice": history.get("best_val_dice")}  # fmt: skip

    def _datalist(self, datastore: Datastore, val_split: float, seed: int) -> dict[str, Any]:
        items = []
        for pair in datastore.datalist():  # a DICOMweb datastore gives each study's PET and patient
            ct = Path(pair["image"])
            try:
                pet = pair.get("pet") or pet_partner(ct, self.serving.studies, self.serving.pet_folder)
            except DataError as err:
                logger.warning("left out of training: %s", err)
                continue
            patient = pair.get("patient") or strip_nifti_suffix(ct.name)
            items.append({"image": str(ct), "pet": str(pet), "label": str(pair["label"]), "patient": patient})
        if len(items) < 2:
            raise DataError(
                f"training needs at least 2 studies with a final label and a PET partner, found {len(items)}"
            )
        split = dict(split_by_patient(items, val_ratio=val_split, test_ratio=0.0, seed=seed))
        if not split["validation"]:  # too few studies for the ratio: keep one for validation
            split["validation"] = [split["training"].pop()]
        split["image_format"] = "nifti"
        return split

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        # the server checked the request (CoCoSegApp's /train route); this process checks again
        # what it takes from it, and takes nothing else (MONAI Label adds gpus and local_rank)
        params = {k: request[k] for k in (*TRAIN_DEFAULTS, "device") if k in request}
        settings = check_train_request(params, self.serving.max_epochs)
        run_dir = self.serving.model_dir / "runs" / time.strftime("%Y%m%d-%H%M%S")
        datalist = self._datalist(datastore, settings["val_split"], settings["random_seed"])
        write_datalist(datalist, run_dir / "datastore.json", relative=False)
        logger.info(
            "fine-tuning on %d studies, validating on %d, %d epochs; outputs in %s",
            len(datalist["training"]), len(datalist["validation"]), settings["max_epochs"], run_dir,
        )  # fmt: skip
        overrides: dict[str, Any] = {
            **self.serving.settings(),  # fine-tuned under the served weights' plan
            "dataset_dir": str(run_dir / "datastore.json"),
            "logdir": str(run_dir),
            "init_ckpt": str(self.serving.weights) if self.serving.weights.is_file() else "",
            "max_epochs": settings["max_epochs"],
            "learning_rate": settings["learning_rate"],
            "batch_size": settings["batch_size"],
            "random_seed": settings["random_seed"],
            "patch_size": [settings["patch_size"]] * 2,
            "num_workers": 0,
            "val_freq": 1,
            "save_freq": 0,  # latest.pth and best_model.pth only: a run's disk use does not grow with its epochs
            "progress_bar": False,
        }
        if settings.get("device"):
            overrides["device"] = _device(settings["device"])
        run_bundle_workflow("train", self.serving.bundle, overrides)
        best = run_dir / "models" / "model.pt"
        if not best.is_file():
            raise DataError(f"run {run_dir.name} wrote no best weights (no validation study had a lesion?); still serving the previous weights")
        self.serving.install_weights(best, {**self.serving.provenance(), "fine_tuned_by": run_dir.name})
        return self.stats()
