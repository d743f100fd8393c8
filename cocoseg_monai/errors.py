"""The project's errors, in one place, and finding them inside the wrapping of MONAI's config
expressions and transforms.

Every error the project raises on purpose is a :class:`CoCoSegError`, whose message says what is
wrong and where (the file, the key, the setting); the front doors (``cocoseg``, the bundle run
through :func:`cocoseg_monai.bundle.run_bundle`, the MONAI Label app) answer it in one line
instead of a traceback. Each also derives from the built-in error it refines, so ``except
ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "CoCoSegError",
    "DataError",
    "DicomError",
    "SettingsError",
    "PlanError",
    "NonFiniteLossError",
    "CheckpointError",
    "error_chain",
    "project_cause",
]


class CoCoSegError(Exception):
    """Base of the project's own errors: the message is meant for the user, in one line."""


class DataError(CoCoSegError, ValueError):
    """The data on disk (or a datalist) does not follow the expected layout, naming or content."""


class DicomError(DataError):
    """A DICOM series that cannot be read correctly; the message names the attribute or files."""


class SettingsError(CoCoSegError, ValueError):
    """A run setting is out of its range; the message names the setting and the value."""


class PlanError(CoCoSegError, ValueError):
    """A plan that is missing, unreadable, incomplete, or contradicted by a setting; the message
    names the file and the keys."""


class NonFiniteLossError(CoCoSegError, FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointError(CoCoSegError, ValueError):
    """A weights or checkpoint file that is refused: it holds pickled objects other than tensors
    and plain containers (which could run code when unpickled), or it is no readable checkpoint;
    the message names the file."""


def error_chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and every exception it was raised from (``__cause__``) or during (``__context__``)."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def project_cause(error: BaseException) -> CoCoSegError | None:
    """The first of the project's own errors in :func:`error_chain`, whose message says what is
    wrong; ``None`` if there is none."""
    return next((e for e in error_chain(error) if isinstance(e, CoCoSegError)), None)
