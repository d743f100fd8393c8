"""AutocastInferer: mixed precision inside MONAI's engines, float32 out."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

from cocoseg_monai.inferers import AutocastInferer
from cocoseg_monai.networks import CoCoSegNet

from .conftest import TINY_FEATURES


def test_bf16_autocast_returns_float32_close_to_full_precision():
    net = CoCoSegNet(features=TINY_FEATURES).eval()
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        full = SimpleInferer()(x, net)
        mixed = AutocastInferer(SimpleInferer(), "cpu", torch.bfloat16)(x, net)
    assert mixed.dtype == torch.float32
    assert not torch.equal(mixed, full)  # bf16 did run
    torch.testing.assert_close(mixed, full, atol=0.1, rtol=0.05)


def test_disabled_autocast_is_the_wrapped_inferer():
    net = CoCoSegNet(features=TINY_FEATURES).eval()
    x = torch.rand(1, 2, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(AutocastInferer(enabled=False)(x, net), SimpleInferer()(x, net), rtol=0, atol=0)


def test_flip_averaging_is_the_mean_of_the_logits_and_their_mirror_images():
    from cocoseg_monai.inferers import FlipAveragingInferer

    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 2, 3, padding=1).eval()
    x = torch.rand(1, 2, 8, 6)
    with torch.no_grad():
        got = FlipAveragingInferer(SimpleInferer(), axes=[[2], [3]])(x, net)
        expected = (net(x) + net(x.flip(2)).flip(2) + net(x.flip(3)).flip(3)) / 3
        assert torch.allclose(got, expected, atol=1e-6)
        assert torch.equal(FlipAveragingInferer(SimpleInferer(), enabled=False)(x, net), net(x))
    with pytest.raises(ValueError, match="spatial axes"):
        FlipAveragingInferer(SimpleInferer(), axes=[[1]])
