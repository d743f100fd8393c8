"""Shared fixtures: small widths so every forward pass takes milliseconds, and a small phantom
data set a training run gets through in seconds."""

from __future__ import annotations

import pytest
import torch

from cocoseg_monai.errors import error_chain as chain_of

#: Structurally identical to CoCoSeg V2, with widths small enough for fast tests.
TINY_FEATURES = (4, 8, 16, 32)

#: Bundle overrides of a training run that takes seconds on :func:`tiny_data`: tiny widths and
#: patches, no loader workers, no progress bar.
TINY_RUN = {
    "features": list(TINY_FEATURES),
    "patch_size": [32, 32],
    "num_samples": 2,
    "batch_size": 4,
    "num_workers": 0,
    "progress_bar": False,
    "val_sw_batch_size": 4,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A runtime-split PNG data set of 5 phantom patients, 4 slices of 48 x 48 each (read only:
    every test module shares it)."""
    from cocoseg_monai.data.phantom import PhantomConfig, write_dataset

    root = tmp_path_factory.mktemp("phantom")
    write_dataset(root, patients=5, seed=3, fmt="png", config=PhantomConfig(size=48, slices=4))
    return root


def error_chain(error: BaseException | None) -> str:
    """The messages of an exception and of every exception it was raised from.

    MONAI wraps errors raised inside transforms and config expressions in its own RuntimeError;
    the user sees the whole chain in the traceback, so tests read the whole chain.
    """
    return "\n".join(f"{type(e).__name__}: {e}" for e in chain_of(error))


def tiny_network():
    """A CoCoSegNet of :data:`TINY_FEATURES` whose random weights mark a mix of both classes."""
    from cocoseg_monai.networks import CoCoSegNet

    net = CoCoSegNet(features=TINY_FEATURES).eval()
    with torch.no_grad():
        for cam in net.attention:
            cam.gamma.fill_(0.3)
        net.head.conv.bias.copy_(torch.tensor([0.0, -0.02]))
    return net


def write_tiny_run(run, **plan_settings):
    """A training run's layout in ``run``: :func:`tiny_network`'s weights in ``models/model.pt``
    and their plan (``plan_settings`` over the defaults). Returns ``run``."""
    from pathlib import Path

    from cocoseg_monai.plan import make_plan, write_plan

    run = Path(run)
    (run / "models").mkdir(parents=True, exist_ok=True)
    torch.save(tiny_network().state_dict(), run / "models" / "model.pt")
    write_plan(run, make_plan(features=list(TINY_FEATURES), **plan_settings))
    return run
