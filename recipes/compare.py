"""Did transfer help? One task under several strategies, with training from scratch and frozen features always beside them.

    python recipes/compare.py --strategies full lora gradual --seeds 1 2 3 \\
        --recipe_args "--train_file train.csv --validation_file dev.csv --max_train_samples_per_class 64"
    python recipes/compare.py --train_sizes 16 64 256 1000 --seeds 1 2 3 --recipe_args "--train_file train.csv"
    python recipes/compare.py --recipe audio_classification --strategies full lora \\
        --recipe_args "--train_dir clips/train --validation_dir clips/dev --model_name_or_path facebook/wav2vec2-base"
    python recipes/compare.py --k_folds 5 --seeds 1 --recipe_args "--train_file small.csv"
    python recipes/compare.py --recipe domain_adaptation --references false --seeds 1 \\
        --strategies source_only="--adaptation source_only" dann="--adaptation dann" coral="--adaptation coral" \\
        --variants books_dvd="--train_file amazon/books --target_file amazon/dvd" dvd_books="--train_file amazon/dvd --target_file amazon/books"

`--recipe NAME` (default sentiment) is any task recipe in recipes/ (one that declares a `TASK`). Its arms:
training from scratch first (the reference), then frozen features + a classical head (recipes/linear_probe.py,
for tasks with class labels), then the strategies asked for. Every run gets the same data, seeds and budget
(the flags in --recipe_args/--recipe_config). The report (report.md, PNG plots, runs.json) goes to
--output_dir. A strategy is a preset name or `name=--flags`: `lora_r16=--strategy lora --lora_r 16 --learning_rate 5e-4`.

`--variants name=--flags ...` runs every arm on every data variant (domain pairs for domain adaptation: arms x pairs)
and adds a table of arms by variants with their mean; the domain-adaptation arms are `name=--adaptation METHOD`.

`--few_shot_draws 5` runs every arm on 5 different draws of the training subset (the same 5 for every arm; with
--train_sizes, each draw's smaller subsets are part of its larger ones), so the spread includes which examples were
labelled, as the few-shot literature reports: `--train_sizes 8 16 32 64 --few_shot_draws 5 --strategies full contrastive`.

`--multitask_tasks tasks.yaml --multitask_task cr` adds the arm `multitask`: recipes/multitask.py on that task file,
once per seed, scored on its task `cr` (the task the other arms train on alone), so one report shows whether training
together with the file's other tasks helped: `--recipe_args "--train_file cr_train.csv --validation_file cr_test.csv"`
with the same files under `cr` in tasks.yaml. Its cost columns are the whole multitask run's.

`--train_sizes 16 64 256 1000` runs every arm at every size and every seed (per class with
--max_train_samples_per_class for a labelled task, else in all with --max_train_samples) and adds the transfer
learning curve to the report: the metric against the number of labelled examples, one line per arm.

Each run is its own process by default, so its wall time and peak memory are its own. `--in_process true` runs
them in this process instead (tests, notebooks): wall time is still per run, but peak memory is the process's
peak so far, not the run's.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer import parse_args
from hf_transfer.cli import run_cli
from hf_transfer.errors import HfTransferError
from hf_transfer.evidence.compare import SCRATCH, Run, report_metric, write_report
from hf_transfer.evidence.features import (
    HEADS,
    REGRESSION_HEADS,
    heads_for,
    shuffled_folds,
    stratified_folds,
)
from hf_transfer.multitask.export import own_scores
from hf_transfer.run.task import Args, Task
from recipes import linear_probe, load_recipe

PRESETS = {
    "full": "--strategy full",
    "feature_extraction": "--strategy feature_extraction",
    "gradual": "--strategy gradual",
    "layer_lr_decay": "--strategy full --layer_lr_decay 0.8",
    "lora": "--strategy lora",
    # SetFit's two phases with its defaults (recipes/configs/sentiment/contrastive_fewshot.yaml): text recipes only.
    "contrastive": "--contrastive_pairs_per_example 40 --learning_rate 2e-5 --num_train_epochs 1 --warmup_steps 0.1",
}
SIZE_OPTIONS = ("max_train_samples_per_class", "max_train_samples")


@dataclass
class CompareArgs:
    recipe: str = field(default="sentiment", metadata={"help": "The task recipe to compare strategies on (a file in recipes/ with a TASK)."})
    strategies: list[str] = field(
        default_factory=lambda: ["full", "lora", "gradual"],
        metadata={"help": f"Presets ({', '.join(PRESETS)}) or name=--flags. Scratch and frozen features are always added."},
    )
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Each arm runs once per seed: mean and spread."})
    train_sizes: list[int] | None = field(
        default=None,
        metadata={"help": "Run every arm at each training-set size (per class for a labelled task, else in all) and plot "
                  "the metric against the number of labelled examples."},
    )
    variants: list[str] | None = field(
        default=None,
        metadata={"help": "Data variants every arm runs on, as name=--flags (e.g. domain pairs: books_dvd='--train_file "
                  "... --target_file ...'); the report adds a table of arms by variants."},
    )
    references: bool = field(
        default=True, metadata={"help": "Add the references: training from scratch and frozen features (labelled tasks)."}
    )
    k_folds: int | None = field(
        default=None, metadata={"help": "Cross-validate on the training set instead of using the validation split (text recipes)."}
    )
    few_shot_draws: int | None = field(
        default=None,
        metadata={"help": "Run every arm on N different draws of the training subset (--train_sizes or "
                  "--max_train_samples_per_class; draw d samples with --train_sample_seed d, the same rows for every arm): "
                  "the report's mean ± std is then over draws and seeds, as the few-shot literature reports (text recipes)."},
    )
    multitask_tasks: str | None = field(
        default=None,
        metadata={"help": "A task file of recipes/multitask.py (its --tasks): its run, once per seed, joins the report as "
                  "the arm `multitask`, scored on --multitask_task (text recipes)."},
    )
    multitask_task: str | None = field(
        default=None,
        metadata={"help": "The task of --multitask_tasks that the other arms train on alone: its scores are the "
                  "multitask arm's."},
    )
    multitask_args: str = field(
        default="", metadata={"help": "Flags given to every multitask run (budget, --task_sampler, strategy), as one quoted string."}
    )
    recipe_config: str | None = field(default=None, metadata={"help": "Config file given to every run of the recipe."})
    recipe_args: str = field(default="", metadata={"help": "Flags given to every run (data, model, budget), as one quoted string."})
    frozen_head: str | None = field(
        default=None,
        metadata={"help": f"Classical head of the frozen-features arm: {', '.join(HEADS)} (default {HEADS[0]}); for a "
                  f"regression target {', '.join(REGRESSION_HEADS)} (the default)."},
    )
    feature_cache_dir: str = field(default="outputs/feature_cache", metadata={"help": "Feature cache of the frozen-features arm."})
    metric: str | None = field(
        default=None,
        metadata={"help": "The metric the report compares (default: the recipe's, e.g. validation_accuracy; "
                  "validation_mae for a regression target)."},
    )
    output_dir: str = field(default="outputs/compare", metadata={"help": "One folder per run, plus report.md and its plots."})
    launcher: str = field(
        default="", metadata={"help": "Command that starts each run, e.g. 'accelerate launch --num_processes 2' (default: this Python)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the runs of an earlier compare in --output_dir (each run's folder is cleared)."},
    )
    in_process: bool = field(
        default=False,
        metadata={"help": "Run every arm in this process, not one process per run (tests, notebooks): wall time stays per "
                  "run, peak memory becomes the process's."},
    )

    def __post_init__(self) -> None:
        if self.frozen_head is not None and self.frozen_head not in HEADS + REGRESSION_HEADS:
            raise HfTransferError(f"unknown --frozen_head {self.frozen_head}; choose from "
                                  f"{', '.join(HEADS + REGRESSION_HEADS)}")
        if self.k_folds is not None and self.k_folds < 2:
            raise HfTransferError(f"--k_folds must be at least 2, got {self.k_folds}")
        if self.train_sizes is not None:
            if min(self.train_sizes) < 1:
                raise HfTransferError(f"--train_sizes must be at least 1, got {min(self.train_sizes)}")
            self.train_sizes = sorted(set(self.train_sizes))
        if self.k_folds is not None and self.variants:
            raise HfTransferError("--k_folds splits one training file into folds; with --variants there are several: give one of them")
        if self.in_process and self.launcher:
            raise HfTransferError("--launcher starts a process per run, --in_process true runs none: give one of them")
        if self.few_shot_draws is not None and self.few_shot_draws < 1:
            raise HfTransferError(f"--few_shot_draws must be at least 1, got {self.few_shot_draws}")
        if (self.multitask_tasks is None) != (self.multitask_task is None):
            raise HfTransferError("--multitask_tasks (the task file) and --multitask_task (the task of it the other arms "
                                  "train on) go together: give both or neither")
        if self.multitask_tasks is not None:
            clashing = [flag for flag, value in (("--train_sizes", self.train_sizes), ("--variants", self.variants),
                                                 ("--k_folds", self.k_folds), ("--few_shot_draws", self.few_shot_draws))
                        if value is not None]
            if clashing:
                raise HfTransferError(f"the multitask arm trains on its task file's data as it is, so it cannot follow "
                                      f"{', '.join(clashing)}: drop them or --multitask_tasks")
        if self.few_shot_draws is not None and self.k_folds is not None:
            raise HfTransferError("--few_shot_draws draws training subsets and --k_folds splits the training set into folds: "
                                  "give one of them")


MULTITASK = "multitask"


def frozen_arm(args: CompareArgs) -> str:
    return f"frozen+{args.frozen_head or HEADS[0]}"


def regression_target(task: Task, parsed: Args) -> bool:
    """Whether the runs regress a number (a text recipe with --task_type regression, or fractional labels)."""
    from hf_transfer.data.text import TextDataArgs, task_type_of

    return TextDataArgs in task.arguments and task_type_of(parsed[TextDataArgs]) == "regression"


def _options(types) -> set[str]:
    return {f.name for kind in types for f in dataclasses.fields(kind)}


def arms(args: CompareArgs, task: Task) -> dict[str, list[str]]:
    """Arm name -> extra flags. Scratch first (the reference), then frozen features (labelled tasks), then the strategies."""
    # A recipe's own frozen baseline (sentiment's --frozen_baseline) is the frozen arm's job here: off in every run.
    off = ["--frozen_baseline", "false"] if "frozen_baseline" in _options(task.argument_types()) else []
    table = {SCRATCH: ["--from_scratch", "--strategy", "full", *off]} if args.references else {}
    if task.labelled and args.references:
        table[frozen_arm(args)] = []
    for spec in args.strategies:
        name, _, flags = spec.partition("=")
        if not flags and name not in PRESETS:
            raise HfTransferError(f"unknown strategy preset '{name}'; use one of {', '.join(PRESETS)} or name=--flags")
        if name in table:
            raise HfTransferError(f"arm name '{name}' is taken; name the strategy otherwise (name=--flags)")
        table[name] = shlex.split(flags or PRESETS[name]) + off
    if args.multitask_tasks is not None:
        if MULTITASK in table:
            raise HfTransferError(f"arm name '{MULTITASK}' is the multitask arm's; name the strategy otherwise (name=--flags)")
        table[MULTITASK] = shlex.split(args.multitask_args)
    return table


def check_multitask(args: CompareArgs, task: Task, argv: list[str]) -> None:
    """The multitask arm's flags parse, its task file names --multitask_task, and the compared recipe is a text one."""
    from hf_transfer.data.text import TextDataArgs
    from hf_transfer.multitask.spec import MultitaskArgs
    from recipes import multitask

    if TextDataArgs not in task.arguments:
        raise HfTransferError(f"--multitask_tasks trains text tasks together; {args.recipe} is not a text recipe: use "
                              "--recipe sentiment")
    names = [spec.name for spec in multitask.TASK.parse(argv)[MultitaskArgs].task_specs]
    if args.multitask_task not in names:
        raise HfTransferError(f"--multitask_task {args.multitask_task} is not a task of {args.multitask_tasks}; its "
                              f"tasks: {', '.join(names)}")


def variant_flags(args: CompareArgs) -> dict[str | None, list[str]]:
    """--variants as {name: flags}; {None: []} without variants."""
    if not args.variants:
        return {None: []}
    found = {}
    for spec in args.variants:
        name, _, flags = spec.partition("=")
        if not name or not flags or name in found:
            raise HfTransferError(f"--variants takes distinct name=--flags entries, got '{spec}'")
        found[name] = shlex.split(flags)
    return found


def size_option(args: CompareArgs, task: Task, parsed: Args, regression: bool = False) -> str | None:
    """The flag --train_sizes sets in every run: per class for a task with classes, else in all; None without sizes."""
    if args.train_sizes is None:
        return None
    offered = _options(type(instance) for instance in parsed)
    choices = SIZE_OPTIONS if task.labelled and not regression else SIZE_OPTIONS[1:]
    option = next((o for o in choices if o in offered), None)
    if option is None:
        raise HfTransferError(f"--train_sizes needs a recipe with --max_train_samples; {args.recipe} has none")
    given = [f"--{o}" for instance in parsed for o in SIZE_OPTIONS if getattr(instance, o, None) is not None]
    if given:
        raise HfTransferError(f"--train_sizes sets --{option} in every run; remove {given[0]} from --recipe_args/--recipe_config")
    return option


def draw_flags(args: CompareArgs, parsed: Args, option: str | None) -> dict[int | None, list[str]]:
    """--few_shot_draws as {draw: flags}, draw d sampling with --train_sample_seed d; {None: []} without draws."""
    if args.few_shot_draws is None:
        return {None: []}
    if "train_sample_seed" not in _options(type(instance) for instance in parsed):
        raise HfTransferError(f"--few_shot_draws draws training subsets with --train_sample_seed, which the {args.recipe} "
                              "recipe does not offer; use a text recipe (sentiment)")
    if option is None and not any(getattr(instance, o, None) is not None for instance in parsed for o in SIZE_OPTIONS):
        raise HfTransferError("--few_shot_draws draws a training subset, and every run trains on all the data: give "
                              "--train_sizes, or --max_train_samples_per_class in --recipe_args")
    if any(getattr(instance, "train_sample_seed", None) is not None for instance in parsed):
        raise HfTransferError("--few_shot_draws sets --train_sample_seed in every run; remove it from --recipe_args/--recipe_config")
    return {draw: ["--train_sample_seed", str(draw)] for draw in range(args.few_shot_draws)}


def fold_files(task: Task, base: list[str], k: int, seed: int, out: Path,
               regression: bool = False) -> list[tuple[str, str]]:
    """Write k (train, held-out) JSONL pairs of the raw training data, stratified by label (a regression target:
    shuffled); returns their paths (text recipes)."""
    import numpy as np

    from hf_transfer.data.text import (
        LABEL_COLUMNS,
        TEXT_COLUMNS,
        TextDataArgs,
        load_raw,
        pick_column,
    )

    data_args = task.parse(base)[TextDataArgs]
    raw = load_raw(data_args)["train"]
    label_col = pick_column(raw.column_names, data_args.label_column, LABEL_COLUMNS, "label_column", "label")
    pick_column(raw.column_names, data_args.text_column, TEXT_COLUMNS, "text_column", "text")  # fail early
    labels = [str(v) for v in raw[label_col]]

    pairs = []
    folds = shuffled_folds(len(labels), k, seed) if regression else stratified_folds(np.asarray(labels), k, seed)
    for i, (train_idx, held_idx) in enumerate(folds):
        folder = out / "folds" / f"fold_{i}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = (folder / "train.jsonl", folder / "validation.jsonl")
        raw.select(train_idx).to_json(paths[0])
        raw.select(held_idx).to_json(paths[1])
        pairs.append((str(paths[0]), str(paths[1])))
    return pairs


def check_folds(args: CompareArgs, task: Task) -> None:
    from hf_transfer.data.text import TextDataArgs

    if args.k_folds and TextDataArgs not in task.arguments:
        raise HfTransferError(
            f"--k_folds writes fold files of text data and works for text recipes (sentiment) only; "
            f"for {args.recipe}, drop --k_folds and use several --seeds"
        )


def run_recipe(script: str, argv: list[str], run_dir: Path, launcher: str) -> dict:
    """One run in its own process, so that its wall time and peak memory are its own; its output goes to run.log."""
    command = (shlex.split(launcher) if launcher else [sys.executable]) + [script, *argv]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "run.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = (run_dir / "run.log").read_text().strip().splitlines()[-1:] or [""]
        raise HfTransferError(f"a run failed (exit {code}): {tail[0]} (full log: {run_dir / 'run.log'})")
    return json.loads((run_dir / "metrics.json").read_text())


def run_in_process(module, argv: list[str], run_dir: Path) -> dict:
    """One run in this process (`--in_process true`): the recipe's `main`; its metrics as it saved them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    module.main(argv)
    return json.loads((run_dir / "metrics.json").read_text())


def parse(argv: list[str] | None = None) -> CompareArgs:
    (args,) = parse_args((CompareArgs,), argv)
    return args


def _check_metric(metric: str, metrics: dict, arm: str) -> None:
    if metric not in metrics:
        offered = sorted(k for k in metrics if k.startswith(("validation_", "test_", "perplexity_")) and isinstance(metrics[k], (int, float)))
        raise HfTransferError(f"the {arm} run reports no {metric}; pass --metric with one it reports: {', '.join(offered[:12]) or '(none)'}")


def main(argv: list[str] | None = None) -> dict:
    from transformers import TrainingArguments

    args = parse(argv)
    recipe = load_recipe(args.recipe)
    task: Task = recipe.TASK
    check_folds(args, task)
    out = Path(args.output_dir)
    base = (["--config", args.recipe_config] if args.recipe_config else []) + shlex.split(args.recipe_args)
    variants = variant_flags(args)
    first = next(iter(variants.values()))  # a recipe may need a variant's data flags to parse at all
    parsed = task.parse(base + first)
    regression = regression_target(task, parsed)  # reads the training labels when --task_type is auto
    metric = args.metric or report_metric(task.metric, "regression" if regression else None)
    args.frozen_head = heads_for([args.frozen_head] if args.frozen_head else None, regression)[0]
    plan = arms(args, task)
    option = size_option(args, task, parsed, regression)
    sizes = args.train_sizes or [None]
    draws = draw_flags(args, parsed, option)

    def size_flags(size):
        return [] if size is None else [f"--{option}", str(size)]

    def run_folder(arm, size, variant, seed, fold_index, draw=None):
        return (out / (f"size_{size}" if size is not None else "") / (f"variant_{variant}" if variant else "")
                / arm / f"seed_{seed}" / (f"draw_{draw}" if draw is not None else "")
                / (f"fold_{fold_index}" if fold_index is not None else ""))

    def run_argv(arm, extra, data, size, seed, run_dir, variant=None, fold_index=None, draw=None):
        argv = (base + variants[variant] + data + size_flags(size) + draws[draw]
                + ["--seed", str(seed), "--output_dir", str(run_dir)])
        if arm == frozen_arm(args):
            return linear_probe, argv + ["--recipe", args.recipe, "--heads", args.frozen_head,
                                         "--feature_cache_dir", args.feature_cache_dir]
        overwrite = ["--overwrite_output_dir", "true"] if args.overwrite_output_dir else []
        if arm == MULTITASK:
            from recipes import multitask

            return multitask, ["--tasks", args.multitask_tasks, *extra, "--seed", str(seed), "--output_dir",
                               str(run_dir), *overwrite]
        # A strategy's model card puts the references of its seed and data (run before it) beside its own results.
        references = [f"{ref}={run_folder(ref, size, variant, seed, fold_index, draw)}" for ref in plan
                      if ref in (SCRATCH, frozen_arm(args)) and arm not in (SCRATCH, frozen_arm(args))]
        return recipe, argv + extra + overwrite + (["--compare_references", *references] if references else [])

    # Every run's flags are checked before the first one trains.
    for variant in variants:
        for arm, extra in plan.items():
            module, argv = run_argv(arm, extra, [], sizes[0], args.seeds[0], out / "check", variant, draw=next(iter(draws)))
            if module is linear_probe:
                linear_probe.parse(argv)
            elif arm == MULTITASK:
                check_multitask(args, task, argv)
            else:
                task.parse(argv)
    folds = fold_files(task, base, args.k_folds, args.seeds[0], out, regression) if args.k_folds else [None]

    runs: list[Run] = []
    for size, variant in [(size, variant) for size in sizes for variant in variants]:  # smallest size first
        for arm, extra in plan.items():
            for seed, draw in [(seed, draw) for seed in args.seeds for draw in draws]:
                for fold_index, fold in enumerate(folds):
                    fold_index = fold_index if fold else None
                    run_dir = run_folder(arm, size, variant, seed, fold_index, draw)
                    data = ["--dataset_name", "", "--train_file", fold[0], "--validation_file", fold[1]] if fold else []
                    module, run_args = run_argv(arm, extra, data, size, seed, run_dir, variant, fold_index, draw)
                    if args.in_process:
                        metrics = run_in_process(module, run_args, run_dir)
                    else:
                        metrics = run_recipe(module.__file__, run_args, run_dir, args.launcher)
                    if arm == MULTITASK:  # the compared task's scores, named as its single-task runs name them
                        metrics = {**metrics, **own_scores(metrics, args.multitask_task)}
                    if not runs and arm != frozen_arm(args):
                        _check_metric(metric, metrics, arm)  # a wrong --metric fails after one run, not after all
                    history_file = run_dir / "log_history.json"
                    history = json.loads(history_file.read_text()) if history_file.is_file() else []
                    runs.append(Run(arm, seed, metrics, history, str(run_dir), fold_index, size, variant, draw))
                    where = (f" size {size}" if size is not None else "") + (f" {variant}" if variant else "") + \
                        (f" fold {fold_index}" if fold else "") + (f" draw {draw}" if draw is not None else "")
                    print(f"[compare] {arm} seed {seed}{where}: {metric} {metrics.get(metric, float('nan')):.4f} "
                          f"({metrics.get('wall_time_s', 0):.0f} s)", flush=True)

    train_args = task.parse(base + first + next(iter(plan.values())))[TrainingArguments]
    precision = "bf16" if train_args.bf16 else "fp16" if train_args.fp16 else "fp32"
    size_unit = "per class" if option == "max_train_samples_per_class" else "in all"
    settings = {"recipe": args.recipe, "seeds": args.seeds, "k_folds": args.k_folds}
    if args.train_sizes:
        settings["train_sizes"] = f"{args.train_sizes} ({size_unit})"
    settings["recipe_args"] = " ".join(base) or "(defaults)"
    if args.multitask_tasks:
        settings["multitask"] = (f"recipes/multitask.py --tasks {args.multitask_tasks} {args.multitask_args}".strip()
                                 + f", scored on its task {args.multitask_task}")
    if args.variants:
        settings["variants"] = ", ".join(args.variants)
    if args.few_shot_draws:
        settings["few_shot_draws"] = (f"{args.few_shot_draws} (draw d: --train_sample_seed d; mean ± std over draws and "
                                      "seeds)")
    settings["runs"] = "in one process (peak memory is the process's)" if args.in_process else "one process each"
    report = write_report(runs, out, metric, f"Transfer report: {task.name}", settings, precision, size_unit=size_unit)
    print(report.read_text().split("![")[0], flush=True)
    return {"report": str(report), "metric": metric,
            "runs": [{"arm": r.arm, "seed": r.seed, "fold": r.fold, "train_size": r.train_size, "variant": r.variant,
                      "draw": r.draw, **r.metrics}
                     for r in runs]}


if __name__ == "__main__":
    run_cli(main)
