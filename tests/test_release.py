"""`cocoseg publish`: a run's weights, plan and figures shipped with the bundle, nothing by hand."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from cocoseg_monai.bundle import bundle_dir
from cocoseg_monai.cli import main
from cocoseg_monai.release import sha256

from .conftest import write_tiny_run


def _history(best: int | None) -> dict:
    return {"epoch": [1, 2, 3], "val_dice": [0.2, 0.61234, 0.5], "val_slice_dice": [0.1, 0.55556, 0.4],
            "val_iou": [0.05, 0.44444, 0.3], "best_val_dice": 0.61234, "best_epoch": best}


@pytest.fixture
def bundle(tmp_path):
    """A copy of the bundle's configs, to publish into."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir() / "configs", copy / "configs")
    return copy


def test_publish_ships_weights_plan_hash_and_the_runs_figures(tmp_path, bundle):
    run = write_tiny_run(tmp_path / "run", target_spacing=[3.9, 3.9], slice_size=[64, 64])
    (run / "history.json").write_text(json.dumps(_history(best=2)))
    assert main(["publish", str(run), "--bundle", str(bundle), "--note", "test machine"]) == 0
    shipped = bundle / "models" / "model.pt"
    assert shipped.read_bytes() == (run / "models" / "model.pt").read_bytes()
    assert (bundle / "models" / "plan.yaml").read_text() == (run / "plan.yaml").read_text()
    assert torch.load(shipped, weights_only=True).keys() == torch.load(run / "models" / "model.pt", weights_only=True).keys()
    listed = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    assert listed == [{"path": "models/model.pt", "url": "", "hash_val": sha256(shipped), "hash_type": "sha256"}]
    metrics = json.loads((bundle / "configs" / "metadata.json").read_text())["eval_metrics"]
    # the figures of the best epoch (2), not of the last
    assert metrics == {"val_mean_dice_per_case": 0.6123, "val_mean_dice_per_slice": 0.5556,
                       "val_mean_iou_per_slice": 0.4444, "best_epoch": 2, "epochs": 3, "note": "test machine"}


def test_publish_refuses_a_run_without_a_ranked_epoch_or_weights(tmp_path, bundle):
    run = write_tiny_run(tmp_path / "run")
    (run / "history.json").write_text(json.dumps(_history(best=None)))
    with pytest.raises(SystemExit, match="no epoch was ranked"):
        main(["publish", str(run), "--bundle", str(bundle)])
    (run / "models" / "model.pt").unlink()
    with pytest.raises(SystemExit, match=r"model\.pt does not exist"):
        main(["publish", str(run), "--bundle", str(bundle)])
    assert not (bundle / "models").exists()  # nothing shipped from a refused run
