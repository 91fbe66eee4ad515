"""The multitask recipe's `Task`: each task is loaded and built by a single task's own steps, then they are joined.

A recipe hands over the single task's `load` and `build_model` (the text classification task's: this package sits
below `tasks` and never imports it, docs/layout.md), and gets one run that loads every task of --tasks with its own
options, builds one classifier per task around the first one's encoder, trains them with batches of one task at a
time and exports each task's model (export.py).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_transfer.errors import HfTransferError
from hf_transfer.multitask.spec import MultitaskArgs, TaskSpec
from hf_transfer.run.task import Args, Task, TaskData

TASK_ID = "task"  # the column (and batch key) naming each row's task, by its index in the task file


def multitask_task(load_one: Callable[[Args], TaskData], build_one: Callable[[Args, TaskData], Any]) -> Task:
    """The recipe's Task for tasks that `load_one` loads (one task's options in, its TaskData out) and `build_one`
    builds (its model, given those)."""
    def export(trainer, args, results):  # rank 0, once the run's own folder is complete
        from hf_transfer.multitask.export import export_tasks

        folder = args.training.output_dir
        export_tasks(task, trainer, args, results, {
            spec.name: task_arguments(args, spec, output_dir=str(task_folder(folder, spec.name)))
            for spec in args[MultitaskArgs].task_specs})

    task = Task(
        name="multitask",
        arguments=(MultitaskArgs,),
        load=lambda args: load_tasks(args, load_one),
        defaults={"output_dir": "outputs/multitask", "learning_rate": 1e-4, "num_train_epochs": 3},
        build_model=lambda args, data: build_multitask_model(args, data, build_one),
        build_trainer=build_trainer,
        after_train=after_train,
        after_save=export,
        summary=summary_lines,
        metric="validation_macro_score",
    )
    return task


def task_arguments(args: Args, spec: TaskSpec, output_dir: str | None = None) -> Args:
    """One task's options as a single-task run would have them: its data options with the run's model, strategy,
    sharing and training options. --metric_for_best_model is the run's, checked against every task (check_best_metric),
    so the task's copy of the training options goes without it; `output_dir` names the task's folder for its card."""
    from transformers import TrainingArguments

    from hf_transfer.models.loading import ModelArgs
    from hf_transfer.sharing.hub import SharingArgs
    from hf_transfer.strategies import StrategyArgs

    training = copy.copy(args[TrainingArguments])
    training.metric_for_best_model = None
    if output_dir is not None:
        training.output_dir = output_dir
    return Args((args[ModelArgs], spec.data, args[StrategyArgs], args[SharingArgs], training))


def check_options(args: Args) -> None:
    """What does not go with a multitask run, refused before anything loads."""
    from hf_transfer.sharing.hub import SharingArgs

    strategy, training, options = args.strategy, args.training, args[MultitaskArgs]
    if strategy.strategy == "peft":
        raise HfTransferError("--strategy peft is not supported by the multitask recipe; use --strategy lora")
    if strategy.cache_frozen_prefix:
        raise HfTransferError("--cache_frozen_prefix is not supported by the multitask recipe (the cache is built for one "
                              "classifier's encoder, not an encoder shared by several); drop it")
    if args[SharingArgs].merge_lora:
        raise HfTransferError("--merge_lora: the multitask recipe exports each task with --lora_export (merged by "
                              "default); the output folder keeps the adapters the run resumes from. Drop --merge_lora")
    if options.lora_export is not None and strategy.strategy != "lora":
        raise HfTransferError(f"--lora_export applies to --strategy lora, not '{strategy.strategy}'; drop it")
    if training.ddp_find_unused_parameters is False:
        raise HfTransferError("--ddp_find_unused_parameters false: a batch trains one task's head, so the others have "
                              "no gradient on that process; leave it unset")
    if training.train_sampling_strategy != "random":
        raise HfTransferError("--train_sampling_strategy: the multitask recipe's batches come from --task_sampler; "
                              "leave it at random")


def load_tasks(args: Args, load_one: Callable[[Args], TaskData]) -> TaskData:
    """Every task loaded by `load_one` with its own options (an error names the task), joined: the training splits
    one after another (a ConcatDataset, in the task file's order), the evaluation splits per task (TaskSplits),
    each row with its task's id."""
    from torch.utils.data import ConcatDataset

    from hf_transfer.multitask.trainer import TaskSplits

    check_options(args)
    options = args[MultitaskArgs]
    loaded: dict[str, TaskData] = {}
    for spec in options.task_specs:
        try:
            loaded[spec.name] = load_one(task_arguments(args, spec))
        except HfTransferError as error:
            raise HfTransferError(f"task '{spec.name}': {error}") from error
    check_best_metric(args.training, loaded)
    splits = {split: {name: with_task_ids(data.datasets[split], index)
                      for index, (name, data) in enumerate(loaded.items()) if split in data.datasets}
              for split in ("train", "validation", "test")}
    datasets = {"train": ConcatDataset(list(splits["train"].values())), "validation": TaskSplits(splits["validation"])}
    if splits["test"]:
        datasets["test"] = TaskSplits(splits["test"])
    first = next(iter(loaded.values()))
    return TaskData(datasets=datasets, collator=first.collator, processing_class=first.processing_class,
                    config=first.config, report=task_report(options, loaded), extra={"tasks": loaded})


def with_task_ids(dataset, index: int):
    return dataset.add_column(TASK_ID, [index] * len(dataset))


def task_report(options: MultitaskArgs, loaded: dict[str, TaskData]) -> dict:
    """What metrics.json records of the tasks and the sampler."""
    from hf_transfer.multitask.sampler import TaskSampler

    sizes = {name: len(data.datasets["train"]) for name, data in loaded.items()}
    shares = TaskSampler(list(sizes.values()), 1, 0, options.task_sampler, options.sampler_temperature).shares(0.0)
    report = {
        "tasks": list(loaded),
        "task_types": {name: data.report["task_type"] for name, data in loaded.items()},
        "task_train_examples": sizes,
        "task_loss_weights": {spec.name: spec.loss_weight for spec in options.task_specs},
        "task_label_names": {name: data.report["label_names"] for name, data in loaded.items() if "label_names" in data.report},
        "task_targets": {name: data.report["target_column"] for name, data in loaded.items() if "target_column" in data.report},
        "task_sampler": options.task_sampler,
        # The share of batches each task draws (annealed: at the start; it ends at equal shares).
        "task_sampler_shares": {name: round(float(p), 6) for name, p in zip(sizes, shares)},
    }
    if options.task_sampler == "temperature":
        report["sampler_temperature"] = options.sampler_temperature
    return report


def task_scores(data: TaskData) -> tuple[str, ...]:
    """The scores a task's evaluation reports."""
    from hf_transfer.metrics.regression import SCORES

    if data.report["task_type"] == "regression":
        return SCORES
    return ("accuracy", "f1", "precision", "recall") + (("roc_auc",) if len(data.report["label_names"]) == 2 else ())


def check_best_metric(train_args, loaded: dict[str, TaskData]) -> None:
    """--metric_for_best_model against what the run reports: loss, macro_score, or a task's own (`<task>_accuracy`,
    `<task>_loss`). A task's error (`<task>_mse`) is lower-is-better, which the Trainer cannot tell by its name."""
    from hf_transfer.metrics.regression import LOWER_IS_BETTER

    best = (train_args.metric_for_best_model or "").removeprefix("eval_")
    if not best:
        return
    reported = {"loss", "macro_score"} | {f"{name}_{score}" for name, data in loaded.items()
                                           for score in ("loss", *task_scores(data))}
    if best not in reported:
        name = next(iter(loaded))
        raise HfTransferError(f"--metric_for_best_model {best}: a multitask run reports loss, macro_score and each "
                              f"task's own scores by name (e.g. {name}_{task_scores(loaded[name])[0]}); choose one")
    if best.rpartition("_")[2] in LOWER_IS_BETTER and train_args.greater_is_better:
        train_args.greater_is_better = False
        print(f"note: --metric_for_best_model {best} is an error: the best checkpoint is the one where it is lowest",
              flush=True)


def build_multitask_model(args: Args, data: TaskData, build_one: Callable[[Args, TaskData], Any]):
    """One model per task by `build_one`, each given the first one's encoder as soon as it is built (its own is freed
    before the next task's loads), in one MultitaskModel."""
    from hf_transfer.models.loading import notes_about
    from hf_transfer.multitask.model import MultitaskModel, share_encoder

    options = args[MultitaskArgs]
    models = {}
    for spec in options.task_specs:
        with notes_about(f"task '{spec.name}'"):
            model = build_one(task_arguments(args, spec), data.extra["tasks"][spec.name])
        if models:
            share_encoder(next(iter(models.values())), model)
        models[spec.name] = model
    return MultitaskModel(models, {spec.name: spec.loss_weight for spec in options.task_specs})


def build_trainer(args: Args, data: TaskData, kwargs: dict):
    from hf_transfer.multitask.trainer import MultitaskTrainer

    options = args[MultitaskArgs]
    return MultitaskTrainer(**kwargs, tasks=data.extra["tasks"], sampler=options.task_sampler,
                            temperature=options.sampler_temperature)


def after_train(trainer, args: Args, data: TaskData, train_metrics: dict) -> dict:
    """The time of one optimizer step in this run (evaluations during training included), to set beside a single
    task's."""
    steps = trainer.state.global_step - trainer.progress.first_step
    return {"seconds_per_step": train_metrics["train_runtime"] / steps} if steps > 0 else {}


def summary_lines(results: dict) -> list[str]:
    """One line per task: its type, training rows and main validation score; then the macro score."""
    from hf_transfer.multitask.trainer import MAIN_SCORES

    lines = []
    for name in results.get("tasks", []):
        kind = results["task_types"][name]
        score = MAIN_SCORES[kind]
        value = results.get(f"validation_{name}_{score}")
        shown = f"{value:.4f}" if isinstance(value, float) else "n/a"
        lines.append(f"{'task ' + name:<36} {kind}, {results['task_train_examples'][name]:,} training rows, "
                     f"validation {score} {shown}")
    if isinstance(results.get("validation_macro_score"), float):
        lines.append(f"{'macro score (mean of main scores)':<36} {results['validation_macro_score']:.4f}")
    return lines


def task_folder(output_dir: str, name: str) -> Path:
    """Where task `name`'s standalone model goes."""
    return Path(output_dir) / "tasks" / name

