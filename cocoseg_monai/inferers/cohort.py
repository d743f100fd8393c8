"""Cohort inference: every study of a run, one at a time, shared across processes, resumable.

:class:`CohortInference` is what ``inference.yaml`` runs. It groups the data items into studies
(a volume or DICOM series pair is one study; PNG slices are grouped by patient), gives each
process of a ``torchrun`` group (``rank`` of ``world_size``) every ``world_size``-th study, and
runs the bundle's evaluator on one study at a time, so that:

- a study that fails (unreadable, refused by a check) is reported with its reason and the others
  go on; the run fails at the end, naming every failed study;
- a study whose outputs are complete is skipped on a rerun: after a study's outputs are written,
  a record ``<output_dir>/.cocoseg_done/<study>.json`` names them with a fingerprint of the
  weights (SHA-256) and the settings that change them; a rerun with the same weights and settings
  skips the study while its record and outputs are there, and redoes it otherwise;
- each process writes its own outputs, each atomically (the writers write a temporary file and
  rename it), and ``<output_dir>/cohort_summary.json`` lists what was done, skipped and failed
  (rank 0 merges the ranks' lists once all have finished).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import CoCoSegError, project_cause

__all__ = ["CohortError", "CohortInference", "DONE_FOLDER", "SUMMARY_FILENAME", "study_groups", "study_outputs"]

logger = logging.getLogger(__name__)

DONE_FOLDER = ".cocoseg_done"
SUMMARY_FILENAME = "cohort_summary.json"


class CohortError(CoCoSegError):
    """Studies of a cohort failed (each was reported; the others were done)."""


def _stem(path: str | os.PathLike) -> str:
    name = Path(str(path)).name
    for suffix in (".nii.gz", ".nii", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def study_groups(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """The studies of ``items`` in order: ``(name, items)``; PNG slices are grouped by their
    ``patient``, any other item (a volume or a series pair) is a study of its own, named after
    its CT as the outputs are."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        image = str(item["image"])
        name = f"patient_{item['patient']}" if image.lower().endswith(".png") and item.get("patient") else _stem(image)
        groups.setdefault(name, []).append(item)
    return list(groups.items())


class CohortInference:
    """Run ``evaluator`` over the studies of ``data`` (see the module docstring).

    Args:
        evaluator: the bundle's evaluator; its data loader is replaced per study.
        data: the inference items (``inference_items``).
        transform: the preprocessing the evaluator's dataset applies.
        output_dir: where the outputs and the records go.
        outputs: ``study items -> output paths`` the study must have written to count as done.
        weights: the checkpoint file (its SHA-256 is part of the fingerprint).
        settings: the settings that change the outputs (part of the fingerprint).
        rank, world_size: this process's place in the process group.
        resume: skip studies whose record matches (else every study is redone).
        barrier: waits for every rank (a no-op in one process).
    """

    def __init__(self, evaluator: Any, data: Sequence[Mapping[str, Any]], transform: Callable, output_dir: str | os.PathLike,
                 outputs: Callable[[Sequence[Mapping[str, Any]]], list[str]], weights: str | os.PathLike,
                 settings: Mapping[str, Any] | None = None, rank: int = 0, world_size: int = 1, resume: bool = True,
                 barrier: Callable[[], Any] | None = None) -> None:
        self.evaluator, self.data, self.transform = evaluator, list(data), transform
        self.output_dir, self.outputs, self.weights = Path(output_dir), outputs, Path(weights)
        self.settings = json.loads(json.dumps(dict(settings or {}), default=str))
        self.rank, self.world_size, self.resume = int(rank), int(world_size), bool(resume)
        self.barrier = barrier or (lambda: None)

    def fingerprint(self) -> dict[str, Any]:
        from ..release import sha256

        return {"weights_sha256": sha256(self.weights), "settings": self.settings}

    def _record(self, name: str) -> Path:
        return self.output_dir / DONE_FOLDER / f"{name}.json"

    def _complete(self, name: str, fingerprint: Mapping[str, Any]) -> bool:
        try:
            record = json.loads(self._record(name).read_text())
        except (OSError, ValueError):
            return False
        return record.get("fingerprint") == fingerprint and all(Path(p).exists() for p in record.get("outputs", []))

    def _run_study(self, items: Sequence[Mapping[str, Any]]) -> None:
        from monai.data import DataLoader, Dataset

        loader = DataLoader(Dataset(list(items), transform=self.transform), batch_size=1, shuffle=False, num_workers=0)
        self.evaluator.data_loader = loader
        state = self.evaluator.state
        state.epoch, state.iteration, state.max_epochs, state.epoch_length = 0, 0, 1, len(loader)
        self.evaluator.run()

    def run(self) -> dict[str, Any]:
        """Run this rank's share; returns (and, on rank 0, writes) the summary.

        Raises:
            CohortError: on rank 0, when a study failed (after all were tried); a run of one study
                raises that study's own error.
        """
        studies = study_groups(self.data)
        mine = studies[self.rank :: self.world_size]
        fingerprint = self.fingerprint()
        done, skipped, failed = [], [], {}
        errors: dict[str, BaseException] = {}
        t0 = time.perf_counter()
        for name, items in mine:
            if self.resume and self._complete(name, fingerprint):
                skipped.append(name)
                logger.info("%s: outputs complete from an earlier run with these weights and settings: skipped", name)
                continue
            self._record(name).unlink(missing_ok=True)
            try:
                self._run_study(items)
                missing = [p for p in self.outputs(items) if not Path(p).exists()]
                if missing:
                    raise CohortError(f"{name}: outputs missing after inference: {missing}")
            except Exception as err:  # one study's failure is reported; the others go on
                cause = project_cause(err)
                failed[name] = str(cause) if cause is not None else f"{type(err).__name__}: {err}"
                errors[name] = err
                logger.error("%s failed: %s", name, failed[name])
                continue
            atomic_write_json(self._record(name), {"study": name, "fingerprint": fingerprint,
                                                   "outputs": [str(p) for p in self.outputs(items)]})  # fmt: skip
            done.append(name)
        summary = {"rank": self.rank, "studies": len(mine), "done": done, "skipped": skipped, "failed": failed,
                   "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
        if self.world_size > 1:
            atomic_write_json(self.output_dir / f"cohort_summary.rank{self.rank}.json", summary)
        self.barrier()
        if self.rank != 0:
            return summary
        merged = self._merge(summary, len(studies))
        logger.info("cohort: %d studies: %d done, %d skipped (complete), %d failed", merged["studies"],
                    len(merged["done"]), len(merged["skipped"]), len(merged["failed"]))
        if merged["failed"]:
            if len(studies) == 1 and errors:
                raise next(iter(errors.values()))  # one study: its own error, as a single run would give it
            listed = "; ".join(f"{k}: {v}" for k, v in merged["failed"].items())
            raise CohortError(f"{len(merged['failed'])} of {merged['studies']} studies failed ({listed}); "
                              f"the others are done, see {self.output_dir / SUMMARY_FILENAME}")
        return merged

    def _merge(self, own: Mapping[str, Any], total: int) -> dict[str, Any]:
        parts = [own]
        for r in range(1, self.world_size):
            path = self.output_dir / f"cohort_summary.rank{r}.json"
            parts.append(json.loads(path.read_text()))
            path.unlink()
        if self.world_size > 1:
            (self.output_dir / "cohort_summary.rank0.json").unlink(missing_ok=True)
        merged = {"studies": total, "processes": self.world_size,
                  "done": sorted(n for p in parts for n in p["done"]),
                  "skipped": sorted(n for p in parts for n in p["skipped"]),
                  "failed": {k: v for p in parts for k, v in sorted(p["failed"].items())},
                  "seconds_by_rank": [p["seconds"] for p in parts]}  # fmt: skip
        atomic_write_json(self.output_dir / SUMMARY_FILENAME, merged)
        return merged


def study_outputs(output_dir: str | os.PathLike, *, volumes: bool, save_probabilities: bool = False,
                  dicom_seg: bool = False, report: bool = False) -> Callable[[Sequence[Mapping[str, Any]]], list[str]]:
    """``study items -> output paths`` of ``inference.yaml``'s writers: the label (and the
    probabilities, the DICOM SEG, the report folder's files) named as ``SaveImaged`` names them."""
    from monai.data.utils import create_file_basename

    def outputs(items: Sequence[Mapping[str, Any]]) -> list[str]:
        paths = []
        for item in items:
            source = str(item["image"])
            stem = lambda postfix: create_file_basename(postfix, source, output_dir, separate_folder=False)  # noqa: E731
            paths.append(stem("seg") + (".nii.gz" if volumes else ".png"))
            if save_probabilities:
                paths.append(stem("prob") + ".nii.gz")
            if dicom_seg:
                paths.append(stem("seg") + ".dcm")
            if report:
                paths += [str(Path(stem("report")) / f) for f in ("lesions.csv", "study.json")]
        return paths

    return outputs
