"""The MONAI Label app: CoCoSeg inference and fine-tuning on the PET/CT studies of a datastore.

Start it with ``monailabel start_server --app apps/cocoseg --studies STUDIES`` (the app folder's
``main.py`` imports :class:`CoCoSegApp`). Every ``/infer`` runs the bundle's
``configs/inference.yaml`` and every ``/train`` the bundle's ``configs/train.yaml``: the server
adds no inference or training code of its own. See :mod:`cocoseg_monai.label.datastore` for the
studies layout, and the README's MONAI Label section for the ``--conf`` options.
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
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask

from cocoseg_monai.atomic import atomic_write
from cocoseg_monai.bundle import bundle_dir
from cocoseg_monai.data.discovery import NIFTI_SUFFIXES, DataError, split_by_patient, strip_nifti_suffix, write_datalist
from cocoseg_monai.errors import error_chain, project_cause

from .datastore import PET_FOLDER, pet_partner

__all__ = ["MODEL_NAME", "CoCoSegApp", "CoCoSegInferTask", "CoCoSegTrainTask", "run_bundle_workflow"]

logger = logging.getLogger(__name__)

#: the name the model is served under: ``/infer/cocoseg``, ``/train/cocoseg``
MODEL_NAME = "cocoseg"
#: served weights, in the app's model folder; fine-tuning replaces them
WEIGHTS_FILENAME = "cocoseg.pt"
LABELS = {"lesion": 1}
#: training settings a ``/train`` request may override (with their defaults)
TRAIN_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10,
    "learning_rate": 1e-4,
    "batch_size": 8,
    "val_split": 0.2,
    "patch_size": 96,
    "random_seed": 42,
}


def run_bundle_workflow(config: str, bundle: Path, overrides: Mapping[str, Any]) -> None:
    """Run the ``run`` workflow of the bundle's ``configs/<config>.yaml`` with ``overrides``.

    ``monai.bundle run`` in-process, except that the server's logging is left as it is.
    """
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / f"{config}.yaml"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        bundle_root=str(bundle),
        **overrides,
    )
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()


def _http_error(error: Exception, what: str) -> HTTPException:
    """The HTTP error for a failed workflow: 422 for data the pipeline refuses, with its reason."""
    cause = project_cause(error)
    if cause is not None:
        return HTTPException(status_code=422, detail=f"{what}: {cause}")
    root = error_chain(error)[-1]
    return HTTPException(status_code=500, detail=f"{what} failed: {type(root).__name__}: {root}")


def _check_nifti(path: Path, role: str) -> None:
    """400 unless ``path`` is a readable NIfTI volume (named so that MONAI reads it as NIfTI)."""
    import nibabel as nib

    if not path.name.endswith(NIFTI_SUFFIXES):
        raise HTTPException(status_code=400, detail=f"{role} {path.name}: not a NIfTI file (.nii or .nii.gz)")
    try:
        img = nib.load(str(path))
        shape = img.shape
        img.dataobj[(0,) * len(shape)]  # reads through the (gzip) data stream up to the first voxel
    except Exception as err:  # nibabel raises several types for unreadable files
        raise HTTPException(status_code=400, detail=f"{role} {path.name} is not a readable NIfTI volume: {err}")
    if len(shape) != 3:
        raise HTTPException(status_code=400, detail=f"{role} {path.name}: expected a 3D volume, got shape {shape}")


class _Serving:
    """What the infer and train tasks share: the bundle, the weights, the network settings."""

    def __init__(self, app_dir: str, studies: str, conf: Mapping[str, str]) -> None:
        self.bundle = Path(conf["bundle"]) if conf.get("bundle") else bundle_dir()
        self.studies = Path(studies)
        self.model_dir = Path(conf.get("model_dir") or Path(app_dir) / "model")
        self.weights = self.model_dir / WEIGHTS_FILENAME
        self.pet_folder = conf.get("pet_folder", PET_FOLDER)
        self.network: dict[str, Any] = {}  # overrides shared by inference and training
        if conf.get("features"):
            self.network["features"] = [int(f) for f in str(conf["features"]).replace(" ", "").split(",")]
        if conf.get("attention_kernel_size"):
            self.network["attention_kernel_size"] = int(conf["attention_kernel_size"])
        for flag in ("share_vgg", "cpu_bf16"):
            if conf.get(flag):
                self.network[flag] = str(conf[flag]).lower() in ("1", "true", "yes")
        self.slice_batch = int(conf["slice_batch"]) if conf.get("slice_batch") else None
        if conf.get("weights"):
            self.install_weights(Path(conf["weights"]))

    def install_weights(self, source: Path) -> None:
        """Serve ``source`` from now on (copied atomically over the served weights)."""
        if not source.is_file():
            raise FileNotFoundError(f"weights {source} not found")
        with atomic_write(self.weights, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        logger.info("serving weights %s (from %s)", self.weights, source)


class CoCoSegInferTask(InferTask):
    """Lesion segmentation of a CT study with its PET partner, by the bundle's inference workflow.

    The request's ``image`` is the CT (a datastore study, or an uploaded file together with a
    ``pet`` parameter naming the PET partner's study id or path). The result is the lesion
    label on the CT's grid, as ``configs/inference.yaml`` writes it.
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
        given = str(request.get("pet") or "")
        if given:  # a study id of the datastore's PET folder, or a path on the server
            candidates = [self.serving.studies / self.serving.pet_folder / (given + s) for s in ("", *NIFTI_SUFFIXES)]
            candidates.append(Path(given))
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise HTTPException(status_code=404, detail=f"PET partner {given!r} not found")
            return found
        if uploaded:
            raise HTTPException(
                status_code=400,
                detail="an uploaded CT needs its PET partner: give params {\"pet\": <study id in "
                f"{self.serving.pet_folder}/ or a path on the server>}}",
            )
        try:
            return pet_partner(ct, self.serving.studies, self.serving.pet_folder)
        except DataError as err:
            raise HTTPException(status_code=404, detail=str(err)) from None

    def __call__(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        t0 = time.perf_counter()
        ct = Path(str(request.get("image") or ""))
        if not ct.is_file():
            raise HTTPException(status_code=404, detail=f"image {ct} not found")
        uploaded = ct.resolve().parent != self.serving.studies.resolve()
        _check_nifti(ct, "uploaded CT" if uploaded else "CT")
        pet = self._pet_of(ct, uploaded, request)
        _check_nifti(pet, "PET")
        if not self.serving.weights.is_file():
            raise HTTPException(
                status_code=503,
                detail=f"no weights at {self.serving.weights}: start the server with --conf weights PATH "
                f"or train first (POST /train/{MODEL_NAME})",
            )
        overrides: dict[str, Any] = {
            **self.serving.network,
            "ct": str(ct.resolve()),
            "pet": str(pet.resolve()),
            "ckpt_path": str(self.serving.weights.resolve()),
        }
        if request.get("device"):
            try:
                overrides["device"] = torch.device(str(request["device"]))
            except RuntimeError as err:
                raise HTTPException(status_code=400, detail=f"device {request['device']!r}: {err}") from None
        if self.serving.slice_batch:
            overrides["slice_batch"] = self.serving.slice_batch
        with tempfile.TemporaryDirectory(prefix="cocoseg_infer_") as out:
            overrides["output_dir"] = out
            try:
                run_bundle_workflow("inference", self.serving.bundle, overrides)
            except Exception as err:
                raise _http_error(err, f"inference on {ct.name} with PET {pet.name}") from err
            written = sorted(Path(out).glob("*_seg.nii.gz"))
            if len(written) != 1:
                raise HTTPException(status_code=500, detail=f"inference wrote {len(written)} labels, expected 1")
            # MONAI Label deletes the returned file once it has been sent
            fd, result = tempfile.mkstemp(prefix="cocoseg_", suffix=".nii.gz")
            os.close(fd)
            shutil.move(str(written[0]), result)
        latency = time.perf_counter() - t0
        logger.info("inference on %s (PET %s): %.2f s", ct.name, pet.name, latency)
        return result, {"label_names": dict(LABELS), "pet": str(pet), "latencies": {"total": round(latency, 3)}}


class CoCoSegTrainTask(TrainTask):
    """Fine-tune the served weights on the datastore's studies with final labels, through the
    bundle's training workflow; the run's best weights (EMA, by validation Dice) are then served.

    Each run writes its bundle outputs (``history.json``, checkpoints, TensorBoard) to
    ``<model_dir>/runs/<time>/``. A study without a PET partner is left out with a warning.
    """

    def __init__(self, serving: _Serving) -> None:
        super().__init__("Fine-tune CoCoSeg on the studies with final labels (bundle train.yaml)")
        self.serving = serving

    def config(self) -> dict[str, Any]:
        return dict(TRAIN_DEFAULTS)

    def stats(self) -> dict[str, Any]:
        runs = sorted((self.serving.model_dir / "runs").glob("*/history.json"))
        if not runs:
            return {}
        history = json.loads(runs[-1].read_text())
        return {"run": runs[-1].parent.name, "epochs": len(history.get("epoch", [])),
                "best_val_dice": history.get("best_val_dice")}

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
                f"training needs at least 2 studies with a final label and a PET partner, found {len(items)} "
                f"in {self.serving.studies}"
            )
        split = dict(split_by_patient(items, val_ratio=val_split, test_ratio=0.0, seed=seed))
        if not split["validation"]:  # too few studies for the ratio: keep one for validation
            split["validation"] = [split["training"].pop()]
        split["image_format"] = "nifti"
        return split

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        settings = {k: type(v)(request.get(k, v)) for k, v in TRAIN_DEFAULTS.items()}
        run_dir = self.serving.model_dir / "runs" / time.strftime("%Y%m%d-%H%M%S")
        datalist = self._datalist(datastore, settings["val_split"], settings["random_seed"])
        write_datalist(datalist, run_dir / "datastore.json", relative=False)
        logger.info(
            "fine-tuning on %d studies, validating on %d, %d epochs; outputs in %s",
            len(datalist["training"]), len(datalist["validation"]), settings["max_epochs"], run_dir,
        )
        overrides: dict[str, Any] = {
            **self.serving.network,
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
            "progress_bar": False,
        }
        if request.get("device"):
            overrides["device"] = torch.device(str(request["device"]))
        run_bundle_workflow("train", self.serving.bundle, overrides)
        self.serving.install_weights(run_dir / "models" / "model.pt")
        return {**self.stats(), "weights": str(self.serving.weights)}


class CoCoSegApp(MONAILabelApp):
    """MONAI Label app serving the CoCoSeg bundle as the model ``cocoseg`` (infer and train).

    ``--conf`` options: ``weights`` (a ``model.pt`` to serve), ``features`` (network widths of
    those weights, e.g. ``16,32,64,128``), ``attention_kernel_size`` and ``share_vgg`` (the
    efficient preset's are ``1`` and ``true``), ``model_dir``, ``bundle``, ``pet_folder``,
    ``slice_batch``, ``cpu_bf16``, ``skip_trainers``, ``models`` (must be ``cocoseg`` if given).
    """

    def __init__(self, app_dir: str, studies: str, conf: Mapping[str, str]) -> None:
        models = [m for m in str(conf.get("models") or MODEL_NAME).split(",") if m]
        if models != [MODEL_NAME]:
            raise ValueError(f"--conf models {conf.get('models')!r}: this app serves only {MODEL_NAME!r}")
        self.serving = _Serving(app_dir, studies, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=dict(conf),
            name="CoCoSeg PET/CT lesion segmentation",
            description="CoCoSeg V2 dual-encoder CT/PET fusion network served from its MONAI bundle",
            version="0.1.0",
            labels=dict(LABELS),
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {MODEL_NAME: CoCoSegInferTask(self.serving)}

    def init_trainers(self) -> dict[str, TrainTask]:
        if str(self.conf.get("skip_trainers", "false")).lower() in ("1", "true", "yes"):
            return {}
        return {MODEL_NAME: CoCoSegTrainTask(self.serving)}

    def _known(self, model: str | None, tasks: Mapping[str, Any], what: str) -> None:
        if model not in tasks:
            raise HTTPException(
                status_code=404, detail=f"unknown model {model!r} for {what}; this server has: {sorted(tasks)}"
            )

    def infer(self, request, datastore=None):
        self._known(request.get("model"), self._infers, "inference")
        image = request.get("image")
        store = datastore if datastore else self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and not store.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"no study {image!r} in the datastore {self.studies}")
        return super().infer(request, datastore)

    def bundle_path(self, model):
        # MONAI Label asks this before it starts a background (training) process: refuse unknown
        # models there, with a message, rather than in a process that fails later
        if model is not None:
            self._known(model, {**self._infers, **self._trainers}, "this request")
        return None

    def train(self, request):
        self._known(request.get("model"), self._trainers, "training")
        return super().train(request)
