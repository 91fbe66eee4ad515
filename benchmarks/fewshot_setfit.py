"""Contrastive few-shot training in the toolkit against SetFit itself, plain fine-tuning and frozen features.

    python benchmarks/fewshot_setfit.py --jobs 2                               # SST-2 and CR, 8/16/64 per class, 5 draws
    python benchmarks/fewshot_setfit.py --datasets sst2 --sizes 8 --draws 1    # a smoke run; finished runs are skipped
    python benchmarks/fewshot_setfit.py --sizes 8 --draws 1 --arms contrastive setfit \\
        --model /path/to/all-mpnet-base-v2 --model_name all-mpnet-base-v2      # another body, both systems

The SetFit arm runs in an environment of its own (never a dependency of hf_transfer), with the project's pins:
    python3.11 -m venv /work/setfit-venv
    /work/setfit-venv/bin/pip install -c .ci/constraints.txt -r benchmarks/requirements-setfit.txt
(`--setfit_python` names its interpreter; default /work/setfit-venv/bin/python.)

Data. sst2: draws from SST-2's 67,349 training sentences, scored on its dev set (872). cr: the 3,771 non-empty CR sentences
(custrev.pos/neg) split once, stratified with seed 0, into a fixed held-out set of 20% of each label (754: 481
positive, 273 negative) and a pool of the rest; draws come from the pool only. Draw d at n per class is the toolkit's
own per-class sample (`--train_sample_seed d`: hf_transfer.data.splits.per_class_subset, seed d), so a draw's 8 are
part of its 16 and its 64. Each draw is written to a JSON Lines file that every arm reads as its whole training set:
the four arms see exactly the same examples and the same held-out set.

Arms, every run in its own process, one thread each (`--jobs N` runs N at a time), fp32 in all of them, seed 42:
- contrastive: `recipes/sentiment.py --config recipes/configs/sentiment/contrastive_fewshot.yaml`: SetFit's
  settings (40 pairs per example = its num_iterations 20, cosine-similarity loss, 1 epoch, lr 2e-5, batches of 16
  pairs, 10% warm-up), mean pooling, logistic regression (C = 1) written into the classifier;
- setfit: setfit 1.2.0 with its defaults but num_iterations = 20 (the SetFit paper's setting and the same number of
  pairs: its 1.x default, "oversampling", makes 144 pairs at 8 per class where 20 iterations make 640): batch 16,
  1 epoch, body lr 2e-5, CosineSimilarityLoss, 10% warm-up, logistic regression (scikit-learn's defaults) on the
  normalised mean embedding;
- full: plain full fine-tuning with the recipe, as many optimizer steps as the contrastive arm (batches of 8 rows,
  20 epochs), lr 5e-5, 10% warm-up;
- frozen: frozen mean-pooled features + logistic regression with C chosen by cross-validation
  (`recipes/linear_probe.py`), the toolkit's best few-shot arm before this one.
Recorded per run: accuracy on the held-out set, training time (the contrastive arm: its pair steps plus the closing
fit of the head; setfit: `trainer.train()`, which does both; full: the Trainer's train_runtime) and the process's wall
time. Results: benchmarks/results/fewshot_setfit.json (runs, summary, headline) and fewshot_setfit.md (the table).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import paths
import sentence_data

RESULTS = paths.RESULTS / "fewshot_setfit.json"
TABLE = paths.RESULTS / "fewshot_setfit.md"
WORK = paths.OUTPUTS / "fewshot_setfit"
ARMS = ("contrastive", "setfit", "full", "frozen")
DATASETS = ("sst2", "cr")
LABELS = sentence_data.POLARITY
SEED = 42
# Every toolkit run: fp32 as SetFit, no checkpoints, no evaluation during training, no in-run frozen baseline.
COMMON = ["--class_names", *LABELS, "--seed", str(SEED), "--bf16", "false", "--save_strategy", "no",
          "--eval_strategy", "no", "--frozen_baseline", "false", "--disable_tqdm", "true", "--logging_steps", "50",
          "--overwrite_output_dir", "true"]
FULL = ["--strategy", "full", "--learning_rate", "5e-5", "--num_train_epochs", "20", "--per_device_train_batch_size", "8",
        "--warmup_steps", "0.1"]
SETFIT = {"batch_size": 16, "num_epochs": 1, "num_iterations": 20, "body_learning_rate": 2e-5}


# ---------------------------------------------------------------------------------------------------------------
# data: the pools, the fixed held-out sets and the draws

def pools() -> dict[str, tuple[list[tuple[str, str]], Path]]:
    """dataset -> (the rows draws come from, the held-out file)."""
    pool, held_out = sentence_data.cr_split()
    return {"sst2": (sentence_data.sst2("train"), sentence_data.write_jsonl(WORK / "data" / "sst2_test.jsonl", sentence_data.sst2("dev"))),
            "cr": (pool, sentence_data.write_jsonl(WORK / "data" / "cr_test.jsonl", held_out))}


def draw_file(dataset: str, rows: list[tuple[str, str]], size: int, draw: int) -> Path:
    """The draw's training rows as a file: the toolkit's per-class sample with seed `draw`."""
    from datasets import Dataset

    from hf_transfer.data.splits import per_class_subset

    table = Dataset.from_dict({"row": list(range(len(rows))), "labels": [LABELS.index(label) for _, label in rows]})
    chosen = per_class_subset(table, size, seed=draw)["row"]
    return sentence_data.write_jsonl(WORK / "data" / f"{dataset}_{size}_draw{draw}.jsonl", [rows[i] for i in chosen])


# ---------------------------------------------------------------------------------------------------------------
# the arms

def toolkit_command(arm: str, train: Path, test: Path, out: Path, model: str | None) -> list[str]:
    data = ["--train_file", str(train), "--validation_file", str(test), "--output_dir", str(out)]
    data += ["--model_name_or_path", model] if model else []
    if arm == "frozen":
        return [sys.executable, str(paths.RECIPES / "linear_probe.py"), *data, "--class_names", *LABELS, "--seed", str(SEED),
                "--heads", "logistic_regression", "--feature_cache_dir", str(WORK / "feature_cache")]
    flags = ["--config", str(paths.RECIPES / "configs" / "sentiment" / "contrastive_fewshot.yaml")] if arm == "contrastive" else FULL
    return [sys.executable, str(paths.RECIPES / "sentiment.py"), *data, *COMMON, *flags]


def run(arm: str, train: Path, test: Path, out: Path, model: str | None, setfit_python: str) -> dict:
    """One run in its own process (one thread); accuracy on the held-out set and its times."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out.mkdir(parents=True, exist_ok=True)
    if arm == "setfit":
        from hf_transfer.models.loading import default_model_path

        job = out / "job.json"
        job.write_text(json.dumps({"train": str(train), "test": str(test), "model": model or default_model_path(),
                                   "seed": SEED, "out": str(out / "result.json"), "settings": SETFIT}))
        command = [setfit_python, str(Path(__file__).resolve()), "--setfit_worker", str(job)]
    else:
        command = toolkit_command(arm, train, test, out, model)
    start = time.perf_counter()
    with open(out / "run.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=paths.REPO).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{arm} failed (exit {code}); see {out / 'run.log'}")
    if arm == "setfit":
        return {**json.loads((out / "result.json").read_text()), "wall_s": round(wall, 1)}
    metrics = json.loads((out / "metrics.json").read_text())
    result = {"accuracy": metrics["validation_accuracy"], "wall_s": round(wall, 1)}
    if arm != "frozen":
        result["train_s"] = round(metrics["train_runtime"] + metrics.get("train_head_fit_seconds", 0.0), 2)
        result["steps"] = metrics["global_step"]
    if arm == "contrastive":
        result["pairs"] = metrics["contrastive_pairs"]
    return result


def setfit_worker(job_file: str) -> None:
    """The SetFit arm, run by the SetFit environment's Python (`--setfit_worker job.json`): only setfit is imported."""
    job = json.loads(Path(job_file).read_text())
    import numpy as np
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    torch.set_num_threads(1)
    train, test = sentence_data.read_jsonl(job["train"]), sentence_data.read_jsonl(job["test"])
    to_id = {name: i for i, name in enumerate(LABELS)}
    model = SetFitModel.from_pretrained(job["model"])
    # No checkpoints (SetFit's default writes one into ./checkpoints at the end, inside the timed training).
    args = TrainingArguments(**job["settings"], seed=job["seed"], report_to="none", save_strategy="no",
                             output_dir=str(Path(job["out"]).parent / "setfit_output"))
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict(
        {"text": [r["text"] for r in train], "label": [to_id[r["label"]] for r in train]}))
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    predicted = np.asarray(model.predict([r["text"] for r in test], as_numpy=True))
    accuracy = float(np.mean(predicted == np.asarray([to_id[r["label"]] for r in test])))
    import setfit

    Path(job["out"]).write_text(json.dumps({"accuracy": accuracy, "train_s": round(train_s, 2),
                                            "pairs": SETFIT["num_iterations"] * 2 * len(train),
                                            "setfit": setfit.__version__, "torch": torch.__version__}))


# ---------------------------------------------------------------------------------------------------------------
# the summary, the headline and the table

def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summary(runs: dict) -> dict:
    table = {}
    for key in sorted({k.rsplit("/", 1)[0] for k in runs}):
        mine = [r for k, r in runs.items() if k.rsplit("/", 1)[0] == key]
        mean, sd = _stats([100 * r["accuracy"] for r in mine])
        train_s, _ = _stats([r["train_s"] for r in mine if r.get("train_s") is not None])
        wall_s, _ = _stats([r["wall_s"] for r in mine])
        table[key] = {"draws": len(mine), "accuracy_mean": mean, "accuracy_sd": sd, "train_s_mean": train_s, "wall_s_mean": wall_s}
    return table


def paired(runs: dict, prefix: str, arm: str, other: str, field: str = "accuracy", ratio: bool = False) -> list[float]:
    """Per-draw differences (points) or ratios of `arm` against `other` on the runs whose key starts with `prefix`."""
    values = []
    for key, run in runs.items():
        if key.startswith(f"{prefix}/{arm}/"):
            twin = runs.get(key.replace(f"/{arm}/", f"/{other}/"))
            if twin and run.get(field) is not None and twin.get(field) is not None:
                values.append(run[field] / twin[field] if ratio else 100 * (run[field] - twin[field]))
    return values


def headline(runs: dict, model_name: str) -> list[dict]:
    lines = []

    def line(id_, claim, values, reference, unit):
        mean, sd = _stats(values)
        if values:
            lines.append({"id": id_, "claim": claim, "value": mean, "reference": reference, "unit": unit, "spread": sd,
                          "seeds": len(values)})

    for dataset, size in (("sst2", 8), ("sst2", 16), ("cr", 8)):
        line(f"fewshot_vs_setfit_{dataset}_{size}", f"{dataset} at {size} per class, {model_name}: the toolkit's contrastive "
             "strategy minus SetFit, accuracy (per-draw differences, the same draws)",
             paired(runs, f"{model_name}/{dataset}/{size}", "contrastive", "setfit"), 0.0, "points")
    line("fewshot_vs_finetune_sst2_8", f"sst2 at 8 per class, {model_name}: contrastive minus plain full fine-tuning "
         "(as many steps), accuracy (per-draw differences)",
         paired(runs, f"{model_name}/sst2/8", "contrastive", "full"), 5.0, "points")
    ratios = [r for key in {k.rsplit("/", 2)[0] for k in runs if k.startswith(f"{model_name}/")}
              for r in paired(runs, key, "contrastive", "setfit", field="train_s", ratio=True)]
    line("fewshot_time_ratio_setfit", f"training time of the contrastive strategy over SetFit's, {model_name}, every "
         "dataset, size and draw run by both (per-run ratios)", ratios, 1.0, "ratio")
    return lines


def markdown(results: dict) -> str:
    rows = results["summary"]
    columns = sorted({k.rsplit("/", 1)[0] for k in rows}, key=lambda k: (k.split("/")[0], k.split("/")[1], int(k.split("/")[2])))
    lines = ["| arm | " + " | ".join(c.replace("/", " ") + " per class" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for arm in ARMS:
        cells = []
        for column in columns:
            row = rows.get(f"{column}/{arm}")
            if row is None:
                cells.append("—")
                continue
            sd = f" ± {row['accuracy_sd']:.1f}" if row["accuracy_sd"] is not None else ""
            time_s = row["train_s_mean"] if row["train_s_mean"] is not None else row["wall_s_mean"]
            cells.append(f"{row['accuracy_mean']:.1f}{sd} ({time_s:.0f} s{'' if row['train_s_mean'] is not None else ' wall'}, "
                         f"{row['draws']} draws)")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracy (%) on the held-out set, mean ± std over draws; in brackets the mean training time per run "
              "(frozen: the whole process) and the number of draws.", ""]
    lines += [f"- `{h['id']}`: {h['value']:{'+' if h['unit'] == 'points' else ''}.2f}"
              + (f" ± {h['spread']:.2f}" if h["spread"] is not None else "")
              + f" {h['unit']} over {h['seeds']} draw(s) (reference {h['reference']:g})" for h in results["headline"]]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "transformers", "scikit-learn", "datasets", "peft"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads_per_run": 1,
            "python": platform.python_version(), **versions, "date": time.strftime("%Y-%m-%d"), "seed": SEED,
            "draw_seeds": "draw d = --train_sample_seed d (per_class_subset seed d)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 64])
    parser.add_argument("--draws", type=int, default=5, help="Draws 0..N-1 at every size.")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--jobs", type=int, default=1, help="Runs at a time, one thread each.")
    parser.add_argument("--model", default=None, help="The body (a local folder; default: the embedded all-MiniLM-L6-v2).")
    parser.add_argument("--model_name", default="all-MiniLM-L6-v2", help="The body's name in results.")
    parser.add_argument("--setfit_python", default="/work/setfit-venv/bin/python")
    parser.add_argument("--setfit_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setfit_worker:
        setfit_worker(args.setfit_worker)
        return
    if "setfit" in args.arms and not Path(args.setfit_python).is_file():
        raise SystemExit(f"no SetFit environment at {args.setfit_python}; create it as the docstring says, or drop the setfit arm")

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    data = pools()
    plan = []
    # Draw by draw, so a run stopped early has every setting at the same number of draws.
    for draw in range(args.draws):
        for size in args.sizes:
            for dataset in args.datasets:
                rows, test = data[dataset]
                train = draw_file(dataset, rows, size, draw)
                for arm in args.arms:
                    key = f"{args.model_name}/{dataset}/{size}/{arm}/{draw}"
                    if key not in results["runs"]:
                        plan.append((key, arm, train, test))

    def record(key: str, result: dict) -> None:
        results["runs"][key] = result
        results["summary"] = summary(results["runs"])
        results["headline"] = headline(results["runs"], "all-MiniLM-L6-v2")
        if args.model_name != "all-MiniLM-L6-v2":
            results["headline"] += headline(results["runs"], args.model_name)
        results["machine"] = machine()
        results["settings"] = {"toolkit": COMMON, "full": FULL, "setfit": SETFIT, "cr_held_out": sentence_data.CR_HELD_OUT}
        paths.write_results(RESULTS, results)
        TABLE.write_text(markdown(results))

    paths.run_jobs({key: functools.partial(run, arm, train, test, WORK / "runs" / key, args.model, args.setfit_python)
                    for key, arm, train, test in plan}, args.jobs, record)
    print(TABLE.read_text() if TABLE.exists() else "nothing to run")


if __name__ == "__main__":
    main()
