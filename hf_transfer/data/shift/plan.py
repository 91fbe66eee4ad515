"""What a run does with its shifts: which rows get which, from which seed, and the splits and callbacks that carry them.

Every shifted row draws from its own generator, never from a stream shared with other rows:

- a training row (flagged `augment`, numbered by `row_number`) from its generator in the shift's stream
  (hf_transfer.data.randomness: keyed by seed, epoch and row, the same in every worker and process layout and after a
  resume); its first draw decides whether the row is shifted at all when --synthetic_shift_probability is below 1;
- row i of a shifted validation copy (`eval_shift` says which shift, `row_number` which row) from
  `default_rng([eval_shift_seed, i])`: the same copy in every run.

The clean validation and test splits carry neither column and are never shifted.
"""
from __future__ import annotations

import numpy as np
from transformers import TrainerCallback

from hf_transfer.data.randomness import AUGMENT, ROW, SHIFT_STREAM, RowRandom, TrainingEpoch, flag_training_rows

EVAL_SHIFT = "eval_shift"  # which evaluation shift a row of a shifted validation copy gets (its index)


class ShiftPlan:
    """The run's shifts (none, a synthetic one, evaluation ones) and how rows and splits carry them.

    Built from a recipe's `ShiftArgs` (None: a plan that changes nothing) and the run's `TrainingEpoch` (the task's load
    step registers it as a callback). Collators call `apply(row, x, ...)` on each decoded row; the task's load step
    calls `prepare(datasets)` and reads `eval_splits` and `report`.
    """

    def __init__(self, shift_args=None, seed: int = 42, epoch: TrainingEpoch | None = None) -> None:
        self.synthetic = getattr(shift_args, "synthetic", None)
        self.synthetic_probability = getattr(shift_args, "synthetic_shift_probability", 1.0)
        self.evaluations = list(getattr(shift_args, "evaluations", None) or [])
        self.random = RowRandom(seed, SHIFT_STREAM, epoch)
        self.eval_seed = getattr(shift_args, "eval_shift_seed", 0)
        self.context = shift_args.context() if shift_args is not None else {}
        self.modality = getattr(shift_args, "modality", "")

    @property
    def active(self) -> bool:
        return self.synthetic is not None or bool(self.evaluations)

    @property
    def varies_per_epoch(self) -> bool:
        """Whether training rows change between epochs (read by the collators' `inputs_vary_per_epoch`)."""
        return self.synthetic is not None

    @property
    def epoch(self) -> TrainingEpoch:
        return self.random.epoch

    # --- rows ---

    def training_generator(self, row_number: int, epoch: int | None = None) -> np.random.Generator:
        return self.random.generator(row_number, epoch)

    def evaluation_generator(self, row_number: int) -> np.random.Generator:
        return np.random.default_rng([self.eval_seed, int(row_number)])

    def shift_for(self, row: dict):
        """(shift, generator) for a row, or (None, None) for a row that stays as it is."""
        if EVAL_SHIFT in row and row[EVAL_SHIFT] is not None and self.evaluations:
            return self.evaluations[int(row[EVAL_SHIFT])], self.evaluation_generator(row[ROW])
        if self.synthetic is not None and row.get(AUGMENT):
            rng = self.random.generator(row)
            if self.synthetic_probability < 1.0 and rng.random() >= self.synthetic_probability:
                return None, None  # a row left clean this epoch
            return self.synthetic, rng
        return None, None

    def apply(self, row: dict, x, **context):
        """`x` (the row's decoded image, waveform or text) with the row's shift, if it has one."""
        shift, rng = self.shift_for(row)
        return x if shift is None else shift(x, rng, **self.context, **context)

    # --- splits ---

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(f"{shift.label}_validation" for shift in self.evaluations)

    def prepare(self, datasets, copies: dict | None = None):
        """`datasets` (a DatasetDict) with the training rows flagged and numbered for the synthetic shift (media splits
        are already: their load step does it for augmentation), and one shifted copy of the validation split per
        evaluation shift (rows numbered for the collator to shift, or `copies[split]` made already: text shifts its
        copies once, before tokenising); the clean splits' rows are left as they are."""
        from datasets import DatasetDict

        if not self.active:
            return datasets
        out = dict(datasets)
        if self.synthetic is not None:
            out["train"] = flag_training_rows(out["train"])
        if self.evaluations and "validation" in out:
            validation = out["validation"]
            for index, split in enumerate(self.eval_splits):
                if copies is not None:
                    out[split] = copies[split]
                    continue
                copy = validation.add_column(ROW, list(range(len(validation))))
                out[split] = copy.add_column(EVAL_SHIFT, [index] * len(validation))
        return DatasetDict(out)

    @property
    def report(self) -> dict:
        """What metrics.json records of the shifts: the specs and, per step, what its strength means."""
        report = {}
        if self.synthetic is not None:
            report["synthetic_shift"] = str(self.synthetic)
            report["synthetic_shift_means"] = self.synthetic.describe()
            report["synthetic_shift_probability"] = self.synthetic_probability
        for shift in self.evaluations:
            report[f"{shift.label}_eval_shift"] = str(shift)
            report[f"{shift.label}_eval_shift_means"] = shift.describe()
        if self.evaluations:
            report["eval_shift_seed"] = self.eval_seed
        return report

    def callbacks(self, preview_rows=None) -> list:
        """The Trainer callbacks the plan needs: the preview (`preview_rows`: a `preview.PreviewRows` of the rows to
        show) written at the start of training. (The epoch is the task's `TrainingEpoch`, registered by the task.)"""
        if not self.active or preview_rows is None:
            return []
        return [ShiftPreviewCallback(self, preview_rows)]


class ShiftPreviewCallback(TrainerCallback):
    """Writes the before/after preview into the output folder as training starts (the main process only)."""

    def __init__(self, plan: ShiftPlan, rows) -> None:
        self.plan, self.rows = plan, rows

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from hf_transfer.data.shift.preview import write_preview

            write_preview(self.plan, self.rows, args.output_dir)


class TextShiftCollator:
    """Wraps the text collator: a training row's texts go through the synthetic shift (its generator from the row and
    the epoch) and are tokenised again; other rows keep their token ids. Only the tokenizer's inputs and the labels
    reach the wrapped collator, which pads."""

    def __init__(self, collator, tokenizer, plan: ShiftPlan, text_columns: list[str], max_length: int) -> None:
        self.collator, self.tokenizer, self.plan = collator, tokenizer, plan
        self.text_columns, self.max_length = list(text_columns), max_length
        self.inputs = {*tokenizer.model_input_names, "labels"}

    @property
    def inputs_vary_per_epoch(self) -> str:
        return "--synthetic_shift transforms training texts anew every epoch"

    @property
    def padding(self):  # what the trainer reads to tell fixed-length padding (--pad_to_max_length)
        return getattr(self.collator, "padding", None)

    def __call__(self, rows: list[dict]) -> dict:
        features = []
        for row in rows:
            shift, rng = self.plan.shift_for(row)
            if shift is None:
                features.append({k: v for k, v in row.items() if k in self.inputs})
                continue
            texts = [shift(row[column], rng) for column in self.text_columns]
            encoded = self.tokenizer(*texts, truncation=True, max_length=self.max_length)
            features.append({**{k: v for k, v in encoded.items() if k in self.inputs}, "labels": row["labels"]})
        return self.collator(features)
