"""The command line, ``python -m cocoseg_monai.data.phantom``: options checked as they are
parsed, then one call of :func:`~cocoseg_monai.data.phantom.writing.write_dataset`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import DEFAULT_DATASET, PhantomConfig
from .writing import FORMATS, write_dataset

__all__ = ["main"]


def _positive_int(name: str, minimum: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lesion-free-fraction must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--lesion-free-fraction must be in [0, 1], got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    d = DEFAULT_DATASET
    cfg: PhantomConfig = d["config"]
    p = argparse.ArgumentParser(
        prog="python -m cocoseg_monai.data.phantom",
        description="Write synthetic PET/CT torso phantoms with lesion masks. With only --out, "
                    "this builds the project's default data set.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created; same-name files overwritten)")
    p.add_argument("--patients", type=_positive_int("--patients"), default=d["patients"],
                   help=f"number of patients (default {d['patients']})")
    p.add_argument("--seed", type=_positive_int("--seed", 0), default=d["seed"], help=f"seed (default {d['seed']})")
    p.add_argument("--format", choices=FORMATS, default=d["format"],
                   help="png, nifti, both (png and nifti) or dicom (default png)")
    p.add_argument("--size", type=_positive_int("--size", 32), default=cfg.size,
                   help=f"CT in-plane pixels (default {cfg.size})")
    p.add_argument("--fov", type=_positive_float("--fov"), default=cfg.fov_mm,
                   help=f"in-plane field of view in mm; CT pixels are FOV / SIZE (default {cfg.fov_mm:g})")
    p.add_argument("--slices", type=_positive_int("--slices"), default=cfg.slices,
                   help=f"axial CT slices per patient (default {cfg.slices})")
    p.add_argument("--lesion-free-fraction", type=_fraction, default=cfg.lesion_free_fraction,
                   help=f"fraction of patients without lesions (default {cfg.lesion_free_fraction})")
    p.add_argument("--include-head", action="store_true", help="add neck and head at the top of the volume")
    p.add_argument("--preview", type=Path, default=None,
                   help="also write a preview PNG of the first lesion-bearing patient here")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    config = dataclasses.replace(
        DEFAULT_DATASET["config"], size=args.size, slices=args.slices, fov_mm=args.fov,
        lesion_free_fraction=args.lesion_free_fraction, include_head=args.include_head,
    )
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    t0 = time.perf_counter()
    out = write_dataset(args.out, args.patients, args.seed, args.format, config, preview=args.preview, log=log)
    log(f"wrote {args.patients} patient(s) to {out} in {time.perf_counter() - t0:.1f} s")
    if args.preview is not None:
        log(f"preview: {args.preview}" if args.preview.exists() else "no lesion-bearing patient: no preview written")
    return 0
