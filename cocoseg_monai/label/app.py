"""The MONAI Label app: CoCoSeg inference and fine-tuning on the PET/CT studies of a datastore.

Start it with ``monailabel start_server --app apps/cocoseg --studies STUDIES --host 127.0.0.1``
(the app folder's ``main.py`` imports :class:`CoCoSegApp`). Every ``/infer`` runs the bundle's
``configs/inference.yaml`` and every ``/train`` the bundle's ``configs/train.yaml``: the server
adds no inference or training code of its own. See :mod:`cocoseg_monai.label.datastore` for the
studies layout, and the README's MONAI Label section for the ``--conf`` options.

The server is hardened (docs/RELIABILITY.md has the threat model): :class:`CoCoSegDatastore`
takes plain names only and checks every file before it is stored; the app serves ``/infer`` and
``/train`` through its own routes, which take study ids or one uploaded CT and checked,
capped training settings; :class:`~cocoseg_monai.label.guard.RequestGuard` stands in front of
the whole server (origins, host names, body size, names, routes not served).
"""

from __future__ import annotations

import hashlib
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
from fastapi import BackgroundTasks, Body, Depends, File, Form, HTTPException, UploadFile
from monailabel.config import settings as label_settings
from monailabel.datastore.local import LocalDatastore
from monailabel.endpoints.user.auth import RBAC
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from cocoseg_monai import __version__
from cocoseg_monai.atomic import atomic_write, atomic_write_json
from cocoseg_monai.bundle import bundle_dir, run_bundle
from cocoseg_monai.data.discovery import split_by_patient, strip_nifti_suffix, write_datalist
from cocoseg_monai.errors import DataError, error_chain, project_cause
from cocoseg_monai.plan import BINDING_KEYS, PLAN_FILENAME, find_plan, load_plan

from .datastore import PET_FOLDER, pet_partner
from .guard import (
    NIFTI_SUFFIXES,
    Refused,
    RequestGuard,
    RouteRule,
    TRAIN_SETTINGS,
    check_train_request,
    check_volume,
    plain_name,
    public_text,
    volume_suffix,
)

__all__ = ["MODEL_NAME", "CoCoSegApp", "CoCoSegDatastore", "CoCoSegInferTask", "CoCoSegTrainTask", "run_bundle_workflow"]

logger = logging.getLogger(__name__)

#: the name the model is served under: ``/infer/cocoseg``, ``/train/cocoseg``
MODEL_NAME = "cocoseg"
#: served weights, in the app's model folder; fine-tuning replaces them
WEIGHTS_FILENAME = "cocoseg.pt"
#: where the served weights came from (the ``--conf weights`` file's digest, the run that fine-tuned them)
PROVENANCE_FILENAME = "cocoseg.json"
LABELS = {"lesion": 1}
#: training settings a ``/train`` request may override (with their defaults)
TRAIN_DEFAULTS: dict[str, Any] = {key: spec[3] for key, spec in TRAIN_SETTINGS.items()}
#: the server's limits and switches (``--conf`` keys) with their defaults
SERVER_DEFAULTS: dict[str, str] = {
    "max_upload_mb": "1024",
    "max_volume_voxels": str(512 * 512 * 2048),
    "max_train_epochs": str(TRAIN_SETTINGS["max_epochs"][2]),
    "allowed_hosts": "",
    "cors_origins": "",
    "expose_logs": "false",
    "allow_delete": "false",
}
#: label files a client may save (3D Slicer saves NIfTI, or NRRD when asked); NRRD is stored as NIfTI
LABEL_SUFFIXES = (*NIFTI_SUFFIXES, ".seg.nrrd", ".nrrd")
#: ``/infer`` parameters that would make the server read another file or write a label: refused
INFER_REFUSED_KEYS = ("image", "label", "session", "session_id", "save_label", "label_tag", "model")


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove(*paths: str | os.PathLike | None) -> None:
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)


class _Serving:
    """What the datastore, the infer and the train tasks share: the bundle, the weights, the
    network settings and the server's limits."""

    def __init__(self, app_dir: str, studies: str, conf: Mapping[str, str]) -> None:
        self.bundle = Path(conf["bundle"]) if conf.get("bundle") else bundle_dir()
        self.studies = Path(studies)
        self.model_dir = Path(conf.get("model_dir") or Path(app_dir) / "model")
        self.weights = self.model_dir / WEIGHTS_FILENAME
        if conf.get("run") and conf.get("weights"):
            raise ValueError("--conf run and --conf weights: give one (run serves RUN/models/model.pt with RUN/plan.yaml)")
        if conf.get("run"):
            if not (Path(conf["run"]) / PLAN_FILENAME).is_file():
                raise ValueError(
                    f"--conf run {conf['run']}: no {PLAN_FILENAME} there (a run made before plans: cocoseg plan {conf['run']})"
                )
            self.weights_source: Path | None = Path(conf["run"]) / "models" / "model.pt"
        else:
            self.weights_source = Path(conf["weights"]) if conf.get("weights") else None
        self.pet_folder = plain_name(conf.get("pet_folder", PET_FOLDER), "--conf pet_folder")
        self.network: dict[str, Any] = {}  # settings of weights without a plan (inference and training)
        if conf.get("features"):
            self.network["features"] = [int(f) for f in str(conf["features"]).replace(" ", "").split(",")]
        if conf.get("attention_kernel_size"):
            self.network["attention_kernel_size"] = int(conf["attention_kernel_size"])
        for flag in ("share_vgg", "cpu_bf16"):
            if conf.get(flag):
                self.network[flag] = _flag(conf[flag])
        self.slice_batch = int(conf["slice_batch"]) if conf.get("slice_batch") else None
        limits = {key: conf.get(key) or default for key, default in SERVER_DEFAULTS.items()}
        for key in ("max_upload_mb", "max_volume_voxels", "max_train_epochs"):
            if not str(limits[key]).isdigit() or int(limits[key]) < 1:
                raise ValueError(f"--conf {key} must be a positive integer, got {limits[key]!r}")
        self.max_upload_bytes = int(limits["max_upload_mb"]) * 1024 * 1024
        self.max_voxels = int(limits["max_volume_voxels"])
        self.max_epochs = int(limits["max_train_epochs"])
        self.allowed_hosts = [h for h in str(limits["allowed_hosts"]).split(",") if h.strip()]
        self.cors_origins = [o for o in str(limits["cors_origins"]).split(",") if o.strip()]
        self.expose_logs = _flag(limits["expose_logs"])
        self.allow_delete = _flag(limits["allow_delete"])

    @property
    def folders(self) -> dict[str, Path]:
        """Server folders by the names that stand for them in answers."""
        return {"": self.studies, "model": self.model_dir, "tmp": Path(tempfile.gettempdir())}

    def public(self, text: str) -> str:
        return public_text(text, self.folders)

    @property
    def plan(self) -> Path:
        """The served weights' plan (``plan.yaml`` beside them; absent for weights without one)."""
        return self.model_dir / PLAN_FILENAME

    def settings(self) -> dict[str, Any]:
        """The settings fine-tuning runs with: the served weights' plan's, else ``--conf``'s
        (``--conf cpu_bf16`` either way)."""
        if self.plan.is_file():
            plan = load_plan(self.plan)
            extra = {k: v for k, v in self.network.items() if k not in BINDING_KEYS}
            return {**{k: plan[k] for k in BINDING_KEYS if k != "slice_size"}, **extra}
        return dict(self.network)

    def install_weights(self, source: Path, provenance: Mapping[str, Any]) -> None:
        """Serve ``source`` from now on, with its plan (copied atomically over the served weights
        and plan), recording ``provenance`` beside them. Weights without a plan run with ``--conf``'s settings."""
        if not source.is_file():
            raise FileNotFoundError(f"weights {source} not found")
        plan = find_plan(source)
        if plan is not None:
            load_plan(plan)  # refuse an incomplete plan before anything is replaced
        with atomic_write(self.weights, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        if plan is not None:
            with atomic_write(self.plan, "wb") as out:
                out.write(plan.read_bytes())
        else:
            self.plan.unlink(missing_ok=True)
        atomic_write_json(self.model_dir / PROVENANCE_FILENAME, {**provenance, "installed": time.strftime("%Y-%m-%d %H:%M:%S")})
        logger.info("serving weights %s (from %s; plan %s)", self.weights, source, plan or "none: --conf settings")

    def provenance(self) -> dict[str, Any]:
        path = self.model_dir / PROVENANCE_FILENAME
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def install_conf_weights(self) -> None:
        """Serve the ``--conf weights`` file, unless the served weights already came from it.

        Called once, by the server at start-up (never by a training process). Weights that
        fine-tuning made from the same ``--conf weights`` file are kept: starting the server
        again with the same command line loses no training. Another file replaces them.
        """
        if self.weights_source is None:
            return
        if not self.weights_source.is_file():
            raise FileNotFoundError(f"--conf weights {self.weights_source} not found")
        digest = _sha256(self.weights_source)
        known = self.provenance()
        if self.weights.is_file() and known.get("source_sha256") == digest:
            logger.info(
                "keeping the served weights %s%s: --conf weights %s is unchanged since it was installed",
                self.weights, f" (fine-tuned by run {known['fine_tuned_by']})" if known.get("fine_tuned_by") else "",
                self.weights_source,
            )  # fmt: skip
            return
        self.install_weights(self.weights_source, {"source": str(self.weights_source), "source_sha256": digest})


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
    writes it.
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
        if not self.serving.weights.is_file():
            raise Refused(
                503, f"no weights served yet: start the server with --conf weights PATH or train first (POST /train/{MODEL_NAME})"
            )  # fmt: skip
        overrides: dict[str, Any] = {
            **self.serving.network,  # the bundle reads the plan beside the weights and refuses what contradicts it
            "ct": str(ct.resolve()),
            "pet": str(pet.resolve()),
            "ckpt_path": str(self.serving.weights.resolve()),
        }
        if request.get("device"):
            overrides["device"] = _device(request["device"])
        if self.serving.slice_batch:
            overrides["slice_batch"] = self.serving.slice_batch
        what = f"inference on {'the uploaded CT' if uploaded else ct.name} with PET {pet.name}"
        with tempfile.TemporaryDirectory(prefix="cocoseg_infer_") as out:
            overrides["output_dir"] = out
            try:
                run_bundle_workflow("inference", self.serving.bundle, overrides)
            except Exception as err:
                raise _http_error(err, what, self.serving.folders) from err
            written = sorted(Path(out).glob("*_seg.nii.gz"))
            if len(written) != 1:
                raise Refused(500, f"inference wrote {len(written)} labels, expected 1")
            # MONAI Label deletes the returned file once it has been sent
            fd, result = tempfile.mkstemp(prefix="cocoseg_", suffix=".nii.gz")
            os.close(fd)
            shutil.move(str(written[0]), result)
        latency = time.perf_counter() - t0
        logger.info("%s: %.2f s", what, latency)
        pet_id = strip_nifti_suffix(pet.name)
        return result, {"label_names": dict(LABELS), "pet": pet_id, "latencies": {"total": round(latency, 3)}}


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
        for pair in datastore.datalist():
            ct = Path(pair["image"])
            try:
                pet = pet_partner(ct, self.serving.studies, self.serving.pet_folder)
            except DataError as err:
                logger.warning("left out of training: %s", err)
                continue
            patient = strip_nifti_suffix(ct.name)
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


class CoCoSegApp(MONAILabelApp):
    """MONAI Label app serving the CoCoSeg bundle as the model ``cocoseg`` (infer and train).

    ``--conf`` options: ``run`` (a training run: its ``models/model.pt`` served with its
    ``plan.yaml``) or ``weights`` (a ``model.pt``; its plan is taken from beside it when there is
    one), ``features``, ``attention_kernel_size`` and ``share_vgg`` (the settings of weights
    without a plan), ``model_dir``, ``bundle``, ``pet_folder``,
    ``slice_batch``, ``cpu_bf16``, ``skip_trainers``, ``models`` (must be ``cocoseg`` if given),
    and the server's limits and switches (:data:`SERVER_DEFAULTS`): ``max_upload_mb``,
    ``max_volume_voxels``, ``max_train_epochs``, ``allowed_hosts``, ``cors_origins``,
    ``expose_logs``, ``allow_delete``.
    """

    def __init__(self, app_dir: str, studies: str, conf: Mapping[str, str]) -> None:
        models = [m for m in str(conf.get("models") or MODEL_NAME).split(",") if m]
        if models != [MODEL_NAME]:
            raise ValueError(f"--conf models {conf.get('models')!r}: this app serves only {MODEL_NAME!r}")
        if str(studies).startswith(("http://", "https://")):
            raise ValueError("this app serves a local studies folder; a DICOMweb server is not served yet")
        self.serving = _Serving(app_dir, studies, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=dict(conf),
            name="CoCoSeg PET/CT lesion segmentation",
            description="CoCoSeg V2 dual-encoder CT/PET fusion network served from its MONAI bundle",
            version=__version__,
            labels=dict(LABELS),
        )

    def init_datastore(self) -> Datastore:
        return CoCoSegDatastore(
            self.serving,
            auto_reload=label_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=label_settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {MODEL_NAME: CoCoSegInferTask(self.serving)}

    def init_trainers(self) -> dict[str, TrainTask]:
        if _flag(self.conf.get("skip_trainers", "false")):
            return {}
        return {MODEL_NAME: CoCoSegTrainTask(self.serving)}

    def init_strategies(self) -> dict[str, Strategy]:
        # 3D Slicer's "Next Sample" asks one of these for a study without a final label
        return {"random": Random(), "first": First()}

    def _known(self, model: str | None, tasks: Mapping[str, Any], what: str) -> None:
        if model not in tasks:
            raise HTTPException(
                status_code=404, detail=f"unknown model {str(model)[:80]!r} for {what}; this server has: {sorted(tasks)}"
            )

    def infer(self, request, datastore=None):
        """Inference on ``request["image"]``: a study id, or (with ``uploaded: True``, set only by
        this app's ``/infer`` route) the path of the uploaded CT. No label is ever saved."""
        self._known(request.get("model"), self._infers, "inference")
        request = dict(request)
        if not request.get("uploaded"):
            image = request.get("image")
            try:
                study = self.datastore().get_image_uri(image) if isinstance(image, str) else ""
            except HTTPException:
                raise HTTPException(status_code=400, detail=f"image {str(image)[:80]!r} is not a study id") from None
            if not study:
                raise HTTPException(status_code=404, detail=f"no study {image!r} in the datastore")
            request["image"] = study
        request["save_label"] = False
        return super().infer(request, datastore)

    def next_sample(self, request):
        sample = super().next_sample(request)
        sample.pop("path", None)  # ids, not server paths: clients download the study by id
        return sample

    def bundle_path(self, model):
        # MONAI Label asks this before it starts a background (training) process: refuse unknown
        # models there, with a message, rather than in a process that fails later
        if model is not None:
            self._known(model, {**self._infers, **self._trainers}, "this request")
        return None

    def train(self, request):
        self._known(request.get("model"), self._trainers, "training")
        return super().train(request)

    def on_init_complete(self):
        """The server has started this app (MONAI Label calls this in the server only, never in
        a training process): install the ``--conf weights`` and secure the server."""
        self.serving.install_conf_weights()
        super().on_init_complete()
        import monailabel.app as server  # the FastAPI application this process serves

        self.secure(server.app)

    # --- the server's routes and guard

    def secure(self, fastapi_app) -> None:
        """Put this app's ``/infer`` and ``/train`` routes before MONAI Label's and the
        :class:`~cocoseg_monai.label.guard.RequestGuard` in front of ``fastapi_app``."""
        from fastapi.routing import APIRoute

        routes = [
            APIRoute("/infer/{model}", self._infer_route, methods=["POST"]),
            APIRoute("/train/{model}", self._train_route, methods=["POST"]),
            APIRoute("/train/", self._train_all_route, methods=["POST"]),
            APIRoute("/train/", self._train_status_route, methods=["GET"]),
        ]
        fastapi_app.router.routes[:0] = routes
        # MONAI Label's own MONAI_LABEL_CORS_ORIGINS is honoured too, though `monailabel
        # start_server` 0.8.5 fails at start when it is set (it JSON-dumps the URL objects)
        origins = [*self.serving.cors_origins, *(str(o) for o in label_settings.MONAI_LABEL_CORS_ORIGINS)]
        stack = fastapi_app.middleware_stack or fastapi_app.build_middleware_stack()
        small = 1 << 20  # settings and info are JSON, not volumes
        fastapi_app.middleware_stack = RequestGuard(
            stack,
            allowed_origins=origins,
            allowed_hosts=self.serving.allowed_hosts,
            max_body_bytes=self.serving.max_upload_bytes,
            body_limits={p: small for p in ("/train", "/activelearning", "/datastore/image/info", "/datastore/label/info",
                                             "/datastore/updatelabelinfo")},  # fmt: skip
            rules=self._route_rules(),
        )
        logger.info(
            "server secured: uploads up to %d MB, volumes up to %d voxels, at most %d training epochs; "
            "web origins allowed besides the server's own: %s",
            self.serving.max_upload_bytes >> 20, self.serving.max_voxels, self.serving.max_epochs, origins or "none",
        )  # fmt: skip

    def _route_rules(self) -> list[RouteRule]:
        rules = [
            RouteRule("/reload", "reloading the app through the server is off"),
            RouteRule("/session", 'sessions are not served: infer on a study id, or POST the CT with params {"pet": <study id>}'),
            RouteRule("/batch", "batch inference is not served: infer one study at a time"),
            RouteRule("/wsi_infer", "whole-slide inference is not served"),
            RouteRule("/scoring", "scoring is not served", methods=("POST", "PUT", "DELETE")),
            RouteRule("/proxy", "this app has no DICOMweb server behind it"),
            RouteRule("/model", "the served weights are installed by the server (--conf weights) and by /train only",
                      methods=("PUT", "DELETE")),
            RouteRule("/datastore/dataset", "downloading the whole data set is off"),
            RouteRule("/datastore", "output=train lists server paths; use output=all", methods=("GET",),
                      query={"output": "train"}, exact=True),
        ]  # fmt: skip
        if not self.serving.expose_logs:
            rules.append(RouteRule("/logs", "the server log is not served (start with --conf expose_logs true)"))
        if not self.serving.allow_delete:
            rules.append(RouteRule(
                "/datastore", "deleting studies and labels through the server is off: remove the files in the "
                "studies folder, or start with --conf allow_delete true", methods=("DELETE",),
            ))  # fmt: skip
        return rules

    def _infer_route(
        self,
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile = File(None),
        label: UploadFile = File(None),
        output: str | None = None,
        user=Depends(RBAC(label_settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ):
        """``POST /infer/{model}``: MONAI Label's, taking a study id or one uploaded CT only, for
        the same users (``MONAI_LABEL_AUTH_ENABLE``). A plain (not ``async``) route, so the
        server goes on answering while it runs."""
        from monailabel.endpoints.infer import ResultType, send_response

        upload = None
        try:
            if session_id:
                raise Refused(400, 'sessions are not served: infer on a study id, or POST the CT with params {"pet": <study id>}')
            if label is not None:
                raise Refused(400, f"{MODEL_NAME} takes no label input")
            if output is not None and output not in (ResultType.image, ResultType.json, ResultType.all):
                raise Refused(400, f"output {output[:20]!r}: choose image, json or all")
            request: dict[str, Any] = {"model": model}
            request.update(self._infer_params(params))
            if file is not None:
                if image:
                    raise Refused(400, "give either image (a study id) or an uploaded CT file, not both")
                suffix = volume_suffix(Path(file.filename or "upload.nii.gz").name, "uploaded CT")
                fd, upload = tempfile.mkstemp(prefix="cocoseg_upload_", suffix=suffix)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(file.file, out)
                request.update(image=upload, uploaded=True)
            elif image:
                request["image"] = plain_name(image, "image")
            else:
                raise Refused(400, "name a study (?image=<study id>) or upload a CT file")
            result = self.infer(request)
            return send_response(self.datastore(), result, output, background_tasks)
        except Refused as refused:
            raise _refusal(refused) from None
        finally:
            _remove(upload)

    def _infer_params(self, params: str) -> dict[str, Any]:
        try:
            given = json.loads(params or "{}")
        except ValueError:
            raise Refused(400, "params is not a JSON object") from None
        if not isinstance(given, dict):
            raise Refused(400, "params is not a JSON object")
        refused = sorted(k for k in given if k in INFER_REFUSED_KEYS)
        if refused:
            raise Refused(
                400, f"params {refused} refused: inference takes the study from the request's image or upload, "
                "its PET partner from params pet, and saves no label",
            )  # fmt: skip
        taken: dict[str, Any] = {}
        if given.get("pet"):
            taken["pet"] = plain_name(given["pet"], "params pet")
        if given.get("device"):
            taken["device"] = str(_device(given["device"]))
        return taken  # anything else a client sends (result_extension, client_id, ...) is not used

    def _train_route(
        self,
        model: str,
        params: dict | None = Body(None),
        run_sync: bool = False,
        enqueue: bool = False,
        user=Depends(RBAC(label_settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
    ):
        """``POST /train/{model}``: MONAI Label's, for the same users, with the settings checked
        and capped, one run at a time, in the background."""
        from monailabel.utils.async_tasks.task import AsyncTask

        try:
            if run_sync:
                raise Refused(422, "run_sync is not served: training runs in the background; poll GET /train/")
            if enqueue:
                raise Refused(422, "enqueue is not served: one training run at a time")
            self._known(model, self._trainers, "training")
            settings = check_train_request(params or {}, self.serving.max_epochs)
            if "device" in settings:
                settings["device"] = str(_device(settings["device"]))
        except Refused as refused:
            raise _refusal(refused) from None
        task, detail = AsyncTask.run("train", request={"model": model}, params=settings)
        if task is None:
            raise HTTPException(status_code=429, detail=detail)
        return task

    def _train_status_route(
        self, all: bool = False, check_if_running: bool = False, user=Depends(RBAC(label_settings.MONAI_LABEL_AUTH_ROLE_USER))
    ):
        """``GET /train/``: MONAI Label's, with server paths in the run's output lines taken out."""
        from fastapi.encoders import jsonable_encoder
        from monailabel.endpoints.train import status

        answer = jsonable_encoder(status(all, check_if_running))
        return json.loads(self.serving.public(json.dumps(answer)))

    def _train_all_route(
        self, params: dict | None = Body(None), run_sync: bool = False, user=Depends(RBAC(label_settings.MONAI_LABEL_AUTH_ROLE_ADMIN))
    ):
        """``POST /train/``: every trainer, which is :data:`MODEL_NAME` (3D Slicer's "ALL")."""
        return self._train_route(MODEL_NAME, params, run_sync, user=user)
