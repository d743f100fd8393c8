"""Shared fixtures: small widths so every forward pass takes milliseconds."""

from __future__ import annotations

import pytest
import torch

#: Structurally identical to CoCoSeg V2, with widths small enough for fast tests.
TINY_FEATURES = (4, 8, 16, 32)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
