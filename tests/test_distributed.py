"""Distributed data-parallel training: torchrun, 2 processes, gloo on the CPU, tiny data; and
multi_gpu_train.yaml as a thin layer that leaves train.yaml's steps and handlers as they are."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from cocoseg_monai.bundle import bundle_dir, config_path
from cocoseg_monai.data.phantom import PhantomConfig, write_dataset

from .conftest import TINY_FEATURES

# test-only layer: each rank saves its final weights and its pid outside the run's log dir, after
# train.yaml's own finalize steps
_RANK_DUMP = """
+finalize:
  - "$torch.save({'model': @network.module.state_dict(), 'ema': @ema_model.state_dict()}, os.path.join(@rank_dump, 'rank' + str(@rank) + '.pt'))"
  - "$open(os.path.join(@rank_dump, 'rank' + str(@rank) + '.pid'), 'w').write(str(os.getpid()))"
"""

# what rank 0 alone does is train.yaml's to say: the layer must leave these as train.yaml has them
_TRAIN_YAML_OWNS = ("initialize", "run", "training", "finalize", "data", "train#handlers", "validate#handlers",
                    "history", "checkpointer", "checkpoint_loader", "progress", "run_config")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    write_dataset(data, patients=5, seed=3, fmt="png", config=PhantomConfig(size=48, slices=4))
    (root / "ranks").mkdir()
    (root / "rank_dump.yaml").write_text(_RANK_DUMP)
    configs = [str(config_path("train")), str(config_path("multi_gpu_train")), str(root / "rank_dump.yaml")]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m", "monai.bundle", "run", "training", "--meta_file", str(bundle_dir() / "configs" / "metadata.json"),
        "--config_file", json.dumps(configs), "--dataset_dir", str(data), "--logdir", str(root / "logs"),
        "--rank_dump", str(root / "ranks"), "--max_epochs", "1", "--features", json.dumps(list(TINY_FEATURES)),
        "--patch_size", "[32,32]", "--num_samples", "2", "--batch_size", "2", "--num_workers", "0",
        "--progress_bar", "False", "--val_sw_batch_size", "4",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root


def test_both_ranks_finish_with_identical_weights_and_ema(ddp_run):
    ranks = ddp_run / "ranks"
    r0, r1 = torch.load(ranks / "rank0.pt", weights_only=True), torch.load(ranks / "rank1.pt", weights_only=True)
    for part in ("model", "ema"):
        w0, w1 = r0[part], r1[part]
        assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0), part
    assert not all(torch.equal(r0["model"][k], r0["ema"][k]) for k in r0["model"])  # the EMA is its own average
    config = json.loads((ddp_run / "logs" / "config.json").read_text())
    assert config["world_size"] == 2


def test_only_rank_0_writes_outputs(ddp_run):
    logs = ddp_run / "logs"
    rank0 = int((ddp_run / "ranks" / "rank0.pid").read_text())
    events = list((logs / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(int(re.search(r"\.(\d+)\.\d+$", e.name).group(1)) == rank0 for e in events)
    history = json.loads((logs / "history.json").read_text())
    assert history["epoch"] == [1]
    # checkpoints hold the plain network's keys (no DDP "module." prefix): they load without DDP
    ckpt = torch.load(logs / "latest.pth", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert (logs / "models" / "model.pt").is_file() and (logs / "best_model.pth").is_file()


def test_reduced_validation_dice_equals_one_process_on_the_same_weights(ddp_run):
    logs = ddp_run / "logs"
    history = json.loads((logs / "history.json").read_text())
    parser = ConfigParser()
    parser.read_config(str(config_path("train")))
    parser.update({
        "dataset_dir": str(logs / "datalist.json"),  # the same split
        "logdir": str(ddp_run / "single"),
        "init_ckpt": str(logs / "latest.pth"),  # its EMA weights: the ones validated at epoch 1
        "features": list(TINY_FEATURES), "patch_size": [32, 32], "num_workers": 0, "val_sw_batch_size": 4,
        "device": "$torch.device('cpu')",
    })  # fmt: skip
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    assert evaluator.state.metrics["val_dice"] == pytest.approx(history["val_dice"][0], abs=1e-6)
    assert evaluator.state.metrics["val_slice_dice"] == pytest.approx(history["val_slice_dice"][0], abs=1e-6)
    assert evaluator.state.metrics["val_loss"] == pytest.approx(history["val_loss"][0], rel=1e-5)


def test_cocoseg_train_nproc_runs_the_same_workflow_under_torchrun(ddp_run, tmp_path):
    cmd = [
        sys.executable, "-m", "cocoseg_monai", "train", "--nproc", "2", "--epoch", "1", "--bs", "2",
        "--dataset_root", str(ddp_run / "data"), "--logdir", str(tmp_path / "logs"), "--num_workers", "0",
        "--patch_size", "32", "32", "--set", f"features={list(TINY_FEATURES)}", "--set", "num_samples=2",
        "--set", "progress_bar=false", "--set", "val_sw_batch_size=4",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    config = json.loads((tmp_path / "logs" / "config.json").read_text())
    assert config["world_size"] == 2 and config["bs"] == 2 and config["use_gpu"] is False
    assert json.loads((tmp_path / "logs" / "history.json").read_text())["epoch"] == [1]


# ---- the layer ---------------------------------------------------------------------------------


def _parser(*configs: str | Path, rank: int | None = None) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    if rank is not None:
        parser["rank"] = rank  # what torch.distributed.get_rank() gives that process
    return parser


def test_ddp_layer_overrides_no_list_entry_and_no_workflow_step():
    layer = ConfigParser.load_config_file(str(config_path("multi_gpu_train")))
    assert not [key for key in layer if re.search(r"#\d+(#|$)", key)]  # no handler or step by its position
    assert not set(layer) & set(_TRAIN_YAML_OWNS)
    single = _parser(config_path("train"))
    layered = _parser(config_path("train"), config_path("multi_gpu_train"))
    for key in _TRAIN_YAML_OWNS:
        assert layered[key] == single[key], key


def test_a_handler_added_to_train_yaml_is_left_as_it_is_by_the_ddp_layer(tmp_path):
    train = _parser(config_path("train"))
    added = {"_target_": "cocoseg_monai.handlers.StopOnNonFiniteLoss"}
    extra = tmp_path / "extra.json"  # as if train.yaml had one more handler at the head of each list
    extra.write_text(json.dumps({key: [added, *train[key]] for key in ("train#handlers", "validate#handlers")}))
    single = _parser(config_path("train"), extra)
    layered = _parser(config_path("train"), extra, config_path("multi_gpu_train"))
    for key in ("train#handlers", "validate#handlers"):
        assert layered[key] == single[key] and layered[key][0] == added, key


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_writes_history_checkpoints_and_tensorboard_by_the_config(rank):
    parser = _parser(config_path("train"), config_path("multi_gpu_train"), rank=rank)
    assert parser.get_parsed_content("is_main") is (rank == 0)
    assert parser.get_parsed_content("history#enabled") is (rank == 0)
    assert parser.get_parsed_content("checkpointer#enabled") is (rank == 0)
    tensorboard = [
        f"{key}#{i}"
        for key in ("train#handlers", "validate#handlers")
        for i, handler in enumerate(parser[key])
        if isinstance(handler, dict) and "TensorBoard" in handler["_target_"]
    ]
    assert len(tensorboard) == 3
    for handler in tensorboard:
        assert parser.get_parsed_content(f"{handler}#_disabled_") is (rank > 0), handler


def test_one_process_is_the_main_one_and_never_waits():
    parser = _parser(config_path("train"))
    assert parser.get_parsed_content("rank") == 0 and parser.get_parsed_content("is_main") is True
    assert parser.get_parsed_content("init_distributed") is None
    assert not parser.get_parsed_content("in_process_group")()
    assert parser.get_parsed_content("barrier")() is None  # no process group: nothing to wait for
