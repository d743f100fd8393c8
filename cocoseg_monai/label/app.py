"""The MONAI Label app: CoCoSeg inference and fine-tuning on the PET/CT studies of a datastore.

Start it with ``monailabel start_server --app apps/cocoseg --studies STUDIES --host 127.0.0.1``
(the app folder's ``main.py`` imports :class:`CoCoSegApp`). Every ``/infer`` runs the bundle's
``configs/inference.yaml`` and every ``/train`` the bundle's ``configs/train.yaml``: the server
adds no inference or training code of its own. See :mod:`cocoseg_monai.label.datastore` for the
studies layout, and the README's MONAI Label section for the ``--conf`` options.

The server is hardened (docs/RELIABILITY.md has the threat model):
:class:`~cocoseg_monai.label.tasks.CoCoSegDatastore` takes plain names only and checks every file
before it is stored; the app serves ``/infer`` and ``/train`` through its own routes, which take
study ids or one uploaded CT and checked, capped training settings;
:class:`~cocoseg_monai.label.guard.RequestGuard` stands in front of the whole server (origins, host
names, body size, names, routes not served).

The app is in three modules: :mod:`cocoseg_monai.label.serving` (what is served, and ``--conf``),
:mod:`cocoseg_monai.label.tasks` (the datastore, the infer and the train tasks) and this one (the
app, with its routes and guard).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, Body, Depends, File, Form, HTTPException, UploadFile
from monailabel.config import settings as label_settings
from monailabel.endpoints.user.auth import RBAC
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from cocoseg_monai import __version__

from .dicomweb import DicomWebStudies, dicom_uid, public_url
from .guard import Refused, RequestGuard, RouteRule, check_train_request, plain_name, volume_suffix
from .serving import LABELS, MODEL_NAME, _flag, _remove, _Serving
from .tasks import (
    CoCoSegDatastore,
    CoCoSegInferTask,
    CoCoSegTrainTask,
    _device,
    _refusal,
    run_bundle_workflow,
)

__all__ = ["MODEL_NAME", "CoCoSegApp", "CoCoSegDatastore", "CoCoSegInferTask", "CoCoSegTrainTask", "run_bundle_workflow"]

logger = logging.getLogger(__name__)

#: ``/infer`` parameters that would make the server read another file or write a label: refused
INFER_REFUSED_KEYS = ("image", "label", "session", "session_id", "save_label", "label_tag", "model")


def dicomweb_cache(url: str, conf: Mapping[str, str]) -> Path:
    """Where a DICOMweb server's series are cached: ``--conf dicomweb_cache``, else MONAI Label's
    ``MONAI_LABEL_DATASTORE_CACHE_PATH``, else ``~/.cache/cocoseg/dicomweb``; one folder per URL."""
    import hashlib

    root = (conf.get("dicomweb_cache") or label_settings.MONAI_LABEL_DATASTORE_CACHE_PATH
            or label_settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or Path.home() / ".cache" / "cocoseg" / "dicomweb")
    return Path(str(root).strip()) / hashlib.sha256(url.encode()).hexdigest()[:16]


class CoCoSegApp(MONAILabelApp):
    """MONAI Label app serving the CoCoSeg bundle as the model ``cocoseg`` (infer and train).

    ``--conf`` options: ``run`` (a training run: its ``models/model.pt`` served with its
    ``plan.yaml``) or ``weights`` (a ``model.pt``; its plan is taken from beside it when there is
    one), ``features``, ``attention_kernel_size`` and ``share_vgg`` (the settings of weights
    without a plan), ``model_dir``, ``bundle``, ``pet_folder``,
    ``slice_batch``, ``cpu_bf16``, ``skip_trainers``, ``models`` (must be ``cocoseg`` if given),
    and the server's limits and switches (:data:`~cocoseg_monai.label.serving.SERVER_DEFAULTS`):
    ``max_upload_mb``, ``max_volume_voxels``, ``max_train_epochs``, ``allowed_hosts``,
    ``cors_origins``, ``expose_logs``, ``allow_delete``; with a DICOMweb server as ``--studies``,
    ``dicomweb_cache`` (where its series are cached).
    """

    def __init__(self, app_dir: str, studies: str, conf: Mapping[str, str]) -> None:
        models = [m for m in str(conf.get("models") or MODEL_NAME).split(",") if m]
        if models != [MODEL_NAME]:
            raise ValueError(f"--conf models {conf.get('models')!r}: this app serves only {MODEL_NAME!r}")
        self.remote: DicomWebStudies | None = None
        if str(studies).startswith(("http://", "https://")):
            url = public_url(str(studies))  # before MONAI Label logs it: no credentials in the URL
            cache = dicomweb_cache(url, conf)
            self.serving = _Serving(app_dir, str(cache), conf)
            self.remote = self.serving.remote = DicomWebStudies(
                url, cache, username=label_settings.MONAI_LABEL_DATASTORE_USERNAME or label_settings.MONAI_LABEL_DICOMWEB_USERNAME,
                password=label_settings.MONAI_LABEL_DATASTORE_PASSWORD or label_settings.MONAI_LABEL_DICOMWEB_PASSWORD,
                max_voxels=self.serving.max_voxels,
            )  # fmt: skip
            studies = url
        else:
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
        if self.remote is not None:
            from .dicomweb_datastore import CoCoSegDicomWebDatastore

            return CoCoSegDicomWebDatastore(self.remote, self.serving.max_voxels)
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
        if self.remote is not None:
            try:
                self._remote_study(request)
            except Refused as refused:
                raise _refusal(refused) from None
        elif not request.get("uploaded"):
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

    def _remote_study(self, request: dict[str, Any]) -> None:
        """DICOMweb: the request's CT series and its PET partner, fetched into the cache."""
        if request.get("uploaded"):
            raise Refused(400, "this server segments the DICOMweb server's studies: name a CT series (?image=<UID>)")
        ct_uid = dicom_uid(request.get("image"), "image")
        ct = self.remote.fetch(ct_uid, "CT")
        pet_uid = self.remote.pet_partner(ct_uid, request.get("pet_series"))
        request.update(image=str(ct), pet_folder=str(self.remote.fetch(pet_uid, "PT")), ct_series=ct_uid,
                       pet_series=pet_uid)

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
            RouteRule("/proxy", "the DICOMweb server is not proxied: clients reach it themselves, with their own "
                      "credentials" if self.remote is not None else "this app has no DICOMweb server behind it"),
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
        if given.get("pet_series"):
            if self.remote is None:
                raise Refused(400, "params pet_series: this server has no DICOMweb server behind it; name the PET with pet")
            taken["pet_series"] = dicom_uid(given["pet_series"], "params pet_series")
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
