"""Did transfer help? One task under several strategies, with training from scratch and frozen features always beside them.

    python recipes/compare.py --strategies full lora gradual --seeds 1 2 3 \\
        --recipe_args "--train_file train.csv --validation_file dev.csv --max_train_samples_per_class 64"
    python recipes/compare.py --k_folds 5 --seeds 1 --recipe_args "--train_file small.csv"

Every run gets the same data, seeds and budget (the flags in --recipe_args/--recipe_config). The report
(report.md, PNG plots, runs.json) goes to --output_dir. A strategy is a preset name or `name=--flags`:
`lora_r16=--strategy lora --lora_r 16 --learning_rate 5e-4`.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hf_transfer` importable from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import linear_probe
    import sentiment
else:
    from . import linear_probe, sentiment

from hf_transfer import parse_args
from hf_transfer.data.text import load_raw
from hf_transfer.errors import HfTransferError, run_cli
from hf_transfer.evidence import SCRATCH, Run, write_report
from hf_transfer.features import HEADS, stratified_folds

PRESETS = {
    "full": "--strategy full",
    "feature_extraction": "--strategy feature_extraction",
    "gradual": "--strategy gradual",
    "layer_lr_decay": "--strategy full --layer_lr_decay 0.8",
    "lora": "--strategy lora",
}


@dataclass
class CompareArgs:
    strategies: list[str] = field(
        default_factory=lambda: ["full", "lora", "gradual"],
        metadata={"help": f"Presets ({', '.join(PRESETS)}) or name=--flags. Scratch and frozen features are always added."},
    )
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Each arm runs once per seed: mean and spread."})
    k_folds: int | None = field(default=None, metadata={"help": "Cross-validate on the training set instead of using the validation split."})
    recipe_config: str | None = field(default=None, metadata={"help": "Config file given to every run of the sentiment recipe."})
    recipe_args: str = field(default="", metadata={"help": "Flags given to every run (data, model, budget), as one quoted string."})
    frozen_head: str = field(default="logistic_regression", metadata={"help": f"Classical head of the frozen-features arm: {', '.join(HEADS)}."})
    feature_cache_dir: str = field(default="outputs/feature_cache", metadata={"help": "Feature cache of the frozen-features arm."})
    metric: str = field(default="validation_accuracy", metadata={"help": "The metric the report compares."})
    output_dir: str = field(default="outputs/compare", metadata={"help": "One folder per run, plus report.md and its plots."})
    launcher: str = field(
        default="", metadata={"help": "Command that starts each run, e.g. 'accelerate launch --num_processes 2' (default: this Python)."}
    )


def arms(args: CompareArgs) -> dict[str, list[str]]:
    """Arm name -> extra flags. Scratch first (the reference), then frozen features, then the strategies asked for."""
    table = {SCRATCH: ["--from_scratch", "--strategy", "full", "--frozen_baseline", "false"], f"frozen+{args.frozen_head}": []}
    for spec in args.strategies:
        name, _, flags = spec.partition("=")
        if not flags and name not in PRESETS:
            raise HfTransferError(f"unknown strategy preset '{name}'; use one of {', '.join(PRESETS)} or name=--flags")
        table[name] = shlex.split(flags or PRESETS[name]) + ["--frozen_baseline", "false"]
    return table


def fold_files(base: list[str], k: int, seed: int, out: Path) -> list[tuple[str, str]]:
    """Write k stratified (train, held-out) JSONL pairs of the raw training data; returns their paths."""
    _, data_args, *_ = sentiment.parse(base)
    raw = load_raw(data_args)["train"]
    from hf_transfer.data.text import LABEL_COLUMNS, TEXT_COLUMNS, pick_column

    label_col = pick_column(raw.column_names, data_args.label_column, LABEL_COLUMNS, "label_column", "label")
    pick_column(raw.column_names, data_args.text_column, TEXT_COLUMNS, "text_column", "text")  # fail early
    labels = [str(v) for v in raw[label_col]]
    import numpy as np

    pairs = []
    for i, (train_idx, held_idx) in enumerate(stratified_folds(np.asarray(labels), k, seed)):
        folder = out / "folds" / f"fold_{i}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = (folder / "train.jsonl", folder / "validation.jsonl")
        raw.select(train_idx).to_json(paths[0])
        raw.select(held_idx).to_json(paths[1])
        pairs.append((str(paths[0]), str(paths[1])))
    return pairs


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


def parse(argv: list[str] | None = None) -> tuple:
    return parse_args((CompareArgs,), argv)


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse(argv)
    if args.frozen_head not in HEADS:
        raise HfTransferError(f"unknown --frozen_head {args.frozen_head}; choose from {', '.join(HEADS)}")
    out = Path(args.output_dir)
    base = (["--config", args.recipe_config] if args.recipe_config else []) + shlex.split(args.recipe_args)
    plan = arms(args)
    for extra in plan.values():  # every run's flags are checked before the first one trains
        sentiment.parse(base + extra)
    folds = fold_files(base, args.k_folds, args.seeds[0], out) if args.k_folds else [None]

    runs: list[Run] = []
    for arm, extra in plan.items():
        for seed in args.seeds:
            for fold_index, fold in enumerate(folds):
                run_dir = out / arm / f"seed_{seed}" / (f"fold_{fold_index}" if fold else "")
                data = ["--dataset_name", "", "--train_file", fold[0], "--validation_file", fold[1]] if fold else []
                argv = base + data + ["--seed", str(seed), "--output_dir", str(run_dir)]
                if arm.startswith("frozen+"):
                    script = linear_probe.__file__
                    argv = argv + ["--heads", args.frozen_head, "--feature_cache_dir", args.feature_cache_dir]
                else:
                    script, argv = sentiment.__file__, argv + extra
                metrics = run_recipe(script, argv, run_dir, args.launcher)
                history_file = run_dir / "log_history.json"
                history = json.loads(history_file.read_text()) if history_file.is_file() else []
                runs.append(Run(arm, seed, metrics, history, str(run_dir), fold_index if fold else None))
                print(f"[compare] {arm} seed {seed}{f' fold {fold_index}' if fold else ''}: "
                      f"{args.metric} {metrics.get(args.metric, float('nan')):.4f} ({metrics.get('wall_time_s', 0):.0f} s)", flush=True)

    _, _, _, _, train_args = sentiment.parse(base + plan[SCRATCH])
    precision = "bf16" if train_args.bf16 else "fp16" if train_args.fp16 else "fp32"
    settings = {"seeds": args.seeds, "k_folds": args.k_folds, "recipe_args": " ".join(base) or "(defaults)"}
    report = write_report(runs, out, args.metric, "Transfer report: sentiment", settings, precision)
    print(report.read_text().split("![")[0], flush=True)
    return {"report": str(report), "runs": [{"arm": r.arm, "seed": r.seed, "fold": r.fold, **r.metrics} for r in runs]}


if __name__ == "__main__":
    run_cli(main)
