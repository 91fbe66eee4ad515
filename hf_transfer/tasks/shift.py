"""The synthetic shift's part of a classification task's load step (`--synthetic_shift`, `--eval_shift`;
hf_transfer/data/shift): the plan the collator applies, the numbered training rows, the shifted validation copies
evaluated beside the clean split, the callbacks (the preview; text's epoch) and what metrics.json records.
"""
from __future__ import annotations

from hf_transfer.run.task import Args, TaskData


def shift_plan(args: Args, epoch=None):
    """The run's ShiftPlan when its recipe takes shift options and one is asked for; else None (nothing changes).
    `epoch`: the run's `TrainingEpoch` when the task has one for its collator already (else the plan makes its own)."""
    from hf_transfer.data.shift.plan import ShiftPlan
    from hf_transfer.data.shift.spec import ShiftArgs

    options = args.get(ShiftArgs)
    if options is None or not options.active:
        return None
    return ShiftPlan(options, seed=args.training.seed, epoch=epoch)


def with_shift(data: TaskData, plan, decode=None, sampling_rate: int | None = None) -> TaskData:
    """`data` with the plan's rows, splits, callbacks and report; `decode(row)` gives a training row's image or waveform
    for the preview. Without a plan, `data` as it is."""
    if plan is None:
        return data
    from hf_transfer.data.shift.preview import pick_rows

    preview = pick_rows(data.datasets["train"], decode, sampling_rate=sampling_rate) if decode is not None else None
    return _attach(data, plan, preview)


def _attach(data: TaskData, plan, preview, copies: dict | None = None) -> TaskData:
    data.datasets = plan.prepare(data.datasets, copies)
    data.eval_splits = (*data.eval_splits, *plan.eval_splits)
    data.callbacks = [*data.callbacks, *plan.callbacks(preview)]
    data.report = {**data.report, **plan.report}
    return data


def with_text_shift(data: TaskData, plan, args: Args, tokenizer, text_columns: list[str], max_length: int,
                    also_scored: tuple[str, ...] = ()) -> TaskData:
    """Text: the splits were loaded with their raw text (`text_columns`, kept beside the token ids). Shifted validation
    copies are made and tokenised here, once (they are fixed); training rows keep their text for the collator, which
    shifts and tokenises them per batch; every other split drops it. `also_scored`: other labelled splits scored
    shifted too, each copy named as validation's are (domain adaptation's `target`: `shifted_target`, ...)."""
    if plan is None:
        return data
    from hf_transfer.data.shift.plan import TextShiftCollator
    from hf_transfer.data.shift.preview import pick_rows

    datasets = data.datasets
    preview = pick_rows(datasets["train"], lambda row: row[text_columns[0]])
    copies = {split: shifted_text_copy(datasets["validation"], shift, plan, tokenizer, text_columns, max_length)
              for shift, split in zip(plan.evaluations, plan.eval_splits) if "validation" in datasets}
    others = {f"{shift.label}_{split}": shifted_text_copy(datasets[split], shift, plan, tokenizer, text_columns, max_length)
              for split in also_scored if split in datasets for shift in plan.evaluations}
    data.datasets = type(datasets)({
        **{split: dataset if split == "train" and plan.synthetic is not None
           else dataset.remove_columns([c for c in text_columns if c in dataset.column_names])
           for split, dataset in datasets.items()},
        **others,
    })
    data = _attach(data, plan, preview, copies)
    data.eval_splits = (*data.eval_splits, *others)
    if plan.synthetic is not None:
        data.collator = TextShiftCollator(data.collator, tokenizer, plan, text_columns, max_length)
        data.callbacks = [*data.callbacks, plan.epoch]  # the epoch its rows' draws are keyed by, set as each one begins
        # The raw text must reach the collator: the Trainer would drop every column the model's forward does not name.
        # The collator passes on only the tokenizer's inputs and the labels.
        args.training.remove_unused_columns = False
    return data


def shifted_text_copy(validation, shift, plan, tokenizer, text_columns: list[str], max_length: int):
    """The validation rows' (or another scored split's) texts through `shift` (row i with its fixed generator),
    tokenised as the clean split was."""
    def tokenize(batch, indices):
        shifted = {c: [] for c in text_columns}
        for j, i in enumerate(indices):
            rng = plan.evaluation_generator(i)
            for column in text_columns:
                shifted[column].append(shift(batch[column][j], rng))
        return tokenizer(*[shifted[c] for c in text_columns], truncation=True, max_length=max_length)

    inputs = [c for c in validation.column_names if c not in ("labels", *text_columns)]
    return validation.remove_columns(inputs).map(tokenize, batched=True, with_indices=True, remove_columns=text_columns,
                                                 desc=f"Shifting validation ({shift.label})")
