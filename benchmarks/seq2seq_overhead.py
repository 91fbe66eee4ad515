"""Step cost of the text-to-text recipe's trainer against a plain Seq2SeqTrainer on the same model and batches.

    python benchmarks/seq2seq_overhead.py [--steps 20] [--repeats 3] [--batch_size 16]

The model and data are the recipe's own: MiniLM -> MiniLM warm-started encoder-decoder, Multi30k en->de
training pairs (../shared/data/multi30k), loaded through recipes/text_to_text.py's TASK. Per-step wall times
come from a callback (optimizer step and data loading included); the first 3 steps of each run are dropped as
warm-up, and the configurations are interleaved over repeats so that machine noise hits them alike. Reported:
the median step time of each configuration and its ratio to the plain Seq2SeqTrainer, in one run.
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

DATA = paths.DATA / "multi30k"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
WARMUP = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "seq2seq_overhead.json")
    args = parser.parse_args()
    if not (DATA / "train.en").is_file():
        raise SystemExit(f"skipped: {DATA} not found (see ../shared/data/README.md)")

    from transformers import Seq2SeqTrainer, TrainerCallback, set_seed

    from hf_transfer import StrategyArgs
    from hf_transfer.models.seq2seq import build_seq2seq_model
    from hf_transfer.strategies import apply_strategy
    from hf_transfer.tasks.text_to_text import load_seq2seq_task
    from hf_transfer.trainer import Seq2SeqTransferTrainer
    from recipes import text_to_text

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    out = Path(tempfile.mkdtemp())
    argv = ["--encoder_decoder_from", "embedded", "--train_file", str(DATA / "train.en"),
            "--train_target_file", str(DATA / "train.de"), "--validation_file", str(DATA / "val.en"),
            "--validation_target_file", str(DATA / "val.de"), "--max_train_samples", str(args.steps * args.batch_size),
            "--max_eval_samples", "16", "--max_source_length", "64", "--max_target_length", "64",
            "--per_device_train_batch_size", str(args.batch_size), "--max_steps", str(args.steps),
            "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1000", "--disable_tqdm", "true",
            "--report_to", "none", "--output_dir", str(out), "--learning_rate", "1e-4"]
    task_args = text_to_text.TASK.parse(argv)
    data = load_seq2seq_task(task_args)
    configs = {
        "plain Seq2SeqTrainer": None,
        "Seq2SeqTransferTrainer full": StrategyArgs(),
        "Seq2SeqTransferTrainer full + layer_lr_decay 0.8": StrategyArgs(layer_lr_decay=0.8),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    for repeat in range(args.repeats):
        for name, strategy in configs.items():
            set_seed(42)
            model = build_seq2seq_model(task_args, data)
            common = dict(args=task_args.training, train_dataset=data.datasets["train"], data_collator=data.collator,
                          processing_class=data.processing_class)
            clock = StepClock()
            if strategy is None:
                trainer = Seq2SeqTrainer(model=model, callbacks=[clock], **common)
            else:
                trainer = Seq2SeqTransferTrainer(model=apply_strategy(model, strategy), strategy=strategy,
                                                 callbacks=[clock], **common)
            trainer.train()
            times[name] += clock.times[WARMUP:]
            print(f"[seq2seq overhead] repeat {repeat} {name}: median {statistics.median(clock.times[WARMUP:]):.3f} s/step", flush=True)
    base = statistics.median(times["plain Seq2SeqTrainer"])
    result = {
        "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (no GPU)",
        "date": time.strftime("%Y-%m-%d"),
        "setting": f"MiniLM->MiniLM encoder-decoder, Multi30k en->de, batch {args.batch_size}, {args.steps} steps x "
                   f"{args.repeats} repeats per configuration, first {WARMUP} steps of each run dropped, interleaved",
        "median_step_s": {name: round(statistics.median(v), 4) for name, v in times.items()},
        "ratio_to_plain": {name: round(statistics.median(v) / base, 4) for name, v in times.items()},
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
