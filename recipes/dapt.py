"""Did domain-adaptive pretraining pay off? Adapt on unlabelled text, then fine-tune adapted and original encoders alike.

    accelerate launch recipes/dapt.py --config recipes/configs/dapt/minilm_imdb_sst2.yaml
    accelerate launch recipes/dapt.py --pretrain_args "--train_file unlabelled.jsonl --max_steps 500" \\
        --finetune_args "--train_file train.csv --validation_file dev.csv" --seeds 1 2 3
    accelerate launch recipes/dapt.py --tapt --finetune_args "--train_file train.csv"   # task-adaptive: the task's own texts

Runs recipes/continued_pretraining.py once, then recipes/sentiment.py for every seed on the original and
on the adapted encoder with identical data, seed and budget, and reports both and their difference. The pretraining
warms a new masked-LM head up alone first, as that recipe does (`--pretrain_args "--mlm_head_warmup_steps N"`,
default auto; 0 turns it off).
"""
from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer import parse_args
from hf_transfer.cli import run_cli
from hf_transfer.data.text import TextDataArgs
from hf_transfer.errors import HfTransferError
from hf_transfer.tasks.masked_lm import describe_head_warmup
from recipes import continued_pretraining, sentiment

COMPARED = ("validation_accuracy", "validation_f1", "baseline_accuracy", "test_accuracy")


@dataclass
class DaptArgs:
    model_name_or_path: str | None = field(default=None, metadata={"help": "The original encoder (default: the embedded MiniLM)."})
    output_dir: str = field(default="outputs/dapt", metadata={"help": "adapted/, original/seed_N/, adapted/seed_N/ and comparison.json go here."})
    pretrain_config: str | None = field(default=None, metadata={"help": "Config file for recipes/continued_pretraining.py."})
    pretrain_args: str = field(default="", metadata={"help": "Extra flags for continued pretraining, as one quoted string."})
    finetune_config: str | None = field(default=None, metadata={"help": "Config file for recipes/sentiment.py."})
    finetune_args: str = field(default="", metadata={"help": "Extra flags for fine-tuning, as one quoted string."})
    tapt: bool = field(default=False, metadata={"help": "Task-adaptive: pretrain on the fine-tuning set's own training texts."})
    seeds: list[int] = field(default_factory=lambda: [42], metadata={"help": "Fine-tuning seeds (mean and spread over them)."})


def _argv(config: str | None, extra: str, **flags) -> list[str]:
    argv = (["--config", config] if config else []) + shlex.split(extra)
    for key, value in flags.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def plan(args: DaptArgs) -> tuple[list[str], dict[str, list[str]]]:
    """The pretraining argv and one fine-tuning argv per arm (seed added later), all validated before anything runs."""
    out = Path(args.output_dir)
    finetune = _argv(args.finetune_config, args.finetune_args)
    task_data = sentiment.TASK.parse(finetune + _argv(None, "", model_name_or_path=args.model_name_or_path))[TextDataArgs]
    pretrain_flags = {"model_name_or_path": args.model_name_or_path, "output_dir": out / "adapted"}
    if args.tapt:
        if "--train_file" in args.pretrain_args or "--dataset_name" in args.pretrain_args:
            raise HfTransferError("--tapt takes the unlabelled text from the fine-tuning data; drop --train_file/--dataset_name from --pretrain_args")
        pretrain_flags.update(train_file=task_data.train_file, dataset_name=task_data.dataset_name,
                              dataset_config_name=task_data.dataset_config_name, text_column=task_data.text_column)
    pretrain = _argv(args.pretrain_config, args.pretrain_args, **pretrain_flags)
    continued_pretraining.TASK.parse(pretrain)  # raises on a bad option before hours of pretraining
    arms = {
        "original": finetune + _argv(None, "", model_name_or_path=args.model_name_or_path),
        "adapted": finetune + ["--model_name_or_path", str(out / "adapted")],
    }
    return pretrain, arms


def summarise(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    for metric in COMPARED:
        per_arm = {arm: [r[metric] for r in results if metric in r] for arm, results in runs.items()}
        if not all(per_arm.values()):
            continue
        stats = {arm: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}
                 for arm, v in per_arm.items()}
        stats["difference"] = stats["adapted"]["mean"] - stats["original"]["mean"]
        summary[metric] = stats
    return summary


def parse(argv: list[str] | None = None) -> tuple:
    return parse_args((DaptArgs,), argv)


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse(argv)
    pretrain_argv, arms = plan(args)
    adaptation = continued_pretraining.main(pretrain_argv)
    runs: dict[str, list[dict]] = {"original": [], "adapted": []}
    for seed in args.seeds:
        for arm, base in arms.items():
            run_dir = Path(args.output_dir) / arm / f"seed_{seed}"
            runs[arm].append(sentiment.main(base + ["--seed", str(seed), "--output_dir", str(run_dir)]))
    report = {
        "adaptation": {k: adaptation.get(k) for k in (
            "perplexity_before", "perplexity_after", "train_runtime", "train_tokens_per_second", "global_step",
            "train_blocks", "wall_time_s", "mlm_head_was_missing", "mlm_head_warmup_steps", "mlm_head_warmup_loss",
            "mlm_head_warmup_seconds")},
        "comparison": summarise(runs),
        "seeds": args.seeds,
        "tapt": args.tapt,
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    print_comparison(report)
    return report


def print_comparison(report: dict) -> None:
    a = report["adaptation"]
    lines = ["", "=" * 64, f"{'task' if report['tapt'] else 'domain'}-adaptive pretraining: did it pay off?",
             f"  held-out perplexity  {a['perplexity_before']:.2f} -> {a['perplexity_after']:.2f}",
             f"  adaptation           {a['global_step']} steps, {a['train_runtime']:.0f} s, {a['train_tokens_per_second']:.0f} tokens/s",
             f"  MLM head warm-up     {describe_head_warmup(a)}",
             f"  {'metric':<22}{'original':>16}{'adapted':>16}{'difference':>12}"]
    for metric, s in report["comparison"].items():
        cell = lambda arm: f"{100 * s[arm]['mean']:.2f} ± {100 * s[arm]['std']:.2f}"  # noqa: E731
        lines.append(f"  {metric:<22}{cell('original'):>16}{cell('adapted'):>16}{100 * s['difference']:>+11.2f}")
    lines.append(f"  over seeds {report['seeds']} (points; ± is the standard deviation over seeds)")
    lines.append("=" * 64)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run_cli(main)
