"""Feature extraction with classical heads: embed once with the frozen encoder (cached), then fit scikit-learn heads.

    python recipes/linear_probe.py                                   # embedded MiniLM + review sample
    python recipes/linear_probe.py --train_file train.csv --heads logistic_regression linear_svm mlp --k_folds 5

The first thing to try with under about a thousand labelled examples: one forward pass, seconds per head.
Takes the same data and model flags as recipes/sentiment.py (training flags other than --output_dir,
--seed and --per_device_eval_batch_size are accepted and unused), so one flag set drives both.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hf_transfer` importable from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from transformers import AutoModel, TrainingArguments

from hf_transfer import parse_args
from hf_transfer.data.text import TextDataArgs, load_text_classification, text_collator
from hf_transfer.errors import run_cli
from hf_transfer.features import BaselineArgs, FeatureArgs, cached_embed, cross_validate, fit_head, plot_feature_views, score_head
from hf_transfer.models import ModelArgs, load_config, load_pretrained, load_tokenizer
from hf_transfer.report import RunClock
from hf_transfer.training import recipe_defaults

# BaselineArgs and most TrainingArguments are accepted unused, so compare can pass one flag set to every recipe.
ARGUMENTS = (ModelArgs, TextDataArgs, FeatureArgs, BaselineArgs, TrainingArguments)
DEFAULTS = recipe_defaults(output_dir="outputs/linear_probe")


def parse(argv: list[str] | None = None) -> tuple:
    return parse_args(ARGUMENTS, argv, DEFAULTS)


def main(argv: list[str] | None = None) -> dict:
    clock = RunClock()
    model_args, data_args, feature_args, _, train_args = parse(argv)
    config = load_config(model_args)
    tokenizer = load_tokenizer(model_args)
    data = load_text_classification(data_args, tokenizer, seed=train_args.seed)
    backbone = load_pretrained(AutoModel, model_args, config).to(train_args.device)
    collator = text_collator(data_args, tokenizer, mixed_precision=False)

    embed_start = time.perf_counter()
    features, hits = {}, {}
    for split in ("train", "validation", "test", "source"):
        if split in data.datasets:
            features[split], hits[split] = cached_embed(
                backbone, data.datasets[split], collator, feature_args.feature_cache_dir, feature_args.pooling,
                feature_args.layer, batch_size=train_args.per_device_eval_batch_size)
    embed_seconds = time.perf_counter() - embed_start
    labels = {split: np.asarray(data.datasets[split]["labels"]) for split in features}

    results: dict = {
        "model_name_or_path": model_args.model_name_or_path, "pooling": feature_args.pooling, "layer": feature_args.layer,
        "embed_seconds": round(embed_seconds, 2), "feature_cache_hit": all(hits.values()),
        "train_examples": len(labels["train"]), "feature_dim": int(features["train"].shape[1]),
        # A linear head's weights: one output for two classes (logistic regression / SVM), else one per class.
        "trainable_parameters": (features["train"].shape[1] + 1) * (1 if len(data.label_names) == 2 else len(data.label_names)),
        "total_parameters": sum(p.numel() for p in backbone.parameters()),
    }
    for head_name in feature_args.heads:
        fit_start = time.perf_counter()
        head = fit_head(head_name, features["train"], labels["train"], train_args.seed)
        results[f"{head_name}_fit_seconds"] = round(time.perf_counter() - fit_start, 3)
        for split in ("validation", "test", "source"):
            if split in features:
                results.update({f"{split}_{head_name}_{k}": v for k, v in score_head(head, features[split], labels[split]).items()})
        if feature_args.k_folds:
            cv = cross_validate(features["train"], labels["train"], head_name, feature_args.k_folds, train_args.seed)
            results.update({f"cv{feature_args.k_folds}_{head_name}_{k}": v for k, v in cv.items()})
    first = feature_args.heads[0]
    results.update({f"validation_{k[len(f'validation_{first}_'):]}": v for k, v in list(results.items())
                    if k.startswith(f"validation_{first}_")})  # the first head's scores under the common names

    out = Path(train_args.output_dir)
    if train_args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        if feature_args.feature_views:
            domains = np.asarray(data.domains["train"]) if data.domains else None
            paths = plot_feature_views(features["train"], labels["train"], data.label_names, out, domains, seed=train_args.seed)
            results["feature_views"] = [str(p) for p in paths]
        results.update({"wall_time_s": round(clock.seconds(), 2), **clock.peak_memory()})
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
        os.replace(tmp, out / "metrics.json")
        print_probe_summary(results, feature_args.heads)
    return results


def print_probe_summary(results: dict, heads: list[str]) -> None:
    lines = ["", "=" * 64, "frozen features + classical heads",
             f"  embedding: {results['embed_seconds']:.1f} s ({'from cache' if results['feature_cache_hit'] else 'computed, now cached'}), "
             f"{results['train_examples']} train examples, dim {results['feature_dim']}"]
    for head in heads:
        line = f"  {head:<22} validation accuracy {results.get(f'validation_{head}_accuracy', float('nan')):.4f}"
        cv = [k for k in results if k.startswith("cv") and k.endswith(f"_{head}_accuracy_mean")]
        if cv:
            line += f"   cv {results[cv[0]]:.4f} ± {results[cv[0].replace('_mean', '_std')]:.4f}"
        lines.append(line + f"   fit {results[f'{head}_fit_seconds']:.2f} s")
    lines += [f"  wall time {results['wall_time_s']:.1f} s", "=" * 64]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run_cli(main)
