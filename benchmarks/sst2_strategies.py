"""MiniLM-L6 on SST-2 under every transfer strategy, one subset and budget: dev accuracy, time, parameters, memory.

    python benchmarks/sst2_strategies.py                       # 8,000-sentence subset, 1 epoch, all strategies
    python benchmarks/sst2_strategies.py --train_samples 0 --strategies full   # the whole training set

Each strategy runs the sentiment recipe in its own process (so peak memory is its own) and the table is
written to benchmarks/results/. Learning rates are each strategy's customary one, stated in the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import paths

SST2 = paths.DATA / "sst2"

# strategy name -> recipe flags (learning rate included: head-only and LoRA customarily use larger ones)
STRATEGIES = {
    "full": ["--strategy", "full", "--learning_rate", "5e-5"],
    "freeze_bottom_half": ["--strategy", "freeze", "--freeze_bottom", "3", "--learning_rate", "5e-5"],
    "feature_extraction": ["--strategy", "feature_extraction", "--learning_rate", "1e-3"],
    "gradual": ["--strategy", "gradual", "--unfreeze_unit", "step", "--unfreeze_every", "30", "--learning_rate", "5e-5"],
    "layer_lr_decay": ["--strategy", "full", "--layer_lr_decay", "0.8", "--learning_rate", "1e-4"],
    "lora": ["--strategy", "lora", "--lora_r", "8", "--learning_rate", "5e-4"],
    "lora_all_linear": ["--strategy", "lora", "--lora_target_modules", "all-linear", "--lora_r", "16", "--lora_alpha", "32",
                        "--learning_rate", "1e-3"],
}


def run(name: str, flags: list[str], args, out_root: Path) -> dict:
    out = out_root / name
    cmd = [
        sys.executable, str(paths.RECIPES / "sentiment.py"),
        "--train_file", str(args.data_dir / "train.tsv"), "--validation_file", str(args.data_dir / "dev.tsv"),
        "--class_names", "negative", "positive", "--output_dir", str(out),
        "--num_train_epochs", str(args.epochs), "--per_device_train_batch_size", "32", "--max_seq_length", "64",
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "50", "--disable_tqdm", "true",
        "--warmup_steps", "0.06", "--seed", str(args.seed), "--frozen_baseline", str(name == args.baseline_with).lower(),
        *flags, *args.extra_flags,
    ]
    if args.train_samples:
        cmd += ["--max_train_samples", str(args.train_samples)]
    started = time.time()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["process_wall_s"] = round(time.time() - started, 1)
    metrics["flags"] = " ".join(flags + args.extra_flags)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=SST2)
    parser.add_argument("--train_samples", type=int, default=8000, help="0 = the whole training set")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--baseline_with", default="full", help="strategy whose run also reports the frozen-features baseline")
    parser.add_argument("--extra_flags", nargs=argparse.REMAINDER, default=[], help="recipe flags appended last (they win)")
    parser.add_argument("--out", type=Path, default=paths.OUTPUTS / "bench_sst2")
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "sst2_strategies.json")
    args = parser.parse_args()
    if not (args.data_dir / "train.tsv").is_file():
        sys.exit(f"skipped: SST-2 not found at {args.data_dir} (see ../shared/data/README.md)")

    key = f"train{args.train_samples or 'all'}_ep{args.epochs:g}" + ("_" + "".join(args.extra_flags).replace("--", "_") if args.extra_flags else "")
    for name in args.strategies:
        metrics = run(name, STRATEGIES[name], args, args.out / key)
        # Read just before writing: a run takes minutes to hours, and other results may have landed meanwhile.
        results = json.loads(args.results.read_text()) if args.results.is_file() else {}
        results.setdefault(key, {})[name] = {
            k: metrics.get(k) for k in (
                "validation_accuracy", "validation_f1", "baseline_accuracy", "train_runtime", "process_wall_s",
                "trainable_parameters", "total_parameters", "peak_cpu_memory_gb", "peak_gpu_memory_gb", "flags",
                "train_loss", "global_step",
            ) if k in metrics
        }
        results[key][name]["machine"] = f"{platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2))
        print(f"[{key}] {name}: {results[key][name]}", flush=True)


if __name__ == "__main__":
    main()
