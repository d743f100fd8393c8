"""Instance normalisation that keeps a channels_last tensor channels_last on the CPU.

ATen's ``instance_norm`` makes its input contiguous (NCHW) before normalising, so in a network
whose convolutions run channels_last every normalisation converts its input and its gradient to
NCHW and every following convolution converts them back. :class:`InstanceNorm2d` normalises a
channels_last map as group normalisation with one group per channel (the same statistics: each
sample's channel over its pixels), which ATen runs channels_last, after shifting it by an estimate
of its mean (ATen's group norm takes the variance as E[x^2] - E[x]^2, which cancels when the mean
dwarfs the spread). Its backward runs on NCHW copies, because ATen's channels_last group norm
backward is slow with one channel per group (32 against 2.4 ms on 8 x 16 x 128 x 128 bf16 on a
2-core AMD EPYC), and maps under 32 x 32 pixels are normalised as NCHW (below). Anything else
(NCHW, CUDA, running statistics, TorchScript) is ``nn.InstanceNorm2d``'s own computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["InstanceNorm2d", "is_channels_last", "replace_instance_norms"]


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is stored channels_last (and not also NCHW-contiguous, as 1-channel maps are)."""
    if x.dim() == 4:
        return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if x.dim() == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    return False


#: ATen's channels_last group norm takes another, much slower path below 32 x 32 pixels (4 against
#: 0.2 ms for 8 x 128 x 16 x 16 bf16 on a 2-core AMD EPYC): smaller maps are normalised as NCHW,
#: whose conversions cost little at that size.
_MIN_CHANNELS_LAST_PIXELS = 1024


class _InstanceNormChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        n, c = x.shape[:2]
        hw = x.numel() // max(n * c, 1)
        # ATen's group norm takes the variance as E[x^2] - E[x]^2, which cancels catastrophically
        # when a channel's mean is large against its spread (a flat background). Normalisation
        # ignores a per-channel shift, so the input is first shifted by an estimate of its mean:
        # the mean of every 4th pixel each way.
        shifted = x - x[:, :, ::4, ::4].mean(dim=(2, 3), keepdim=True)
        y, mean, rstd = torch.native_group_norm(shifted, weight, bias, n, c, hw, c, eps)
        ctx.save_for_backward(shifted, weight, mean, rstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        shifted, weight, mean, rstd = ctx.saved_tensors
        n, c = shifted.shape[:2]
        hw = shifted.numel() // max(n * c, 1)
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            grad.contiguous(), shifted.contiguous(), mean, rstd, weight, n, c, hw, c, mask
        )
        if dx is not None:
            dx = dx.contiguous(memory_format=torch.channels_last)
        return dx, dw, db, None


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` that keeps channels_last inputs channels_last on the CPU.

    Same parameters, state dict and statistics as ``nn.InstanceNorm2d``; values equal it to
    floating-point rounding (group normalisation accumulates the same sums in another order).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and x.device.type == "cpu" and not self.track_running_stats and is_channels_last(x):
            return self._forward_channels_last(x)
        self._check_input_dim(x)
        unbatched = x.dim() == 3  # as nn.InstanceNorm2d accepts
        y = F.instance_norm(x.unsqueeze(0) if unbatched else x, self.running_mean, self.running_var, self.weight,
                            self.bias, self.training or not self.track_running_stats,
                            self.momentum if self.momentum is not None else 0.0, self.eps)  # fmt: skip
        return y.squeeze(0) if unbatched else y

    @torch.jit.unused
    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] * x.shape[3] < _MIN_CHANNELS_LAST_PIXELS:
            y = F.instance_norm(x.contiguous(), None, None, self.weight, self.bias, True, 0.0, self.eps)
            return y.contiguous(memory_format=torch.channels_last)
        if not isinstance(x, MetaTensor):
            return _InstanceNormChannelsLast.apply(x, self.weight, self.bias, self.eps)
        # A MetaTensor would wrap the function's output in a view, which autograd forbids an
        # in-place activation to modify: run it on the plain tensor and wrap the result, as
        # MetaTensor's own operators do.
        out = _InstanceNormChannelsLast.apply(x.as_tensor(), self.weight, self.bias, self.eps).as_subclass(MetaTensor)
        out.copy_meta_from(x)
        return out


def replace_instance_norms(module: nn.Module) -> int:
    """Swap every ``nn.InstanceNorm2d`` without running statistics inside ``module`` for
    :class:`InstanceNorm2d`, in place.

    The parameters are kept (the same tensors), so state dicts are unchanged. Returns the count.
    """
    count = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.InstanceNorm2d and not child.track_running_stats:
                new = InstanceNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)  # fmt: skip
                if child.affine:
                    new.weight, new.bias = child.weight, child.bias
                setattr(parent, name, new)
                count += 1
    return count
