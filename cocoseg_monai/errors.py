"""Finding the project's own error inside the wrapping of MONAI's config expressions and transforms."""

from __future__ import annotations

__all__ = ["error_chain", "project_cause"]


def error_chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and every exception it was raised from (``__cause__``) or during (``__context__``)."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def project_cause(error: BaseException) -> BaseException | None:
    """The first of the project's own errors in :func:`error_chain` (bad data, a bad setting, a
    non-finite loss, a plan the settings contradict), whose message says what is wrong; ``None``
    if there is none."""
    from .data.discovery import DataError
    from .handlers.nonfinite import NonFiniteLossError
    from .plan import PlanError
    from .settings import SettingsError

    own = (DataError, SettingsError, NonFiniteLossError, PlanError)
    return next((e for e in error_chain(error) if isinstance(e, own)), None)
