"""The MONAI Bundle's own tooling accepts the bundle: verify_net_in_out, ckpt_export."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ckpt_export, verify_net_in_out

from cocoseg_monai.bundle import bundle_dir, config_path
from cocoseg_monai.networks import CoCoSegNet

from .conftest import TINY_FEATURES


def _bundle_args() -> dict:
    return {
        "meta_file": str(bundle_dir() / "configs" / "metadata.json"),
        "config_file": str(config_path("train")),
        "features": list(TINY_FEATURES),
    }


def test_verify_net_in_out_passes():
    verify_net_in_out(net_id="network_def", n=2, any=16, device="cpu", **_bundle_args())


def test_ckpt_export_writes_torchscript_matching_eager(tmp_path):
    net = CoCoSegNet(features=TINY_FEATURES).eval()
    for cam in net.attention:
        cam.gamma.data.fill_(0.2)
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts_path = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_path), ckpt_file=str(ckpt), **_bundle_args())
    loaded = torch.jit.load(str(ts_path))
    x = torch.rand(1, 2, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_metadata_declares_two_channel_ct_pet_input():
    import json

    meta = json.loads((bundle_dir() / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 2 and image["channel_def"] == {"0": "CT", "1": "PET"}
    assert "required_packages_version" in meta and "optional_packages_version" not in meta


@pytest.mark.parametrize("run_id", ["run", "training"])
def test_train_config_defines_both_run_ids(run_id):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_path("train")))
    assert run_id in parser


@pytest.mark.parametrize("base", ["train", "inference"])
def test_efficient_preset_layer_builds_the_preset_network(base):
    from monai.bundle import ConfigParser

    from cocoseg_monai.networks import COCOSEG_PRESETS

    parser = ConfigParser()
    parser.read_config([str(config_path(base)), str(config_path("efficient"))])
    net = parser.get_parsed_content("network_def")
    preset = CoCoSegNet(**COCOSEG_PRESETS["efficient"])
    assert net.state_dict().keys() == preset.state_dict().keys()
    assert all(v.shape == preset.state_dict()[k].shape for k, v in net.state_dict().items())
    assert not hasattr(net, "vgg_pet") or net.vgg_pet is net.vgg_ct  # one VGG19 shared by CT and PET


@pytest.mark.parametrize("key", ["ct_window", "suv_max", "features", "axcodes", "ct_png_offset", "pet_png_scale"])
def test_training_and_inference_configs_take_their_defaults_from_the_plan(key, tmp_path):
    """A model run with another CT window or SUV ceiling than it was trained with sees other
    inputs: the configs and the transforms take these settings from one home, the plan's defaults."""
    from monai.bundle import ConfigParser

    from cocoseg_monai.plan import DEFAULT_PLAN
    from cocoseg_monai.transforms import DEFAULT_CT_WINDOW, DEFAULT_SUV_MAX

    assert list(DEFAULT_CT_WINDOW) == DEFAULT_PLAN["ct_window"] and DEFAULT_SUV_MAX == DEFAULT_PLAN["suv_max"]
    for name in ("train", "inference"):
        parser = ConfigParser()
        parser.read_config(str(config_path(name)))
        parser["ckpt_path"] = str(tmp_path / "weights_without_plan.pt")
        value = parser.get_parsed_content(key)
        assert value == DEFAULT_PLAN[key], f"{name}.yaml {key} {value} != the plan's default {DEFAULT_PLAN[key]}"
