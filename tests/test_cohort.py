"""Cohort inference (``inference.yaml``'s ``cohort``): one study at a time, a broken study reported
while the others finish, a rerun that skips complete studies, and the studies shared across two
torchrun processes (gloo) with every study written once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cocoseg_monai.cli import main
from cocoseg_monai.data.phantom import PhantomConfig, write_dataset
from cocoseg_monai.inferers.cohort import DONE_FOLDER, SUMMARY_FILENAME, study_groups

from .conftest import write_tiny_run

GOOD = ["patient_001", "patient_002", "patient_003", "patient_004"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Four phantom studies as NIfTI and a fifth whose PET file is cut short (unreadable)."""
    root = tmp_path_factory.mktemp("cohort")
    write_dataset(root, patients=5, seed=13, fmt="nifti", config=PhantomConfig(size=48, slices=6))
    pet = root / "PET" / "patient_005.nii.gz"
    pet.write_bytes(pet.read_bytes()[:400])
    shutil.rmtree(root / "masks")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"), target_spacing=[7.0, 7.0], slice_size=[64, 64])


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.nii.gz")}


def test_cohort_reports_a_broken_study_finishes_the_others_and_a_rerun_skips_them(cohort, run, tmp_path):
    out = tmp_path / "pred"
    args = ["infer", "--run", str(run), "--dataset_root", str(cohort), "--output_dir", str(out)]
    with pytest.raises(SystemExit, match=r"1 of 5 studies failed \(patient_005: .*patient_005\.nii\.gz"):
        main(args)
    summary = json.loads((out / SUMMARY_FILENAME).read_text())
    assert summary["done"] == GOOD and summary["skipped"] == [] and list(summary["failed"]) == ["patient_005"]
    assert sorted(_mtimes(out)) == [f"{n}_seg.nii.gz" for n in GOOD]
    written = _mtimes(out)
    # a rerun skips the complete studies (nothing rewritten) and tries the broken one again
    with pytest.raises(SystemExit, match="1 of 5 studies failed"):
        main(args)
    summary = json.loads((out / SUMMARY_FILENAME).read_text())
    assert summary["done"] == [] and summary["skipped"] == GOOD and list(summary["failed"]) == ["patient_005"]
    assert _mtimes(out) == written
    # a study whose label went missing, or other weights, is done again
    (out / "patient_002_seg.nii.gz").unlink()
    with pytest.raises(SystemExit):
        main(args)
    assert json.loads((out / SUMMARY_FILENAME).read_text())["done"] == ["patient_002"]
    with pytest.raises(SystemExit):
        main([*args, "--redo"])
    assert json.loads((out / SUMMARY_FILENAME).read_text())["done"] == GOOD


def test_cohort_record_names_the_outputs_and_the_weights(cohort, run, tmp_path):
    out = tmp_path / "pred"
    with pytest.raises(SystemExit):
        main(["infer", "--run", str(run), "--dataset_root", str(cohort), "--output_dir", str(out), "--report",
              "--no_page"])
    record = json.loads((out / DONE_FOLDER / "patient_001.json").read_text())
    assert record["outputs"] == [str(out / "patient_001_seg.nii.gz"), str(out / "patient_001_report" / "lesions.csv"),
                                 str(out / "patient_001_report" / "study.json")]
    assert len(record["fingerprint"]["weights_sha256"]) == 64 and record["fingerprint"]["settings"]["report"] is True
    rows = (out / "cohort.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == GOOD  # the broken study has no row


def test_png_slices_are_grouped_into_one_study_per_patient():
    items = [{"image": f"CT/patient_{p}_slice_000{k}.png", "patient": p} for p in ("001", "002") for k in (1, 2)]
    groups = study_groups(items + [{"image": "vol/ct_a.nii.gz"}, {"image": "dicom/study7/CT"}])
    assert [(name, len(members)) for name, members in groups] == [("patient_001", 2), ("patient_002", 2), ("ct_a", 1),
                                                                   ("CT", 1)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="torchrun needs process forking")
def test_cohort_across_two_torchrun_processes_writes_each_study_once(cohort, run, tmp_path):
    out = tmp_path / "pred"
    cmd = [sys.executable, "-m", "cocoseg_monai", "infer", "--nproc", "2", "--run", str(run), "--dataset_root",
           str(cohort), "--output_dir", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode != 0  # the broken study fails the run, after the others are done
    assert "patient_005" in first.stdout + first.stderr
    summary = json.loads((out / SUMMARY_FILENAME).read_text())
    assert summary["processes"] == 2 and summary["studies"] == 5
    assert summary["done"] == GOOD and list(summary["failed"]) == ["patient_005"]  # each study once
    assert not list(out.glob("cohort_summary.rank*.json"))
    written = _mtimes(out)
    assert sorted(written) == [f"{n}_seg.nii.gz" for n in GOOD]
    # the labels equal those of one process with as many threads (parallel sums round by thread count)
    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit):
            main(["infer", "--run", str(run), "--dataset_root", str(cohort), "--output_dir", str(single)])
    finally:
        torch.set_num_threads(threads)
    for name in GOOD:
        np.testing.assert_array_equal(np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj),
                                      np.asarray(nib.load(single / f"{name}_seg.nii.gz").dataobj))
    # a rerun skips every complete study
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode != 0
    summary = json.loads((out / SUMMARY_FILENAME).read_text())
    assert summary["skipped"] == GOOD and summary["done"] == [] and list(summary["failed"]) == ["patient_005"]
    assert _mtimes(out) == written
