"""Serving on the CPU: the SST-2 sentiment model as PyTorch fp32, ONNX fp32 and ONNX int8, and predict against a pipeline.

    python benchmarks/serving_sst2.py                 # the full run (about 20 minutes on 2 cores)
    python benchmarks/serving_sst2.py --quick         # a smoke run: 500 training sentences, 1,000 predicted (3 minutes)

1. Train: the sentiment recipe (its own process, `python recipes/sentiment.py`) on 8,000 SST-2 training sentences
   (the recipe's seeded subset, --max_train_samples), 1 epoch, the recipe's defaults otherwise (MiniLM-L6, seed 42,
   the machine's default precision), scored on the 872 dev sentences. A finished model in --work_dir is reused.
2. Export and report: `recipes/export.py --quantize int8 --threads 1 2` (the library function, this process): size on
   disk, latency at batch 1 (p50, p95; 200 dev sentences one at a time) and throughput at batch 32 (the 872 dev
   sentences, padded per batch, median of 3 passes alternating between the models) for PyTorch fp32, ONNX fp32 and
   ONNX int8 at 1 and 2 threads, tokenisation excluded; accuracy of each on the dev set.
3. Predict against a pipeline: 10,000 SST-2 training sentences (the file's last rows) at batch 32, all cores, in
   rounds that alternate: `hf_transfer.run.predict.predict` on the model folder in fp32 (HF_TRANSFER_AUTO_BF16=0),
   a plain `transformers.pipeline("text-classification", ...)` loop (fp32, its default), predict in its default
   precision (bf16 autocast where the CPU computes bf16 natively), and predict on the int8 export (onnxruntime).
   Each is timed from the model folder to the predictions: predict's time includes loading the model, reading the
   table and writing the predictions file; the pipeline's includes building the pipeline, and it gets the sentences
   as a list and writes nothing.
Results: benchmarks/results/serving_sst2.json with the headline figures (--quick: serving_sst2_quick.json in --work_dir,
leaving the committed results alone), and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paths

SST2 = paths.DATA / "sst2"
RESULTS = paths.RESULTS / "serving_sst2.json"
SEED = 42  # the sentiment recipe's default
FULL = {"train": 8000, "predict": 10000, "rounds": 3, "latency_samples": 200, "timing_rows": 1024, "repeats": 3}
QUICK = {"train": 500, "predict": 1000, "rounds": 2, "latency_samples": 50, "timing_rows": 256, "repeats": 2}
BATCH = 32


def train(work: Path, sizes: dict, seed: int | None = None) -> tuple[Path, dict]:
    """The sentiment recipe on sizes["train"] SST-2 sentences (at the recipe's seed, or `seed`), reused when finished."""
    out = work / ("model" if seed is None else f"model_seed{seed}")
    if not (out / "metrics.json").is_file():
        command = [sys.executable, str(paths.RECIPES / "sentiment.py"), "--train_file", str(SST2 / "train.tsv"),
                   "--validation_file", str(SST2 / "dev.tsv"), "--class_names", "negative", "positive",
                   "--max_train_samples", str(sizes["train"]), "--num_train_epochs", "1", "--save_strategy", "no",
                   "--frozen_baseline", "false", "--disable_tqdm", "true", "--output_dir", str(out), "--overwrite_output_dir",
                   *(["--seed", str(seed)] if seed is not None else [])]
        print(f"{time.strftime('%H:%M:%S')} training on {sizes['train']:,} sentences", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_MIXED_PRECISION"} | {"HF_HUB_OFFLINE": "1"}
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return out, {k: metrics.get(k) for k in ("validation_accuracy", "train_runtime", "precision", "train_examples")}


def export_and_report(model: Path, sizes: dict) -> dict:
    from recipes import export

    print(f"{time.strftime('%H:%M:%S')} exporting and measuring", flush=True)
    return export.main(["--model", str(model), "--quantize", "int8", "--threads", "1", "2", "--batch_size", str(BATCH),
                        "--latency_samples", str(sizes["latency_samples"]), "--timing_rows", str(sizes["timing_rows"]),
                        "--repeats", str(sizes["repeats"])])["report"]


def predict_input(work: Path, n: int) -> tuple[Path, list[str]]:
    with open(SST2 / "train.tsv", newline="") as f:
        sentences = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][-n:]
    table = work / f"predict_{n}.jsonl"
    table.write_text("".join(json.dumps({"sentence": s}) + "\n" for s in sentences))
    return table, sentences


def timed_predict(model: Path, table: Path, out: Path, bf16_allowed: bool) -> tuple[float, list[str]]:
    from hf_transfer.run.predict import PredictArgs, predict

    os.environ["HF_TRANSFER_AUTO_BF16"] = "1" if bf16_allowed else "0"
    started = time.perf_counter()
    predict(PredictArgs(model=str(model), input=str(table), output=str(out), batch_size=BATCH))
    seconds = time.perf_counter() - started
    return seconds, [json.loads(line)["predicted_label"] for line in out.read_text().splitlines()]


def timed_pipeline(model: Path, sentences: list[str]) -> tuple[float, list[str]]:
    from transformers import pipeline

    started = time.perf_counter()
    classifier = pipeline("text-classification", model=str(model), device="cpu")
    labels = [r["label"] for r in classifier(sentences, batch_size=BATCH, truncation=True)]
    return time.perf_counter() - started, labels


def predict_against_pipeline(work: Path, model: Path, sizes: dict) -> dict:
    """Rounds alternating the four ways of predicting the same sentences; sentences per second of each, per round."""
    import torch

    from hf_transfer.run.launch import native_bf16

    torch.set_num_threads(all_cores())
    table, sentences = predict_input(work, sizes["predict"])
    ways = {
        "predict_fp32": lambda: timed_predict(model, table, work / "predict_fp32.jsonl", False),
        "pipeline_fp32": lambda: timed_pipeline(model, sentences),
        "predict_default": lambda: timed_predict(model, table, work / "predict_default.jsonl", True),
        "predict_onnx_int8": lambda: timed_predict(model / "onnx" / "model_quantized.onnx", table,
                                                   work / "predict_int8.jsonl", True),
    }
    rates: dict[str, list[float]] = {k: [] for k in ways}
    labels: dict[str, list[str]] = {}
    for round_ in range(sizes["rounds"]):
        for name, run in ways.items():
            print(f"{time.strftime('%H:%M:%S')} round {round_ + 1}: {name}", flush=True)
            seconds, labels[name] = run()
            rates[name].append(len(sentences) / seconds)
    os.environ.pop("HF_TRANSFER_AUTO_BF16", None)
    reference = labels["pipeline_fp32"]
    return {
        "sentences": len(sentences), "batch_size": BATCH, "threads": torch.get_num_threads(), "rounds": sizes["rounds"],
        "precision": {"predict_fp32": "fp32", "pipeline_fp32": "fp32",
                      "predict_default": "bf16 autocast" if native_bf16() else "fp32", "predict_onnx_int8": "int8 (onnxruntime)"},
        "sentences_per_s": rates,
        "same_labels_as_pipeline": {k: sum(a == b for a, b in zip(v, reference)) / len(reference) for k, v in labels.items()},
    }


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float | None]:
    """The median of per-pass ratios and half their range (None for one pass)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return statistics.median(ratios), (max(ratios) - min(ratios)) / 2 if len(ratios) > 1 else None


def headline(report: dict, serving: dict) -> list[dict]:
    models = {m["key"]: m for m in report["models"]}
    torch32, int8 = models["pytorch_fp32"], models["onnx_int8"]
    figures = []
    for threads in ("1", "2"):
        value, spread = paired_ratio(int8["throughput"][threads]["passes"], torch32["throughput"][threads]["passes"])
        figures.append({
            "id": "int8_throughput_ratio" if threads == "1" else "int8_throughput_ratio_2_threads",
            "claim": f"ONNX int8 over PyTorch fp32 throughput at batch {BATCH}, {threads} thread{'s' if threads != '1' else ''}, "
                     "SST-2 dev sentences, tokenisation excluded (median of per-pass ratios)",
            "value": value, "reference": 2.0, "unit": "ratio", "spread": spread, "seeds": 1,
        })
    figures.append({"id": "int8_accuracy_change", "claim": "ONNX int8 minus PyTorch fp32 accuracy on the SST-2 dev set (872)",
                    "value": 100 * (int8["accuracy"] - torch32["accuracy"]), "reference": -0.5, "unit": "points",
                    "spread": None, "seeds": 1})
    figures.append({"id": "int8_size_ratio", "claim": "model_quantized.onnx over the PyTorch model.safetensors, bytes on disk",
                    "value": int8["size_ratio"], "reference": 1 / 3, "unit": "ratio", "spread": None, "seeds": 1})
    rates = serving["sentences_per_s"]
    value, spread = paired_ratio(rates["predict_fp32"], rates["pipeline_fp32"])
    figures.append({"id": "predict_vs_pipeline_ratio",
                    "claim": f"predict (fp32) over a transformers pipeline loop (fp32), sentences/s on {serving['sentences']:,} "
                             f"SST-2 sentences, batch {BATCH}, {serving['threads']} threads, same model, alternating rounds",
                    "value": value, "reference": 1.0, "unit": "ratio", "spread": spread, "seeds": 1})
    return figures


def table(report: dict, serving: dict, trained: dict) -> str:
    from hf_transfer.sharing.export import markdown

    rates = serving["sentences_per_s"]
    lines = [f"Model: MiniLM-L6 fine-tuned on {trained['train_examples']:,} SST-2 sentences, 1 epoch ({trained['precision']}), "
             f"dev accuracy {100 * trained['validation_accuracy']:.2f}%.", "", markdown(report),
             f"Predicting {serving['sentences']:,} sentences, batch {serving['batch_size']}, {serving['threads']} threads "
             f"(median of {serving['rounds']} alternating rounds):", "",
             "| way | precision | sentences/s | vs pipeline | same labels as pipeline |", "|---|---|---:|---:|---:|"]
    pipeline_rate = statistics.median(rates["pipeline_fp32"])
    for name, values in rates.items():
        same = serving["same_labels_as_pipeline"][name]
        lines.append(f"| {name} | {serving['precision'][name]} | {statistics.median(values):.1f} | "
                     f"{paired_ratio(values, rates['pipeline_fp32'])[0]:.2f}x | {100 * same:.2f}% |")
    return "\n".join(lines) + f"\n\n(pipeline: {pipeline_rate:.1f} sentences/s)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 training sentences, 1,000 predicted, shorter timing")
    parser.add_argument("--work_dir", default=None, help="Models and predictions (default: a folder under the temp dir)")
    parser.add_argument("--rounds", type=int, default=None, help="Rounds of the predict-against-pipeline comparison "
                        f"(default {FULL['rounds']}; quick {QUICK['rounds']})")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        raise SystemExit(f"SST-2 is not at {SST2} (see {paths.DATA / 'README.md'})")
    sizes = {**(QUICK if args.quick else FULL), **({"rounds": args.rounds} if args.rounds else {})}
    work = Path(args.work_dir or Path(tempfile.gettempdir()) / f"serving_sst2{'_quick' if args.quick else ''}")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    model, trained = train(work, sizes)
    report = export_and_report(model, sizes)
    serving = predict_against_pipeline(work, model, sizes)
    import torch

    results = {
        "headline": headline(report, serving), "quick": args.quick, "sizes": sizes, "trained": trained,
        "deployment": report, "predict_vs_pipeline": serving, "seeds": [SEED],
        "machine": {"platform": platform.platform(), "processor": report["machine"]["processor"], "cpus": all_cores(),
                    "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), **report["versions"]},
    }
    destination = work / "serving_sst2_quick.json" if args.quick else RESULTS
    paths.write_results(destination, results)
    print(table(report, serving, trained))
    paths.print_headline(results)
    print(f"written to {destination}")


if __name__ == "__main__":
    main()
