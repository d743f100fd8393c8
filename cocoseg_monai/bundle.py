"""Locating, running and loading the CoCoSeg MONAI Bundle from Python and the command line."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["bundle_dir", "config_path", "load_network", "run_bundle"]

_ENV = "COCOSEG_BUNDLE"


def bundle_dir() -> Path:
    """The bundle folder: ``$COCOSEG_BUNDLE`` if set, else ``bundle/`` beside the package source.

    Raises:
        FileNotFoundError: naming the places looked at, when no bundle is found (a non-editable
            install without the repository: set ``COCOSEG_BUNDLE``).
    """
    candidates = [Path(os.environ[_ENV])] if os.environ.get(_ENV) else []
    candidates.append(Path(__file__).resolve().parent.parent / "bundle")
    for candidate in candidates:
        if (candidate / "configs" / "metadata.json").is_file():
            return candidate
    raise FileNotFoundError(
        "CoCoSeg bundle not found (looked in " + ", ".join(map(str, candidates)) + f"); set {_ENV} to the bundle folder."
    )


def config_path(name: str) -> Path:
    """Path of ``configs/<name>`` (``.yaml`` added when no suffix is given) in :func:`bundle_dir`."""
    path = bundle_dir() / "configs" / (name if Path(name).suffix else f"{name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"bundle config {path} not found")
    return path


def run_bundle(
    configs: Sequence[str | os.PathLike],
    run_id: str = "run",
    overrides: Mapping[str, Any] | None = None,
    *,
    bundle: str | os.PathLike | None = None,
    configure_logging: bool = True,
) -> Any:
    """Run the workflow ``run_id`` of the merged ``configs`` with ``overrides``: initialize, run,
    finalize, as ``python -m monai.bundle run <run_id> --config_file "[...]" --key value ...``.

    The one way the project runs a bundle config from Python (the ``cocoseg`` commands, the
    benchmarks, the MONAI Label app). ``configure_logging=False`` leaves the process's logging as
    it is (a server's) instead of applying the bundle's ``logging.conf``. ``bundle``: the bundle
    folder whose metadata and logging apply (default :func:`bundle_dir`).
    """
    from monai.bundle import ConfigWorkflow

    configs_dir = Path(bundle or bundle_dir()) / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(c) for c in configs],
        meta_file=str(configs_dir / "metadata.json"),
        logging_file=str(configs_dir / "logging.conf") if configure_logging else False,
        run_id=run_id,
        workflow_type=None,
        **dict(overrides or {}),
    )
    workflow.initialize()
    result = workflow.run()
    workflow.finalize()
    return result


def load_network(
    bundle: str | os.PathLike | None = None,
    ckpt: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """The bundle's network with trained weights, on ``device`` and in eval mode: what
    ``monai.bundle.load(name)`` returns for a model-zoo bundle.

    ``monai.bundle.load`` builds ``network_def`` from ``configs/inference.json`` only, and this
    bundle's configs are YAML. Here ``network_def`` is built from ``configs/inference.yaml`` of
    ``bundle``, with the settings of the weights' plan (``plan.yaml`` beside ``ckpt`` or one folder
    up, :func:`cocoseg_monai.plan.plan_of`), and the weights are loaded into it strictly, read by
    PyTorch's weights-only unpickler (:func:`cocoseg_monai.networks.load_weights`).

    Args:
        bundle: the bundle folder (default :func:`bundle_dir`).
        ckpt: the weights: a ``models/model.pt`` state dict or a training checkpoint (its EMA
            weights are taken); default ``<bundle>/models/model.pt``, the shipped weights.
        device: where the network goes.

    Raises:
        FileNotFoundError: naming ``ckpt`` or the bundle's ``inference.yaml`` when missing.
        cocoseg_monai.errors.CheckpointError: ``ckpt`` holds pickled objects other than
            tensors (refused unread) or is no readable checkpoint.
        RuntimeError: naming ``ckpt`` and the mismatched keys, when the weights do not fit the
            network their plan describes (weights without a plan get the default widths).

    Example::

        >>> import torch
        >>> net = load_network()  # the shipped weights
        >>> net(torch.rand(1, 2, 128, 128)).shape
        torch.Size([1, 2, 128, 128])
    """
    from monai.bundle import ConfigParser

    from cocoseg_monai.networks import load_weights

    root = Path(bundle) if bundle is not None else bundle_dir()
    config = root / "configs" / "inference.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"bundle config {config} not found")
    weights = Path(ckpt) if ckpt is not None else root / "models" / "model.pt"
    if not weights.is_file():  # before the network is built: the cheap failure first
        raise FileNotFoundError(f"weights file {weights} does not exist")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update({"bundle_root": str(root), "ckpt_path": str(weights)})
    network = load_weights(parser.get_parsed_content("network_def"), weights)
    return network.to(device).eval()
