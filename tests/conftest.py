"""Shared fixtures: small widths so every forward pass takes milliseconds."""

from __future__ import annotations

import pytest
import torch

from cocoseg_monai.errors import error_chain as chain_of

#: Structurally identical to CoCoSeg V2, with widths small enough for fast tests.
TINY_FEATURES = (4, 8, 16, 32)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def error_chain(error: BaseException | None) -> str:
    """The messages of an exception and of every exception it was raised from.

    MONAI wraps errors raised inside transforms and config expressions in its own RuntimeError;
    the user sees the whole chain in the traceback, so tests read the whole chain.
    """
    return "\n".join(f"{type(e).__name__}: {e}" for e in chain_of(error))
