"""The bundle's training workflow: outputs, resume, atomic checkpoints, the `cocoseg train` front door."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from cocoseg_monai.atomic import atomic_torch_save
from cocoseg_monai.bundle import bundle_dir, config_path, run_bundle
from cocoseg_monai.cli import TRAIN_FLAGS, parse_args, train_overrides
from cocoseg_monai.data.phantom import PhantomConfig, write_dataset
from cocoseg_monai.handlers import HISTORY_KEYS
from cocoseg_monai.networks import CoCoSegNet
from cocoseg_monai.plan import load_plan

from .conftest import TINY_FEATURES, TINY_RUN, error_chain

def _train(data: Path, logdir: Path, **overrides) -> None:
    run_bundle(
        [config_path("train")],
        run_id="training",
        overrides={**TINY_RUN, "dataset_dir": str(data), "logdir": str(logdir), **overrides},
    )


@pytest.fixture(scope="module")
def two_epoch_run(tiny_data, tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("run")
    _train(tiny_data, logdir, max_epochs=2, save_freq=1)
    return logdir


def test_training_writes_every_output(two_epoch_run):
    logdir = two_epoch_run
    for name in ("config.json", "plan.yaml", "history.json", "datalist.json", "best_model.pth", "latest.pth"):
        assert (logdir / name).is_file(), name
    assert (logdir / "checkpoint_epoch_1.pth").is_file() and (logdir / "checkpoint_epoch_2.pth").is_file()
    assert any((logdir / "tensorboard").glob("events.out.tfevents.*"))
    history = json.loads((logdir / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    for key in HISTORY_KEYS:
        assert len(history[key]) == 2 and all(v is not None for v in history[key]), key
    assert history["best_val_dice"] == max(history["val_dice"])
    config = json.loads((logdir / "config.json").read_text())
    assert config["epoch"] == 2 and config["loss_type"] == "combined" and config["features"] == list(TINY_FEATURES)
    plan = load_plan(logdir / "plan.yaml")  # the PNG slices' spacing.json gives the target spacing
    assert plan["features"] == list(TINY_FEATURES) and plan["slice_size"] == [32, 32]
    assert plan["target_spacing"] == pytest.approx([500 / 48] * 2, abs=1e-4) == config["target_spacing"]


def test_checkpoint_holds_everything_needed_to_resume(two_epoch_run):
    ckpt = torch.load(two_epoch_run / "latest.pth", weights_only=True)
    assert {"model", "ema", "optimizer", "scheduler", "trainer", "history", "checkpointer"} <= set(ckpt)
    trainer = ckpt["trainer"]  # Ignite keeps the iteration; the epoch is iteration // epoch_length
    assert trainer["iteration"] == 2 * trainer["epoch_length"] > 0
    assert ckpt["checkpointer"]["best_metric"] is not None


def test_bundle_model_is_the_ema_state_dict_of_the_best_epoch(two_epoch_run):
    best = torch.load(two_epoch_run / "best_model.pth", weights_only=True)
    weights = torch.load(two_epoch_run / "models" / "model.pt", weights_only=True)
    net = CoCoSegNet(features=TINY_FEATURES)
    net.load_state_dict(weights)
    for key, value in best["ema"].items():
        torch.testing.assert_close(weights[key], value)


def test_resume_continues_at_next_epoch_with_same_optimizer_and_schedule(tiny_data, two_epoch_run, tmp_path):
    ckpt_path = two_epoch_run / "checkpoint_epoch_1.pth"
    saved = torch.load(ckpt_path, weights_only=True)
    (tmp_path / "datalist.json").write_text((two_epoch_run / "datalist.json").read_text())
    workflow = ConfigWorkflow(
        config_file=str(config_path("train")),
        meta_file=str(bundle_dir() / "configs" / "metadata.json"),
        logging_file=False,
        **{**TINY_RUN, "dataset_dir": str(tiny_data), "logdir": str(tmp_path), "max_epochs": 2},
        resume=True,
        resume_ckpt=str(ckpt_path),
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    workflow.parser.get_parsed_content("checkpoint_loader")(trainer)
    assert trainer.state.epoch == 1
    optimizer = workflow.parser.get_parsed_content("optimizer")
    scheduler = workflow.parser.get_parsed_content("lr_scheduler")
    assert scheduler.state_dict() == saved["scheduler"]
    state = optimizer.state_dict()
    assert state["param_groups"] == saved["optimizer"]["param_groups"]
    for i, s in saved["optimizer"]["state"].items():
        torch.testing.assert_close(state["state"][i]["exp_avg"], s["exp_avg"])

    _train(tiny_data, tmp_path, max_epochs=2, resume=True, resume_ckpt=str(ckpt_path))
    resumed = json.loads((tmp_path / "history.json").read_text())
    uninterrupted = json.loads((two_epoch_run / "history.json").read_text())
    assert resumed["epoch"] == [1, 2]
    assert resumed["lr"] == pytest.approx(uninterrupted["lr"])
    assert resumed["train_loss"][0] == uninterrupted["train_loss"][0]  # epoch 1 came from the checkpoint


def test_checkpoint_from_other_architecture_fails_naming_mismatched_keys(tiny_data, two_epoch_run, tmp_path):
    with pytest.raises(RuntimeError) as err:
        _train(
            tiny_data,
            tmp_path,
            max_epochs=2,
            features=[8, 16, 32, 64],
            resume=True,
            resume_ckpt=str(two_epoch_run / "latest.pth"),
        )
    assert "size mismatch for ct_encoder.level1.conv_0.conv.weight" in error_chain(err.value)


def _parsed(**overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_path("train")))
    parser.update({**TINY_RUN, **overrides})
    return parser


def test_init_ckpt_starts_the_network_and_its_ema_from_the_given_weights(two_epoch_run):
    weights = torch.load(two_epoch_run / "models" / "model.pt", weights_only=True)
    parser = _parsed(init_ckpt=str(two_epoch_run / "models" / "model.pt"), device="$torch.device('cpu')")
    for key in ("network", "ema_model"):
        state = parser.get_parsed_content(key).state_dict()
        assert all(torch.equal(state[k], weights[k]) for k in weights), key
    # a training checkpoint gives its EMA weights
    from cocoseg_monai.networks import load_weights

    best = torch.load(two_epoch_run / "best_model.pth", weights_only=True)
    net = load_weights(CoCoSegNet(features=TINY_FEATURES), two_epoch_run / "best_model.pth")
    assert all(torch.equal(v, best["ema"][k]) for k, v in net.state_dict().items())


def test_init_ckpt_of_another_width_fails_naming_the_file_and_keys(two_epoch_run):
    parser = _parsed(init_ckpt=str(two_epoch_run / "models" / "model.pt"), features=[8, 16, 32, 64])
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("network")
    chain = error_chain(err.value)
    assert "model.pt do not fit the network" in chain and "size mismatch for" in chain


def test_training_on_nifti_volumes_samples_and_validates_axial_slices(tmp_path):
    data = tmp_path / "volumes"
    write_dataset(data, patients=4, seed=5, fmt="nifti", config=PhantomConfig(size=48, slices=4))
    _train(data, tmp_path / "run", max_epochs=1, val_ratio=0.25, test_ratio=0.0)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["epoch"] == [1]
    # the validation Dice is the per-case Dice over the lesion cases that `cocoseg eval` scores
    # the exported weights (the EMA of epoch 1, the one validated) to, by its own code
    from cocoseg_monai.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(tmp_path / "run" / "models" / "model.pt"), "--logdir", str(tmp_path / "run"),
                 "--split", "val", "--output_dir", str(out), "--set", "num_workers=0"]) == 0  # fmt: skip
    scored = json.loads((out / "cocoseg_summary.json").read_text())["lesion_cases"]["dice"]
    assert scored["n"] >= 1 and history["val_dice"][0] == pytest.approx(scored["mean"], abs=1e-6)
    assert json.loads((tmp_path / "run" / "datalist.json").read_text())["image_format"] == "nifti"
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    assert load_plan(tmp_path / "run" / "plan.yaml")["target_spacing"] == pytest.approx([500 / 48] * 2, abs=1e-4)


def test_a_run_whose_validation_has_no_lesion_still_writes_its_model(tmp_path):
    data = tmp_path / "no_lesions"
    write_dataset(data, patients=3, seed=5, fmt="png", config=PhantomConfig(size=48, slices=4, lesion_free_fraction=1.0))
    _train(data, tmp_path / "run", max_epochs=1, val_ratio=0.34, test_ratio=0.0)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["best_epoch"] is None  # no epoch was ranked: every validation case is lesion-free
    weights = torch.load(tmp_path / "run" / "models" / "model.pt", weights_only=True)
    ema = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)["ema"]
    assert weights.keys() == ema.keys() and all(torch.equal(weights[k], ema[k]) for k in weights)
    # and the evaluation after it has weights to load
    from cocoseg_monai.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(tmp_path / "run" / "models" / "model.pt"), "--logdir", str(tmp_path / "run"),
                 "--split", "val", "--output_dir", str(out), "--set", "num_workers=0"]) == 0  # fmt: skip
    assert (out / "cocoseg_summary.json").is_file()


def test_interrupted_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    import cocoseg_monai.atomic as atomic

    path = tmp_path / "latest.pth"
    atomic_torch_save({"epoch": 1}, path)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="latest.pth"):
        atomic_torch_save({"epoch": 2, "weights": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]  # no temporary file left behind


def test_train_flags_map_to_bundle_keys(tmp_path):
    args = parse_args(
        ["train", "--epoch", "7", "--lr", "0.003", "--bs", "2", "--dataset_root", str(tmp_path), "--logdir", "out",
         "--val_ratio", "0.3", "--random_seed", "5", "--loss_type", "tversky", "--dice_weight", "0.7",
         "--ce_weight", "0.3", "--val_freq", "2", "--save_freq", "3", "--num_workers", "1", "--resume",
         "--resume_ckpt", "out/x.pth", "--set", "features=[8,16,32,64]"]
    )
    o = train_overrides(args, args._explicit)
    assert o["max_epochs"] == 7 and o["learning_rate"] == 0.003 and o["batch_size"] == 2
    assert o["dataset_dir"] == str(tmp_path) and o["logdir"] == "out" and o["val_ratio"] == 0.3
    assert o["random_seed"] == 5 and o["loss_type"] == "tversky" and o["dice_weight"] == 0.7
    assert o["ce_weight"] == 0.3 and o["val_freq"] == 2 and o["save_freq"] == 3 and o["num_workers"] == 1
    assert o["resume"] is True and o["resume_ckpt"] == "out/x.pth"
    assert o["device"] == "$torch.device('cpu')" and o["features"] == [8, 16, 32, 64]


def test_train_defaults_are_the_original_ones():
    from cocoseg_monai.settings import default_workers

    args = parse_args(["train"])
    expected = {"epoch": 500, "lr": 1e-4, "bs": 8, "dataset_root": "./dataset", "logdir": "./logs/",
                "use_gpu": False, "val_ratio": 0.2, "random_seed": 42, "loss_type": "combined",
                "dice_weight": 0.5, "ce_weight": 0.5, "val_freq": 1, "save_freq": 5, "num_workers": default_workers(),
                "resume": False, "resume_ckpt": "./logs/latest.pth"}
    assert {k: getattr(args, k) for k in expected} == expected


def test_train_default_loader_workers_are_4_at_most_the_usable_cpus():
    from cocoseg_monai.settings import usable_cpus

    assert TRAIN_FLAGS["num_workers"][1] == min(4, usable_cpus())
    args = parse_args(["train"])
    assert train_overrides(args, args._explicit)["num_workers"] == min(4, usable_cpus())
    args = parse_args(["train", "--num_workers", "64"])  # given: kept (check_training_settings warns)
    assert train_overrides(args, args._explicit)["num_workers"] == 64


def test_missing_default_dataset_root_falls_back_to_embedded_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = parse_args(["train"])
    assert train_overrides(args, args._explicit)["dataset_dir"] == ""
    args = parse_args(["train", "--dataset_root", ""])  # '' asks for the embedded data
    assert train_overrides(args, args._explicit)["dataset_dir"] == ""


@pytest.mark.parametrize("given", [["--dataset_root", "./dataset"], ["--dataset_root", "./datset"], ["--config", "c.json"]])
def test_dataset_root_given_but_missing_is_refused_naming_it(given, tmp_path, monkeypatch):
    from cocoseg_monai.cli import main
    from cocoseg_monai.data import DataError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps({"dataset_root": "./dataset"}))

    def no_run(*args, **kwargs):
        raise AssertionError("the bundle must not run on the embedded data instead")

    monkeypatch.setattr("cocoseg_monai.bundle.run_bundle", no_run)
    root = given[1] if given[0] == "--dataset_root" else "./dataset"
    args = parse_args(["train", *given])
    with pytest.raises(DataError, match=rf"^--dataset_root {root} does not exist"):
        train_overrides(args, args._explicit)
    with pytest.raises(SystemExit, match=rf"^cocoseg train: --dataset_root {root} does not exist \(give --dataset_root ''"):
        main(["train", *given])


def test_config_file_values_sit_between_defaults_and_flags(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epoch": 50, "bs": 16, "loss_type": "focal"}))
    args = parse_args(["train", "--config", str(cfg), "--bs", "4"])
    assert (args.epoch, args.bs, args.loss_type, args.lr) == (50, 4, "focal", 1e-4)


def test_config_file_with_unknown_key_is_refused_naming_it(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epochs": 50}))
    with pytest.raises(SystemExit, match="epochs"):
        parse_args(["train", "--config", str(cfg)])


@pytest.mark.parametrize("name", ["default_config.json", "focal_loss_config.json", "large_batch_config.json"])
def test_shipped_config_files_parse(name):
    path = Path(__file__).resolve().parents[1] / "configs" / name
    values = json.loads(path.read_text())
    args = parse_args(["train", "--config", str(path)])
    assert set(values) <= set(TRAIN_FLAGS) and values
    assert {k: getattr(args, k) for k in values} == values  # every value in the file, as written
    assert {k: getattr(args, k) for k in TRAIN_FLAGS if k not in values} == {
        k: default for k, (_, default) in TRAIN_FLAGS.items() if k not in values
    }  # the defaults for the rest


def test_eval_takes_the_training_runs_plan(two_epoch_run, tmp_path):
    from cocoseg_monai.cli import eval_overrides, run_plan

    assert run_plan(two_epoch_run) == two_epoch_run / "plan.yaml"
    assert "features" not in eval_overrides(parse_args(["eval", "--run", str(two_epoch_run)]))  # the plan gives them
    # the command line still overrides (the bundle refuses what contradicts the plan)
    given = eval_overrides(parse_args(["eval", "--logdir", str(two_epoch_run), "--features", "8", "16", "32", "64",
                                       "--set", "ct_window=[-1000,1000]"]))  # fmt: skip
    assert given["features"] == [8, 16, 32, 64] and given["ct_window"] == [-1000, 1000]
    # no run there: the bundle's defaults; a run made before plans: the command that writes its plan
    assert run_plan(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"features": [8, 16, 32, 64]}))
    with pytest.raises(SystemExit, match=rf"cocoseg plan {tmp_path}"):
        run_plan(tmp_path)


def test_plot_history_writes_training_curves_png(two_epoch_run, tmp_path):
    from PIL import Image

    from cocoseg_monai.cli import main

    out = tmp_path / "curves.png"
    assert main(["plot-history", str(two_epoch_run), "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (1600, 360)


def test_plot_history_names_a_missing_history(tmp_path):
    from cocoseg_monai.visualize import plot_history

    with pytest.raises(FileNotFoundError, match="history.json"):
        plot_history(tmp_path / "history.json")


def test_eval_scores_each_case_with_baselines_and_saves_pictures(tiny_data, two_epoch_run, tmp_path):
    import csv

    from cocoseg_monai.cli import main

    out = tmp_path / "eval"
    # no --features: the widths (and window, intensities, spacing) come from the run's plan
    argv = ["eval", "--ckpt", str(two_epoch_run / "models" / "model.pt"), "--dataset_root", str(tiny_data),
            "--logdir", str(two_epoch_run), "--split", "val", "--save_predictions", "--output_dir", str(out),
            "--spacing", "3.9", "3.9", "3.0", "--set", "num_workers=0"]
    assert main(argv) == 0
    val_patients = {i["patient"] for i in json.loads((two_epoch_run / "datalist.json").read_text())["validation"]}
    for method in ("cocoseg", "suv2.5", "suv4.0", "suvmax41"):
        rows = list(csv.DictReader((out / f"{method}_cases.csv").open()))
        assert {r["case"] for r in rows} == val_patients, method
        summary = json.loads((out / f"{method}_summary.json").read_text())
        assert summary["cases"] == len(val_patients) and "false_positive_volume_ml" in summary["all_cases"]
    assert sorted(p.name for p in (out / "predictions").glob("*_seg.nii.gz")) == sorted(
        f"{p}_seg.nii.gz" for p in val_patients
    )
    val_slices = [Path(i["image"]).name for i in json.loads((two_epoch_run / "datalist.json").read_text())["validation"]]
    assert sorted(p.name for p in (out / "predictions").glob("*_seg.png")) == sorted(
        n.replace(".png", "_seg.png") for n in val_slices
    )
