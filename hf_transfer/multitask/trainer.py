"""The multitask trainer: batches of one task at a time (sampler.py), and each task scored on its own.

Evaluation runs the task's rows through its head and its own metrics (classification or regression), keys prefixed
with the task's name (`eval_<task>_accuracy`), then adds `<prefix>_macro_score`, the mean over the tasks of each
task's main score (accuracy; Pearson for a regression task), which `--metric_for_best_model macro_score` selects on,
and `<prefix>_loss`, the tasks' losses averaged over all their rows (unweighted: the loss weights are training's).
"""
from __future__ import annotations

import math
import time

import numpy as np
from transformers.trainer_utils import speed_metrics

from hf_transfer.multitask.sampler import TaskSampler, TrainingProgress
from hf_transfer.trainer import TransferTrainer, random_state_kept

MAIN_SCORES = {"classification": "accuracy", "regression": "pearson"}


class TaskSplits:
    """One split of every task that has it: task name -> its tokenised rows (with their `task` ids)."""

    def __init__(self, by_task: dict) -> None:
        self.by_task = by_task

    def __len__(self) -> int:
        return sum(len(dataset) for dataset in self.by_task.values())

    def items(self):
        return self.by_task.items()


class MultitaskTrainer(TransferTrainer):
    """A TransferTrainer whose training batches come from `TaskSampler` and whose evaluation of `TaskSplits` scores
    each task apart. `train_dataset` is the tasks' training splits concatenated (a `ConcatDataset`, in task order);
    `tasks` maps each task's name to its loaded data (a `TaskData`: its `compute_metrics`, its report's task type)."""

    def __init__(self, model=None, args=None, *, tasks: dict, sampler: str = "proportional", temperature: float = 2.0,
                 **kwargs) -> None:
        if args is not None:
            # A process's batch trains one head; DDP must not wait for the gradients of the others. Set before
            # Trainer.__init__ builds the Accelerator, which reads it.
            args.ddp_find_unused_parameters = True
        super().__init__(model, args, **kwargs)
        self.tasks, self.sampler_policy, self.sampler_temperature = tasks, sampler, temperature
        self.progress = TrainingProgress()
        self.add_callback(self.progress)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        sizes = [len(part) for part in dataset.datasets]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return TaskSampler(sizes, self._train_batch_size, seed, self.sampler_policy, self.sampler_temperature,
                           self.progress)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        splits = self.eval_dataset if eval_dataset is None else eval_dataset
        if not isinstance(splits, TaskSplits):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        with random_state_kept():  # as every evaluation (TransferTrainerMixin.evaluate): training is the same without it
            return self.evaluate_tasks(splits, ignore_keys, metric_key_prefix)

    def evaluate_tasks(self, splits: TaskSplits, ignore_keys=None, prefix: str = "eval") -> dict:
        """Each task's rows through its own head and metrics, then the loss over all rows and the macro score; logged
        and handed to the callbacks (best model, early stopping) as one evaluation."""
        start, metrics, rows, losses, main = time.time(), {}, [], [], []
        own = self.compute_metrics
        try:
            for name, dataset in splits.items():
                task = self.tasks[name]
                self.compute_metrics = task.compute_metrics
                output = self.evaluation_loop(self.get_test_dataloader(dataset), description=f"Evaluation of {name}",
                                              ignore_keys=ignore_keys, metric_key_prefix=f"{prefix}_{name}")
                metrics.update(output.metrics)
                rows.append(output.num_samples)
                losses.append(output.metrics[f"{prefix}_{name}_loss"])
                main.append(output.metrics[f"{prefix}_{name}_{MAIN_SCORES[task.report['task_type']]}"])
        finally:
            self.compute_metrics = own
        metrics[f"{prefix}_loss"] = float(np.average(losses, weights=rows))
        metrics[f"{prefix}_macro_score"] = float(np.mean(main))
        batch = self.args.eval_batch_size * self.args.world_size
        metrics.update(speed_metrics(prefix, start, num_samples=sum(rows), num_steps=sum(math.ceil(n / batch) for n in rows)))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
