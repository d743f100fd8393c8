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


def _scaled_identity_cam(channels: int) -> ChannelAttention:
    """1x1 projections Q = K = V = X and gamma = 1: the energy is X X^T."""
    cam = ChannelAttention(spatial_dims=2, channels=channels, kernel_size=1)
    with torch.no_grad():
        for conv in (cam.query, cam.key, cam.value):
            conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            conv.bias.zero_()
        cam.gamma.fill_(1.0)
    return cam


def test_energy_beyond_float16_range_stays_finite_under_float16_autocast():
    # channel c is s_c * u with u in [4, 6] on 64 x 64 pixels: every energy is above 1e5, beyond
    # float16's 65504, and each row's smallest energy (the column d = 0) leads by thousands, so the
    # attention picks channel 0 in any precision that does not overflow
    torch.manual_seed(0)
    cam = _scaled_identity_cam(4)
    u = 4 + 2 * torch.rand(1, 1, 64, 64)
    x = torch.cat([s * u for s in (1.0, 1.5, 2.0, 2.5)], 1)
    expected = cam(x)
    assert torch.isfinite(expected).all()
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.autocast("cpu", dtype=torch.float16):
            out = cam.to(memory_format=layout)(x.contiguous(memory_format=layout))
        assert out.dtype == torch.float16 and torch.isfinite(out).all(), layout
        torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=1e-2)


def test_energy_is_float32_under_bfloat16_autocast():
    # energies around 1e3 whose rows differ by a few units: a bfloat16 energy (8 bits of mantissa,
    # steps of 4 at 1e3) would move the softmax by whole units; a float32 one matches float32
    torch.manual_seed(0)
    cam = _scaled_identity_cam(3)
    x = (1 + 0.05 * torch.randn(1, 3, 16, 16)).to(torch.bfloat16).float()  # exactly representable
    q = x.reshape(3, -1)
    energy = q @ q.T
    assert energy.min() > 200  # beyond bfloat16's exact integers
    attention = torch.softmax(energy.amax(-1, keepdim=True) - energy, -1)
    expected = (attention @ q + q).reshape(x.shape)
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = cam.to(memory_format=layout)(x.contiguous(memory_format=layout))
        # the output itself is bfloat16 (2 significant digits after 3 bits): compare at that precision
        torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)


def test_energy_gradients_equal_those_of_a_plain_product_in_either_layout():
    from cocoseg_monai.networks.blocks.channel_attention import _Energy

    torch.manual_seed(0)
    for transposed_a, transposed_b in ((False, False), (True, False), (False, True), (True, True)):
        a0 = torch.randn(2, 5, 7).double()
        b0 = torch.randn(2, 7, 5).double()
        # a channels_last map's [B, C, N] view is the transpose of a contiguous [B, N, C] tensor
        a = (a0.transpose(1, 2).contiguous().transpose(1, 2) if transposed_a else a0.clone()).requires_grad_()
        b = (b0.transpose(1, 2).contiguous().transpose(1, 2) if transposed_b else b0.clone()).requires_grad_()
        weight = torch.randn(2, 5, 5)
        out = _Energy.apply(a, b)
        assert out.dtype == torch.float32
        (out * weight).sum().backward()
        a_ref, b_ref = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        (torch.bmm(a_ref, b_ref) * weight.double()).sum().backward()
        torch.testing.assert_close(out.double(), torch.bmm(a0, b0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.grad, a_ref.grad)
        torch.testing.assert_close(b.grad, b_ref.grad)
        assert a.grad.dtype == torch.float64 and a.grad.stride() == a.stride(), (transposed_a, a.grad.stride())
        assert b.grad.stride() == b.stride(), (transposed_b, b.grad.stride())
