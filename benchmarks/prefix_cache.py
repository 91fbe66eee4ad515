"""The cached frozen prefix against today's `freeze` and full fine-tuning: MiniLM-L6 on SST-2, bottom 4 of 6 blocks frozen.

    python benchmarks/prefix_cache.py                                     # the issue's setting: 8,000 sentences x 10 epochs
    python benchmarks/prefix_cache.py --train_samples 2000 --epochs 5     # the reduced setting: --results benchmarks/results/prefix_cache_2000x5.json

Three arms, in one process, with the same data, seed, learning rate and batches (length-grouped: the sentiment
recipe's default), each built the way `run_task` builds a sentiment run (the recipe's own parsing, loading and
strategy), evaluated on the dev set after every epoch as the recipe does:
- full:   --strategy full
- freeze: --strategy freeze --freeze_bottom 4                          (today: the prefix recomputed every epoch)
- cached: --strategy freeze --freeze_bottom 4 --cache_frozen_prefix    (an empty cache at the start)
With --repeats > 1 the order is rotated each round and the median time is reported. "train_s" is the wall time
of `trainer.train()` (per-epoch evaluations included); "epoch_s" splits it by epoch (evaluation included), so the
cached arm's first epoch (which fills the cache) and its later ones can be read apart. The cache's memory is
the payload of its states per 1,000 cached examples.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import paths

SST2 = paths.DATA / "sst2"

ARMS = {
    "full": ["--strategy", "full"],
    "freeze": ["--strategy", "freeze", "--freeze_bottom", "4"],
    "cached": ["--strategy", "freeze", "--freeze_bottom", "4", "--cache_frozen_prefix"],
}


def run_arm(name: str, args) -> dict:
    from transformers import TrainerCallback, set_seed

    from hf_transfer.run.task import _default_build_model
    from hf_transfer.strategies import apply_strategy, count_parameters
    from hf_transfer.trainer import TransferTrainer
    from recipes.sentiment import TASK

    argv = [
        "--train_file", str(args.data_dir / "train.tsv"), "--validation_file", str(args.data_dir / "dev.tsv"),
        "--class_names", "negative", "positive", "--output_dir", str(args.out / name),
        "--max_train_samples", str(args.train_samples), "--num_train_epochs", str(args.epochs),
        "--per_device_train_batch_size", str(args.batch_size), "--max_seq_length", "64",
        "--learning_rate", str(args.learning_rate), "--warmup_steps", "0.06", "--seed", str(args.seed),
        "--eval_strategy", "epoch", "--save_strategy", "no", "--logging_steps", "50", "--disable_tqdm", "true",
        "--frozen_baseline", "false", *ARMS[name],
    ]
    parsed = TASK.parse(argv)
    data = TASK.load(parsed)
    parsed.strategy.check_config(data.config)
    set_seed(parsed.training.seed)
    model = apply_strategy(_default_build_model(TASK, parsed, data), parsed.strategy)
    trainer = TransferTrainer(
        model=model, args=parsed.training, strategy=parsed.strategy, train_dataset=data.datasets["train"],
        eval_dataset=data.datasets["validation"], processing_class=data.processing_class, data_collator=data.collator,
        compute_metrics=data.compute_metrics,
    )

    marks = []

    class EpochClock(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            marks.append(time.perf_counter())

    trainer.add_callback(EpochClock())
    started = time.perf_counter()
    train = trainer.train()
    train_s = time.perf_counter() - started
    # An epoch runs from its start to the next one's (the last to the end of train()): its evaluation included.
    epoch_s = [round(b - a, 2) for a, b in zip(marks, marks[1:] + [started + train_s])]
    evaluations = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    trainable, total = count_parameters(model)
    result = {
        "train_s": round(train_s, 2),
        "epoch_s": epoch_s,
        "validation_accuracy": evaluations[-1]["eval_accuracy"],
        "validation_accuracy_per_epoch": [round(e["eval_accuracy"], 4) for e in evaluations],
        "train_loss": round(train.metrics["train_loss"], 4),
        "global_step": trainer.state.global_step,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "flags": " ".join(ARMS[name]),
    }
    if trainer.prefix_cache is not None:
        stats = trainer.prefix_cache.stats
        result["cache"] = dataclasses.asdict(stats)
        trainer.prefix_cache.close()
    return result


def cache_memory(stats: dict) -> dict:
    per_1000 = 1000 / (stats["stored_rows"] or 1)
    return {
        "cached_examples": stats["stored_rows"],
        "payload_mb_per_1000": round(stats["stored_bytes"] * per_1000 / 2**20, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=SST2)
    parser.add_argument("--train_samples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the arms, the order rotated each round")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine two threads ran a MiniLM step 2.5x slower)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--out", type=Path, default=paths.OUTPUTS / "bench_prefix_cache")
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "prefix_cache.json")
    args = parser.parse_args()
    if not (args.data_dir / "train.tsv").is_file():
        sys.exit(f"skipped: SST-2 not found at {args.data_dir} (see ../shared/data/README.md)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M")
    runs: dict[str, list[dict]] = {name: [] for name in args.arms}
    for round_ in range(args.repeats):
        order = args.arms[round_ % len(args.arms):] + args.arms[: round_ % len(args.arms)]
        for name in order:
            result = run_arm(name, args)
            runs[name].append(result)
            print(f"[round {round_ + 1}] {name}: train {result['train_s']} s, epochs {result['epoch_s']}, "
                  f"dev accuracy {result['validation_accuracy']:.4f}", flush=True)

    arms = {}
    for name, results in runs.items():
        chosen = sorted(results, key=lambda r: r["train_s"])[len(results) // 2]  # the median run
        arms[name] = {**chosen, "train_s_per_repeat": [r["train_s"] for r in results]}
    median = {name: statistics.median(a["train_s_per_repeat"]) for name, a in arms.items()}

    def ratio(a, b):
        return round(median[a] / median[b], 3) if a in median and b in median else None

    report = {
        "machine": f"{platform.node()}: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
                   f"torch {torch.__version__} with {torch.get_num_threads()} threads, no GPU; shared with another "
                   f"benchmark (load average {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)",
        "date": started,
        "setting": {
            "model": "MiniLM-L6 (embedded default, 6 blocks, hidden 384)", "data": "SST-2 train.tsv subset, dev.tsv (872)",
            "train_samples": args.train_samples, "epochs": args.epochs, "batch_size": args.batch_size,
            "max_seq_length": 64, "learning_rate": args.learning_rate, "warmup": 0.06, "seed": args.seed,
            "batches": "length-grouped (the sentiment recipe's default), per-batch padding",
            "evaluation": "dev set after every epoch (in train_s)", "repeats": args.repeats,
            "frozen": "embeddings + bottom 4 of 6 blocks (freeze, cached)",
            "cache": "float32, memory budget 1024 MB",
        },
        "arms": arms,
        "ratios": {
            "cached_to_freeze": ratio("cached", "freeze"),
            "cached_to_full": ratio("cached", "full"),
            "freeze_to_full": ratio("freeze", "full"),
        },
    }
    if "cached" in arms:
        report["cache_memory"] = cache_memory(arms["cached"]["cache"])
        later = [statistics.mean(a["epoch_s"][1:]) for a in (arms.get("cached"), arms.get("freeze")) if a and len(a["epoch_s"]) > 1]
        if len(later) == 2:
            report["ratios"]["cached_to_freeze_after_epoch_1"] = round(later[0] / later[1], 3)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["ratios"], indent=1))
    print(f"written: {args.results}")


if __name__ == "__main__":
    main()
