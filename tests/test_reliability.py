"""Reliability: bad settings refused before any work, NaN losses, unsafe checkpoints, full disks."""

from __future__ import annotations

import errno
import json
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cocoseg_monai.atomic import atomic_torch_save, atomic_write_json
from cocoseg_monai.bundle import config_path, run_bundle
from cocoseg_monai.cli import main as cocoseg
from cocoseg_monai.handlers import NonFiniteLossError
from cocoseg_monai.losses import build_loss
from cocoseg_monai.errors import CheckpointError, SettingsError, project_cause
from cocoseg_monai.networks import CoCoSegNet, check_checkpoint, load_weights

from .conftest import TINY_FEATURES, TINY_RUN, error_chain

class NanLossAfter:
    """The combined loss, NaN from call ``after`` on (a stand-in for a diverging run)."""

    def __init__(self, after: int) -> None:
        self.after, self.calls, self.loss = after, 0, build_loss("combined")

    def __call__(self, pred, label):
        self.calls += 1
        loss = self.loss(pred, label)
        return loss * float("nan") if self.calls >= self.after else loss


class CodeOnUnpickle:
    """Unpickling this would create ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ---- settings: refused before any data is read or generated ---------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ({"batch_size": 0}, "'batch_size' must be a positive integer, got 0"),
        ({"batch_size": -2}, "'batch_size' must be a positive integer, got -2"),
        ({"val_ratio": 0.0}, "'val_ratio' must lie in (0, 1), got 0.0"),
        ({"val_ratio": 1.0}, "'val_ratio' must lie in (0, 1), got 1.0"),
        ({"loss_type": "hinge"}, "'loss_type' is 'hinge'; choose one of combined"),
        ({"max_epochs": 0}, "'max_epochs' must be a positive integer"),
        ({"learning_rate": -1e-3}, "'learning_rate' must be a positive number"),
        ({"dataset_dir": "/no/such/folder"}, "'dataset_dir': /no/such/folder does not exist"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, override, message):
    with pytest.raises(RuntimeError) as err:
        run_bundle([config_path("train")], "training", {**TINY_RUN, "logdir": str(tmp_path / "logs"),
                                                        "default_data_dir": str(tmp_path / "data"), **override})  # fmt: skip
    chain = error_chain(err.value)
    assert "SettingsError" in chain and message in chain
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()  # nothing made, nothing written


def test_cocoseg_train_answers_bad_settings_and_unknown_keys_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^cocoseg train: setting 'batch_size' must be a positive integer, got 0$"):
        cocoseg(["train", "--bs", "0"])
    with pytest.raises(SystemExit, match=r"--set patchsize: no such key in train; did you mean patch_size"):
        cocoseg(["train", "--set", "patchsize=[64,64]"])
    with pytest.raises(SystemExit, match=r"--set ct_windw: no such key in inference; did you mean ct_window"):
        (tmp_path / "w.pt").write_bytes(b"")
        cocoseg(["infer", "--ckpt", "w.pt", "--ct", "a.nii.gz", "--pet", "b.nii.gz", "--set", "ct_windw=[0,1]"])
    assert not (tmp_path / "logs").exists() and not (tmp_path / "data").exists()


def test_settings_check_names_each_range():
    from cocoseg_monai.settings import check_training_settings

    good = dict(max_epochs=1, batch_size=1, learning_rate=1e-4, val_ratio=0.2, test_ratio=0.1, loss_type="dice",
                num_samples=1, patch_size=[32, 32], dataset_dir="")  # fmt: skip
    check_training_settings(**good)
    for bad, text in [({"test_ratio": 0.8}, "'test_ratio'"), ({"patch_size": [32]}, "'patch_size'"),
                      ({"num_workers": -1}, "'num_workers'"), ({"batch_size": True}, "'batch_size'"),
                      ({"switches": {"resume": 1}}, "'resume' must be True or False, got 1$"),
                      ({"switches": {"freeze_vgg": "false"}}, "write --freeze_vgg False")]:  # fmt: skip
        with pytest.raises(SettingsError, match=text):
            check_training_settings(**{**good, **bad})


def test_default_loader_workers_are_4_at_most_the_usable_cpus(monkeypatch):
    import os

    from cocoseg_monai import settings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # a 2-CPU container
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host's count, which the process may not use
    assert settings.usable_cpus() == 2 and settings.default_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert settings.default_workers() == 4
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows: no affinity mask
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert settings.usable_cpus() == 3 and settings.default_workers() == 3


def test_more_loader_workers_than_cpus_are_kept_and_warned_once(monkeypatch, recwarn):
    import warnings

    from torch.utils.data import DataLoader

    from cocoseg_monai import settings

    monkeypatch.setattr(settings, "usable_cpus", lambda: 2)
    good = dict(max_epochs=1, batch_size=1, learning_rate=1e-4, val_ratio=0.2, test_ratio=0.1, loss_type="dice",
                num_samples=1, patch_size=[32, 32], dataset_dir="")  # fmt: skip
    settings.check_training_settings(**good, num_workers=2)
    assert not [w for w in recwarn if "num_workers" in str(w.message)]
    settings.check_training_settings(**good, num_workers=99)
    warned = [str(w.message) for w in recwarn if "num_workers" in str(w.message) or "worker processes" in str(w.message)]
    assert warned == ["setting 'num_workers' is 99 but this process may use 2 CPU(s): kept as given, though loader "
                      "workers beyond the CPUs only compete for them (the default is 2 here)"]  # fmt: skip
    # PyTorch's own warning about those workers (once per loader) is not repeated; others still show
    DataLoader(range(4), num_workers=99).check_worker_number_rationality()
    warnings.warn("This DataLoader will create 3 worker processes in total.", UserWarning)
    assert [str(w.message) for w in recwarn if "worker processes" in str(w.message)] == [
        "This DataLoader will create 3 worker processes in total."
    ]


# ---- numeric faults --------------------------------------------------------------------------


def test_nan_loss_stops_naming_epoch_and_iteration_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    # 12 training slices, 4 per batch (2 patches each) = 3 iterations per epoch: call 5 is epoch 2, iteration 2
    with pytest.raises(RuntimeError) as err:
        run_bundle([config_path("train")], "training", {
            **TINY_RUN, "dataset_dir": str(tiny_data), "logdir": str(tmp_path), "max_epochs": 3,
            "train#trainer#loss_function": {"_target_": "tests.test_reliability.NanLossAfter", "after": 5},
        })  # fmt: skip
    chain = error_chain(err.value)
    assert "NonFiniteLossError" in chain and "at epoch 2, iteration 2 of 3" in chain
    ckpt = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 3  # the checkpoint of epoch 1, untouched
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [1]


def test_nan_loss_message_names_epoch_iteration_and_the_way_on():
    from cocoseg_monai.handlers import StopOnNonFiniteLoss

    class Engine:  # the handler on its own: what it says for a NaN at the 3rd iteration of epoch 5
        state = type("S", (), {"output": {"loss": torch.tensor(float("nan"))}, "epoch": 5, "iteration": 43,
                               "epoch_length": 10})()  # fmt: skip

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 5, iteration 3 of 10 \(iteration 43"):
        StopOnNonFiniteLoss()(Engine())


# ---- unsafe checkpoints ----------------------------------------------------------------------


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint whose weights are real but which also carries a payload that would create
    ``marker`` when unpickled; returns (checkpoint, marker)."""
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"model": CoCoSegNet(features=TINY_FEATURES).state_dict(), "payload": CodeOnUnpickle(marker)}, evil)
    assert pickle.loads(pickle.dumps(CodeOnUnpickle(marker))) is None and marker.exists()  # the payload is real
    marker.unlink()
    return evil, marker


_REFUSAL = (r"refusing to load .*evil\.pth: it holds Python objects other than tensors and plain containers "
            r"\(it names .*\), which could run code when unpickled, so it was refused unread and nothing in it ran; "
            r"do not load it with torch\.load\(weights_only=False\) unless you trust where it came from$")  # fmt: skip


def test_checkpoint_carrying_code_is_refused_and_runs_nothing(tiny_data, tmp_path):
    evil, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=_REFUSAL):
        load_weights(CoCoSegNet(features=TINY_FEATURES), evil)
    with pytest.raises(CheckpointError, match=_REFUSAL):
        check_checkpoint(evil)
    with pytest.raises(RuntimeError) as err:  # fine-tuning start
        run_bundle([config_path("train")], "training", {
            **TINY_RUN, "dataset_dir": str(tiny_data), "logdir": str(tmp_path / "run2"), "init_ckpt": str(evil)})
    assert isinstance(project_cause(err.value), CheckpointError)
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["infer", "--ckpt", "{evil}", "--ct", "ct.nii.gz", "--pet", "pet.nii.gz"],
        ["eval", "--ckpt", "{evil}", "--logdir", "{tmp}"],
        ["train", "--resume", "--resume_ckpt", "{evil}", "--logdir", "{tmp}", "--dataset_root", ""],
        ["train", "--set", "init_ckpt={evil}", "--logdir", "{tmp}/run", "--dataset_root", "{data}", "--epoch", "1",
         "--set", "features=[4,8,16,32]", "--num_workers", "0"],
    ],
    ids=["infer", "eval", "train-resume", "train-init"],
)
def test_every_front_door_answers_a_checkpoint_carrying_code_in_one_line(command, tiny_data, tmp_path, monkeypatch):
    evil, marker = _evil_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [a.format(evil=evil, tmp=tmp_path, data=tiny_data) for a in command]
    with pytest.raises(SystemExit) as answer:
        cocoseg(argv)
    message = str(answer.value)
    assert "\n" not in message and message.startswith(f"cocoseg {argv[0]}: refusing to load {evil}")
    assert re.search(_REFUSAL, message) and "Weights only load failed" not in message
    assert not marker.exists()


@pytest.mark.parametrize("config", ["inference", "evaluate"])
def test_bundle_runs_refuse_a_checkpoint_carrying_code_before_loading_it(config, tmp_path):
    evil, marker = _evil_checkpoint(tmp_path)
    configs = [config_path("inference")] if config == "inference" else [config_path("train"), config_path("evaluate")]
    run_id = "run" if config == "inference" else "evaluating"
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps the error; run_bundle's callers unwrap it
        run_bundle(configs, run_id, {"ckpt_path": str(evil), "ct": "ct.nii.gz", "pet": "pet.nii.gz",
                                     "logdir": str(tmp_path / "run"), "dataset_dir": ""})  # fmt: skip
    cause = project_cause(err.value)
    assert isinstance(cause, CheckpointError) and re.search(_REFUSAL, str(cause))
    assert "Weights only load failed" not in error_chain(err.value)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_corrupt_checkpoint_is_named_as_unreadable(tmp_path):
    path = tmp_path / "latest.pth"
    torch.save({"model": CoCoSegNet(features=TINY_FEATURES).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"latest\.pth is no readable PyTorch checkpoint \(truncated, corrupt"):
        check_checkpoint(path)


# ---- outputs: atomic, and a full disk is named -------------------------------------------------


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    import os

    path = tmp_path / "latest.pth"
    atomic_torch_save({"epoch": 1}, path)
    history = tmp_path / "history.json"
    atomic_write_json(history, {"epoch": [1]})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"could not write .*latest.pth: No space left on device"):
        atomic_torch_save({"epoch": 2}, path)
    with pytest.raises(OSError, match=r"could not write .*history.json: No space left on device"):
        atomic_write_json(history, {"epoch": [1, 2]})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert json.loads(history.read_text()) == {"epoch": [1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "latest.pth"]  # no temporary left


def test_outputs_get_the_usual_permissions(tmp_path):
    import os
    import stat

    atomic_write_json(tmp_path / "a.json", {})
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# ---- kill and resume -------------------------------------------------------------------------

# test-only layer: the process kills itself (SIGKILL: no handler, no cleanup) at iteration 5 of
# the run, in the middle of epoch 2 (3 iterations per epoch)
_KILL_LAYER = """
initialize:
  - "$@check_settings"
  - "$monai.utils.set_determinism(seed=@random_seed)"
  - "$cocoseg_monai.atomic.atomic_write_json(os.path.join(@logdir, 'config.json'), @run_config)"
  - "$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once=5), lambda e: os.kill(os.getpid(), 9))"
"""


def _bundle_cli(logdir: Path, data: Path, extra_configs=(), **overrides) -> subprocess.CompletedProcess:
    configs = [str(config_path("train")), *map(str, extra_configs)]
    args = {**TINY_RUN, "dataset_dir": str(data), "logdir": str(logdir), "max_epochs": 3, **overrides}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs)]
    for key, value in args.items():
        # fire reads Python literals: False, not JSON's false (which it would take as text)
        text = value if isinstance(value, str) else str(value) if isinstance(value, bool) else json.dumps(value)
        cmd += [f"--{key}", text]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_run_killed_mid_epoch_and_resumed_ends_like_an_uninterrupted_run(tiny_data, tmp_path):
    whole = _bundle_cli(tmp_path / "whole", tiny_data)
    assert whole.returncode == 0, whole.stderr[-3000:]

    (tmp_path / "kill.yaml").write_text(_KILL_LAYER)
    killed = _bundle_cli(tmp_path / "run", tiny_data, extra_configs=[tmp_path / "kill.yaml"])
    assert killed.returncode == -signal.SIGKILL
    latest = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert latest["trainer"]["iteration"] == 3  # the end of epoch 1: epoch 2's work was lost, nothing else

    resumed = _bundle_cli(tmp_path / "run", tiny_data, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a = torch.load(tmp_path / "whole" / "latest.pth", weights_only=True)
    b = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 9
    for part in ("model", "ema"):
        for key in a[part]:
            torch.testing.assert_close(b[part][key], a[part][key], rtol=1e-5, atol=1e-6, msg=f"{part}.{key}")
    ha = json.loads((tmp_path / "whole" / "history.json").read_text())
    hb = json.loads((tmp_path / "run" / "history.json").read_text())
    assert hb["epoch"] == ha["epoch"] == [1, 2, 3]
    for key in ("val_dice", "val_loss", "train_loss", "lr"):
        assert hb[key] == pytest.approx(ha[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("key", ["report", "channels_last"])
def test_inference_refuses_a_switch_written_as_text_before_reading_anything(tmp_path, key):
    # fire reads `--report false` as the text "false", which Python takes for true
    from cocoseg_monai.bundle import bundle_dir, config_path, run_bundle

    weights = bundle_dir() / "models" / "model.pt"
    out = tmp_path / "out"
    with pytest.raises(Exception) as raised:  # MONAI's config error, caused by ours
        run_bundle([config_path("inference"), weights.parent / "plan.yaml"], run_id="run",
                   overrides={"ckpt_path": str(weights), "ct": str(tmp_path / "no_ct.nii.gz"),
                              "pet": str(tmp_path / "no_pet.nii.gz"), "output_dir": str(out), key: "false"})  # fmt: skip
    cause = raised.value
    while cause is not None and not isinstance(cause, SettingsError):
        cause = cause.__cause__
    assert cause is not None, raised.value
    assert str(cause) == f"setting '{key}' must be True or False, got 'false' (on the monai.bundle command line, " \
                         f"write --{key} False)"
    assert not out.exists()
