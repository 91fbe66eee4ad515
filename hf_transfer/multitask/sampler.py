"""Which task each training batch comes from, and which of that task's rows it holds.

The training set is the tasks' training splits one after another (row `offset[t] + r` is row r of task t). An epoch is
`ceil(total rows / batch size)` batches, each of `batch size` rows of ONE task. Batch i's task is drawn from the
tasks' shares with the epoch's own generator, `default_rng([seed, epoch, 0])` (round_robin takes task `i mod K`); each
task's batches take its rows in the order of a seeded permutation, `default_rng([seed, epoch, 1, t, cycle])`, and a
fresh one when it runs out, so a small task repeats within an epoch and every row of a large one comes before any
repeats. Everything about batch i is a function of (seed, epoch, i), plus the run's progress for the annealed shares:
a resumed run draws the batches it skipped and the ones after exactly as the uninterrupted run did, and every process
computes the same sequence.

It is a sampler of row indices whose consecutive runs of `batch size` are the batches, so the Trainer's DataLoader and
accelerate's sharding stay the stock ones: with N processes, process p trains on batches p, p + N, ..., which is why
2 processes at batch B train as 1 process at batch B with gradient accumulation 2.

Shares, for tasks of n_t training rows: proportional p_t ~ n_t; temperature p_t ~ n_t^(1/T); annealed p_t ~ n_t^(1 -
progress), from proportional (T = 1) at the first batch to equal shares (T -> infinity) at the last, progress being the
batch's place in the whole run (batches of all processes and accumulation steps: optimizer step / max_steps).
"""
from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Sampler

from hf_transfer.data.randomness import TrainingEpoch

CHOICE_STREAM, ROWS_STREAM = 0, 1


class TrainingProgress(TrainingEpoch):
    """The epoch being trained (`TrainingEpoch`) and the run's length in batches, all processes and accumulation steps
    counted, which the annealed shares follow; as a Trainer callback it learns the length when training begins, and
    the step it begins at (a resumed run's checkpoint step)."""

    def __init__(self) -> None:
        super().__init__()
        self.total_batches: int | None = None
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.total_batches = state.max_steps * args.gradient_accumulation_steps * args.world_size
        self.first_step = state.global_step


class TaskSampler(Sampler[int]):
    """Row indices into the tasks' concatenated training splits, `batch_size` at a time from one task (module doc)."""

    def __init__(self, sizes: list[int], batch_size: int, seed: int, policy: str = "proportional",
                 temperature: float = 2.0, progress: TrainingProgress | None = None) -> None:
        if policy not in ("proportional", "temperature", "round_robin", "annealed"):
            raise ValueError(f"unknown task sampler {policy!r}")
        if min(sizes) < 1 or batch_size < 1 or temperature <= 0:
            raise ValueError(f"every task needs rows, a batch at least one and T > 0: {sizes}, {batch_size}, {temperature}")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.batch_size, self.seed, self.policy, self.temperature = batch_size, int(seed), policy, temperature
        self.progress = progress if progress is not None else TrainingProgress()
        self.num_batches = math.ceil(int(self.sizes.sum()) / batch_size)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.progress.set(epoch)

    def __iter__(self):
        yield from self.batches(self.progress.value).reshape(-1).tolist()

    def shares(self, progress: float | np.ndarray = 0.0) -> np.ndarray:
        """Each task's probability of drawing a batch (round_robin: its share of the turns), at `progress` in [0, 1]
        (only the annealed shares move); for an array of progresses, one row of shares each."""
        progress = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
        exponent = {"proportional": np.ones_like(progress), "temperature": np.full_like(progress, 1 / self.temperature),
                    "round_robin": np.zeros_like(progress), "annealed": 1.0 - progress}[self.policy]
        weights = self.sizes.astype(np.float64) ** exponent[..., None]
        return weights / weights.sum(axis=-1, keepdims=True)

    def batch_tasks(self, epoch: int) -> np.ndarray:
        """The task of each batch of `epoch`."""
        index = np.arange(self.num_batches)
        if self.policy == "round_robin":
            return index % len(self.sizes)
        if self.policy == "annealed":
            if self.progress.total_batches is None:
                raise ValueError("the annealed task sampler needs the run's length: register its progress as a callback")
            progress = (epoch * self.num_batches + index) / max(self.progress.total_batches - 1, 1)
            cumulative = np.cumsum(self.shares(progress), axis=-1)
        else:
            cumulative = np.cumsum(self.shares(), axis=-1)[None, :]
        draws = np.random.default_rng([self.seed, epoch, CHOICE_STREAM]).random(self.num_batches)
        return np.minimum((draws[:, None] >= cumulative).sum(axis=-1), len(self.sizes) - 1)

    def batches(self, epoch: int) -> np.ndarray:
        """The rows (indices into the concatenated splits) of each batch of `epoch`: shape (batches, batch size)."""
        tasks = self.batch_tasks(epoch)
        rows = np.empty((self.num_batches, self.batch_size), dtype=np.int64)
        for task, size in enumerate(self.sizes):
            mine = np.flatnonzero(tasks == task)
            needed = len(mine) * self.batch_size
            stream = [np.random.default_rng([self.seed, epoch, ROWS_STREAM, task, cycle]).permutation(size)
                      for cycle in range(math.ceil(needed / size))]
            if mine.size:
                rows[mine] = self.offsets[task] + np.concatenate(stream)[:needed].reshape(len(mine), self.batch_size)
        return rows
