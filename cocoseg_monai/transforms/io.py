"""Loading CT, PET and mask files with MONAI readers, failing with the file's name.

PNG orientation
---------------
PNG files are read with MONAI's :class:`~monai.data.PILReader` and its default
``reverse_indexing=True``: a PNG of ``H`` rows and ``W`` columns loads as ``[1, W, H]`` and
``array[0, x, y]`` is the pixel in column ``x``, row ``y``, i.e. spatial axes are ``(x, y)`` like
NIfTI volumes. MONAI's :class:`~monai.data.PILWriter` (and ``SaveImage`` with it) applies the
inverse transpose, so a ``[1, W, H]`` prediction saved with it lines up with the input PNG.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.data import ImageReader, MetaTensor, NibabelReader, NibabelWriter, PILReader, PILWriter
from monai.transforms import LoadImage, MapTransform

from cocoseg_monai.errors import DataError

__all__ = ["IMAGE_FORMATS", "VOLUME_FORMATS", "make_reader", "LoadImageChecked", "LoadImageCheckedd", "AtomicNibabelWriter", "AtomicPILWriter"]

IMAGE_FORMATS = ("png", "nifti", "dicom")
#: the formats that hold volumes (the network runs over their axial slices)
VOLUME_FORMATS = ("nifti", "dicom")

# PNG modes with colour, alpha or a palette: stored greyscale data is read through PIL's "L"
# conversion so that every PNG yields one channel. 16-bit modes ("I;16*", "I") are left alone.
_PNG_TO_GREY_MODES = {"1", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


# MONAI's LoadImage builds every default reader beside the one it is given, and one of them,
# NvImgCodecPydicomReader, reports on each build without the optional nvImageCodec GPU decoder that
# it falls back to pydicom's decoders: a UserWarning and a log record, repeated for every loader a
# run builds (training and validation transforms, again in the loader workers). The project reads
# PNG with PILReader, NIfTI with NibabelReader and DICOM series with its own DicomSeriesReader, so
# the fallback concerns nothing it reads. Exactly these two messages are dropped, and only once a
# project loader is built; every other warning and record still shows.
_NVIMGCODEC_WARNING = "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register successfully."
_NVIMGCODEC_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"
_NVIMGCODEC_RECORD = "nvImageCodec is not available; skipping pydicom decoder plugin registration."


class _DropRecord(logging.Filter):
    """Drops the log records whose message is ``message``, exactly."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


_DROP_NVIMGCODEC_RECORD = _DropRecord(_NVIMGCODEC_RECORD)


def _silence_nvimgcodec_fallback() -> None:
    # idempotent: filterwarnings replaces an identical filter, addFilter skips one it holds
    warnings.filterwarnings("ignore", message=re.escape(_NVIMGCODEC_WARNING), category=UserWarning,
                            module=r"monai\.data\.image_reader")
    logging.getLogger(_NVIMGCODEC_LOGGER).addFilter(_DROP_NVIMGCODEC_RECORD)


def _png_to_grey(img: Any) -> Any:
    # module-level (not a lambda) so that the reader pickles into DataLoader workers
    return img.convert("L") if img.mode in _PNG_TO_GREY_MODES else img


def make_reader(image_format: str | None, **reader_args: Any) -> ImageReader | None:
    """The MONAI reader for ``image_format``.

    ``"png"``: :class:`~monai.data.PILReader` with ``reverse_indexing=True`` (spatial axes
    ``(x, y)``) and colour/palette/1-bit images converted to 8-bit grey. ``"nifti"``:
    :class:`~monai.data.NibabelReader`. ``"dicom"``: a series folder, read by
    :class:`~cocoseg_monai.dicom.reader.DicomSeriesReader` with ``reader_args`` (``modality``,
    ``series_uid``, ``overrides``, ``suv``). ``None``: let MONAI pick by file suffix.
    """
    if image_format is None:
        return None
    if image_format == "png":
        return PILReader(converter=_png_to_grey, reverse_indexing=True)
    if image_format == "nifti":
        return NibabelReader()
    if image_format == "dicom":
        from cocoseg_monai.dicom.reader import DicomSeriesReader

        return DicomSeriesReader(**reader_args)
    raise ValueError(f"image_format must be one of {IMAGE_FORMATS} or None, got {image_format!r}")


class LoadImageChecked(LoadImage):
    """MONAI :class:`~monai.transforms.LoadImage` that names the file when reading fails.

    Input: a path to a PNG or NIfTI file, or a DICOM series folder. Output: float32
    :class:`~monai.data.MetaTensor` ``[1, W, H]`` (PNG, see the module docstring for the
    orientation) or ``[1, X, Y, Z]`` (NIfTI, DICOM),
    values as stored (PNG 16-bit stays 0..65535), with meta ``filename_or_obj``, ``affine`` and
    for PNG the PIL ``mode`` (used by :class:`~cocoseg_monai.transforms.DecodePNGIntensity`).

    Parameters
    ----------
    image_format
        ``"png"``, ``"nifti"``, ``"dicom"`` or None (reader chosen from the suffix).
    dtype
        Output dtype; float32 holds every 16-bit value exactly.
    reader_args
        Passed to the reader of ``"dicom"`` (see :func:`make_reader`).

    Raises
    ------
    DataError
        The file does not exist, cannot be decoded (truncated, corrupt, wrong type), or has more
        than one channel.
    """

    def __init__(self, image_format: str | None = None, dtype: DtypeLike = np.float32,
                 reader_args: Mapping[str, Any] | None = None) -> None:
        _silence_nvimgcodec_fallback()
        super().__init__(reader=make_reader(image_format, **dict(reader_args or {})), image_only=True, dtype=dtype,
                         ensure_channel_first=True)
        self.image_format = image_format

    def __call__(self, filename: Any, reader: ImageReader | None = None) -> MetaTensor:  # type: ignore[override]
        exists = os.path.isdir if self.image_format == "dicom" else os.path.isfile
        if isinstance(filename, (str, os.PathLike)) and not exists(filename):
            raise DataError(f"image {'folder' if self.image_format == 'dicom' else 'file'} {filename} does not exist")
        try:
            img = super().__call__(filename, reader)
        except DataError:
            raise  # the project's own readers name the file already
        except Exception as e:
            # MONAI/PIL/nibabel errors often omit the path (PIL: "image file is truncated")
            raise DataError(f"cannot read image file {filename}: {type(e).__name__}: {e}") from e
        if img.shape[0] != 1:
            raise DataError(
                f"image file {filename}: expected one channel, got shape {tuple(img.shape)} "
                f"(channel first; multi-channel or 4D images are not supported)"
            )
        return img


class LoadImageCheckedd(MapTransform):
    """Dictionary form of :class:`LoadImageChecked` (a checked ``LoadImaged``).

    Input: ``{key: path}``. Output: ``{key: MetaTensor [1, *spatial]}`` as in
    :class:`LoadImageChecked`; errors also name the key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_format: str | None = None,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
        reader_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImageChecked(image_format, dtype, reader_args)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.loader(d[key])
            except DataError as e:
                raise DataError(f"key {key!r}: {e}") from e.__cause__
        return d


class _AtomicWrite:
    """Mixin for MONAI image writers: write to a temporary file beside the destination (same
    suffix, so the format is chosen alike), then rename it over the destination."""

    def write(self, filename: Any, verbose: bool = True, **kwargs: Any) -> None:
        from cocoseg_monai.atomic import discard, publish

        path = os.fspath(filename)
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
        try:
            super().write(tmp, verbose=verbose, **kwargs)  # type: ignore[misc]
            publish(tmp, path)
        except BaseException:
            discard(tmp)
            raise


class AtomicNibabelWriter(_AtomicWrite, NibabelWriter):
    """MONAI's ``NibabelWriter`` with atomic writes: a failed write leaves the previous file."""


class AtomicPILWriter(_AtomicWrite, PILWriter):
    """MONAI's ``PILWriter`` with atomic writes: a failed write leaves the previous file."""
