"""CoCoSegNet: shapes, parameter counts, gradients, VGG loading and export."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from cocoseg_monai.cli import main as cli_main
from cocoseg_monai.networks import CoCoSegNet, count_parameters, parameter_breakdown
from cocoseg_monai.networks.blocks import TORCHVISION_VGG19_INDICES, VGG19Encoder

from .conftest import TINY_FEATURES


def _tiny(**kwargs) -> CoCoSegNet:
    return CoCoSegNet(features=TINY_FEATURES, **kwargs)


def test_default_parameter_counts_match_reference():
    counts = count_parameters(CoCoSegNet())
    assert counts.total == pytest.approx(13.4e6, rel=0.02)
    assert counts.frozen == pytest.approx(4.65e6, rel=0.03)
    assert counts.trainable == pytest.approx(8.77e6, rel=0.03)


def test_frozen_part_is_exactly_two_vgg19_stacks_up_to_relu3_4():
    # VGG19 convs up to conv3_4 with a grey first conv: 2,324,416 weights each.
    assert count_parameters(CoCoSegNet()).frozen == 2 * 2_324_416


def test_share_vgg_halves_the_frozen_part_and_keeps_the_trainable_part():
    separate = count_parameters(CoCoSegNet())
    shared = count_parameters(CoCoSegNet(share_vgg=True))
    assert shared.frozen * 2 == separate.frozen
    assert shared.trainable == separate.trainable


def test_parameter_breakdown_parts_add_up_to_total():
    parts = parameter_breakdown(_tiny(share_vgg=True))
    total = parts.pop("total")
    assert "vgg_pet" not in parts  # the shared encoder is listed once
    assert sum(p.total for p in parts.values()) == total.total


def test_default_forward_keeps_size_not_divisible_by_16():
    net = CoCoSegNet(out_channels=2).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 2, 96, 80))
    assert out.shape == (2, 2, 96, 80)


@pytest.mark.parametrize("size", [(37, 50), (8, 8), (64, 31)])
@pytest.mark.parametrize("out_channels", [1, 2, 4])
def test_forward_returns_logits_of_input_size_for_any_size(size, out_channels):
    net = _tiny(out_channels=out_channels)
    out = net(torch.rand(1, 2, *size))
    assert out.shape == (1, out_channels, *size)


def test_forward_rejects_single_channel_input_naming_shape():
    with pytest.raises(ValueError, match=r"\[1, 1, 32, 32\]"):
        _tiny()(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 3}, {"in_channels": 3}, {"features": (4, 8, 16)}])
def test_constructor_rejects_unsupported_shapes(kwargs):
    with pytest.raises(ValueError):
        CoCoSegNet(**{"features": TINY_FEATURES, **kwargs})


def test_gradients_reach_every_trainable_parameter_and_no_frozen_one():
    net = _tiny()
    # gamma starts at 0, which blocks the gradient to the CAM query/key convs; open it.
    for cam in net.attention:
        cam.gamma.data.fill_(0.5)
    net(torch.rand(2, 2, 32, 24)).sum().backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert name.startswith(("vgg_ct.", "vgg_pet.")), name
            assert p.grad is None, name
    assert count_parameters(net.vgg_ct).trainable == 0


def test_trainable_vgg_receives_gradients_when_not_frozen():
    net = _tiny(freeze_vgg=False)
    net(torch.rand(1, 2, 16, 16)).sum().backward()
    assert net.vgg_pet.conv1_1.weight.grad is not None


def test_log_says_vgg_is_random_and_frozen(caplog):
    with caplog.at_level(logging.WARNING):
        _tiny()
    assert "randomly initialised" in caplog.text and "frozen" in caplog.text


def _torchvision_vgg19_state_dict() -> dict[str, torch.Tensor]:
    """Random values under the real torchvision key names and shapes (features and classifier)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    sd, c_in, i = {}, 3, 0
    for v in cfg:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, c_in, 3, 3)
        sd[f"features.{i}.bias"] = torch.randn(v)
        c_in, i = v, i + 2
    sd["classifier.0.weight"] = torch.randn(16, 8)  # shape irrelevant: must be ignored
    return sd


def test_vgg_weights_land_in_the_right_layers_with_grey_first_conv(tmp_path):
    sd = _torchvision_vgg19_state_dict()
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    net = CoCoSegNet(vgg_weights=path)
    for encoder in (net.vgg_ct, net.vgg_pet):
        for name, index in TORCHVISION_VGG19_INDICES.items():
            conv = getattr(encoder, name)
            torch.testing.assert_close(conv.bias, sd[f"features.{index}.bias"])
            if name != "conv1_1":
                torch.testing.assert_close(conv.weight, sd[f"features.{index}.weight"])
        rgb = sd["features.0.weight"]
        grey = 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
        torch.testing.assert_close(encoder.conv1_1.weight, grey)
        assert not any(p.requires_grad for p in encoder.parameters())


def test_vgg_file_missing_keys_is_refused_naming_them(tmp_path):
    sd = _torchvision_vgg19_state_dict()
    del sd["features.14.weight"], sd["features.16.bias"]
    path = tmp_path / "truncated.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"features\.14\.weight.*features\.16\.bias") as err:
        VGG19Encoder().load_torchvision_state_dict(torch.load(path, weights_only=True), source=str(path))
    assert "truncated.pth" in str(err.value)


def test_vgg_file_with_wrong_shapes_is_refused_naming_key_and_shapes(tmp_path):
    sd = _torchvision_vgg19_state_dict()
    sd["features.7.weight"] = torch.randn(128, 64, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"features\.7\.weight: expected \(128, 128, 3, 3\), found \(128, 64, 3, 3\)"):
        CoCoSegNet(vgg_weights=path)


def test_truncated_vgg_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(_torchvision_vgg19_state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="could not read VGG19 weights: .*vgg19-dcbb9e9d.pth is no readable PyTorch checkpoint"):
        CoCoSegNet(vgg_weights=path)


def test_missing_vgg_file_is_refused_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        CoCoSegNet(vgg_weights=tmp_path / "nowhere.pth")


def test_vgg_weights_need_vgg19_widths():
    with pytest.raises(ValueError, match="features"):
        CoCoSegNet(features=TINY_FEATURES, vgg_weights="vgg19.pth")


@pytest.mark.parametrize("share_vgg", [False, True])
def test_torchscript_matches_eager(share_vgg):
    net = _tiny(share_vgg=share_vgg).eval()
    for cam in net.attention:
        cam.gamma.data.fill_(0.3)
    x = torch.rand(2, 2, 40, 36)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_onnx_export_matches_eager(tmp_path):
    pytest.importorskip("onnxscript", reason="onnxscript (dev extra) is needed by torch.onnx.export")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (dev extra) runs the exported model")
    net = _tiny().eval()
    for cam in net.attention:
        cam.gamma.data.fill_(0.3)
    x = torch.rand(1, 2, 40, 36)
    path = tmp_path / "cocoseg.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["logits"])
    (out,) = ort.InferenceSession(str(path)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), net(x), atol=1e-4, rtol=1e-4)


def test_params_command_prints_counts_as_json(capsys):
    assert cli_main(["params", "--features", *map(str, TINY_FEATURES), "--share_vgg", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    expected = count_parameters(_tiny(share_vgg=True))
    assert counts["total"] == expected.as_dict()
    assert set(counts) >= {"ct_encoder", "pet_encoder", "vgg_ct", "attention", "fusion", "decode", "head"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 4, 9, 7), (1, 1, 2, 2), (3, 5, 3, 6)])
def test_fast_2x2_max_pooling_gives_max_pool2d_exactly(shape, dtype):
    from cocoseg_monai.networks.blocks.pooling import max_pool_2x2

    x = torch.randn(shape).to(dtype)
    x.view(-1)[::7] = x.view(-1)[0]  # ties
    with torch.no_grad():
        assert torch.equal(max_pool_2x2(x), torch.nn.functional.max_pool2d(x, 2))


def test_fast_max_pooling_keeps_pytorchs_backward_where_a_gradient_is_recorded():
    from cocoseg_monai.networks.blocks.pooling import max_pool_2x2

    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    y = torch.randn(1, 2, 6, 6, requires_grad=True)
    with torch.no_grad():
        y.copy_(x)
    max_pool_2x2(x).sum().backward()
    torch.nn.functional.max_pool2d(y, 2).sum().backward()
    assert torch.equal(x.grad, y.grad) and x.grad.sum() == 18  # one element of each of the 18 windows


def test_nan_propagates_through_the_fast_pooling_as_through_max_pool2d():
    from cocoseg_monai.networks.blocks.pooling import max_pool_2x2

    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = float("nan")
    with torch.no_grad():
        fast, ref = max_pool_2x2(x), torch.nn.functional.max_pool2d(x, 2)
    assert torch.equal(torch.isnan(fast), torch.isnan(ref)) and torch.isnan(fast).sum() == 1
