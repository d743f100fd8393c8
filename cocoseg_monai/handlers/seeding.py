"""Per-epoch seeding, so that a resumed run repeats exactly what an uninterrupted run does."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events
from monai.transforms import Randomizable
from monai.utils import set_determinism

__all__ = ["EpochSeeder"]


class EpochSeeder:
    """Seed every random source at the start of each epoch from ``(seed, epoch, rank)`` alone.

    At ``EPOCH_STARTED`` the torch, NumPy and Python generators and the random state of the
    training transforms are set from the run's seed and the epoch number. Ignite creates the
    epoch's data iterator after this event (shuffling, and the seeds of loader workers, come from
    the torch generator), so epoch ``k`` draws the same patches, augmentations and order whether
    the run started at epoch 1 or resumed from the checkpoint of epoch ``k - 1``. Together with
    the checkpoint's model, EMA, optimizer and scheduler state, a run killed and resumed ends with
    the weights of an uninterrupted one.

    Args:
        seed: the run's seed (``random_seed``).
        transform: the training transforms (a ``Compose`` or any ``Randomizable``), or ``None``.
        rank: the process's rank in distributed training: ranks draw different augmentations.
    """

    def __init__(self, seed: int, transform: Any = None, rank: int = 0) -> None:
        self.seed, self.transform, self.rank = int(seed), transform, int(rank)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def epoch_seed(self, epoch: int) -> int:
        return (self.seed + 1_000_003 * epoch + 7_919 * self.rank) % 2**32

    def __call__(self, engine: Engine) -> None:
        seed = self.epoch_seed(engine.state.epoch)
        set_determinism(seed=seed)
        if isinstance(self.transform, Randomizable) or hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=seed)
