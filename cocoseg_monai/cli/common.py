"""Helpers shared by several ``cocoseg`` subcommands: the bundle ``device`` of ``--use_gpu``, the checks
before a run, ``--set`` overrides, and the flags that subcommands add with the same meaning."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _device(use_gpu: bool) -> str:
    """The bundle's ``device`` for the original ``--use_gpu`` flag (CPU without it, as before)."""
    return "$torch.device('cuda')" if use_gpu else "$torch.device('cpu')"


def _check_run(use_gpu: bool, command: str, ckpt: str | None = None) -> None:
    """Fail before any work when ``--use_gpu`` has no CUDA device, or the checkpoint ``ckpt`` does
    not exist or holds pickled objects other than weights (a CheckpointError, answered in one line)."""
    import torch

    from ..networks.weights import check_checkpoint

    if use_gpu and not torch.cuda.is_available():
        raise SystemExit(f"cocoseg {command}: --use_gpu given but torch sees no CUDA device")
    if ckpt is not None and not Path(ckpt).is_file():
        raise SystemExit(f"cocoseg {command}: checkpoint {ckpt} not found")
    check_checkpoint(ckpt)


def _parse_set(items: Sequence[str], configs: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` overrides; a KEY that none of the bundle ``configs`` has is refused,
    naming it and the closest known keys (a typo would otherwise be silently ignored)."""
    import difflib

    import yaml
    from monai.bundle import ConfigParser

    from ..bundle import config_path

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"cocoseg: --set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    if out:
        parser = ConfigParser()
        parser.read_config([str(config_path(c)) for c in configs])
        for key in out:
            if key not in parser:
                known = list(parser.get().keys())
                close = difflib.get_close_matches(key.split("#")[0], known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SystemExit(f"cocoseg: --set {key}: no such key in {', '.join(configs)}{hint}")
    return out


def _add_shared_flags(p: argparse.ArgumentParser, *names: str) -> None:
    """Add the flags ``names`` (of ``use_gpu``, ``features``, ``set``), in the order given, as ``eval`` and
    ``infer`` both add them: the same meaning and help."""
    flags: dict[str, dict[str, Any]] = {
        "use_gpu": {"action": "store_true"},
        "features": {"type": int, "nargs": 4, "default": None, "metavar": "F",
                     "help": "the widths of weights without a plan (a run's plan.yaml gives them)"},
        "set": {"action": "append", "default": [], "metavar": "KEY=VALUE", "help": "any other bundle override"},
    }  # built on each call: no parser shares the --set default list with another
    for name in names:
        p.add_argument(f"--{name}", **flags[name])
