"""Tasks: what a recipe declares, and `run_task`, the one place that runs parse -> check -> load -> model -> train -> finish.

A recipe is a `Task`: its own argument dataclasses and defaults, the model class, a `load` function that
returns the checked data with its collator, processor, config and metrics (a `TaskData`), the trainer
class, and optional hooks for what is special about it (a source-task evaluation before training, a
frozen baseline after it, weights carried over after saving). Every recipe then gets the same order of
steps, the same checks and the same `finish`. Parsed options are looked up by type (`args[TextDataArgs]`),
never by position, so adding an option group to a recipe breaks nobody who reads another group.

Building blocks stay plain functions: a recipe with an unusual flow (compare, dapt, linear_probe) writes
its own `main` from them instead of bending this one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

from hf_transfer.cli import parse_args
from hf_transfer.models.loading import ModelArgs
from hf_transfer.strategies import StrategyArgs


class Args:
    """One parsed instance per argument dataclass, looked up by type: `args[TextDataArgs]`, `args.training`."""

    def __init__(self, instances: tuple) -> None:
        self._by_type = {type(instance): instance for instance in instances}
        self._order = instances

    def __getitem__(self, kind: type):
        if kind in self._by_type:
            return self._by_type[kind]
        for instance in self._order:  # a subclass (Seq2SeqTrainingArguments) answers for its base
            if isinstance(instance, kind):
                return instance
        raise KeyError(f"{kind.__name__} is not among this recipe's arguments")

    def get(self, kind: type, default=None):
        try:
            return self[kind]
        except KeyError:
            return default

    def __iter__(self):
        return iter(self._order)

    @property
    def model(self) -> ModelArgs:
        return self[ModelArgs]

    @property
    def strategy(self) -> StrategyArgs:
        return self[StrategyArgs]

    @property
    def training(self):
        from transformers import TrainingArguments

        return self[TrainingArguments]


@dataclass
class TaskData:
    """Everything `load` checked and prepared: data, how to batch it, what to save with the model, how to score it."""

    datasets: Any  # DatasetDict: train, validation, optionally test (and any split named in eval_splits)
    collator: Any
    processing_class: Any  # tokenizer / feature extractor / processor: saved beside the weights
    config: Any  # the model's config, ready to build the model (labels set)
    compute_metrics: Callable | None = None
    preprocess_logits_for_metrics: Callable | None = None
    report: dict = field(default_factory=dict)  # what the data gave (label names, counts, skips): into metrics.json
    eval_splits: tuple[str, ...] = ("validation", "test")  # evaluated after training, those present
    extra: dict = field(default_factory=dict)  # anything a task's hooks need later (its own objects)
    # TrainerCallbacks the data needs (the TrainingEpoch that keys the collator's per-row random draws, the shift's
    # preview): given to the trainer
    callbacks: list = field(default_factory=list)


@dataclass
class Task:
    """What a recipe declares. Only `name`, `arguments` and `load` are required."""

    name: str  # titles reports and summaries
    arguments: tuple[type, ...]  # the task's own argument dataclasses; model, strategy and training ones are added
    load: Callable[[Args], TaskData]  # check every input and prepare the data; nothing is written before it returns
    model_class: str = "AutoModelForSequenceClassification"  # a transformers class, imported when the run starts
    defaults: dict = field(default_factory=dict)  # option defaults; a config file and flags win over them
    trainer_class: str = "TransferTrainer"  # or "Seq2SeqTransferTrainer" (both from hf_transfer.trainer)
    training_arguments: str = "TrainingArguments"  # or "Seq2SeqTrainingArguments"
    metric: str = "validation_accuracy"  # what compare reports by default
    labelled: bool = True  # examples carry class labels: per-class subsets and the frozen-features arm apply
    build_model: Callable[[Args, TaskData], Any] | None = None  # default: model_class.from_pretrained (or from config)
    prepare_model: Callable[[Any, Args], Any] | None = None  # default: apply the strategy
    # (args, data, the keyword arguments run_task builds) -> the trainer; default: trainer_class(**those). For a trainer
    # chosen by the options (the text recipes' contrastive few-shot phase, hf_transfer/contrastive.py).
    build_trainer: Callable[[Args, TaskData, dict], Any] | None = None
    before_train: Callable[[Any, Args, TaskData], dict] | None = None  # (trainer, args, data) -> metrics to record
    after_train: Callable[[Any, Args, TaskData, dict], dict] | None = None  # (..., train metrics) -> metrics to record
    after_save: Callable[[Any, Args, dict], None] | None = None  # (trainer, args, results), rank 0 only
    summary: Callable[[dict], list[str]] | None = None  # extra lines for the run summary
    # (args, results) -> {"model": [...], "limitations": [...]}: the task's own lines in the model card
    # (hf_transfer/sharing/cards.py); "limitations" replaces the default "evaluated on the training data's source" line
    card_notes: Callable[[Args, dict], dict[str, list[str]]] | None = None
    pipeline_tag: str | None = None  # the saved model's Hub task, for its card (default: from model_class, hf_transfer/sharing/cards.py)

    def argument_types(self) -> tuple[type, ...]:
        import transformers

        from hf_transfer.run.outputs import OutputArgs
        from hf_transfer.sharing.hub import SharingArgs

        return (ModelArgs, *self.arguments, StrategyArgs, OutputArgs, SharingArgs, getattr(transformers, self.training_arguments))

    def parse(self, argv: list[str] | None = None) -> Args:
        """Parse flags (and `--config FILE`) into this task's arguments; defaults are computed here, not at import."""
        from hf_transfer.run.launch import recipe_defaults

        return Args(parse_args(self.argument_types(), argv, recipe_defaults(**self.defaults)))

    def main(self, argv: list[str] | None = None) -> dict:
        return run_task(self, argv)


def _default_build_model(task: Task, args: Args, data: TaskData):
    import transformers

    from hf_transfer.models.loading import load_pretrained

    return load_pretrained(getattr(transformers, task.model_class), args.model, data.config)


def run_task(task: Task, argv: list[str] | None = None) -> dict:
    """Parse, check, load, build the model, apply the strategy, train, then `finish`; returns the run's metrics."""
    args = task.parse(argv)  # first, so that --help and bad flags answer before the heavy imports below
    from hf_transfer.run.finish import RunClock
    from hf_transfer.run.launch import check_launch
    from hf_transfer.run.outputs import (
        OutputArgs,
        RunLock,
        check_output_dir,
        check_resume,
        finished_run,
        run_identity,
        write_failure,
    )
    from hf_transfer.sharing.hub import prepare_sharing

    clock = RunClock()
    train_args = args.training
    check_launch(train_args)
    # Sharing options are checked now; the Trainer never pushes by itself (its save_model would push before the card
    # and metrics exist): `push` is the plan the run carries out as its very last step, below.
    push = prepare_sharing(args)
    identity = run_identity(args)
    check_output_dir(train_args, args[OutputArgs], identity)
    finished = finished_run(train_args, args[OutputArgs])
    if finished is not None:
        print(f"note: the run in {train_args.output_dir} finished already: nothing to resume; its metrics, model and "
              "card are left as they are", flush=True)
        return finished
    # One run per folder, from the check on; the main process holds the lock for the whole launch.
    with RunLock(train_args.output_dir) if train_args.should_save else contextlib.nullcontext():
        resume = check_resume(train_args)  # under the lock: it removes incomplete checkpoints
        try:
            return _train_and_finish(task, args, clock, identity, resume, push)
        except Exception as error:
            failure = write_failure(error, train_args.output_dir)
            if failure is None:
                raise
            raise failure from error


def _train_and_finish(task: Task, args: Args, clock, identity: dict, resume: str | None, push) -> dict:
    """Load, build, train and finish a checked run (`run_task` holds the folder's lock around it)."""
    from transformers import set_seed

    from hf_transfer import trainer as trainers
    from hf_transfer.models.loading import note, resuming_from
    from hf_transfer.run.finish import finish
    from hf_transfer.run.launch import choose_threads, emulated_bf16_note, native_bf16, precision
    from hf_transfer.run.outputs import OutputArgs, start_output_dir
    from hf_transfer.sharing.cards import complete_output
    from hf_transfer.sharing.hub import push_output
    from hf_transfer.strategies import apply_strategy

    train_args, strategy = args.training, args.strategy
    threads = choose_threads(train_args)
    if slow_precision := emulated_bf16_note(train_args):
        note(slow_precision)

    # Everything that can be wrong with the input is checked here, before any weights load or anything but the lock is written.
    data = task.load(args)
    strategy.check_config(data.config)

    set_seed(train_args.seed)  # the new head's initialisation (or a from-scratch model's) is part of the run
    with resuming_from(resume):
        model = (task.build_model or (lambda a, d: _default_build_model(task, a, d)))(args, data)
    model = task.prepare_model(model, args) if task.prepare_model else apply_strategy(model, strategy)
    trainers.check_setup(model, train_args, strategy, data.collator)  # what the trainer would refuse, before any write
    start_output_dir(train_args, args[OutputArgs], identity, resume)  # the first write: everything loaded and checked
    trainer_kwargs = dict(
        model=model,
        args=train_args,
        strategy=strategy,
        train_dataset=data.datasets["train"],
        eval_dataset=data.datasets["validation"],
        processing_class=data.processing_class,
        data_collator=data.collator,
        compute_metrics=data.compute_metrics,
        preprocess_logits_for_metrics=data.preprocess_logits_for_metrics,
        callbacks=list(data.callbacks) or None,
    )
    if task.build_trainer is not None:
        trainer = task.build_trainer(args, data, trainer_kwargs)
    else:
        trainer = getattr(trainers, task.trainer_class)(**trainer_kwargs)
    recorded = {
        "task": task.name,
        "model_name_or_path": display_path(args.model.model_name_or_path),
        "from_scratch": args.model.from_scratch,
        "strategy": strategy.strategy,
        "train_examples": len(data.datasets["train"]),
        "precision": precision(train_args),
        "precision_reason": native_bf16() if precision(train_args) == "bf16" else None,
        "torch_threads": threads,
        "dataloader_workers": train_args.dataloader_num_workers,
        **data.report,
    }
    if task.before_train:
        recorded.update(task.before_train(trainer, args, data))
    train_result = trainer.train(resume_from_checkpoint=resume)
    recorded["epochs"] = round(trainer.state.epoch or 0, 3)
    if resume is not None:
        recorded.update(resumed_loss(train_result.metrics, resume))
    if task.after_train:
        recorded.update(task.after_train(trainer, args, data, train_result.metrics))
    eval_splits = {split: data.datasets[split] for split in data.eval_splits if split in data.datasets}
    results = finish(trainer, clock, train_result.metrics, eval_splits, recorded, summary=task.summary,
                     card=lambda trainer, results: complete_output(task, args, data, trainer, results, push))
    if task.after_save and trainer.is_world_process_zero():
        task.after_save(trainer, args, results)
    if push is not None and trainer.is_world_process_zero():
        push_output(push, train_args.output_dir)  # last: metrics, card and carried-over weights are all written
    return results


def resumed_loss(train_metrics: dict, checkpoint: str) -> dict:
    """A resumed run's `train_loss` averages only the steps after the resume: relabel it, so it is never compared
    with an uninterrupted run's loss by mistake (log_history.json holds the logged losses of the whole run)."""
    from pathlib import Path

    step = int(Path(checkpoint).name.split("-")[-1]) if Path(checkpoint).name.split("-")[-1].isdigit() else None
    loss = train_metrics.pop("train_loss", None)
    return {"train_loss_since_resume": loss, "resumed_from_step": step}


def display_path(value: str) -> str:
    """A model path as a reader of metrics.json can use it: the embedded default by its name, anything else as the
    user gave it (an absolute path inside this machine's virtualenv means nothing on another)."""
    from hf_transfer.models.loading import (
        DEFAULT_MODEL_NAME,
        DEFAULT_MODEL_PACKAGE,
        is_default_model,
    )

    if is_default_model(value):
        return f"{DEFAULT_MODEL_NAME} (embedded, from {DEFAULT_MODEL_PACKAGE})"
    return value


def mixed_precision(train_args) -> bool:
    """Whether batches are padded to multiples of 8 for tensor cores: that helps a GPU in half precision only; a CPU
    would just compute the extra padding."""
    return bool(train_args.bf16 or train_args.fp16) and not train_args.use_cpu
