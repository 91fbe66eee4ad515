"""Random draws for training rows (augmentation, the synthetic shift) that a resumed run repeats exactly.

Every training row draws from a generator of its own, `default_rng([seed, epoch, row, stream])`, never from a stream
shared with other rows. A resumed run skips the batches it trained on before without collating them: a generator
running through the epoch would then be elsewhere in its stream, and every crop, flip, speed or noise after the resume
would differ from the uninterrupted run's. What keys a row's generator, and why:

- the run's seed, and the epoch: a new draw every epoch, the same again in the same epoch after a resume;
- the row's number in the training split (the `row_number` column, added with the `augment` flag where the training
  split is made: `flag_training_rows`): rows draw apart from each other;
- the stream, one per consumer of a row's randomness (the synthetic shift, the collator's augmentation), so that their
  draws are independent of each other;
- not the DataLoader worker: the draws are the same with 0 or N workers, persistent or not;
- not the process rank: rows are distinct across processes already (the distributed sampler gives each its own; a
  row repeated to fill the last batch is the same example, drawn alike), and without the rank a row's draws are the same
  on any number of processes.

The epoch reaches the collators, and the DataLoader workers holding copies of them, through `TrainingEpoch`: one number
in shared memory, which the object, as a Trainer callback, sets as each epoch begins. A task's load step makes one per
run, hands it to the collator (and the shift plan), and registers it in `TaskData.callbacks`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from transformers import TrainerCallback

AUGMENT = "augment"  # the training split's flag: the Trainer hands one collator every split, this tells training rows
ROW = "row_number"  # a row's number in its split: with the seed, the epoch and the stream, its generator's key
# Streams. numpy pads a key with zeros to four words, so the shift's stream draws what `default_rng([seed, epoch, row])`
# draws: the key docs/shift.md gives for reproducing a shifted row.
SHIFT_STREAM = 0
AUGMENT_STREAM = 1
TARGET_MASK_STREAM = 2  # the masked-LM objective's masks of target rows (numbered by their index in the target)


def flag_training_rows(train):
    """The training split (a `datasets.Dataset`) with each row flagged `augment` and numbered by `row_number`, each
    column added unless it is there already."""
    if AUGMENT not in train.column_names:
        train = train.add_column(AUGMENT, [True] * len(train))
    if ROW not in train.column_names:
        train = train.add_column(ROW, list(range(len(train))))
    return train


class TrainingEpoch(TrainerCallback):
    """The epoch being trained, readable in every DataLoader worker: a one-number tensor in shared memory, set as each
    epoch begins (a Trainer callback), so workers, persistent ones too, read the current epoch without being rebuilt."""

    def __init__(self) -> None:
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def value(self) -> int:
        return int(self._epoch[0])

    def set(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def on_epoch_begin(self, args, state, control, **kwargs):
        # `state.epoch` counts the epochs done: whole at an epoch's start, a fraction into it when a run resumes mid-epoch.
        self.set(math.floor((state.epoch or 0) + 1e-9))


class RowRandom:
    """Generators for training rows for one consumer (`stream`): `generator(row)` is the row's own, for the run's seed and
    the epoch being trained. Without an `epoch` given, one of its own (epoch 0 until set)."""

    def __init__(self, seed: int, stream: int, epoch: TrainingEpoch | None = None) -> None:
        self.seed, self.stream = int(seed), stream
        self.epoch = epoch if epoch is not None else TrainingEpoch()

    def generator(self, row: dict | int, epoch: int | None = None) -> np.random.Generator:
        """The generator of a training row (a row with its `row_number`, or the number), in `epoch` (default: the
        epoch being trained)."""
        number = row.get(ROW) if isinstance(row, dict) else row
        if number is None:
            raise ValueError(f"a training row has no {ROW!r}: number the training split with flag_training_rows "
                             "(hf_transfer.data.randomness) so that its random draws are the row's own")
        epoch = self.epoch.value if epoch is None else epoch
        return np.random.default_rng([self.seed, int(epoch), int(number), self.stream])
