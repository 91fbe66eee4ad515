"""Random numbers for augmenting collators, right under DataLoader workers and several processes."""
from __future__ import annotations

import numpy as np
import torch


class WorkerRandom:
    """One numpy generator per DataLoader worker (per epoch) and per process, from the run's seed.

    DataLoader workers get a fresh seed per worker and per epoch; reseeding from it keeps workers from repeating each
    other's augmentation. Without workers, one generator runs through the whole training. The process rank is mixed
    in because every rank starts from the same seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generator, self._owner = None, object()

    def generator(self) -> np.random.Generator:
        worker = torch.utils.data.get_worker_info()
        owner = None if worker is None else worker.seed
        if self._generator is None or owner != self._owner:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            self._generator = np.random.default_rng([self.seed if worker is None else worker.seed, rank])
            self._owner = owner
        return self._generator



