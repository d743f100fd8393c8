"""The numerical tools the generator draws with: resampling between grids, Gaussian blur, smooth
random fields and binary dilation.

numpy only, on purpose: the same seed must give the same bytes on every machine, whatever BLAS,
torch threading or SciPy version is installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["resample", "gaussian_blur", "smooth_field", "dilate"]


def _resample_axis(a: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Linear resampling of one axis so voxel edges line up (``align_corners=False``)."""
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = (pos - i0).astype(a.dtype).reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def resample(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling between two grids spanning the same box."""
    for axis, n in enumerate(shape):
        a = _resample_axis(a, axis, n)
    return a


def gaussian_blur(a: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """Separable Gaussian blur with edge replication."""
    out = a
    for axis, sigma in enumerate(sigma_vox):
        if sigma < 0.2:  # narrower than a voxel: a no-op up to rounding
            continue
        radius = max(1, int(math.ceil(3 * sigma)))
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (x / sigma) ** 2)
        kernel /= kernel.sum()
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, wk in enumerate(kernel):
            acc += np.float32(wk) * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return out


def smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: Sequence[int]) -> np.ndarray:
    """Unit-variance-ish random field varying over ``shape / cells`` voxels."""
    coarse = rng.standard_normal(tuple(max(2, int(c)) for c in cells)).astype(np.float32)
    f = resample(coarse, shape)
    return (f - f.mean()) / (f.std() + 1e-6)


def dilate(mask: np.ndarray, steps: int = 1, axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Binary dilation by a 3-voxel box along ``axes``, ``steps`` times."""
    out = mask.copy()
    for _ in range(steps):
        for axis in axes:
            grown = out.copy()
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
            out = grown
    return out
