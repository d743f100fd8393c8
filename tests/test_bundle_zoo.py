"""The bundle passes MONAI's own checks as the model zoo runs them: the workflow properties of the
training, evaluation and inference configs, the network's input and output against the metadata,
the TorchScript export, and loading the network with its weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_net_in_out

from cocoseg_monai.bundle import bundle_dir, config_path, load_network
from cocoseg_monai.plan import load_plan

from .conftest import TINY_FEATURES, TINY_RUN, tiny_network

SHIPPED = bundle_dir() / "models" / "model.pt"
needs_shipped_weights = pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} not found: no shipped weights to check")


def _meta_file() -> str:
    return str(bundle_dir() / "configs" / "metadata.json")


def _initialized(configs, workflow_type: str, **overrides) -> ConfigWorkflow:
    """A workflow of ``configs`` after ``initialize``, as the zoo's unit tests check it (MONAI
    resolves a property only in an initialized workflow)."""
    workflow = ConfigWorkflow(
        config_file=[str(c) for c in configs],
        meta_file=_meta_file(),
        logging_file=False,
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    return workflow


def _train_parser(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(config_path("train")))
    parser.update({**TINY_RUN, **overrides})
    return parser


def _handler_index(parser: ConfigParser, predicate) -> int:
    return next(i for i, h in enumerate(parser["train#handlers"]) if predicate(str(h["_target_"])))


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A training run's folder without the training: the split and plan written by `initialize`,
    and tiny weights of the plan's widths as ``models/model.pt``."""
    logdir = tmp_path_factory.mktemp("zoo_run")
    _initialized([config_path("train")], "train", **TINY_RUN, dataset_dir=str(tiny_data), logdir=str(logdir))
    (logdir / "models").mkdir(exist_ok=True)
    torch.save(tiny_network().state_dict(), logdir / "models" / "model.pt")
    return logdir


# ---- workflow properties (monai.bundle.properties) -----------------------------------------------


def test_training_config_defines_every_training_property_under_monais_ids(tiny_data, tmp_path):
    workflow = _initialized([config_path("train")], "train", **TINY_RUN, dataset_dir=str(tiny_data), logdir=str(tmp_path))
    assert workflow.check_properties() == []


@pytest.mark.parametrize("workflow_type", ["eval", "train"])
def test_evaluation_configs_define_every_property_under_monais_ids(trained_run, tiny_data, workflow_type):
    """train.yaml + evaluate.yaml + the run's plan, as `cocoseg eval` composes them: complete as
    an evaluation workflow, and still as the training workflow it overrides."""
    workflow = _initialized(
        [config_path("train"), config_path("evaluate"), trained_run / "plan.yaml"],
        workflow_type,
        **TINY_RUN,
        dataset_dir=str(tiny_data),
        logdir=str(trained_run),
        ckpt_path=str(trained_run / "models" / "model.pt"),
        val_roi_size="$@slice_size or @patch_size",
    )
    assert workflow.check_properties() == []


def test_inference_config_defines_every_inference_property_under_monais_ids(trained_run, tiny_data):
    workflow = _initialized(
        [config_path("inference")],
        "infer",
        bundle_root=str(bundle_dir()),
        ckpt_path=str(trained_run / "models" / "model.pt"),
        dataset_dir=str(tiny_data),
    )
    assert workflow.check_properties() == []


def test_every_training_handler_is_an_entry_with_a_target():
    """MONAI's property check reads ``_target_`` of each entry of ``train#handlers``."""
    assert all(isinstance(h, dict) and "_target_" in h for h in _train_parser()["train#handlers"])


def test_the_ema_entry_is_the_ema_handler_itself_attached_before_validation():
    parser = _train_parser()
    ema = _handler_index(parser, lambda target: "@ema" in target)
    assert ema + 1 == _handler_index(parser, lambda target: target == "ValidationHandler")
    assert parser.get_parsed_content(f"train#handlers#{ema}") is parser.get_parsed_content("ema")


def test_val_freq_sets_the_validation_interval_monai_reads_as_val_interval():
    parser = _train_parser(val_freq=3)
    validation = _handler_index(parser, lambda target: target == "ValidationHandler")
    assert parser[f"train#handlers#{validation}#interval"] == "@val_interval"
    assert parser.get_parsed_content(f"train#handlers#{validation}#interval") == 3


# ---- network input and output, TorchScript export ------------------------------------------------


def test_inference_network_fits_the_metadatas_input_and_output(trained_run):
    verify_net_in_out(
        net_id="network_def",
        meta_file=_meta_file(),
        config_file=str(config_path("inference")),
        bundle_root=str(bundle_dir()),
        ckpt_path=str(trained_run / "models" / "model.pt"),
        device="cpu",
        n=2,
    )


@needs_shipped_weights
def test_shipped_network_fits_the_metadatas_input_and_output():
    verify_net_in_out(
        net_id="network_def",
        meta_file=_meta_file(),
        config_file=str(config_path("inference")),
        bundle_root=str(bundle_dir()),
        device="cpu",
    )


def _export(weights: Path, filepath: Path, **overrides) -> torch.jit.ScriptModule:
    filepath.parent.mkdir(parents=True, exist_ok=True)
    ckpt_export(
        net_id="network_def",
        filepath=str(filepath),
        ckpt_file=str(weights),
        meta_file=_meta_file(),
        config_file=str(config_path("inference")),
        bundle_root=str(bundle_dir()),
        **overrides,
    )
    return torch.jit.load(str(filepath))


def test_exported_torchscript_reloads_and_matches_the_eager_network(trained_run, tmp_path):
    weights = trained_run / "models" / "model.pt"
    scripted = _export(weights, tmp_path / "model.ts", ckpt_path=str(weights))
    x = torch.rand(1, 2, 48, 40)  # no multiple of 8: the network's own padding is scripted too
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), load_network(ckpt=weights)(x))


def test_exported_torchscript_loads_with_monai_bundle_load(trained_run, tmp_path):
    import monai.bundle

    weights = trained_run / "models" / "model.pt"
    _export(weights, tmp_path / "cocoseg" / "models" / "model.ts", ckpt_path=str(weights))
    module, meta, _ = monai.bundle.load(name="cocoseg", bundle_dir=str(tmp_path), load_ts_module=True, device="cpu")
    assert meta["network_data_format"]["inputs"]["image"]["channel_def"] == {"0": "CT", "1": "PET"}
    assert module(torch.rand(1, 2, 32, 32)).shape == (1, 2, 32, 32)


@needs_shipped_weights
def test_shipped_weights_export_to_torchscript_matching_the_eager_network(tmp_path):
    scripted = _export(SHIPPED, tmp_path / "model.ts")
    x = torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), load_network()(x))


# ---- loading the network with its weights ---------------------------------------------------------


def test_load_network_builds_the_plans_network_with_the_weights_in_eval_mode(trained_run):
    weights = trained_run / "models" / "model.pt"
    network = load_network(ckpt=weights)
    assert not network.training and network.features == TINY_FEATURES
    saved = torch.load(weights, weights_only=True)
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, saved[key])


def test_load_network_names_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_network(ckpt=tmp_path / "absent.pt")


@needs_shipped_weights
def test_load_network_defaults_to_the_shipped_weights_under_their_plan():
    network = load_network()
    assert not network.training
    assert list(network.features) == load_plan(SHIPPED.parent / "plan.yaml")["features"]


def test_bundle_has_the_zoos_layout_and_lists_its_weights_with_their_hash():
    import yaml

    from cocoseg_monai.release import sha256

    root = bundle_dir()
    for name in ("configs/metadata.json", "configs/inference.yaml", "configs/train.yaml", "docs/README.md",
                 "LICENSE", "large_files.yml", "models/model.pt", "models/plan.yaml"):
        assert (root / name).is_file(), name
    assert SHIPPED.stat().st_size < 25 * 2**20  # the zoo's limit for a committed file
    listed = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    assert [(f["path"], f["hash_type"], f["hash_val"]) for f in listed] == [("models/model.pt", "sha256", sha256(SHIPPED))]
    load_plan(root / "models" / "plan.yaml")  # complete and readable


def test_version_is_in_the_changelog_and_the_package_the_bundle_and_the_app_agree():
    import json

    import cocoseg_monai

    meta = json.loads(Path(_meta_file()).read_text())
    assert meta["version"] in meta["changelog"]
    assert max(meta["changelog"], key=lambda v: tuple(int(x) for x in v.split("."))) == meta["version"]
    assert meta["version"] == cocoseg_monai.__version__ == meta["required_packages_version"]["cocoseg-monai"]
    assert load_plan(bundle_dir() / "models" / "plan.yaml")["package_version"] == cocoseg_monai.__version__
    # the figures are the shipped run's, as `cocoseg publish` wrote them
    assert set(meta["eval_metrics"]) >= {"val_mean_dice_per_case", "best_epoch", "epochs", "note"}
