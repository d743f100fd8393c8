"""Locating and running the CoCoSeg MONAI Bundle from Python and the command line."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["bundle_dir", "config_path", "run_bundle"]

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
