"""What the MONAI Label server serves, and how it is configured.

The model's name and files (:data:`MODEL_NAME`, the served weights and their provenance), the
defaults of ``/train`` requests and of the server's ``--conf`` limits and switches, and
:class:`_Serving`, which reads ``--conf`` once and holds what the datastore, the infer and the train
tasks and the app share: the bundle, the served weights (and installing new ones), the network
settings and the limits. Needs no MONAI Label: only the core package.
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

from cocoseg_monai.atomic import atomic_write, atomic_write_json
from cocoseg_monai.bundle import bundle_dir
from cocoseg_monai.plan import BINDING_KEYS, PLAN_FILENAME, find_plan, load_plan
from cocoseg_monai.release import sha256

from .datastore import PET_FOLDER
from .guard import TRAIN_SETTINGS, plain_name, public_text

__all__ = ["LABELS", "MODEL_NAME", "PROVENANCE_FILENAME", "SERVER_DEFAULTS", "TRAIN_DEFAULTS", "WEIGHTS_FILENAME"]

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


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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
        #: the DICOMweb server's studies when ``--studies`` is a DICOMweb URL (set by the app), else None
        self.remote: Any = None

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
        digest = sha256(self.weights_source)
        known = self.provenance()
        if self.weights.is_file() and known.get("source_sha256") == digest:
            logger.info(
                "keeping the served weights %s%s: --conf weights %s is unchanged since it was installed",
                self.weights, f" (fine-tuned by run {known['fine_tuned_by']})" if known.get("fine_tuned_by") else "",
                self.weights_source,
            )  # fmt: skip
            return
        self.install_weights(self.weights_source, {"source": str(self.weights_source), "source_sha256": digest})
