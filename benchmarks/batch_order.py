"""Random against length-grouped training batches: does the recipes' default batch order cost accuracy?

    python benchmarks/batch_order.py                    # both data sets, seeds 1-5 (about 40 minutes per data set, one thread)
    python benchmarks/batch_order.py --data sst2        # one data set; finished runs are kept and skipped

Every run is the sentiment recipe in its own process (`python recipes/sentiment.py ...`), MiniLM-L6 (the embedded
default), full fine-tuning, 1 epoch, batch 32, lr 5e-5, the machine's default precision, differing only in
--train_sampling_strategy (random, group_by_length) and the seed:
- sst2: 8,000 SST-2 training sentences (a seeded subset), scored on the SST-2 dev set (872), length 64;
- imdb: the 2,000 IMDb training reviews, scored on the 2,000 test reviews, length 256.
Recorded: accuracy, and train time (`train_runtime`: trainer.train() alone).
Results: benchmarks/results/batch_order.json with the mean and spread over seeds per arm and the paired difference.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paths

RESULTS = paths.RESULTS / "batch_order.json"
DATA = {
    "sst2": ["--train_file", str(paths.DATA / "sst2" / "train.tsv"), "--validation_file", str(paths.DATA / "sst2" / "dev.tsv"),
             "--class_names", "negative", "positive", "--max_train_samples", "8000", "--max_seq_length", "64"],
    "imdb": ["--train_file", str(paths.DATA / "imdb" / "train.jsonl"), "--validation_file", str(paths.DATA / "imdb" / "test.jsonl"),
             "--text_column", "text", "--label_column", "label", "--max_seq_length", "256"],
}
ORDERS = ("random", "group_by_length")


def run(data: str, order: str, seed: int, work: Path) -> dict:
    out = work / f"{data}_{order}_{seed}"
    command = [sys.executable, str(paths.RECIPES / "sentiment.py"), *DATA[data], "--train_sampling_strategy", order,
               "--seed", str(seed), "--num_train_epochs", "1", "--per_device_train_batch_size", "32", "--learning_rate", "5e-5",
               "--save_strategy", "no", "--frozen_baseline", "false", "--logging_steps", "50", "--disable_tqdm", "true",
               "--output_dir", str(out)]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {k: metrics.get(k) for k in ("validation_accuracy", "train_runtime", "precision", "torch_threads", "global_step")}


def summary(runs: dict) -> dict:
    table = {}
    for data in DATA:
        for order in ORDERS:
            rows = [r for k, r in runs.items() if k.startswith(f"{data}/{order}/")]
            if rows:
                acc = [100 * r["validation_accuracy"] for r in rows]
                table[f"{data}/{order}"] = {
                    "seeds": len(rows), "accuracy_mean": statistics.mean(acc),
                    "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else None,
                    "train_s_mean": statistics.mean(r["train_runtime"] for r in rows)}
    return table


def paired(runs: dict, data: str, field: str, scale: float = 1.0, ratio: bool = False) -> tuple[list[float], float | None, float | None]:
    values = []
    for key, grouped in runs.items():
        if key.startswith(f"{data}/group_by_length/"):
            rand = runs.get(f"{data}/random/{key.rsplit('/', 1)[1]}")
            if rand:
                values.append(grouped[field] / rand[field] if ratio else scale * (grouped[field] - rand[field]))
    if not values:
        return values, None, None
    return values, statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def headline(runs: dict) -> list[dict]:
    lines = []
    for data in DATA:
        diffs, mean, sd = paired(runs, data, "validation_accuracy", scale=100)
        lines.append({"id": f"batch_order_accuracy_change_{data}", "claim": f"length-grouped minus random batches, {data} "
                      "accuracy (per-seed differences, MiniLM-L6, 1 epoch)", "value": mean, "reference": 0.0,
                      "unit": "points", "spread": sd, "seeds": len(diffs)})
        ratios, mean, sd = paired(runs, data, "train_runtime", ratio=True)
        lines.append({"id": f"batch_order_time_ratio_{data}", "claim": f"length-grouped over random batches, {data} train time",
                      "value": mean, "reference": 1.0, "unit": "ratio", "spread": sd, "seeds": len(ratios)})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            for seed in args.seeds:
                for order in ORDERS:
                    key = f"{data}/{order}/{seed}"
                    if key in results["runs"]:
                        continue
                    print(f"{time.strftime('%H:%M:%S')} {key}", flush=True)
                    results["runs"][key] = run(data, order, seed, Path(tmp))
                    print(f"    {results['runs'][key]}", flush=True)
                    # Another process may be writing the other data set: merge with what is on disk now.
                    if RESULTS.exists():
                        on_disk = json.loads(RESULTS.read_text())["runs"]
                        results["runs"] = {**on_disk, **results["runs"]}
                    results["summary"], results["headline"] = summary(results["runs"]), headline(results["runs"])
                    results["machine"] = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                                          "threads": os.environ.get("OMP_NUM_THREADS", "default")}
                    paths.write_results(RESULTS, results)
    print(json.dumps(results.get("headline"), indent=1))


if __name__ == "__main__":
    main()
