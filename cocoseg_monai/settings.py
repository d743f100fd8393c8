"""Checks of a training run's settings, made before any data is read or generated, and the
defaults that depend on the machine."""

from __future__ import annotations

import numbers
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cocoseg_monai.errors import SettingsError

__all__ = ["check_training_settings", "check_switches", "usable_cpus", "default_workers", "DEFAULT_MAX_WORKERS"]

#: data loader workers by default, on a machine with at least that many usable CPUs
DEFAULT_MAX_WORKERS = 4


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the platform has one (a container
    or ``taskset`` limits it below the machine's count), else :func:`os.cpu_count`."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Data loader workers when none are asked for: :data:`DEFAULT_MAX_WORKERS`, at most
    :func:`usable_cpus` (more workers than CPUs only compete for them)."""
    return min(DEFAULT_MAX_WORKERS, usable_cpus())


def _warn_many_workers(num_workers: int) -> None:
    cpus = usable_cpus()
    if num_workers <= cpus:
        return
    warnings.warn(
        f"setting 'num_workers' is {num_workers} but this process may use {cpus} CPU(s): kept as given, though "
        f"loader workers beyond the CPUs only compete for them (the default is {default_workers()} here)",
        UserWarning,
        stacklevel=3,
    )
    # PyTorch says the same once per DataLoader (training and validation): told once is enough
    warnings.filterwarnings(
        "ignore", message=re.escape(f"This DataLoader will create {num_workers} worker processes in total."),
        category=UserWarning,
    )


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SettingsError(f"setting '{name}' must be a positive integer, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise SettingsError(f"setting '{name}' must be a positive number, got {value!r}")


def check_switches(switches: Mapping[str, Any]) -> None:
    """Refuse an on/off setting that is not a boolean, naming it.

    The ``monai.bundle`` command line (``fire``) reads ``--report False`` as a boolean but
    ``--report false`` as the text ``"false"``, which Python takes for true: without this check it
    would switch the setting on.

    Raises:
        SettingsError: the first setting of ``switches`` (name -> value) that is not a boolean.
    """
    for name, value in switches.items():
        if not isinstance(value, bool):
            hint = ""
            if str(value).lower() in ("true", "false"):
                hint = f" (on the monai.bundle command line, write --{name} {str(value).capitalize()})"
            raise SettingsError(f"setting '{name}' must be True or False, got {value!r}{hint}")


def check_training_settings(
    max_epochs: int,
    batch_size: int,
    learning_rate: float,
    val_ratio: float,
    test_ratio: float,
    loss_type: str,
    num_samples: int,
    patch_size: Sequence[int],
    dataset_dir: str | os.PathLike | None,
    val_freq: int = 1,
    num_workers: int = 0,
    switches: Mapping[str, Any] | None = None,
) -> None:
    """Refuse settings no run could use, naming the setting (``train.yaml`` runs this first).

    ``switches`` maps the names of on/off settings to their values, which must be booleans: the
    ``monai.bundle`` command line (``fire``) reads ``--freeze_vgg False`` as a boolean but
    ``--freeze_vgg false`` as the text ``"false"``, which Python takes for true.

    Raises:
        SettingsError: an unknown loss type, a batch size, epoch count, ... below 1, a ratio
            outside its range, a ``dataset_dir`` that does not exist, a switch that is not a
            boolean.

    Warns once (a ``UserWarning``) when ``num_workers`` exceeds :func:`usable_cpus`; the value is kept.
    """
    from .losses import LOSS_TYPES

    for name, value in (("max_epochs", max_epochs), ("batch_size", batch_size), ("num_samples", num_samples),
                        ("val_freq", val_freq)):  # fmt: skip
        _positive_int(name, value)
    _positive("learning_rate", learning_rate)
    if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
        raise SettingsError(f"setting 'num_workers' must be an integer >= 0, got {num_workers!r}")
    if loss_type not in LOSS_TYPES:
        raise SettingsError(f"setting 'loss_type' is {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    if not isinstance(val_ratio, numbers.Real) or not 0 < val_ratio < 1:
        raise SettingsError(f"setting 'val_ratio' must lie in (0, 1), got {val_ratio!r}")
    if not isinstance(test_ratio, numbers.Real) or not 0 <= test_ratio < 1 or val_ratio + test_ratio >= 1:
        raise SettingsError(
            f"setting 'test_ratio' must lie in [0, 1) and leave patients for training with val_ratio "
            f"{val_ratio}, got {test_ratio!r}"
        )
    patch = list(patch_size) if isinstance(patch_size, Sequence) and not isinstance(patch_size, str) else None
    if patch is None or len(patch) != 2:
        raise SettingsError(f"setting 'patch_size' must be two positive integers (x, y), got {patch_size!r}")
    for p in patch:
        _positive_int("patch_size", p)
    check_switches(switches or {})
    if dataset_dir is not None and str(dataset_dir).strip() and not Path(dataset_dir).exists():
        raise SettingsError(f"setting 'dataset_dir': {dataset_dir} does not exist")
    _warn_many_workers(int(num_workers))
