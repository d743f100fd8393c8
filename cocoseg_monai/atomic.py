"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every output the project writes (checkpoints, history, datalists, predictions) goes through
:func:`atomic_write`: the data is written to a temporary file in the destination folder, flushed
and fsynced, then moved over the destination with :func:`os.replace`, which is atomic on POSIX
and Windows when both paths are on one file system. If anything fails on the way, the temporary
file is removed and the previous file is left untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_json", "atomic_torch_save", "atomic_write_nifti", "publish", "discard"]

_UMASK = os.umask(0o022)  # read the process umask (the only way is to set it) ...
os.umask(_UMASK)  # ... and put it back at once


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success move it over ``path``.

    Args:
        path: the destination file. Its parent folder is created if missing.
        mode: ``"wb"`` (default) or ``"w"`` for text.

    Raises:
        OSError: with the destination named, when the folder cannot be written or the disk is full.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except OSError as e:
        discard(tmp)
        raise OSError(e.errno, f"could not write {path}: {e.strerror or e}") from e
    except BaseException:
        discard(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=indent)  # serialise first: a bad object never touches the disk
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_nifti(path: str | os.PathLike, array: Any, affine: Any) -> None:
    """Write ``array`` with its RAS+ voxel-to-world ``affine`` (mm) as gzipped NIfTI-1 to ``path``
    atomically; the qform and sform both hold the affine (code 1, scanner), units mm, and the
    bytes are reproducible (no time stamp in the gzip header)."""
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)
    with atomic_write(path, "wb") as f:
        f.write(data)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give the finished temporary file ``tmp`` the usual permissions (``mkstemp`` makes ``0600``
    files) and move it over ``path`` in one step."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def discard(tmp: str | os.PathLike) -> None:
    """Remove a temporary file that will not be published, if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
