"""Fuzzing the data loaders: random and truncated bytes, odd shapes and dtypes, PNG and NIfTI.

Every input is either loaded or refused with the project's own ``DataError`` naming what is
wrong; anything else (a crash deep in PIL, nibabel, NumPy or MONAI) fails the test with the
input that caused it. Seeded, so a failure repeats.
"""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from cocoseg_monai.errors import error_chain, project_cause
from cocoseg_monai.transforms import get_infer_transforms, get_train_transforms

RNG_SEED = 20261124
CASES = 150


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")  # uint8 L, uint16 I;16, RGB(A), bool -> 1-bit
    return buf.getvalue()


def _nifti_bytes(array: np.ndarray, no_geometry: bool = False) -> bytes:
    img = nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0]))
    if no_geometry:  # no qform, no sform, zero voxel sizes
        img.header.set_qform(None, code=0)
        img.header.set_sform(None, code=0)
        img.header["pixdim"][1:4] = 0.0
    return img.to_bytes()


def _good_png(rng) -> dict[str, bytes]:
    size = (24, 24)
    return {
        "image": _png_bytes(rng.integers(0, 2000, size).astype(np.uint16)),
        "pet": _png_bytes(rng.integers(0, 20000, size).astype(np.uint16)),
        "label": _png_bytes((rng.random(size) > 0.9).astype(np.uint8) * 255),
    }


def _good_nifti(rng) -> dict[str, bytes]:
    shape = (16, 16, 4)
    return {
        "image": _nifti_bytes(rng.integers(-1000, 1000, shape).astype(np.int16)),
        "pet": _nifti_bytes(rng.random(shape).astype(np.float32) * 10),
    }


def _png_variant(rng, good: bytes) -> bytes:
    kind = rng.integers(8)
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 400)))  # noise
    if kind == 1:
        return good[: int(rng.integers(0, len(good)))]  # truncated
    if kind == 2:
        b = bytearray(good)  # flipped bytes
        for i in rng.integers(0, len(b), 8):
            b[i] ^= 0xFF
        return bytes(b)
    if kind == 3:
        return _png_bytes(rng.integers(0, 255, (24, 24, 3)).astype(np.uint8))  # RGB
    if kind == 4:
        return _png_bytes(rng.integers(0, 255, (24, 24, 4)).astype(np.uint8))  # RGBA
    if kind == 5:
        return _png_bytes(rng.integers(0, 255, (int(rng.integers(1, 40)), int(rng.integers(1, 40)))).astype(np.uint8))
    if kind == 6:
        return _png_bytes(rng.random((24, 24)) > 0.5)  # 1-bit
    return _png_bytes(rng.integers(0, 255, (1, 1)).astype(np.uint8))  # a single pixel


def _nifti_variant(rng, good: bytes) -> bytes:
    kind = rng.integers(9)
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 600)))
    if kind == 1:
        return good[: int(rng.integers(0, len(good)))]
    if kind == 2:
        b = bytearray(good)
        for i in rng.integers(0, 348, 6):  # flipped header bytes
            b[i] ^= 0xFF
        return bytes(b)
    if kind == 3:
        return _nifti_bytes(rng.random((16, 16)).astype(np.float32))  # 2D
    if kind == 4:
        return _nifti_bytes(rng.random((8, 8, 4, 2)).astype(np.float32))  # 4D
    if kind == 5:
        return _nifti_bytes(rng.random((16, 16, 4)).astype(np.float64) * 1e300 * 1e10)  # inf
    if kind == 6:
        return _nifti_bytes(np.full((16, 16, 4), np.nan, np.float32))
    if kind == 7:
        return _nifti_bytes(rng.integers(0, 2, (16, 16, 4)).astype(np.uint8), no_geometry=True)
    return _nifti_bytes(rng.random((int(rng.integers(1, 20)), int(rng.integers(1, 20)), 1)).astype(np.float32))


def _run(transform, paths: dict[str, Path]) -> None:
    out = transform({k: str(v) for k, v in paths.items()} | {"patient": "001"})
    items = out if isinstance(out, list) else [out]
    for item in items:
        assert np.isfinite(np.asarray(item["image"])).all()


@pytest.mark.parametrize("fmt", ["png", "nifti"])
def test_loaders_answer_any_input_with_a_clear_error_or_a_result(fmt, tmp_path):
    rng = np.random.default_rng(RNG_SEED + (fmt == "nifti"))
    suffix = ".png" if fmt == "png" else ".nii"
    if fmt == "png":
        transform = get_train_transforms("png", patch_size=(16, 16), num_samples=1)
        good = _good_png(rng)
        variant = _png_variant
    else:
        transform = get_infer_transforms("nifti")
        good = _good_nifti(rng)
        variant = _nifti_variant
    crashes, refused = [], 0
    for case in range(CASES):
        key = list(good)[case % len(good)]
        data = variant(rng, good[key])
        paths = {}
        for k, content in good.items():
            paths[k] = tmp_path / f"{case}_{k}{suffix}"
            paths[k].write_bytes(data if k == key else content)
        try:
            _run(transform, paths)
        except Exception as err:
            if project_cause(err) is None:
                root = error_chain(err)[-1]
                crashes.append(f"case {case}, {key} replaced: {type(root).__name__}: {str(root)[:200]}")
            else:
                refused += 1
                assert paths[key].name in str(project_cause(err)) or key in str(project_cause(err)), str(err)
    assert not crashes, "\n".join(crashes)
    assert refused > CASES // 4  # the fuzzing did reach the error paths
