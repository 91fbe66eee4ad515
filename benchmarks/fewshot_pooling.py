"""Which embedding should contrastive few-shot training tune: the classifier's own [CLS] input, or the mean of the tokens?

    python benchmarks/fewshot_pooling.py                          # SST-2 at 8 and 16 per class, draws 0-2 (20-40 min, one thread)
    python benchmarks/fewshot_pooling.py --sizes 8 --draws 0 1    # a subset; finished runs are kept and skipped

The sentiment recipe's contrastive phase with SetFit's settings (40 pairs per example, cosine loss, 1 epoch, lr 2e-5,
batches of 16 pairs, 10% warm-up, fp32), the embedded all-MiniLM-L6-v2, one thread, on the same draws of SST-2's
training set, scored on its dev set (872 sentences), differing only in --contrastive_pooling:
- `cls`: pairs compare what BertForSequenceClassification's classifier reads as it is (the pooler's tanh over the
  last [CLS] state), which trains with the body;
- `mean`: pairs compare the mean of the last block's token states (how all-MiniLM-L6-v2 was trained and how SetFit
  pools), which the added pooling block hands to the classifier (hf_transfer/contrastive_trainer.py).
Both are stock classifiers that `pipeline("text-classification")` loads, and both fit the classifier the same way
(logistic regression, C = 1). Draw d takes `--train_sample_seed d`; training seed 42.
Results: benchmarks/results/fewshot_pooling.json, with the paired difference cls - mean per size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paths

RESULTS = paths.RESULTS / "fewshot_pooling.json"
SST2 = ["--train_file", str(paths.DATA / "sst2" / "train.tsv"), "--validation_file", str(paths.DATA / "sst2" / "dev.tsv"),
        "--class_names", "negative", "positive"]
SETFIT = ["--contrastive_pairs_per_example", "40", "--learning_rate", "2e-5", "--num_train_epochs", "1",
          "--per_device_train_batch_size", "16", "--warmup_steps", "0.1"]
POOLINGS = ("cls", "mean")


def run(pooling: str, size: int, draw: int, out: Path) -> dict:
    """One contrastive run of the sentiment recipe in this process; its validation accuracy and train time."""
    from recipes import sentiment

    metrics = sentiment.main([*SST2, *SETFIT, "--contrastive_pooling", pooling, "--max_train_samples_per_class", str(size),
                              "--train_sample_seed", str(draw), "--seed", "42", "--output_dir", str(out),
                              "--save_strategy", "no", "--eval_strategy", "no", "--frozen_baseline", "false",
                              "--disable_tqdm", "true", "--bf16", "false", "--logging_steps", "10"])
    return {"accuracy": metrics["validation_accuracy"], "train_s": round(metrics["train_runtime"], 1),
            "pairs": metrics["contrastive_pairs"]}


def summary(runs: dict) -> dict:
    table = {}
    for key in sorted({k.rsplit("/", 1)[0] for k in runs}):
        acc = [100 * r["accuracy"] for k, r in runs.items() if k.rsplit("/", 1)[0] == key]
        table[key] = {"draws": len(acc), "accuracy_mean": statistics.mean(acc),
                      "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else None}
    return table


def paired(runs: dict, size: int) -> list[float]:
    return [100 * (r["accuracy"] - runs[k.replace("/cls/", "/mean/")]["accuracy"])
            for k, r in runs.items() if k.startswith(f"{size}/cls/") and k.replace("/cls/", "/mean/") in runs]


def headline(runs: dict) -> list[dict]:
    lines = []
    for size in sorted({int(k.split("/")[0]) for k in runs}):
        diffs = paired(runs, size)
        if diffs:
            lines.append({"id": f"fewshot_pooling_cls_minus_mean_sst2_{size}",
                          "claim": f"contrastive few-shot on SST-2 at {size} per class, all-MiniLM-L6-v2: tuning the "
                                   "classifier's own [CLS] input minus tuning the mean of the tokens (per-draw differences)",
                          "value": statistics.mean(diffs), "reference": 0.0, "unit": "points",
                          "spread": statistics.stdev(diffs) if len(diffs) > 1 else None, "seeds": len(diffs)})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--draws", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--poolings", nargs="+", default=list(POOLINGS), choices=POOLINGS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for draw in args.draws:
                for pooling in args.poolings:
                    key = f"{size}/{pooling}/{draw}"
                    if key in results["runs"]:
                        continue
                    print(f"{time.strftime('%H:%M:%S')} {key}", flush=True)
                    results["runs"][key] = run(pooling, size, draw, Path(tmp) / key.replace("/", "_"))
                    print(f"    {results['runs'][key]}", flush=True)
                    results["summary"], results["headline"] = summary(results["runs"]), headline(results["runs"])
                    results["machine"] = {"cpus": os.cpu_count(), "threads": 1, "date": time.strftime("%Y-%m-%d"),
                                          "python": sys.version.split()[0], "torch": torch.__version__,
                                          "transformers": __import__("transformers").__version__,
                                          "training_seed": 42, "draw_seeds": "draw d = --train_sample_seed d"}
                    paths.write_results(RESULTS, results)
    print(json.dumps(results.get("headline"), indent=1))


if __name__ == "__main__":
    main()
