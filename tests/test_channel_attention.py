"""ChannelAttention matches CoCoNet's CAM definition."""

from __future__ import annotations

import torch

from cocoseg_monai.networks.blocks import ChannelAttention


def test_with_gamma_zero_output_equals_value_projection():
    cam = ChannelAttention(spatial_dims=2, channels=6)
    x = torch.randn(2, 6, 9, 7)
    torch.testing.assert_close(cam(x), cam.value(x))


def test_hand_computed_case():
    # 1x1 projections: Q = X, K = 2X, V = X + 1 (per pixel), gamma = 0.5, C = 2, N = 2.
    cam = ChannelAttention(spatial_dims=2, channels=2, kernel_size=1)
    with torch.no_grad():
        eye = torch.eye(2).view(2, 2, 1, 1)
        cam.query.weight.copy_(eye)
        cam.query.bias.zero_()
        cam.key.weight.copy_(2 * eye)
        cam.key.bias.zero_()
        cam.value.weight.copy_(eye)
        cam.value.bias.fill_(1.0)
        cam.gamma.fill_(0.5)
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]]).view(1, 2, 1, 2)  # channel rows, N = 2 columns
    # E = Q K^T = X (2X)^T = [[10, -4], [-4, 2]]; E' = rowmax - E = [[0, 14], [6, 0]]
    # A = softmax rows: [[1/(1+e^14), e^14/(1+e^14)], [e^6/(1+e^6), 1/(1+e^6)]]
    # V = [[2, 3], [1, 0]]; out = 0.5 * A V + V
    e14, e6 = torch.exp(torch.tensor(14.0)), torch.exp(torch.tensor(6.0))
    a = torch.tensor([[1 / (1 + e14), e14 / (1 + e14)], [e6 / (1 + e6), 1 / (1 + e6)]])
    v = torch.tensor([[2.0, 3.0], [1.0, 0.0]])
    expected = 0.5 * a @ v + v
    torch.testing.assert_close(cam(x).view(2, 2), expected)


def test_shape_and_dtype_are_kept_under_bfloat16():
    cam = ChannelAttention(spatial_dims=2, channels=4).to(torch.bfloat16)
    x = torch.randn(3, 4, 8, 8, dtype=torch.bfloat16)
    out = cam(x)
    assert out.shape == x.shape and out.dtype == torch.bfloat16
