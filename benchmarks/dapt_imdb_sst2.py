"""Domain-adaptive pretraining, IMDb unlabelled reviews -> SST-2, with MiniLM-L6: did adaptation pay off?

    python benchmarks/dapt_imdb_sst2.py [--adapt_steps 400] [--seeds 1 2 3]
    python benchmarks/dapt_imdb_sst2.py --variant gradual --pretrain_extra "--strategy gradual --unfreeze_every 25 --unfreeze_unit step"

1. recipes/dapt.py: masked-LM adaptation on ../shared/data/imdb/unsup.jsonl (the steps given), then SST-2
   fine-tuning at 1,000 labelled sentences for each seed, original vs adapted encoder, same budget.
2. The same comparison at 8,000 labelled sentences, one seed, reusing the adapted checkpoint.
Results go to benchmarks/results/dapt_imdb_sst2.json, one entry per --variant (the adaptation settings tried).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def finetune_flags(samples: int, epochs: int) -> str:
    return (f"--train_file {paths.DATA / 'sst2/train.tsv'} --validation_file {paths.DATA / 'sst2/dev.tsv'} --class_names negative positive "
            f"--max_train_samples {samples} --num_train_epochs {epochs} --learning_rate 1e-4 --per_device_train_batch_size 32 "
            "--max_seq_length 64 --eval_strategy no --save_strategy no --disable_tqdm true --warmup_steps 0.06")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapt_steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variant", default="full", help="name of this adaptation setting in the results file")
    parser.add_argument("--pretrain_extra", default="", help="continued-pretraining flags appended last (they win)")
    parser.add_argument("--out", type=Path, default=paths.OUTPUTS / "bench_dapt")
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "dapt_imdb_sst2.json")
    args = parser.parse_args()
    for needed in (paths.DATA / "imdb/unsup.jsonl", paths.DATA / "sst2/train.tsv"):
        if not needed.is_file():
            sys.exit(f"skipped: {needed} not found (see ../shared/data/README.md)")

    from recipes import dapt, sentiment

    machine = f"{platform.node()}, CPU {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    pretrain = (f"--train_file {paths.DATA / 'imdb/unsup.jsonl'} --max_eval_samples 200 --block_size 128 --whole_word_masking true "
                f"--learning_rate 1e-4 --warmup_steps 0.06 --max_steps {args.adapt_steps} --per_device_train_batch_size 16 "
                f"--logging_steps 50 --save_strategy no --disable_tqdm true {args.pretrain_extra}").strip()
    out = args.out / args.variant
    report = dapt.main(["--output_dir", str(out), "--pretrain_args", pretrain,
                        "--finetune_args", finetune_flags(1000, 3), "--seeds", *map(str, args.seeds)])
    every = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results = every[args.variant] = {"machine": machine, "pretrain_flags": pretrain, "labelled_1000": report}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(every, indent=2))

    big = {}
    for arm, model in (("original", None), ("adapted", out / "adapted")):
        flags = finetune_flags(8000, 1).split() + ["--seed", "1", "--output_dir", str(out / f"{arm}_8000"),
                                                     "--frozen_baseline", "false"]
        if model:
            flags += ["--model_name_or_path", str(model)]
        metrics = sentiment.main(flags)
        big[arm] = {k: metrics[k] for k in ("validation_accuracy", "validation_f1", "train_runtime")}
    big["difference"] = big["adapted"]["validation_accuracy"] - big["original"]["validation_accuracy"]
    results["labelled_8000_seed1"] = big
    args.results.write_text(json.dumps(every, indent=2))
    print(json.dumps(big, indent=2))


if __name__ == "__main__":
    main()
