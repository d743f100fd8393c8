"""Channel attention module (CAM) as CoCoNet defines it."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from monai.networks.layers.factories import Conv
from torch import nn
from torch.autograd.function import once_differentiable

from .norm import is_channels_last

__all__ = ["ChannelAttention"]


class ChannelAttention(nn.Module):
    """DANet-style channel self-attention with convolutional projections (CoCoNet's CAM).

    For a feature map ``X`` of shape ``[C, *spatial]`` with ``N`` spatial positions:
    ``Q, K, V`` are three ``kernel_size`` convolutions ``C -> C`` reshaped to ``C x N``;
    ``E = Q K^T`` (``C x C``); ``E' = rowmax(E) - E``; ``A = softmax(E')`` per row;
    ``out = gamma * (A V) + V`` with ``gamma`` a learned scalar that starts at 0, so a freshly
    built module passes the value projection through unchanged.

    The energy ``E`` and its softmax are computed in float32 whatever the input dtype, autocast
    included: ``E`` sums ``N`` products (262144 at 512x512), which overflows float16, and a
    bfloat16 ``E`` would be rounded to 8 significant bits before the softmax exponentiates it.
    Its gradients are computed in the input's dtype, as autocast computes those of any product.
    A channels_last input is computed on channels-last views (the same products, no layout
    conversion) and gives a channels_last output.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: number of input and output channels ``C``.
        kernel_size: kernel of the Q, K, V convolutions; 3 as in CoCoNet, 1 for a cheaper
            variant with ~9x fewer parameters and FLOPs in the projections.

    Input ``[B, C, *spatial]``; output of the same shape and dtype.

    Example::

        >>> cam = ChannelAttention(spatial_dims=2, channels=64)
        >>> cam(torch.rand(2, 64, 32, 32)).shape
        torch.Size([2, 64, 32, 32])
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}.")
        conv_type = Conv[Conv.CONV, spatial_dims]
        padding = kernel_size // 2
        self.query = conv_type(channels, channels, kernel_size=kernel_size, padding=padding)
        self.key = conv_type(channels, channels, kernel_size=kernel_size, padding=padding)
        self.value = conv_type(channels, channels, kernel_size=kernel_size, padding=padding)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        q, k, v = self.query(x), self.key(x), self.value(x)
        if not torch.jit.is_scripting() and is_channels_last(v):
            out = self._attend_channels_last(q, k, v)
        else:
            q_rows, k_columns = q.reshape(b, c, -1), k.reshape(b, c, -1).transpose(1, 2)
            if torch.jit.is_scripting():  # TorchScript has no autocast to switch off
                energy = torch.bmm(q_rows.float(), k_columns.float())
            else:
                energy = self._energy(q_rows, k_columns)
            out = torch.bmm(_attention(energy).to(v.dtype), v.reshape(b, c, -1)).reshape(v.shape)
        return self.gamma.to(v.dtype) * out + v

    @torch.jit.unused
    def _energy(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _Energy.apply(a, b)

    @torch.jit.unused
    def _attend_channels_last(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same products on ``[B, N, C]`` views of channels_last maps: no copy in or out."""
        b, c = v.shape[0], v.shape[1]
        q, k, vt = (t.movedim(1, -1).reshape(b, -1, c) for t in (q, k, v))
        energy = _Energy.apply(q.transpose(1, 2), k)
        out_t = torch.bmm(vt, _attention(energy).to(v.dtype).transpose(1, 2))
        return out_t.reshape((b,) + v.shape[2:] + (c,)).movedim(-1, 1)


class _Energy(torch.autograd.Function):
    """``a @ b`` (``[B, C, N] @ [B, N, C]``) summed and returned in float32, autocast or not.

    The gradients come back in the inputs' dtype (the product of the float32 gradient, cast, with
    the other input), each stored like its input: a transposed view gets a transposed view, so a
    channels_last map's gradient needs no copy.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        with _autocast_off(a.device):
            return torch.bmm(a.float(), b.float())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad = grad.to(a.dtype)
        with _autocast_off(a.device):
            da = _bmm_like(a, grad, b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
            db = _bmm_like(b, a.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return da, db


def _autocast_off(device: torch.device):
    # devices without autocast (the meta device of FLOP counts) have nothing to switch off
    return torch.autocast(device.type, enabled=False) if torch.amp.is_autocast_available(device.type) else nullcontext()


def _bmm_like(like: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x @ y``, stored as ``like`` is: a transposed view when ``like`` is one."""
    if like.transpose(1, 2).is_contiguous() and not like.is_contiguous():
        return torch.bmm(y.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2)
    return torch.bmm(x, y)


def _attention(energy: torch.Tensor) -> torch.Tensor:
    """Row softmax of ``rowmax(E) - E``."""
    return torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=-1)
