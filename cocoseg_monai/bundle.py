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
    configs: Sequence[str | os.PathLike], run_id: str = "run", overrides: Mapping[str, Any] | None = None
) -> Any:
    """Run the bundle workflow ``run_id`` of the merged ``configs`` with ``overrides``.

    The same as ``python -m monai.bundle run <run_id> --config_file "[...]" --key value ...``.
    """
    from monai.bundle import run

    files = [str(c) for c in configs]
    return run(
        run_id=run_id,
        meta_file=str(bundle_dir() / "configs" / "metadata.json"),
        config_file=files,
        logging_file=str(bundle_dir() / "configs" / "logging.conf"),
        **dict(overrides or {}),
    )
