"""IMDb rating regression: does fine-tuning MiniLM-L6 predict a review's rating better than ridge regression on its
frozen features?

    python benchmarks/imdb_regression.py --jobs 2   # 2,000 reviews, 1,000 held out, seeds 1-3, 2 epochs (~30 min, 2 cores)
    python benchmarks/imdb_regression.py --quick    # a smoke run: 200 reviews, 100 held out, length 128, seed 1 (~6 min)

Data (../shared/data/imdb, read in place): the 2,000 training reviews with their `rating` (1-4 and 7-10: integers, so
the recipe needs --task_type regression), scored on a fixed 1,000 of the 2,000 test reviews (a seeded draw, the same
for every arm and seed, written as a JSON-lines subset into the work folder). Max length 256, as batch_order.py's
IMDb setting. Arms:
- fine-tuned: the sentiment recipe in its own process (`python recipes/sentiment.py`), MiniLM-L6 (the embedded
  default), full fine-tuning, --task_type regression (one output, MSE loss), 2 epochs, the recipe's lr 1e-4 and batch
  16, random batches, the machine's default precision; seeds 1-3. The new head's bias starts at the training ratings'
  mean (the recipe does so for every new regression head), so training goes to the text, not to the ratings' offset.
- frozen + ridge: recipes/linear_probe.py --heads ridge on the same files: mean-pooled frozen MiniLM features (fp32),
  ridge regression with its alpha chosen by leave-one-out cross-validation. Features and fit are deterministic, so it
  runs once and its spread is 0.
- the training ratings' mean (and median) predicted for every review: what a model scores without reading the text.
Recorded: MAE, RMSE, Spearman (and MSE, R², Pearson) on the held-out reviews, validation MAE after each epoch, train
time. Headline `regression_mae_gain`: ridge MAE minus fine-tuned MAE, per seed, then mean and spread over seeds
(rating points; positive: fine-tuning helped). Results: benchmarks/results/imdb_regression.json (--quick:
imdb_regression_quick.json in the work folder, leaving the committed results alone). Finished runs in the work folder
are reused, so an interrupted benchmark continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import paths

IMDB = paths.DATA / "imdb"
RESULTS = paths.RESULTS / "imdb_regression.json"
HELD_OUT_SEED = 0  # draws the held-out reviews (and the quick run's training reviews): fixed, whatever the run's seed
FULL = {"train": 2000, "held_out": 1000, "max_length": 256, "epochs": 2, "seeds": [1, 2, 3]}
QUICK = {"train": 200, "held_out": 100, "max_length": 128, "epochs": 3, "seeds": [1]}
LEARNING_RATE, BATCH, EMBED_BATCH = 1e-4, 16, 32
SCORES = ("mae", "rmse", "spearman", "mse", "r2", "pearson")


def subset(source: Path, n: int, destination: Path) -> Path:
    """`n` reviews of `source` drawn with a fixed seed (all of them, in place, when n covers the file)."""
    lines = source.read_text(encoding="utf-8").splitlines()
    if n >= len(lines):
        return source
    chosen = sorted(random.Random(HELD_OUT_SEED).sample(range(len(lines)), n))
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text("\n".join(lines[i] for i in chosen) + "\n", encoding="utf-8")
    return destination


def data_flags(train: Path, held_out: Path, sizes: dict) -> list[str]:
    return ["--train_file", str(train), "--validation_file", str(held_out), "--text_column", "text", "--label_column",
            "rating", "--task_type", "regression", "--max_seq_length", str(sizes["max_length"])]


def run(script: str, flags: list[str], out: Path, threads: int | None = None) -> dict:
    """One recipe run in its own process (`threads` torch threads, default torch's choice), reused when its folder
    holds a finished run."""
    if not (out / "metrics.json").is_file():
        command = [sys.executable, str(paths.RECIPES / script), *flags, "--output_dir", str(out),
                   "--overwrite_output_dir", "true"]
        print(f"{time.strftime('%H:%M:%S')} {script} -> {out.name}", flush=True)
        done = subprocess.run(command, cwd=out.parent, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1",
                                   **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
        if done.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def fine_tune(train: Path, held_out: Path, sizes: dict, seed: int, work: Path, threads: int | None = None) -> dict:
    flags = data_flags(train, held_out, sizes) + [
        "--seed", str(seed), "--num_train_epochs", str(sizes["epochs"]), "--per_device_train_batch_size", str(BATCH),
        "--learning_rate", str(LEARNING_RATE), "--save_strategy", "no", "--frozen_baseline", "false",
        "--logging_steps", "20", "--disable_tqdm", "true"]
    out = work / f"fine_tuned_seed_{seed}"
    metrics = run("sentiment.py", flags, out, threads)
    history = json.loads((out / "log_history.json").read_text())
    return {**{k: metrics[f"validation_{k}"] for k in SCORES},
            "mae_by_epoch": [round(e["eval_mae"], 4) for e in history if "eval_mae" in e],
            **{k: metrics.get(k) for k in ("train_runtime", "precision", "train_examples", "global_step",
                                           "torch_threads")}}


def ridge(train: Path, held_out: Path, sizes: dict, work: Path) -> dict:
    flags = data_flags(train, held_out, sizes) + ["--heads", "ridge", "--feature_cache_dir", str(work / "feature_cache"),
                                                  "--per_device_eval_batch_size", str(EMBED_BATCH)]
    metrics = run("linear_probe.py", flags, work / "frozen_ridge")
    return {**{k: metrics[f"validation_{k}"] for k in SCORES}, "alpha": metrics["ridge_alpha"],
            "embed_seconds": metrics["embed_seconds"]}


def constant_predictions(train: Path, held_out: Path) -> dict:
    """MAE and RMSE of predicting the training ratings' mean (the MSE-optimal constant) or median (MAE-optimal)."""
    import numpy as np

    def ratings(path):
        return np.array([json.loads(line)["rating"] for line in path.read_text(encoding="utf-8").splitlines()], float)

    train_ratings, held = ratings(train), ratings(held_out)
    found = {}
    for name, value in (("mean", train_ratings.mean()), ("median", float(np.median(train_ratings)))):
        found[name] = {"value": float(value), "mae": float(np.abs(held - value).mean()),
                       "rmse": float(np.sqrt(((held - value) ** 2).mean()))}
    return found


def mean_spread(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def headline(fine_tuned: dict[int, dict], frozen: dict, constant: dict, sizes: dict) -> list[dict]:
    seeds = sorted(fine_tuned)
    setting = (f"IMDb rating (1-10), {sizes['train']:,} training reviews, {sizes['held_out']:,} held out, length "
               f"{sizes['max_length']}, MiniLM-L6")
    gain, gain_spread = mean_spread([frozen["mae"] - fine_tuned[s]["mae"] for s in seeds])
    mae, mae_spread = mean_spread([fine_tuned[s]["mae"] for s in seeds])
    rho_gain, rho_gain_spread = mean_spread([fine_tuned[s]["spearman"] - frozen["spearman"] for s in seeds])
    return [
        {"id": "regression_mae_gain", "claim": f"frozen features + ridge MAE minus full fine-tuning MAE ({sizes['epochs']} "
         f"epochs), {setting}; positive: fine-tuning helped", "value": gain, "reference": 0.0, "unit": "rating points",
         "spread": gain_spread, "seeds": len(seeds)},
        {"id": "regression_finetuned_mae", "claim": f"full fine-tuning MAE, {setting}; reference: the training median "
         "predicted for every review", "value": mae, "reference": constant["median"]["mae"], "unit": "rating points",
         "spread": mae_spread, "seeds": len(seeds)},
        {"id": "regression_ridge_mae", "claim": f"frozen mean-pooled features + ridge regression (alpha by leave-one-out) "
         f"MAE, {setting}; deterministic", "value": frozen["mae"], "reference": constant["median"]["mae"],
         "unit": "rating points", "spread": 0.0, "seeds": 1},
        {"id": "regression_spearman_gain", "claim": f"full fine-tuning minus frozen features + ridge Spearman correlation, "
         f"{setting}", "value": rho_gain, "reference": 0.0, "unit": "correlation", "spread": rho_gain_spread,
         "seeds": len(seeds)},
    ]


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "transformers", "datasets", "scikit-learn", "scipy"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
            "threads": os.environ.get("OMP_NUM_THREADS", "default"), **versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 reviews, 100 held out, length 128, one seed: a smoke run")
    parser.add_argument("--work_dir", default=None,
                        help="Run folders and data subsets (default: outputs/imdb_regression[_quick])")
    parser.add_argument("--jobs", type=int, default=1,
                        help="Fine-tuning runs side by side, one torch thread each when above 1 (default 1)")
    args = parser.parse_args()
    if not (IMDB / "train.jsonl").is_file():
        raise SystemExit(f"skipped: IMDb is not at {IMDB} (see {paths.DATA / 'README.md'})")
    sizes = QUICK if args.quick else FULL
    work = Path(args.work_dir or paths.OUTPUTS / f"imdb_regression{'_quick' if args.quick else ''}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    train = subset(IMDB / "train.jsonl", sizes["train"], work / f"train_{sizes['train']}.jsonl")
    held_out = subset(IMDB / "test.jsonl", sizes["held_out"], work / f"held_out_{sizes['held_out']}.jsonl")
    constant = constant_predictions(train, held_out)
    frozen = ridge(train, held_out, sizes, work)
    from concurrent.futures import ThreadPoolExecutor

    threads = 1 if args.jobs > 1 else None
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = {seed: pool.submit(fine_tune, train, held_out, sizes, seed, work, threads) for seed in sizes["seeds"]}
        fine_tuned = {seed: future.result() for seed, future in runs.items()}

    summary = {"fine_tuned": {f"{k}_mean": mean_spread([r[k] for r in fine_tuned.values()])[0] for k in SCORES}
               | {f"{k}_spread": mean_spread([r[k] for r in fine_tuned.values()])[1] for k in SCORES},
               "frozen_ridge": frozen, "constant": constant}
    results = {
        "headline": headline(fine_tuned, frozen, constant, sizes), "summary": summary, "quick": args.quick,
        "settings": {**sizes, "jobs": args.jobs, "learning_rate": LEARNING_RATE, "batch_size": BATCH, "held_out_seed": HELD_OUT_SEED,
                     "model": "all-MiniLM-L6-v2 (embedded)", "train_file": "imdb/train.jsonl",
                     "held_out_file": "imdb/test.jsonl (seeded subset)"},
        "runs": {"fine_tuned": {str(seed): r for seed, r in fine_tuned.items()}, "frozen_ridge": frozen},
        "seeds": sizes["seeds"], "machine": machine(),
    }
    destination = work / "imdb_regression_quick.json" if args.quick else RESULTS
    paths.write_results(destination, results)
    print(f"{'arm':<24} {'MAE':>7} {'RMSE':>7} {'Spearman':>9}")
    for name, row in [(f"fine-tuned seed {s}", r) for s, r in fine_tuned.items()] + [("frozen + ridge", frozen)]:
        print(f"{name:<24} {row['mae']:7.3f} {row['rmse']:7.3f} {row['spearman']:9.3f}")
    for name, row in constant.items():
        print(f"{'training ' + name + ' (constant)':<24} {row['mae']:7.3f} {row['rmse']:7.3f} {'-':>9}")
    paths.print_headline(results)
    print(f"written to {destination}")


if __name__ == "__main__":
    main()
