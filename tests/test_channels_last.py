"""CoCoSegNet in channels_last memory format: every layer keeps the layout, and the values and
gradients equal NCHW's to floating-point rounding."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import BasicUNet
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

from cocoseg_monai.networks import CoCoSegNet, prefers_channels_last
from cocoseg_monai.networks.blocks import ChannelAttention, InstanceNorm2d, replace_instance_norms, stack_streams

CL = torch.channels_last


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=CL)


def _is_cl(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=CL) and not x.is_contiguous()


def _norm_pair(channels: int = 5) -> tuple[InstanceNorm2d, nn.InstanceNorm2d]:
    ours, ref = InstanceNorm2d(channels, affine=True), nn.InstanceNorm2d(channels, affine=True)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_instance_norm_keeps_channels_last_with_nn_instance_norm_values_and_gradients():
    torch.manual_seed(0)
    ours, ref = _norm_pair()
    x = torch.randn(3, 5, 32, 40) * 3 + 1
    grad = torch.randn(3, 5, 32, 40)
    xc, xr = _cl(x).requires_grad_(), x.clone().requires_grad_()
    y, y_ref = ours(xc), ref(xr)
    assert _is_cl(y)
    torch.testing.assert_close(y, y_ref)
    got = torch.autograd.grad(y, [xc, ours.weight, ours.bias], _cl(grad))
    want = torch.autograd.grad(y_ref, [xr, ref.weight, ref.bias], grad)
    assert _is_cl(got[0])
    for g, w in zip(got, want):  # sums over 3 x 32 x 40 values, in another order
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 5, 16, 24), (1, 128, 4, 4), (2, 3, 1, 7)])
def test_instance_norm_of_small_channels_last_maps_stays_channels_last_with_nn_values(shape):
    torch.manual_seed(0)
    ours, ref = _norm_pair(shape[1])
    x = torch.randn(shape) * 2 + 3
    xc, xr = _cl(x).requires_grad_(), x.clone().requires_grad_()
    y, y_ref = ours(xc), ref(xr)
    assert _is_cl(y)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(shape)
    (got,), (want,) = torch.autograd.grad(y, [xc], _cl(grad)), torch.autograd.grad(y_ref, [xr], grad)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_instance_norm_without_affine_parameters_and_of_an_empty_batch():
    torch.manual_seed(0)
    ours, ref = InstanceNorm2d(4), nn.InstanceNorm2d(4)
    x = _cl(torch.randn(2, 4, 8, 8)).requires_grad_()
    y = ours(x)
    assert _is_cl(y)
    torch.testing.assert_close(y, ref(x.detach()), rtol=1e-5, atol=1e-5)
    (dx,) = torch.autograd.grad(y.square().sum(), [x])
    assert _is_cl(dx) and dx.abs().max() < 1e-3  # a normalised map's squared sum does not depend on x
    empty = ours(_cl(torch.randn(0, 4, 8, 8)))
    assert empty.shape == (0, 4, 8, 8)


def test_instance_norm_is_nn_instance_norm_itself_on_nchw_and_unbatched_input():
    torch.manual_seed(0)
    ours, ref = _norm_pair()
    x = torch.randn(2, 5, 6, 4)
    assert torch.equal(ours(x), ref(x))
    assert torch.equal(ours(x[0]), ref(x[0]))


def test_instance_norm_under_bf16_autocast_gives_bf16_and_float_parameter_gradients():
    torch.manual_seed(0)
    ours, ref = _norm_pair()
    x = torch.randn(2, 5, 32, 32) * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(_cl(x.bfloat16()))
    assert y.dtype == torch.bfloat16 and _is_cl(y)
    torch.testing.assert_close(y.float(), ref(x), atol=0.05, rtol=0.02)
    (gw,) = torch.autograd.grad(y.float().square().sum(), [ours.weight])
    assert gw.dtype == torch.float32


def test_replace_instance_norms_keeps_the_parameters_and_the_state_dict():
    block = TwoConv(2, 3, 4, act="relu", norm=("instance", {"affine": True}), bias=True)
    tracking = nn.Sequential(nn.InstanceNorm2d(4, track_running_stats=True))
    keys, weights = list(block.state_dict()), [p for p in block.parameters()]
    assert replace_instance_norms(block) == 2
    assert replace_instance_norms(tracking) == 0  # running statistics: left as they are
    assert list(block.state_dict()) == keys
    assert all(a is b for a, b in zip(block.parameters(), weights))
    assert sum(type(m) is InstanceNorm2d for m in block.modules()) == 2
    assert not any(type(m) is nn.InstanceNorm2d for m in block.modules())


def test_channel_attention_channels_last_equals_nchw_and_stays_channels_last():
    torch.manual_seed(0)
    cam = ChannelAttention(spatial_dims=2, channels=6)
    with torch.no_grad():
        cam.gamma.fill_(0.7)
    x = torch.randn(2, 6, 9, 7)
    out = cam(x)
    cam_cl = ChannelAttention(spatial_dims=2, channels=6).to(memory_format=CL)
    cam_cl.load_state_dict(cam.state_dict())
    xc = _cl(x).requires_grad_()
    out_cl = cam_cl(xc)
    assert _is_cl(out_cl)
    torch.testing.assert_close(out_cl, out)
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(cam(xr).square().sum(), [xr])
    (g_cl,) = torch.autograd.grad(out_cl.square().sum(), [xc])
    torch.testing.assert_close(g_cl, g)


def test_stack_streams_keeps_the_layout():
    streams = [torch.randn(2, 3, 5, 4) for _ in range(4)]
    stacked = torch.cat(streams, 0)
    for x in (stacked, _cl(stacked)):
        out = stack_streams(x, 4)
        assert torch.equal(out, torch.cat(streams, 1))
        assert _is_cl(out) == _is_cl(x)


def test_cocoseg_channels_last_keeps_the_layout_in_every_layer_and_matches_nchw():
    torch.manual_seed(0)
    net = CoCoSegNet(features=(4, 8, 16, 32))
    with torch.no_grad():
        for cam in net.attention:
            cam.gamma.fill_(0.3)
    net_cl = CoCoSegNet(features=(4, 8, 16, 32)).to(memory_format=CL)
    net_cl.load_state_dict(net.state_dict())
    not_cl = []

    def check(module, inputs, output):  # every multi-channel map a layer receives or returns
        for t in (*inputs, output):
            if t.shape[1] > 1 and not _is_cl(t):
                not_cl.append(type(module).__name__)

    for m in net_cl.modules():
        if isinstance(m, (nn.Conv2d, nn.InstanceNorm2d, ChannelAttention, nn.Upsample)):
            m.register_forward_hook(check)
    x = torch.rand(2, 2, 32, 40)  # NCHW, as the bundle's inputs are
    y = torch.randint(0, 2, (2, 32, 40))
    loss = nn.CrossEntropyLoss()
    out_cl = net_cl(x)
    assert not not_cl, sorted(set(not_cl))
    assert _is_cl(out_cl)
    out = net(x)
    torch.testing.assert_close(out_cl, out, atol=1e-4, rtol=1e-4)
    grads = torch.autograd.grad(loss(out, y), [p for p in net.parameters() if p.requires_grad])
    grads_cl = torch.autograd.grad(loss(out_cl, y), [p for p in net_cl.parameters() if p.requires_grad])
    for g, g_cl in zip(grads, grads_cl):
        torch.testing.assert_close(g_cl, g, atol=1e-4, rtol=1e-3)


def test_prefers_channels_last_for_cocoseg_on_the_cpu_and_any_network_on_cuda():
    cocoseg, unet = CoCoSegNet(features=(4, 8, 16, 32)), BasicUNet(spatial_dims=2, in_channels=2, out_channels=2)
    assert prefers_channels_last(cocoseg, "cpu")
    assert not prefers_channels_last(unet, torch.device("cpu"))
    assert prefers_channels_last(unet, "cuda") and prefers_channels_last(cocoseg, "cuda:0")


@pytest.mark.parametrize("target,expected", [("cocoseg_monai.networks.nets.CoCoSegNet", True), (CoCoSegNet, True),
                                             ("SegResNet", False), ("monai.networks.nets.BasicUNet", False)])  # fmt: skip
def test_prefers_channels_last_from_a_bundle_target_without_building_it(target, expected):
    assert prefers_channels_last(target, "cpu") is expected


def test_an_unknown_network_target_is_named():
    with pytest.raises(ValueError, match=r"network 'nosuch\.Net' names no class"):
        prefers_channels_last("nosuch.Net", "cpu")


@pytest.mark.parametrize("config", ["train", "inference"])
def test_the_bundle_layout_and_its_checks_do_not_build_the_network(config):
    # train.yaml checks its settings (channels_last among them) before set_determinism: a network
    # built there would draw its initial weights unseeded, and a resumed run would not match
    from monai.bundle import ConfigParser

    from cocoseg_monai.bundle import config_path

    parser = ConfigParser()
    parser.read_config(str(config_path(config)))
    assert parser.get_parsed_content("channels_last") is True
    assert "network_def" not in parser.ref_resolver.resolved_content


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_scripted_cocoseg_runs_in_either_layout(memory_format):
    net = CoCoSegNet(features=(4, 8, 16, 32)).eval().to(memory_format=memory_format)
    x = torch.rand(1, 2, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mean,spread", [(100.0, 0.1), (1000.0, 0.1), (10.0, 0.001), (9.0, 1.0), (-5.0, 1.0)])
def test_instance_norm_is_exact_where_the_mean_dwarfs_the_spread(mean, spread):
    # a flat background: E[x^2] - E[x]^2 would cancel to nothing in float32
    torch.manual_seed(0)
    ours, _ = _norm_pair(4)
    x = mean + spread * torch.randn(2, 4, 32, 48)
    want = nn.functional.instance_norm(x.double(), weight=ours.weight.double(), bias=ours.bias.double())
    xc = _cl(x).requires_grad_()
    y = ours(xc)
    torch.testing.assert_close(y.double(), want, atol=1e-4, rtol=1e-4)
    grad = torch.randn(2, 4, 32, 48, dtype=torch.float64)
    xd = x.double().requires_grad_()
    (want_dx,) = torch.autograd.grad(
        nn.functional.instance_norm(xd, weight=ours.weight.double(), bias=ours.bias.double()), [xd], grad
    )
    (dx,) = torch.autograd.grad(y, [xc], _cl(grad.float()))
    torch.testing.assert_close(dx.double(), want_dx, atol=1e-3 * want_dx.abs().max().item(), rtol=1e-3)


def test_instance_norm_keeps_a_meta_tensor_and_trains_under_an_inplace_activation():
    # the bundle's batches are MetaTensors, and MONAI's blocks apply their activations in place
    ours, _ = _norm_pair(4)
    x = MetaTensor(torch.randn(2, 4, 32, 32), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    x.is_batch = True
    xc = _cl(x).requires_grad_()
    y = nn.LeakyReLU(inplace=True)(ours(xc))
    assert isinstance(y, MetaTensor) and y.is_batch and torch.equal(y.affine, x.affine)
    y.sum().backward()
    assert xc.grad is not None and ours.weight.grad is not None
