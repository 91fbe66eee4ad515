"""Step cost: TransferTrainer against a plain Trainer with identical settings, and freezing against full fine-tuning.

    python benchmarks/overhead.py [--steps 40] [--repeats 3] [--batch_size 32]

MiniLM-L6 (the embedded default model) on the embedded review sample, batch 32, dynamic padding.
Per-step wall times come from a callback (optimizer step included, data loading included); the first
steps of each run are dropped as warm-up, and configurations are interleaved over repeats so that
machine noise hits them alike. Reported: the median step time of each configuration and its ratio
to the plain Trainer.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    logging,
)

from hf_transfer import StrategyArgs, TransferTrainer, apply_strategy  # noqa: E402
from hf_transfer.data.text import TextDataArgs, load_text_classification  # noqa: E402
from hf_transfer.models.loading import default_model_path  # noqa: E402

CONFIGS = {
    "plain Trainer": None,
    "TransferTrainer full": StrategyArgs(),
    "TransferTrainer full + layer_lr_decay 0.8": StrategyArgs(layer_lr_decay=0.8),
    "TransferTrainer freeze bottom half": StrategyArgs(strategy="freeze", freeze_bottom=3),
    "TransferTrainer feature_extraction": StrategyArgs(strategy="feature_extraction"),
    "TransferTrainer lora r=8": StrategyArgs(strategy="lora", lora_r=8),
}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def step_times(name, strategy, data, tokenizer, args) -> list[float]:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=2)
    training = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=5e-5, save_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no",
        dataloader_pin_memory=False, seed=0,
    )
    common = dict(args=training, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    if strategy is None:
        trainer = Trainer(model=model, **common)
    else:
        trainer = TransferTrainer(model=apply_strategy(model, strategy), strategy=strategy, **common)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times[args.warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "overhead.json")
    args = parser.parse_args()
    logging.set_verbosity_error()

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    data = load_text_classification(TextDataArgs(), tokenizer).datasets["train"]
    samples: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for repeat in range(args.repeats):
        for name, strategy in CONFIGS.items():
            times = step_times(name, strategy, data, tokenizer, args)
            samples[name].append(statistics.median(times))
            print(f"repeat {repeat}: {name}: median step {1000 * samples[name][-1]:.1f} ms", flush=True)

    base = statistics.median(samples["plain Trainer"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    results = {
        "machine": f"{platform.node()} ({device}), torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
        "settings": vars(args) | {"results": str(args.results)},
        "configs": {
            name: {"median_step_ms": round(1000 * statistics.median(v), 2), "ratio_to_plain": round(statistics.median(v) / base, 3),
                   "per_repeat_ms": [round(1000 * x, 2) for x in v]}
            for name, v in samples.items()
        },
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))
    print(f"\n{'configuration':<44} {'median step':>12} {'vs plain':>9}")
    for name, r in results["configs"].items():
        print(f"{name:<44} {r['median_step_ms']:>9.1f} ms {r['ratio_to_plain']:>8.3f}x")


if __name__ == "__main__":
    main()
